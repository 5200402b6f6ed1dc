//! The documentation generators on a real cluster's map: the demo's answers
//! (tests/fixtures/demo-answers.json) plus foreign services that make
//! data-flow edges, a pin conflict, a missing host, a missing service, an
//! offline host, and names and docs full of characters that break Markdown,
//! XML and DOT. The AsyncAPI document is validated against the official
//! AsyncAPI 3.0.0 JSON Schema (vendored, see tests/fixtures/README.md).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rollcall_hub::docs::{self, AsyncApiOptions, Format};
use rollcall_hub::{ClusterMap, Collector, HostStatus, MapSnapshot};
use rollcall_proto::Topics;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// 2026-11-29 22:14:29 UTC.
const NOW: u64 = 1_795_990_469_000;
const WEIRD_HOST: &str = "lab|<b>&\"x\"`";
const WEIRD_DOC: &str = "logs every reading | all <hosts> & *more*\nsecond line";

const SCHEMA_SHA256: &str = "abe96881dbfaad495ccbb6bd8d3fb43ca18a13b9d7564849ccb66f39d5e5b20f";

fn answer(host: &str, function: &str, rest: Value) -> Value {
    let mut a = json!({"id": 1, "hostname": host, "function": function, "ipaddr": "10.0.0.9"});
    a.as_object_mut()
        .unwrap()
        .extend(rest.as_object().unwrap().clone());
    a
}

fn iface(name: &str, topic: &str, ty: &str, doc: &str) -> Value {
    json!({"name": name, "topic": topic, "type": ty, "doc": doc})
}

/// The foreign services added to the demo's answers.
fn extra_answers() -> Vec<Value> {
    vec![
        // Closes the notes' pump loop: reads pizero2's float switch, drives its pump.
        answer(
            "pibot01",
            "pump_ctl",
            json!({"interfaces": {
                "inputs": [iface("float", "/pizero2/gpio/input/float_switch", "bool", "the tank's float switch")],
                "outputs": [iface("pump", "/pizero2/gpio/set/pump_drive", "bool", "switches the pump")],
            }, "health": {"status": "ok"}}),
        ),
        // Claims pin 23, which pizero2's gpio service drives as `lamp`.
        answer(
            "pizero2",
            "buzzer",
            json!({"interfaces": {"inputs": [
                {"name": "beep", "topic": "/pizero2/buzzer/set/beep", "type": "int",
                 "min": 0, "max": 5000, "unit": "ms", "doc": "drives pin 23"}
            ]}}),
        ),
        answer(
            WEIRD_HOST,
            "logger*_",
            json!({"interfaces": {
                "inputs": [iface("all|readings", "/+/system/#", "json", WEIRD_DOC)],
                "outputs": [{"name": "log", "topic": "/lab/log`x`", "type": "string", "retained": true}],
                "functions": [iface("tail", "/lab/logger/get/tail", "json", "the last lines")],
            }, "health": {"status": "alert", "reason": "disk <full> | 95%"}}),
        ),
        answer(WEIRD_HOST, "host", json!({"apps": ["logger*_"]})),
        // A minimal foreign answer: only the notes' flat fields.
        answer(
            "pibot01",
            "flat_pump",
            json!({"inputs": "/pibot01/flat/set/+", "outputs": "/pizero2/gpio/set/lamp"}),
        ),
    ]
}

fn report(answers: &[Value]) -> rollcall_hub::ScanReport {
    let mut c = Collector::new(1, 20);
    for a in answers {
        c.offer(&serde_json::to_vec(a).unwrap(), Duration::from_millis(3));
    }
    c.finish(Duration::from_millis(50))
}

/// The fixture cluster's map at [`NOW`].
fn fixture() -> MapSnapshot {
    let demo: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/demo-answers.json")).unwrap();
    let topics = Topics::default();
    let mut map = ClusterMap::new();
    // An earlier roll-call: pizero3 and pibot01's camera answered then, not now.
    let mut earlier = demo.clone();
    earlier.push(answer("pizero3", "host", json!({"apps": []})));
    earlier.push(answer("pibot01", "camera", json!({})));
    map.apply_scan(&report(&earlier), NOW - 60_000);
    let mut now = demo;
    now.extend(extra_answers());
    map.apply_scan(&report(&now), NOW - 2_000);
    // A host known only from what it left on the broker, now offline.
    map.ingest(&topics, "/oldpi/$state", b"offline", NOW - 1_000)
        .unwrap();
    let description = json!({"function": "sensor", "doc": "a DHT22", "interfaces": {
        "outputs": [{"name": "temp", "topic": "/oldpi/sensor/temp", "type": "float", "unit": "°C",
                     "min": -40, "max": 80, "retained": true}]}});
    map.ingest(
        &topics,
        "/oldpi/sensor/$description",
        &serde_json::to_vec(&description).unwrap(),
        NOW - 1_000,
    )
    .unwrap();
    map.snapshot(NOW)
}

#[test]
fn the_fixture_has_what_the_tests_rely_on() {
    // Guards the other tests against a fixture that silently lost its point.
    let s = fixture();
    let status = |h: &str| s.host(h).unwrap_or_else(|| panic!("{h}")).status;
    assert_eq!(status("pizero1"), HostStatus::Online);
    assert_eq!(status("pizero3"), HostStatus::Missing);
    assert_eq!(status("oldpi"), HostStatus::Offline);
    assert_eq!(status(WEIRD_HOST), HostStatus::Online);
    let camera = s.host("pibot01").unwrap().service("camera").unwrap();
    assert!(!camera.present);
    assert!(
        s.host("pizero2")
            .unwrap()
            .pin_conflicts
            .iter()
            .any(|c| c.pin == 23)
    );
    let edge = |from: &str, to: &str| {
        s.edges
            .iter()
            .any(|e| e.from.service == from && e.to.service == to)
    };
    assert!(edge("gpio", "pump_ctl") && edge("pump_ctl", "gpio") && edge("system", "logger*_"));
    assert!(edge("flat_pump", "gpio"));
}

// ---------------------------------------------------------------- Markdown

/// The cells of a GFM table row: split on `|` not escaped by a backslash.
fn cells(row: &str) -> Vec<String> {
    let inner = row
        .strip_prefix('|')
        .and_then(|r| r.strip_suffix('|'))
        .unwrap_or_else(|| panic!("a table row starts and ends with |: {row:?}"));
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in inner.chars() {
        if c == '|' && !escaped {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(c);
        }
        escaped = c == '\\' && !escaped;
    }
    out
}

#[test]
fn markdown_has_every_host_service_interface_pin_and_edge() {
    let s = fixture();
    let md = docs::markdown(&s);
    assert!(
        md.contains("6 hosts (4 online, 1 offline, 1 missing)"),
        "{}",
        &md[..400]
    );
    for h in &s.hosts {
        let name = docs::escape::md_code(&h.name);
        assert!(md.contains(&format!("## Host {name}\n")), "host {}", h.name);
        for svc in &h.services {
            let heading = format!(
                "### Service {} on {name}\n",
                docs::escape::md_code(&svc.name)
            );
            assert!(md.contains(&heading), "{heading}");
            for i in svc.description.iter().flat_map(|d| {
                d.interfaces
                    .inputs
                    .iter()
                    .chain(&d.interfaces.outputs)
                    .chain(&d.interfaces.functions)
                    .chain(&d.interfaces.controls)
            }) {
                let cell = docs::escape::md_code_cell(&i.topic);
                assert!(md.contains(&format!("| {cell} |")), "topic {}", i.topic);
            }
        }
    }
    // The interface row of a ranged, unit-carrying input.
    assert!(
        md.contains("| inputs | `beep` | `/pizero2/buzzer/set/beep` | int | ms | 0 to 5000 | no | drives pin 23 |"),
        "{md}"
    );
    assert!(md.contains("| 23 **conflict** | `buzzer` | `beep` | driven |"));
    assert!(md.contains("**Pin 23 is claimed more than once:** by buzzer/beep, gpio/lamp"));
    let section = |title: &str| -> Vec<&str> {
        md.lines()
            .skip_while(|l| *l != title)
            .skip(1)
            .take_while(|l| !l.starts_with("## "))
            .filter(|l| l.starts_with("| `"))
            .collect()
    };
    let edge_rows = section("## Data flow");
    assert_eq!(edge_rows.len(), s.edges.len());
    // The fixture follows no values: no edge has a message, none is stale yet.
    assert!(
        edge_rows.iter().all(|r| r.ends_with("| none seen |")),
        "{edge_rows:?}"
    );
    // What is wired wrong: the display driver's `/display` (a warning),
    // every output no one reads (for information); commands are not flagged.
    let wiring = section("## Wiring");
    assert!(md.contains("**Warning: 1 input is unfed:"), "{md}");
    assert!(
        wiring.contains(&"| `pibot01` | `display_driver` | `/display` |"),
        "{wiring:?}"
    );
    assert_eq!(wiring.len(), s.unfed.len() + s.unread.len());
    assert!(!wiring.iter().any(|r| r.contains("/set/")), "{wiring:?}");
    assert!(md.contains("For information, "), "{md}");
    assert!(
        wiring.contains(&"| `oldpi` | `sensor` | `/oldpi/sensor/temp` |"),
        "{wiring:?}"
    );
    assert!(md.contains("- **missing**: seen before, not in the latest roll-call"));
    assert!(md.contains("| `oldpi` | *(empty)* |") || md.contains("| `oldpi` |  |"));
}

#[test]
fn markdown_from_the_network_cannot_break_tables_or_inject_html() {
    let md = docs::markdown(&fixture());
    let mut width: Option<usize> = None;
    for line in md.lines() {
        if line.starts_with('|') {
            let n = cells(line).len();
            // Each table keeps the width of its header row.
            let w = *width.get_or_insert(n);
            assert_eq!(n, w, "row with {n} cells in a table of {w}: {line}");
        } else {
            width = None;
        }
    }
    // The doc's newline did not end its row; its markup is escaped.
    assert!(md.contains("logs every reading \\| all \\<hosts\\> \\& \\*more\\* second line"));
    assert!(md.contains("- health: **alert**: disk \\<full\\> \\| 95%"));
    // The weird host name only ever appears inside code spans.
    assert!(md.contains("## Host `` lab|<b>&\"x\"` ``\n"), "{md}");
    assert!(!md.contains("\n<"));
}

// ---------------------------------------------------------------- AsyncAPI

fn schema() -> Value {
    let text = include_str!("fixtures/asyncapi-3.0.0.json");
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex, SCHEMA_SHA256,
        "the vendored schema differs from @asyncapi/specs 6.11.1"
    );
    serde_json::from_str(text).unwrap()
}

fn schema_errors(doc: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema()).expect("the official schema compiles");
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn full_asyncapi(s: &MapSnapshot) -> Value {
    docs::asyncapi_with(
        s,
        &AsyncApiOptions {
            broker: Some("mqtt://192.168.1.2:1883".parse().unwrap()),
            topics: Some(Topics::default()),
        },
    )
}

#[test]
fn asyncapi_is_valid_against_the_official_schema() {
    let s = fixture();
    for doc in [docs::asyncapi(&s), full_asyncapi(&s)] {
        assert_eq!(doc["asyncapi"], "3.0.0");
        let errors = schema_errors(&doc);
        assert!(errors.is_empty(), "{errors:#?}");
    }
}

/// A change that makes a valid document invalid.
type Breakage = Box<dyn Fn(&mut Value)>;

#[test]
fn the_schema_rejects_broken_documents() {
    let good = docs::asyncapi(&fixture());
    let op = good["operations"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let ch = good["channels"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let breakages: Vec<(&str, Breakage)> = vec![
        (
            "no info",
            Box::new(|d| drop(d.as_object_mut().unwrap().remove("info"))),
        ),
        (
            "AsyncAPI 2 version",
            Box::new(|d| d["asyncapi"] = "2.6.0".into()),
        ),
        (
            "AsyncAPI 2 action",
            Box::new(move |d| d["operations"][&op]["action"] = "publish".into()),
        ),
        (
            "address not a string",
            Box::new(move |d| d["channels"][&ch]["address"] = 7.into()),
        ),
        (
            "unknown top-level field",
            Box::new(|d| d["topics"] = json!([])),
        ),
    ];
    for (what, breakage) in breakages {
        let mut doc = good.clone();
        breakage(&mut doc);
        assert!(!schema_errors(&doc).is_empty(), "{what} was accepted");
    }
}

/// The JSON value a local `$ref` (`#/a/b`) points at.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn asyncapi_references_parameters_and_operations_hold_together() {
    // What the schema cannot check: the spec's own rules between objects.
    let s = fixture();
    let doc = full_asyncapi(&s);
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 100);
    for r in &all {
        assert!(resolve(&doc, r).is_some(), "dangling $ref {r}");
    }
    for (id, ch) in doc["channels"].as_object().unwrap() {
        let Some(address) = ch["address"].as_str() else {
            continue;
        };
        let named: BTreeSet<&str> = address
            .split('{')
            .skip(1)
            .map(|p| p.split('}').next().unwrap())
            .collect();
        let declared: BTreeSet<&str> = ch["parameters"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(named, declared, "channel {id} ({address})");
        assert!(!address.contains(['+', '#']), "{address}");
    }
    for (id, op) in doc["operations"].as_object().unwrap() {
        let channel = op["channel"]["$ref"].as_str().unwrap();
        for m in op["messages"].as_array().unwrap() {
            let m = m["$ref"].as_str().unwrap();
            assert!(m.starts_with(&format!("{channel}/messages/")), "{id}: {m}");
        }
        if let Some(reply) = op.get("reply") {
            // An address on the reply: the reply channel's address must be null.
            let ch = resolve(&doc, reply["channel"]["$ref"].as_str().unwrap()).unwrap();
            assert!(ch["address"].is_null(), "{id}");
        }
    }
    // One operation per interface entry, with the right action.
    let ops: Vec<&Value> = doc["operations"].as_object().unwrap().values().collect();
    let mut entries = 0;
    for h in &s.hosts {
        for svc in &h.services {
            let Some(d) = &svc.description else { continue };
            for (list, action, entries_of) in [
                ("inputs", "receive", &d.interfaces.inputs),
                ("outputs", "send", &d.interfaces.outputs),
                ("functions", "receive", &d.interfaces.functions),
                ("controls", "receive", &d.interfaces.controls),
            ] {
                for i in entries_of {
                    entries += 1;
                    let found = ops.iter().any(|o| {
                        let x = &o["x-rollcall"];
                        x["host"] == h.name.as_str()
                            && x["service"] == svc.name.as_str()
                            && x["list"] == list
                            && x["name"] == i.name.as_str()
                            && o["action"] == action
                    });
                    assert!(found, "{}/{} {list} {}", h.name, svc.name, i.name);
                }
            }
        }
    }
    // ...plus flat_pump's two flat fields, and the agents' $state and $description.
    assert_eq!(ops.len(), entries + 2 + 2);
    // A data-flow edge is one channel with a send and a receive on it.
    let float = doc["channels"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, c)| c["address"] == "/pizero2/gpio/input/float_switch")
        .map(|(id, _)| format!("#/channels/{id}"))
        .unwrap();
    let actions: BTreeSet<&str> = ops
        .iter()
        .filter(|o| o["channel"]["$ref"] == float.as_str())
        .map(|o| o["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, BTreeSet::from(["receive", "send"]));
    // Wildcards became parameters.
    let wild = doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["x-mqtt-filter"] == "/+/system/#")
        .unwrap();
    assert_eq!(wild["address"], "/{level1}/system/{rest}");
    assert_eq!(doc["servers"]["broker"]["host"], "192.168.1.2:1883");
}

/// The payload schema of the message of `host`/`service`'s entry `name` in `list`.
fn payload<'a>(doc: &'a Value, host: &str, service: &str, list: &str, name: &str) -> &'a Value {
    let op = doc["operations"]
        .as_object()
        .unwrap()
        .values()
        .find(|o| {
            let x = &o["x-rollcall"];
            x["host"] == host && x["service"] == service && x["list"] == list && x["name"] == name
        })
        .unwrap_or_else(|| panic!("{host}/{service} {list} {name}"));
    let local = resolve(doc, op["messages"][0]["$ref"].as_str().unwrap()).unwrap();
    let message = resolve(doc, local["$ref"].as_str().unwrap()).unwrap();
    // Payloads are shared in components.schemas.
    resolve(doc, message["payload"]["$ref"].as_str().unwrap()).unwrap()
}

#[test]
fn services_known_only_by_their_flat_fields_are_documented() {
    let s = fixture();
    let md = docs::markdown(&s);
    assert!(
        md.contains("| inputs | `inputs` | `/pibot01/flat/set/+` | json |  |  | no | from the answer's flat \\`inputs\\` field; no type described |"),
        "{md}"
    );
    assert!(md.contains("| outputs | `outputs` | `/pizero2/gpio/set/lamp` | json |"));
    let doc = docs::asyncapi(&s);
    let flat: Vec<&Value> = doc["operations"]
        .as_object()
        .unwrap()
        .values()
        .filter(|o| o["x-rollcall"]["service"] == "flat_pump")
        .collect();
    assert_eq!(flat.len(), 2);
    // Its output is the gpio service's input: one channel, both operations.
    let lamp = flat.iter().find(|o| o["action"] == "send").unwrap();
    let channel = resolve(&doc, lamp["channel"]["$ref"].as_str().unwrap()).unwrap();
    assert_eq!(channel["address"], "/pizero2/gpio/set/lamp");
}

#[test]
fn asyncapi_descriptions_from_the_network_are_escaped_commonmark() {
    // Tools render `description` as CommonMark: a doc cannot inject HTML there.
    let doc = full_asyncapi(&fixture());
    let message = doc["components"]["messages"]
        .as_object()
        .unwrap()
        .values()
        .find(|m| m["name"] == "all|readings")
        .unwrap();
    assert_eq!(
        message["description"],
        "logs every reading \\| all \\<hosts\\> \\& \\*more\\* second line"
    );
    let reply = doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["address"].is_null() && c["description"].as_str().unwrap().contains("logger"))
        .unwrap();
    assert!(
        reply["description"]
            .as_str()
            .unwrap()
            .contains("Where logger\\*\\_ on lab\\|\\<b\\>\\&\"x\"\\` answers"),
        "{reply}"
    );
}

#[test]
fn payload_schemas_follow_type_unit_and_range() {
    let doc = docs::asyncapi(&fixture());
    let check = |schema: &Value, good: &[Value], bad: &[Value]| {
        let v = jsonschema::validator_for(schema).unwrap();
        for g in good {
            assert!(v.is_valid(g), "{g} refused by {schema}");
        }
        for b in bad {
            assert!(!v.is_valid(b), "{b} accepted by {schema}");
        }
    };
    let uptime = payload(&doc, "pizero1", "system", "outputs", "uptime");
    assert_eq!(uptime["anyOf"][0]["x-unit"], "s");
    check(
        uptime,
        &[json!(12.5), json!({"value": 12.5, "unit": "s", "ts": 1})],
        &[json!("12"), json!({"unit": "s"})],
    );
    check(
        payload(&doc, "pizero2", "gpio", "inputs", "lamp"),
        &[
            json!(1),
            json!(true),
            json!({"value": 0, "id": 3, "topic": "/me"}),
        ],
        &[json!(2), json!("on-ish"), json!({"value": 7})],
    );
    check(
        payload(&doc, "pizero2", "gpio", "inputs", "sonar_angle"),
        &[json!(0), json!(99.5), json!(100)],
        &[json!(100.5), json!(-1)],
    );
    check(
        payload(&doc, "pizero2", "buzzer", "inputs", "beep"),
        &[json!(250)],
        &[json!(2.5), json!(5001)],
    );
}

// ---------------------------------------------------------------- SVG

/// How many (publishing service, consuming service) pairs the edges join:
/// the pictures draw one arrow per pair.
fn service_pairs(s: &MapSnapshot) -> usize {
    let pairs: BTreeSet<_> = s
        .edges
        .iter()
        .map(|e| (&e.from.host, &e.from.service, &e.to.host, &e.to.service))
        .collect();
    assert!(
        pairs.len() < s.edges.len(),
        "the fixture has a pair with several topics"
    );
    pairs.len()
}

#[derive(Debug, Clone, Copy)]
struct Box2 {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Box2 {
    fn of(rect: roxmltree::Node) -> Box2 {
        let f = |a: &str| rect.attribute(a).unwrap().parse::<f64>().unwrap();
        Box2 {
            x: f("x"),
            y: f("y"),
            w: f("width"),
            h: f("height"),
        }
    }
    fn inside(&self, o: &Box2) -> bool {
        self.x >= o.x
            && self.y >= o.y
            && self.x + self.w <= o.x + o.w
            && self.y + self.h <= o.y + o.h
    }
    fn overlaps(&self, o: &Box2) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// Whether `n`'s class list has `class`.
fn has_class(n: roxmltree::Node, class: &str) -> bool {
    n.attribute("class")
        .is_some_and(|c| c.split_whitespace().any(|x| x == class))
}

fn groups<'a>(svg: &'a roxmltree::Document, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    svg.descendants()
        .filter(|n| n.has_tag_name("g") && has_class(*n, class))
        .collect()
}

fn first_rect<'a>(g: roxmltree::Node<'a, 'a>) -> Box2 {
    Box2::of(g.children().find(|c| c.has_tag_name("rect")).unwrap())
}

#[test]
fn svg_draws_every_host_service_and_edge() {
    let s = fixture();
    let text = docs::svg(&s);
    let svg = roxmltree::Document::parse(&text).expect("well-formed XML");
    assert_eq!(svg.root_element().tag_name().name(), "svg");
    assert_eq!(
        svg.root_element().tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let hosts = groups(&svg, "host");
    assert_eq!(hosts.len(), s.hosts.len());
    let mut host_boxes = BTreeMap::new();
    for h in &s.hosts {
        // Attribute values come back unescaped: the weird name round-trips.
        let g = hosts
            .iter()
            .find(|g| g.attribute("data-host") == Some(h.name.as_str()))
            .unwrap_or_else(|| panic!("host {}", h.name));
        assert_eq!(g.attribute("data-status"), Some(h.status_word()));
        host_boxes.insert(h.name.clone(), first_rect(*g));
        for svc in &h.services {
            let sg = g
                .children()
                .find(|c| {
                    has_class(*c, "service")
                        && c.attribute("data-service") == Some(svc.name.as_str())
                })
                .unwrap_or_else(|| panic!("service {}/{}", h.name, svc.name));
            assert!(first_rect(sg).inside(&host_boxes[&h.name]), "{}", svc.name);
        }
    }
    let boxes: Vec<&Box2> = host_boxes.values().collect();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            assert!(!a.overlaps(b), "host boxes overlap: {a:?} {b:?}");
        }
    }
    // One arrow per pair of services, carrying all its topics.
    let edges = groups(&svg, "edge");
    assert_eq!(edges.len(), service_pairs(&s));
    let topics: usize = edges
        .iter()
        .map(|g| {
            g.attribute("data-topics")
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(topics, s.edges.len());
    for e in &s.edges {
        let g = edges
            .iter()
            .find(|g| {
                g.attribute("data-from-host") == Some(e.from.host.as_str())
                    && g.attribute("data-from-service") == Some(e.from.service.as_str())
                    && g.attribute("data-to-host") == Some(e.to.host.as_str())
                    && g.attribute("data-to-service") == Some(e.to.service.as_str())
            })
            .unwrap_or_else(|| panic!("{e:?}"));
        let path = g.children().find(|c| c.has_tag_name("path")).unwrap();
        let d = path.attribute("d").unwrap();
        assert!(d.starts_with('M') && d.contains(" L"), "{d}");
        let marker = if has_class(*g, "stale") {
            "url(#arrow-stale)"
        } else {
            "url(#arrow)"
        };
        assert_eq!(path.attribute("marker-end"), Some(marker));
    }
    assert_readable(&s, &text);
    // Nothing from outside: no script, no external reference.
    assert!(!text.contains("<script") && !text.contains("href") && !text.contains("@import"));
    assert_text_fits(&svg);
}

/// Every text, the title line included, ends inside the picture, at 0.6 em
/// a character (a wide sans-serif's bold average; monospace is 0.6 em).
fn assert_text_fits(svg: &roxmltree::Document) {
    let root = svg.root_element();
    let width: f64 = root.attribute("width").unwrap().parse().unwrap();
    let inherited: f64 = root.attribute("font-size").unwrap().parse().unwrap();
    for t in svg.descendants().filter(|n| n.has_tag_name("text")) {
        let size = t
            .attribute("font-size")
            .map_or(inherited, |s| s.parse().unwrap());
        let x: f64 = t.attribute("x").unwrap().parse().unwrap();
        let w = t.text().unwrap_or("").chars().count() as f64 * size * 0.6;
        let right = if t.attribute("text-anchor") == Some("middle") {
            x + w / 2.0
        } else {
            x + w
        };
        assert!(
            right <= width,
            "{:?} ends at {right:.0}, past the picture's {width}",
            t.text()
        );
    }
}

// ------------------------------------------------- SVG: a picture a person can read

/// A segment of an arrow: from one point to the next.
type Segment = ((f64, f64), (f64, f64));

/// The points of an orthogonal path `M x,y L x,y ...`.
fn path_points(d: &str) -> Vec<(f64, f64)> {
    d.split(['M', 'L'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap_or_else(|| panic!("{d}"));
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

/// Whether an axis-parallel segment passes through the inside of `b`
/// (touching its edge, as an arrow ending on a box does, is not crossing).
fn crosses(seg: Segment, b: &Box2) -> bool {
    let ((x1, y1), (x2, y2)) = seg;
    let e = 0.5;
    let (lo_x, hi_x) = (x1.min(x2), x1.max(x2));
    let (lo_y, hi_y) = (y1.min(y2), y1.max(y2));
    hi_x > b.x + e && lo_x < b.x + b.w - e && hi_y > b.y + e && lo_y < b.y + b.h - e
}

/// A text's box, by its font size, anchor and character count (0.6 em a
/// character, the ascent 0.8 em above the baseline, 0.25 em below).
fn text_box(t: roxmltree::Node, inherited: f64) -> Box2 {
    let size = t
        .attribute("font-size")
        .map_or(inherited, |s| s.parse().unwrap());
    let x: f64 = t.attribute("x").unwrap().parse().unwrap();
    let y: f64 = t.attribute("y").unwrap().parse().unwrap();
    let w = t.text().unwrap_or("").chars().count() as f64 * size * 0.6;
    let x = match t.attribute("text-anchor") {
        Some("middle") => x - w / 2.0,
        Some("end") => x - w,
        _ => x,
    };
    Box2 {
        x,
        y: y - 0.8 * size,
        w,
        h: 1.05 * size,
    }
}

/// The rules a person reading the picture relies on, checked on its
/// geometry: every arrow is routed in straight, axis-parallel segments
/// that cross no box but its own two hosts' (and no service box at all);
/// no arrow label overlaps a box, the title, the legend or another label,
/// and every one is inside the picture; stale arrows and services with an
/// unfed input look different (class, colour, dash) from the others, and
/// they are exactly the ones the snapshot flags.
fn assert_readable(s: &MapSnapshot, text: &str) {
    check_readable(s, text, true);
}

/// [`assert_readable`]; with `exact` false, not whether the flagged ones
/// are exactly the snapshot's (names that XML cannot carry, or two hosts
/// of one name, make that unanswerable from the picture).
fn check_readable(s: &MapSnapshot, text: &str, exact: bool) {
    let svg = roxmltree::Document::parse(text).unwrap();
    let root = svg.root_element();
    let inherited: f64 = root.attribute("font-size").unwrap().parse().unwrap();
    let width: f64 = root.attribute("width").unwrap().parse().unwrap();
    let height: f64 = root.attribute("height").unwrap().parse().unwrap();
    let mut hosts: BTreeMap<String, Box2> = BTreeMap::new();
    let mut services: BTreeMap<(String, String), Box2> = BTreeMap::new();
    for g in groups(&svg, "host") {
        let name = g.attribute("data-host").unwrap().to_owned();
        hosts.insert(name.clone(), first_rect(g));
        for sg in g.children().filter(|c| has_class(*c, "service")) {
            services.insert(
                (
                    name.clone(),
                    sg.attribute("data-service").unwrap().to_owned(),
                ),
                first_rect(sg),
            );
        }
    }
    for (name, b) in &hosts {
        assert!(
            b.x >= 0.0 && b.y >= 0.0 && b.x + b.w <= width && b.y + b.h <= height,
            "host {name} {b:?} outside the picture {width}x{height}"
        );
    }
    let mut labels: Vec<(String, Box2)> = Vec::new();
    let blue = "#1565c0";
    for g in groups(&svg, "edge") {
        let from = g.attribute("data-from-host").unwrap();
        let to = g.attribute("data-to-host").unwrap();
        let path = g.children().find(|c| c.has_tag_name("path")).unwrap();
        let points = path_points(path.attribute("d").unwrap());
        assert!(points.len() >= 2);
        for seg in points.windows(2).map(|p| (p[0], p[1])) {
            let ((x1, y1), (x2, y2)) = seg;
            assert!(
                (x1 - x2).abs() < 1e-6 || (y1 - y2).abs() < 1e-6,
                "{from} -> {to}: a slanted segment {seg:?}"
            );
            for (name, b) in &hosts {
                if name != from && name != to {
                    assert!(
                        !crosses(seg, b),
                        "{from} -> {to}: segment {seg:?} crosses host {name} {b:?}"
                    );
                }
            }
            for ((h, svc), b) in &services {
                assert!(
                    !crosses(seg, b),
                    "{from} -> {to}: segment {seg:?} crosses service {h}/{svc} {b:?}"
                );
            }
        }
        // It ends on its target service's box, and starts on its source's.
        let end_on = |p: (f64, f64), host: &str, svc: &str| {
            let b = services[&(host.to_owned(), svc.to_owned())];
            ((p.0 - b.x).abs() < 0.2 || (p.0 - b.x - b.w).abs() < 0.2)
                && p.1 > b.y
                && p.1 < b.y + b.h
        };
        // (Two services of one name share a key: which box is whose is
        // then not for the picture to say.)
        if exact {
            assert!(end_on(
                points[0],
                from,
                g.attribute("data-from-service").unwrap()
            ));
            assert!(end_on(
                *points.last().unwrap(),
                to,
                g.attribute("data-to-service").unwrap()
            ));
        }
        let stroke = path.attribute("stroke").unwrap();
        if has_class(g, "stale") {
            assert_ne!(stroke, blue, "a stale arrow has its own colour");
            assert!(path.attribute("stroke-dasharray").is_some());
        } else {
            assert_eq!(stroke, blue);
            assert!(path.attribute("stroke-dasharray").is_none());
        }
        let label = g
            .children()
            .find(|c| has_class(*c, "edge-label"))
            .expect("every arrow has a label");
        labels.push((
            format!("{from} -> {to} {:?}", label.text()),
            text_box(label, inherited),
        ));
    }
    // The title and the legend: text outside every host and arrow.
    let mut fixed: Vec<Box2> = svg
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter(|n| {
            !n.ancestors()
                .any(|a| has_class(a, "host") || has_class(a, "edge"))
        })
        .map(|n| text_box(n, inherited))
        .collect();
    fixed.extend(hosts.values().copied());
    for (i, (what, b)) in labels.iter().enumerate() {
        assert!(
            b.x >= 0.0 && b.y >= 0.0 && b.x + b.w <= width && b.y + b.h <= height,
            "label {what} {b:?} outside the picture {width}x{height}"
        );
        for f in &fixed {
            assert!(!b.overlaps(f), "label {what} {b:?} overlaps {f:?}");
        }
        for (other, o) in &labels[i + 1..] {
            assert!(
                !b.overlaps(o),
                "labels overlap: {what} {b:?} and {other} {o:?}"
            );
        }
    }
    // Stale arrows: exactly the pairs of services whose every edge is stale.
    let mut pairs: BTreeMap<(&str, &str, &str, &str), bool> = BTreeMap::new();
    for e in &s.edges {
        let key = (
            e.from.host.as_str(),
            e.from.service.as_str(),
            e.to.host.as_str(),
            e.to.service.as_str(),
        );
        *pairs.entry(key).or_insert(true) &= e.stale;
    }
    let stale_drawn = groups(&svg, "edge")
        .iter()
        .filter(|g| has_class(**g, "stale"))
        .count();
    let drawable = |h: &str, svc: &str| services.contains_key(&(h.to_owned(), svc.to_owned()));
    let stale_expected = pairs
        .iter()
        .filter(|((fh, fs, th, ts), stale)| **stale && drawable(fh, fs) && drawable(th, ts))
        .count();
    if exact {
        assert_eq!(stale_drawn, stale_expected);
    }
    // Services with an unfed input: their own class, colour, stub and badge.
    let unfed: BTreeSet<(String, String)> = s
        .unfed
        .iter()
        .map(|e| (e.host.clone(), e.service.clone()))
        .filter(|k| services.contains_key(k))
        .collect();
    let mut flagged = BTreeSet::new();
    for g in groups(&svg, "service") {
        let key = (
            g.parent()
                .unwrap()
                .attribute("data-host")
                .unwrap()
                .to_owned(),
            g.attribute("data-service").unwrap().to_owned(),
        );
        if has_class(g, "unfed") {
            let rect = g.children().find(|c| c.has_tag_name("rect")).unwrap();
            let health_alert = rect.attribute("stroke") == Some("#c62828");
            assert!(health_alert || rect.attribute("stroke") == Some("#e65100"));
            assert!(
                g.children().any(|c| has_class(c, "unfed-stub")),
                "{key:?} has no stub"
            );
            assert!(text_of(g).contains("unfed"), "{key:?} has no badge");
            flagged.insert(key);
        } else {
            let rect = g.children().find(|c| c.has_tag_name("rect")).unwrap();
            assert_ne!(rect.attribute("stroke"), Some("#e65100"));
        }
    }
    if exact {
        assert_eq!(flagged, unfed);
    }
}

fn text_of(g: roxmltree::Node) -> String {
    g.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the pictures go when `ROLLCALL_SVG_DIR` is set, to be looked at.
fn keep_svg(name: &str, text: &str) {
    if let Some(dir) = std::env::var_os("ROLLCALL_SVG_DIR") {
        std::fs::write(std::path::Path::new(&dir).join(name), text).unwrap();
    }
}

/// The services `rollcall demo` runs, as each host's answers give them
/// (the notes' flat fields): the irrigation program between pizero1's
/// DHT22 and pizero2's pump, the ticker writing pizero1's display, and the
/// display driver's `/display` nothing writes.
fn demo_cluster() -> MapSnapshot {
    let flat = |host: &str, f: &str, i: &str, o: &str, c: &str| {
        let mut a = answer(host, f, json!({}));
        for (k, v) in [("inputs", i), ("outputs", o), ("control", c)] {
            if !v.is_empty() {
                a[k] = json!(v);
            }
        }
        a
    };
    let mut answers = Vec::new();
    for h in ["pizero1", "pizero2", "pibot01"] {
        let set = format!("/{h}/gpio/set/+");
        let gpio_out = if h == "pizero2" {
            "/pizero2/gpio/+/+"
        } else {
            ""
        };
        answers.push(flat(h, "gpio", &set, gpio_out, &format!("/{h}/gpio/+")));
        answers.push(flat(
            h,
            "system",
            "",
            &format!("/{h}/system/+"),
            &format!("/{h}/system/control"),
        ));
    }
    answers.extend([
        flat(
            "pizero1",
            "dht22",
            "",
            "/pizero1/dht22/+",
            "/pizero1/dht22/control",
        ),
        flat(
            "pizero1",
            "display",
            "/pizero1/display/text",
            "/pizero1/display/+",
            "/pizero1/display/control",
        ),
        flat("pizero1", "ticker", "", "/pizero1/display/text", ""),
        flat(
            "pizero2",
            "ain",
            "",
            "/pizero2/ain/+",
            "/pizero2/ain/control",
        ),
        flat(
            "pizero2",
            "dac",
            "/pizero2/dac/set/out0",
            "/pizero2/dac/+",
            "/pizero2/dac/control",
        ),
        flat(
            "pibot01",
            "display_driver",
            "/display",
            "/dbuts",
            "/dcontrol",
        ),
        flat(
            "pibot01",
            "irrigation",
            "/pizero1/dht22/humidity",
            "/pizero2/gpio/set/pump_drive",
            "",
        ),
        flat(
            "pibot01",
            "sonar",
            "",
            "/pibot01/sonar/+",
            "/pibot01/sonar/control",
        ),
    ]);
    let mut map = ClusterMap::new();
    map.apply_scan(&report(&answers), NOW - 2_000);
    map.snapshot(NOW)
}

/// The demo's picture, and the fixture's with an edge gone stale: readable,
/// and laid out along the flow.
#[test]
fn the_demo_cluster_picture_is_readable() {
    let demo = demo_cluster();
    let unfed: Vec<(&str, &str)> = demo
        .unfed
        .iter()
        .map(|e| (e.service.as_str(), e.topic.as_str()))
        .collect();
    assert_eq!(unfed, [("display_driver", "/display")]);
    let text = docs::svg(&demo);
    keep_svg("demo.svg", &text);
    assert_readable(&demo, &text);
    let svg = roxmltree::Document::parse(&text).unwrap();
    // The irrigation program sits between the sensor and the pump: its
    // host in the column after pizero1's, pizero2's after that.
    let x = |h: &str| {
        groups(&svg, "host")
            .into_iter()
            .find(|g| g.attribute("data-host") == Some(h))
            .map(first_rect)
            .unwrap()
            .x
    };
    assert!(x("pizero1") < x("pibot01") && x("pibot01") < x("pizero2"));
    assert_eq!(groups(&svg, "unfed").len(), 1, "only display_driver");
    assert_eq!(groups(&svg, "stale").len(), 0);

    let mut s = fixture();
    for e in s.edges.iter_mut().filter(|e| e.from.service == "pump_ctl") {
        e.stale = true;
    }
    let text = docs::svg(&s);
    keep_svg("fixture.svg", &text);
    assert_readable(&s, &text);
    let svg = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(groups(&svg, "stale").len(), 1);
}

/// A generated 50-host cluster: 29 sensor hosts, 10 averaging hosts reading
/// three sensors each, 5 controllers reading two averages each and
/// driving one of 5 actuator hosts, a logger reading every actuator's
/// outputs, an input nothing feeds, and some stale edges.
fn fifty_hosts() -> MapSnapshot {
    let mut map = ClusterMap::new();
    let topics = Topics::default();
    let describe = |map: &mut ClusterMap,
                    host: &str,
                    f: &str,
                    inputs: &[String],
                    outputs: &[String]| {
        let list = |ts: &[String]| -> Vec<Value> {
            ts.iter()
                .enumerate()
                .map(|(i, t)| json!({"name": format!("e{i}"), "topic": t, "type": "float"}))
                .collect()
        };
        let d = json!({"function": f, "interfaces": {"inputs": list(inputs), "outputs": list(outputs)}});
        map.ingest(
            &topics,
            &format!("/{host}/{f}/$description"),
            &serde_json::to_vec(&d).unwrap(),
            NOW - 1_000,
        )
        .unwrap();
        map.ingest(&topics, &format!("/{host}/$state"), b"online", NOW - 1_000)
            .unwrap();
    };
    for i in 0..29 {
        let h = format!("sensor{i:02}");
        describe(&mut map, &h, "system", &[], &[format!("/{h}/system/load")]);
        describe(
            &mut map,
            &h,
            "dht22",
            &[],
            &[format!("/{h}/dht22/temp"), format!("/{h}/dht22/humidity")],
        );
    }
    for k in 0..10 {
        let h = format!("average{k}");
        let inputs: Vec<String> = (0..3)
            .map(|j| format!("/sensor{:02}/dht22/temp", (3 * k + j) % 29))
            .collect();
        describe(
            &mut map,
            &h,
            "average",
            &inputs,
            &[format!("/{h}/average/temp")],
        );
    }
    for k in 0..5 {
        let h = format!("control{k}");
        let inputs = vec![
            format!("/average{}/average/temp", 2 * k),
            format!("/average{}/average/temp", 2 * k + 1),
        ];
        describe(
            &mut map,
            &h,
            "climate",
            &inputs,
            &[format!("/actuator{k}/gpio/set/fan")],
        );
        let a = format!("actuator{k}");
        describe(
            &mut map,
            &a,
            "gpio",
            &[format!("/{a}/gpio/set/+")],
            &[format!("/{a}/gpio/output/fan")],
        );
    }
    describe(
        &mut map,
        "logger",
        "logger",
        &["/+/gpio/output/#".to_owned(), "/nowhere/feed".to_owned()],
        &[],
    );
    let mut s = map.snapshot(NOW);
    assert_eq!(s.hosts.len(), 50);
    for (i, e) in s.edges.iter_mut().enumerate() {
        e.stale = i % 7 == 0;
    }
    s
}

#[test]
fn a_fifty_host_picture_is_readable() {
    let s = fifty_hosts();
    assert_eq!(s.unfed.len(), 1, "{:?}", s.unfed);
    let text = docs::svg(&s);
    keep_svg("fifty.svg", &text);
    assert_readable(&s, &text);
    let svg = roxmltree::Document::parse(&text).unwrap();
    // Layered by data flow: arrows point right, and are short: on average
    // they pass at most one column of hosts on their way (the 29 sensors
    // fill three columns, the rest one column a layer).
    let columns: BTreeSet<u64> = groups(&svg, "host")
        .into_iter()
        .map(|g| first_rect(g).x as u64)
        .collect();
    let mut right = 0;
    let mut passed = 0;
    let edges = groups(&svg, "edge");
    for g in &edges {
        let path = g.children().find(|c| c.has_tag_name("path")).unwrap();
        let p = path_points(path.attribute("d").unwrap());
        let (a, b) = (p[0], *p.last().unwrap());
        right += usize::from(b.0 > a.0);
        let (lo, hi) = (a.0.min(b.0), a.0.max(b.0));
        passed += columns
            .iter()
            .filter(|x| (**x as f64) > lo && (**x as f64) + 250.0 < hi)
            .count();
    }
    assert_eq!(right, edges.len(), "every arrow points right");
    assert!(
        passed <= edges.len(),
        "{passed} columns passed by {} arrows",
        edges.len()
    );
    // Not a ribbon: neither side more than four times the other.
    let root = svg.root_element();
    let w: f64 = root.attribute("width").unwrap().parse().unwrap();
    let h: f64 = root.attribute("height").unwrap().parse().unwrap();
    assert!(w < 4.0 * h && h < 4.0 * w, "{w}x{h}");
}

trait StatusWord {
    fn status_word(&self) -> &'static str;
}

impl StatusWord for rollcall_hub::HostSnapshot {
    fn status_word(&self) -> &'static str {
        match self.status {
            HostStatus::Online => "online",
            HostStatus::Offline => "offline",
            HostStatus::Missing => "missing",
        }
    }
}

// ---------------------------------------------------------------- DOT

/// DOT's tokens that matter here: quoted strings (with `\"` escapes) and the
/// rest. Panics on a string left open.
fn dot_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        loop {
            match chars.next().expect("a DOT string left open") {
                '\\' => {
                    s.push('\\');
                    s.push(chars.next().expect("a DOT string ends in a backslash"));
                }
                '"' => break,
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

#[test]
fn dot_has_a_cluster_per_host_and_an_edge_per_flow() {
    let s = fixture();
    let dot = docs::dot(&s);
    assert!(dot.starts_with("digraph rollcall {\n") && dot.ends_with("}\n"));
    let clusters = dot.matches("  subgraph \"cluster_").count();
    assert_eq!(clusters, s.hosts.len());
    let edge_lines = dot.lines().filter(|l| l.contains("\" -> \"")).count();
    assert_eq!(edge_lines, service_pairs(&s));
    // Every string closes, every line is one statement: the weird name's
    // quote and newline-free doc did not break out.
    let strings = dot_strings(&dot);
    assert!(strings.iter().any(|s| s == "lab|<b>&\\\"x\\\"`/logger*_"));
    for line in dot.lines() {
        let t = line.trim();
        assert!(
            t.is_empty() || t.ends_with(';') || t.ends_with('{') || t == "}",
            "{line}"
        );
    }
}

#[test]
fn graphviz_renders_the_dot_where_it_is_installed() {
    let s = fixture();
    let mut child = match std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            // Optional everywhere, CI included: rollcall's own SVG needs no Graphviz.
            eprintln!("skipped: Graphviz `dot` is not installed ({e})");
            return;
        }
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(docs::dot(&s).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // Graphviz's SVG starts with a DOCTYPE.
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let svg = roxmltree::Document::parse_with_options(&text, options).unwrap();
    let class = |c: &str| {
        svg.descendants()
            .filter(|n| n.attribute("class") == Some(c))
            .count()
    };
    assert_eq!(class("cluster"), s.hosts.len());
    assert_eq!(class("edge"), service_pairs(&s));
}

// ---------------------------------------------------------------- all

#[test]
fn outputs_are_deterministic_whatever_order_the_snapshot_lists() {
    let s = fixture();
    let mut shuffled = s.clone();
    shuffled.hosts.reverse();
    for h in &mut shuffled.hosts {
        h.services.reverse();
        h.pins.reverse();
    }
    shuffled.edges.reverse();
    let opts = AsyncApiOptions {
        broker: None,
        topics: Some(Topics::default()),
    };
    for f in Format::ALL {
        let a = f.render(&s, &opts);
        assert_eq!(a, f.render(&s, &opts), "{f:?} twice");
        assert_eq!(a, f.render(&shuffled, &opts), "{f:?} reordered");
    }
}

#[test]
fn an_empty_map_still_gives_four_valid_documents() {
    let s = ClusterMap::new().snapshot(NOW);
    assert!(docs::markdown(&s).contains("No host has answered"));
    let errors = schema_errors(&full_asyncapi(&s));
    assert!(errors.is_empty(), "{errors:?}");
    assert_text_fits(&roxmltree::Document::parse(&docs::svg(&s)).unwrap());
    assert!(docs::dot(&s).starts_with("digraph"));
}

/// A picture narrower than its title line (one or two hosts), and an arrow
/// between two services of the last column, which bows out past the grid:
/// the picture is made wide enough for both.
#[test]
fn svg_text_is_not_cut_off_at_the_pictures_edge() {
    let topic = "/solo/meter/reading/with/a/long/name";
    let pair = [
        answer("solo", "meter", json!({"outputs": topic})),
        answer("solo", "logger", json!({"inputs": topic})),
    ];
    let mut map = ClusterMap::new();
    map.apply_scan(&report(&pair), NOW);
    let s = map.snapshot(NOW);
    assert_eq!(s.edges.len(), 1);
    assert_text_fits(&roxmltree::Document::parse(&docs::svg(&s)).unwrap());
    // Four hosts in a row, `solo` last: its arrow bows out past the grid.
    let mut four = pair.to_vec();
    for h in ["a", "b", "c"] {
        four.push(answer(h, "system", json!({})));
    }
    map.apply_scan(&report(&four), NOW);
    let text = docs::svg(&map.snapshot(NOW));
    let svg = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(groups(&svg, "edge").len(), 1);
    assert_text_fits(&svg);
}

#[test]
fn formats_have_names_files_and_media_types() {
    for f in Format::ALL {
        assert_eq!(f.as_str().parse::<Format>(), Ok(f));
    }
    assert_eq!("markdown".parse::<Format>(), Ok(Format::Markdown));
    assert!(
        "pdf"
            .parse::<Format>()
            .unwrap_err()
            .contains("md, asyncapi, svg, dot")
    );
    let files: BTreeSet<&str> = Format::ALL.iter().map(|f| f.file_name()).collect();
    assert_eq!(
        files,
        BTreeSet::from(["asyncapi.json", "cluster.dot", "cluster.md", "cluster.svg"])
    );
    assert_eq!(Format::Svg.media_type(), "image/svg+xml");
}

// ---------------------------------------------------------------- any input

mod any_input {
    //! Snapshots with any text where names, topics, units and docs go (the
    //! map refuses some of these names; the generators must not rely on it):
    //! every output stays well-formed and keeps every host and service.

    use std::sync::OnceLock;

    use proptest::prelude::*;
    use rollcall_hub::{Edge, Endpoint, HostSnapshot, ServiceSnapshot};
    use rollcall_proto::{Description, Interface, Interfaces, ValueType};

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        // Mostly the characters that break formats, some of anything.
        prop_oneof![
            3 => proptest::string::string_regex("[a-z0-9|<>&\"'`\\\\*_#\\[\\]{}/+$ \n\t-]{0,10}").unwrap(),
            1 => any::<String>().prop_map(|s| s.chars().take(10).collect()),
        ]
    }

    fn interface() -> impl Strategy<Value = Interface> {
        (
            text(),
            text(),
            prop_oneof![
                Just(ValueType::Bool),
                Just(ValueType::Int),
                Just(ValueType::Float),
                Just(ValueType::String),
                Just(ValueType::Json)
            ],
            proptest::option::of(text()),
            proptest::option::of(-1e9..1e9f64),
            proptest::option::of(-1e9..1e9f64),
            any::<bool>(),
            proptest::option::of(text()),
        )
            .prop_map(|(name, topic, value_type, unit, min, max, retained, doc)| {
                Interface {
                    name,
                    topic,
                    value_type,
                    unit,
                    min,
                    max,
                    retained,
                    doc,
                }
            })
    }

    fn service() -> impl Strategy<Value = ServiceSnapshot> {
        let list = || proptest::collection::vec(interface(), 0..3);
        (
            text(),
            any::<bool>(),
            proptest::option::of((list(), list(), list(), list(), proptest::option::of(text()))),
        )
            .prop_map(|(name, present, description)| ServiceSnapshot {
                name: name.clone(),
                present,
                health: None,
                description: description.map(|(inputs, outputs, functions, controls, doc)| {
                    Description {
                        function: name,
                        doc,
                        interfaces: Interfaces {
                            inputs,
                            outputs,
                            functions,
                            controls,
                        },
                        health: None,
                    }
                }),
                described_by: None,
                inputs: None,
                outputs: None,
                control: None,
                last_seen_ms: NOW,
                values: Default::default(),
            })
    }

    fn snapshot() -> impl Strategy<Value = MapSnapshot> {
        let host = (
            text(),
            proptest::option::of(text()),
            prop_oneof![
                Just(HostStatus::Online),
                Just(HostStatus::Offline),
                Just(HostStatus::Missing)
            ],
            proptest::collection::vec(service(), 0..3),
        )
            .prop_map(|(name, ipaddr, status, services)| HostSnapshot {
                name,
                ipaddr,
                extaddr: None,
                online: status == HostStatus::Online,
                status,
                status_since_ms: NOW,
                last_seen_ms: NOW - 5,
                version: None,
                apps: None,
                services,
                pins: Vec::new(),
                pin_conflicts: Vec::new(),
            });
        (
            proptest::collection::vec(host, 0..4),
            proptest::collection::vec((any::<usize>(), any::<usize>(), text(), text()), 0..4),
        )
            .prop_map(|(hosts, picks)| {
                // Edges between services that exist (where there are any).
                let ends: Vec<(String, String)> = hosts
                    .iter()
                    .flat_map(|h| h.services.iter().map(|s| (h.name.clone(), s.name.clone())))
                    .collect();
                let edges = if ends.is_empty() {
                    Vec::new()
                } else {
                    picks
                        .into_iter()
                        .map(|(a, b, ta, tb)| {
                            let end = |i: usize, topic: String| Endpoint {
                                host: ends[i % ends.len()].0.clone(),
                                service: ends[i % ends.len()].1.clone(),
                                topic,
                            };
                            let mut e = Edge::new(end(a, ta), end(b, tb));
                            e.stale = a % 3 == 0;
                            e
                        })
                        .collect()
                };
                let unfed = edges.iter().take(1).map(|e: &Edge| e.to.clone()).collect();
                MapSnapshot {
                    now_ms: NOW,
                    hosts,
                    edges,
                    unfed,
                    unread: Vec::new(),
                    edge_stale_after_ms: 600_000,
                }
            })
    }

    /// What XML can carry of `s`, as the generators write it and a parser
    /// reads an attribute back (line breaks and tabs are spaces).
    fn as_xml_reads(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                '\n' | '\r' | '\t' => ' ',
                c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
                c => c,
            })
            .collect()
    }

    fn validator() -> &'static jsonschema::Validator {
        static V: OnceLock<jsonschema::Validator> = OnceLock::new();
        V.get_or_init(|| jsonschema::validator_for(&schema()).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn every_output_stays_well_formed(s in snapshot()) {
            let svg_text = docs::svg(&s);
            let svg = roxmltree::Document::parse(&svg_text)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{svg_text}")))?;
            check_readable(&s, &svg_text, false);
            let drawn: BTreeSet<String> = svg
                .descendants()
                .filter(|n| n.has_tag_name("g") && has_class(*n, "service"))
                .map(|n| format!("{}\u{0}{}", n.attribute("data-host").unwrap(), n.attribute("data-service").unwrap()))
                .collect();
            for h in &s.hosts {
                for svc in &h.services {
                    let key = format!("{}\u{0}{}", as_xml_reads(&h.name), as_xml_reads(&svc.name));
                    prop_assert!(drawn.contains(&key), "{:?}/{:?} not drawn", h.name, svc.name);
                }
            }

            let md = docs::markdown(&s);
            let mut width = None;
            for line in md.lines() {
                if line.starts_with('|') {
                    let n = cells(line).len();
                    let w = *width.get_or_insert(n);
                    prop_assert_eq!(n, w, "{}", line);
                } else {
                    width = None;
                    prop_assert!(!line.starts_with('<'), "{}", line);
                }
            }

            let dot = docs::dot(&s);
            dot_strings(&dot);
            for line in dot.lines() {
                let t = line.trim();
                prop_assert!(t.is_empty() || t.ends_with(';') || t.ends_with('{') || t == "}", "{}", line);
            }

            let options = AsyncApiOptions {
                broker: None,
                topics: Some(Topics::default()),
            };
            let doc = docs::asyncapi_with(&s, &options);
            let errors: Vec<String> = validator().iter_errors(&doc).map(|e| e.to_string()).collect();
            prop_assert!(errors.is_empty(), "{:?}", errors);
            let mut all = Vec::new();
            refs(&doc, &mut all);
            for r in &all {
                prop_assert!(resolve(&doc, r).is_some(), "dangling {}", r);
            }
        }
    }
}
