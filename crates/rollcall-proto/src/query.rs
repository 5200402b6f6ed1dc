//! Requests on query topics and their answers (docs/protocol.md section 6).
//!
//! A request payload may be empty, plain text (`on`, the notes' text form), any
//! JSON value, or a JSON object which may carry `id` and a reply `topic` beside
//! its own fields; `{"value":X,...}` stands for the bare value X. Answers are `{"ok":true,"id":..,...}` or
//! `{"ok":false,"id":..,"error":".."}`.

use serde_json::Value;

use crate::ProtoError;
use crate::json::{self, Object, take_opt_str, take_opt_u64};
pub use crate::topic::Query;
use crate::topic::check_topic;

/// The body of a request, once `id` and `topic` are taken out.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Nothing, or only `id`/`topic`.
    Empty,
    /// A JSON value (an object without its `id` and `topic`).
    Json(Value),
    /// Text that is not JSON, trimmed (`on`, the notes' text form).
    Text(String),
}

/// A request as it arrived on a query topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Correlation id to echo.
    pub id: Option<u64>,
    /// Where the answer goes; the service's default reply topic when absent.
    pub topic: Option<String>,
    /// What was asked or sent.
    pub body: Body,
}

impl Request {
    /// Reads a request payload of at most [`crate::MAX_PAYLOAD`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        if bytes.len() > crate::MAX_PAYLOAD {
            return Err(ProtoError::TooLarge {
                len: bytes.len(),
                max: crate::MAX_PAYLOAD,
            });
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ProtoError::NotUtf8)?
            .trim();
        if text.is_empty() {
            return Ok(Request {
                id: None,
                topic: None,
                body: Body::Empty,
            });
        }
        let value = match json::parse_value(text.as_bytes(), crate::MAX_PAYLOAD) {
            Ok(value) => value,
            Err(ProtoError::Json(_)) => {
                return Ok(Request {
                    id: None,
                    topic: None,
                    body: Body::Text(text.to_owned()),
                });
            }
            Err(e) => return Err(e),
        };
        let Value::Object(mut map) = value else {
            return Ok(Request {
                id: None,
                topic: None,
                body: Body::Json(value),
            });
        };
        let id = take_opt_u64(&mut map, "id")?;
        let topic = take_opt_str(&mut map, "topic")?;
        if let Some(t) = &topic {
            check_topic(t, "topic")?;
        }
        // `{"value": X, "id":.., "topic":..}` is X with a reply address, so a
        // bare value such as `1` can ask for an answer too.
        let body = if map.is_empty() {
            Body::Empty
        } else if map.len() == 1 && map.contains_key("value") {
            Body::Json(map.remove("value").unwrap_or_default())
        } else {
            Body::Json(Value::Object(map))
        };
        Ok(Request { id, topic, body })
    }
}

/// `{"ok":true,"id":..}` plus `fields`.
pub fn ok_reply(id: Option<u64>, fields: Object) -> Vec<u8> {
    let mut map = fields;
    map.insert("ok".into(), true.into());
    json::put_opt(&mut map, "id", id);
    serde_json::to_vec(&map).unwrap_or_default()
}

/// `{"ok":false,"id":..,"error":".."}`.
pub fn error_reply(id: Option<u64>, error: &str) -> Vec<u8> {
    let mut map = Object::new();
    map.insert("ok".into(), false.into());
    json::put_opt(&mut map, "id", id);
    map.insert("error".into(), error.into());
    serde_json::to_vec(&map).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_forms() {
        assert_eq!(Request::parse(b"  ").unwrap().body, Body::Empty);
        assert_eq!(
            Request::parse(b"ON\n").unwrap().body,
            Body::Text("ON".into())
        );
        assert_eq!(
            Request::parse(b"\"on\"").unwrap().body,
            Body::Json("on".into())
        );
        assert_eq!(Request::parse(b"1").unwrap().body, Body::Json(1.into()));
        let r = Request::parse(br#"{"id":7,"topic":"/me/answers"}"#).unwrap();
        assert_eq!(
            (r.id, r.topic.as_deref(), r.body),
            (Some(7), Some("/me/answers"), Body::Empty)
        );
        let r = Request::parse(br#"{"id":7,"topic":"/r","value":"on"}"#).unwrap();
        assert_eq!(r.body, Body::Json("on".into()));
        let r = Request::parse(br#"{"id":7,"pump":1}"#).unwrap();
        assert_eq!(r.body, Body::Json(serde_json::json!({"pump":1})));
    }

    #[test]
    fn wildcard_reply_topics_and_bad_bytes_are_refused() {
        assert!(Request::parse(br#"{"topic":"/a/#"}"#).is_err());
        assert!(Request::parse(br#"{"id":"x"}"#).is_err());
        assert_eq!(Request::parse(b"\xff"), Err(ProtoError::NotUtf8));
        assert!(matches!(
            Request::parse(&vec![b'1'; crate::MAX_PAYLOAD + 1]),
            Err(ProtoError::TooLarge { .. })
        ));
    }

    #[test]
    fn replies_have_the_protocol_shape() {
        let v: Value = serde_json::from_slice(&error_reply(Some(3), "unknown pin 40")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ok":false,"id":3,"error":"unknown pin 40"})
        );
        let v: Value = serde_json::from_slice(&ok_reply(None, Object::new())).unwrap();
        assert_eq!(v, serde_json::json!({"ok":true}));
    }
}
