//! The gate every roll-call passes before it is answered: the rate limit,
//! duplicate suppression (the same roll-call heard by broadcast and over
//! MQTT is answered once), and, with a cluster key, signature, freshness and
//! replay checks. Pure: the time is passed in.

use std::collections::VecDeque;
use std::time::Duration;

use rollcall_proto::RollCall;
use rollcall_proto::json::Object;

/// How many recent roll-calls (and nonces) are remembered: more than the
/// rate limit admits within the 30 s a signed roll-call stays fresh.
const REMEMBERED: usize = 4096;
/// How far a signed roll-call's `ts` may be from our clock (PROTOCOL.md section 7).
const MAX_SKEW_MS: u64 = 30_000;

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
    in_window: u32,
    recent: VecDeque<(String, u64)>,
    nonces: VecDeque<String>,
    key: Option<Vec<u8>>,
}

impl Gate {
    /// At most `per_second` roll-calls a second; signed ones only when `key` is set.
    pub fn new(per_second: u32, key: Option<Vec<u8>>) -> Self {
        Gate {
            per_second,
            window_start_ms: 0,
            in_window: 0,
            recent: VecDeque::with_capacity(REMEMBERED),
            nonces: VecDeque::with_capacity(REMEMBERED),
            key,
        }
    }

    /// Whether `rc` is answered at `now_ms` (unix ms). An accepted roll-call is remembered.
    pub fn admit(&mut self, rc: &RollCall, now_ms: u64) -> Result<(), Refusal> {
        let key = (rc.replyto.clone(), rc.id);
        if self.recent.contains(&key) {
            return Err(Refusal::Duplicate);
        }
        if let Some(secret) = &self.key {
            let nonce = check_signed(&rc.to_object(), secret, now_ms)?;
            if self.nonces.contains(&nonce) {
                return Err(Refusal::Replayed);
            }
            remember(&mut self.nonces, nonce);
        }
        if now_ms.saturating_sub(self.window_start_ms) >= Duration::from_secs(1).as_millis() as u64
        {
            self.window_start_ms = now_ms;
            self.in_window = 0;
        }
        if self.in_window >= self.per_second {
            return Err(Refusal::RateLimited);
        }
        self.in_window += 1;
        remember(&mut self.recent, key);
        Ok(())
    }
}

fn remember<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == REMEMBERED {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// Verifies signature and freshness; returns the nonce.
fn check_signed(map: &Object, key: &[u8], now_ms: u64) -> Result<String, Refusal> {
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
        .map(str::to_owned)
        .ok_or(Refusal::Replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_same_roll_call_is_answered_once() {
        let mut gate = Gate::new(10, None);
        assert_eq!(gate.admit(&rc(1), 0), Ok(()));
        assert_eq!(gate.admit(&rc(1), 10), Err(Refusal::Duplicate));
        assert_eq!(gate.admit(&rc(2), 20), Ok(()));
    }

    #[test]
    fn the_rate_limit_resets_each_second() {
        let mut gate = Gate::new(2, None);
        assert_eq!(gate.admit(&rc(1), 1000), Ok(()));
        assert_eq!(gate.admit(&rc(2), 1100), Ok(()));
        assert_eq!(gate.admit(&rc(3), 1200), Err(Refusal::RateLimited));
        assert_eq!(gate.admit(&rc(4), 2000), Ok(()));
    }

    #[test]
    fn with_a_key_only_fresh_signed_unreplayed_roll_calls_pass() {
        let key = b"cluster secret".to_vec();
        let now = 1_700_000_000_000;
        let mut gate = Gate::new(100, Some(key.clone()));
        assert_eq!(gate.admit(&rc(1), now), Err(Refusal::BadSignature));
        assert_eq!(
            gate.admit(&signed(2, now, "n2", b"wrong"), now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            gate.admit(&signed(3, now - 31_000, "n3", &key), now),
            Err(Refusal::Stale)
        );
        assert_eq!(gate.admit(&signed(4, now - 1_000, "n4", &key), now), Ok(()));
        assert_eq!(
            gate.admit(&signed(5, now, "n4", &key), now),
            Err(Refusal::Replayed)
        );
    }
}
