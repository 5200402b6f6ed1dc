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
    let edge_rows = md
        .lines()
        .skip_while(|l| *l != "## Data flow")
        .take_while(|l| !l.starts_with("## Host"))
        .filter(|l| l.starts_with("| `"))
        .count();
    assert_eq!(edge_rows, s.edges.len());
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

fn groups<'a>(svg: &'a roxmltree::Document, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    svg.descendants()
        .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some(class))
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
                    c.attribute("class") == Some("service")
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
        assert!(d.starts_with('M') && d.contains(" C"), "{d}");
        assert_eq!(path.attribute("marker-end"), Some("url(#arrow)"));
    }
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
                            Edge {
                                from: end(a, ta),
                                to: end(b, tb),
                            }
                        })
                        .collect()
                };
                MapSnapshot {
                    now_ms: NOW,
                    hosts,
                    edges,
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
            let drawn: BTreeSet<String> = svg
                .descendants()
                .filter(|n| n.attribute("class") == Some("service"))
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
