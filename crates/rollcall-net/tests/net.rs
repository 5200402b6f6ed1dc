//! Integration tests of rollcall-net against real sockets: the embedded
//! broker with real sessions, UDP broadcast on loopback, and STUN. Every
//! port is chosen by the OS, and every wait is a timeout around the real
//! condition.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_net::{
    BrokerUrl, EmbeddedBroker, Message, NetError, Qos, RollCallSocket, Session, SessionConfig,
    SessionHandle, StunResponder, Will, discover_external_addr,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod common;
use common::Harness;

const WAIT: Duration = Duration::from_secs(5);
const LOOPBACK_ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

fn broker() -> EmbeddedBroker {
    EmbeddedBroker::start(LOOPBACK_ANY_PORT).unwrap()
}

async fn next(incoming: &mut mpsc::Receiver<Message>) -> Message {
    timeout(WAIT, incoming.recv())
        .await
        .expect("no message in time")
        .expect("session ended")
}

/// Polls a condition that has no notification of its own.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not happen in time"));
}

/// Waits until the broker has processed `handle`'s earlier requests: a
/// message to ourselves comes back only after our SUBSCRIBE took effect.
async fn sync(handle: &SessionHandle, incoming: &mut mpsc::Receiver<Message>, tag: &str) {
    let topic = format!("/sync/{tag}");
    handle.subscribe(&topic).await.unwrap();
    loop {
        handle
            .publish(&topic, "ping", Qos::AtLeastOnce, false)
            .await
            .unwrap();
        let message = next(incoming).await;
        if message.topic == topic {
            return;
        }
    }
}

#[test]
fn broker_on_port_zero_reports_its_port() {
    let broker = broker();
    assert_ne!(broker.addr.port(), 0);
    assert_eq!(
        broker.url().to_string(),
        format!("mqtt://127.0.0.1:{}", broker.addr.port())
    );
    std::net::TcpStream::connect(broker.addr).unwrap();
}

/// A second broker on a taken address fails at once, rather than passing its
/// readiness check against the broker already there.
#[test]
fn a_broker_on_a_taken_address_is_an_error() {
    let first = broker();
    let second = EmbeddedBroker::start(first.addr);
    assert!(matches!(second, Err(NetError::Broker { .. })), "{second:?}");
}

#[tokio::test]
async fn two_sessions_exchange_messages() {
    let broker = broker();
    let harness = Harness::new();
    let mut a = harness.connect(&broker.url(), "a").await;
    let b = harness.connect(&broker.url(), "b").await;
    sync(&a.handle, &mut a.incoming, "a").await;

    a.handle.subscribe("/pizero1/gpio/+").await.unwrap();
    sync(&a.handle, &mut a.incoming, "a2").await;
    b.handle
        .publish(
            "/pizero1/gpio/control",
            "{\"x\":1}",
            Qos::AtLeastOnce,
            false,
        )
        .await
        .unwrap();
    b.handle
        .publish("/pizero1/gpio/set", b"1".to_vec(), Qos::AtMostOnce, false)
        .await
        .unwrap();

    let first = next(&mut a.incoming).await;
    assert_eq!(first.topic, "/pizero1/gpio/control");
    assert_eq!(&first.payload[..], b"{\"x\":1}");
    assert!(!first.retain);
    assert_eq!(next(&mut a.incoming).await.topic, "/pizero1/gpio/set");
    assert!(a.handle.stats().received >= 2);
    assert!(b.handle.stats().sent >= 2);
    assert_eq!(b.handle.stats().connects, 1);

    a.handle.unsubscribe("/pizero1/gpio/+").await.unwrap();
    harness.stop().await;
}

#[tokio::test]
async fn invalid_topics_are_refused() {
    let broker = broker();
    let harness = Harness::new();
    let a = harness.connect(&broker.url(), "a").await;
    let publish = a.handle.publish("/a/+", "x", Qos::AtMostOnce, false).await;
    assert!(matches!(publish, Err(NetError::InvalidTopic { .. })));
    assert!(a.handle.subscribe("/a/#/b").await.is_err());
    assert!(a.handle.publish_state("", "x").await.is_err());
    // rumqttd would drop the connection for this one.
    assert!(a.handle.subscribe("$SYS/#").await.is_err());
    harness.stop().await;
}

#[tokio::test]
async fn retained_state_reaches_late_subscribers() {
    let broker = broker();
    let harness = Harness::new();
    let a = harness.connect(&broker.url(), "agent").await;
    a.handle
        .publish_state("/pibot01/$state", "online")
        .await
        .unwrap();
    a.handle
        .publish("/pibot01/gpio/output/pump", "1", Qos::AtLeastOnce, true)
        .await
        .unwrap();

    let mut late = harness.connect(&broker.url(), "collector").await;
    late.handle.subscribe("/pibot01/#").await.unwrap();
    let mut received = [
        next(&mut late.incoming).await,
        next(&mut late.incoming).await,
    ];
    received.sort_by(|x, y| x.topic.cmp(&y.topic));
    assert_eq!(received[0].topic, "/pibot01/$state");
    assert_eq!(&received[0].payload[..], b"online");
    assert!(received.iter().all(|message| message.retain));
    assert_eq!(received[1].topic, "/pibot01/gpio/output/pump");
    harness.stop().await;
}

#[tokio::test]
async fn a_qos0_subscription_gets_every_retained_message() {
    // rumqttd gives a QoS 1 subscription only 100 of them.
    const HOSTS: usize = 250;
    let broker = broker();
    let harness = Harness::new();
    let mut agents = harness.connect(&broker.url(), "agents").await;
    for host in 0..HOSTS {
        agents
            .handle
            .publish_state(&format!("/host{host}/$state"), "online")
            .await
            .unwrap();
    }
    // Our own retained messages are stored once this round trip is done.
    sync(&agents.handle, &mut agents.incoming, "agents").await;

    let mut collector = harness.connect(&broker.url(), "collector").await;
    collector
        .handle
        .subscribe_with_qos("/+/$state", Qos::AtMostOnce)
        .await
        .unwrap();
    let mut hosts = std::collections::BTreeSet::new();
    while hosts.len() < HOSTS {
        let message = next(&mut collector.incoming).await;
        assert!(message.retain);
        hosts.insert(message.topic);
    }
    harness.stop().await;
}

/// rumqttd caches which filters each published topic matches, at most
/// 10,000 topics (vendor/rumqttd/PATCHES.md). After more distinct topics
/// than that, a subscriber that comes later still gets a topic evicted from
/// the cache and one cached since.
#[tokio::test]
async fn late_subscribers_receive_after_the_match_cache_evicts() {
    const TOPICS: usize = 12_000;
    let broker = broker();
    let harness = Harness::new();
    let mut late = harness.connect(&broker.url(), "late").await;
    let flood = harness.connect(&broker.url(), "flood").await;
    late.handle.subscribe("/flood/done").await.unwrap();
    sync(&late.handle, &mut late.incoming, "late").await;

    let out = &flood.handle;
    out.publish("/early/topic", "x", Qos::AtMostOnce, false)
        .await
        .unwrap();
    for i in 0..TOPICS {
        out.publish(&format!("/random/{i}"), "x", Qos::AtMostOnce, false)
            .await
            .unwrap();
    }
    // One connection's publishes are routed in order: once this one is
    // here, the broker has seen every topic above.
    out.publish("/flood/done", "x", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(next(&mut late.incoming).await.topic, "/flood/done");

    let last = format!("/random/{}", TOPICS - 1);
    late.handle.subscribe("/early/topic").await.unwrap();
    late.handle.subscribe(&last).await.unwrap();
    sync(&late.handle, &mut late.incoming, "late2").await;
    for topic in ["/early/topic", &last] {
        out.publish(topic, "x", Qos::AtLeastOnce, false)
            .await
            .unwrap();
    }
    let mut received = [
        next(&mut late.incoming).await.topic,
        next(&mut late.incoming).await.topic,
    ];
    received.sort();
    assert_eq!(received, ["/early/topic".to_owned(), last]);
    harness.stop().await;
}

#[tokio::test]
async fn will_is_sent_on_a_crash_but_not_on_a_clean_shutdown() {
    let broker = broker();
    let harness = Harness::new();
    let mut watcher = harness.connect(&broker.url(), "watcher").await;
    watcher.handle.subscribe("/+/$state").await.unwrap();
    sync(&watcher.handle, &mut watcher.incoming, "watcher").await;

    let with_will = |client_id: &str| {
        let mut config = SessionConfig::new(broker.url(), client_id);
        config.last_will = Some(Will {
            topic: format!("/{client_id}/$state"),
            payload: b"offline".to_vec(),
            retain: true,
        });
        config
    };

    // A clean shutdown: the next message is the marker, not the will.
    let polite_stop = CancellationToken::new();
    let polite =
        Session::start(with_will("polite"), polite_stop.clone(), &harness.tracker).unwrap();
    polite.handle.wait_connected(WAIT).await.unwrap();
    polite_stop.cancel();
    timeout(WAIT, polite.handle.closed()).await.unwrap();
    watcher
        .handle
        .publish("/marker/$state", "marker", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(next(&mut watcher.incoming).await.topic, "/marker/$state");

    // A crash: the broker publishes the will.
    let crashing = harness.session(with_will("crashing")).await;
    crashing.handle.kill();
    let will = next(&mut watcher.incoming).await;
    assert_eq!(will.topic, "/crashing/$state");
    assert_eq!(&will.payload[..], b"offline");
    assert!(!crashing.handle.is_connected());
    let after_kill = crashing.handle.publish("/x", "y", Qos::AtMostOnce, false);
    assert!(matches!(
        timeout(WAIT, after_kill).await.unwrap(),
        Err(NetError::SessionClosed)
    ));
    harness.stop().await;
}

#[tokio::test]
async fn a_full_incoming_channel_drops_instead_of_stalling() {
    let broker = broker();
    let harness = Harness::new();
    let mut config = SessionConfig::new(broker.url(), "slow");
    config.channel_capacity = 2;
    let mut slow = harness.session(config).await;
    slow.handle.subscribe("/burst").await.unwrap();
    sync(&slow.handle, &mut slow.incoming, "slow").await;
    let before = slow.handle.stats();

    let fast = harness.connect(&broker.url(), "fast").await;
    for _ in 0..50 {
        fast.handle
            .publish("/burst", "x", Qos::AtLeastOnce, false)
            .await
            .unwrap();
    }
    eventually("50 receptions", || {
        slow.handle.stats().received - before.received >= 50
    })
    .await;
    assert_eq!(slow.handle.stats().dropped - before.dropped, 48);
    assert_eq!(slow.incoming.len(), 2);
    harness.stop().await;
}

/// A TCP proxy in front of the broker that the test can cut, so the
/// session sees the broker go away and come back.
#[derive(Clone)]
struct CuttableProxy {
    addr: SocketAddr,
    /// Cancelled to cut every current connection; replaced on resume.
    cut: Arc<Mutex<CancellationToken>>,
    /// While set, new connections are closed at once.
    refusing: Arc<Mutex<bool>>,
}

impl CuttableProxy {
    async fn start(target: SocketAddr, tracker: &TaskTracker, shutdown: CancellationToken) -> Self {
        let listener = TcpListener::bind(LOOPBACK_ANY_PORT).await.unwrap();
        let proxy = CuttableProxy {
            addr: listener.local_addr().unwrap(),
            cut: Arc::default(),
            refusing: Arc::default(),
        };
        let accepting = proxy.clone();
        let connections = tracker.clone();
        tracker.spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                if *accepting.refusing.lock().unwrap() {
                    continue;
                }
                let cut = accepting.cut.lock().unwrap().clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    let mut server = TcpStream::connect(target).await.unwrap();
                    tokio::select! {
                        () = cut.cancelled() => {}
                        () = shutdown.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        proxy
    }

    fn url(&self) -> BrokerUrl {
        BrokerUrl::new("127.0.0.1", self.addr.port())
    }

    fn cut_and_refuse(&self) {
        *self.refusing.lock().unwrap() = true;
        let mut cut = self.cut.lock().unwrap();
        cut.cancel();
        *cut = CancellationToken::new();
    }

    fn resume(&self) {
        *self.refusing.lock().unwrap() = false;
    }
}

#[tokio::test]
async fn reconnect_restores_subscriptions_and_state() {
    let broker = broker();
    let harness = Harness::new();
    let proxy = CuttableProxy::start(broker.addr, &harness.tracker, harness.shutdown.clone()).await;
    let mut agent = harness.connect(&proxy.url(), "agent").await;
    agent.handle.subscribe("/pibot01/gpio/set/+").await.unwrap();
    agent
        .handle
        .publish_state("/pibot01/$state", "online")
        .await
        .unwrap();
    let mut other = harness.connect(&broker.url(), "other").await;

    proxy.cut_and_refuse();
    eventually("disconnect", || !agent.handle.is_connected()).await;
    // Overwrite the retained state so that only a re-publish restores it.
    other
        .handle
        .publish("/pibot01/$state", "stale", Qos::AtLeastOnce, true)
        .await
        .unwrap();
    sync(&other.handle, &mut other.incoming, "overwritten").await;
    proxy.resume();
    agent.handle.wait_connected(WAIT).await.unwrap();
    assert_eq!(agent.handle.stats().connects, 2);

    // The replayed state may reach the broker just before or just after
    // this subscription: as the retained message or as a live one.
    other.handle.subscribe("/pibot01/$state").await.unwrap();
    loop {
        let state = next(&mut other.incoming).await;
        assert_eq!(state.topic, "/pibot01/$state");
        if &state.payload[..] == b"online" {
            break;
        }
    }

    // The remembered subscription is live again once the broker has it.
    sync(&agent.handle, &mut agent.incoming, "agent").await;
    other
        .handle
        .publish("/pibot01/gpio/set/pump", "1", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    assert_eq!(
        next(&mut agent.incoming).await.topic,
        "/pibot01/gpio/set/pump"
    );
    harness.stop().await;
}

#[tokio::test]
async fn broadcast_reaches_every_listener_on_the_port() {
    let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let first = RollCallSocket::bind_listener(any).unwrap();
    let port = first.local_addr().unwrap().port();
    let second =
        RollCallSocket::bind_listener(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).unwrap();
    let sender = RollCallSocket::bind_sender(any).unwrap();

    let roll_call = br#"{"cmd":"status","id":1}"#;
    let broadcast = SocketAddr::from((Ipv4Addr::new(127, 255, 255, 255), port));
    sender.send_to(roll_call, broadcast).await.unwrap();

    for listener in [&first, &second] {
        let mut buf = [0; 1500];
        let (len, from) = timeout(WAIT, listener.recv_from(&mut buf))
            .await
            .expect("broadcast not received")
            .unwrap();
        assert_eq!(&buf[..len], roll_call);
        assert!(from.ip().is_loopback());
    }
}

#[tokio::test]
async fn stun_discovers_the_address_the_server_sees() {
    let harness = Harness::new();
    let responder = StunResponder::start(
        LOOPBACK_ANY_PORT,
        harness.shutdown.clone(),
        &harness.tracker,
    )
    .unwrap();
    let seen = discover_external_addr(responder.addr, WAIT).await.unwrap();
    assert!(seen.ip().is_loopback());
    assert_ne!(seen.port(), 0);

    let nat: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let behind_nat = StunResponder::start_with_mapped(
        LOOPBACK_ANY_PORT,
        Some(nat),
        harness.shutdown.clone(),
        &harness.tracker,
    )
    .unwrap();
    assert_eq!(
        discover_external_addr(behind_nat.addr, WAIT).await.unwrap(),
        nat
    );
    harness.stop().await;
}

#[tokio::test]
async fn stun_gives_up_when_nobody_answers() {
    let silent = std::net::UdpSocket::bind(LOOPBACK_ANY_PORT).unwrap();
    let result =
        discover_external_addr(silent.local_addr().unwrap(), Duration::from_millis(300)).await;
    assert!(matches!(result, Err(NetError::Timeout(..))));
}

/// A "broker" that accepts one connection, answers its CONNECT with a
/// CONNACK and then only reads: no SUBACK, no PUBACK. Every byte it reads
/// after the CONNACK is sent on the returned channel.
async fn mute_broker(
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> (BrokerUrl, mpsc::Receiver<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind(LOOPBACK_ANY_PORT).await.unwrap();
    let url = BrokerUrl::new("127.0.0.1", listener.local_addr().unwrap().port());
    let (tx, rx) = mpsc::channel(64);
    tracker.spawn(async move {
        let (mut client, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted.unwrap(),
        };
        let mut buf = vec![0u8; 4096];
        // The CONNECT arrives in one read on loopback; CONNACK: accepted.
        let _ = client.read(&mut buf).await;
        client.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
        loop {
            let n = tokio::select! {
                () = shutdown.cancelled() => return,
                n = client.read(&mut buf) => n.unwrap_or(0),
            };
            if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                return;
            }
        }
    });
    (url, rx)
}

// Issue 12: the CLI and the scanner send their request only after the
// SUBACK, so that the request carries the acknowledgement a stock
// Mosquitto would otherwise wait ~40 ms for.
#[tokio::test]
async fn subscribe_confirmed_waits_for_the_suback() {
    let broker = broker();
    let h = Harness::new();
    let mut a = h.connect(&broker.url(), "confirmed-a").await;
    let b = h.connect(&broker.url(), "confirmed-b").await;
    a.handle
        .subscribe_confirmed("/confirmed", WAIT)
        .await
        .unwrap();
    // Confirmed means in place: a message published after it, by another
    // client and without any probe, arrives.
    b.handle
        .publish("/confirmed", "after", Qos::AtMostOnce, false)
        .await
        .unwrap();
    assert_eq!(&next(&mut a.incoming).await.payload[..], b"after");

    // A broker that never sends the SUBACK: the wait ends in an error.
    let (url, _read) = mute_broker(&h.tracker, h.shutdown.clone()).await;
    let mute = h.connect(&url, "confirmed-mute").await;
    let waited = mute
        .handle
        .subscribe_confirmed("/never", Duration::from_millis(200))
        .await;
    assert!(matches!(waited, Err(NetError::Timeout(..))), "{waited:?}");
    h.stop().await;
}

#[tokio::test]
async fn publish_written_returns_once_the_publish_has_left() {
    let h = Harness::new();
    let (url, mut read) = mute_broker(&h.tracker, h.shutdown.clone()).await;
    let session = h.connect(&url, "written").await;
    session
        .handle
        .publish_written("/carrier", Vec::new(), Qos::AtMostOnce, false, WAIT)
        .await
        .unwrap();
    // Written, so the broker can read it: a QoS 0 PUBLISH, topic /carrier.
    let bytes = timeout(WAIT, read.recv()).await.unwrap().unwrap();
    assert_eq!(bytes[0], 0x30, "{bytes:?}");
    assert!(bytes.windows(8).any(|w| w == b"/carrier"), "{bytes:?}");

    // Nothing leaves without a connection: the wait ends in an error.
    let nowhere = Session::start(
        SessionConfig::new(
            BrokerUrl::new("127.0.0.1", closed_port().await),
            "written-nowhere",
        ),
        h.shutdown.clone(),
        &h.tracker,
    )
    .unwrap();
    let waited = nowhere
        .handle
        .publish_written(
            "/carrier",
            Vec::new(),
            Qos::AtMostOnce,
            false,
            Duration::from_millis(200),
        )
        .await;
    assert!(matches!(waited, Err(NetError::Timeout(..))), "{waited:?}");
    h.stop().await;
}

/// A loopback port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let listener = TcpListener::bind(LOOPBACK_ANY_PORT).await.unwrap();
    listener.local_addr().unwrap().port()
}
