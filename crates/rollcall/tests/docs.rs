//! `rollcall docs` as a user runs it: two agent processes on the embedded
//! broker and on Mosquitto (skipped with a note where it is not installed,
//! failed under `CI=true`), one announcing a logger that consumes every host's `system`
//! readings, documented from retained state alone and with a roll-call,
//! into files and to stdout; a host whose agent dies shows as offline; and the
//! errors a user meets (no broker, an output folder that cannot be made, a
//! format that does not exist). Everything stays on loopback.

mod common;

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use rollcall_testsupport::Mosquitto;
use serde_json::Value;

/// `rollcall docs --no-rollcall --format md` until `done` holds of the page.
fn retained_page_until(broker: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = ok(rollcall()
            .args([
                "docs",
                "--no-rollcall",
                "--format",
                "md",
                "--wait-ms",
                "300",
            ])
            .args(["--broker", broker])
            .output()
            .unwrap());
        if done(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{page}");
    }
}

const LOGGER: &str = r#"
[[announce]]
function = "logger"
doc = "keeps every host's readings"
inputs = ["/+/system/#"]
outputs = ["/pizero2/logger/lines"]
"#;

/// The broker the agents share: `pizero1`'s embedded one (rumqttd), or a
/// Mosquitto child process.
enum Broker {
    Embedded,
    Mosquitto(Mosquitto),
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn docs_on_the_embedded_broker() {
    two_agents_documented(Broker::Embedded);
}

#[test]
fn docs_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::for_test("docs_on_mosquitto") else {
        return;
    };
    two_agents_documented(Broker::Mosquitto(mosquitto));
}

/// Two agents, one announcing a logger of every host's readings, documented
/// from retained state alone and with a roll-call; then one dies.
fn two_agents_documented(kind: Broker) {
    let broker_port = match &kind {
        Broker::Embedded => free_tcp_port(),
        Broker::Mosquitto(mosquitto) => mosquitto.addr().port(),
    };
    let udp_port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let (state1, state2) = (dir.path().join("s1"), dir.path().join("s2"));
    let config = dir.path().join("pizero2.toml");
    std::fs::write(&config, LOGGER).unwrap();
    let broker_addr = format!("127.0.0.1:{broker_port}");
    let broker = format!("mqtt://{broker_addr}");
    let pizero1_broker = match &kind {
        Broker::Embedded => ["--embedded-broker", broker_addr.as_str()],
        Broker::Mosquitto(_) => ["--broker", broker.as_str()],
    };
    let _pizero1 = spawn_agent("pizero1", &pizero1_broker, udp_port, &state1);
    wait_listening(broker_port, "the broker");
    let config_arg = config.to_str().unwrap();
    let mut pizero2 = spawn_agent(
        "pizero2",
        &["--broker", &broker, "--config", config_arg],
        udp_port,
        &state2,
    );

    // From retained state alone: both hosts and their services, no
    // addresses (only answers carry those), the logger's data flow.
    let page = retained_page_until(&broker, "saw both hosts", |p| {
        p.contains("### Service `logger` on `pizero2`")
            && p.contains("### Service `system` on `pizero1`")
    });
    assert!(
        page.contains("2 hosts (2 online, 0 offline, 0 missing)"),
        "{page}"
    );
    assert!(page.contains("- address: unknown"), "{page}");
    assert!(
        page.contains("| `pizero1` / `system` | `/pizero1/system/uptime` | `pizero2` / `logger` | `/+/system/#` |"),
        "{page}"
    );

    // With a roll-call, into files.
    let out_dir = dir.path().join("docs");
    let summary = rollcall()
        .args(["docs", "--out"])
        .arg(&out_dir)
        .args(["--broker", &broker, "--broadcast", "127.255.255.255"])
        .args(["--udp-port", &udp_port.to_string()])
        .args(["--expect", "2", "--wait-ms", "5000"])
        .output()
        .unwrap();
    ok(summary.clone());
    let said = String::from_utf8_lossy(&summary.stderr);
    assert!(
        said.contains("wrote cluster.md, asyncapi.json, cluster.svg, cluster.dot"),
        "{said}"
    );
    let read = |f: &str| std::fs::read_to_string(out_dir.join(f)).unwrap();

    let md = read("cluster.md");
    assert!(
        md.contains("2 hosts (2 online, 0 offline, 0 missing)"),
        "{md}"
    );
    // The answers' addresses are there now.
    assert!(md.contains("| `pizero1` | `127.0.0.1` | online |"), "{md}");
    assert!(
        md.contains("| outputs | `uptime` | `/pizero1/system/uptime` | float | s |"),
        "{md}"
    );

    let api: Value = serde_json::from_str(&read("asyncapi.json")).unwrap();
    assert_eq!(api["asyncapi"], "3.0.0");
    assert_eq!(api["servers"]["broker"]["host"], broker_addr.as_str());
    let channels = api["channels"].as_object().unwrap();
    let addresses: Vec<&str> = channels
        .values()
        .filter_map(|c| c["address"].as_str())
        .collect();
    for a in [
        "/pizero1/system/uptime",
        "/pizero2/gpio/control",
        "/{level1}/system/{rest}",
        "/{host}/$state",
        "/{host}/{service}/$description",
    ] {
        assert!(addresses.contains(&a), "{a} not in {addresses:?}");
    }

    let svg_text = read("cluster.svg");
    let svg = roxmltree::Document::parse(&svg_text).unwrap();
    let hosts: Vec<&str> = svg
        .descendants()
        .filter(|n| n.attribute("class") == Some("host"))
        .filter_map(|n| n.attribute("data-host"))
        .collect();
    assert_eq!(hosts, ["pizero1", "pizero2"]);
    // An arrow's class is `edge`, or `edge stale` when nothing crossed it lately.
    let arrows = svg
        .descendants()
        .filter(|n| {
            n.attribute("class")
                .is_some_and(|c| c.split(' ').next() == Some("edge"))
        })
        .count();
    // pizero1's and pizero2's system services feed the logger.
    assert_eq!(arrows, 2);

    let dot = read("cluster.dot");
    assert_eq!(dot.matches("subgraph \"cluster_").count(), 2);
    assert!(
        dot.contains("\"pizero1/system\" -> \"pizero2/logger\""),
        "{dot}"
    );
    // Nothing but the four documents is left in the folder.
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["asyncapi.json", "cluster.dot", "cluster.md", "cluster.svg"]
    );

    // A host whose agent dies: the broker sees its connection drop and
    // publishes its last will, a retained `offline`; the docs show it.
    pizero2.0.kill().unwrap();
    pizero2.0.wait().unwrap();
    let page = retained_page_until(&broker, "saw pizero2 offline", |p| {
        p.contains("| `pizero2` |  | **offline** |")
    });
    assert!(page.contains("1 online, 1 offline"), "{page}");
}

#[test]
fn errors_a_user_meets_are_clear_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("mqtt://127.0.0.1:{}", free_tcp_port());

    let out_dir = dir.path().join("docs");
    let err = failed(
        rollcall()
            .args(["docs", "--no-rollcall", "--broker", &nowhere, "--out"])
            .arg(&out_dir)
            .output()
            .unwrap(),
    );
    assert!(err.contains("cannot reach the broker at"), "{err}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = failed(
        rollcall()
            .args(["docs", "--broker", &nowhere, "--out"])
            .arg(file.join("docs"))
            .output()
            .unwrap(),
    );
    assert!(err.contains("cannot create the output folder"), "{err}");

    let err = failed(
        rollcall()
            .args(["docs", "--broker", &nowhere])
            .output()
            .unwrap(),
    );
    assert!(err.contains("give --out DIR"), "{err}");

    let err = failed(
        rollcall()
            .args(["docs", "--format", "pdf", "--broker", &nowhere])
            .output()
            .unwrap(),
    );
    assert!(err.contains("one of md, asyncapi, svg, dot"), "{err}");
}
