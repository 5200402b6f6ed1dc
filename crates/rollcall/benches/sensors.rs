//! The agent's footprint with every built-in service on: `target/release/rollcall
//! agent --sim` as its own process, on a Mosquitto child process, running
//! system, gpio, ain (4 channels every 1 s), dht22 (every 10 s), sonar
//! (every 1 s), dac and display (16x2, two buttons) at their default
//! configurations. It measures VmRSS once the agent says `online`, then its
//! CPU time (utime + stime, and schedstat as a cross-check) over exactly 60 s
//! of idle, VmRSS again, and the messages it published meanwhile.
//!
//! Run with `cargo build --release -p rollcall && cargo bench -p rollcall
//! --bench sensors`. It prints a markdown table on stdout and progress on
//! stderr. Everything listens on 127.0.0.1. Without `mosquitto` it prints
//! "skipped: mosquitto not installed" and exits 0.

mod support;

use support::{
    cpu_ticks, rollcall_binary, sched_time, smaps_breakdown, start_agent_process, status_field,
    temp_dir,
};

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rollcall_agent::RawConfig;
use rollcall_net::{Session, SessionConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Exactly this much wall time of idle is measured.
const IDLE: Duration = Duration::from_secs(60);
/// How long the agent process may take to say `online`.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(15);
/// The agent's host name.
const HOST: &str = "benchsensors";
/// Targets of issue 4.
const RSS_TARGET_MB: f64 = 10.0;
const CPU_TARGET_PCT: f64 = 0.5;

/// Every service on, at its defaults.
const AGENT_TOML: &str = "\
[services.ain]\nenabled = true\n\
[services.dht22]\nenabled = true\n\
[services.sonar]\nenabled = true\n\
[services.dac]\nenabled = true\n\
[services.display]\nenabled = true\n";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let Some(mosquitto) = support::mosquitto("")? else {
        println!("skipped: mosquitto not installed");
        return Ok(());
    };
    RawConfig::from_toml(AGENT_TOML).map_err(|e| anyhow::anyhow!("bench TOML: {e}"))?;
    let binary = rollcall_binary()?;
    let temp = temp_dir("rollcall-bench-sensors")?;
    let broker = mosquitto.url();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut watcher = Session::start(
        SessionConfig::new(
            broker.clone(),
            format!("bench-sensors-{}", std::process::id()),
        ),
        shutdown.clone(),
        &tracker,
    )?;
    watcher
        .handle
        .wait_connected(Duration::from_secs(10))
        .await
        .context("the watching session did not connect")?;
    let state_topic = format!("/{HOST}/$state");
    watcher.handle.subscribe(&state_topic).await?;

    let dir = temp.path().join("agent");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("agent.toml");
    std::fs::write(&config, AGENT_TOML)?;
    let load_before = support::load_line();
    let process = start_agent_process(
        &binary,
        HOST,
        &broker,
        &dir,
        &config,
        &mut watcher.incoming,
        ONLINE_TIMEOUT,
    )
    .await?;
    let pid = process.child.id();
    let rss_online = status_field(pid, "VmRSS");
    eprintln!("agent pid {pid} online: VmRSS {rss_online} kB; idle for {IDLE:?}");
    watcher.handle.subscribe(&format!("/{HOST}/#")).await?;
    let (ticks0, sched0) = (cpu_ticks(pid), sched_time(pid));
    let t0 = Instant::now();
    let end = tokio::time::Instant::now() + IDLE;
    let mut messages = 0u64;
    let mut readings = 0u64;
    while let Ok(Some(msg)) = tokio::time::timeout_at(end, watcher.incoming.recv()).await {
        messages += 1;
        let topic = &msg.topic;
        if ["/ain/", "/dht22/", "/sonar/"]
            .iter()
            .any(|s| topic.contains(s))
        {
            readings += 1;
        }
    }
    let wall = t0.elapsed();
    let (ticks1, sched1) = (cpu_ticks(pid), sched_time(pid));
    let rss_end = status_field(pid, "VmRSS");
    let hwm = status_field(pid, "VmHWM");
    let threads = status_field(pid, "Threads");
    let anon = status_field(pid, "RssAnon");
    let file = status_field(pid, "RssFile");
    let smaps = smaps_breakdown(pid);
    let load_after = support::load_line();
    drop(process);
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    drop(mosquitto);

    let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let tick_cpu = Duration::from_millis((ticks1 - ticks0) * 10);
    let sched_cpu = sched1.saturating_sub(sched0);
    let rss_mb = rss_online.max(rss_end) as f64 / 1024.0;
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    println!(
        "Agent process with system, gpio, ain, dht22, sonar, dac and display on \
         (simulated): VmRSS {:.2} MB online, {:.2} MB after the idle window (VmHWM {:.2} MB; \
         RssAnon {:.2} MB, RssFile {:.2} MB; {threads} threads). Over {:.1} s idle: \
         utime + stime {} ticks = {} ms, schedstat {} ms; {messages} messages published \
         ({readings} of them sensor readings). Load average {load_before} before, \
         {load_after} after.\n",
        rss_online as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0,
        anon as f64 / 1024.0,
        file as f64 / 1024.0,
        wall.as_secs_f64(),
        ticks1 - ticks0,
        tick_cpu.as_millis(),
        sched_cpu.as_millis(),
    );
    println!("Resident memory by mapping (smaps, after the idle window):\n");
    println!("| mapping | kB |\n| --- | ---: |");
    for (name, kb) in smaps.iter().take(8) {
        println!("| {name} | {kb} |");
    }
    println!("\n| figure | measured | target | |\n| --- | ---: | --- | --- |");
    println!(
        "| agent RSS, every service on (larger of online / after idle) | {rss_mb:.2} MB | < {RSS_TARGET_MB} MB | {} |",
        verdict(rss_mb < RSS_TARGET_MB)
    );
    let cpu = pct(tick_cpu);
    println!(
        "| agent idle CPU (utime+stime / wall) | {cpu:.3} % | < {CPU_TARGET_PCT} % | {} |",
        verdict(cpu < CPU_TARGET_PCT)
    );
    println!(
        "| agent idle CPU (schedstat / wall, cross-check) | {:.3} % | < {CPU_TARGET_PCT} % | {} |",
        pct(sched_cpu),
        verdict(pct(sched_cpu) < CPU_TARGET_PCT)
    );
    Ok(())
}
