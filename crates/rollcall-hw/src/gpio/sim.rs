//! The simulated GPIO chip: lines held in memory, inputs driven through a
//! [`SimHandle`] by a test, the demo, or an MQTT topic, outputs readable back
//! through the same handle.
//!
//! It behaves like the character device where the service can tell: a whole
//! configuration is taken or refused, only configured lines can be read,
//! only outputs set, edges are queued with a monotonic timestamp and the
//! waker is called from the thread that caused them. It does not debounce:
//! the kernel's debounce is only a hint, and the service debounces anyway.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::{
    Bias, Edge, EdgeEvent, EventWaker, GpioChip, LineConfig, PI_HEADER_LINES, Pin, check_pins,
    push_event,
};
use crate::HwError;

/// A monotonic clock in nanoseconds, for edge timestamps.
pub type SimClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A chip of `lines` simulated lines.
pub struct SimChip {
    shared: Arc<Shared>,
}

/// Drives a [`SimChip`]'s inputs and reads its lines from outside, from any
/// thread; clones share the chip.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    clock: SimClock,
}

struct State {
    lines: u32,
    config: BTreeMap<Pin, LineConfig>,
    /// Levels of output lines, as last set.
    outputs: BTreeMap<Pin, bool>,
    /// Levels forced on input lines from outside; an input absent here
    /// reads its pull.
    driven: BTreeMap<Pin, bool>,
    events: VecDeque<EdgeEvent>,
    waker: Option<EventWaker>,
}

impl State {
    fn level(&self, pin: Pin) -> Option<bool> {
        match self.config.get(&pin)? {
            LineConfig::Output { .. } => self.outputs.get(&pin).copied(),
            LineConfig::Input { bias, .. } => Some(
                self.driven
                    .get(&pin)
                    .copied()
                    .unwrap_or(*bias == Bias::PullUp),
            ),
        }
    }
}

impl Shared {
    /// A panic elsewhere while the lock was held leaves the state whole (every
    /// change is a single insert or remove), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SimChip {
    /// A chip with `lines` lines, its clock starting at zero now.
    pub fn new(lines: u32) -> Self {
        let start = Instant::now();
        let clock: SimClock =
            Arc::new(move || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        SimChip::with_clock(lines, clock)
    }

    /// A chip shaped like a Raspberry Pi header: BCM 0 to 27.
    pub fn pi() -> Self {
        SimChip::new(PI_HEADER_LINES)
    }

    /// A chip whose edge timestamps come from `clock`, so that a test can
    /// decide what time it is.
    pub fn with_clock(lines: u32, clock: SimClock) -> Self {
        SimChip {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    lines,
                    config: BTreeMap::new(),
                    outputs: BTreeMap::new(),
                    driven: BTreeMap::new(),
                    events: VecDeque::new(),
                    waker: None,
                }),
                clock,
            }),
        }
    }

    /// A handle to drive inputs and read lines from outside the chip's owner.
    pub fn handle(&self) -> SimHandle {
        SimHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl fmt::Debug for SimChip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("SimChip")
            .field("lines", &state.lines)
            .field("config", &state.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle").finish_non_exhaustive()
    }
}

impl GpioChip for SimChip {
    fn line_count(&self) -> u32 {
        self.shared.lock().lines
    }

    fn configure(&mut self, lines: &BTreeMap<Pin, LineConfig>) -> Result<(), HwError> {
        let mut state = self.shared.lock();
        check_pins(lines, state.lines)?;
        state.outputs.clear();
        for (&pin, config) in lines {
            if let LineConfig::Output { initial, .. } = *config {
                state.outputs.insert(pin, initial);
            }
        }
        // Whatever drives an input from outside (a held button) is still
        // there after a reconfiguration, as long as the line stays an input.
        state
            .driven
            .retain(|pin, _| lines.get(pin).is_some_and(LineConfig::is_input));
        state.config = lines.clone();
        state.events.clear();
        Ok(())
    }

    fn set(&mut self, pin: Pin, value: bool) -> Result<(), HwError> {
        let mut state = self.shared.lock();
        if pin >= state.lines {
            return Err(HwError::NoSuchLine {
                pin,
                lines: state.lines,
            });
        }
        match state.config.get(&pin) {
            Some(LineConfig::Output { .. }) => {
                state.outputs.insert(pin, value);
                Ok(())
            }
            _ => Err(HwError::NotAnOutput { pin }),
        }
    }

    fn get(&mut self, pin: Pin) -> Result<bool, HwError> {
        let state = self.shared.lock();
        if pin >= state.lines {
            return Err(HwError::NoSuchLine {
                pin,
                lines: state.lines,
            });
        }
        state.level(pin).ok_or(HwError::NotConfigured { pin })
    }

    fn take_events(&mut self) -> Vec<EdgeEvent> {
        self.shared.lock().events.drain(..).collect()
    }

    fn set_waker(&mut self, waker: EventWaker) {
        self.shared.lock().waker = Some(waker);
    }
}

impl SimHandle {
    /// Drives a configured input line to `value`, as a button or a sensor
    /// would. When the level changes on a line with edges on, an edge is
    /// queued and the waker called (after the chip's lock is released, so the
    /// waker may call back into the chip's owner).
    pub fn drive(&self, pin: Pin, value: bool) -> Result<(), HwError> {
        let waker = {
            let mut state = self.shared.lock();
            if pin >= state.lines {
                return Err(HwError::NoSuchLine {
                    pin,
                    lines: state.lines,
                });
            }
            let edges = match state.config.get(&pin) {
                Some(LineConfig::Input { edges, .. }) => *edges,
                _ => return Err(HwError::NotAnInput { pin }),
            };
            let before = state.level(pin);
            state.driven.insert(pin, value);
            if !edges || before == Some(value) {
                return Ok(());
            }
            let event = EdgeEvent {
                pin,
                edge: if value { Edge::Rising } else { Edge::Falling },
                timestamp_ns: (self.shared.clock)(),
            };
            push_event(&mut state.events, event);
            state.waker.clone()
        };
        if let Some(waker) = waker {
            waker();
        }
        Ok(())
    }

    /// Stops driving an input line, which then reads its pull again (and
    /// reports the edge if that changes its level).
    pub fn release(&self, pin: Pin) -> Result<(), HwError> {
        let pull = {
            let state = self.shared.lock();
            match state.config.get(&pin) {
                Some(LineConfig::Input { bias, .. }) => *bias == Bias::PullUp,
                _ if pin >= state.lines => {
                    return Err(HwError::NoSuchLine {
                        pin,
                        lines: state.lines,
                    });
                }
                _ => return Err(HwError::NotAnInput { pin }),
            }
        };
        self.drive(pin, pull)?;
        self.shared.lock().driven.remove(&pin);
        Ok(())
    }

    /// The level of a configured line: what an output was last set to, what
    /// an input is driven to or pulled to. `None` for a line not configured.
    pub fn level(&self, pin: Pin) -> Option<bool> {
        self.shared.lock().level(pin)
    }

    /// How a line is configured, if it is.
    pub fn line_config(&self, pin: Pin) -> Option<LineConfig> {
        self.shared.lock().config.get(&pin).copied()
    }

    /// How many lines the chip has.
    pub fn line_count(&self) -> u32 {
        self.shared.lock().lines
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn input(bias: Bias, edges: bool) -> LineConfig {
        LineConfig::Input {
            bias,
            edges,
            debounce: None,
        }
    }

    fn fixed_clock() -> (SimChip, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(0));
        let read = Arc::clone(&now);
        let chip = SimChip::with_clock(8, Arc::new(move || read.load(Ordering::SeqCst)));
        (chip, now)
    }

    #[test]
    fn undriven_inputs_read_their_pull() {
        let mut chip = SimChip::new(8);
        let lines = BTreeMap::from([
            (1, input(Bias::PullUp, false)),
            (2, input(Bias::PullDown, false)),
            (3, input(Bias::Disabled, false)),
        ]);
        chip.configure(&lines).unwrap();
        assert!(chip.get(1).unwrap());
        assert!(!chip.get(2).unwrap());
        assert!(!chip.get(3).unwrap());
    }

    #[test]
    fn edges_carry_the_injected_clock() {
        let (mut chip, now) = fixed_clock();
        chip.configure(&BTreeMap::from([(4, input(Bias::PullDown, true))]))
            .unwrap();
        let handle = chip.handle();
        now.store(1_000, Ordering::SeqCst);
        handle.drive(4, true).unwrap();
        // Same level again: no edge.
        handle.drive(4, true).unwrap();
        now.store(2_500, Ordering::SeqCst);
        handle.drive(4, false).unwrap();
        assert_eq!(
            chip.take_events(),
            vec![
                EdgeEvent {
                    pin: 4,
                    edge: Edge::Rising,
                    timestamp_ns: 1_000
                },
                EdgeEvent {
                    pin: 4,
                    edge: Edge::Falling,
                    timestamp_ns: 2_500
                },
            ]
        );
        assert!(chip.take_events().is_empty());
    }

    #[test]
    fn release_returns_to_the_pull_with_an_edge() {
        let (mut chip, _) = fixed_clock();
        chip.configure(&BTreeMap::from([(4, input(Bias::PullUp, true))]))
            .unwrap();
        let handle = chip.handle();
        handle.drive(4, false).unwrap();
        handle.release(4).unwrap();
        assert_eq!(handle.level(4), Some(true));
        let edges: Vec<Edge> = chip.take_events().iter().map(|e| e.edge).collect();
        assert_eq!(edges, vec![Edge::Falling, Edge::Rising]);
        // Changing the pull now changes what the line reads: nobody drives it.
        chip.configure(&BTreeMap::from([(4, input(Bias::PullDown, true))]))
            .unwrap();
        assert_eq!(handle.level(4), Some(false));
    }

    #[test]
    fn a_held_input_stays_held_across_reconfiguration_but_not_as_an_output() {
        let mut chip = SimChip::new(8);
        chip.configure(&BTreeMap::from([(5, input(Bias::PullDown, true))]))
            .unwrap();
        let handle = chip.handle();
        handle.drive(5, true).unwrap();
        chip.configure(&BTreeMap::from([(5, input(Bias::PullDown, false))]))
            .unwrap();
        assert!(chip.get(5).unwrap());
        // Pending events belong to the old configuration.
        assert!(chip.take_events().is_empty());
        chip.configure(&BTreeMap::from([(
            5,
            LineConfig::Output {
                initial: false,
                bias: Bias::Disabled,
            },
        )]))
        .unwrap();
        chip.configure(&BTreeMap::from([(5, input(Bias::PullDown, false))]))
            .unwrap();
        assert!(!chip.get(5).unwrap());
    }

    #[test]
    fn errors_name_the_pin() {
        let mut chip = SimChip::new(8);
        chip.configure(&BTreeMap::from([
            (
                1,
                LineConfig::Output {
                    initial: true,
                    bias: Bias::Disabled,
                },
            ),
            (2, input(Bias::Disabled, true)),
        ]))
        .unwrap();
        let handle = chip.handle();
        assert!(matches!(
            chip.set(2, true),
            Err(HwError::NotAnOutput { pin: 2 })
        ));
        assert!(matches!(
            chip.set(3, true),
            Err(HwError::NotAnOutput { pin: 3 })
        ));
        assert!(matches!(
            chip.set(8, true),
            Err(HwError::NoSuchLine { pin: 8, lines: 8 })
        ));
        assert!(matches!(
            chip.get(3),
            Err(HwError::NotConfigured { pin: 3 })
        ));
        assert!(matches!(
            handle.drive(1, false),
            Err(HwError::NotAnInput { pin: 1 })
        ));
        assert!(matches!(
            handle.drive(9, false),
            Err(HwError::NoSuchLine { .. })
        ));
        assert!(matches!(
            handle.release(1),
            Err(HwError::NotAnInput { pin: 1 })
        ));
        assert_eq!(handle.level(3), None);
        assert_eq!(handle.line_count(), 8);
        assert_eq!(
            handle.line_config(1),
            Some(LineConfig::Output {
                initial: true,
                bias: Bias::Disabled
            })
        );
    }

    #[test]
    fn a_poisoned_lock_is_recovered() {
        let mut chip = SimChip::new(4);
        chip.configure(&BTreeMap::from([(
            0,
            LineConfig::Output {
                initial: true,
                bias: Bias::Disabled,
            },
        )]))
        .unwrap();
        let shared = Arc::clone(&chip.shared);
        let _ = std::thread::spawn(move || {
            let _guard = shared.state.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(chip.shared.state.is_poisoned());
        assert!(chip.get(0).unwrap());
        chip.set(0, false).unwrap();
        assert_eq!(chip.handle().level(0), Some(false));
    }

    #[test]
    fn debug_shows_the_configuration() {
        let chip = SimChip::pi();
        let text = format!("{chip:?} {:?}", chip.handle());
        assert!(text.contains("lines: 28"), "{text}");
    }
}
