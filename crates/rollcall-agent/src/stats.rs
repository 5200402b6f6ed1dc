//! Counters of what the agent did and dropped, readable while it runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared between the agent's tasks and whoever watches it.
#[derive(Debug, Default)]
pub struct AgentStats {
    answered: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_refused: AtomicU64,
    relayed: AtomicU64,
    query_errors: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Roll-calls answered.
    pub answered: u64,
    /// Roll-calls dropped because they were not valid (not UTF-8, not JSON, too large...).
    pub dropped_malformed: u64,
    /// Valid roll-calls not answered: rate limit, duplicate, signature, freshness.
    pub dropped_refused: u64,
    /// Service answers forwarded to a requester's broker.
    pub relayed: u64,
    /// Queries answered with an error.
    pub query_errors: u64,
}

impl AgentStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn answered(&self) -> &AtomicU64 {
        &self.answered
    }
    pub(crate) fn dropped_malformed(&self) -> &AtomicU64 {
        &self.dropped_malformed
    }
    pub(crate) fn dropped_refused(&self) -> &AtomicU64 {
        &self.dropped_refused
    }
    pub(crate) fn relayed(&self) -> &AtomicU64 {
        &self.relayed
    }
    pub(crate) fn query_errors(&self) -> &AtomicU64 {
        &self.query_errors
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            answered: get(&self.answered),
            dropped_malformed: get(&self.dropped_malformed),
            dropped_refused: get(&self.dropped_refused),
            relayed: get(&self.relayed),
            query_errors: get(&self.query_errors),
        }
    }
}
