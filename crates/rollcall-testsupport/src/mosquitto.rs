//! A real Mosquitto for tests and benchmarks: its configuration file written
//! in one place, started as a child process on a free loopback port, ready
//! once it accepts TCP, killed (and its log shown, if it wrote one) when
//! dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall_net::BrokerUrl;

use crate::{SupportError, find_program, free_tcp_port, skip};

/// How long Mosquitto may take to accept connections.
const READY: Duration = Duration::from_secs(5);

/// How the broker treats its TCP sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tcp {
    /// As Debian installs it: Nagle's algorithm on.
    #[default]
    Stock,
    /// `set_tcp_nodelay true`, as a tuned broker.
    NoDelay,
}

/// What a test asks of its Mosquitto, beyond a loopback listener and no
/// persistence.
#[derive(Debug, Clone, Default)]
pub struct MosquittoConfig {
    /// Stock or tuned TCP.
    pub tcp: Tcp,
    /// Lines that configure the listener (`certfile`, `keyfile`, ... for
    /// TLS), written right after it.
    pub listener: String,
    /// Refuse clients that give no user name (`allow_anonymous false`);
    /// `extra` then names a `password_file`.
    pub no_anonymous: bool,
    /// More configuration lines, appended.
    pub extra: String,
}

impl MosquittoConfig {
    /// With `set_tcp_nodelay true`, as the tests and benchmarks have run so
    /// far.
    pub fn tuned() -> Self {
        MosquittoConfig {
            tcp: Tcp::NoDelay,
            ..MosquittoConfig::default()
        }
    }

    /// The configuration file's text for a listener on `address:port`:
    /// errors and warnings logged to stderr, nothing persisted (a restart
    /// starts with an empty retained store).
    pub fn text(&self, address: &str, port: u16) -> String {
        let nodelay = match self.tcp {
            Tcp::Stock => "",
            Tcp::NoDelay => "set_tcp_nodelay true\n",
        };
        let listener = match self.listener.trim_end() {
            "" => String::new(),
            lines => format!("{lines}\n"),
        };
        let anonymous = !self.no_anonymous;
        format!(
            "listener {port} {address}\n\
             {listener}\
             allow_anonymous {anonymous}\n\
             persistence false\n\
             {nodelay}\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             {}\n",
            self.extra
        )
    }
}

/// A Mosquitto child process on a free loopback port, killed when dropped.
pub struct Mosquitto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts Mosquitto for `test`, tuned as the tests have always run it,
    /// or says why not: `None` skips the test, except under `CI=true`, where
    /// a missing Mosquitto fails it.
    pub fn for_test(test: &str) -> Option<Mosquitto> {
        match Mosquitto::start(&MosquittoConfig::tuned()) {
            Ok(m) => Some(m),
            Err(SupportError::NotInstalled(_)) => skip(
                test,
                "mosquitto is not installed (apt-get install mosquitto)",
            ),
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// Starts Mosquitto as `config` says, and waits until it accepts TCP.
    pub fn start(config: &MosquittoConfig) -> Result<Mosquitto, SupportError> {
        let program = find_program("mosquitto").ok_or(SupportError::NotInstalled("mosquitto"))?;
        let dir = tempfile::Builder::new()
            .prefix("rollcall-mosquitto-")
            .tempdir()
            .map_err(SupportError::io("a folder for mosquitto"))?;
        let port = free_tcp_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, config.text("127.0.0.1", port))
            .map_err(SupportError::io("writing mosquitto.conf"))?;
        let log_path = dir.path().join("mosquitto.log");
        let log = std::fs::File::create(&log_path).map_err(SupportError::io("mosquitto.log"))?;
        let child = Command::new(&program)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(SupportError::io("mosquitto.log"))?)
            .stderr(log)
            .spawn()
            .map_err(SupportError::io(format!("running {}", program.display())))?;
        let mut mosquitto = Mosquitto { child, port, dir };
        let addr = mosquitto.addr();
        let deadline = Instant::now() + READY;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = mosquitto.child.try_wait() {
                return Err(SupportError::Mosquitto(format!(
                    "exited at start ({status}): {}",
                    mosquitto.log()
                )));
            }
            if Instant::now() >= deadline {
                return Err(SupportError::Mosquitto(format!(
                    "not accepting connections on {addr} after {READY:?}"
                )));
            }
            // Polling a child process's port: nothing to wait on instead.
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(mosquitto)
    }

    /// Its address, on loopback.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Its URL, for rollcall's sessions.
    pub fn url(&self) -> BrokerUrl {
        BrokerUrl::new("127.0.0.1", self.port)
    }

    /// Its URL as `mqtts://`, for a listener configured with TLS.
    pub fn tls_url(&self) -> BrokerUrl {
        BrokerUrl {
            tls: true,
            ..self.url()
        }
    }

    /// Its process id (for CPU and memory readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its folder (configuration and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What it has logged so far (errors and warnings).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// The first line of `mosquitto -h`: its version, for the record beside
    /// a benchmark's figures.
    pub fn version() -> String {
        find_program("mosquitto")
            .and_then(|program: PathBuf| Command::new(program).arg("-h").output().ok())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        if !log.trim().is_empty() {
            eprintln!("mosquitto log:\n{log}");
        }
    }
}

/// A Mosquitto client program (`mosquitto_pub`, `mosquitto_sub`), or `None`
/// after [`skip`]ping `test`.
pub fn client(test: &str, name: &str) -> Option<PathBuf> {
    crate::require_program(test, name, "mosquitto-clients")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_stock_unless_tuned() {
        let stock = MosquittoConfig::default().text("127.0.0.1", 1234);
        assert!(stock.starts_with("listener 1234 127.0.0.1\n"), "{stock}");
        assert!(!stock.contains("set_tcp_nodelay"), "{stock}");
        let tuned = MosquittoConfig {
            extra: "max_queued_messages 10".into(),
            ..MosquittoConfig::tuned()
        }
        .text("0.0.0.0", 1883);
        assert!(tuned.contains("\nset_tcp_nodelay true\n"), "{tuned}");
        assert!(tuned.ends_with("max_queued_messages 10\n"), "{tuned}");
    }

    #[test]
    fn a_started_mosquitto_accepts_connections_and_is_gone_when_dropped() {
        let Some(mosquitto) = Mosquitto::for_test("a_started_mosquitto_accepts_connections") else {
            return;
        };
        let addr = mosquitto.addr();
        assert_eq!(mosquitto.url(), BrokerUrl::new("127.0.0.1", addr.port()));
        TcpStream::connect(addr).expect("mosquitto accepts TCP");
        let pid = mosquitto.pid();
        drop(mosquitto);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "mosquitto {pid} still runs after the drop"
        );
    }
}
