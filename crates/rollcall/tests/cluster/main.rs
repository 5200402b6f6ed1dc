//! The cluster end to end, in one process: agents, the embedded broker or a
//! real Mosquitto, the scanner and the hub, all on loopback. The roll-call
//! and the agent's queries are here; the services' tests are in `gpio`,
//! `sensors` and `bme280`, the hub's in `hub` and the repeated roll-call's
//! in `repeat`. They live in the `rollcall` crate because it is the one that
//! depends on both the agent and the hub.

mod support;

mod bme280;
mod brokers;
mod gpio;
mod ha;
mod hub;
mod repeat;
mod secure_broker;
mod security;
mod sensors;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rollcall_net::{BrokerUrl, Qos, RollCallSocket, Session, SessionConfig, StunResponder};
use rollcall_proto::{HostState, RollCall};
use serde_json::{Value, json};
use support::*;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Three agents, one broker, one broadcast roll-call: everyone answers, with
/// the notes' flat fields and full interfaces.
async fn three_hosts_answer_one_broadcast(broker: BrokerUrl) {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let mut agents = Vec::new();
    for name in ["pizero1", "pizero2", "pibot01"] {
        agents.push(agent(host_config(name, &broker, port), &shutdown).await);
    }
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let report = scanner.scan(41, &broadcast(port, 3), |_| {}).await.unwrap();

    assert_eq!(report.id, 41);
    assert_eq!(report.hosts.len(), 3, "{report:#?}");
    for host in &report.hosts {
        assert_eq!(host.ipaddr.as_deref(), Some("127.0.0.1"));
        assert!(host.t_ms.is_some());
        let apps = host.apps.clone().unwrap();
        assert_eq!(apps, ["gpio", "system"]);
        let system = host
            .services
            .iter()
            .find(|s| s.function == "system")
            .unwrap();
        assert_eq!(
            system.control.as_deref(),
            Some(format!("/{}/system/control", host.hostname).as_str())
        );
        assert_eq!(
            system.outputs.as_deref(),
            Some(format!("/{}/system/+", host.hostname).as_str())
        );
        let interfaces = system.interfaces.as_ref().unwrap();
        assert!(
            interfaces
                .outputs
                .iter()
                .any(|i| i.name == "cpu_temp" && i.unit.as_deref() == Some("°C"))
        );
    }
    // Ended by --expect, not by the wait.
    assert!(report.elapsed_ms < 5000);
    // The answers were brief: each service's interfaces were read from its
    // retained `$description`, and the next roll-call needs no read.
    assert_eq!(
        (report.digests.read, report.digests.known),
        (6, 0),
        "{:?}",
        report.digests
    );
    assert!(report.digests.all_found());
    let again = scanner.scan(42, &broadcast(port, 3), |_| {}).await.unwrap();
    assert_eq!((again.digests.read, again.digests.known), (0, 6));
    assert!(
        again
            .hosts
            .iter()
            .all(|h| h.services.iter().all(|s| s.interfaces.is_some()))
    );
    shutdown.cancel();
    for a in agents {
        a.join().await.unwrap();
    }
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_answer_one_broadcast_on_the_embedded_broker() {
    three_hosts_answer_one_broadcast(embedded_broker()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_answer_one_broadcast_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::for_test("three_hosts_answer_one_broadcast_on_mosquitto")
    else {
        return;
    };
    three_hosts_answer_one_broadcast(mosquitto.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_call_over_mqtt_is_answered_and_a_repeat_is_not() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let a = agent(host_config("far", &broker, port), &shutdown).await;
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.broadcasts.clear();
    opts.via_mqtt = true;
    let report = scanner.scan(7, &opts, |_| {}).await.unwrap();
    assert_eq!(functions(&report, "far"), ["gpio", "system"]);

    // The same roll-call by broadcast and over MQTT is answered once.
    opts.broadcasts = vec![LOOPBACK_BROADCAST];
    opts.expect = None;
    opts.wait = Duration::from_millis(600);
    let report = scanner.scan(8, &opts, |_| {}).await.unwrap();
    assert_eq!(report.hosts.len(), 1);
    assert_eq!(report.duplicates, 0);
    let stats = a.stats().snapshot();
    assert_eq!(stats.answered, 2);
    assert_eq!(stats.dropped_refused, 1);
    shutdown.cancel();
    a.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagrams_are_dropped_counted_and_do_not_stop_the_agent() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let a = agent(host_config("sturdy", &broker, port), &shutdown).await;
    let sender = RollCallSocket::bind_sender(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).unwrap();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let huge = format!(
        r#"{{"cmd":"status","id":1,"replyto":"x","topic":"/t","pad":"{}"}}"#,
        "x".repeat(1300)
    );
    let bad: Vec<&[u8]> = vec![
        b"\xff\xfe not utf-8",
        b"not json",
        huge.as_bytes(),
        deep.as_bytes(),
        br#"{"cmd":"status","replyto":"x","topic":"/t"}"#,
        br#"{"cmd":"status","id":"one","replyto":"x","topic":"/t"}"#,
        br#"{"cmd":"status","id":1,"replyto":"x","topic":"/t/#"}"#,
        b"",
    ];
    for datagram in &bad {
        sender.send_to(datagram, to).await.unwrap();
    }
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.broadcasts.clear();
    opts.targets = vec![Ipv4Addr::LOCALHOST.into()];
    let report = scanner.scan(99, &opts, |_| {}).await.unwrap();
    assert_eq!(functions(&report, "sturdy"), ["gpio", "system"]);
    // The datagrams were sent before the good roll-call, on the same socket
    // pair, so the agent has read them all by the time it answered.
    assert_eq!(a.stats().snapshot().dropped_malformed, bad.len() as u64);
    shutdown.cancel();
    a.join().await.unwrap();
}

/// A client that asks and reads answers on a private topic.
struct Asker {
    session: Session,
    /// Messages that arrived while `listen` waited for its probe.
    pending: std::collections::VecDeque<rollcall_net::Message>,
}

impl Asker {
    async fn new(broker: &BrokerUrl, shutdown: &CancellationToken, tracker: &TaskTracker) -> Asker {
        let session = Session::start(
            SessionConfig::new(broker.clone(), format!("asker-{}", unique())),
            shutdown.clone(),
            tracker,
        )
        .unwrap();
        session
            .handle
            .wait_connected(Duration::from_secs(5))
            .await
            .unwrap();
        Asker {
            session,
            pending: Default::default(),
        }
    }

    /// Subscribes to `filter` and returns once the broker applies it: a
    /// broker handles one client's SUBSCRIBEs in order, so a probe on a later
    /// subscription coming back proves this one is live. Whatever arrives
    /// meanwhile is kept for `next`.
    async fn listen(&mut self, filter: &str) {
        let handle = &self.session.handle;
        handle.subscribe(filter).await.unwrap();
        let probe = format!("/probe/asker-{}", unique());
        handle.subscribe(&probe).await.unwrap();
        handle
            .publish(&probe, b"probe".to_vec(), Qos::AtLeastOnce, false)
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.session.incoming.recv())
                .await
                .expect("the probe back within 5 s")
                .expect("the session is open");
            if msg.topic == probe {
                break;
            }
            self.pending.push_back(msg);
        }
        self.session.handle.unsubscribe(&probe).await.unwrap();
    }

    /// The next message, buffered or fresh, within `timeout`.
    async fn recv_within(&mut self, timeout: Duration) -> rollcall_net::Message {
        if let Some(msg) = self.pending.pop_front() {
            return msg;
        }
        tokio::time::timeout(timeout, self.session.incoming.recv())
            .await
            .expect("a message in time")
            .expect("the session is open")
    }

    async fn send(&self, topic: &str, payload: &str) {
        self.session
            .handle
            .publish(topic, payload.as_bytes().to_vec(), Qos::AtLeastOnce, false)
            .await
            .unwrap();
    }

    /// The payload of the next message on `topic`, skipping others, within 5 s.
    async fn next_on(&mut self, topic: &str) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.recv_within(left).await;
            if msg.topic == topic {
                return msg.payload.to_vec();
            }
        }
    }

    /// The next message, as (topic, JSON).
    async fn next(&mut self) -> (String, Value) {
        let msg = self.recv_within(Duration::from_secs(5)).await;
        (msg.topic, serde_json::from_slice(&msg.payload).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_topics_answer_and_bad_queries_get_error_answers() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let a = agent(host_config("pizero2", &broker, free_udp_port()), &shutdown).await;
    let mut asker = Asker::new(&broker, &shutdown, &tracker).await;
    asker.listen("/me/#").await;
    asker.listen("/pizero2/reply").await;
    asker.listen("/pizero2/system/reply").await;
    asker.listen("/pizero2/system/error").await;

    asker.send("/pizero2/getapps", "").await;
    let (topic, v) = asker.next().await;
    assert_eq!(topic, "/pizero2/reply");
    assert_eq!(v["apps"], json!(["gpio", "system"]));
    assert_eq!(v["host"], "pizero2");

    asker
        .send(
            "/pizero2/system/get/interfaces",
            r#"{"id":5,"topic":"/me/a"}"#,
        )
        .await;
    let (topic, v) = asker.next().await;
    assert_eq!(
        (topic.as_str(), v["id"].clone(), v["ok"].clone()),
        ("/me/a", json!(5), json!(true))
    );
    assert_eq!(v["controls"], json!(["/pizero2/system/control"]));

    asker
        .send(
            "/pizero2/system/get/interface/outputs",
            r#"{"topic":"/me/b"}"#,
        )
        .await;
    let (_, v) = asker.next().await;
    assert!(
        v["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "uptime" && i["unit"] == "s")
    );

    // The notes' verb-first form answers the same.
    asker
        .send("/pizero2/get/system/mem_total", r#"{"topic":"/me/c"}"#)
        .await;
    let (_, v) = asker.next().await;
    assert!(v["value"].as_u64().unwrap() > 0);

    for (topic, payload, needle) in [
        (
            "/pizero2/system/control",
            "{not json",
            "expected a JSON object",
        ),
        (
            "/pizero2/system/control",
            r#"{"interval_s":0}"#,
            "interval_s",
        ),
        (
            "/pizero2/system/control",
            r#"{"interval":5}"#,
            "unknown key `interval`",
        ),
        ("/pizero2/system/get/nothing", "", "unknown item `nothing`"),
        ("/pizero2/system/set/uptime", "5", "not supported"),
        ("/pizero2/system/set", "5", "name the item to set"),
        (
            "/pizero2/system/get/interface/sideways",
            "",
            "unknown item `interface/sideways`",
        ),
        (
            "/pizero2/system/get/uptime",
            r#"{"topic":"/me/#"}"#,
            "wildcards",
        ),
        (
            "/pizero2/system/get/uptime",
            "\u{0}{\"a\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]}",
            "nested",
        ),
    ] {
        asker.send(topic, payload).await;
        let (at, v) = asker.next().await;
        assert_eq!(at, "/pizero2/system/error", "{topic} {payload}");
        assert_eq!(v["ok"], false);
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(needle), "{topic} {payload}: {error}");
    }
    // Good control input changes the interval, answered on the reply topic asked for.
    asker
        .send(
            "/pizero2/system/control",
            r#"{"interval_s":7,"id":3,"topic":"/me/ok"}"#,
        )
        .await;
    let (at, v) = asker.next().await;
    assert_eq!(
        (at.as_str(), v["ok"].clone(), v["interval_s"].clone()),
        ("/me/ok", json!(true), json!(7))
    );
    assert!(a.stats().snapshot().query_errors >= 7);
    shutdown.cancel();
    a.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn description_and_state_are_retained_for_late_subscribers() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let agent_shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let a = agent(
        host_config("pizero1", &broker, free_udp_port()),
        &agent_shutdown,
    )
    .await;
    let mut late = Asker::new(&broker, &shutdown, &tracker).await;
    late.listen("/pizero1/system/$description").await;
    let (_, d) = late.next().await;
    assert_eq!(d["function"], "system");
    assert_eq!(d["hostname"], "pizero1");
    assert!(d["interfaces"]["outputs"].is_array());
    late.listen("/pizero1/$state").await;
    let session = a.session_number();
    let said = |state: HostState| state.to_payload();
    assert_eq!(
        late.next_on("/pizero1/$state").await,
        said(HostState::online(session))
    );
    agent_shutdown.cancel();
    a.join().await.unwrap();
    assert_eq!(
        late.next_on("/pizero1/$state").await,
        said(HostState::offline(session))
    );
    shutdown.cancel();
}

/// An old scanner's roll-call (no `brief`) gets full answers: interfaces in
/// every service answer, no digest, and nothing to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_call_without_brief_gets_full_answers() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let a = agent(host_config("oldscan", &broker, port), &shutdown).await;
    let mut watcher = Asker::new(&broker, &shutdown, &tracker).await;
    watcher.listen("/stat/data").await;
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.descriptions = rollcall_hub::Descriptions::InAnswers;
    let report = scanner.scan(77, &opts, |_| {}).await.unwrap();
    assert_eq!(functions(&report, "oldscan"), ["gpio", "system"]);
    for s in &report.hosts[0].services {
        assert!(s.interfaces.is_some(), "{}", s.function);
    }
    assert_eq!(report.digests, rollcall_hub::DigestCounts::default());
    // On the wire: `interfaces`, no `digest`, no `brief`.
    let mut seen = 0;
    while seen < 2 {
        let (_, answer) = watcher.next().await;
        if answer["id"] != 77 || answer["function"] == "host" {
            continue;
        }
        assert!(answer["interfaces"].is_object(), "{answer}");
        assert!(answer.get("digest").is_none() && answer.get("brief").is_none());
        seen += 1;
    }
    shutdown.cancel();
    a.join().await.unwrap();
}

/// Foreign services next to an agent, answering a brief roll-call in every
/// way the protocol allows: a digest of their retained description (the
/// scanner reads it), a forged digest (the description is read and refused:
/// no interfaces, counted), full interfaces as before, and flat fields only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brief_answers_are_checked_against_the_retained_descriptions() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let a = agent(host_config("fx", &broker, port), &shutdown).await;
    let pump = br#"{"function":"pump","hostname":"fx","interfaces":{"inputs":[{"name":"on","topic":"/fx/pump/on","type":"bool"}]}}"#;
    let valve = br#"{"function":"valve","hostname":"fx","interfaces":{"inputs":[{"name":"open","topic":"/fx/valve/open","type":"bool"}]}}"#;
    let legacy = br#"{"function":"legacy","hostname":"fx","interfaces":{}}"#;
    let mut foreign = Asker::new(&broker, &shutdown, &tracker).await;
    for (function, payload) in [("pump", &pump[..]), ("valve", valve), ("legacy", legacy)] {
        foreign
            .session
            .handle
            .publish_state(&format!("/fx/{function}/$description"), payload.to_vec())
            .await
            .unwrap();
    }
    let mut asker = Asker::new(&broker, &shutdown, &tracker).await;
    asker.listen("/me/apps").await;
    loop {
        asker.send("/fx/getapps", r#"{"topic":"/me/apps"}"#).await;
        let (_, v) = asker.next().await;
        let apps = v["apps"].as_array().unwrap();
        if ["pump", "valve", "legacy"]
            .iter()
            .all(|f| apps.contains(&json!(f)))
        {
            break;
        }
    }
    foreign.listen("/udp/report").await;
    let pump_digest = rollcall_proto::digest(pump);
    let foreign_task = tokio::spawn(async move {
        let (_, report) = foreign.next().await;
        assert_eq!(report["brief"], true, "the report asks for brief answers");
        let topic = report["topic"].as_str().unwrap().to_owned();
        let answer = |fields: Value| {
            let mut a = report.clone();
            a.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            a.to_string()
        };
        let answers = [
            answer(json!({"function":"pump","inputs":"/fx/pump/on","digest":pump_digest})),
            // Forged: a digest of some other description.
            answer(
                json!({"function":"valve","inputs":"/fx/valve/open","digest":"0123456789abcdef"}),
            ),
            // An old foreign service: full interfaces, no digest.
            answer(
                json!({"function":"legacy","outputs":"/fx/legacy/out","interfaces":
                {"outputs":[{"name":"out","topic":"/fx/legacy/out","type":"int"}]}}),
            ),
            // A minimal one: flat fields only.
            answer(json!({"function":"minimal","inputs":"/fx/minimal/in"})),
        ];
        for a in answers {
            foreign.send(&topic, &a).await;
        }
    });
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.expect = None;
    opts.wait = Duration::from_millis(1500);
    let report = scanner.scan(78, &opts, |_| {}).await.unwrap();
    foreign_task.await.unwrap();
    assert_eq!(
        functions(&report, "fx"),
        ["gpio", "legacy", "minimal", "pump", "system", "valve"]
    );
    let service = |f: &str| {
        report.hosts[0]
            .services
            .iter()
            .find(|s| s.function == f)
            .unwrap()
            .clone()
    };
    let pump = service("pump").interfaces.unwrap();
    assert_eq!(pump.inputs[0].topic, "/fx/pump/on");
    let valve = service("valve");
    assert_eq!(
        valve.interfaces, None,
        "a forged digest gets no description"
    );
    assert_eq!(
        valve.inputs.as_deref(),
        Some("/fx/valve/open"),
        "the answer counts"
    );
    assert_eq!(
        service("legacy").interfaces.unwrap().outputs[0].topic,
        "/fx/legacy/out"
    );
    assert_eq!(service("minimal").interfaces, None);
    assert!(service("system").interfaces.is_some());
    // gpio, system and pump read; valve refused.
    assert_eq!(
        (
            report.digests.read,
            report.digests.mismatched,
            report.digests.unread
        ),
        (3, 1, 0),
        "{:?}",
        report.digests
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["digests"]["mismatched"], 1,
        "reported when not all found"
    );
    shutdown.cancel();
    a.join().await.unwrap();
}

/// The notes' broker on every host: the agent's services publish on its own
/// broker, and it relays their answers to the requester's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_relayed_from_the_hosts_broker_to_the_requesters() {
    let hub_broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let mut config = host_config("pizero1", &hub_broker, port);
    config.broker = None;
    config.embedded_broker = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    // Unsigned roll-calls are relayed only to a broker the agent lists.
    config.relay_brokers = Some(vec![hub_broker.to_string().into()]);
    let a = agent(config, &shutdown).await;
    let host_broker = a.broker_url().clone();
    assert_ne!(host_broker, hub_broker);

    // A foreign service on the host's broker: it describes itself (so the
    // agent lists it among the host's apps) and answers every report.
    let mut foreign = Asker::new(&host_broker, &shutdown, &tracker).await;
    foreign
        .session
        .handle
        .publish_state("/pizero1/pump/$description", r#"{"function":"pump"}"#)
        .await
        .unwrap();
    let mut asker = Asker::new(&host_broker, &shutdown, &tracker).await;
    asker.listen("/me/apps").await;
    loop {
        asker
            .send("/pizero1/getapps", r#"{"topic":"/me/apps"}"#)
            .await;
        let (_, v) = asker.next().await;
        if v["apps"].as_array().unwrap().contains(&json!("pump")) {
            break;
        }
    }
    foreign.listen("/udp/report").await;
    let foreign_task = tokio::spawn(async move {
        let (_, report) = foreign.next().await;
        let mut answer = report.clone();
        answer["function"] = "pump".into();
        answer["inputs"] = "/pizero1/pump/set".into();
        foreign
            .send(report["topic"].as_str().unwrap(), &answer.to_string())
            .await;
    });

    // The roll-call names the hub's broker; the agent's own answers go there
    // directly and the pump's is relayed.
    let mut scanner = scanner(&hub_broker, &shutdown, &tracker);
    let report = scanner
        .scan(1234, &broadcast(port, 1), |_| {})
        .await
        .unwrap();
    foreign_task.await.unwrap();
    assert_eq!(functions(&report, "pizero1"), ["gpio", "pump", "system"]);
    assert_eq!(a.stats().snapshot().relayed, 1);
    shutdown.cancel();
    a.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extaddr_comes_from_stun_and_is_left_out_when_unknown() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let stun = StunResponder::start_with_mapped(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        Some("203.0.113.7:40000".parse().unwrap()),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    let mut with_stun = host_config("outside", &broker, port);
    with_stun.stun_server = Some(stun.addr.to_string());
    let a = agent(with_stun, &shutdown).await;
    let b = agent(host_config("inside", &broker, port), &shutdown).await;
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let report = scanner.scan(5, &broadcast(port, 2), |_| {}).await.unwrap();
    let ext = |h: &str| {
        report
            .hosts
            .iter()
            .find(|x| x.hostname == h)
            .unwrap()
            .extaddr
            .clone()
    };
    assert_eq!(ext("outside").as_deref(), Some("203.0.113.7"));
    assert_eq!(ext("inside"), None);
    shutdown.cancel();
    a.join().await.unwrap();
    b.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_key_only_signed_roll_calls_are_answered() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let mut config = host_config("locked", &broker, port);
    config.cluster_key = Some("s3cret-of-16-bytes".into());
    let a = agent(config, &shutdown).await;
    let mut asker = Asker::new(&broker, &shutdown, &tracker).await;
    asker.listen("/stat/signed").await;
    let sender = RollCallSocket::bind_sender(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).unwrap();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // Answers go to our broker, which is not on the default port 1883.
    let roll_call = |id| {
        let mut rc = RollCall::new(id, "hub", "/stat/signed");
        rc.broker = Some(broker.to_string());
        rc
    };
    sender.send_to(&roll_call(1).to_bytes(), to).await.unwrap();
    let mut map = roll_call(2).to_object();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    map.insert("ts".into(), now.into());
    map.insert("nonce".into(), "n-1".into());
    rollcall_proto::sign::sign(&mut map, b"s3cret-of-16-bytes");
    sender
        .send_to(&serde_json::to_vec(&map).unwrap(), to)
        .await
        .unwrap();
    // Only answers to roll-call 2 ever arrive: the unsigned one went first.
    let (_, v) = asker.next().await;
    assert_eq!(v["id"], 2);
    assert_eq!(a.stats().snapshot().dropped_refused, 1);
    // The scanner signs when given the key.
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.cluster_key = Some(b"s3cret-of-16-bytes".to_vec());
    let report = scanner.scan(3, &opts, |_| {}).await.unwrap();
    assert_eq!(functions(&report, "locked"), ["gpio", "system"]);
    shutdown.cancel();
    a.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_service_built_from_mosquitto_clients_joins_the_roll_call() {
    let test = "a_foreign_service_built_from_mosquitto_clients_joins_the_roll_call";
    let Some(mosquitto) = Mosquitto::for_test(test) else {
        return;
    };
    let (Some(sub), Some(publ)) = (
        mosquitto_client(test, "mosquitto_sub"),
        mosquitto_client(test, "mosquitto_pub"),
    ) else {
        return;
    };
    let broker = mosquitto.url();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let a = agent(host_config("pizero3", &broker, port), &shutdown).await;
    let port_arg = broker.port.to_string();

    // The foreign service: mosquitto_sub hears the report...
    let mut listener = tokio::process::Command::new(&sub)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_arg,
            "-t",
            "/udp/report",
            "-t",
            "/probe",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(listener.stdout.take().unwrap()).lines();
    // ...once it is subscribed: it is when it prints a probe we publish.
    let asker = Asker::new(&broker, &shutdown, &tracker).await;
    loop {
        asker.send("/probe", "probe").await;
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await
        {
            assert_eq!(line.unwrap().as_deref(), Some("probe"));
            break;
        }
    }
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.expect = None;
    opts.wait = Duration::from_secs(3);
    let scan = tokio::spawn(async move { scanner.scan(77, &opts, |_| {}).await.unwrap() });

    let report_line = loop {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .expect("a report within 5 s")
            .unwrap()
            .unwrap();
        if line != "probe" {
            break line;
        }
    };
    let report: Value = serde_json::from_str(&report_line).unwrap();
    assert_eq!(report["hostname"], "pizero3");
    // ...and mosquitto_pub answers with the report plus its own description.
    let mut answer = report.clone();
    answer["function"] = "weather_station".into();
    answer["outputs"] = "/pizero3/weather/+".into();
    let status = tokio::process::Command::new(&publ)
        .args(["-h", "127.0.0.1", "-p", &port_arg, "-q", "1", "-t"])
        .arg(report["topic"].as_str().unwrap())
        .arg("-m")
        .arg(answer.to_string())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let report = scan.await.unwrap();
    let functions = functions(&report, "pizero3");
    assert!(
        functions.contains(&"weather_station".to_string()),
        "{functions:?}"
    );
    assert!(functions.contains(&"system".to_string()), "{functions:?}");
    shutdown.cancel();
    a.join().await.unwrap();
}

/// The worked example of docs/protocol.md, run as written: a service in
/// bash with mosquitto clients joins the roll-call and is listed by the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_shell_service_joins_the_roll_call() {
    let test = "the_documented_shell_service_joins_the_roll_call";
    let Some(mosquitto) = Mosquitto::for_test(test) else {
        return;
    };
    if mosquitto_client(test, "mosquitto_sub").is_none()
        || mosquitto_client(test, "python3").is_none()
    {
        return;
    }
    let broker = mosquitto.url();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let a = agent(host_config("pizero4", &broker, port), &shutdown).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/foreign_service.sh"
    );
    let mut service = tokio::process::Command::new("bash")
        .arg(script)
        .args(["pizero4", "127.0.0.1", &broker.port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The script describes itself first; the agent then lists it.
    let mut asker = Asker::new(&broker, &shutdown, &tracker).await;
    asker.listen("/me/apps").await;
    loop {
        asker
            .send("/pizero4/getapps", r#"{"topic":"/me/apps"}"#)
            .await;
        let (_, v) = asker.next().await;
        if v["apps"].as_array().unwrap().contains(&json!("board")) {
            break;
        }
    }
    // Listed, so --expect waits for its answer; it may still be subscribing
    // to /udp/report, so call the roll until it answers.
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    // The script starts a python3 for each report it hears: on a loaded
    // machine that alone took over a second. Expecting the board, the scan
    // ends as soon as it answers, so a long wait costs nothing when it is quick.
    opts.wait = Duration::from_secs(5);
    let mut id = 500;
    let report = loop {
        id += 1;
        let report = scanner.scan(id, &opts, |_| {}).await.unwrap();
        if functions(&report, "pizero4").contains(&"board".to_string()) || id > 506 {
            break report;
        }
    };
    let board = report.hosts[0]
        .services
        .iter()
        .find(|s| s.function == "board")
        .unwrap();
    assert_eq!(board.inputs.as_deref(), Some("/pizero4/board/set/message"));
    assert!(board.interfaces.is_some());
    // SIGTERM, so the script clears its description and stops its children.
    let pid = service.id().unwrap().to_string();
    let stopped = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(stopped.await.unwrap().success());
    tokio::time::timeout(Duration::from_secs(5), service.wait())
        .await
        .expect("the script ends on SIGTERM")
        .unwrap();
    shutdown.cancel();
    a.join().await.unwrap();
}
