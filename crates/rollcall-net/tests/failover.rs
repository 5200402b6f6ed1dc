//! A session given several brokers: it moves to the next when its broker
//! dies or refuses every subscription, and restores what it remembered
//! there; a broker refusing one filter only loses that filter. Against real brokers: two Mosquittos, and a three-node NATS
//! cluster speaking MQTT (skipped where `mosquitto` or `nats-server` is
//! missing, never under `CI=true`). Every wait is a timeout around the real
//! condition.

use std::time::{Duration, Instant};

use rollcall_net::{BrokerList, BrokerUrl, Message, Qos, Session, SessionConfig, Will};
use rollcall_testsupport::{Mosquitto, NatsCluster, unique};
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::Harness;

const WAIT: Duration = Duration::from_secs(10);

/// How long a NATS cluster may take, after a node is killed, to serve the
/// retained messages again from the nodes left: JetStream elects new stream
/// leaders first. 5 to 10 s on an idle machine; a fresh-clone CI run beside
/// a build took longer than 10 s, and the network-namespace bed under load
/// saw over 100 s (BENCHMARKS.md, issue 15). An upper bound, not a wait.
const NATS_RECOVERY: Duration = Duration::from_secs(120);

fn list(urls: &[BrokerUrl]) -> BrokerList {
    BrokerList::new(urls.to_vec()).unwrap()
}

/// The next message on `topic`, skipping others, within `wait`.
async fn next_on(incoming: &mut mpsc::Receiver<Message>, topic: &str, wait: Duration) -> Message {
    timeout(wait, async {
        loop {
            let message = incoming.recv().await.expect("session ended");
            if message.topic == topic {
                return message;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing on {topic} within {wait:?}"))
}

/// Waits until `topic` carries `payload` (a will may come first, when a
/// slow node made a session miss its keep-alive and reconnect).
async fn wait_for(incoming: &mut mpsc::Receiver<Message>, topic: &str, payload: &str) {
    timeout(WAIT, async {
        while next_on(incoming, topic, WAIT).await.payload != payload.as_bytes() {}
    })
    .await
    .unwrap_or_else(|_| panic!("{topic} never said {payload}"));
}

/// Publishes `topic` every 100 ms until `incoming` has it: the way to know a
/// subscription works again on a broker that may still refuse it.
async fn publish_until_seen(
    publisher: &Session,
    incoming: &mut mpsc::Receiver<Message>,
    topic: &str,
    wait: Duration,
) {
    timeout(wait, async {
        loop {
            publisher
                .handle
                .publish(topic, "ping", Qos::AtLeastOnce, false)
                .await
                .unwrap();
            let got = timeout(Duration::from_millis(100), async {
                loop {
                    match incoming.recv().await {
                        Some(m) if m.topic == topic => return,
                        Some(_) => {}
                        None => panic!("session ended"),
                    }
                }
            })
            .await;
            if got.is_ok() {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{topic} never came back within {wait:?}"));
}

#[tokio::test]
async fn a_session_moves_to_the_next_broker_and_restores_its_subscriptions_and_state() {
    let test = "a_session_moves_to_the_next_broker";
    let Some(first) = Mosquitto::for_test(test) else {
        return;
    };
    let Some(second) = Mosquitto::for_test(test) else {
        return;
    };
    let harness = Harness::new();
    let mut config = SessionConfig::for_brokers(
        &list(&[first.url(), second.url()]),
        format!("a-{}", unique()),
    );
    config.keep_alive = Duration::from_secs(1);
    let mut session = harness.session(config).await;
    session.handle.subscribe("/t/#").await.unwrap();
    session
        .handle
        .publish_state("/h/$state", "online")
        .await
        .unwrap();
    let mut watcher = harness
        .session(SessionConfig::new(second.url(), format!("w-{}", unique())))
        .await;
    watcher.handle.subscribe("/h/$state").await.unwrap();

    drop(first);
    // The state it remembered is published on the second broker...
    let state = next_on(&mut watcher.incoming, "/h/$state", WAIT).await;
    assert_eq!(&state.payload[..], b"online");
    // ...and its subscription is made there.
    publish_until_seen(&watcher, &mut session.incoming, "/t/x", WAIT).await;
    assert_eq!(session.handle.stats().connects, 2);
    harness.stop().await;
}

#[tokio::test]
async fn a_broker_that_keeps_refusing_a_subscription_is_left_for_the_next() {
    let test = "a_broker_that_keeps_refusing_a_subscription";
    // NATS refuses (SUBACK 0x80) a filter with a `.`, which its subjects
    // use as a separator; Mosquitto takes it.
    let Some(nats) = NatsCluster::for_test(test, 1) else {
        return;
    };
    let Some(mosquitto) = Mosquitto::for_test(test) else {
        return;
    };
    let harness = Harness::new();
    let config = SessionConfig::for_brokers(
        &list(&[nats.url(0), mosquitto.url()]),
        format!("r-{}", unique()),
    );
    let mut session = harness.session(config).await;
    assert_eq!(session.handle.broker(), Some(nats.url(0)));
    let started = Instant::now();
    session.handle.subscribe("/pi.local/x").await.unwrap();
    let publisher = harness
        .session(SessionConfig::new(
            mosquitto.url(),
            format!("p-{}", unique()),
        ))
        .await;
    // About 12 s of retries with backoff on NATS, then Mosquitto.
    publish_until_seen(
        &publisher,
        &mut session.incoming,
        "/pi.local/x",
        Duration::from_secs(30),
    )
    .await;
    let stats = session.handle.stats();
    assert!(stats.resubscribes >= 10, "{stats:?}");
    assert_eq!(stats.connects, 2, "{stats:?}");
    assert_eq!(session.handle.broker(), Some(mosquitto.url()));
    eprintln!("left the refusing broker after {:?}", started.elapsed());
    harness.stop().await;
}

/// Waits, at most `wait`, until `done` holds for the session's stats.
async fn wait_stats(
    session: &Session,
    wait: Duration,
    done: impl Fn(&rollcall_net::SessionStats) -> bool,
) {
    let deadline = Instant::now() + wait;
    while !done(&session.handle.stats()) {
        assert!(
            Instant::now() < deadline,
            "stats never got there: {:?}",
            session.handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_filter_the_broker_keeps_refusing_is_given_up_not_the_connection() {
    let test = "a_filter_the_broker_keeps_refusing";
    // One refused filter among good ones (a `$description` topic with a `.`
    // that a hub would subscribe to): the session must not leave the node,
    // which would flap its will, however long the refusals go on.
    let Some(nats) = NatsCluster::for_test(test, 1) else {
        return;
    };
    let Some(mosquitto) = Mosquitto::for_test(test) else {
        return;
    };
    let harness = Harness::new();
    let mut config = SessionConfig::for_brokers(
        &list(&[nats.url(0), mosquitto.url()]),
        format!("g-{}", unique()),
    );
    config.last_will = Some(Will {
        topic: "/g/$state".into(),
        payload: b"offline".to_vec(),
        retain: true,
    });
    let mut session = harness.session(config).await;
    session
        .handle
        .subscribe_confirmed("/ok/#", WAIT)
        .await
        .unwrap();
    session.handle.subscribe("/pi.local/x").await.unwrap();
    let publisher = harness
        .session(SessionConfig::new(nats.url(0), format!("p-{}", unique())))
        .await;
    // The bounded retries take about 13 s.
    wait_stats(&session, Duration::from_secs(40), |s| s.given_up == 1).await;
    let stats = session.handle.stats();
    assert_eq!(stats.connects, 1, "{stats:?}");
    assert_eq!(stats.resubscribes, 10, "{stats:?}");
    assert_eq!(session.handle.broker(), Some(nats.url(0)));
    // The good subscription works on.
    publish_until_seen(&publisher, &mut session.incoming, "/ok/x", WAIT).await;
    assert!(session.handle.is_connected());
    assert_eq!(session.handle.stats().connects, 1);
    harness.stop().await;
}

/// How many distinct topics under `prefix` arrive, waiting at most 30 s for
/// `expected` of them.
async fn count_all(incoming: &mut mpsc::Receiver<Message>, prefix: &str, expected: usize) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    let _ = timeout(Duration::from_secs(30), async {
        while seen.len() < expected {
            let message = incoming.recv().await.expect("session ended");
            if let Some(n) = message.topic.strip_prefix(prefix) {
                seen.insert(n.to_owned());
            }
        }
    })
    .await;
    seen.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_refused_subscriptions_are_retried() {
    let test = "nothing_is_lost_while_refused_subscriptions";
    let Some(nats) = NatsCluster::for_test(test, 1) else {
        return;
    };
    const REFUSED: usize = 50;
    const MESSAGES: usize = 500;
    let harness = Harness::new();
    let mut session = harness
        .session(SessionConfig::new(nats.url(0), format!("s-{}", unique())))
        .await;
    let mut watcher = harness
        .session(SessionConfig::new(nats.url(0), format!("w-{}", unique())))
        .await;
    watcher
        .handle
        .subscribe_confirmed("/echo/#", WAIT)
        .await
        .unwrap();
    session
        .handle
        .subscribe_confirmed("/ok/#", WAIT)
        .await
        .unwrap();
    // A storm of retries: every one of these is refused, retried with
    // backoff from 100 ms, about 500 SUBSCRIBEs in 13 s...
    for i in 0..REFUSED {
        session
            .handle
            .subscribe(&format!("/bad.{i}/x"))
            .await
            .unwrap();
    }
    // ...while QoS 1 messages go both ways through the same session.
    for i in 0..MESSAGES {
        watcher
            .handle
            .publish(&format!("/ok/{i}"), "m", Qos::AtLeastOnce, false)
            .await
            .unwrap();
        session
            .handle
            .publish(&format!("/echo/{i}"), "m", Qos::AtLeastOnce, false)
            .await
            .unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        count_all(&mut session.incoming, "/ok/", MESSAGES).await,
        MESSAGES
    );
    assert_eq!(
        count_all(&mut watcher.incoming, "/echo/", MESSAGES).await,
        MESSAGES
    );
    let stats = session.handle.stats();
    assert!(stats.resubscribes >= REFUSED as u64, "{stats:?}");
    assert_eq!(stats.connects, 1, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    harness.stop().await;
}

/// What the cluster's MQTT must carry for rollcall, across nodes: retained
/// `$state` and `$description` on rollcall's wildcard filters (topics with a
/// leading `/` and a `$` level), QoS 1, last wills; then a node dies and a
/// session on it comes back on another node with its subscriptions, while
/// nothing retained is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_nats_cluster_rollcall_topics_cross_nodes_and_survive_a_node_kill() {
    let Some(mut cluster) = NatsCluster::for_test("on_a_nats_cluster", 3) else {
        return;
    };
    let urls: Vec<BrokerUrl> = cluster.urls().iter().cloned().collect();
    let rotated = |start: usize| list(&[0, 1, 2].map(|i| urls[(start + i) % 3].clone()));
    let harness = Harness::new();
    let id = unique();

    // An agent-like session on node 0, with a will, and a hub-like one on node 1.
    let mut agent_config = SessionConfig::for_brokers(&rotated(0), format!("agent-{id}"));
    agent_config.last_will = Some(Will {
        topic: "/h1/$state".into(),
        payload: b"offline".to_vec(),
        retain: true,
    });
    let mut agent = harness.session(agent_config).await;
    let mut hub = harness
        .session(SessionConfig::for_brokers(&rotated(1), format!("hub-{id}")))
        .await;
    for filter in ["/+/$state", "/h1/+/$description", "/udp/#"] {
        hub.handle.subscribe_confirmed(filter, WAIT).await.unwrap();
    }
    agent
        .handle
        .subscribe_confirmed("/h1/gpio/set/+", WAIT)
        .await
        .unwrap();
    agent
        .handle
        .publish_state("/h1/$state", "online")
        .await
        .unwrap();
    agent
        .handle
        .publish_state("/h1/gpio/$description", r#"{"function":"gpio"}"#)
        .await
        .unwrap();
    wait_for(&mut hub.incoming, "/h1/$state", "online").await;
    next_on(&mut hub.incoming, "/h1/gpio/$description", WAIT).await;
    hub.handle
        .publish("/h1/gpio/set/led", "1", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    next_on(&mut agent.incoming, "/h1/gpio/set/led", WAIT).await;
    agent
        .handle
        .publish("/udp/report", "r", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    next_on(&mut hub.incoming, "/udp/report", WAIT).await;

    // A late subscriber on node 2 gets both retained messages.
    let mut late = harness
        .session(SessionConfig::for_brokers(
            &rotated(2),
            format!("late-{id}"),
        ))
        .await;
    late.handle.subscribe("/+/$state").await.unwrap();
    late.handle.subscribe("/+/+/$description").await.unwrap();
    next_on(&mut late.incoming, "/h1/$state", WAIT).await;
    next_on(&mut late.incoming, "/h1/gpio/$description", WAIT).await;

    // A crash on node 2 fires its will on node 1.
    let mut crash_config = SessionConfig::for_brokers(&rotated(2), format!("crash-{id}"));
    crash_config.keep_alive = Duration::from_secs(1);
    crash_config.last_will = Some(Will {
        topic: "/h2/$state".into(),
        payload: b"offline".to_vec(),
        retain: true,
    });
    let crash = harness.session(crash_config).await;
    crash.handle.kill();
    wait_for(&mut hub.incoming, "/h2/$state", "offline").await;

    // The agent's node dies: the agent comes back on another node with its
    // subscription, without firing its will for good.
    let on = agent.handle.broker().expect("connected");
    let node = (0..3).find(|i| urls[*i] == on).unwrap();
    let killed = Instant::now();
    cluster.kill(node);
    publish_until_seen(
        &hub,
        &mut agent.incoming,
        "/h1/gpio/set/led",
        Duration::from_secs(30),
    )
    .await;
    let recovered = killed.elapsed();
    eprintln!(
        "nats node kill: the agent's subscription worked again after {recovered:?} \
         (resubscribes {})",
        agent.handle.stats().resubscribes
    );
    assert!(agent.handle.stats().connects >= 2);
    assert_ne!(agent.handle.broker(), Some(on));
    // Retained state is all there, and says online (the will, if the
    // broker fired it, was replaced by the replayed state).
    let mut after = harness
        .session(SessionConfig::for_brokers(
            &rotated(node + 1),
            format!("after-{id}"),
        ))
        .await;
    after.handle.subscribe("/h1/#").await.unwrap();
    let deadline = Instant::now() + NATS_RECOVERY;
    let mut seen = std::collections::BTreeMap::new();
    while seen.get("/h1/$state").map(Vec::as_slice) != Some(b"online".as_slice())
        || !seen.contains_key("/h1/gpio/$description")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = timeout(left, after.incoming.recv())
            .await
            .unwrap_or_else(|_| panic!("retained state after the kill: {seen:?}"))
            .unwrap();
        seen.insert(message.topic, message.payload.to_vec());
    }
    harness.stop().await;
}
