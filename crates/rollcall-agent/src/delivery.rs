//! Where a roll-call's answers go: straight to this host's broker when it is
//! the requester's (one shared broker), or relayed to the requester's broker
//! (a broker on every host). docs/protocol.md section 5.

use std::net::{IpAddr, SocketAddr};

use std::collections::HashMap;

use rollcall_net::{BrokerUrl, Credentials, SessionConfig};
use rollcall_proto::RollCall;

/// The port a requester's broker is assumed to listen on when the roll-call names none.
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// The requester's broker: the roll-call's `broker` field, or port 1883 at its
/// source address. `None` for a roll-call that came over MQTT without a
/// `broker` field: its requester is on our broker.
///
/// A loopback `broker` is ignored unless the roll-call came from this host's
/// loopback: from another host, or over MQTT where the sender is unknown, it
/// names the requester's own loopback, which we cannot reach.
pub fn requester_broker(rc: &RollCall, source: Option<IpAddr>) -> Option<BrokerUrl> {
    let named = rc
        .broker
        .as_deref()
        .and_then(|b| b.parse::<BrokerUrl>().ok())
        .filter(|b| !b.is_loopback() || source.is_some_and(|s| s.is_loopback()));
    named.or_else(|| source.map(|ip| BrokerUrl::new(ip.to_string(), DEFAULT_MQTT_PORT)))
}

/// Whether `requester` is the broker this agent is connected to at `own`.
/// `is_local` tells whether an address is one of this host's: a broker on
/// this host is reached on loopback and on each of the host's addresses
/// alike, and relaying from a broker to itself would loop.
pub fn is_own_broker(
    requester: SocketAddr,
    own: SocketAddr,
    is_local: impl Fn(IpAddr) -> bool,
) -> bool {
    requester.port() == own.port()
        && (requester.ip() == own.ip() || (is_local(requester.ip()) && is_local(own.ip())))
}

/// The session to a requester's broker, from our own session's `template`:
/// its keep-alive and CA file, and nothing that identifies us. None of our
/// own credentials (username, password, client certificate: they go to our
/// own broker only, whoever names another) and no last will (the relay says
/// nothing about our state). The one login it may carry is the one
/// configured for this very URL in `relay_brokers` (`logins`).
pub fn relay_session(
    template: &SessionConfig,
    broker: BrokerUrl,
    client_id: String,
    logins: &HashMap<BrokerUrl, Credentials>,
) -> SessionConfig {
    let mut config = SessionConfig::new(broker, client_id);
    config.keep_alive = template.keep_alive;
    config.login = template.login.for_another_broker();
    config.login.credentials = logins.get(&config.broker).cloned();
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(broker: Option<&str>) -> RollCall {
        let mut rc = RollCall::new(1, "hub", "/stat/data");
        rc.broker = broker.map(str::to_owned);
        rc
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_relay_session_carries_no_credential_and_no_will() {
        let mut ours = SessionConfig::new(BrokerUrl::new("127.0.0.1", 1883), "rollcall-agent-h1");
        ours.login.credentials = Some(rollcall_net::Credentials::new("agent", "secret"));
        ours.login.tls.client_cert = Some("/etc/rollcall/client.pem".into());
        ours.login.tls.client_key = Some("/etc/rollcall/client.key".into());
        ours.last_will = Some(rollcall_net::Will {
            topic: "/h1/$state".into(),
            payload: b"offline".to_vec(),
            retain: true,
        });
        ours.keep_alive = std::time::Duration::from_secs(9);
        let relay = relay_session(
            &ours,
            BrokerUrl::new("198.18.0.9", 1883),
            "r".into(),
            &HashMap::new(),
        );
        assert_eq!(relay.login.credentials, None);
        assert_eq!(relay.login.tls.client_cert, None);
        assert!(relay.last_will.is_none());
        assert_eq!(relay.keep_alive, ours.keep_alive);
        assert_eq!(relay.broker, BrokerUrl::new("198.18.0.9", 1883));
    }

    /// A relay broker configured with a login gets that login, and only
    /// that URL does: not another port or name of the same host, and never
    /// our own credentials.
    #[test]
    fn a_relay_login_goes_to_its_own_url_only() {
        let mut ours = SessionConfig::new(BrokerUrl::new("127.0.0.1", 1883), "rollcall-agent-h1");
        ours.login.credentials = Some(Credentials::new("agent", "own-secret"));
        let listed = BrokerUrl::new("198.18.0.9", 1883);
        let logins = HashMap::from([(listed.clone(), Credentials::new("relay", "relay-secret"))]);
        let relay = relay_session(&ours, listed.clone(), "r".into(), &logins);
        assert_eq!(
            relay.login.credentials,
            Some(Credentials::new("relay", "relay-secret"))
        );
        for other in [
            BrokerUrl::new("198.18.0.9", 1884),
            BrokerUrl::new("hub.invalid", 1883),
            BrokerUrl {
                tls: true,
                ..listed.clone()
            },
        ] {
            let relay = relay_session(&ours, other.clone(), "r".into(), &logins);
            assert_eq!(relay.login.credentials, None, "{other}");
        }
    }

    #[test]
    fn the_broker_field_wins_over_the_source_address() {
        let b = requester_broker(&rc(Some("mqtt://198.18.0.1:1884")), Some(ip("198.18.0.9")));
        assert_eq!(b, Some(BrokerUrl::new("198.18.0.1", 1884)));
        let b = requester_broker(&rc(None), Some(ip("198.18.0.9")));
        assert_eq!(b, Some(BrokerUrl::new("198.18.0.9", 1883)));
        assert_eq!(requester_broker(&rc(None), None), None);
    }

    #[test]
    fn a_loopback_broker_from_another_host_is_ignored() {
        let b = requester_broker(&rc(Some("mqtt://127.0.0.1:2000")), Some(ip("198.18.0.9")));
        assert_eq!(b, Some(BrokerUrl::new("198.18.0.9", 1883)));
        let b = requester_broker(&rc(Some("mqtt://127.0.0.1:2000")), Some(ip("127.0.0.1")));
        assert_eq!(b, Some(BrokerUrl::new("127.0.0.1", 2000)));
    }

    #[test]
    fn own_broker_recognised_through_any_of_this_hosts_addresses() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let local = |a: IpAddr| a.is_loopback() || a.is_unspecified() || a == ip("198.18.0.5");
        assert!(is_own_broker(
            sa("127.0.0.1:1883"),
            sa("0.0.0.0:1883"),
            local
        ));
        assert!(is_own_broker(
            sa("198.18.0.5:1883"),
            sa("0.0.0.0:1883"),
            local
        ));
        // The loop a relay must never make: our broker known as 127.0.0.1,
        // named by a roll-call from the LAN by this host's address.
        assert!(is_own_broker(
            sa("198.18.0.5:1883"),
            sa("127.0.0.1:1883"),
            local
        ));
        assert!(!is_own_broker(
            sa("198.18.0.1:1883"),
            sa("0.0.0.0:1883"),
            local
        ));
        assert!(!is_own_broker(
            sa("127.0.0.1:1884"),
            sa("127.0.0.1:1883"),
            local
        ));
        assert!(is_own_broker(
            sa("198.18.0.1:1883"),
            sa("198.18.0.1:1883"),
            local
        ));
    }

    #[test]
    fn a_loopback_broker_over_mqtt_is_ignored() {
        assert_eq!(
            requester_broker(&rc(Some("mqtt://127.0.0.1:2000")), None),
            None
        );
        let b = requester_broker(&rc(Some("mqtt://198.18.0.1:2000")), None);
        assert_eq!(b, Some(BrokerUrl::new("198.18.0.1", 2000)));
    }
}
