//! The hub's side of a roll-call: calling the roll ([`scan`]), collecting the
//! answers into a report ([`collect`]), and keeping the cluster map across
//! roll-calls ([`map`]). Collection and the map are pure; only [`scan`]
//! touches sockets, through `rollcall-net`.

pub mod collect;
mod error;
pub mod hub;
pub mod map;
pub mod scan;

pub use collect::{Collector, HostSeen, Offer, ScanReport, ServiceSeen};
pub use error::HubError;
pub use hub::{HubConfig, run_hub};
pub use map::{ClusterMap, MapEvent};
pub use scan::{ScanOptions, Scanner};
