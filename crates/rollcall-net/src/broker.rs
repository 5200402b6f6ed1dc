//! The embedded MQTT broker (rumqttd), so that a hub, an agent or the demo
//! needs no broker installed; and what it takes to put it on a network:
//! where it listens (loopback unless told otherwise), who may log in (a
//! password file, required off loopback) and TLS (a certificate and key).
//!
//! The process that starts the broker also connects to it (the agent's and
//! the hub's own sessions). When the broker wants a password, those
//! in-process clients log in as a user only this process knows (`$rollcall`,
//! with a random password made at start); when it speaks TLS, they reach it
//! through a second, plain listener on 127.0.0.1 that takes only that user.
//! [`EmbeddedBroker::url`] and [`EmbeddedBroker::login`] say how.
//!
//! rumqttd has no shutdown API: once started, the broker lives until the
//! process exits.
//!
//! The broker itself (rumqttd, and its own rustls and tokio-rustls) is the
//! cargo feature `broker`, on by default: an agent-only build leaves it out,
//! keeping the options and their checks, and [`EmbeddedBroker::start`] then
//! says the broker is not built in.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::{BrokerUrl, Login, NetError, PasswordFile};

#[cfg(feature = "broker")]
mod embedded;

/// Without the broker built in, starting one is an error that says so.
#[cfg(not(feature = "broker"))]
mod embedded {
    use super::{BrokerOptions, EmbeddedBroker};
    use crate::{NetError, PasswordFile};

    pub(super) fn start(
        options: &BrokerOptions,
        _users: Option<PasswordFile>,
    ) -> Result<EmbeddedBroker, NetError> {
        Err(NetError::Broker {
            addr: options.addr,
            reason: "this rollcall was built without the embedded broker (cargo feature \
                     `embedded-broker`); use an external broker"
                .into(),
        })
    }
}

/// Whether this build has the embedded broker (cargo feature `broker`), so
/// that a configuration asking for one is refused when it is checked, not
/// when the broker would start.
pub const EMBEDDED_BROKER_BUILT_IN: bool = cfg!(feature = "broker");

/// Where an embedded broker listens unless told otherwise: loopback only.
pub const DEFAULT_EMBEDDED_BROKER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), crate::MQTT_PORT);

/// The TLS listener's certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The server's certificate, then any intermediate ones.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How to run an embedded broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOptions {
    /// Where it listens; port 0 picks a free port. Any address but a
    /// loopback one needs `password_file`.
    pub addr: SocketAddr,
    /// Who may log in (format: [`PasswordFile`]); without it, anyone who
    /// can reach `addr`.
    pub password_file: Option<PathBuf>,
    /// Speak TLS (`mqtts://`) on `addr` instead of plain MQTT.
    pub tls: Option<ServerTls>,
}

impl Default for BrokerOptions {
    /// [`DEFAULT_EMBEDDED_BROKER`], no password, no TLS.
    fn default() -> Self {
        BrokerOptions::new(DEFAULT_EMBEDDED_BROKER)
    }
}

impl From<SocketAddr> for BrokerOptions {
    fn from(addr: SocketAddr) -> Self {
        BrokerOptions::new(addr)
    }
}

impl BrokerOptions {
    /// Plain MQTT on `addr`, no password.
    pub fn new(addr: SocketAddr) -> Self {
        BrokerOptions {
            addr,
            password_file: None,
            tls: None,
        }
    }

    /// Checks everything that can be checked without listening: a
    /// non-loopback address has a password file, the password file and the
    /// TLS files can be read and hold what they should. Returns the users.
    pub fn check(&self) -> Result<Option<PasswordFile>, NetError> {
        if !self.addr.ip().is_loopback() && self.password_file.is_none() {
            return Err(NetError::BrokerRefused {
                addr: self.addr,
                reason: format!(
                    "off loopback it needs a password file, or anyone who can reach \
                     port {} of this host could read and switch every host on it. \
                     Give it one (lines `user:password`; agent: \
                     embedded_broker_password_file, hub: --embedded-broker-password-file), \
                     preferably with a TLS certificate and key too; or listen on 127.0.0.1",
                    self.addr.port()
                ),
            });
        }
        let users = match &self.password_file {
            Some(path) => Some(PasswordFile::load(path)?),
            None => None,
        };
        if let Some(tls) = &self.tls {
            tls.check()?;
        }
        Ok(users)
    }
}

impl ServerTls {
    /// Reads both files and builds the server configuration rustls would,
    /// so a missing file, a key that is not PEM or a key that does not
    /// match the certificate is an error here, naming the file.
    pub fn check(&self) -> Result<(), NetError> {
        let chain = crate::login::certificates(&self.cert)?;
        let key = crate::login::private_key(&self.key)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                NetError::Tls(format!(
                    "certificate {} with key {}: {e}",
                    self.cert.display(),
                    self.key.display()
                ))
            })?;
        Ok(())
    }
}

/// A running embedded broker (rumqttd) speaking MQTT 3.1.1.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    /// The address it listens on (with the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Whether `addr` speaks TLS.
    pub tls: bool,
    /// Where this process's own clients connect: `addr` through loopback,
    /// or the plain loopback listener when `addr` speaks TLS.
    local: SocketAddr,
    /// What they log in with.
    login: Login,
}

impl EmbeddedBroker {
    /// Starts rumqttd on dedicated threads, and returns once it accepts
    /// connections. Takes a [`BrokerOptions`] or just an address (plain
    /// MQTT, no password). Port 0 picks a free port. Refuses any address
    /// but a loopback one unless a password file is given. Built without
    /// the feature `broker`, checks the options and then says so.
    pub fn start(options: impl Into<BrokerOptions>) -> Result<EmbeddedBroker, NetError> {
        let options = options.into();
        let users = options.check()?;
        embedded::start(&options, users)
    }

    /// The URL this process's own clients use to reach it: `addr` (an
    /// unspecified one, 0.0.0.0, through loopback), or with TLS on `addr`
    /// the plain loopback listener kept for them.
    pub fn url(&self) -> BrokerUrl {
        BrokerUrl::new(self.local.ip().to_string(), self.local.port())
    }

    /// What this process's own clients log in with: nothing when the broker
    /// takes anyone, else the in-process user. Never give it to another
    /// process: it is made anew at each start and reaches only this broker.
    pub fn login(&self) -> Login {
        self.login.clone()
    }
}

/// At most this many retained messages in the broker (a host retains two:
/// `$state` and `$description`). A new retained topic past it is delivered
/// to current subscribers but not retained, and logged at `warn`.
pub const MAX_RETAINED_MESSAGES: usize = 10_000;
/// At most this many bytes of retained topics and payloads in the broker;
/// a retained publish that would pass it is treated the same way.
pub const MAX_RETAINED_BYTES: usize = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_without_a_password_file_is_refused_before_binding() {
        for addr in ["0.0.0.0:0", "[::]:0", "198.18.0.1:1883"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let error = EmbeddedBroker::start(addr).unwrap_err();
            assert!(matches!(error, NetError::BrokerRefused { .. }), "{error}");
            let text = error.to_string();
            assert!(
                text.contains("password file") && text.contains("127.0.0.1"),
                "{text}"
            );
        }
        assert!(BrokerOptions::default().check().is_ok());
        assert_eq!(BrokerOptions::default().addr, DEFAULT_EMBEDDED_BROKER);
        assert!(DEFAULT_EMBEDDED_BROKER.ip().is_loopback());
    }
}
