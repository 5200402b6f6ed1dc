//! The cluster on real hosts: every host a Linux network namespace on a
//! bridge in a namespace of its own, each running a real `rollcall agent`
//! process; the hub in its own namespace; roll-calls as real broadcasts on
//! the bridge (198.18.0.0/15). Shared and per-host brokers, crashes, links
//! going down, broker restarts, packet loss, a hostile host, a host
//! behind a router, and two sites whose Mosquittos are bridged (with the
//! loops that bring answers twice); the hub's map read over HTTP. Needs root
//! and `ip`; skipped (with the reason) otherwise, except under `CI=true`.
//! docs/testbed.md describes what each test proves.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rollcall_testsupport::netns::cluster::{self, AgentBroker, AgentSpec, HostView, MQTT_PORT};
use rollcall_testsupport::netns::{self as harness, BridgeId, NodeId, ProcId, TestBed};
use rollcall_testsupport::{find_program, skip};

/// Hosts in each scenario.
const HOSTS: usize = 10;
/// Where the hub serves its map, inside the hub's namespace.
const HUB_HTTP: &str = "127.0.0.1:8080";
/// The agents' MQTT keepalive in these tests, seconds.
const KEEPALIVE_S: u64 = 2;
/// The services every agent here runs (built in, on simulated hardware).
const SERVICES: [&str; 2] = ["gpio", "system"];

/// One test bed at a time: ten agents each are what two cores can take
/// without timing out the others' deadlines.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A LAN: a bridge, a hub node (198.18.0.1) and `HOSTS` host nodes named
/// `h01`.. (198.18.0.2..), no processes yet.
struct Lan {
    bed: TestBed,
    lan: BridgeId,
    hub: NodeId,
    hosts: Vec<NodeId>,
    /// Where answers go (the hub's broker unless a test moves it).
    broker: Ipv4Addr,
}

impl Lan {
    fn new(test: &str, extra_nodes: &[&str]) -> Option<Lan> {
        // The LAN's shared broker is Mosquitto (cluster::start_hub says why).
        cluster::mosquitto_or_skip(test)?;
        let mut bed =
            harness::bed_or_skip(test, std::path::Path::new(env!("CARGO_BIN_EXE_rollcall")))?;
        let lan = bed.add_bridge().unwrap();
        let hub = bed.add_host("hub", lan).unwrap();
        let hosts = (1..=HOSTS)
            .map(|i| bed.add_host(&format!("h{i:02}"), lan).unwrap())
            .collect();
        for name in extra_nodes {
            bed.add_host(name, lan).unwrap();
        }
        let broker = bed.addr(hub);
        Some(Lan {
            bed,
            lan,
            hub,
            hosts,
            broker,
        })
    }

    fn broadcast(&self) -> Ipv4Addr {
        self.bed.broadcast(self.lan)
    }

    fn hub_addr(&self) -> Ipv4Addr {
        self.bed.addr(self.hub)
    }

    fn broker_url(&self) -> String {
        format!("mqtt://{}:{MQTT_PORT}", self.broker)
    }

    /// A node added by name in [`Lan::new`].
    fn node(&self, name: &str) -> NodeId {
        self.bed
            .node(name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The hub and the LAN's shared broker, every agent on it; returns once the
    /// hub has seen every host come online.
    fn shared(&mut self, spec: &AgentSpec, hub_args: &[&str]) -> (ProcId, Vec<ProcId>) {
        let broadcast = self.broadcast();
        let mut args = vec!["--http", HUB_HTTP, "--wait-ms", "800"];
        args.extend_from_slice(hub_args);
        let hub = cluster::start_hub(&mut self.bed, self.hub, broadcast, 1, &args);
        let broker = SocketAddr::from((self.hub_addr(), MQTT_PORT));
        cluster::wait_listening(&self.bed, self.hub, broker, Duration::from_secs(10));
        let agents = self.start_agents(spec);
        let probe = self.bed.mqtt(self.hub, &self.broker_url(), &["/+/$state"]);
        self.wait_states(&probe, "online", Duration::from_secs(20));
        (hub, agents)
    }

    /// `rollcall hub` in the hub's node on `broker`, calling the roll on
    /// the LAN's broadcast every second and serving [`HUB_HTTP`]; `extra`
    /// arguments are appended.
    fn spawn_hub(&mut self, broker: &str, extra: &[&str]) -> ProcId {
        let rollcall = self.bed.rollcall().to_path_buf();
        let broadcast = self.broadcast().to_string();
        let mut args = vec![
            "hub",
            "--broker",
            broker,
            "--broadcast",
            &broadcast,
            "--scan-every",
            "1",
            "--wait-ms",
            "800",
            "--http",
            HUB_HTTP,
        ];
        args.extend_from_slice(extra);
        self.bed.spawn(self.hub, "hub", &rollcall, &args)
    }

    fn start_agents(&mut self, spec: &AgentSpec) -> Vec<ProcId> {
        let hosts = self.hosts.clone();
        hosts
            .into_iter()
            .map(|h| cluster::start_agent(&mut self.bed, h, spec))
            .collect()
    }

    /// Waits until every host's `$state` is `state`.
    fn wait_states(&self, probe: &harness::MqttProbe, state: &str, timeout: Duration) {
        let names: Vec<String> = self
            .hosts
            .iter()
            .map(|&h| self.bed.name(h).to_owned())
            .collect();
        probe.wait(&format!("every host {state}"), timeout, |seen| {
            names
                .iter()
                .all(|n| {
                    seen.text(&format!("/{n}/$state"))
                        .as_deref()
                        .and_then(first_word)
                        == Some(state)
                })
                .then_some(())
        });
    }

    /// The map every test expects: every host at its own address, listing
    /// and answering for `SERVICES`.
    fn expected_map(&self) -> BTreeMap<String, (String, Vec<String>, Vec<String>)> {
        expected_hosts(&self.bed, &self.hosts)
    }

    /// The hub's map: `GET /api/map` from inside the hub's node.
    fn map(&self) -> Result<serde_json::Value, String> {
        let body = cluster::http_get(&self.bed, self.hub, HUB_HTTP.parse().unwrap(), "/api/map")?;
        serde_json::from_str(&body).map_err(|e| format!("/api/map: {e}: {body}"))
    }

    /// Polls the hub's map until `done` holds; panics with the last map
    /// after `timeout`.
    fn wait_map(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let map = self.map();
            if map.as_ref().is_ok_and(&mut done) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the hub's map to show {what}; last: {map:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Lan::expected_map`] as the hub's map shows it when every host is
    /// online.
    fn expected_online(&self) -> BTreeMap<String, (String, String, Vec<String>, Vec<String>)> {
        self.expected_map()
            .into_iter()
            .map(|(name, (addr, apps, services))| {
                (name, ("online".to_owned(), addr, apps, services))
            })
            .collect()
    }

    /// A roll-call from the hub's node, answered at the hub's broker.
    fn scan(&self, extra: &[&str]) -> cluster::Scan {
        cluster::scan(
            &self.bed,
            self.hub,
            self.broker,
            self.broadcast(),
            HOSTS,
            extra,
        )
    }
}

/// The parts of a map [`Lan::expected_map`] predicts.
fn summary(
    map: &BTreeMap<String, HostView>,
) -> BTreeMap<String, (String, Vec<String>, Vec<String>)> {
    map.iter()
        .map(|(name, v)| {
            (
                name.clone(),
                (
                    v.ipaddr.clone(),
                    v.apps.clone(),
                    v.services.iter().map(|s| s[0].clone()).collect(),
                ),
            )
        })
        .collect()
}

/// The hub's map (`/api/map`) by host: status, address, the services its
/// agent lists, and the services present.
fn map_summary(
    map: &serde_json::Value,
) -> BTreeMap<String, (String, String, Vec<String>, Vec<String>)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    map["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let apps = h["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let mut services: Vec<String> = h["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["present"] == true)
                .map(|s| text(&s["name"]))
                .collect();
            services.sort();
            (
                text(&h["name"]),
                (text(&h["status"]), text(&h["ipaddr"]), apps, services),
            )
        })
        .collect()
}

/// The flat fields each host's services answer with: the same in every
/// topology, derived from the host's name.
fn assert_flat_fields(map: &BTreeMap<String, HostView>) {
    for (name, view) in map {
        for [function, inputs, outputs, control] in &view.services {
            let own = format!("/{name}/{function}/");
            for field in [inputs, outputs, control] {
                assert!(
                    field.is_empty() || field.starts_with(&own),
                    "{name}'s {function} answered with a topic not its own: {field}"
                );
            }
            assert!(
                !(inputs.is_empty() && outputs.is_empty() && control.is_empty()),
                "{name}'s {function} lists no topics"
            );
        }
    }
}

#[test]
fn shared_broker_ten_hosts_answer_one_roll_call_from_their_own_addresses() {
    let _serial = serial();
    let Some(mut lan) = Lan::new("shared_broker", &[]) else {
        return;
    };
    lan.shared(&AgentSpec::new(AgentBroker::Remote(lan.hub_addr())), &[]);
    let scan = lan.scan(&[]);
    assert!(scan.ok, "{}", scan.stderr);
    let map = cluster::map_of(&scan.report);
    assert_eq!(summary(&map), lan.expected_map());
    assert_flat_fields(&map);
    lan.wait_map("every host online", Duration::from_secs(15), |m| {
        map_summary(m) == lan.expected_online()
    });
}

/// Polls `done` until it holds; panics naming `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends a query with a private reply topic and returns the answer.
fn request(
    probe: &harness::MqttProbe,
    topic: &str,
    body: serde_json::Value,
    id: u64,
) -> serde_json::Value {
    request_at(
        probe,
        topic,
        body,
        id,
        "/netns/reply",
        Duration::from_secs(10),
    )
}

/// [`request`] with its reply topic under `reply_prefix`, waiting `wait`
/// for the answer.
fn request_at(
    probe: &harness::MqttProbe,
    topic: &str,
    body: serde_json::Value,
    id: u64,
    reply_prefix: &str,
    wait: Duration,
) -> serde_json::Value {
    let reply = format!("{reply_prefix}/{id}");
    let mut body = match body {
        serde_json::Value::Object(map) => map,
        value => serde_json::Map::from_iter([("value".to_owned(), value)]),
    };
    body.insert("id".into(), id.into());
    body.insert("topic".into(), reply.clone().into());
    probe.publish(topic, serde_json::to_vec(&body).unwrap(), false);
    probe.wait(&format!("the answer on {reply}"), wait, |seen| {
        seen.last
            .get(&reply)
            .map(|p| serde_json::from_slice::<serde_json::Value>(p).unwrap())
    })
}

fn assert_ok(answer: &serde_json::Value) {
    assert_eq!(answer["ok"], true, "{answer}");
}

/// The GPIO configuration test hosts get over MQTT (none is in their
/// configuration files, so finding it later proves it was kept).
fn gpio_config(name: &str) -> serde_json::Value {
    serde_json::json!({
        "outputs": [{"name": format!("lamp_{name}"), "pin": 5, "init": 0}],
        "inputs": [{"name": "door", "pin": 6, "pull": "up", "report": "change"}]
    })
}

/// Configures `host`'s GPIO with [`gpio_config`] and drives its lamp high.
fn configure_gpio(probe: &harness::MqttProbe, host: &str, id: u64) {
    assert_ok(&request(
        probe,
        &format!("/{host}/gpio/control"),
        gpio_config(host),
        id,
    ));
    assert_ok(&request(
        probe,
        &format!("/{host}/gpio/set/lamp_{host}"),
        1.into(),
        id + 1,
    ));
}

/// `host`'s GPIO is still configured as [`configure_gpio`] left it.
fn assert_gpio_kept(probe: &harness::MqttProbe, host: &str, id: u64) {
    assert_gpio_kept_within(probe, host, id, Duration::from_secs(10));
}

/// [`assert_gpio_kept`], each answer waited for `wait` at most.
fn assert_gpio_kept_within(probe: &harness::MqttProbe, host: &str, id: u64, wait: Duration) {
    let config = request_at(
        probe,
        &format!("/{host}/gpio/get/config"),
        serde_json::json!({}),
        id,
        "/netns/reply",
        wait,
    );
    assert_ok(&config);
    let names = |list: &str| -> Vec<String> {
        config["value"][list]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(names("outputs"), [format!("lamp_{host}")], "{config}");
    assert_eq!(names("inputs"), ["door"], "{config}");
    let level = request_at(
        probe,
        &format!("/{host}/gpio/get/output/lamp_{host}"),
        serde_json::json!({}),
        id + 1,
        "/netns/reply",
        wait,
    );
    assert_ok(&level);
    assert_eq!(level["value"], 1, "{level}");
}

#[test]
fn broker_on_every_host_relays_answers_to_the_hubs_broker_for_the_same_map() {
    let _serial = serial();
    let Some(mut lan) = Lan::new("broker_per_host", &[]) else {
        return;
    };
    let broadcast = lan.broadcast();
    cluster::start_hub(
        &mut lan.bed,
        lan.hub,
        broadcast,
        1,
        &["--http", HUB_HTTP, "--wait-ms", "800"],
    );
    let hub_broker = SocketAddr::from((lan.hub_addr(), MQTT_PORT));
    cluster::wait_listening(&lan.bed, lan.hub, hub_broker, Duration::from_secs(10));
    // Every other host runs Mosquitto beside its agent; the rest run the
    // agent's embedded broker: the notes' 127.0.0.1 both ways.
    let mosquitto = find_program("mosquitto").expect("checked by Lan::new");
    let hosts = lan.hosts.clone();
    for (i, &h) in hosts.iter().enumerate() {
        let mut spec = match i % 2 {
            1 => {
                cluster::start_mosquitto(&mut lan.bed, h, &mosquitto);
                let local = SocketAddr::from((Ipv4Addr::LOCALHOST, MQTT_PORT));
                cluster::wait_listening(&lan.bed, h, local, Duration::from_secs(10));
                AgentSpec::new(AgentBroker::Local)
            }
            _ => AgentSpec::new(AgentBroker::Embedded),
        };
        // Unsigned roll-calls are relayed only to a broker the agent lists.
        spec.top = format!("relay_brokers = [\"mqtt://{hub_broker}\"]\n");
        cluster::start_agent(&mut lan.bed, h, &spec);
    }
    // Each agent tells its own broker it is online; the hub's broker never
    // hears of it until a roll-call.
    for &h in &hosts {
        let name = lan.bed.name(h).to_owned();
        let local = format!("mqtt://127.0.0.1:{MQTT_PORT}");
        let probe = lan.bed.mqtt(h, &local, &[&format!("/{name}/$state")]);
        probe.wait(
            &format!("{name} online on its own broker"),
            Duration::from_secs(20),
            |s| {
                (s.text(&format!("/{name}/$state"))
                    .as_deref()
                    .and_then(first_word)
                    == Some("online"))
                .then_some(())
            },
        );
    }
    let scan = lan.scan(&[]);
    assert!(scan.ok, "{}", scan.stderr);
    let map = cluster::map_of(&scan.report);
    assert_eq!(summary(&map), lan.expected_map());
    assert_flat_fields(&map);
    lan.wait_map("every host online", Duration::from_secs(15), |m| {
        map_summary(m) == lan.expected_online()
    });
}

#[test]
fn killed_agent_shows_offline_in_time_and_comes_back_with_its_gpio_configuration() {
    let _serial = serial();
    let Some(mut lan) = Lan::new("kill_agent", &[]) else {
        return;
    };
    let (_hub, agents) = lan.shared(&AgentSpec::new(AgentBroker::Remote(lan.hub_addr())), &[]);
    let probe = lan
        .bed
        .mqtt(lan.hub, &lan.broker_url(), &["/+/$state", "/netns/reply/#"]);
    lan.wait_states(&probe, "online", Duration::from_secs(10));
    let victim = lan.hosts[2];
    let name = lan.bed.name(victim).to_owned();
    configure_gpio(&probe, &name, 1);
    // The agent saves 50 ms after a change; the kill must come after.
    let saved = lan.bed.dir().join(format!("state-{name}/gpio.json"));
    wait_until("the GPIO state saved", Duration::from_secs(5), || {
        std::fs::read_to_string(&saved).is_ok_and(|t| t.contains(&format!("lamp_{name}")))
    });

    lan.wait_map("every host online", Duration::from_secs(15), |m| {
        map_summary(m) == lan.expected_online()
    });

    let killed = Instant::now();
    lan.bed.kill(agents[2]);
    let bound = Duration::from_millis(1500 * KEEPALIVE_S + 1000);
    lan.wait_map(&format!("{name} offline"), bound, |m| {
        map_summary(m).get(&name).is_some_and(|h| h.0 == "offline")
    });
    let took = killed.elapsed();
    eprintln!(
        "kill_agent: the hub's map shows {name} offline {took:?} after kill -9 (bound {bound:?})"
    );
    assert!(took <= bound);
    // The others stay online.
    let map = map_summary(&lan.map().unwrap());
    for (other, view) in &map {
        assert!(other == &name || view.0 == "online", "{other}: {view:?}");
    }

    lan.bed.start(agents[2]);
    lan.wait_map(
        &format!("{name} online again"),
        Duration::from_secs(20),
        |m| map_summary(m) == lan.expected_online(),
    );
    assert_gpio_kept(&probe, &name, 10);
    // The map has the restored configuration too: the GPIO service's
    // description lists the output again.
    lan.wait_map(
        &format!("{name}'s lamp in the map"),
        Duration::from_secs(10),
        |m| {
            m["hosts"].as_array().into_iter().flatten().any(|h| {
                h["name"] == name.as_str()
                    && h["services"].as_array().into_iter().flatten().any(|s| {
                        s["name"] == "gpio"
                            && s["description"]
                                .to_string()
                                .contains(&format!("lamp_{name}"))
                    })
            })
        },
    );
    let scan = lan.scan(&[]);
    assert!(scan.ok, "{}", scan.stderr);
    assert_eq!(summary(&cluster::map_of(&scan.report)), lan.expected_map());
}

#[test]
fn link_down_then_up_shows_offline_then_online_without_a_restart() {
    let _serial = serial();
    let Some(mut lan) = Lan::new("link_down", &[]) else {
        return;
    };
    let (_hub, agents) = lan.shared(&AgentSpec::new(AgentBroker::Remote(lan.hub_addr())), &[]);
    lan.wait_map("every host online", Duration::from_secs(15), |m| {
        map_summary(m) == lan.expected_online()
    });
    let host = lan.hosts[3];
    let name = lan.bed.name(host).to_owned();
    let pid = lan.bed.pid(agents[3]);

    let down = Instant::now();
    lan.bed.link_down(host).unwrap();
    // No FIN reaches the broker: it notices from the missing keepalives,
    // and publishes the agent's will.
    let bound = Duration::from_millis(1500 * KEEPALIVE_S + 1000);
    lan.wait_map(
        &format!("{name} offline"),
        bound + Duration::from_secs(2),
        |m| map_summary(m).get(&name).is_some_and(|h| h.0 == "offline"),
    );
    eprintln!(
        "link_down: the hub's map shows {name} offline {:?} after the link went down (keepalive {KEEPALIVE_S} s)",
        down.elapsed()
    );
    let scan = lan.scan(&["--wait-ms", "1500"]);
    assert!(!scan.ok, "a host without a link answered");
    let mut expected = lan.expected_map();
    expected.remove(&name);
    assert_eq!(summary(&cluster::map_of(&scan.report)), expected);

    let up = Instant::now();
    lan.bed.link_up(host).unwrap();
    lan.wait_map(
        &format!("{name} online again"),
        Duration::from_secs(20),
        |m| map_summary(m) == lan.expected_online(),
    );
    eprintln!(
        "link_down: the hub's map shows {name} online {:?} after the link came back",
        up.elapsed()
    );
    assert!(lan.bed.running(agents[3]), "the agent exited");
    assert_eq!(lan.bed.pid(agents[3]), pid, "the agent was restarted");
    let scan = lan.scan(&[]);
    assert!(scan.ok, "{}", scan.stderr);
    assert_eq!(summary(&cluster::map_of(&scan.report)), lan.expected_map());
}

#[test]
fn broker_restart_agents_reconnect_and_republish_and_keep_their_gpio() {
    let _serial = serial();
    let Some(mut lan) = Lan::new("broker_restart", &["broker"]) else {
        return;
    };
    let broker_node = lan.node("broker");
    lan.broker = lan.bed.addr(broker_node);
    // Mosquitto, the usual production broker (Lan::new checked it is there).
    let mosquitto = find_program("mosquitto").expect("checked by Lan::new");
    let broker = cluster::start_mosquitto(&mut lan.bed, broker_node, &mosquitto);
    let at = SocketAddr::from((lan.broker, MQTT_PORT));
    cluster::wait_listening(&lan.bed, broker_node, at, Duration::from_secs(10));
    let broker_url = lan.broker_url();
    lan.spawn_hub(&broker_url, &[]);
    lan.start_agents(&AgentSpec::new(AgentBroker::Remote(lan.broker)));
    let probe = lan.bed.mqtt(
        lan.hub,
        &broker_url,
        &["/+/$state", "/+/+/$description", "/netns/reply/#"],
    );
    lan.wait_states(&probe, "online", Duration::from_secs(20));
    let names: Vec<String> = lan
        .hosts
        .iter()
        .map(|&h| lan.bed.name(h).to_owned())
        .collect();
    for (i, name) in names.iter().enumerate() {
        configure_gpio(&probe, name, 100 + 10 * i as u64);
    }

    lan.bed.kill(broker);
    probe.clear();
    lan.bed.start(broker);
    // The new broker starts with nothing retained: whatever is retained
    // now, the agents published again after reconnecting.
    probe.wait(
        "every host's state and descriptions again",
        Duration::from_secs(30),
        |s| {
            names
                .iter()
                .all(|n| online_with_its_gpio(s, n))
                .then_some(())
        },
    );
    // They subscribed again: each answers its queries, its GPIO as it was.
    for (i, name) in names.iter().enumerate() {
        assert_gpio_kept(&probe, name, 300 + 10 * i as u64);
    }
    let scan = lan.scan(&[]);
    assert!(scan.ok, "{}", scan.stderr);
    assert_eq!(summary(&cluster::map_of(&scan.report)), lan.expected_map());
    // The hub reconnected too, and its map converged: everyone online,
    // every GPIO description with its output.
    lan.wait_map(
        "every host online with its GPIO",
        Duration::from_secs(20),
        |m| {
            map_summary(m) == lan.expected_online()
                && names.iter().all(|n| {
                    m["hosts"].as_array().into_iter().flatten().any(|h| {
                        h["name"] == n.as_str()
                            && h["services"].as_array().into_iter().flatten().any(|s| {
                                s["name"] == "gpio"
                                    && s["description"].to_string().contains(&format!("lamp_{n}"))
                            })
                    })
                })
        },
    );
}

#[test]
fn ten_percent_loss_on_the_bridge_the_repeated_roll_call_completes_the_map() {
    let _serial = serial();
    if find_program("nft").is_none() {
        skip::<()>("packet_loss", "`nft` (nftables) is not installed");
        return;
    }
    let Some(mut lan) = Lan::new("packet_loss", &[]) else {
        return;
    };
    lan.shared(&AgentSpec::new(AgentBroker::Remote(lan.hub_addr())), &[]);
    lan.bed.set_loss(lan.lan, 10).unwrap();
    for _ in 0..3 {
        let scan = lan.scan(&["--repeat", "5", "--wait-ms", "6000"]);
        assert!(scan.ok, "{}", scan.stderr);
        assert_eq!(summary(&cluster::map_of(&scan.report)), lan.expected_map());
    }
    // The rule did drop frames: the roll-calls completed despite it.
    let lost = lan.bed.traffic(lan.lan).unwrap().get("lost");
    eprintln!("packet_loss: frames dropped on the bridge: {lost:?}");
    assert!(lost.packets > 0, "the loss rule dropped nothing");
}

#[test]
fn a_hostile_host_floods_and_sends_garbage_agents_stay_up_silent_and_answer_the_hub() {
    let _serial = serial();
    let Some((_lan, traffic)) = hostile_host("hostile_host", Some("netns test bed cluster key"))
    else {
        return;
    };
    assert_eq!(
        traffic.get("syn_to_rogue").packets,
        0,
        "an agent connected to the rogue"
    );
}

#[test]
fn without_a_cluster_key_a_flooding_host_uses_up_only_its_own_allowance() {
    let _serial = serial();
    let Some((_lan, traffic)) = hostile_host("hostile_host_no_key", None) else {
        return;
    };
    // Without a key, the rogue's roll-calls that its allowance lets through
    // are answered, but only on the agents' own broker: the broker they
    // name (the rogue's) is not in relay_brokers, so no agent connects
    // there and not one byte goes to it (issue 11, finding 1).
    assert_eq!(
        traffic.get("syn_to_rogue").packets,
        0,
        "an agent connected to the rogue"
    );
    assert_eq!(
        traffic.get("tcp_to_rogue").bytes,
        0,
        "TCP bytes reached the rogue"
    );
}

/// A hostile host among the ten (see [`hostile`]) while the hub calls the
/// roll, with or without a cluster key: the agents stay up, send no UDP,
/// and answer the hub during the flood and after it. Returns
/// the bed and the bridge's counters, or `None` where it cannot run.
fn hostile_host(test: &str, key: Option<&str>) -> Option<(Lan, harness::Traffic)> {
    if find_program("nft").is_none() {
        return skip(test, "`nft` (nftables) is not installed");
    }
    let mut lan = Lan::new(test, &["rogue"])?;
    let rogue = lan.node("rogue");
    let mut watched = lan.hosts.clone();
    watched.push(rogue);
    lan.bed.count_traffic(lan.lan, &watched).unwrap();
    let mut spec = AgentSpec::new(AgentBroker::Remote(lan.hub_addr()));
    let mut signed: Vec<&str> = Vec::new();
    if let Some(key) = key {
        spec.top = format!("cluster_key = \"{key}\"\n");
        signed = vec!["--cluster-key", key];
    }
    let (_hub, agents) = lan.shared(&spec, &signed);

    let bcast = lan.broadcast();
    let targets: Vec<Ipv4Addr> = lan.hosts.iter().map(|&h| lan.bed.addr(h)).collect();
    let rogue_addr = lan.bed.addr(rogue);
    let sent = lan
        .bed
        .spawn_in_node(rogue, move || hostile(bcast, &targets, rogue_addr));
    let during = lan.scan(&signed);
    // The flood lasts 3 s; a roll-call that took longer was not wholly
    // answered during it.
    let flooding = !sent.is_finished();
    let sent = sent.join().unwrap();
    assert!(
        flooding,
        "the flood ended before the hub's roll-call did: {during:?}"
    );
    eprintln!(
        "{test}: the rogue sent {sent} datagrams; the hub's roll-call during the flood: {} of {HOSTS} hosts",
        cluster::answers(&during.report).0
    );
    // The rate limit is counted per sender (and, with a key, unsigned
    // roll-calls are refused before it counts them): the flood cannot crowd
    // the hub's roll-call out.
    assert!(during.ok, "{}", during.stderr);
    assert_eq!(
        summary(&cluster::map_of(&during.report)),
        lan.expected_map()
    );

    for (i, &agent) in agents.iter().enumerate() {
        assert!(
            lan.bed.running(agent),
            "agent {i} exited:\n{}",
            lan.bed.log(agent)
        );
    }
    let after = lan.scan(&signed);
    assert!(after.ok, "{}", after.stderr);
    assert_eq!(summary(&cluster::map_of(&after.report)), lan.expected_map());
    lan.wait_map("every host online", Duration::from_secs(15), |m| {
        map_summary(m) == lan.expected_online()
    });
    let traffic = lan.bed.traffic(lan.lan).unwrap();
    for &h in &lan.hosts {
        let name = lan.bed.name(h);
        assert_eq!(
            traffic.get(&format!("udp_from_{name}")).packets,
            0,
            "{name} sent UDP"
        );
    }
    assert!(traffic.get("udp_from_rogue").packets >= sent);
    Some((lan, traffic))
}

/// The rogue's datagrams: malformed roll-calls to every agent, then a
/// flood of well-formed unsigned ones naming the rogue as broker, bounded
/// in count and time. Returns how many it sent.
fn hostile(bcast: Ipv4Addr, targets: &[Ipv4Addr], me: Ipv4Addr) -> u64 {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    socket.set_broadcast(true).unwrap();
    let port = rollcall_proto::DEFAULT_UDP_PORT;
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xff\xfe\x00 not UTF-8".to_vec(),
        b"not json".to_vec(),
        b"[1,2,3]".to_vec(),
        "[".repeat(1000).into_bytes(),
        format!(
            "{{\"cmd\":\"status\",\"id\":1,\"replyto\":\"x\",\"topic\":\"/t\",\"pad\":\"{}\"}}",
            "x".repeat(1300)
        )
        .into_bytes(),
        br#"{"cmd":"status"}"#.to_vec(),
        br#"{"cmd":"reboot","id":1,"replyto":"x","topic":"/t"}"#.to_vec(),
        br#"{"cmd":"status","id":-1,"replyto":"x","topic":"/t"}"#.to_vec(),
        br#"{"cmd":"status","id":2,"replyto":"x","topic":"/udp/request"}"#.to_vec(),
        br#"{"cmd":"status","id":3,"replyto":"x","topic":"/t/#"}"#.to_vec(),
        br#"{"cmd":"status","id":4,"replyto":"x","topic":"/t","window_ms":99999999}"#.to_vec(),
        br#"{"cmd":"status","id":5,"replyto":"x","topic":"/t","ts":1,"nonce":"n","sig":"00"}"#
            .to_vec(),
    ];
    garbage.push(
        format!(
            r#"{{"cmd":"status","id":6,"replyto":"x","topic":"/t","broker":"mqtt://{me}:1883"}}"#
        )
        .into_bytes(),
    );
    let mut sent = 0;
    for payload in &garbage {
        for to in std::iter::once(&bcast).chain(targets) {
            socket.send_to(payload, (*to, port)).unwrap();
            sent += 1;
        }
    }
    // The flood: up to 3000 roll-calls, at most 3 s, about one a millisecond.
    let start = Instant::now();
    for id in 1000..4000u64 {
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
        let rc = format!(
            r#"{{"cmd":"status","id":{id},"replyto":"rogue","topic":"/rogue","broker":"mqtt://{me}:1883","window_ms":0}}"#
        );
        socket.send_to(rc.as_bytes(), (bcast, port)).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

#[test]
fn a_host_behind_a_router_answers_a_unicast_roll_call_from_its_own_subnet() {
    let _serial = serial();
    let Some(mut lan) = Lan::new("router", &[]) else {
        return;
    };
    // A second subnet, 198.18.1.0/24, behind a router: broadcasts stay on
    // their bridge, so the hub names the far host by its address.
    let far_lan = lan.bed.add_bridge().unwrap();
    lan.bed.add_router("gw", &[lan.lan, far_lan]).unwrap();
    let far = lan.bed.add_host("far01", far_lan).unwrap();
    let far_addr = lan.bed.addr(far);
    assert_eq!(far_addr.octets()[..3], [198, 18, 1]);
    let spec = AgentSpec::new(AgentBroker::Remote(lan.hub_addr()));
    lan.shared(&spec, &[]);
    cluster::start_agent(&mut lan.bed, far, &spec);
    let probe = lan.bed.mqtt(lan.hub, &lan.broker_url(), &["/far01/$state"]);
    probe.wait(
        "far01 online through the router",
        Duration::from_secs(20),
        |s| {
            (s.text("/far01/$state").as_deref().and_then(first_word) == Some("online"))
                .then_some(())
        },
    );
    let scan = cluster::scan(
        &lan.bed,
        lan.hub,
        lan.broker,
        lan.broadcast(),
        HOSTS + 1,
        &["--target", &far_addr.to_string()],
    );
    assert!(scan.ok, "{}", scan.stderr);
    let mut expected = lan.expected_map();
    expected.insert(
        "far01".into(),
        (
            far_addr.to_string(),
            SERVICES.map(str::to_owned).to_vec(),
            SERVICES.map(str::to_owned).to_vec(),
        ),
    );
    assert_eq!(summary(&cluster::map_of(&scan.report)), expected);
}

/// What a map or a roll-call must show of `hosts`: each at its own
/// address, listing and answering for `SERVICES`.
fn expected_hosts(
    bed: &TestBed,
    hosts: &[NodeId],
) -> BTreeMap<String, (String, Vec<String>, Vec<String>)> {
    let services = || SERVICES.map(str::to_owned).to_vec();
    hosts
        .iter()
        .map(|&h| {
            let view = (bed.addr(h).to_string(), services(), services());
            (bed.name(h).to_owned(), view)
        })
        .collect()
}

/// Whether `seen` holds host `name`'s retained `online`, its system
/// service's description and the GPIO description with the lamp the tests
/// configured over MQTT.
fn online_with_its_gpio(seen: &harness::Seen, name: &str) -> bool {
    seen.text(&format!("/{name}/$state"))
        .as_deref()
        .and_then(first_word)
        == Some("online")
        && seen.text(&format!("/{name}/system/$description")).is_some()
        && seen
            .text(&format!("/{name}/gpio/$description"))
            .is_some_and(|d| d.contains(&format!("lamp_{name}")))
}

/// A `$state`'s first word, `online` or `offline`: the agent's session
/// number follows it (docs/protocol.md section 4).
fn first_word(text: &str) -> Option<&str> {
    text.split_ascii_whitespace().next()
}

/// The whole cluster on a three-node NATS cluster speaking MQTT, one node
/// per namespace: agents spread over the nodes (each with all three in its
/// `brokers`, its own node first), the hub on another node's broker. The
/// roll-call, the hub's map and dashboard, retained `$state` and
/// `$description`, queries and GPIO sets all work across nodes, and a
/// killed agent's will reaches the hub and a client on the other nodes.
#[test]
fn nats_cluster_carries_the_roll_call_the_map_queries_and_gpio_across_nodes() {
    nats_cluster("nats_cluster", false);
}

/// [`nats_cluster_carries_the_roll_call_the_map_queries_and_gpio_across_nodes`],
/// then the node the hub and a third of the agents are on is killed:
/// everyone moves to another node, subscribes again, and the map is whole
/// again, nothing retained lost.
#[test]
fn nats_cluster_node_killed_everyone_moves_and_the_map_is_whole_again() {
    nats_cluster("nats_cluster_kill", true);
}

fn nats_cluster(test: &str, kill: bool) {
    let _serial = serial();
    let Some(nats) = rollcall_testsupport::nats::nats_server_or_skip(test) else {
        return;
    };
    let Some(mut lan) = Lan::new(test, &["nats1", "nats2", "nats3"]) else {
        return;
    };
    let nodes: Vec<NodeId> = ["nats1", "nats2", "nats3"]
        .iter()
        .map(|n| lan.node(n))
        .collect();
    let addrs: Vec<Ipv4Addr> = nodes.iter().map(|&n| lan.bed.addr(n)).collect();
    let list = |first: usize| -> Vec<Ipv4Addr> { (0..3).map(|i| addrs[(first + i) % 3]).collect() };
    let url_list = |first: usize| -> String {
        list(first)
            .iter()
            .map(|a| format!("mqtt://{a}:{MQTT_PORT}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let procs = cluster::start_nats(&mut lan.bed, &nodes, &nats);
    lan.broker = addrs[1];
    // The hub on node 1 first.
    lan.spawn_hub(&url_list(0), &["--subscribe-qos", "0"]);
    // Agents spread over the three nodes, subscribing at QoS 0 as
    // docs/deploying.md says for NATS (a QoS 1 subscription is a JetStream
    // consumer, which the nodes left after a kill took minutes to create).
    let hosts = lan.hosts.clone();
    let mut agents = Vec::new();
    for (i, &host) in hosts.iter().enumerate() {
        // NATS answers a PINGREQ only after the packets before it, and
        // each QoS 1 SUBSCRIBE creates a replicated JetStream consumer: on
        // a loaded machine an agent's dozen subscriptions take longer than
        // the bed's 2 s keep-alive (docs/deploying.md says 20 s).
        let spec = AgentSpec {
            keepalive_s: 20,
            top: "subscribe_qos = 0".into(),
            ..AgentSpec::new(AgentBroker::Cluster(list(i % 3)))
        };
        agents.push(cluster::start_agent(&mut lan.bed, host, &spec));
    }
    let probe = lan.bed.mqtt_qos0(
        lan.hub,
        &url_list(2),
        &["/+/$state", "/+/+/$description", "/netns/reply/#"],
    );
    // JetStream elects its leaders first: a minute at most on two cores.
    lan.wait_states(&probe, "online", Duration::from_secs(60));
    let names: Vec<String> = hosts.iter().map(|&h| lan.bed.name(h).to_owned()).collect();
    for (i, name) in names.iter().enumerate() {
        configure_gpio(&probe, name, 100 + 10 * i as u64);
    }
    let scan = lan.scan(&["--subscribe-qos", "0"]);
    assert!(scan.ok, "{}", scan.stderr);
    let map = cluster::map_of(&scan.report);
    assert_eq!(summary(&map), lan.expected_map());
    assert_flat_fields(&map);
    lan.wait_map("every host online", Duration::from_secs(30), |m| {
        map_summary(m) == lan.expected_online()
    });
    // The dashboard is served beside the map.
    let page = cluster::http_get(&lan.bed, lan.hub, HUB_HTTP.parse().unwrap(), "/").unwrap();
    assert!(page.contains("<title>rollcall dashboard</title>"), "{page}");
    if !kill {
        // A crash: h02's agent (on node 2; the hub is on node 1, the probe
        // on node 3) is killed, its node publishes its last will, and the
        // will crosses the cluster: the probe reads `offline`, the hub's
        // map shows it. Restarted, it is online again everywhere.
        let name = names[1].clone();
        lan.bed.kill(agents[1]);
        probe.wait(&format!("{name}'s will"), Duration::from_secs(30), |s| {
            (s.text(&format!("/{name}/$state"))
                .as_deref()
                .and_then(first_word)
                == Some("offline"))
            .then_some(())
        });
        lan.wait_map(&format!("{name} offline"), Duration::from_secs(30), |m| {
            map_summary(m).get(&name).is_some_and(|h| h.0 == "offline")
        });
        lan.bed.start(agents[1]);
        lan.wait_map(
            &format!("{name} online again"),
            Duration::from_secs(60),
            |m| map_summary(m) == lan.expected_online(),
        );
        return;
    }

    // Node 1 dies, with the hub and hosts 1, 4, 7 and 10 on it.
    let killed = Instant::now();
    lan.bed.kill(procs[0]);
    // Each agent answers its queries again, its GPIO as it was (a query
    // reaches an agent on node 1 only once it has subscribed elsewhere).
    // The issue's goal is 15 s (BENCHMARKS.md has the figures: about 10 s
    // with QoS 0 subscriptions); the bound is wider so that a loaded CI
    // machine does not fail it: this test is about recovering at all.
    for (i, name) in names.iter().enumerate() {
        wait_until_ok(
            || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    // Asked again every second: the time measured is
                    // the recovery's, to a second.
                    assert_gpio_kept_within(
                        &probe,
                        name,
                        300 + 10 * i as u64 + 1000 * attempt(),
                        Duration::from_secs(1),
                    );
                }))
                .is_ok()
            },
            Duration::from_secs(60),
            &format!("{name} answering after the kill"),
        );
    }
    let agents_back = killed.elapsed();
    // The hub is back on another node: its map has every host online, and
    // a roll-call through a surviving node finds every host.
    lan.wait_map(
        "every host online after the kill",
        Duration::from_secs(30),
        |m| map_summary(m) == lan.expected_online(),
    );
    let scan = lan.scan(&["--subscribe-qos", "0"]);
    assert!(scan.ok, "{}", scan.stderr);
    assert_eq!(summary(&cluster::map_of(&scan.report)), lan.expected_map());
    let map_back = killed.elapsed();
    // Nothing retained was lost: a new client on node 3 reads every state
    // and description.
    let late = lan
        .bed
        .mqtt_qos0(lan.hub, &url_list(2), &["/+/$state", "/+/+/$description"]);
    late.wait(
        "every host's retained state and descriptions",
        Duration::from_secs(20),
        |s| {
            names
                .iter()
                .all(|n| online_with_its_gpio(s, n))
                .then_some(())
        },
    );
    eprintln!(
        "nats node kill: every agent answered again after {agents_back:?}, \
         the hub's map and a roll-call were whole after {map_back:?}"
    );
}

/// Distinct request ids across retries.
fn attempt() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Tries `f` until it returns true; panics naming `what` after `timeout`.
fn wait_until_ok(mut f: impl FnMut() -> bool, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
    }
}

/// The bridge as examples/mosquitto/bridge.conf ships it: the tests below
/// run this very text, only its address changed (and, for the loops, the
/// lines [`Joined`] names), so the documented example and what is tested
/// cannot drift apart.
const BRIDGE_EXAMPLE: &str = include_str!("../../../examples/mosquitto/bridge.conf");

/// docs/deploying.md shows the example's settings, its comments left out:
/// they are the file's, line for line. (This one needs no namespace.)
#[test]
fn the_bridge_settings_in_the_docs_are_the_example_files() {
    let settings: Vec<&str> = BRIDGE_EXAMPLE
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    let block = format!("```\n{}\n```", settings.join("\n"));
    let docs = include_str!("../../../docs/deploying.md");
    assert!(
        docs.contains(&block),
        "docs/deploying.md has no block\n{block}"
    );
}

/// Hosts on each of the two sites.
const SITE_HOSTS: usize = 3;

/// How the two sites' Mosquittos are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joined {
    /// The example, as written, on site A's broker: nothing comes back.
    Example,
    /// The example made two-way for roll-calls and answers (`both`, as
    /// docs/deploying.md suggests for a hub on each site), to a far broker
    /// that is not told it is a bridge (`try_private false`): each answer
    /// published on site A crosses to site B and comes back once.
    EchoBack,
    /// The example on site A, and on site B a second bridge to site A
    /// carrying answers out: site B's answers reach site A by two paths.
    TwoBridges,
}

/// `text` with the line `from` replaced by `to`; the line must be there.
fn swap_line(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.lines().filter(|l| *l == from).count(),
        1,
        "the bridge example has no line `{from}`"
    );
    text.lines()
        .map(|l| if l == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Site A's bridge to site B's broker at `far`: the example, the address
/// substituted, then changed as `joined` says.
fn bridge_config(far: Ipv4Addr, joined: Joined) -> String {
    let text = swap_line(
        BRIDGE_EXAMPLE,
        "address site-b.lan:1883",
        &format!("address {far}:{MQTT_PORT}"),
    );
    match joined {
        Joined::Example | Joined::TwoBridges => text,
        Joined::EchoBack => {
            let text = swap_line(&text, "try_private true", "try_private false");
            let text = swap_line(
                &text,
                "topic /udp/request out 1",
                "topic /udp/request both 1",
            );
            swap_line(&text, "topic /stat/# in 1", "topic /stat/# both 1")
        }
    }
}

/// Two sites, each a subnet on a bridge of its own, joined by a router:
/// site A (198.18.0.0/24) has the hub's node with Mosquitto and `rollcall
/// hub --via-mqtt` on it and hosts `a01`..; site B (198.18.1.0/24) has
/// `brokerb` with Mosquitto and hosts `b01`..; every agent on its own
/// site's broker; the brokers joined as `joined` says. Traffic is counted
/// on both bridges, the router watched.
struct Sites {
    bed: TestBed,
    site_a: BridgeId,
    site_b: BridgeId,
    hub: NodeId,
    broker_b: NodeId,
    router: NodeId,
    hosts_a: Vec<NodeId>,
    hosts_b: Vec<NodeId>,
    agents_b: Vec<ProcId>,
}

impl Sites {
    fn new(test: &str, joined: Joined) -> Option<Sites> {
        let mosquitto = cluster::mosquitto_or_skip(test)?;
        let mut bed =
            harness::bed_or_skip(test, std::path::Path::new(env!("CARGO_BIN_EXE_rollcall")))?;
        let site_a = bed.add_bridge().unwrap();
        let site_b = bed.add_bridge().unwrap();
        let hub = bed.add_host("hub", site_a).unwrap();
        let hosts_a: Vec<NodeId> = (1..=SITE_HOSTS)
            .map(|i| bed.add_host(&format!("a{i:02}"), site_a).unwrap())
            .collect();
        let broker_b = bed.add_host("brokerb", site_b).unwrap();
        let hosts_b: Vec<NodeId> = (1..=SITE_HOSTS)
            .map(|i| bed.add_host(&format!("b{i:02}"), site_b).unwrap())
            .collect();
        let router = bed.add_router("gw", &[site_a, site_b]).unwrap();
        bed.count_traffic(site_a, &[router]).unwrap();
        bed.count_traffic(site_b, &[router]).unwrap();
        let (hub_addr, b_addr) = (bed.addr(hub), bed.addr(broker_b));

        // Site B's broker first, so that site A's bridge finds it at once
        // (a bridge that failed waits before trying again).
        let back = match joined {
            // Started before site A's broker, it fails its first try:
            // it tries again after a second, not Mosquitto's default 5 s.
            Joined::TwoBridges => format!(
                "connection site-a\naddress {hub_addr}:{MQTT_PORT}\ntry_private true\n\
                 cleansession true\nnotifications false\nrestart_timeout 1\n\
                 topic /stat/# out 1\n"
            ),
            Joined::Example | Joined::EchoBack => String::new(),
        };
        cluster::start_mosquitto_with(&mut bed, broker_b, &mosquitto, &back);
        let at_b = SocketAddr::from((b_addr, MQTT_PORT));
        cluster::wait_listening(&bed, broker_b, at_b, Duration::from_secs(10));
        // Bridge connections and their failures are logged at `notice`.
        let bridge = format!("log_type notice\n{}", bridge_config(b_addr, joined));
        cluster::start_mosquitto_with(&mut bed, hub, &mosquitto, &bridge);
        let broadcast = bed.broadcast(site_a);
        cluster::start_hub_on_broker(
            &mut bed,
            hub,
            broadcast,
            1,
            &["--http", HUB_HTTP, "--wait-ms", "800", "--via-mqtt"],
        );
        for &h in &hosts_a {
            cluster::start_agent(&mut bed, h, &AgentSpec::new(AgentBroker::Remote(hub_addr)));
        }
        let agents_b = hosts_b
            .iter()
            .map(|&h| {
                cluster::start_agent(&mut bed, h, &AgentSpec::new(AgentBroker::Remote(b_addr)))
            })
            .collect();
        let sites = Sites {
            bed,
            site_a,
            site_b,
            hub,
            broker_b,
            router,
            hosts_a,
            hosts_b,
            agents_b,
        };
        // Site B's states reach the hub's broker only over the bridge.
        let probe = sites.probe(&["/+/$state"]);
        let names = sites.names();
        probe.wait(
            "every host of both sites online at site A's broker",
            Duration::from_secs(30),
            |seen| {
                names
                    .iter()
                    .all(|n| {
                        seen.text(&format!("/{n}/$state"))
                            .as_deref()
                            .and_then(first_word)
                            == Some("online")
                    })
                    .then_some(())
            },
        );
        if joined == Joined::TwoBridges {
            sites.wait_two_paths();
        }
        Some(sites)
    }

    /// Waits until a message published on site B's broker under `/stat/`
    /// reaches site A's twice, once over each bridge.
    fn wait_two_paths(&self) {
        let at_a = self.probe(&["/stat/netns-ready"]);
        let url = format!("mqtt://127.0.0.1:{MQTT_PORT}");
        let at_b = self.bed.mqtt(self.broker_b, &url, &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        for marker in 0u64.. {
            at_b.publish("/stat/netns-ready", marker.to_string(), false);
            let asked = Instant::now();
            let copies = |marker: u64| {
                at_a.with(|seen| {
                    seen.log
                        .iter()
                        .filter(|(_, p, _)| *p == marker.to_string().as_bytes())
                        .count()
                })
            };
            while asked.elapsed() < Duration::from_millis(500) && copies(marker) < 2 {
                // Polling what the probe's thread records, briefly.
                std::thread::sleep(Duration::from_millis(20));
            }
            if copies(marker) >= 2 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "site B's messages do not reach site A by two paths after 30 s"
            );
        }
    }

    /// An MQTT client in the hub's node, on site A's broker.
    fn probe(&self, filters: &[&str]) -> harness::MqttProbe {
        self.bed
            .mqtt(self.hub, &format!("mqtt://127.0.0.1:{MQTT_PORT}"), filters)
    }

    /// Every host's name, site A's first.
    fn names(&self) -> Vec<String> {
        self.hosts_a
            .iter()
            .chain(&self.hosts_b)
            .map(|&h| self.bed.name(h).to_owned())
            .collect()
    }

    /// What a roll-call reaching `hosts` must bring: each host at its own
    /// address, with its services.
    fn expected(&self, hosts: &[NodeId]) -> BTreeMap<String, (String, Vec<String>, Vec<String>)> {
        expected_hosts(&self.bed, hosts)
    }

    /// `rollcall scan --json` in `node` on its own broker (127.0.0.1,
    /// as the hub runs: such a roll-call names no broker, so an agent
    /// across a bridge answers on its own broker), by broadcast on the
    /// node's subnet; waits the whole `wait_ms`.
    fn scan(&self, node: NodeId, broadcast: Ipv4Addr, extra: &[&str]) -> serde_json::Value {
        let mut args: Vec<String> = [
            "scan",
            "--json",
            "--broker",
            &format!("mqtt://127.0.0.1:{MQTT_PORT}"),
            "--broadcast",
            &broadcast.to_string(),
            "--wait-ms",
            "3000",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let out = self.bed.exec(node, self.bed.rollcall(), &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("scan --json")
    }

    /// `rollcall ARGS` in the hub's node, on site A's broker; its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        let broker = format!("mqtt://127.0.0.1:{MQTT_PORT}");
        all.extend(["--broker", &broker]);
        let out = self.bed.exec(self.hub, self.bed.rollcall(), &all);
        assert!(
            out.status.success(),
            "rollcall {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The hub's map: `GET /api/map` from inside the hub's node.
    fn map(&self) -> Result<serde_json::Value, String> {
        let body = cluster::http_get(&self.bed, self.hub, HUB_HTTP.parse().unwrap(), "/api/map")?;
        serde_json::from_str(&body).map_err(|e| format!("/api/map: {e}: {body}"))
    }

    /// One sample of the hub's `/metrics`.
    fn metric(&self, name: &str) -> Option<f64> {
        let text =
            cluster::http_get(&self.bed, self.hub, HUB_HTTP.parse().unwrap(), "/metrics").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until the hub's map has every host of both sites once,
    /// `online` at its own address with its services.
    fn wait_whole_map(&self) {
        let expected: BTreeMap<_, _> = self
            .expected(&[self.hosts_a.clone(), self.hosts_b.clone()].concat())
            .into_iter()
            .map(|(name, (addr, apps, services))| {
                (name, ("online".to_owned(), addr, apps, services))
            })
            .collect();
        let timeout = Duration::from_secs(20);
        let deadline = Instant::now() + timeout;
        loop {
            let map = self.map().map(|m| map_summary(&m));
            if map.as_ref().is_ok_and(|m| *m == expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the hub's map to show both \
                 sites, each host at its own address; last: {map:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Answers (host answers and service answers) in a scan report.
fn answer_count(report: &serde_json::Value) -> u64 {
    let (hosts, services, _) = cluster::answers(report);
    (hosts + services) as u64
}

#[test]
fn two_sites_joined_by_the_example_bridge_one_roll_call_over_mqtt_maps_both() {
    let _serial = serial();
    let Some(mut sites) = Sites::new("two_sites", Joined::Example) else {
        return;
    };
    let (hosts_a, hosts_b) = (sites.hosts_a.clone(), sites.hosts_b.clone());
    for &h in &hosts_a {
        assert_eq!(sites.bed.addr(h).octets()[..3], [198, 18, 0]);
    }
    for &h in &hosts_b {
        assert_eq!(sites.bed.addr(h).octets()[..3], [198, 18, 1]);
    }
    let gw = sites.bed.name(sites.router).to_owned();
    let counted_a = sites.bed.traffic(sites.site_a).unwrap();
    let counted_b = sites.bed.traffic(sites.site_b).unwrap();

    // A UDP roll-call stays on its subnet: a broadcast on site A finds
    // site A's hosts only, though site B's are online.
    let report = sites.scan(sites.hub, sites.bed.broadcast(sites.site_a), &[]);
    assert_eq!(
        summary(&cluster::map_of(&report)),
        sites.expected(&hosts_a),
        "{report}"
    );
    // And one on site B finds site B's only.
    let report = sites.scan(sites.broker_b, sites.bed.broadcast(sites.site_b), &[]);
    assert_eq!(
        summary(&cluster::map_of(&report)),
        sites.expected(&hosts_b),
        "{report}"
    );
    // The router forwarded no UDP onto either subnet (counted at its
    // port on each bridge), while both bridges carried roll-calls (so the
    // counters count) and the router carried the brokers' bridge (TCP).
    let a = sites.bed.traffic(sites.site_a).unwrap().since(&counted_a);
    let b = sites.bed.traffic(sites.site_b).unwrap().since(&counted_b);
    assert!(a.get("udp_sent").packets > 0, "{a:?}");
    assert!(b.get("udp_sent").packets > 0, "{b:?}");
    assert_eq!(a.get(&format!("udp_port_{gw}")).packets, 0, "{a:?}");
    assert_eq!(b.get(&format!("udp_port_{gw}")).packets, 0, "{b:?}");
    assert!(a.get(&format!("tcp_port_{gw}")).packets > 0, "{a:?}");
    assert!(b.get(&format!("tcp_port_{gw}")).packets > 0, "{b:?}");

    // Over MQTT the roll-call crosses the bridge: both sites answer, each
    // host with its address on its own subnet, each answer once.
    let report = sites.scan(
        sites.hub,
        sites.bed.broadcast(sites.site_a),
        &["--via-mqtt", "--expect", &(2 * SITE_HOSTS).to_string()],
    );
    let map = cluster::map_of(&report);
    assert_eq!(
        summary(&map),
        sites.expected(&[hosts_a.clone(), hosts_b.clone()].concat()),
        "{report}"
    );
    assert_flat_fields(&map);
    assert_eq!(report["duplicates"], 0, "{report}");

    // The hub's map, from its own roll-calls and the retained states and
    // descriptions that came over the bridge.
    sites.wait_whole_map();
    let descriptions = sites.probe(&["/+/+/$description"]);
    let names = sites.names();
    descriptions.wait(
        "every host's descriptions at site A's broker",
        Duration::from_secs(10),
        |seen| {
            names
                .iter()
                .all(|n| {
                    SERVICES
                        .iter()
                        .all(|s| seen.last.contains_key(&format!("/{n}/{s}/$description")))
                })
                .then_some(())
        },
    );

    // Queries and sets from site A reach a site-B host, and their replies
    // come back: configured from a client, then `rollcall set` and `get`.
    let probe = sites.probe(&["/stat/netns-reply/#"]);
    let far = sites.bed.name(hosts_b[0]).to_owned();
    assert_ok(&request_at(
        &probe,
        &format!("/{far}/gpio/control"),
        gpio_config(&far),
        1,
        "/stat/netns-reply",
        Duration::from_secs(10),
    ));
    let lamp = format!("lamp_{far}");
    sites.cli(&["set", &far, "gpio", &lamp, "1"]);
    let level: serde_json::Value =
        serde_json::from_str(&sites.cli(&["get", &far, "gpio", &format!("output/{lamp}")]))
            .unwrap();
    assert_eq!(level["value"], 1, "{level}");

    // A far host's last will crosses too: its agent killed, the map shows
    // it offline (2 s keep-alive).
    sites.bed.kill(sites.agents_b[SITE_HOSTS - 1]);
    let gone = sites.bed.name(hosts_b[SITE_HOSTS - 1]).to_owned();
    wait_until(
        &format!("{gone} offline in the hub's map"),
        Duration::from_secs(15),
        || {
            sites.map().is_ok_and(|m| {
                map_summary(&m)
                    .get(&gone)
                    .is_some_and(|(status, ..)| status == "offline")
            })
        },
    );

    // The hub called the roll over MQTT all along and saw no copies.
    assert!(sites.metric("rollcall_rollcalls_total").unwrap_or(0.0) > 0.0);
    assert_eq!(sites.metric("rollcall_answers_duplicate_total"), Some(0.0));
}

#[test]
fn two_sites_whose_bridge_sends_answers_back_each_answer_counts_once_and_copies_are_counted() {
    bridge_loop("bridge_echo", Joined::EchoBack);
}

#[test]
fn two_sites_joined_by_two_bridges_each_answer_counts_once_and_copies_are_counted() {
    bridge_loop("two_bridges", Joined::TwoBridges);
}

/// A roll-call over MQTT to two sites whose bridges bring some answers
/// twice: every host and service is in the report once, at its own
/// address, and the copies are counted, exactly: site A's answers (they go
/// out and come back) or site B's (they come by two paths). The hub counts
/// them too, and its map is whole.
fn bridge_loop(test: &str, joined: Joined) {
    let _serial = serial();
    let Some(sites) = Sites::new(test, joined) else {
        return;
    };
    let all = [sites.hosts_a.clone(), sites.hosts_b.clone()].concat();
    // No --expect: the whole wait, so that every copy is in.
    let report = sites.scan(
        sites.hub,
        sites.bed.broadcast(sites.site_a),
        &["--via-mqtt"],
    );
    let map = cluster::map_of(&report);
    assert_eq!(summary(&map), sites.expected(&all));
    // Each site's answers, from the report.
    let from = |hosts: &[NodeId]| -> u64 {
        let names: Vec<String> = hosts
            .iter()
            .map(|&h| sites.bed.name(h).to_owned())
            .collect();
        map.iter()
            .filter(|(name, _)| names.contains(name))
            .map(|(_, v)| 1 + v.services.len() as u64)
            .sum()
    };
    let copied = match joined {
        Joined::EchoBack => from(&sites.hosts_a),
        Joined::TwoBridges => from(&sites.hosts_b),
        Joined::Example => 0,
    };
    assert_eq!(answer_count(&report), from(&all));
    assert_eq!(copied, (SITE_HOSTS * (1 + SERVICES.len())) as u64);
    assert_eq!(
        report["duplicates"], copied,
        "other ids: {}",
        report["other_ids"]
    );
    // The hub, calling the roll every second, counts the copies it drops.
    wait_until(
        "the hub's count of answers seen twice",
        Duration::from_secs(15),
        || {
            sites
                .metric("rollcall_answers_duplicate_total")
                .is_some_and(|n| n > 0.0)
        },
    );
    sites.wait_whole_map();
}
