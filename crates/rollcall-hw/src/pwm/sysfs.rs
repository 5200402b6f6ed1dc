//! Hardware PWM through the kernel's sysfs interface,
//! `{sysfs_root}/class/pwm/pwmchipN/pwmM/{period,duty_cycle,polarity,enable}`.
//!
//! The kernel checks every write on its own: the duty may never exceed the
//! period, and the polarity only changes while the channel is disabled. So
//! the order of writes matters, and it is decided by a pure function,
//! [`write_plan`], that the tests check case by case; [`SysfsPwm::apply`]
//! only carries the plan out.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Polarity, PwmChannel, PwmSettings};
use crate::HwError;

/// How long an exported channel may take to appear, files writable. The
/// kernel creates the folder at once, but udev may still be handing its
/// files to the `gpio` group for a non-root user.
const EXPORT_WAIT: Duration = Duration::from_secs(1);

/// One channel of a sysfs PWM chip, exported while this value lives.
#[derive(Debug)]
pub struct SysfsPwm {
    chip_dir: PathBuf,
    channel: u32,
    dir: PathBuf,
    current: Option<PwmSettings>,
    open: bool,
}

impl SysfsPwm {
    /// Opens channel `channel` of `{sysfs_root}/class/pwm/pwmchip{chip}`
    /// (`sysfs_root` is `/sys` on a real system), exporting it if it is not
    /// yet, and reads what it is set to.
    pub fn open(sysfs_root: &Path, chip: u32, channel: u32) -> Result<Self, HwError> {
        let chip_dir = sysfs_root.join(format!("class/pwm/pwmchip{chip}"));
        fs::metadata(&chip_dir).map_err(|e| HwError::io(&chip_dir, e))?;
        let npwm_path = chip_dir.join("npwm");
        if let Ok(text) = fs::read_to_string(&npwm_path) {
            let npwm: u32 = text.trim().parse().map_err(|_| HwError::Parse {
                path: npwm_path.clone(),
                reason: format!("{:?} is not a channel count", text.trim()),
            })?;
            if channel >= npwm {
                return Err(HwError::InvalidPwm {
                    reason: format!(
                        "{} has {npwm} channels; there is no channel {channel}",
                        chip_dir.display()
                    ),
                });
            }
        }
        let dir = chip_dir.join(format!("pwm{channel}"));
        if !dir.exists() {
            write(&chip_dir.join("export"), &channel.to_string())?;
            wait_writable(&dir.join("period"))?;
        }
        let mut pwm = SysfsPwm {
            chip_dir,
            channel,
            dir,
            current: None,
            open: true,
        };
        pwm.current = pwm.read_state();
        Ok(pwm)
    }

    /// The channel's folder (`.../pwmchip0/pwm0`).
    pub fn channel_dir(&self) -> &Path {
        &self.dir
    }

    /// Disables the channel if it runs and unexports it, reporting errors
    /// that dropping it would swallow.
    pub fn close(mut self) -> Result<(), HwError> {
        self.shut()
    }

    fn shut(&mut self) -> Result<(), HwError> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        // Left enabled, the pin would go on switching after we let it go.
        if self.current.is_none_or(|s| s.enabled) {
            write(&self.dir.join("enable"), "0")?;
        }
        write(&self.chip_dir.join("unexport"), &self.channel.to_string())
    }

    /// The channel's settings as the kernel shows them, or `None` when a file
    /// is missing or holds something unexpected.
    fn read_state(&self) -> Option<PwmSettings> {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).ok();
        let number = |name: &str| read(name)?.trim().parse::<u64>().ok();
        Some(PwmSettings {
            period_ns: number("period")?,
            duty_ns: number("duty_cycle")?,
            polarity: match read("polarity")?.trim() {
                "normal" => Polarity::Normal,
                "inversed" => Polarity::Inversed,
                _ => return None,
            },
            enabled: match number("enable")? {
                0 => false,
                1 => true,
                _ => return None,
            },
        })
    }
}

impl PwmChannel for SysfsPwm {
    fn apply(&mut self, settings: &PwmSettings) -> Result<(), HwError> {
        settings.check()?;
        for (file, value) in write_plan(self.current, settings) {
            if let Err(error) = write(&self.dir.join(file), &value) {
                // Part of the plan may have landed: ask the kernel where it is.
                self.current = self.read_state();
                return Err(error);
            }
        }
        self.current = Some(*settings);
        Ok(())
    }

    fn settings(&self) -> Option<PwmSettings> {
        self.current
    }
}

impl Drop for SysfsPwm {
    fn drop(&mut self) {
        // Nobody to tell: `close` is there for callers who want the error.
        let _ = self.shut();
    }
}

/// The writes, `(file, value)` in order, that take a channel from `current`
/// (`None`: unknown) to `new`, each one acceptable to the kernel on its own:
///
/// - a running channel is disabled first when it is to stop or change
///   polarity (polarity only changes while disabled, and stopping first
///   avoids a last odd period);
/// - when the new period is shorter than the current duty, the duty is
///   written first, else the period: the duty never exceeds the period;
/// - then the polarity, then `enable`;
/// - values that do not change are not written.
///
/// From an unknown state the plan starts from a known one: disabled, duty 0.
/// `new` must pass [`PwmSettings::check`].
pub fn write_plan(current: Option<PwmSettings>, new: &PwmSettings) -> Vec<(&'static str, String)> {
    let Some(current) = current else {
        let mut plan = vec![
            ("enable", "0".to_string()),
            ("duty_cycle", "0".to_string()),
            ("period", new.period_ns.to_string()),
            ("duty_cycle", new.duty_ns.to_string()),
            ("polarity", polarity_name(new.polarity).to_string()),
        ];
        if new.enabled {
            plan.push(("enable", "1".to_string()));
        }
        return plan;
    };
    let mut plan = Vec::new();
    let mut enabled = current.enabled;
    if enabled && (!new.enabled || new.polarity != current.polarity) {
        plan.push(("enable", "0".to_string()));
        enabled = false;
    }
    let period =
        (new.period_ns != current.period_ns).then(|| ("period", new.period_ns.to_string()));
    let duty = (new.duty_ns != current.duty_ns).then(|| ("duty_cycle", new.duty_ns.to_string()));
    if new.period_ns < current.duty_ns {
        plan.extend(duty);
        plan.extend(period);
    } else {
        plan.extend(period);
        plan.extend(duty);
    }
    if new.polarity != current.polarity {
        plan.push(("polarity", polarity_name(new.polarity).to_string()));
    }
    if new.enabled && !enabled {
        plan.push(("enable", "1".to_string()));
    }
    plan
}

fn polarity_name(polarity: Polarity) -> &'static str {
    match polarity {
        Polarity::Normal => "normal",
        Polarity::Inversed => "inversed",
    }
}

fn write(path: &Path, value: &str) -> Result<(), HwError> {
    fs::write(path, value).map_err(|e| HwError::io(path, e))
}

/// Waits until `path` exists and opens for writing, at most [`EXPORT_WAIT`].
/// Opening does not write: sysfs acts on writes alone.
fn wait_writable(path: &Path) -> Result<(), HwError> {
    let start = Instant::now();
    loop {
        match fs::OpenOptions::new().write(true).open(path) {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied)
                    && start.elapsed() < EXPORT_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(HwError::io(path, e)),
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

    fn plan(current: Option<PwmSettings>, new: PwmSettings) -> Vec<(&'static str, String)> {
        write_plan(current, &new)
    }

    fn steps(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        list.iter().map(|(f, v)| (*f, v.to_string())).collect()
    }

    /// Replays a plan on a model of the kernel's checks: each write must be
    /// accepted on its own, and the end state must be `new`.
    fn replay(current: PwmSettings, new: PwmSettings) {
        let mut state = current;
        for (file, value) in write_plan(Some(current), &new) {
            match file {
                "period" => state.period_ns = value.parse().unwrap(),
                "duty_cycle" => state.duty_ns = value.parse().unwrap(),
                "polarity" => {
                    assert!(!state.enabled, "polarity changed while enabled");
                    state.polarity = if value == "normal" {
                        Polarity::Normal
                    } else {
                        Polarity::Inversed
                    };
                }
                "enable" => state.enabled = value == "1",
                other => panic!("unexpected file {other}"),
            }
            assert!(
                state.duty_ns <= state.period_ns,
                "{current:?} -> {new:?}: duty above period after {file}"
            );
        }
        assert_eq!(state, new, "from {current:?}");
    }

    #[test]
    fn from_a_fresh_export() {
        let fresh = s(0, 0, Polarity::Normal, false);
        assert_eq!(
            plan(
                Some(fresh),
                s(20_000_000, 5_000_000, Polarity::Normal, true)
            ),
            steps(&[
                ("period", "20000000"),
                ("duty_cycle", "5000000"),
                ("enable", "1")
            ])
        );
    }

    #[test]
    fn a_shorter_period_than_the_duty_writes_the_duty_first() {
        let running = s(20_000, 15_000, Polarity::Normal, true);
        assert_eq!(
            plan(Some(running), s(10_000, 5_000, Polarity::Normal, true)),
            steps(&[("duty_cycle", "5000"), ("period", "10000")])
        );
    }

    #[test]
    fn a_longer_period_writes_the_period_first() {
        let running = s(10_000, 5_000, Polarity::Normal, true);
        assert_eq!(
            plan(Some(running), s(40_000, 30_000, Polarity::Normal, true)),
            steps(&[("period", "40000"), ("duty_cycle", "30000")])
        );
        // A period shorter than the old one but not than the old duty:
        // period first is still safe.
        assert_eq!(
            plan(Some(running), s(8_000, 2_000, Polarity::Normal, true)),
            steps(&[("period", "8000"), ("duty_cycle", "2000")])
        );
    }

    #[test]
    fn only_the_duty_changes() {
        let running = s(10_000, 5_000, Polarity::Normal, true);
        assert_eq!(
            plan(Some(running), s(10_000, 7_500, Polarity::Normal, true)),
            steps(&[("duty_cycle", "7500")])
        );
        assert!(plan(Some(running), running).is_empty());
    }

    #[test]
    fn polarity_changes_while_disabled_then_enables_again() {
        let running = s(10_000, 5_000, Polarity::Normal, true);
        assert_eq!(
            plan(Some(running), s(10_000, 5_000, Polarity::Inversed, true)),
            steps(&[("enable", "0"), ("polarity", "inversed"), ("enable", "1")])
        );
        let stopped = s(10_000, 5_000, Polarity::Inversed, false);
        assert_eq!(
            plan(Some(stopped), s(10_000, 5_000, Polarity::Normal, false)),
            steps(&[("polarity", "normal")])
        );
    }

    #[test]
    fn disabling_comes_first() {
        let running = s(10_000, 5_000, Polarity::Normal, true);
        assert_eq!(
            plan(Some(running), s(2_000, 1_000, Polarity::Normal, false)),
            steps(&[("enable", "0"), ("duty_cycle", "1000"), ("period", "2000")])
        );
        assert_eq!(
            plan(Some(running), s(10_000, 5_000, Polarity::Normal, false)),
            steps(&[("enable", "0")])
        );
    }

    #[test]
    fn from_an_unknown_state_everything_is_written_from_disabled_duty_zero() {
        assert_eq!(
            plan(None, s(1_000, 250, Polarity::Inversed, true)),
            steps(&[
                ("enable", "0"),
                ("duty_cycle", "0"),
                ("period", "1000"),
                ("duty_cycle", "250"),
                ("polarity", "inversed"),
                ("enable", "1"),
            ])
        );
        assert_eq!(
            plan(None, s(1_000, 0, Polarity::Normal, false)),
            steps(&[
                ("enable", "0"),
                ("duty_cycle", "0"),
                ("period", "1000"),
                ("duty_cycle", "0"),
                ("polarity", "normal"),
            ])
        );
    }

    #[test]
    fn every_transition_is_acceptable_to_the_kernel_at_each_step() {
        let values = [0, 1, 500, 1_000, 2_000];
        let mut all = Vec::new();
        for period in values {
            for duty in values.into_iter().filter(|&d| d <= period) {
                for polarity in [Polarity::Normal, Polarity::Inversed] {
                    for enabled in [false, true] {
                        let settings = s(period, duty, polarity, enabled);
                        if settings.check().is_ok() {
                            all.push(settings);
                        }
                    }
                }
            }
        }
        for &from in &all {
            for &to in &all {
                replay(from, to);
            }
        }
    }
}
