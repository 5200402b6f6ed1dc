//! The MQTT session: one task owns the rumqttc event loop and keeps the
//! session alive across broker outages. It remembers subscriptions and
//! retained state so that every reconnect restores them, because a
//! clean-session broker forgets both. Given several brokers (the nodes of
//! one cluster), it moves to the next whenever a connection fails. It
//! subscribes again, with backoff, when a broker refuses a subscription or
//! never confirms it (a NATS node does both for some seconds after a peer
//! died); a filter still refused after the bounded retries is given up on
//! that connection, not the connection, unless every filter is.

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
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::{BrokerList, BrokerUrl, Login, NetError};

/// How long a SUBACK may take before the session subscribes again.
const SUBACK_WAIT: Duration = Duration::from_secs(5);

/// Re-subscriptions of one filter on one connection before the session
/// gives the filter up there (about 13 s of retries with [`Backoff`]'s
/// delays); when it has given up every filter, and other brokers are
/// configured, it moves to the next broker.
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
    /// The highest QoS any subscription asks for (default QoS 1): QoS 0
    /// for a NATS cluster, where each QoS 1 subscription is a replicated
    /// JetStream consumer that a node, after a peer died, takes many
    /// seconds to create, while a QoS 0 one is a plain NATS subscription.
    /// With clean sessions, QoS 1 adds little: what is in flight when a
    /// connection drops is lost either way (docs/deploying.md).
    pub max_subscribe_qos: Qos,
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
            max_subscribe_qos: Qos::AtLeastOnce,
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
    /// SUBSCRIBEs sent again because the broker refused one (SUBACK
    /// 0x80) or did not confirm it within 5 s.
    pub resubscribes: u64,
    /// Filters given up on a connection: the broker still refused them
    /// after the bounded retries (a NATS server refuses a filter with a
    /// `.`; an ACL may refuse one). The session's other subscriptions go
    /// on; the filter is tried again every minute.
    pub given_up: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    oversized: AtomicU64,
    resubscribes: AtomicU64,
    given_up: AtomicU64,
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
/// the handle sees the session connected and sends it (a publish) or hands
/// it to the session loop (a subscription, in `outbox`), or it only records
/// it and the next ConnAck replays it.
#[derive(Debug, Default)]
struct Remembered {
    connected: bool,
    /// [`SessionConfig::max_subscribe_qos`].
    max_qos: Option<QoS>,
    filters: BTreeMap<String, QoS>,
    states: BTreeMap<String, Vec<u8>>,
    /// Filters the session loop must subscribe to on this connection: the
    /// loop sends every SUBSCRIBE itself, so that it knows which filter
    /// each SUBACK answers.
    outbox: BTreeSet<String>,
}

impl Remembered {
    /// Records a subscription; returns whether the session loop must send
    /// it now (it is in the outbox).
    fn subscribe(&mut self, filter: &str, qos: QoS) -> bool {
        let qos = match self.max_qos {
            Some(QoS::AtMostOnce) => QoS::AtMostOnce,
            _ => qos,
        };
        self.filters.insert(filter.to_owned(), qos);
        if self.connected {
            self.outbox.insert(filter.to_owned());
        }
        self.connected
    }

    /// Forgets a subscription; returns whether the caller must send the
    /// UNSUBSCRIBE now (a disconnected clean session has nothing to undo).
    fn unsubscribe(&mut self, filter: &str) -> bool {
        self.filters.remove(filter);
        self.outbox.remove(filter);
        self.connected
    }

    /// Hands the outbox's filters to `send` in turn, each taken out once
    /// sent; stops at the first `send` refuses (a full request channel).
    /// Returns whether the outbox is empty. Done under the lock, so that a
    /// handle that sees its filter gone from the outbox knows it is queued.
    fn drain_outbox(&mut self, mut send: impl FnMut(&str, QoS) -> bool) -> bool {
        while let Some(filter) = self.outbox.first().cloned() {
            if let Some(qos) = self.filters.get(&filter)
                && !send(&filter, *qos)
            {
                return false;
            }
            self.outbox.remove(&filter);
        }
        true
    }

    /// Records the latest retained state of a topic; returns whether the
    /// caller must publish it now.
    fn set_state(&mut self, topic: &str, payload: &[u8]) -> bool {
        self.states.insert(topic.to_owned(), payload.to_vec());
        self.connected
    }

    /// Marks the session connected and returns what must be replayed:
    /// every filter first, then the retained states, so that whoever reads
    /// a replayed `online` finds the session subscribed (a NATS node takes
    /// seconds to set up a dozen subscriptions).
    fn on_connected(&mut self) -> Vec<Request> {
        self.connected = true;
        self.outbox.clear();
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

    fn on_disconnected(&mut self) {
        self.connected = false;
        self.outbox.clear();
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
    /// Wakes the session loop when the outbox has a filter to subscribe to.
    wake: Notify,
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
    /// Times the session loop emptied (part of) the outbox.
    outbox: u64,
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
        self.queue_subscribe(filter, qos.into()).await?;
        Ok(())
    }

    /// Remembers a subscription and, while connected, hands it to the
    /// session loop; returns whether it goes out now.
    ///
    /// Returns once the session loop has queued the SUBSCRIBE (or the
    /// connection was lost, and the next ConnAck replays it): what this
    /// handle queues next goes out after it, as with every other request.
    async fn queue_subscribe(&self, filter: &str, qos: QoS) -> Result<bool, NetError> {
        if self.shared.ended.is_cancelled() {
            return Err(NetError::SessionClosed);
        }
        let mut progress = self.shared.progress.subscribe();
        if !self.shared.remembered().subscribe(filter, qos) {
            return Ok(false);
        }
        self.shared.wake.notify_one();
        let queued = progress.wait_for(|_| !self.shared.remembered().outbox.contains(filter));
        tokio::select! {
            // A closed watch cannot happen while `self` holds the sender.
            result = queued => result.map(drop).map_err(|_| NetError::SessionClosed)?,
            () = self.shared.ended.cancelled() => return Err(NetError::SessionClosed),
        }
        Ok(true)
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
        const WHAT: &str = "the broker to confirm a subscription";
        let start = tokio::time::Instant::now();
        let mut progress = self.shared.progress.subscribe();
        let before = progress.borrow_and_update().subacks;
        // The timeout covers the queueing too: with rumqttc's queue full
        // (a broker that stopped acknowledging), the SUBSCRIBE may not even
        // go out. The filter stays remembered and goes out when it can.
        let queued = tokio::time::timeout(timeout, self.queue_subscribe(filter, qos.into()));
        if !queued
            .await
            .map_err(|_| NetError::Timeout(timeout, WHAT))??
        {
            return Ok(());
        }
        let left = timeout.saturating_sub(start.elapsed());
        self.wait_progress(&mut progress, left, WHAT, |p| p.subacks > before)
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
            given_up: counters.given_up.load(Ordering::Relaxed),
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
            remembered: Mutex::new(Remembered {
                max_qos: Some(config.max_subscribe_qos.into()),
                ..Remembered::default()
            }),
            connected: watch::Sender::new(false),
            counters: Counters::default(),
            kill: CancellationToken::new(),
            wake: Notify::new(),
            ended: CancellationToken::new(),
            last_error: Mutex::default(),
            progress: watch::Sender::new(Progress::default()),
        });
        let event_loop = SessionLoop {
            eventloop,
            state: LoopState {
                shared: Arc::clone(&shared),
                incoming: incoming_tx,
                max_message: config.max_packet_size,
                brokers: config.brokers().cloned().zip(options).collect(),
                current: 0,
                subscriptions: Subscriptions::default(),
                abandon: false,
                refused_everything: BTreeSet::new(),
            },
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

/// When a filter refused past [`MAX_RESUBSCRIBES`] is tried again, for as
/// long as the connection lasts: quietly, in case the broker's refusal was
/// a long outage rather than a rule.
const GIVEN_UP_RETRY: Duration = Duration::from_secs(60);

/// How soon to try again to queue a SUBSCRIBE the full request channel
/// did not take.
const QUEUE_RETRY: Duration = Duration::from_millis(50);

/// One filter the broker refused (SUBACK 0x80) or did not confirm within
/// [`SUBACK_WAIT`] on the current connection.
#[derive(Debug)]
struct Retry {
    refusals: u32,
    /// When to subscribe again; `None` while the retry is out.
    at: Option<Instant>,
    backoff: Backoff,
}

impl Retry {
    /// Past the bounded retries: logged and counted once, then only tried
    /// again every [`GIVEN_UP_RETRY`].
    fn given_up(&self) -> bool {
        self.refusals > MAX_RESUBSCRIBES
    }
}

/// What one more refusal of a filter means.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Subscribe again after a backoff delay.
    Retry,
    /// The bounded retries are spent: give the filter up (log, count).
    GiveUp,
    /// Given up already: the slow retry was refused too.
    StillRefused,
}

/// The SUBSCRIBEs of the current connection, per filter: which are out,
/// which the broker refused or never answered, and when each is tried
/// again. Only the session loop sends SUBSCRIBEs, one filter each: after a
/// ConnAck through rumqttc's `pending`, then through its request channel,
/// so the n-th SUBSCRIBE written is the n-th filter replayed or queued:
/// that is how a SUBACK (which names no filter) is matched to its filter.
#[derive(Debug, Default)]
struct Subscriptions {
    /// Filters of the SUBSCRIBEs a ConnAck replayed into rumqttc's
    /// `pending`, in order: rumqttc writes all of `pending` before it takes
    /// anything from the request channel.
    replayed: VecDeque<String>,
    /// Filters of SUBSCRIBEs in the request channel, in order.
    queued: VecDeque<String>,
    /// Written and not answered yet, by packet id, each id's in the order
    /// written: rumqttc's packet ids wrap at its in-flight limit (100,
    /// shared with QoS 1 publishes), so more SUBSCRIBEs than that out at
    /// once share ids, and a broker answers a connection's in order.
    in_flight: HashMap<u16, VecDeque<String>>,
    /// When the SUBSCRIBEs in flight count as lost: [`SUBACK_WAIT`] after
    /// the latest SUBACK (or the first SUBSCRIBE), not after each one, since
    /// a broker answers them in turn and a NATS node takes a second or more
    /// for each under load; retrying those it is still working through
    /// would only add to its work.
    lost_at: Option<Instant>,
    /// Refused or unanswered filters.
    retries: BTreeMap<String, Retry>,
    /// When to try again to queue what the full request channel refused.
    requeue_at: Option<Instant>,
}

impl Subscriptions {
    /// A SUBSCRIBE went out.
    fn on_sent(&mut self, pkid: u16, now: Instant) {
        let filter = self
            .replayed
            .pop_front()
            .or_else(|| self.queued.pop_front());
        if let Some(filter) = filter {
            if self.in_flight.is_empty() {
                self.lost_at = Some(now + SUBACK_WAIT);
            }
            self.in_flight.entry(pkid).or_default().push_back(filter);
        }
    }

    /// The filter a SUBACK answers, unless its SUBSCRIBE was given up as
    /// unanswered already (then the retry's SUBACK is the one that counts).
    fn on_suback(&mut self, pkid: u16, now: Instant) -> Option<String> {
        let same_id = self.in_flight.get_mut(&pkid)?;
        let filter = same_id.pop_front();
        if same_id.is_empty() {
            self.in_flight.remove(&pkid);
        }
        // The broker is working through what we sent: give the rest time.
        // (Only for a SUBACK of ours: one with an id we did not send, from
        // a broker gone wrong, must not keep the lost ones from counting.)
        self.lost_at = (!self.in_flight.is_empty()).then(|| now + SUBACK_WAIT);
        filter
    }

    /// Notes a refusal (or a lost SUBACK) of `filter` and schedules its retry.
    fn refused(&mut self, filter: &str, now: Instant) -> Refusal {
        let retry = self
            .retries
            .entry(filter.to_owned())
            .or_insert_with(|| Retry {
                refusals: 0,
                at: None,
                backoff: Backoff::new(),
            });
        retry.refusals += 1;
        if !retry.given_up() {
            retry.at = Some(now + retry.backoff.next_delay());
            Refusal::Retry
        } else {
            retry.at = Some(now + GIVEN_UP_RETRY);
            if retry.refusals == MAX_RESUBSCRIBES + 1 {
                Refusal::GiveUp
            } else {
                Refusal::StillRefused
            }
        }
    }

    /// Notes that the broker took `filter`; returns whether it had been
    /// given up.
    fn accepted(&mut self, filter: &str) -> bool {
        self.retries.remove(filter).is_some_and(|r| r.given_up())
    }

    /// Whether the broker refused every one of `filters` past the retries.
    fn all_given_up<'a>(&self, mut filters: impl Iterator<Item = &'a String>) -> bool {
        filters.all(|filter| self.retries.get(filter).is_some_and(Retry::given_up))
    }

    /// The next moment something is due, if any.
    fn next_due(&self) -> Option<Instant> {
        let retries = self.retries.values().filter_map(|r| r.at);
        retries.chain(self.lost_at).chain(self.requeue_at).min()
    }

    /// The SUBSCRIBEs in flight once no SUBACK came for [`SUBACK_WAIT`],
    /// forgotten: a SUBACK of theirs arriving later is ignored.
    fn lost(&mut self, now: Instant) -> Vec<String> {
        if self.lost_at.is_none_or(|at| at > now) {
            return Vec::new();
        }
        self.lost_at = None;
        let mut lost: Vec<(u16, VecDeque<String>)> = self.in_flight.drain().collect();
        lost.sort_unstable();
        lost.into_iter().flat_map(|(_, filters)| filters).collect()
    }

    /// The filters whose retry is due, marked as out.
    fn due_retries(&mut self, now: Instant) -> Vec<String> {
        self.retries
            .iter_mut()
            .filter(|(_, retry)| retry.at.is_some_and(|at| at <= now))
            .map(|(filter, retry)| {
                retry.at = None;
                filter.clone()
            })
            .collect()
    }
}

/// What ended one wait on the event loop.
enum Outcome {
    /// rumqttc's poll finished.
    Polled(Result<Event, ConnectionError>),
    /// The broker refused every subscription past the retries, and other
    /// brokers are configured: move on.
    Abandon,
    /// Killed, or shut down (after the DISCONNECT or its grace period).
    End,
}

/// The task that owns the rumqttc event loop.
struct SessionLoop {
    eventloop: EventLoop,
    state: LoopState,
}

/// Everything of the session loop but rumqttc's event loop, so that both
/// can be borrowed at once: the poll future holds the event loop while
/// the timers and wake-ups work on this.
struct LoopState {
    shared: Arc<Shared>,
    incoming: mpsc::Sender<Message>,
    /// The largest message delivered (topic and payload bytes).
    max_message: usize,
    /// Every broker and its connection options, tried in turn.
    brokers: Vec<(BrokerUrl, MqttOptions)>,
    /// The index in `brokers` of the broker in use.
    current: usize,
    subscriptions: Subscriptions,
    /// Set when the connection is of no use (see [`Outcome::Abandon`]).
    abandon: bool,
    /// The brokers of the list (indices) that refused every subscription
    /// since one was last taken anywhere: once all have, the session stays
    /// where it is rather than hop from node to node, each hop firing its
    /// will.
    refused_everything: BTreeSet<usize>,
}

impl SessionLoop {
    /// Drives rumqttc's poll and the session's own timers. A poll, once
    /// started, is awaited to its end: rumqttc's `poll` is not
    /// cancel-safe (dropped while writing a request it has already taken
    /// from its queue, or a PUBACK, the packet is lost), so the timers and
    /// the handle's wake-ups run beside it and only ever use the request
    /// channel. Only ending the session, or dropping a connection that is
    /// of no use, drops a poll.
    async fn run(mut self, shutdown: CancellationToken) {
        let shared = Arc::clone(&self.state.shared);
        let mut backoff = Backoff::new();
        let mut in_outage = false;
        // Once shut down: until when the DISCONNECT may take to go out.
        let mut stopping: Option<Instant> = None;
        loop {
            let outcome = {
                let state = &mut self.state;
                let poll = self.eventloop.poll();
                tokio::pin!(poll);
                loop {
                    // Far enough never to come, when nothing is due.
                    let due = [state.subscriptions.next_due(), stopping]
                        .into_iter()
                        .flatten()
                        .min()
                        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
                    tokio::select! {
                        biased;
                        () = shared.kill.cancelled() => break Outcome::End,
                        () = shutdown.cancelled(), if stopping.is_none() => {
                            // Queued behind earlier requests on purpose: an
                            // "offline" state published just before
                            // shutdown still goes out first.
                            if !shared.remembered().connected
                                || shared.client.try_disconnect().is_err()
                            {
                                break Outcome::End;
                            }
                            stopping = Some(Instant::now() + DISCONNECT_GRACE);
                        }
                        () = tokio::time::sleep_until(due) => {
                            let now = Instant::now();
                            if stopping.is_some_and(|at| at <= now) {
                                warn!(broker = %state.broker(), "MQTT disconnect timed out");
                                break Outcome::End;
                            }
                            state.on_timer(now);
                            if std::mem::take(&mut state.abandon) {
                                break Outcome::Abandon;
                            }
                        }
                        () = shared.wake.notified() => state.flush_outbox(Instant::now()),
                        event = &mut poll => break Outcome::Polled(event),
                    }
                }
            };
            let error = match outcome {
                Outcome::End => break,
                Outcome::Polled(Ok(event)) => {
                    if stopping.is_some() && event == Event::Outgoing(Outgoing::Disconnect) {
                        break;
                    }
                    if self.state.handle(event, &mut self.eventloop.pending) {
                        backoff.reset();
                        if std::mem::take(&mut in_outage) {
                            info!(broker = %self.state.broker(), "MQTT connection restored");
                        }
                    }
                    if !std::mem::take(&mut self.state.abandon) {
                        continue;
                    }
                    self.give_up_connection()
                }
                Outcome::Abandon => self.give_up_connection(),
                Outcome::Polled(Err(error)) => error,
            };
            // What rumqttc queued as events for the connection that ended
            // (a SUBSCRIBE it was writing when the write failed) must not
            // be taken for the next connection's: each would shift the
            // SUBACKs matched to filters by one.
            self.eventloop.state.events.clear();
            if stopping.is_some() {
                break;
            }
            self.state.set_disconnected();
            *shared
                .last_error
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(describe(&error));
            log_connection_error(self.state.broker(), &error, in_outage);
            in_outage = true;
            self.state.subscriptions = Subscriptions::default();
            self.next_broker();
            tokio::select! {
                () = shared.kill.cancelled() => break,
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
        self.state.set_disconnected();
        shared.ended.cancel();
        debug!(broker = %self.state.broker(), "MQTT session ended");
    }

    /// After a failed or lost connection: the next broker of the list is
    /// the one the event loop connects to next.
    fn next_broker(&mut self) {
        let state = &mut self.state;
        if state.brokers.len() > 1 {
            state.current = (state.current + 1) % state.brokers.len();
            self.eventloop.mqtt_options = state.brokers[state.current].1.clone();
            debug!(broker = %state.broker(), "trying the next broker");
        }
    }

    /// Drops a connection on which the broker refuses every subscription,
    /// so that the loop connects to the next broker.
    fn give_up_connection(&mut self) -> ConnectionError {
        self.eventloop.network = None;
        self.eventloop.clean();
        ConnectionError::Io(std::io::Error::other(format!(
            "the broker refused every subscription {} times",
            MAX_RESUBSCRIBES + 1
        )))
    }
}

impl LoopState {
    fn broker(&self) -> &BrokerUrl {
        &self.brokers[self.current].0
    }

    /// Queues a SUBSCRIBE of one filter; false when the request channel is
    /// full (or closed: the session is ending).
    fn send_subscribe(&mut self, filter: &str, qos: QoS) -> bool {
        if self.shared.client.try_subscribe(filter, qos).is_err() {
            return false;
        }
        self.subscriptions.queued.push_back(filter.to_owned());
        true
    }

    /// Sends the SUBSCRIBEs the handle asked for (and the replays after a
    /// ConnAck); what the full channel does not take waits a moment.
    fn flush_outbox(&mut self, now: Instant) {
        let shared = Arc::clone(&self.shared);
        let drained = shared
            .remembered()
            .drain_outbox(|filter, qos| self.send_subscribe(filter, qos));
        if !drained {
            self.subscriptions.requeue_at = Some(now + QUEUE_RETRY);
        }
        // Outside the lock: a waiting handle reads the outbox under it.
        shared.progress.send_modify(|p| p.outbox += 1);
    }

    /// Lost SUBACKs count as refusals; due retries go out.
    fn on_timer(&mut self, now: Instant) {
        for filter in self.subscriptions.lost(now) {
            self.on_refused(&filter, now, "did not confirm");
        }
        let shared = Arc::clone(&self.shared);
        for filter in self.subscriptions.due_retries(now) {
            // Checked and queued under one lock: a handle's UNSUBSCRIBE
            // queued in between would otherwise go out before the retry,
            // and the broker keep a filter the session has forgotten.
            let remembered = shared.remembered();
            let Some(&qos) = remembered.filters.get(&filter) else {
                // Unsubscribed meanwhile.
                self.subscriptions.retries.remove(&filter);
                continue;
            };
            let queued = self.send_subscribe(&filter, qos);
            drop(remembered);
            if queued {
                Counters::bump(&self.shared.counters.resubscribes);
            } else if let Some(retry) = self.subscriptions.retries.get_mut(&filter) {
                retry.at = Some(now + QUEUE_RETRY);
            }
        }
        if self.subscriptions.requeue_at.is_some_and(|at| at <= now) {
            self.subscriptions.requeue_at = None;
            self.flush_outbox(now);
        }
    }

    /// The broker refused `filter`, or did not answer for it: retry it
    /// with backoff, and past the bounded retries give it up (once, in the
    /// log and the stats). Only when every filter is given up, and other
    /// brokers are configured, is the connection abandoned.
    fn on_refused(&mut self, filter: &str, now: Instant, how: &'static str) {
        if !self.shared.remembered().filters.contains_key(filter) {
            self.subscriptions.retries.remove(filter);
            return;
        }
        match self.subscriptions.refused(filter, now) {
            Refusal::Retry => {
                debug!(broker = %self.broker(), filter, how, "subscription not taken; subscribing again");
            }
            Refusal::StillRefused => {
                debug!(broker = %self.broker(), filter, how, "given-up subscription still not taken");
            }
            Refusal::GiveUp => {
                Counters::bump(&self.shared.counters.given_up);
                warn!(broker = %self.broker(), filter, how,
                    attempts = MAX_RESUBSCRIBES + 1,
                    "the broker keeps refusing this subscription: given up on this connection \
                     (tried again every {} s); the session's other subscriptions go on",
                    GIVEN_UP_RETRY.as_secs());
                let useless = self.brokers.len() > 1 && {
                    let remembered = self.shared.remembered();
                    !remembered.filters.is_empty()
                        && self.subscriptions.all_given_up(remembered.filters.keys())
                };
                if useless {
                    self.refused_everything.insert(self.current);
                    if self.refused_everything.len() < self.brokers.len() {
                        warn!(broker = %self.broker(),
                            "the broker refuses every subscription of the session: moving to the next broker");
                        self.abandon = true;
                    } else {
                        warn!(broker = %self.broker(),
                            "every broker of the list refuses every subscription of the session: \
                             staying on this one");
                    }
                }
            }
        }
    }

    /// Handles one event; returns whether it was a (re)connection.
    fn handle(&mut self, event: Event, pending: &mut VecDeque<Request>) -> bool {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                Counters::bump(&self.shared.counters.connects);
                self.subscriptions = Subscriptions::default();
                *self
                    .shared
                    .current
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(self.broker().clone());
                // rumqttc has just cleared `pending` (a clean session has
                // nothing to resume) and sends it before anything queued;
                // cleared here too, in case a broker claimed a session we
                // never asked it to keep, so the replay is all it holds.
                pending.clear();
                let replay = self.shared.remembered().on_connected();
                self.subscriptions.replayed = replay
                    .iter()
                    .filter_map(|request| match request {
                        Request::Subscribe(subscribe) => {
                            subscribe.filters.first().map(|f| f.path.clone())
                        }
                        _ => None,
                    })
                    .collect();
                pending.extend(replay);
                self.shared.progress.send_modify(|p| p.outbox += 1);
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
                self.subscriptions.on_sent(pkid, Instant::now());
                false
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let taken = !ack
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, SubscribeReasonCode::Failure));
                let Some(filter) = self.subscriptions.on_suback(ack.pkid, Instant::now()) else {
                    // Not an answer to a SUBSCRIBE of ours that is out.
                    return false;
                };
                if !taken {
                    self.on_refused(&filter, Instant::now(), "refused");
                    // A refusal is not a confirmation: whoever waits for
                    // one waits for the retry's.
                    return false;
                }
                self.refused_everything.clear();
                if self.subscriptions.accepted(&filter) {
                    info!(broker = %self.broker(), filter, "the broker took a given-up subscription after all");
                }
                self.shared.progress.send_modify(|p| p.subacks += 1);
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
        self.shared.progress.send_modify(|p| p.outbox += 1);
        self.shared.set_connected(false);
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

    /// What a ConnAck replays: the filters the loop then subscribes to, and
    /// the retained states.
    fn replay(remembered: &mut Remembered) -> Vec<String> {
        let replay = topics(&remembered.on_connected());
        assert!(outbox(remembered).is_empty(), "replayed, not in the outbox");
        replay
    }

    /// What the session loop sends from the outbox, emptying it.
    fn outbox(remembered: &mut Remembered) -> Vec<String> {
        let mut sent = Vec::new();
        assert!(remembered.drain_outbox(|filter, qos| {
            sent.push(format!("sub {filter} {qos:?}"));
            true
        }));
        sent
    }

    #[test]
    fn requests_while_disconnected_are_only_remembered() {
        let mut remembered = Remembered::default();
        assert!(!remembered.subscribe("/a/#", QoS::AtLeastOnce));
        assert!(!remembered.set_state("/h/$state", b"online"));
        assert!(outbox(&mut remembered).is_empty());
        assert_eq!(
            replay(&mut remembered),
            ["sub /a/# AtLeastOnce", "pub /h/$state online"]
        );
    }

    #[test]
    fn requests_while_connected_are_sent_and_remembered() {
        let mut remembered = Remembered::default();
        remembered.on_connected();
        assert!(remembered.subscribe("/a/+", QoS::AtLeastOnce));
        assert!(remembered.set_state("/h/$state", b"online"));
        // A full request channel: the filter stays in the outbox.
        assert!(!remembered.drain_outbox(|_, _| false));
        assert_eq!(outbox(&mut remembered), ["sub /a/+ AtLeastOnce"]);
        // Subscribed then unsubscribed before the loop sent it: nothing goes.
        assert!(remembered.subscribe("/b", QoS::AtLeastOnce));
        assert!(remembered.unsubscribe("/b"));
        assert!(outbox(&mut remembered).is_empty());
        // A lost connection empties the outbox: the ConnAck replays all.
        assert!(remembered.subscribe("/c", QoS::AtLeastOnce));
        remembered.on_disconnected();
        assert!(outbox(&mut remembered).is_empty());
        remembered.unsubscribe("/c");
        assert_eq!(
            replay(&mut remembered),
            ["sub /a/+ AtLeastOnce", "pub /h/$state online"]
        );
    }

    #[test]
    fn a_qos_cap_lowers_every_subscription() {
        let mut remembered = Remembered {
            max_qos: Some(QoS::AtMostOnce),
            ..Remembered::default()
        };
        remembered.subscribe("/a", QoS::AtLeastOnce);
        assert_eq!(replay(&mut remembered), ["sub /a AtMostOnce"]);
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
                replay(&mut remembered),
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
    fn subacks_are_matched_to_their_filters_in_the_order_they_were_queued() {
        let now = Instant::now();
        let mut subs = Subscriptions::default();
        subs.queued.extend(["/a", "/b"].map(String::from));
        // What a ConnAck replayed goes out first.
        subs.replayed.push_back("/r".into());
        subs.on_sent(6, now);
        subs.on_sent(7, now);
        subs.on_sent(8, now);
        assert_eq!(subs.on_suback(6, now).as_deref(), Some("/r"));
        // A SUBSCRIBE the loop did not queue (none should exist) is ignored.
        subs.on_sent(9, now);
        assert_eq!(subs.on_suback(8, now).as_deref(), Some("/b"));
        assert_eq!(subs.on_suback(7, now).as_deref(), Some("/a"));
        assert_eq!(subs.on_suback(9, now), None);
        assert_eq!(subs.on_suback(7, now), None, "answered once");
        assert_eq!(subs.next_due(), None);
    }

    #[test]
    fn subacks_are_lost_only_when_none_came_for_a_while() {
        let start = Instant::now();
        let mut subs = Subscriptions::default();
        subs.queued.extend(["/a", "/b", "/c"].map(String::from));
        subs.on_sent(1, start);
        subs.on_sent(2, start + Duration::from_secs(1));
        subs.on_sent(3, start + Duration::from_secs(1));
        assert_eq!(subs.next_due(), Some(start + SUBACK_WAIT));
        // A slow broker answers the first after 4 s: the others get 5 s more.
        let answered = start + Duration::from_secs(4);
        assert_eq!(subs.on_suback(1, answered).as_deref(), Some("/a"));
        assert!(subs.lost(start + SUBACK_WAIT).is_empty());
        assert_eq!(subs.next_due(), Some(answered + SUBACK_WAIT));
        assert_eq!(subs.lost(answered + SUBACK_WAIT), ["/b", "/c"]);
        assert_eq!(
            subs.on_suback(2, answered),
            None,
            "too late: the retry's counts"
        );
        assert_eq!(subs.next_due(), None);
    }

    #[test]
    fn a_refused_filter_is_retried_with_backoff_then_given_up_alone() {
        let start = Instant::now();
        let mut subs = Subscriptions::default();
        let mut now = start;
        let mut verdicts = Vec::new();
        for _ in 0..MAX_RESUBSCRIBES + 2 {
            verdicts.push(subs.refused("/pi.local/x", now));
            let due = subs.next_due().expect("a retry is scheduled");
            assert!(subs.due_retries(due - Duration::from_millis(1)).is_empty());
            assert_eq!(subs.due_retries(due), ["/pi.local/x"]);
            assert_eq!(subs.next_due(), None, "out, waiting for its SUBACK");
            now = due;
        }
        let retries = MAX_RESUBSCRIBES as usize;
        assert!(verdicts[..retries].iter().all(|v| *v == Refusal::Retry));
        assert_eq!(verdicts[retries], Refusal::GiveUp);
        assert_eq!(verdicts[retries + 1], Refusal::StillRefused);
        // The bounded retries take 13.1 s; then one a minute.
        assert_eq!(
            now - start,
            Duration::from_millis(13_100) + 2 * GIVEN_UP_RETRY
        );
        let filters = ["/ok/#", "/pi.local/x"].map(String::from);
        assert!(!subs.all_given_up(filters.iter()), "/ok/# is fine");
        assert!(subs.all_given_up(filters[1..].iter()));
        // Taken after all: forgotten, and said so.
        assert!(subs.accepted("/pi.local/x"));
        assert!(!subs.accepted("/ok/#"));
        assert_eq!(subs.next_due(), None);
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
