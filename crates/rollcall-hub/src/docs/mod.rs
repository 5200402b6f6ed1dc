//! Documentation the cluster writes itself: pure functions from a
//! [`MapSnapshot`] to a Markdown page, an AsyncAPI 3.0.0 document, an SVG
//! picture and Graphviz DOT. No I/O and no clock (the snapshot's `now_ms` is
//! the time written), so `rollcall docs` writes them to files, the dashboard
//! serves them over HTTP, and the tests compare them, all from the same code.
//!
//! Everything a generator draws comes through [`view`], which sorts the
//! snapshot once, so the same cluster always gives the same bytes.

mod asyncapi;
mod dot;
pub mod escape;
mod markdown;
mod svg;
pub mod view;

use std::str::FromStr;

use rollcall_proto::{Description, Interface, Interfaces, ValueType};

use crate::map::{HostStatus, MapSnapshot, ServiceSnapshot};

pub use asyncapi::AsyncApiOptions;
use view::{Cluster, EdgeView, EndView, HostView, PinView, ServiceView, Status};

/// The Markdown page: the cluster, each host (address, status, last seen,
/// pin map and conflicts), each service (function, health, interfaces),
/// and the data-flow edges.
pub fn markdown(snapshot: &MapSnapshot) -> String {
    markdown::render(&cluster(snapshot))
}

/// The AsyncAPI 3.0.0 document of every topic the cluster's services
/// describe, without a server or the agents' own topics (see
/// [`asyncapi_with`]).
pub fn asyncapi(snapshot: &MapSnapshot) -> serde_json::Value {
    asyncapi_with(snapshot, &AsyncApiOptions::default())
}

/// The AsyncAPI 3.0.0 document, with the broker as its server and, given
/// the deployment's topics, the agents' `$state` and `$description` topics.
pub fn asyncapi_with(snapshot: &MapSnapshot, options: &AsyncApiOptions) -> serde_json::Value {
    asyncapi::render(&cluster(snapshot), options)
}

/// The SVG picture: hosts as boxes holding their services, data-flow edges
/// as arrows labelled with the topic. Needs no script, font or stylesheet.
pub fn svg(snapshot: &MapSnapshot) -> String {
    svg::render(&cluster(snapshot))
}

/// Graphviz DOT: a cluster subgraph per host, an edge per data flow.
pub fn dot(snapshot: &MapSnapshot) -> String {
    dot::render(&cluster(snapshot))
}

/// One of the four outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `cluster.md`
    Markdown,
    /// `asyncapi.json`
    AsyncApi,
    /// `cluster.svg`
    Svg,
    /// `cluster.dot`
    Dot,
}

impl Format {
    /// All four, in the order they are written.
    pub const ALL: [Format; 4] = [Format::Markdown, Format::AsyncApi, Format::Svg, Format::Dot];

    /// The file it is written to.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Markdown => "cluster.md",
            Format::AsyncApi => "asyncapi.json",
            Format::Svg => "cluster.svg",
            Format::Dot => "cluster.dot",
        }
    }

    /// Its media type, for serving it over HTTP.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::AsyncApi => "application/json",
            Format::Svg => "image/svg+xml",
            Format::Dot => "text/vnd.graphviz; charset=utf-8",
        }
    }

    /// The short name `--format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Markdown => "md",
            Format::AsyncApi => "asyncapi",
            Format::Svg => "svg",
            Format::Dot => "dot",
        }
    }

    /// The document, as text (AsyncAPI pretty-printed JSON, with a final newline).
    pub fn render(self, snapshot: &MapSnapshot, options: &AsyncApiOptions) -> String {
        match self {
            Format::Markdown => markdown(snapshot),
            Format::AsyncApi => {
                let doc = asyncapi_with(snapshot, options);
                let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
                text.push('\n');
                text
            }
            Format::Svg => svg(snapshot),
            Format::Dot => dot(snapshot),
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Ok(Format::Markdown),
            "asyncapi" | "json" => Ok(Format::AsyncApi),
            "svg" => Ok(Format::Svg),
            "dot" | "graphviz" => Ok(Format::Dot),
            _ => Err(format!(
                "unknown format `{s}`: one of md, asyncapi, svg, dot"
            )),
        }
    }
}

/// The snapshot in the generators' order.
pub fn cluster(s: &MapSnapshot) -> Cluster {
    Cluster {
        now_ms: s.now_ms,
        hosts: s
            .hosts
            .iter()
            .map(|h| HostView {
                name: h.name.clone(),
                ipaddr: h.ipaddr.clone(),
                status: match h.status {
                    HostStatus::Online => Status::Online,
                    HostStatus::Offline => Status::Offline,
                    HostStatus::Missing => Status::Missing,
                },
                last_seen_ms: Some(h.last_seen_ms).filter(|ms| *ms > 0),
                services: h
                    .services
                    .iter()
                    .map(|s| ServiceView {
                        name: s.name.clone(),
                        present: s.present,
                        health: s.health.clone(),
                        description: with_flat_fields(s),
                    })
                    .collect(),
                pins: h
                    .pins
                    .iter()
                    .map(|p| PinView {
                        pin: p.pin,
                        service: p.service.clone(),
                        name: p.name.clone(),
                        role: p.direction.clone(),
                    })
                    .collect(),
                conflicts: h
                    .pin_conflicts
                    .iter()
                    .map(|c| (c.pin, format!("by {}", c.claimed_by.join(", "))))
                    .collect(),
            })
            .collect(),
        edges: s
            .edges
            .iter()
            .map(|e| EdgeView {
                from: EndView {
                    host: e.from.host.clone(),
                    service: e.from.service.clone(),
                    topic: e.from.topic.clone(),
                },
                to: EndView {
                    host: e.to.host.clone(),
                    service: e.to.service.clone(),
                    topic: e.to.topic.clone(),
                },
            })
            .collect(),
    }
    .sorted()
}

/// A service's description, or, for one that answered with only the notes'
/// flat fields (`"inputs":"/p"`, as a minimal foreign service may), one made
/// from them: each field an entry of type `json` named after its list, as
/// the map takes them for data-flow edges. So its topics are documented
/// wherever its edges are drawn.
fn with_flat_fields(s: &ServiceSnapshot) -> Option<Description> {
    let described = s.description.as_ref().is_some_and(|d| {
        let i = &d.interfaces;
        !(i.inputs.is_empty()
            && i.outputs.is_empty()
            && i.functions.is_empty()
            && i.controls.is_empty())
    });
    if described || (s.inputs.is_none() && s.outputs.is_none() && s.control.is_none()) {
        return s.description.clone();
    }
    let entry = |list: &str, topic: &Option<String>| -> Vec<Interface> {
        topic
            .iter()
            .map(|t| {
                Interface::new(list, t.clone(), ValueType::Json).doc(&format!(
                    "from the answer's flat `{list}` field; no type described"
                ))
            })
            .collect()
    };
    let mut d = s.description.clone().unwrap_or_else(|| Description {
        function: s.name.clone(),
        doc: None,
        interfaces: Interfaces::default(),
        health: s.health.clone(),
    });
    d.interfaces = Interfaces {
        inputs: entry("inputs", &s.inputs),
        outputs: entry("outputs", &s.outputs),
        functions: Vec::new(),
        controls: entry("control", &s.control),
    };
    Some(d)
}
