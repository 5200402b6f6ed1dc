//! Setting a value from the dashboard: what a `POST .../set/{item}` body
//! must look like, and whether its value fits the interface it targets.
//! Everything is checked here, before anything is published, so that a bad
//! request costs no MQTT traffic and gets a reason at once.

use rollcall_proto::{Interface, ValueType};
use serde_json::Value;

/// The `value` of a `{"value": ...}` body, or why the body is not one.
pub fn parse_body(body: &[u8]) -> Result<Value, String> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not JSON ({e}); send {{\"value\": ...}}"))?;
    let Value::Object(mut object) = json else {
        return Err("the body must be a JSON object: {\"value\": ...}".into());
    };
    if let Some(other) = object.keys().find(|k| *k != "value") {
        return Err(format!(
            "unknown field `{other}` in the body; only `value` is read"
        ));
    }
    object
        .remove("value")
        .ok_or_else(|| "the body has no `value`: send {\"value\": ...}".into())
}

/// `value` as the interface takes it, or why it does not fit. Bools are
/// also accepted as people write them (`1`, `"on"`) and sent as `true` or
/// `false`; numbers must be within the interface's `min` and `max`.
pub fn check_value(iface: &Interface, value: Value) -> Result<Value, String> {
    let name = &iface.name;
    match iface.value_type {
        ValueType::Bool => as_bool(&value).map(Value::Bool).ok_or_else(|| {
            format!("{name} takes on or off (true/false, 1/0, \"on\"/\"off\"), not {value}")
        }),
        ValueType::Int => {
            let n = value
                .as_f64()
                .filter(|n| n.fract() == 0.0)
                .ok_or_else(|| format!("{name} takes a whole number, not {value}"))?;
            in_range(iface, n)?;
            Ok(value)
        }
        ValueType::Float => {
            let n = value
                .as_f64()
                .ok_or_else(|| format!("{name} takes a number, not {value}"))?;
            in_range(iface, n)?;
            Ok(value)
        }
        ValueType::String => match value {
            Value::String(_) => Ok(value),
            other => Err(format!("{name} takes a string, not {other}")),
        },
        ValueType::Json => Ok(value),
    }
}

fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "on" | "true" => Some(true),
            "0" | "off" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn in_range(iface: &Interface, n: f64) -> Result<(), String> {
    let unit = iface.unit.as_deref().unwrap_or("");
    if let Some(min) = iface.min
        && n < min
    {
        return Err(format!("{} is at least {min}{unit}, not {n}", iface.name));
    }
    if let Some(max) = iface.max
        && n > max
    {
        return Err(format!("{} is at most {max}{unit}, not {n}", iface.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn iface(t: ValueType) -> Interface {
        Interface::new("duty", "/h/gpio/set/duty", t)
    }

    #[test]
    fn bodies_other_than_a_value_object_are_refused_with_a_reason() {
        assert_eq!(parse_body(br#"{"value":1}"#).unwrap(), json!(1));
        assert_eq!(parse_body(br#"{"value":null}"#).unwrap(), Value::Null);
        for (body, says) in [
            (&b"on"[..], "not JSON"),
            (b"", "not JSON"),
            (b"[1]", "JSON object"),
            (b"{}", "no `value`"),
            (br#"{"value":1,"topic":"/x"}"#, "unknown field `topic`"),
        ] {
            let e = parse_body(body).unwrap_err();
            assert!(e.contains(says), "{body:?}: {e}");
        }
    }

    #[test]
    fn bools_are_read_as_people_write_them_and_sent_as_json_bools() {
        let b = iface(ValueType::Bool);
        for (v, want) in [
            (json!(true), true),
            (json!(1), true),
            (json!("ON"), true),
            (json!(" off "), false),
            (json!(0), false),
            (json!("false"), false),
        ] {
            assert_eq!(check_value(&b, v).unwrap(), json!(want));
        }
        for v in [json!(2), json!("maybe"), json!([1]), Value::Null] {
            assert!(check_value(&b, v).unwrap_err().contains("on or off"));
        }
    }

    #[test]
    fn numbers_are_checked_against_the_range_and_type() {
        let pwm = iface(ValueType::Float).unit("%").range(0.0, 100.0);
        assert_eq!(check_value(&pwm, json!(42.5)).unwrap(), json!(42.5));
        assert_eq!(check_value(&pwm, json!(0)).unwrap(), json!(0));
        let e = check_value(&pwm, json!(100.5)).unwrap_err();
        assert_eq!(e, "duty is at most 100%, not 100.5");
        let e = check_value(&pwm, json!(-1)).unwrap_err();
        assert_eq!(e, "duty is at least 0%, not -1");
        assert!(check_value(&pwm, json!("50")).is_err());

        let int = iface(ValueType::Int);
        assert_eq!(check_value(&int, json!(-7)).unwrap(), json!(-7));
        assert!(check_value(&int, json!(1.5)).unwrap_err().contains("whole"));

        let s = iface(ValueType::String);
        assert!(check_value(&s, json!("hi")).is_ok());
        assert!(check_value(&s, json!(1)).is_err());
        let j = iface(ValueType::Json);
        assert_eq!(check_value(&j, json!({"a":[1]})).unwrap(), json!({"a":[1]}));
    }
}
