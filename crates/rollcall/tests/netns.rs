//! The cluster on real hosts: every host a Linux network namespace on a
//! bridge in a namespace of its own, each running a real `rollcall agent`
//! process; the hub in its own namespace; roll-calls as real broadcasts on
//! the bridge (198.18.0.0/15). Shared and per-host brokers, crashes, links
//! going down, broker restarts, packet loss, a hostile host, and a host
//! behind a router; the hub's map read over HTTP. Needs root
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
        self.hosts
            .iter()
            .map(|&h| {
                (
                    self.bed.name(h).to_owned(),
                    (
                        self.bed.addr(h).to_string(),
                        SERVICES.map(str::to_owned).to_vec(),
                        SERVICES.map(str::to_owned).to_vec(),
                    ),
                )
            })
            .collect()
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
    request_within(probe, topic, body, id, Duration::from_secs(10))
}

/// [`request`], waiting `wait` for the answer.
fn request_within(
    probe: &harness::MqttProbe,
    topic: &str,
    body: serde_json::Value,
    id: u64,
    wait: Duration,
) -> serde_json::Value {
    let reply = format!("/netns/reply/{id}");
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
    let config = request_within(
        probe,
        &format!("/{host}/gpio/get/config"),
        serde_json::json!({}),
        id,
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
    let level = request_within(
        probe,
        &format!("/{host}/gpio/get/output/lamp_{host}"),
        serde_json::json!({}),
        id + 1,
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
    let rollcall = lan.bed.rollcall().to_path_buf();
    lan.bed.spawn(
        lan.hub,
        "hub",
        &rollcall,
        &[
            "hub",
            "--broker",
            &broker_url,
            "--broadcast",
            &lan.broadcast().to_string(),
            "--scan-every",
            "1",
            "--wait-ms",
            "800",
            "--http",
            HUB_HTTP,
        ],
    );
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
                .all(|n| {
                    s.text(&format!("/{n}/$state"))
                        .as_deref()
                        .and_then(first_word)
                        == Some("online")
                        && s.text(&format!("/{n}/system/$description")).is_some()
                        && s.text(&format!("/{n}/gpio/$description"))
                            .is_some_and(|d| d.contains(&format!("lamp_{n}")))
                })
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
    let rollcall = lan.bed.rollcall().to_path_buf();
    // The hub on node 1 first.
    lan.bed.spawn(
        lan.hub,
        "hub",
        &rollcall,
        &[
            "hub",
            "--broker",
            &url_list(0),
            "--broadcast",
            &lan.broadcast().to_string(),
            "--scan-every",
            "1",
            "--wait-ms",
            "800",
            "--http",
            HUB_HTTP,
            "--subscribe-qos",
            "0",
        ],
    );
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
                .all(|n| {
                    s.text(&format!("/{n}/$state"))
                        .as_deref()
                        .and_then(first_word)
                        == Some("online")
                        && s.text(&format!("/{n}/system/$description")).is_some()
                        && s.text(&format!("/{n}/gpio/$description"))
                            .is_some_and(|d| d.contains(&format!("lamp_{n}")))
                })
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
