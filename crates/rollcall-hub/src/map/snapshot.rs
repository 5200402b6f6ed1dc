//! The map as JSON: [`MapSnapshot`] is what `GET /api/map` serves and what
//! the documentation is generated from. Field names are a contract with the
//! dashboard, the docs and the network-namespace test bed: add, never rename.

use std::collections::BTreeMap;

use rollcall_proto::{Description, Health};
use serde::{Deserialize, Serialize};

use super::{Edge, Endpoint, PinConflict, PinUse};

/// Whether a host is up, as far as the hub can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Its `$state` says `online`, or it answered, within `stale_after`.
    Online,
    /// Its `$state` says `offline` (a clean stop, or its last will).
    Offline,
    /// Seen before, and not answering now: it missed a roll-call, or was
    /// not heard from for `stale_after`.
    Missing,
}

/// The latest value on one output topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueRecord {
    /// The reading's `value`, or the whole payload when it is not a
    /// `{"value":..}` object (text is kept as a string).
    pub value: serde_json::Value,
    /// The reading's `unit`, where it has one.
    pub unit: Option<String>,
    /// The reading's `ts` (the publisher's clock, unix ms), where it has one.
    pub ts: Option<u64>,
    /// When the hub received it (the hub's clock, unix ms).
    pub received_ms: u64,
}

/// One service of a host, as `/api/map` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    /// Its function name.
    pub name: String,
    /// It answered its host's latest roll-call, or published its
    /// `$description` since (a roll-call its host answers without it makes
    /// it missing).
    pub present: bool,
    /// Its latest health, from an answer or its description.
    pub health: Option<Health>,
    /// Its retained `$description`, or else one made from its latest answer.
    pub description: Option<Description>,
    /// `retained` (from `$description`), `answer`, or null.
    pub described_by: Option<String>,
    /// The notes' flat fields from its latest answer.
    pub inputs: Option<String>,
    /// See `inputs`.
    pub outputs: Option<String>,
    /// See `inputs`.
    pub control: Option<String>,
    /// When it was last described or answered, unix ms.
    pub last_seen_ms: u64,
    /// The latest value on each of its output topics, by topic.
    pub values: BTreeMap<String, ValueRecord>,
}

/// One host, as `/api/map` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// Its name.
    pub name: String,
    /// Its address, as its agent reported it in its latest answer.
    pub ipaddr: Option<String>,
    /// Its external address, where known.
    pub extaddr: Option<String>,
    /// `status == online`.
    pub online: bool,
    /// Online, offline or missing.
    pub status: HostStatus,
    /// When the status last changed, unix ms.
    pub status_since_ms: u64,
    /// When it was last heard from (an answer, or `$state` `online`), unix ms.
    pub last_seen_ms: u64,
    /// Its agent's version, from its latest host answer.
    pub version: Option<String>,
    /// The services its agent listed in its latest host answer.
    pub apps: Option<Vec<String>>,
    /// Its services, by name.
    pub services: Vec<ServiceSnapshot>,
    /// Every GPIO pin its services name.
    pub pins: Vec<PinUse>,
    /// Pins claimed by more than one entry.
    pub pin_conflicts: Vec<PinConflict>,
}

/// The whole map at one moment: the `/api/map` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapSnapshot {
    /// The hub's clock when it was taken, unix ms.
    pub now_ms: u64,
    /// Every host, by name.
    pub hosts: Vec<HostSnapshot>,
    /// Every data-flow edge, with when a message last crossed it.
    pub edges: Vec<Edge>,
    /// Inputs no described output matches (commands, `.../set/...`, aside):
    /// a warning.
    #[serde(default)]
    pub unfed: Vec<Endpoint>,
    /// Outputs no described input matches: informational.
    #[serde(default)]
    pub unread: Vec<Endpoint>,
    /// How long an edge may go without a message before it is stale.
    #[serde(default)]
    pub edge_stale_after_ms: u64,
}

impl MapSnapshot {
    /// A host by name.
    pub fn host(&self, name: &str) -> Option<&HostSnapshot> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

impl HostSnapshot {
    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceSnapshot> {
        self.services.iter().find(|s| s.name == name)
    }
}
