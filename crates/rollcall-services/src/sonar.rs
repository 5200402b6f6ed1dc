//! The `sonar` service: an HC-SR04 ultrasonic distance sensor, read through
//! the kernel's `srf04` IIO driver or simulated. Everything but what the
//! sensor is lives in [`crate::sensor`].

use rollcall_hw::iio::Quantity;

use crate::sensor::{FixedItem, Spec};

/// The HC-SR04: 2 cm to 4 m; a measurement cycle of 60 ms at least, so
/// that the last echo has died away.
pub const SPEC: Spec = Spec {
    name: "sonar",
    doc: "distance from an HC-SR04 ultrasonic sensor",
    fixed: &[FixedItem {
        name: "distance",
        quantity: Quantity::Distance,
        range: (0.02, 4.0),
        doc: "distance to the nearest echo",
    }],
    channels: false,
    min_interval_ms: 60,
    default_interval_ms: 1000,
    default_retry_ms: 250,
};
