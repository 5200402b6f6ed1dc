//! The gate every roll-call passes before it is answered: the rate limit
//! (counted per sender, so one flooding host cannot silence the hub),
//! duplicate suppression (the same roll-call heard by broadcast and over
//! MQTT is answered once), and, with a cluster key, signature, freshness and
//! replay checks. Pure: the time is passed in.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use rollcall_proto::RollCall;
use rollcall_proto::json::Object;

/// How many recent answered roll-calls (and their nonces) are remembered.
/// With a key, only signed roll-calls are answered, so only key holders can
/// push a nonce out, and they send far fewer than this in the 30 s a signed
/// roll-call stays fresh. (The rate limit, per sender, no longer bounds it:
/// 257 budgets of `per_second` admit more.)
const REMEMBERED: usize = 4096;
/// How far a signed roll-call's `ts` may be from our clock (docs/protocol.md section 8).
const MAX_SKEW_MS: u64 = 30_000;
/// How many senders get a rate budget of their own. Past this many in one
/// second, the rest share one budget: memory stays bounded whatever a
/// flood of spoofed source addresses does.
const SENDERS: usize = 256;
/// All roll-calls by UDP together get this many senders' budgets a second.
/// A source address is easily spoofed: without a total, a flood from 257
/// made-up addresses got 257 budgets, and every roll-call admitted makes
/// the agent publish its answers. Roll-calls over MQTT have a budget of
/// their own beside it, so a UDP flood does not silence the hub there.
const UDP_BUDGETS: u32 = 4;

/// Whose budget a roll-call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Sender {
    /// Over MQTT, where the sender is not known.
    Mqtt,
    /// By UDP from this address.
    Udp(IpAddr),
    /// By UDP from an address past the first [`SENDERS`] of this second.
    OtherUdp,
}

/// Why a roll-call was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More roll-calls than the configured rate.
    RateLimited,
    /// Already answered (same requester and id).
    Duplicate,
    /// No signature, or a wrong one, while a cluster key is set.
    BadSignature,
    /// `ts` missing or more than 30 s away.
    Stale,
    /// `nonce` missing or seen before.
    Replayed,
}

/// Decides which roll-calls are answered.
#[derive(Debug)]
pub struct Gate {
    per_second: u32,
    window_start_ms: u64,
    /// Roll-calls admitted in the current second, per sender.
    in_window: HashMap<Sender, u32>,
    /// Roll-calls by UDP admitted in the current second, all senders.
    udp_in_window: u32,
    recent: Remembered<(String, u64)>,
    nonces: Remembered<String>,
    key: Option<Vec<u8>>,
    /// Signed roll-calls with an earlier `ts` are refused: they were signed
    /// before this agent started, so its memory of nonces cannot say
    /// whether it answered them before a restart.
    not_before_ms: u64,
}

impl Gate {
    /// At most `per_second` roll-calls a second; signed ones only when `key` is set.
    pub fn new(per_second: u32, key: Option<Vec<u8>>) -> Self {
        Gate {
            per_second,
            window_start_ms: 0,
            in_window: HashMap::new(),
            udp_in_window: 0,
            recent: Remembered::default(),
            nonces: Remembered::default(),
            key,
            not_before_ms: 0,
        }
    }

    /// The agent starts at `now_ms` (unix ms): from now on a signed
    /// roll-call must have been signed since, so one captured before a
    /// restart cannot be replayed after it (docs/protocol.md section 8).
    pub fn start_at(&mut self, now_ms: u64) {
        self.not_before_ms = now_ms;
    }

    /// Whether `rc`, from `source` (`None` over MQTT), is answered at
    /// `now_ms` (unix ms). An accepted roll-call is remembered.
    pub fn admit(
        &mut self,
        rc: &RollCall,
        source: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let key = (rc.replyto.clone(), rc.id);
        if self.recent.contains(&key) {
            return Err(Refusal::Duplicate);
        }
        let nonce = match &self.key {
            Some(secret) => {
                let (ts, nonce) = check_signed(&rc.to_object(), secret, now_ms)?;
                if self.nonces.contains(&nonce) || ts < self.not_before_ms {
                    return Err(Refusal::Replayed);
                }
                Some(nonce)
            }
            None => None,
        };
        // `now_ms` is the wall clock: a step back (NTP, a hand-set clock)
        // starts a new window too, or the counts would stand until the clock
        // caught up again, refusing every sender in the meantime.
        if now_ms < self.window_start_ms
            || now_ms - self.window_start_ms >= Duration::from_secs(1).as_millis() as u64
        {
            self.window_start_ms = now_ms;
            self.in_window.clear();
            self.udp_in_window = 0;
        }
        let sender = match source {
            None => Sender::Mqtt,
            Some(ip) if self.in_window.len() < SENDERS => Sender::Udp(ip),
            Some(ip) if self.in_window.contains_key(&Sender::Udp(ip)) => Sender::Udp(ip),
            Some(_) => Sender::OtherUdp,
        };
        let udp = sender != Sender::Mqtt;
        if udp && self.udp_in_window >= self.per_second.saturating_mul(UDP_BUDGETS) {
            return Err(Refusal::RateLimited);
        }
        let count = self.in_window.entry(sender).or_insert(0);
        if *count >= self.per_second {
            return Err(Refusal::RateLimited);
        }
        *count += 1;
        if udp {
            self.udp_in_window += 1;
        }
        self.recent.insert(key);
        // Remembered only once admitted: a copy of a roll-call refused for
        // the rate limit, sent again (`rollcall scan --repeat`, the same
        // bytes), is answered, not refused as a replay.
        if let Some(nonce) = nonce {
            self.nonces.insert(nonce);
        }
        Ok(())
    }
}

/// The last [`REMEMBERED`] items, oldest forgotten first. Looked up in a
/// set: every datagram is checked against them, and a scan of 4096 entries
/// per datagram is what a flood would make the agent do.
#[derive(Debug)]
struct Remembered<T> {
    order: VecDeque<T>,
    set: HashSet<T>,
}

impl<T> Default for Remembered<T> {
    fn default() -> Self {
        Remembered {
            order: VecDeque::with_capacity(REMEMBERED),
            set: HashSet::with_capacity(REMEMBERED),
        }
    }
}

impl<T: Eq + Hash + Clone> Remembered<T> {
    fn contains(&self, item: &T) -> bool {
        self.set.contains(item)
    }

    fn insert(&mut self, item: T) {
        if self.set.contains(&item) {
            return;
        }
        if self.order.len() == REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.set.insert(item.clone());
        self.order.push_back(item);
    }
}

/// Verifies signature and freshness; returns `ts` and the nonce.
fn check_signed(map: &Object, key: &[u8], now_ms: u64) -> Result<(u64, String), Refusal> {
    rollcall_proto::sign::verify(map, key).map_err(|_| Refusal::BadSignature)?;
    let ts = map
        .get("ts")
        .and_then(|v| v.as_u64())
        .ok_or(Refusal::Stale)?;
    if ts.abs_diff(now_ms) > MAX_SKEW_MS {
        return Err(Refusal::Stale);
    }
    map.get("nonce")
        .and_then(|v| v.as_str())
        .filter(|n| !n.is_empty())
        .map(|n| (ts, n.to_owned()))
        .ok_or(Refusal::Replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Gate {
        /// A roll-call over MQTT.
        fn admit_at(&mut self, rc: &RollCall, now_ms: u64) -> Result<(), Refusal> {
            self.admit(rc, None, now_ms)
        }
    }

    fn rc(id: u64) -> RollCall {
        RollCall::new(id, "hub", "/stat/data")
    }

    fn signed(id: u64, ts: u64, nonce: &str, key: &[u8]) -> RollCall {
        let mut map = rc(id).to_object();
        map.insert("ts".into(), ts.into());
        map.insert("nonce".into(), nonce.into());
        rollcall_proto::sign::sign(&mut map, key);
        RollCall::from_object(map).unwrap()
    }

    // Issue 11: a captured signed roll-call was accepted again after the
    // agent restarted (its nonces were forgotten).
    #[test]
    fn a_rollcall_signed_before_the_start_is_not_answered_after_it() {
        let key = b"a cluster key of some length";
        let captured = signed(1, 1_000_000, "n1", key);
        let mut before = Gate::new(10, Some(key.to_vec()));
        before.start_at(990_000);
        assert_eq!(before.admit_at(&captured, 1_000_100), Ok(()));
        // The agent restarts 5 s later: within the 30 s freshness, the
        // nonce forgotten.
        let mut after = Gate::new(10, Some(key.to_vec()));
        after.start_at(1_005_000);
        assert_eq!(after.admit_at(&captured, 1_005_100), Err(Refusal::Replayed));
        assert_eq!(
            after.admit_at(&signed(2, 1_005_050, "n2", key), 1_005_100),
            Ok(())
        );
    }

    #[test]
    fn the_same_roll_call_is_answered_once() {
        let mut gate = Gate::new(10, None);
        assert_eq!(gate.admit_at(&rc(1), 0), Ok(()));
        assert_eq!(gate.admit_at(&rc(1), 10), Err(Refusal::Duplicate));
        assert_eq!(gate.admit_at(&rc(2), 20), Ok(()));
    }

    #[test]
    fn the_rate_limit_resets_each_second() {
        let mut gate = Gate::new(2, None);
        assert_eq!(gate.admit_at(&rc(1), 1000), Ok(()));
        assert_eq!(gate.admit_at(&rc(2), 1100), Ok(()));
        assert_eq!(gate.admit_at(&rc(3), 1200), Err(Refusal::RateLimited));
        assert_eq!(gate.admit_at(&rc(4), 2000), Ok(()));
    }

    #[test]
    fn a_flooding_sender_uses_up_only_its_own_budget() {
        let rogue = Some(IpAddr::from([198, 18, 0, 66]));
        let hub = Some(IpAddr::from([198, 18, 0, 1]));
        let mut gate = Gate::new(2, None);
        assert_eq!(gate.admit(&rc(1), rogue, 1000), Ok(()));
        assert_eq!(gate.admit(&rc(2), rogue, 1001), Ok(()));
        assert_eq!(gate.admit(&rc(3), rogue, 1002), Err(Refusal::RateLimited));
        assert_eq!(gate.admit(&rc(4), hub, 1003), Ok(()));
        assert_eq!(gate.admit(&rc(5), None, 1004), Ok(()));
    }

    // Issue 11: spoofed source addresses got 257 x 20 roll-calls a second.
    #[test]
    fn spoofed_senders_together_get_a_few_budgets_and_mqtt_keeps_its_own() {
        let mut gate = Gate::new(20, None);
        let mut admitted = 0;
        for i in 0..300u64 {
            let source = Some(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]));
            for n in 0..20 {
                if gate.admit(&rc(i * 100 + n), source, 1000).is_ok() {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, 20 * UDP_BUDGETS);
        assert!(gate.in_window.len() <= SENDERS + 2, "memory stays bounded");
        for n in 0..20 {
            assert_eq!(gate.admit(&rc(1_000_000 + n), None, 1000), Ok(()));
        }
        assert_eq!(
            gate.admit(&rc(2_000_000), None, 1000),
            Err(Refusal::RateLimited)
        );
        // The next second, UDP is admitted again.
        let hub = Some(IpAddr::from([198, 18, 0, 1]));
        assert_eq!(gate.admit(&rc(3_000_000), hub, 2000), Ok(()));
    }

    #[test]
    fn past_the_sender_limit_the_rest_share_one_budget() {
        // A budget large enough that the UDP total is not what stops them.
        let mut gate = Gate::new(1000, None);
        for i in 0..SENDERS as u64 + 10 {
            let source = Some(IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]));
            assert_eq!(gate.admit(&rc(i), source, 1000), Ok(()));
        }
        assert_eq!(gate.in_window.len(), SENDERS + 1, "the last 10 share one");
        assert_eq!(gate.in_window[&Sender::OtherUdp], 10);
    }

    #[test]
    fn the_oldest_roll_call_is_forgotten_first() {
        let mut gate = Gate::new(u32::MAX, None);
        for id in 0..=REMEMBERED as u64 {
            assert_eq!(gate.admit_at(&rc(id), 0), Ok(()));
        }
        assert_eq!(gate.recent.order.len(), REMEMBERED);
        assert_eq!(gate.recent.set.len(), REMEMBERED);
        assert_eq!(gate.admit_at(&rc(1), 0), Err(Refusal::Duplicate));
        assert_eq!(gate.admit_at(&rc(0), 0), Ok(()));
    }

    #[test]
    fn a_clock_stepped_back_starts_a_new_window() {
        let mut gate = Gate::new(1, None);
        assert_eq!(gate.admit_at(&rc(1), 10_000_000), Ok(()));
        assert_eq!(gate.admit_at(&rc(2), 10_000_100), Err(Refusal::RateLimited));
        // The clock goes back an hour: the old second's count is gone.
        assert_eq!(gate.admit_at(&rc(3), 10_000_100 - 3_600_000), Ok(()));
        assert_eq!(
            gate.admit_at(&rc(4), 10_000_200 - 3_600_000),
            Err(Refusal::RateLimited)
        );
    }

    #[test]
    fn a_signed_copy_refused_for_the_rate_limit_is_answered_when_sent_again() {
        let key = b"cluster secret".to_vec();
        let now = 1_700_000_000_000;
        let mut gate = Gate::new(1, Some(key.clone()));
        assert_eq!(gate.admit_at(&signed(1, now, "n1", &key), now), Ok(()));
        let repeated = signed(2, now, "n2", &key);
        assert_eq!(
            gate.admit_at(&repeated, now + 10),
            Err(Refusal::RateLimited)
        );
        assert_eq!(gate.admit_at(&repeated, now + 1_200), Ok(()));
        assert_eq!(
            gate.admit_at(&repeated, now + 1_300),
            Err(Refusal::Duplicate)
        );
        // An admitted roll-call's nonce is still spent.
        assert_eq!(
            gate.admit_at(&signed(3, now, "n1", &key), now + 2_500),
            Err(Refusal::Replayed)
        );
    }

    #[test]
    fn with_a_key_only_fresh_signed_unreplayed_roll_calls_pass() {
        let key = b"cluster secret".to_vec();
        let now = 1_700_000_000_000;
        let mut gate = Gate::new(100, Some(key.clone()));
        assert_eq!(gate.admit_at(&rc(1), now), Err(Refusal::BadSignature));
        assert_eq!(
            gate.admit_at(&signed(2, now, "n2", b"wrong"), now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            gate.admit_at(&signed(3, now - 31_000, "n3", &key), now),
            Err(Refusal::Stale)
        );
        assert_eq!(
            gate.admit_at(&signed(4, now - 1_000, "n4", &key), now),
            Ok(())
        );
        assert_eq!(
            gate.admit_at(&signed(5, now, "n4", &key), now),
            Err(Refusal::Replayed)
        );
    }
}
