//! Software PWM: a thread switching a plain GPIO line through a setter, for
//! pins without a free hardware channel.
//!
//! The thread sleeps between edges on a condition variable (so new settings
//! and shutdown take effect at once, not at the end of a period) and keeps
//! its edges on a fixed grid from the start of the waveform, so sleep errors
//! do not add up. What it cannot avoid is jitter: each edge lands late by the
//! scheduler's wake-up latency, typically tens of microseconds on an idle Pi
//! and up to milliseconds under load. Good for LEDs and slow loads, not for
//! servos that need microsecond pulses (use a hardware channel). Periods
//! below [`MIN_PERIOD_NS`] are refused: they would keep a core busy.
//!
//! 0 % and 100 % duty, and a disabled channel, hold the line at one level
//! without any switching.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Polarity, PwmChannel, PwmSettings};
use crate::HwError;

/// The shortest period software PWM takes: 1 ms, a kilohertz.
pub const MIN_PERIOD_NS: u64 = 1_000_000;

/// Drives the line: `true` is high.
pub type LineSetter = Box<dyn FnMut(bool) -> Result<(), HwError> + Send>;

/// A PWM channel made in software on a GPIO line.
pub struct SoftPwm {
    shared: Arc<Shared>,
    /// The setter until the thread starts with the first `apply`: a channel
    /// never used costs no thread. (In a mutex only because the channel must
    /// be `Sync` and a setter need not be.)
    setter: Mutex<Option<LineSetter>>,
    thread: Option<JoinHandle<()>>,
    current: Option<PwmSettings>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    settings: Option<PwmSettings>,
    /// Bumped on every change, so the thread knows its waveform is stale.
    generation: u64,
    stop: bool,
    /// The setter's last failure: the waveform pauses until the next `apply`,
    /// which reports it.
    error: Option<HwError>,
}

/// What the line does for a given setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waveform {
    /// Held at one level.
    Constant(bool),
    /// `active` for `duty`, the other level for the rest of `period`.
    Toggle {
        /// The level of the duty part.
        active: bool,
        /// How long the active part lasts.
        duty: Duration,
        /// How long a whole period lasts.
        period: Duration,
    },
}

/// The waveform of `settings`: constant when disabled (at the inactive level),
/// at 0 % (inactive) and at 100 % (active); switching otherwise.
pub fn waveform(settings: &PwmSettings) -> Waveform {
    let active = settings.polarity == Polarity::Normal;
    if !settings.enabled || settings.duty_ns == 0 {
        Waveform::Constant(!active)
    } else if settings.duty_ns >= settings.period_ns {
        Waveform::Constant(active)
    } else {
        Waveform::Toggle {
            active,
            duty: Duration::from_nanos(settings.duty_ns),
            period: Duration::from_nanos(settings.period_ns),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every field is replaced whole, so a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sleeps until `deadline`; `true` if the settings changed or the channel
    /// stops first.
    fn wait_until(&self, deadline: Instant, generation: u64) -> bool {
        let mut state = self.lock();
        loop {
            if state.stop || state.generation != generation {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sleeps until the settings change or the channel stops.
    fn wait_for_change(&self, generation: u64) {
        let mut state = self.lock();
        while !state.stop && state.generation == generation {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl SoftPwm {
    /// A channel driving its line through `setter`, idle until the first
    /// `apply`. The setter runs on the channel's own thread; it must not wait
    /// for a lock held by whoever drops the channel, since dropping waits for
    /// the thread.
    pub fn new(setter: LineSetter) -> Self {
        SoftPwm {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    settings: None,
                    generation: 0,
                    stop: false,
                    error: None,
                }),
                changed: Condvar::new(),
            }),
            setter: Mutex::new(Some(setter)),
            thread: None,
            current: None,
        }
    }

    fn start(&mut self) -> Result<(), HwError> {
        let setter = self
            .setter
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(setter) = setter else {
            return Ok(());
        };
        let shared = Arc::clone(&self.shared);
        let thread = std::thread::Builder::new()
            .name("soft-pwm".into())
            .spawn(move || run(&shared, setter))
            .map_err(|e| HwError::io(PathBuf::from("(software PWM thread)"), e))?;
        self.thread = Some(thread);
        Ok(())
    }
}

impl std::fmt::Debug for SoftPwm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftPwm")
            .field("settings", &self.current)
            .finish_non_exhaustive()
    }
}

impl PwmChannel for SoftPwm {
    /// Takes the new settings at once (the running period is cut short).
    /// Fails, changing nothing, when the settings are refused or when the
    /// setter failed since the last call; the waveform pauses on such a
    /// failure until the next successful `apply`.
    fn apply(&mut self, settings: &PwmSettings) -> Result<(), HwError> {
        settings.check()?;
        if settings.enabled && settings.period_ns < MIN_PERIOD_NS {
            return Err(HwError::InvalidPwm {
                reason: format!(
                    "software PWM needs a period of at least {MIN_PERIOD_NS} ns, not {}",
                    settings.period_ns
                ),
            });
        }
        {
            let mut state = self.shared.lock();
            if let Some(error) = state.error.take() {
                return Err(error);
            }
        }
        self.start()?;
        let mut state = self.shared.lock();
        state.settings = Some(*settings);
        state.generation += 1;
        drop(state);
        self.shared.changed.notify_all();
        self.current = Some(*settings);
        Ok(())
    }

    fn settings(&self) -> Option<PwmSettings> {
        self.current
    }
}

impl Drop for SoftPwm {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // A panicking setter has already stopped the waveform.
            let _ = thread.join();
        }
    }
}

/// The channel's thread: follows the settings until told to stop, then
/// leaves the line at its inactive level.
fn run(shared: &Shared, mut setter: LineSetter) {
    let mut last: Option<bool> = None;
    // Writes a level unless it is the one the line already has; on failure
    // records the error and says so.
    let mut write = |value: bool, setter: &mut LineSetter| -> bool {
        if last == Some(value) {
            return true;
        }
        match setter(value) {
            Ok(()) => {
                last = Some(value);
                true
            }
            Err(error) => {
                shared.lock().error = Some(error);
                false
            }
        }
    };
    loop {
        let (settings, generation, stop) = {
            let state = shared.lock();
            (state.settings, state.generation, state.stop)
        };
        if stop {
            if let Some(settings) = settings {
                let inactive = settings.polarity != Polarity::Normal;
                let _ = write(inactive, &mut setter);
            }
            return;
        }
        let Some(settings) = settings else {
            shared.wait_for_change(generation);
            continue;
        };
        match waveform(&settings) {
            Waveform::Constant(level) => {
                write(level, &mut setter);
                shared.wait_for_change(generation);
            }
            Waveform::Toggle {
                active,
                duty,
                period,
            } => {
                let mut start = Instant::now();
                loop {
                    if !write(active, &mut setter) {
                        shared.wait_for_change(generation);
                        break;
                    }
                    if shared.wait_until(start + duty, generation) {
                        break;
                    }
                    if !write(!active, &mut setter) {
                        shared.wait_for_change(generation);
                        break;
                    }
                    if shared.wait_until(start + period, generation) {
                        break;
                    }
                    start += period;
                    // Fallen more than a period behind (a stalled system):
                    // start afresh rather than race through missed periods.
                    if Instant::now() > start + period {
                        start = Instant::now();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(period_ns: u64, duty_ns: u64, polarity: Polarity, enabled: bool) -> PwmSettings {
        PwmSettings {
            period_ns,
            duty_ns,
            polarity,
            enabled,
        }
    }

    #[test]
    fn waveforms() {
        let ms = Duration::from_millis;
        assert_eq!(
            waveform(&s(10_000_000, 3_000_000, Polarity::Normal, true)),
            Waveform::Toggle {
                active: true,
                duty: ms(3),
                period: ms(10)
            }
        );
        assert_eq!(
            waveform(&s(10_000_000, 3_000_000, Polarity::Inversed, true)),
            Waveform::Toggle {
                active: false,
                duty: ms(3),
                period: ms(10)
            }
        );
        assert_eq!(
            waveform(&s(10_000_000, 0, Polarity::Normal, true)),
            Waveform::Constant(false)
        );
        assert_eq!(
            waveform(&s(10_000_000, 10_000_000, Polarity::Normal, true)),
            Waveform::Constant(true)
        );
        assert_eq!(
            waveform(&s(10_000_000, 10_000_000, Polarity::Inversed, true)),
            Waveform::Constant(false)
        );
        assert_eq!(
            waveform(&s(10_000_000, 5_000_000, Polarity::Normal, false)),
            Waveform::Constant(false)
        );
        assert_eq!(
            waveform(&s(10_000_000, 5_000_000, Polarity::Inversed, false)),
            Waveform::Constant(true)
        );
    }

    #[test]
    fn refuses_what_it_cannot_do_without_starting() {
        let mut pwm = SoftPwm::new(Box::new(|_| Ok(())));
        assert!(matches!(
            pwm.apply(&s(100_000, 50_000, Polarity::Normal, true)),
            Err(HwError::InvalidPwm { .. })
        ));
        assert!(matches!(
            pwm.apply(&s(10_000_000, 20_000_000, Polarity::Normal, true)),
            Err(HwError::InvalidPwm { .. })
        ));
        assert!(pwm.thread.is_none());
        assert_eq!(pwm.settings(), None);
    }

    #[test]
    fn a_failing_setter_is_reported_by_the_next_apply() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut pwm = SoftPwm::new(Box::new(move |_| {
            let _ = tx.send(());
            Err(HwError::NotAnOutput { pin: 7 })
        }));
        let constant = s(10_000_000, 0, Polarity::Normal, true);
        pwm.apply(&constant).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // The error is recorded right after the setter returns; wait for it
        // under the lock rather than for a fixed time.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pwm.shared.lock().error.is_none() {
            assert!(Instant::now() < deadline, "error never recorded");
            std::thread::yield_now();
        }
        assert!(matches!(
            pwm.apply(&constant),
            Err(HwError::NotAnOutput { pin: 7 })
        ));
        // Reported once; the next apply goes through.
        pwm.apply(&constant).unwrap();
    }
}
