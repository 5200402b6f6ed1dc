//! The one error type of this crate: everything a socket, a broker or a
//! malformed network reply can go wrong with.

use std::io;
use std::net::SocketAddr;

/// Errors of the networking layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A broker URL that could not be parsed.
    #[error("invalid broker URL `{url}`: {reason}")]
    InvalidUrl {
        /// The text as given.
        url: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A host name that resolved to no address.
    #[error("cannot resolve `{host}`: {source}")]
    Resolve {
        /// The host name as given.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// A TLS file (CA, client certificate or key) that cannot be used.
    #[error("TLS file {}: {reason}", path.display())]
    TlsFile {
        /// The file as configured.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file meant to hold a password or token that cannot be used.
    #[error("secret file {}: {reason}", path.display())]
    SecretFile {
        /// The file as configured.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Login settings that could never be used (`key` as the agent's
    /// configuration spells it).
    #[error("{key}: {reason}")]
    Login {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The embedded broker's password file cannot be used.
    #[error("password file {}{}: {reason}", path.display(), line.map(|n| format!(", line {n}")).unwrap_or_default())]
    PasswordFile {
        /// The file as configured.
        path: std::path::PathBuf,
        /// The line at fault (from 1), if one is.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// The embedded broker was asked to listen where it must not: off
    /// loopback without a password file.
    #[error("embedded broker on {addr}: {reason}")]
    BrokerRefused {
        /// The address asked for.
        addr: SocketAddr,
        /// Why, and what to do.
        reason: String,
    },
    /// A TLS setting rustls refuses.
    #[error("TLS: {0}")]
    Tls(String),
    /// The broker was not reached in time; the last connection error says why.
    #[error("cannot connect to {broker} within {waited:?}{}", last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotConnected {
        /// The broker.
        broker: String,
        /// How long we waited.
        waited: std::time::Duration,
        /// The latest connection error, if there was one.
        last_error: Option<String>,
    },
    /// A topic or filter that MQTT does not allow.
    #[error("invalid MQTT {kind} `{topic}`")]
    InvalidTopic {
        /// `topic` or `filter`.
        kind: &'static str,
        /// The offending text.
        topic: String,
    },
    /// A session setting that cannot work.
    #[error("invalid session configuration: {0}")]
    InvalidConfig(&'static str),
    /// The session's event loop has ended (shutdown or kill).
    #[error("the MQTT session has ended")]
    SessionClosed,
    /// Waiting for something did not finish in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
    /// The embedded broker could not be started.
    #[error("embedded broker on {addr}: {reason}")]
    Broker {
        /// The address it was to listen on.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// A listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket's error.
        #[source]
        source: io::Error,
    },
    /// A STUN reply that is not a valid answer to our request.
    #[error("bad STUN response: {0}")]
    Stun(&'static str),
    /// Any other socket error.
    #[error(transparent)]
    Io(#[from] io::Error),
}
