//! Self-descriptions: what a service is and which topics it reads, writes,
//! answers on and is configured on (docs/protocol.md section 4).

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::ProtoError;
use crate::topic::covering_filter;

/// The four lists of a self-description, seen from the service's side of the data flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// Topics the service consumes: commands, values to show.
    Inputs,
    /// Topics the service publishes: readings, events, states.
    Outputs,
    /// Request/answer calls (`get` topics).
    Functions,
    /// Configuration topics.
    Controls,
}

impl Category {
    /// All four, in the order the protocol lists them.
    pub const ALL: [Category; 4] = [
        Category::Inputs,
        Category::Outputs,
        Category::Functions,
        Category::Controls,
    ];

    /// The word used in topics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Inputs => "inputs",
            Category::Outputs => "outputs",
            Category::Functions => "functions",
            Category::Controls => "controls",
        }
    }
}

impl FromStr for Category {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                ProtoError::bad_value("category", "one of inputs, outputs, functions, controls")
            })
    }
}

/// The type of the values on an interface's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// `true`/`false`, `0`/`1`.
    Bool,
    /// An integer.
    Int,
    /// A number.
    Float,
    /// Text.
    String,
    /// A JSON document.
    Json,
}

/// One topic of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// A short name, unique within its list.
    pub name: String,
    /// The MQTT topic.
    pub topic: String,
    /// The type of its values.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// The unit of its values (`°C`, `V`, `%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The smallest accepted or produced value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The largest accepted or produced value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Whether values are published retained.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retained: bool,
    /// One line for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
}

impl Interface {
    /// An interface with only the required fields.
    pub fn new(name: impl Into<String>, topic: impl Into<String>, value_type: ValueType) -> Self {
        Interface {
            name: name.into(),
            topic: topic.into(),
            value_type,
            unit: None,
            min: None,
            max: None,
            retained: false,
            doc: None,
        }
    }

    /// With a unit.
    pub fn unit(mut self, unit: &str) -> Self {
        self.unit = Some(unit.to_owned());
        self
    }

    /// With a range.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }

    /// Published retained.
    pub fn retained(mut self) -> Self {
        self.retained = true;
        self
    }

    /// With a line of documentation.
    pub fn doc(mut self, doc: &str) -> Self {
        self.doc = Some(doc.to_owned());
        self
    }
}

/// The four lists of topics of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interfaces {
    /// Topics the service consumes.
    #[serde(default)]
    pub inputs: Vec<Interface>,
    /// Topics the service publishes.
    #[serde(default)]
    pub outputs: Vec<Interface>,
    /// Request/answer topics.
    #[serde(default)]
    pub functions: Vec<Interface>,
    /// Configuration topics.
    #[serde(default)]
    pub controls: Vec<Interface>,
}

impl Interfaces {
    /// One of the four lists.
    pub fn list(&self, category: Category) -> &[Interface] {
        match category {
            Category::Inputs => &self.inputs,
            Category::Outputs => &self.outputs,
            Category::Functions => &self.functions,
            Category::Controls => &self.controls,
        }
    }

    /// The narrowest filter covering a list's topics: the notes' flat field.
    pub fn flat(&self, category: Category) -> Option<String> {
        covering_filter(self.list(category).iter().map(|i| i.topic.as_str()))
    }

    /// `{"inputs":[topics..],...}`: the answer to `get/interfaces`.
    pub fn topic_lists(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for c in Category::ALL {
            let topics: Vec<&str> = self.list(c).iter().map(|i| i.topic.as_str()).collect();
            out.insert(c.as_str().to_owned(), topics.into());
        }
        out.into()
    }
}

/// Whether a service is working: `ok`, or `alert` with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Health {
    /// Working.
    Ok,
    /// Not working as configured.
    Alert {
        /// What is wrong.
        reason: String,
    },
}

impl Health {
    /// `ok` without a reason for alarm, `alert` with one.
    pub fn from_alert(reason: Option<&str>) -> Health {
        match reason {
            None => Health::Ok,
            Some(reason) => Health::Alert {
                reason: reason.to_owned(),
            },
        }
    }
}

/// Everything a service says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// The service's function name (`gpio`, `display_driver`).
    pub function: String,
    /// One line for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// Its topics.
    pub interfaces: Interfaces,
    /// Its health, where it knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// Hex digits in a description's digest: the first 64 bits of its SHA-256.
/// Enough to tell a service's descriptions apart (a scanner compares the
/// digest with one description it already holds, or with the hash of the
/// bytes it just read); a service that made two of its own descriptions
/// collide gains nothing it could not do by publishing either.
pub const DIGEST_HEX: usize = 16;

/// The digest of a retained `$description` payload: the first
/// [`DIGEST_HEX`] lowercase hex digits of the SHA-256 of its exact bytes
/// (docs/protocol.md sections 3 and 4). Over the bytes, not the JSON
/// value: anyone can check it without knowing how the publisher
/// serialised its description.
pub fn digest(payload: &[u8]) -> String {
    let hash = Sha256::digest(payload);
    let mut hex = hex::encode(&hash[..DIGEST_HEX / 2]);
    hex.truncate(DIGEST_HEX);
    hex
}

/// Whether `text` is shaped as a digest: exactly [`DIGEST_HEX`] lowercase
/// hex digits.
pub fn is_digest(text: &str) -> bool {
    text.len() == DIGEST_HEX && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Description {
    /// The payload retained on `/{host}/{function}/$description`: the
    /// description with its host's name. The agent publishes these bytes and
    /// takes its answers' digest from them, so the two cannot disagree.
    pub fn to_payload(&self, hostname: &str) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("hostname".into(), hostname.into());
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// Reads a retained `$description` payload (at most
    /// [`crate::MAX_PAYLOAD`] bytes, [`crate::MAX_DEPTH`] levels).
    pub fn parse_payload(bytes: &[u8]) -> Result<Self, ProtoError> {
        let value = crate::json::parse_value(bytes, crate::MAX_PAYLOAD)?;
        serde_json::from_value(value).map_err(|e| ProtoError::Json(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_16_hex_digits_of_sha256_over_the_exact_bytes() {
        // SHA-256("") = e3b0c44298fc1c14 9afbf4c8...
        assert_eq!(digest(b""), "e3b0c44298fc1c14");
        let a = br#"{"function":"f","interfaces":{}}"#;
        let b = br#"{"interfaces":{},"function":"f"}"#;
        assert!(is_digest(&digest(a)));
        assert_ne!(digest(a), digest(b), "the same JSON in other bytes differs");
        assert!(!is_digest("E3B0C44298FC1C14"));
        assert!(!is_digest("e3b0c44298fc1c1"));
        assert!(!is_digest("e3b0c44298fc1c145"));
        assert!(!is_digest("g3b0c44298fc1c14"));
    }

    #[test]
    fn a_description_payload_names_its_host_and_reads_back() {
        let desc = Description {
            function: "system".into(),
            doc: None,
            interfaces: Interfaces {
                outputs: vec![Interface::new(
                    "uptime",
                    "/h/system/uptime",
                    ValueType::Float,
                )],
                ..Interfaces::default()
            },
            health: Some(Health::Ok),
        };
        let payload = desc.to_payload("h");
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(value["hostname"], "h");
        assert_eq!(Description::parse_payload(&payload), Ok(desc.clone()));
        assert_eq!(desc.to_payload("h"), payload, "stable bytes, stable digest");
        assert!(Description::parse_payload(b"{\"function\":1}").is_err());
    }

    #[test]
    fn interface_json_has_the_protocol_field_names() {
        let i = Interface::new("uptime", "/h/system/uptime", ValueType::Float)
            .unit("s")
            .range(0.0, 1e12)
            .retained();
        let v = serde_json::to_value(&i).unwrap();
        assert_eq!(v["type"], "float");
        assert_eq!(v["retained"], true);
        assert_eq!(v["unit"], "s");
        let back: Interface = serde_json::from_value(v).unwrap();
        assert_eq!(back, i);
    }

    #[test]
    fn health_is_tagged_by_status() {
        let v = serde_json::to_value(Health::Alert {
            reason: "checksum".into(),
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"status":"alert","reason":"checksum"}));
        assert_eq!(
            serde_json::to_value(Health::Ok).unwrap(),
            serde_json::json!({"status":"ok"})
        );
    }
}
