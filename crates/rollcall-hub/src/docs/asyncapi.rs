//! The cluster as an AsyncAPI 3.0.0 document: one channel per topic any
//! service describes (a topic several services use is one channel, so the
//! data flow shows as a `send` and a `receive` on it), one operation per
//! interface entry, one message per entry with a JSON Schema payload derived
//! from its type, unit and range.
//!
//! MQTT filters become channel addresses with parameters: AsyncAPI 3.0 has
//! no wildcards, and an address may hold `{name}` expressions, so `+` at
//! level *n* becomes `{leveln}` and `#` becomes `{rest}`; the filter itself
//! is kept in `x-mqtt-filter`. `get` topics are request/reply operations
//! whose reply address is the request's `topic` field.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rollcall_net::BrokerUrl;
use rollcall_proto::{Category, Interface, Topics, ValueType};
use serde_json::{Map, Value, json};

use super::escape::{md_text, utc};
use super::markdown::type_word;
use super::view::{Cluster, HostView, ServiceView};

/// What the document says beyond the map.
#[derive(Debug, Clone, Default)]
pub struct AsyncApiOptions {
    /// The cluster's broker, written as the document's server.
    pub broker: Option<BrokerUrl>,
    /// The deployment's topics: with them the document also has the agents'
    /// own retained topics, `$state` and `$description`.
    pub topics: Option<Topics>,
}

/// An id for `#/...` references and component keys: ASCII letters, digits,
/// `.`, `-`, `_` only (the pattern AsyncAPI puts on component keys), never
/// empty.
fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "_".to_owned() } else { out }
}

/// Hands out ids, making a taken one unique with `-2`, `-3`...
#[derive(Default)]
struct Ids {
    taken: BTreeSet<String>,
    /// The next suffix to try for each base that was taken: names from the
    /// network may make thousands of ids of one base, and counting from
    /// `-2` each time would be quadratic.
    next: HashMap<String, u64>,
}

impl Ids {
    fn unique(&mut self, base: String) -> String {
        if self.taken.insert(base.clone()) {
            return base;
        }
        let n = self.next.entry(base.clone()).or_insert(2);
        loop {
            let id = format!("{base}-{n}");
            *n += 1;
            if self.taken.insert(id.clone()) {
                return id;
            }
        }
    }
}

/// The channel id of a topic: its levels joined by `.`, wildcards spelled out.
fn channel_base(topic: &str) -> String {
    let levels: Vec<String> = topic
        .split('/')
        .filter(|l| !l.is_empty())
        .map(|l| match l {
            "+" => "any".to_owned(),
            "#" => "all".to_owned(),
            l => sanitize(l),
        })
        .collect();
    if levels.is_empty() {
        "root".to_owned()
    } else {
        levels.join(".")
    }
}

/// The channel's address and parameters for an MQTT topic or filter; `None`
/// for a topic with braces, which an address cannot hold literally.
fn address(topic: &str) -> Option<(String, Map<String, Value>)> {
    if topic.contains(['{', '}']) {
        return None;
    }
    let mut params = Map::new();
    let levels: Vec<String> = topic
        .split('/')
        .enumerate()
        .map(|(i, level)| match level {
            "+" => {
                let name = format!("level{i}");
                params.insert(
                    name.clone(),
                    json!({"description": format!("MQTT wildcard `+` at level {i}: any one topic level")}),
                );
                format!("{{{name}}}")
            }
            "#" => {
                params.insert(
                    "rest".into(),
                    json!({"description": "MQTT wildcard `#`: any number of topic levels, slashes included"}),
                );
                "{rest}".to_owned()
            }
            l => l.to_owned(),
        })
        .collect();
    Some((levels.join("/"), params))
}

/// The JSON Schema of one value of an interface.
fn value_schema(i: &Interface) -> Value {
    let mut s = Map::new();
    match i.value_type {
        ValueType::Bool => {
            s.insert(
                "oneOf".into(),
                json!([{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]),
            );
        }
        ValueType::Int | ValueType::Float => {
            let t = if i.value_type == ValueType::Int {
                "integer"
            } else {
                "number"
            };
            s.insert("type".into(), t.into());
            if let Some(min) = i.min {
                s.insert("minimum".into(), json!(min));
            }
            if let Some(max) = i.max {
                s.insert("maximum".into(), json!(max));
            }
        }
        ValueType::String => {
            s.insert("type".into(), "string".into());
        }
        ValueType::Json => {}
    }
    if let Some(unit) = &i.unit {
        s.insert("x-unit".into(), unit.clone().into());
    }
    Value::Object(s)
}

/// The message payload of an interface entry, by the list it is in.
fn payload(category: Category, i: &Interface) -> Value {
    let value = value_schema(i);
    match (category, i.value_type) {
        (Category::Outputs, ValueType::Json) | (Category::Controls, _) => value,
        (Category::Outputs, _) => json!({"anyOf": [
            value.clone(),
            {"type": "object", "required": ["value"], "properties": {
                "value": value,
                "unit": {"type": "string"},
                "ts": {"type": "integer", "minimum": 0, "description": "when it was read, unix ms"}
            }}
        ]}),
        (Category::Inputs, ValueType::Json) => value,
        (Category::Inputs, _) => json!({"anyOf": [
            value.clone(),
            {"type": "object", "required": ["value"], "properties": {
                "value": value,
                "id": {"type": "integer", "minimum": 0, "description": "echoed in the answer"},
                "topic": {"type": "string", "description": "where the answer goes"}
            }}
        ]}),
        (Category::Functions, _) => json!({
            "type": "object",
            "description": "an empty payload, or an envelope asking for the answer elsewhere",
            "properties": {
                "id": {"type": "integer", "minimum": 0, "description": "echoed in the answer"},
                "topic": {"type": "string", "description": "where the answer goes"}
            }
        }),
    }
}

/// The answer to a `get`: `{"ok":true,...,"value":...}` or `{"ok":false,"error":...}`.
fn reply_payload() -> Value {
    json!({
        "type": "object",
        "required": ["ok"],
        "properties": {
            "ok": {"type": "boolean"},
            "id": {"type": "integer", "minimum": 0},
            "function": {"type": "string"},
            "item": {"type": "string"},
            "value": {},
            "error": {"type": "string"}
        }
    })
}

fn what(category: Category) -> (&'static str, &'static str) {
    match category {
        Category::Inputs => ("receive", "consumes"),
        Category::Outputs => ("send", "publishes"),
        Category::Functions => ("receive", "answers requests on"),
        Category::Controls => ("receive", "is configured on"),
    }
}

struct Doc {
    channels: BTreeMap<String, Map<String, Value>>,
    channel_of_topic: BTreeMap<String, String>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
    /// Payload schemas, shared: a thousand hosts' `uptime` entries have one
    /// schema, not a thousand copies of it.
    schemas: Map<String, Value>,
    /// What each schema was made from (list, type, unit, range) to its id.
    schema_ids: BTreeMap<String, String>,
    ids: Ids,
}

impl Doc {
    /// A reference to the schema `key` stands for in `components.schemas`,
    /// made by `schema` and added there on first use under a name made from
    /// `hint`.
    fn schema_ref(&mut self, key: String, hint: &str, schema: impl FnOnce() -> Value) -> Value {
        let id = match self.schema_ids.get(&key) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.unique(format!("payload.{}", sanitize(hint)));
                self.schemas.insert(id.clone(), schema());
                self.schema_ids.insert(key, id.clone());
                id
            }
        };
        json!({"$ref": format!("#/components/schemas/{id}")})
    }

    /// The channel id of `topic`, creating the channel on first use.
    fn channel(&mut self, topic: &str) -> String {
        if let Some(id) = self.channel_of_topic.get(topic) {
            return id.clone();
        }
        let id = self.ids.unique(format!("channel.{}", channel_base(topic)));
        let mut ch = Map::new();
        match address(topic) {
            Some((addr, params)) => {
                ch.insert("address".into(), addr.into());
                if !params.is_empty() {
                    ch.insert("parameters".into(), params.into());
                }
            }
            None => {
                ch.insert("address".into(), Value::Null);
                ch.insert(
                    "description".into(),
                    "The MQTT topic has braces, which an AsyncAPI address cannot hold; see `x-mqtt-topic`."
                        .into(),
                );
            }
        }
        let key = if topic.contains(['+', '#']) {
            "x-mqtt-filter"
        } else {
            "x-mqtt-topic"
        };
        ch.insert(key.into(), topic.into());
        ch.insert("messages".into(), Map::new().into());
        self.channels.insert(id.clone(), ch);
        self.channel_of_topic.insert(topic.to_owned(), id.clone());
        id
    }

    /// Puts message `msg` into channel `ch` under a new component key.
    fn message(&mut self, ch: &str, base: String, msg: Value) -> String {
        let key = self.ids.unique(format!("message.{base}"));
        self.messages.insert(key.clone(), msg);
        if let Some(Value::Object(list)) = self
            .channels
            .get_mut(ch)
            .and_then(|c| c.get_mut("messages"))
        {
            list.insert(
                key.clone(),
                json!({"$ref": format!("#/components/messages/{key}")}),
            );
        }
        key
    }

    fn service(&mut self, h: &HostView, s: &ServiceView) {
        let base = format!("{}.{}", sanitize(&h.name), sanitize(&s.name));
        let mut reply: Option<(String, String)> = None;
        for (category, i) in s.interfaces() {
            let (action, verb) = what(category);
            let entry = format!("{base}.{}.{}", category.as_str(), sanitize(&i.name));
            let ch = self.channel(&i.topic);
            let mut hint = format!("{}.{}", category.as_str(), type_word(i.value_type));
            if let Some(unit) = &i.unit {
                hint.push('.');
                hint.push_str(unit);
            }
            // What the payload schema is made of, and nothing else.
            let key = format!(
                "{}|{hint}|{:?}|{:?}|{:?}",
                category.as_str(),
                i.unit,
                i.min,
                i.max
            );
            let payload = self.schema_ref(key, &hint, || payload(category, i));
            let mut msg = json!({
                "name": i.name,
                "title": format!("{} {}", s.name, i.name),
                "contentType": "application/json",
                "payload": payload,
            });
            // Descriptions are CommonMark, which AsyncAPI tools render:
            // text from the network is escaped there (summaries and titles
            // are plain text).
            if let Some(doc) = &i.doc {
                msg["description"] = md_text(doc).into();
            }
            if category == Category::Inputs && i.value_type != ValueType::Json {
                msg["description"] = format!(
                    "{}Plain text is accepted too (`on`, `1`).",
                    i.doc
                        .as_deref()
                        .map_or(String::new(), |d| format!("{}. ", md_text(d)))
                )
                .into();
            }
            let key = self.message(&ch, entry.clone(), msg);
            let mut op = json!({
                "action": action,
                "channel": {"$ref": format!("#/channels/{ch}")},
                "messages": [{"$ref": format!("#/channels/{ch}/messages/{key}")}],
                "summary": format!("{} on {} {verb} {}", s.name, h.name, i.topic),
                "bindings": {"mqtt": {
                    "qos": 1,
                    "retain": i.retained,
                    "bindingVersion": "0.2.0"
                }},
                "x-rollcall": {
                    "host": h.name,
                    "service": s.name,
                    "list": category.as_str(),
                    "name": i.name,
                },
            });
            if category == Category::Functions {
                let (reply_ch, reply_key) = reply
                    .get_or_insert_with(|| {
                        let ch = self.ids.unique(format!("channel.{base}.reply"));
                        self.channels.insert(
                            ch.clone(),
                            json!({
                                "address": null,
                                "description": format!(
                                    "Where {name} on {host} answers: the request's `topic`, else its `reply` topic; errors without a `topic` go to its `error` topic.",
                                    name = md_text(&s.name),
                                    host = md_text(&h.name),
                                ),
                                "messages": {},
                            })
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                        );
                        let payload = self.schema_ref("reply".into(), "reply", reply_payload);
                        let key = self.message(
                            &ch,
                            format!("{base}.reply"),
                            json!({
                                "name": "reply",
                                "title": format!("{} answer", s.name),
                                "contentType": "application/json",
                                "payload": payload,
                            }),
                        );
                        (ch, key)
                    })
                    .clone();
                op["reply"] = json!({
                    "address": {
                        "location": "$message.payload#/topic",
                        "description": "the request's `topic`; without one, the service's `reply` topic"
                    },
                    "channel": {"$ref": format!("#/channels/{reply_ch}")},
                    "messages": [{"$ref": format!("#/channels/{reply_ch}/messages/{reply_key}")}],
                });
            }
            let op_id = self.ids.unique(format!("op.{entry}"));
            self.operations.insert(op_id, op);
        }
    }

    /// `$state` and `$description`: every agent's retained topics, one
    /// channel each with the host (and service) as parameters.
    fn agent_topics(&mut self, c: &Cluster, topics: &Topics) {
        let hosts: Vec<&str> = c.hosts.iter().map(|h| h.name.as_str()).collect();
        let mut services: Vec<&str> = c.services().map(|(_, s)| s.name.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        let host_param = json!({"description": "the host's name", "enum": hosts});
        let state = self.ids.unique("channel.agent.state".into());
        self.channels.insert(
            state.clone(),
            obj(json!({
                "address": topics.state("{host}"),
                "parameters": {"host": host_param},
                "description": "The host's liveness, retained: `online` when its agent connects, `offline` when it stops or (as its last will) dies; then the agent's session number (`online 1733587200123`), so that an older session's late last will can be told apart. Read the first word; agents before session numbers send the word alone.",
                "messages": {},
            })),
        );
        let state_msg = self.message(
            &state,
            "agent.state".into(),
            json!({
                "name": "state",
                "contentType": "text/plain",
                "payload": {"type": "string", "pattern": "^(online|offline)( [0-9]{1,20}( .*)?)?$"},
            }),
        );
        let description = self.ids.unique("channel.service.description".into());
        self.channels.insert(
            description.clone(),
            obj(json!({
                "address": topics.description("{host}", "{service}"),
                "parameters": {
                    "host": host_param,
                    "service": {"description": "the service's function name", "enum": services},
                },
                "description": "A service's self-description, retained; an empty payload removes the service.",
                "messages": {},
            })),
        );
        let description_msg = self.message(
            &description,
            "service.description".into(),
            json!({
                "name": "description",
                "contentType": "application/json",
                "payload": description_schema(),
            }),
        );
        for (id, ch, msg, text) in [
            ("op.agent.state", &state, &state_msg, "its host's state"),
            (
                "op.service.description",
                &description,
                &description_msg,
                "its self-description",
            ),
        ] {
            let op_id = self.ids.unique(id.into());
            self.operations.insert(
                op_id,
                json!({
                    "action": "send",
                    "channel": {"$ref": format!("#/channels/{ch}")},
                    "messages": [{"$ref": format!("#/channels/{ch}/messages/{msg}")}],
                    "summary": format!("every agent publishes {text}, retained"),
                    "bindings": {"mqtt": {"qos": 1, "retain": true, "bindingVersion": "0.2.0"}},
                }),
            );
        }
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// A self-description (docs/protocol.md section 4).
fn description_schema() -> Value {
    let interface = json!({
        "type": "object",
        "required": ["name", "topic", "type"],
        "properties": {
            "name": {"type": "string"},
            "topic": {"type": "string"},
            "type": {"type": "string", "enum": ["bool", "int", "float", "string", "json"]},
            "unit": {"type": "string"},
            "min": {"type": "number"},
            "max": {"type": "number"},
            "retained": {"type": "boolean"},
            "doc": {"type": "string"}
        },
        "additionalProperties": false
    });
    let list = json!({"type": "array", "items": interface});
    json!({
        "type": "object",
        "required": ["function", "interfaces"],
        "properties": {
            "function": {"type": "string"},
            "doc": {"type": "string"},
            "hostname": {"type": "string"},
            "interfaces": {
                "type": "object",
                "properties": {"inputs": list, "outputs": list, "functions": list, "controls": list},
                "additionalProperties": false
            },
            "health": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "alert"]},
                    "reason": {"type": "string"}
                }
            }
        }
    })
}

/// The AsyncAPI 3.0.0 document of `cluster`.
pub fn render(c: &Cluster, opts: &AsyncApiOptions) -> Value {
    let mut doc = Doc {
        channels: BTreeMap::new(),
        channel_of_topic: BTreeMap::new(),
        operations: Map::new(),
        messages: Map::new(),
        schemas: Map::new(),
        schema_ids: BTreeMap::new(),
        ids: Ids::default(),
    };
    // Channels are made in topic order, so that ids given out to clashing
    // topics do not depend on which service came first.
    let mut all_topics: Vec<&str> = c
        .services()
        .flat_map(|(_, s)| s.interfaces().into_iter().map(|(_, i)| i.topic.as_str()))
        .collect();
    all_topics.sort_unstable();
    for t in all_topics {
        doc.channel(t);
    }
    for (h, s) in c.services() {
        doc.service(h, s);
    }
    if let Some(topics) = &opts.topics {
        doc.agent_topics(c, topics);
    }
    let (online, offline, missing) = c.counts();
    // The big maps are moved in: `json!` would copy them through serde.
    let channels: Map<String, Value> = std::mem::take(&mut doc.channels)
        .into_iter()
        .map(|(id, ch)| (id, Value::Object(ch)))
        .collect();
    let mut components = Map::new();
    components.insert("schemas".into(), std::mem::take(&mut doc.schemas).into());
    components.insert("messages".into(), std::mem::take(&mut doc.messages).into());
    let mut out = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "rollcall cluster",
            "version": "1.0.0",
            "description": format!(
                "Every topic the services of this cluster describe, as their self-descriptions said at {}: {} hosts ({online} online, {offline} offline, {missing} missing), {} services. Written by rollcall (`rollcall docs` or the hub's dashboard).",
                utc(c.now_ms),
                c.hosts.len(),
                c.services().count()
            ),
            "x-generated-at-ms": c.now_ms,
        },
        "defaultContentType": "application/json",
    });
    out["channels"] = channels.into();
    out["operations"] = std::mem::take(&mut doc.operations).into();
    out["components"] = components.into();
    if let Some(broker) = &opts.broker {
        let host = if broker.host.contains(':') {
            format!("[{}]:{}", broker.host, broker.port)
        } else {
            format!("{}:{}", broker.host, broker.port)
        };
        out["servers"] = json!({"broker": {
            "host": host,
            "protocol": if broker.tls { "secure-mqtt" } else { "mqtt" },
            "description": "the broker the map was read from",
        }});
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_become_parameters_and_ids_stay_plain() {
        let (addr, params) = address("/+/system/#").unwrap();
        assert_eq!(addr, "/{level1}/system/{rest}");
        assert_eq!(params.keys().collect::<Vec<_>>(), vec!["level1", "rest"]);
        assert!(address("/a/{b}").is_none());
        assert_eq!(channel_base("/+/system/#"), "any.system.all");
        assert_eq!(channel_base("/"), "root");
        assert_eq!(sanitize("pi zero/°C"), "pi_zero__C");
    }

    #[test]
    fn ids_are_unique() {
        let mut ids = Ids::default();
        assert_eq!(ids.unique("a".into()), "a");
        assert_eq!(ids.unique("a".into()), "a-2");
        assert_eq!(ids.unique("a".into()), "a-3");
        // A base that looks like a suffixed one is not handed out twice.
        assert_eq!(ids.unique("a-4".into()), "a-4");
        assert_eq!(ids.unique("a".into()), "a-5");
        assert_eq!(ids.unique("a-4".into()), "a-4-2");
        // Many ids of one base stay cheap: each is found in one step.
        for n in 6..20_006 {
            assert_eq!(ids.unique("a".into()), format!("a-{n}"));
        }
    }
}
