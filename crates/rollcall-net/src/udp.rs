//! Roll-call datagrams: the listening and sending UDP sockets, and the
//! address questions around them (which local address reaches a peer,
//! which broadcast addresses this host has).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::NetError;

/// A UDP socket for roll-call datagrams, broadcast enabled.
#[derive(Debug)]
pub struct RollCallSocket {
    socket: UdpSocket,
}

impl RollCallSocket {
    /// Binds a listener on `addr` (normally `0.0.0.0:46464`). SO_REUSEADDR
    /// is set before binding so that several agents on one machine share the
    /// port and each receives every broadcast.
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind_listener(addr: SocketAddr) -> Result<Self, NetError> {
        Self::bind(addr, true)
    }

    /// Binds a sender on `local` (normally `0.0.0.0:0`).
    ///
    /// Must be called inside a tokio runtime.
    pub fn bind_sender(local: SocketAddr) -> Result<Self, NetError> {
        Self::bind(local, false)
    }

    fn bind(addr: SocketAddr, reuse: bool) -> Result<Self, NetError> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_broadcast(addr.is_ipv4())?;
        // On Linux, SO_REUSEADDR on UDP delivers each broadcast to every
        // socket bound to the port; SO_REUSEPORT would spread them instead.
        socket.set_reuse_address(reuse)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket = UdpSocket::from_std(StdUdpSocket::from(socket))?;
        Ok(Self { socket })
    }

    /// Receives one datagram; bytes beyond `buf` are discarded.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), NetError> {
        Ok(self.socket.recv_from(buf).await?)
    }

    /// Sends one datagram.
    pub async fn send_to(&self, bytes: &[u8], dest: SocketAddr) -> Result<(), NetError> {
        self.socket.send_to(bytes, dest).await?;
        Ok(())
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        Ok(self.socket.local_addr()?)
    }
}

/// The local address this host uses to reach `peer`, as the routing table
/// decides. Connecting a UDP socket sends nothing.
pub fn local_addr_towards(peer: IpAddr) -> Result<IpAddr, NetError> {
    let unspecified: IpAddr = match peer {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = StdUdpSocket::bind((unspecified, 0))?;
    // The port is irrelevant: only the route lookup matters.
    socket.connect((peer, 9))?;
    Ok(socket.local_addr()?.ip())
}

/// The broadcast addresses of every non-loopback IPv4 interface address.
///
/// if-addrs does not report whether an interface is up; an interface that
/// is down but still has an address is listed too.
pub fn interface_broadcasts() -> Result<Vec<Ipv4Addr>, NetError> {
    let mut broadcasts: Vec<Ipv4Addr> = if_addrs::get_if_addrs()?
        .into_iter()
        .filter(|interface| !interface.is_loopback())
        .filter_map(|interface| match interface.addr {
            if_addrs::IfAddr::V4(v4) => v4.broadcast,
            if_addrs::IfAddr::V6(_) => None,
        })
        .collect();
    broadcasts.sort_unstable();
    broadcasts.dedup();
    Ok(broadcasts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_reached_from_loopback() {
        let local = local_addr_towards(Ipv4Addr::LOCALHOST.into()).unwrap();
        assert!(local.is_loopback());
    }

    #[test]
    fn interface_broadcasts_exclude_loopback() {
        let broadcasts = interface_broadcasts().unwrap();
        assert!(broadcasts.iter().all(|ip| !ip.is_loopback()));
    }
}
