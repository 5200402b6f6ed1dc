//! A real Mosquitto set up as an untrusted network needs it: a TLS listener
//! only, a password for every client (`password_file`), and the ACL that
//! ships as `examples/mosquitto/acl`, run as written. The agent, the
//! scanner and the `scan`, `get`, `set`, `docs` and `demo` commands all log
//! in over TLS; what the ACL allows an agent is allowed, and what it denies is
//! denied.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rollcall_net::{Credentials, Login, NetError, Qos, Session, SessionConfig, TlsFiles};
use rollcall_testsupport::tempfile::TempDir;
use rollcall_testsupport::{MosquittoConfig, TestPki};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::support::*;

/// The users of the password file: two agents (a host's name is its user
/// name, as the ACL expects) and the hub.
const USERS: [(&str, &str); 3] = [
    ("h1", "pw-of-h1-not-guessable"),
    ("h2", "pw-of-h2-not-guessable"),
    ("rollcall-hub", "pw-of-the-hub"),
];

/// The shipped ACL.
fn example_acl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mosquitto/acl")
}

/// A Mosquitto with TLS, passwords and the example ACL, and the files a
/// client needs to reach it.
struct SecureBroker {
    mosquitto: Mosquitto,
    pki: TestPki,
    dir: TempDir,
}

impl SecureBroker {
    /// Started, or `None` (skipped, failing under `CI=true`) without
    /// Mosquitto.
    fn start(test: &str) -> Option<SecureBroker> {
        SecureBroker::start_with(test, "")
    }

    /// Started with `listener` lines beyond the TLS files.
    fn start_with(test: &str, listener: &str) -> Option<SecureBroker> {
        let passwd = mosquitto_client(test, "mosquitto_passwd")?;
        rollcall_testsupport::find_program("mosquitto").or_else(|| {
            rollcall_testsupport::skip(
                test,
                "mosquitto is not installed (apt-get install mosquitto)",
            )
        })?;
        let dir = rollcall_testsupport::tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path()).unwrap();
        let passwords = dir.path().join("passwords");
        let plain: String = USERS.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
        std::fs::write(&passwords, plain).unwrap();
        // Hashed in place, as a user would with mosquitto_passwd -U.
        let hashed = Command::new(passwd).arg("-U").arg(&passwords).status();
        assert!(hashed.unwrap().success(), "mosquitto_passwd -U");
        for (user, password) in USERS {
            std::fs::write(dir.path().join(user), format!("{password}\n")).unwrap();
        }
        // Beside the password file, not read from the checkout: Mosquitto
        // started as root reads its ACL as the `mosquitto` user, which may
        // not enter the checkout's folder (a clone in a private temp folder).
        let acl = dir.path().join("acl");
        std::fs::copy(example_acl(), &acl).unwrap();
        let config = MosquittoConfig {
            listener: format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n{listener}",
                pki.ca.display(),
                pki.server_cert.display(),
                pki.server_key.display()
            ),
            no_anonymous: true,
            extra: format!(
                "password_file {}\nacl_file {}\n",
                passwords.display(),
                acl.display()
            ),
            ..MosquittoConfig::default()
        };
        let mosquitto = Mosquitto::start(&config).unwrap();
        Some(SecureBroker {
            mosquitto,
            pki,
            dir,
        })
    }

    /// The file holding `user`'s password.
    fn password_file(&self, user: &str) -> PathBuf {
        self.dir.path().join(user)
    }

    /// How `user` logs in, with `password`.
    fn login(&self, user: &str, password: &str) -> Login {
        Login {
            credentials: Some(Credentials::new(user, password)),
            tls: TlsFiles {
                ca_file: Some(self.pki.ca.clone()),
                ..TlsFiles::default()
            },
        }
    }

    /// A session config for `user` with the right password.
    fn session(&self, user: &str) -> SessionConfig {
        let password = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
        SessionConfig {
            login: self.login(user, password),
            ..SessionConfig::new(self.mosquitto.tls_url(), format!("{user}-{}", unique()))
        }
    }

    /// A simulated host `name` logged in as itself, with a lamp on GPIO 23.
    fn host_config(&self, name: &str, udp_port: u16) -> rollcall_agent::RawConfig {
        let mut config = host_config(name, &self.mosquitto.tls_url(), udp_port);
        config.username = Some(name.into());
        config.password_file = Some(self.password_file(name));
        config.ca_file = Some(self.pki.ca.clone());
        let gpio = toml::toml! { outputs = [{ name = "lamp", pin = 23 }] };
        config
            .service_table("gpio")
            .insert("config".into(), toml::Value::Table(gpio));
        config
    }

    /// The command-line flags that log in as the hub.
    fn hub_flags(&self) -> Vec<String> {
        vec![
            "--broker".into(),
            self.mosquitto.tls_url().to_string(),
            "--username".into(),
            "rollcall-hub".into(),
            "--password-file".into(),
            self.password_file("rollcall-hub").display().to_string(),
            "--ca-file".into(),
            self.pki.ca.display().to_string(),
        ]
    }
}

/// Starts an agent and waits until it is connected and serving: its own
/// `online`, read back through a session of the hub's.
async fn secure_agent(
    broker: &SecureBroker,
    config: rollcall_agent::RawConfig,
    shutdown: &CancellationToken,
) -> rollcall_agent::Agent {
    let config = config.validate().unwrap();
    let state = config.topics.state(&config.hostname);
    let agent = rollcall_agent::start(config, shutdown.clone())
        .await
        .unwrap();
    agent.wait_connected(Duration::from_secs(5)).await.unwrap();
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut watcher =
        Session::start(broker.session("rollcall-hub"), stop.clone(), &tracker).unwrap();
    watcher.handle.subscribe(&state).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), watcher.incoming.recv())
            .await
            .expect("the agent's online within 5 s")
            .unwrap();
        if msg.payload.starts_with(b"online") {
            break;
        }
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_the_hub_work_through_tls_passwords_and_the_example_acl() {
    let test = "agents_and_the_hub_work_through_tls_passwords_and_the_example_acl";
    let Some(broker) = SecureBroker::start(test) else {
        return;
    };
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let a = secure_agent(&broker, broker.host_config("h1", port), &shutdown).await;
    let b = secure_agent(&broker, broker.host_config("h2", port), &shutdown).await;

    let mut scanner = rollcall_hub::Scanner::connect(
        broker.session("rollcall-hub"),
        rollcall_proto::Topics::default(),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    let report = scanner.scan(11, &broadcast(port, 2), |_| {}).await.unwrap();
    assert_eq!(functions(&report, "h1"), ["gpio", "system"], "{report:#?}");
    assert_eq!(functions(&report, "h2"), ["gpio", "system"], "{report:#?}");
    shutdown.cancel();
    a.join().await.unwrap();
    b.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

/// Publishes `topics` in order as `user` and returns which of them a hub
/// subscribed to everything saw: the broker delivers one publisher's
/// messages in order, so once the last (allowed) one is seen, every earlier
/// one that was let through has been seen too.
async fn delivered(broker: &SecureBroker, user: &str, topics: &[&str]) -> Vec<String> {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut hub = Session::start(broker.session("rollcall-hub"), stop.clone(), &tracker).unwrap();
    hub.handle
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    let marker = format!("/{user}/marker/{}", unique());
    // The hub's probe comes back once its subscription is live.
    hub.handle.subscribe("#").await.unwrap();
    loop {
        hub.handle
            .publish(&marker, "probe", Qos::AtLeastOnce, false)
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), hub.incoming.recv())
            .await
            .expect("the hub's subscription works within 5 s")
            .unwrap();
        if msg.topic == marker {
            break;
        }
    }
    let sender = Session::start(broker.session(user), stop.clone(), &tracker).unwrap();
    sender
        .handle
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    for topic in topics.iter().copied().chain([marker.as_str()]) {
        sender
            .handle
            .publish(topic, "x", Qos::AtLeastOnce, false)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), hub.incoming.recv())
            .await
            .expect("the marker within 5 s")
            .unwrap();
        if msg.topic == marker && &msg.payload[..] == b"x" {
            break;
        }
        // Retained messages of earlier tests' sessions are not ours.
        if topics.contains(&msg.topic.as_str()) {
            seen.push(msg.topic);
        }
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_acl_lets_an_agent_write_its_own_topics_and_answers_only() {
    let test = "the_example_acl_lets_an_agent_write_its_own_topics_and_answers_only";
    let Some(broker) = SecureBroker::start(test) else {
        return;
    };
    let allowed = [
        "/h1/gpio/output/lamp",
        "/h1/$state",
        "/h1/gpio/reply",
        "/stat/data",
        "/udp/report",
    ];
    let denied = [
        // Another host's outputs, liveness and description.
        "/h2/gpio/set/lamp",
        "/h2/$state",
        "/h2/gpio/$description",
        // Calling the roll is the hub's.
        "/udp/request",
        // Anything outside the cluster's topics.
        "/elsewhere",
        "h1/gpio/output/lamp",
    ];
    let mut all: Vec<&str> = Vec::new();
    for (a, d) in allowed.iter().zip(denied.iter()) {
        all.extend([*d, *a]);
    }
    all.extend(&denied[allowed.len()..]);
    let seen = delivered(&broker, "h1", &all).await;
    assert_eq!(seen, allowed, "h1 may write exactly these");

    // What h1 may not read does not reach it: h2's values, published by the
    // hub before a marker h1 may read.
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut h1 = Session::start(broker.session("h1"), stop.clone(), &tracker).unwrap();
    let hub = Session::start(broker.session("rollcall-hub"), stop.clone(), &tracker).unwrap();
    h1.handle
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    // A denied subscription may be refused outright or accepted and never
    // served, depending on the Mosquitto version; either way nothing arrives.
    let _ = h1.handle.subscribe("/h2/#").await;
    h1.handle.subscribe("/h1/#").await.unwrap();
    let marker = format!("/h1/marker/{}", unique());
    let rounds = async {
        loop {
            hub.handle
                .publish("/h2/gpio/output/lamp", "secret", Qos::AtLeastOnce, false)
                .await
                .unwrap();
            hub.handle
                .publish(&marker, "after", Qos::AtLeastOnce, false)
                .await
                .unwrap();
            // The subscriptions may not be live for the first round.
            if let Ok(msg) =
                tokio::time::timeout(Duration::from_millis(500), h1.incoming.recv()).await
            {
                break msg.unwrap();
            }
        }
    };
    let first = tokio::time::timeout(Duration::from_secs(10), rounds)
        .await
        .expect("h1 reads its own marker within 10 s");
    assert_eq!(first.topic, marker, "h1 read {}", first.topic);
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_no_password_or_an_unknown_ca_is_refused() {
    let test = "a_wrong_password_no_password_or_an_unknown_ca_is_refused";
    let Some(broker) = SecureBroker::start(test) else {
        return;
    };
    let other_ca_dir = rollcall_testsupport::tempfile::tempdir().unwrap();
    let other_pki = TestPki::new(other_ca_dir.path()).unwrap();
    let url = broker.mosquitto.tls_url();
    let wrong_password = broker.login("h1", "not-the-password");
    let no_password = Login {
        credentials: None,
        ..broker.login("h1", "")
    };
    let unknown_ca = Login {
        tls: TlsFiles {
            ca_file: Some(other_pki.ca.clone()),
            ..TlsFiles::default()
        },
        ..broker.login("h1", USERS[0].1)
    };
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    for (login, needle) in [
        (wrong_password, "refused"),
        (no_password, "refused"),
        (unknown_ca, "certificate"),
    ] {
        let config = SessionConfig {
            login,
            ..SessionConfig::new(url.clone(), format!("refused-{}", unique()))
        };
        let session = Session::start(config, stop.clone(), &tracker).unwrap();
        let error = session
            .handle
            .wait_connected(Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(error, NetError::NotConnected { .. }), "{error}");
        let text = error.to_string().to_lowercase();
        assert!(text.contains(needle), "{needle}: {text}");
    }
    // The right login connects: the failures above were the login's.
    let session = Session::start(broker.session("h1"), stop.clone(), &tracker).unwrap();
    session
        .handle
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}

/// Runs the rollcall binary with `args`, returning its stdout; fails the
/// test, showing stderr, if it fails.
async fn rollcall(args: &[String]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        // The password comes from its file, never from the environment.
        .env_remove("ROLLCALL_PASSWORD")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "rollcall {args:?}: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!stdout.contains("pw-of"), "a password printed: {stdout}");
    assert!(!stderr.contains("pw-of"), "a password printed: {stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_get_set_docs_and_the_demo_log_in_over_tls() {
    let test = "scan_get_set_docs_and_the_demo_log_in_over_tls";
    let Some(broker) = SecureBroker::start(test) else {
        return;
    };
    let shutdown = CancellationToken::new();
    let port = free_udp_port();
    let a = secure_agent(&broker, broker.host_config("h1", port), &shutdown).await;
    let flags = broker.hub_flags();
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|s| s.to_string())
            .chain(flags.iter().cloned())
            .collect()
    };

    let port_arg = port.to_string();
    let scan = rollcall(&with(&[
        "scan",
        "--json",
        "--broadcast",
        "127.255.255.255",
        "--udp-port",
        &port_arg,
        "--expect",
        "1",
    ]))
    .await;
    let report: serde_json::Value = serde_json::from_str(&scan).unwrap();
    assert_eq!(report["hosts"][0]["hostname"], "h1", "{scan}");

    let set = rollcall(&with(&["set", "h1", "gpio", "lamp", "1"])).await;
    assert!(set.contains("\"ok\": true"), "{set}");
    let get = rollcall(&with(&["get", "h1", "gpio", "output/lamp"])).await;
    let value: serde_json::Value = serde_json::from_str(&get).unwrap();
    assert_eq!(value["value"], 1, "{get}");

    let docs = rollcall(&with(&["docs", "--no-rollcall", "--format", "md"])).await;
    assert!(docs.contains("h1"), "{docs}");
    shutdown.cancel();
    a.join().await.unwrap();

    // The demo's three hosts, its hub and its programs on the same broker.
    let demo = rollcall(&with(&["demo", "--once", "--json"])).await;
    let report: serde_json::Value = serde_json::from_str(&demo).unwrap();
    let mut hosts: Vec<&str> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["hostname"].as_str())
        .collect();
    hosts.sort_unstable();
    assert_eq!(hosts, ["pibot01", "pizero1", "pizero2"], "{demo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_requires_a_client_certificate_gets_ours_and_refuses_none() {
    let test = "a_broker_that_requires_a_client_certificate_gets_ours_and_refuses_none";
    let Some(broker) = SecureBroker::start_with(test, "require_certificate true\n") else {
        return;
    };
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let without = Session::start(broker.session("h1"), stop.clone(), &tracker).unwrap();
    let error = without
        .handle
        .wait_connected(Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(matches!(error, NetError::NotConnected { .. }), "{error}");

    let mut with = broker.session("h1");
    with.login.tls.client_cert = Some(broker.pki.client_cert.clone());
    with.login.tls.client_key = Some(broker.pki.client_key.clone());
    let session = Session::start(with, stop.clone(), &tracker).unwrap();
    session
        .handle
        .wait_connected(Duration::from_secs(5))
        .await
        .unwrap();
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}
