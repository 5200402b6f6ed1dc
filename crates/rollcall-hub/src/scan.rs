//! Calling the roll: send one roll-call by UDP (broadcast or unicast) and,
//! where asked, on MQTT `/udp/request`; collect answers on the roll-call's
//! topic until the wait ends or everyone expected has answered.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rollcall_net::{
    BrokerUrl, Message, Qos, RollCallSocket, Session, SessionConfig, SessionHandle,
};
use rollcall_proto::{RollCall, Topics};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::{Collector, HubError, Offer, ScanReport};

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

/// A scanner: an MQTT session on the broker answers arrive at, and a UDP socket.
pub struct Scanner {
    session: SessionHandle,
    incoming: mpsc::Receiver<Message>,
    udp: RollCallSocket,
    broker: BrokerUrl,
    topics: Topics,
    subscribed: Option<String>,
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
        })
    }

    /// The scanner's MQTT session.
    pub fn session(&self) -> &SessionHandle {
        &self.session
    }

    /// The `broker` field for a roll-call to `destinations`: our broker, unless
    /// it is a loopback address and the datagrams leave this host, where
    /// agents would read it as their own loopback (docs/protocol.md section 5).
    /// Agents that hear the roll-call over MQTT ignore a loopback broker, so
    /// it does no harm there.
    fn broker_field(&self, destinations: &[IpAddr]) -> Option<String> {
        let leaves_host = destinations.iter().any(|d| !d.is_loopback());
        (!(self.broker.is_loopback() && leaves_host)).then(|| self.broker.to_string())
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
                .subscribe_confirmed(&opts.topic, SUBSCRIBE_TIMEOUT)
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
        loop {
            if opts.expect.is_some_and(|n| collector.complete(n)) {
                break;
            }
            // The clock is read on every turn rather than left to the
            // timeout: answers that keep arriving would otherwise postpone
            // both the next copy and the end of the wait.
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Copy k (0-based) goes out at k × wait / sends; all of them
            // before the deadline, since k < sends.
            let next_send = (sent < sends).then(|| started + between_sends * sent);
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
            let wake = next_send.map_or(deadline, |at| at.min(deadline));
            let msg = match tokio::time::timeout_at(wake, self.incoming.recv()).await {
                Ok(Some(msg)) => msg,
                Ok(None) => return Err(rollcall_net::NetError::SessionClosed.into()),
                Err(_) => continue,
            };
            if msg.topic != opts.topic {
                continue;
            }
            match collector.offer(&msg.payload, started.elapsed()) {
                Offer::Counted => progress(&collector),
                other => debug!(?other, "answer not counted"),
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
        Ok(report)
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
    use super::window_for;

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
