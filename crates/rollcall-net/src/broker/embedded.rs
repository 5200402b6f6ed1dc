//! Running the embedded broker: rumqttd on its own threads, configured from
//! [`BrokerOptions`](super::BrokerOptions), and the wait until it answers.
//! Only built with the cargo feature `broker`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};
use tracing::error;

use super::{BrokerOptions, EmbeddedBroker, MAX_RETAINED_BYTES, MAX_RETAINED_MESSAGES, ServerTls};
use crate::{Credentials, Login, NetError, PasswordFile};

/// How long `start` waits for the listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The user the broker's own process logs in as (a password file cannot
/// name it: `$` names are reserved there).
const LOCAL_USER: &str = "$rollcall";

impl ServerTls {
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

/// Starts rumqttd with `options` (already checked: `users` is what its
/// password file holds) and returns once it accepts connections.
pub(super) fn start(
    options: &BrokerOptions,
    users: Option<PasswordFile>,
) -> Result<EmbeddedBroker, NetError> {
    let broker_error = |addr: SocketAddr| move |reason: String| NetError::Broker { addr, reason };
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
