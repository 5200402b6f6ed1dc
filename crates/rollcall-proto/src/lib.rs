//! The rollcall wire vocabulary: roll-calls, host reports, answers,
//! self-descriptions, queries, hosts' `$state` and the topic grammar.
//!
//! This crate knows bytes and JSON, never sockets or the clock: every parser
//! takes the bytes that arrived and every time is passed in as an argument, so
//! the same code runs in the agent, the hub, the tests and the fuzz targets.

pub mod answer;
pub mod describe;
mod error;
pub mod json;
pub mod query;
pub mod report;
pub mod rollcall;
pub mod sign;
pub mod state;
pub mod topic;

pub use answer::{Answer, brief_service_answer, host_answer, service_answer};
pub use describe::{
    Category, DIGEST_HEX, Description, Health, Interface, Interfaces, ValueType, digest, is_digest,
};
pub use error::ProtoError;
pub use query::{Body, Request, error_reply, ok_reply};
pub use report::{HostReport, NOT_ECHOED, NOT_IN_ANSWERS};
pub use rollcall::{RollCall, RollCallLimits};
pub use state::{HostState, Liveness};
pub use topic::{Query, Topics};

/// The UDP port roll-calls are sent to unless configured otherwise.
pub const DEFAULT_UDP_PORT: u16 = 46464;
/// The largest roll-call datagram, in bytes (docs/protocol.md section 1).
pub const MAX_DATAGRAM: usize = 1200;
/// The largest MQTT payload any rollcall parser accepts, in bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The deepest JSON nesting any rollcall parser accepts.
pub const MAX_DEPTH: usize = 16;
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u64 = 1;
