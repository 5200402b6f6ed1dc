//! What both benchmarks need: a Mosquitto child process, a temporary folder
//! and a free UDP port, all on this machine and removed when dropped.

#![allow(dead_code)]

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
