//! The core's roll-call path: the gate, the host report and the answers
//! (docs/protocol.md sections 1 to 3), where the answers go, and the relays
//! that carry the host's foreign services' answers to a requester's broker
//! (section 5).

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;
use rollcall_net::{BrokerUrl, Qos};
use rollcall_proto::{
    Answer, HostReport, RollCall, RollCallLimits, brief_service_answer, host_answer, service_answer,
};
use tracing::{debug, info, warn};

use super::{AgentCore, Effect, Now, Out, SessionId};
use crate::delivery::{is_own_broker, requester_broker};
use crate::{AgentStats, VERSION};

/// How many roll-calls may wait for their requester's broker's name to
/// resolve at once; more are dropped, so a flood of names cannot pile up.
pub(super) const MAX_PENDING: usize = 32;

/// A roll-call admitted, waiting for its requester's broker's address.
pub(super) struct Pending {
    rc: RollCall,
    ipaddr: IpAddr,
    requester: BrokerUrl,
}

/// Answers waiting out their random share of the roll-call's window.
pub(super) struct Scheduled {
    pub(super) at: Instant,
    session: SessionId,
    topic: String,
    answers: Vec<Vec<u8>>,
}

/// Answers from this host's other services, forwarded to a requester's
/// broker until `until`, each (host, function) once.
pub(super) struct Relay {
    topic: String,
    id: u64,
    session: SessionId,
    pub(super) until: Instant,
    forwarded: HashSet<(String, String)>,
}

impl AgentCore {
    pub(super) fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr, now: Now, out: &mut Out) {
        match RollCall::parse(bytes, RollCallLimits::default()) {
            Ok(rc) => self.on_rollcall(rc, Some(from.ip()), now, out),
            Err(error) => {
                AgentStats::bump(self.stats.dropped_malformed());
                debug!(%from, %error, "roll-call datagram dropped");
            }
        }
    }

    pub(super) fn on_rollcall_message(&mut self, payload: &[u8], now: Now, out: &mut Out) {
        match RollCall::parse(payload, RollCallLimits::default()) {
            Ok(rc) => self.on_rollcall(rc, None, now, out),
            Err(error) => {
                AgentStats::bump(self.stats.dropped_malformed());
                debug!(%error, "roll-call over MQTT dropped");
            }
        }
    }

    /// A roll-call from `source` (`None`: over MQTT): admitted or not, then
    /// answered where section 5 says.
    fn on_rollcall(&mut self, rc: RollCall, source: Option<IpAddr>, now: Now, out: &mut Out) {
        if let Err(refusal) = self.gate.admit(&rc, source, now.unix_ms) {
            AgentStats::bump(self.stats.dropped_refused());
            debug!(id = rc.id, replyto = %rc.replyto, ?refusal, "roll-call not answered");
            return;
        }
        if self.is_own_topic(&rc.topic) {
            AgentStats::bump(self.stats.dropped_malformed());
            debug!(topic = %rc.topic, "roll-call asks for answers on one of the agent's own topics; dropped");
            return;
        }
        if !self.is_answer_topic(&rc.topic) {
            AgentStats::bump(self.stats.dropped_refused());
            debug!(topic = %rc.topic, prefix = %self.config.answer_prefix,
                "roll-call asks for answers outside the answer prefix or on a `$` topic; dropped");
            return;
        }
        let towards = source.unwrap_or(self.own_brokers[0].ip());
        let Some(ipaddr) = self.routes.local_addr_towards(towards) else {
            warn!(%towards, "no route back to the requester; roll-call dropped");
            return;
        };
        let Some(requester) = requester_broker(&rc, source) else {
            // Over MQTT without `broker`: the requester is on our broker.
            self.answer(rc, ipaddr, SessionId::Local, now, out);
            return;
        };
        match requester.host.parse::<IpAddr>() {
            Ok(ip) => {
                let addr = SocketAddr::new(ip, requester.port);
                self.answer_towards(rc, ipaddr, requester, addr, now, out);
            }
            // Our own broker by the name we know it by.
            Err(_) if self.is_own_broker_url(&requester) => {
                self.answer(rc, ipaddr, SessionId::Local, now, out);
            }
            // No lookup of a name we would not relay to: a forged roll-call
            // cannot make us ask DNS about the names it chooses.
            Err(_) if !self.may_relay(&requester, None) => {
                self.refuse_relay(&requester);
            }
            Err(_) if !self.has_room_for(&requester) => {
                self.refuse_session(&requester);
            }
            Err(_) if self.pending.len() >= MAX_PENDING => {
                AgentStats::bump(self.stats.dropped_refused());
                warn!(broker = %requester, "too many requesters' brokers being looked up; roll-call dropped");
            }
            Err(_) => {
                self.next_lookup += 1;
                let lookup = self.next_lookup;
                out.effects.push(Effect::Resolve {
                    lookup,
                    host: requester.host.clone(),
                    port: requester.port,
                });
                self.pending.insert(
                    lookup,
                    Pending {
                        rc,
                        ipaddr,
                        requester,
                    },
                );
            }
        }
    }

    pub(super) fn on_resolved(
        &mut self,
        lookup: u64,
        addr: Option<SocketAddr>,
        now: Now,
        out: &mut Out,
    ) {
        let Some(pending) = self.pending.remove(&lookup) else {
            return;
        };
        match addr {
            Some(addr) => {
                let Pending {
                    rc,
                    ipaddr,
                    requester,
                } = pending;
                self.answer_towards(rc, ipaddr, requester, addr, now, out);
            }
            None => {
                warn!(broker = %pending.requester, "cannot resolve the requester's broker; roll-call dropped")
            }
        }
    }

    /// Answers on our own broker when the requester's broker at `addr` is
    /// ours (rule 3), else through a session to it with a relay for this
    /// host's other services (rule 4).
    fn answer_towards(
        &mut self,
        rc: RollCall,
        ipaddr: IpAddr,
        requester: BrokerUrl,
        addr: SocketAddr,
        now: Now,
        out: &mut Out,
    ) {
        let routes = &self.routes;
        if self
            .own_brokers
            .iter()
            .any(|own| is_own_broker(addr, *own, |ip| routes.is_local(ip)))
        {
            self.answer(rc, ipaddr, SessionId::Local, now, out);
            return;
        }
        if !self.may_relay(&requester, Some(addr)) {
            self.refuse_relay(&requester);
            return;
        }
        // A listed broker with a login of its own is reached at its URL as
        // configured, however the roll-call names it: the login is given to
        // that URL only (the shell looks it up by URL when it connects).
        let target = match self.listed_relay(&requester, Some(addr)) {
            Some(listed) if self.config.relay_logins.contains_key(listed) => listed.clone(),
            _ => requester,
        };
        let Some(session) = self.remote(target, out) else {
            return;
        };
        let window = Duration::from_millis(rc.window_ms.unwrap_or(0));
        if !self.relays.iter().any(|r| r.topic == rc.topic) {
            out.subscribe(SessionId::Local, rc.topic.clone());
        }
        self.relays.push(Relay {
            topic: rc.topic.clone(),
            id: rc.id,
            session,
            until: now.at + window + self.config.relay_grace,
            forwarded: HashSet::new(),
        });
        self.answer(rc, ipaddr, session, now, out);
    }

    /// Whether answers may be relayed to `requester` (at `addr`, once
    /// known): with a cluster key every admitted roll-call was signed by a
    /// key holder; without one, only to a broker in `relay_brokers`, so an
    /// unsigned roll-call can make us connect nowhere else
    /// (docs/protocol.md section 8).
    fn may_relay(&self, requester: &BrokerUrl, addr: Option<SocketAddr>) -> bool {
        self.config.cluster_key.is_some() || self.listed_relay(requester, addr).is_some()
    }

    /// The `relay_brokers` entry `requester` (at `addr`, once known) is:
    /// by its URL, or by its address.
    fn listed_relay(&self, requester: &BrokerUrl, addr: Option<SocketAddr>) -> Option<&BrokerUrl> {
        self.config.relay_brokers.iter().find(|allowed| {
            *allowed == requester
                || addr.is_some_and(|addr| {
                    allowed.port == addr.port() && allowed.host.parse::<IpAddr>() == Ok(addr.ip())
                })
        })
    }

    /// Whether a relay to `broker` can have a session: its own, open
    /// already, or a new one while fewer than `max_relay_sessions` are open.
    fn has_room_for(&self, broker: &BrokerUrl) -> bool {
        self.remotes.contains_key(&broker.to_string())
            || self.remotes.len() < self.config.max_relay_sessions
    }

    fn refuse_session(&self, broker: &BrokerUrl) {
        AgentStats::bump(self.stats.dropped_refused());
        warn!(%broker, open = self.remotes.len(),
            "max_relay_sessions sessions to other brokers are open; roll-call dropped");
    }

    /// Whether `requester` is the broker we are configured with, by the
    /// same name.
    fn is_own_broker_url(&self, requester: &BrokerUrl) -> bool {
        matches!(&self.config.broker, crate::BrokerChoice::External(own) if own.contains(requester))
    }

    fn refuse_relay(&self, requester: &BrokerUrl) {
        AgentStats::bump(self.stats.dropped_refused());
        debug!(broker = %requester,
            "roll-call names another broker, unsigned and not in relay_brokers; dropped");
    }

    /// Whether answers may be published on `topic`: under the answer
    /// prefix and on no `$` level, so no roll-call can make us publish on
    /// a host's topics or its `$description`.
    fn is_answer_topic(&self, topic: &str) -> bool {
        topic.starts_with(&self.config.answer_prefix)
            && !topic.split('/').any(|level| level.starts_with('$'))
    }

    /// The session to `broker`: the one open already, or a new one while
    /// fewer than `max_relay_sessions` are open (`None`, the roll-call
    /// dropped and counted, past that).
    fn remote(&mut self, broker: BrokerUrl, out: &mut Out) -> Option<SessionId> {
        let key = broker.to_string();
        if let Some(&session) = self.remotes.get(&key) {
            return Some(session);
        }
        if !self.has_room_for(&broker) {
            self.refuse_session(&broker);
            return None;
        }
        self.next_remote += 1;
        let session = SessionId::Remote(self.next_remote);
        info!(broker = %key, "relaying answers to the requester's broker");
        out.effects.push(Effect::Open { session, broker });
        self.remotes.insert(key, session);
        Some(session)
    }

    /// Publishes the host report on our broker at once, and schedules the
    /// host's and every built-in service's answer after a random share of
    /// the window, through `session`.
    fn answer(
        &mut self,
        rc: RollCall,
        ipaddr: IpAddr,
        session: SessionId,
        now: Now,
        out: &mut Out,
    ) {
        let mut report = HostReport {
            rollcall: rc,
            hostname: self.host().to_owned(),
            ipaddr,
            extaddr: self.extaddr,
        };
        // A brief answer is only as good as the `$description` a scanner
        // can read: retained on our broker, so answers that go to another
        // broker (a relay) are full, ours and, since the report then does
        // not ask, the foreign services' too (docs/protocol.md section 3).
        if session != SessionId::Local {
            report.rollcall.brief = None;
        }
        let brief = report.rollcall.wants_brief();
        let uptime = self
            .started
            .map_or(0, |at| now.at.duration_since(at).as_secs());
        let mut answers = vec![host_answer(&report, &self.apps(), VERSION, uptime)];
        let descriptions: Vec<_> = {
            let ctx = self.ctx(now);
            self.slots
                .iter()
                .map(|s| s.service.describe(&ctx))
                .collect()
        };
        for (index, desc) in descriptions.iter().enumerate() {
            answers.push(if brief {
                let digest = self.current_digest(index, desc, out);
                brief_service_answer(&report, desc, &digest)
            } else {
                service_answer(&report, desc)
            });
        }
        let answers = answers
            .iter()
            .map(|a| serde_json::to_vec(a).unwrap_or_default())
            .collect();
        // The host's other services get the report at once: each is an
        // answerer and waits out its own share of the window.
        out.plain(self.topics.udp_report(), report.to_bytes());
        let window = report.rollcall.window_ms.unwrap_or(0);
        let jitter = Duration::from_millis(self.rng.random_range(0..=window));
        AgentStats::bump(self.stats.answered());
        let scheduled = Scheduled {
            at: now.at + jitter,
            session,
            topic: report.rollcall.topic,
            answers,
        };
        if jitter.is_zero() {
            send(scheduled, out);
        } else {
            self.scheduled.push(scheduled);
        }
    }

    /// Sends the answers whose time has come.
    pub(super) fn send_scheduled(&mut self, now: Now, out: &mut Out) {
        let (due, waiting) = std::mem::take(&mut self.scheduled)
            .into_iter()
            .partition(|s| s.at <= now.at);
        self.scheduled = waiting;
        let due: Vec<Scheduled> = due;
        for scheduled in due {
            send(scheduled, out);
        }
    }

    /// Forwards a service's answer to the requester's broker, if a relay wants
    /// it. The agent's own answers went there directly and are not forwarded.
    pub(super) fn relay(&mut self, topic: &str, payload: &[u8], now: Now, out: &mut Out) {
        if !self.relays.iter().any(|r| r.topic == topic) {
            return;
        }
        let Ok(answer) = Answer::parse(payload) else {
            return;
        };
        let own = answer.hostname == self.host()
            && (answer.is_host()
                || self
                    .slots
                    .iter()
                    .any(|s| s.service.name() == answer.function));
        if own {
            return;
        }
        let key = (answer.hostname, answer.function);
        for relay in &mut self.relays {
            let wanted = relay.topic == topic && relay.id == answer.id && relay.until > now.at;
            if !wanted || !relay.forwarded.insert(key.clone()) {
                continue;
            }
            AgentStats::bump(self.stats.relayed());
            out.effects.push(Effect::Publish {
                session: relay.session,
                topic: topic.to_owned(),
                payload: payload.to_vec(),
                qos: Qos::AtLeastOnce,
                retain: false,
            });
        }
    }

    /// Ends relays past their time, and closes sessions no relay uses.
    pub(super) fn expire_relays(&mut self, now: Now, out: &mut Out) {
        self.end_relays(|r| r.until <= now.at, out);
    }

    /// A session that cannot be used: its relays end, its answers are dropped.
    pub(super) fn on_session_lost(&mut self, session: SessionId, out: &mut Out) {
        if session == SessionId::Local {
            return;
        }
        self.scheduled.retain(|s| s.session != session);
        self.end_relays(|r| r.session == session, out);
        self.remotes.retain(|_, s| *s != session);
    }

    /// Ends the relays `ended` picks: unsubscribes from topics no relay
    /// wants any more, and closes sessions nothing uses.
    fn end_relays(&mut self, ended: impl Fn(&Relay) -> bool, out: &mut Out) {
        let (gone, kept): (Vec<Relay>, Vec<Relay>) = std::mem::take(&mut self.relays)
            .into_iter()
            .partition(ended);
        self.relays = kept;
        let topics: BTreeSet<String> = gone.into_iter().map(|r| r.topic).collect();
        for topic in topics {
            if !self.relays.iter().any(|r| r.topic == topic) {
                out.unsubscribe(SessionId::Local, topic);
            }
        }
        let (relays, scheduled) = (&self.relays, &self.scheduled);
        self.remotes.retain(|_, session| {
            let used = relays.iter().any(|r| r.session == *session)
                || scheduled.iter().any(|s| s.session == *session);
            if !used {
                out.effects.push(Effect::Close { session: *session });
            }
            used
        });
    }
}

/// Answers go at QoS 1, unlike the agent's other messages
/// ([`Out::publish`]), for the scanner's sake: delivered at QoS 1, each
/// answer makes the scanner send a PUBACK, which carries its TCP
/// acknowledgement. At QoS 0 the scanner would send nothing back, delay its
/// acknowledgement of the first answer by about 40 ms, and a broker
/// without `set_tcp_nodelay` (Mosquitto's default) would hold the host's
/// other answers until it came. The price is on our side: the broker's
/// PUBACKs may hold a command sent to us in the 40 ms after a roll-call.
fn send(scheduled: Scheduled, out: &mut Out) {
    for payload in scheduled.answers {
        out.effects.push(Effect::Publish {
            session: scheduled.session,
            topic: scheduled.topic.clone(),
            payload,
            qos: Qos::AtLeastOnce,
            retain: false,
        });
    }
}
