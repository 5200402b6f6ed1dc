//! The agent's error type: what can stop it from starting or running.

use std::path::PathBuf;

use thiserror::Error;

/// Why the agent could not start or had to stop.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid TOML or has unknown keys.
    #[error("{path}: {message}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message.
        message: String,
    },
    /// A configuration value is not acceptable.
    #[error("configuration: `{field}`: {reason}")]
    Invalid {
        /// The key.
        field: String,
        /// Why.
        reason: String,
    },
    /// The agent's task panicked; the message says where.
    #[error("the agent stopped on an internal error: {0}")]
    Crashed(String),
    /// The agent's timer could not be created (out of file descriptors).
    #[error("cannot create the agent's timer: {0}")]
    Timer(#[source] std::io::Error),
    /// A socket could not be opened or the broker not reached.
    #[error(transparent)]
    Net(#[from] rollcall_net::NetError),
}
