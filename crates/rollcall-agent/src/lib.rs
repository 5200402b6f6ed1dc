//! The per-host daemon: hears roll-calls, answers for its host and its
//! built-in services, hands the roll-call to the host's other services over
//! MQTT (`/udp/report`), relays their answers when the requester's broker is
//! not this host's, and serves the built-in services' query topics.
//!
//! [`start`] returns once the agent is connected and listening; [`run`] is
//! `start` then [`Agent::join`].
//!
//! Inside, [`core::AgentCore`] makes every decision and does no I/O; the
//! shell (`host.rs`) feeds it and carries out its effects; the
//! [`registry`] is the one table of built-in services.

mod agent;
mod alarm;
pub mod builtin;
pub mod config;
pub mod core;
mod delivery;
mod error;
pub mod gate;
mod host;
pub mod registry;
pub mod sim;
mod state;
mod stats;

pub use agent::{Agent, run, start};
pub use config::{BrokerChoice, Config, RawConfig};
pub use error::AgentError;
pub use stats::{AgentStats, StatsSnapshot};

/// The version every host answer reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
