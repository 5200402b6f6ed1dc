//! `rollcall hub`: the scanner that runs all the time. It keeps the cluster
//! map current from retained `$state`s and `$description`s, the values
//! services publish, and a roll-call every few seconds; it reports every
//! change on a broadcast channel, counts what it does for `/metrics`, and
//! sends requests to services for the dashboard. [`HubShared`] is the one
//! place that state lives; the dashboard and `rollcall docs` read it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollcall_net::{
    BrokerList, BrokerOptions, BrokerUrl, EmbeddedBroker, Login, Message, Qos, Session,
    SessionConfig, SessionHandle,
};
use rollcall_proto::Topics;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::docs::AsyncApiOptions;
use crate::ha::{HaConfig, HaStatus};
use crate::map::WatchChange;
use crate::{
    ClusterMap, Descriptions, HubError, MapEvent, MapSnapshot, ScanOptions, ScanReport, Scanner,
};

/// How many events a slow subscriber of [`HubShared::changes`] may fall
/// behind before it misses some (it then sees `Lagged` and should re-read
/// the snapshot). A thousand hosts coming up at once make about ten
/// thousand events.
pub const CHANGES_CAPACITY: usize = 16_384;

/// How many messages the hub's watching session buffers. Connecting to a
/// broker that retains a thousand hosts' states, descriptions and values
/// delivers tens of thousands of messages at once; what overflows is lost
/// (and counted as `session_dropped`).
pub const WATCH_BUFFER: usize = 65_536;

/// At most this many messages are taken into the map under one lock.
const BATCH: usize = 1024;

/// How the hub runs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Use this broker (or these nodes of one cluster, tried in turn)...
    pub broker: Option<BrokerList>,
    /// ...or run an embedded one: where, who may log in, TLS.
    pub embedded_broker: Option<BrokerOptions>,
    /// How the hub's sessions log in to `broker` (to an embedded broker
    /// they log in as its in-process user).
    pub login: Login,
    /// The roll-calls it sends.
    pub scan: ScanOptions,
    /// Time between roll-calls; `None`: the hub only watches, and whoever
    /// calls the roll hands its reports to [`HubShared::record_scan`].
    pub every: Option<Duration>,
    /// Time between [`ClusterMap::expire`] runs.
    pub expire_every: Duration,
    /// Set each roll-call's window from the hosts the map has seen answer
    /// ([`crate::scan::window_for`]) instead of `scan.window_ms`, which is
    /// then used only while none has.
    pub window_per_host: bool,
    /// Publish Home Assistant MQTT discovery for the map (`--ha-discovery`).
    pub ha_discovery: Option<HaConfig>,
    /// The highest QoS the hub's sessions subscribe with
    /// ([`SessionConfig::max_subscribe_qos`]: QoS 0 on a NATS cluster).
    pub subscribe_qos: Qos,
}

impl HubConfig {
    /// A hub on `broker`, calling the roll with `scan` every `every`, and
    /// expiring the map every second.
    pub fn new(broker: impl Into<BrokerList>, scan: ScanOptions, every: Duration) -> Self {
        HubConfig {
            broker: Some(broker.into()),
            embedded_broker: None,
            login: Login::default(),
            scan,
            every: Some(every),
            expire_every: Duration::from_secs(1),
            window_per_host: false,
            ha_discovery: None,
            subscribe_qos: Qos::AtLeastOnce,
        }
    }

    /// A hub on `broker` that calls no roll: it watches retained state and
    /// values, and takes reports from [`HubShared::record_scan`].
    pub fn watching(broker: impl Into<BrokerList>, scan: ScanOptions) -> Self {
        HubConfig {
            every: None,
            ..HubConfig::new(broker, scan, Duration::from_secs(1))
        }
    }
}

/// The wall clock, unix ms: the time the hub gives the map.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Upper bounds of the roll-call duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Kinds of error the hub counts, the labels of `rollcall_hub_errors_total`.
pub const ERROR_KINDS: [&str; 13] = [
    "rollcall",
    "bad_name",
    "bad_state",
    "bad_description",
    "bad_value",
    "too_many_hosts",
    "too_many_services",
    "over_budget",
    "subscribe",
    "session_dropped",
    "session_oversized",
    "request_timeout",
    "bad_reply",
];

/// The hub's counters, updated without locks.
#[derive(Debug, Default)]
pub struct HubMetrics {
    /// Roll-calls sent.
    pub rollcalls: AtomicU64,
    /// Roll-calls that failed (nothing could be sent, the broker was away).
    pub rollcalls_failed: AtomicU64,
    /// Answers counted by roll-calls (host answers and service answers).
    pub answers: AtomicU64,
    /// Answers dropped because their (host, function) had answered that
    /// roll-call already: copies a bridge loop or a repeated path brought.
    pub duplicates: AtomicU64,
    /// Messages taken from the broker into the map.
    pub messages: AtomicU64,
    /// Map events reported.
    pub events: AtomicU64,
    /// Requests sent through [`HubShared::request`].
    pub requests: AtomicU64,
    /// How long the latest roll-call took, in ms.
    pub last_rollcall_ms: AtomicU64,
    /// When the latest roll-call's last answer came, in ms after sending.
    pub last_answer_ms: AtomicU64,
    /// The latest roll-call's `window_ms` (with a window per host, the one
    /// the hub chose).
    pub last_window_ms: AtomicU64,
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_sum_us: AtomicU64,
    duration_count: AtomicU64,
    errors: [AtomicU64; ERROR_KINDS.len()],
}

impl HubMetrics {
    /// Counts one finished roll-call that took `took`.
    pub fn record_rollcall(&self, report: &ScanReport, took: Duration) {
        self.rollcalls.fetch_add(1, Ordering::Relaxed);
        let answers =
            report.hosts.iter().filter(|h| h.t_ms.is_some()).count() + report.service_count();
        self.answers.fetch_add(answers as u64, Ordering::Relaxed);
        self.duplicates
            .fetch_add(report.duplicates, Ordering::Relaxed);
        let ms = took.as_millis() as u64;
        self.last_rollcall_ms.store(ms, Ordering::Relaxed);
        self.last_answer_ms
            .store(report.last_answer_ms().unwrap_or(0), Ordering::Relaxed);
        self.last_window_ms
            .store(report.window_ms, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        for (bound, count) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.duration_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one error of `kind`, one of [`ERROR_KINDS`] (a kind not in
    /// the list is not counted: the label set stays fixed).
    pub fn record_error(&self, kind: &str) {
        self.add_errors(kind, 1);
    }

    fn add_errors(&self, kind: &str, n: u64) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Errors of `kind` so far.
    pub fn errors(&self, kind: &str) -> u64 {
        ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// The counters and `map`'s sizes in the Prometheus text format (0.0.4).
    pub fn render_prometheus(&self, map: &ClusterMap) -> String {
        self.render_prometheus_at(map, now_ms())
    }

    /// [`render_prometheus`](Self::render_prometheus), with the edges'
    /// staleness taken at `now_ms`.
    pub fn render_prometheus_at(&self, map: &ClusterMap, now_ms: u64) -> String {
        let c = map.counts();
        let wiring = map.wiring(now_ms);
        let stale = wiring.edges.iter().filter(|e| e.stale).count();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "rollcall_hosts",
            "gauge",
            "Hosts in the cluster map, by status.",
            &[
                ("{status=\"online\"}", c.hosts_online as f64),
                ("{status=\"offline\"}", c.hosts_offline as f64),
                ("{status=\"missing\"}", c.hosts_missing as f64),
            ],
        );
        metric(
            "rollcall_hosts_online",
            "gauge",
            "Hosts online.",
            &[("", c.hosts_online as f64)],
        );
        metric(
            "rollcall_services",
            "gauge",
            "Services in the cluster map, by whether they are present.",
            &[
                ("{present=\"true\"}", c.services_present as f64),
                (
                    "{present=\"false\"}",
                    (c.services - c.services_present) as f64,
                ),
            ],
        );
        metric(
            "rollcall_services_alert",
            "gauge",
            "Services whose health is an alert.",
            &[("", c.services_alert as f64)],
        );
        metric(
            "rollcall_values",
            "gauge",
            "Output topics with a known value.",
            &[("", c.values as f64)],
        );
        metric(
            "rollcall_edges",
            "gauge",
            "Data-flow edges (output topic to input topic), by whether a message crossed within edge_stale_after.",
            &[
                ("{stale=\"false\"}", (wiring.edges.len() - stale) as f64),
                ("{stale=\"true\"}", stale as f64),
            ],
        );
        metric(
            "rollcall_inputs_unfed",
            "gauge",
            "Inputs (commands aside) that no described output feeds.",
            &[("", wiring.unfed.len() as f64)],
        );
        metric(
            "rollcall_outputs_unread",
            "gauge",
            "Outputs that no described input reads (informational).",
            &[("", wiring.unread.len() as f64)],
        );
        metric(
            "rollcall_rollcalls_total",
            "counter",
            "Roll-calls sent.",
            &[("", load(&self.rollcalls) as f64)],
        );
        metric(
            "rollcall_rollcalls_failed_total",
            "counter",
            "Roll-calls that could not be sent or collected.",
            &[("", load(&self.rollcalls_failed) as f64)],
        );
        metric(
            "rollcall_answers_total",
            "counter",
            "Roll-call answers received (host and service answers).",
            &[("", load(&self.answers) as f64)],
        );
        metric(
            "rollcall_answers_duplicate_total",
            "counter",
            "Roll-call answers dropped as copies of one already counted (a bridge loop, two paths).",
            &[("", load(&self.duplicates) as f64)],
        );
        metric(
            "rollcall_hub_messages_total",
            "counter",
            "Messages ($state, $description, values) taken into the map.",
            &[("", load(&self.messages) as f64)],
        );
        metric(
            "rollcall_hub_events_total",
            "counter",
            "Changes the map reported.",
            &[("", load(&self.events) as f64)],
        );
        metric(
            "rollcall_hub_requests_total",
            "counter",
            "Requests sent to services through the hub.",
            &[("", load(&self.requests) as f64)],
        );
        metric(
            "rollcall_last_rollcall_duration_seconds",
            "gauge",
            "How long the latest roll-call waited for answers.",
            &[("", load(&self.last_rollcall_ms) as f64 / 1000.0)],
        );
        metric(
            "rollcall_last_answer_seconds",
            "gauge",
            "When the latest roll-call's last answer arrived, after sending.",
            &[("", load(&self.last_answer_ms) as f64 / 1000.0)],
        );
        metric(
            "rollcall_last_window_seconds",
            "gauge",
            "The answer window the latest roll-call asked for.",
            &[("", load(&self.last_window_ms) as f64 / 1000.0)],
        );
        let bounds: Vec<String> = DURATION_BUCKETS
            .iter()
            .map(|b| format!("{{le=\"{b}\"}}"))
            .collect();
        let count = load(&self.duration_count) as f64;
        let mut samples: Vec<(&str, f64)> = bounds
            .iter()
            .zip(&self.duration_buckets)
            .map(|(b, n)| (b.as_str(), load(n) as f64))
            .collect();
        samples.push(("{le=\"+Inf\"}", count));
        let _ = writeln!(
            out,
            "# HELP rollcall_rollcall_duration_seconds How long roll-calls waited for answers."
        );
        let _ = writeln!(out, "# TYPE rollcall_rollcall_duration_seconds histogram");
        for (labels, value) in samples {
            let _ = writeln!(
                out,
                "rollcall_rollcall_duration_seconds_bucket{labels} {value}"
            );
        }
        let _ = writeln!(
            out,
            "rollcall_rollcall_duration_seconds_sum {}",
            load(&self.duration_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "rollcall_rollcall_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP rollcall_hub_errors_total Errors, by kind.\n# TYPE rollcall_hub_errors_total counter"
        );
        for (kind, n) in ERROR_KINDS.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "rollcall_hub_errors_total{{kind=\"{kind}\"}} {}",
                load(n)
            );
        }
        let _ = writeln!(
            out,
            "# HELP rollcall_hub_refused_total Hosts, services or values refused because the map was full (hosts, services or bytes).\n# TYPE rollcall_hub_refused_total counter\nrollcall_hub_refused_total {}",
            c.refused
        );
        let _ = writeln!(
            out,
            "# HELP rollcall_hub_evicted_total Hosts never seen answering a roll-call, evicted to keep the map within its byte budget.\n# TYPE rollcall_hub_evicted_total counter\nrollcall_hub_evicted_total {}",
            c.evicted
        );
        let _ = writeln!(
            out,
            "# HELP rollcall_map_bytes The cluster map's memory by its own estimate, by whether its hosts answered a roll-call.\n# TYPE rollcall_map_bytes gauge\nrollcall_map_bytes{{proven=\"true\"}} {}\nrollcall_map_bytes{{proven=\"false\"}} {}",
            c.bytes - c.unproven_bytes,
            c.unproven_bytes
        );
        let _ = writeln!(
            out,
            "# HELP rollcall_map_max_bytes The cluster map's byte budget (--map-budget-mb).\n# TYPE rollcall_map_max_bytes gauge\nrollcall_map_max_bytes {}",
            c.max_bytes
        );
        out
    }
}

/// The hub's connection, while [`run_hub`] runs.
#[derive(Debug, Clone)]
struct Link {
    session: SessionHandle,
    reply_topic: String,
    broker: BrokerUrl,
}

/// Everything the hub knows, shared by the hub's loops, the dashboard and
/// `rollcall docs`. Locks are held only for moments, never across an await.
#[derive(Debug)]
pub struct HubShared {
    /// The deployment's topics.
    pub topics: Topics,
    /// The cluster map.
    pub map: Mutex<ClusterMap>,
    /// Every event the map reports, as it happens.
    pub changes: broadcast::Sender<MapEvent>,
    /// Counters for `/metrics`.
    pub metrics: HubMetrics,
    link: Mutex<Option<Link>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next_id: AtomicU64,
    ha_status: Mutex<Option<HaStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves data that is still a valid map
    // (every change is whole or not made); keep serving it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HubShared {
    /// Shared state for a hub on `topics`, with an empty default map.
    pub fn new(topics: Topics) -> Self {
        Self::with_map(topics, ClusterMap::new())
    }

    /// Shared state starting from `map` (for a map with its own
    /// [`MapConfig`](crate::MapConfig)).
    pub fn with_map(topics: Topics, map: ClusterMap) -> Self {
        HubShared {
            topics,
            map: Mutex::new(map),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            metrics: HubMetrics::default(),
            link: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            ha_status: Mutex::new(None),
        }
    }

    /// The map, locked (never hold it across an await).
    pub fn lock_map(&self) -> MutexGuard<'_, ClusterMap> {
        lock(&self.map)
    }

    /// The map as `/api/map` serves it, now.
    pub fn snapshot(&self) -> MapSnapshot {
        self.lock_map().snapshot(now_ms())
    }

    /// Home Assistant discovery's latest round (`None` without
    /// `--ha-discovery`): `/api/map`'s `ha_discovery` field.
    pub fn ha_status(&self) -> Option<HaStatus> {
        lock(&self.ha_status).clone()
    }

    /// Sets what `/api/map` shows of discovery (the discovery loop does,
    /// after each round).
    pub fn set_ha_status(&self, status: HaStatus) {
        *lock(&self.ha_status) = Some(status);
    }

    /// `/metrics`: the counters and the map's sizes, in Prometheus format.
    pub fn render_prometheus(&self) -> String {
        self.metrics.render_prometheus(&self.lock_map())
    }

    /// What the AsyncAPI document is written with, as `rollcall docs`
    /// writes it: the deployment's topics (so the agents' `$state` and
    /// `$description` are in it) and, while the hub runs, its broker.
    pub fn asyncapi_options(&self) -> AsyncApiOptions {
        AsyncApiOptions {
            broker: lock(&self.link).as_ref().map(|l| l.broker.clone()),
            topics: Some(self.topics.clone()),
        }
    }

    /// Whether the hub is connected to its broker now.
    pub fn is_connected(&self) -> bool {
        lock(&self.link)
            .as_ref()
            .is_some_and(|l| l.session.is_connected())
    }

    /// Sends `body` to a service's query topic (`/{host}/gpio/set/lamp`,
    /// `/{host}/system/get/load`) and returns its answer, `{"ok":true,..}`
    /// or `{"ok":false,"error":..}`, as the service sent it.
    ///
    /// The hub adds the envelope: `id` and a reply `topic` of its own
    /// (replacing any the body had); a body that is not an object is sent
    /// as `{"value": body, ..}`. Errors when the hub is not connected, the
    /// topic is not one to publish to, or no answer comes within `timeout`.
    pub async fn request(
        &self,
        topic: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<Value, HubError> {
        rollcall_proto::topic::check_topic(topic, "topic")
            .map_err(|e| HubError::Invalid(e.to_string()))?;
        let link = lock(&self.link).clone().ok_or(HubError::NotConnected)?;
        if !link.session.is_connected() {
            return Err(HubError::NotConnected);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut envelope = match body {
            Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                map.insert("value".into(), other);
                map
            }
        };
        envelope.insert("id".into(), id.into());
        envelope.insert("topic".into(), link.reply_topic.clone().into());
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        // Whatever happens next, the pending entry goes.
        let _forget = Forget { shared: self, id };
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        // QoS 0: the reply is the receipt (its absence is a timeout), and a
        // PUBACK from a stock Mosquitto would hold that reply back for our
        // delayed TCP acknowledgement (about 40 ms).
        link.session
            .publish(
                topic,
                serde_json::to_vec(&envelope).unwrap_or_default(),
                Qos::AtMostOnce,
                false,
            )
            .await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            // The hub stopped and dropped the waiting requests.
            Ok(Err(_)) => Err(HubError::NotConnected),
            Err(_) => {
                self.metrics.record_error("request_timeout");
                Err(HubError::Timeout {
                    topic: topic.to_owned(),
                    after: timeout,
                })
            }
        }
    }

    /// Hands an answer on the reply topic to the request waiting for it.
    fn deliver_reply(&self, payload: &[u8]) {
        let answer = rollcall_proto::json::parse_object(payload, rollcall_proto::MAX_PAYLOAD);
        let Some(id) = answer
            .as_ref()
            .ok()
            .and_then(|a| a.get("id"))
            .and_then(Value::as_u64)
        else {
            self.metrics.record_error("bad_reply");
            return;
        };
        let waiting = lock(&self.pending).remove(&id);
        if let (Some(tx), Ok(answer)) = (waiting, answer) {
            let _ = tx.send(Value::Object(answer));
        }
    }

    /// Takes a roll-call's report that took `took` into the map, counts it,
    /// and reports what changed, as the hub's own roll-calls do: for a
    /// program that calls the roll itself and shares the map.
    pub fn record_scan(&self, report: &ScanReport, took: Duration) {
        self.metrics.record_rollcall(report, took);
        let events = self.lock_map().apply_scan(report, now_ms());
        self.publish_events(events);
    }

    /// Logs, counts and broadcasts events (for events of a map changed
    /// through [`lock_map`](Self::lock_map)).
    pub fn publish_events(&self, events: Vec<MapEvent>) {
        self.metrics
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        for event in events {
            log_event(&event);
            // No subscriber is not an error: nobody is watching.
            let _ = self.changes.send(event);
        }
    }
}

/// Removes a request's pending entry when the request ends, however it ends.
struct Forget<'a> {
    shared: &'a HubShared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

fn log_event(event: &MapEvent) {
    match event {
        MapEvent::HostAppeared { host, status } => info!(%host, ?status, "host appeared"),
        MapEvent::HostOnline { host } => info!(%host, "host online"),
        MapEvent::HostChanged { host } => debug!(%host, "host details changed"),
        MapEvent::HostOffline { host } => warn!(%host, "host offline"),
        MapEvent::HostMissing { host } => warn!(%host, "host missing"),
        MapEvent::HostExpired { host } => info!(%host, "host forgotten"),
        MapEvent::HostEvicted { host } => {
            warn!(%host, "host evicted: the map is at its byte budget")
        }
        MapEvent::ServiceAppeared { host, service } => info!(%host, %service, "service appeared"),
        MapEvent::ServiceMissing { host, service } => warn!(%host, %service, "service missing"),
        MapEvent::ServiceRemoved { host, service } => info!(%host, %service, "service removed"),
        MapEvent::DescriptionChanged { host, service } => {
            debug!(%host, %service, "description changed")
        }
        MapEvent::HealthChanged {
            host,
            service,
            health,
        } => info!(%host, %service, ?health, "health changed"),
        MapEvent::ValueChanged {
            host,
            service,
            topic,
            ..
        } => debug!(%host, %service, %topic, "value"),
    }
}

/// Runs the hub until `shutdown`: connects (starting the embedded broker
/// first if asked), subscribes to every `$state` and `$description` and
/// then to each output topic the map learns of, takes every message into
/// the map, calls the roll every `every`, expires the map every
/// `expire_every`, and reports each change on `shared.changes`.
pub async fn run_hub(
    config: HubConfig,
    shared: Arc<HubShared>,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    if config.every.is_some_and(|every| every.is_zero()) || config.expire_every.is_zero() {
        return Err(HubError::Invalid(
            "the roll-call and expiry intervals must be more than zero".into(),
        ));
    }
    if let Some(ha) = &config.ha_discovery {
        ha.check()?;
    }
    // The hub's own embedded broker is logged in to as its in-process user.
    let (broker, login) = match (&config.embedded_broker, &config.broker) {
        (Some(options), _) => {
            let b = EmbeddedBroker::start(options.clone())?;
            info!(addr = %b.addr, tls = b.tls, "embedded broker listening");
            (BrokerList::from(b.url()), b.login())
        }
        (None, Some(list)) => (list.clone(), config.login.clone()),
        (None, None) => {
            return Err(HubError::Invalid(
                "give a broker or an embedded broker".into(),
            ));
        }
    };
    // Both loops and both sessions stop on `stop`: on shutdown, or when
    // one loop fails.
    let stop = shutdown.child_token();
    let tracker = TaskTracker::new();
    let ha_stop = CancellationToken::new();
    let suffix = format!("{:08x}", rand::random::<u32>());
    // Under the answer prefix, where a broker's ACL lets every agent write
    // (examples/mosquitto/acl), on no host's topics, and on a `$` level,
    // which no roll-call may name as its answer topic: a forged roll-call
    // cannot make agents answer the dashboard's requests.
    let reply_topic = shared.topics.topic(&format!("stat/$hub-{suffix}/reply"));
    let session = |client_id: String| SessionConfig {
        login: login.clone(),
        max_subscribe_qos: config.subscribe_qos,
        ..SessionConfig::for_brokers(&broker, client_id)
    };
    let started = async {
        let scanner = match config.every {
            Some(_) => Some(Scanner::connect(
                session(format!("rollcall-hub-scan-{suffix}")),
                shared.topics.clone(),
                stop.clone(),
                &tracker,
            )?),
            None => None,
        };
        let watch_config = SessionConfig {
            channel_capacity: WATCH_BUFFER,
            ..session(format!("rollcall-hub-{suffix}"))
        };
        let watch = Session::start(watch_config, stop.clone(), &tracker)?;
        let filters = {
            let mut map = shared.lock_map();
            // The whole list is subscribed now; earlier changes are in it.
            map.take_watch_changes();
            map.watch_filters(&shared.topics)
        };
        for filter in filters {
            watch
                .handle
                .subscribe_with_qos(&filter, Qos::AtMostOnce)
                .await?;
        }
        watch.handle.subscribe(&reply_topic).await?;
        // Home Assistant's session has a token of its own, cancelled after
        // its loop has said `offline` (a clean DISCONNECT fires no will).
        let ha = match &config.ha_discovery {
            Some(ha) => {
                let ha_config = SessionConfig {
                    channel_capacity: crate::ha::BUFFER,
                    max_packet_size: crate::ha::MAX_MESSAGE,
                    last_will: Some(rollcall_net::Will {
                        topic: ha.options.hub_topic(),
                        payload: b"offline".to_vec(),
                        retain: true,
                    }),
                    ..session(format!("rollcall-hub-ha-{suffix}"))
                };
                Some(Session::start(ha_config, ha_stop.clone(), &tracker)?)
            }
            None => None,
        };
        Ok::<_, HubError>((scanner, watch, ha))
    }
    .await;
    let (scanner, watch, ha) = match started {
        Ok(started) => started,
        Err(e) => {
            // What did start (a session) stops before the error is returned.
            stop.cancel();
            ha_stop.cancel();
            tracker.close();
            tracker.wait().await;
            return Err(e);
        }
    };
    *lock(&shared.link) = Some(Link {
        session: watch.handle.clone(),
        reply_topic: reply_topic.clone(),
        // The AsyncAPI document names the first; the others are its peers.
        broker: broker.first().clone(),
    });

    let scanning = {
        let (shared, stop) = (Arc::clone(&shared), stop.clone());
        let (every, mut options) = (config.every, config.scan.clone());
        let per_host = config.window_per_host;
        // The hub watches every `$description` (its map prefers them to
        // answers): its roll-calls ask for brief answers and read nothing
        // a second time.
        if options.descriptions == Descriptions::Read {
            options.descriptions = Descriptions::Watched;
        }
        async move {
            match (scanner, every) {
                (Some(scanner), Some(every)) => {
                    scan_loop(scanner, every, options, per_host, shared, stop).await
                }
                // Watching only: nothing to do here, and ending early would
                // stop the watch loop too.
                _ => {
                    stop.cancelled().await;
                    Ok(())
                }
            }
        }
    };
    let scan = tracker.spawn(stop_on_exit(scanning, stop.clone()));
    let watching = tracker.spawn(stop_on_exit(
        watch_loop(
            watch.handle,
            watch.incoming,
            reply_topic,
            config.expire_every,
            Arc::clone(&shared),
            stop.clone(),
        ),
        stop.clone(),
    ));
    let publishing = {
        let (shared, stop, ha_stop) = (Arc::clone(&shared), stop.clone(), ha_stop.clone());
        let ha_config = config.ha_discovery.clone();
        async move {
            // However the loop ends, its session ends after it.
            let _ha_stop = ha_stop.drop_guard();
            match (ha, ha_config) {
                (Some(session), Some(ha_config)) => {
                    crate::ha::run_ha(session.handle, session.incoming, ha_config, shared, stop)
                        .await
                }
                // Nothing to publish; ending early would stop the hub.
                _ => {
                    stop.cancelled().await;
                    Ok(())
                }
            }
        }
    };
    let publishing = tracker.spawn(stop_on_exit(publishing, stop.clone()));
    let (scan, watching, publishing) = tokio::join!(scan, watching, publishing);
    stop.cancel();
    *lock(&shared.link) = None;
    // Waiting requests learn that the hub stopped.
    lock(&shared.pending).clear();
    tracker.close();
    tracker.wait().await;
    let joined = |r: Result<Result<(), HubError>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Err(HubError::Invalid(format!("a hub task failed: {e}"))))
    };
    joined(scan).and(joined(watching)).and(joined(publishing))
}

/// Runs one of the hub's loops; when it ends, however it ends (an error, or
/// a panic unwinding through it), the other loop and the sessions stop too,
/// so that [`run_hub`] returns rather than waiting for a loop that is gone.
async fn stop_on_exit(
    task: impl Future<Output = Result<(), HubError>>,
    stop: CancellationToken,
) -> Result<(), HubError> {
    let _stop = stop.drop_guard();
    task.await
}

async fn scan_loop(
    mut scanner: Scanner,
    every: Duration,
    mut options: ScanOptions,
    window_per_host: bool,
    shared: Arc<HubShared>,
    stop: CancellationToken,
) -> Result<(), HubError> {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut id: u64 = rand::random::<u32>().into();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        id += 1;
        if window_per_host {
            // Hosts seen answering: made-up `$state`s do not widen it.
            let hosts = shared.lock_map().hosts().filter(|h| h.proven).count();
            if hosts > 0 {
                options.window_ms = crate::scan::window_for(hosts);
            }
        }
        let started = Instant::now();
        let report = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = scanner.scan(id, &options, |_| {}) => r,
        };
        let report = match report {
            Ok(r) => r,
            Err(_) if stop.is_cancelled() => return Ok(()),
            Err(error) => {
                warn!(%error, "roll-call failed");
                shared
                    .metrics
                    .rollcalls_failed
                    .fetch_add(1, Ordering::Relaxed);
                shared.metrics.record_error("rollcall");
                continue;
            }
        };
        shared.record_scan(&report, started.elapsed());
        info!(
            id,
            hosts = report.hosts.len(),
            services = report.service_count(),
            last_ms = report.last_answer_ms(),
            "roll-call done"
        );
    }
}

/// Subscription changes not yet sent, one per filter at most: a change
/// that undoes one still waiting cancels it (a host described and evicted
/// before its outputs were subscribed costs the broker nothing), so the
/// queue never holds more than the filters the map knows or just forgot.
#[derive(Debug, Default)]
struct PendingWatch {
    by_filter: HashMap<String, (u64, bool)>,
    order: std::collections::BTreeMap<u64, String>,
    next: u64,
}

impl PendingWatch {
    fn push(&mut self, change: WatchChange) {
        let (filter, subscribe) = match change {
            WatchChange::Subscribe(f) => (f, true),
            WatchChange::Unsubscribe(f) => (f, false),
        };
        if let Some((seq, waiting)) = self.by_filter.get(&filter).copied() {
            // Changes to one filter alternate: the new one undoes it.
            if waiting != subscribe {
                self.by_filter.remove(&filter);
                self.order.remove(&seq);
            }
            return;
        }
        self.by_filter
            .insert(filter.clone(), (self.next, subscribe));
        self.order.insert(self.next, filter);
        self.next += 1;
    }

    fn pop(&mut self) -> Option<WatchChange> {
        let (_, filter) = self.order.pop_first()?;
        let (_, subscribe) = self.by_filter.remove(&filter)?;
        Some(if subscribe {
            WatchChange::Subscribe(filter)
        } else {
            WatchChange::Unsubscribe(filter)
        })
    }
}

/// Sends the subscription changes the map asks for, one after another,
/// apart from taking messages in: rumqttd matches each new subscription
/// against its whole retained store, and while it does, messages must not
/// pile up in the hub's buffer (a flood of made-up hosts' descriptions held
/// there took the hub to hundreds of MB). A change is sent whole before the
/// next: the session remembers a filter before sending it, so a send cut
/// short could not be repeated.
async fn subscribe_loop(
    session: &SessionHandle,
    pending: &Mutex<PendingWatch>,
    wake: &tokio::sync::Notify,
    shared: &HubShared,
    stop: &CancellationToken,
) -> Result<(), HubError> {
    loop {
        let next = lock(pending).pop();
        let Some(change) = next else {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = wake.notified() => continue,
            }
        };
        let result = match &change {
            WatchChange::Subscribe(t) => session.subscribe_with_qos(t, Qos::AtMostOnce).await,
            WatchChange::Unsubscribe(t) => session.unsubscribe(t).await,
        };
        if let Err(error) = result {
            if stop.is_cancelled() {
                return Ok(());
            }
            warn!(%error, ?change, "value subscription failed");
            shared.metrics.record_error("subscribe");
        }
    }
}

async fn watch_loop(
    session: SessionHandle,
    incoming: mpsc::Receiver<Message>,
    reply_topic: String,
    expire_every: Duration,
    shared: Arc<HubShared>,
    stop: CancellationToken,
) -> Result<(), HubError> {
    let pending = Mutex::new(PendingWatch::default());
    let wake = tokio::sync::Notify::new();
    // Both in this one task: the subscriptions go on while messages are
    // taken in, and end with them.
    tokio::select! {
        r = ingest_loop(&session, incoming, reply_topic, expire_every, &shared, &stop, (&pending, &wake)) => r,
        r = subscribe_loop(&session, &pending, &wake, &shared, &stop) => r,
    }
}

async fn ingest_loop(
    session: &SessionHandle,
    mut incoming: mpsc::Receiver<Message>,
    reply_topic: String,
    expire_every: Duration,
    shared: &HubShared,
    stop: &CancellationToken,
    (pending, wake): (&Mutex<PendingWatch>, &tokio::sync::Notify),
) -> Result<(), HubError> {
    let mut expiry = tokio::time::interval(expire_every);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = expiry.tick() => {
                let events = shared.lock_map().expire(now_ms());
                shared.publish_events(events);
            }
            n = incoming.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return if stop.is_cancelled() {
                        Ok(())
                    } else {
                        Err(rollcall_net::NetError::SessionClosed.into())
                    };
                }
            }
        }
        count_session_drops(session, shared);
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let changes = {
            let mut map = shared.lock_map();
            let now = now_ms();
            for msg in batch.drain(..) {
                if msg.topic == reply_topic {
                    replies.push(msg.payload);
                    continue;
                }
                shared.metrics.messages.fetch_add(1, Ordering::Relaxed);
                match map.ingest(&shared.topics, &msg.topic, &msg.payload, now) {
                    Ok(ev) => events.extend(ev),
                    Err(error) => {
                        debug!(%error, "message not taken into the map");
                        shared.metrics.record_error(error.kind());
                    }
                }
            }
            map.take_watch_changes()
        };
        shared.publish_events(events);
        for reply in replies {
            shared.deliver_reply(&reply);
        }
        if !changes.is_empty() {
            let mut waiting = lock(pending);
            for change in changes {
                waiting.push(change);
            }
            drop(waiting);
            wake.notify_one();
        }
    }
}

/// Brings the session's counts of lost and oversized messages into the
/// metrics. Called before a batch is taken into the map: the session counts
/// a message it drops before it delivers any later one, so whoever sees a
/// later message's effect in the map sees the drop counted too.
fn count_session_drops(session: &SessionHandle, shared: &HubShared) {
    let stats = session.stats();
    let counted = shared.metrics.errors("session_dropped");
    if stats.dropped > counted {
        warn!(
            lost = stats.dropped - counted,
            "the hub's session buffer overflowed"
        );
        shared
            .metrics
            .add_errors("session_dropped", stats.dropped - counted);
    }
    // Messages too large to take (the session logged each): counted, and
    // the connection stays up.
    let counted = shared.metrics.errors("session_oversized");
    if stats.oversized > counted {
        shared
            .metrics
            .add_errors("session_oversized", stats.oversized - counted);
    }
}

/// Default broadcast destinations: every interface's broadcast address.
pub fn default_broadcasts() -> Result<Vec<IpAddr>, HubError> {
    Ok(rollcall_net::interface_broadcasts()?
        .into_iter()
        .map(IpAddr::V4)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostSeen, ServiceSeen};

    fn report(hosts: usize, services: usize) -> ScanReport {
        ScanReport {
            id: 1,
            elapsed_ms: 0,
            window_ms: 0,
            other_ids: 0,
            duplicates: 0,
            lost_in_session: 0,
            digests: Default::default(),
            hosts: (0..hosts)
                .map(|h| HostSeen {
                    hostname: format!("h{h}"),
                    ipaddr: None,
                    extaddr: None,
                    t_ms: Some(3),
                    apps: None,
                    version: None,
                    services: (0..services)
                        .map(|s| ServiceSeen {
                            function: format!("s{s}"),
                            inputs: None,
                            outputs: None,
                            control: None,
                            t_ms: 7,
                            interfaces: None,
                            health: None,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Every sample line is `name{labels} number`, every name has its TYPE,
    /// and histogram buckets only grow.
    #[test]
    fn prometheus_text_is_well_formed_and_counts_what_happened() {
        let shared = HubShared::new(Topics::default());
        shared.record_scan(&report(2, 3), Duration::from_millis(30));
        let mut copies = report(1, 3);
        copies.duplicates = 5;
        shared.record_scan(&copies, Duration::from_millis(700));
        shared
            .lock_map()
            .apply_message(&Topics::default(), "/h1/$state", b"offline", 1);
        shared.metrics.record_error("bad_state");
        shared.metrics.record_error("no such kind");
        let text = shared.render_prometheus();
        let mut typed = std::collections::HashSet::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            let value: f64 = value.parse().expect(line);
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| typed.contains(*f))
                .unwrap_or(name);
            assert!(typed.contains(family), "no TYPE for {line}");
            samples.insert(series.to_owned(), value);
        }
        assert_eq!(samples["rollcall_rollcalls_total"], 2.0);
        // 2 + 6 answers, then 1 + 3.
        assert_eq!(samples["rollcall_answers_total"], 12.0);
        assert_eq!(samples["rollcall_answers_duplicate_total"], 5.0);
        // h1 missed the second roll-call, then said offline.
        assert_eq!(samples["rollcall_hosts{status=\"online\"}"], 1.0);
        assert_eq!(samples["rollcall_hosts{status=\"offline\"}"], 1.0);
        assert_eq!(samples["rollcall_hosts{status=\"missing\"}"], 0.0);
        assert_eq!(samples["rollcall_services{present=\"true\"}"], 6.0);
        assert_eq!(
            samples["rollcall_hub_errors_total{kind=\"bad_state\"}"],
            1.0
        );
        assert_eq!(samples["rollcall_last_rollcall_duration_seconds"], 0.7);
        assert_eq!(samples["rollcall_last_answer_seconds"], 0.007);
        assert_eq!(samples["rollcall_rollcall_duration_seconds_count"], 2.0);
        assert!((samples["rollcall_rollcall_duration_seconds_sum"] - 0.73).abs() < 1e-9);
        assert_eq!(
            samples["rollcall_rollcall_duration_seconds_bucket{le=\"0.05\"}"],
            1.0
        );
        assert_eq!(
            samples["rollcall_rollcall_duration_seconds_bucket{le=\"1\"}"],
            2.0
        );
        let buckets: Vec<f64> = DURATION_BUCKETS
            .iter()
            .map(|b| samples[&format!("rollcall_rollcall_duration_seconds_bucket{{le=\"{b}\"}}")])
            .chain([samples["rollcall_rollcall_duration_seconds_bucket{le=\"+Inf\"}"]])
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }

    #[test]
    fn waiting_subscription_changes_that_undo_each_other_cancel() {
        let sub = |f: &str| WatchChange::Subscribe(f.into());
        let unsub = |f: &str| WatchChange::Unsubscribe(f.into());
        let mut p = PendingWatch::default();
        p.push(sub("/a/+"));
        p.push(unsub("/old/+"));
        // A made-up host described and evicted before anything was sent.
        for i in 0..1000 {
            p.push(sub(&format!("/fake{i}/+")));
            p.push(unsub(&format!("/fake{i}/+")));
        }
        p.push(sub("/old/+"));
        p.push(sub("/b/+"));
        assert_eq!(p.by_filter.len(), 2);
        assert_eq!(p.pop(), Some(sub("/a/+")));
        assert_eq!(p.pop(), Some(sub("/b/+")));
        assert_eq!(p.pop(), None);
        assert!(p.order.is_empty());
    }

    #[tokio::test]
    async fn events_reach_subscribers_and_requests_need_a_connection() {
        let shared = HubShared::new(Topics::default());
        let mut rx = shared.changes.subscribe();
        shared.record_scan(&report(1, 0), Duration::ZERO);
        assert_eq!(
            rx.recv().await.unwrap(),
            MapEvent::HostAppeared {
                host: "h0".into(),
                status: crate::HostStatus::Online
            }
        );
        assert!(!shared.is_connected());
        assert!(matches!(
            shared
                .request("/h0/x/get", serde_json::json!({}), Duration::from_secs(1))
                .await,
            Err(HubError::NotConnected)
        ));
        // A reply nobody waits for is counted, not a failure.
        shared.deliver_reply(br#"{"ok":true}"#);
        shared.deliver_reply(br#"{"ok":true,"id":99}"#);
        assert_eq!(shared.metrics.errors("bad_reply"), 1);
    }
}
