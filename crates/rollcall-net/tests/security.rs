//! Attacks on the embedded broker from the network, each reproduced and its
//! defence asserted (issue 11's findings).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_net::{
    BrokerOptions, BrokerUrl, Credentials, EmbeddedBroker, Login, MAX_RETAINED_BYTES,
    MAX_RETAINED_MESSAGES, Message, NetError, Qos, ServerTls, Session, SessionConfig, TlsFiles,
};
use rollcall_testsupport::{TestPki, tempfile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod common;
use common::Harness;

const WAIT: Duration = Duration::from_secs(5);

/// A CONNACK accepting the connection, and one refusing it for a bad user
/// name or password (MQTT 3.1.1 return code 4).
const CONNACK_ACCEPTED: [u8; 4] = [0x20, 2, 0, 0];
const CONNACK_BAD_LOGIN: [u8; 4] = [0x20, 2, 0, 4];

/// An MQTT 3.1.1 CONNECT with `client_id`, clean session, 60 s keep-alive,
/// and a user name and password if given (short ones: one length byte).
fn connect_packet(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let flags = if login.is_some() {
        0b1100_0010
    } else {
        0b0000_0010
    };
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
    let fields = [Some(client_id), login.map(|l| l.0), login.map(|l| l.1)];
    for field in fields.into_iter().flatten() {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    assert!(body.len() < 128, "one length byte");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Sends a CONNECT and reads what comes back (a CONNACK, or nothing when
/// the broker closes the connection) within [`WAIT`].
async fn raw_connect(addr: SocketAddr, client_id: &str) -> Vec<u8> {
    raw_login(addr, client_id, None).await
}

/// [`raw_connect`] with a user name and password.
async fn raw_login(addr: SocketAddr, client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&connect_packet(client_id, login))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .map_or(0, |read| read.unwrap_or(0));
    buf[..n].to_vec()
}

/// Finding 2: two CONNECTs with client id `a/b` made the vendored rumqttd
/// panic while it held a lock, and every later connection was refused.
/// Now a client id the broker cannot take is refused alone, and the broker
/// goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_with_a_slash_do_not_take_the_broker_down() {
    let broker = EmbeddedBroker::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    for _ in 0..2 {
        raw_connect(broker.addr, "a/b").await;
    }
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let session = Session::start(
        SessionConfig::new(broker.url(), "after-the-attack"),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    session
        .handle
        .wait_connected(WAIT)
        .await
        .expect("the broker still accepts connections");
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

/// A session that must not connect; returns the last connection error.
async fn refused(harness: &Harness, config: SessionConfig) -> String {
    let session = harness.start(config);
    let short = Duration::from_secs(2);
    match session.handle.wait_connected(short).await {
        Err(NetError::NotConnected {
            last_error: Some(error),
            ..
        }) => error,
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

/// `subscriber` gets what `publisher` sends, through the broker.
async fn exchange(publisher: &Session, subscriber: &mut Session, topic: &str) {
    subscriber.handle.subscribe(topic).await.unwrap();
    // A message to ourselves comes back only once the SUBSCRIBE took
    // effect; then the other session's message follows it.
    loop {
        subscriber
            .handle
            .publish(topic, "sync", Qos::AtLeastOnce, false)
            .await
            .unwrap();
        let message = tokio::time::timeout(WAIT, subscriber.incoming.recv())
            .await
            .unwrap()
            .unwrap();
        if message.payload.as_ref() == b"sync" {
            break;
        }
    }
    publisher
        .handle
        .publish(topic, "hello", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    loop {
        let message = tokio::time::timeout(WAIT, subscriber.incoming.recv())
            .await
            .expect("the message crossed the broker")
            .unwrap();
        if message.payload.as_ref() == b"hello" {
            assert_eq!(message.topic, topic);
            return;
        }
    }
}

/// A password file, readable by its owner only.
fn password_file(dir: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("passwords");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn loopback_any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn with_login(url: BrokerUrl, client_id: &str, login: Login) -> SessionConfig {
    let mut config = SessionConfig::new(url, client_id);
    config.login = login;
    config
}

fn password(user: &str, password: &str) -> Login {
    Login {
        credentials: Some(Credentials::new(user, password)),
        ..Login::default()
    }
}

fn trusting(ca: &Path) -> Login {
    Login {
        credentials: None,
        tls: TlsFiles {
            ca_file: Some(ca.to_owned()),
            ..TlsFiles::default()
        },
    }
}

fn mqtts(addr: SocketAddr) -> BrokerUrl {
    format!("mqtts://{addr}").parse().unwrap()
}

/// Finding 3: the embedded broker was bound to every address with no
/// authentication. Off loopback it is now refused without a password file,
/// before anything is bound (so no port is opened on a real interface).
#[test]
fn off_loopback_the_broker_needs_a_password_file() {
    for addr in ["0.0.0.0:0", "[::]:0", "198.18.7.7:1883"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut options = BrokerOptions::new(addr);
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path()).unwrap();
        // TLS alone is not authentication.
        options.tls = Some(ServerTls {
            cert: pki.server_cert,
            key: pki.server_key,
        });
        let error = EmbeddedBroker::start(options).unwrap_err().to_string();
        assert!(
            error.contains("password file") && error.contains(&addr.ip().to_string()),
            "{error}"
        );
    }
    // With one, the address is accepted: only checked here, not bound.
    let dir = tempfile::tempdir().unwrap();
    let options = BrokerOptions {
        password_file: Some(password_file(dir.path(), "agent:secret\n")),
        ..BrokerOptions::new("0.0.0.0:0".parse().unwrap())
    };
    assert_eq!(options.check().unwrap().unwrap().len(), 1);
}

/// With a password file, a CONNECT without a login, with a wrong password,
/// with another user's password or with an unknown user is refused with
/// CONNACK 4; the right one is accepted. The broker's own process still
/// gets in (its in-process login), and a refused session says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_password_file_only_its_users_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let options = BrokerOptions {
        password_file: Some(password_file(
            dir.path(),
            "# users\nagent:right horse\nhub:battery\n",
        )),
        ..BrokerOptions::new(loopback_any_port())
    };
    let broker = EmbeddedBroker::start(options).unwrap();
    assert!(broker.login().credentials.is_some());
    for login in [
        None,
        Some(("agent", "wrong")),
        Some(("agent", "battery")),
        Some(("agent", "right horse ")),
        Some(("nobody", "right horse")),
        Some(("$rollcall", "guess")),
    ] {
        let answer = raw_login(broker.addr, "intruder", login).await;
        assert_eq!(answer, CONNACK_BAD_LOGIN, "{login:?}");
    }
    let answer = raw_login(broker.addr, "agent-1", Some(("agent", "right horse"))).await;
    assert_eq!(answer, CONNACK_ACCEPTED);

    let harness = Harness::new();
    let refused = refused(&harness, SessionConfig::new(broker.url(), "no-login")).await;
    assert!(refused.contains("BadUserNamePassword"), "{refused}");
    let agent = harness
        .session(with_login(
            broker.url(),
            "agent",
            password("agent", "right horse"),
        ))
        .await;
    let mut local = harness
        .session(with_login(broker.url(), "in-process", broker.login()))
        .await;
    exchange(&agent, &mut local, "/auth/test").await;
    harness.stop().await;
}

/// The TLS listener: a session on `mqtts://` that trusts the test CA
/// connects and its messages reach the broker's own (plain, in-process)
/// clients; a session trusting another CA fails with a certificate error;
/// a plain MQTT client on the TLS port gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_serves_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestPki::new(other_dir.path()).unwrap();
    let options = BrokerOptions {
        tls: Some(ServerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
        }),
        ..BrokerOptions::new(loopback_any_port())
    };
    let broker = EmbeddedBroker::start(options).unwrap();
    assert!(broker.tls);
    assert_ne!(broker.url().port, broker.addr.port(), "in-process listener");

    let harness = Harness::new();
    let mut remote = harness
        .session(with_login(
            mqtts(broker.addr),
            "tls-client",
            trusting(&pki.ca),
        ))
        .await;
    let local = harness
        .session(with_login(broker.url(), "in-process", broker.login()))
        .await;
    exchange(&local, &mut remote, "/tls/test").await;

    // By name too: the certificate names localhost.
    let by_name: BrokerUrl = format!("mqtts://localhost:{}", broker.addr.port())
        .parse()
        .unwrap();
    harness
        .session(with_login(by_name, "tls-by-name", trusting(&pki.ca)))
        .await;

    let error = refused(
        &harness,
        with_login(mqtts(broker.addr), "wrong-ca", trusting(&other.ca)),
    )
    .await;
    assert!(
        error.contains("TLS") && error.contains("invalid peer certificate"),
        "{error}"
    );

    // The plain listener kept for the broker's own process wants its login.
    assert_eq!(
        raw_connect(broker.url().resolve().unwrap(), "sneaky").await,
        CONNACK_BAD_LOGIN
    );
    // Plain MQTT on the TLS port: no CONNACK, and the connection is
    // closed (not left waiting: its bytes are no TLS record).
    let mut plain = TcpStream::connect(broker.addr).await.unwrap();
    plain
        .write_all(&connect_packet("plain-on-tls", None))
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "the TLS port kept a plain client waiting");
    assert!(!answer.starts_with(&[0x20]), "{answer:?}");
    harness.stop().await;
}

/// The server's name is checked: the test certificate names 127.0.0.1,
/// ::1 and localhost, so the same broker reached as 127.0.0.2 (loopback
/// too) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_checks_the_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let options = BrokerOptions {
        tls: Some(ServerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
        }),
        ..BrokerOptions::new(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0)))
    };
    let broker = EmbeddedBroker::start(options).unwrap();
    let harness = Harness::new();
    let error = refused(
        &harness,
        with_login(mqtts(broker.addr), "wrong-name", trusting(&pki.ca)),
    )
    .await;
    assert!(
        error.contains("TLS") && error.contains("not valid for name"),
        "{error}"
    );
    harness.stop().await;
}

/// rumqttd made the TLS handshake in its accept loop, with no timeout: one
/// TCP connection that sent nothing kept every later client out. Now each
/// handshake runs in its own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_does_not_block_the_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let options = BrokerOptions {
        tls: Some(ServerTls {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
        }),
        ..BrokerOptions::new(loopback_any_port())
    };
    let broker = EmbeddedBroker::start(options).unwrap();
    let _silent: Vec<TcpStream> = {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(broker.addr).await.unwrap());
        }
        held
    };
    let harness = Harness::new();
    harness
        .session(with_login(
            mqtts(broker.addr),
            "after-silence",
            trusting(&pki.ca),
        ))
        .await;
    harness.stop().await;
}

/// Bad TLS files are named before the broker starts: a missing key, and a
/// key that is not the certificate's.
#[test]
fn bad_tls_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    for (cert, key, needle) in [
        (
            &pki.server_cert,
            &dir.path().join("missing.key"),
            "missing.key",
        ),
        (&pki.server_cert, &pki.client_key, "server.pem"),
        (&pki.server_key, &pki.server_key, "server.key"),
    ] {
        let options = BrokerOptions {
            tls: Some(ServerTls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            ..BrokerOptions::new(loopback_any_port())
        };
        let error = EmbeddedBroker::start(options).unwrap_err().to_string();
        assert!(error.contains(needle), "{error}");
    }
}

/// What the broker retained on `topic`, as `session` sees it when it
/// subscribes: the messages before the marker it then publishes there itself
/// (retained messages come first, and the broker handles one client's
/// packets in order, so the marker also means everything `session` sent
/// before has been handled).
async fn retained_on(session: &mut Session, topic: &str) -> Vec<Message> {
    session.handle.subscribe(topic).await.unwrap();
    let marker = format!("marker for {topic}");
    session
        .handle
        .publish(topic, marker.clone(), Qos::AtLeastOnce, false)
        .await
        .unwrap();
    let mut retained = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, session.incoming.recv())
            .await
            .expect("the marker came back")
            .unwrap();
        if !message.retain && message.payload.as_ref() == marker.as_bytes() {
            return retained;
        }
        assert!(message.retain, "only retained messages before the marker");
        retained.push(message);
    }
}

/// The one retained payload on `topic`, if any.
async fn retained_payload(session: &mut Session, topic: &str) -> Option<Vec<u8>> {
    let retained = retained_on(session, topic).await;
    assert!(retained.len() <= 1, "one retained message per topic");
    retained.first().map(|m| m.payload.to_vec())
}

/// The embedded broker retained every retained publish, so a client
/// publishing made-up hosts grew the hub's process without end (482 MB for
/// 20,000 hosts, BENCHMARKS.md). Now a new retained topic past
/// [`MAX_RETAINED_MESSAGES`] is delivered but not retained, and the topics
/// retained before it stay and can still be replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retained_store_keeps_at_most_its_message_bound() {
    let broker = EmbeddedBroker::start(loopback_any_port()).unwrap();
    let harness = Harness::new();
    let mut flooder = harness
        .session(SessionConfig::new(broker.url(), "flooder"))
        .await;
    let real = "rollcall/real-host/$state";
    flooder
        .handle
        .publish(real, "up", Qos::AtLeastOnce, true)
        .await
        .unwrap();
    for i in 0..MAX_RETAINED_MESSAGES + 100 {
        flooder
            .handle
            .publish(&format!("flood/{i}"), "x", Qos::AtMostOnce, true)
            .await
            .unwrap();
    }
    // The marker of our own topic also means the flood has been handled.
    assert!(retained_on(&mut flooder, "sync/flooder").await.is_empty());

    let mut late = harness
        .session(SessionConfig::new(broker.url(), "late"))
        .await;
    assert_eq!(
        retained_payload(&mut late, real).await,
        Some(b"up".to_vec())
    );
    assert_eq!(
        retained_payload(&mut late, "flood/0").await,
        Some(b"x".to_vec())
    );
    // The first MAX_RETAINED_MESSAGES - 1 flood topics filled the store.
    let last_kept = format!("flood/{}", MAX_RETAINED_MESSAGES - 2);
    let first_refused = format!("flood/{}", MAX_RETAINED_MESSAGES - 1);
    let last = format!("flood/{}", MAX_RETAINED_MESSAGES + 99);
    assert_eq!(
        retained_payload(&mut late, &last_kept).await,
        Some(b"x".to_vec())
    );
    assert_eq!(retained_payload(&mut late, &first_refused).await, None);
    assert_eq!(retained_payload(&mut late, &last).await, None);

    // A retained topic is still replaced, and a new one still delivered to
    // its subscribers (`late` is subscribed to `last`).
    flooder
        .handle
        .publish(real, "dn", Qos::AtLeastOnce, true)
        .await
        .unwrap();
    flooder
        .handle
        .publish(&last, "live", Qos::AtLeastOnce, true)
        .await
        .unwrap();
    loop {
        let live = tokio::time::timeout(WAIT, late.incoming.recv())
            .await
            .expect("the publish was delivered")
            .unwrap();
        assert!(!live.retain);
        if live.topic == last {
            assert_eq!(live.payload.as_ref(), b"live");
            break;
        }
    }
    let mut later = harness
        .session(SessionConfig::new(broker.url(), "later"))
        .await;
    assert_eq!(
        retained_payload(&mut later, real).await,
        Some(b"dn".to_vec())
    );
    assert_eq!(retained_payload(&mut later, &last).await, None);
    harness.stop().await;
}

/// The same for [`MAX_RETAINED_BYTES`]: 1 MB payloads, of which 16 fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retained_store_keeps_at_most_its_bytes_bound() {
    const PAYLOAD: usize = 1_000_000;
    let broker = EmbeddedBroker::start(loopback_any_port()).unwrap();
    let harness = Harness::new();
    let big = |config: SessionConfig| SessionConfig {
        max_packet_size: 2 * PAYLOAD,
        ..config
    };
    let mut flooder = harness
        .session(big(SessionConfig::new(broker.url(), "flooder")))
        .await;
    let fit = MAX_RETAINED_BYTES / (PAYLOAD + "big/00".len());
    assert_eq!(fit, 16);
    for i in 0..fit + 4 {
        flooder
            .handle
            .publish(
                &format!("big/{i:02}"),
                vec![b'a'; PAYLOAD],
                Qos::AtMostOnce,
                true,
            )
            .await
            .unwrap();
    }
    // Replacing one with a payload of the same size is accepted.
    flooder
        .handle
        .publish("big/00", vec![b'b'; PAYLOAD], Qos::AtMostOnce, true)
        .await
        .unwrap();
    assert!(retained_on(&mut flooder, "sync/flooder").await.is_empty());

    let mut late = harness
        .session(big(SessionConfig::new(broker.url(), "late")))
        .await;
    let kept = retained_payload(&mut late, "big/00").await.unwrap();
    assert!(kept == vec![b'b'; PAYLOAD]);
    let last_kept = format!("big/{:02}", fit - 1);
    assert!(retained_payload(&mut late, &last_kept).await.is_some());
    for i in fit..fit + 4 {
        let refused = format!("big/{i:02}");
        let retained = retained_payload(&mut late, &refused).await;
        assert!(retained.is_none(), "{refused} was retained");
    }
    // An empty payload deletes one, and makes room for another.
    flooder
        .handle
        .publish("big/01", Vec::new(), Qos::AtMostOnce, true)
        .await
        .unwrap();
    let refused = format!("big/{fit:02}");
    flooder
        .handle
        .publish(&refused, vec![b'c'; PAYLOAD], Qos::AtMostOnce, true)
        .await
        .unwrap();
    assert!(retained_on(&mut flooder, "sync/flooder").await.is_empty());
    let mut later = harness
        .session(big(SessionConfig::new(broker.url(), "later")))
        .await;
    let deleted = retained_payload(&mut later, "big/01").await;
    assert!(deleted.is_none(), "big/01 is still retained");
    let now_kept = retained_payload(&mut later, &refused).await.unwrap();
    assert!(now_kept == vec![b'c'; PAYLOAD]);
    harness.stop().await;
}
