//! Calling the roll: send one roll-call by UDP (broadcast or unicast) and,
//! where asked, on MQTT `/udp/request`; collect answers on the roll-call's
//! topic until the wait ends or everyone expected has answered; and find
//! the interfaces of services that answered briefly, from descriptions
//! held or read from their retained `$description`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rollcall_net::{
    BrokerUrl, Message, Qos, RollCallSocket, Session, SessionConfig, SessionHandle,
};
use rollcall_proto::topic::check_name;
use rollcall_proto::{Description, Interfaces, RollCall, Topics};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::{Collector, DigestCounts, HubError, Offer, ScanReport, Wanted};

/// How a scan learns the interfaces of the services that answer
/// (docs/protocol.md section 3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Descriptions {
    /// The roll-call asks for brief answers (`"brief":true`); a
    /// description the scanner does not hold with the answer's digest is
    /// read from the service's retained `$description`, and held for the
    /// next roll-calls.
    #[default]
    Read,
    /// Brief answers, and nothing read: the caller watches the retained
    /// `$description`s itself (the hub's map does).
    Watched,
    /// Full answers, each with its `interfaces`, as a roll-call without
    /// `brief` asks.
    InAnswers,
}

/// What one roll-call asks and how long it waits.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The requester's name in the roll-call.
    pub replyto: String,
    /// The topic answers go to.
    pub topic: String,
    /// The UDP port agents listen on.
    pub udp_port: u16,
    /// Broadcast addresses to send to.
    pub broadcasts: Vec<IpAddr>,
    /// Unicast addresses to send to.
    pub targets: Vec<IpAddr>,
    /// Also publish the roll-call on `/udp/request`.
    pub via_mqtt: bool,
    /// The longest wait for answers.
    pub wait: Duration,
    /// Each answerer waits a random 0..window_ms first.
    pub window_ms: u64,
    /// End as soon as this many hosts and all their services have answered.
    pub expect: Option<usize>,
    /// Sign the roll-call with this cluster key (docs/protocol.md section 8).
    pub cluster_key: Option<Vec<u8>>,
    /// How many times the roll-call is sent, spread evenly over `wait`:
    /// again while answers are missing (with `expect`, until it is met),
    /// for links that lose datagrams. The same id each time, so a host that
    /// heard an earlier copy does not answer twice (signed, each copy has a
    /// fresh `ts` and nonce). At least 1.
    pub sends: u32,
    /// Brief answers or full ones, and whether descriptions are read.
    pub descriptions: Descriptions,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The answer window when the scanner knows nothing of the cluster.
pub const DEFAULT_WINDOW_MS: u64 = 20;

/// The answer window for a cluster of `hosts`: a tenth of a millisecond per
/// host, at most a second. Each host's burst of answers costs the broker and
/// the scanner about that much (BENCHMARKS.md), so the window spreads the
/// bursts about as fast as they can be taken in: none for fewer than ten
/// hosts, 5 ms for 50, 20 ms (the old fixed default) for 200, 100 ms for
/// 1,000.
pub fn window_for(hosts: usize) -> u64 {
    (hosts / 10).min(1000) as u64
}

/// Above this many expected hosts the answers are taken at QoS 0.
pub const QOS0_ABOVE_HOSTS: usize = 100;

/// The QoS the scanner subscribes to answers with. QoS 1, so that each
/// answer makes us send a PUBACK, which carries our TCP acknowledgement: a
/// broker without `set_tcp_nodelay` (Mosquitto's default) would otherwise
/// hold a host's second answer until our delayed acknowledgement of its
/// first, 40 ms later. But a stock Mosquitto keeps at most 20 QoS 1
/// messages in flight and 1,000 queued for one client, and drops the rest:
/// a thousand hosts' six thousand answers lost seven in ten
/// (BENCHMARKS.md). So when more than [`QOS0_ABOVE_HOSTS`] hosts are
/// expected, QoS 0: nothing in flight to wait for, and that many answers
/// fill TCP segments, which are acknowledged at once anyway.
pub fn answer_qos(expect: Option<usize>) -> Qos {
    if expect.is_some_and(|n| n > QOS0_ABOVE_HOSTS) {
        Qos::AtMostOnce
    } else {
        Qos::AtLeastOnce
    }
}

/// How many answers the scanner's session buffers between reads. One
/// roll-call to a thousand hosts brings thousands of answers within a few
/// milliseconds; a smaller buffer overflows whenever the scanner's thread is
/// off the CPU for a moment, and an answer dropped there is lost.
pub const ANSWER_BUFFER: usize = 65_536;

/// How long the scanner waits for its answer subscription to work.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the roll-call waits for the acknowledgement carrier to
/// leave (see `Scanner::acknowledge`): a delayed acknowledgement costs
/// about 40 ms, so waiting longer than that gains nothing.
const ACK_WAIT: Duration = Duration::from_millis(40);
/// How often the subscription probe is sent again (the first one may be
/// published before the broker has the subscription).
const PROBE_RETRY: Duration = Duration::from_millis(100);

/// How many `$description`s one roll-call reads at most; brief answers
/// beyond them (forged ones, or a first roll-call to a very large cluster,
/// whose next roll-calls read the rest) are left without interfaces.
pub const MAX_READS: usize = 1024;
/// How long a `$description` is waited for once subscribed to. A broker
/// sends what it retains at once; this is for one under load. It may
/// outlast the scan's wait by as much, for a read begun at its end.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// How many descriptions a scanner holds between roll-calls, and their
/// bytes at most (payloads, as read); past either, the oldest go.
pub const MAX_HELD: usize = 16_384;
/// See [`MAX_HELD`].
pub const MAX_HELD_BYTES: usize = 32 * 1024 * 1024;

/// One service's description, as read and verified.
struct Held {
    digest: String,
    interfaces: Interfaces,
    bytes: usize,
    seq: u64,
}

/// The descriptions a scanner has read, by (host, function): bounded in
/// count and bytes, the oldest read forgotten first.
#[derive(Default)]
struct HeldDescriptions {
    by_service: HashMap<(String, String), Held>,
    order: BTreeMap<u64, (String, String)>,
    bytes: usize,
    next: u64,
}

impl HeldDescriptions {
    fn get(&self, host: &str, function: &str, digest: &str) -> Option<&Interfaces> {
        self.by_service
            .get(&(host.to_owned(), function.to_owned()))
            .filter(|h| h.digest == digest)
            .map(|h| &h.interfaces)
    }

    fn insert(
        &mut self,
        host: &str,
        function: &str,
        digest: &str,
        interfaces: Interfaces,
        bytes: usize,
    ) {
        let key = (host.to_owned(), function.to_owned());
        self.remove(&key);
        while !self.order.is_empty()
            && (self.by_service.len() >= MAX_HELD || self.bytes + bytes > MAX_HELD_BYTES)
        {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.remove(&oldest);
            }
        }
        self.next += 1;
        self.order.insert(self.next, key.clone());
        self.bytes += bytes;
        self.by_service.insert(
            key,
            Held {
                digest: digest.to_owned(),
                interfaces,
                bytes,
                seq: self.next,
            },
        );
    }

    fn remove(&mut self, key: &(String, String)) {
        if let Some(old) = self.by_service.remove(key) {
            self.order.remove(&old.seq);
            self.bytes -= old.bytes;
        }
    }
}

/// A `$description` subscribed to, waited for until `until`.
struct Read {
    wanted: Wanted,
    until: Instant,
}

/// A scanner: an MQTT session on the broker answers arrive at, and a UDP socket.
pub struct Scanner {
    session: SessionHandle,
    incoming: mpsc::Receiver<Message>,
    udp: RollCallSocket,
    /// The first broker of the session's list: named in a roll-call only
    /// until the session has connected somewhere.
    broker: BrokerUrl,
    topics: Topics,
    subscribed: Option<String>,
    held: HeldDescriptions,
}

impl Scanner {
    /// A scanner on the broker of `session` (which also says how to log in),
    /// its session running on `tracker` until `shutdown`.
    pub fn connect(
        session: SessionConfig,
        topics: Topics,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, HubError> {
        let broker = session.broker.clone();
        let config = SessionConfig {
            channel_capacity: ANSWER_BUFFER,
            ..session
        };
        let session = Session::start(config, shutdown, tracker)?;
        let udp = RollCallSocket::bind_sender(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        Ok(Scanner {
            session: session.handle,
            incoming: session.incoming,
            udp,
            broker,
            topics,
            subscribed: None,
            held: HeldDescriptions::default(),
        })
    }

    /// The scanner's MQTT session.
    pub fn session(&self) -> &SessionHandle {
        &self.session
    }

    /// The `broker` field for a roll-call to `destinations`: the broker our
    /// session is connected to now (with a list of brokers, whichever node
    /// it moved to, since that is where the answers reach us), unless it is
    /// a loopback address and the datagrams leave this host, where agents
    /// would read it as their own loopback (docs/protocol.md section 5).
    /// Agents that hear the roll-call over MQTT ignore a loopback broker, so
    /// it does no harm there.
    fn broker_field(&self, destinations: &[IpAddr]) -> Option<String> {
        let broker = self.session.broker().unwrap_or_else(|| self.broker.clone());
        let leaves_host = destinations.iter().any(|d| !d.is_loopback());
        (!(broker.is_loopback() && leaves_host)).then(|| broker.to_string())
    }

    /// Returns once the broker delivers what is published on `topic` to us:
    /// a fast agent answers within a millisecond, and an answer that reaches
    /// the broker before our subscription does is lost. A probe published on
    /// the topic and received back proves the subscription; other scanners
    /// on the topic see it as a message that is not an answer. It goes at
    /// QoS 0 (it is resent until it comes back): at QoS 1 a stock
    /// Mosquitto's PUBACK would hold the probe's echo, and the answers
    /// after it, for our delayed TCP acknowledgement (about 40 ms).
    async fn await_subscription(&mut self, topic: &str) -> Result<(), HubError> {
        let probe = format!("{{\"probe\":\"{:032x}\"}}", rand::random::<u128>());
        let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
        loop {
            self.session
                .publish(topic, probe.clone(), Qos::AtMostOnce, false)
                .await?;
            let retry = (Instant::now() + PROBE_RETRY).min(deadline);
            while let Ok(msg) = tokio::time::timeout_at(retry, self.incoming.recv()).await {
                let msg = msg.ok_or(rollcall_net::NetError::SessionClosed)?;
                if msg.topic == topic && msg.payload == probe.as_bytes() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(rollcall_net::NetError::Timeout(
                    SUBSCRIBE_TIMEOUT,
                    "the broker to confirm the answer subscription",
                )
                .into());
            }
        }
    }

    /// Carries our TCP acknowledgement of the probe's echo to the broker at
    /// once: an empty QoS 0 message on `{topic}/$ack`, which no roll-call
    /// may name (so no agent answers there) and nobody needs to read.
    ///
    /// Without it, the echo is the last thing the broker sent us and our
    /// kernel delays its acknowledgement by about 40 ms; a broker without
    /// `set_tcp_nodelay` (Mosquitto's default) then holds the first answers
    /// back until it comes (Nagle's algorithm), and a one-host scan takes
    /// 45 ms instead of one. Any data we send carries the acknowledgement,
    /// and a QoS 0 message is the one packet a broker does not answer.
    ///
    /// It waits until the message has left (at most [`ACK_WAIT`]), so that
    /// it reaches the broker before the roll-call's first answers do; past
    /// that wait the roll-call goes out all the same.
    async fn acknowledge(&self, topic: &str) {
        let sink = format!("{topic}/$ack");
        let written = self
            .session
            .publish_written(&sink, Vec::new(), Qos::AtMostOnce, false, ACK_WAIT)
            .await;
        if let Err(error) = written {
            debug!(%error, "the acknowledgement carrier did not leave in time");
        }
    }

    /// Sends roll-call `id` and collects its answers; `progress` is called
    /// after each counted answer.
    pub async fn scan(
        &mut self,
        id: u64,
        opts: &ScanOptions,
        mut progress: impl FnMut(&Collector),
    ) -> Result<ScanReport, HubError> {
        if opts.broadcasts.is_empty() && opts.targets.is_empty() && !opts.via_mqtt {
            return Err(HubError::Invalid(
                "nowhere to send the roll-call: give a broadcast address, a target, or MQTT".into(),
            ));
        }
        if self.subscribed.as_deref() != Some(opts.topic.as_str()) {
            if let Some(old) = self.subscribed.take() {
                self.session.unsubscribe(&old).await?;
            }
            self.session.wait_connected(Duration::from_secs(5)).await?;
            self.session
                .subscribe_confirmed_with_qos(
                    &opts.topic,
                    answer_qos(opts.expect),
                    SUBSCRIBE_TIMEOUT,
                )
                .await?;
            self.await_subscription(&opts.topic).await?;
            self.acknowledge(&opts.topic).await;
            self.subscribed = Some(opts.topic.clone());
        }
        self.session.wait_connected(Duration::from_secs(5)).await?;
        // Answers that arrived between scans belong to none of them.
        while self.incoming.try_recv().is_ok() {}

        let destinations: Vec<IpAddr> = opts
            .broadcasts
            .iter()
            .chain(&opts.targets)
            .copied()
            .collect();
        let mut rc = RollCall::new(id, opts.replyto.clone(), opts.topic.clone());
        rc.window_ms = Some(opts.window_ms);
        rc.broker = self.broker_field(&destinations);
        rc.brief = (opts.descriptions != Descriptions::InAnswers).then_some(true);
        // Signed, each copy gets its own `ts` and nonce: a copy sent more
        // than 30 s after the first would otherwise be refused as stale.
        // The id stays, so a host answers once whichever copies it hears.
        let encode = |rc: &RollCall| match &opts.cluster_key {
            None => rc.to_bytes(),
            Some(key) => {
                let mut map = rc.to_object();
                map.insert("ts".into(), unix_ms().into());
                map.insert(
                    "nonce".into(),
                    format!("{:032x}", rand::random::<u128>()).into(),
                );
                rollcall_proto::sign::sign(&mut map, key);
                serde_json::to_vec(&map).unwrap_or_default()
            }
        };

        let mut collector = Collector::new(id, opts.window_ms);
        let dropped_before = self.session.stats().dropped;
        let started = Instant::now();
        // A wait too long for the clock (a `--wait-ms` near u64::MAX) is a
        // wait without end, not a panic.
        let deadline = started
            .checked_add(opts.wait)
            .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400));
        let sends = opts.sends.max(1);
        let between_sends = opts.wait / sends;
        self.send(&encode(&rc), &destinations, opts).await?;
        let mut sent = 1;
        let mut reads: HashMap<String, Read> = HashMap::new();
        let mut started_reads = 0;
        let mut digests = DigestCounts::default();
        loop {
            let now = Instant::now();
            // Reads whose time is up found nothing usable retained.
            let expired: Vec<String> = reads
                .iter()
                .filter(|(_, r)| r.until <= now)
                .map(|(t, _)| t.clone())
                .collect();
            for topic in expired {
                reads.remove(&topic);
                self.session.unsubscribe(&topic).await?;
                digests.unread += 1;
                debug!(%topic, "no description retained in time");
            }
            // The clock is read on every turn rather than left to the
            // timeout: answers that keep arriving would otherwise postpone
            // both the next copy and the end of the wait.
            let answering = now < deadline && !opts.expect.is_some_and(|n| collector.complete(n));
            if !answering && reads.is_empty() {
                break;
            }
            // Copy k (0-based) goes out at k × wait / sends; all of them
            // before the deadline, since k < sends.
            let next_send = (answering && sent < sends).then(|| started + between_sends * sent);
            if next_send.is_some_and(|at| at <= now) {
                debug!(
                    id,
                    copy = sent + 1,
                    "roll-call sent again: answers are missing"
                );
                self.send(&encode(&rc), &destinations, opts).await?;
                sent += 1;
                continue;
            }
            let mut wake = if answering {
                next_send.map_or(deadline, |at| at.min(deadline))
            } else {
                now + READ_TIMEOUT
            };
            if let Some(until) = reads.values().map(|r| r.until).min() {
                wake = wake.min(until);
            }
            let msg = match tokio::time::timeout_at(wake, self.incoming.recv()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => return Err(rollcall_net::NetError::SessionClosed.into()),
                Err(_) => continue,
            };
            if let Some(read) = reads.remove(&msg.topic) {
                self.session.unsubscribe(&msg.topic).await?;
                self.take_read(read.wanted, &msg.payload, &mut collector, &mut digests);
                continue;
            }
            if msg.topic != opts.topic || !answering {
                continue;
            }
            match collector.offer(&msg.payload, started.elapsed()) {
                Offer::Counted => progress(&collector),
                other => debug!(?other, "answer not counted"),
            }
            for wanted in collector.take_wanted() {
                if let Some(interfaces) =
                    self.held
                        .get(&wanted.host, &wanted.function, &wanted.digest)
                {
                    collector.describe(&wanted.host, &wanted.function, interfaces.clone());
                    digests.known += 1;
                    continue;
                }
                // The caller watches the descriptions itself: nothing is
                // missing here.
                if opts.descriptions != Descriptions::Read {
                    continue;
                }
                let topic = self.topics.description(&wanted.host, &wanted.function);
                // Names from the network make a topic only when they are
                // names: a `+` or `#` would subscribe to far more.
                let readable = started_reads < MAX_READS
                    && check_name(&wanted.host).is_ok()
                    && check_name(&wanted.function).is_ok()
                    && topic != opts.topic
                    && !reads.contains_key(&topic);
                if !readable {
                    digests.unread += 1;
                    continue;
                }
                self.session
                    .subscribe_with_qos(&topic, Qos::AtMostOnce)
                    .await?;
                started_reads += 1;
                let until = Instant::now() + READ_TIMEOUT;
                reads.insert(topic, Read { wanted, until });
            }
        }
        let mut report = collector.finish(started.elapsed());
        report.lost_in_session = self.session.stats().dropped - dropped_before;
        if report.lost_in_session > 0 {
            warn!(
                lost = report.lost_in_session,
                "messages dropped by the scanner's full session buffer"
            );
        }
        if !digests.all_found() {
            warn!(
                mismatched = digests.mismatched,
                unread = digests.unread,
                "services answered with a digest whose description was not found; \
                 they are reported without interfaces"
            );
        }
        report.digests = digests;
        Ok(report)
    }

    /// Takes the `$description` read for `wanted`: its interfaces when the
    /// payload's digest is the answer's and it describes that service.
    /// Answers can be forged, so the digest is checked against the bytes.
    fn take_read(
        &mut self,
        wanted: Wanted,
        payload: &[u8],
        collector: &mut Collector,
        digests: &mut DigestCounts,
    ) {
        if payload.trim_ascii().is_empty() {
            digests.unread += 1;
            debug!(host = %wanted.host, function = %wanted.function, "description cleared");
            return;
        }
        let described = (rollcall_proto::digest(payload) == wanted.digest)
            .then(|| Description::parse_payload(payload).ok())
            .flatten()
            .filter(|d| d.function == wanted.function);
        let Some(description) = described else {
            digests.mismatched += 1;
            debug!(host = %wanted.host, function = %wanted.function, digest = %wanted.digest,
                "the retained description is not the one the answer names");
            return;
        };
        digests.read += 1;
        collector.describe(
            &wanted.host,
            &wanted.function,
            description.interfaces.clone(),
        );
        self.held.insert(
            &wanted.host,
            &wanted.function,
            &wanted.digest,
            description.interfaces,
            payload.len(),
        );
    }

    /// Sends one copy of the roll-call to every destination, and over MQTT
    /// if asked. One destination that cannot be reached (an interface gone
    /// down) does not stop it reaching the others; reaching none is an error.
    async fn send(
        &self,
        bytes: &[u8],
        destinations: &[IpAddr],
        opts: &ScanOptions,
    ) -> Result<(), HubError> {
        let mut sent = 0;
        for dest in destinations {
            let to = SocketAddr::new(*dest, opts.udp_port);
            match self.udp.send_to(bytes, to).await {
                Ok(()) => sent += 1,
                Err(error) => warn!(%to, %error, "roll-call not sent there"),
            }
        }
        if sent == 0 && !opts.via_mqtt {
            return Err(HubError::Invalid(
                "the roll-call could not be sent to any destination".into(),
            ));
        }
        if opts.via_mqtt {
            // QoS 0 for the reason the probe is: a PUBACK to us would hold
            // the first answers back on a stock Mosquitto.
            self.session
                .publish(
                    &self.topics.udp_request(),
                    bytes.to_vec(),
                    Qos::AtMostOnce,
                    false,
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{answer_qos, window_for};
    use rollcall_net::Qos;

    #[test]
    fn answers_are_taken_at_qos_1_up_to_a_hundred_hosts_and_at_qos_0_beyond() {
        assert_eq!(answer_qos(None), Qos::AtLeastOnce);
        assert_eq!(answer_qos(Some(1)), Qos::AtLeastOnce);
        assert_eq!(answer_qos(Some(100)), Qos::AtLeastOnce);
        assert_eq!(answer_qos(Some(101)), Qos::AtMostOnce);
        assert_eq!(answer_qos(Some(1000)), Qos::AtMostOnce);
    }

    #[test]
    fn the_window_grows_a_tenth_of_a_millisecond_per_host_up_to_a_second() {
        assert_eq!(window_for(0), 0);
        assert_eq!(window_for(9), 0);
        assert_eq!(window_for(50), 5);
        assert_eq!(window_for(200), 20);
        assert_eq!(window_for(1_000), 100);
        assert_eq!(window_for(10_000), 1000);
        assert_eq!(window_for(usize::MAX), 1000);
    }
}
