//! The cluster map's speed: how many answers a second it takes in, and how
//! soon a hub that connects to a broker holding 1,000 hosts' retained state
//! has all of them in its map.
//!
//! 1. Ingest, in this process, no broker: 1,000 hosts × (a host answer and
//!    four service answers, each service with four outputs and two inputs
//!    described), 20 rounds = 100,000 answers, through
//!    `ClusterMap::apply_answer` (answers parsed beforehand), through
//!    `Answer::parse` + `apply_answer` (from the bytes), and as 1,000-host
//!    `ScanReport`s through `apply_scan`. Then `snapshot` (with edges and
//!    pin maps) of that map, and its JSON.
//! 2. Rebuild from retained state, on the embedded broker (rumqttd) and a
//!    Mosquitto child process: 1,000 hosts' `$state` (`online`), two
//!    `$description`s each (`system` with four outputs, `gpio` with three
//!    outputs and two inputs naming pins) and four retained readings each,
//!    7,000 retained messages, published before the hub starts. Then
//!    `run_hub` starts (its roll-call goes to a UDP port nobody listens on
//!    and waits a minute, so only retained state fills the map) and the
//!    clock runs from calling `run_hub` until the map has 1,000 hosts online
//!    with both services described, and until it has all 4,000 values
//!    (which the hub subscribes to only once it has read the descriptions).
//!    Three runs per broker, each a new hub.
//!
//! Run with `cargo bench -p rollcall --bench map`. Markdown on stdout,
//! progress on stderr. Everything listens on 127.0.0.1; without Mosquitto
//! its phase is skipped with a note. Each phase is bounded in count and
//! gives up after 60 s.

mod support;

use support::free_udp_port;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall_hub::{
    ClusterMap, HostSeen, HostStatus, HubConfig, HubShared, ScanOptions, ScanReport, ServiceSeen,
    run_hub,
};
use rollcall_net::{BrokerUrl, EmbeddedBroker, Qos, Session, SessionConfig};
use rollcall_proto::{Answer, Description, Health, Interface, Interfaces, Topics, ValueType};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const HOSTS: usize = 1000;
const SERVICES: usize = 4;
const ROUNDS: usize = 20;
const REBUILDS: usize = 3;
const GIVE_UP: Duration = Duration::from_secs(60);

fn system_description(host: &str) -> Description {
    let out = |name: &str, unit: &str| {
        Interface::new(name, format!("/{host}/system/{name}"), ValueType::Float)
            .unit(unit)
            .retained()
    };
    Description {
        function: "system".into(),
        doc: Some("the host's uptime, load, memory and CPU temperature".into()),
        interfaces: Interfaces {
            inputs: vec![],
            outputs: vec![
                out("uptime", "s"),
                out("load", ""),
                out("mem_free", "kB"),
                out("cpu_temp", "°C"),
            ],
            functions: vec![Interface::new(
                "all",
                format!("/{host}/system/get"),
                ValueType::Json,
            )],
            controls: vec![Interface::new(
                "control",
                format!("/{host}/system/control"),
                ValueType::Json,
            )],
        },
        health: Some(Health::Ok),
    }
}

fn gpio_description(host: &str) -> Description {
    let t = |rest: &str| format!("/{host}/gpio/{rest}");
    Description {
        function: "gpio".into(),
        doc: Some("GPIO outputs, PWM and inputs, configured over MQTT".into()),
        interfaces: Interfaces {
            inputs: vec![
                Interface::new("pump", t("set/pump"), ValueType::Bool).doc("drives pin 25"),
                Interface::new("lamp", t("set/lamp"), ValueType::Bool).doc("drives pin 23"),
                Interface::new("fan", t("set/fan"), ValueType::Float)
                    .doc("duty cycle of pin 18, period 1000 µs"),
            ],
            outputs: vec![
                Interface::new("button", t("input/button"), ValueType::Bool)
                    .doc("pin 22, reported on change"),
                Interface::new("pump", t("output/pump"), ValueType::Bool),
                Interface::new("lamp", t("output/lamp"), ValueType::Bool),
            ],
            functions: vec![],
            controls: vec![],
        },
        health: Some(Health::Ok),
    }
}

/// A service answer of service `i` of `host`: four outputs, two inputs,
/// the second input listening to the next host's first output (an edge).
fn service_answer(id: u64, host: usize, i: usize) -> Vec<u8> {
    let h = format!("host{host:04}");
    let next = format!("host{:04}", (host + 1) % HOSTS);
    let f = format!("svc{i}");
    let entry = |name: &str, topic: String| json!({"name": name, "topic": topic, "type": "float"});
    let outputs: Vec<_> = (0..4)
        .map(|k| entry(&format!("o{k}"), format!("/{h}/{f}/o{k}")))
        .collect();
    let inputs = vec![
        entry("cmd", format!("/{h}/{f}/set/cmd")),
        entry("feed", format!("/{next}/{f}/+")),
    ];
    serde_json::to_vec(&json!({
        "id": id, "hostname": h, "function": f, "ipaddr": "10.0.0.1",
        "cmd": "status", "replyto": "bench", "topic": "/stat/data",
        "inputs": format!("/{h}/{f}/set/cmd"), "outputs": format!("/{h}/{f}/+"),
        "interfaces": {"inputs": inputs, "outputs": outputs, "functions": [], "controls": []},
        "health": {"status": "ok"}
    }))
    .unwrap()
}

fn host_answer(id: u64, host: usize) -> Vec<u8> {
    let apps: Vec<String> = (0..SERVICES).map(|i| format!("svc{i}")).collect();
    serde_json::to_vec(&json!({
        "id": id, "hostname": format!("host{host:04}"), "function": "host",
        "ipaddr": "10.0.0.1", "cmd": "status", "replyto": "bench", "topic": "/stat/data",
        "apps": apps, "version": "0.1.0", "uptime_s": 100
    }))
    .unwrap()
}

struct Rate {
    what: &'static str,
    items: usize,
    took: Duration,
}

fn ingest() -> Result<Vec<Rate>> {
    let round: Vec<Vec<u8>> = (0..HOSTS)
        .flat_map(|h| {
            std::iter::once(host_answer(1, h))
                .chain((0..SERVICES).map(move |i| service_answer(1, h, i)))
        })
        .collect();
    let parsed: Vec<Answer> = round
        .iter()
        .map(|b| Answer::parse(b))
        .collect::<Result<_, _>>()?;
    let mut rates = Vec::new();

    let rss_before = rss_kb();
    let mut map = ClusterMap::new();
    let started = Instant::now();
    let mut n = 0;
    for r in 0..ROUNDS {
        for a in &parsed {
            map.apply_answer(a, r as u64)?;
            n += 1;
        }
        if started.elapsed() > GIVE_UP {
            break;
        }
    }
    rates.push(Rate {
        what: "apply_answer (parsed answers)",
        items: n,
        took: started.elapsed(),
    });
    println!(
        "Resident memory grew by {:.1} MB while the map of {HOSTS} hosts × {} answers was built \
         (VmRSS, so the allocator's retained pages count too).",
        rss_kb().saturating_sub(rss_before) as f64 / 1024.0,
        SERVICES + 1
    );

    let mut map = ClusterMap::new();
    let started = Instant::now();
    let mut n = 0;
    for r in 0..ROUNDS {
        for b in &round {
            map.apply_answer(&Answer::parse(b)?, r as u64)?;
            n += 1;
        }
        if started.elapsed() > GIVE_UP {
            break;
        }
    }
    rates.push(Rate {
        what: "Answer::parse + apply_answer (bytes)",
        items: n,
        took: started.elapsed(),
    });

    let report = ScanReport {
        id: 1,
        elapsed_ms: 0,
        window_ms: 0,
        other_ids: 0,
        duplicates: 0,
        lost_in_session: 0,
        digests: Default::default(),
        hosts: (0..HOSTS)
            .map(|h| {
                let host = &parsed[h * (SERVICES + 1)];
                HostSeen {
                    hostname: host.hostname.clone(),
                    ipaddr: host.ipaddr.clone(),
                    extaddr: None,
                    t_ms: Some(1),
                    apps: host.apps.clone(),
                    version: host.version.clone(),
                    services: parsed[h * (SERVICES + 1) + 1..(h + 1) * (SERVICES + 1)]
                        .iter()
                        .map(|a| ServiceSeen {
                            function: a.function.clone(),
                            inputs: a.inputs.clone(),
                            outputs: a.outputs.clone(),
                            control: a.control.clone(),
                            t_ms: 1,
                            interfaces: a.interfaces.clone(),
                            health: a.health.clone(),
                        })
                        .collect(),
                }
            })
            .collect(),
    };
    let mut scan_map = ClusterMap::new();
    let started = Instant::now();
    let mut n = 0;
    for r in 0..ROUNDS {
        scan_map.apply_scan(&report, r as u64);
        n += HOSTS * (SERVICES + 1);
        if started.elapsed() > GIVE_UP {
            break;
        }
    }
    rates.push(Rate {
        what: "apply_scan (1,000-host reports)",
        items: n,
        took: started.elapsed(),
    });

    let started = Instant::now();
    let snapshot = map.snapshot(0);
    let took = started.elapsed();
    let bytes = serde_json::to_vec(&snapshot)?;
    eprintln!(
        "snapshot: {} hosts, {} edges, {} bytes of JSON",
        snapshot.hosts.len(),
        snapshot.edges.len(),
        bytes.len()
    );
    if snapshot.edges.len() != HOSTS * SERVICES * 4 {
        bail!(
            "expected {} edges, got {}",
            HOSTS * SERVICES * 4,
            snapshot.edges.len()
        );
    }
    rates.push(Rate {
        what: "snapshot of 1,000 hosts (edges, pins)",
        items: 1,
        took,
    });
    let started = Instant::now();
    let _ = serde_json::to_vec(&map.snapshot(0))?;
    rates.push(Rate {
        what: "snapshot + JSON",
        items: 1,
        took: started.elapsed(),
    });
    Ok(rates)
}

/// Publishes every host's retained state and waits until the broker hands
/// all descriptions to a new subscriber.
async fn publish_retained(broker: &BrokerUrl) -> Result<()> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut config =
        SessionConfig::new(broker.clone(), format!("bench-pub-{}", std::process::id()));
    config.channel_capacity = 65_536;
    let s = Session::start(config, stop.clone(), &tracker)?;
    s.handle.wait_connected(Duration::from_secs(5)).await?;
    let topics = Topics::default();
    for h in 0..HOSTS {
        let host = format!("host{h:04}");
        s.handle
            .publish(&topics.state(&host), "online", Qos::AtLeastOnce, true)
            .await?;
        for d in [system_description(&host), gpio_description(&host)] {
            s.handle
                .publish(
                    &topics.description(&host, &d.function),
                    serde_json::to_vec(&d)?,
                    Qos::AtLeastOnce,
                    true,
                )
                .await?;
        }
        for (name, unit, value) in [
            ("uptime", "s", json!(1000 + h)),
            ("load", "", json!([0.1, 0.2, 0.3])),
            ("mem_free", "kB", json!(123_456)),
            ("cpu_temp", "°C", json!(48.5)),
        ] {
            s.handle
                .publish(
                    &format!("/{host}/system/{name}"),
                    serde_json::to_vec(&json!({"value": value, "unit": unit, "ts": 1}))?,
                    Qos::AtLeastOnce,
                    true,
                )
                .await?;
        }
    }
    // A new subscriber sees every value: then all of it is stored.
    let mut check_config = SessionConfig::new(
        broker.clone(),
        format!("bench-check-{}", std::process::id()),
    );
    check_config.channel_capacity = 65_536;
    let mut check = Session::start(check_config, stop.clone(), &tracker)?;
    let deadline = Instant::now() + GIVE_UP;
    loop {
        check
            .handle
            .subscribe_with_qos("/+/system/+", Qos::AtMostOnce)
            .await?;
        let mut seen = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(500), check.incoming.recv()).await
        {
            seen += 1;
        }
        check.handle.unsubscribe("/+/system/+").await?;
        // Four values and a description per host.
        if seen >= HOSTS * 5 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the broker holds only {seen} of {} system messages",
                HOSTS * 5
            );
        }
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

struct Rebuild {
    hosts_ms: f64,
    values_ms: f64,
    dropped: u64,
}

async fn rebuild(broker: &BrokerUrl) -> Result<Rebuild> {
    let shared = Arc::new(HubShared::new(Topics::default()));
    let scan = ScanOptions {
        replyto: "bench".into(),
        topic: "/stat/bench".into(),
        udp_port: free_udp_port(),
        broadcasts: vec![],
        targets: vec![Ipv4Addr::LOCALHOST.into()],
        via_mqtt: false,
        wait: GIVE_UP,
        window_ms: 0,
        expect: None,
        cluster_key: None,
        sends: 1,
        descriptions: Default::default(),
    };
    let stop = CancellationToken::new();
    let config = HubConfig::new(broker.clone(), scan, Duration::from_secs(3600));
    let mut changes = shared.changes.subscribe();
    let started = Instant::now();
    let hub = tokio::spawn(run_hub(config, Arc::clone(&shared), stop.clone()));
    let mut hosts_ms = None;
    let result = loop {
        let (online, described, values) = {
            let map = shared.lock_map();
            let mut online = 0;
            let mut described = 0;
            let mut values = 0;
            for h in map.hosts() {
                online += usize::from(h.status == HostStatus::Online);
                described += h
                    .services
                    .values()
                    .filter(|s| s.description.is_some())
                    .count();
                values += h.services.values().map(|s| s.values.len()).sum::<usize>();
            }
            (online, described, values)
        };
        if hosts_ms.is_none() && online == HOSTS && described == 2 * HOSTS {
            hosts_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        if let Some(hosts_ms) = hosts_ms
            && values == 4 * HOSTS
        {
            break Ok(Rebuild {
                hosts_ms,
                values_ms: started.elapsed().as_secs_f64() * 1000.0,
                dropped: shared.metrics.errors("session_dropped"),
            });
        }
        if started.elapsed() > GIVE_UP {
            break Err(anyhow::anyhow!(
                "after {GIVE_UP:?}: {online} hosts online, {described} descriptions, {values} values"
            ));
        }
        // Look again at the next change, or soon.
        let _ = tokio::time::timeout(Duration::from_millis(5), changes.recv()).await;
        while changes.try_recv().is_ok() {}
    };
    stop.cancel();
    hub.await??;
    result
}

async fn rebuild_phase(name: &str, broker: BrokerUrl, rows: &mut Vec<String>) -> Result<()> {
    let started = Instant::now();
    publish_retained(&broker).await?;
    eprintln!(
        "{name}: 7,000 retained messages stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for run in 1..=REBUILDS {
        let r = rebuild(&broker).await?;
        eprintln!(
            "{name} run {run}: hosts {:.0} ms, values {:.0} ms",
            r.hosts_ms, r.values_ms
        );
        rows.push(format!(
            "| {name} | {run} | {:.0} ms | {:.0} ms | {} | {} |",
            r.hosts_ms,
            r.values_ms,
            r.dropped,
            if r.hosts_ms <= 1000.0 {
                "met"
            } else {
                "missed"
            }
        ));
    }
    Ok(())
}

/// This process's resident memory, in kB.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    support::init_logging();
    let started = Instant::now();
    println!("Load average at start: {}", support::load_line());
    eprintln!("== 1. ingest");
    let rates = ingest()?;
    println!();
    println!("| map operation | items | time | rate | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for r in &rates {
        let per_s = r.items as f64 / r.took.as_secs_f64();
        let target = if r.items > 1 {
            if per_s >= 10_000.0 {
                "≥ 10,000/s: met"
            } else {
                "≥ 10,000/s: missed"
            }
        } else {
            ""
        };
        println!(
            "| {} | {} | {:.1} ms | {:.0}/s | {target} |",
            r.what,
            r.items,
            r.took.as_secs_f64() * 1000.0,
            per_s
        );
    }

    eprintln!("== 2. rebuild from retained state");
    let mut rows = Vec::new();
    let embedded = EmbeddedBroker::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .context("starting the embedded broker")?;
    rebuild_phase("embedded (rumqttd)", embedded.url(), &mut rows)
        .await
        .context("embedded broker phase")?;
    let mut notes = Vec::new();
    match support::mosquitto("")? {
        None => notes.push("Mosquitto: skipped: mosquitto not installed".to_owned()),
        Some(mosquitto) => {
            let phase = rebuild_phase("mosquitto", mosquitto.url(), &mut rows).await;
            drop(mosquitto);
            phase.context("mosquitto phase")?;
        }
    }
    println!();
    println!(
        "| broker | run | 1,000 hosts online, described | + 4,000 values | dropped by hub session | target: hosts ≤ 1 s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for row in rows {
        println!("{row}");
    }
    for note in notes {
        println!("{note}");
    }
    println!();
    println!("Load average at end: {}", support::load_line());
    println!("Whole run: {:.1} s.", started.elapsed().as_secs_f64());
    Ok(())
}
