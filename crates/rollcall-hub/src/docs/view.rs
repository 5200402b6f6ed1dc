//! What the generators draw from: the map's snapshot put in one fixed order
//! (hosts, services, interfaces and edges sorted), so every output is the
//! same for the same cluster and diffs well from one run to the next.

use rollcall_proto::{Category, Description, Health, Interface};

/// Whether a host is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Its agent is connected, or it answered the latest roll-call.
    Online,
    /// Its agent said it stopped, or its last will did.
    Offline,
    /// It was seen before and has not been heard from lately.
    Missing,
}

impl Status {
    /// The word the map uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Missing => "missing",
        }
    }
}

/// One service of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    /// Its function name.
    pub name: String,
    /// Whether it answered its host's latest roll-call (or published its
    /// description since).
    pub present: bool,
    /// Its health, where known.
    pub health: Option<Health>,
    /// Its self-description, where known.
    pub description: Option<Description>,
}

impl ServiceView {
    /// Every interface, by list (inputs, outputs, functions, controls), then
    /// by topic and name.
    pub fn interfaces(&self) -> Vec<(Category, &Interface)> {
        let Some(d) = &self.description else {
            return Vec::new();
        };
        let mut out: Vec<(Category, &Interface)> = Category::ALL
            .into_iter()
            .flat_map(|c| d.interfaces.list(c).iter().map(move |i| (c, i)))
            .collect();
        out.sort_by(|(ca, a), (cb, b)| {
            (category_rank(*ca), &a.topic, &a.name).cmp(&(category_rank(*cb), &b.topic, &b.name))
        });
        out
    }

    /// The health the service reported last (in an answer or its
    /// description), else its description's.
    pub fn health(&self) -> Option<&Health> {
        self.health
            .as_ref()
            .or_else(|| self.description.as_ref()?.health.as_ref())
    }
}

/// The order the protocol lists the four lists in.
pub fn category_rank(c: Category) -> usize {
    Category::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

/// One GPIO pin claimed by a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinView {
    /// The BCM pin number.
    pub pin: u32,
    /// The service claiming it.
    pub service: String,
    /// The entry's name in that service.
    pub name: String,
    /// How the service uses it: `driven` (an input entry, the topic that
    /// sets it) or `read` (an output entry).
    pub role: String,
}

/// One host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    /// Its name.
    pub name: String,
    /// Its address, as its agent reported it.
    pub ipaddr: Option<String>,
    /// Whether it is there.
    pub status: Status,
    /// When it was last heard from, unix ms.
    pub last_seen_ms: Option<u64>,
    /// Its services, by name.
    pub services: Vec<ServiceView>,
    /// Its pin map, by pin.
    pub pins: Vec<PinView>,
    /// Pins claimed more than once, each with a sentence saying by whom.
    pub conflicts: Vec<(u32, String)>,
}

/// One end of a data-flow edge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndView {
    /// The host.
    pub host: String,
    /// The service.
    pub service: String,
    /// The topic or filter as that service described it.
    pub topic: String,
}

/// Data flows from one service's output to another's input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeView {
    /// The publishing side.
    pub from: EndView,
    /// The consuming side.
    pub to: EndView,
    /// When a message last crossed it, unix ms.
    pub last_crossed_ms: Option<u64>,
    /// No message crossed it for `edge_stale_after_ms`.
    pub stale: bool,
}

/// The whole cluster, sorted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cluster {
    /// When the snapshot was taken, unix ms.
    pub now_ms: u64,
    /// Every host, by name.
    pub hosts: Vec<HostView>,
    /// Every edge, by (from, to).
    pub edges: Vec<EdgeView>,
    /// Inputs no described output feeds (commands aside), sorted.
    pub unfed: Vec<EndView>,
    /// Outputs no described input reads, sorted.
    pub unread: Vec<EndView>,
    /// How long an edge may go without a message before it is stale, ms.
    pub edge_stale_after_ms: u64,
}

impl Cluster {
    /// Puts everything in its order.
    pub fn sorted(mut self) -> Self {
        self.hosts.sort_by(|a, b| a.name.cmp(&b.name));
        for h in &mut self.hosts {
            h.services.sort_by(|a, b| a.name.cmp(&b.name));
            h.pins
                .sort_by(|a, b| (a.pin, &a.service, &a.name).cmp(&(b.pin, &b.service, &b.name)));
            h.conflicts.sort();
        }
        self.edges.sort();
        self.edges.dedup();
        self.unfed.sort();
        self.unfed.dedup();
        self.unread.sort();
        self.unread.dedup();
        self
    }

    /// The topics of `service` on `host` that nothing feeds, in order.
    pub fn unfed_of(&self, host: &str, service: &str) -> Vec<&str> {
        self.unfed
            .iter()
            .filter(|e| e.host == host && e.service == service)
            .map(|e| e.topic.as_str())
            .collect()
    }

    /// How many hosts have each status: (online, offline, missing).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |s| self.hosts.iter().filter(|h| h.status == s).count();
        (n(Status::Online), n(Status::Offline), n(Status::Missing))
    }

    /// Every service of every host.
    pub fn services(&self) -> impl Iterator<Item = (&HostView, &ServiceView)> {
        self.hosts
            .iter()
            .flat_map(|h| h.services.iter().map(move |s| (h, s)))
    }

    /// How many topics the cluster's services describe, counting a topic
    /// that several services use once.
    pub fn topic_count(&self) -> usize {
        let mut topics: Vec<&str> = self
            .services()
            .flat_map(|(_, s)| s.interfaces().into_iter().map(|(_, i)| i.topic.as_str()))
            .collect();
        topics.sort_unstable();
        topics.dedup();
        topics.len()
    }
}

/// Every edge between one pair of services, drawn as one arrow: a logger on
/// `/+/system/#` takes five topics from each host's `system` service, and
/// five arrows between the same two boxes say no more than one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow<'a> {
    /// The publishing service's host.
    pub from_host: &'a str,
    /// The publishing service.
    pub from_service: &'a str,
    /// The consuming service's host.
    pub to_host: &'a str,
    /// The consuming service.
    pub to_service: &'a str,
    /// The edges, in their sorted order.
    pub edges: Vec<&'a EdgeView>,
}

impl Flow<'_> {
    /// When a message last crossed any of its edges.
    pub fn last_crossed_ms(&self) -> Option<u64> {
        self.edges.iter().filter_map(|e| e.last_crossed_ms).max()
    }

    /// Every one of its edges is stale: nothing moves between the two.
    pub fn stale(&self) -> bool {
        self.edges.iter().all(|e| e.stale)
    }

    /// The arrow's label: the topic of a single edge (`published → filter`
    /// where the consumer's filter differs), else how many topics and the
    /// consumer's filter when they share one.
    pub fn label(&self) -> String {
        let one = |e: &EdgeView| {
            if e.from.topic == e.to.topic {
                e.from.topic.clone()
            } else {
                format!("{} → {}", e.from.topic, e.to.topic)
            }
        };
        match self.edges.as_slice() {
            [e] => one(e),
            [first, rest @ ..] if rest.iter().all(|e| e.to.topic == first.to.topic) => {
                format!("{} topics → {}", self.edges.len(), first.to.topic)
            }
            _ => format!("{} topics", self.edges.len()),
        }
    }

    /// Every edge on its own line, for a tooltip.
    pub fn detail(&self) -> String {
        let lines: Vec<String> = self
            .edges
            .iter()
            .map(|e| format!("{} → {}", e.from.topic, e.to.topic))
            .collect();
        format!(
            "{}/{} → {}/{}\n{}",
            self.from_host,
            self.from_service,
            self.to_host,
            self.to_service,
            lines.join("\n")
        )
    }
}

impl Cluster {
    /// The edges grouped by (publishing service, consuming service), in order.
    pub fn flows(&self) -> Vec<Flow<'_>> {
        let mut pairs: std::collections::BTreeMap<(&str, &str, &str, &str), Vec<&EdgeView>> =
            std::collections::BTreeMap::new();
        for e in &self.edges {
            let key = (
                e.from.host.as_str(),
                e.from.service.as_str(),
                e.to.host.as_str(),
                e.to.service.as_str(),
            );
            pairs.entry(key).or_default().push(e);
        }
        pairs
            .into_iter()
            .map(
                |((from_host, from_service, to_host, to_service), edges)| Flow {
                    from_host,
                    from_service,
                    to_host,
                    to_service,
                    edges,
                },
            )
            .collect()
    }
}
