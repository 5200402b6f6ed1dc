//! Attacks from the network, each reproduced against a running agent and
//! its defence asserted (issue 11's findings; docs/protocol.md section 8).
//! Finding 1: a forged roll-call naming the attacker's broker took the
//! agent's MQTT username and password there.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rollcall_net::RollCallSocket;
use rollcall_proto::RollCall;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::*;

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
    config.relay_brokers = Some(vec![fake.url.clone()]);
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
