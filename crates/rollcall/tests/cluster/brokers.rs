//! An agent given several brokers: a node whose name does not resolve is
//! skipped, not a reason to stop (issue 15).

use std::time::Duration;

use rollcall_agent::RawConfig;
use rollcall_net::{Session, SessionConfig};
use rollcall_proto::{HostState, Topics};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_first_broker_does_not_resolve_starts_on_the_next() {
    let test = "an_agent_whose_first_broker_does_not_resolve_starts_on_the_next";
    let Some(mosquitto) = Mosquitto::for_test(test) else {
        return;
    };
    let shutdown = CancellationToken::new();
    let port = free_udp_port();
    // `.invalid` never resolves (RFC 6761).
    let config = RawConfig {
        broker: None,
        brokers: Some(vec![
            "mqtt://no-such-node.invalid:1883".into(),
            mosquitto.url().to_string(),
        ]),
        ..host_config("unresolved", &mosquitto.url(), port)
    };
    let agent = connected_agent(config.clone(), &shutdown).await;
    // Online on the second node: the retained `$state` says so there.
    let tracker = TaskTracker::new();
    let mut watcher = Session::start(
        SessionConfig::new(mosquitto.url(), format!("w-{}", unique())),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    watcher
        .handle
        .subscribe(&Topics::default().state("unresolved"))
        .await
        .unwrap();
    let online = HostState::online(agent.session_number()).to_payload();
    tokio::time::timeout(Duration::from_secs(30), async {
        while watcher.incoming.recv().await.expect("watching").payload[..] != online[..] {}
    })
    .await
    .expect("the agent says it is online on the second node");

    // Nothing of the list resolves: an error that names the host.
    let alone = RawConfig {
        broker: Some("mqtt://no-such-node.invalid:1883".into()),
        brokers: None,
        ..config
    };
    let Err(error) = rollcall_agent::start(alone.validate().unwrap(), shutdown.clone()).await
    else {
        panic!("an agent started with no broker that resolves");
    };
    assert!(
        error.to_string().contains("no-such-node.invalid"),
        "{error}"
    );
    shutdown.cancel();
    agent.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}
