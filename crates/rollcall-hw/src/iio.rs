//! Sensors and DACs behind two small synchronous traits, [`Sensor`] and
//! [`Dac`], with backends that read the Linux Industrial I/O (IIO) drivers
//! from sysfs ([`sysfs`]) and simulated ones for tests and the demo
//! ([`sim`]).
//!
//! A backend turns the kernel's numbers into SI units ([`Quantity`] says
//! which); how often to read, what to do when a read fails and what a
//! reading is published as belong to the services in `rollcall-services`,
//! which both backends feed.

use crate::HwError;

pub mod sim;
pub mod sysfs;

/// What an IIO channel measures: the channel type in its file names
/// (`in_temp_input`, `in_voltage0_raw`), and the unit its value is given in
/// once converted from the kernel's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// Temperature, °C (the kernel gives milli-degrees).
    Temperature,
    /// Relative humidity, % (the kernel gives milli-percent).
    Humidity,
    /// Voltage, V (the kernel gives millivolts).
    Voltage,
    /// Distance, m (the kernel gives metres).
    Distance,
    /// Air pressure, hPa (the kernel gives kilopascals).
    Pressure,
}

impl Quantity {
    /// The channel type as IIO spells it in file names.
    pub fn iio_type(self) -> &'static str {
        match self {
            Quantity::Temperature => "temp",
            Quantity::Humidity => "humidityrelative",
            Quantity::Voltage => "voltage",
            Quantity::Distance => "distance",
            Quantity::Pressure => "pressure",
        }
    }

    /// The unit of converted values.
    pub fn unit(self) -> &'static str {
        match self {
            Quantity::Temperature => "°C",
            Quantity::Humidity => "%",
            Quantity::Voltage => "V",
            Quantity::Distance => "m",
            Quantity::Pressure => "hPa",
        }
    }

    /// What one kernel unit is in [`Quantity::unit`]s (the IIO sysfs ABI).
    pub fn from_kernel(self) -> f64 {
        match self {
            Quantity::Temperature | Quantity::Humidity | Quantity::Voltage => 1e-3,
            Quantity::Distance => 1.0,
            Quantity::Pressure => 10.0,
        }
    }
}

/// One channel of a device: what it measures and its index (`None` for
/// channels without one, such as `in_temp_input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Channel {
    /// What it measures.
    pub quantity: Quantity,
    /// `voltage0` has index 0; `temp` has none.
    pub index: Option<u32>,
}

impl Channel {
    /// A channel without an index.
    pub fn plain(quantity: Quantity) -> Self {
        Channel {
            quantity,
            index: None,
        }
    }

    /// An indexed channel.
    pub fn indexed(quantity: Quantity, index: u32) -> Self {
        Channel {
            quantity,
            index: Some(index),
        }
    }

    /// `voltage0`, `temp`: the channel's name in file names.
    pub fn iio_name(&self) -> String {
        match self.index {
            Some(i) => format!("{}{i}", self.quantity.iio_type()),
            None => self.quantity.iio_type().to_owned(),
        }
    }
}

/// One reading of a channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// In the channel's [`Quantity::unit`].
    pub value: f64,
    /// The converter's raw code, where the driver gives one.
    pub raw: Option<i64>,
}

/// Something that measures: a DHT22, an ADC, an HC-SR04.
pub trait Sensor: Send + Sync {
    /// Reads `channel` now. A read may take a while: the `dht11` driver
    /// takes about 25 ms when the DHT22 answers and up to 1 s when it does
    /// not (it gives its last good value at once for 2 s after a good read).
    fn read(&mut self, channel: Channel) -> Result<Sample, HwError>;
}

/// A digital-to-analog converter.
pub trait Dac: Send + Sync {
    /// The largest code a channel takes (4095 for a 12-bit DAC).
    fn max_code(&self) -> u32;
    /// Volts per code of `channel`.
    fn volts_per_code(&mut self, channel: u32) -> Result<f64, HwError>;
    /// Sets `channel` to `code`.
    fn write_code(&mut self, channel: u32, code: u32) -> Result<(), HwError>;
    /// The code `channel` is set to now.
    fn read_code(&mut self, channel: u32) -> Result<u32, HwError>;
}
