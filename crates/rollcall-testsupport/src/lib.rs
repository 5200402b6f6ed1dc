//! What rollcall's tests and benchmarks share, in one place: finding a
//! program and skipping a test that cannot run (never under `CI=true`), free
//! loopback ports, a real Mosquitto as a child process, a NATS cluster
//! speaking MQTT, a child process that
//! dies with the test, test certificates (a CA, a server and a client
//! certificate made at test time), the network-namespace test bed, and
//! Debian's kernel booted in QEMU for tests against real kernel drivers.
//!
//! A dev-dependency only, and it depends on no rollcall crate but
//! `rollcall-net` (for the broker address and the bed's MQTT probe), so every
//! crate above the network layer can use it without a dependency cycle.
//! Tests that need an agent and a scanner together live in the `rollcall`
//! crate, the one crate that depends on both.

pub mod env;
pub mod kernel_vm;
pub mod mosquitto;
pub mod nats;
pub mod netns;
pub mod ports;
pub mod process;
pub mod tls;

pub use env::{ci, find_program, require_program, skip};
pub use kernel_vm::{KernelVm, VmRun};
pub use mosquitto::{Mosquitto, MosquittoConfig, Tcp};
pub use nats::NatsCluster;
pub use ports::{LOOPBACK_BROADCAST, embedded_broker, free_tcp_port, free_udp_port, unique};
pub use process::Running;
/// Temporary folders: `tempfile::tempdir()`, removed when dropped.
pub use tempfile;
pub use tls::TestPki;

/// Why a piece of test support could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// A file or a process could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A program the test needs is not installed.
    #[error("{0} is not installed")]
    NotInstalled(&'static str),
    /// Mosquitto started but did not come up.
    #[error("mosquitto: {0}")]
    Mosquitto(String),
    /// A NATS cluster started but did not come up.
    #[error("nats-server: {0}")]
    Nats(String),
    /// A test certificate could not be made.
    #[error("test certificate: {0}")]
    Certificate(String),
}

impl SupportError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupportError {
        let what = what.into();
        move |source| SupportError::Io { what, source }
    }
}
