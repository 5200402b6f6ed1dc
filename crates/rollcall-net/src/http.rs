//! The TCP listener the hub's dashboard is served on. Only this crate opens
//! sockets; the hub's web module gets the listener and serves HTTP on it.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::NetError;

/// Listens for HTTP connections on `addr`. Port 0 takes a free port: read
/// the one chosen with `TcpListener::local_addr`.
pub async fn http_listener(addr: SocketAddr) -> Result<TcpListener, NetError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NetError::Listen { addr, source })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[tokio::test]
    async fn port_zero_binds_a_free_port_and_a_taken_port_is_an_error_naming_it() {
        let first = http_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        let addr = first.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let err = http_listener(addr).await.unwrap_err();
        assert!(matches!(err, NetError::Listen { addr: a, .. } if a == addr));
        assert_eq!(err.to_string(), format!("cannot listen on {addr}"));
        // The reason is the source, for `{:#}` and error reporters.
        let source = std::error::Error::source(&err).unwrap();
        assert!(source.to_string().contains("in use"), "{source}");
    }
}
