//! The embedded MQTT broker (rumqttd), so that a hub or the demo needs no
//! broker installed.
//!
//! rumqttd has no shutdown API: once started, the broker lives until the
//! process exits.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::error;

use crate::{BrokerUrl, NetError};

/// How long `start` waits for the listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running rumqttd broker speaking MQTT 3.1.1.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    /// The address it listens on (with the real port when 0 was asked for).
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts rumqttd on `addr` on dedicated threads, and returns once it
    /// accepts TCP connections. Port 0 picks a free port.
    pub fn start(addr: SocketAddr) -> Result<EmbeddedBroker, NetError> {
        let broker_error = |reason: String| NetError::Broker { addr, reason };
        // rumqttd binds by itself, does not report the port it got, and
        // fails to bind only in its own thread, where the readiness check
        // below could then reach whatever else listens there. So the
        // address is bound here first: a port in use is an error now, and
        // port 0 becomes a free port. (Another process could take it in
        // between; the readiness check would then fail.)
        let probe = TcpListener::bind(addr).map_err(|e| broker_error(e.to_string()))?;
        let addr = probe.local_addr()?;
        drop(probe);

        let mut broker = Broker::new(config(addr));
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

        wait_until_accepting(addr, &ended).map_err(broker_error)?;
        Ok(EmbeddedBroker { addr })
    }

    /// The URL clients use to reach it. An unspecified listen address
    /// (0.0.0.0) is reached through loopback.
    pub fn url(&self) -> BrokerUrl {
        let ip = if self.addr.ip().is_unspecified() {
            match self.addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            }
        } else {
            self.addr.ip()
        };
        BrokerUrl::new(ip.to_string(), self.addr.port())
    }
}

/// Probes in a loop until the broker answers, the broker thread ends, or
/// the overall timeout passes.
fn wait_until_accepting(addr: SocketAddr, ended: &mpsc::Receiver<String>) -> Result<(), String> {
    let target = EmbeddedBroker { addr }
        .url()
        .resolve()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut delay = Duration::from_millis(5);
    loop {
        if mqtt_handshake(target).is_ok() {
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
fn mqtt_handshake(target: SocketAddr) -> std::io::Result<()> {
    const CONNECT: &[u8] = &[
        0x10, 20, // CONNECT, remaining length
        0, 4, b'M', b'Q', b'T', b'T', 4, // protocol name, level 4 (3.1.1)
        0x02, 0, 5, // clean session, keep-alive 5 s
        0, 8, b'r', b'c', b'-', b'p', b'r', b'o', b'b', b'e', // client id
    ];
    const CONNACK_ACCEPTED: [u8; 4] = [0x20, 2, 0, 0];
    const DISCONNECT: &[u8] = &[0xE0, 0];

    let mut stream = TcpStream::connect_timeout(&target, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(CONNECT)?;
    let mut connack = [0; 4];
    stream.read_exact(&mut connack)?;
    stream.write_all(DISCONNECT)?;
    if connack == CONNACK_ACCEPTED {
        Ok(())
    } else {
        Err(std::io::Error::other("broker refused the probe"))
    }
}

/// A configuration for hundreds of clients sending bursts: one roll-call
/// makes every host answer within a few milliseconds.
fn config(listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: 1024 * 1024,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "rollcall-v4".to_owned(),
        listen,
        tls: None,
        // rumqttd sleeps this long after every accept; 0 lets hundreds of
        // clients connect at once.
        next_connection_delay_ms: 0,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 4096,
            max_outgoing_packet_count: 10_000,
            // Each subscribed filter keeps an in-memory log of at most
            // count x size bytes; readers that fall further behind skip.
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}
