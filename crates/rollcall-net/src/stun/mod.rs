//! External-address discovery with STUN: the client that asks a server how
//! it sees us, and a tiny responder for tests and the demo. The bytes live
//! in [`message`].

pub mod message;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

pub use message::{TransactionId, decode_binding_response};

use crate::NetError;

/// How many times a request is sent before giving up.
const ATTEMPTS: u32 = 3;
/// Larger than any Binding response we could care about.
const MAX_MESSAGE: usize = 1500;

/// Asks the STUN server at `server` for this host's address as the server
/// sees it. The request is sent up to three times within `timeout`.
pub async fn discover_external_addr(
    server: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, NetError> {
    let unspecified: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((unspecified, 0)).await?;
    let txid = TransactionId::random();
    let request = message::encode_binding_request(txid);
    let per_attempt = timeout / ATTEMPTS;
    let mut buf = [0; MAX_MESSAGE];

    for _ in 0..ATTEMPTS {
        socket.send_to(&request, server).await?;
        let deadline = Instant::now() + per_attempt;
        // Stray or forged datagrams must not end the wait for the real one.
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let (len, from) = received?;
            if from != server {
                continue;
            }
            match decode_binding_response(&buf[..len], txid) {
                Ok(mapped) => return Ok(mapped),
                Err(error) => debug!(%server, %error, "ignoring STUN datagram"),
            }
        }
    }
    Err(NetError::Timeout(timeout, "a STUN Binding response"))
}

/// A minimal STUN server answering Binding requests, for tests and the
/// demo. It runs until the shutdown token is cancelled.
#[derive(Debug, Clone)]
pub struct StunResponder {
    /// The address it answers on.
    pub addr: SocketAddr,
}

impl StunResponder {
    /// Answers every Binding request with the request's source address.
    ///
    /// Must be called inside a tokio runtime.
    pub fn start(
        addr: SocketAddr,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<StunResponder, NetError> {
        Self::start_with_mapped(addr, None, shutdown, tracker)
    }

    /// Answers every Binding request with `mapped` when given (to play a
    /// server behind NAT), else with the request's source address.
    ///
    /// Must be called inside a tokio runtime.
    pub fn start_with_mapped(
        addr: SocketAddr,
        mapped: Option<SocketAddr>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<StunResponder, NetError> {
        let socket = StdUdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        let addr = socket.local_addr()?;
        tracker.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = respond_forever(&socket, mapped) => {}
            }
        });
        Ok(StunResponder { addr })
    }
}

async fn respond_forever(socket: &UdpSocket, mapped: Option<SocketAddr>) {
    let mut buf = [0; MAX_MESSAGE];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors from earlier replies surface here; keep serving.
            Err(error) => {
                debug!(%error, "STUN responder receive error");
                continue;
            }
        };
        let Some(txid) = message::decode_binding_request(&buf[..len]) else {
            continue;
        };
        let response = message::encode_binding_response(txid, mapped.unwrap_or(from));
        if let Err(error) = socket.send_to(&response, from).await {
            debug!(%error, %from, "STUN responder send error");
        }
    }
}
