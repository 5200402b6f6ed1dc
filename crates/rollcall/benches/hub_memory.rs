//! The hub's memory under a flood of made-up hosts (issue 11, finding 7:
//! 20,000 fake hosts took a hub to 460 MB, and one AsyncAPI request then
//! peaked at 5.25 GB).
//!
//! The release `rollcall hub` runs as a child process; this process plays
//! the attacker. 20,000 made-up hosts are published retained, each a
//! `$state` `online` and a `$description` of a service `svc` with eight
//! inputs and eight outputs (units, docs: 2.3 kB of JSON), in a bounded loop
//! at QoS 1. Five runs:
//!
//! 1. the hub with a map budget of 32 MiB on a stock Mosquitto, started
//!    after the flood is retained there: the broker hands the retained
//!    messages over when the hub subscribes;
//! 2. the same with the default budget (16 MiB);
//! 3. the same with the budget set out of reach (`--map-budget-mb 4096`),
//!    what the map costs unbounded;
//! 4. and 5. the hub with its own embedded broker (`--embedded-broker`,
//!    budget 32 MiB, then the default), the flood
//!    published to it while it runs: the broker's retained store is in the
//!    hub's process too, bounded by the broker (10,000 messages, 16 MiB),
//!    not by the map's budget.
//!
//! After the flood (every message counted by the hub's `/metrics`, or none
//! more for 20 s), each run
//! GETs the four documents and `/api/map`, then starts a real agent
//! (`rollcall agent --sim`) and waits for the hub's map to show it online.
//! VmRSS and VmHWM come from `/proc/PID/status` of the hub's process.
//!
//! Run with `cargo bench -p rollcall --bench hub_memory`. Markdown on
//! stdout, progress on stderr. Everything listens on 127.0.0.1.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall_net::{BrokerUrl, Qos, Session, SessionConfig};
use rollcall_testsupport::{Mosquitto, MosquittoConfig};
use serde_json::json;
use support::{free_udp_port, load_line, status_field};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const FAKES: usize = 20_000;
const GIVE_UP: Duration = Duration::from_secs(300);
/// How long a real host started after the flood is given to appear.
const REAL_HOST_WAIT: Duration = Duration::from_secs(180);

/// One made-up host's description: what an attacker publishes.
fn fake_description(host: &str) -> String {
    let list = |kind: &str| -> Vec<serde_json::Value> {
        (0..8)
            .map(|i| {
                json!({"name": format!("{kind}{i}"), "topic": format!("/{host}/svc/{kind}/{i}"),
                       "type": "float", "unit": "V", "retained": kind == "out",
                       "doc": "a made-up interface with a line of documentation"})
            })
            .collect()
    };
    json!({"function": "svc", "doc": "made up",
           "interfaces": {"inputs": list("in"), "outputs": list("out")}})
    .to_string()
}

/// Publishes the flood on `broker`; returns how long it took.
async fn flood(broker: &BrokerUrl) -> Result<Duration> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let session = Session::start(
        SessionConfig::new(broker.clone(), "attacker".to_owned()),
        stop.clone(),
        &tracker,
    )?;
    session
        .handle
        .wait_connected(Duration::from_secs(10))
        .await?;
    let started = Instant::now();
    for i in 0..FAKES {
        let host = format!("fake{i:05}");
        let h = &session.handle;
        h.publish(&format!("/{host}/$state"), "online", Qos::AtLeastOnce, true)
            .await?;
        h.publish(
            &format!("/{host}/svc/$description"),
            fake_description(&host),
            Qos::AtLeastOnce,
            true,
        )
        .await?;
    }
    let took = started.elapsed();
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(took)
}

/// The hub process, killed when dropped.
struct Hub {
    child: Child,
    http: SocketAddr,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub(binary: &Path, broker_args: &[String], udp_port: u16, extra: &[&str]) -> Result<Hub> {
    let mut child = Command::new(binary)
        .arg("hub")
        .args(broker_args)
        .args(["--target", "127.0.0.1", "--udp-port"])
        .arg(udp_port.to_string())
        .args([
            "--scan-every",
            "1",
            "--wait-ms",
            "500",
            "--http",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", binary.display()))?;
    let stderr = child.stderr.take().context("the hub's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let http = loop {
        let Some(line) = lines.next() else {
            bail!("the hub exited before it served its dashboard");
        };
        let line = line?;
        if let Some(url) = line.split("dashboard http://").nth(1) {
            break url.trim_end_matches('/').parse()?;
        }
    };
    // Keep reading its log, so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Hub { child, http })
}

/// A GET over plain HTTP/1.1: status, body bytes, time.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, usize, Duration)> {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let took = started.elapsed();
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("a response head")?;
    let status = std::str::from_utf8(&response[9..12])?.parse()?;
    Ok((status, response.len() - head_end - 4, took))
}

async fn get_text(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    // Chunked or not, the metrics lines are whole in the body.
    Ok(text)
}

/// A metric's value (the sum over its label sets).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

struct Row {
    label: String,
    settle: Duration,
    taken: f64,
    hosts: f64,
    map_bytes: f64,
    evicted: f64,
    rss_flood_kb: u64,
    hwm_flood_kb: u64,
    documents: Vec<(String, u16, usize, Duration)>,
    real_host: Option<Duration>,
    hwm_end_kb: u64,
    rss_end_kb: u64,
}

/// Waits for the hub to count `messages`, then measures it.
async fn measure(
    label: &str,
    binary: &Path,
    hub: &Hub,
    broker: &BrokerUrl,
    udp_port: u16,
    messages: f64,
    started: Instant,
) -> Result<Row> {
    let pid = hub.child.id();
    let deadline = Instant::now() + GIVE_UP;
    // Until every message is counted, or, once some were, none more for
    // 20 s: the broker delivers to the hub at QoS 0 and may drop some under
    // the flood (rumqttd also pauses for long while it matches each new
    // subscription against its whole retained store).
    let (mut last, mut since) = (0.0, Instant::now());
    let (metrics, settle) = loop {
        let text = get_text(hub.http, "/metrics").await?;
        let taken = metric(&text, "rollcall_hub_messages_total");
        if taken > last {
            (last, since) = (taken, Instant::now());
        }
        if taken >= messages {
            break (text, started.elapsed());
        }
        if last > 0.0 && since.elapsed() > Duration::from_secs(20) {
            break (text, since - started);
        }
        if Instant::now() > deadline {
            bail!("{label}: the hub did not count {messages} messages in {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{label}: flood taken in after {settle:?}");
    let rss_flood_kb = status_field(pid, "VmRSS");
    let hwm_flood_kb = status_field(pid, "VmHWM");
    eprintln!("{label}: after the flood VmRSS {rss_flood_kb} kB, VmHWM {hwm_flood_kb} kB");
    for (kind, kb) in support::smaps_breakdown(pid).iter().take(4) {
        eprintln!("{label}:   {kind}: {kb} kB");
    }
    let mut documents = Vec::new();
    for path in [
        "/api/docs/asyncapi.json",
        "/api/docs/cluster.md",
        "/api/docs/cluster.svg",
        "/api/docs/cluster.dot",
        "/api/map",
    ] {
        let (status, bytes, took) = get(hub.http, path).await?;
        eprintln!("{label}: {path}: {status}, {bytes} bytes, {took:?}");
        documents.push((path.to_owned(), status, bytes, took));
    }
    // A real host started after the flood.
    let dir = support::temp_dir("hub-memory-agent")?;
    let mut agent = Command::new(binary)
        .args(["agent", "--sim", "--hostname", "realhost", "--broker"])
        .arg(broker.to_string())
        .arg("--udp-port")
        .arg(udp_port.to_string())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let agent_started = Instant::now();
    let mut real_host = None;
    while agent_started.elapsed() < REAL_HOST_WAIT {
        let map = get_text(hub.http, "/api/map").await?;
        let body = map.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let map: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let online = map["hosts"].as_array().is_some_and(|hosts| {
            hosts
                .iter()
                .any(|h| h["name"] == "realhost" && h["online"] == true)
        });
        if online {
            real_host = Some(agent_started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
    let end = get_text(hub.http, "/metrics").await?;
    eprintln!(
        "{label}: real host online after {real_host:?}; VmHWM {} kB, VmRSS {} kB, map {} bytes",
        status_field(pid, "VmHWM"),
        status_field(pid, "VmRSS"),
        metric(&end, "rollcall_map_bytes")
    );
    Ok(Row {
        label: label.to_owned(),
        settle,
        taken: metric(&metrics, "rollcall_hub_messages_total"),
        hosts: metric(&metrics, "rollcall_hosts"),
        map_bytes: metric(&end, "rollcall_map_bytes"),
        evicted: metric(&end, "rollcall_hub_evicted_total"),
        rss_flood_kb,
        hwm_flood_kb,
        documents,
        real_host,
        hwm_end_kb: status_field(pid, "VmHWM"),
        rss_end_kb: status_field(pid, "VmRSS"),
    })
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

async fn run() -> Result<()> {
    let binary = support::rollcall_binary()?;
    let load_start = load_line();
    let mut rows = Vec::new();

    // 1 to 3: a stock Mosquitto holds the flood, retained (the embedded
    // broker would keep only its first 10,000 retained messages).
    let mosquitto = Mosquitto::start(&MosquittoConfig::default())
        .context("runs 1-3 need a stock Mosquitto (apt-get install mosquitto)")?;
    let url = mosquitto.url();
    let took = flood(&url).await?;
    eprintln!("flood of {FAKES} hosts published in {took:?}");
    let bench_rss = status_field(std::process::id(), "VmRSS");
    for (label, extra) in [
        ("1. --map-budget-mb 32", &["--map-budget-mb", "32"][..]),
        ("2. default budget (16 MiB)", &[][..]),
        ("3. --map-budget-mb 4096", &["--map-budget-mb", "4096"][..]),
    ] {
        let udp_port = free_udp_port();
        let started = Instant::now();
        let hub = start_hub(
            &binary,
            &["--broker".into(), url.to_string()],
            udp_port,
            extra,
        )?;
        rows.push(
            measure(
                label,
                &binary,
                &hub,
                &url,
                udp_port,
                2.0 * FAKES as f64,
                started,
            )
            .await?,
        );
    }

    // 4 and 5: the hub's own embedded broker, flooded while it runs.
    for (label, extra) in [
        (
            "4. own embedded broker, --map-budget-mb 32",
            &["--map-budget-mb", "32"][..],
        ),
        ("5. own embedded broker, default budget (16 MiB)", &[][..]),
    ] {
        let port = rollcall_testsupport::free_tcp_port();
        let udp_port = free_udp_port();
        let own = BrokerUrl::new("127.0.0.1", port);
        let hub = start_hub(
            &binary,
            &["--embedded-broker".into(), format!("127.0.0.1:{port}")],
            udp_port,
            extra,
        )?;
        let started = Instant::now();
        flood(&own).await?;
        rows.push(
            measure(
                label,
                &binary,
                &hub,
                &own,
                udp_port,
                2.0 * FAKES as f64,
                started,
            )
            .await?,
        );
        drop(hub);
    }

    println!(
        "Flood: {FAKES} made-up hosts ($state + a 16-interface $description each), published at QoS 1 in {took:.1?}; this process (the attacker) at {} after it.",
        mb(bench_rss)
    );
    println!(
        "Load (1, 5, 15 min): {load_start} at the start, {} at the end.\n",
        load_line()
    );
    println!(
        "| run | messages taken | flood taken in | hosts in map | map bytes (estimate) | evicted | VmRSS after flood | VmHWM after flood | VmHWM at end | VmRSS at end | real host online after |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} s | {} | {:.1} MB | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.taken,
            r.settle.as_secs_f64(),
            r.hosts,
            r.map_bytes / 1048576.0,
            r.evicted,
            mb(r.rss_flood_kb),
            mb(r.hwm_flood_kb),
            mb(r.hwm_end_kb),
            mb(r.rss_end_kb),
            r.real_host
                .map_or(format!("not within {REAL_HOST_WAIT:?}"), |d| format!(
                    "{:.1} s",
                    d.as_secs_f64()
                ))
        );
    }
    println!("\n| run | request | status | body | time |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for r in &rows {
        for (path, status, bytes, took) in &r.documents {
            println!(
                "| {} | `GET {path}` | {status} | {:.1} MB | {:.0} ms |",
                r.label,
                *bytes as f64 / 1e6,
                took.as_secs_f64() * 1000.0
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
