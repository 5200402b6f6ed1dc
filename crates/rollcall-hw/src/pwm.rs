//! PWM channels behind one synchronous trait, [`PwmChannel`]: the kernel's
//! sysfs PWM ([`sysfs::SysfsPwm`]), software PWM on a plain GPIO line where
//! no hardware channel is free ([`soft::SoftPwm`]), and a simulated channel
//! that only records what it was told ([`sim::SimPwm`]).
//!
//! Also which Raspberry Pi pins have a hardware channel, and which pins
//! cannot both have one. What a configuration may ask for (duty in percent,
//! sane periods) is the service's to decide; the channels only refuse what
//! no PWM can do.

use std::collections::BTreeMap;

use crate::HwError;
use crate::gpio::Pin;

pub mod sim;
pub mod soft;
pub mod sysfs;

/// Which level the duty part of a period has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// High for `duty_ns`, low for the rest of the period.
    Normal,
    /// Low for `duty_ns`, high for the rest of the period.
    Inversed,
}

/// Everything a PWM channel is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PwmSettings {
    /// The length of one period, in nanoseconds.
    pub period_ns: u64,
    /// The active part of each period, in nanoseconds; at most `period_ns`.
    pub duty_ns: u64,
    /// Which level is the active one.
    pub polarity: Polarity,
    /// Whether the channel runs; a disabled channel rests at its inactive level.
    pub enabled: bool,
}

impl PwmSettings {
    /// Refuses settings no PWM can take: a duty longer than the period, or
    /// an enabled channel with a period of zero.
    pub fn check(&self) -> Result<(), HwError> {
        if self.duty_ns > self.period_ns {
            return Err(HwError::InvalidPwm {
                reason: format!(
                    "duty {} ns is longer than the period {} ns",
                    self.duty_ns, self.period_ns
                ),
            });
        }
        if self.enabled && self.period_ns == 0 {
            return Err(HwError::InvalidPwm {
                reason: "an enabled channel needs a period above 0 ns".into(),
            });
        }
        Ok(())
    }
}

/// One PWM output.
pub trait PwmChannel: Send + Sync {
    /// Sets the channel to `settings`. Settings that [`PwmSettings::check`]
    /// refuses change nothing.
    fn apply(&mut self, settings: &PwmSettings) -> Result<(), HwError>;

    /// What the channel is set to, as far as it is known.
    fn settings(&self) -> Option<PwmSettings>;
}

/// The hardware PWM channel `(chip, channel)` a Raspberry Pi (1 to 4) header
/// pin can carry, with the `pwm-2chan` overlay loaded: GPIO 12 and 18 share
/// channel 0, GPIO 13 and 19 channel 1. So two pins sharing a channel cannot
/// both be hardware PWM ([`pwm_channel_conflict`]); the second one needs
/// software PWM. The Pi 5's RP1 numbers its chip and channels differently;
/// its channels are opened by number.
pub fn pi_pwm_channel(pin: Pin) -> Option<(u32, u32)> {
    match pin {
        12 | 18 => Some((0, 0)),
        13 | 19 => Some((0, 1)),
        _ => None,
    }
}

/// The first two pins (in the order given) that would need the same hardware
/// channel ([`pi_pwm_channel`]). Pins without a hardware channel never
/// conflict, and a pin repeated is not two pins.
pub fn pwm_channel_conflict(pins: impl IntoIterator<Item = Pin>) -> Option<(Pin, Pin)> {
    let mut owners: BTreeMap<(u32, u32), Pin> = BTreeMap::new();
    for pin in pins {
        let Some(channel) = pi_pwm_channel(pin) else {
            continue;
        };
        match owners.get(&channel) {
            Some(&first) if first != pin => return Some((first, pin)),
            Some(_) => {}
            None => {
                owners.insert(channel, pin);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(period_ns: u64, duty_ns: u64, enabled: bool) -> PwmSettings {
        PwmSettings {
            period_ns,
            duty_ns,
            polarity: Polarity::Normal,
            enabled,
        }
    }

    #[test]
    fn pi_pins_map_to_their_channels() {
        assert_eq!(pi_pwm_channel(12), Some((0, 0)));
        assert_eq!(pi_pwm_channel(18), Some((0, 0)));
        assert_eq!(pi_pwm_channel(13), Some((0, 1)));
        assert_eq!(pi_pwm_channel(19), Some((0, 1)));
        for pin in (0..28).filter(|p| ![12, 13, 18, 19].contains(p)) {
            assert_eq!(pi_pwm_channel(pin), None, "pin {pin}");
        }
    }

    #[test]
    fn conflicts_are_pins_sharing_a_channel() {
        assert_eq!(pwm_channel_conflict([12, 13]), None);
        assert_eq!(pwm_channel_conflict([12, 19, 4, 5]), None);
        assert_eq!(pwm_channel_conflict([12, 13, 18]), Some((12, 18)));
        assert_eq!(pwm_channel_conflict([19, 4, 13]), Some((19, 13)));
        assert_eq!(pwm_channel_conflict([4, 5, 6]), None);
        assert_eq!(pwm_channel_conflict([18, 18]), None);
        assert_eq!(pwm_channel_conflict(Vec::new()), None);
        let pins = [25, 18, 12];
        assert_eq!(pwm_channel_conflict(pins.iter().copied()), Some((18, 12)));
    }

    #[test]
    fn no_channel_error_names_the_pin() {
        let error = pi_pwm_channel(4).ok_or(HwError::NoPwmChannel { pin: 4 });
        assert_eq!(
            error.unwrap_err().to_string(),
            "pin 4 has no hardware PWM channel"
        );
    }

    #[test]
    fn check_refuses_what_no_channel_can_do() {
        assert!(settings(1_000, 1_000, true).check().is_ok());
        assert!(settings(1_000, 0, true).check().is_ok());
        assert!(settings(0, 0, false).check().is_ok());
        let long_duty = settings(1_000, 1_001, false).check().unwrap_err();
        assert!(long_duty.to_string().contains("1001 ns"), "{long_duty}");
        assert!(matches!(
            settings(0, 0, true).check(),
            Err(HwError::InvalidPwm { .. })
        ));
    }
}
