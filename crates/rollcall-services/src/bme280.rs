//! The `bme280` service: a Bosch BME280 temperature, humidity and pressure
//! sensor on I2C, read through the kernel's `bmp280` IIO driver (whose
//! device is named `bme280`) or simulated. Everything but what the sensor
//! is lives in [`crate::sensor`].

use rollcall_hw::iio::Quantity;

use crate::sensor::{FixedItem, Spec};

/// The BME280: -40 to 85 °C, 0 to 100 %, 300 to 1100 hPa (its datasheet's
/// operating range). One forced measurement with the driver's default
/// oversampling takes under 50 ms; a second between reads keeps the
/// sensor's self-heating negligible, as its datasheet advises for weather
/// monitoring.
pub const SPEC: Spec = Spec {
    name: "bme280",
    doc: "temperature, relative humidity and air pressure from a BME280",
    fixed: &[
        FixedItem {
            name: "temperature",
            quantity: Quantity::Temperature,
            range: (-40.0, 85.0),
            doc: "air temperature",
        },
        FixedItem {
            name: "humidity",
            quantity: Quantity::Humidity,
            range: (0.0, 100.0),
            doc: "relative humidity",
        },
        FixedItem {
            name: "pressure",
            quantity: Quantity::Pressure,
            range: (300.0, 1100.0),
            doc: "air pressure at the sensor (not reduced to sea level)",
        },
    ],
    channels: false,
    min_interval_ms: 1000,
    default_interval_ms: 10_000,
    default_retry_ms: 1000,
};
