//! `ScanOptions::sends`: a roll-call sent again while answers are missing
//! reaches a host whose first copy was lost, the answers of both copies make
//! one report timed from the first send, and no copy is sent once the
//! expected hosts have answered; unanswered, it goes out exactly `sends`
//! times within the wait; signed, each copy has a signature and nonce of
//! its own.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use crate::support::*;
use rollcall_net::{Qos, Session, SessionConfig};
use rollcall_proto::{RollCall, RollCallLimits};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A host that loses the first `lose` copies it hears, answers the next one
/// on MQTT, and counts every copy until `stop`. Returns the copies heard and
/// the ids they carried.
fn lossy_host(
    socket: UdpSocket,
    lose: usize,
    broker: rollcall_net::BrokerUrl,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let tracker = TaskTracker::new();
        let session = Session::start(
            SessionConfig::new(broker, format!("lossy-{}", unique())),
            shutdown.clone(),
            &tracker,
        )
        .unwrap();
        let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
        let mut ids = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = socket.recv(&mut buf) => r.unwrap(),
            };
            let rc = RollCall::parse(&buf[..n], RollCallLimits::default()).unwrap();
            ids.push(rc.id);
            if ids.len() == lose + 1 {
                let answer = json!({"id": rc.id, "hostname": "lossy", "function": "host",
                                    "apps": [], "cmd": "getstatus"});
                session
                    .handle
                    .publish(&rc.topic, answer.to_string(), Qos::AtLeastOnce, false)
                    .await
                    .unwrap();
            }
        }
        tracker.close();
        tracker.wait().await;
        ids
    })
}

fn bound_socket() -> (UdpSocket, u16) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.set_nonblocking(true).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_roll_call_is_sent_again_with_the_same_id_until_the_host_answers() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (socket, port) = bound_socket();
    let host = lossy_host(socket, 2, broker.clone(), shutdown.clone());
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.broadcasts.clear();
    opts.targets = vec![Ipv4Addr::LOCALHOST.into()];
    opts.wait = Duration::from_secs(6);
    opts.sends = 5;
    let report = scanner.scan(77, &opts, |_| {}).await.unwrap();
    shutdown.cancel();
    let ids = host.await.unwrap();

    assert_eq!(report.hosts.len(), 1, "{report:#?}");
    // The third copy was answered, so the answer came after two gaps of
    // wait / sends (1.2 s each), timed from the first send; and the scan
    // ended then, before the last two copies.
    let t = report.hosts[0].t_ms.unwrap();
    assert!((2400..6000).contains(&t), "answered at {t} ms");
    assert_eq!(ids, [77, 77, 77]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_is_the_default_and_an_answered_roll_call_is_not_repeated() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (socket, port) = bound_socket();
    let host = lossy_host(socket, 0, broker.clone(), shutdown.clone());
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.broadcasts.clear();
    opts.targets = vec![Ipv4Addr::LOCALHOST.into()];
    opts.sends = 5;
    let report = scanner.scan(78, &opts, |_| {}).await.unwrap();
    assert_eq!(report.hosts.len(), 1);

    // Without `sends`, a lost copy stays lost.
    let (socket, port) = bound_socket();
    let lossy = lossy_host(socket, 1, broker.clone(), shutdown.clone());
    let mut once = broadcast(port, 1);
    once.broadcasts.clear();
    once.targets = vec![Ipv4Addr::LOCALHOST.into()];
    once.wait = Duration::from_millis(300);
    let report = scanner.scan(79, &once, |_| {}).await.unwrap();
    assert!(report.hosts.is_empty(), "{report:#?}");
    shutdown.cancel();
    assert_eq!(host.await.unwrap(), [78]);
    assert_eq!(lossy.await.unwrap(), [79]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_the_roll_call_goes_out_exactly_sends_times_and_the_scan_ends_at_the_wait() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (socket, port) = bound_socket();
    let silent = lossy_host(socket, 1000, broker.clone(), shutdown.clone());
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.broadcasts.clear();
    opts.targets = vec![Ipv4Addr::LOCALHOST.into()];
    opts.wait = Duration::from_millis(800);
    opts.sends = 4;
    let began = std::time::Instant::now();
    let report = scanner.scan(80, &opts, |_| {}).await.unwrap();
    let took = began.elapsed();
    assert!(report.hosts.is_empty(), "{report:#?}");
    assert!(
        (Duration::from_millis(800)..Duration::from_secs(3)).contains(&took),
        "the scan took {took:?}"
    );
    // Every copy, the last included, went out before the scan ended: the
    // host has them all once its socket is drained.
    shutdown.cancel();
    assert_eq!(silent.await.unwrap(), [80; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_each_copy_carries_the_same_id_with_a_fresh_signature_and_nonce() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (socket, port) = bound_socket();
    let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let key = b"repeat test key".to_vec();
    let mut opts = broadcast(port, 1);
    opts.broadcasts.clear();
    opts.targets = vec![Ipv4Addr::LOCALHOST.into()];
    opts.wait = Duration::from_millis(600);
    opts.sends = 3;
    opts.cluster_key = Some(key.clone());
    let report = scanner.scan(81, &opts, |_| {}).await.unwrap();
    assert!(report.hosts.is_empty());
    let mut buf = [0u8; 2048];
    let mut nonces = Vec::new();
    for _ in 0..3 {
        let n = socket.try_recv(&mut buf).expect("a copy of the roll-call");
        let map = rollcall_proto::json::parse_object(&buf[..n], 2048).unwrap();
        rollcall_proto::sign::verify(&map, &key).unwrap();
        assert_eq!(map["id"], 81);
        nonces.push(map["nonce"].as_str().unwrap().to_owned());
    }
    assert!(socket.try_recv(&mut buf).is_err(), "more than 3 copies");
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 3, "a nonce was sent twice");
    shutdown.cancel();
}
