//! Self-descriptions: what a service is and which topics it reads, writes,
//! answers on and is configured on (docs/protocol.md section 4).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
