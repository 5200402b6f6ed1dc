//! Attacks on the embedded broker from the network, each reproduced and its
//! defence asserted (issue 11's findings).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rollcall_net::{EmbeddedBroker, Session, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(5);

/// An MQTT 3.1.1 CONNECT with `client_id`, clean session, 60 s keep-alive.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b0000_0010, 0, 60];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Sends a CONNECT and reads what comes back (a CONNACK, or nothing when
/// the broker closes the connection) within [`WAIT`].
async fn raw_connect(addr: SocketAddr, client_id: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&connect_packet(client_id)).await.unwrap();
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
