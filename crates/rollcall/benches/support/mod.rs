//! What the benchmarks share beyond `rollcall-testsupport` (Mosquitto,
//! temporary folders, free ports): Mosquitto as the benchmarks run it, the
//! release `rollcall` binary run as an agent process, and what /proc says of
//! a process's memory and CPU time.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall_net::BrokerUrl;

pub use rollcall_testsupport::tempfile::TempDir;
pub use rollcall_testsupport::{Mosquitto, free_udp_port};
use rollcall_testsupport::{MosquittoConfig, SupportError};

/// A folder under the system's temp dir for benchmark `name`, removed when
/// dropped.
pub fn temp_dir(name: &str) -> Result<TempDir> {
    rollcall_testsupport::tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir()
        .context("a temporary folder")
}

/// Mosquitto on a free loopback port, with `set_tcp_nodelay true` (as
/// README.md advises) and its defaults otherwise but for the `extra`
/// configuration lines; `None` where it is not installed. Says which
/// version listens where, for the record.
pub fn mosquitto(extra: &str) -> Result<Option<Mosquitto>> {
    mosquitto_with(true, extra)
}

/// Mosquitto on a free loopback port as Debian installs it (`tuned`:
/// false) or with `set_tcp_nodelay true`, plus the `extra` lines; `None`
/// where it is not installed.
pub fn mosquitto_with(tuned: bool, extra: &str) -> Result<Option<Mosquitto>> {
    let base = if tuned {
        MosquittoConfig::tuned()
    } else {
        MosquittoConfig::default()
    };
    let config = MosquittoConfig {
        extra: extra.to_owned(),
        ..base
    };
    match Mosquitto::start(&config) {
        Ok(mosquitto) => {
            eprintln!("{} listening on {}", Mosquitto::version(), mosquitto.addr());
            Ok(Some(mosquitto))
        }
        Err(SupportError::NotInstalled(_)) => Ok(None),
        Err(e) => Err(e).context("starting mosquitto"),
    }
}

/// `target/release/rollcall`, next to the folder this bench runs from, or
/// under the workspace root.
pub fn rollcall_binary() -> Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("rollcall")));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/rollcall");
    for candidate in beside.into_iter().chain([workspace.clone()]) {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    eprintln!(
        "{} is missing: building it with `cargo build --release -p rollcall`",
        workspace.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "rollcall"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .status()
        .context("running cargo build --release -p rollcall")?;
    if !status.success() || !workspace.is_file() {
        bail!(
            "the agent binary {} is missing and `cargo build --release -p rollcall` did not \
             make it; build it first",
            workspace.display()
        );
    }
    Ok(workspace)
}

/// A status field of /proc/PID/status, in kB or a count.
pub fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (fields 14 and 15 of stat).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces; fields count from after its ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    field(14) + field(15)
}

/// Time spent running by every thread of a process, from schedstat (ns).
pub fn sched_time(pid: u32) -> Duration {
    let mut total = Duration::ZERO;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            total += std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .map_or(Duration::ZERO, Duration::from_nanos);
        }
    }
    total
}

/// Resident kB by mapping kind, from /proc/PID/smaps, largest first.
pub fn smaps_breakdown(pid: u32) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let mut current = String::new();
    let mut size_kb = 0;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range perms offset dev inode [path].
            let parts: Vec<&str> = line.split_whitespace().collect();
            let path = parts.get(5).copied().unwrap_or("");
            current = match path {
                "" => "anonymous".to_owned(),
                p if p.starts_with('[') => p.to_owned(),
                p => Path::new(p)
                    .file_name()
                    .map_or(p.to_owned(), |f| f.to_string_lossy().into_owned()),
            };
            size_kb = 0;
        } else if let Some(v) = line.strip_prefix("Size:") {
            size_kb = v
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let rss: u64 = v
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // Thread stacks are anonymous 2 MiB (+ guard) mappings: name them apart.
            let key = if current.starts_with("anonymous") && (2040..=2056).contains(&size_kb) {
                "anonymous, 2 MiB mappings (thread stacks)".to_owned()
            } else if current.starts_with("anonymous") {
                "anonymous, other (malloc arenas of threads, ...)".to_owned()
            } else {
                current.clone()
            };
            *by.entry(key).or_default() += rss;
        }
    }
    let mut list: Vec<(String, u64)> = by.into_iter().filter(|(_, kb)| *kb > 0).collect();
    list.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    list
}

/// The load average over 1, 5 and 15 minutes, as `/proc/loadavg` says, for
/// the record beside each figure ("unknown" where there is none).
#[allow(dead_code)] // Not every bench prints it.
pub fn load_line() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Logs warnings to stderr, or what `RUST_LOG` asks for. rumqttd is silent
/// unless asked: it logs every client's disconnect at the end as an error
/// ("no-connection id N is already gone").
#[allow(dead_code)] // Not every bench logs.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Starts `rollcall agent --sim` as host `host` with the configuration file
/// `config`, its log in `dir/agent.log`, and returns once `incoming` (a
/// session subscribed to `/{host}/$state`) hears it say `online`.
#[allow(dead_code)] // Not every bench starts an agent process.
pub async fn start_agent_process(
    binary: &Path,
    host: &str,
    broker: &BrokerUrl,
    dir: &Path,
    config: &Path,
    incoming: &mut tokio::sync::mpsc::Receiver<rollcall_net::Message>,
    timeout: Duration,
) -> Result<AgentProcess> {
    let log = std::fs::File::create(dir.join("agent.log"))?;
    eprintln!("starting {}", binary.display());
    let child = Command::new(binary)
        .args(["agent", "--sim", "--hostname", host])
        .arg("--broker")
        .arg(broker.to_string())
        .arg("--udp-port")
        .arg(free_udp_port().to_string())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("running {}", binary.display()))?;
    let mut process = AgentProcess { child };
    let state_topic = format!("/{host}/$state");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, incoming.recv()).await {
            // `online` and the agent's session number (docs/protocol.md section 4).
            Ok(Some(msg))
                if msg.topic == state_topic
                    && msg.payload.split(|b| *b == b' ').next() == Some(&b"online"[..]) =>
            {
                return Ok(process);
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("watch session closed"),
            Err(_) => {
                let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
                bail!("the agent process did not say online within {timeout:?}: {log}");
            }
        }
        if let Some(status) = process.child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
            bail!("the agent process exited ({status}): {log}");
        }
    }
}

/// The agent process, killed when dropped.
pub struct AgentProcess {
    pub child: Child,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SIGTERM first, so it publishes `offline`; then SIGKILL.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
