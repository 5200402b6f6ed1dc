//! Answers to a roll-call: building the host's and each service's answer, and
//! reading any answer back, from rollcall or from a foreign program (docs/protocol.md section 3).

use serde_json::Value;

use crate::describe::{Category, Description, Health, Interfaces, is_digest};
use crate::json::{self, Object, take_opt_str, take_opt_u64, take_str, take_u64};
use crate::{HostReport, ProtoError};

/// The `function` of the agent's own answer for its host.
pub const HOST_FUNCTION: &str = "host";

/// The agent's answer for its host: the report plus `function:"host"`, the
/// host's services, the agent's version and uptime.
pub fn host_answer(report: &HostReport, apps: &[String], version: &str, uptime_s: u64) -> Object {
    let mut map = report.answer_object();
    map.insert("function".into(), HOST_FUNCTION.into());
    map.insert("apps".into(), apps.to_vec().into());
    map.insert("version".into(), version.into());
    map.insert("uptime_s".into(), uptime_s.into());
    map
}

/// A service's answer: the report plus the notes' flat topic fields and the full interfaces.
pub fn service_answer(report: &HostReport, description: &Description) -> Object {
    let mut map = flat_answer(report, description);
    map.insert(
        "interfaces".into(),
        serde_json::to_value(&description.interfaces).unwrap_or(Value::Null),
    );
    map
}

/// A service's answer to a `brief` roll-call: the flat fields and health,
/// and instead of `interfaces` the `digest` of the description retained on
/// its `$description` ([`crate::describe::digest`] of that payload).
pub fn brief_service_answer(
    report: &HostReport,
    description: &Description,
    digest: &str,
) -> Object {
    let mut map = flat_answer(report, description);
    map.insert("digest".into(), digest.into());
    map
}

/// The fields both kinds of service answer have.
fn flat_answer(report: &HostReport, description: &Description) -> Object {
    let mut map = report.answer_object();
    map.insert("function".into(), description.function.clone().into());
    let ifs = &description.interfaces;
    json::put_opt(&mut map, "inputs", ifs.flat(Category::Inputs));
    json::put_opt(&mut map, "outputs", ifs.flat(Category::Outputs));
    json::put_opt(&mut map, "control", ifs.flat(Category::Controls));
    if let Some(health) = &description.health {
        map.insert(
            "health".into(),
            serde_json::to_value(health).unwrap_or(Value::Null),
        );
    }
    map
}

/// Any answer as the scanner reads it. Only `id`, `hostname` and `function`
/// are required, so that foreign services with a minimal answer still count.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The roll-call's id.
    pub id: u64,
    /// The answering host.
    pub hostname: String,
    /// `host` for an agent's answer, else the service's function.
    pub function: String,
    /// The host's address, as its agent reported it.
    pub ipaddr: Option<String>,
    /// The host's external address.
    pub extaddr: Option<String>,
    /// Flat field: topics consumed.
    pub inputs: Option<String>,
    /// Flat field: topics published.
    pub outputs: Option<String>,
    /// Flat field: configuration topic.
    pub control: Option<String>,
    /// The full lists, where the service sent them and they are well-formed.
    pub interfaces: Option<Interfaces>,
    /// The service's health, where it sent one.
    pub health: Option<Health>,
    /// The digest of its retained `$description`, where it sent one shaped
    /// as [`crate::describe::digest`] makes them.
    pub digest: Option<String>,
    /// For a host answer: its services.
    pub apps: Option<Vec<String>>,
    /// For a host answer: the agent's version.
    pub version: Option<String>,
    /// For a host answer: seconds since the agent started.
    pub uptime_s: Option<u64>,
    /// Everything else the answer carried.
    pub extra: Object,
}

impl Answer {
    /// Reads an answer from an MQTT payload (at most [`crate::MAX_PAYLOAD`] bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut map = json::parse_object(bytes, crate::MAX_PAYLOAD)?;
        // A foreign service's answer counts even where its optional parts
        // are not as this protocol shapes them: those parts are left out.
        let interfaces = map
            .remove("interfaces")
            .and_then(|v| serde_json::from_value(v).ok());
        let health = map
            .remove("health")
            .and_then(|v| serde_json::from_value(v).ok());
        let digest = match map.remove("digest") {
            Some(Value::String(d)) if is_digest(&d) => Some(d),
            _ => None,
        };
        let mut flat = |field| match map.remove(field) {
            Some(Value::String(topic)) => Some(topic),
            _ => None,
        };
        let (inputs, outputs, control) = (flat("inputs"), flat("outputs"), flat("control"));
        let apps = match map.remove("apps") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(ProtoError::wrong_type("apps", "a list of strings")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(ProtoError::wrong_type("apps", "a list of strings")),
        };
        Ok(Answer {
            id: take_u64(&mut map, "id")?,
            hostname: take_str(&mut map, "hostname")?,
            function: take_str(&mut map, "function")?,
            ipaddr: take_opt_str(&mut map, "ipaddr")?,
            extaddr: take_opt_str(&mut map, "extaddr")?,
            inputs,
            outputs,
            control,
            interfaces,
            health,
            digest,
            apps,
            version: take_opt_str(&mut map, "version")?,
            uptime_s: take_opt_u64(&mut map, "uptime_s")?,
            extra: map,
        })
    }

    /// Whether this is an agent's answer for its host rather than a service's.
    pub fn is_host(&self) -> bool {
        self.function == HOST_FUNCTION
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interface, RollCall, ValueType};

    fn report() -> HostReport {
        HostReport {
            rollcall: RollCall::new(2170, "pibot01", "/stat/data"),
            hostname: "pibot01".into(),
            ipaddr: "192.168.1.50".parse().unwrap(),
            extaddr: None,
        }
    }

    #[test]
    fn a_service_answer_carries_the_notes_flat_fields() {
        let desc = Description {
            function: "display_driver".into(),
            doc: None,
            interfaces: Interfaces {
                inputs: vec![Interface::new("text", "/display", ValueType::String)],
                outputs: vec![Interface::new("buttons", "/dbuts", ValueType::Json)],
                functions: vec![],
                controls: vec![Interface::new("control", "/dcontrol", ValueType::Json)],
            },
            health: Some(Health::Ok),
        };
        let map = service_answer(&report(), &desc);
        assert_eq!(map["function"], "display_driver");
        assert_eq!(map["inputs"], "/display");
        assert_eq!(map["outputs"], "/dbuts");
        assert_eq!(map["control"], "/dcontrol");
        assert_eq!(map["id"], 2170);
        assert_eq!(map["ipaddr"], "192.168.1.50");
        let bytes = serde_json::to_vec(&map).unwrap();
        let answer = Answer::parse(&bytes).unwrap();
        assert_eq!(answer.interfaces.as_ref(), Some(&desc.interfaces));
        assert_eq!(answer.health, Some(Health::Ok));
        assert!(!answer.is_host());
    }

    fn system() -> Description {
        Description {
            function: "system".into(),
            doc: Some("the host".into()),
            interfaces: Interfaces {
                outputs: vec![
                    Interface::new("uptime", "/pibot01/system/uptime", ValueType::Float)
                        .unit("s")
                        .doc("seconds since the host booted"),
                    Interface::new("load", "/pibot01/system/load", ValueType::Float),
                ],
                controls: vec![Interface::new(
                    "control",
                    "/pibot01/system/control",
                    ValueType::Json,
                )],
                ..Interfaces::default()
            },
            health: Some(Health::Ok),
        }
    }

    fn brief_report() -> HostReport {
        let mut report = report();
        report.rollcall.brief = Some(true);
        report.rollcall.window_ms = Some(20);
        report.rollcall.broker = Some("mqtt://192.168.1.10:1883".into());
        report.rollcall.extra.insert("colour".into(), "red".into());
        report
    }

    #[test]
    fn a_brief_answer_has_the_flat_fields_and_a_digest_instead_of_interfaces() {
        let desc = system();
        let payload = desc.to_payload("pibot01");
        let digest = crate::digest(&payload);
        let map = brief_service_answer(&brief_report(), &desc, &digest);
        assert!(!map.contains_key("interfaces"));
        assert_eq!(map["digest"], digest.as_str());
        assert_eq!(map["outputs"], "/pibot01/system/+");
        assert_eq!(map["control"], "/pibot01/system/control");
        assert_eq!(map["health"], serde_json::json!({"status":"ok"}));
        // The notes' answer fields and the echoed ones stay; the roll-call's
        // parameters for answerers do not.
        for field in [
            "cmd", "id", "replyto", "topic", "hostname", "ipaddr", "colour",
        ] {
            assert!(map.contains_key(field), "{field}");
        }
        for field in crate::NOT_IN_ANSWERS {
            assert!(!map.contains_key(field), "{field}");
        }
        let answer = Answer::parse(&serde_json::to_vec(&map).unwrap()).unwrap();
        assert_eq!(answer.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(answer.interfaces, None);
        assert_eq!(answer.outputs.as_deref(), Some("/pibot01/system/+"));
        assert!(!answer.extra.contains_key("digest"));
        // Smaller than the full answer by the interfaces, whatever they hold.
        let full = service_answer(&brief_report(), &desc);
        assert!(serde_json::to_vec(&map).unwrap().len() < serde_json::to_vec(&full).unwrap().len());
    }

    #[test]
    fn a_full_answer_still_carries_interfaces_and_no_digest() {
        let desc = system();
        let full = service_answer(&brief_report(), &desc);
        assert!(!full.contains_key("digest"));
        let answer = Answer::parse(&serde_json::to_vec(&full).unwrap()).unwrap();
        assert_eq!(answer.interfaces.as_ref(), Some(&desc.interfaces));
        assert_eq!(answer.digest, None);
    }

    #[test]
    fn a_digest_not_shaped_as_one_is_left_out_and_the_answer_counts() {
        for bad in [
            serde_json::json!("E3B0C44298FC1C14"),
            serde_json::json!("e3b0c44298fc1c1"),
            serde_json::json!("e3b0c44298fc1c14e3"),
            serde_json::json!("zzzzzzzzzzzzzzzz"),
            serde_json::json!(17),
            serde_json::json!(["e3b0c44298fc1c14"]),
        ] {
            let raw = serde_json::json!({"id":5,"hostname":"h","function":"f","digest":bad});
            let a = Answer::parse(&serde_json::to_vec(&raw).unwrap()).unwrap();
            assert_eq!(a.digest, None, "{bad}");
            assert!(!a.extra.contains_key("digest"));
        }
        let good = br#"{"id":5,"hostname":"h","function":"f","digest":"e3b0c44298fc1c14"}"#;
        assert_eq!(
            Answer::parse(good).unwrap().digest.as_deref(),
            Some("e3b0c44298fc1c14")
        );
    }

    #[test]
    fn a_host_answer_lists_apps() {
        let map = host_answer(&report(), &["system".into()], "0.1.0", 42);
        let answer = Answer::parse(&serde_json::to_vec(&map).unwrap()).unwrap();
        assert!(answer.is_host());
        assert_eq!(answer.apps, Some(vec!["system".to_string()]));
        assert_eq!(answer.uptime_s, Some(42));
    }

    #[test]
    fn a_minimal_foreign_answer_is_enough() {
        let a =
            Answer::parse(br#"{"id":5,"hostname":"h","function":"pump","inputs":"/p"}"#).unwrap();
        assert_eq!(a.inputs.as_deref(), Some("/p"));
        assert!(Answer::parse(br#"{"id":5,"hostname":"h"}"#).is_err());
        let odd = br#"{"id":5,"hostname":"h","function":"f","inputs":["/a"],"interfaces":{"inputs":[{"x":1}]}}"#;
        let a = Answer::parse(odd).unwrap();
        assert_eq!((a.inputs, a.interfaces), (None, None));
        assert!(Answer::parse(br#"{"id":5,"hostname":"h","function":"f","apps":[1]}"#).is_err());
    }
}
