//! The roll-call: the "who are you" object a scanner broadcasts (docs/protocol.md section 1).

use serde_json::Value;

use crate::ProtoError;
use crate::json::{
    self, Object, put_opt, take_opt_bool, take_opt_str, take_opt_u64, take_str, take_u64,
};
use crate::topic::{MAX_NAME, check_topic};

/// The largest `window_ms` a roll-call may ask for: answerers wait up to this long.
pub const MAX_WINDOW_MS: u64 = 60_000;

/// What a receiver accepts in a roll-call.
#[derive(Debug, Clone, Copy)]
pub struct RollCallLimits {
    /// The largest payload, in bytes.
    pub max_len: usize,
}

impl Default for RollCallLimits {
    fn default() -> Self {
        RollCallLimits {
            max_len: crate::MAX_DATAGRAM,
        }
    }
}

/// A roll-call. Fields the protocol does not name are kept in `extra` and echoed.
#[derive(Debug, Clone, PartialEq)]
pub struct RollCall {
    /// `status` or its synonym `getstatus`, kept as sent so it is echoed as sent.
    pub cmd: String,
    /// Correlation id, echoed in every answer.
    pub id: u64,
    /// The requester's name.
    pub replyto: String,
    /// The MQTT topic answers go to.
    pub topic: String,
    /// `mqtt://host:port` where answers must be published.
    pub broker: Option<String>,
    /// Each answerer waits a random 0..window_ms before answering.
    pub window_ms: Option<u64>,
    /// Protocol version.
    pub v: Option<u64>,
    /// `"brief":true`: answer with the digest of each service's retained
    /// `$description` instead of its `interfaces` (docs/protocol.md
    /// section 3). Absent or `false`: full answers, as before the field
    /// existed. Kept as sent, like the other optional fields, so that a
    /// signed roll-call's object is rebuilt exactly for verification.
    pub brief: Option<bool>,
    /// Every other field, echoed as received (including `ts`, `nonce`, `sig`).
    pub extra: Object,
}

impl RollCall {
    /// A `status` roll-call with no optional fields.
    pub fn new(id: u64, replyto: impl Into<String>, topic: impl Into<String>) -> Self {
        RollCall {
            cmd: "status".to_owned(),
            id,
            replyto: replyto.into(),
            topic: topic.into(),
            broker: None,
            window_ms: None,
            v: Some(crate::PROTOCOL_VERSION),
            brief: None,
            extra: Object::new(),
        }
    }

    /// Parses and validates a roll-call from a datagram or an MQTT payload.
    pub fn parse(bytes: &[u8], limits: RollCallLimits) -> Result<Self, ProtoError> {
        Self::from_object(json::parse_object(bytes, limits.max_len)?)
    }

    /// Takes the roll-call's fields out of `map`; what is left becomes `extra`.
    pub fn from_object(mut map: Object) -> Result<Self, ProtoError> {
        let cmd = take_str(&mut map, "cmd")?;
        if cmd != "status" && cmd != "getstatus" {
            return Err(ProtoError::UnknownCmd(cmd));
        }
        let id = take_u64(&mut map, "id")?;
        let replyto = take_str(&mut map, "replyto")?;
        if replyto.is_empty() || replyto.len() > MAX_NAME {
            return Err(ProtoError::bad_value("replyto", "must have 1 to 64 bytes"));
        }
        let topic = take_str(&mut map, "topic")?;
        check_topic(&topic, "topic")?;
        let broker = take_opt_str(&mut map, "broker")?;
        if let Some(b) = &broker {
            check_broker_url(b)?;
        }
        let window_ms = take_opt_u64(&mut map, "window_ms")?;
        if window_ms.is_some_and(|w| w > MAX_WINDOW_MS) {
            return Err(ProtoError::bad_value("window_ms", "at most 60000"));
        }
        let v = take_opt_u64(&mut map, "v")?;
        let brief = take_opt_bool(&mut map, "brief")?;
        Ok(RollCall {
            cmd,
            id,
            replyto,
            topic,
            broker,
            window_ms,
            v,
            brief,
            extra: map,
        })
    }

    /// The roll-call as a JSON object, unknown fields included.
    pub fn to_object(&self) -> Object {
        let mut map = self.extra.clone();
        map.insert("cmd".into(), self.cmd.clone().into());
        map.insert("id".into(), self.id.into());
        map.insert("replyto".into(), self.replyto.clone().into());
        map.insert("topic".into(), self.topic.clone().into());
        put_opt(&mut map, "broker", self.broker.clone());
        put_opt(&mut map, "window_ms", self.window_ms);
        put_opt(&mut map, "v", self.v);
        put_opt(&mut map, "brief", self.brief);
        map
    }

    /// Whether it asks for brief answers.
    pub fn wants_brief(&self) -> bool {
        self.brief == Some(true)
    }

    /// The roll-call as compact JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Value::Object(self.to_object())).unwrap_or_default()
    }
}

/// A `broker` field must look like `mqtt://host:port` or `mqtts://host:port`.
fn check_broker_url(url: &str) -> Result<(), ProtoError> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("mqtts://"))
        .ok_or_else(|| ProtoError::bad_value("broker", "must start with mqtt:// or mqtts://"))?;
    let well_formed = !rest.is_empty()
        && rest.len() <= 255
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'));
    if !well_formed {
        return Err(ProtoError::bad_value("broker", "must be mqtt://host:port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notes_roll_call_parses_and_echoes_unknown_fields() {
        let raw = br#"{"cmd":"status","replyto":"pibot01","topic":"/stat/data","id":1241,"colour":"red"}"#;
        let rc = RollCall::parse(raw, RollCallLimits::default()).unwrap();
        assert_eq!(rc.id, 1241);
        assert_eq!(rc.replyto, "pibot01");
        assert_eq!(rc.extra["colour"], "red");
        let back: Value = serde_json::from_slice(&rc.to_bytes()).unwrap();
        let orig: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn brief_is_a_roll_call_field_kept_as_sent() {
        let raw = br#"{"cmd":"status","replyto":"a","topic":"/t","id":1,"brief":true}"#;
        let rc = RollCall::parse(raw, RollCallLimits::default()).unwrap();
        assert!(rc.wants_brief());
        assert!(!rc.extra.contains_key("brief"));
        assert_eq!(rc.to_object()["brief"], true);
        // `false` stays `false`: a signature covers it.
        let off = br#"{"cmd":"status","replyto":"a","topic":"/t","id":1,"brief":false}"#;
        let rc = RollCall::parse(off, RollCallLimits::default()).unwrap();
        assert!(!rc.wants_brief());
        assert_eq!(rc.to_object()["brief"], false);
        let none = RollCall::new(1, "a", "/t");
        assert!(!none.wants_brief());
        assert!(!none.to_object().contains_key("brief"));
    }

    #[test]
    fn getstatus_is_a_synonym_and_other_cmds_are_refused() {
        let ok = br#"{"cmd":"getstatus","replyto":"a","topic":"/t","id":1}"#;
        assert_eq!(
            RollCall::parse(ok, RollCallLimits::default()).unwrap().cmd,
            "getstatus"
        );
        let other = br#"{"cmd":"reboot","replyto":"a","topic":"/t","id":1}"#;
        assert_eq!(
            RollCall::parse(other, RollCallLimits::default()),
            Err(ProtoError::UnknownCmd("reboot".into()))
        );
    }

    #[test]
    fn bad_roll_calls_say_what_is_wrong() {
        let cases: [(&[u8], &str); 8] = [
            (
                br#"{"cmd":"status","replyto":"a","topic":"/t"}"#,
                "missing field `id`",
            ),
            (
                br#"{"cmd":"status","replyto":"a","topic":"/t","id":"1"}"#,
                "field `id` must be",
            ),
            (
                br#"{"cmd":"status","replyto":"a","topic":"/t/#","id":1}"#,
                "wildcards",
            ),
            (
                br#"{"cmd":"status","replyto":"","topic":"/t","id":1}"#,
                "replyto",
            ),
            (
                br#"{"cmd":"status","replyto":"a","topic":"/t","id":1,"window_ms":600000}"#,
                "window_ms",
            ),
            (
                br#"{"cmd":"status","replyto":"a","topic":"/t","id":1,"broker":"http://x"}"#,
                "broker",
            ),
            (
                br#"{"cmd":"status","replyto":"a","topic":"/t","id":1,"brief":"yes"}"#,
                "brief",
            ),
            (b"[]", "object"),
        ];
        for (raw, needle) in cases {
            let err = RollCall::parse(raw, RollCallLimits::default()).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
        let big = vec![b' '; 1201];
        assert!(matches!(
            RollCall::parse(&big, RollCallLimits::default()),
            Err(ProtoError::TooLarge { .. })
        ));
    }
}
