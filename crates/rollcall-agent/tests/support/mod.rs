//! Test support: a cluster of agents on one machine, a scanner, and a real
//! Mosquitto when one is installed. Everything stays on loopback: roll-calls
//! go to 127.255.255.255, brokers listen on 127.0.0.1.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall_agent::{Agent, RawConfig};
use rollcall_hub::{ScanOptions, ScanReport, Scanner};
use rollcall_net::{BrokerUrl, EmbeddedBroker, Session, SessionConfig};
use rollcall_proto::Topics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const LOOPBACK_BROADCAST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 255, 255, 255));

/// A UDP port nobody is using now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An embedded broker on a free loopback port.
pub fn embedded_broker() -> BrokerUrl {
    EmbeddedBroker::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .unwrap()
        .url()
}

/// A configuration for a simulated host on `broker`, hearing roll-calls on `udp_port`.
pub fn host_config(name: &str, broker: &BrokerUrl, udp_port: u16) -> RawConfig {
    RawConfig {
        hostname: Some(name.into()),
        broker: Some(broker.to_string()),
        udp_port: Some(udp_port),
        // Unique, so that concurrent tests with the same host names share
        // no saved state; nothing is written there unless a test configures
        // a service, and such tests give a folder of their own.
        state_dir: Some(
            std::env::temp_dir().join(format!("rollcall-test-{name}-{}", rand_suffix())),
        ),
        sim: Some(true),
        ..RawConfig::default()
    }
}

/// Starts an agent and waits until it serves: its retained `$state` says
/// `online`, which it publishes after subscribing to everything it serves,
/// on the same connection, so the broker has every subscription by then.
pub async fn agent(config: RawConfig, shutdown: &CancellationToken) -> Agent {
    let config = config.validate().unwrap();
    let state_topic = config.topics.state(&config.hostname);
    let agent = rollcall_agent::start(config, shutdown.clone())
        .await
        .unwrap();
    agent.wait_connected(Duration::from_secs(5)).await.unwrap();
    let watcher_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut watcher = Session::start(
        SessionConfig::new(
            agent.broker_url().clone(),
            format!("ready-{}", rand_suffix()),
        ),
        watcher_stop.clone(),
        &tracker,
    )
    .unwrap();
    watcher.handle.subscribe(&state_topic).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), watcher.incoming.recv())
            .await
            .expect("the agent says it is online within 5 s")
            .unwrap();
        if &msg.payload[..] == b"online" {
            break;
        }
    }
    watcher_stop.cancel();
    tracker.close();
    tracker.wait().await;
    agent
}

/// A scanner on `broker`.
pub fn scanner(broker: &BrokerUrl, shutdown: &CancellationToken, tracker: &TaskTracker) -> Scanner {
    let id = format!("test-scanner-{}", rand_suffix());
    Scanner::connect(
        broker.clone(),
        id,
        Topics::default(),
        shutdown.clone(),
        tracker,
    )
    .unwrap()
}

pub fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// A broadcast roll-call on `udp_port`, waiting for `expect` hosts.
pub fn broadcast(udp_port: u16, expect: usize) -> ScanOptions {
    ScanOptions {
        replyto: "test".into(),
        topic: "/stat/data".into(),
        udp_port,
        broadcasts: vec![LOOPBACK_BROADCAST],
        targets: Vec::new(),
        via_mqtt: false,
        wait: Duration::from_secs(5),
        window_ms: 10,
        expect: Some(expect),
        cluster_key: None,
        sends: 1,
    }
}

/// The functions that answered for `host`.
pub fn functions(report: &ScanReport, host: &str) -> Vec<String> {
    report
        .hosts
        .iter()
        .find(|h| h.hostname == host)
        .map(|h| h.services.iter().map(|s| s.function.clone()).collect())
        .unwrap_or_default()
}

/// Where a program is, on PATH or in the sbin folders Debian puts daemons in.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A real Mosquitto on a free loopback port, stopped when dropped.
pub struct Mosquitto {
    child: Child,
    pub url: BrokerUrl,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto, or says why not: `None` skips the test, except under
    /// `CI=true`, where a missing Mosquitto fails it.
    pub fn start(test: &str) -> Option<Mosquitto> {
        let Some(program) = find_program("mosquitto") else {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!ci, "{test}: CI=true but mosquitto is not installed");
            eprintln!("{test}: skipped: mosquitto is not installed (apt-get install mosquitto)");
            return None;
        };
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
            ),
        )
        .unwrap();
        let child = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Mosquitto {
            child,
            url: BrokerUrl::new("127.0.0.1", port),
            _dir: dir,
        })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a mosquitto client program (`mosquitto_pub`, `mosquitto_sub`), or
/// says why not, as [`Mosquitto::start`] does.
pub fn mosquitto_client(test: &str, name: &str) -> Option<PathBuf> {
    let found = find_program(name);
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "{test}: CI=true but {name} is not installed");
        eprintln!("{test}: skipped: {name} is not installed (apt-get install mosquitto-clients)");
    }
    found
}
