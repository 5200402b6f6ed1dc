//! The MQTT session: one task owns the rumqttc event loop and keeps the
//! session alive across broker outages. It remembers subscriptions and
//! retained state so that every reconnect restores them, because a
//! clean-session broker forgets both. Given several brokers (the nodes of
//! one cluster), it moves to the next whenever a connection fails, and it
//! subscribes again when a broker refuses a subscription or never confirms
//! it (a NATS node does both for some seconds after a peer died).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, Publish, QoS, Request, Subscribe, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::{BrokerList, BrokerUrl, Login, NetError};

/// How long a SUBACK may take before the session subscribes again.
const SUBACK_WAIT: Duration = Duration::from_secs(5);

/// Re-subscriptions on one connection before the session gives the
/// connection up and moves to the next broker (about 12 s of retries with
/// [`Backoff`]'s delays).
const MAX_RESUBSCRIBES: u32 = 10;

/// How long a clean shutdown waits for queued requests and the DISCONNECT
/// to reach the broker before it drops the connection anyway.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// Everything needed to open a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The broker to connect to first.
    pub broker: BrokerUrl,
    /// Brokers tried in turn after `broker` whenever a connection fails or
    /// ends: other nodes of the same cluster. The login goes to each of
    /// them; keep it empty for a single broker.
    pub alternates: Vec<BrokerUrl>,
    /// MQTT client id, without `+ # $ /` (which rumqttd refuses).
    pub client_id: String,
    /// Keep-alive interval: zero, or at least one second (default 5 s).
    pub keep_alive: Duration,
    /// Published by the broker when the connection dies without DISCONNECT.
    pub last_will: Option<Will>,
    /// User name and password, and the TLS files for `mqtts://`.
    pub login: Login,
    /// Largest packet sent, and largest message delivered, in bytes
    /// (default 256 KiB). A larger message from the broker, up to
    /// [`MAX_INCOMING_PACKET`], is read, dropped and counted
    /// ([`SessionStats::oversized`]): refusing it at the protocol level would
    /// end the connection, and a retained one would end every reconnect too.
    pub max_packet_size: usize,
    /// Capacity of both the request queue and the incoming-message channel
    /// (default 1024).
    pub channel_capacity: usize,
}

/// The largest packet a session reads from its broker. Anything up to this
/// size is read whole (one buffer, freed after) and, past
/// [`SessionConfig::max_packet_size`], dropped; beyond it the connection is
/// a protocol error, so a broker should refuse such messages (Mosquitto's
/// `message_size_limit`; the embedded broker takes at most 1 MiB).
pub const MAX_INCOMING_PACKET: usize = 16 * 1024 * 1024;

impl SessionConfig {
    /// A configuration with the defaults: 5 s keep-alive, no will, no
    /// credentials, 256 KiB packets, 1024-entry channels.
    pub fn new(broker: BrokerUrl, client_id: impl Into<String>) -> Self {
        Self {
            broker,
            alternates: Vec::new(),
            client_id: client_id.into(),
            keep_alive: Duration::from_secs(5),
            last_will: None,
            login: Login::default(),
            max_packet_size: 256 * 1024,
            channel_capacity: 1024,
        }
    }
}

impl SessionConfig {
    /// A configuration with the defaults for the brokers of `brokers`,
    /// tried in their order.
    pub fn for_brokers(brokers: &BrokerList, client_id: impl Into<String>) -> Self {
        Self {
            alternates: brokers.alternates().to_vec(),
            ..Self::new(brokers.first().clone(), client_id)
        }
    }

    /// Every broker, in the order they are tried.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerUrl> {
        std::iter::once(&self.broker).chain(&self.alternates)
    }

    fn brokers_text(&self) -> String {
        self.brokers()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The last will: always sent with QoS 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic the broker publishes the will on.
    pub topic: String,
    /// The will's payload.
    pub payload: Vec<u8>,
    /// Whether the broker retains it.
    pub retain: bool,
}

/// A message received on a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published on.
    pub topic: String,
    /// The payload, untouched.
    pub payload: Bytes,
    /// Set when the broker delivered it from its retained store.
    pub retain: bool,
}

/// Delivery guarantee of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0: fire and forget.
    AtMostOnce,
    /// QoS 1: acknowledged by the broker.
    AtLeastOnce,
}

impl From<Qos> for QoS {
    fn from(qos: Qos) -> Self {
        match qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        }
    }
}

/// Counters of a session since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Connections accepted by the broker (ConnAck received).
    pub connects: u64,
    /// Publishes received from the broker.
    pub received: u64,
    /// Publishes written to the broker.
    pub sent: u64,
    /// Received publishes dropped because the incoming channel was full.
    pub dropped: u64,
    /// Received publishes dropped because they were larger than
    /// `max_packet_size`.
    pub oversized: u64,
    /// Times the remembered filters were subscribed again because the
    /// broker refused a subscription (SUBACK 0x80) or did not confirm it.
    pub resubscribes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    oversized: AtomicU64,
    resubscribes: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the session must restore after every reconnect, and whether it is
/// connected right now.
///
/// Both live under one lock so that a request is sent exactly once: either
/// the handle sees the session connected and sends it itself, or it only
/// records it and the next ConnAck replays it.
#[derive(Debug, Default)]
struct Remembered {
    connected: bool,
    filters: BTreeMap<String, QoS>,
    states: BTreeMap<String, Vec<u8>>,
}

impl Remembered {
    /// Records a subscription; returns whether the caller must send it now.
    fn subscribe(&mut self, filter: &str, qos: QoS) -> bool {
        self.filters.insert(filter.to_owned(), qos);
        self.connected
    }

    /// Forgets a subscription; returns whether the caller must send the
    /// UNSUBSCRIBE now (a disconnected clean session has nothing to undo).
    fn unsubscribe(&mut self, filter: &str) -> bool {
        self.filters.remove(filter);
        self.connected
    }

    /// Records the latest retained state of a topic; returns whether the
    /// caller must publish it now.
    fn set_state(&mut self, topic: &str, payload: &[u8]) -> bool {
        self.states.insert(topic.to_owned(), payload.to_vec());
        self.connected
    }

    /// Marks the session connected and returns what must be replayed.
    fn on_connected(&mut self) -> Vec<Request> {
        self.connected = true;
        let subscribes = self
            .filters
            .iter()
            .map(|(filter, qos)| Request::Subscribe(Subscribe::new(filter, *qos)));
        let states = self.states.iter().map(|(topic, payload)| {
            let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.clone());
            publish.retain = true;
            Request::Publish(publish)
        });
        subscribes.chain(states).collect()
    }

    /// The remembered filters among `only` (all of them for `None`), for
    /// a broker that refused or lost some: subscribing again to a filter
    /// replaces it.
    fn subscribes(&self, only: Option<&BTreeSet<String>>) -> Vec<(String, QoS)> {
        self.filters
            .iter()
            .filter(|(filter, _)| only.is_none_or(|only| only.contains(*filter)))
            .map(|(filter, qos)| (filter.clone(), *qos))
            .collect()
    }

    fn on_disconnected(&mut self) {
        self.connected = false;
    }
}

/// Reconnect delays: doubling from 100 ms up to 2 s, reset on success.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(2);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        delay
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// State shared by every handle and the event-loop task.
#[derive(Debug)]
struct Shared {
    client: AsyncClient,
    /// The configured brokers, for error messages.
    brokers: String,
    /// The broker of the latest accepted connection.
    current: Mutex<Option<BrokerUrl>>,
    remembered: Mutex<Remembered>,
    connected: watch::Sender<bool>,
    counters: Counters,
    /// Ends the loop without DISCONNECT, so the broker fires the will.
    kill: CancellationToken,
    /// Cancelled once the event-loop task has finished.
    ended: CancellationToken,
    /// Why the latest connection attempt failed, for a caller waiting to
    /// connect (a refused password or an untrusted certificate should be
    /// reported as such, not as a timeout).
    last_error: Mutex<Option<String>>,
    /// What has gone out and been confirmed, for callers that must know a
    /// packet has left ([`SessionHandle::subscribe_confirmed`],
    /// [`SessionHandle::publish_written`]).
    progress: watch::Sender<Progress>,
}

/// Running counts the session loop moves forward; a waiter notes them
/// before its request and waits for them to pass.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Publishes written to the broker's socket (and flushed).
    written: u64,
    /// SUBACKs received.
    subacks: u64,
}

impl Shared {
    fn remembered(&self) -> MutexGuard<'_, Remembered> {
        // Every update under this lock is a single map or flag operation, so
        // even a poisoned lock holds consistent bookkeeping.
        self.remembered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_connected(&self, connected: bool) {
        self.connected.send_replace(connected);
    }
}

/// A cheap, cloneable handle to a running session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// Subscribes with QoS 1. The filter is remembered and subscribed again
    /// after every reconnect. While disconnected it is only remembered.
    pub async fn subscribe(&self, filter: &str) -> Result<(), NetError> {
        self.subscribe_with_qos(filter, Qos::AtLeastOnce).await
    }

    /// Subscribes with the given maximum QoS, remembered like
    /// [`subscribe`](Self::subscribe).
    ///
    /// rumqttd hands a new QoS 1 subscription at most 100 retained messages
    /// (its fixed in-flight window) and silently drops the rest; a QoS 0
    /// subscription gets them all. Use QoS 0 for wide filters over retained
    /// state, such as every host's `$state`.
    pub async fn subscribe_with_qos(&self, filter: &str, qos: Qos) -> Result<(), NetError> {
        check_filter(filter)?;
        if self.shared.remembered().subscribe(filter, qos.into()) {
            self.send(self.shared.client.subscribe(filter, qos.into()))
                .await?;
        }
        Ok(())
    }

    /// Subscribes like [`subscribe`](Self::subscribe) and, when the
    /// SUBSCRIBE goes out now, returns once a SUBACK has come back (or
    /// `timeout` has passed: an error). While disconnected the filter is
    /// only remembered and this returns at once: wait to be connected
    /// first when the SUBACK matters.
    ///
    /// Why wait: whatever we send after the SUBACK carries our TCP
    /// acknowledgement of it. Sent before it arrives, our kernel delays
    /// that acknowledgement by about 40 ms, and a broker without
    /// `set_tcp_nodelay` (Mosquitto's default) holds its next message to
    /// us (the reply we asked for) until it comes: Nagle's algorithm.
    pub async fn subscribe_confirmed(
        &self,
        filter: &str,
        timeout: Duration,
    ) -> Result<(), NetError> {
        self.subscribe_confirmed_with_qos(filter, Qos::AtLeastOnce, timeout)
            .await
    }

    /// [`subscribe_confirmed`](Self::subscribe_confirmed) with the given
    /// maximum QoS.
    pub async fn subscribe_confirmed_with_qos(
        &self,
        filter: &str,
        qos: Qos,
        timeout: Duration,
    ) -> Result<(), NetError> {
        check_filter(filter)?;
        let mut progress = self.shared.progress.subscribe();
        let before = progress.borrow_and_update().subacks;
        if !self.shared.remembered().subscribe(filter, qos.into()) {
            return Ok(());
        }
        self.send(self.shared.client.subscribe(filter, qos.into()))
            .await?;
        self.wait_progress(
            &mut progress,
            timeout,
            "the broker to confirm a subscription",
            |p| p.subacks > before,
        )
        .await
    }

    /// Publishes like [`publish`](Self::publish) and returns once a
    /// publish has been written to the broker's socket since the call (or
    /// `timeout` has passed: an error). For a message whose point is to
    /// leave now, such as one carrying our TCP acknowledgement of what the
    /// broker sent last (see [`subscribe_confirmed`](Self::subscribe_confirmed)).
    pub async fn publish_written(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        qos: Qos,
        retain: bool,
        timeout: Duration,
    ) -> Result<(), NetError> {
        let mut progress = self.shared.progress.subscribe();
        let before = progress.borrow_and_update().written;
        self.publish(topic, payload, qos, retain).await?;
        self.wait_progress(&mut progress, timeout, "a publish to leave", |p| {
            p.written > before
        })
        .await
    }

    async fn wait_progress(
        &self,
        progress: &mut watch::Receiver<Progress>,
        timeout: Duration,
        what: &'static str,
        done: impl FnMut(&Progress) -> bool,
    ) -> Result<(), NetError> {
        tokio::select! {
            // A closed watch cannot happen while `self` holds the sender.
            result = progress.wait_for(done) => result.map(drop).map_err(|_| NetError::SessionClosed),
            () = self.shared.ended.cancelled() => Err(NetError::SessionClosed),
            () = tokio::time::sleep(timeout) => Err(NetError::Timeout(timeout, what)),
        }
    }

    /// Unsubscribes, and forgets the filter for future reconnects.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), NetError> {
        check_filter(filter)?;
        if self.shared.remembered().unsubscribe(filter) {
            self.send(self.shared.client.unsubscribe(filter)).await?;
        }
        Ok(())
    }

    /// Queues a publish. It waits only when the request queue
    /// (`channel_capacity`) is full. Publishes queued while the broker is
    /// unreachable may be lost: a clean session starts afresh.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        qos: Qos,
        retain: bool,
    ) -> Result<(), NetError> {
        check_topic(topic)?;
        self.send(
            self.shared
                .client
                .publish(topic, qos.into(), retain, payload),
        )
        .await
    }

    /// Publishes retained with QoS 1 and remembers the payload as the
    /// topic's state, published again after every reconnect (for example
    /// `$state` and `$description`).
    pub async fn publish_state(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), NetError> {
        check_topic(topic)?;
        let payload = payload.into();
        if self.shared.remembered().set_state(topic, &payload) {
            self.send(
                self.shared
                    .client
                    .publish(topic, QoS::AtLeastOnce, true, payload),
            )
            .await?;
        }
        Ok(())
    }

    /// Resolves once the broker has accepted the connection.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), NetError> {
        let mut connected = self.shared.connected.subscribe();
        tokio::select! {
            // A closed watch cannot happen while `self` holds the sender.
            result = connected.wait_for(|connected| *connected) => {
                result.map(drop).map_err(|_| NetError::SessionClosed)
            }
            () = self.shared.ended.cancelled() => Err(NetError::SessionClosed),
            () = tokio::time::sleep(timeout) => Err(NetError::NotConnected {
                broker: self.shared.brokers.clone(),
                waited: timeout,
                last_error: self
                    .shared
                    .last_error
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone(),
            }),
        }
    }

    /// The broker that accepted the latest connection (the one in use
    /// while [`is_connected`](Self::is_connected)), if any did yet.
    pub fn broker(&self) -> Option<BrokerUrl> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether the session is connected to the broker right now.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        let counters = &self.shared.counters;
        SessionStats {
            connects: counters.connects.load(Ordering::Relaxed),
            received: counters.received.load(Ordering::Relaxed),
            sent: counters.sent.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
            oversized: counters.oversized.load(Ordering::Relaxed),
            resubscribes: counters.resubscribes.load(Ordering::Relaxed),
        }
    }

    /// Ends the session abruptly, without DISCONNECT, as a crash would: the
    /// broker then publishes the last will. Meant for tests and demos.
    pub fn kill(&self) {
        self.shared.kill.cancel();
    }

    /// Resolves when the event-loop task has finished.
    pub async fn closed(&self) {
        self.shared.ended.cancelled().await;
    }

    async fn send(
        &self,
        request: impl Future<Output = Result<(), rumqttc::ClientError>>,
    ) -> Result<(), NetError> {
        // The only failure left after our own validation is a closed
        // request channel: the event loop has ended.
        request.await.map_err(|_| NetError::SessionClosed)
    }
}

fn check_topic(topic: &str) -> Result<(), NetError> {
    if topic.is_empty() || !rumqttc::valid_topic(topic) {
        return Err(NetError::InvalidTopic {
            kind: "topic",
            topic: topic.to_owned(),
        });
    }
    Ok(())
}

/// Besides MQTT's own rules, refuses filters starting with `$`: rumqttd
/// drops the connection of whoever subscribes to one, and a remembered
/// filter would then make the session reconnect in a loop.
fn check_filter(filter: &str) -> Result<(), NetError> {
    if !rumqttc::valid_filter(filter) || filter.starts_with('$') {
        return Err(NetError::InvalidTopic {
            kind: "filter",
            topic: filter.to_owned(),
        });
    }
    Ok(())
}

/// A running session: its handle and the messages it receives.
#[derive(Debug)]
pub struct Session {
    /// Handle for subscribing and publishing.
    pub handle: SessionHandle,
    /// Messages on subscribed topics. When this channel is full, further
    /// messages are dropped (and counted) rather than stalling the session.
    pub incoming: mpsc::Receiver<Message>,
}

impl Session {
    /// Spawns the event-loop task on `tracker`; it connects, and reconnects
    /// forever after failures. The task ends when `shutdown` is cancelled,
    /// after flushing queued requests and a clean DISCONNECT (so the will
    /// is not sent), or at once on [`SessionHandle::kill`].
    ///
    /// Must be called inside a tokio runtime.
    pub fn start(
        config: SessionConfig,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Session, NetError> {
        let (eventloop, client, options) = build_client(&config)?;
        let (incoming_tx, incoming) = mpsc::channel(config.channel_capacity.max(1));
        let shared = Arc::new(Shared {
            client,
            brokers: config.brokers_text(),
            current: Mutex::default(),
            remembered: Mutex::default(),
            connected: watch::Sender::new(false),
            counters: Counters::default(),
            kill: CancellationToken::new(),
            ended: CancellationToken::new(),
            last_error: Mutex::default(),
            progress: watch::Sender::new(Progress::default()),
        });
        let event_loop = SessionLoop {
            eventloop,
            shared: Arc::clone(&shared),
            incoming: incoming_tx,
            max_message: config.max_packet_size,
            brokers: config.brokers().cloned().zip(options).collect(),
            current: 0,
            subscriptions: SubscribeWatch::default(),
            refusals: Refusals::default(),
        };
        tracker.spawn(event_loop.run(shutdown));
        Ok(Session {
            handle: SessionHandle { shared },
            incoming,
        })
    }
}

/// The event loop and client for the first broker, and the options of
/// every broker (the first's included), all checked now.
fn build_client(
    config: &SessionConfig,
) -> Result<(EventLoop, AsyncClient, Vec<MqttOptions>), NetError> {
    // rumqttd refuses these, and one such client reconnecting can poison
    // rumqttd's will bookkeeping for every later connection.
    if config.client_id.contains(['+', '#', '$', '/']) {
        return Err(NetError::InvalidConfig(
            "client_id must not contain `+`, `#`, `$` or `/`",
        ));
    }
    if !config.keep_alive.is_zero() && config.keep_alive < Duration::from_secs(1) {
        return Err(NetError::InvalidConfig(
            "keep_alive must be zero or at least one second",
        ));
    }
    let options = config
        .brokers()
        .map(|broker| broker_options(config, broker))
        .collect::<Result<Vec<_>, _>>()?;
    let (client, mut eventloop) = AsyncClient::new(options[0].clone(), config.channel_capacity);
    // Without TCP_NODELAY every QoS 1 exchange waits ~40 ms on delayed ACKs.
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    Ok((eventloop, client, options))
}

/// The connection options for `broker`: the same client id, will and login
/// for every broker of the list.
fn broker_options(config: &SessionConfig, broker: &BrokerUrl) -> Result<MqttOptions, NetError> {
    let mut options = MqttOptions::new(&config.client_id, &broker.host, broker.port);
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_session(true)
        .set_max_packet_size(
            MAX_INCOMING_PACKET.max(config.max_packet_size),
            config.max_packet_size,
        );
    if let Some(credentials) = &config.login.credentials {
        options.set_credentials(&credentials.username, credentials.password.expose());
    }
    if broker.tls {
        // rumqttc gives rustls the host as the server name to check.
        let tls = config.login.tls.client_config()?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    if let Some(will) = &config.last_will {
        options.set_last_will(LastWill::new(
            &will.topic,
            will.payload.clone(),
            QoS::AtLeastOnce,
            will.retain,
        ));
    }
    Ok(options)
}

/// Whether the broker has confirmed what the session subscribed to on the
/// current connection, and when to subscribe again if not.
#[derive(Debug)]
struct SubscribeWatch {
    /// SUBSCRIBEs written and SUBACKs received on this connection.
    sent: u64,
    acked: u64,
    /// When a missing SUBACK counts as lost.
    suback_deadline: Option<Instant>,
    /// When to subscribe again, after a refusal or a lost SUBACK.
    resubscribe_at: Option<Instant>,
    /// Re-subscriptions on this connection, and their delays.
    attempts: u32,
    backoff: Backoff,
}

impl Default for SubscribeWatch {
    fn default() -> Self {
        Self {
            sent: 0,
            acked: 0,
            suback_deadline: None,
            resubscribe_at: None,
            attempts: 0,
            backoff: Backoff::new(),
        }
    }
}

impl SubscribeWatch {
    fn on_subscribe_sent(&mut self, now: Instant) {
        if self.sent == self.acked {
            self.suback_deadline = Some(now + SUBACK_WAIT);
        }
        self.sent += 1;
    }

    /// Notes a SUBACK; returns whether it confirms every filter it answers.
    fn on_suback(&mut self, codes: &[SubscribeReasonCode], now: Instant) -> bool {
        self.acked += 1;
        // A late SUBACK of a subscription already sent again can make
        // `acked` pass `sent`: nothing is outstanding then.
        self.suback_deadline = (self.acked < self.sent).then(|| now + SUBACK_WAIT);
        let refused = codes
            .iter()
            .any(|code| matches!(code, SubscribeReasonCode::Failure));
        if refused {
            self.schedule(now);
        } else if self.resubscribe_at.is_none() {
            self.backoff.reset();
        }
        !refused
    }

    fn schedule(&mut self, now: Instant) {
        if self.resubscribe_at.is_none() {
            self.resubscribe_at = Some(now + self.backoff.next_delay());
        }
    }

    /// The next moment something is due, if any.
    fn next_due(&self) -> Option<Instant> {
        match (self.suback_deadline, self.resubscribe_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due at `now`: `Some(true)` to subscribe again, `Some(false)`
    /// to give the connection up (too many attempts), `None` for nothing.
    fn due(&mut self, now: Instant) -> Option<bool> {
        if self.suback_deadline.is_some_and(|at| at <= now) {
            self.suback_deadline = None;
            self.acked = self.sent;
            self.schedule(now);
        }
        if self.resubscribe_at.is_some_and(|at| at <= now) {
            self.resubscribe_at = None;
            self.attempts += 1;
            return Some(self.attempts <= MAX_RESUBSCRIBES);
        }
        None
    }
}

/// The task that owns the rumqttc event loop.
struct SessionLoop {
    eventloop: EventLoop,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<Message>,
    /// The largest message delivered (topic and payload bytes).
    max_message: usize,
    /// Every broker and its connection options, tried in turn.
    brokers: Vec<(BrokerUrl, MqttOptions)>,
    /// The index in `brokers` of the broker in use.
    current: usize,
    subscriptions: SubscribeWatch,
    /// Which filters the broker refused, so that only those are sent again.
    refusals: Refusals,
}

/// The filters of the SUBSCRIBEs the loop itself queued (replays and
/// retries), matched to their packet ids as they go out and to their
/// SUBACKs as they come back. A refused subscription the handle sent (its
/// filter unknown here) makes the retry cover every filter.
#[derive(Debug, Default)]
struct Refusals {
    /// Filters of SUBSCRIBEs in the event loop's `pending`, in order.
    queued: VecDeque<String>,
    /// Filters by packet id, written and not yet acknowledged.
    in_flight: HashMap<u16, String>,
    refused: BTreeSet<String>,
    refused_unknown: bool,
}

impl Refusals {
    /// A SUBSCRIBE went out; `left` is how many SUBSCRIBEs `pending` still
    /// holds. rumqttc writes `pending` before anything the handle queued,
    /// one request per poll, so one fewer there means it was ours.
    fn on_sent(&mut self, pkid: u16, left: usize) {
        if left < self.queued.len()
            && let Some(filter) = self.queued.pop_front()
        {
            self.in_flight.insert(pkid, filter);
        }
    }

    fn on_suback(&mut self, pkid: u16, refused: bool) {
        let filter = self.in_flight.remove(&pkid);
        if refused {
            match filter {
                Some(filter) => {
                    self.refused.insert(filter);
                }
                None => self.refused_unknown = true,
            }
        }
    }

    /// Which filters to send again (`None`: all), forgetting the refusals.
    fn take(&mut self) -> Option<BTreeSet<String>> {
        let refused = std::mem::take(&mut self.refused);
        let unknown = std::mem::take(&mut self.refused_unknown);
        (!unknown && !refused.is_empty()).then_some(refused)
    }
}

impl SessionLoop {
    async fn run(mut self, shutdown: CancellationToken) {
        let kill = self.shared.kill.clone();
        let mut backoff = Backoff::new();
        let mut in_outage = false;
        loop {
            // Far enough never to come, when nothing is due.
            let due = self
                .subscriptions
                .next_due()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
            let event = tokio::select! {
                biased;
                () = kill.cancelled() => break,
                () = shutdown.cancelled() => {
                    self.disconnect().await;
                    break;
                }
                () = tokio::time::sleep_until(due) => match self.subscriptions.due(Instant::now()) {
                    Some(true) => {
                        self.resubscribe();
                        continue;
                    }
                    Some(false) => Err(self.give_up_connection()),
                    None => continue,
                },
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(event) => {
                    if self.handle(event) {
                        backoff.reset();
                        if std::mem::take(&mut in_outage) {
                            info!(broker = %self.broker(), "MQTT connection restored");
                        }
                    }
                }
                Err(error) => {
                    self.set_disconnected();
                    *self
                        .shared
                        .last_error
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(describe(&error));
                    log_connection_error(self.broker(), &error, in_outage);
                    in_outage = true;
                    self.subscriptions = SubscribeWatch::default();
                    self.next_broker();
                    tokio::select! {
                        () = kill.cancelled() => break,
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        self.set_disconnected();
        self.shared.ended.cancel();
        debug!(broker = %self.broker(), "MQTT session ended");
    }

    fn broker(&self) -> &BrokerUrl {
        &self.brokers[self.current].0
    }

    /// After a failed or lost connection: the next broker of the list is
    /// the one the event loop connects to next.
    fn next_broker(&mut self) {
        if self.brokers.len() > 1 {
            self.current = (self.current + 1) % self.brokers.len();
            self.eventloop.mqtt_options = self.brokers[self.current].1.clone();
            debug!(broker = %self.broker(), "trying the next broker");
        }
    }

    /// Sends a SUBSCRIBE again for each refused filter, or for every
    /// remembered filter when it is not known which were refused (or a
    /// SUBACK never came).
    fn resubscribe(&mut self) {
        Counters::bump(&self.shared.counters.resubscribes);
        let only = self.refusals.take();
        let subscribes = self.shared.remembered().subscribes(only.as_ref());
        warn!(broker = %self.broker(), filters = subscribes.len(),
            attempt = self.subscriptions.attempts,
            "the broker refused or did not confirm a subscription; subscribing again");
        for (filter, qos) in subscribes {
            self.eventloop
                .pending
                .push_back(Request::Subscribe(Subscribe::new(&filter, qos)));
            self.refusals.queued.push_back(filter);
        }
    }

    fn pending_subscribes(&self) -> usize {
        self.eventloop
            .pending
            .iter()
            .filter(|request| matches!(request, Request::Subscribe(_)))
            .count()
    }

    /// Drops a connection whose broker keeps refusing subscriptions, so that
    /// the loop connects again (to the next broker, if there is one).
    fn give_up_connection(&mut self) -> ConnectionError {
        self.eventloop.network = None;
        self.eventloop.clean();
        ConnectionError::Io(std::io::Error::other(format!(
            "the broker refused subscriptions {MAX_RESUBSCRIBES} times"
        )))
    }

    /// Handles one event; returns whether it was a (re)connection.
    fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                Counters::bump(&self.shared.counters.connects);
                self.subscriptions = SubscribeWatch::default();
                *self
                    .shared
                    .current
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(self.broker().clone());
                // rumqttc has just cleared `pending` (a clean session has
                // nothing to resume) and sends it before anything queued.
                let replay = self.shared.remembered().on_connected();
                self.refusals = Refusals::default();
                self.refusals.queued = replay
                    .iter()
                    .filter_map(|request| match request {
                        Request::Subscribe(subscribe) => {
                            subscribe.filters.first().map(|f| f.path.clone())
                        }
                        _ => None,
                    })
                    .collect();
                self.eventloop.pending.extend(replay);
                self.shared.set_connected(true);
                true
            }
            Event::Incoming(Packet::Publish(publish)) => {
                Counters::bump(&self.shared.counters.received);
                self.deliver(publish);
                false
            }
            Event::Outgoing(Outgoing::Publish(_)) => {
                Counters::bump(&self.shared.counters.sent);
                self.shared.progress.send_modify(|p| p.written += 1);
                false
            }
            Event::Outgoing(Outgoing::Subscribe(pkid)) => {
                self.subscriptions.on_subscribe_sent(Instant::now());
                let left = self.pending_subscribes();
                self.refusals.on_sent(pkid, left);
                false
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure));
                self.refusals.on_suback(ack.pkid, refused);
                // A refusal is not a confirmation: whoever waits for one
                // waits for the retry's.
                if self
                    .subscriptions
                    .on_suback(&ack.return_codes, Instant::now())
                {
                    self.shared.progress.send_modify(|p| p.subacks += 1);
                }
                false
            }
            _ => false,
        }
    }

    fn deliver(&self, publish: Publish) {
        if publish.payload.len() + publish.topic.len() > self.max_message {
            Counters::bump(&self.shared.counters.oversized);
            warn!(topic = %publish.topic, bytes = publish.payload.len(),
                limit = self.max_message, "message larger than the session takes, dropped");
            return;
        }
        let message = Message {
            topic: publish.topic,
            payload: publish.payload,
            retain: publish.retain,
        };
        // Never wait here: a slow consumer must not stall pings and acks.
        match self.incoming.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                Counters::bump(&self.shared.counters.dropped);
                debug!(topic = %message.topic, "incoming channel full, message dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn set_disconnected(&self) {
        self.shared.remembered().on_disconnected();
        self.shared.set_connected(false);
    }

    /// Flushes what is queued, then sends DISCONNECT, within a grace period.
    async fn disconnect(&mut self) {
        if !self.shared.remembered().connected {
            return;
        }
        // Queued behind earlier requests on purpose: an "offline" state
        // published just before shutdown still goes out first.
        if self.shared.client.try_disconnect().is_err() {
            return;
        }
        let flushed = tokio::time::timeout(DISCONNECT_GRACE, async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(event) => {
                        self.handle(event);
                    }
                }
            }
        })
        .await;
        if flushed.is_err() {
            warn!(broker = %self.broker(), "MQTT disconnect timed out");
        }
    }
}

/// A connection error in words a user can act on: rumqttc's `Display` of a
/// refused CONNECT or a TLS failure leaves out the cause, so the causes are
/// added, each one only if the text does not already say it.
fn describe(error: &ConnectionError) -> String {
    let mut text = match error {
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?}")
        }
        other => other.to_string(),
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

fn log_connection_error(broker: &BrokerUrl, error: &ConnectionError, in_outage: bool) {
    if in_outage {
        debug!(%broker, %error, "MQTT reconnect failed");
    } else {
        warn!(%broker, %error, "MQTT connection lost; reconnecting until it is back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(requests: &[Request]) -> Vec<String> {
        requests
            .iter()
            .map(|request| match request {
                Request::Subscribe(subscribe) => {
                    let filter = &subscribe.filters[0];
                    format!("sub {} {:?}", filter.path, filter.qos)
                }
                Request::Publish(publish) => {
                    assert!(publish.retain && publish.qos == QoS::AtLeastOnce);
                    format!(
                        "pub {} {}",
                        publish.topic,
                        String::from_utf8_lossy(&publish.payload)
                    )
                }
                other => panic!("unexpected replay {other:?}"),
            })
            .collect()
    }

    #[test]
    fn requests_while_disconnected_are_only_remembered() {
        let mut remembered = Remembered::default();
        assert!(!remembered.subscribe("/a/#", QoS::AtLeastOnce));
        assert!(!remembered.set_state("/h/$state", b"online"));
        assert_eq!(
            topics(&remembered.on_connected()),
            ["sub /a/# AtLeastOnce", "pub /h/$state online"]
        );
    }

    #[test]
    fn requests_while_connected_are_sent_and_remembered() {
        let mut remembered = Remembered::default();
        remembered.on_connected();
        assert!(remembered.subscribe("/a/+", QoS::AtLeastOnce));
        assert!(remembered.set_state("/h/$state", b"online"));
        remembered.on_disconnected();
        assert_eq!(
            topics(&remembered.on_connected()),
            ["sub /a/+ AtLeastOnce", "pub /h/$state online"]
        );
    }

    #[test]
    fn every_reconnect_replays_the_latest_state_and_live_filters() {
        let mut remembered = Remembered::default();
        remembered.subscribe("/a", QoS::AtMostOnce);
        remembered.subscribe("/b", QoS::AtLeastOnce);
        remembered.subscribe("/a", QoS::AtLeastOnce);
        remembered.set_state("/h/$state", b"starting");
        remembered.set_state("/h/$state", b"online");
        remembered.set_state("/h/gpio/$description", b"{}");
        remembered.unsubscribe("/b");
        remembered.unsubscribe("/never");
        for _ in 0..3 {
            assert_eq!(
                topics(&remembered.on_connected()),
                [
                    "sub /a AtLeastOnce",
                    "pub /h/$state online",
                    "pub /h/gpio/$description {}"
                ]
            );
            remembered.on_disconnected();
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn a_refused_or_unconfirmed_subscription_is_retried_then_given_up() {
        let start = Instant::now();
        let mut watch = SubscribeWatch::default();
        assert_eq!(watch.next_due(), None);
        watch.on_subscribe_sent(start);
        watch.on_subscribe_sent(start);
        assert_eq!(watch.next_due(), Some(start + SUBACK_WAIT));
        assert!(watch.on_suback(&[SubscribeReasonCode::Success(QoS::AtLeastOnce)], start));
        // One refused: subscribe again after the first delay.
        assert!(!watch.on_suback(&[SubscribeReasonCode::Failure], start));
        assert_eq!(watch.next_due(), Some(start + Backoff::FIRST));
        assert_eq!(watch.due(start), None);
        assert_eq!(watch.due(start + Backoff::FIRST), Some(true));
        assert_eq!(watch.next_due(), None);
        // A SUBACK that never comes counts as a refusal once SUBACK_WAIT passed.
        let later = start + Duration::from_secs(1);
        watch.on_subscribe_sent(later);
        assert_eq!(
            watch.due(later + SUBACK_WAIT - Duration::from_millis(1)),
            None
        );
        assert_eq!(watch.due(later + SUBACK_WAIT), None);
        let retry = watch.next_due().expect("a retry is scheduled");
        assert_eq!(retry, later + SUBACK_WAIT + Duration::from_millis(200));
        assert_eq!(watch.due(retry), Some(true));
        // Bounded: past MAX_RESUBSCRIBES the connection is given up.
        let mut now = retry;
        let mut verdicts = Vec::new();
        for _ in 0..MAX_RESUBSCRIBES {
            watch.on_subscribe_sent(now);
            watch.on_suback(&[SubscribeReasonCode::Failure], now);
            now = watch.next_due().unwrap();
            verdicts.push(watch.due(now).unwrap());
        }
        assert_eq!(
            verdicts.iter().filter(|ok| **ok).count() as u32,
            MAX_RESUBSCRIBES - 2
        );
        assert_eq!(verdicts.last(), Some(&false));
    }

    #[test]
    fn only_the_refused_filters_are_sent_again_when_they_are_known() {
        let mut refusals = Refusals {
            queued: ["/a", "/b", "/c"].map(String::from).into(),
            ..Refusals::default()
        };
        // Three of ours go out (two left, one, none), then one of the handle's.
        refusals.on_sent(7, 2);
        refusals.on_sent(8, 1);
        refusals.on_sent(9, 0);
        refusals.on_sent(10, 0);
        refusals.on_suback(7, false);
        refusals.on_suback(8, true);
        refusals.on_suback(9, true);
        assert_eq!(refusals.take(), Some(["/b", "/c"].map(String::from).into()));
        assert_eq!(refusals.take(), None, "taken, nothing refused");
        // A refused SUBSCRIBE of unknown filter: everything again.
        refusals.on_suback(10, true);
        assert_eq!(refusals.take(), None);
        let mut remembered = Remembered::default();
        remembered.subscribe("/a", QoS::AtLeastOnce);
        remembered.subscribe("/b", QoS::AtMostOnce);
        assert_eq!(remembered.subscribes(None).len(), 2);
        let only = ["/b", "/gone"].map(String::from).into();
        assert_eq!(
            remembered.subscribes(Some(&only)),
            [("/b".to_owned(), QoS::AtMostOnce)]
        );
    }

    #[test]
    fn topics_and_filters_are_checked() {
        assert!(check_topic("/h/$state").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("/a/+").is_err());
        assert!(check_filter("/a/+/b/#").is_ok());
        assert!(check_filter("/a/#/b").is_err());
        assert!(check_filter("").is_err());
        assert!(check_filter("$SYS/#").is_err());
    }

    #[test]
    fn unworkable_configurations_are_refused() {
        let mut config = SessionConfig::new("mqtts://broker".parse().unwrap(), "c");
        config.login.tls.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            build_client(&config),
            Err(NetError::TlsFile { .. })
        ));
        config.broker.tls = false;
        config.keep_alive = Duration::from_millis(500);
        assert!(matches!(
            build_client(&config),
            Err(NetError::InvalidConfig(_))
        ));
        config.keep_alive = Duration::ZERO;
        assert!(build_client(&config).is_ok());
        config.client_id = "pi/1".to_owned();
        assert!(matches!(
            build_client(&config),
            Err(NetError::InvalidConfig(_))
        ));
    }
}
