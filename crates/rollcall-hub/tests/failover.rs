//! A scanner given several brokers names, in its roll-call's `broker`, the
//! one its session is connected to: agents relay their answers there, and
//! an answer sent to a dead first node of the list would be lost. Against
//! real Mosquitto (skipped where it is missing, never under `CI=true`).

use std::time::Duration;

use rollcall_hub::{Descriptions, ScanOptions, Scanner};
use rollcall_net::{BrokerList, BrokerUrl, Session, SessionConfig};
use rollcall_proto::{RollCall, RollCallLimits, Topics};
use rollcall_testsupport::{Mosquitto, free_tcp_port, unique};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_roll_call_names_the_broker_the_scanner_is_connected_to() {
    let test = "the_roll_call_names_the_broker_the_scanner_is_connected_to";
    let Some(mosquitto) = Mosquitto::for_test(test) else {
        return;
    };
    // The first node of the list is down: nothing listens on its port.
    let dead = BrokerUrl::new("127.0.0.1", free_tcp_port());
    let brokers = BrokerList::new(vec![dead.clone(), mosquitto.url()]).unwrap();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let topics = Topics::default();

    let mut watcher = Session::start(
        SessionConfig::new(mosquitto.url(), format!("w-{}", unique())),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    watcher.handle.wait_connected(WAIT).await.unwrap();
    watcher
        .handle
        .subscribe_confirmed(&topics.udp_request(), WAIT)
        .await
        .unwrap();

    let mut scanner = Scanner::connect(
        SessionConfig::for_brokers(&brokers, format!("scanner-{}", unique())),
        topics.clone(),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    scanner.session().wait_connected(WAIT).await.unwrap();
    assert_eq!(scanner.session().broker(), Some(mosquitto.url()));
    let opts = ScanOptions {
        replyto: "hub".into(),
        topic: "/hub/answers".into(),
        udp_port: 0,
        broadcasts: Vec::new(),
        targets: Vec::new(),
        via_mqtt: true,
        wait: Duration::from_millis(100),
        window_ms: 0,
        expect: None,
        cluster_key: None,
        sends: 1,
        descriptions: Descriptions::Read,
    };
    scanner.scan(7, &opts, |_| {}).await.unwrap();
    let message = timeout(WAIT, watcher.incoming.recv())
        .await
        .expect("the roll-call over MQTT")
        .unwrap();
    let rc = RollCall::parse(&message.payload, RollCallLimits::default()).unwrap();
    assert_eq!(rc.id, 7);
    assert_eq!(rc.broker, Some(mosquitto.url().to_string()));
    assert_ne!(rc.broker, Some(dead.to_string()));

    shutdown.cancel();
    tracker.close();
    timeout(WAIT, tracker.wait()).await.unwrap();
}
