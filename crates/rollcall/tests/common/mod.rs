//! What the tests that run the `rollcall` binary share: the binary, free
//! ports, an agent process that dies with the test, and reading a command's
//! outcome.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The `rollcall` binary under test.
pub fn rollcall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
}

/// A TCP port nobody on loopback is using now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port nobody on this machine is using now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rollcall agent --sim` for host `host`, with `args` (its broker, say).
pub fn spawn_agent(host: &str, args: &[&str], udp_port: u16, state: &Path) -> Running {
    Running(
        rollcall()
            .args(["agent", "--sim", "--hostname", host])
            .args(args)
            .args(["--udp-port", &udp_port.to_string(), "--state-dir"])
            .arg(state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The standard output of a command that must have succeeded.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The standard error of a command that must have failed.
pub fn failed(output: Output) -> String {
    assert!(!output.status.success(), "succeeded");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
