//! What the tests that run the `rollcall` binary share: the binary, an
//! agent process that dies with the test, and reading a command's outcome.
//! Free ports and the process guard come from `rollcall-testsupport`.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub use rollcall_testsupport::{Running, free_tcp_port, free_udp_port};

/// The `rollcall` binary under test.
pub fn rollcall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
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
