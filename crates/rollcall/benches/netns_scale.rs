//! Benchmark: a roll-call to 50 real hosts on the network-namespace test
//! bed. Each host is a namespace running a `rollcall agent` process with 5
//! services (`system` and 4 announced); the broker (Mosquitto, then the
//! embedded one in a `rollcall hub` process) has a namespace of its own; the
//! scanner (`rollcall_hub::Scanner`, the one `rollcall scan` uses) runs in
//! the hub's namespace and broadcasts on the bridge. For each broker and
//! `window_ms` (the default for 50 hosts, 5; then 20, the old default; then
//! 0), Mosquitto stock and tuned: completeness and the time from the roll-call's
//! sending to its last answer (p50, p95 over 20 roll-calls), and what one
//! roll-call puts on the bridge (nftables counters in the bridge's
//! namespace). Prints markdown for BENCHMARKS.md. Needs root, `ip` and `nft`.
//!
//! Where `nats-server` is installed, the same on a three-node NATS cluster
//! speaking MQTT (one namespace per node, each agent with all three in
//! `brokers`, its own node first, the scanner on node 1, every subscription
//! at QoS 0 as docs/deploying.md says for NATS), then node 1 is
//! killed and roll-calls through node 2 are repeated until one brings every
//! host and every service again: the recovery time.
//! `ROLLCALL_BENCH_NETNS_BROKERS=stock,nats` picks the phases whose names
//! contain one of the words.
//!
//! Run: `cargo bench -p rollcall --bench netns_scale`

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rollcall_hub::{ScanOptions, ScanReport, Scanner};
use rollcall_net::BrokerUrl;
use rollcall_proto::Topics;
use rollcall_testsupport::netns::cluster::{self, AgentBroker, AgentSpec, MQTT_PORT};
use rollcall_testsupport::netns::{self as harness, NodeId, TestBed, Traffic, TrafficReader};
use rollcall_testsupport::{find_program, skip};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Hosts, each a namespace with an agent.
const HOSTS: usize = 50;
/// Announced services per host, besides `system`.
const ANNOUNCED: usize = 4;
/// Answers one roll-call must bring: a host answer and one per service.
const ANSWERS: usize = HOSTS * (2 + ANNOUNCED);
/// Roll-calls counted per (broker, window_ms), after the warm-up ones.
const COUNTED: usize = 20;
const WARM_UP: usize = 2;
/// Roll-calls start at least this far apart: the agents' rate limit (20 a
/// second) never drops one.
const SPACING: Duration = Duration::from_millis(150);

/// One roll-call's outcome.
struct Sample {
    last_ms: Option<u64>,
    answers: usize,
    traffic: Traffic,
    busy: f64,
    /// Wall time of the scan, and CPU time during it (ns): all agents, the
    /// broker, the scanner's thread, and the whole machine.
    wall_ns: u64,
    agents_ns: u64,
    broker_ns: u64,
    scanner_ns: u64,
    machine_ns: u64,
}

fn main() {
    if let Some(reason) = harness::unavailable() {
        skip::<()>("netns_scale", &reason);
        return;
    }
    if find_program("nft").is_none() {
        skip::<()>("netns_scale", "`nft` (nftables) is not installed");
        return;
    }
    let started = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut bed = TestBed::new(
        "netns_scale",
        std::path::Path::new(env!("CARGO_BIN_EXE_rollcall")),
    )
    .expect("test bed");
    let lan = bed.add_bridge().unwrap();
    let hub = bed.add_host("hub", lan).unwrap();
    let broker = bed.add_host("broker", lan).unwrap();
    let hosts: Vec<NodeId> = (1..=HOSTS)
        .map(|i| bed.add_host(&format!("h{i:02}"), lan).unwrap())
        .collect();
    bed.count_traffic(lan, &[hub, broker]).unwrap();
    let reader = bed.traffic_reader(lan);
    let broker_addr = bed.addr(broker);
    let broadcast = bed.broadcast(lan);
    let nats = find_program("nats-server");
    let nats_nodes: Vec<NodeId> = match nats {
        Some(_) => (1..=3)
            .map(|i| bed.add_host(&format!("nats{i}"), lan).unwrap())
            .collect(),
        None => Vec::new(),
    };
    eprintln!(
        "test bed: {} namespaces in {:?}",
        HOSTS + 3,
        started.elapsed()
    );

    let mut rows = String::new();
    let mut traffic_rows = String::new();
    let mut cpu_rows = String::new();
    let mut brokers: Vec<&str> = Vec::new();
    if find_program("mosquitto").is_some() {
        brokers.push("mosquitto (stock)");
        brokers.push("mosquitto (tuned)");
    } else {
        eprintln!("mosquitto is not installed: the embedded broker only");
    }
    brokers.push("embedded (rumqttd)");
    if nats.is_some() {
        brokers.push("nats (3 nodes)");
    } else {
        eprintln!("nats-server is not installed: no NATS phase");
    }
    if let Ok(only) = std::env::var("ROLLCALL_BENCH_NETNS_BROKERS") {
        brokers.retain(|kind| only.split(',').any(|word| kind.contains(word.trim())));
    }
    let mut recovery = String::new();
    for kind in brokers {
        let is_nats = kind.starts_with("nats");
        let mut nats_procs = Vec::new();
        // The NATS phase's scanner, probe and CPU readings are on node 1.
        let broker_addr = if is_nats {
            bed.addr(nats_nodes[0])
        } else {
            broker_addr
        };
        let nats_addrs: Vec<Ipv4Addr> = nats_nodes.iter().map(|&n| bed.addr(n)).collect();
        let broker_proc = match kind {
            _ if is_nats => {
                nats_procs = cluster::start_nats(&mut bed, &nats_nodes, nats.as_ref().unwrap());
                nats_procs[0]
            }
            "mosquitto (stock)" | "mosquitto (tuned)" => {
                let m = find_program("mosquitto").unwrap();
                let tuned = kind == "mosquitto (tuned)";
                cluster::start_mosquitto_as(&mut bed, broker, &m, tuned)
            }
            _ => cluster::start_hub(&mut bed, broker, Ipv4Addr::LOCALHOST, 3600, &[]),
        };
        if !is_nats {
            let at = SocketAddr::from((broker_addr, MQTT_PORT));
            cluster::wait_listening(&bed, broker, at, Duration::from_secs(10));
        }
        let agents: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let mut spec = agent_spec(broker_addr, bed.name(h));
                if is_nats {
                    spec.broker =
                        AgentBroker::Cluster((0..3).map(|k| nats_addrs[(i + k) % 3]).collect());
                    // As docs/deploying.md says for NATS.
                    spec.top = "subscribe_qos = 0".into();
                }
                cluster::start_agent(&mut bed, h, &spec)
            })
            .collect();
        {
            let url = format!("mqtt://{broker_addr}:{MQTT_PORT}");
            let probe = if is_nats {
                bed.mqtt_qos0(hub, &url, &["/+/$state"])
            } else {
                bed.mqtt(hub, &url, &["/+/$state"])
            };
            let names: Vec<String> = hosts.iter().map(|&h| bed.name(h).to_owned()).collect();
            // NATS sets up its JetStream streams first.
            let online_within = Duration::from_secs(if is_nats { 300 } else { 60 });
            probe.wait("every agent online", online_within, |s| {
                names
                    .iter()
                    .all(|n| {
                        s.text(&format!("/{n}/$state"))
                            .as_deref()
                            .and_then(first_word)
                            == Some("online")
                    })
                    .then_some(())
            });
        }
        eprintln!(
            "== {kind}: {HOSTS} agents online after {:?}",
            started.elapsed()
        );
        let pids = Pids {
            agents: agents.iter().filter_map(|&a| bed.pid(a)).collect(),
            broker: bed.pid(broker_proc).unwrap_or(0),
        };
        // The window `rollcall scan --expect 50` now asks for (5 ms), the
        // old fixed default, and none.
        // NATS: the default window only (its roll-calls take seconds).
        let windows = if is_nats {
            vec![rollcall_hub::scan::window_for(HOSTS)]
        } else {
            vec![rollcall_hub::scan::window_for(HOSTS), 20, 0]
        };
        for window_ms in windows {
            let samples = run_scans(
                &bed,
                hub,
                broker_addr,
                broadcast,
                window_ms,
                reader.clone(),
                pids.clone(),
                is_nats,
            );
            let (row, traffic_row, cpu_row) = summarize(kind, window_ms, &samples);
            eprintln!("{row}");
            rows.push_str(&row);
            traffic_rows.push_str(&traffic_row);
            cpu_rows.push_str(&cpu_row);
        }
        if is_nats {
            let killed = Instant::now();
            bed.kill(nats_procs[0]);
            let (took, scans) = recover(&bed, hub, &nats_addrs[1..], broadcast);
            let line = match took {
                Some(t) => format!(
                    "node 1 of 3 killed (`kill -9`): a roll-call through node 2 found all {HOSTS} hosts \
                     and their {} services again {:.1} s after the kill ({scans} roll-calls)\n",
                    HOSTS * (1 + ANNOUNCED),
                    t.as_secs_f64()
                ),
                None => format!(
                    "node 1 of 3 killed: no complete roll-call within {:.0} s ({scans} roll-calls)\n",
                    killed.elapsed().as_secs_f64()
                ),
            };
            eprintln!("{line}");
            recovery.push_str(&line);
        }
        for a in agents {
            bed.kill(a);
        }
        bed.kill(broker_proc);
        for p in nats_procs {
            bed.kill(p);
        }
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "| broker | window_ms | complete roll-calls | answers lost | last answer p50 | p95 | max | machine busy | target: 100 % complete, p95 < 25 ms |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n{rows}"
    );
    println!(
        "Per roll-call, on the bridge (means over the counted roll-calls; bytes are IP packets, \
         Ethernet frames add 14 bytes each):\n\n\
         | broker | window_ms | UDP frames sent | UDP copies delivered | UDP bytes | TCP (MQTT) frames | TCP bytes | agents ↔ broker frames | agents ↔ broker bytes |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n{traffic_rows}"
    );
    println!(
        "CPU time per roll-call while it ran (means; schedstat of every thread, /proc/stat for the machine, \
         whose 10 ms ticks make that column coarse):\n\n\
         | broker | window_ms | scan wall | 50 agents | broker | scanner thread | other processes | machine busy |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n{cpu_rows}"
    );
    if !recovery.is_empty() {
        println!("{recovery}");
    }
    println!(
        "wall {:.1} s; /proc/loadavg before: {}; after: {}",
        started.elapsed().as_secs_f64(),
        load_before.trim(),
        load_after.trim()
    );
}

/// `system` (readings every hour, so that none falls inside a roll-call),
/// four announced services, no GPIO; a 60 s keepalive for the same reason.
fn agent_spec(broker: Ipv4Addr, name: &str) -> AgentSpec {
    let mut spec = AgentSpec::new(AgentBroker::Remote(broker));
    spec.keepalive_s = 60;
    let mut extra =
        String::from("[services.system]\ninterval_s = 3600\n[services.gpio]\nenabled = false\n");
    for n in 1..=ANNOUNCED {
        let _ = write!(
            extra,
            "[[announce]]\nfunction = \"svc{n}\"\ndoc = \"benchmark service {n}\"\noutputs = [\"/{name}/svc{n}/value\"]\n"
        );
    }
    spec.extra = extra;
    spec
}

/// The processes whose CPU time is measured.
#[derive(Debug, Clone)]
struct Pids {
    agents: Vec<u32>,
    broker: u32,
}

/// Time on CPU of every thread of `pids`, in ns (`/proc/PID/task/*/schedstat`).
/// A thread that ends takes its time out of the sum, so differences are
/// taken saturating.
fn cpu_ns(pids: &[u32]) -> u64 {
    pids.iter()
        .flat_map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// This thread's time on CPU, in ns.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Busy and total jiffies of all CPUs, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Waits until the counters stop moving (the last acknowledgements are
/// through), at most a second, and returns them.
fn settled(reader: &TrafficReader) -> Traffic {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut last = reader.read().unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(30));
        let now = reader.read().unwrap();
        if now.get("tcp_sent") == last.get("tcp_sent") || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Warm-up and counted roll-calls from a scanner inside the hub's namespace.
// The bed, where to call, how, and what to read: a struct for them would
// only be taken apart again.
#[allow(clippy::too_many_arguments)]
fn run_scans(
    bed: &TestBed,
    hub: NodeId,
    broker: Ipv4Addr,
    broadcast: Ipv4Addr,
    window_ms: u64,
    reader: TrafficReader,
    pids: Pids,
    qos0: bool,
) -> Vec<Sample> {
    bed.in_node(hub, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let shutdown = CancellationToken::new();
            let tracker = TaskTracker::new();
            let mut scanner = Scanner::connect(
                rollcall_net::SessionConfig {
                    max_subscribe_qos: if qos0 {
                        rollcall_net::Qos::AtMostOnce
                    } else {
                        rollcall_net::Qos::AtLeastOnce
                    },
                    ..rollcall_net::SessionConfig::new(
                        BrokerUrl::new(broker.to_string(), MQTT_PORT),
                        format!("netns-bench-{}", std::process::id()),
                    )
                },
                Topics::new("").unwrap(),
                shutdown.clone(),
                &tracker,
            )
            .unwrap();
            let opts = ScanOptions {
                replyto: "netns-bench".into(),
                topic: "/stat/data".into(),
                udp_port: rollcall_proto::DEFAULT_UDP_PORT,
                broadcasts: vec![IpAddr::V4(broadcast)],
                targets: Vec::new(),
                via_mqtt: false,
                wait: Duration::from_secs(5),
                window_ms,
                expect: Some(HOSTS),
                cluster_key: None,
                sends: 1,
                descriptions: Default::default(),
            };
            let mut samples = Vec::new();
            let base = 7_000_000 + u64::from(std::process::id()) * 100 + window_ms * 10_000_000;
            for i in 0..WARM_UP + COUNTED {
                let began = Instant::now();
                let before = settled(&reader);
                let cpu_before = cpu_jiffies();
                let (agents0, broker0, scanner0) = (
                    cpu_ns(&pids.agents),
                    cpu_ns(&[pids.broker]),
                    thread_cpu_ns(),
                );
                let t0 = Instant::now();
                // A NATS node refusing the scanner's session (JetStream
                // busy) fails the roll-call: it is reported on stderr and
                // left out of the samples, rather than ending the run.
                let report: ScanReport = match scanner.scan(base + i as u64, &opts, |_| {}).await {
                    Ok(report) => report,
                    Err(error) => {
                        eprintln!("roll-call {i} (window_ms {window_ms}) failed: {error}");
                        continue;
                    }
                };
                let wall_ns = t0.elapsed().as_nanos() as u64;
                let scanner_ns = thread_cpu_ns().saturating_sub(scanner0);
                let agents_ns = cpu_ns(&pids.agents).saturating_sub(agents0);
                let broker_ns = cpu_ns(&[pids.broker]).saturating_sub(broker0);
                let cpu_after = cpu_jiffies();
                let after = settled(&reader);
                let answers = report.hosts.iter().filter(|h| h.t_ms.is_some()).count()
                    + report.service_count();
                let busy = (cpu_after.0 - cpu_before.0) as f64
                    / ((cpu_after.1 - cpu_before.1).max(1)) as f64;
                if i >= WARM_UP {
                    samples.push(Sample {
                        last_ms: report.last_answer_ms(),
                        answers,
                        traffic: after.since(&before),
                        busy,
                        wall_ns,
                        agents_ns,
                        broker_ns,
                        scanner_ns,
                        machine_ns: (cpu_after.0 - cpu_before.0) * 10_000_000,
                    });
                }
                if let Some(rest) = SPACING.checked_sub(began.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
            shutdown.cancel();
            tracker.close();
            tracker.wait().await;
            samples
        })
    })
}

/// How long after a node's death a roll-call through the surviving nodes
/// (`brokers`) brings every host and every service again, and how many
/// roll-calls that took; `None` after two minutes.
fn recover(
    bed: &TestBed,
    hub: NodeId,
    brokers: &[Ipv4Addr],
    broadcast: Ipv4Addr,
) -> (Option<Duration>, usize) {
    let brokers: Vec<BrokerUrl> = brokers
        .iter()
        .map(|a| BrokerUrl::new(a.to_string(), MQTT_PORT))
        .collect();
    let started = Instant::now();
    bed.in_node(hub, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let shutdown = CancellationToken::new();
            let tracker = TaskTracker::new();
            let list = rollcall_net::BrokerList::new(brokers).unwrap();
            let mut scanner = Scanner::connect(
                rollcall_net::SessionConfig {
                    max_subscribe_qos: rollcall_net::Qos::AtMostOnce,
                    ..rollcall_net::SessionConfig::for_brokers(
                        &list,
                        format!("netns-bench-recovery-{}", std::process::id()),
                    )
                },
                Topics::new("").unwrap(),
                shutdown.clone(),
                &tracker,
            )
            .unwrap();
            let opts = ScanOptions {
                replyto: "netns-bench".into(),
                topic: "/stat/data".into(),
                udp_port: rollcall_proto::DEFAULT_UDP_PORT,
                broadcasts: vec![IpAddr::V4(broadcast)],
                targets: Vec::new(),
                via_mqtt: false,
                wait: Duration::from_secs(3),
                window_ms: rollcall_hub::scan::window_for(HOSTS),
                expect: Some(HOSTS),
                cluster_key: None,
                sends: 1,
                descriptions: Default::default(),
            };
            let mut scans = 0;
            let mut took = None;
            while started.elapsed() < Duration::from_secs(120) {
                scans += 1;
                let began = Instant::now();
                if let Ok(report) = scanner.scan(90_000_000 + scans as u64, &opts, |_| {}).await {
                    let hosts = report.hosts.iter().filter(|h| h.t_ms.is_some()).count();
                    if hosts == HOSTS && report.service_count() == HOSTS * (1 + ANNOUNCED) {
                        took = Some(started.elapsed());
                        break;
                    }
                }
                if let Some(rest) = SPACING.checked_sub(began.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
            shutdown.cancel();
            tracker.close();
            tracker.wait().await;
            (took, scans)
        })
    })
}

/// Nearest-rank percentile.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn mean(samples: &[Sample], f: impl Fn(&Traffic) -> u64) -> f64 {
    samples.iter().map(|s| f(&s.traffic) as f64).sum::<f64>() / samples.len() as f64
}

fn summarize(kind: &str, window_ms: u64, samples: &[Sample]) -> (String, String, String) {
    let complete = samples.iter().filter(|s| s.answers == ANSWERS).count();
    let lost: usize = samples
        .iter()
        .map(|s| ANSWERS - s.answers.min(ANSWERS))
        .sum();
    let mut times: Vec<u64> = samples.iter().filter_map(|s| s.last_ms).collect();
    times.sort_unstable();
    let (p50, p95, max) = if times.is_empty() {
        (0, 0, 0)
    } else {
        (
            percentile(&times, 50.0),
            percentile(&times, 95.0),
            *times.last().unwrap(),
        )
    };
    let busy = samples.iter().map(|s| s.busy).sum::<f64>() / samples.len() as f64;
    let met = complete == samples.len() && p95 < 25;
    let row = format!(
        "| {kind} | {window_ms} | {complete} of {} | {lost} | {p50} ms | {p95} ms | {max} ms | {:.0} % | {} |\n",
        samples.len(),
        busy * 100.0,
        if met { "met" } else { "missed" }
    );
    let c = |name: &'static str| move |t: &Traffic| t.get(name).packets;
    let b = |name: &'static str| move |t: &Traffic| t.get(name).bytes;
    let agents_frames = |t: &Traffic| {
        t.get("tcp_sent").packets - t.get("tcp_from_hub").packets - t.get("tcp_to_hub").packets
    };
    let agents_bytes = |t: &Traffic| {
        t.get("tcp_sent").bytes - t.get("tcp_from_hub").bytes - t.get("tcp_to_hub").bytes
    };
    let traffic_row = format!(
        "| {kind} | {window_ms} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
        mean(samples, c("udp_sent")),
        mean(samples, c("udp_delivered")),
        mean(samples, b("udp_sent")),
        mean(samples, c("tcp_sent")),
        mean(samples, b("tcp_sent")),
        mean(samples, agents_frames),
        mean(samples, agents_bytes),
    );
    let ms = |f: &dyn Fn(&Sample) -> u64| {
        samples.iter().map(|s| f(s) as f64).sum::<f64>() / samples.len() as f64 / 1e6
    };
    let ours = |s: &Sample| s.agents_ns + s.broker_ns + s.scanner_ns;
    let cpu_row = format!(
        "| {kind} | {window_ms} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} % |\n",
        ms(&|s| s.wall_ns),
        ms(&|s| s.agents_ns),
        ms(&|s| s.broker_ns),
        ms(&|s| s.scanner_ns),
        ms(&|s| s.machine_ns.saturating_sub(ours(s))),
        busy * 100.0,
    );
    (row, traffic_row, cpu_row)
}

/// A `$state`'s first word, `online` or `offline`: the agent's session
/// number follows it (docs/protocol.md section 4).
fn first_word(text: &str) -> Option<&str> {
    text.split_ascii_whitespace().next()
}
