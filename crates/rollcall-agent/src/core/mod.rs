//! `AgentCore`: every decision the agent makes, and no I/O. It takes one
//! [`Input`] at a time with the time it happened ([`Now`]) and returns the
//! [`Effect`]s to carry out, the way rumqttc's `MqttState` returns packets
//! for its event loop to write. The shell (`host.rs`) owns the sockets, the
//! sessions, the files and the clock; it feeds inputs in and carries effects
//! out, in order, and decides nothing.
//!
//! What is decided here: the gate, the host report and the answers, where
//! answers go and the relays (docs/protocol.md sections 1 to 5), query
//! routing and error answers (section 6), health changes and the
//! descriptions re-published because of them (section 4), ticks, hardware
//! wake-ups, the simulated devices' topics, and when state is saved.

mod query;
mod rollcall;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rollcall_net::{BrokerUrl, Qos, Will};
use rollcall_proto::topic::matches;
use rollcall_proto::{Description, HostState, Liveness, Query, Topics, error_reply};
use rollcall_services::{Ctx, Outcome, Publish, Service, ServiceError};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::registry::Built;
use crate::sim::SimControl;
use crate::{AgentStats, Config};

use self::rollcall::{Pending, Relay, Scheduled};

/// How long after a change a service's state is saved: commands within it
/// share one write. A power cut inside it loses those last commands.
pub const SAVE_DELAY: Duration = Duration::from_millis(50);
/// How long after a failed save (a full disk) it is tried again.
pub const SAVE_RETRY: Duration = Duration::from_secs(5);
/// How many foreign services (a `$description` on the host's broker) the
/// host answer lists, at most: anyone on the broker can publish
/// descriptions, and the host answer must stay well inside a message
/// (256 names of up to 64 bytes are 17 KiB).
pub const MAX_FOREIGN_APPS: usize = 256;

/// Which MQTT session an effect or a message concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SessionId {
    /// The agent's own broker.
    Local,
    /// A session to a requester's broker, opened for relays (its number).
    Remote(u64),
}

/// The time an input happened: the monotonic clock for schedules, the
/// wall clock for what goes on the wire (`ts`, signature freshness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub at: Instant,
    /// Unix milliseconds.
    pub unix_ms: u64,
}

/// Something that happened, for the core to decide on.
#[derive(Debug)]
pub enum Input<'a> {
    /// The agent starts: what each service saved before (by name), as the
    /// shell read it from the state folder.
    Start {
        /// Saved states by service name; a service missing here saved none.
        saved: BTreeMap<String, Value>,
    },
    /// A UDP datagram on the roll-call port.
    Datagram {
        /// Its bytes.
        bytes: &'a [u8],
        /// Who sent it.
        from: SocketAddr,
    },
    /// An MQTT message on a subscribed topic.
    Message {
        /// The session it arrived on.
        session: SessionId,
        /// Its topic.
        topic: &'a str,
        /// Its payload.
        payload: &'a [u8],
    },
    /// The answer to an [`Effect::Resolve`].
    Resolved {
        /// The lookup's number.
        lookup: u64,
        /// The first address found, or `None` when the name did not resolve.
        addr: Option<SocketAddr>,
    },
    /// The time asked for by [`Effect::WakeAt`] has come (or passed).
    Timer,
    /// A service's hardware has events waiting.
    Hardware,
    /// A session can no longer be used: it could not be opened, or its
    /// event loop ended.
    SessionLost(SessionId),
    /// The host's external address, once known.
    ExternalAddr(IpAddr),
    /// Saving a service's state failed; it is tried again later.
    SaveFailed {
        /// The service.
        service: String,
    },
    /// The agent is asked to stop.
    Shutdown,
}

/// Something the shell must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish a message.
    Publish {
        /// Through which session.
        session: SessionId,
        /// Where.
        topic: String,
        /// What.
        payload: Vec<u8>,
        /// With which QoS.
        qos: Qos,
        /// Whether the broker keeps it.
        retain: bool,
    },
    /// Publish retained on the agent's own broker and keep it as the
    /// topic's state, published again after every reconnect (`$state`,
    /// `$description`). An empty payload clears the topic.
    PublishState {
        /// Where.
        topic: String,
        /// What.
        payload: Vec<u8>,
    },
    /// Subscribe (kept across reconnects).
    Subscribe {
        /// On which session.
        session: SessionId,
        /// The filter.
        filter: String,
    },
    /// Unsubscribe.
    Unsubscribe {
        /// On which session.
        session: SessionId,
        /// The filter.
        filter: String,
    },
    /// Open a session to another broker, with the agent's own settings but
    /// without its credentials' last will. Messages for it follow at once;
    /// the session queues them until it connects.
    Open {
        /// The new session's id.
        session: SessionId,
        /// Where it connects.
        broker: BrokerUrl,
    },
    /// Close a session opened with [`Effect::Open`].
    Close {
        /// Which.
        session: SessionId,
    },
    /// Resolve a host name; the answer comes back as [`Input::Resolved`].
    Resolve {
        /// The lookup's number.
        lookup: u64,
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
    /// Save a service's state (atomically); a failure comes back as
    /// [`Input::SaveFailed`].
    Save {
        /// The service.
        service: String,
        /// What it keeps.
        state: Value,
    },
    /// Feed [`Input::Timer`] at this time. Every batch of effects ends with
    /// one when the core has anything scheduled; a batch without one means
    /// nothing is.
    WakeAt(Instant),
}

/// How the core learns about this host's routes: the two questions about
/// addresses it cannot answer from its inputs. The shell asks the kernel;
/// tests answer from a table.
pub trait Routes: Send {
    /// This host's address on the route towards `ip`.
    fn local_addr_towards(&self, ip: IpAddr) -> Option<IpAddr>;
    /// Whether `ip` is one of this host's addresses.
    fn is_local(&self, ip: IpAddr) -> bool;
}

/// One service and everything the agent keeps about it.
struct Slot {
    service: Box<dyn Service>,
    /// Its simulated hardware's controls, under `--sim`.
    sim: Option<Box<dyn SimControl>>,
    /// The state to start from when it saved none (the configuration file's).
    configured: Option<Value>,
    /// When its next tick is due (`None`: it never ticks).
    due: Option<Instant>,
    /// What it is subscribed to beside its queries ([`Service::topics_in`]).
    topics_in: Vec<String>,
    /// Its state changed since it was last saved.
    unsaved: bool,
    /// The digest of the `$description` payload last published for it,
    /// which its brief answers carry.
    digest: Option<String>,
}

/// Where a message on the agent's own broker is handled.
#[derive(Debug, PartialEq)]
enum Route {
    /// `/udp/request`: a roll-call over MQTT.
    RollCall,
    /// `/{host}/$state`: the host's own liveness, watched for a stale will.
    OwnState,
    /// `/{host}/{app}/$description`: the host's services, foreign ones too.
    Description(String),
    /// One of a service's [`Service::topics_in`].
    ServiceInput(usize),
    /// `/{host}/sim/{service}/...`: a simulated device of that service.
    Sim(usize),
    /// A query or `getapps`.
    Query(Query),
    /// Anything else: perhaps a foreign service's answer to relay.
    Other,
}

/// Every decision of one agent.
pub struct AgentCore {
    config: Arc<Config>,
    topics: Topics,
    /// This run's session number, in `$state` and the last will: higher
    /// than any earlier run's (the shell takes it from the state folder).
    session: u64,
    /// Shut down: its own `offline` said, no `online` again.
    stopping: bool,
    gate: crate::gate::Gate,
    slots: Vec<Slot>,
    routes: Box<dyn Routes>,
    stats: Arc<AgentStats>,
    rng: StdRng,
    /// The addresses of the agent's broker (every node of its list, the
    /// first first): answers to them are not relayed.
    own_brokers: Vec<SocketAddr>,
    extaddr: Option<IpAddr>,
    started: Option<Instant>,
    /// Services of this host that published a `$description`, ours included.
    known_apps: BTreeSet<String>,
    /// Answers waiting out their share of the window.
    scheduled: Vec<Scheduled>,
    /// Roll-calls waiting for their requester's broker's name to resolve.
    pending: BTreeMap<u64, Pending>,
    next_lookup: u64,
    relays: Vec<Relay>,
    /// Sessions to requesters' brokers, by the broker's URL, open while a
    /// relay uses them.
    remotes: BTreeMap<String, SessionId>,
    next_remote: u64,
    /// When the services' unsaved states are written.
    save_at: Option<Instant>,
    /// Services whose health changed since their description was last
    /// published.
    health_changed: BTreeSet<usize>,
}

impl AgentCore {
    /// A core for `config`'s host with its built services. `own_brokers`
    /// are the addresses of the agent's broker (at least one); `session` is this run's session
    /// number ([`crate::state::next_session`]); `seed` seeds the answer
    /// jitter.
    pub fn new(
        config: Arc<Config>,
        services: Vec<Built>,
        own_brokers: Vec<SocketAddr>,
        routes: Box<dyn Routes>,
        stats: Arc<AgentStats>,
        session: u64,
        seed: u64,
    ) -> Self {
        let slots = services
            .into_iter()
            .map(|b| Slot {
                service: b.service,
                sim: b.sim,
                configured: b.configured,
                due: None,
                topics_in: Vec::new(),
                unsaved: false,
                digest: None,
            })
            .collect();
        AgentCore {
            topics: config.topics.clone(),
            session,
            stopping: false,
            gate: crate::gate::Gate::new(
                config.max_rollcalls_per_s,
                config.cluster_key.as_ref().map(|k| k.expose().clone()),
            ),
            extaddr: config.extaddr,
            config,
            slots,
            routes,
            stats,
            rng: StdRng::seed_from_u64(seed),
            own_brokers,
            started: None,
            known_apps: BTreeSet::new(),
            scheduled: Vec::new(),
            pending: BTreeMap::new(),
            next_lookup: 0,
            relays: Vec::new(),
            remotes: BTreeMap::new(),
            next_remote: 0,
            save_at: None,
            health_changed: BTreeSet::new(),
        }
    }

    /// The last will the agent's own session connects with: `offline` and
    /// this run's session number, retained on the host's `$state`, so that a
    /// reader can tell it from a later run's `online` (docs/protocol.md
    /// section 4).
    pub fn last_will(&self) -> Will {
        Will {
            topic: self.topics.state(self.host()),
            payload: HostState::offline(self.session).to_payload(),
            retain: true,
        }
    }

    /// This run's session number.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The names of the services, in the order they run.
    pub fn service_names(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| s.service.name().to_owned())
            .collect()
    }

    /// Decides what `input`, at `now`, makes the agent do.
    pub fn handle(&mut self, input: Input<'_>, now: Now) -> Vec<Effect> {
        let mut out = Out::default();
        match input {
            Input::Start { saved } => self.start(saved, now, &mut out),
            Input::Datagram { bytes, from } => self.on_datagram(bytes, from, now, &mut out),
            Input::Message {
                session: SessionId::Local,
                topic,
                payload,
            } => self.on_message(topic, payload, now, &mut out),
            // Sessions to other brokers subscribe to nothing.
            Input::Message { .. } => {}
            Input::Resolved { lookup, addr } => self.on_resolved(lookup, addr, now, &mut out),
            Input::Timer => self.on_timer(now, &mut out),
            Input::Hardware => self.wake_services(now, &mut out),
            Input::SessionLost(session) => self.on_session_lost(session, &mut out),
            Input::ExternalAddr(ip) => self.extaddr = Some(ip),
            Input::SaveFailed { service } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.service.name() == service) {
                    slot.unsaved = true;
                    let retry = now.at + SAVE_RETRY;
                    self.save_at = Some(self.save_at.map_or(retry, |at| at.max(retry)));
                }
            }
            Input::Shutdown => {
                self.flush_health(now, &mut out);
                self.save_changed(&mut out);
                self.scheduled.clear();
                self.stopping = true;
                let state = self.topics.state(self.host());
                out.state(state, HostState::offline(self.session).to_payload());
            }
        }
        self.flush_health(now, &mut out);
        if let Some(at) = self.next_wake() {
            out.effects.push(Effect::WakeAt(at));
        }
        out.effects
    }

    fn host(&self) -> &str {
        &self.config.hostname
    }

    fn ctx(&self, now: Now) -> Ctx<'_> {
        Ctx {
            host: &self.config.hostname,
            topics: &self.topics,
            now_ms: now.unix_ms,
        }
    }

    /// The earliest time something is scheduled: a tick, an answer, a
    /// relay's end, a save.
    fn next_wake(&self) -> Option<Instant> {
        let ticks = self.slots.iter().filter_map(|s| s.due);
        let answers = self.scheduled.iter().map(|s| s.at);
        let relays = self.relays.iter().map(|r| r.until);
        ticks.chain(answers).chain(relays).chain(self.save_at).min()
    }

    /// Subscribes to everything the agent serves, gives every service what
    /// it saved (or its configured state), and publishes `online` and every
    /// description retained. The session queues all of it until it connects.
    fn start(&mut self, saved: BTreeMap<String, Value>, now: Now, out: &mut Out) {
        self.started = Some(now.at);
        self.gate.start_at(now.unix_ms);
        let host = self.host().to_owned();
        let mut filters = vec![
            self.topics.state(&host),
            self.topics.udp_request(),
            self.topics.getapps(&host),
            self.topics.description(&host, "+"),
        ];
        for slot in &self.slots {
            filters.extend(self.topics.query_filters(&host, slot.service.name()));
            if let Some(sim) = &slot.sim {
                filters.push(self.sim_filter(slot.service.name(), sim.filter_suffix()));
            }
        }
        for filter in filters {
            out.subscribe(SessionId::Local, filter);
        }
        for index in 0..self.slots.len() {
            self.restore(index, saved.get(self.slots[index].service.name()), now, out);
        }
        for index in 0..self.slots.len() {
            self.refresh_topics_in(index, now, out);
        }
        // A built-in service that ran before and does not now (no GPIO chip
        // any more) must not stay listed through its retained description.
        for name in crate::registry::names() {
            if !self.slots.iter().any(|s| s.service.name() == name) {
                out.state(self.topics.description(&host, name), "");
            }
        }
        out.state(
            self.topics.state(&host),
            HostState::online(self.session).to_payload(),
        );
        for index in 0..self.slots.len() {
            self.publish_description(index, now, out);
        }
    }

    /// Gives service `index` its saved state, or when there is none or it is
    /// refused, the configuration file's; the first tick is due at once.
    fn restore(&mut self, index: usize, saved: Option<&Value>, now: Now, out: &mut Out) {
        let name = self.slots[index].service.name().to_owned();
        let configured = self.slots[index].configured.clone();
        let candidates = [
            ("saved state", saved.cloned()),
            ("configuration file", configured),
        ];
        for (origin, initial) in candidates {
            let Some(initial) = initial else { continue };
            match self.call(index, now, |svc, ctx| svc.restore(initial, ctx)) {
                Ok(publish) => {
                    info!(service = %name, from = origin, "configuration restored");
                    out.publish_all(publish);
                    break;
                }
                Err(error) => {
                    warn!(%error, service = %name, from = origin, "configuration refused")
                }
            }
        }
        let slot = &mut self.slots[index];
        slot.due = slot.service.tick_every().map(|_| now.at);
    }

    /// Calls service `index` with a context for `now`. Every call into a
    /// service goes through here, so a change of its health, whatever
    /// caused it, is noticed; [`AgentCore::flush_health`] then re-publishes
    /// the description once, after what the call itself publishes and
    /// before any answer to it.
    fn call<R>(
        &mut self,
        index: usize,
        now: Now,
        f: impl FnOnce(&mut dyn Service, &Ctx<'_>) -> R,
    ) -> R {
        let ctx = Ctx {
            host: &self.config.hostname,
            topics: &self.topics,
            now_ms: now.unix_ms,
        };
        let service = self.slots[index].service.as_mut();
        let before = service.health();
        let result = f(service, &ctx);
        if service.health() != before {
            self.health_changed.insert(index);
        }
        result
    }

    /// Re-publishes the descriptions of services whose health changed.
    fn flush_health(&mut self, now: Now, out: &mut Out) {
        for index in std::mem::take(&mut self.health_changed) {
            self.publish_description(index, now, out);
        }
    }

    fn publish_description(&mut self, index: usize, now: Now, out: &mut Out) {
        self.health_changed.remove(&index);
        let desc = self.slots[index].service.describe(&self.ctx(now));
        let payload = desc.to_payload(self.host());
        self.retain_description(index, payload, out);
    }

    /// Publishes `payload` ([`Description::to_payload`]) retained on
    /// service `index`'s `$description` and keeps the digest of those very
    /// bytes, which its brief answers carry: the two cannot disagree
    /// (docs/protocol.md section 3).
    fn retain_description(&mut self, index: usize, payload: Vec<u8>, out: &mut Out) -> String {
        let digest = rollcall_proto::digest(&payload);
        let topic = self
            .topics
            .description(self.host(), self.slots[index].service.name());
        out.state(topic, payload);
        self.slots[index].digest = Some(digest.clone());
        digest
    }

    /// The digest of service `index`'s retained description, for an
    /// answer that carries `desc`: the digest last published, or when the
    /// description changed since without being published again, the new
    /// one's, published now (before the answer, on the same session, so a
    /// scanner that reads it finds it).
    fn current_digest(&mut self, index: usize, desc: &Description, out: &mut Out) -> String {
        let payload = desc.to_payload(self.host());
        let digest = rollcall_proto::digest(&payload);
        if self.slots[index].digest.as_deref() == Some(digest.as_str()) {
            return digest;
        }
        self.retain_description(index, payload, out)
    }

    /// Where a message on topic `topic` of the agent's own broker goes.
    fn route(&self, topic: &str) -> Route {
        let host = self.host();
        if topic == self.topics.udp_request() {
            return Route::RollCall;
        }
        if topic == self.topics.state(host) {
            return Route::OwnState;
        }
        if matches(&self.topics.description(host, "+"), topic) {
            let app = topic.rsplit('/').nth(1).unwrap_or_default();
            return Route::Description(app.to_owned());
        }
        if let Some(index) = self
            .slots
            .iter()
            .position(|s| s.topics_in.iter().any(|t| t == topic))
        {
            return Route::ServiceInput(index);
        }
        if let Some(index) = self.slots.iter().position(|s| {
            s.sim.as_ref().is_some_and(|sim| {
                matches(
                    &self.sim_filter(s.service.name(), sim.filter_suffix()),
                    topic,
                )
            })
        }) {
            return Route::Sim(index);
        }
        if let Some(query) = self.topics.parse_query(host, topic) {
            return Route::Query(query);
        }
        if topic == self.topics.getapps(host) {
            return Route::Query(Query::GetApps);
        }
        Route::Other
    }

    fn on_message(&mut self, topic: &str, payload: &[u8], now: Now, out: &mut Out) {
        match self.route(topic) {
            Route::RollCall => self.on_rollcall_message(payload, now, out),
            Route::OwnState => self.on_own_state(payload, out),
            Route::Description(app) => {
                if payload.is_empty() {
                    self.known_apps.remove(&app);
                } else if rollcall_proto::topic::check_name(&app).is_err() {
                    AgentStats::bump(self.stats.dropped_malformed());
                    debug!(%app, "a description under a name that is not a service's; ignored");
                } else if self.known_apps.len() >= MAX_FOREIGN_APPS
                    && !self.known_apps.contains(&app)
                {
                    AgentStats::bump(self.stats.dropped_refused());
                    warn!(%app, "{MAX_FOREIGN_APPS} foreign services are known already; not listed");
                } else {
                    self.known_apps.insert(app);
                }
            }
            Route::ServiceInput(index) => self.on_service_message(index, topic, payload, now, out),
            Route::Sim(index) => self.drive_sim(index, topic, payload, out),
            Route::Query(query) => self.on_query(query, payload, now, out),
            Route::Other => self.relay(topic, payload, now, out),
        }
    }

    /// The host's own `$state` as the broker has it. While the agent runs
    /// (it hears this only while connected) an `offline` there is never
    /// true, and as the retained state it would tell every reader that
    /// connects later that the host is down: the agent says `online` again.
    /// Mostly it is an earlier run's last will, published by a broker that
    /// noticed the old connection's death only after this run said
    /// `online`; it can also be a plain one (an agent from before session
    /// numbers), or this run's own will from a connection that died and came
    /// back, delivered late. Once the agent stops, its own `offline` stands.
    fn on_own_state(&mut self, payload: &[u8], out: &mut Out) {
        let Ok(Some(state)) = HostState::parse(payload) else {
            return;
        };
        if self.stopping || state.liveness != Liveness::Offline {
            return;
        }
        info!(
            said = %state,
            session = self.session,
            "the host's $state says offline while the agent runs (a stale last will); online again"
        );
        let topic = self.topics.state(self.host());
        out.state(topic, HostState::online(self.session).to_payload());
    }

    /// Whether answers on `topic` would land on a topic the agent serves:
    /// a relay would subscribe to it and, when it ends, unsubscribe the
    /// agent from it, and answers there would be taken for queries.
    fn is_own_topic(&self, topic: &str) -> bool {
        topic == self.topics.udp_report() || self.route(topic) != Route::Other
    }

    /// `/{host}/sim/{service}/{suffix}`.
    fn sim_filter(&self, service: &str, suffix: &str) -> String {
        self.topics
            .topic(&format!("{}/sim/{service}/{suffix}", self.host()))
    }

    /// A message for service `index`'s simulated device; a refusal goes to
    /// the service's error topic.
    fn drive_sim(&mut self, index: usize, topic: &str, payload: &[u8], out: &mut Out) {
        let slot = &self.slots[index];
        let name = slot.service.name();
        let prefix = self.sim_filter(name, "");
        let rest = topic.strip_prefix(&prefix).unwrap_or_default();
        let levels: Vec<&str> = rest.split('/').collect();
        let result = rollcall_proto::Request::parse(payload)
            .map_err(ServiceError::from)
            .and_then(|request| match &slot.sim {
                Some(sim) => sim.drive(&levels, &request.body),
                None => Err(ServiceError::UnknownItem(rest.to_owned())),
            });
        if let Err(error) = result {
            let topic = self.topics.app_error(self.host(), name);
            out.plain(topic, error_reply(None, &error.to_string()));
        }
    }

    /// A message on a topic a service consumes beside its queries (the
    /// display's input); a refusal goes to the service's error topic.
    fn on_service_message(
        &mut self,
        index: usize,
        topic: &str,
        payload: &[u8],
        now: Now,
        out: &mut Out,
    ) {
        match self.call(index, now, |svc, ctx| svc.on_message(topic, payload, ctx)) {
            Ok(outcome) => self.after(index, outcome, now, out),
            Err(error) => {
                self.flush_health(now, out);
                AgentStats::bump(self.stats.query_errors());
                let name = self.slots[index].service.name();
                let topic = self.topics.app_error(self.host(), name);
                out.plain(topic, error_reply(None, &error.to_string()));
            }
        }
    }

    /// Carries out what a `set`, `control` or input message asks for
    /// besides its answer: the new states, the new description, and saving
    /// what must survive a restart.
    fn after(&mut self, index: usize, outcome: Outcome, now: Now, out: &mut Out) {
        // New topics first: the broker takes the subscription before it
        // delivers what follows on the same connection, so whoever sees the
        // outcome can already use them.
        if outcome.description_changed {
            self.refresh_topics_in(index, now, out);
        }
        out.publish_all(outcome.publish);
        if outcome.description_changed {
            self.publish_description(index, now, out);
        }
        if outcome.persist {
            // Saved a moment later, with whatever else changed meanwhile: a
            // burst of commands costs one write, not one fsync each.
            self.slots[index].unsaved = true;
            self.save_at.get_or_insert(now.at + SAVE_DELAY);
        }
    }

    /// Subscribes to what service `index` now consumes beside its queries,
    /// and unsubscribes from what it no longer does.
    fn refresh_topics_in(&mut self, index: usize, now: Now, out: &mut Out) {
        let wanted = self.slots[index].service.topics_in(&self.ctx(now));
        let old = std::mem::replace(&mut self.slots[index].topics_in, wanted.clone());
        for topic in old.iter().filter(|t| !wanted.contains(t)) {
            out.unsubscribe(SessionId::Local, topic.clone());
        }
        for topic in wanted.iter().filter(|t| !old.contains(t)) {
            out.subscribe(SessionId::Local, topic.clone());
        }
    }

    /// What is due now: answers whose jitter has passed, relays past their
    /// time, service ticks, the save.
    fn on_timer(&mut self, now: Now, out: &mut Out) {
        self.send_scheduled(now, out);
        self.expire_relays(now, out);
        for index in 0..self.slots.len() {
            if self.slots[index].due.is_none_or(|at| at > now.at) {
                continue;
            }
            let publish = self.call(index, now, |svc, ctx| svc.tick(ctx));
            let slot = &mut self.slots[index];
            slot.due = slot.service.tick_every().map(|every| now.at + every);
            out.publish_all(publish);
            self.flush_health(now, out);
        }
        if self.save_at.is_some_and(|at| at <= now.at) {
            self.save_changed(out);
        }
    }

    /// Hands the services' hardware events to them. A service may want its
    /// tick sooner afterwards (to read a line again after bounce).
    fn wake_services(&mut self, now: Now, out: &mut Out) {
        for index in 0..self.slots.len() {
            let publish = self.call(index, now, |svc, ctx| svc.wake(ctx));
            let slot = &mut self.slots[index];
            if let Some(every) = slot.service.tick_every() {
                let sooner = now.at + every;
                if slot.due.is_none_or(|at| at > sooner) {
                    slot.due = Some(sooner);
                }
            }
            out.publish_all(publish);
            self.flush_health(now, out);
        }
    }

    /// Asks for the state of every service changed since the last save.
    fn save_changed(&mut self, out: &mut Out) {
        self.save_at = None;
        for slot in &mut self.slots {
            if !std::mem::take(&mut slot.unsaved) {
                continue;
            }
            if let Some(state) = slot.service.saved_state() {
                out.effects.push(Effect::Save {
                    service: slot.service.name().to_owned(),
                    state,
                });
            }
        }
    }

    /// Every service this host has: built in, announced, and foreign ones
    /// that published a description.
    fn apps(&self) -> Vec<String> {
        let mut apps = self.known_apps.clone();
        apps.extend(self.slots.iter().map(|s| s.service.name().to_owned()));
        apps.into_iter().collect()
    }
}

/// The effects of one input, built up in order.
#[derive(Default)]
struct Out {
    effects: Vec<Effect>,
}

impl Out {
    /// A message on the agent's broker, QoS 0.
    ///
    /// Not QoS 1, because of what a broker's PUBACK does to the next
    /// command: a stock Mosquitto (no `set_tcp_nodelay`) sends the PUBACK,
    /// our kernel delays its TCP acknowledgement, and Nagle's algorithm
    /// holds the broker's next message to us (the next `set`, or the
    /// `/udp/report` we subscribe to) until that acknowledgement comes,
    /// about 40 ms later. QoS 0 has no PUBACK, so nothing is held. Nothing
    /// here needs the broker's receipt: a state is retained and republished
    /// by the next change or refresh, a reply is asked for again. (Answers
    /// to roll-calls keep QoS 1, for the scanner's sake: see `send` in
    /// `rollcall.rs`.)
    /// Over TCP a QoS 0 message is lost only with its connection, and the
    /// states that must outlive one (`$state`, `$description`) go through
    /// [`Out::state`], which keeps QoS 1 and republishes after a reconnect.
    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        self.effects.push(Effect::Publish {
            session: SessionId::Local,
            topic,
            payload,
            qos: Qos::AtMostOnce,
            retain,
        });
    }

    /// A reply or error: not retained.
    fn plain(&mut self, topic: String, payload: Vec<u8>) {
        self.publish(topic, payload, false);
    }

    fn publish_all(&mut self, publish: Vec<Publish>) {
        for p in publish {
            self.publish(p.topic, p.payload, p.retain);
        }
    }

    fn state(&mut self, topic: String, payload: impl Into<Vec<u8>>) {
        self.effects.push(Effect::PublishState {
            topic,
            payload: payload.into(),
        });
    }

    fn subscribe(&mut self, session: SessionId, filter: String) {
        self.effects.push(Effect::Subscribe { session, filter });
    }

    fn unsubscribe(&mut self, session: SessionId, filter: String) {
        self.effects.push(Effect::Unsubscribe { session, filter });
    }
}
