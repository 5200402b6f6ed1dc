//! How the session matches a SUBACK (which names no filter, only a packet
//! id) to the filter it answers, and what it does with refusals, against
//! scripted brokers on loopback: a real broker cannot be made to refuse one
//! chosen SUBSCRIBE among 120 out at once, or to reset the connection in
//! the middle of one. Each test reproduces a defect found in review.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rollcall_net::{BrokerList, BrokerUrl, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

mod common;
use common::Harness;

const WAIT: Duration = Duration::from_secs(10);
/// MQTT packet types (the high nibble of the first byte).
const CONNECT: u8 = 1;
const SUBSCRIBE: u8 = 8;
const PINGREQ: u8 = 12;
/// SUBACK return codes.
const GRANTED_QOS1: u8 = 0x01;
const FAILURE: u8 = 0x80;

/// One MQTT packet: its type and its body.
async fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.ok()?;
    let (mut len, mut scale) = (0usize, 1usize);
    loop {
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.ok()?;
        len += usize::from(byte[0] & 0x7f) * scale;
        scale *= 128;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.ok()?;
    Some((first[0] >> 4, body))
}

/// (packet id, filter) of a SUBSCRIBE of one filter.
fn subscribe_of(body: &[u8]) -> (u16, String) {
    let pkid = u16::from_be_bytes([body[0], body[1]]);
    let len = usize::from(u16::from_be_bytes([body[2], body[3]]));
    (
        pkid,
        String::from_utf8_lossy(&body[4..4 + len]).into_owned(),
    )
}

async fn suback(s: &mut TcpStream, pkid: u16, code: u8) {
    let [hi, lo] = pkid.to_be_bytes();
    s.write_all(&[0x90, 0x03, hi, lo, code]).await.unwrap();
}

/// Takes a connection and accepts its CONNECT (a clean session).
async fn accept(listener: &TcpListener) -> TcpStream {
    let (mut s, _) = listener.accept().await.unwrap();
    let (kind, _) = read_packet(&mut s).await.unwrap();
    assert_eq!(kind, CONNECT);
    s.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
    s
}

/// After the script: grants every SUBSCRIBE (reporting its filter on
/// `seen`, refusing the filters `refuse` names once each) and answers pings.
async fn serve(mut s: TcpStream, seen: mpsc::UnboundedSender<String>, mut refuse: Vec<String>) {
    while let Some((kind, body)) = read_packet(&mut s).await {
        match kind {
            SUBSCRIBE => {
                let (pkid, filter) = subscribe_of(&body);
                let refused = refuse.iter().position(|f| *f == filter);
                let code = match refused {
                    Some(i) => {
                        refuse.remove(i);
                        FAILURE
                    }
                    None => GRANTED_QOS1,
                };
                suback(&mut s, pkid, code).await;
                let _ = seen.send(filter);
            }
            PINGREQ => s.write_all(&[0xD0, 0]).await.unwrap(),
            _ => {}
        }
    }
}

/// rumqttc's packet ids wrap at its in-flight limit (100): with 120
/// SUBSCRIBEs out before any SUBACK, filters 4 and 104 share an id. The
/// broker refuses filter 4 only; filter 4 must be the one subscribed again.
#[tokio::test]
async fn with_more_subscribes_out_than_packet_ids_a_refusal_is_retried_for_its_own_filter() {
    const N: usize = 120;
    let harness = Harness::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = BrokerUrl::new("127.0.0.1", listener.local_addr().unwrap().port());
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let broker = tokio::spawn(async move {
        let mut s = accept(&listener).await;
        let mut got = Vec::new();
        while got.len() < N {
            let (kind, body) = read_packet(&mut s).await.unwrap();
            match kind {
                SUBSCRIBE => got.push(subscribe_of(&body)),
                PINGREQ => s.write_all(&[0xD0, 0]).await.unwrap(),
                _ => {}
            }
        }
        for (pkid, filter) in &got {
            let code = if filter == "/f/004" {
                FAILURE
            } else {
                GRANTED_QOS1
            };
            suback(&mut s, *pkid, code).await;
        }
        serve(s, seen_tx, Vec::new()).await;
    });
    let session = harness.connect(&url, "subacks").await;
    for i in 0..N {
        session
            .handle
            .subscribe(&format!("/f/{i:03}"))
            .await
            .unwrap();
    }
    let retried = timeout(WAIT, seen.recv()).await.expect("a retry").unwrap();
    assert_eq!(
        retried, "/f/004",
        "the refused filter is the one subscribed again"
    );
    harness.stop().await;
    broker.abort();
}

/// A SUBSCRIBE written as the broker resets the connection leaves rumqttc
/// an event for it, which must not be taken for the next connection's:
/// there, the broker refuses the replayed `/b` once, and `/b` must be the
/// filter subscribed again (not `/c`, the next one). Whether the write
/// meets the reset is a race, so it is run several times.
#[tokio::test]
async fn after_a_reset_in_the_middle_of_a_subscribe_subacks_match_their_filters() {
    for attempt in 0..10 {
        let retried = reset_mid_subscribe().await;
        assert_eq!(
            retried, "/b",
            "attempt {attempt}: the refused filter is the one retried"
        );
    }
}

/// The filter subscribed again after the replay on the second connection.
async fn reset_mid_subscribe() -> String {
    let harness = Harness::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = BrokerUrl::new("127.0.0.1", listener.local_addr().unwrap().port());
    let (reset_tx, reset_rx) = oneshot::channel::<()>();
    let (reset_done_tx, reset_done) = oneshot::channel::<()>();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let broker = tokio::spawn(async move {
        // Connection 1 grants every SUBSCRIBE until told to reset.
        let mut s = accept(&listener).await;
        let mut reset_rx = reset_rx;
        loop {
            tokio::select! {
                _ = &mut reset_rx => break,
                packet = read_packet(&mut s) => {
                    let Some((kind, body)) = packet else { return };
                    if kind == SUBSCRIBE {
                        suback(&mut s, subscribe_of(&body).0, GRANTED_QOS1).await;
                    }
                }
            }
        }
        s.set_zero_linger().unwrap();
        drop(s);
        let _ = reset_done_tx.send(());
        // Connection 2 refuses the first SUBSCRIBE of /b.
        let s = accept(&listener).await;
        serve(s, seen_tx, vec!["/b".to_owned()]).await;
    });
    let session = harness.connect(&url, "subacks").await;
    for filter in ["/a", "/b", "/c"] {
        session
            .handle
            .subscribe_confirmed(filter, WAIT)
            .await
            .unwrap();
    }
    reset_tx.send(()).unwrap();
    reset_done.await.unwrap();
    // Written, or being written, as the connection goes.
    session.handle.subscribe("/d").await.unwrap();
    let mut replay = Vec::new();
    while replay.len() < 4 {
        replay.push(
            timeout(WAIT, seen.recv())
                .await
                .expect("the replay")
                .unwrap(),
        );
    }
    assert_eq!(replay, ["/a", "/b", "/c", "/d"]);
    let retried = timeout(WAIT, seen.recv()).await.expect("a retry").unwrap();
    harness.stop().await;
    broker.abort();
    retried
}

/// A broker that stops acknowledging: rumqttc's 100 QoS 1 publishes in
/// flight fill up, then the request queue, and a SUBSCRIBE cannot even be
/// queued. `subscribe_confirmed` must still end at its timeout, with an
/// error, rather than wait for room for ever.
#[tokio::test]
async fn a_confirmed_subscribe_times_out_when_the_broker_stops_acknowledging() {
    let harness = Harness::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = BrokerUrl::new("127.0.0.1", listener.local_addr().unwrap().port());
    let broker = tokio::spawn(async move {
        let mut s = accept(&listener).await;
        // Reads everything, answers pings only: no PUBACK, no SUBACK.
        while let Some((kind, _)) = read_packet(&mut s).await {
            if kind == PINGREQ {
                s.write_all(&[0xD0, 0]).await.unwrap();
            }
        }
    });
    let mut config = SessionConfig::new(url, "subacks-full");
    config.channel_capacity = 10;
    let session = harness.session(config).await;
    // Fill rumqttc's in-flight window and then its queue: a publish that
    // waits for room means both are full.
    let mut sent = 0;
    loop {
        let publish = session.handle.publish(
            "/full",
            b"x".to_vec(),
            rollcall_net::Qos::AtLeastOnce,
            false,
        );
        if timeout(Duration::from_millis(500), publish).await.is_err() {
            break;
        }
        sent += 1;
        assert!(sent < 1000, "the queue never filled");
    }
    let confirmed = timeout(
        WAIT,
        session
            .handle
            .subscribe_confirmed("/never", Duration::from_secs(1)),
    )
    .await
    .expect("subscribe_confirmed ended by its own timeout");
    assert!(
        confirmed.is_err(),
        "confirmed by a broker that never answers"
    );
    harness.stop().await;
    broker.abort();
}

/// Two brokers that refuse every subscription: the session gives the
/// filter up on the first, moves to the second, gives it up there too and
/// then stays, rather than hop back and forth (each hop firing its will).
#[tokio::test]
async fn when_every_broker_refuses_every_subscription_the_session_stops_moving() {
    let harness = Harness::new();
    let connects = Arc::new(AtomicUsize::new(0));
    let mut urls = Vec::new();
    let mut brokers = Vec::new();
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!(
            "mqtt://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        ));
        let connects = Arc::clone(&connects);
        brokers.push(tokio::spawn(async move {
            loop {
                let mut s = accept(&listener).await;
                connects.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    while let Some((kind, body)) = read_packet(&mut s).await {
                        match kind {
                            SUBSCRIBE => suback(&mut s, subscribe_of(&body).0, FAILURE).await,
                            PINGREQ => s.write_all(&[0xD0, 0]).await.unwrap(),
                            _ => {}
                        }
                    }
                });
            }
        }));
    }
    let list: BrokerList = urls.join(",").parse().unwrap();
    let config = SessionConfig::for_brokers(&list, "subacks-refused");
    let session = harness.session(config).await;
    session.handle.subscribe("/x").await.unwrap();
    // Given up on the first broker, then on the second (10 retries over
    // about 13 s on each): bounded well above that.
    let both = Duration::from_secs(60);
    let gave_up = async {
        while session.handle.stats().given_up < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    timeout(both, gave_up)
        .await
        .expect("given up on both brokers");
    assert_eq!(connects.load(Ordering::SeqCst), 2, "one connection to each");
    // A move would follow at once (the reconnect's backoff starts well
    // under a second): none comes.
    let moved = async {
        while connects.load(Ordering::SeqCst) == 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(
        timeout(Duration::from_secs(3), moved).await.is_err(),
        "the session moved again: {} connections",
        connects.load(Ordering::SeqCst)
    );
    assert!(session.handle.is_connected());
    harness.stop().await;
    for broker in brokers {
        broker.abort();
    }
}
