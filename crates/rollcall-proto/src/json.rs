//! Guarded JSON parsing: size, UTF-8 and nesting limits checked before serde
//! sees a byte, and typed field extraction with errors that name the field.

use serde_json::{Map, Value};

use crate::ProtoError;

/// A JSON object as it travels on the wire.
pub type Object = Map<String, Value>;

/// Parses `bytes` as one JSON object within `max_len` bytes and [`crate::MAX_DEPTH`] levels.
pub fn parse_object(bytes: &[u8], max_len: usize) -> Result<Object, ProtoError> {
    match parse_value(bytes, max_len)? {
        Value::Object(map) => Ok(map),
        _ => Err(ProtoError::NotAnObject),
    }
}

/// Parses `bytes` as any JSON value within `max_len` bytes and [`crate::MAX_DEPTH`] levels.
pub fn parse_value(bytes: &[u8], max_len: usize) -> Result<Value, ProtoError> {
    if bytes.len() > max_len {
        return Err(ProtoError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ProtoError::NotUtf8)?;
    check_depth(text, crate::MAX_DEPTH)?;
    serde_json::from_str(text).map_err(|e| ProtoError::Json(e.to_string()))
}

/// Refuses text whose brackets nest deeper than `max`, without parsing it.
///
/// serde_json has its own limit (128), but a payload from the network that
/// nests 100 levels is an attack or a bug, never a roll-call.
fn check_depth(text: &str, max: usize) -> Result<(), ProtoError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(ProtoError::TooDeep { max });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Removes `field` from `map` and returns it as a string; absent is an error.
pub fn take_str(map: &mut Object, field: &'static str) -> Result<String, ProtoError> {
    take_opt_str(map, field)?.ok_or(ProtoError::Missing(field))
}

/// Removes `field` from `map` and returns it as a string, if present.
pub fn take_opt_str(map: &mut Object, field: &'static str) -> Result<Option<String>, ProtoError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProtoError::wrong_type(field, "a string")),
    }
}

/// Removes `field` from `map` and returns it as a non-negative integer; absent is an error.
pub fn take_u64(map: &mut Object, field: &'static str) -> Result<u64, ProtoError> {
    take_opt_u64(map, field)?.ok_or(ProtoError::Missing(field))
}

/// Removes `field` from `map` and returns it as a non-negative integer, if present.
pub fn take_opt_u64(map: &mut Object, field: &'static str) -> Result<Option<u64>, ProtoError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| ProtoError::wrong_type(field, "a non-negative integer")),
        Some(_) => Err(ProtoError::wrong_type(field, "a non-negative integer")),
    }
}

/// Removes `field` from `map` and returns it as a boolean, if present.
pub fn take_opt_bool(map: &mut Object, field: &'static str) -> Result<Option<bool>, ProtoError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(ProtoError::wrong_type(field, "true or false")),
    }
}

/// Puts `value` under `field` unless it is `None`.
pub fn put_opt<T: Into<Value>>(map: &mut Object, field: &str, value: Option<T>) {
    if let Some(v) = value {
        map.insert(field.to_owned(), v.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_limit_counts_brackets_outside_strings_only() {
        let deep = format!("{}{}", "[".repeat(17), "]".repeat(17));
        assert_eq!(
            parse_value(deep.as_bytes(), 1000),
            Err(ProtoError::TooDeep { max: 16 })
        );
        let ok = format!("{}{}", "[".repeat(16), "]".repeat(16));
        assert!(parse_value(ok.as_bytes(), 1000).is_ok());
        let in_string = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(40), "{".repeat(40));
        assert!(parse_object(in_string.as_bytes(), 1000).is_ok());
    }

    #[test]
    fn size_utf8_and_shape_are_checked() {
        assert_eq!(
            parse_object(b"{}", 1),
            Err(ProtoError::TooLarge { len: 2, max: 1 })
        );
        assert_eq!(
            parse_object(b"{\"a\":\"\xff\"}", 100),
            Err(ProtoError::NotUtf8)
        );
        assert_eq!(parse_object(b"[1]", 100), Err(ProtoError::NotAnObject));
        assert!(matches!(parse_object(b"{", 100), Err(ProtoError::Json(_))));
    }

    #[test]
    fn typed_fields_name_the_field_on_error() {
        let mut map = parse_object(br#"{"id":-1,"s":3}"#, 100).unwrap();
        assert_eq!(
            take_u64(&mut map, "id"),
            Err(ProtoError::wrong_type("id", "a non-negative integer"))
        );
        assert_eq!(
            take_str(&mut map, "s"),
            Err(ProtoError::wrong_type("s", "a string"))
        );
        assert_eq!(take_str(&mut map, "x"), Err(ProtoError::Missing("x")));
    }
}
