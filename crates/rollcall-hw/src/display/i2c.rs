//! The I2C bus a display driver writes through, as a small trait
//! ([`I2cBus`]: write bytes to one device, wait), so a test can record every
//! byte and every wait; and on Linux the i2c-dev character device
//! (`/dev/i2c-N`) through the `i2cdev` crate ([`LinuxI2c`]).
//!
//! The Linux part is kept to opening the device at an address and writing:
//! it cannot run where the tests run (no `/dev/i2c-*`), so everything it
//! would decide lives in the drivers above it or in [`check_address`].

use std::time::Duration;

use crate::HwError;

/// One device on an I2C bus, written to and never read.
pub trait I2cBus: Send {
    /// Writes `bytes` to the device in one I2C write transfer.
    fn write(&mut self, bytes: &[u8]) -> Result<(), HwError>;

    /// Waits at least `duration` before the next write: the time a device
    /// needs to act on what it was sent. A test overrides it to record the
    /// waits instead of sleeping.
    fn delay(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Checks a 7-bit I2C address: 0x08 to 0x77, the addresses the I2C
/// specification leaves to devices (0x00-0x07 and 0x78-0x7F are reserved).
pub fn check_address(addr: u16) -> Result<(), HwError> {
    if !(0x08..=0x77).contains(&addr) {
        return Err(HwError::InvalidDisplay {
            reason: format!("I2C address {addr:#04x} is outside 0x08..=0x77"),
        });
    }
    Ok(())
}

#[cfg(target_os = "linux")]
pub use linux::LinuxI2c;

#[cfg(target_os = "linux")]
mod linux {
    use std::fmt;
    use std::path::{Path, PathBuf};

    use i2cdev::core::I2CDevice;
    use i2cdev::linux::LinuxI2CDevice;

    use super::{I2cBus, check_address};
    use crate::HwError;

    /// A device at one address on a Linux i2c-dev bus (`/dev/i2c-1` is the
    /// header's bus on a Raspberry Pi, pins 3 and 5).
    pub struct LinuxI2c {
        path: PathBuf,
        addr: u16,
        device: LinuxI2CDevice,
    }

    impl LinuxI2c {
        /// Opens `path` and selects the device at `addr` (7-bit). The
        /// kernel refuses an address a kernel driver has claimed.
        pub fn open(path: &Path, addr: u16) -> Result<Self, HwError> {
            check_address(addr)?;
            let device = LinuxI2CDevice::new(path, addr).map_err(|source| HwError::Device {
                device: path.to_owned(),
                source: Box::new(source),
            })?;
            Ok(LinuxI2c {
                path: path.to_owned(),
                addr,
                device,
            })
        }
    }

    impl I2cBus for LinuxI2c {
        fn write(&mut self, bytes: &[u8]) -> Result<(), HwError> {
            // A device that does not acknowledge (unplugged, wrong address)
            // makes the kernel return ENXIO or EREMOTEIO here.
            self.device.write(bytes).map_err(|source| HwError::Device {
                device: self.path.clone(),
                source: format!("write to {:#04x}: {source}", self.addr).into(),
            })
        }
    }

    impl fmt::Debug for LinuxI2c {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LinuxI2c")
                .field("path", &self.path)
                .field("addr", &format_args!("{:#04x}", self.addr))
                .finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_outside_the_device_range_are_refused() {
        for addr in [0x08, 0x27, 0x3f, 0x77] {
            assert!(check_address(addr).is_ok(), "{addr:#x}");
        }
        for addr in [0x00, 0x07, 0x78, 0x7f, 0x80, 0x3ff] {
            assert!(
                matches!(check_address(addr), Err(HwError::InvalidDisplay { .. })),
                "{addr:#x}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn opening_a_missing_bus_is_an_error_naming_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i2c-9");
        match LinuxI2c::open(&path, 0x27) {
            Err(HwError::Device { device, .. }) => assert_eq!(device, path),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_that_is_not_an_i2c_bus_is_refused_at_open() {
        // It opens, but the kernel refuses to select an address on it
        // (ENOTTY): the error comes at open, not at the first write.
        let file = tempfile::NamedTempFile::new().unwrap();
        match LinuxI2c::open(file.path(), 0x27) {
            Err(HwError::Device { device, .. }) => assert_eq!(device, file.path()),
            other => panic!("unexpected {other:?}"),
        }
        let bad = LinuxI2c::open(file.path(), 0x80).unwrap_err();
        assert!(matches!(bad, HwError::InvalidDisplay { .. }), "{bad}");
    }
}
