//! A rollcall cluster on a [`TestBed`]: configuration files for real
//! `rollcall agent` processes, brokers (Mosquitto or rollcall's embedded
//! one) and the hub in their namespaces, roll-calls by `rollcall scan`, and
//! what the tests compare: a map of who answered with what.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{NodeId, ProcId, TestBed};
use crate::{MosquittoConfig, find_program, require_program};

/// The MQTT port every broker of the bed listens on. Each node is a network
/// namespace of its own, so a fixed port cannot collide with anything else
/// on the machine.
pub const MQTT_PORT: u16 = 1883;

/// Where an agent's broker is.
#[derive(Debug, Clone)]
pub enum AgentBroker {
    /// A broker on another node (shared broker).
    Remote(Ipv4Addr),
    /// The agent runs the embedded broker on 127.0.0.1:1883 in its namespace.
    Embedded,
    /// A broker in the agent's namespace (Mosquitto), at 127.0.0.1:1883.
    Local,
    /// The nodes of a clustered broker on other nodes (NATS), tried in
    /// this order: `brokers = [..]`.
    Cluster(Vec<Ipv4Addr>),
}

/// How one agent is configured.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Its broker.
    pub broker: AgentBroker,
    /// MQTT keepalive in seconds.
    pub keepalive_s: u64,
    /// More TOML, appended (tables such as `[[announce]]` or `[services.gpio]`).
    pub extra: String,
    /// Top-level keys, inserted before any table.
    pub top: String,
}

impl AgentSpec {
    /// An agent on `broker` with a 2 s keepalive and nothing else changed.
    pub fn new(broker: AgentBroker) -> Self {
        AgentSpec {
            broker,
            keepalive_s: 2,
            extra: String::new(),
            top: String::new(),
        }
    }
}

/// The agent's configuration file for host `name`.
pub fn agent_toml(bed: &TestBed, name: &str, spec: &AgentSpec) -> String {
    let broker = match &spec.broker {
        AgentBroker::Remote(addr) => format!("broker = \"mqtt://{addr}:{MQTT_PORT}\""),
        // Its own host's clients reach it on loopback; off loopback it would
        // need a password file, and nothing in the bed logs in.
        AgentBroker::Embedded => format!("embedded_broker = \"127.0.0.1:{MQTT_PORT}\""),
        AgentBroker::Local => format!("broker = \"mqtt://127.0.0.1:{MQTT_PORT}\""),
        AgentBroker::Cluster(nodes) => format!(
            "brokers = [{}]",
            nodes
                .iter()
                .map(|addr| format!("\"mqtt://{addr}:{MQTT_PORT}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "hostname = \"{name}\"\n{broker}\nstate_dir = \"{}\"\nsim = true\nkeepalive_s = {}\n{}\n{}\n",
        bed.dir().join(format!("state-{name}")).display(),
        spec.keepalive_s,
        spec.top,
        spec.extra,
    )
}

/// Starts `rollcall agent` on `node` with its configuration written to
/// `{name}.toml`.
pub fn start_agent(bed: &mut TestBed, node: NodeId, spec: &AgentSpec) -> ProcId {
    let name = bed.name(node).to_owned();
    let path = bed.write_file(&format!("{name}.toml"), &agent_toml(bed, &name, spec));
    let args = ["agent".into(), "--config".into(), path.into_os_string()];
    let rollcall = bed.rollcall().to_path_buf();
    bed.spawn(node, &format!("agent-{name}"), &rollcall, &args)
}

/// Mosquitto, where installed; otherwise the reason, or a failure under CI.
pub fn mosquitto_or_skip(test: &str) -> Option<PathBuf> {
    require_program(test, "mosquitto", "mosquitto")
}

/// Starts Mosquitto on `node`, on every address, port 1883, tuned as the
/// bed has always run it, queueing up to 100,000 messages per client.
pub fn start_mosquitto(bed: &mut TestBed, node: NodeId, mosquitto: &std::path::Path) -> ProcId {
    start_mosquitto_as(bed, node, mosquitto, true)
}

/// [`start_mosquitto`], or with `tuned` false Mosquitto as Debian installs
/// it: no `set_tcp_nodelay`, the default queue of 1,000 messages.
pub fn start_mosquitto_as(
    bed: &mut TestBed,
    node: NodeId,
    mosquitto: &std::path::Path,
    tuned: bool,
) -> ProcId {
    let config = if tuned {
        MosquittoConfig {
            extra: "max_queued_messages 100000".into(),
            ..MosquittoConfig::tuned()
        }
    } else {
        MosquittoConfig::default()
    };
    start_mosquitto_config(bed, node, mosquitto, &config)
}

/// [`start_mosquitto`] with `more` appended to its configuration: a bridge's
/// `connection` section, which must come after every general setting.
pub fn start_mosquitto_with(
    bed: &mut TestBed,
    node: NodeId,
    mosquitto: &std::path::Path,
    more: &str,
) -> ProcId {
    let config = MosquittoConfig {
        extra: format!("max_queued_messages 100000\n{more}"),
        ..MosquittoConfig::tuned()
    };
    start_mosquitto_config(bed, node, mosquitto, &config)
}

fn start_mosquitto_config(
    bed: &mut TestBed,
    node: NodeId,
    mosquitto: &std::path::Path,
    config: &MosquittoConfig,
) -> ProcId {
    let name = bed.name(node).to_owned();
    let conf = bed.write_file(
        &format!("mosquitto-{name}.conf"),
        &config.text("0.0.0.0", MQTT_PORT),
    );
    let args = ["-c".into(), conf.into_os_string()];
    bed.spawn(node, &format!("mosquitto-{name}"), mosquitto, &args)
}

/// The port NATS nodes of the bed route to each other on.
pub const NATS_CLUSTER_PORT: u16 = 6222;

/// Starts a NATS cluster, one node on each of `nodes`: MQTT on the node's
/// address, port 1883, routes on [`NATS_CLUSTER_PORT`], JetStream in the
/// bed's folder; configured by [`crate::nats::node_config`]. Returns once
/// every node carries a message from a client to a subscriber on it.
pub fn start_nats(bed: &mut TestBed, nodes: &[NodeId], nats: &std::path::Path) -> Vec<ProcId> {
    let routes: Vec<String> = nodes
        .iter()
        .map(|&n| format!("nats://{}:{NATS_CLUSTER_PORT}", bed.addr(n)))
        .collect();
    let procs = nodes
        .iter()
        .map(|&node| {
            let name = bed.name(node).to_owned();
            let config = crate::nats::NodeConfig {
                name: name.clone(),
                address: bed.addr(node).to_string(),
                client_port: 4222,
                cluster_port: NATS_CLUSTER_PORT,
                mqtt_port: MQTT_PORT,
                routes: routes.clone(),
                store_dir: bed.dir().join(format!("jetstream-{name}")),
            };
            let conf = bed.write_file(
                &format!("nats-{name}.conf"),
                &crate::nats::node_config(&config),
            );
            let args = ["-c".into(), conf.into_os_string()];
            bed.spawn(node, &format!("nats-{name}"), nats, &args)
        })
        .collect();
    for &node in nodes {
        let at = SocketAddr::from((bed.addr(node), MQTT_PORT));
        wait_listening(bed, node, at, Duration::from_secs(20));
    }
    // Clients connecting while JetStream elects its leaders time out in
    // turn and pile up; the cluster is ready once each node carries a
    // message to a subscriber of its own.
    let deadline = Instant::now() + Duration::from_secs(60);
    for &node in nodes {
        let url = format!("mqtt://{}:{MQTT_PORT}", bed.addr(node));
        let topic = format!("/rollcall-ready/{}", bed.name(node));
        let probe = bed.mqtt(node, &url, &[&topic]);
        loop {
            probe.publish(&topic, "ready", false);
            let asked = Instant::now();
            while asked.elapsed() < Duration::from_secs(1)
                && !probe.with(|seen| seen.last.contains_key(&topic))
            {
                // Polling what the probe's thread records, briefly.
                std::thread::sleep(Duration::from_millis(50));
            }
            if probe.with(|seen| seen.last.contains_key(&topic)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "NATS on {} carries no message after 60 s",
                bed.name(node)
            );
        }
    }
    procs
}

/// Starts Mosquitto on `node` (every address, port 1883, anonymous) and
/// `rollcall hub` beside it on that broker, calling the roll on `broadcast`
/// every `every_s` seconds; `extra` arguments are appended. Returns the
/// hub's process.
///
/// The hub's embedded broker is not used here: off loopback it needs a
/// password file, and `rollcall scan` and the bed's probes log in to no
/// broker yet. Mosquitto plays the LAN's shared broker instead.
pub fn start_hub(
    bed: &mut TestBed,
    node: NodeId,
    broadcast: Ipv4Addr,
    every_s: u64,
    extra: &[&str],
) -> ProcId {
    let mosquitto = find_program("mosquitto")
        .expect("the bed's shared broker is Mosquitto: check with mosquitto_or_skip first");
    start_mosquitto(bed, node, &mosquitto);
    start_hub_on_broker(bed, node, broadcast, every_s, extra)
}

/// [`start_hub`] on a broker already started on `node` (port 1883): waits
/// until it listens, then starts `rollcall hub` on it.
pub fn start_hub_on_broker(
    bed: &mut TestBed,
    node: NodeId,
    broadcast: Ipv4Addr,
    every_s: u64,
    extra: &[&str],
) -> ProcId {
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, MQTT_PORT));
    wait_listening(bed, node, local, Duration::from_secs(10));
    let mut args: Vec<String> = [
        "hub",
        "--broker",
        &format!("mqtt://127.0.0.1:{MQTT_PORT}"),
        "--broadcast",
        &broadcast.to_string(),
        "--scan-every",
        &every_s.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let rollcall = bed.rollcall().to_path_buf();
    bed.spawn(node, "hub", &rollcall, &args)
}

/// Waits until something in `node` accepts TCP on `addr`.
pub fn wait_listening(bed: &TestBed, node: NodeId, addr: SocketAddr, timeout: Duration) {
    let ok = bed.in_node(node, move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            // A refused connection returns at once: poll, gently.
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    assert!(ok, "nothing listens on {addr} after {timeout:?}");
}

/// `GET path` over HTTP/1.1 from inside `node`; the body on a 200.
pub fn http_get(
    bed: &TestBed,
    node: NodeId,
    addr: SocketAddr,
    path: &str,
) -> Result<String, String> {
    let path = path.to_owned();
    bed.in_node(node, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("{addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(head.lines().next().unwrap_or("").to_owned());
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Ok(unchunk(body));
        }
        Ok(body.to_owned())
    })
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One `rollcall scan --json` run inside `node`.
#[derive(Debug)]
pub struct Scan {
    /// Whether it exited 0 (with `--expect N`: N hosts answered).
    pub ok: bool,
    /// Its report.
    pub report: Value,
    /// Its stderr.
    pub stderr: String,
}

/// Runs `rollcall scan --json --broker mqtt://{broker}:1883 --broadcast
/// {broadcast} --expect {expect}` in `node`, with `extra` arguments.
pub fn scan(
    bed: &TestBed,
    node: NodeId,
    broker: Ipv4Addr,
    broadcast: Ipv4Addr,
    expect: usize,
    extra: &[&str],
) -> Scan {
    let mut args: Vec<String> = vec![
        "scan".into(),
        "--json".into(),
        "--broker".into(),
        format!("mqtt://{broker}:{MQTT_PORT}"),
        "--broadcast".into(),
        broadcast.to_string(),
        "--expect".into(),
        expect.to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = bed.exec(node, bed.rollcall(), &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    Scan {
        ok: out.status.success(),
        report: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One host in a map: its address, the services its agent lists, and the
/// services that answered with their flat fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// `ipaddr` as the host reported it.
    pub ipaddr: String,
    /// The services its agent lists (`apps`).
    pub apps: Vec<String>,
    /// Each answering service: (function, inputs, outputs, control).
    pub services: Vec<[String; 4]>,
}

/// Who answered with what, by host name, from a `rollcall scan --json`
/// report; answer times left out.
pub fn map_of(report: &Value) -> BTreeMap<String, HostView> {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    report["hosts"]
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
            let services = h["services"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    [
                        text(&s["function"]),
                        text(&s["inputs"]),
                        text(&s["outputs"]),
                        text(&s["control"]),
                    ]
                })
                .collect();
            (
                text(&h["hostname"]),
                HostView {
                    ipaddr: text(&h["ipaddr"]),
                    apps,
                    services,
                },
            )
        })
        .collect()
}

/// Host and service answers in a report, and the last answer's time.
pub fn answers(report: &Value) -> (usize, usize, Option<u64>) {
    let hosts = report["hosts"].as_array().map_or(&[][..], Vec::as_slice);
    let host_answers = hosts.iter().filter(|h| h["t_ms"].is_u64()).count();
    let services: usize = hosts
        .iter()
        .map(|h| h["services"].as_array().map_or(0, Vec::len))
        .sum();
    let last = hosts
        .iter()
        .flat_map(|h| {
            h["t_ms"].as_u64().into_iter().chain(
                h["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["t_ms"].as_u64()),
            )
        })
        .max();
    (host_answers, services, last)
}
