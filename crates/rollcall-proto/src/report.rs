//! The host report: a roll-call plus what the agent knows of its host,
//! published on `/udp/report` for the host's services (docs/protocol.md section 2).

use std::net::IpAddr;

use serde_json::Value;

use crate::json::{self, Object, take_opt_str, take_str};
use crate::topic::check_name;
use crate::{ProtoError, RollCall};

/// The fields reports, answers and query replies define. A roll-call's
/// unknown fields are echoed, but never these: a roll-call must not be able
/// to set an answer's `health`, its topics, its `apps` or an `ok`
/// (docs/protocol.md section 1).
pub const NOT_ECHOED: [&str; 15] = [
    "hostname",
    "ipaddr",
    "extaddr",
    "function",
    "apps",
    "version",
    "uptime_s",
    "inputs",
    "outputs",
    "control",
    "interfaces",
    "digest",
    "health",
    "ok",
    "error",
];

/// The roll-call's parameters for answerers, which the host report carries
/// (a service waits out `window_ms`, answers briefly on `brief`) and answers
/// leave out: a scanner knows what it asked, and 250 answers each carrying
/// them cost bytes (docs/protocol.md section 3). `cmd`, `id`, `replyto`,
/// `topic` and the echoed unknown fields stay, as the notes' answer has them.
pub const NOT_IN_ANSWERS: [&str; 4] = ["broker", "window_ms", "v", "brief"];

/// A roll-call enhanced with the host's name and addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct HostReport {
    /// The roll-call, unknown fields included.
    pub rollcall: RollCall,
    /// The host's name; a service answers only reports naming its own host.
    pub hostname: String,
    /// The address of the interface the roll-call arrived on.
    pub ipaddr: IpAddr,
    /// The host's address as the outside world sees it, where known.
    pub extaddr: Option<IpAddr>,
}

impl HostReport {
    /// Parses a report from an MQTT payload (at most [`crate::MAX_PAYLOAD`] bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut map = json::parse_object(bytes, crate::MAX_PAYLOAD)?;
        let hostname = take_str(&mut map, "hostname")?;
        check_name(&hostname).map_err(|e| ProtoError::bad_value("hostname", e.to_string()))?;
        let ipaddr = parse_ip(take_str(&mut map, "ipaddr")?, "ipaddr")?;
        let extaddr = take_opt_str(&mut map, "extaddr")?
            .map(|a| parse_ip(a, "extaddr"))
            .transpose()?;
        Ok(HostReport {
            rollcall: RollCall::from_object(map)?,
            hostname,
            ipaddr,
            extaddr,
        })
    }

    /// The report as a JSON object: the roll-call's fields, less any of
    /// [`NOT_ECHOED`], plus the host's.
    pub fn to_object(&self) -> Object {
        let mut map = self.rollcall.to_object();
        for field in NOT_ECHOED {
            map.remove(field);
        }
        map.insert("hostname".into(), self.hostname.clone().into());
        map.insert("ipaddr".into(), self.ipaddr.to_string().into());
        json::put_opt(&mut map, "extaddr", self.extaddr.map(|a| a.to_string()));
        map
    }

    /// What every answer to the report starts from: the report less
    /// [`NOT_IN_ANSWERS`].
    pub fn answer_object(&self) -> Object {
        let mut map = self.to_object();
        for field in NOT_IN_ANSWERS {
            map.remove(field);
        }
        map
    }

    /// The report as compact JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Value::Object(self.to_object())).unwrap_or_default()
    }
}

fn parse_ip(text: String, field: &'static str) -> Result<IpAddr, ProtoError> {
    text.parse()
        .map_err(|_| ProtoError::bad_value(field, format!("`{text}` is not an IP address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notes_report_round_trips() {
        let raw = br#"{"hostname":"pibot01","replyto":"pibot01","cmd":"getstatus","ipaddr":"192.168.1.50","topic":"/stat/data","extaddr":"173.95.174.120","id":1234}"#;
        let report = HostReport::parse(raw).unwrap();
        assert_eq!(report.hostname, "pibot01");
        assert_eq!(report.rollcall.id, 1234);
        assert_eq!(report.extaddr, Some("173.95.174.120".parse().unwrap()));
        let back: Value = serde_json::from_slice(&report.to_bytes()).unwrap();
        assert_eq!(back, serde_json::from_slice::<Value>(raw).unwrap());
    }

    // Issue 11: extra roll-call fields were echoed into answers and could
    // inject `health`, `control` or `ok`.
    #[test]
    fn a_rollcall_cannot_set_the_fields_answers_define() {
        let raw = br#"{"cmd":"status","id":1,"replyto":"x","topic":"/stat/data","colour":"red",
            "health":{"status":"alert","reason":"pwned"},"control":"/h9/gpio/set/lamp",
            "ok":true,"apps":["evil"],"function":"gpio","digest":"0123456789abcdef"}"#;
        let rc = RollCall::parse(raw, crate::RollCallLimits::default()).unwrap();
        let report = HostReport {
            rollcall: rc,
            hostname: "h1".into(),
            ipaddr: "198.18.0.5".parse().unwrap(),
            extaddr: None,
        };
        let map = report.to_object();
        assert_eq!(map["colour"], "red", "unknown fields are still echoed");
        for field in NOT_ECHOED {
            let ours = ["hostname", "ipaddr"].contains(&field);
            assert_eq!(map.contains_key(field), ours, "{field}: {map:?}");
        }
        let answer = crate::host_answer(&report, &["system".into()], "0", 1);
        assert_eq!(answer["apps"], serde_json::json!(["system"]));
        assert!(!answer.contains_key("health") && !answer.contains_key("ok"));
    }

    #[test]
    fn a_report_needs_a_host_and_an_address() {
        let no_ip = br#"{"hostname":"a","replyto":"a","cmd":"status","topic":"/t","id":1}"#;
        assert_eq!(HostReport::parse(no_ip), Err(ProtoError::Missing("ipaddr")));
        let bad_ip =
            br#"{"hostname":"a","ipaddr":"x","replyto":"a","cmd":"status","topic":"/t","id":1}"#;
        assert!(
            HostReport::parse(bad_ip)
                .unwrap_err()
                .to_string()
                .contains("ipaddr")
        );
        let bad_host = br#"{"hostname":"a/b","ipaddr":"1.2.3.4","replyto":"a","cmd":"status","topic":"/t","id":1}"#;
        assert!(
            HostReport::parse(bad_host)
                .unwrap_err()
                .to_string()
                .contains("hostname")
        );
    }
}
