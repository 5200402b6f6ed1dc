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
mod layout;
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
    let end = |e: &crate::map::Endpoint| EndView {
        host: e.host.clone(),
        service: e.service.clone(),
        topic: e.topic.clone(),
    };
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
                from: end(&e.from),
                to: end(&e.to),
                last_crossed_ms: e.last_crossed_ms,
                stale: e.stale,
            })
            .collect(),
        unfed: s.unfed.iter().map(end).collect(),
        unread: s.unread.iter().map(end).collect(),
        edge_stale_after_ms: s.edge_stale_after_ms,
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

/// What a document's size grows with, counted over the view the
/// generators draw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Weights {
    /// Hosts.
    pub hosts: usize,
    /// Services.
    pub services: usize,
    /// Interface entries.
    pub entries: usize,
    /// Bytes of the entries' names, topics, units and docs, and of host
    /// and service names.
    pub text: usize,
    /// Bytes of the entries' topics alone (AsyncAPI repeats each in
    /// channel, operation and message ids).
    pub topics: usize,
    /// Data-flow edges.
    pub edges: usize,
    /// Bytes of the edges' topics and names.
    pub edge_text: usize,
    /// Unfed inputs and unread outputs.
    pub wiring: usize,
    /// Bytes of their hosts, services and topics.
    pub wiring_text: usize,
}

impl Weights {
    /// Counts `c`.
    pub fn of(c: &Cluster) -> Weights {
        let mut w = Weights::default();
        for h in &c.hosts {
            w.hosts += 1;
            w.text += h.name.len() + h.ipaddr.as_ref().map_or(0, String::len);
            for s in &h.services {
                w.services += 1;
                w.text += s.name.len();
                let Some(d) = &s.description else { continue };
                w.text += d.doc.as_ref().map_or(0, String::len);
                for c in rollcall_proto::Category::ALL {
                    for i in d.interfaces.list(c) {
                        w.entries += 1;
                        w.topics += i.topic.len();
                        w.text += i.name.len()
                            + i.topic.len()
                            + i.unit.as_ref().map_or(0, String::len)
                            + i.doc.as_ref().map_or(0, String::len);
                    }
                }
            }
        }
        for e in c.unfed.iter().chain(&c.unread) {
            w.wiring += 1;
            w.wiring_text += e.host.len() + e.service.len() + e.topic.len();
        }
        for e in &c.edges {
            w.edges += 1;
            for end in [&e.from, &e.to] {
                w.edge_text += end.host.len() + end.service.len() + end.topic.len();
            }
        }
        w
    }
}

impl Format {
    /// About how many bytes the document of a cluster with `w` is, within a
    /// factor of two (fitted to rendered clusters of several shapes; the
    /// test `estimates_are_within_a_factor_of_two` holds it to that), so
    /// that one too large to serve is refused before it is built.
    pub fn estimate(self, w: &Weights) -> usize {
        let [
            per_host,
            per_service,
            per_entry,
            per_text,
            per_topic,
            per_edge,
            per_wiring,
        ] = match self {
            Format::Markdown => [180, 180, 44, 1, 0, 32, 16],
            Format::AsyncApi => [140, 0, 1110, 1, 5, 0, 0],
            Format::Svg => [450, 310, 0, 0, 0, 200, 2],
            Format::Dot => [90, 60, 0, 0, 0, 20, 2],
        };
        // The SVG and DOT name the unfed inputs only (in a tooltip).
        let wiring_text = match self {
            Format::AsyncApi => 0,
            Format::Markdown => w.wiring_text,
            Format::Svg | Format::Dot => w.wiring_text / 2,
        };
        let edge_text = if self == Format::AsyncApi {
            0
        } else {
            w.edge_text
        };
        [
            per_host * w.hosts,
            per_service * w.services,
            per_entry * w.entries,
            per_text * w.text,
            per_topic * w.topics,
            per_edge * w.edges,
            edge_text,
            per_wiring * w.wiring,
            wiring_text,
        ]
        .into_iter()
        .fold(0usize, usize::saturating_add)
    }

    /// The document, unless it would be, or is, more than `cap` bytes: then
    /// [`TooLarge`], without building a document whose estimate is over
    /// the cap.
    pub fn render_capped(
        self,
        snapshot: &MapSnapshot,
        options: &AsyncApiOptions,
        cap: usize,
    ) -> Result<String, TooLarge> {
        let c = cluster(snapshot);
        let estimate = self.estimate(&Weights::of(&c));
        if estimate > cap {
            return Err(TooLarge {
                format: self,
                bytes: estimate,
                cap,
                estimated: true,
            });
        }
        let text = match self {
            Format::Markdown => markdown::render(&c),
            Format::AsyncApi => {
                let doc = asyncapi::render(&c, options);
                let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
                text.push('\n');
                text
            }
            Format::Svg => svg::render(&c),
            Format::Dot => dot::render(&c),
        };
        if text.len() > cap {
            return Err(TooLarge {
                format: self,
                bytes: text.len(),
                cap,
                estimated: false,
            });
        }
        Ok(text)
    }
}

/// A document too large to serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} of this cluster {} {} bytes, more than the {cap} served; write it to a file with \
     `rollcall docs`",
    format.file_name(),
    if *estimated { "would be about" } else { "is" },
    bytes
)]
pub struct TooLarge {
    /// Which document.
    pub format: Format,
    /// Its size, or its estimated size.
    pub bytes: usize,
    /// The cap.
    pub cap: usize,
    /// Whether `bytes` is an estimate (the document was not built).
    pub estimated: bool,
}

#[cfg(test)]
mod estimates {
    use super::*;
    use crate::{ClusterMap, HostSeen, ScanReport, ServiceSeen};
    use rollcall_proto::{Interface, Interfaces, ValueType};

    fn cluster_of(hosts: usize, entries: usize, doc: usize, wild: bool) -> MapSnapshot {
        let mut seen: Vec<HostSeen> = (0..hosts)
            .map(|h| {
                let name = format!("host{h:05}");
                let list = |kind: &str| -> Vec<Interface> {
                    (0..entries)
                        .map(|i| {
                            Interface::new(
                                format!("{kind}{i}"),
                                format!("/{name}/svc/{kind}/{i}"),
                                ValueType::Float,
                            )
                            .unit("s")
                            .doc(&"d".repeat(doc))
                        })
                        .collect()
                };
                HostSeen {
                    hostname: name.clone(),
                    ipaddr: Some("198.18.0.1".into()),
                    extaddr: None,
                    t_ms: Some(1),
                    apps: None,
                    version: None,
                    services: vec![ServiceSeen {
                        function: "svc".into(),
                        inputs: None,
                        outputs: None,
                        control: None,
                        t_ms: 1,
                        interfaces: Some(Interfaces {
                            inputs: list("in"),
                            outputs: list("out"),
                            ..Interfaces::default()
                        }),
                        health: None,
                    }],
                }
            })
            .collect();
        if wild {
            seen.push(HostSeen {
                hostname: "logger".into(),
                ipaddr: None,
                extaddr: None,
                t_ms: Some(1),
                apps: None,
                version: None,
                services: vec![ServiceSeen {
                    function: "log".into(),
                    inputs: Some("#".into()),
                    outputs: None,
                    control: None,
                    t_ms: 1,
                    interfaces: None,
                    health: None,
                }],
            });
        }
        let mut map = ClusterMap::new();
        map.apply_scan(
            &ScanReport {
                id: 1,
                elapsed_ms: 0,
                window_ms: 0,
                other_ids: 0,
                duplicates: 0,
                lost_in_session: 0,
                digests: Default::default(),
                hosts: seen,
            },
            1,
        );
        map.snapshot(2)
    }

    /// Clusters of several shapes: the estimate is within a factor of two
    /// of each document's size, and `render_capped` refuses by it.
    #[test]
    fn estimates_are_within_a_factor_of_two() {
        for (h, e, d, w) in [
            (100, 1, 0, false),
            (100, 5, 0, false),
            (100, 5, 100, false),
            (300, 2, 20, false),
            (100, 3, 10, true),
            (10, 40, 10, false),
        ] {
            let snap = cluster_of(h, e, d, w);
            let c = cluster(&snap);
            let wt = Weights::of(&c);
            let opts = AsyncApiOptions {
                broker: None,
                topics: Some(rollcall_proto::Topics::default()),
            };
            for f in Format::ALL {
                let size = f.render(&snap, &opts).len();
                let estimate = f.estimate(&wt);
                assert!(
                    estimate <= 2 * size && size <= 2 * estimate,
                    "{f:?} {h} {e} {d} {w}: {size} bytes, estimated {estimate}"
                );
                let cap = estimate.max(size);
                let served = f.render_capped(&snap, &opts, cap).map(|t| t.len());
                assert_eq!(served, Ok(size), "{f:?}");
                // Refused before it is built when the estimate is over...
                let refused = f.render_capped(&snap, &opts, size / 4).unwrap_err();
                assert!(refused.estimated, "{refused}");
                // ...and after, when the document is.
                assert!(f.render_capped(&snap, &opts, cap - 1).is_err());
            }
        }
    }
}
