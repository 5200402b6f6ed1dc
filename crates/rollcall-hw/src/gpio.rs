//! GPIO lines behind one synchronous trait, [`GpioChip`], with a simulated
//! chip ([`sim::SimChip`]) and, on Linux, the GPIO character device
//! ([`cdev::CdevChip`]).
//!
//! The backends stay thin: they configure lines, drive and read them, and
//! queue the edges they see. Deciding what a configuration may contain,
//! debouncing and scanning belong to the GPIO service in `rollcall-services`,
//! so that the simulated chip exercises every decision the real one relies on.
//!
//! Levels are physical: `true` is a high line. Nothing here is active-low.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::HwError;

#[cfg(target_os = "linux")]
pub mod cdev;
pub mod shared;
pub mod sim;

/// A line of the chip: the BCM number on a Raspberry Pi header.
pub type Pin = u32;

/// How many lines a Raspberry Pi header offers: BCM 0 to 27.
pub const PI_HEADER_LINES: u32 = 28;

/// The pull an input line gets from the chip when nothing drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bias {
    /// No pull: the line floats (the simulation reads it low).
    Disabled,
    /// Pulled up: an undriven line reads high.
    PullUp,
    /// Pulled down: an undriven line reads low.
    PullDown,
}

/// The direction of a level change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edge {
    /// Low to high.
    Rising,
    /// High to low.
    Falling,
}

/// An edge the kernel (or the simulation) saw. `timestamp_ns` is monotonic
/// (kernel CLOCK_MONOTONIC for cdev, the simulation's clock for sim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeEvent {
    /// The line it happened on.
    pub pin: Pin,
    /// Which way the level went.
    pub edge: Edge,
    /// When, in nanoseconds of a monotonic clock.
    pub timestamp_ns: u64,
}

/// How one line is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineConfig {
    /// An output, driven to `initial` as soon as it is requested.
    Output {
        /// The level the line takes when configured.
        initial: bool,
        /// A pull resistor, which holds the line while nothing drives it.
        bias: Bias,
    },
    /// `edges`: report edge events; `debounce`: ask the kernel to debounce
    /// where it can (a hint; the service debounces again in software).
    Input {
        /// The pull applied to the line.
        bias: Bias,
        /// Whether edges are queued for [`GpioChip::take_events`].
        edges: bool,
        /// The kernel debounce period to ask for, if any.
        debounce: Option<Duration>,
    },
}

impl LineConfig {
    /// Whether this configures an output line.
    pub fn is_output(&self) -> bool {
        matches!(self, LineConfig::Output { .. })
    }

    /// Whether this configures an input line.
    pub fn is_input(&self) -> bool {
        matches!(self, LineConfig::Input { .. })
    }
}

/// Called (from any thread) whenever new edge events are waiting, so the
/// owner can wake up and call `take_events`.
pub type EventWaker = Arc<dyn Fn() + Send + Sync>;

/// A GPIO chip: a set of numbered lines configured all at once.
pub trait GpioChip: Send + Sync {
    /// How many lines the chip has (28 for a Pi header: BCM 0..=27).
    fn line_count(&self) -> u32;

    /// Replaces the whole line configuration: lines not in `lines` are
    /// released. On error nothing changes (apply whole or not at all:
    /// validate every pin first, then request). Edge events still queued
    /// from the previous configuration are discarded.
    fn configure(&mut self, lines: &BTreeMap<Pin, LineConfig>) -> Result<(), HwError>;

    /// Drives an output line. Error if the pin is not configured as an output.
    fn set(&mut self, pin: Pin, value: bool) -> Result<(), HwError>;

    /// Reads a line (input or output).
    fn get(&mut self, pin: Pin) -> Result<bool, HwError>;

    /// Edge events since the last call, oldest first (non-blocking).
    fn take_events(&mut self) -> Vec<EdgeEvent>;

    /// Installs the waker called when events arrive.
    fn set_waker(&mut self, waker: EventWaker);
}

/// Checks that every pin of a configuration is a line of a chip with
/// `line_count` lines: the step both backends take before touching anything.
pub fn check_pins(lines: &BTreeMap<Pin, LineConfig>, line_count: u32) -> Result<(), HwError> {
    match lines.keys().find(|&&pin| pin >= line_count) {
        Some(&pin) => Err(HwError::NoSuchLine {
            pin,
            lines: line_count,
        }),
        None => Ok(()),
    }
}

/// At most this many edge events wait for `take_events`; older ones are
/// dropped first. An owner that stops reading must not grow memory without
/// bound, and the kernel itself keeps only a short queue per line.
pub(crate) const MAX_PENDING_EVENTS: usize = 1024;

/// Queues an event, dropping the oldest when the queue is full.
pub(crate) fn push_event(queue: &mut VecDeque<EdgeEvent>, event: EdgeEvent) {
    if queue.len() >= MAX_PENDING_EVENTS {
        queue.pop_front();
    }
    queue.push_back(event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_pins_names_the_first_pin_off_the_chip() {
        let mut lines = BTreeMap::new();
        lines.insert(
            3,
            LineConfig::Output {
                initial: false,
                bias: Bias::Disabled,
            },
        );
        assert!(check_pins(&lines, PI_HEADER_LINES).is_ok());
        lines.insert(
            40,
            LineConfig::Output {
                initial: false,
                bias: Bias::Disabled,
            },
        );
        lines.insert(
            28,
            LineConfig::Output {
                initial: false,
                bias: Bias::Disabled,
            },
        );
        match check_pins(&lines, PI_HEADER_LINES) {
            Err(HwError::NoSuchLine { pin: 28, lines: 28 }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_event_queue_is_bounded_and_drops_the_oldest() {
        let mut queue = VecDeque::new();
        for i in 0..(MAX_PENDING_EVENTS as u64 + 5) {
            push_event(
                &mut queue,
                EdgeEvent {
                    pin: 1,
                    edge: Edge::Rising,
                    timestamp_ns: i,
                },
            );
        }
        assert_eq!(queue.len(), MAX_PENDING_EVENTS);
        assert_eq!(queue.front().unwrap().timestamp_ns, 5);
    }

    #[test]
    fn line_config_direction() {
        assert!(
            LineConfig::Output {
                initial: true,
                bias: Bias::Disabled
            }
            .is_output()
        );
        let input = LineConfig::Input {
            bias: Bias::PullUp,
            edges: true,
            debounce: None,
        };
        assert!(input.is_input() && !input.is_output());
    }
}
