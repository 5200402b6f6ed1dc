//! Addresses for tests on one machine: free loopback ports (asked of the
//! kernel, never fixed), the loopback broadcast address, rollcall's embedded
//! broker on a free port, and names no other test run uses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

use rollcall_net::{BrokerUrl, EmbeddedBroker};

/// Where test roll-calls are broadcast: loopback's, never a real interface's.
pub const LOOPBACK_BROADCAST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 255, 255, 255));

/// A UDP port nobody on this machine is using now. Another process could
/// take it before the test binds it; the test would then fail visibly.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.local_addr())
        .expect("binding a UDP socket to port 0")
        .port()
}

/// A TCP port nobody on loopback is using now (as [`free_udp_port`]).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("binding a TCP socket to port 0")
        .port()
}

/// rollcall's embedded broker on a free loopback port; it runs until the
/// test process ends.
pub fn embedded_broker() -> BrokerUrl {
    EmbeddedBroker::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("starting the embedded broker")
        .url()
}

/// A number for names (client ids, state folders) that concurrent tests and
/// test processes do not share: the process id, then a counter.
pub fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique(), unique());
    }
}
