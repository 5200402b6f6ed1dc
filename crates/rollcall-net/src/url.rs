//! Broker addresses as users write them: `mqtt://host:port`, `mqtts://host`,
//! `tcp://host`, or a bare `host:port`; and lists of them, the nodes of one
//! clustered broker tried in turn.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::NetError;

/// The IANA port of plain MQTT.
pub const MQTT_PORT: u16 = 1883;
/// The IANA port of MQTT over TLS.
pub const MQTTS_PORT: u16 = 8883;

/// Where an MQTT broker listens, and whether to speak TLS to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerUrl {
    /// Host name or IP address, without brackets for IPv6.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `true` for `mqtts://`.
    pub tls: bool,
}

impl BrokerUrl {
    /// A plain (non-TLS) broker address.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: false,
        }
    }

    /// Resolves the host with the system resolver (this may block on DNS),
    /// preferring the first IPv4 address because roll-call is IPv4 broadcast.
    pub fn resolve(&self) -> Result<SocketAddr, NetError> {
        let resolve_error = |source| NetError::Resolve {
            host: self.host.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(resolve_error)?
            .collect();
        addrs
            .iter()
            .find(|addr| addr.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| resolve_error(std::io::ErrorKind::NotFound.into()))
    }

    /// Whether the broker is on this host: `localhost`, a loopback address,
    /// or a name that resolves to one. A name that does not resolve is not
    /// loopback.
    pub fn is_loopback(&self) -> bool {
        if self.host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.resolve().is_ok_and(|addr| addr.ip().is_loopback()),
        }
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for BrokerUrl {
    type Err = NetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| NetError::InvalidUrl {
            url: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let (scheme, rest) = trimmed.split_once("://").unwrap_or(("mqtt", trimmed));
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => (false, MQTT_PORT),
            "mqtts" | "ssl" | "tls" => (true, MQTTS_PORT),
            _ => return Err(invalid("scheme must be mqtt, mqtts or tcp")),
        };
        // The `url` crate does the fiddly part (IPv6 brackets, port range);
        // a fixed scheme keeps it from guessing about `host:port`.
        let parsed = url::Url::parse(&format!("mqtt://{rest}"))
            .map_err(|_| invalid("not a host with an optional port"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials belong in the configuration, not the URL",
            ));
        }
        if !matches!(parsed.path(), "" | "/")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(invalid("a broker URL has no path, query or fragment"));
        }
        let host = match parsed.host() {
            // Host names are case-insensitive; lower case makes equal URLs equal.
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid("missing host")),
        };
        Ok(Self {
            host,
            port: parsed.port().unwrap_or(default_port),
            tls,
        })
    }
}

/// The brokers one session may use, tried in turn: the nodes of one
/// clustered broker (NATS with MQTT, for instance). Never empty, no URL
/// twice, all plain MQTT or all TLS (one login, with one set of TLS files,
/// goes to each). The session's login goes to these brokers only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerList(Vec<BrokerUrl>);

impl BrokerList {
    /// Checks a list: at least one URL, none twice.
    pub fn new(urls: Vec<BrokerUrl>) -> Result<Self, NetError> {
        let list_error = |reason| NetError::InvalidUrl {
            url: urls
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            reason,
        };
        if urls.is_empty() {
            return Err(list_error("a broker list names at least one broker"));
        }
        for (i, url) in urls.iter().enumerate() {
            if urls[..i].contains(url) {
                return Err(list_error("a broker list names each broker once"));
            }
            if url.tls != urls[0].tls {
                return Err(list_error(
                    "a broker list mixes mqtt:// and mqtts://; the nodes of one cluster speak alike",
                ));
            }
        }
        Ok(Self(urls))
    }

    /// The broker tried first.
    pub fn first(&self) -> &BrokerUrl {
        &self.0[0]
    }

    /// The brokers tried after the first, in order.
    pub fn alternates(&self) -> &[BrokerUrl] {
        &self.0[1..]
    }

    /// Every broker, in order.
    pub fn iter(&self) -> impl Iterator<Item = &BrokerUrl> {
        self.0.iter()
    }

    /// Whether `url` is one of the brokers.
    pub fn contains(&self, url: &BrokerUrl) -> bool {
        self.0.contains(url)
    }
}

impl From<BrokerUrl> for BrokerList {
    fn from(url: BrokerUrl) -> Self {
        Self(vec![url])
    }
}

impl fmt::Display for BrokerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, url) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{url}")?;
        }
        Ok(())
    }
}

/// A comma-separated list, as `--broker a,b,c` gives it.
impl FromStr for BrokerList {
    type Err = NetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let urls = text
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<BrokerUrl>, _>>()?;
        Self::new(urls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BrokerUrl {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn parses_every_accepted_form() {
        assert_eq!(parse("mqtt://broker:1884"), BrokerUrl::new("broker", 1884));
        assert_eq!(parse("mqtt://broker"), BrokerUrl::new("broker", 1883));
        assert_eq!(
            parse("tcp://10.0.0.2:2000"),
            BrokerUrl::new("10.0.0.2", 2000)
        );
        assert_eq!(parse("pi.local:1999"), BrokerUrl::new("pi.local", 1999));
        assert_eq!(parse("pi.local"), BrokerUrl::new("pi.local", 1883));
        assert_eq!(parse(" MQTT://Broker/ "), BrokerUrl::new("broker", 1883));
        assert_eq!(parse("mqtt://[::1]:1884"), BrokerUrl::new("::1", 1884));
        let tls = parse("mqtts://secure.example");
        assert_eq!(
            (tls.host.as_str(), tls.port, tls.tls),
            ("secure.example", 8883, true)
        );
        assert_eq!(parse("mqtts://secure.example:9999").port, 9999);
    }

    #[test]
    fn rejects_what_is_not_a_broker_address() {
        for bad in [
            "",
            "mqtt://",
            "http://host",
            "mqtt://host:99999",
            "mqtt://host:port",
            "mqtt://user:pw@host",
            "mqtt://host/path",
            "mqtt://host?x=1",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "mqtt://broker:1883",
            "mqtts://broker:8883",
            "mqtt://[::1]:1884",
        ] {
            assert_eq!(parse(text).to_string(), text);
            assert_eq!(parse(&parse(text).to_string()), parse(text));
        }
        assert_eq!(parse("host:7").to_string(), "mqtt://host:7");
    }

    #[test]
    fn broker_lists_are_non_empty_and_name_each_broker_once() {
        let list: BrokerList = "mqtt://a:1, b:2,mqtt://c".parse().unwrap();
        assert_eq!(list.first(), &parse("a:1"));
        assert_eq!(list.alternates(), [parse("b:2"), parse("mqtt://c")]);
        assert_eq!(list.to_string(), "mqtt://a:1,mqtt://b:2,mqtt://c:1883");
        assert_eq!(list.to_string().parse::<BrokerList>().unwrap(), list);
        assert!(list.contains(&parse("b:2")) && !list.contains(&parse("b:3")));
        assert_eq!(BrokerList::from(parse("a")).iter().count(), 1);
        // The same broker spelt two ways is still the same broker.
        for bad in ["", "a,", "a:1,mqtt://a:1", "a,b,http://c", "mqtts://a,b"] {
            assert!(bad.parse::<BrokerList>().is_err(), "{bad:?} was accepted");
        }
        assert!(BrokerList::new(Vec::new()).is_err());
    }

    #[test]
    fn resolves_and_recognises_loopback() {
        let local = parse("127.0.0.1:1883");
        assert_eq!(local.resolve().unwrap(), "127.0.0.1:1883".parse().unwrap());
        assert!(local.is_loopback());
        assert!(parse("localhost").is_loopback());
        assert!(parse("[::1]:1").is_loopback());
        assert!(!parse("192.0.2.1").is_loopback());
        assert!(!parse("no-such-host.invalid").is_loopback());
    }
}
