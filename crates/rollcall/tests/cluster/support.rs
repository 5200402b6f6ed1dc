//! What the cluster tests share: agents on one machine, started and ready,
//! and a scanner. Brokers, ports and skipping come from
//! `rollcall-testsupport`. Everything stays on loopback: roll-calls go to
//! 127.255.255.255, brokers listen on 127.0.0.1.

use std::time::Duration;

use rollcall_agent::{Agent, RawConfig};
use rollcall_hub::{ScanOptions, ScanReport, Scanner};
use rollcall_net::{BrokerUrl, Session, SessionConfig};
use rollcall_proto::{HostState, Topics};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use rollcall_testsupport::mosquitto::client as mosquitto_client;
pub use rollcall_testsupport::{
    LOOPBACK_BROADCAST, Mosquitto, embedded_broker, free_udp_port, unique,
};

/// A configuration for a simulated host on `broker`, hearing roll-calls on `udp_port`.
pub fn host_config(name: &str, broker: &BrokerUrl, udp_port: u16) -> RawConfig {
    RawConfig {
        hostname: Some(name.into()),
        broker: Some(broker.to_string()),
        udp_port: Some(udp_port),
        // Unique, so that concurrent tests with the same host names share
        // no saved state; only the agent's session number is written there
        // unless a test configures a service, and such tests give a folder
        // of their own.
        state_dir: Some(std::env::temp_dir().join(format!("rollcall-test-{name}-{}", unique()))),
        sim: Some(true),
        ..RawConfig::default()
    }
}

/// How long an agent may take to connect and say it is online: an upper
/// bound, not a pause. Generous because the other tests load both cores.
const READY: Duration = Duration::from_secs(30);

/// Starts an agent and waits only until it has connected: for a broker
/// whose retained store is full (the 20,000-host flood), where the agent's
/// retained `online` is not kept and [`agent`] would wait for it in vain.
pub async fn connected_agent(config: RawConfig, shutdown: &CancellationToken) -> Agent {
    let agent = rollcall_agent::start(config.validate().unwrap(), shutdown.clone())
        .await
        .unwrap();
    agent.wait_connected(READY).await.unwrap();
    agent
}

/// Starts an agent and waits until it serves: its retained `$state` says
/// `online` with its session number, which it publishes after subscribing to everything it serves,
/// on the same connection, so the broker has every subscription by then.
pub async fn agent(config: RawConfig, shutdown: &CancellationToken) -> Agent {
    let config = config.validate().unwrap();
    let state_topic = config.topics.state(&config.hostname);
    let agent = rollcall_agent::start(config, shutdown.clone())
        .await
        .unwrap();
    agent.wait_connected(READY).await.unwrap();
    let watcher_stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut watcher = Session::start(
        SessionConfig::new(agent.broker_url().clone(), format!("ready-{}", unique())),
        watcher_stop.clone(),
        &tracker,
    )
    .unwrap();
    watcher.handle.subscribe(&state_topic).await.unwrap();
    loop {
        let msg = tokio::time::timeout(READY, watcher.incoming.recv())
            .await
            .expect("the agent says it is online in time")
            .unwrap();
        if msg.payload[..] == HostState::online(agent.session_number()).to_payload() {
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
    let id = format!("test-scanner-{}", unique());
    Scanner::connect(
        rollcall_net::SessionConfig::new(broker.clone(), id),
        Topics::default(),
        shutdown.clone(),
        tracker,
    )
    .unwrap()
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
        descriptions: Default::default(),
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
