//! The hub's error type.

use std::time::Duration;

use thiserror::Error;

/// Why a scan, the hub or a request through it could not run.
#[derive(Debug, Error)]
pub enum HubError {
    /// A socket or the broker failed.
    #[error(transparent)]
    Net(#[from] rollcall_net::NetError),
    /// The options cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The hub has no connection to its broker (not started, stopped, or
    /// the broker is unreachable right now).
    #[error("the hub is not connected to its broker")]
    NotConnected,
    /// No answer to a request in time.
    #[error("no answer on `{topic}` within {after:?}")]
    Timeout {
        /// The topic the request went to.
        topic: String,
        /// How long the hub waited.
        after: Duration,
    },
    /// A message the map refused.
    #[error(transparent)]
    Map(#[from] crate::map::MapError),
}
