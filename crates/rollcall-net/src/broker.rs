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

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};
use tracing::error;

use crate::{BrokerUrl, Credentials, Login, NetError, PasswordFile};

/// How long `start` waits for the listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an embedded broker listens unless told otherwise: loopback only.
pub const DEFAULT_EMBEDDED_BROKER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), crate::MQTT_PORT);

/// The user the broker's own process logs in as (a password file cannot
/// name it: `$` names are reserved there).
const LOCAL_USER: &str = "$rollcall";

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

    fn rumqttd(&self) -> Result<TlsConfig, NetError> {
        Ok(TlsConfig::Rustls {
            capath: None,
            certpath: utf8(&self.cert)?,
            keypath: utf8(&self.key)?,
        })
    }
}

/// rumqttd takes paths as strings.
fn utf8(path: &Path) -> Result<String, NetError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| NetError::TlsFile {
            path: path.to_owned(),
            reason: "the path is not UTF-8".into(),
        })
}

/// A running rumqttd broker speaking MQTT 3.1.1.
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
    /// but a loopback one unless a password file is given.
    pub fn start(options: impl Into<BrokerOptions>) -> Result<EmbeddedBroker, NetError> {
        let options = options.into();
        let users = options.check()?;
        let broker_error =
            |addr: SocketAddr| move |reason: String| NetError::Broker { addr, reason };
        let addr = reserve(options.addr).map_err(broker_error(options.addr))?;

        // The in-process clients' login: needed once anyone needs one, or
        // when they go through the second listener.
        let local_login = (users.is_some() || options.tls.is_some()).then(|| {
            let password: [u8; 24] = rand::random();
            let password: String = password.iter().map(|b| format!("{b:02x}")).collect();
            Credentials::new(LOCAL_USER, password)
        });
        let mut servers = HashMap::new();
        let mut auth = users.map(PasswordFile::into_users);
        let local = match (&options.tls, &local_login) {
            (Some(tls), Some(login)) => {
                let local = reserve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                    .map_err(broker_error(options.addr))?;
                let only_us =
                    HashMap::from([(login.username.clone(), login.password.expose().clone())]);
                servers.insert(
                    "local".to_owned(),
                    server("rollcall-local", local, None, Some(only_us)),
                );
                servers.insert(
                    "public".to_owned(),
                    server("rollcall-tls", addr, Some(tls.rumqttd()?), auth),
                );
                local
            }
            _ => {
                if let (Some(users), Some(login)) = (&mut auth, &local_login) {
                    users.insert(login.username.clone(), login.password.expose().clone());
                }
                servers.insert("public".to_owned(), server("rollcall-v4", addr, None, auth));
                to_loopback(addr)
            }
        };

        let mut broker = Broker::new(config(servers));
        let (ended_tx, ended) = mpsc::channel();
        thread::Builder::new()
            .name(format!("rumqttd {addr}"))
            .spawn(move || {
                // `start` only returns when every listener has died.
                let outcome = broker.start();
                if let Err(error) = &outcome {
                    error!(%addr, %error, "embedded broker failed");
                }
                let _ = ended_tx.send(format!("{outcome:?}"));
            })?;

        let broker = EmbeddedBroker {
            addr,
            tls: options.tls.is_some(),
            local,
            login: Login {
                credentials: local_login,
                ..Login::default()
            },
        };
        wait_until_accepting(&broker, &ended).map_err(broker_error(addr))?;
        Ok(broker)
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

/// Binds `addr` and lets it go, so that a port in use is an error now and
/// port 0 becomes a free port. rumqttd binds by itself, does not report
/// the port it got, and fails to bind only in its own thread, where the
/// readiness check could then reach whatever else listens there. (Another
/// process could take the port in between; the readiness check would then
/// fail.)
fn reserve(addr: SocketAddr) -> Result<SocketAddr, String> {
    let probe = TcpListener::bind(addr).map_err(|e| e.to_string())?;
    probe.local_addr().map_err(|e| e.to_string())
}

/// An unspecified listen address (0.0.0.0, ::) is reached through loopback.
fn to_loopback(addr: SocketAddr) -> SocketAddr {
    if !addr.ip().is_unspecified() {
        return addr;
    }
    let ip: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, addr.port())
}

/// Probes in a loop until the broker answers, the broker thread ends, or
/// the overall timeout passes: an MQTT handshake where this process's
/// clients connect, and with TLS a TCP connection to the TLS listener too.
fn wait_until_accepting(
    broker: &EmbeddedBroker,
    ended: &mpsc::Receiver<String>,
) -> Result<(), String> {
    let credentials = broker.login.credentials.as_ref();
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut delay = Duration::from_millis(5);
    loop {
        let answered = mqtt_handshake(broker.local, credentials).is_ok()
            && (!broker.tls
                || TcpStream::connect_timeout(
                    &to_loopback(broker.addr),
                    Duration::from_millis(200),
                )
                .is_ok());
        if answered {
            return Ok(());
        }
        if let Ok(outcome) = ended.try_recv() {
            return Err(format!("broker stopped at start: {outcome}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("not answering after {READY_TIMEOUT:?}"));
        }
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// One MQTT 3.1.1 CONNECT, CONNACK, DISCONNECT exchange. A bare TCP probe
/// would do, but rumqttd logs an error for every connection that closes
/// before its CONNECT.
fn mqtt_handshake(target: SocketAddr, credentials: Option<&Credentials>) -> std::io::Result<()> {
    const CONNACK_ACCEPTED: [u8; 4] = [0x20, 2, 0, 0];
    const DISCONNECT: &[u8] = &[0xE0, 0];

    let mut stream = TcpStream::connect_timeout(&target, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(&connect_packet("rc-probe", credentials))?;
    let mut connack = [0; 4];
    stream.read_exact(&mut connack)?;
    stream.write_all(DISCONNECT)?;
    if connack == CONNACK_ACCEPTED {
        Ok(())
    } else {
        Err(std::io::Error::other("broker refused the probe"))
    }
}

/// An MQTT 3.1.1 CONNECT: clean session, keep-alive 5 s, and the user name
/// and password if given.
fn connect_packet(client_id: &str, credentials: Option<&Credentials>) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let flags = if credentials.is_some() { 0xC2 } else { 0x02 };
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 5];
    string(&mut body, client_id);
    if let Some(c) = credentials {
        string(&mut body, &c.username);
        string(&mut body, c.password.expose());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

/// One listener: plain or TLS, open to anyone or to `auth`'s users.
fn server(
    name: &str,
    listen: SocketAddr,
    tls: Option<TlsConfig>,
    auth: Option<HashMap<String, String>>,
) -> ServerSettings {
    let connections = ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: 1024 * 1024,
        max_inflight_count: 500,
        auth,
        external_auth: None,
        dynamic_filters: true,
    };
    ServerSettings {
        name: name.to_owned(),
        listen,
        tls,
        // rumqttd sleeps this long after every accept; 0 lets hundreds of
        // clients connect at once.
        next_connection_delay_ms: 0,
        connections,
    }
}

/// At most this many retained messages in the broker (a host retains two:
/// `$state` and `$description`). A new retained topic past it is delivered
/// to current subscribers but not retained, and logged at `warn`.
pub const MAX_RETAINED_MESSAGES: usize = 10_000;
/// At most this many bytes of retained topics and payloads in the broker;
/// a retained publish that would pass it is treated the same way.
pub const MAX_RETAINED_BYTES: usize = 16 * 1024 * 1024;

/// A configuration for hundreds of clients sending bursts: one roll-call
/// makes every host answer within a few milliseconds.
fn config(servers: HashMap<String, ServerSettings>) -> Config {
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 4096,
            max_outgoing_packet_count: 10_000,
            // Each subscribed filter keeps an in-memory log of at most
            // count x size bytes; readers that fall further behind skip.
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 4,
            // Retained messages outside these bounds are delivered to
            // current subscribers but not kept; nothing kept is evicted.
            max_retained_messages: Some(MAX_RETAINED_MESSAGES),
            max_retained_bytes: Some(MAX_RETAINED_BYTES),
            ..RouterConfig::default()
        },
        v4: Some(servers),
        ..Config::default()
    }
}

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

    #[test]
    fn the_probe_connect_carries_the_login() {
        let plain = connect_packet("id", None);
        assert_eq!(plain[0..2], [0x10, 14]);
        assert_eq!(plain[9], 0x02);
        let login = Credentials::new("u".repeat(100), "p".repeat(100));
        let packet = connect_packet("id", Some(&login));
        // 10 + 4 + 102 + 102 bytes: a two-byte remaining length.
        assert_eq!(packet[0..3], [0x10, (218 % 128) | 0x80, 1]);
        assert_eq!(packet[10], 0xC2);
        assert_eq!(packet.len(), 3 + 218);
    }
}
