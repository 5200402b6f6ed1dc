//! The error type of every hardware backend.

use std::path::PathBuf;

use crate::gpio::Pin;

use thiserror::Error;

/// A hardware read or write that failed.
#[derive(Debug, Error)]
pub enum HwError {
    /// A kernel file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A kernel file held something other than what its driver documents.
    #[error("{path}: unexpected contents: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A pin that is not a line of the chip.
    #[error("pin {pin} is not on the chip, which has {lines} lines")]
    NoSuchLine {
        /// The pin asked for.
        pin: Pin,
        /// How many lines the chip has.
        lines: u32,
    },
    /// A pin that the current line configuration does not include.
    #[error("pin {pin} is not configured")]
    NotConfigured {
        /// The pin.
        pin: Pin,
    },
    /// A pin that was written but is not configured as an output.
    #[error("pin {pin} is not configured as an output")]
    NotAnOutput {
        /// The pin.
        pin: Pin,
    },
    /// A pin that was driven from outside but is not configured as an input.
    #[error("pin {pin} is not configured as an input")]
    NotAnInput {
        /// The pin.
        pin: Pin,
    },
    /// No GPIO chip carries the label (or any of the labels) looked for.
    #[error("no GPIO chip labelled {wanted}")]
    ChipNotFound {
        /// The label or labels looked for.
        wanted: String,
    },
    /// A device refused a request: the GPIO character device, for example.
    #[error("{device}: {source}")]
    Device {
        /// The device file.
        device: PathBuf,
        /// The driver's or library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A pin asked for hardware PWM that has no hardware PWM channel.
    #[error("pin {pin} has no hardware PWM channel")]
    NoPwmChannel {
        /// The pin.
        pin: Pin,
    },
    /// No sysfs PWM chip belongs to the device the header's PWM is on.
    #[error(
        "no PWM chip of {device} under {class}: is the PWM overlay loaded \
         (dtoverlay=pwm-2chan in /boot/firmware/config.txt, see docs/hardware.md)?"
    )]
    PwmChipNotFound {
        /// The device looked for (`1f00098000.pwm`).
        device: String,
        /// The folder searched (`/sys/class/pwm`).
        class: PathBuf,
    },
    /// PWM settings that no channel can take (duty above period, for example).
    #[error("invalid PWM settings: {reason}")]
    InvalidPwm {
        /// What was wrong.
        reason: String,
    },
    /// A display position outside the screen.
    #[error("row {row}, column {col} is outside the {cols}x{rows} display")]
    DisplayPosition {
        /// The row asked for (0 is the top).
        row: u8,
        /// The column asked for (0 is the left).
        col: u8,
        /// The display's columns.
        cols: u8,
        /// The display's rows.
        rows: u8,
    },
    /// A display setting it cannot take: a size its controller cannot
    /// address, a brightness above 100, a bus address off the bus.
    #[error("display: {reason}")]
    InvalidDisplay {
        /// What was wrong.
        reason: String,
    },
    /// A button name the display does not have.
    #[error("the display has no button {name:?}")]
    NoSuchButton {
        /// The name asked for.
        name: String,
    },
}

impl HwError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HwError::Io {
            path: path.into(),
            source,
        }
    }
}
