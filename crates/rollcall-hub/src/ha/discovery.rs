//! From the cluster map to Home Assistant's MQTT discovery messages: a pure
//! function of a [`MapSnapshot`], so every config can be checked without a
//! broker. What an interface becomes is read from its description (type,
//! unit, range, whether an input has a state output of the same name), not
//! from the name of the service that sent it, so a foreign service that
//! describes its topics gets entities the same way as a built-in one.

use std::collections::{BTreeMap, BTreeSet};

use rollcall_proto::{Category, Interface, Topics, ValueType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::check::{check_config, device_class_for};
use crate::{HostSnapshot, HostStatus, MapSnapshot, ServiceSnapshot};

/// The name in every config's `origin`: how the hub recognises, after a
/// restart, the retained configs it published before.
pub const ORIGIN_NAME: &str = "rollcall";

/// The hub's own device identifier: every host's device names it as its
/// `via_device`.
pub const HUB_IDENTIFIER: &str = "rollcall_hub";

/// A boolean output's state, whatever form a service sends it in
/// (`{"value":1}`, `{"value":true}`, `{"value":"on"}`), as `ON` or `OFF`.
pub const BOOL_TEMPLATE: &str =
    "{{ 'ON' if value_json.value in [1, true, '1', 'on', 'ON', 'true', 'high'] else 'OFF' }}";

/// A reading's value, from rollcall's `{"value":..,"unit":..,"ts":..}`.
pub const VALUE_TEMPLATE: &str = "{{ value_json.value }}";

/// The first word of a `$state` payload (`online 1733587200123`): Home
/// Assistant compares the whole payload with `payload_available`, and
/// rollcall's carries a session number after the word (docs/protocol.md,
/// section 4).
pub const STATE_TEMPLATE: &str = "{{ value.split(' ')[0] }}";

/// A button-event output (`{"button":"A","pressed":true,..}`) as Home
/// Assistant's event payload: `press` or `release`, with the button as an
/// attribute.
pub const BUTTON_TEMPLATE: &str = "{{ {'event_type': 'press' if value_json.pressed else 'release', 'button': value_json.button} | to_json }}";

/// Where and how the discovery messages are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaOptions {
    /// The discovery prefix (`homeassistant`).
    pub prefix: String,
    /// The deployment's topics (where each host's `$state` is).
    pub topics: Topics,
}

impl HaOptions {
    /// Options for `prefix` on the default topics.
    pub fn new(prefix: impl Into<String>) -> Self {
        HaOptions {
            prefix: prefix.into(),
            topics: Topics::default(),
        }
    }

    /// The retained topic where the hub says whether it runs
    /// (`online`/`offline`, its last will).
    pub fn hub_topic(&self) -> String {
        format!("{}/rollcall/hub", self.prefix)
    }

    /// The retained topic where the hub says whether it sees `node` online
    /// (so that a host that stopped answering without saying `offline`
    /// shows its entities unavailable too).
    pub fn host_topic(&self, node: &str) -> String {
        format!("{}/rollcall/host/{node}", self.prefix)
    }

    /// The filter covering every [`host_topic`](Self::host_topic).
    pub fn host_filter(&self) -> String {
        self.host_topic("+")
    }

    /// The filter covering every per-entity discovery config.
    pub fn config_filter(&self) -> String {
        format!("{}/+/+/+/config", self.prefix)
    }

    /// Home Assistant's birth (and will) topic.
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// Whether `topic` is one the hub publishes retained: a config or a
    /// host's availability.
    pub fn is_owned_topic(&self, topic: &str) -> bool {
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        let levels: Vec<&str> = rest.split('/').collect();
        matches!(
            levels.as_slice(),
            [_, _, _, "config"] | ["rollcall", "host", _]
        )
    }
}

/// An interface that could not be made an entity, and why: in the hub's log
/// and in `/api/map`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Skipped {
    /// Its host.
    pub host: String,
    /// Its service.
    pub service: String,
    /// `inputs` or `outputs`.
    pub list: String,
    /// Its name in that list.
    pub interface: String,
    /// Why it has no entity.
    pub reason: String,
}

/// Everything the hub wants retained for Home Assistant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovery {
    /// Retained payloads by topic: every config, and each host's
    /// availability.
    pub messages: BTreeMap<String, Vec<u8>>,
    /// How many of them are entity configs.
    pub entities: usize,
    /// What has no entity.
    pub skipped: Vec<Skipped>,
}

/// One entity, before it is checked.
struct Entity {
    component: &'static str,
    object_id: String,
    config: serde_json::Map<String, Value>,
}

/// Makes `name` an id of `[a-zA-Z0-9_-]`, at most [`MAX_ID`] bytes: other
/// characters become `_`, and a name that had any (or was empty, or
/// longer) gets 8 hex digits of its digest, so that two names that differ
/// only there stay apart.
pub fn clean_id(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned == name && !name.is_empty() && name.len() <= MAX_ID {
        cleaned
    } else {
        // Long names are cut (ids are ASCII here), so topics stay short.
        let kept = &cleaned[..cleaned.len().min(MAX_ID - 9)];
        format!("{kept}_{}", &rollcall_proto::digest(name.as_bytes())[..8])
    }
}

/// The longest id [`clean_id`] makes: a discovery topic stays far below
/// what a broker takes, whatever the names.
pub const MAX_ID: usize = 48;

/// The largest config the hub publishes (its own are about 1 KB; topics
/// and names from a description make the rest).
pub const MAX_CONFIG: usize = 8 * 1024;

/// The object id of a service's interface: `{service}_{interface}`. When the
/// service's id has a `_` of its own, where it ends is ambiguous
/// (`a_b` + `c` and `a` + `b_c`), so the id gets a digest of both names.
pub fn object_id(service: &str, interface: &str) -> String {
    let s = clean_id(service);
    let i = clean_id(interface);
    if s.contains('_') {
        let both = format!("{service}/{interface}");
        format!("{s}_{i}_{}", &rollcall_proto::digest(both.as_bytes())[..8])
    } else {
        format!("{s}_{i}")
    }
}

/// The discovery messages for `snapshot`: the hub's own device, then per
/// host its availability and one config per interface Home Assistant can
/// show or drive. Each config is checked ([`check_config`]) before it is
/// kept; what fails, and what has no entity, is listed in `skipped`.
pub fn discovery(snapshot: &MapSnapshot, options: &HaOptions) -> Discovery {
    let mut out = Discovery::default();
    let add = |out: &mut Discovery, node: &str, entity: Entity, skip: Option<Skipped>| {
        let config = Value::Object(entity.config);
        let topic = format!(
            "{}/{}/{node}/{}/config",
            options.prefix, entity.component, entity.object_id
        );
        let bytes = serde_json::to_vec(&config).unwrap_or_default();
        let problem = match check_config(entity.component, &config) {
            Err(reason) => Some(reason),
            Ok(()) if bytes.len() > MAX_CONFIG => Some(format!(
                "the config would have {} bytes, more than {MAX_CONFIG}",
                bytes.len()
            )),
            Ok(()) if out.messages.contains_key(&topic) => {
                Some(format!("its discovery topic `{topic}` is taken"))
            }
            Ok(()) => None,
        };
        match (problem, skip) {
            (None, _) => {
                out.messages.insert(topic, bytes);
                out.entities += 1;
            }
            (Some(reason), Some(mut skipped)) => {
                skipped.reason = format!("{} entity refused: {reason}", entity.component);
                out.skipped.push(skipped);
            }
            (Some(_), None) => {}
        }
    };
    add(&mut out, HUB_IDENTIFIER, hub_entity(options), None);
    for host in &snapshot.hosts {
        let node = clean_id(&host.name);
        out.messages.insert(
            options.host_topic(&node),
            if host.status == HostStatus::Online {
                b"online".to_vec()
            } else {
                b"offline".to_vec()
            },
        );
        for service in &host.services {
            for (entity, skipped) in
                service_entities(host, service, &node, options, &mut out.skipped)
            {
                add(&mut out, &node, entity, Some(skipped));
            }
        }
    }
    out.skipped.sort();
    out
}

fn origin() -> Value {
    json!({"name": ORIGIN_NAME, "sw_version": env!("CARGO_PKG_VERSION")})
}

/// The hub's own device, made by one entity: whether the hub runs.
fn hub_entity(options: &HaOptions) -> Entity {
    let config = json!({
        "name": "hub",
        "unique_id": format!("rollcall:{HUB_IDENTIFIER}:binary_sensor:hub"),
        "state_topic": options.hub_topic(),
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "device": {
            "identifiers": [HUB_IDENTIFIER],
            "name": "rollcall hub",
            "manufacturer": "rollcall",
            "model": "rollcall hub",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
        "origin": origin(),
    });
    Entity {
        component: "binary_sensor",
        object_id: "hub".into(),
        config: into_map(config),
    }
}

fn into_map(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// What every entity of a host shares: its device, its availability, the
/// origin.
fn common(host: &HostSnapshot, node: &str, options: &HaOptions) -> serde_json::Map<String, Value> {
    let mut device = json!({
        "identifiers": [format!("rollcall_{node}")],
        "name": host.name,
        "manufacturer": "rollcall",
        "model": "rollcall agent",
        "via_device": HUB_IDENTIFIER,
    });
    if let Some(version) = &host.version {
        device["sw_version"] = version.clone().into();
    }
    into_map(json!({
        "device": device,
        "availability": [
            {
                "topic": options.topics.state(&host.name),
                "value_template": STATE_TEMPLATE,
                "payload_available": "online",
                "payload_not_available": "offline",
            },
            {
                "topic": options.host_topic(node),
                "payload_available": "online",
                "payload_not_available": "offline",
            },
        ],
        "availability_mode": "all",
        "origin": origin(),
    }))
}

/// Each entity of one service, with the [`Skipped`] entry it becomes if
/// its config is refused; interfaces with no entity at all go to `skipped`.
fn service_entities(
    host: &HostSnapshot,
    service: &ServiceSnapshot,
    node: &str,
    options: &HaOptions,
    skipped: &mut Vec<Skipped>,
) -> Vec<(Entity, Skipped)> {
    let Some(description) = &service.description else {
        return Vec::new();
    };
    let interfaces = &description.interfaces;
    let skip = |list: Category, i: &Interface, reason: &str| Skipped {
        host: host.name.clone(),
        service: service.name.clone(),
        list: list.as_str().into(),
        interface: i.name.clone(),
        reason: reason.into(),
    };
    // The host's own readings are diagnostics, not the cluster's data.
    let diagnostic = service.name == "system";
    let mut used_outputs = BTreeSet::new();
    let mut out = Vec::new();
    let entity = |component: &'static str, i: &Interface, fields: Value| {
        let mut config = common(host, node, options);
        config.insert("name".into(), format!("{} {}", service.name, i.name).into());
        let object_id = object_id(&service.name, &i.name);
        // The component too: an input and an output of the same name but
        // different types are two entities of different components.
        config.insert(
            "unique_id".into(),
            format!("rollcall:{node}:{component}:{object_id}").into(),
        );
        if diagnostic {
            config.insert("entity_category".into(), "diagnostic".into());
        }
        config.extend(into_map(fields));
        Entity {
            component,
            object_id,
            config,
        }
    };
    for input in &interfaces.inputs {
        // The output of the same name and type is the state of what the
        // input drives (GPIO `set/lamp` and `output/lamp`).
        let state = interfaces
            .outputs
            .iter()
            .find(|o| o.name == input.name && o.value_type == input.value_type);
        let mut fields = match input.value_type {
            ValueType::Bool => {
                let mut f = json!({
                    "command_topic": input.topic,
                    "payload_on": "1",
                    "payload_off": "0",
                });
                if let Some(state) = state {
                    f["state_topic"] = state.topic.clone().into();
                    f["value_template"] = BOOL_TEMPLATE.into();
                    f["state_on"] = "ON".into();
                    f["state_off"] = "OFF".into();
                }
                ("switch", f)
            }
            ValueType::Int | ValueType::Float => {
                let min = input.min.or(state.and_then(|s| s.min));
                let max = input.max.or(state.and_then(|s| s.max));
                let (Some(min), Some(max)) = (min, max) else {
                    skipped.push(skip(
                        Category::Inputs,
                        input,
                        "a number needs a range (min and max) in its description",
                    ));
                    continue;
                };
                let mut f = json!({
                    "command_topic": input.topic,
                    "min": min,
                    "max": max,
                    "step": step_for(input.value_type, min, max),
                });
                if let Some(unit) = input.unit.as_ref().or(state.and_then(|s| s.unit.as_ref())) {
                    f["unit_of_measurement"] = unit.clone().into();
                }
                if let Some(state) = state {
                    f["state_topic"] = state.topic.clone().into();
                    f["value_template"] = VALUE_TEMPLATE.into();
                }
                ("number", f)
            }
            ValueType::String => {
                let mut f = json!({"command_topic": input.topic, "max": 255});
                if let Some(state) = state {
                    f["state_topic"] = state.topic.clone().into();
                    f["value_template"] = VALUE_TEMPLATE.into();
                }
                ("text", f)
            }
            ValueType::Json => {
                skipped.push(skip(
                    Category::Inputs,
                    input,
                    "a JSON document has no Home Assistant entity",
                ));
                continue;
            }
        };
        if let Some(state) = state {
            used_outputs.insert(state.name.as_str());
        }
        if diagnostic {
            // A diagnostic entity cannot be commanded; a control is `config`.
            fields.1["entity_category"] = "config".into();
        }
        out.push((
            entity(fields.0, input, fields.1),
            skip(Category::Inputs, input, ""),
        ));
    }
    for output in &interfaces.outputs {
        if used_outputs.contains(output.name.as_str()) {
            continue;
        }
        let (component, fields) = match output.value_type {
            ValueType::Bool => (
                "binary_sensor",
                json!({
                    "state_topic": output.topic,
                    "value_template": BOOL_TEMPLATE,
                    "payload_on": "ON",
                    "payload_off": "OFF",
                }),
            ),
            ValueType::Int | ValueType::Float => {
                let mut f = json!({
                    "state_topic": output.topic,
                    "value_template": VALUE_TEMPLATE,
                    "state_class": "measurement",
                });
                if let Some(unit) = &output.unit {
                    f["unit_of_measurement"] = unit.clone().into();
                    if let Some(class) = device_class_for(unit, &output.name) {
                        f["device_class"] = class.into();
                    }
                }
                ("sensor", f)
            }
            ValueType::String => (
                "sensor",
                json!({"state_topic": output.topic, "value_template": VALUE_TEMPLATE}),
            ),
            // A stream of button changes, as its description documents
            // its payload: `{"button":..,"pressed":..}`.
            ValueType::Json if is_button_stream(output) => (
                "event",
                json!({
                    "state_topic": output.topic,
                    "value_template": BUTTON_TEMPLATE,
                    "event_types": ["press", "release"],
                }),
            ),
            ValueType::Json => {
                skipped.push(skip(
                    Category::Outputs,
                    output,
                    "a JSON document has no Home Assistant entity",
                ));
                continue;
            }
        };
        out.push((
            entity(component, output, fields),
            skip(Category::Outputs, output, ""),
        ));
    }
    out
}

/// A JSON output whose documented payload has a `button` and a `pressed`
/// field.
fn is_button_stream(output: &Interface) -> bool {
    output
        .doc
        .as_deref()
        .is_some_and(|d| d.contains("\"button\"") && d.contains("\"pressed\""))
}

/// The step of a number: 1 for integers; for floats about a thousandth of
/// the range, a power of ten, and never below Home Assistant's smallest
/// (0.001).
pub fn step_for(value_type: ValueType, min: f64, max: f64) -> f64 {
    if value_type == ValueType::Int {
        return 1.0;
    }
    let span = max - min;
    if !span.is_finite() || span <= 0.0 {
        return 1.0;
    }
    let step = 10f64.powf((span / 1000.0).log10().floor());
    // Powers of ten from floats: round to the digits they have.
    let step = (step * 1e3).round() / 1e3;
    step.clamp(0.001, 1e6)
}
