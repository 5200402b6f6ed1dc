//! Fuzz target `gpio_text`: the GPIO service's configuration as it arrives on
//! `/{host}/gpio/control`.
//!
//! - The bytes, when UTF-8, through the notes' text form
//!   (`rollcall_services::gpio::text::parse`), then `validate` against a
//!   Raspberry Pi header (28 lines).
//! - The bytes, when they are JSON (read by the same guarded parser the
//!   agent uses for request payloads), through `GpioConfig::from_json`, then
//!   `validate`.
//!
//! A configuration that validates must survive the trip through the saved
//! state (`serde_json::to_value`, then `from_json`) unchanged, and validate
//! again: that is what the agent writes to `{state_dir}/gpio.json` and reads
//! back at start.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rollcall_services::gpio::config::PI_LINES;
use rollcall_services::gpio::{GpioConfig, text};

fn check(config: GpioConfig) {
    if config.validate(PI_LINES).is_err() {
        return;
    }
    let saved = serde_json::to_value(&config).expect("a configuration serialises");
    let again = GpioConfig::from_json(saved).expect("a saved configuration reads back");
    assert_eq!(again, config, "the saved configuration changed on the way back");
    again
        .validate(PI_LINES)
        .expect("a saved configuration validates again");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = text::parse(text) {
            check(config);
        }
    }
    if let Ok(value) = rollcall_proto::json::parse_value(data, rollcall_proto::MAX_PAYLOAD) {
        if let Ok(config) = GpioConfig::from_json(value) {
            check(config);
        }
    }
});
