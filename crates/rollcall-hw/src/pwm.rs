//! PWM channels behind one synchronous trait, [`PwmChannel`]: the kernel's
//! sysfs PWM ([`sysfs::SysfsPwm`]), software PWM on a plain GPIO line where
//! no hardware channel is free ([`soft::SoftPwm`]), and a simulated channel
//! that only records what it was told ([`sim::SimPwm`]).
//!
//! Also which Raspberry Pi pins have a hardware channel, and which pins
//! cannot both have one, on the Pi 1 to 4 and on the Pi 5 ([`PiPwm`]). What a configuration may ask for (duty in percent,
//! sane periods) is the service's to decide; the channels only refuse what
//! no PWM can do.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

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
/// software PWM. The Pi 5 has its own map, [`pi5_pwm_channel`].
pub fn pi_pwm_channel(pin: Pin) -> Option<(u32, u32)> {
    match pin {
        12 | 18 => Some((0, 0)),
        13 | 19 => Some((0, 1)),
        _ => None,
    }
}

/// The hardware PWM channel of a Raspberry Pi 5 header pin: RP1's PWM0 has
/// four channels, GPIO 12 on channel 0, 13 on 1, 18 on 2 and 19 on 3 (RP1
/// peripherals datasheet, the pins' PWM0_CHAN functions), so no two header
/// pins share one. `chip` is 0, RP1's PWM0; which `pwmchipN` that is differs
/// between kernels, and [`PiPwm::sysfs_chip`] finds it.
pub fn pi5_pwm_channel(pin: Pin) -> Option<(u32, u32)> {
    match pin {
        12 => Some((0, 0)),
        13 => Some((0, 1)),
        18 => Some((0, 2)),
        19 => Some((0, 3)),
        _ => None,
    }
}

/// RP1's PWM0 in the device tree: the part of a Pi 5 `pwmchipN`'s sysfs path
/// that says it is the header's PWM (PWM1, `1f0009c000.pwm`, runs the fan).
pub const RP1_PWM0_DEVICE: &str = "1f00098000.pwm";

/// Which PWM block drives a Raspberry Pi's header pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiPwm {
    /// The BCM2835's PWM (Pi 1 to 4, Zero): `pwmchip0`, two channels.
    Bcm2835,
    /// The Pi 5's RP1 south bridge: PWM0, four channels, its `pwmchipN`
    /// found by its device ([`RP1_PWM0_DEVICE`]).
    Rp1,
}

impl PiPwm {
    /// The block of the board whose device-tree root `compatible` is
    /// `compatible` (NUL-separated strings, as the kernel shows it): the
    /// BCM2712 (Pi 5, Pi 500, CM5) has RP1; anything else, or no device
    /// tree, the BCM2835's layout that the `pwm-2chan` overlay sets up.
    pub fn from_compatible(compatible: &[u8]) -> PiPwm {
        let is_bcm2712 = compatible
            .split(|&b| b == 0)
            .any(|entry| entry == b"brcm,bcm2712");
        if is_bcm2712 {
            PiPwm::Rp1
        } else {
            PiPwm::Bcm2835
        }
    }

    /// The block of this board, from
    /// `{sysfs_root}/firmware/devicetree/base/compatible` (what
    /// `/proc/device-tree` links to; `sysfs_root` is `/sys` on a real system).
    pub fn detect(sysfs_root: &Path) -> PiPwm {
        let path = sysfs_root.join("firmware/devicetree/base/compatible");
        PiPwm::from_compatible(&fs::read(path).unwrap_or_default())
    }

    /// Which channel each header pin has ([`pi_pwm_channel`] or [`pi5_pwm_channel`]).
    pub fn channel_of(self) -> fn(Pin) -> Option<(u32, u32)> {
        match self {
            PiPwm::Bcm2835 => pi_pwm_channel,
            PiPwm::Rp1 => pi5_pwm_channel,
        }
    }

    /// The `N` of the `{sysfs_root}/class/pwm/pwmchipN` that carries the
    /// header's channels: 0 for the BCM2835; for RP1 the chip whose sysfs
    /// path names [`RP1_PWM0_DEVICE`] (`pwmchip2` on the Pi 5's first
    /// kernels, `pwmchip0` on later ones).
    pub fn sysfs_chip(self, sysfs_root: &Path) -> Result<u32, HwError> {
        match self {
            PiPwm::Bcm2835 => Ok(0),
            PiPwm::Rp1 => find_pwmchip(sysfs_root, RP1_PWM0_DEVICE),
        }
    }
}

/// The number of the first (lowest) `{sysfs_root}/class/pwm/pwmchipN` whose
/// link into `/sys/devices` passes through a folder named `device`.
pub fn find_pwmchip(sysfs_root: &Path, device: &str) -> Result<u32, HwError> {
    let class = sysfs_root.join("class/pwm");
    let entries = fs::read_dir(&class).map_err(|e| HwError::io(&class, e))?;
    let mut found: Option<u32> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("pwmchip"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // The class entry is a link to the chip's folder under
        // /sys/devices, whose path names the device that made it.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.components().any(|c| c.as_os_str() == device) {
            found = Some(found.map_or(number, |f| f.min(number)));
        }
    }
    found.ok_or_else(|| HwError::PwmChipNotFound {
        device: device.to_owned(),
        class,
    })
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
    fn pi5_pins_have_a_channel_each() {
        assert_eq!(pi5_pwm_channel(12), Some((0, 0)));
        assert_eq!(pi5_pwm_channel(13), Some((0, 1)));
        assert_eq!(pi5_pwm_channel(18), Some((0, 2)));
        assert_eq!(pi5_pwm_channel(19), Some((0, 3)));
        for pin in (0..28).filter(|p| ![12, 13, 18, 19].contains(p)) {
            assert_eq!(pi5_pwm_channel(pin), None, "pin {pin}");
        }
    }

    #[test]
    fn the_board_is_told_by_its_compatible_list() {
        assert_eq!(
            PiPwm::from_compatible(b"raspberrypi,5-model-b\0brcm,bcm2712\0"),
            PiPwm::Rp1
        );
        assert_eq!(
            PiPwm::from_compatible(b"raspberrypi,5-compute-module\0brcm,bcm2712\0"),
            PiPwm::Rp1
        );
        assert_eq!(
            PiPwm::from_compatible(b"raspberrypi,4-model-b\0brcm,bcm2711\0"),
            PiPwm::Bcm2835
        );
        assert_eq!(
            PiPwm::from_compatible(b"raspberrypi,model-zero-w\0brcm,bcm2835\0"),
            PiPwm::Bcm2835
        );
        // Only a whole entry counts, and no device tree is not a Pi 5.
        assert_eq!(
            PiPwm::from_compatible(b"acme,brcm,bcm2712-clone\0"),
            PiPwm::Bcm2835
        );
        assert_eq!(PiPwm::from_compatible(b""), PiPwm::Bcm2835);
        assert_eq!(PiPwm::Rp1.channel_of()(18), Some((0, 2)));
        assert_eq!(PiPwm::Bcm2835.channel_of()(18), Some((0, 0)));
    }

    /// A fake sysfs root: the device tree's `compatible`, and `class/pwm`
    /// links like the kernel's, to `devices/platform/...`.
    fn fake_sysfs(compatible: &[u8], chips: &[(u32, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dt = root.path().join("firmware/devicetree/base");
        fs::create_dir_all(&dt).unwrap();
        fs::write(dt.join("compatible"), compatible).unwrap();
        let class = root.path().join("class/pwm");
        fs::create_dir_all(&class).unwrap();
        for (number, device) in chips {
            let target =
                format!("../../devices/platform/axi/1000120000.pcie/{device}/pwm/pwmchip{number}");
            fs::create_dir_all(class.join(&target)).unwrap();
            std::os::unix::fs::symlink(&target, class.join(format!("pwmchip{number}"))).unwrap();
        }
        root
    }

    #[test]
    fn the_pi5_pwm_chip_is_found_by_its_device_under_either_numbering() {
        const PI5: &[u8] = b"raspberrypi,5-model-b\0brcm,bcm2712\0";
        // The first Pi 5 kernels: the fan's PWM1 and two others first.
        let old = fake_sysfs(
            PI5,
            &[
                (0, "1f0009c000.pwm"),
                (1, "107d517a80.pwm"),
                (2, RP1_PWM0_DEVICE),
            ],
        );
        assert_eq!(PiPwm::detect(old.path()), PiPwm::Rp1);
        assert_eq!(PiPwm::Rp1.sysfs_chip(old.path()).unwrap(), 2);
        // Later kernels number RP1's PWM0 first.
        let new = fake_sysfs(PI5, &[(0, RP1_PWM0_DEVICE), (1, "1f0009c000.pwm")]);
        assert_eq!(PiPwm::Rp1.sysfs_chip(new.path()).unwrap(), 0);
        // Without the overlay there is no such chip, and the error says what to load.
        let none = fake_sysfs(PI5, &[(0, "1f0009c000.pwm")]);
        let error = PiPwm::Rp1.sysfs_chip(none.path()).unwrap_err().to_string();
        assert!(
            error.contains("1f00098000.pwm") && error.contains("pwm-2chan"),
            "{error}"
        );
        // A Pi 4 keeps pwmchip0, whatever else is there.
        let pi4 = fake_sysfs(b"raspberrypi,4-model-b\0brcm,bcm2711\0", &[]);
        assert_eq!(PiPwm::detect(pi4.path()), PiPwm::Bcm2835);
        assert_eq!(PiPwm::Bcm2835.sysfs_chip(pi4.path()).unwrap(), 0);
        // No device tree at all (a PC): not a Pi 5.
        let bare = tempfile::tempdir().unwrap();
        assert_eq!(PiPwm::detect(bare.path()), PiPwm::Bcm2835);
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
