//! The hub's error type.

use thiserror::Error;

/// Why a scan or the hub could not run.
#[derive(Debug, Error)]
pub enum HubError {
    /// A socket or the broker failed.
    #[error(transparent)]
    Net(#[from] rollcall_net::NetError),
    /// The options cannot work.
    #[error("{0}")]
    Invalid(String),
}
