//! Discovery's pure parts: the demo cluster's configs field by field against
//! Home Assistant's documented schema for each component, the checks that
//! refuse a config, ids, and what the hub believes retained.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rollcall_proto::{Description, Interface, Interfaces, ValueType};
use serde_json::{Value, json};

use super::*;
use crate::{HostSnapshot, HostStatus, MapSnapshot, ServiceSnapshot};

/// The demo's map as `/api/map` served it (`rollcall demo --ha-discovery`),
/// values left out: three hosts, thirteen services, as their agents
/// described them.
fn demo_map() -> MapSnapshot {
    serde_json::from_str(include_str!("testdata/demo_map.json")).expect("the fixture reads")
}

fn configs(d: &Discovery) -> BTreeMap<String, Value> {
    d.messages
        .iter()
        .filter(|(t, _)| t.ends_with("/config"))
        .map(|(t, p)| {
            (
                t.clone(),
                serde_json::from_slice(p).expect("a config is JSON"),
            )
        })
        .collect()
}

fn config<'a>(c: &'a BTreeMap<String, Value>, topic: &str) -> &'a Value {
    c.get(topic)
        .unwrap_or_else(|| panic!("no {topic}; have {:?}", c.keys().collect::<Vec<_>>()))
}

/// What every config of a host's entity must carry (Home Assistant's MQTT
/// docs, "Using an MQTT entity"): a unique id, a device with identifiers,
/// the host's availability with the first-word template, rollcall's origin.
fn check_common(topic: &str, c: &Value, host: &str) {
    let node = topic.split('/').nth(2).unwrap();
    let object = topic.split('/').nth(3).unwrap();
    let component = topic.split('/').nth(1).unwrap();
    assert_eq!(
        c["unique_id"],
        format!("rollcall:{node}:{component}:{object}"),
        "{topic}"
    );
    assert_eq!(
        c["device"]["identifiers"],
        json!([format!("rollcall_{node}")])
    );
    assert_eq!(c["device"]["name"], host);
    assert_eq!(c["device"]["model"], "rollcall agent");
    assert_eq!(c["device"]["sw_version"], "0.1.0");
    assert_eq!(c["device"]["via_device"], HUB_IDENTIFIER);
    assert_eq!(c["availability_mode"], "all");
    assert_eq!(
        c["availability"],
        json!([
            {"topic": format!("/{host}/$state"), "value_template": "{{ value.split(' ')[0] }}",
             "payload_available": "online", "payload_not_available": "offline"},
            {"topic": format!("homeassistant/rollcall/host/{node}"),
             "payload_available": "online", "payload_not_available": "offline"},
        ]),
        "{topic}"
    );
    assert_eq!(c["origin"]["name"], "rollcall");
    assert!(c["name"].as_str().is_some_and(|n| !n.is_empty()));
}

#[test]
fn the_demo_clusters_configs_match_home_assistants_schema_field_by_field() {
    let d = discovery(&demo_map(), &HaOptions::new("homeassistant"));
    let c = configs(&d);
    let expected: BTreeSet<&str> = [
        "binary_sensor/rollcall_hub/hub",
        // pizero1: DHT22, display, system
        "sensor/pizero1/dht22_temperature",
        "sensor/pizero1/dht22_humidity",
        "text/pizero1/display_text",
        "event/pizero1/display_buttons",
        "sensor/pizero1/system_uptime",
        "sensor/pizero1/system_mem_total",
        "sensor/pizero1/system_mem_available",
        "sensor/pizero1/system_cpu_temp",
        // pizero2: the notes' GPIO, ADC, DAC, system
        "switch/pizero2/gpio_pump_drive",
        "switch/pizero2/gpio_lamp",
        "number/pizero2/gpio_sonar_angle",
        "binary_sensor/pizero2/gpio_button",
        "binary_sensor/pizero2/gpio_float_switch",
        "sensor/pizero2/ain_a0",
        "sensor/pizero2/ain_a1",
        "sensor/pizero2/ain_a2",
        "sensor/pizero2/ain_a3",
        "number/pizero2/dac_out0",
        "sensor/pizero2/system_uptime",
        "sensor/pizero2/system_mem_total",
        "sensor/pizero2/system_mem_available",
        "sensor/pizero2/system_cpu_temp",
        // pibot01: sonar, system
        "sensor/pibot01/sonar_distance",
        "sensor/pibot01/system_uptime",
        "sensor/pibot01/system_mem_total",
        "sensor/pibot01/system_mem_available",
        "sensor/pibot01/system_cpu_temp",
    ]
    .into_iter()
    .collect();
    let got: BTreeSet<String> = c
        .keys()
        .map(|t| {
            t.strip_prefix("homeassistant/")
                .and_then(|t| t.strip_suffix("/config"))
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        got,
        expected
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(d.entities, expected.len());
    // Each host's availability, and nothing else besides the configs.
    for host in ["pizero1", "pizero2", "pibot01"] {
        assert_eq!(
            d.messages[&format!("homeassistant/rollcall/host/{host}")],
            b"online"
        );
    }
    assert_eq!(d.messages.len(), expected.len() + 3);
    // Unique ids are unique (Home Assistant keeps entities by them).
    let ids: BTreeSet<&str> = c
        .values()
        .map(|v| v["unique_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), c.len());
    for (topic, v) in &c {
        if !topic.contains("/rollcall_hub/") {
            let host = v["device"]["name"].as_str().unwrap();
            check_common(topic, v, host);
        }
        let component = topic.split('/').nth(1).unwrap();
        assert_eq!(check_config(component, v), Ok(()), "{topic}");
    }

    // switch: command_topic required; payload_on/off sent; state read.
    let pump = config(&c, "homeassistant/switch/pizero2/gpio_pump_drive/config");
    assert_eq!(pump["command_topic"], "/pizero2/gpio/set/pump_drive");
    assert_eq!(pump["payload_on"], "1");
    assert_eq!(pump["payload_off"], "0");
    assert_eq!(pump["state_topic"], "/pizero2/gpio/output/pump_drive");
    assert_eq!(pump["value_template"], BOOL_TEMPLATE);
    assert_eq!(pump["state_on"], "ON");
    assert_eq!(pump["state_off"], "OFF");
    assert_eq!(pump["name"], "gpio pump_drive");
    assert!(pump.get("entity_category").is_none());

    // binary_sensor: state_topic required.
    let button = config(&c, "homeassistant/binary_sensor/pizero2/gpio_button/config");
    assert_eq!(button["state_topic"], "/pizero2/gpio/input/button");
    assert_eq!(button["value_template"], BOOL_TEMPLATE);
    assert_eq!(button["payload_on"], "ON");
    assert_eq!(button["payload_off"], "OFF");
    assert!(button.get("command_topic").is_none());

    // number: command_topic required, min < max, step >= 0.001.
    let pwm = config(&c, "homeassistant/number/pizero2/gpio_sonar_angle/config");
    assert_eq!(pwm["command_topic"], "/pizero2/gpio/set/sonar_angle");
    assert_eq!(pwm["state_topic"], "/pizero2/gpio/pwm/sonar_angle");
    assert_eq!(pwm["value_template"], VALUE_TEMPLATE);
    assert_eq!(
        (&pwm["min"], &pwm["max"], &pwm["step"]),
        (&json!(0.0), &json!(100.0), &json!(0.1))
    );
    assert_eq!(pwm["unit_of_measurement"], "%");
    let dac = config(&c, "homeassistant/number/pizero2/dac_out0/config");
    assert_eq!(dac["command_topic"], "/pizero2/dac/set/out0");
    assert_eq!(dac["state_topic"], "/pizero2/dac/out0");
    assert_eq!(dac["min"], 0.0);
    assert_eq!(dac["max"], 3.2991943359375);
    assert_eq!(dac["step"], 0.001);
    assert_eq!(dac["unit_of_measurement"], "V");

    // sensor: state_topic required; device class, unit and state class
    // where known, in a unit the class takes.
    let sensor = |topic: &str, class: Option<&str>, unit: &str, state: &str| {
        let s = config(&c, topic);
        assert_eq!(s["state_topic"], state, "{topic}");
        assert_eq!(s["value_template"], VALUE_TEMPLATE, "{topic}");
        assert_eq!(s["unit_of_measurement"], unit, "{topic}");
        assert_eq!(s["state_class"], "measurement", "{topic}");
        assert_eq!(
            s.get("device_class").and_then(Value::as_str),
            class,
            "{topic}"
        );
        assert!(s.get("options").is_none(), "options are for enum sensors");
        assert!(s.get("command_topic").is_none());
        s
    };
    for (t, class, unit, state) in [
        (
            "sensor/pizero1/dht22_temperature",
            Some("temperature"),
            "°C",
            "/pizero1/dht22/temperature",
        ),
        (
            "sensor/pizero1/dht22_humidity",
            Some("humidity"),
            "%",
            "/pizero1/dht22/humidity",
        ),
        (
            "sensor/pibot01/sonar_distance",
            Some("distance"),
            "m",
            "/pibot01/sonar/distance",
        ),
        (
            "sensor/pizero2/ain_a0",
            Some("voltage"),
            "V",
            "/pizero2/ain/a0",
        ),
    ] {
        let s = sensor(&format!("homeassistant/{t}/config"), class, unit, state);
        assert!(
            s.get("entity_category").is_none(),
            "{t} is not a diagnostic"
        );
    }
    // The host's own readings: diagnostics.
    for (item, class, unit) in [
        ("uptime", Some("duration"), "s"),
        ("mem_total", Some("data_size"), "kB"),
        ("mem_available", Some("data_size"), "kB"),
        ("cpu_temp", Some("temperature"), "°C"),
    ] {
        let s = sensor(
            &format!("homeassistant/sensor/pizero1/system_{item}/config"),
            class,
            unit,
            &format!("/pizero1/system/{item}"),
        );
        assert_eq!(s["entity_category"], "diagnostic");
    }

    // text: command_topic required; max at most 255.
    let text = config(&c, "homeassistant/text/pizero1/display_text/config");
    assert_eq!(text["command_topic"], "/pizero1/display/text");
    assert_eq!(text["max"], 255);
    assert!(
        text.get("state_topic").is_none(),
        "the display has no text state"
    );

    // event: state_topic and event_types required.
    let buttons = config(&c, "homeassistant/event/pizero1/display_buttons/config");
    assert_eq!(buttons["state_topic"], "/pizero1/display/buttons");
    assert_eq!(buttons["event_types"], json!(["press", "release"]));
    assert_eq!(buttons["value_template"], BUTTON_TEMPLATE);

    // The hub's own device, which every host's names as `via_device`.
    let hub = config(&c, "homeassistant/binary_sensor/rollcall_hub/hub/config");
    assert_eq!(hub["device"]["identifiers"], json!([HUB_IDENTIFIER]));
    assert_eq!(hub["state_topic"], "homeassistant/rollcall/hub");
    assert_eq!(hub["device_class"], "connectivity");
    assert!(hub["device"].get("via_device").is_none());

    // What has no entity is listed, with why.
    let skipped: BTreeSet<(&str, &str, &str)> = d
        .skipped
        .iter()
        .map(|s| (s.host.as_str(), s.service.as_str(), s.interface.as_str()))
        .collect();
    for s in &d.skipped {
        assert!(!s.reason.is_empty());
    }
    for (host, service, interface) in [
        ("pibot01", "display_driver", "display"),
        ("pibot01", "irrigation", "humidity"),
        ("pizero2", "gpio", "outputs"),
        ("pizero1", "display", "contents"),
        ("pizero1", "system", "load"),
        ("pizero2", "dac", "error"),
    ] {
        assert!(
            skipped.contains(&(host, service, interface)),
            "{host} {service} {interface} not listed"
        );
    }
}

fn host(name: &str, services: Vec<ServiceSnapshot>) -> HostSnapshot {
    HostSnapshot {
        name: name.into(),
        ipaddr: None,
        extaddr: None,
        online: true,
        status: HostStatus::Online,
        status_since_ms: 0,
        last_seen_ms: 0,
        version: None,
        apps: None,
        services,
        pins: Vec::new(),
        pin_conflicts: Vec::new(),
    }
}

fn service(name: &str, inputs: Vec<Interface>, outputs: Vec<Interface>) -> ServiceSnapshot {
    ServiceSnapshot {
        name: name.into(),
        present: true,
        health: None,
        description: Some(Description {
            function: name.into(),
            doc: None,
            interfaces: Interfaces {
                inputs,
                outputs,
                ..Interfaces::default()
            },
            health: None,
        }),
        described_by: Some("retained".into()),
        inputs: None,
        outputs: None,
        control: None,
        last_seen_ms: 0,
        values: BTreeMap::new(),
    }
}

fn map(hosts: Vec<HostSnapshot>) -> MapSnapshot {
    MapSnapshot {
        now_ms: 0,
        hosts,
        edges: Vec::new(),
        unfed: Vec::new(),
        unread: Vec::new(),
        edge_stale_after_ms: 600_000,
    }
}

#[test]
fn a_foreign_service_with_typed_interfaces_gets_entities_the_same_way() {
    let board = service(
        "board",
        vec![
            Interface::new("message", "/h1/board/set/message", ValueType::String),
            Interface::new("level", "/h1/board/set/level", ValueType::Int).range(0.0, 10.0),
        ],
        vec![
            Interface::new("message", "/h1/board/message", ValueType::String),
            Interface::new("level", "/h1/board/level", ValueType::Int),
            Interface::new("outside", "/h1/board/outside", ValueType::Float).unit("°F"),
            Interface::new("tank", "/h1/board/tank", ValueType::Float).unit("%"),
            Interface::new("door", "/h1/board/door", ValueType::Bool),
        ],
    );
    let d = discovery(&map(vec![host("h1", vec![board])]), &HaOptions::new("ha"));
    let c = configs(&d);
    let text = config(&c, "ha/text/h1/board_message/config");
    assert_eq!(text["command_topic"], "/h1/board/set/message");
    assert_eq!(text["state_topic"], "/h1/board/message");
    let level = config(&c, "ha/number/h1/board_level/config");
    assert_eq!(
        (&level["min"], &level["max"], &level["step"]),
        (&json!(0.0), &json!(10.0), &json!(1.0))
    );
    assert_eq!(level["state_topic"], "/h1/board/level");
    assert_eq!(
        config(&c, "ha/sensor/h1/board_outside/config")["device_class"],
        "temperature"
    );
    // `%` is a humidity only when the name says so.
    let tank = config(&c, "ha/sensor/h1/board_tank/config");
    assert!(tank.get("device_class").is_none());
    assert_eq!(tank["unit_of_measurement"], "%");
    assert_eq!(
        config(&c, "ha/binary_sensor/h1/board_door/config")["state_topic"],
        "/h1/board/door"
    );
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    assert_eq!(c.len(), 6, "the hub and five entities");
}

#[test]
fn an_interface_that_cannot_be_mapped_is_skipped_with_its_reason_never_half_published() {
    let bad = service(
        "odd",
        vec![
            // max below min: a number Home Assistant would refuse.
            Interface::new("speed", "/h1/odd/set/speed", ValueType::Float).range(10.0, 1.0),
            // no range at all.
            Interface::new("gain", "/h1/odd/set/gain", ValueType::Float),
            // a wildcard where Home Assistant publishes.
            Interface::new("relay", "/h1/odd/set/+", ValueType::Bool),
        ],
        vec![
            // a unit no device class takes: a plain sensor, still published.
            Interface::new("flux", "/h1/odd/flux", ValueType::Float).unit("Wb"),
        ],
    );
    let d = discovery(
        &map(vec![host("h1", vec![bad])]),
        &HaOptions::new("homeassistant"),
    );
    let c = configs(&d);
    let reasons: BTreeMap<&str, &str> = d
        .skipped
        .iter()
        .map(|s| (s.interface.as_str(), s.reason.as_str()))
        .collect();
    assert!(reasons["speed"].contains("min"), "{reasons:?}");
    assert!(reasons["gain"].contains("range"), "{reasons:?}");
    assert!(reasons["relay"].contains("command_topic"), "{reasons:?}");
    assert_eq!(reasons.len(), 3);
    assert!(
        c.keys().all(|t| !t.contains("odd_speed")
            && !t.contains("odd_relay")
            && !t.contains("odd_gain"))
    );
    let flux = config(&c, "homeassistant/sensor/h1/odd_flux/config");
    assert!(flux.get("device_class").is_none());
    assert_eq!(flux["unit_of_measurement"], "Wb");
}

/// A description from anyone who can publish on the broker: names and
/// topics that would make topics or configs too long for a broker are cut
/// or skipped, never published.
#[test]
fn huge_names_and_topics_are_cut_or_skipped() {
    let long_topic = format!("/h1/s/{}", "t".repeat(20_000));
    let s = service(
        &"s".repeat(64),
        vec![],
        vec![
            Interface::new("n".repeat(1_000), "/h1/s/a", ValueType::Float),
            Interface::new("b", long_topic, ValueType::Float),
        ],
    );
    let d = discovery(
        &map(vec![host("h1", vec![s])]),
        &HaOptions::new("homeassistant"),
    );
    for (topic, payload) in &d.messages {
        assert!(topic.len() <= rollcall_proto::topic::MAX_TOPIC, "{topic}");
        assert!(payload.len() <= MAX_CONFIG);
    }
    assert_eq!(d.entities, 2, "the hub and the long-named reading");
    assert_eq!(d.skipped.len(), 1);
    assert!(d.skipped[0].reason.contains("bytes"), "{:?}", d.skipped);
}

#[test]
fn a_host_that_is_not_online_says_so_and_a_host_that_is_gone_leaves_nothing() {
    let mut h = host(
        "h1",
        vec![service(
            "s",
            vec![],
            vec![Interface::new("t", "/h1/s/t", ValueType::Float)],
        )],
    );
    let options = HaOptions::new("homeassistant");
    for status in [HostStatus::Offline, HostStatus::Missing] {
        h.status = status;
        let d = discovery(&map(vec![h.clone()]), &options);
        assert_eq!(d.messages["homeassistant/rollcall/host/h1"], b"offline");
        assert!(
            d.messages
                .contains_key("homeassistant/sensor/h1/s_t/config")
        );
    }
    let d = discovery(&map(vec![]), &options);
    assert_eq!(
        d.messages.keys().collect::<Vec<_>>(),
        ["homeassistant/binary_sensor/rollcall_hub/hub/config"]
    );
}

#[test]
fn check_config_refuses_what_home_assistant_refuses() {
    let device = json!({"identifiers": ["x"]});
    let with = |fields: Value| {
        let mut c = json!({"unique_id": "u", "device": device});
        for (k, v) in fields.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let refused = [
        ("sensor", with(json!({}))),
        (
            "sensor",
            with(json!({"state_topic": "/a", "options": ["x"]})),
        ),
        (
            "sensor",
            with(
                json!({"state_topic": "/a", "device_class": "temperature", "unit_of_measurement": "V"}),
            ),
        ),
        (
            "sensor",
            with(
                json!({"state_topic": "/a", "device_class": "enum", "options": ["x"], "state_class": "measurement"}),
            ),
        ),
        (
            "sensor",
            with(json!({"state_topic": "/a", "state_class": "sometimes"})),
        ),
        (
            "sensor",
            with(json!({"state_topic": "/a", "entity_category": "config"})),
        ),
        ("binary_sensor", with(json!({}))),
        (
            "binary_sensor",
            with(json!({"state_topic": "/a", "payload_on": "x", "payload_off": "x"})),
        ),
        ("switch", with(json!({"state_topic": "/a"}))),
        ("switch", with(json!({"command_topic": "/a/#"}))),
        (
            "number",
            with(json!({"command_topic": "/a", "min": 5, "max": 5})),
        ),
        (
            "number",
            with(json!({"command_topic": "/a", "min": 0, "max": 1, "step": 0.0001})),
        ),
        ("number", with(json!({"command_topic": "/a", "max": 0.5}))),
        ("text", with(json!({"command_topic": "/a", "max": 300}))),
        ("text", with(json!({"state_topic": "/a"}))),
        ("event", with(json!({"state_topic": "/a"}))),
        (
            "event",
            with(json!({"state_topic": "/a", "event_types": []})),
        ),
        ("light", with(json!({"command_topic": "/a"}))),
        ("sensor", json!({"state_topic": "/a", "device": device})),
        ("sensor", json!({"state_topic": "/a", "unique_id": "u"})),
        (
            "sensor",
            json!({"state_topic": "/a", "unique_id": "u", "device": {"identifiers": []}}),
        ),
        (
            "sensor",
            with(json!({"state_topic": "/a", "availability": [{"topic": ""}]})),
        ),
    ];
    for (component, c) in refused {
        assert!(
            check_config(component, &c).is_err(),
            "{component} {c} was taken"
        );
    }
    let taken = [
        ("sensor", with(json!({"state_topic": "/a"}))),
        (
            "sensor",
            with(json!({"state_topic": "/a", "device_class": "enum", "options": ["x"]})),
        ),
        (
            "sensor",
            with(
                json!({"state_topic": "/a", "device_class": "pressure", "unit_of_measurement": "hPa", "state_class": "measurement"}),
            ),
        ),
        ("switch", with(json!({"command_topic": "/a"}))),
        (
            "number",
            with(json!({"command_topic": "/a", "min": 0, "max": 1, "step": 0.001})),
        ),
        ("text", with(json!({"command_topic": "/a"}))),
        (
            "event",
            with(json!({"state_topic": "/a", "event_types": ["press"]})),
        ),
    ];
    for (component, c) in taken {
        assert_eq!(check_config(component, &c), Ok(()), "{component} {c}");
    }
}

#[test]
fn ids_keep_to_the_allowed_characters_and_names_that_differ_stay_apart() {
    assert_eq!(clean_id("pizero1"), "pizero1");
    assert_eq!(clean_id("pump-drive_2"), "pump-drive_2");
    let dotted = clean_id("temp.c");
    assert!(dotted.starts_with("temp_c_") && dotted.len() == "temp_c_".len() + 8);
    assert_ne!(clean_id("temp.c"), clean_id("temp,c"));
    assert_ne!(clean_id("temp_c"), clean_id("temp.c"));
    assert_eq!(clean_id("temp.c"), clean_id("temp.c"), "stable");
    assert!(!clean_id("").is_empty());
    let long = "x".repeat(10_000);
    assert_eq!(clean_id(&long).len(), MAX_ID);
    assert_ne!(clean_id(&long), clean_id(&"x".repeat(10_001)));
    assert_eq!(object_id("gpio", "pump_drive"), "gpio_pump_drive");
    // `a_b` + `c` and `a` + `b_c`: apart.
    assert_ne!(object_id("a_b", "c"), object_id("a", "b_c"));
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,6}",
        "[a-z_.:é ]{1,8}",
        Just("a_b".to_owned()),
        Just("b".to_owned())
    ]
}

fn value_type() -> impl Strategy<Value = ValueType> {
    prop_oneof![
        Just(ValueType::Bool),
        Just(ValueType::Int),
        Just(ValueType::Float),
        Just(ValueType::String),
        Just(ValueType::Json)
    ]
}

fn interface() -> impl Strategy<Value = Interface> {
    (
        name(),
        "(/[a-z+#]{1,3}){1,3}",
        value_type(),
        prop::option::of(prop_oneof![
            Just("°C".to_owned()),
            Just("%".to_owned()),
            Just("V".to_owned()),
            "[a-zA-Z°]{0,3}"
        ]),
        prop::option::of(-1e3f64..1e3),
        prop::option::of(-1e3f64..1e3),
    )
        .prop_map(|(name, topic, t, unit, min, max)| {
            let mut i = Interface::new(name, topic, t);
            i.unit = unit;
            i.min = min;
            i.max = max;
            i
        })
}

proptest! {
    /// Whatever the descriptions say, every config published passes the
    /// checks, every id keeps to `[a-zA-Z0-9_-]`, unique ids are unique,
    /// and every interface of an input or output list is either an entity
    /// or listed as skipped.
    #[test]
    fn any_description_gives_checked_configs_with_clean_unique_ids(
        services in prop::collection::vec(
            (name(), prop::collection::vec(interface(), 0..5), prop::collection::vec(interface(), 0..5)),
            0..4,
        ),
        hostname in name(),
    ) {
        let mut seen = BTreeSet::new();
        let services: Vec<ServiceSnapshot> = services
            .into_iter()
            .filter(|(n, ..)| seen.insert(n.clone()))
            .map(|(n, i, o)| service(&n, i, o))
            .collect();
        let (inputs, outputs): (usize, usize) = services
            .iter()
            .map(|s| {
                let d = &s.description.as_ref().unwrap().interfaces;
                (d.inputs.len(), d.outputs.len())
            })
            .fold((0, 0), |(a, b), (i, o)| (a + i, b + o));
        let d = discovery(&map(vec![host(&hostname, services)]), &HaOptions::new("homeassistant"));
        let c = configs(&d);
        let mut ids = BTreeSet::new();
        for (topic, v) in &c {
            let levels: Vec<&str> = topic.split('/').collect();
            prop_assert_eq!(levels.len(), 5);
            for id in &levels[2..4] {
                prop_assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{}", topic);
            }
            prop_assert_eq!(check_config(levels[1], v), Ok(()));
            prop_assert!(ids.insert(v["unique_id"].as_str().unwrap().to_owned()));
        }
        // Every input is an entity or listed; an output is too, unless it
        // is the state of an input's entity.
        let accounted = d.entities - 1 + d.skipped.len();
        prop_assert!(inputs <= accounted && accounted <= inputs + outputs, "{} {} {}", inputs, outputs, accounted);
    }
}

fn owned(p: &mut Published, topic: &str, payload: &[u8]) -> bool {
    p.observe(&HaOptions::new("homeassistant"), topic, payload)
}

const CFG: &str = "homeassistant/sensor/h1/s_t/config";
const OURS: &[u8] = br#"{"unique_id":"u","origin":{"name":"rollcall"}}"#;
const OURS2: &[u8] = br#"{"unique_id":"v","origin":{"name":"rollcall"}}"#;

#[test]
fn a_restarted_hub_publishes_nothing_twice_and_clears_what_it_no_longer_wants_after_the_grace() {
    let mut p = Published::default();
    // Retained from the last run: one still wanted as it is, one gone.
    let gone = "homeassistant/sensor/h1/s_old/config";
    assert!(owned(&mut p, CFG, OURS));
    assert!(owned(&mut p, gone, OURS2));
    assert!(owned(&mut p, "homeassistant/rollcall/host/h1", b"online"));
    // Others' configs, and what is not a discovery topic, are not ours.
    assert!(!owned(
        &mut p,
        "homeassistant/sensor/z2m/x/config",
        br#"{"origin":{"name":"Zigbee2MQTT"}}"#
    ));
    assert!(!owned(
        &mut p,
        "homeassistant/sensor/z2m/y/config",
        b"not json \"rollcall\""
    ));
    assert!(!owned(&mut p, "elsewhere/sensor/h1/s_t/config", OURS));
    assert!(!owned(&mut p, "homeassistant/status", b"online"));
    assert_eq!(p.len(), 3);
    let desired: BTreeMap<String, Vec<u8>> = [
        (CFG.to_owned(), OURS.to_vec()),
        (
            "homeassistant/rollcall/host/h1".to_owned(),
            b"online".to_vec(),
        ),
    ]
    .into();
    // Within the grace: nothing to do (the map may not know h1's `old`
    // yet); a changed config of an earlier run waits too, a new one not.
    assert_eq!(p.plan(&desired, false, false), vec![]);
    let mut changed = desired.clone();
    changed.insert(CFG.to_owned(), OURS2.to_vec());
    changed.insert(
        "homeassistant/sensor/h1/s_new/config".to_owned(),
        OURS.to_vec(),
    );
    assert_eq!(
        p.plan(&changed, false, false),
        vec![(
            "homeassistant/sensor/h1/s_new/config".to_owned(),
            OURS.to_vec()
        )]
    );
    assert_eq!(p.plan(&changed, true, false).len(), 3, "changed, new, gone");
    // After it: the one no longer wanted is cleared.
    let plan = p.plan(&desired, true, false);
    assert_eq!(plan, vec![(gone.to_owned(), Vec::new())]);
    for (t, payload) in &plan {
        p.record(t, payload);
    }
    assert_eq!(p.plan(&desired, true, false), vec![]);
    // Home Assistant's birth: everything again.
    assert_eq!(p.plan(&desired, true, true).len(), 2);
}

#[test]
fn what_this_run_published_and_no_longer_wants_is_cleared_at_once() {
    let mut p = Published::default();
    p.record(CFG, OURS);
    assert_eq!(
        p.plan(&BTreeMap::new(), false, false),
        vec![(CFG.to_owned(), Vec::new())]
    );
    // A config someone cleared, or replaced with one not ours, is
    // published again.
    let desired: BTreeMap<String, Vec<u8>> = [(CFG.to_owned(), OURS.to_vec())].into();
    assert!(owned(&mut p, CFG, b""));
    assert_eq!(p.plan(&desired, false, false).len(), 1);
    p.record(CFG, OURS);
    assert!(owned(&mut p, CFG, br#"{"origin":{"name":"someone"}}"#));
    assert_eq!(
        p.plan(&desired, false, false),
        vec![(CFG.to_owned(), OURS.to_vec())]
    );
}

#[test]
fn what_the_hub_learns_from_the_broker_is_bounded() {
    let mut p = Published::default();
    for i in 0..MAX_OWNED + 10 {
        owned(&mut p, &format!("homeassistant/sensor/h/{i}/config"), OURS);
    }
    assert_eq!(p.len(), MAX_OWNED);
    assert_eq!(p.refused(), 10);
}

#[test]
fn the_prefix_is_checked() {
    for good in ["homeassistant", "ha/test", "a"] {
        assert!(HaConfig::new(good).check().is_ok(), "{good}");
    }
    for bad in ["", "ha/+", "ha/#", "/ha", "ha/", "a//b", "$SYS"] {
        assert!(HaConfig::new(bad).check().is_err(), "{bad}");
    }
}
