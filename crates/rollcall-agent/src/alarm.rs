//! The shell's one timer: wakes the agent loop at the core's next deadline
//! (`Effect::WakeAt`: scans, answers due, relay ends, saves).
//!
//! On Linux it is a `timerfd` the runtime polls like a socket. Tokio's own
//! timer wheel keeps a deadline more than 64 ms away in a coarser level and
//! parks twice to reach it: once to the start of the coarse slot, once more
//! for the rest. An idle agent scanning inputs every 100 ms therefore woke
//! twenty times a second instead of ten. A timerfd wakes once, when the
//! kernel's high-resolution timer expires. Elsewhere it is tokio's sleep.
//!
//! Re-arming a timerfd costs a syscall that, in a virtual machine, also
//! reprograms the host's timer: on this project's 2-CPU VM about as much
//! again as the wake-up itself. The core keeps its ticks at a fixed rate
//! (`core::next_tick`), so once a deadline follows the last one fired by
//! the same step as that one followed the one before, the alarm is armed
//! periodic with that step and the kernel re-arms it by itself: an idle
//! agent scanning inputs makes no timer syscall at all.

use std::io;
use std::time::Instant;

/// An alarm for one deadline at a time, re-armed only when the deadline
/// is not the one the kernel timer will expire at next anyway.
#[derive(Debug)]
pub(crate) struct Alarm {
    #[cfg(target_os = "linux")]
    timer: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    /// What the kernel timer is set to, to skip a syscall when the loop
    /// waits for that deadline.
    #[cfg(target_os = "linux")]
    armed: Option<Armed>,
    /// The deadline that last fired: the step from it to the next deadline
    /// is the period the timer is armed with.
    #[cfg(target_os = "linux")]
    fired: Option<Instant>,
    /// How many times the kernel timer was set, for the tests.
    #[cfg(all(test, target_os = "linux"))]
    settings: usize,
}

/// The kernel timer's setting, as the deadlines the core asked for.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, PartialEq)]
struct Armed {
    /// Its next expiry.
    next: Instant,
    /// After which it expires again every `period`; `None`: once.
    period: Option<std::time::Duration>,
}

#[cfg(target_os = "linux")]
impl Alarm {
    /// A disarmed alarm. Needs a tokio runtime with I/O enabled.
    pub(crate) fn new() -> io::Result<Alarm> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // `AsyncFd::new` is deprecated because a type whose descriptor can
        // change or close behind the registration would be unsound; an
        // `OwnedFd` that the AsyncFd owns cannot. `register`, its successor,
        // is `unsafe`, which this workspace forbids.
        #[allow(deprecated)]
        let timer = tokio::io::unix::AsyncFd::new(fd)?;
        Ok(Alarm {
            timer,
            armed: None,
            fired: None,
            #[cfg(test)]
            settings: 0,
        })
    }

    /// Waits until `at`, or forever for `None`. Cancel-safe: dropped before
    /// it finishes (another branch of a `select!` won), the next call sets
    /// the deadline afresh.
    pub(crate) async fn wait_until(&mut self, at: Option<Instant>) {
        let Some(at) = at else {
            self.set(None);
            return std::future::pending().await;
        };
        if at <= Instant::now() {
            return;
        }
        self.set(Some(at));
        loop {
            let Ok(mut ready) = self.timer.readable().await else {
                // The runtime is shutting down; nothing will wake us.
                return std::future::pending().await;
            };
            // Reading the expiry count clears it; nothing to read means the
            // readiness was stale (an expiry consumed by an earlier re-arm).
            let mut count = [0u8; 8];
            let expired =
                ready.try_io(|fd| rustix::io::read(fd, &mut count).map_err(io::Error::from));
            match expired {
                Ok(Ok(_)) => {
                    // The read took every expiry: the next one is a new edge.
                    ready.clear_ready();
                    self.expired(u64::from_ne_bytes(count));
                    if Instant::now() >= at {
                        return;
                    }
                    // Fired for an older deadline: wait on.
                    self.set(Some(at));
                }
                // No timerfd read fails but with EAGAIN (handled by
                // `try_io`); were one to, do not spin on its readiness.
                Ok(Err(_)) => ready.clear_ready(),
                Err(_would_block) => {}
            }
        }
    }

    /// Books `count` expiries read from the timer: which deadline fired
    /// last, and when it expires next.
    fn expired(&mut self, count: u64) {
        let Some(Armed { next, period }) = self.armed else {
            // Expiries of a setting since replaced: nothing to book.
            return;
        };
        let Some(period) = period else {
            self.fired = Some(next);
            self.armed = None;
            return;
        };
        // A periodic timer expired `count` times, the first at `next`.
        let late = u32::try_from(count.saturating_sub(1)).unwrap_or(u32::MAX);
        let fired = period.checked_mul(late).and_then(|d| next.checked_add(d));
        self.fired = fired;
        self.armed = fired
            .and_then(|fired| fired.checked_add(period))
            .map(|next| Armed {
                next,
                period: Some(period),
            });
    }

    /// Sets the kernel timer to `at` (relative to now), or disarms it.
    /// Armed periodic with the step from the deadline that last fired, so
    /// the next deadline of a fixed-rate series needs no syscall.
    fn set(&mut self, at: Option<Instant>) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        if self.armed.map(|armed| armed.next) == at {
            return;
        }
        let timespec = |d: std::time::Duration| Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        };
        let zero = std::time::Duration::ZERO;
        let armed = at.map(|next| Armed {
            next,
            period: self
                .fired
                .and_then(|fired| next.checked_duration_since(fired))
                .filter(|period| !period.is_zero()),
        });
        let spec = match armed {
            Some(Armed { next, period }) => Itimerspec {
                // At least a nanosecond: a zero value would disarm it.
                it_value: timespec(
                    next.saturating_duration_since(Instant::now())
                        .max(std::time::Duration::from_nanos(1)),
                ),
                it_interval: timespec(period.unwrap_or(zero)),
            },
            None => Itimerspec {
                it_value: timespec(zero),
                it_interval: timespec(zero),
            },
        };
        #[cfg(test)]
        {
            self.settings += 1;
        }
        // Settime on our own timerfd fails only for a bad value, which the
        // conversion above rules out; if it did fail, the alarm would stay
        // as it was, so forget what it was set to and try again next time.
        self.armed = match timerfd_settime(self.timer.get_ref(), TimerfdTimerFlags::empty(), &spec)
        {
            Ok(_) => armed,
            Err(_) => None,
        };
    }
}

#[cfg(not(target_os = "linux"))]
impl Alarm {
    /// An alarm on tokio's timer.
    pub(crate) fn new() -> io::Result<Alarm> {
        Ok(Alarm {})
    }

    /// Waits until `at`, or forever for `None`.
    pub(crate) async fn wait_until(&mut self, at: Option<Instant>) {
        match at {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn it_wakes_at_the_deadline_and_not_before() {
        let mut alarm = Alarm::new().unwrap();
        let start = Instant::now();
        let at = start + Duration::from_millis(30);
        alarm.wait_until(Some(at)).await;
        assert!(Instant::now() >= at);
        // A deadline already past returns at once.
        alarm.wait_until(Some(start)).await;
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_it_usable_for_a_new_deadline() {
        let mut alarm = Alarm::new().unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        let cancelled =
            tokio::time::timeout(Duration::from_millis(20), alarm.wait_until(Some(far))).await;
        assert!(cancelled.is_err(), "an hour away, it must not fire");
        let near = Instant::now() + Duration::from_millis(20);
        alarm.wait_until(Some(near)).await;
        assert!(Instant::now() >= near);
        // Nothing to wait for: it waits forever.
        let never = tokio::time::timeout(Duration::from_millis(20), alarm.wait_until(None)).await;
        assert!(never.is_err());
    }

    #[tokio::test]
    async fn a_fixed_rate_series_sets_the_kernel_timer_twice_and_wakes_on_time() {
        let mut alarm = Alarm::new().unwrap();
        let step = Duration::from_millis(40);
        let mut at = Instant::now() + step;
        // A deadline already past when the wait begins (this thread kept
        // off the CPU) returns at once and breaks the series: counted.
        let mut passed = 0;
        for _ in 0..6 {
            passed += usize::from(Instant::now() >= at);
            alarm.wait_until(Some(at)).await;
            assert!(Instant::now() >= at, "woke before its deadline");
            at += step;
        }
        if passed == 0 {
            // Once alone, once periodic: the other four came from the kernel.
            assert_eq!(alarm.settings, 2);
        } else {
            assert!(
                alarm.settings <= 2 + 2 * passed,
                "{} settings",
                alarm.settings
            );
        }
    }

    #[tokio::test]
    async fn a_deadline_off_the_series_is_set_and_kept() {
        let mut alarm = Alarm::new().unwrap();
        let step = Duration::from_millis(20);
        let start = Instant::now();
        alarm.wait_until(Some(start + step)).await;
        alarm.wait_until(Some(start + 2 * step)).await;
        // Periodic now, due at 3 steps; the next deadline is later than
        // that: the kernel's expiry at 3 steps must not end the wait.
        let later = start + 7 * step;
        alarm.wait_until(Some(later)).await;
        assert!(Instant::now() >= later, "woke at the series' expiry");
        // And sooner than the series would have it.
        let sooner = Instant::now() + Duration::from_millis(30);
        alarm.wait_until(Some(sooner)).await;
        assert!(Instant::now() >= sooner);
    }

    #[tokio::test]
    async fn an_expiry_left_unread_does_not_end_a_later_wait_early() {
        let mut alarm = Alarm::new().unwrap();
        // Arm for 5 ms, give up before it fires, let it expire unread...
        let soon = Instant::now() + Duration::from_millis(5);
        let _ = tokio::time::timeout(Duration::from_millis(1), alarm.wait_until(Some(soon))).await;
        std::thread::sleep(Duration::from_millis(10));
        // ...then wait for a later deadline: the stale expiry must not end it.
        let later = Instant::now() + Duration::from_millis(50);
        alarm.wait_until(Some(later)).await;
        assert!(Instant::now() >= later);
    }
}
