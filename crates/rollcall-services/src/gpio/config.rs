//! The GPIO service's configuration: its shape (the same for JSON, the
//! notes' text form and the agent's TOML), and its validation, which checks
//! the whole of it before any of it is applied.

use std::collections::BTreeSet;

use rollcall_proto::topic::{check_name, check_topic};
use serde::{Deserialize, Serialize};

/// The lines of a Raspberry Pi header: BCM 0 to 27.
pub const PI_LINES: u32 = 28;

/// Names that cannot name a pin, because topics or request payloads use them.
const RESERVED: [&str; 6] = ["outputs", "inputs", "input", "output", "id", "topic"];

/// A pull resistor on a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// None.
    #[default]
    #[serde(alias = "off", alias = "disabled")]
    None,
    /// Pull-up.
    Up,
    /// Pull-down.
    Down,
}

/// How an input reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Report {
    /// On each (debounced) edge.
    #[default]
    Change,
    /// Read at every `scan_ms`, published when the value changed (and,
    /// with `refresh_ms`, again after that long without a change).
    Scan,
}

/// A PWM output's polarity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Polarity {
    /// High for the duty cycle.
    #[default]
    #[serde(alias = "norm")]
    Normal,
    /// Low for the duty cycle.
    #[serde(alias = "inv", alias = "inverse", alias = "inverted")]
    Inversed,
}

/// An output line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Its name in topics.
    pub name: String,
    /// Its BCM line.
    pub pin: u32,
    /// Its level at start when no level was commanded before (0 or 1).
    #[serde(default)]
    pub init: u8,
    /// A pull resistor, for a line that floats while the output is released.
    #[serde(default)]
    pub pull: Pull,
    /// The notes' `single`: a single-ended (push-pull) output, driving both
    /// levels. It is what every output is; the keyword is accepted so the
    /// notes' configuration reads as written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single: bool,
}

/// A PWM output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PwmConfig {
    /// Its name in topics.
    pub name: String,
    /// Its BCM line.
    pub pin: u32,
    /// Duty cycle at start, in percent.
    #[serde(default)]
    pub init: f64,
    /// Period, in microseconds.
    #[serde(default = "default_period_us")]
    pub period_us: u64,
    /// Polarity.
    #[serde(default)]
    pub polarity: Polarity,
}

fn default_period_us() -> u64 {
    1000
}

/// An input line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Its name in topics.
    pub name: String,
    /// Its BCM line.
    pub pin: u32,
    /// A pull resistor.
    #[serde(default)]
    pub pull: Pull,
    /// On each change, or at an interval.
    #[serde(default)]
    pub report: Report,
    /// Edges closer than this to the last reported one are ignored.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// The interval of `report: scan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_ms: Option<u64>,
    /// With `report: scan`: publish the value again after this long
    /// without a change. None: only changes are published (the retained
    /// message holds the value for late subscribers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_ms: Option<u64>,
    /// Where values go instead of `/{host}/gpio/input/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change: Option<String>,
}

fn default_debounce_ms() -> u64 {
    5
}

/// The whole configuration of the GPIO service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// Output lines.
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
    /// PWM outputs.
    #[serde(default)]
    pub pwm: Vec<PwmConfig>,
    /// Input lines.
    #[serde(default)]
    pub inputs: Vec<InputConfig>,
}

/// What is wrong with a configuration: the field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// Where, as `outputs[0].pin`.
    pub field: String,
    /// Why.
    pub reason: String,
}

fn err(field: String, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

impl GpioConfig {
    /// Reads a configuration from a JSON value; unknown keys and wrong types
    /// are errors that name the field.
    pub fn from_json(value: serde_json::Value) -> Result<Self, ConfigError> {
        crate::config_from_json(value).map_err(|e| err(e.path, e.source.to_string()))
    }

    /// Checks the whole configuration against a chip of `lines` lines.
    pub fn validate(&self, lines: u32) -> Result<(), ConfigError> {
        let mut pins = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut claim = |field: String, name: &str, pin: u32| -> Result<(), ConfigError> {
            check_name(name).map_err(|e| err(format!("{field}.name"), e.to_string()))?;
            if RESERVED.contains(&name) {
                return Err(err(
                    format!("{field}.name"),
                    format!("`{name}` is reserved"),
                ));
            }
            // `set/23` means pin 23: a name made of digits would be ambiguous.
            if name.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    format!("{field}.name"),
                    format!("`{name}` reads as a pin number; names need a letter"),
                ));
            }
            if !names.insert(name.to_owned()) {
                return Err(err(
                    format!("{field}.name"),
                    format!("`{name}` is used twice"),
                ));
            }
            if pin >= lines {
                return Err(err(
                    format!("{field}.pin"),
                    format!("{pin} is not a line of this chip (0 to {})", lines - 1),
                ));
            }
            if !pins.insert(pin) {
                return Err(err(
                    format!("{field}.pin"),
                    format!("pin {pin} is used twice"),
                ));
            }
            Ok(())
        };
        for (i, o) in self.outputs.iter().enumerate() {
            let field = format!("outputs[{i}]");
            claim(field.clone(), &o.name, o.pin)?;
            if o.init > 1 {
                return Err(err(format!("{field}.init"), "must be 0 or 1"));
            }
        }
        for (i, p) in self.pwm.iter().enumerate() {
            let field = format!("pwm[{i}]");
            claim(field.clone(), &p.name, p.pin)?;
            if !(0.0..=100.0).contains(&p.init) {
                return Err(err(
                    format!("{field}.init"),
                    "a duty cycle is 0 to 100 (percent)",
                ));
            }
            if !(1..=1_000_000).contains(&p.period_us) {
                return Err(err(
                    format!("{field}.period_us"),
                    "must be 1 to 1000000 microseconds",
                ));
            }
        }
        for (i, input) in self.inputs.iter().enumerate() {
            let field = format!("inputs[{i}]");
            claim(field.clone(), &input.name, input.pin)?;
            if input.debounce_ms > 1000 {
                return Err(err(format!("{field}.debounce_ms"), "at most 1000"));
            }
            match (input.report, input.scan_ms) {
                (Report::Scan, None) => {
                    return Err(err(
                        format!("{field}.scan_ms"),
                        "`report: scan` needs `scan_ms`",
                    ));
                }
                (_, Some(ms)) if !(10..=3_600_000).contains(&ms) => {
                    return Err(err(format!("{field}.scan_ms"), "must be 10 to 3600000"));
                }
                _ => {}
            }
            if let Some(refresh) = input.refresh_ms {
                let field = format!("{field}.refresh_ms");
                if input.report != Report::Scan {
                    return Err(err(field, "`refresh_ms` needs `report: scan`"));
                }
                if !(1000..=86_400_000).contains(&refresh) {
                    return Err(err(field, "must be 1000 to 86400000"));
                }
                if input.scan_ms.is_some_and(|scan| refresh < scan) {
                    return Err(err(field, "must be at least `scan_ms`"));
                }
            }
            if let Some(topic) = &input.on_change {
                check_topic(topic, "on_change")
                    .map_err(|e| err(format!("{field}.on_change"), e.to_string()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notes_example() -> serde_json::Value {
        json!({
            "outputs": [{"name":"pump_drive","pin":25,"init":0,"pull":"down","single":true},
                        {"name":"lamp","pin":23}],
            "pwm": [{"name":"sonar_angle","pin":18,"init":20,"period_us":1000,"polarity":"normal"}],
            "inputs": [{"name":"button","pin":22,"pull":"down","report":"change","debounce_ms":5},
                       {"name":"float_switch","pin":17,"pull":"up","report":"scan","scan_ms":500}]
        })
    }

    #[test]
    fn the_protocol_example_is_valid() {
        let cfg = GpioConfig::from_json(notes_example()).unwrap();
        cfg.validate(PI_LINES).unwrap();
        assert_eq!(cfg.inputs[1].scan_ms, Some(500));
        assert_eq!(cfg.outputs[1].init, 0);
        assert_eq!(cfg.pwm[0].polarity, Polarity::Normal);
    }

    #[test]
    fn every_error_names_its_field() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                json!({"outputs":[{"name":"a","pin":40}]}),
                "outputs[0].pin: 40 is not a line",
            ),
            (
                json!({"outputs":[{"name":"a","pin":4},{"name":"b","pin":4}]}),
                "outputs[1].pin: pin 4 is used twice",
            ),
            (
                json!({"outputs":[{"name":"a","pin":4}],"inputs":[{"name":"a","pin":5}]}),
                "inputs[0].name: `a` is used twice",
            ),
            (
                json!({"pwm":[{"name":"p","pin":18,"init":150}]}),
                "pwm[0].init",
            ),
            (
                json!({"pwm":[{"name":"p","pin":18,"period_us":0}]}),
                "pwm[0].period_us",
            ),
            (
                json!({"inputs":[{"name":"b","pin":22,"report":"scan"}]}),
                "inputs[0].scan_ms",
            ),
            (
                json!({"inputs":[{"name":"b","pin":22,"scan_ms":1}]}),
                "inputs[0].scan_ms",
            ),
            (
                json!({"inputs":[{"name":"b","pin":22,"on_change":"/x/#"}]}),
                "inputs[0].on_change",
            ),
            (
                json!({"outputs":[{"name":"a/b","pin":4}]}),
                "outputs[0].name",
            ),
            (json!({"outputs":[{"name":"inputs","pin":4}]}), "reserved"),
            (
                json!({"outputs":[{"name":"a","pin":4,"init":2}]}),
                "outputs[0].init",
            ),
            (
                json!({"outputs":[{"name":"23","pin":5}]}),
                "reads as a pin number",
            ),
        ];
        for (value, needle) in cases {
            let text = value.to_string();
            let e = GpioConfig::from_json(value)
                .and_then(|c| c.validate(PI_LINES))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_path() {
        let e = GpioConfig::from_json(json!({"outputs":[{"name":"a","pin":4,"colour":1}]}))
            .unwrap_err();
        assert!(e.field.starts_with("outputs[0]"), "{e}");
        assert!(e.reason.contains("colour"), "{e}");
        let e = GpioConfig::from_json(json!({"outputs":[{"name":"a","pin":"four"}]})).unwrap_err();
        assert_eq!(e.field, "outputs[0].pin");
        let e = GpioConfig::from_json(json!({"pwm":[{"name":"a","pin":-1}]})).unwrap_err();
        assert_eq!(e.field, "pwm[0].pin");
        let e = GpioConfig::from_json(json!({"relays":[]})).unwrap_err();
        assert!(e.reason.contains("relays"), "{e}");
    }
}
