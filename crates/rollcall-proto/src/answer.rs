//! Answers to a roll-call: building the host's and each service's answer, and
//! reading any answer back, from rollcall or from a foreign program (docs/protocol.md section 3).

use serde_json::Value;

use crate::describe::{Category, Description, Health, Interfaces};
use crate::json::{self, Object, take_opt_str, take_opt_u64, take_str, take_u64};
use crate::{HostReport, ProtoError};

/// The `function` of the agent's own answer for its host.
pub const HOST_FUNCTION: &str = "host";

/// The agent's answer for its host: the report plus `function:"host"`, the
/// host's services, the agent's version and uptime.
pub fn host_answer(report: &HostReport, apps: &[String], version: &str, uptime_s: u64) -> Object {
    let mut map = report.to_object();
    map.insert("function".into(), HOST_FUNCTION.into());
    map.insert("apps".into(), apps.to_vec().into());
    map.insert("version".into(), version.into());
    map.insert("uptime_s".into(), uptime_s.into());
    map
}

/// A service's answer: the report plus the notes' flat topic fields and the full interfaces.
pub fn service_answer(report: &HostReport, description: &Description) -> Object {
    let mut map = report.to_object();
    map.insert("function".into(), description.function.clone().into());
    let ifs = &description.interfaces;
    json::put_opt(&mut map, "inputs", ifs.flat(Category::Inputs));
    json::put_opt(&mut map, "outputs", ifs.flat(Category::Outputs));
    json::put_opt(&mut map, "control", ifs.flat(Category::Controls));
    map.insert(
        "interfaces".into(),
        serde_json::to_value(ifs).unwrap_or(Value::Null),
    );
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
