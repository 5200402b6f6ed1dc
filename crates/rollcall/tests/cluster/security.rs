//! Attacks from the network, each reproduced against a running agent and
//! its defence asserted (issue 11's findings; docs/protocol.md section 8).
//! Finding 1: a forged roll-call naming the attacker's broker took the
//! agent's MQTT username and password there. Finding 4: one big retained
//! message took the agent and the hub off the broker.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rollcall_net::{Qos, RollCallSocket, Session, SessionConfig};
use rollcall_proto::RollCall;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "agent-password-never-to-leave";

/// A TCP listener posing as a broker: it keeps the first bytes of every
/// connection (an MQTT client's CONNECT) and answers nothing.
struct FakeBroker {
    url: String,
    connects: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl FakeBroker {
    async fn start(shutdown: &CancellationToken, tracker: &TaskTracker) -> FakeBroker {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let url = format!("mqtt://{}", listener.local_addr().unwrap());
        let (seen, connects) = mpsc::unbounded_channel();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            loop {
                let (mut stream, _) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let mut buf = vec![0u8; 512];
                let n = tokio::select! {
                    () = stop.cancelled() => return,
                    read = stream.read(&mut buf) => read.unwrap_or(0),
                };
                buf.truncate(n);
                let _ = seen.send(buf);
            }
        });
        FakeBroker { url, connects }
    }

    /// What the first connection sent, within 5 s.
    async fn first_connect(&mut self) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(5), self.connects.recv())
            .await
            .expect("a connection within 5 s")
            .expect("the fake broker runs")
    }

    /// Whether anyone has connected so far.
    fn connected(&mut self) -> bool {
        self.connects.try_recv().is_ok()
    }
}

/// The CONNECT's flags byte: after the fixed header, its remaining length
/// (one byte for a packet this small), the protocol name and level.
fn connect_flags(packet: &[u8]) -> u8 {
    assert_eq!(packet[0], 0x10, "a CONNECT: {packet:?}");
    let name_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    packet[2 + 2 + name_len + 1]
}

/// An agent whose own broker wants a username and password, and a forged
/// roll-call from this host naming the fake broker, then one naming no
/// broker; a good roll-call after them on the same socket proves the agent
/// has read both. The fake broker hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_rollcall_gets_no_connection_and_no_password() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut fake = FakeBroker::start(&shutdown, &tracker).await;
    let port = free_udp_port();
    let mut config = host_config("victim", &broker, port);
    config.username = Some("agent".into());
    config.password = Some(PASSWORD.into());
    let a = agent(config, &shutdown).await;

    let sender = RollCallSocket::bind_sender(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).unwrap();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut forged = RollCall::new(1, "attacker", "/stat/data");
    forged.broker = Some(fake.url.clone());
    sender.send_to(&forged.to_bytes(), to).await.unwrap();
    let mut unnamed = RollCall::new(2, "attacker", "/stat/data");
    unnamed.broker = None;
    sender.send_to(&unnamed.to_bytes(), to).await.unwrap();

    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let mut opts = broadcast(port, 1);
    opts.broadcasts.clear();
    opts.targets = vec![Ipv4Addr::LOCALHOST.into()];
    let report = scanner.scan(3, &opts, |_| {}).await.unwrap();
    assert_eq!(functions(&report, "victim"), ["gpio", "system"]);
    assert!(!fake.connected(), "the fake broker was connected to");
    // The named one was refused as a relay; the unnamed one, from this
    // host, names port 1883 here, which is not the agent's broker either.
    assert_eq!(a.stats().snapshot().dropped_refused, 2);
    shutdown.cancel();
    a.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

/// A broker the user lists in `relay_brokers` is relayed to, and the relay
/// session carries no username and no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_relay_broker_gets_a_connect_without_credentials() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut fake = FakeBroker::start(&shutdown, &tracker).await;
    let port = free_udp_port();
    let mut config = host_config("relayer", &broker, port);
    config.username = Some("agent".into());
    config.password = Some(PASSWORD.into());
    config.relay_brokers = Some(vec![fake.url.clone().into()]);
    let a = agent(config, &shutdown).await;

    let sender = RollCallSocket::bind_sender(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).unwrap();
    let mut rc = RollCall::new(4, "hub", "/stat/data");
    rc.broker = Some(fake.url.clone());
    sender
        .send_to(
            &rc.to_bytes(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        )
        .await
        .unwrap();
    let connect = fake.first_connect().await;
    let flags = connect_flags(&connect);
    assert_eq!(
        flags & 0b1100_0000,
        0,
        "username or password flag set: {flags:#010b}"
    );
    let text = String::from_utf8_lossy(&connect);
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!text.contains("agent\0"), "{text}");
    shutdown.cancel();
    a.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

/// Finding 4: one retained message over 256 KiB on a topic the agent or the
/// hub subscribes to put them in a reconnect loop (99 `offline` in 10 s),
/// on rumqttd and on a stock Mosquitto. Now a message of 1 MiB or 10 MiB is
/// read, dropped and counted, and the connection stays up: the agent
/// connects once and answers, the hub maps hosts that come later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_retained_messages_are_dropped_and_nobody_disconnects() {
    let test = "big_retained_messages_are_dropped_and_nobody_disconnects";
    let Some(mosquitto) = Mosquitto::for_test(test) else {
        return;
    };
    // Without the defence the agent and the hub never settle: bounded.
    tokio::time::timeout(Duration::from_secs(60), big_retained_messages(mosquitto))
        .await
        .expect("the test ends within 60 s");
}

async fn big_retained_messages(mosquitto: Mosquitto) {
    let broker = mosquitto.url();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut config = SessionConfig::new(broker.clone(), format!("big-{}", unique()));
    config.max_packet_size = 11 * 1024 * 1024;
    let attacker = Session::start(config, shutdown.clone(), &tracker).unwrap();
    attacker.handle.wait_connected(WAIT).await.unwrap();
    for (topic, mib) in [
        ("/big/getapps", 1),
        ("/big/gpio/control", 10),
        ("/ghost/$state", 1),
        ("/ghost/pump/$description", 10),
    ] {
        attacker
            .handle
            .publish(topic, vec![b'x'; mib * 1024 * 1024], Qos::AtLeastOnce, true)
            .await
            .unwrap();
    }
    let nobody = free_udp_port();
    let (shared, stop, hub) = crate::hub::start_hub(
        &broker,
        crate::hub::scan_options(nobody, Duration::from_secs(60), None),
        Duration::from_secs(3600),
    );
    let a = agent(host_config("big", &broker, free_udp_port()), &shutdown).await;

    // The agent answers a query on the very topic that holds 1 MiB.
    let mut asker = crate::Asker::new(&broker, &shutdown, &tracker).await;
    asker.listen("/me/apps").await;
    asker.send("/big/getapps", r#"{"topic":"/me/apps"}"#).await;
    let (_, apps) = asker.next().await;
    assert_eq!(apps["apps"], serde_json::json!(["gpio", "system"]));
    let stats = a.session_stats();
    assert_eq!(stats.connects, 1, "the agent reconnected: {stats:?}");
    assert_eq!(stats.oversized, 2, "{stats:?}");

    // The hub maps the agent, and a host that comes after the big messages.
    crate::hub::until(&shared, "big online", |s| crate::hub::online(s, "big")).await;
    attacker
        .handle
        .publish_state("/late/$state", "online")
        .await
        .unwrap();
    crate::hub::until(&shared, "late online", |s| crate::hub::online(s, "late")).await;
    assert!(
        shared.metrics.errors("session_oversized") >= 2,
        "{}",
        shared.metrics.errors("session_oversized")
    );

    stop.cancel();
    hub.await.unwrap().unwrap();
    shutdown.cancel();
    a.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

/// A password file for an embedded broker, readable by its owner only.
fn broker_passwords(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("broker-passwords");
    std::fs::write(&path, format!("agent:{PASSWORD}\nhub:hub-password\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Finding 3, the agent's side: an agent whose embedded broker has a
/// password file logs in to it by itself, and answers a scanner that logs
/// in; a scanner that does not is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_its_embedded_broker_with_a_password_file() {
    let dir = rollcall_testsupport::tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let mut config = host_config("guarded", &rollcall_net::BrokerUrl::new("unused", 1), port);
    config.broker = None;
    config.embedded_broker = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.embedded_broker_password_file = Some(broker_passwords(dir.path()));
    let config = config.validate().unwrap();
    let a = rollcall_agent::start(config, shutdown.clone())
        .await
        .unwrap();
    a.wait_connected(WAIT).await.unwrap();
    let broker = a.broker_url().clone();

    let refused = Session::start(
        SessionConfig::new(broker.clone(), "no-login"),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    let error = refused
        .handle
        .wait_connected(Duration::from_secs(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("BadUserNamePassword"), "{error}");

    let login = rollcall_net::Login {
        credentials: Some(rollcall_net::Credentials::new("hub", "hub-password")),
        ..rollcall_net::Login::default()
    };
    let mut scanner = rollcall_hub::Scanner::connect(
        SessionConfig {
            login,
            ..SessionConfig::new(broker, format!("scanner-{}", unique()))
        },
        rollcall_proto::Topics::default(),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    scanner.session().wait_connected(WAIT).await.unwrap();
    let report = scanner.scan(1, &broadcast(port, 1), |_| {}).await.unwrap();
    assert_eq!(functions(&report, "guarded"), ["gpio", "system"]);
    shutdown.cancel();
    a.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

/// The hub's side: a hub whose embedded broker has a password file maps an
/// agent that logs in to it (the hub's own sessions log in by themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_runs_its_embedded_broker_with_a_password_file() {
    let dir = rollcall_testsupport::tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, rollcall_testsupport::free_tcp_port()));
    let port = free_udp_port();
    let shared = std::sync::Arc::new(rollcall_hub::HubShared::new(
        rollcall_proto::Topics::default(),
    ));
    let mut hub_config = rollcall_hub::HubConfig::new(
        rollcall_net::BrokerUrl::new("unused", 1),
        crate::hub::scan_options(port, Duration::from_millis(500), Some(1)),
        Duration::from_secs(1),
    );
    hub_config.broker = None;
    hub_config.embedded_broker = Some(rollcall_net::BrokerOptions {
        password_file: Some(broker_passwords(dir.path())),
        ..rollcall_net::BrokerOptions::new(addr)
    });
    let stop = CancellationToken::new();
    let hub = tokio::spawn(rollcall_hub::run_hub(
        hub_config,
        std::sync::Arc::clone(&shared),
        stop.clone(),
    ));
    let broker = rollcall_net::BrokerUrl::new("127.0.0.1", addr.port());
    let mut config = host_config("mapped", &broker, port);
    config.username = Some("agent".into());
    config.password = Some(PASSWORD.into());
    let config = config.validate().unwrap();
    // The hub's broker may not listen yet: the agent reconnects until it does.
    let a = rollcall_agent::start(config, shutdown.clone())
        .await
        .unwrap();
    a.wait_connected(WAIT).await.unwrap();
    crate::hub::until(&shared, "mapped online", |s| {
        crate::hub::online(s, "mapped")
    })
    .await;
    stop.cancel();
    hub.await.unwrap().unwrap();
    shutdown.cancel();
    a.join().await.unwrap();
}

/// Issue 11 item 2's knot: a scanner whose embedded broker wants a
/// password is reached by relays configured with a login of their own. The
/// relay broker listed with a login gets that login and nothing else of
/// ours; the one listed without a login gets a CONNECT without credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_login_goes_to_its_broker_and_no_other() {
    const RELAY_PASSWORD: &str = "relay-password-for-one-broker";
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut with_login = FakeBroker::start(&shutdown, &tracker).await;
    let mut without = FakeBroker::start(&shutdown, &tracker).await;
    let port = free_udp_port();
    let mut config = host_config("relayer", &broker, port);
    config.username = Some("agent".into());
    config.password = Some(PASSWORD.into());
    let table = format!(
        "relay_brokers = [\"{}\", {{ url = \"{}\", username = \"relay\", password = \"{RELAY_PASSWORD}\" }}]",
        without.url, with_login.url
    );
    config.relay_brokers = rollcall_agent::RawConfig::from_toml(&table)
        .unwrap()
        .relay_brokers;
    let a = agent(config, &shutdown).await;

    let sender = RollCallSocket::bind_sender(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).unwrap();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for (id, fake) in [(5, &with_login), (6, &without)] {
        let mut rc = RollCall::new(id, "hub", "/stat/data");
        rc.broker = Some(fake.url.clone());
        sender.send_to(&rc.to_bytes(), to).await.unwrap();
    }

    let connect = with_login.first_connect().await;
    let flags = connect_flags(&connect);
    assert_eq!(flags & 0b1100_0000, 0b1100_0000, "{flags:#010b}");
    let text = String::from_utf8_lossy(&connect);
    assert!(
        text.contains("relay") && text.contains(RELAY_PASSWORD),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");

    let connect = without.first_connect().await;
    let flags = connect_flags(&connect);
    assert_eq!(flags & 0b1100_0000, 0, "{flags:#010b}");
    let text = String::from_utf8_lossy(&connect);
    assert!(
        !text.contains(RELAY_PASSWORD) && !text.contains(PASSWORD),
        "{text}"
    );
    shutdown.cancel();
    a.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

/// The knot end to end: an agent with a broker of its own relays its
/// answers to a scanner whose embedded broker wants a password, logging in
/// there with the login listed for that broker. (With a wrong password in
/// the list, the scanner hears nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_relayed_to_a_scanners_broker_that_wants_a_password() {
    let dir = rollcall_testsupport::tempfile::tempdir().unwrap();
    let scanners = rollcall_net::EmbeddedBroker::start(rollcall_net::BrokerOptions {
        password_file: Some(broker_passwords(dir.path())),
        ..rollcall_net::BrokerOptions::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    })
    .unwrap();
    let hub_url = scanners.url();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let mut config = host_config("far", &rollcall_net::BrokerUrl::new("unused", 1), port);
    config.broker = None;
    config.embedded_broker = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let table = format!(
        "relay_brokers = [{{ url = \"{hub_url}\", username = \"hub\", password = \"hub-password\" }}]"
    );
    config.relay_brokers = rollcall_agent::RawConfig::from_toml(&table)
        .unwrap()
        .relay_brokers;
    let a = rollcall_agent::start(config.validate().unwrap(), shutdown.clone())
        .await
        .unwrap();
    a.wait_connected(WAIT).await.unwrap();

    let mut scanner = rollcall_hub::Scanner::connect(
        SessionConfig {
            login: scanners.login(),
            ..SessionConfig::new(hub_url, format!("scanner-{}", unique()))
        },
        rollcall_proto::Topics::default(),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    scanner.session().wait_connected(WAIT).await.unwrap();
    let report = scanner.scan(1, &broadcast(port, 1), |_| {}).await.unwrap();
    assert_eq!(functions(&report, "far"), ["gpio", "system"]);
    shutdown.cancel();
    a.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

/// Issue 11 item 7: a stale last will. An agent restarted (session N) and
/// said `online N`; then the broker notices that the previous run's
/// connection died and publishes its will, `offline N-1`, retained, over the
/// new `online`. (Published here by hand: that is all a stale will is, and
/// all an attacker who can publish on the broker can forge.) The hub must
/// not take the host for offline, not even for a moment, and the agent must
/// put `online N` back for whoever reads the retained state later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_last_will_does_not_take_a_restarted_agent_offline() {
    tokio::time::timeout(Duration::from_secs(60), stale_last_will())
        .await
        .expect("the test ends within 60 s");
}

async fn stale_last_will() {
    use rollcall_hub::MapEvent;
    use rollcall_proto::HostState;

    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let a = agent(
        host_config("restarted", &broker, free_udp_port()),
        &shutdown,
    )
    .await;
    let session = a.session_number();
    let nobody = free_udp_port();
    let (shared, stop, hub) = crate::hub::start_hub(
        &broker,
        crate::hub::scan_options(nobody, Duration::from_secs(60), None),
        Duration::from_secs(3600),
    );
    crate::hub::until(&shared, "restarted online", |s| {
        crate::hub::online(s, "restarted")
    })
    .await;
    let mut events = shared.changes.subscribe();
    let mut watcher = Session::start(
        SessionConfig::new(broker.clone(), format!("watcher-{}", unique())),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    watcher.handle.subscribe("/restarted/$state").await.unwrap();
    let online = HostState::online(session).to_payload();
    let next_state = async |watcher: &mut Session| {
        let msg = tokio::time::timeout(WAIT, watcher.incoming.recv())
            .await
            .expect("a $state within the wait")
            .unwrap();
        msg.payload.to_vec()
    };
    assert_eq!(next_state(&mut watcher).await, online, "retained");

    let will = Session::start(
        SessionConfig::new(broker.clone(), format!("stale-{}", unique())),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    will.handle.wait_connected(WAIT).await.unwrap();
    let stale = HostState::offline(session - 1).to_payload();
    will.handle
        .publish("/restarted/$state", stale.clone(), Qos::AtLeastOnce, true)
        .await
        .unwrap();
    // Then another host, from the same connection: once the hub has it, it
    // has taken the stale will too (one subscription, one connection, in
    // order).
    will.handle
        .publish("/marker/$state", "online", Qos::AtLeastOnce, true)
        .await
        .unwrap();

    // The agent saw the will on its own state and said `online N` again.
    assert_eq!(next_state(&mut watcher).await, stale);
    assert_eq!(next_state(&mut watcher).await, online, "online again");

    // The hub: not one `offline` for the host up to the marker, and online.
    loop {
        let event = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("the marker host within the wait")
            .unwrap();
        assert_ne!(
            event,
            MapEvent::HostOffline {
                host: "restarted".into()
            },
            "the hub took a stale will for the host going offline"
        );
        if matches!(&event, MapEvent::HostAppeared { host, .. } if host == "marker") {
            break;
        }
    }
    assert!(crate::hub::online(&shared.snapshot(), "restarted"));

    // Whoever connects now reads `online N` retained.
    let mut late = Session::start(
        SessionConfig::new(broker.clone(), format!("late-{}", unique())),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    late.handle.subscribe("/restarted/$state").await.unwrap();
    assert_eq!(
        next_state(&mut late).await,
        online,
        "retained for a late reader"
    );

    stop.cancel();
    hub.await.unwrap().unwrap();
    shutdown.cancel();
    a.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

/// Finding 7: the map bounded hosts, not bytes. 20,000 made-up hosts (each
/// a retained `$state` and `$description`, as an attacker publishes them)
/// took a hub to 460 MB, and a map full of them refused a real host. Now
/// the map stays within its byte budget by evicting hosts never seen
/// answering a roll-call: the host that answered before the flood stays,
/// and one started after it appears. (The made-up descriptions list inputs
/// only: outputs would make the hub subscribe to each, which rumqttd
/// matches against every retained message, minutes in a debug build; the
/// release measurement in BENCHMARKS.md has them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_made_up_hosts_do_not_push_out_real_ones() {
    use rollcall_hub::{ClusterMap, HubConfig, HubShared, MapConfig, run_hub};
    use std::sync::Arc;

    const FAKES: usize = 20_000;
    const BUDGET: usize = 2 << 20;
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let port = free_udp_port();
    let first = agent(host_config("first", &broker, port), &shutdown).await;
    let map = ClusterMap::with_config(MapConfig {
        max_bytes: BUDGET,
        ..MapConfig::default()
    });
    let shared = Arc::new(HubShared::with_map(rollcall_proto::Topics::default(), map));
    let config = HubConfig::new(
        broker.clone(),
        crate::hub::scan_options(port, Duration::from_millis(500), None),
        Duration::from_secs(1),
    );
    let stop = CancellationToken::new();
    let hub = tokio::spawn(run_hub(config, Arc::clone(&shared), stop.clone()));
    let proven = |host: &'static str| {
        move |map: &ClusterMap| {
            map.host(host)
                .is_some_and(|h| h.proven && h.status == rollcall_hub::HostStatus::Online)
        }
    };
    until_map(&shared, WAIT, "first answers", proven("first")).await;

    let attacker = Session::start(
        SessionConfig::new(broker.clone(), format!("attacker-{}", unique())),
        shutdown.clone(),
        &tracker,
    )
    .unwrap();
    attacker.handle.wait_connected(WAIT).await.unwrap();
    for i in 0..FAKES {
        let host = format!("fake{i:05}");
        let inputs: Vec<serde_json::Value> = (0..8)
            .map(|n| {
                serde_json::json!({"name": format!("in{n}"), "type": "float", "unit": "V",
                    "topic": format!("/{host}/svc/set/in{n}"),
                    "doc": "an input the attacker made up, with a long doc line"})
            })
            .collect();
        let d = serde_json::json!({"function": "svc", "interfaces": {"inputs": inputs}});
        let h = &attacker.handle;
        h.publish(&format!("/{host}/$state"), "online", Qos::AtLeastOnce, true)
            .await
            .unwrap();
        h.publish(
            &format!("/{host}/svc/$description"),
            d.to_string(),
            Qos::AtLeastOnce,
            true,
        )
        .await
        .unwrap();
    }
    // The last made-up host is the newest: in the map once the flood is.
    until_map(
        &shared,
        Duration::from_secs(120),
        "the flood arrives",
        |map| map.host("fake19999").is_some(),
    )
    .await;

    // A real host started after the flood appears, by answering. (Not
    // `agent`, which waits for the retained `online`: the flood has filled
    // the embedded broker's bounded retained store, which keeps no more.)
    let late = connected_agent(host_config("late", &broker, port), &shutdown).await;
    // (Every new subscription is matched against the flood's 40,000
    // retained messages, so this wait is longer than `WAIT`.)
    until_map(
        &shared,
        Duration::from_secs(60),
        "late answers",
        proven("late"),
    )
    .await;
    {
        let map = shared.lock_map();
        assert!(map.bytes() <= BUDGET, "{} bytes", map.bytes());
        let counts = map.counts();
        assert!(counts.evicted > 0);
        let hosts = map.hosts().count();
        assert!(hosts < FAKES / 10, "{hosts} hosts kept");
        assert!(map.host("first").is_some_and(|h| h.proven));
        assert!(map.host("first").unwrap().services.contains_key("system"));
    }
    let metrics = shared.render_prometheus();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rollcall_hub_evicted_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    stop.cancel();
    hub.await.unwrap().unwrap();
    shutdown.cancel();
    first.join().await.unwrap();
    late.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

/// Waits until `ok` holds for the hub's map, looking again on every change
/// the map reports (or a tenth of a second, for a lagged channel), or fails
/// after `within`.
async fn until_map(
    shared: &rollcall_hub::HubShared,
    within: Duration,
    what: &str,
    ok: impl Fn(&rollcall_hub::ClusterMap) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    let mut changes = shared.changes.subscribe();
    loop {
        if ok(&shared.lock_map()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        let soon = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
        let _ = tokio::time::timeout_at(soon, changes.recv()).await;
    }
}
