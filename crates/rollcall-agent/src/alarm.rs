//! The shell's one timer: wakes the agent loop at the core's next deadline
//! (`Effect::WakeAt`: scans, answers due, relay ends, saves).
//!
//! On Linux it is a `timerfd` the runtime polls like a socket. Tokio's own
//! timer wheel keeps a deadline more than 64 ms away in a coarser level and
//! parks twice to reach it: once to the start of the coarse slot, once more
//! for the rest. An idle agent scanning inputs every 100 ms therefore woke
//! twenty times a second instead of ten. A timerfd wakes once, when the
//! kernel's high-resolution timer expires. Elsewhere it is tokio's sleep.

use std::io;
use std::time::Instant;

/// A one-shot alarm, re-armed for each wait.
#[derive(Debug)]
pub(crate) struct Alarm {
    #[cfg(target_os = "linux")]
    timer: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    /// The deadline the kernel timer is set to, to skip a syscall when the
    /// loop waits for the same deadline again.
    #[cfg(target_os = "linux")]
    armed: Option<Instant>,
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
        Ok(Alarm { timer, armed: None })
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
            let expired = ready.try_io(|fd| {
                let mut count = [0u8; 8];
                rustix::io::read(fd, &mut count).map_err(io::Error::from)
            });
            match expired {
                Ok(Ok(_)) => {
                    // The read took every expiry: the next one is a new edge.
                    ready.clear_ready();
                    self.armed = None;
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

    /// Sets the kernel timer to `at` (relative to now), or disarms it.
    fn set(&mut self, at: Option<Instant>) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        if self.armed == at {
            return;
        }
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = match at {
            // At least a nanosecond: a zero value would disarm it.
            Some(at) => {
                let left = at
                    .saturating_duration_since(Instant::now())
                    .max(std::time::Duration::from_nanos(1));
                Timespec {
                    tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                    tv_nsec: i64::from(left.subsec_nanos()),
                }
            }
            None => zero,
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        // Settime on our own timerfd fails only for a bad value, which the
        // conversion above rules out; if it did fail, the alarm would stay
        // as it was, so forget what it was set to and try again next time.
        self.armed = match timerfd_settime(self.timer.get_ref(), TimerfdTimerFlags::empty(), &spec)
        {
            Ok(_) => at,
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
