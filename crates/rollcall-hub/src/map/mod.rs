//! The cluster map: every host and service the hub has heard of, built from
//! roll-call answers, retained `$state`s and `$description`s, and the values
//! services publish; who is online, offline or missing; data-flow edges and
//! GPIO pin maps. Pure: every time is an argument, nothing here does I/O, so
//! the whole lifecycle is tested with numbers.

mod budget;
mod edges;
mod pins;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rollcall_proto::topic::{MAX_TOPIC, check_name, matches};
use rollcall_proto::{
    Answer, Description, Health, HostState, Interface, Interfaces, Liveness, ProtoError, Topics,
    json,
};
use serde::Serialize;
use thiserror::Error;

use crate::{HostSeen, ScanReport, ServiceSeen};

pub use edges::{Edge, Endpoint, filters_overlap};
pub use pins::{PinConflict, PinMap, PinUse};
pub use snapshot::{HostSnapshot, HostStatus, MapSnapshot, ServiceSnapshot, ValueRecord};

/// How long the map keeps what it has not heard about, and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapConfig {
    /// An online host not heard from (answer or `$state` `online`) for
    /// longer than this is marked missing.
    pub stale_after_ms: u64,
    /// A host offline or missing for longer than this is dropped.
    pub forget_after_ms: u64,
    /// The most hosts the map holds; more are refused, so a flood of made-up
    /// `$state` topics cannot exhaust memory.
    pub max_hosts: usize,
    /// The most services one host may have in the map.
    pub max_services: usize,
    /// The most value topics one service may have (a wildcard output filter
    /// could otherwise collect any number).
    pub max_values: usize,
    /// The most bytes the map may hold, by its own estimate (see
    /// [`ClusterMap::bytes`]). Past it, hosts never seen answering a
    /// roll-call are evicted, least recently heard from first; a change that
    /// still does not fit is refused. Hosts that answered are never evicted.
    pub max_bytes: usize,
    /// A data-flow edge no message crossed for this long is stale: its last
    /// message is older, or none came in this long of following the
    /// publisher (see [`Edge::stale`]).
    pub edge_stale_after_ms: u64,
}

/// The default [`MapConfig::edge_stale_after_ms`]: ten minutes, longer
/// than any built-in service's refresh (the DHT22 and the system service
/// publish every few seconds to a minute), so a stale edge is a link that
/// stopped, not a slow sensor. Outputs published only on change (a GPIO
/// input, a command) may well be quiet for longer: for them a stale edge
/// says "nothing happened", and the tooltip says since when.
pub const DEFAULT_EDGE_STALE_AFTER_MS: u64 = 600_000;

/// The default [`MapConfig::max_bytes`]: 16 MiB, room for about 2,000
/// hosts described as the built-in services describe themselves (a host
/// with `system` and `gpio` is about 7.5 kB), and little enough for a
/// Raspberry Pi with 512 MB: with 20,000 made-up hosts the release hub
/// peaked at 102 MB (BENCHMARKS.md).
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

impl MapConfig {
    /// The defaults, with `stale_after` long enough for roll-calls `every`
    /// apart that each wait up to `wait`: three intervals and a wait, and
    /// at least the default 30 s, so that a host answering every roll-call
    /// never goes stale between them.
    pub fn for_rollcalls(every: std::time::Duration, wait: std::time::Duration) -> Self {
        let span = every.saturating_mul(3).saturating_add(wait).as_millis();
        let default = MapConfig::default();
        MapConfig {
            stale_after_ms: u64::try_from(span)
                .unwrap_or(u64::MAX)
                .max(default.stale_after_ms),
            ..default
        }
    }
}

impl Default for MapConfig {
    /// Missing after 30 s unheard (three of `rollcall hub`'s default 10 s
    /// roll-calls), forgotten after an hour, at most 100,000 hosts of at most
    /// 256 services with 1024 value topics each, and [`DEFAULT_MAX_BYTES`]
    /// in all; edges stale after [`DEFAULT_EDGE_STALE_AFTER_MS`].
    fn default() -> Self {
        MapConfig {
            stale_after_ms: 30_000,
            forget_after_ms: 3_600_000,
            max_hosts: 100_000,
            max_services: 256,
            max_values: 1024,
            max_bytes: DEFAULT_MAX_BYTES,
            edge_stale_after_ms: DEFAULT_EDGE_STALE_AFTER_MS,
        }
    }
}

/// A change the map noticed. Serialised with its kind in `event`:
/// `{"event":"host_offline","host":"pizero1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MapEvent {
    /// A host the map did not know, with the status it starts in.
    HostAppeared {
        /// The host.
        host: String,
        /// Its first status.
        status: HostStatus,
    },
    /// A known host is online again (it answered, or `$state` `online`).
    HostOnline {
        /// The host.
        host: String,
    },
    /// Its address, external address, services list or version changed
    /// (from an answer).
    HostChanged {
        /// The host.
        host: String,
    },
    /// Its `$state` says `offline`.
    HostOffline {
        /// The host.
        host: String,
    },
    /// It missed a roll-call, or was not heard from for `stale_after`.
    HostMissing {
        /// The host.
        host: String,
    },
    /// Offline or missing for `forget_after`: dropped from the map.
    HostExpired {
        /// The host.
        host: String,
    },
    /// Never seen answering a roll-call, and dropped from the map to make
    /// room within its byte budget ([`MapConfig::max_bytes`]).
    HostEvicted {
        /// The host.
        host: String,
    },
    /// A service answered or was described for the first time, or again
    /// after missing.
    ServiceAppeared {
        /// Its host.
        host: String,
        /// The service.
        service: String,
    },
    /// Its host answered a roll-call and the service did not.
    ServiceMissing {
        /// Its host.
        host: String,
        /// The service.
        service: String,
    },
    /// Its `$description` was cleared (an empty retained payload): gone.
    ServiceRemoved {
        /// Its host.
        host: String,
        /// The service.
        service: String,
    },
    /// Its description (retained, or from its answer) is new or different.
    DescriptionChanged {
        /// Its host.
        host: String,
        /// The service.
        service: String,
    },
    /// It reported a different health.
    HealthChanged {
        /// Its host.
        host: String,
        /// The service.
        service: String,
        /// The new health.
        health: Option<Health>,
    },
    /// A new value on one of its output topics.
    ValueChanged {
        /// Its host.
        host: String,
        /// The service.
        service: String,
        /// The topic it arrived on.
        topic: String,
        /// The value.
        value: ValueRecord,
    },
}

impl MapEvent {
    /// The host the event is about.
    pub fn host(&self) -> &str {
        match self {
            MapEvent::HostAppeared { host, .. }
            | MapEvent::HostOnline { host }
            | MapEvent::HostChanged { host }
            | MapEvent::HostOffline { host }
            | MapEvent::HostMissing { host }
            | MapEvent::HostExpired { host }
            | MapEvent::HostEvicted { host }
            | MapEvent::ServiceAppeared { host, .. }
            | MapEvent::ServiceMissing { host, .. }
            | MapEvent::ServiceRemoved { host, .. }
            | MapEvent::DescriptionChanged { host, .. }
            | MapEvent::HealthChanged { host, .. }
            | MapEvent::ValueChanged { host, .. } => host,
        }
    }
}

/// Why a message was not taken into the map. The map is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    /// The topic names a host or service that is not a valid name.
    #[error("`{topic}`: {reason}")]
    BadName {
        /// The topic.
        topic: String,
        /// Why the name is refused.
        reason: String,
    },
    /// A `$state` that is neither `online` nor `offline` (with or without a
    /// session number).
    #[error(
        "`{topic}`: a $state is `online` or `offline`, perhaps with a session number, not {payload:?}"
    )]
    BadState {
        /// The topic.
        topic: String,
        /// The start of the payload.
        payload: String,
    },
    /// A `$description` that is not a description of that service.
    #[error("`{topic}`: not a service description: {reason}")]
    BadDescription {
        /// The topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// A value payload that cannot be read (too large, not UTF-8, too deep).
    #[error("`{topic}`: unreadable value: {reason}")]
    BadValue {
        /// The topic.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// The map is full.
    #[error("the map holds its maximum of {max} hosts; `{host}` is not added")]
    TooManyHosts {
        /// The refused host.
        host: String,
        /// [`MapConfig::max_hosts`].
        max: usize,
    },
    /// The change does not fit in the map's byte budget, even with every
    /// host that never answered a roll-call evicted.
    #[error(
        "the map is at its budget of {max_bytes} bytes with hosts that answered roll-calls; \
         `{host}` is not changed"
    )]
    OverBudget {
        /// The host the change was for.
        host: String,
        /// [`MapConfig::max_bytes`].
        max_bytes: usize,
    },
    /// The host has as many services as the map keeps.
    #[error("host `{host}` has the maximum of {max} services; `{service}` is not added")]
    TooManyServices {
        /// The host.
        host: String,
        /// The refused service.
        service: String,
        /// [`MapConfig::max_services`].
        max: usize,
    },
}

impl MapError {
    /// A short label for metrics: `bad_name`, `bad_state`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            MapError::BadName { .. } => "bad_name",
            MapError::BadState { .. } => "bad_state",
            MapError::BadDescription { .. } => "bad_description",
            MapError::BadValue { .. } => "bad_value",
            MapError::TooManyHosts { .. } => "too_many_hosts",
            MapError::OverBudget { .. } => "over_budget",
            MapError::TooManyServices { .. } => "too_many_services",
        }
    }
}

/// One service in the map.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    /// Its function name.
    pub name: String,
    /// It answered its host's latest roll-call, or published its
    /// `$description` since (a roll-call its host answers without it makes
    /// it missing).
    pub present: bool,
    /// Its latest health.
    pub health: Option<Health>,
    /// Its retained `$description`.
    pub description: Option<Description>,
    /// Its latest roll-call answer.
    pub answered: Option<ServiceSeen>,
    /// When it was last described or answered.
    pub last_seen_ms: u64,
    /// The latest value on each output topic.
    pub values: BTreeMap<String, ValueRecord>,
    /// When the map first heard of it: an edge from it is stale only once
    /// the hub has followed its outputs for `edge_stale_after_ms`.
    followed_since_ms: u64,
    /// The output topics (or filters) it is indexed under.
    output_topics: Vec<String>,
    /// The filters the hub subscribes to for its values.
    subscribed: Vec<String>,
    /// Its bytes but its values' ([`budget::service_bytes`]).
    bytes: usize,
    /// Its values' bytes.
    values_bytes: usize,
}

impl ServiceRecord {
    fn new(name: &str, now_ms: u64) -> Self {
        ServiceRecord {
            name: name.to_owned(),
            present: false,
            health: None,
            description: None,
            answered: None,
            last_seen_ms: now_ms,
            values: BTreeMap::new(),
            followed_since_ms: now_ms,
            output_topics: Vec::new(),
            subscribed: Vec::new(),
            bytes: 0,
            values_bytes: 0,
        }
    }

    /// Its interfaces: the retained description's, else its answer's.
    pub fn interfaces(&self) -> Option<&Interfaces> {
        self.description
            .as_ref()
            .map(|d| &d.interfaces)
            .or_else(|| self.answered.as_ref()?.interfaces.as_ref())
    }

    /// The best description known: the retained one, else one made from
    /// its answer (function, interfaces, health).
    pub fn effective_description(&self) -> Option<Description> {
        if let Some(d) = &self.description {
            return Some(d.clone());
        }
        let seen = self.answered.as_ref()?;
        Some(Description {
            function: self.name.clone(),
            doc: None,
            interfaces: seen.interfaces.clone().unwrap_or_default(),
            health: seen.health.clone(),
        })
    }

    /// The topics it publishes: its outputs, or its flat `outputs` field
    /// when it described no interfaces.
    fn outputs(&self) -> Vec<String> {
        self.topics(|i| &i.outputs, |a| &a.outputs)
    }

    /// The topics it consumes, likewise.
    fn inputs(&self) -> Vec<String> {
        self.topics(|i| &i.inputs, |a| &a.inputs)
    }

    /// One list of its interfaces' topics, or the matching flat field of
    /// its answer when it described no interfaces; sorted, usable ones once.
    fn topics(
        &self,
        list: impl Fn(&Interfaces) -> &Vec<Interface>,
        flat: impl Fn(&ServiceSeen) -> &Option<String>,
    ) -> Vec<String> {
        topics_of(
            self.description.as_ref(),
            self.answered.as_ref(),
            list,
            flat,
        )
    }
}

/// [`ServiceRecord::topics`] of a service described by `description` and
/// `answered`, which need not be in the map yet (so that a change can be
/// weighed before it is made).
fn topics_of(
    description: Option<&Description>,
    answered: Option<&ServiceSeen>,
    list: impl Fn(&Interfaces) -> &Vec<Interface>,
    flat: impl Fn(&ServiceSeen) -> &Option<String>,
) -> Vec<String> {
    let interfaces = description
        .map(|d| &d.interfaces)
        .or_else(|| answered?.interfaces.as_ref());
    let mut out: Vec<String> = match interfaces {
        Some(i) => list(i).iter().map(|e| e.topic.clone()).collect(),
        None => answered.and_then(|a| flat(a).clone()).into_iter().collect(),
    };
    out.retain(|t| usable_filter(t));
    out.sort();
    out.dedup();
    out
}

/// Whether `f` can be subscribed to: a non-empty topic or filter without
/// NUL, `#` only as a whole last level, `+` only as a whole level.
fn usable_filter(f: &str) -> bool {
    if f.is_empty() || f.len() > MAX_TOPIC || f.contains('\0') || f.starts_with('$') {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    levels
        .iter()
        .enumerate()
        .all(|(i, l)| (*l == "#" && i + 1 == levels.len()) || *l == "+" || !l.contains(['#', '+']))
}

/// Whether an input topic is a command: the protocol's
/// `/{host}/{app}/set/{item}` (or `/{host}/set/{app}/...`), which people,
/// `rollcall set` and the dashboard write. Those are not data-flow inputs:
/// nobody is expected to describe an output feeding them, so they are never
/// flagged unfed (an output that does feed one still makes an edge).
pub fn is_command(topic: &str) -> bool {
    topic.split('/').take(4).any(|level| level == "set")
}

/// The edges of the map and what is wired wrong ([`ClusterMap::wiring`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wiring {
    /// Every data-flow edge, sorted.
    pub edges: Vec<Edge>,
    /// Inputs (not commands, see [`is_command`]) that no described output
    /// matches: a warning, something the service waits for that nothing
    /// sends. In host, service, topic order.
    pub unfed: Vec<Endpoint>,
    /// Outputs no described input matches: informational (a sensor read by
    /// people, or by a program that does not describe itself). In order.
    pub unread: Vec<Endpoint>,
}

/// One host in the map.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRecord {
    /// Its name.
    pub name: String,
    /// Its address, from its latest answer.
    pub ipaddr: Option<String>,
    /// Its external address, from its latest answer.
    pub extaddr: Option<String>,
    /// Its agent's version.
    pub version: Option<String>,
    /// The services its agent listed.
    pub apps: Option<Vec<String>>,
    /// Online, offline or missing.
    pub status: HostStatus,
    /// When `status` last changed.
    pub status_since_ms: u64,
    /// When it was last heard from: an answer, or `$state` `online`.
    pub last_seen_ms: u64,
    /// The session number of its latest `$state` `online` (`None` when that
    /// had none): an `offline` of an older session is a stale last will.
    pub session: Option<u64>,
    /// Its services, by name.
    pub services: BTreeMap<String, ServiceRecord>,
    /// It answered one of the hub's roll-calls: it is never evicted to
    /// make room (only forgotten after `forget_after`).
    pub proven: bool,
    /// When anything about it was last taken in: the eviction order.
    heard_ms: u64,
    /// Its bytes, its services' included ([`budget`]).
    bytes: usize,
}

impl HostRecord {
    /// The map's estimate of the memory it holds, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes what an answer says about the host (what it leaves out stays);
    /// true when that changed something.
    fn learn(
        &mut self,
        ipaddr: &Option<String>,
        extaddr: &Option<String>,
        apps: &Option<Vec<String>>,
        version: &Option<String>,
    ) -> bool {
        fn take<T: Clone + PartialEq>(field: &mut Option<T>, new: &Option<T>) -> bool {
            let changed = new.is_some() && field != new;
            if changed {
                field.clone_from(new);
            }
            changed
        }
        // Every field, not the first change only.
        let changes = [
            take(&mut self.ipaddr, ipaddr),
            take(&mut self.extaddr, extaddr),
            take(&mut self.apps, apps),
            take(&mut self.version, version),
        ];
        changes.contains(&true)
    }
}

/// What an answer tells about its host: address, external address, apps
/// and version (see [`HostRecord::learn`]).
type Learned<'a> = (
    &'a Option<String>,
    &'a Option<String>,
    &'a Option<Vec<String>>,
    &'a Option<String>,
);

/// How many of what the map holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapCounts {
    /// Hosts online.
    pub hosts_online: usize,
    /// Hosts offline.
    pub hosts_offline: usize,
    /// Hosts missing.
    pub hosts_missing: usize,
    /// Services, present or not.
    pub services: usize,
    /// Services present.
    pub services_present: usize,
    /// Services whose latest health is an alert.
    pub services_alert: usize,
    /// Output topics with a value.
    pub values: usize,
    /// Answers or hosts refused because the map was full (hosts, services
    /// or bytes).
    pub refused: u64,
    /// Hosts evicted to keep within the byte budget.
    pub evicted: u64,
    /// The map's bytes, by its estimate.
    pub bytes: usize,
    /// The unproven hosts' part of `bytes`.
    pub unproven_bytes: usize,
    /// [`MapConfig::max_bytes`].
    pub max_bytes: usize,
}

/// The cluster map. Every method takes the time it runs at, unix ms.
#[derive(Debug, Clone, Default)]
pub struct ClusterMap {
    config: MapConfig,
    hosts: BTreeMap<String, HostRecord>,
    /// Output topic → the (host, service) pairs publishing on it.
    outputs: HashMap<String, Vec<(String, String)>>,
    /// Output filters with wildcards → their (host, service) pairs; rare,
    /// so a value topic is matched against each.
    wild_outputs: BTreeMap<String, Vec<(String, String)>>,
    /// Value subscriptions → how many services need each.
    subscriptions: HashMap<String, usize>,
    /// Subscriptions that became needed or unneeded since the hub last asked.
    watch_changes: Vec<WatchChange>,
    refused: u64,
    /// The bytes held and the eviction order.
    budget: budget::Budget,
    /// Moves on every change but a new value: what the generated documents
    /// are built from.
    generation: u64,
}

/// A change to what the hub must subscribe to for values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchChange {
    /// A service now publishes on this topic (or filter).
    Subscribe(String),
    /// No service publishes on it any more.
    Unsubscribe(String),
}

impl ClusterMap {
    /// An empty map with the default [`MapConfig`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map.
    pub fn with_config(config: MapConfig) -> Self {
        ClusterMap {
            config,
            ..Self::default()
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &MapConfig {
        &self.config
    }

    /// Every host, by name.
    pub fn hosts(&self) -> impl Iterator<Item = &HostRecord> {
        self.hosts.values()
    }

    /// One host.
    pub fn host(&self, name: &str) -> Option<&HostRecord> {
        self.hosts.get(name)
    }

    /// The memory the map holds, by its estimate, in bytes: every host's
    /// [`HostRecord::bytes`]. Never more than [`MapConfig::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.budget.bytes
    }

    /// A number that changes whenever hosts, services or descriptions
    /// change (not on values alone): documents built from the map at one
    /// generation are still current while it stays.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Takes in a roll-call's report, received at `now_ms`: every host in it
    /// is online; a service its host answered for before and not now is
    /// missing; an online host that did not answer is missing, unless it was
    /// heard from after the roll-call was sent. A host whose
    /// `$state` said `offline` after its last answer in the report (it
    /// answered, then stopped, while the roll-call still waited) is left
    /// offline. A host the
    /// full map cannot take is left out and counted in
    /// [`MapCounts::refused`].
    pub fn apply_scan(&mut self, report: &ScanReport, now_ms: u64) -> Vec<MapEvent> {
        self.generation += 1;
        let mut events = Vec::new();
        // The report is taken in when the roll-call's wait ends; its answers
        // came earlier, when the roll-call was sent plus their `t_ms`.
        let sent_ms = now_ms.saturating_sub(report.elapsed_ms);
        for seen in &report.hosts {
            let last_answer_ms = seen
                .t_ms
                .into_iter()
                .chain(seen.services.iter().map(|s| s.t_ms))
                .max()
                .unwrap_or(0);
            // A host that said `offline` after its last answer stopped after
            // answering: the answer is no sign of life. In the same
            // millisecond too: `offline` is the last thing an agent says.
            let said_offline_since = self
                .hosts
                .get(&seen.hostname)
                .filter(|h| h.status == HostStatus::Offline)
                .map(|h| h.status_since_ms);
            if said_offline_since.is_some_and(|since| since >= sent_ms + last_answer_ms) {
                continue;
            }
            // Only a refusal for want of room is counted as one.
            let result = self.host_seen(seen, now_ms, &mut events);
            if self.tally(result).is_err() {
                continue;
            }
            let Some(host) = self.hosts.get_mut(&seen.hostname) else {
                continue;
            };
            for (name, service) in &mut host.services {
                if service.present && !seen.services.iter().any(|s| &s.function == name) {
                    service.present = false;
                    events.push(MapEvent::ServiceMissing {
                        host: host.name.clone(),
                        service: name.clone(),
                    });
                }
            }
        }
        let answered: HashSet<&str> = report.hosts.iter().map(|h| h.hostname.as_str()).collect();
        for (name, host) in &mut self.hosts {
            // Heard from after the roll-call was sent (its `online` came
            // while the roll-call waited): it may never have heard it.
            let fresh = host.last_seen_ms > sent_ms;
            if host.status == HostStatus::Online && !answered.contains(name.as_str()) && !fresh {
                host.status = HostStatus::Missing;
                host.status_since_ms = now_ms;
                events.push(MapEvent::HostMissing { host: name.clone() });
            }
        }
        self.unprove_gone(&events);
        events
    }

    /// Takes in one host's answers (a host answer and service answers, as a
    /// [`Collector`](crate::Collector) groups them), received at `now_ms`.
    /// Unlike [`apply_scan`](Self::apply_scan) it marks nothing missing.
    pub fn apply_host(&mut self, seen: &HostSeen, now_ms: u64) -> Result<Vec<MapEvent>, MapError> {
        self.generation += 1;
        let mut events = Vec::new();
        let result = self.host_seen(seen, now_ms, &mut events);
        self.tally(result).map(|()| events)
    }

    /// Counts refusals for want of room.
    fn tally<T>(&mut self, result: Result<T, MapError>) -> Result<T, MapError> {
        if let Err(
            MapError::TooManyHosts { .. }
            | MapError::TooManyServices { .. }
            | MapError::OverBudget { .. },
        ) = &result
        {
            self.refused += 1;
        }
        result
    }

    /// Takes in one answer as it arrives (any roll-call's), at `now_ms`.
    /// Anyone on the broker can publish an answer to any roll-call, so
    /// this does not make its host proven (see [`HostRecord::proven`]);
    /// the reports of the hub's own roll-calls do
    /// ([`apply_scan`](Self::apply_scan)).
    pub fn apply_answer(
        &mut self,
        answer: &Answer,
        now_ms: u64,
    ) -> Result<Vec<MapEvent>, MapError> {
        let result = self.answer(answer, now_ms);
        self.tally(result)
    }

    fn answer(&mut self, answer: &Answer, now_ms: u64) -> Result<Vec<MapEvent>, MapError> {
        let mut events = Vec::new();
        let topic = &answer.hostname;
        check_name(&answer.hostname).map_err(|e| bad_name(topic, e))?;
        if !answer.is_host() {
            check_name(&answer.function).map_err(|e| bad_name(topic, e))?;
            self.room_for_service(&answer.hostname, &answer.function)?;
        }
        let (apps, version) = if answer.is_host() {
            (&answer.apps, &answer.version)
        } else {
            (&None, &None)
        };
        let seen = (!answer.is_host()).then(|| ServiceSeen {
            function: answer.function.clone(),
            inputs: answer.inputs.clone(),
            outputs: answer.outputs.clone(),
            control: answer.control.clone(),
            t_ms: 0,
            interfaces: answer.interfaces.clone(),
            health: answer.health.clone(),
        });
        let need = self.growth(
            &answer.hostname,
            (&answer.ipaddr, &answer.extaddr, apps, version),
            seen.as_slice(),
        );
        self.make_room(
            &answer.hostname,
            need,
            !self.hosts.contains_key(&answer.hostname),
            &mut events,
        )?;
        self.generation += 1;
        let host = self.alive(&answer.hostname, now_ms, &mut events)?;
        if host.learn(&answer.ipaddr, &answer.extaddr, apps, version) {
            events.push(MapEvent::HostChanged {
                host: answer.hostname.clone(),
            });
        }
        let name = answer.hostname.clone();
        if let Some(seen) = &seen {
            self.service_seen(&name, seen, now_ms, &mut events)?;
            self.refresh_service(&name, &seen.function);
        }
        self.account(&name);
        self.touch(&name, now_ms);
        Ok(events)
    }

    /// [`ingest`](Self::ingest), with messages it cannot take ignored.
    pub fn apply_message(
        &mut self,
        topics: &Topics,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Vec<MapEvent> {
        self.ingest(topics, topic, payload, now_ms)
            .unwrap_or_default()
    }

    /// Takes in one MQTT message received at `now_ms`:
    /// - `{root}/{host}/$state`: `online` or `offline`, each perhaps with the
    ///   agent's session number ([`HostState`]); an `offline` of an older
    ///   session than the latest `online`'s is a stale last will and changes
    ///   nothing, and so does an empty payload (a cleared retained state);
    /// - `{root}/{host}/{service}/$description`: a [`Description`] whose
    ///   `function` is `{service}`; an empty payload removes the service;
    /// - any service's output topic: a value, `{"value":..,"unit":..,"ts":..}`,
    ///   any other JSON, or text.
    ///
    /// Anything else is not the map's business: no events, no error. A
    /// message refused with an error leaves the map as it was.
    pub fn ingest(
        &mut self,
        topics: &Topics,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Vec<MapEvent>, MapError> {
        let result = self.message(topics, topic, payload, now_ms);
        self.tally(result)
    }

    fn message(
        &mut self,
        topics: &Topics,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Vec<MapEvent>, MapError> {
        let under_root = topic
            .strip_prefix(topics.root())
            .and_then(|r| r.strip_prefix('/'));
        if let Some(rest) = under_root {
            let mut levels = rest.splitn(4, '/');
            match (levels.next(), levels.next(), levels.next(), levels.next()) {
                (Some(host), Some("$state"), None, None) => {
                    return self.apply_state(topic, host, payload, now_ms);
                }
                (Some(host), Some(service), Some("$description"), None) => {
                    return self.apply_description(topic, host, service, payload, now_ms);
                }
                _ => {}
            }
        }
        self.apply_value(topic, payload, now_ms)
    }

    /// Marks hosts missing that were online and not heard from for
    /// `stale_after`, and drops hosts offline or missing for `forget_after`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<MapEvent> {
        let mut events = Vec::new();
        let mut forget = Vec::new();
        for (name, host) in &mut self.hosts {
            match host.status {
                HostStatus::Online
                    if now_ms.saturating_sub(host.last_seen_ms) > self.config.stale_after_ms =>
                {
                    host.status = HostStatus::Missing;
                    host.status_since_ms = now_ms;
                    events.push(MapEvent::HostMissing { host: name.clone() });
                }
                HostStatus::Offline | HostStatus::Missing
                    if now_ms.saturating_sub(host.status_since_ms)
                        > self.config.forget_after_ms =>
                {
                    forget.push(name.clone());
                }
                _ => {}
            }
        }
        for name in forget {
            self.remove_host(&name);
            events.push(MapEvent::HostExpired { host: name });
        }
        self.unprove_gone(&events);
        if !events.is_empty() {
            self.generation += 1;
        }
        events
    }

    /// Every data-flow edge: one service's output topic (or filter) and
    /// another's input topic (or filter) that some topic matches both.
    /// Services without interfaces take part with their flat fields. Each
    /// carries when a message last crossed it (from the values the hub
    /// follows), and whether it is stale at `now_ms`.
    pub fn edges(&self, now_ms: u64) -> Vec<Edge> {
        self.wiring(now_ms).edges
    }

    /// The edges, and what the descriptions say is wired wrong: inputs no
    /// described output feeds, outputs no described input reads.
    pub fn wiring(&self, now_ms: u64) -> Wiring {
        let mut outputs = Vec::new();
        let mut inputs = Vec::new();
        for host in self.hosts.values() {
            for service in host.services.values() {
                let end = |topic: String| Endpoint {
                    host: host.name.clone(),
                    service: service.name.clone(),
                    topic,
                };
                outputs.extend(service.outputs().into_iter().map(end));
                inputs.extend(service.inputs().into_iter().map(end));
            }
        }
        let mut edges = edges::compute(outputs.iter().cloned(), &inputs);
        let stale_after = self.config.edge_stale_after_ms;
        for e in &mut edges {
            let publisher = self
                .hosts
                .get(&e.from.host)
                .and_then(|h| h.services.get(&e.from.service));
            let Some(publisher) = publisher else { continue };
            // Values are kept by the topic they came on, which matches the
            // publisher's output; it crossed this edge if the input matches too.
            e.last_crossed_ms = publisher
                .values
                .iter()
                .filter(|(topic, _)| matches(&e.to.topic, topic) && matches(&e.from.topic, topic))
                .map(|(_, v)| v.received_ms)
                .max();
            let since = e.last_crossed_ms.unwrap_or(publisher.followed_since_ms);
            e.stale = now_ms.saturating_sub(since) > stale_after;
        }
        let fed: HashSet<&Endpoint> = edges.iter().map(|e| &e.to).collect();
        let read: HashSet<&Endpoint> = edges.iter().map(|e| &e.from).collect();
        let unfed = inputs
            .iter()
            .filter(|i| !is_command(&i.topic) && !fed.contains(i))
            .cloned()
            .collect();
        let unread = outputs
            .iter()
            .filter(|o| !read.contains(o))
            .cloned()
            .collect();
        Wiring {
            edges,
            unfed,
            unread,
        }
    }

    /// The GPIO pins `host`'s services name, with conflicts (empty for a
    /// host the map does not know).
    pub fn pin_map(&self, host: &str) -> PinMap {
        let Some(host) = self.hosts.get(host) else {
            return PinMap::default();
        };
        let uses = host
            .services
            .values()
            .filter_map(|s| Some(pins::uses(&s.name, s.interfaces()?)))
            .flatten()
            .collect();
        pins::map_of(uses)
    }

    /// The whole map as the `/api/map` document.
    pub fn snapshot(&self, now_ms: u64) -> MapSnapshot {
        let hosts = self
            .hosts
            .values()
            .map(|h| {
                let pins = self.pin_map(&h.name);
                HostSnapshot {
                    name: h.name.clone(),
                    ipaddr: h.ipaddr.clone(),
                    extaddr: h.extaddr.clone(),
                    online: h.status == HostStatus::Online,
                    status: h.status,
                    status_since_ms: h.status_since_ms,
                    last_seen_ms: h.last_seen_ms,
                    version: h.version.clone(),
                    apps: h.apps.clone(),
                    services: h.services.values().map(service_snapshot).collect(),
                    pins: pins.pins,
                    pin_conflicts: pins.conflicts,
                }
            })
            .collect();
        let wiring = self.wiring(now_ms);
        MapSnapshot {
            now_ms,
            hosts,
            edges: wiring.edges,
            unfed: wiring.unfed,
            unread: wiring.unread,
            edge_stale_after_ms: self.config.edge_stale_after_ms,
        }
    }

    /// What to subscribe to, QoS 0, to keep the map current: every host's
    /// `$state`, every service's `$description`, and every known output
    /// topic (sorted after the first two). The list changes as services are
    /// described; the hub subscribes to what is new.
    pub fn watch_filters(&self, topics: &Topics) -> Vec<String> {
        let mut out = vec![topics.topic("+/$state"), topics.topic("+/+/$description")];
        out.extend(self.value_topics());
        out
    }

    /// What became needed or unneeded among [`value_topics`](Self::value_topics)
    /// since the last call, in order: the hub subscribes and unsubscribes
    /// with this rather than comparing whole lists.
    ///
    /// A filter needed and unneeded again since the last call (a host
    /// described and evicted within one batch) is left out: changes to one
    /// filter alternate, so its first and last tell whether it was
    /// subscribed before and must be now.
    pub fn take_watch_changes(&mut self) -> Vec<WatchChange> {
        let changes = std::mem::take(&mut self.watch_changes);
        let mut first: HashMap<&str, bool> = HashMap::new();
        let mut last: HashMap<&str, (usize, bool)> = HashMap::new();
        for (i, change) in changes.iter().enumerate() {
            let (filter, subscribe) = match change {
                WatchChange::Subscribe(f) => (f.as_str(), true),
                WatchChange::Unsubscribe(f) => (f.as_str(), false),
            };
            first.entry(filter).or_insert(subscribe);
            last.insert(filter, (i, subscribe));
        }
        let keep: HashSet<usize> = last
            .iter()
            .filter(|(filter, (_, subscribe))| first[*filter] == *subscribe)
            .map(|(_, (i, _))| *i)
            .collect();
        changes
            .iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// The filters that cover every output topic of every service, sorted:
    /// a service's output topics that share a parent level are covered by
    /// one `parent/+` (`/h/system/+` for its four readings), so that a
    /// thousand hosts need a few thousand subscriptions rather than one per
    /// topic (rumqttd matches each new subscription against every retained
    /// message). Other topics, and outputs described as filters, are
    /// subscribed as they are.
    pub fn value_topics(&self) -> BTreeSet<String> {
        self.subscriptions.keys().cloned().collect()
    }

    /// How many of what the map holds.
    pub fn counts(&self) -> MapCounts {
        let mut c = MapCounts {
            refused: self.refused,
            evicted: self.budget.evicted,
            bytes: self.budget.bytes,
            unproven_bytes: self.budget.unproven_bytes,
            max_bytes: self.config.max_bytes,
            ..MapCounts::default()
        };
        for host in self.hosts.values() {
            match host.status {
                HostStatus::Online => c.hosts_online += 1,
                HostStatus::Offline => c.hosts_offline += 1,
                HostStatus::Missing => c.hosts_missing += 1,
            }
            for s in host.services.values() {
                c.services += 1;
                c.services_present += usize::from(s.present);
                c.services_alert += usize::from(matches!(s.health, Some(Health::Alert { .. })));
                c.values += s.values.len();
            }
        }
        c
    }

    // ---- applying ----

    fn host_seen(
        &mut self,
        seen: &HostSeen,
        now_ms: u64,
        events: &mut Vec<MapEvent>,
    ) -> Result<(), MapError> {
        let name = &seen.hostname;
        check_name(name).map_err(|e| bad_name(name, e))?;
        // Check everything before changing anything.
        for s in &seen.services {
            check_name(&s.function).map_err(|e| bad_name(name, e))?;
        }
        let known = self.hosts.get(name);
        let new_services = seen
            .services
            .iter()
            .filter(|s| !known.is_some_and(|h| h.services.contains_key(&s.function)))
            .count();
        let have = known.map_or(0, |h| h.services.len());
        if have + new_services > self.config.max_services {
            return Err(MapError::TooManyServices {
                host: name.clone(),
                service: seen
                    .services
                    .last()
                    .map(|s| s.function.clone())
                    .unwrap_or_default(),
                max: self.config.max_services,
            });
        }
        let need = self.growth(
            name,
            (&seen.ipaddr, &seen.extaddr, &seen.apps, &seen.version),
            &seen.services,
        );
        let new_host = known.is_none();
        self.make_room(name, need, new_host, events)?;
        let host = self.alive(name, now_ms, events)?;
        if host.learn(&seen.ipaddr, &seen.extaddr, &seen.apps, &seen.version) {
            events.push(MapEvent::HostChanged { host: name.clone() });
        }
        for s in &seen.services {
            self.service_seen(name, s, now_ms, events)?;
            self.refresh_service(name, &s.function);
        }
        // It answered the hub's roll-call: never evicted from now on.
        self.prove(name);
        self.account(name);
        self.touch(name, now_ms);
        Ok(())
    }

    // ---- the byte budget ----

    /// How many bytes `host` would grow by (0 if it would shrink) when it
    /// learns `fields` (address, external address, apps, version: what an
    /// answer leaves out stays) and answers for `services`: the weight of
    /// a change before it is made.
    fn growth(&self, host: &str, fields: Learned<'_>, services: &[ServiceSeen]) -> usize {
        let known = self.hosts.get(host);
        let (ipaddr, extaddr, apps, version) = fields;
        let merged = |new: &Option<String>, old: Option<&Option<String>>| {
            new.clone().or_else(|| old.cloned().flatten())
        };
        let old_fixed = known.map_or(0, |h| {
            budget::host_bytes(&h.name, &h.ipaddr, &h.extaddr, &h.version, &h.apps)
        });
        let new_fixed = budget::host_bytes(
            host,
            &merged(ipaddr, known.map(|h| &h.ipaddr)),
            &merged(extaddr, known.map(|h| &h.extaddr)),
            &merged(version, known.map(|h| &h.version)),
            &apps.clone().or_else(|| known.and_then(|h| h.apps.clone())),
        );
        let mut need = new_fixed.saturating_sub(old_fixed);
        for seen in services {
            let old = known.and_then(|h| h.services.get(&seen.function));
            let new = budget::service_bytes(
                host,
                &seen.function,
                old.and_then(|s| s.description.as_ref()),
                Some(seen),
            );
            need = need.saturating_add(new.saturating_sub(old.map_or(0, |s| s.bytes)));
        }
        need
    }

    /// Makes room for `need` more bytes for `host` (and, when `new_host`,
    /// for one more host) by evicting hosts never seen answering a
    /// roll-call, other than `host`, least recently heard from first.
    /// Evicts nothing and errs when even evicting all of them would not
    /// make enough room: hosts that answered are never evicted.
    fn make_room(
        &mut self,
        host: &str,
        need: usize,
        new_host: bool,
        events: &mut Vec<MapEvent>,
    ) -> Result<(), MapError> {
        let max = self.config.max_bytes;
        let slot_needed = |map: &Self| new_host && map.hosts.len() >= map.config.max_hosts;
        let fits = |map: &Self| map.budget.bytes.saturating_add(need) <= max;
        if !slot_needed(self) && fits(self) {
            return Ok(());
        }
        let own = self.hosts.get(host).filter(|h| !h.proven);
        let freeable = self.budget.unproven_bytes - own.map_or(0, |h| h.bytes);
        let others = self.budget.order.len() - usize::from(own.is_some());
        if slot_needed(self) && others == 0 {
            return Err(MapError::TooManyHosts {
                host: host.to_owned(),
                max: self.config.max_hosts,
            });
        }
        if (self.budget.bytes - freeable).saturating_add(need) > max {
            return Err(MapError::OverBudget {
                host: host.to_owned(),
                max_bytes: max,
            });
        }
        while slot_needed(self) || !fits(self) {
            let Some(victim) = self
                .budget
                .order
                .iter()
                .map(|(_, name)| name)
                .find(|name| name.as_str() != host)
                .cloned()
            else {
                break;
            };
            self.remove_host(&victim);
            self.budget.evicted += 1;
            self.generation += 1;
            events.push(MapEvent::HostEvicted { host: victim });
        }
        Ok(())
    }

    /// Drops a host with everything it holds.
    fn remove_host(&mut self, name: &str) {
        let Some(host) = self.hosts.remove(name) else {
            return;
        };
        for (service, record) in &host.services {
            self.unindex(name, service, &record.output_topics);
            self.release(&record.subscribed);
        }
        self.budget.bytes -= host.bytes;
        if !host.proven {
            self.budget.unproven_bytes -= host.bytes;
            self.budget.order.remove(&(host.heard_ms, host.name));
        }
    }

    /// Recomputes a service's bytes after it changed (its host's total is
    /// brought in line by [`account`](Self::account)).
    fn refresh_service(&mut self, host: &str, service: &str) {
        if let Some(s) = self
            .hosts
            .get_mut(host)
            .and_then(|h| h.services.get_mut(service))
        {
            s.bytes =
                budget::service_bytes(host, &s.name, s.description.as_ref(), s.answered.as_ref());
            s.values_bytes = s
                .values
                .iter()
                .map(|(t, v)| budget::value_bytes(t, v))
                .sum();
        }
    }

    /// Recomputes `name`'s bytes from its own fields and its services'
    /// bytes, and the map's totals.
    fn account(&mut self, name: &str) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        let new = budget::host_bytes(&h.name, &h.ipaddr, &h.extaddr, &h.version, &h.apps)
            + h.services
                .values()
                .map(|s| s.bytes + s.values_bytes)
                .sum::<usize>();
        let old = std::mem::replace(&mut h.bytes, new);
        self.budget.bytes = self.budget.bytes - old + new;
        if !h.proven {
            self.budget.unproven_bytes = self.budget.unproven_bytes - old + new;
        }
    }

    /// Notes that `name` was heard from: an unproven host moves to the end
    /// of the eviction order.
    fn touch(&mut self, name: &str, now_ms: u64) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        if !h.proven && h.heard_ms != now_ms {
            self.budget.order.remove(&(h.heard_ms, name.to_owned()));
            self.budget.order.insert((now_ms, name.to_owned()));
        }
        h.heard_ms = now_ms;
    }

    /// Hosts that went missing or offline in `events` are proven no more:
    /// answers to a roll-call can be forged by anyone who may publish under
    /// the answer prefix, so a host stays safe from eviction only while it
    /// is present, and one that answered once cannot hold its room forever.
    fn unprove_gone(&mut self, events: &[MapEvent]) {
        for event in events {
            let (MapEvent::HostMissing { host } | MapEvent::HostOffline { host }) = event else {
                continue;
            };
            let Some(h) = self.hosts.get_mut(host) else {
                continue;
            };
            if h.proven {
                h.proven = false;
                self.budget.order.insert((h.heard_ms, host.clone()));
                self.budget.unproven_bytes += h.bytes;
            }
        }
    }

    /// `name` answered a roll-call: out of the eviction order while it is
    /// present ([`unprove_gone`](Self::unprove_gone)).
    fn prove(&mut self, name: &str) {
        let Some(h) = self.hosts.get_mut(name) else {
            return;
        };
        if h.proven {
            return;
        }
        h.proven = true;
        self.budget.order.remove(&(h.heard_ms, name.to_owned()));
        self.budget.unproven_bytes -= h.bytes;
    }

    /// Errs when `service` would be one too many on `host`.
    fn room_for_service(&self, host: &str, service: &str) -> Result<(), MapError> {
        match self.hosts.get(host) {
            Some(h)
                if !h.services.contains_key(service)
                    && h.services.len() >= self.config.max_services =>
            {
                Err(MapError::TooManyServices {
                    host: host.to_owned(),
                    service: service.to_owned(),
                    max: self.config.max_services,
                })
            }
            _ => Ok(()),
        }
    }

    /// The host, created if new (starting in `status`).
    fn host_or_new(
        &mut self,
        name: &str,
        status: HostStatus,
        now_ms: u64,
        events: &mut Vec<MapEvent>,
    ) -> Result<&mut HostRecord, MapError> {
        if !self.hosts.contains_key(name) {
            if self.hosts.len() >= self.config.max_hosts {
                return Err(MapError::TooManyHosts {
                    host: name.to_owned(),
                    max: self.config.max_hosts,
                });
            }
            events.push(MapEvent::HostAppeared {
                host: name.to_owned(),
                status,
            });
            self.hosts.insert(
                name.to_owned(),
                HostRecord {
                    name: name.to_owned(),
                    ipaddr: None,
                    extaddr: None,
                    version: None,
                    apps: None,
                    status,
                    status_since_ms: now_ms,
                    last_seen_ms: now_ms,
                    session: None,
                    services: BTreeMap::new(),
                    proven: false,
                    heard_ms: now_ms,
                    bytes: 0,
                },
            );
            // New hosts are unproven until they answer a roll-call.
            self.budget.order.insert((now_ms, name.to_owned()));
            self.account(name);
        }
        Ok(self.hosts.get_mut(name).expect("present or just inserted"))
    }

    /// The host heard from now: online.
    fn alive(
        &mut self,
        name: &str,
        now_ms: u64,
        events: &mut Vec<MapEvent>,
    ) -> Result<&mut HostRecord, MapError> {
        let host = self.host_or_new(name, HostStatus::Online, now_ms, events)?;
        if host.status != HostStatus::Online {
            host.status = HostStatus::Online;
            host.status_since_ms = now_ms;
            events.push(MapEvent::HostOnline {
                host: name.to_owned(),
            });
        }
        host.last_seen_ms = now_ms;
        Ok(host)
    }

    /// A service's answer; its host exists and has room (checked by callers).
    fn service_seen(
        &mut self,
        host_name: &str,
        seen: &ServiceSeen,
        now_ms: u64,
        events: &mut Vec<MapEvent>,
    ) -> Result<(), MapError> {
        self.room_for_service(host_name, &seen.function)?;
        let Some(host) = self.hosts.get_mut(host_name) else {
            return Ok(());
        };
        let service = host
            .services
            .entry(seen.function.clone())
            .or_insert_with(|| ServiceRecord::new(&seen.function, now_ms));
        let ev = |service: &str| (host_name.to_owned(), service.to_owned());
        if !service.present {
            service.present = true;
            let (host, service) = ev(&seen.function);
            events.push(MapEvent::ServiceAppeared { host, service });
        }
        // Without a retained description the answer is the description.
        let shape_changed = service.answered.as_ref().is_none_or(|a| {
            a.interfaces != seen.interfaces || a.inputs != seen.inputs || a.outputs != seen.outputs
        });
        if service.description.is_none() && shape_changed {
            let (host, service) = ev(&seen.function);
            events.push(MapEvent::DescriptionChanged { host, service });
        }
        if let Some(health) = &seen.health
            && service.health.as_ref() != Some(health)
        {
            service.health = Some(health.clone());
            let (host, service) = ev(&seen.function);
            events.push(MapEvent::HealthChanged {
                host,
                service,
                health: Some(health.clone()),
            });
        }
        service.answered = Some(seen.clone());
        service.last_seen_ms = now_ms;
        if shape_changed {
            self.reindex(host_name, &seen.function);
        }
        Ok(())
    }

    fn apply_state(
        &mut self,
        topic: &str,
        host: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Vec<MapEvent>, MapError> {
        check_name(host).map_err(|e| bad_name(topic, e))?;
        let mut events = Vec::new();
        let state = HostState::parse(payload).map_err(|_| MapError::BadState {
            topic: topic.to_owned(),
            payload: String::from_utf8_lossy(&payload[..payload.len().min(32)]).into_owned(),
        })?;
        // An empty payload, a cleared retained state, says nothing about the host.
        let Some(state) = state else {
            return Ok(events);
        };
        if !self.hosts.contains_key(host) {
            let need = budget::host_bytes(host, &None, &None, &None, &None);
            self.make_room(host, need, true, &mut events)?;
        }
        match state.liveness {
            Liveness::Online => {
                self.alive(host, now_ms, &mut events)?.session = state.session;
            }
            // An older session's last will, published after the host's
            // agent restarted and said `online` (docs/protocol.md section 4).
            Liveness::Offline
                if state.is_stale_after(self.hosts.get(host).and_then(|h| h.session)) => {}
            Liveness::Offline => {
                let record = self.host_or_new(host, HostStatus::Offline, now_ms, &mut events)?;
                if record.status != HostStatus::Offline {
                    record.status = HostStatus::Offline;
                    record.status_since_ms = now_ms;
                    events.push(MapEvent::HostOffline {
                        host: host.to_owned(),
                    });
                }
            }
        }
        self.unprove_gone(&events);
        self.touch(host, now_ms);
        // A repeated `online` changes nothing a document shows: the
        // documents stay cached (anyone may publish a `$state`).
        if !events.is_empty() {
            self.generation += 1;
        }
        Ok(events)
    }

    fn apply_description(
        &mut self,
        topic: &str,
        host: &str,
        service: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Vec<MapEvent>, MapError> {
        check_name(host).map_err(|e| bad_name(topic, e))?;
        check_name(service).map_err(|e| bad_name(topic, e))?;
        let mut events = Vec::new();
        if payload.trim_ascii().is_empty() {
            let removed = self
                .hosts
                .get_mut(host)
                .and_then(|h| h.services.remove(service));
            if let Some(record) = removed {
                self.unindex(host, service, &record.output_topics);
                self.release(&record.subscribed);
                self.account(host);
                self.generation += 1;
                events.push(MapEvent::ServiceRemoved {
                    host: host.to_owned(),
                    service: service.to_owned(),
                });
            }
            return Ok(events);
        }
        let bad = |reason: String| MapError::BadDescription {
            topic: topic.to_owned(),
            reason,
        };
        let value = json::parse_value(payload, rollcall_proto::MAX_PAYLOAD)
            .map_err(|e| bad(e.to_string()))?;
        let description: Description =
            serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        if description.function != service {
            return Err(bad(format!(
                "its function is `{}`, the topic's service `{service}`",
                description.function
            )));
        }
        self.room_for_service(host, service)?;
        let known = self.hosts.get(host);
        let old = known.and_then(|h| h.services.get(service));
        let new = budget::service_bytes(
            host,
            service,
            Some(&description),
            old.and_then(|s| s.answered.as_ref()),
        );
        let mut need = new.saturating_sub(old.map_or(0, |s| s.bytes));
        let new_host = known.is_none();
        if new_host {
            need += budget::host_bytes(host, &None, &None, &None, &None);
        }
        self.make_room(host, need, new_host, &mut events)?;
        self.generation += 1;
        // A retained description says the service is registered, not that
        // its host is up: a host first heard of this way starts missing.
        let record = self.host_or_new(host, HostStatus::Missing, now_ms, &mut events)?;
        let s = record
            .services
            .entry(service.to_owned())
            .or_insert_with(|| ServiceRecord::new(service, now_ms));
        let ev = || (host.to_owned(), service.to_owned());
        if !s.present {
            s.present = true;
            let (host, service) = ev();
            events.push(MapEvent::ServiceAppeared { host, service });
        }
        let changed = s.description.as_ref() != Some(&description);
        if changed {
            let (host, service) = ev();
            events.push(MapEvent::DescriptionChanged { host, service });
        }
        if let Some(health) = &description.health
            && s.health.as_ref() != Some(health)
        {
            s.health = Some(health.clone());
            let (host, service) = ev();
            events.push(MapEvent::HealthChanged {
                host,
                service,
                health: Some(health.clone()),
            });
        }
        s.description = Some(description);
        s.last_seen_ms = now_ms;
        if changed {
            self.reindex(host, service);
        }
        self.refresh_service(host, service);
        self.account(host);
        self.touch(host, now_ms);
        Ok(events)
    }

    fn apply_value(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<Vec<MapEvent>, MapError> {
        let mut owners: Vec<(String, String)> =
            self.outputs.get(topic).cloned().unwrap_or_default();
        for (filter, pairs) in &self.wild_outputs {
            if matches(filter, topic) {
                owners.extend(pairs.iter().cloned());
            }
        }
        // A cleared retained value is no value.
        if owners.is_empty() || payload.is_empty() {
            return Ok(Vec::new());
        }
        let record = read_value(topic, payload, now_ms)?;
        let mut events = Vec::new();
        let max_values = self.config.max_values;
        let weight = budget::value_bytes(topic, &record);
        for (host, service) in owners {
            let Some(s) = self.hosts.get(&host).and_then(|h| h.services.get(&service)) else {
                continue;
            };
            let old = s.values.get(topic);
            if old.is_none() && s.values.len() >= max_values {
                continue;
            }
            let old_weight = old.map_or(0, |o| budget::value_bytes(topic, o));
            // A value that does not fit is dropped for this owner alone.
            if self
                .make_room(&host, weight.saturating_sub(old_weight), false, &mut events)
                .is_err()
            {
                self.refused += 1;
                continue;
            }
            let Some(s) = self
                .hosts
                .get_mut(&host)
                .and_then(|h| h.services.get_mut(&service))
            else {
                continue;
            };
            let old = s.values.insert(topic.to_owned(), record.clone());
            let same = old.is_some_and(|o| {
                o.value == record.value && o.unit == record.unit && o.ts == record.ts
            });
            s.values_bytes = s.values_bytes - old_weight + weight;
            self.account(&host);
            self.touch(&host, now_ms);
            if !same {
                events.push(MapEvent::ValueChanged {
                    host,
                    service,
                    topic: topic.to_owned(),
                    value: record.clone(),
                });
            }
        }
        Ok(events)
    }

    // ---- the output-topic index ----

    /// Brings the index in line with the service's outputs now.
    fn reindex(&mut self, host: &str, service: &str) {
        let Some(record) = self
            .hosts
            .get_mut(host)
            .and_then(|h| h.services.get_mut(service))
        else {
            return;
        };
        let new = record.outputs();
        if new == record.output_topics {
            return;
        }
        let old = std::mem::replace(&mut record.output_topics, new.clone());
        // Values on topics it no longer publishes are stale.
        record
            .values
            .retain(|t, _| new.iter().any(|f| matches(f, t)));
        let subs = subscription_filters(&new);
        let old_subs = std::mem::replace(&mut record.subscribed, subs.clone());
        // Needed ones first, so that a filter both lists share never drops to zero.
        self.acquire(&subs);
        self.release(&old_subs);
        self.unindex(host, service, &old);
        for topic in new {
            let pair = (host.to_owned(), service.to_owned());
            let index = if topic.contains(['+', '#']) {
                &mut self.wild_outputs as &mut dyn OutputIndex
            } else {
                &mut self.outputs
            };
            let slot = index.slot(topic);
            if !slot.contains(&pair) {
                slot.push(pair);
            }
        }
    }

    fn unindex(&mut self, host: &str, service: &str, topics: &[String]) {
        for topic in topics {
            let owners = if topic.contains(['+', '#']) {
                self.wild_outputs.get_mut(topic)
            } else {
                self.outputs.get_mut(topic)
            };
            let Some(owners) = owners else { continue };
            owners.retain(|(h, s)| !(h == host && s == service));
            if owners.is_empty() {
                self.outputs.remove(topic);
                self.wild_outputs.remove(topic);
            }
        }
    }

    fn acquire(&mut self, filters: &[String]) {
        for f in filters {
            let n = self.subscriptions.entry(f.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                self.watch_changes.push(WatchChange::Subscribe(f.clone()));
            }
        }
    }

    fn release(&mut self, filters: &[String]) {
        for f in filters {
            let Some(n) = self.subscriptions.get_mut(f) else {
                continue;
            };
            *n -= 1;
            if *n == 0 {
                self.subscriptions.remove(f);
                self.watch_changes.push(WatchChange::Unsubscribe(f.clone()));
            }
        }
    }
}

/// The subscriptions covering `outputs` (sorted, deduplicated): topics
/// sharing a parent level become one `parent/+`, the rest stay as they are.
fn subscription_filters(outputs: &[String]) -> Vec<String> {
    let mut by_parent: BTreeMap<&str, usize> = BTreeMap::new();
    for t in outputs {
        if let Some((parent, _)) = t.rsplit_once('/')
            && !t.contains(['+', '#'])
        {
            *by_parent.entry(parent).or_default() += 1;
        }
    }
    let mut out: Vec<String> = outputs
        .iter()
        .map(|t| match t.rsplit_once('/') {
            Some((parent, _)) if by_parent.get(parent).is_some_and(|n| *n > 1) => {
                format!("{parent}/+")
            }
            _ => t.clone(),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The two output indexes, one exact and one of wildcard filters, behind
/// one face.
trait OutputIndex {
    fn slot(&mut self, topic: String) -> &mut Vec<(String, String)>;
}

impl OutputIndex for HashMap<String, Vec<(String, String)>> {
    fn slot(&mut self, topic: String) -> &mut Vec<(String, String)> {
        self.entry(topic).or_default()
    }
}

impl OutputIndex for BTreeMap<String, Vec<(String, String)>> {
    fn slot(&mut self, topic: String) -> &mut Vec<(String, String)> {
        self.entry(topic).or_default()
    }
}

fn bad_name(topic: &str, e: ProtoError) -> MapError {
    MapError::BadName {
        topic: topic.to_owned(),
        reason: e.to_string(),
    }
}

/// A value payload: a reading object, other JSON, or text.
fn read_value(topic: &str, payload: &[u8], now_ms: u64) -> Result<ValueRecord, MapError> {
    let bad = |e: ProtoError| MapError::BadValue {
        topic: topic.to_owned(),
        reason: e.to_string(),
    };
    let value = match json::parse_value(payload, rollcall_proto::MAX_PAYLOAD) {
        Ok(v) => v,
        Err(ProtoError::Json(_)) => {
            // parse_value checked UTF-8 before it tried JSON.
            let text = std::str::from_utf8(payload).map_err(|_| bad(ProtoError::NotUtf8))?;
            serde_json::Value::String(text.trim().to_owned())
        }
        Err(e) => return Err(bad(e)),
    };
    if let serde_json::Value::Object(map) = &value
        && let Some(v) = map.get("value")
    {
        return Ok(ValueRecord {
            value: v.clone(),
            unit: map.get("unit").and_then(|u| u.as_str()).map(str::to_owned),
            ts: map.get("ts").and_then(|t| t.as_u64()),
            received_ms: now_ms,
        });
    }
    Ok(ValueRecord {
        value,
        unit: None,
        ts: None,
        received_ms: now_ms,
    })
}

fn service_snapshot(s: &ServiceRecord) -> ServiceSnapshot {
    let answered = s.answered.as_ref();
    ServiceSnapshot {
        name: s.name.clone(),
        present: s.present,
        health: s.health.clone(),
        description: s.effective_description(),
        described_by: if s.description.is_some() {
            Some("retained".into())
        } else {
            answered.map(|_| "answer".into())
        },
        inputs: answered.and_then(|a| a.inputs.clone()),
        outputs: answered.and_then(|a| a.outputs.clone()),
        control: answered.and_then(|a| a.control.clone()),
        last_seen_ms: s.last_seen_ms,
        values: s.values.clone(),
    }
}

#[cfg(test)]
mod tests;
