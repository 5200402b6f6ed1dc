//! Home Assistant discovery over a real Mosquitto, with a real agent process
//! (so that it can be killed) and the hub in this process; the test plays
//! Home Assistant with an MQTT session of its own: it reads the retained
//! configs, drives a switch through its `command_topic` and reads the state
//! back, watches availability when the agent is killed, sees a config
//! cleared when its pin is deconfigured, sends Home Assistant's birth
//! message, and restarts the hub.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rollcall_hub::ha::{HaConfig, check_config};
use rollcall_hub::{HubConfig, HubShared, run_hub};
use rollcall_net::{BrokerUrl, Message, Qos, Session, SessionConfig, SessionHandle};
use rollcall_proto::Topics;
use rollcall_testsupport::Running;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::{online, scan_options, until};
use crate::support::*;

/// An upper bound on each wait, never a pause.
const WAIT: Duration = Duration::from_secs(20);

const SWITCH: &str = "homeassistant/switch/ha1/gpio_lamp/config";
const BUTTON: &str = "homeassistant/binary_sensor/ha1/gpio_button/config";
const HOST: &str = "homeassistant/rollcall/host/ha1";
const HUB: &str = "homeassistant/rollcall/hub";
const GHOST: &str = "homeassistant/sensor/ghost/system_uptime/config";

/// The test's Home Assistant: the latest payload of every topic it hears
/// (an empty one is a cleared retained message), and how many messages
/// came on each.
struct HaSide {
    handle: SessionHandle,
    incoming: mpsc::Receiver<Message>,
    latest: BTreeMap<String, Vec<u8>>,
    count: BTreeMap<String, usize>,
}

impl HaSide {
    fn take(&mut self, msg: Message) {
        *self.count.entry(msg.topic.clone()).or_default() += 1;
        self.latest.insert(msg.topic, msg.payload.to_vec());
    }

    /// Takes messages until `ok` holds, within [`WAIT`].
    async fn until(&mut self, what: &str, ok: impl Fn(&HaSide) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !ok(self) {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(msg)) => self.take(msg),
                Ok(None) => panic!("{what}: the session ended"),
                Err(_) => panic!(
                    "{what}: not within {WAIT:?}; heard {:#?}",
                    self.latest
                        .iter()
                        .map(|(t, p)| (t, String::from_utf8_lossy(p)))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    fn config(&self, topic: &str) -> Option<Value> {
        self.latest
            .get(topic)
            .filter(|p| !p.is_empty())
            .map(|p| serde_json::from_slice(p).expect("a config is JSON"))
    }

    fn text(&self, topic: &str) -> Option<&str> {
        self.latest
            .get(topic)
            .and_then(|p| std::str::from_utf8(p).ok())
    }

    /// The value a rollcall `{"value":..}` payload carries.
    fn value(&self, topic: &str) -> Option<Value> {
        self.latest
            .get(topic)
            .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            .map(|v| v["value"].clone())
    }

    fn configs(&self) -> Vec<String> {
        self.latest
            .iter()
            .filter(|(t, p)| t.ends_with("/config") && !p.is_empty())
            .map(|(t, _)| t.clone())
            .collect()
    }
}

fn start_hub(
    broker: &BrokerUrl,
) -> (
    Arc<HubShared>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), rollcall_hub::HubError>>,
) {
    let shared = Arc::new(HubShared::new(Topics::default()));
    let stop = CancellationToken::new();
    // Roll-calls to a port nobody hears: the map comes from retained state.
    let config = HubConfig {
        ha_discovery: Some(HaConfig {
            orphan_grace: Duration::from_secs(2),
            birth_delay_max: Duration::from_millis(300),
            ..HaConfig::new("homeassistant")
        }),
        ..HubConfig::new(
            broker.clone(),
            scan_options(free_udp_port(), Duration::from_secs(60), None),
            Duration::from_secs(3600),
        )
    };
    let hub = tokio::spawn(run_hub(config, Arc::clone(&shared), stop.clone()));
    (shared, stop, hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovery_over_mosquitto() {
    let test = "home_assistant_discovery_over_mosquitto";
    let Some(mosquitto) = Mosquitto::for_test(test) else {
        return;
    };
    let broker = mosquitto.url();
    let dir = tempfile::tempdir().unwrap();
    // A real agent process, with a one-second keepalive: killed, its will
    // comes about 1.5 s later.
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"ha1\"\nbroker = \"{broker}\"\nudp_port = {}\nstate_dir = \"{}\"\nsim = true\nkeepalive_s = 1\n",
            free_udp_port(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut agent = Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["agent", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    let tracker = TaskTracker::new();
    let ha_stop = CancellationToken::new();
    let session = Session::start(
        SessionConfig::new(broker.clone(), format!("ha-{}", unique())),
        ha_stop.clone(),
        &tracker,
    )
    .unwrap();
    session.handle.wait_connected(WAIT).await.unwrap();
    for filter in ["homeassistant/#", "/ha1/$state", "/ha1/gpio/+/+"] {
        session
            .handle
            .subscribe_confirmed_with_qos(filter, Qos::AtMostOnce, WAIT)
            .await
            .unwrap();
    }
    let mut ha = HaSide {
        handle: session.handle.clone(),
        incoming: session.incoming,
        latest: BTreeMap::new(),
        count: BTreeMap::new(),
    };

    let (shared, stop, hub) = start_hub(&broker);
    until(&shared, "ha1 online with its gpio service", |s| {
        online(s, "ha1") && s.host("ha1").is_some_and(|h| h.service("gpio").is_some())
    })
    .await;
    let answer = shared
        .request(
            "/ha1/gpio/control",
            json!({"outputs":[{"name":"lamp","pin":23}],
                   "inputs":[{"name":"button","pin":22,"pull":"down"}]}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(answer["ok"], true, "{answer}");

    // The configs appear, each as Home Assistant requires.
    ha.until("the lamp's switch and the button's binary sensor", |h| {
        h.config(SWITCH).is_some() && h.config(BUTTON).is_some()
    })
    .await;
    assert_eq!(ha.text(HUB), Some("online"));
    assert_eq!(ha.text(HOST), Some("online"));
    for topic in ha.configs() {
        let component = topic.split('/').nth(1).unwrap();
        let config = ha.config(&topic).unwrap();
        assert_eq!(check_config(component, &config), Ok(()), "{topic}");
    }
    let switch = ha.config(SWITCH).unwrap();
    assert_eq!(switch["command_topic"], "/ha1/gpio/set/lamp");
    assert_eq!(switch["state_topic"], "/ha1/gpio/output/lamp");
    assert_eq!(switch["availability"][0]["topic"], "/ha1/$state");
    assert_eq!(switch["availability"][1]["topic"], HOST);
    // The first word of the agent's `$state`, as the template takes it.
    let state = ha.text("/ha1/$state").unwrap().to_owned();
    assert_eq!(state.split(' ').next(), Some("online"), "{state}");

    // What has no entity is in the hub's status (`/api/map`).
    let status = shared.ha_status().unwrap();
    assert_eq!(status.prefix, "homeassistant");
    assert!(
        status
            .skipped
            .iter()
            .any(|s| s.host == "ha1" && s.service == "gpio" && s.interface == "outputs"),
        "{status:?}"
    );
    assert_eq!(status.entities, ha.configs().len());

    // The round trip: Home Assistant's command reaches the output, and its
    // state comes back on the state topic.
    for (payload, level) in [("payload_on", 1), ("payload_off", 0)] {
        ha.handle
            .publish(
                switch["command_topic"].as_str().unwrap(),
                switch[payload].as_str().unwrap(),
                Qos::AtMostOnce,
                false,
            )
            .await
            .unwrap();
        ha.until("the lamp's state", |h| {
            h.value("/ha1/gpio/output/lamp") == Some(json!(level))
        })
        .await;
    }
    // The button's binary sensor follows the (simulated) pin.
    let button = ha.config(BUTTON).unwrap();
    assert_eq!(button["state_topic"], "/ha1/gpio/input/button");
    ha.handle
        .publish("/ha1/sim/gpio/22", "1", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    ha.until("the button pressed", |h| {
        h.value("/ha1/gpio/input/button") == Some(json!(1))
    })
    .await;

    // The lamp is deconfigured: its config is cleared, the button's stays.
    let answer = shared
        .request(
            "/ha1/gpio/control",
            json!({"inputs":[{"name":"button","pin":22,"pull":"down"}]}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    ha.until("the lamp's config cleared", |h| {
        h.latest.get(SWITCH).is_some_and(Vec::is_empty)
    })
    .await;
    assert!(ha.config(BUTTON).is_some());

    // Home Assistant's birth: every config is announced again.
    let before = ha.count.clone();
    let configs = ha.configs();
    ha.handle
        .publish("homeassistant/status", "online", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    ha.until("every config announced again", |h| {
        configs.iter().all(|t| h.count.get(t) > before.get(t))
    })
    .await;

    // The agent is killed: its will says offline, and so does the hub.
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    ha.until("ha1 unavailable", |h| {
        h.text("/ha1/$state")
            .is_some_and(|s| s.split(' ').next() == Some("offline"))
            && h.text(HOST) == Some("offline")
    })
    .await;
    assert!(
        ha.config(BUTTON).is_some(),
        "an offline host keeps its entities"
    );

    // The hub stops cleanly (it says so), and a new one starts: it
    // publishes nothing twice, and clears what an earlier run left that
    // the map does not have (a host gone while no hub ran).
    stop.cancel();
    hub.await.unwrap().unwrap();
    ha.until("the hub says offline", |h| h.text(HUB) == Some("offline"))
        .await;
    let ghost = ha.config(BUTTON).unwrap();
    let mut ghost = ghost.clone();
    ghost["unique_id"] = "rollcall:ghost:sensor:system_uptime".into();
    ha.handle
        .publish(GHOST, ghost.to_string(), Qos::AtLeastOnce, true)
        .await
        .unwrap();
    ha.until("the ghost retained", |h| h.config(GHOST).is_some())
        .await;
    let before = ha.count.clone();
    let (shared, stop, hub) = start_hub(&broker);
    ha.until("the ghost cleared by the new hub", |h| {
        h.latest.get(GHOST).is_some_and(Vec::is_empty)
    })
    .await;
    assert_eq!(ha.text(HUB), Some("online"));
    for topic in ha.configs() {
        assert_eq!(
            ha.count.get(&topic),
            before.get(&topic),
            "{topic} published again by the new hub"
        );
    }
    assert!(ha.config(BUTTON).is_some());
    assert!(shared.ha_status().is_some());

    stop.cancel();
    hub.await.unwrap().unwrap();
    ha_stop.cancel();
    tracker.close();
    tracker.wait().await;
}
