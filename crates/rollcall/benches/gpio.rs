//! The GPIO service's speed and footprint, on a Mosquitto child process.
//!
//! One run measures, in this order:
//!
//! 1. The floor: a message from one MQTT session to another through the
//!    broker (one broker crossing), and an echo (A -> broker -> B -> broker
//!    -> A, two crossings, the same path as a set and its state), sequential,
//!    at QoS 1 and QoS 0.
//! 2. Set to state: an agent in this process runs the gpio service on the
//!    simulated chip; a client publishes `/{host}/gpio/set/out0` (alternating
//!    1 and 0) and waits for `/{host}/gpio/output/out0` with that value,
//!    sequential, with the set published at QoS 1 and at QoS 0.
//! 3. A burst of 1000 sets round-robin over 8 outputs, published as fast as
//!    the client session takes them at QoS 1: throughput, states lost, out
//!    of order, outputs left in a state other than the last commanded.
//! 4. Edge to subscriber: `/{host}/sim/gpio/22` drives a simulated input
//!    (report: change, debounce_ms: 0) and the client waits for
//!    `/{host}/gpio/input/edge`. This includes the MQTT hop of the simulated
//!    drive; a real edge comes from the kernel.
//! 5. Footprint: `target/release/rollcall agent --sim` as its own process
//!    with 8 outputs and 10 inputs scanned every 100 ms: VmRSS once online,
//!    and its CPU time over exactly 60 s of idle.
//!
//! Run with `cargo build --release -p rollcall && cargo bench -p rollcall
//! --bench gpio`. It prints markdown tables on stdout and progress on
//! stderr. Everything listens on 127.0.0.1. Without `mosquitto` (on PATH or
//! in /usr/sbin) it prints "skipped: mosquitto not installed" and exits 0.
//!
//! Percentiles are nearest-rank (p99 of 2000 is the 1980th smallest).

mod support;

use support::{
    cpu_ticks, free_udp_port, rollcall_binary, sched_time, smaps_breakdown, start_agent_process,
    status_field, temp_dir,
};

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall_agent::RawConfig;
use rollcall_net::{BrokerUrl, Message, Qos, Session, SessionConfig, SessionHandle};
use rollcall_services::gpio::GpioConfig;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Sequential round trips counted per line.
const N: usize = 2000;
/// Round trips before those, not counted (connections, caches, allocator).
const WARM_UP: usize = 50;
/// Burst: commands, spread round-robin over the outputs.
const BURST: usize = 1000;
/// Edges driven.
const EDGES: usize = 1000;
/// Outputs `out0..out7` on pins 4..11.
const OUTPUTS: u32 = 8;
/// Inputs `in0..in9` on pins 12..21, scanned.
const INPUTS: u32 = 10;
/// Their scan interval.
const SCAN_MS: u64 = 100;
/// The change-reporting input of part 4, in-process agent only.
const EDGE_PIN: u32 = 22;
/// How long one round trip may take before it counts as lost.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(2);
/// A sequential line gives up after this many losses in a row.
const MAX_LOST_IN_A_ROW: usize = 20;
/// The longest a burst may take, publishing and collecting.
const BURST_DEADLINE: Duration = Duration::from_secs(30);
/// Idle window of part 5: exactly this much wall time is measured.
const IDLE: Duration = Duration::from_secs(60);
/// How long the agent process may take to say `online`.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(15);
/// Client sessions' channels: far more than any phase has in flight.
const CLIENT_CHANNEL: usize = 16_384;
/// Host names of the two agents.
const HOST: &str = "benchgpio";
const PROC_HOST: &str = "benchhost";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    support::init_logging();
    let Some(mosquitto) = support::mosquitto("")? else {
        println!("skipped: mosquitto not installed");
        return Ok(());
    };
    let rollcall_bin = rollcall_binary()?;
    let started = Instant::now();
    let temp = temp_dir("rollcall-bench-gpio")?;
    let broker = mosquitto.url();
    let mut report = Report::default();

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let result = async {
        eprintln!("== 1. floor");
        floor(&broker, &shutdown, &tracker, &mut report).await?;
        eprintln!("== 2-4. agent in this process");
        in_process(&broker, temp.path(), &shutdown, &tracker, &mut report).await?;
        eprintln!("== 5. agent process footprint");
        footprint(
            &rollcall_bin,
            &broker,
            mosquitto.pid(),
            temp.path(),
            &shutdown,
            &tracker,
            &mut report,
        )
        .await
    }
    .await;
    shutdown.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    drop(mosquitto);
    result?;
    report.print(started.elapsed());
    Ok(())
}

// ---------------------------------------------------------------- results

/// Latencies of one sequential line.
#[derive(Debug, Default)]
struct Line {
    name: String,
    samples: Vec<Duration>,
    lost: usize,
    /// Messages on the awaited topic that were not the awaited one.
    unexpected: usize,
    aborted: bool,
}

impl Line {
    fn pct(&self, p: usize) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let rank = (p * sorted.len()).div_ceil(100).max(1);
        sorted[rank - 1]
    }

    fn max(&self) -> Duration {
        self.samples.iter().max().copied().unwrap_or_default()
    }

    fn mean(&self) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        self.samples.iter().sum::<Duration>() / self.samples.len() as u32
    }
}

#[derive(Debug, Default)]
struct Burst {
    sent: usize,
    /// First publish to the last publish handed to the client session.
    publish_time: Duration,
    /// First publish to the last state received (or the deadline).
    total_time: Duration,
    received: usize,
    out_of_order: usize,
    /// Outputs whose level (by `get/output`) is not the last commanded.
    wrong_final: usize,
    /// Outputs whose last state message is not the last commanded.
    wrong_last_state: usize,
    /// Whether the `get/output` reply came.
    got_reply: bool,
    /// Query errors the agent counted during the burst.
    query_errors: u64,
    /// Messages the client's session dropped (channel full).
    client_dropped: u64,
}

#[derive(Debug, Default)]
struct Footprint {
    rss_online_kb: u64,
    rss_end_kb: u64,
    hwm_kb: u64,
    rss_anon_kb: u64,
    rss_file_kb: u64,
    threads: u64,
    /// Where the resident memory is, from smaps at the end.
    smaps: Vec<(String, u64)>,
    /// utime + stime over the idle window, in ticks of 10 ms.
    cpu_ticks: u64,
    /// The same from the threads' schedstat, in ns.
    cpu_sched: Duration,
    /// Mosquitto's CPU over the same window.
    broker_sched: Duration,
    wall: Duration,
    /// Messages the agent published in the window, seen by a subscriber to `/{host}/#`.
    messages: usize,
}

#[derive(Debug, Default)]
struct Report {
    hop: Vec<Line>,
    echo: Vec<Line>,
    set: Vec<Line>,
    burst: Burst,
    edge: Line,
    footprint: Footprint,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

impl Report {
    fn print(&self, wall: Duration) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "GPIO benchmark on Mosquitto, {cores} CPUs; sequential lines: {N} round trips \
             after {WARM_UP} warm-up; percentiles nearest-rank"
        );
        println!();
        println!("| path | p50 | p99 | max | mean | lost | other messages on the topic |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for line in self.hop.iter().chain(&self.echo).chain(&self.set) {
            println!(
                "| {} | {} | {} | {} | {} | {}{} | {} |",
                line.name,
                ms(line.pct(50)),
                ms(line.pct(99)),
                ms(line.max()),
                ms(line.mean()),
                line.lost,
                if line.aborted { " (aborted)" } else { "" },
                line.unexpected
            );
        }
        let e = &self.edge;
        println!(
            "| {} | {} | {} | {} | {} | {}{} | {} |",
            e.name,
            ms(e.pct(50)),
            ms(e.pct(99)),
            ms(e.max()),
            ms(e.mean()),
            e.lost,
            if e.aborted { " (aborted)" } else { "" },
            e.unexpected
        );
        println!();
        let b = &self.burst;
        let rate = b.received as f64 / b.total_time.as_secs_f64().max(1e-9);
        let publish_rate = b.sent as f64 / b.publish_time.as_secs_f64().max(1e-9);
        println!(
            "Burst: {} sets over {OUTPUTS} outputs at QoS 1; all queued in the client session \
             (rumqttc's request channel, not yet on the wire) after {} ({publish_rate:.0}/s); \
             first publish to last state {}; states received {} of {}; \
             out of order {}; outputs not in their last commanded level: {} by get/output \
             (reply {}), {} by last state message; agent query errors {}; client session \
             dropped {}",
            b.sent,
            ms(b.publish_time),
            ms(b.total_time),
            b.received,
            b.sent,
            b.out_of_order,
            b.wrong_final,
            if b.got_reply { "received" } else { "MISSING" },
            b.wrong_last_state,
            b.query_errors,
            b.client_dropped,
        );
        println!();
        let f = &self.footprint;
        let cpu_pct = |d: Duration| 100.0 * d.as_secs_f64() / f.wall.as_secs_f64().max(1e-9);
        let tick_cpu = Duration::from_millis(f.cpu_ticks * 10);
        let rss_mb = f.rss_online_kb.max(f.rss_end_kb) as f64 / 1024.0;
        println!(
            "Agent process ({OUTPUTS} outputs, {INPUTS} inputs scanned every {SCAN_MS} ms): \
             VmRSS {:.2} MB online, {:.2} MB after the idle window (VmHWM {:.2} MB; \
             RssAnon {:.2} MB, RssFile {:.2} MB; {} threads). Idle {:.1} s: utime+stime {} \
             ticks = {}, threads' schedstat {}; it published {} messages ({:.1}/s); \
             Mosquitto took {} of CPU meanwhile.",
            f.rss_online_kb as f64 / 1024.0,
            f.rss_end_kb as f64 / 1024.0,
            f.hwm_kb as f64 / 1024.0,
            f.rss_anon_kb as f64 / 1024.0,
            f.rss_file_kb as f64 / 1024.0,
            f.threads,
            f.wall.as_secs_f64(),
            f.cpu_ticks,
            ms(tick_cpu),
            ms(f.cpu_sched),
            f.messages,
            f.messages as f64 / f.wall.as_secs_f64().max(1e-9),
            ms(f.broker_sched),
        );
        println!();
        println!("Resident memory of the agent process by mapping (smaps, after the idle window):");
        println!();
        println!("| mapping | Rss |");
        println!("| --- | ---: |");
        for (name, kb) in &f.smaps {
            println!("| {name} | {kb} kB |");
        }
        println!();

        let hop1 = self.hop.iter().find(|l| l.name.contains("QoS 1"));
        let set1 = self.set.iter().find(|l| l.name.contains("QoS 1"));
        println!("| figure | value | target | |");
        println!("| --- | ---: | --- | --- |");
        if let (Some(hop1), Some(set1)) = (hop1, set1) {
            let ratio = set1.pct(99).as_secs_f64() / hop1.pct(99).as_secs_f64().max(1e-9);
            println!(
                "| set→state QoS 1 p99 / floor (one hop) QoS 1 p99 | {} / {} = {ratio:.2}× | ≤ 3× | {} |",
                ms(set1.pct(99)),
                ms(hop1.pct(99)),
                verdict(ratio <= 3.0 && set1.lost == 0)
            );
        }
        println!(
            "| burst throughput | {rate:.0} sets/s | ≥ 10,000/s | {} |",
            verdict(rate >= 10_000.0)
        );
        let lost = b.sent.saturating_sub(b.received);
        println!(
            "| burst states lost | {lost} | 0 | {} |",
            verdict(lost == 0)
        );
        println!(
            "| burst out of order | {} | 0 | {} |",
            b.out_of_order,
            verdict(b.out_of_order == 0)
        );
        println!(
            "| outputs not in last commanded level | {} | 0 | {} |",
            b.wrong_final,
            verdict(b.got_reply && b.wrong_final == 0 && b.wrong_last_state == 0)
        );
        println!(
            "| edge→subscriber p50 / p99 (incl. the MQTT hop of the drive) | {} / {} | (none) | |",
            ms(e.pct(50)),
            ms(e.pct(99)),
        );
        println!(
            "| agent RSS (larger of online / after idle) | {rss_mb:.2} MB | < 8 MB | {} |",
            verdict(rss_mb < 8.0)
        );
        let cpu = cpu_pct(tick_cpu);
        println!(
            "| agent idle CPU (utime+stime / wall) | {cpu:.3} % | < 0.1 % | {} |",
            verdict(cpu < 0.1)
        );
        println!(
            "| agent idle CPU (schedstat / wall, cross-check) | {:.3} % | < 0.1 % | {} |",
            cpu_pct(f.cpu_sched),
            verdict(cpu_pct(f.cpu_sched) < 0.1)
        );
        println!();
        println!("Whole run: {:.1} s.", wall.as_secs_f64());
    }
}

// ---------------------------------------------------------------- sessions

/// A client session with a big channel.
fn client(
    broker: &BrokerUrl,
    name: &str,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Session> {
    let mut config = SessionConfig::new(
        broker.clone(),
        format!("bench-gpio-{name}-{}", std::process::id()),
    );
    config.channel_capacity = CLIENT_CHANNEL;
    Ok(Session::start(config, shutdown.child_token(), tracker)?)
}

async fn connected(session: &Session) -> Result<()> {
    session
        .handle
        .wait_connected(Duration::from_secs(10))
        .await
        .context("a bench session did not connect")
}

fn drain(rx: &mut mpsc::Receiver<Message>) {
    while rx.try_recv().is_ok() {}
}

fn value_of(msg: &Message) -> Option<u64> {
    serde_json::from_slice::<Value>(&msg.payload).ok()?["value"].as_u64()
}

/// Waits for a message on `topic` (retained or not) and returns it.
async fn wait_topic(
    rx: &mut mpsc::Receiver<Message>,
    topic: &str,
    timeout: Duration,
) -> Result<Message> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(msg)) if msg.topic == topic => return Ok(msg),
            Ok(Some(_)) => {}
            Ok(None) => bail!("session closed while waiting for {topic}"),
            Err(_) => bail!("nothing on {topic} within {timeout:?}"),
        }
    }
}

fn qos_name(qos: Qos) -> &'static str {
    match qos {
        Qos::AtMostOnce => "QoS 0",
        Qos::AtLeastOnce => "QoS 1",
    }
}

/// `WARM_UP + n` sequential round trips: publish `make(i)` through `publisher`,
/// then wait on `rx` for a message for which `want(i, msg)` holds. Messages on
/// `topic` that do not match count as unexpected.
#[allow(clippy::too_many_arguments)]
async fn sequential(
    name: String,
    n: usize,
    publisher: &SessionHandle,
    qos: Qos,
    rx: &mut mpsc::Receiver<Message>,
    topic: &str,
    make: impl Fn(usize) -> (String, Vec<u8>),
    want: impl Fn(usize, &Message) -> bool,
) -> Result<Line> {
    drain(rx);
    let mut line = Line {
        name,
        samples: Vec::with_capacity(n),
        ..Line::default()
    };
    let mut lost_in_a_row = 0;
    for i in 0..WARM_UP + n {
        let (pub_topic, payload) = make(i);
        let sent = Instant::now();
        publisher.publish(&pub_topic, payload, qos, false).await?;
        let deadline = tokio::time::Instant::now() + ROUND_TRIP_TIMEOUT;
        let got = loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(msg)) if want(i, &msg) => break Some(sent.elapsed()),
                Ok(Some(msg)) => {
                    if msg.topic == topic && i >= WARM_UP {
                        line.unexpected += 1;
                    }
                }
                Ok(None) => bail!("{}: session closed", line.name),
                Err(_) => break None,
            }
        };
        match got {
            Some(rtt) => {
                lost_in_a_row = 0;
                if i >= WARM_UP {
                    line.samples.push(rtt);
                }
            }
            None => {
                lost_in_a_row += 1;
                if i >= WARM_UP {
                    line.lost += 1;
                }
                if lost_in_a_row >= MAX_LOST_IN_A_ROW {
                    line.aborted = true;
                    break;
                }
            }
        }
    }
    eprintln!(
        "{}: p50 {} p99 {} max {} lost {}",
        line.name,
        ms(line.pct(50)),
        ms(line.pct(99)),
        ms(line.max()),
        line.lost
    );
    Ok(line)
}

// ---------------------------------------------------------------- 1. floor

async fn floor(
    broker: &BrokerUrl,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    report: &mut Report,
) -> Result<()> {
    let mut a = client(broker, "a", shutdown, tracker)?;
    let mut b = client(broker, "b", shutdown, tracker)?;
    let echo = client(broker, "echo", shutdown, tracker)?;
    for s in [&a, &b, &echo] {
        connected(s).await?;
    }
    b.handle.subscribe("/bench/floor/hop/+").await?;
    a.handle.subscribe("/bench/floor/pong/+").await?;
    echo.handle.subscribe("/bench/floor/ping/+").await?;
    // The echo: whatever arrives on ping/{q} goes back on pong/{q} at QoS q.
    let Session {
        handle: echo_handle,
        incoming: mut echo_rx,
    } = echo;
    let stop_echo = shutdown.child_token();
    let stop = stop_echo.clone();
    let echo_task = tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                msg = echo_rx.recv() => match msg { Some(m) => m, None => return },
            };
            let q = msg.topic.rsplit('/').next().unwrap_or("1");
            let qos = if q == "0" {
                Qos::AtMostOnce
            } else {
                Qos::AtLeastOnce
            };
            let topic = format!("/bench/floor/pong/{q}");
            let _ = echo_handle
                .publish(&topic, msg.payload.to_vec(), qos, false)
                .await;
        }
    });
    for qos in [Qos::AtLeastOnce, Qos::AtMostOnce] {
        let q = u8::from(qos == Qos::AtLeastOnce);
        let hop_topic = format!("/bench/floor/hop/{q}");
        let t = hop_topic.clone();
        report.hop.push(
            sequential(
                format!(
                    "floor: one hop, session A → broker → session B, {}",
                    qos_name(qos)
                ),
                N,
                &a.handle,
                qos,
                &mut b.incoming,
                &hop_topic,
                |i| (t.clone(), i.to_string().into_bytes()),
                |i, m| m.topic == hop_topic && m.payload == i.to_string().as_bytes(),
            )
            .await?,
        );
        let ping = format!("/bench/floor/ping/{q}");
        let pong = format!("/bench/floor/pong/{q}");
        report.echo.push(
            sequential(
                format!(
                    "floor: echo, A → broker → B → broker → A, {}",
                    qos_name(qos)
                ),
                N,
                &a.handle,
                qos,
                &mut a.incoming,
                &pong,
                |i| (ping.clone(), i.to_string().into_bytes()),
                |i, m| m.topic == pong && m.payload == i.to_string().as_bytes(),
            )
            .await?,
        );
    }
    stop_echo.cancel();
    let _ = echo_task.await;
    Ok(())
}

// ---------------------------------------------------------------- 2-4. agent in process

/// The gpio configuration: 8 outputs, 10 scanned inputs, and with `edge`
/// one input reporting on change without debounce.
fn gpio_config(edge: bool) -> Result<GpioConfig> {
    let outputs: Vec<Value> = (0..OUTPUTS)
        .map(|i| json!({"name": format!("out{i}"), "pin": 4 + i, "init": 0}))
        .collect();
    let mut inputs: Vec<Value> = (0..INPUTS)
        .map(|i| {
            json!({"name": format!("in{i}"), "pin": 12 + i, "pull": "down",
                   "report": "scan", "scan_ms": SCAN_MS})
        })
        .collect();
    if edge {
        inputs.push(json!({"name": "edge", "pin": EDGE_PIN, "pull": "down",
                           "report": "change", "debounce_ms": 0}));
    }
    GpioConfig::from_json(json!({"outputs": outputs, "inputs": inputs}))
        .map_err(|e| anyhow::anyhow!("the bench's gpio configuration: {e}"))
}

async fn in_process(
    broker: &BrokerUrl,
    temp: &Path,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    report: &mut Report,
) -> Result<()> {
    let mut services = RawConfig::default();
    let gpio = toml::Value::try_from(gpio_config(true)?)?;
    services.service_table("gpio").insert("config".into(), gpio);
    let raw = RawConfig {
        hostname: Some(HOST.into()),
        broker: Some(broker.to_string()),
        udp_port: Some(free_udp_port()),
        udp_bind: Some(Ipv4Addr::LOCALHOST.into()),
        state_dir: Some(temp.join("state-in-process")),
        sim: Some(true),
        services: services.services,
        ..RawConfig::default()
    };
    let agent_stop = shutdown.child_token();
    let agent = rollcall_agent::start(raw.validate()?, agent_stop.clone()).await?;
    agent.wait_connected(Duration::from_secs(10)).await?;
    let result = async {
        let mut c = client(broker, "client", shutdown, tracker)?;
        connected(&c).await?;
        set_to_state(&mut c, report).await?;
        burst(&mut c, &agent, report).await?;
        edges(&mut c, report).await
    }
    .await;
    agent_stop.cancel();
    if tokio::time::timeout(Duration::from_secs(10), agent.join())
        .await
        .is_err()
    {
        eprintln!("the in-process agent did not stop within 10 s");
    }
    result
}

/// The level sent in round trip `i`, alternating from the opposite of `now`.
fn level(i: usize, now: u64) -> u64 {
    (now + 1 + i as u64) % 2
}

async fn set_to_state(c: &mut Session, report: &mut Report) -> Result<()> {
    let state = format!("/{HOST}/gpio/output/out0");
    c.handle.subscribe(&state).await?;
    // The retained state says the subscription is live, and the level now.
    let mut now = value_of(&wait_topic(&mut c.incoming, &state, Duration::from_secs(5)).await?)
        .context("out0's state has no value")?;
    let set = format!("/{HOST}/gpio/set/out0");
    for qos in [Qos::AtLeastOnce, Qos::AtMostOnce] {
        let line = sequential(
            format!(
                "set → state: set/out0 at {}, state (QoS 1) back",
                qos_name(qos)
            ),
            N,
            &c.handle,
            qos,
            &mut c.incoming,
            &state,
            |i| (set.clone(), level(i, now).to_string().into_bytes()),
            |i, m| m.topic == state && !m.retain && value_of(m) == Some(level(i, now)),
        )
        .await?;
        // The last level commanded, for the next line to alternate from.
        now = level(WARM_UP + N - 1, now);
        report.set.push(line);
    }
    c.handle.unsubscribe(&state).await?;
    Ok(())
}

async fn burst(c: &mut Session, agent: &rollcall_agent::Agent, report: &mut Report) -> Result<()> {
    let filter = format!("/{HOST}/gpio/output/+");
    drain(&mut c.incoming);
    c.handle.subscribe(&filter).await?;
    // Every output's retained state: the level each starts from.
    let mut start = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while start.len() < OUTPUTS as usize {
        match tokio::time::timeout_at(deadline, c.incoming.recv()).await {
            Ok(Some(msg)) if msg.topic.starts_with(&format!("/{HOST}/gpio/output/")) => {
                let name = msg.topic.rsplit('/').next().unwrap_or_default().to_owned();
                start.insert(name, value_of(&msg).context("a state without a value")?);
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("client session closed"),
            Err(_) => bail!("only {} of {OUTPUTS} output states retained", start.len()),
        }
    }
    // Command k goes to out{k % 8}; each output's commands alternate from
    // the opposite of its level, so every one changes it and is told apart
    // from its neighbours.
    let mut sent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut commands = Vec::with_capacity(BURST);
    for k in 0..BURST {
        let name = format!("out{}", k as u32 % OUTPUTS);
        let list = sent.entry(name.clone()).or_default();
        let level = level(list.len(), start[&name]);
        list.push(level);
        commands.push((format!("/{HOST}/gpio/set/{name}"), level));
    }
    let errors_before = agent.stats().snapshot().query_errors;
    let dropped_before = c.handle.stats().dropped;
    let publisher = c.handle.clone();
    let t0 = Instant::now();
    let publishing = tokio::spawn(async move {
        for (topic, level) in commands {
            publisher
                .publish(&topic, level.to_string(), Qos::AtLeastOnce, false)
                .await?;
        }
        anyhow::Ok(t0.elapsed())
    });
    let mut received: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut count = 0;
    let mut last = t0;
    let deadline = tokio::time::Instant::now() + BURST_DEADLINE;
    while count < BURST {
        match tokio::time::timeout_at(deadline, c.incoming.recv()).await {
            Ok(Some(msg))
                if !msg.retain && msg.topic.starts_with(&format!("/{HOST}/gpio/output/")) =>
            {
                last = Instant::now();
                count += 1;
                let name = msg.topic.rsplit('/').next().unwrap_or_default().to_owned();
                received
                    .entry(name)
                    .or_default()
                    .push(value_of(&msg).unwrap_or(u64::MAX));
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("client session closed"),
            Err(_) => {
                last = Instant::now();
                break;
            }
        }
    }
    let publish_time = publishing.await??;
    // Out of order: per output, a received value that is not the one sent at
    // the same position. Sent values alternate, so a loss, duplicate or swap
    // shows up here as well as in the count.
    let mut out_of_order = 0;
    for (name, got) in &received {
        let want = &sent[name];
        out_of_order += got
            .iter()
            .zip(want)
            .filter(|(got, want)| got != want)
            .count();
        out_of_order += got.len().saturating_sub(want.len());
    }
    let wrong_last_state = sent
        .iter()
        .filter(|(name, want)| received.get(*name).and_then(|g| g.last()) != want.last())
        .count();
    // What the agent itself says each output is, by request and reply.
    let reply_topic = format!("/bench/gpio/reply/{}", std::process::id());
    c.handle.subscribe(&reply_topic).await?;
    c.handle
        .publish(
            &format!("/{HOST}/gpio/get/output"),
            json!({"id": 7, "topic": reply_topic}).to_string(),
            Qos::AtLeastOnce,
            false,
        )
        .await?;
    let (got_reply, wrong_final) =
        match wait_topic(&mut c.incoming, &reply_topic, Duration::from_secs(5)).await {
            Ok(msg) => {
                let reply: Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
                let wrong = sent
                    .iter()
                    .filter(|(name, want)| {
                        reply["value"][name.as_str()].as_u64() != want.last().copied()
                    })
                    .count();
                (true, wrong)
            }
            Err(error) => {
                eprintln!("burst: get/output: {error}");
                (false, OUTPUTS as usize)
            }
        };
    c.handle.unsubscribe(&reply_topic).await?;
    c.handle.unsubscribe(&filter).await?;
    report.burst = Burst {
        sent: BURST,
        publish_time,
        total_time: last - t0,
        received: count,
        out_of_order,
        wrong_final,
        wrong_last_state,
        got_reply,
        query_errors: agent.stats().snapshot().query_errors - errors_before,
        client_dropped: c.handle.stats().dropped - dropped_before,
    };
    eprintln!(
        "burst: {count} of {BURST} states in {} ({:.0}/s), publishing took {}, out of order {out_of_order}, wrong final {wrong_final}",
        ms(last - t0),
        count as f64 / (last - t0).as_secs_f64().max(1e-9),
        ms(publish_time)
    );
    Ok(())
}

async fn edges(c: &mut Session, report: &mut Report) -> Result<()> {
    let input = format!("/{HOST}/gpio/input/edge");
    c.handle.subscribe(&input).await?;
    let now = value_of(&wait_topic(&mut c.incoming, &input, Duration::from_secs(5)).await?)
        .context("the edge input's value has no value")?;
    let drive = format!("/{HOST}/sim/gpio/{EDGE_PIN}");
    report.edge = sequential(
        format!("edge → subscriber: sim/gpio/{EDGE_PIN} at QoS 1 → input/edge"),
        EDGES,
        &c.handle,
        Qos::AtLeastOnce,
        &mut c.incoming,
        &input,
        |i| (drive.clone(), level(i, now).to_string().into_bytes()),
        |i, m| m.topic == input && !m.retain && value_of(m) == Some(level(i, now)),
    )
    .await?;
    c.handle.unsubscribe(&input).await?;
    Ok(())
}

// ---------------------------------------------------------------- 5. footprint

/// The agent's TOML: 8 outputs, 10 inputs scanned every 100 ms.
fn agent_toml() -> Result<String> {
    let config = gpio_config(false)?;
    let mut out = String::from("[services.gpio]\nchip = \"auto\"\n[services.gpio.config]\n");
    out.push_str("outputs = [\n");
    for o in &config.outputs {
        out.push_str(&format!(
            "  {{ name = \"{}\", pin = {}, init = {} }},\n",
            o.name, o.pin, o.init
        ));
    }
    out.push_str("]\ninputs = [\n");
    for i in &config.inputs {
        out.push_str(&format!(
            "  {{ name = \"{}\", pin = {}, pull = \"down\", report = \"scan\", scan_ms = {} }},\n",
            i.name,
            i.pin,
            i.scan_ms.unwrap_or(SCAN_MS)
        ));
    }
    out.push_str("]\n");
    // Checked here as the agent will read it.
    RawConfig::from_toml(&out).map_err(|e| anyhow::anyhow!("bench TOML: {e}"))?;
    Ok(out)
}

async fn footprint(
    binary: &Path,
    broker: &BrokerUrl,
    broker_pid: u32,
    temp: &Path,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    report: &mut Report,
) -> Result<()> {
    let dir = temp.join("agent-process");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("agent.toml");
    std::fs::write(&config, agent_toml()?)?;
    let mut watcher = client(broker, "watch", shutdown, tracker)?;
    connected(&watcher).await?;
    let state_topic = format!("/{PROC_HOST}/$state");
    watcher.handle.subscribe(&state_topic).await?;
    let mut process = start_agent_process(
        binary,
        PROC_HOST,
        broker,
        &dir,
        &config,
        &mut watcher.incoming,
        ONLINE_TIMEOUT,
    )
    .await?;
    let pid = process.child.id();
    let mut f = Footprint {
        rss_online_kb: status_field(pid, "VmRSS"),
        ..Footprint::default()
    };
    eprintln!(
        "agent pid {pid} online: VmRSS {} kB; idle for {IDLE:?}",
        f.rss_online_kb
    );
    // Count what it publishes while idle.
    watcher.handle.subscribe(&format!("/{PROC_HOST}/#")).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drain(&mut watcher.incoming);
    let (ticks0, sched0, broker0) = (cpu_ticks(pid), sched_time(pid), sched_time(broker_pid));
    let t0 = Instant::now();
    let end = tokio::time::Instant::now() + IDLE;
    let mut messages = 0;
    while let Ok(msg) = tokio::time::timeout_at(end, watcher.incoming.recv()).await {
        if msg.is_none() {
            break;
        }
        messages += 1;
    }
    let (ticks1, sched1, broker1) = (cpu_ticks(pid), sched_time(pid), sched_time(broker_pid));
    f.wall = t0.elapsed();
    f.cpu_ticks = ticks1 - ticks0;
    f.cpu_sched = sched1.saturating_sub(sched0);
    f.broker_sched = broker1.saturating_sub(broker0);
    f.messages = messages;
    f.rss_end_kb = status_field(pid, "VmRSS");
    f.hwm_kb = status_field(pid, "VmHWM");
    f.rss_anon_kb = status_field(pid, "RssAnon");
    f.rss_file_kb = status_field(pid, "RssFile");
    f.threads = status_field(pid, "Threads");
    f.smaps = smaps_breakdown(pid);
    if let Some(status) = process.child.try_wait()? {
        bail!("the agent process exited during the idle window ({status})");
    }
    drop(process);
    eprintln!(
        "agent: VmRSS {} kB at the end, CPU {} ticks / {} schedstat over {:.1} s",
        f.rss_end_kb,
        f.cpu_ticks,
        ms(f.cpu_sched),
        f.wall.as_secs_f64()
    );
    report.footprint = f;
    Ok(())
}

// ---------------------------------------------------------------- plumbing
