//! The hub's side of a roll-call: calling the roll ([`scan`]), collecting the
//! answers into a report ([`collect`]), keeping the cluster map across
//! roll-calls and retained state ([`map`]), and the hub that runs all the
//! time and shares its state with the dashboard and the docs ([`hub`]),
//! and Home Assistant's MQTT discovery for the map ([`ha`]).
//! Collection and the map are pure; only [`scan`] and [`hub`] touch
//! sockets, through `rollcall-net`.

pub mod collect;
pub mod docs;
mod error;
pub mod ha;
pub mod hub;
pub mod map;
pub mod scan;
pub mod web;

pub use collect::{Collector, DigestCounts, HostSeen, Offer, ScanReport, ServiceSeen, Wanted};
pub use error::HubError;
pub use hub::{HubConfig, HubMetrics, HubShared, now_ms, run_hub};
pub use map::{
    ClusterMap, Edge, Endpoint, HostSnapshot, HostStatus, MapConfig, MapError, MapEvent,
    MapSnapshot, PinConflict, PinMap, PinUse, ServiceSnapshot, ValueRecord, WatchChange, Wiring,
    is_command,
};
pub use scan::{Descriptions, ScanOptions, Scanner};
