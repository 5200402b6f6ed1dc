//! The core's decisions, asserted without a broker or a socket: each test
//! feeds inputs with the time it chooses and reads the effects. Every rule
//! of docs/protocol.md sections 1, 3, 5, 6 and 8 is asserted here at least
//! once (the section is named in each test's comment); the broker-level
//! tests in `tests/` remain the end-to-end proof.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_proto::RollCall;
use serde_json::{Value, json};

use super::*;
use crate::{AgentStats, RawConfig, registry};

/// This host's LAN address in the tests (198.18.0.0/15: never a real one).
const LAN: &str = "198.18.0.5";
/// Another host on the LAN: the requester.
const HUB: &str = "198.18.0.9";
const T0_MS: u64 = 1_800_000_000_000;
/// The test agent's session number (its `$state`'s).
const SESSION: u64 = 1_799_999_999_000;

struct TestRoutes;

impl Routes for TestRoutes {
    fn local_addr_towards(&self, ip: IpAddr) -> Option<IpAddr> {
        Some(if ip.is_loopback() {
            ip
        } else {
            LAN.parse().unwrap()
        })
    }
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || ip.is_unspecified() || ip == LAN.parse::<IpAddr>().unwrap()
    }
}

/// A core for host `h1` on simulated hardware, its broker on 127.0.0.1:1883.
struct Bed {
    core: AgentCore,
    stats: Arc<AgentStats>,
    t0: Instant,
    /// Milliseconds since `t0` of the last input.
    ms: u64,
}

fn bed(toml: &str) -> Bed {
    let text = format!("hostname = \"h1\"\nsim = true\n{toml}");
    let config = RawConfig::from_toml(&text).unwrap().validate().unwrap();
    let env = registry::BuildEnv {
        sim: true,
        hostname: "h1",
        sysfs_root: std::path::Path::new("/nonexistent"),
    };
    let mut services: Vec<registry::Built> = config
        .services
        .iter()
        .map(|s| s.settings.build(&env).unwrap())
        .collect();
    services.extend(
        config.announce.iter().map(|a| {
            registry::Built::plain(rollcall_services::announce::Announced::new(a.clone()))
        }),
    );
    let stats = Arc::new(AgentStats::default());
    let own: SocketAddr = "127.0.0.1:1883".parse().unwrap();
    let core = AgentCore::new(
        Arc::new(config),
        services,
        vec![own],
        Box::new(TestRoutes),
        stats.clone(),
        SESSION,
        7,
    );
    let mut bed = Bed {
        core,
        stats,
        t0: Instant::now(),
        ms: 0,
    };
    bed.input(Input::Start {
        saved: BTreeMap::new(),
    });
    bed
}

/// The system service alone (no GPIO), with the usual 30 s interval.
fn plain_bed() -> Bed {
    bed("[services.gpio]\nenabled = false\n")
}

/// The brokers the relay tests may relay to (unsigned roll-calls are
/// relayed only to a broker in `relay_brokers`).
const RELAY_BROKERS: &str = r#"relay_brokers = ["mqtt://198.18.0.9:1883", "mqtt://198.18.0.9:1884", "mqtt://hub.invalid:1883"]
"#;

/// [`plain_bed`] that may relay to the hub's brokers.
fn relay_bed() -> Bed {
    bed(&format!(
        "{RELAY_BROKERS}[services.gpio]\nenabled = false\n"
    ))
}

impl Bed {
    fn now(&self) -> Now {
        Now {
            at: self.t0 + Duration::from_millis(self.ms),
            unix_ms: T0_MS + self.ms,
        }
    }

    fn input(&mut self, input: Input<'_>) -> Vec<Effect> {
        let now = self.now();
        self.core.handle(input, now)
    }

    /// Advances the clock to `ms` after the start and fires the timer.
    fn at(&mut self, ms: u64) -> Vec<Effect> {
        self.ms = ms;
        self.input(Input::Timer)
    }

    fn datagram(&mut self, rc: &RollCall, from: &str) -> Vec<Effect> {
        let bytes = rc.to_bytes();
        let from = SocketAddr::new(from.parse().unwrap(), 40000);
        self.input(Input::Datagram {
            bytes: &bytes,
            from,
        })
    }

    fn message(&mut self, topic: &str, payload: &[u8]) -> Vec<Effect> {
        self.input(Input::Message {
            session: SessionId::Local,
            topic,
            payload,
        })
    }
}

/// A roll-call for answers on `/stat/data`, with no window.
fn rollcall(id: u64) -> RollCall {
    let mut rc = RollCall::new(id, "hub", "/stat/data");
    rc.window_ms = Some(0);
    rc
}

/// The publishes among `effects`: (session, topic, JSON or text payload).
fn publishes(effects: &[Effect]) -> Vec<(SessionId, String, Value)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish {
                session,
                topic,
                payload,
                ..
            } => Some((*session, topic.clone(), parse(payload))),
            _ => None,
        })
        .collect()
}

fn parse(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
}

/// The payloads published on `topic`.
fn on(effects: &[Effect], topic: &str) -> Vec<Value> {
    publishes(effects)
        .into_iter()
        .filter(|(_, t, _)| t == topic)
        .map(|(_, _, v)| v)
        .collect()
}

/// The functions of the answers published on `/stat/data`.
fn answered(effects: &[Effect]) -> Vec<String> {
    on(effects, "/stat/data")
        .iter()
        .map(|a| a["function"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn states(effects: &[Effect]) -> Vec<(String, Vec<u8>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::PublishState { topic, payload } => Some((topic.clone(), payload.clone())),
            _ => None,
        })
        .collect()
}

// Start (section 4): subscriptions, `online`, every description retained,
// and the descriptions of built-ins that do not run cleared.
#[test]
fn start_subscribes_then_says_online_and_publishes_descriptions() {
    let mut b = bed("[services.gpio]\nenabled = false\n");
    let effects = b.input(Input::Start {
        saved: BTreeMap::new(),
    });
    let subs: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Subscribe { filter, .. } => Some(filter.as_str()),
            _ => None,
        })
        .collect();
    assert!(subs.contains(&"/udp/request"));
    assert!(subs.contains(&"/h1/getapps"));
    assert!(subs.contains(&"/h1/+/$description"));
    assert!(subs.contains(&"/h1/system/get/#"));
    assert!(
        subs.contains(&"/h1/$state"),
        "its own state, for a stale will"
    );
    let states = states(&effects);
    let online = format!("online {SESSION}").into_bytes();
    assert!(states.contains(&("/h1/$state".into(), online)));
    assert!(states.contains(&("/h1/gpio/$description".into(), Vec::new())));
    let system = states
        .iter()
        .find(|(t, _)| t == "/h1/system/$description")
        .unwrap();
    let desc = parse(&system.1);
    assert_eq!(desc["hostname"], "h1");
    assert_eq!(desc["function"], "system");
    // `online` before the descriptions, so a hub sees the host first.
    let online = states.iter().position(|(t, _)| t == "/h1/$state").unwrap();
    let first_desc = states
        .iter()
        .position(|(t, p)| t.ends_with("$description") && !p.is_empty())
        .unwrap();
    assert!(online < first_desc);
}

// Section 4: the last will is `offline` with the same session number as the
// `online` the run publishes, retained on the host's `$state`.
#[test]
fn the_last_will_carries_the_session_of_the_online() {
    let b = plain_bed();
    assert_eq!(b.core.session(), SESSION);
    let will = b.core.last_will();
    assert_eq!(will.topic, "/h1/$state");
    assert_eq!(will.payload, format!("offline {SESSION}").into_bytes());
    assert!(will.retain);
}

// Section 4: an earlier run's last will, delivered after this run said
// `online`, replaced the retained state: the agent says `online` again, and
// so for any `offline` while it runs. An `online` and what is not a state
// change nothing, and once it stops its own `offline` stands.
#[test]
fn a_stale_will_on_its_own_state_is_answered_with_online() {
    let mut b = plain_bed();
    let online = || {
        vec![(
            "/h1/$state".to_owned(),
            format!("online {SESSION}").into_bytes(),
        )]
    };
    let stale = format!("offline {}", SESSION - 1);
    assert_eq!(states(&b.message("/h1/$state", stale.as_bytes())), online());
    // An agent from before session numbers left a plain will.
    assert_eq!(states(&b.message("/h1/$state", b"offline")), online());
    // This run's own will, from a connection that died and came back.
    let own = format!("offline {SESSION}");
    assert_eq!(states(&b.message("/h1/$state", own.as_bytes())), online());
    for quiet in [
        format!("online {SESSION}"),
        format!("online {}", SESSION - 1),
        "online".to_owned(),
        "maybe".to_owned(),
        String::new(),
    ] {
        assert!(
            states(&b.message("/h1/$state", quiet.as_bytes())).is_empty(),
            "{quiet:?}"
        );
    }
    // Another host's state is none of its business.
    assert!(states(&b.message("/h2/$state", stale.as_bytes())).is_empty());
    // Once stopping, its `offline` stands.
    b.input(Input::Shutdown);
    assert!(states(&b.message("/h1/$state", own.as_bytes())).is_empty());
    assert!(states(&b.message("/h1/$state", stale.as_bytes())).is_empty());
}

// Sections 1 to 3: a roll-call by UDP from this host's loopback is
// answered on our broker: the report on /udp/report at once, the host
// answer and one answer per service on the roll-call's topic, each with
// the roll-call's id and every echoed field.
#[test]
fn a_rollcall_gets_a_report_and_an_answer_per_service_with_echoed_fields() {
    let mut b = plain_bed();
    let mut rc = rollcall(41);
    rc.extra.insert("site".into(), json!("barn"));
    let effects = b.datagram(&rc, "127.0.0.1");
    let report = &on(&effects, "/udp/report")[0];
    assert_eq!(report["hostname"], "h1");
    assert_eq!(report["ipaddr"], "127.0.0.1");
    assert_eq!(report["site"], "barn");
    assert_eq!(report["id"], 41);
    let answers = on(&effects, "/stat/data");
    assert_eq!(answered(&effects), ["host", "system"]);
    for a in &answers {
        assert_eq!(a["id"], 41);
        assert_eq!(a["site"], "barn");
        assert_eq!(a["hostname"], "h1");
    }
    assert_eq!(answers[0]["apps"], json!(["system"]));
    assert_eq!(answers[0]["version"], crate::VERSION);
    assert!(
        answers[1]["outputs"]
            .as_str()
            .unwrap()
            .starts_with("/h1/system/")
    );
    assert!(
        publishes(&effects)
            .iter()
            .all(|(s, _, _)| *s == SessionId::Local)
    );
    assert_eq!(b.stats.snapshot().answered, 1);
}

// Section 3: a roll-call without `brief` (an old scanner's) gets full
// answers, as before; none carries the roll-call's parameters for
// answerers, which the report still does.
#[test]
fn a_rollcall_without_brief_gets_full_answers() {
    let mut b = plain_bed();
    let mut rc = rollcall(42);
    rc.broker = Some("mqtt://127.0.0.1:1883".into());
    let effects = b.datagram(&rc, "127.0.0.1");
    let report = &on(&effects, "/udp/report")[0];
    assert_eq!(report["window_ms"], 0);
    assert_eq!(report["v"], 1);
    assert!(report.get("brief").is_none());
    let answers = on(&effects, "/stat/data");
    let system = &answers[1];
    assert!(system["interfaces"]["outputs"].is_array());
    assert!(system.get("digest").is_none());
    for a in &answers {
        for field in rollcall_proto::NOT_IN_ANSWERS {
            assert!(a.get(field).is_none(), "{field} in {a}");
        }
        for field in ["cmd", "id", "replyto", "topic", "hostname", "ipaddr"] {
            assert!(a.get(field).is_some(), "{field} missing from {a}");
        }
    }
}

// Section 3: a `brief` roll-call gets the flat fields, health and the
// digest of the exact bytes retained on `$description`, not `interfaces`;
// the report asks the host's other services for the same.
#[test]
fn a_brief_rollcall_gets_digests_of_the_retained_descriptions() {
    let mut b = bed(
        "[services.gpio]\nenabled = false\n[[announce]]\nfunction = \"pump\"\ninputs = [\"/h1/pump/on\"]\n",
    );
    // The retained payloads, as a second start publishes them again.
    let mut retained = BTreeMap::new();
    let start = b.input(Input::Start {
        saved: BTreeMap::new(),
    });
    for (topic, payload) in states(&start) {
        retained.insert(topic, payload);
    }
    let mut rc = rollcall(43);
    rc.brief = Some(true);
    let effects = b.datagram(&rc, "127.0.0.1");
    assert!(
        states(&effects).is_empty(),
        "nothing changed: nothing re-published"
    );
    assert_eq!(on(&effects, "/udp/report")[0]["brief"], true);
    let answers = on(&effects, "/stat/data");
    assert_eq!(answered(&effects), ["host", "system", "pump"]);
    for a in &answers[1..] {
        let function = a["function"].as_str().unwrap();
        let payload = &retained[&format!("/h1/{function}/$description")];
        assert_eq!(a["digest"], rollcall_proto::digest(payload).as_str());
        assert!(a.get("interfaces").is_none());
        assert!(a.get("brief").is_none());
    }
    assert_eq!(answers[2]["inputs"], "/h1/pump/on");
    assert_eq!(answers[1]["health"]["status"], "ok");
    assert!(
        answers[1]["outputs"]
            .as_str()
            .unwrap()
            .starts_with("/h1/system/")
    );
    assert!(answers[0].get("digest").is_none());
}

// Section 3: a description that changed without being published again is
// published before a brief answer carries its digest.
#[test]
fn a_brief_answer_never_names_a_description_that_is_not_retained() {
    let mut b = plain_bed();
    b.core.slots[0].digest = Some("0000000000000000".into());
    let mut rc = rollcall(44);
    rc.brief = Some(true);
    let effects = b.datagram(&rc, "127.0.0.1");
    let states = states(&effects);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].0, "/h1/system/$description");
    let state_at = effects
        .iter()
        .position(|e| matches!(e, Effect::PublishState { .. }))
        .unwrap();
    let answer_at = effects
        .iter()
        .position(|e| matches!(e, Effect::Publish { topic, .. } if topic == "/stat/data"))
        .unwrap();
    assert!(state_at < answer_at, "retained before it is named");
    let system = &on(&effects, "/stat/data")[1];
    assert_eq!(
        system["digest"],
        rollcall_proto::digest(&states[0].1).as_str()
    );
}

// Section 3: answers relayed to another broker are full, and the report
// does not ask the foreign services for brief ones: the requester's broker
// does not have this host's `$description`s.
#[test]
fn a_brief_rollcall_relayed_to_another_broker_gets_full_answers() {
    let mut b = relay_bed();
    let mut rc = rollcall(45);
    rc.brief = Some(true);
    rc.broker = Some("mqtt://198.18.0.9:1883".into());
    let effects = b.datagram(&rc, HUB);
    assert!(on(&effects, "/udp/report")[0].get("brief").is_none());
    let system = &on(&effects, "/stat/data")[1];
    assert!(system["interfaces"].is_object());
    assert!(system.get("digest").is_none());
}

// Section 1: each answerer waits a random 0..window_ms; the report goes
// out at once.
#[test]
fn answers_wait_a_random_share_of_the_window() {
    let mut b = plain_bed();
    let mut rc = rollcall(1);
    rc.window_ms = Some(500);
    let mut sent_at = Vec::new();
    for id in 1..=20 {
        rc.id = id;
        b.ms = id * 1000;
        let effects = b.datagram(&rc, "127.0.0.1");
        assert_eq!(on(&effects, "/udp/report").len(), 1);
        // Step through the window a millisecond at a time: nothing before
        // the answers' time, everything at it, within the window.
        let mut wait = 0;
        let mut effects = effects;
        while answered(&effects).is_empty() {
            wait += 1;
            assert!(wait <= 500, "no answers within the window");
            effects = b.at(id * 1000 + wait);
        }
        assert_eq!(answered(&effects), ["host", "system"]);
        sent_at.push(wait);
    }
    sent_at.sort_unstable();
    sent_at.dedup();
    assert!(sent_at.len() > 5, "jitter is not random: {sent_at:?}");
}

// Section 1: what is dropped without an answer, and counted.
#[test]
fn malformed_and_unknown_rollcalls_are_dropped_and_counted() {
    let mut b = plain_bed();
    let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let big = format!(
        r#"{{"cmd":"status","id":1,"replyto":"a","topic":"/t","pad":"{}"}}"#,
        "x".repeat(1300)
    );
    let bad: [&[u8]; 5] = [
        b"\xff\xfe",
        b"not json",
        br#"{"cmd":"reboot","id":1,"replyto":"a","topic":"/t"}"#,
        br#"{"cmd":"status","replyto":"a","topic":"/t"}"#,
        big.as_bytes(),
    ];
    for bytes in bad {
        let effects = b.input(Input::Datagram { bytes, from });
        assert!(
            publishes(&effects).is_empty(),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(b.stats.snapshot().dropped_malformed, 5);
}

// Section 1: answers may not be asked for on the agents' own topics.
#[test]
fn answers_on_the_agents_own_topics_are_refused() {
    let mut b = bed("");
    for (id, topic) in [
        "/udp/report",
        "/udp/request",
        "/h1/getapps",
        "/h1/gpio/set/lamp",
        "/h1/system/get",
        "/h1/gpio/$description",
        "/h1/sim/gpio/4",
    ]
    .into_iter()
    .enumerate()
    {
        let mut rc = rollcall(id as u64);
        rc.topic = topic.into();
        let effects = b.datagram(&rc, "127.0.0.1");
        assert!(publishes(&effects).is_empty(), "{topic}");
    }
    assert_eq!(b.stats.snapshot().dropped_malformed, 7);
}

// Section 1: one answer per (replyto, id), whether heard by broadcast or
// on /udp/request.
#[test]
fn the_same_rollcall_by_udp_and_over_mqtt_is_answered_once() {
    let mut b = plain_bed();
    let rc = rollcall(5);
    assert_eq!(answered(&b.datagram(&rc, "127.0.0.1")).len(), 2);
    let effects = b.message("/udp/request", &rc.to_bytes());
    assert!(publishes(&effects).is_empty());
    assert_eq!(b.stats.snapshot().dropped_refused, 1);
}

// Sections 1 and 8: at most max_rollcalls_per_s a second from each
// sender; another sender still gets its answers.
#[test]
fn the_rate_limit_counts_each_sender_on_its_own() {
    // The flooding host's broker is one we may relay to, so only the rate
    // limit refuses its roll-calls.
    let mut b = bed(
        "relay_brokers = [\"mqtt://198.18.0.66:1883\"]\nmax_rollcalls_per_s = 3\n\
         [services.gpio]\nenabled = false\n",
    );
    for id in 0..5 {
        b.datagram(&rollcall(id), "198.18.0.66");
    }
    assert_eq!(b.stats.snapshot().dropped_refused, 2);
    // Answers for the flooding host go to its broker (rule 1); the hub's
    // roll-call over MQTT is still answered on ours.
    let effects = b.message("/udp/request", &rollcall(100).to_bytes());
    assert_eq!(answered(&effects), ["host", "system"]);
    b.ms = 1000;
    let effects = b.datagram(&rollcall(6), "198.18.0.66");
    assert_eq!(
        on(&effects, "/udp/report").len(),
        1,
        "a new second, a new allowance"
    );
}

// Section 3: the host answer lists every service, foreign ones that keep
// a $description too, sorted; an empty description removes one.
#[test]
fn the_host_answer_lists_foreign_services_from_their_descriptions() {
    let mut b = plain_bed();
    b.message("/h1/pump/$description", br#"{"function":"pump"}"#);
    b.message("/h1/alarm/$description", br#"{"function":"alarm"}"#);
    let effects = b.datagram(&rollcall(1), "127.0.0.1");
    assert_eq!(
        on(&effects, "/stat/data")[0]["apps"],
        json!(["alarm", "pump", "system"])
    );
    b.message("/h1/pump/$description", b"");
    let effects = b.datagram(&rollcall(2), "127.0.0.1");
    assert_eq!(
        on(&effects, "/stat/data")[0]["apps"],
        json!(["alarm", "system"])
    );
}

// Section 5, rule 1: by UDP without `broker`, the requester's broker is
// port 1883 at the sender: a session is opened there and our answers go
// through it; the report stays on our broker.
#[test]
fn without_a_broker_field_answers_go_to_port_1883_at_the_sender() {
    let mut b = relay_bed();
    let effects = b.datagram(&rollcall(3), HUB);
    let opened: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Open { session, broker } => Some((*session, broker.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        opened,
        [(SessionId::Remote(1), format!("mqtt://{HUB}:1883"))]
    );
    let all = publishes(&effects);
    assert!(all.contains(&(
        SessionId::Local,
        "/udp/report".into(),
        on(&effects, "/udp/report")[0].clone()
    )));
    let answers: Vec<_> = all.iter().filter(|(_, t, _)| t == "/stat/data").collect();
    assert_eq!(answers.len(), 2);
    assert!(answers.iter().all(|(s, _, _)| *s == SessionId::Remote(1)));
    assert_eq!(on(&effects, "/udp/report")[0]["ipaddr"], LAN);
}

// Section 5, rule 1: over MQTT without `broker`, the requester is on our
// broker.
#[test]
fn over_mqtt_without_a_broker_field_answers_stay_on_our_broker() {
    let mut b = plain_bed();
    let effects = b.message("/udp/request", &rollcall(4).to_bytes());
    assert!(!effects.iter().any(|e| matches!(e, Effect::Open { .. })));
    assert!(
        publishes(&effects)
            .iter()
            .all(|(s, _, _)| *s == SessionId::Local)
    );
    assert_eq!(answered(&effects).len(), 2);
}

// Section 5, rule 2: a loopback `broker` from another host names that
// host's loopback: ignored, and rule 1's fallback applies.
#[test]
fn a_loopback_broker_from_another_host_is_ignored() {
    let mut b = relay_bed();
    let mut rc = rollcall(5);
    rc.broker = Some("mqtt://127.0.0.1:2000".into());
    let effects = b.datagram(&rc, HUB);
    assert!(effects.contains(&Effect::Open {
        session: SessionId::Remote(1),
        broker: rollcall_net::BrokerUrl::new(HUB, 1883),
    }));
    // Over MQTT it is ignored too, and the requester is on our broker.
    rc.id = 6;
    let effects = b.message("/udp/request", &rc.to_bytes());
    assert!(!effects.iter().any(|e| matches!(e, Effect::Open { .. })));
}

// Section 5, rule 3: our own broker named by this host's LAN address is
// recognised: nothing is relayed to itself.
#[test]
fn our_own_broker_by_any_of_our_addresses_is_not_relayed_to() {
    let mut b = plain_bed();
    let mut rc = rollcall(6);
    rc.broker = Some(format!("mqtt://{LAN}:1883"));
    let effects = b.datagram(&rc, HUB);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Open { .. })));
    assert_eq!(answered(&effects).len(), 2);
    assert!(
        publishes(&effects)
            .iter()
            .all(|(s, _, _)| *s == SessionId::Local)
    );
}

// Section 5, rule 4: the relay. Foreign services' answers to this
// roll-call on our broker are forwarded, each (host, function) once; our
// own are not (they went directly), nor answers to another roll-call; it
// ends after window_ms + relay_grace_ms, unsubscribing and closing the
// session.
#[test]
fn a_relay_forwards_foreign_answers_once_and_ends_after_the_grace() {
    let mut b = bed(&format!(
        "{RELAY_BROKERS}relay_grace_ms = 2000\n[services.gpio]\nenabled = false\n"
    ));
    let mut rc = rollcall(7);
    rc.window_ms = Some(100);
    rc.broker = Some("mqtt://198.18.0.9:1884".into());
    let effects = b.datagram(&rc, HUB);
    assert!(effects.contains(&Effect::Subscribe {
        session: SessionId::Local,
        filter: "/stat/data".into()
    }));
    let remote = SessionId::Remote(1);
    let pump = br#"{"id":7,"hostname":"h1","function":"pump","inputs":"/p"}"#;
    b.ms = 50;
    let forwarded = publishes(&b.message("/stat/data", pump));
    assert_eq!(forwarded, [(remote, "/stat/data".into(), parse(pump))]);
    assert!(publishes(&b.message("/stat/data", pump)).is_empty(), "once");
    let own = br#"{"id":7,"hostname":"h1","function":"system"}"#;
    assert!(
        publishes(&b.message("/stat/data", own)).is_empty(),
        "our own"
    );
    let other = br#"{"id":8,"hostname":"h1","function":"pump"}"#;
    assert!(
        publishes(&b.message("/stat/data", other)).is_empty(),
        "another id"
    );
    assert_eq!(b.stats.snapshot().relayed, 1);
    // Answers were all sent by the end of the window; the relay ends at
    // window + grace.
    let mut ended = b.at(2099);
    ended.retain(|e| !matches!(e, Effect::Publish { .. } | Effect::WakeAt(_)));
    assert!(ended.is_empty(), "{ended:?}");
    let ended = b.at(2100);
    assert!(ended.contains(&Effect::Unsubscribe {
        session: SessionId::Local,
        filter: "/stat/data".into()
    }));
    assert!(ended.contains(&Effect::Close { session: remote }));
    b.ms = 2200;
    assert!(
        publishes(&b.message("/stat/data", br#"{"id":7,"hostname":"h2","function":"x"}"#))
            .is_empty()
    );
}

// Section 5: one session per requester's broker, reused by later
// roll-calls while it is open.
#[test]
fn a_second_rollcall_to_the_same_broker_reuses_its_session() {
    let mut b = relay_bed();
    b.datagram(&rollcall(1), HUB);
    let effects = b.datagram(&rollcall(2), HUB);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Open { .. })));
    assert!(
        publishes(&effects)
            .iter()
            .any(|(s, t, _)| *s == SessionId::Remote(1) && t == "/stat/data")
    );
}

// Section 5: a broker named by host name is looked up off the loop; the
// answers wait for the address; a name that does not resolve drops the
// roll-call; a lost session ends its relays.
#[test]
fn a_named_broker_is_resolved_first_and_a_lost_session_ends_its_relays() {
    let mut b = relay_bed();
    let mut rc = rollcall(9);
    rc.broker = Some("mqtt://hub.invalid:1883".into());
    let effects = b.datagram(&rc, HUB);
    assert!(effects.contains(&Effect::Resolve {
        lookup: 1,
        host: "hub.invalid".into(),
        port: 1883
    }));
    assert!(answered(&effects).is_empty());
    let addr = Some("198.18.0.20:1883".parse().unwrap());
    let effects = b.input(Input::Resolved { lookup: 1, addr });
    assert!(effects.iter().any(|e| matches!(e, Effect::Open { .. })));
    assert_eq!(answered(&effects).len(), 2);
    let effects = b.input(Input::SessionLost(SessionId::Remote(1)));
    assert!(effects.contains(&Effect::Unsubscribe {
        session: SessionId::Local,
        filter: "/stat/data".into()
    }));
    rc.id = 10;
    b.datagram(&rc, HUB);
    let effects = b.input(Input::Resolved {
        lookup: 2,
        addr: None,
    });
    assert!(publishes(&effects).is_empty());
}

// Section 6: getapps, get with and without a reply topic, and where each
// answer goes.
#[test]
fn queries_answer_on_their_topic_or_the_default_reply_topic() {
    let mut b = plain_bed();
    let effects = b.message("/h1/getapps", b"");
    assert_eq!(
        on(&effects, "/h1/reply"),
        [json!({"ok": true, "host": "h1", "apps": ["system"]})]
    );
    let effects = b.message(
        "/h1/system/get/uptime",
        br#"{"id":7,"topic":"/me/answers"}"#,
    );
    let answer = &on(&effects, "/me/answers")[0];
    assert_eq!(
        (answer["ok"].clone(), answer["id"].clone()),
        (json!(true), json!(7))
    );
    assert_eq!(answer["item"], "uptime");
    assert!(answer["value"].is_number());
    let effects = b.message("/h1/get/system/load", b"");
    assert_eq!(on(&effects, "/h1/system/reply")[0]["function"], "system");
    let effects = b.message("/h1/system/get/interface/outputs", b"");
    assert!(on(&effects, "/h1/system/reply")[0]["outputs"].is_array());
}

// Section 6: errors always answer, on the request's topic or the error
// topic; an unreadable request without its id; bad input changes nothing.
#[test]
fn errors_answer_on_the_error_topic_and_change_nothing() {
    let mut b = bed("");
    let effects = b.message("/h1/system/control", br#"{"interval_s":0,"id":3}"#);
    let error = &on(&effects, "/h1/system/error")[0];
    assert_eq!(
        (error["ok"].clone(), error["id"].clone()),
        (json!(false), json!(3))
    );
    assert!(error["error"].as_str().unwrap().contains("interval_s"));
    let effects = b.message("/h1/gpio/control", br#"{"id":"x"}"#);
    let error = &on(&effects, "/h1/gpio/error")[0];
    assert_eq!(error["ok"], false);
    assert!(error.get("id").is_none());
    let effects = b.message("/h1/gpio/set/nothing", br#"{"value":1,"topic":"/me/x"}"#);
    assert_eq!(on(&effects, "/me/x")[0]["ok"], false);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Save { .. })));
    assert_eq!(b.stats.snapshot().query_errors, 3);
    // A set needs an item.
    let effects = b.message("/h1/gpio/set", b"1");
    assert!(
        on(&effects, "/h1/gpio/error")[0]["error"]
            .as_str()
            .unwrap()
            .contains("name the item")
    );
}

// Section 6: set and control answer success only when asked to; a
// control re-publishes the description, and what changed is saved once,
// SAVE_DELAY later, for a burst of commands.
#[test]
fn commands_answer_only_when_asked_and_saves_are_coalesced() {
    let mut b = bed("");
    let control = br#"{"outputs":[{"name":"lamp","pin":4}]}"#;
    let effects = b.message("/h1/gpio/control", control);
    assert!(on(&effects, "/h1/gpio/reply").is_empty() && on(&effects, "/h1/gpio/error").is_empty());
    assert!(states(&effects).iter().any(|(t, p)| {
        t == "/h1/gpio/$description"
            && parse(p)["interfaces"]["inputs"]
                .to_string()
                .contains("lamp")
    }));
    b.ms = 10;
    let effects = b.message("/h1/gpio/set/lamp", b"1");
    assert_eq!(on(&effects, "/h1/gpio/output/lamp")[0]["value"], 1);
    b.ms = 20;
    let effects = b.message("/h1/gpio/set/lamp", br#"{"value":0,"topic":"/me/ok"}"#);
    assert_eq!(on(&effects, "/me/ok")[0]["ok"], true);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Save { .. })));
    let saves: Vec<Effect> = b
        .at(49)
        .into_iter()
        .filter(|e| matches!(e, Effect::Save { .. }))
        .collect();
    assert!(
        saves.is_empty(),
        "not before SAVE_DELAY after the first change"
    );
    let saves: Vec<Effect> = b
        .at(50)
        .into_iter()
        .filter(|e| matches!(e, Effect::Save { .. }))
        .collect();
    assert_eq!(saves.len(), 1);
    let Effect::Save { service, state } = &saves[0] else {
        unreachable!()
    };
    assert_eq!(service, "gpio");
    assert_eq!(state["levels"]["lamp"], json!(false));
    // A failed save is tried again SAVE_RETRY later.
    b.input(Input::SaveFailed {
        service: "gpio".into(),
    });
    assert!(!b.at(4000).iter().any(|e| matches!(e, Effect::Save { .. })));
    assert!(b.at(5050).iter().any(|e| matches!(e, Effect::Save { .. })));
}

// Restore (section 7): the saved state wins, the configuration file's is
// used when it is refused.
#[test]
fn a_refused_saved_state_falls_back_to_the_configured_one() {
    let mut b = bed("[services.gpio.config]\noutputs = [{ name = \"pump\", pin = 25 }]\n");
    let saved = BTreeMap::from([(
        "gpio".to_owned(),
        json!({"config": {"outputs": [{"name": "x", "pin": 99}]}}),
    )]);
    let effects = b.input(Input::Start { saved });
    let gpio = states(&effects)
        .into_iter()
        .find(|(t, _)| t == "/h1/gpio/$description")
        .unwrap();
    assert!(String::from_utf8_lossy(&gpio.1).contains("pump"));
}

// Health (section 4): a failed read is published on the error topic and
// then the description with its alert, once; a good read clears it.
#[test]
fn a_health_change_republishes_the_description_after_the_readings() {
    let mut b = bed(
        "[services.gpio]\nenabled = false\n[services.sonar]\nenabled = true\nconfig = { interval_ms = 1000, retry_ms = 100 }\n",
    );
    b.message("/h1/sim/sonar/fail", b"1");
    let effects = b.at(1000);
    let order: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { topic, .. } | Effect::PublishState { topic, .. } => {
                Some(topic.as_str())
            }
            _ => None,
        })
        .filter(|t| t.starts_with("/h1/sonar/"))
        .collect();
    assert_eq!(order, ["/h1/sonar/error", "/h1/sonar/$description"]);
    let alert = states(&effects)
        .into_iter()
        .find(|(t, _)| t == "/h1/sonar/$description")
        .unwrap();
    assert_eq!(parse(&alert.1)["health"]["status"], "alert");
    let effects = b.at(1100);
    let ok = states(&effects)
        .into_iter()
        .find(|(t, _)| t == "/h1/sonar/$description")
        .unwrap();
    assert_eq!(parse(&ok.1)["health"]["status"], "ok");
    // Nothing changed: no description.
    assert!(states(&b.at(2100)).is_empty());
}

// Sections 3 and 8: `brief`, `true` or `false`, is covered by the
// signature like any field, and a signed roll-call gets what it asked for.
#[test]
fn a_signed_rollcall_with_brief_true_or_false_verifies() {
    let key = "a cluster key of some length";
    let mut b = bed(&format!(
        "cluster_key = \"{key}\"\n[services.gpio]\nenabled = false\n"
    ));
    for (id, brief) in [(30, Some(false)), (31, Some(true)), (32, None)] {
        let mut rc = rollcall(id);
        rc.brief = brief;
        let mut map = rc.to_object();
        map.insert("ts".into(), T0_MS.into());
        map.insert("nonce".into(), format!("n{id}").into());
        rollcall_proto::sign::sign(&mut map, key.as_bytes());
        let bytes = serde_json::to_vec(&map).unwrap();
        let effects = b.input(Input::Datagram {
            bytes: &bytes,
            from: "127.0.0.1:40000".parse().unwrap(),
        });
        let answers = on(&effects, "/stat/data");
        assert_eq!(answers.len(), 2, "{brief:?} answered");
        assert_eq!(
            answers[1].get("digest").is_some(),
            brief == Some(true),
            "{brief:?}: {}",
            answers[1]
        );
    }
}

// Section 8: with a cluster key, only signed, fresh, unreplayed
// roll-calls are answered, and unsigned ones use up no allowance.
#[test]
fn with_a_key_only_fresh_signed_rollcalls_are_answered_once() {
    let key = "a cluster key of some length";
    let mut b = bed(&format!(
        "cluster_key = \"{key}\"\nmax_rollcalls_per_s = 2\n[services.gpio]\nenabled = false\n"
    ));
    let signed = |id: u64, ts: u64, nonce: &str| {
        let mut rc = rollcall(id);
        rc.extra.insert("ts".into(), ts.into());
        rc.extra.insert("nonce".into(), nonce.into());
        let mut map = rc.to_object();
        rollcall_proto::sign::sign(&mut map, key.as_bytes());
        RollCall::from_object(map).unwrap()
    };
    for id in 0..10 {
        assert!(
            publishes(&b.datagram(&rollcall(id), "127.0.0.1")).is_empty(),
            "unsigned"
        );
    }
    let effects = b.datagram(&signed(20, T0_MS, "n1"), "127.0.0.1");
    assert_eq!(
        answered(&effects).len(),
        2,
        "the unsigned flood used up no allowance"
    );
    assert!(
        publishes(&b.datagram(&signed(21, T0_MS, "n1"), "127.0.0.1")).is_empty(),
        "replayed nonce"
    );
    assert!(
        publishes(&b.datagram(&signed(22, T0_MS - 31_000, "n2"), "127.0.0.1")).is_empty(),
        "stale"
    );
    let mut forged = signed(23, T0_MS, "n3");
    forged.topic = "/elsewhere".into();
    assert!(
        publishes(&b.datagram(&forged, "127.0.0.1")).is_empty(),
        "changed after signing"
    );
    assert_eq!(
        answered(&b.datagram(&signed(24, T0_MS + 29_000, "n4"), "127.0.0.1")).len(),
        2
    );
    assert_eq!(b.stats.snapshot().dropped_refused, 13);
}

/// What `effects` asks of anything but our own broker: sessions opened,
/// names looked up, and publishes through other sessions.
fn beyond_our_broker(effects: &[Effect]) -> Vec<&Effect> {
    effects
        .iter()
        .filter(|e| match e {
            Effect::Open { .. } | Effect::Resolve { .. } => true,
            Effect::Publish { session, .. } => *session != SessionId::Local,
            _ => false,
        })
        .collect()
}

// Section 8 (issue 11, finding 1): an unsigned roll-call naming another
// broker, or naming none from another host (port 1883 at the sender), makes
// the agent connect nowhere and send nothing beyond its own broker: no
// session, no lookup, no answer. It is dropped and counted.
#[test]
fn unsigned_rollcalls_cannot_make_the_agent_connect_elsewhere() {
    let mut b = plain_bed();
    let mut named = rollcall(1);
    named.broker = Some("mqtt://198.18.0.66:1883".into());
    let mut by_name = rollcall(2);
    by_name.broker = Some("mqtt://attacker.invalid:1883".into());
    for rc in [&named, &by_name, &rollcall(3)] {
        let effects = b.datagram(rc, "198.18.0.66");
        assert!(beyond_our_broker(&effects).is_empty(), "{effects:?}");
        assert!(publishes(&effects).is_empty(), "{effects:?}");
    }
    assert_eq!(b.stats.snapshot().dropped_refused, 3);
    // Our own broker, by the URL we are configured with or by any of our
    // addresses, is not a relay: answered.
    let mut ours = rollcall(4);
    ours.broker = Some("mqtt://127.0.0.1:1883".into());
    assert_eq!(answered(&b.datagram(&ours, "127.0.0.1")).len(), 2);
    ours.id = 5;
    ours.broker = Some(format!("mqtt://{LAN}:1883"));
    assert_eq!(answered(&b.datagram(&ours, HUB)).len(), 2);
}

// Section 8: a broker in `relay_brokers` is relayed to, by URL or by its
// address; one outside it is not, though another is listed.
#[test]
fn relay_brokers_lists_the_brokers_unsigned_rollcalls_may_name() {
    let mut b = relay_bed();
    let mut listed = rollcall(1);
    listed.broker = Some("mqtt://198.18.0.9:1884".into());
    assert!(
        b.datagram(&listed, HUB)
            .iter()
            .any(|e| matches!(e, Effect::Open { .. }))
    );
    let mut other_port = rollcall(2);
    other_port.broker = Some("mqtt://198.18.0.9:1885".into());
    assert!(beyond_our_broker(&b.datagram(&other_port, HUB)).is_empty());
    let mut other_name = rollcall(3);
    other_name.broker = Some("mqtt://elsewhere.invalid:1883".into());
    assert!(beyond_our_broker(&b.datagram(&other_name, HUB)).is_empty());
}

// Section 8: a listed broker with a login of its own is relayed to at its
// URL as configured, however a roll-call names it (here: plain MQTT on its
// address and port, where the login is configured for TLS), so its login
// goes only where it was configured to go. One without a login is
// connected to as named.
#[test]
fn a_relay_broker_with_a_login_is_reached_at_its_configured_url() {
    let mut b = bed("relay_brokers = [\"mqtt://198.18.0.9:1883\", \
         { url = \"mqtts://198.18.0.10:8883\", username = \"relay\", password = \"pw\" }]\n\
         [services.gpio]\nenabled = false\n");
    let mut plain = rollcall(1);
    plain.broker = Some("mqtt://198.18.0.10:8883".into());
    let effects = b.datagram(&plain, HUB);
    assert!(
        effects.contains(&Effect::Open {
            session: SessionId::Remote(1),
            broker: "mqtts://198.18.0.10:8883".parse().unwrap(),
        }),
        "{effects:?}"
    );
    assert_eq!(answered(&effects).len(), 2);
    let mut other = rollcall(2);
    other.broker = Some("mqtt://198.18.0.9:1883".into());
    assert!(b.datagram(&other, HUB).contains(&Effect::Open {
        session: SessionId::Remote(2),
        broker: rollcall_net::BrokerUrl::new("198.18.0.9", 1883),
    }));
}

// Section 8: with a cluster key every admitted roll-call was signed by a
// key holder, so it may name any broker.
#[test]
fn a_signed_rollcall_may_name_any_broker() {
    let key = "a cluster key of some length";
    let mut b = bed(&format!(
        "cluster_key = \"{key}\"\n[services.gpio]\nenabled = false\n"
    ));
    let mut rc = rollcall(1);
    rc.broker = Some("mqtt://198.18.0.77:1883".into());
    rc.extra.insert("ts".into(), T0_MS.into());
    rc.extra.insert("nonce".into(), "n1".into());
    let mut map = rc.to_object();
    rollcall_proto::sign::sign(&mut map, key.as_bytes());
    let signed = RollCall::from_object(map).unwrap();
    let effects = b.datagram(&signed, HUB);
    assert!(effects.contains(&Effect::Open {
        session: SessionId::Remote(1),
        broker: rollcall_net::BrokerUrl::new("198.18.0.77", 1883),
    }));
    assert_eq!(answered(&effects).len(), 2);
}

// Section 8 (finding 5): at most `max_relay_sessions` sessions to other
// brokers at once; past that a roll-call naming a new broker is dropped and
// counted, one naming an open session's broker still reuses it, and a
// session that ends makes room.
#[test]
fn relay_sessions_are_bounded() {
    let mut b = bed(&format!(
        "{RELAY_BROKERS}max_relay_sessions = 2\nrelay_grace_ms = 0\n[services.gpio]\nenabled = false\n"
    ));
    let naming = |id: u64, broker: &str| {
        let mut rc = rollcall(id);
        rc.broker = Some(broker.into());
        rc
    };
    b.datagram(&naming(1, "mqtt://198.18.0.9:1883"), HUB);
    b.datagram(&naming(2, "mqtt://198.18.0.9:1884"), HUB);
    let third = b.datagram(&naming(3, "mqtt://hub.invalid:1883"), HUB);
    assert!(beyond_our_broker(&third).is_empty(), "{third:?}");
    assert_eq!(b.stats.snapshot().dropped_refused, 1);
    let reused = b.datagram(&naming(4, "mqtt://198.18.0.9:1884"), HUB);
    assert_eq!(answered(&reused).len(), 2);
    assert!(!reused.iter().any(|e| matches!(e, Effect::Open { .. })));
    // The relays end with their grace; the sessions close; a new broker
    // gets one.
    let ended = b.at(1);
    assert_eq!(
        ended
            .iter()
            .filter(|e| matches!(e, Effect::Close { .. }))
            .count(),
        2
    );
    let later = b.datagram(&naming(5, "mqtt://hub.invalid:1883"), HUB);
    assert!(later.iter().any(|e| matches!(e, Effect::Resolve { .. })));
}

// Section 1 and 8 (finding 6): answers go only to topics under the answer
// prefix, never to a `$` topic or another host's topics: a roll-call asking
// for anything else is dropped, with nothing published.
#[test]
fn answer_topics_stay_under_the_answer_prefix() {
    let mut b = plain_bed();
    for (id, topic) in [
        (1, "/h9/gpio/$description"),
        (2, "/h9/gpio/set/lamp"),
        (3, "/stat/$SYS/x"),
        (4, "$SYS/broker"),
        (5, "/statistics"),
    ] {
        let mut rc = rollcall(id);
        rc.topic = topic.into();
        let effects = b.datagram(&rc, "127.0.0.1");
        assert!(publishes(&effects).is_empty(), "{topic}: {effects:?}");
    }
    assert_eq!(b.stats.snapshot().dropped_refused, 5);
    let mut rc = rollcall(6);
    rc.topic = "/stat/other".into();
    assert_eq!(on(&b.datagram(&rc, "127.0.0.1"), "/stat/other").len(), 2);
    // Over MQTT the same.
    let mut rc = rollcall(7);
    rc.topic = "/h9/gpio/$description".into();
    assert!(publishes(&b.message("/udp/request", &rc.to_bytes())).is_empty());
    // The prefix is the user's to choose.
    let mut b = bed("answer_prefix = \"/answers/\"\n[services.gpio]\nenabled = false\n");
    let mut rc = rollcall(8);
    rc.topic = "/answers/scan".into();
    assert_eq!(on(&b.datagram(&rc, "127.0.0.1"), "/answers/scan").len(), 2);
    assert!(publishes(&b.datagram(&rollcall(9), "127.0.0.1")).is_empty());
}

// Section 3 and 8 (issue 11): 1,200 retained descriptions pushed the host
// answer past 64 KiB and scans dropped it. The host answer lists at most
// MAX_FOREIGN_APPS foreign services, each under a name that is one.
#[test]
fn the_host_answers_app_list_is_bounded() {
    let mut b = plain_bed();
    for n in 0..MAX_FOREIGN_APPS + 100 {
        b.message(
            &format!("/h1/app{n:04}/$description"),
            br#"{"function":"x"}"#,
        );
    }
    b.message(&format!("/h1/{}/$description", "a".repeat(100)), b"{}");
    let answers = on(&b.datagram(&rollcall(1), "127.0.0.1"), "/stat/data");
    let apps = answers[0]["apps"].as_array().unwrap();
    assert_eq!(apps.len(), MAX_FOREIGN_APPS + 1, "and system");
    let bytes = serde_json::to_vec(&answers[0]).unwrap().len();
    assert!(bytes < rollcall_proto::MAX_PAYLOAD, "{bytes} bytes");
    assert_eq!(b.stats.snapshot().dropped_refused, 100);
    assert_eq!(b.stats.snapshot().dropped_malformed, 1);
    // A service that goes away makes room.
    b.message("/h1/app0000/$description", b"");
    b.message("/h1/late/$description", b"{}");
    let answers = on(&b.datagram(&rollcall(2), "127.0.0.1"), "/stat/data");
    assert!(
        answers[0]["apps"]
            .as_array()
            .unwrap()
            .contains(&json!("late"))
    );
}

// The simulated devices (section 7's `/{host}/sim/gpio/{pin}`, section
// 10's fail and missing): driven through the core, refusals on the
// service's error topic.
#[test]
fn simulated_devices_are_driven_and_refusals_answered() {
    let mut b = bed(
        "[services.gpio.config]\ninputs = [{ name = \"button\", pin = 22, report = \"change\", debounce_ms = 0 }]\n",
    );
    b.message("/h1/sim/gpio/22", b"1");
    let effects = b.input(Input::Hardware);
    assert_eq!(on(&effects, "/h1/gpio/input/button")[0]["value"], 1);
    let effects = b.message("/h1/sim/gpio/x", b"1");
    assert!(
        on(&effects, "/h1/gpio/error")[0]["error"]
            .as_str()
            .unwrap()
            .contains("not a pin")
    );
}

// Stopping: what is unsaved is saved at once, waiting answers are
// dropped, and `offline` is said.
#[test]
fn shutdown_saves_at_once_and_says_offline() {
    let mut b = bed("");
    b.message(
        "/h1/gpio/control",
        br#"{"outputs":[{"name":"lamp","pin":4}]}"#,
    );
    let mut rc = rollcall(1);
    rc.window_ms = Some(60_000);
    b.datagram(&rc, "127.0.0.1");
    let effects = b.input(Input::Shutdown);
    assert!(matches!(&effects[0], Effect::Save { service, .. } if service == "gpio"));
    assert_eq!(
        states(&effects),
        [(
            "/h1/$state".into(),
            format!("offline {SESSION}").into_bytes()
        )]
    );
    assert!(
        answered(&b.at(60_000)).is_empty(),
        "waiting answers dropped"
    );
}

/// The QoS of every publish among `effects`, by topic.
fn qos_by_topic(effects: &[Effect]) -> Vec<(String, Qos)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish { topic, qos, .. } => Some((topic.clone(), *qos)),
            _ => None,
        })
        .collect()
}

// Issue 12: on a broker without `set_tcp_nodelay`, a PUBACK to the agent
// held the next command ~40 ms. States, replies and the host report go at
// QoS 0 (no PUBACK); answers keep QoS 1, so that the scanner's PUBACKs
// carry its acknowledgements.
#[test]
fn states_replies_and_reports_go_at_qos_0_and_answers_at_qos_1() {
    let mut b = bed("");
    b.message(
        "/h1/gpio/control",
        br#"{"outputs":[{"name":"lamp","pin":4}]}"#,
    );
    b.ms = 10;
    let effects = b.message("/h1/gpio/set/lamp", br#"{"value":1,"topic":"/me/ok"}"#);
    let sent = qos_by_topic(&effects);
    assert!(
        sent.iter().any(|(t, _)| t == "/h1/gpio/output/lamp"),
        "{sent:?}"
    );
    assert!(sent.iter().any(|(t, _)| t == "/me/ok"), "{sent:?}");
    assert!(sent.iter().all(|(_, q)| *q == Qos::AtMostOnce), "{sent:?}");

    let effects = b.datagram(&rollcall(12), "127.0.0.1");
    let sent = qos_by_topic(&effects);
    assert_eq!(
        sent.iter()
            .filter(|(t, _)| t == "/udp/report")
            .map(|(_, q)| *q)
            .collect::<Vec<_>>(),
        [Qos::AtMostOnce]
    );
    let answers: Vec<Qos> = sent
        .iter()
        .filter(|(t, _)| t == "/stat/data")
        .map(|(_, q)| *q)
        .collect();
    assert_eq!(answers.len(), 3, "host, gpio and system: {sent:?}");
    assert!(answers.iter().all(|q| *q == Qos::AtLeastOnce), "{sent:?}");
}
