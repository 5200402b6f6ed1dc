//! The `rollcall` binary as a user runs it: the demo, an agent process and
//! `rollcall scan --json` against it, `get`, and the printed configuration.
//! Everything stays on loopback.

mod common;

use std::net::{Ipv4Addr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn demo_once_prints_three_hosts_as_a_table_and_as_json() {
    let table = ok(rollcall().args(["demo", "--once"]).output().unwrap());
    for host in ["pizero1", "pizero2", "pibot01"] {
        assert!(table.contains(host), "{table}");
    }
    assert!(table.contains("display_driver"), "{table}");
    assert!(table.contains("/display"), "{table}");
    // pizero2 runs the notes' GPIO example.
    assert!(table.contains("/pizero2/gpio/+/+"), "{table}");

    let json: Value = serde_json::from_str(&ok(rollcall()
        .args(["demo", "--once", "--json"])
        .output()
        .unwrap()))
    .unwrap();
    let hosts = json["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    for h in hosts {
        assert_eq!(h["ipaddr"], "127.0.0.1");
        assert!(h["t_ms"].is_u64());
        assert!(
            h["services"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["function"] == "system")
        );
    }
}

#[test]
fn print_config_is_valid_toml_the_agent_accepts() {
    let text = ok(rollcall()
        .args(["agent", "--print-config"])
        .output()
        .unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        text.replace("# hostname = \"pizero1\"", "hostname = \"x\""),
    )
    .unwrap();
    let checked = ok(rollcall()
        .args(["agent", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap());
    assert!(checked.contains("hostname: \"x\""), "{checked}");
    // The password and the cluster key are never printed (issue 11).
    let secret = dir.path().join("secret.toml");
    std::fs::write(
        &secret,
        "hostname = \"x\"\nusername = \"agent\"\npassword = \"pw-never-shown\"\n\
         cluster_key = \"key-never-shown-16\"\n",
    )
    .unwrap();
    let checked = ok(rollcall()
        .args(["agent", "--check", "--config"])
        .arg(&secret)
        .output()
        .unwrap());
    assert!(checked.contains("\"agent\""), "{checked}");
    assert!(!checked.contains("never-shown"), "{checked}");
    // A bad key in the same file is refused with its name, before anything starts.
    std::fs::write(dir.path().join("bad.toml"), "hostnam = \"x\"\n").unwrap();
    let out = rollcall()
        .args(["agent", "--check", "--config"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hostnam"));
}

#[test]
fn scan_json_and_get_against_an_agent_process() {
    let broker_port = free_tcp_port();
    let udp_port = free_udp_port();
    let state = tempfile::tempdir().unwrap();
    let broker_addr = format!("127.0.0.1:{broker_port}");
    let _agent = spawn_agent(
        "pizero1",
        &["--embedded-broker", &broker_addr],
        udp_port,
        state.path(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, broker_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the agent's broker never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let broker = format!("mqtt://127.0.0.1:{broker_port}");
    // The agent may still be subscribing: `get` succeeds once it serves.
    let value: Value = loop {
        let out = rollcall()
            .args([
                "get",
                "pizero1",
                "system",
                "mem_total",
                "--wait-ms",
                "500",
                "--broker",
                &broker,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            break serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "get never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert!(value["value"].as_u64().unwrap() > 0);

    let out = ok(rollcall()
        .args([
            "scan",
            "--json",
            "--expect",
            "1",
            "--broadcast",
            "127.255.255.255",
            "--udp-port",
        ])
        .arg(udp_port.to_string())
        .args(["--broker", &broker])
        .output()
        .unwrap());
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["id"].is_u64() && report["elapsed_ms"].is_u64());
    // No --window-ms: 0.1 ms per expected host, so none for one host.
    assert_eq!(report["window_ms"], 0);
    let host = &report["hosts"][0];
    assert_eq!(host["hostname"], "pizero1");
    assert!(host["t_ms"].is_u64());
    let services = host["services"].as_array().unwrap();
    let system = services.iter().find(|s| s["function"] == "system").unwrap();
    assert_eq!(system["control"], "/pizero1/system/control");
    assert!(system["t_ms"].is_u64());
    assert!(system["interfaces"]["outputs"].is_array());

    // A set the service refuses exits non-zero with the service's reason.
    let out = rollcall()
        .args([
            "set", "pizero1", "system", "uptime", "5", "--broker", &broker,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("not supported"));
}

/// Reads `child`'s stderr until a line contains every one of `words`.
fn wait_for_line(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    words: &[&str],
) -> String {
    for line in lines.by_ref() {
        let line = line.unwrap();
        if words.iter().all(|w| line.contains(w)) {
            return line;
        }
    }
    panic!("the output ended before a line with {words:?}");
}

#[test]
fn the_hub_logs_hosts_appearing_and_going_missing() {
    use std::io::BufRead;
    let broker_port = free_tcp_port();
    let udp_port = free_udp_port();
    let state = tempfile::tempdir().unwrap();
    let mut hub = Running(
        rollcall()
            .args(["hub", "--embedded-broker"])
            .arg(format!("127.0.0.1:{broker_port}"))
            .args([
                "--broadcast",
                "127.255.255.255",
                "--udp-port",
                &udp_port.to_string(),
            ])
            .args(["--scan-every", "1", "--wait-ms", "500"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = std::io::BufReader::new(hub.0.stderr.take().unwrap());
    let mut lines = stderr.lines();
    wait_for_line(&mut lines, &["embedded broker listening"]);
    let broker = format!("mqtt://127.0.0.1:{broker_port}");
    let mut agent = spawn_agent("pizero9", &["--broker", &broker], udp_port, state.path());
    wait_for_line(&mut lines, &["host appeared", "pizero9"]);
    wait_for_line(&mut lines, &["service appeared", "pizero9", "system"]);
    let _ = agent.0.kill();
    let _ = agent.0.wait();
    // Killed, the agent misses the next roll-call (missing), unless the
    // broker publishes its last will first (offline): rumqttd does so as
    // soon as the connection drops.
    let gone = lines.by_ref().map(Result::unwrap).find(|l| {
        l.contains("pizero9") && (l.contains("host missing") || l.contains("host offline"))
    });
    assert!(
        gone.is_some(),
        "the output ended before pizero9 went missing or offline"
    );
}

/// Issue 11: the dashboard had no login. Off loopback it now needs a token
/// of 16 bytes or more; the hub says so and stops before serving anything.
#[test]
fn a_dashboard_others_can_reach_needs_a_token() {
    let broker = format!("mqtt://127.0.0.1:{}", free_tcp_port());
    let refused = failed(
        rollcall()
            .args(["hub", "--broker", &broker, "--http", "0.0.0.0:0"])
            .output()
            .unwrap(),
    );
    assert!(refused.contains("--http-token"), "{refused}");
    let short = failed(
        rollcall()
            .args(["hub", "--broker", &broker, "--http", "127.0.0.1:0"])
            .args(["--http-token", "short"])
            .output()
            .unwrap(),
    );
    assert!(short.contains("at least 16 bytes"), "{short}");
}

#[test]
fn a_bad_discovery_prefix_is_refused_before_anything_connects() {
    // Nothing listens on this port: the error comes before connecting.
    let broker = format!("mqtt://127.0.0.1:{}", free_tcp_port());
    for prefix in ["ha/+", "ha/", "$SYS"] {
        let refused = failed(
            rollcall()
                .args(["hub", "--broker", &broker, "--ha-discovery", prefix])
                .output()
                .unwrap(),
        );
        assert!(refused.contains("discovery prefix"), "{prefix}: {refused}");
    }
}

#[test]
fn login_flags_are_checked_before_anything_connects_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let empty = dir.path().join("empty-password");
    std::fs::write(&empty, "\n").unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "pw-never-shown\n").unwrap();
    // Nothing listens on this port: each error below comes before connecting.
    let port = free_tcp_port();
    let tls = format!("mqtts://127.0.0.1:{port}");
    let plain = format!("mqtt://127.0.0.1:{port}");
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec![
                "scan",
                "--broker",
                &tls,
                "--ca-file",
                not_pem.to_str().unwrap(),
            ],
            "no PEM certificate",
        ),
        (
            vec!["get", "h", "gpio", "--broker", &plain, "--username", "u"]
                .into_iter()
                .chain(["--password-file", empty.to_str().unwrap()])
                .collect(),
            "first line is empty",
        ),
        (
            vec!["set", "h", "gpio", "lamp", "1", "--broker", &plain],
            "password: given without a user name",
        ),
        (
            vec!["docs", "--broker", &plain, "--client-cert", "/c.pem"],
            "--client-key",
        ),
        (
            vec!["hub", "--broker", &plain, "--client-cert", "/c.pem"]
                .into_iter()
                .chain(["--client-key", "/c.key"])
                .collect(),
            "mqtts://",
        ),
    ];
    for (args, needle) in cases {
        let mut command = rollcall();
        command.args(&args).env_remove("ROLLCALL_USERNAME");
        if args[0] == "set" {
            command.env("ROLLCALL_PASSWORD", "pw-never-shown");
        } else {
            command.env_remove("ROLLCALL_PASSWORD");
        }
        let error = failed(command.output().unwrap());
        assert!(error.contains(needle), "{args:?}: {error}");
        assert!(!error.contains("never-shown"), "{args:?}: {error}");
    }
    // The agent reads the password from its file, and --check hides it.
    let checked = ok(rollcall()
        .args(["agent", "--check", "--hostname", "x", "--username", "x"])
        .arg("--password-file")
        .arg(&password)
        .env_remove("ROLLCALL_PASSWORD")
        .output()
        .unwrap());
    assert!(checked.contains("Secret(hidden)"), "{checked}");
    assert!(!checked.contains("never-shown"), "{checked}");
}
