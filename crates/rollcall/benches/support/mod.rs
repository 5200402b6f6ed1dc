//! What the benchmarks share: a Mosquitto child process, a temporary folder
//! and a free UDP port, all on this machine and removed when dropped; the
//! release `rollcall` binary run as an agent process, and what /proc says of
//! a process's memory and CPU time.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall_net::BrokerUrl;

/// How long Mosquitto may take to accept connections.
const MOSQUITTO_READY: Duration = Duration::from_secs(5);

/// A directory under the system's temp dir, removed when dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn create(name: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A UDP port nobody on this machine is using now.
pub fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?
        .local_addr()?
        .port())
}

/// `mosquitto` on PATH, or in /usr/sbin where Debian puts it.
pub fn find_mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
}

/// A Mosquitto child process, killed when dropped (also on error paths).
pub struct Mosquitto {
    pub child: Child,
    port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    /// Starts mosquitto on a free loopback port, with `set_tcp_nodelay true`
    /// (as README.md advises), its defaults otherwise but for the `extra`
    /// configuration lines, and waits until it accepts TCP.
    pub fn start(binary: &Path, dir: &Path, extra: &str) -> Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 set_tcp_nodelay true\n\
                 persistence false\n\
                 log_dest stderr\n\
                 log_type error\n\
                 log_type warning\n\
                 {extra}\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("mosquitto.log"))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("running {}", binary.display()))?;
        let mut mosquitto = Mosquitto {
            child,
            port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + MOSQUITTO_READY;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Some(status) = mosquitto.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
                bail!("mosquitto exited at start ({status}): {log}");
            }
            if Instant::now() >= deadline {
                bail!("mosquitto not accepting connections on {addr} after {MOSQUITTO_READY:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let version = Command::new(binary)
            .arg("-h")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        eprintln!("{version} listening on {addr}");
        Ok(mosquitto)
    }

    pub fn url(&self) -> BrokerUrl {
        BrokerUrl::new("127.0.0.1", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(log) = std::fs::read_to_string(self.dir.join("mosquitto.log"))
            && !log.trim().is_empty()
        {
            eprintln!("mosquitto log:\n{log}");
        }
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
        .arg(free_udp_port()?.to_string())
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
            Ok(Some(msg)) if msg.topic == state_topic && &msg.payload[..] == b"online" => {
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
