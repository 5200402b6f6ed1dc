//! What Home Assistant requires of a discovery config, checked before the
//! hub publishes one: a config it would refuse leaves no entity at all (and
//! an error in its log), so the hub lists such an interface as skipped
//! instead. The rules are those of Home Assistant's MQTT platforms
//! (`sensor`, `binary_sensor`, `switch`, `number`, `text`, `event`), from
//! its documentation and its schemas (2023.8 onwards, where `event` and
//! `origin` appeared).

use serde_json::{Map, Value};

/// Units Home Assistant accepts for each sensor device class this hub sets,
/// by class. A unit outside its class's list makes Home Assistant refuse
/// the sensor, so a class is set only when the unit is in its list.
const DEVICE_CLASS_UNITS: &[(&str, &[&str])] = &[
    ("temperature", &["°C", "°F", "K"]),
    ("humidity", &["%"]),
    (
        "pressure",
        &[
            "cbar", "bar", "hPa", "inHg", "kPa", "mbar", "Pa", "psi", "mmHg",
        ],
    ),
    ("voltage", &["V", "mV"]),
    ("current", &["A", "mA"]),
    ("power", &["W", "kW"]),
    ("distance", &["km", "m", "cm", "mm", "mi", "yd", "in", "ft"]),
    ("duration", &["d", "h", "min", "s", "ms"]),
    (
        "data_size",
        &[
            "bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB",
        ],
    ),
    ("frequency", &["Hz", "kHz", "MHz", "GHz"]),
    ("illuminance", &["lx"]),
];

/// The sensor device class for a reading in `unit` named `name`: by the
/// unit, and for `%` only when the name says humidity (a duty cycle or a
/// battery level is in `%` too).
pub fn device_class_for(unit: &str, name: &str) -> Option<&'static str> {
    if unit == "%" {
        return name
            .to_ascii_lowercase()
            .contains("humid")
            .then_some("humidity");
    }
    DEVICE_CLASS_UNITS
        .iter()
        .find(|(_, units)| units.contains(&unit))
        .map(|(class, _)| *class)
}

const STATE_CLASSES: [&str; 3] = ["measurement", "total", "total_increasing"];
const BINARY_SENSOR_CLASSES: [&str; 6] = [
    "connectivity",
    "door",
    "motion",
    "power",
    "problem",
    "running",
];

/// Whether `config` is one Home Assistant takes for `component`; the first
/// problem otherwise.
pub fn check_config(component: &str, config: &Value) -> Result<(), String> {
    let c = config.as_object().ok_or("a config is a JSON object")?;
    common(c)?;
    match component {
        "sensor" => sensor(c),
        "binary_sensor" => {
            topic(c, "state_topic", Need::Required)?;
            distinct(c, "payload_on", "payload_off")?;
            one_of(c, "device_class", &BINARY_SENSOR_CLASSES)
        }
        "switch" => {
            topic(c, "command_topic", Need::Required)?;
            topic(c, "state_topic", Need::Optional)?;
            distinct(c, "payload_on", "payload_off")?;
            distinct(c, "state_on", "state_off")
        }
        "number" => number(c),
        "text" => text(c),
        "event" => {
            topic(c, "state_topic", Need::Required)?;
            let types = c
                .get("event_types")
                .and_then(Value::as_array)
                .ok_or("an event needs `event_types`")?;
            if types.is_empty()
                || !types
                    .iter()
                    .all(|t| t.as_str().is_some_and(|s| !s.is_empty()))
            {
                return Err("`event_types` must be a list of names".into());
            }
            Ok(())
        }
        other => Err(format!("`{other}` is not a component this hub publishes")),
    }
}

#[derive(PartialEq)]
enum Need {
    Required,
    Optional,
}

/// An MQTT topic Home Assistant accepts: UTF-8 (a JSON string is), 1 to
/// 65,535 bytes, no NUL, and no wildcard where it publishes. Where it
/// subscribes a wildcard would be legal, but an entity's state is one
/// topic, so the hub refuses wildcards there too.
fn topic(c: &Map<String, Value>, key: &str, need: Need) -> Result<(), String> {
    match c.get(key) {
        None if need == Need::Optional => Ok(()),
        None => Err(format!("`{key}` is required")),
        Some(Value::String(t)) => {
            if t.is_empty() || t.len() > 65_535 {
                Err(format!("`{key}` must have 1 to 65535 bytes"))
            } else if t.contains(['\0', '+', '#']) {
                Err(format!("`{key}` `{t}` has a wildcard or NUL"))
            } else {
                Ok(())
            }
        }
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn string<'a>(c: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match c.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn one_of(c: &Map<String, Value>, key: &str, allowed: &[&str]) -> Result<(), String> {
    match string(c, key)? {
        Some(v) if !allowed.contains(&v) => Err(format!("`{key}` `{v}` is not one of {allowed:?}")),
        _ => Ok(()),
    }
}

fn distinct(c: &Map<String, Value>, a: &str, b: &str) -> Result<(), String> {
    match (string(c, a)?, string(c, b)?) {
        (Some(x), Some(y)) if x == y => Err(format!("`{a}` and `{b}` are both `{x}`")),
        _ => Ok(()),
    }
}

fn number_field(c: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    match c.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite())
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a finite number")),
    }
}

/// What every entity needs: a unique id, a device with identifiers,
/// availability entries with topics, and only known categories.
fn common(c: &Map<String, Value>) -> Result<(), String> {
    match string(c, "unique_id")? {
        Some(id) if !id.is_empty() => {}
        _ => return Err("`unique_id` is required (the hub's entities are kept by it)".into()),
    }
    string(c, "name")?;
    let device = c
        .get("device")
        .and_then(Value::as_object)
        .ok_or("`device` is required")?;
    let ids = device
        .get("identifiers")
        .and_then(Value::as_array)
        .ok_or("`device.identifiers` is required")?;
    if ids.is_empty()
        || !ids
            .iter()
            .all(|i| i.as_str().is_some_and(|s| !s.is_empty()))
    {
        return Err("`device.identifiers` must be a list of non-empty strings".into());
    }
    for key in ["name", "model", "manufacturer", "sw_version", "via_device"] {
        if device.get(key).is_some_and(|v| !v.is_string()) {
            return Err(format!("`device.{key}` must be a string"));
        }
    }
    if let Some(list) = c.get("availability") {
        let list = list.as_array().ok_or("`availability` must be a list")?;
        if list.is_empty() {
            return Err("`availability` must not be empty".into());
        }
        for entry in list {
            let entry = entry
                .as_object()
                .ok_or("an `availability` entry is an object")?;
            topic(entry, "topic", Need::Required)?;
            distinct(entry, "payload_available", "payload_not_available")?;
        }
        one_of(c, "availability_mode", &["all", "any", "latest"])?;
    }
    one_of(c, "entity_category", &["config", "diagnostic"])?;
    let origin_named = c.get("origin").map(|o| {
        o.get("name")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    });
    if origin_named == Some(false) {
        return Err("`origin.name` is required in an origin".into());
    }
    Ok(())
}

fn sensor(c: &Map<String, Value>) -> Result<(), String> {
    topic(c, "state_topic", Need::Required)?;
    one_of(c, "state_class", &STATE_CLASSES)?;
    // A sensor cannot be configured: no `config` category.
    one_of(c, "entity_category", &["diagnostic"])?;
    let class = string(c, "device_class")?;
    let unit = string(c, "unit_of_measurement")?;
    if c.contains_key("options") && class != Some("enum") {
        return Err("`options` is only for a sensor of device class `enum`".into());
    }
    match class {
        None => Ok(()),
        Some("enum") => {
            if unit.is_some() || c.contains_key("state_class") {
                return Err("an enum sensor has no unit and no state class".into());
            }
            match c.get("options").and_then(Value::as_array) {
                Some(o) if !o.is_empty() => Ok(()),
                _ => Err("an enum sensor needs `options`".into()),
            }
        }
        Some(class) => {
            let units = DEVICE_CLASS_UNITS
                .iter()
                .find(|(name, _)| *name == class)
                .map(|(_, units)| *units)
                .ok_or_else(|| format!("device class `{class}` is not one this hub sets"))?;
            match unit {
                Some(u) if units.contains(&u) => Ok(()),
                Some(u) => Err(format!(
                    "unit `{u}` is not one device class `{class}` takes ({units:?})"
                )),
                None => Err(format!("device class `{class}` needs a unit")),
            }
        }
    }
}

fn number(c: &Map<String, Value>) -> Result<(), String> {
    topic(c, "command_topic", Need::Required)?;
    topic(c, "state_topic", Need::Optional)?;
    // Home Assistant's defaults where a field is left out.
    let min = number_field(c, "min")?.unwrap_or(1.0);
    let max = number_field(c, "max")?.unwrap_or(100.0);
    let step = number_field(c, "step")?.unwrap_or(1.0);
    if min >= max {
        return Err(format!("`min` {min} must be below `max` {max}"));
    }
    if step < 0.001 {
        return Err(format!("`step` {step} is below 0.001"));
    }
    one_of(c, "mode", &["auto", "box", "slider"])
}

fn text(c: &Map<String, Value>) -> Result<(), String> {
    topic(c, "command_topic", Need::Required)?;
    topic(c, "state_topic", Need::Optional)?;
    let min = number_field(c, "min")?.unwrap_or(0.0);
    let max = number_field(c, "max")?.unwrap_or(255.0);
    if !(0.0..=255.0).contains(&min) || !(0.0..=255.0).contains(&max) || min > max {
        return Err(format!(
            "text lengths `min` {min} and `max` {max} must be 0 to 255, min not above max"
        ));
    }
    one_of(c, "mode", &["text", "password"])
}
