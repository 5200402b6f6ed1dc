//! The `ain` service: analog inputs of an ADC (an ADS1015/ADS1115 on the
//! kernel's `ti-ads1015` driver, an MCP3008 on `mcp320x`) or simulated, one
//! item per configured channel in volts with the raw code beside it.
//! Everything but what the converter is lives in [`crate::sensor`].

use crate::sensor::Spec;

/// An ADC: items are its configured channels (by default `a0` to `a3` on
/// channels 0 to 3).
pub const SPEC: Spec = Spec {
    name: "ain",
    doc: "analog inputs of an ADC, in volts",
    fixed: &[],
    channels: true,
    min_interval_ms: 50,
    default_interval_ms: 1000,
    default_retry_ms: 250,
};
