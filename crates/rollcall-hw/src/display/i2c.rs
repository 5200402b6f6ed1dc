//! The I2C bus a display driver writes through, as a small trait
//! ([`I2cBus`]: write bytes to one device, wait), so a test can record every
//! byte and every wait; and on Linux the i2c-dev character device
//! (`/dev/i2c-N`) through the `i2cdev` crate ([`LinuxI2c`]).
//!
//! The Linux part is kept to opening the device at an address and writing
//! (as plain I2C, or as the SMBus transfers that are the same bytes where the
//! adapter is SMBus-only). It runs against the kernel's `i2c-stub` in
//! `tests/kernel_vm.rs`; what it would decide otherwise lives in the drivers
//! above it or in [`check_address`].

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
    use i2cdev::linux::{LinuxI2CDevice, LinuxI2CError};
    use rustix::io::Errno;

    use super::{I2cBus, check_address};
    use crate::HwError;

    /// The most bytes one SMBus "I2C block write" carries after its first
    /// (command) byte.
    const SMBUS_BLOCK: usize = 32;

    /// How writes reach the device. Most adapters (the Pi's included) take
    /// plain I2C transfers; an SMBus-only adapter (a PC's SMBus controller,
    /// some USB adapters, the kernel's `i2c-stub`) refuses them, and takes
    /// the SMBus transfers that are the same bytes on the wire instead.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Transfers {
        Plain,
        Smbus,
    }

    /// A device at one address on a Linux i2c-dev bus (`/dev/i2c-1` is the
    /// header's bus on a Raspberry Pi, pins 3 and 5).
    pub struct LinuxI2c {
        path: PathBuf,
        addr: u16,
        device: LinuxI2CDevice,
        transfers: Transfers,
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
                transfers: Transfers::Plain,
            })
        }

        /// Writes `bytes` as SMBus transfers: one byte is a "send byte", more
        /// are an "I2C block write" whose command byte is the first. Both put
        /// exactly these bytes on the wire after the address. Past 33 bytes
        /// the write is split, which a device that latches every byte it
        /// receives (the PCF8574 behind an LCD) cannot tell from one transfer.
        fn write_smbus(&mut self, bytes: &[u8]) -> Result<(), LinuxI2CError> {
            for chunk in bytes.chunks(SMBUS_BLOCK + 1) {
                match chunk {
                    [byte] => self.device.smbus_write_byte(*byte)?,
                    [first, rest @ ..] => self.device.smbus_write_i2c_block_data(*first, rest)?,
                    [] => {}
                }
            }
            Ok(())
        }

        fn error(&self, source: &LinuxI2CError) -> HwError {
            let reason = match errno(source) {
                // No acknowledgement: ENXIO or EREMOTEIO from real adapters,
                // ENODEV from i2c-stub.
                Some(Errno::NXIO | Errno::REMOTEIO | Errno::NODEV) => format!(
                    "no device acknowledged address {:#04x} (not connected, not powered, \
                     or another address: `i2cdetect` lists the bus)",
                    self.addr
                ),
                _ => format!("write to {:#04x}: {source}", self.addr),
            };
            HwError::Device {
                device: self.path.clone(),
                source: reason.into(),
            }
        }
    }

    /// The errno behind an i2cdev error, whichever way it came.
    fn errno(error: &LinuxI2CError) -> Option<Errno> {
        match error {
            LinuxI2CError::Errno(n) => Some(Errno::from_raw_os_error(*n)),
            LinuxI2CError::Io(io) => io.raw_os_error().map(Errno::from_raw_os_error),
        }
    }

    impl I2cBus for LinuxI2c {
        fn write(&mut self, bytes: &[u8]) -> Result<(), HwError> {
            if self.transfers == Transfers::Plain {
                match self.device.write(bytes) {
                    Ok(()) => return Ok(()),
                    // The adapter has no plain I2C; nothing went on the wire.
                    Err(e) if errno(&e) == Some(Errno::OPNOTSUPP) => {
                        self.transfers = Transfers::Smbus;
                    }
                    Err(e) => return Err(self.error(&e)),
                }
            }
            self.write_smbus(bytes).map_err(|e| self.error(&e))
        }
    }

    impl fmt::Debug for LinuxI2c {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LinuxI2c")
                .field("path", &self.path)
                .field("addr", &format_args!("{:#04x}", self.addr))
                .field("transfers", &self.transfers)
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
