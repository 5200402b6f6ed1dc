//! The `dht22` service: a DHT22 (AM2302) temperature and humidity sensor,
//! read through the kernel's `dht11` IIO driver or simulated. Everything but
//! what the sensor is lives in [`crate::sensor`].

use rollcall_hw::iio::Quantity;

use crate::sensor::{FixedItem, Spec};

/// The DHT22: -40 to 80 °C, 0 to 100 %; the sensor needs 2 s between reads.
pub const SPEC: Spec = Spec {
    name: "dht22",
    doc: "temperature and relative humidity from a DHT22",
    fixed: &[
        FixedItem {
            name: "temperature",
            quantity: Quantity::Temperature,
            range: (-40.0, 80.0),
            doc: "air temperature",
        },
        FixedItem {
            name: "humidity",
            quantity: Quantity::Humidity,
            range: (0.0, 100.0),
            doc: "relative humidity",
        },
    ],
    channels: false,
    min_interval_ms: 2000,
    default_interval_ms: 10_000,
    default_retry_ms: 2000,
};
