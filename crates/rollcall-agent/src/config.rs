//! The agent's configuration: read raw from TOML (unknown keys rejected),
//! overridden by command-line flags, then validated once into [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_net::{
    BrokerList, BrokerOptions, BrokerUrl, Credentials, Login, LoginSettings, Secret, ServerTls,
    TlsFiles,
};
use rollcall_proto::Topics;
use rollcall_proto::topic::check_name;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rollcall_services::announce::AnnounceConfig;
use serde::Deserialize;

use crate::AgentError;
use crate::registry::{self, Common, Settings};

/// The configuration file as written, every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This host's name in topics and answers.
    pub hostname: Option<String>,
    /// The MQTT broker the agent and its services use.
    pub broker: Option<String>,
    /// Or the nodes of one clustered broker, tried in turn.
    pub brokers: Option<Vec<String>>,
    /// Run an embedded broker on this address and use it.
    pub embedded_broker: Option<SocketAddr>,
    /// Who may log in to the embedded broker (`user:password` lines);
    /// required when it listens off loopback.
    pub embedded_broker_password_file: Option<PathBuf>,
    /// The embedded broker speaks TLS with this certificate (PEM)...
    pub embedded_broker_tls_cert: Option<PathBuf>,
    /// ...and this private key (PEM).
    pub embedded_broker_tls_key: Option<PathBuf>,
    /// MQTT username.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
    /// A file whose first line is the MQTT password.
    pub password_file: Option<PathBuf>,
    /// CA file for `mqtts://` brokers.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for `mqtts://` brokers that require one.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
    /// Topic root (`""` gives `/udp/report`).
    pub root: Option<String>,
    /// UDP port roll-calls arrive on.
    pub udp_port: Option<u16>,
    /// Address the roll-call listener binds.
    pub udp_bind: Option<IpAddr>,
    /// Where what must survive a restart is kept.
    pub state_dir: Option<PathBuf>,
    /// Simulated hardware for every service.
    pub sim: Option<bool>,
    /// The host's external address, when known.
    pub extaddr: Option<IpAddr>,
    /// A STUN server (`host:port`) to discover the external address from.
    pub stun_server: Option<String>,
    /// Roll-calls handled per second at most; the rest are dropped.
    pub max_rollcalls_per_s: Option<u32>,
    /// How long after a roll-call's window relayed answers are still forwarded.
    pub relay_grace_ms: Option<u64>,
    /// Brokers other than our own that unsigned roll-calls may have answers
    /// relayed to (docs/protocol.md section 5): URLs, or tables with a login
    /// of their own.
    pub relay_brokers: Option<Vec<RawRelayBroker>>,
    /// Sessions to requesters' brokers open at once, at most.
    pub max_relay_sessions: Option<usize>,
    /// Answers are published only on topics that start with this.
    pub answer_prefix: Option<String>,
    /// MQTT keepalive, seconds.
    pub keepalive_s: Option<u64>,
    /// The highest QoS the agent subscribes with: 1 (default) or 0 (for a
    /// NATS cluster: docs/deploying.md).
    pub subscribe_qos: Option<u8>,
    /// Shared secret: roll-calls must be signed with it (docs/protocol.md section 8).
    pub cluster_key: Option<String>,
    /// Built-in services: `[services.NAME]` tables, each checked against
    /// its entry in the registry ([`crate::registry`]).
    #[serde(default)]
    pub services: RawServices,
    /// Hardware paths.
    #[serde(default)]
    pub hw: RawHw,
    /// Programs the agent answers for.
    #[serde(default)]
    pub announce: Vec<AnnounceConfig>,
}

/// One `relay_brokers` entry: a URL, or a table that gives the broker its
/// own login (`{ url = "...", username = "...", password_file = "..." }`).
/// That login goes to that URL only, never to another broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawRelayBroker {
    /// `"mqtt://host:port"`: relayed to without any credential.
    Url(String),
    /// A broker and the login it wants.
    WithLogin(RawRelayLogin),
}

impl From<String> for RawRelayBroker {
    fn from(url: String) -> Self {
        RawRelayBroker::Url(url)
    }
}

/// A `relay_brokers` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelayLogin {
    /// The broker.
    pub url: String,
    /// The user name it knows the relay by.
    pub username: String,
    /// The password...
    pub password: Option<String>,
    /// ...or a file whose first line is the password.
    pub password_file: Option<PathBuf>,
}

/// `[services.*]` tables by service name, as written.
pub type RawServices = BTreeMap<String, toml::Value>;

/// `[hw]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHw {
    /// Where sysfs is (PWM channels are under `{sysfs_root}/class/pwm`).
    pub sysfs_root: Option<PathBuf>,
}

/// Where the agent's MQTT traffic goes.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerChoice {
    /// An existing broker, or the nodes of one cluster, tried in turn.
    External(BrokerList),
    /// A broker the agent runs itself (the notes' broker on every host):
    /// where, who may log in, TLS.
    Embedded(BrokerOptions),
}

/// One built-in service that runs, and its settings.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// The service's name.
    pub name: &'static str,
    /// What it is built from.
    pub settings: Arc<dyn Settings>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This host's name.
    pub hostname: String,
    /// The broker.
    pub broker: BrokerChoice,
    /// How the agent logs in to its own broker: username and password,
    /// and TLS files. Relays get only the CA (`Login::for_another_broker`).
    pub login: Login,
    /// The topics of this deployment.
    pub topics: Topics,
    /// Where roll-calls are heard.
    pub udp_listen: SocketAddr,
    /// Where state is kept.
    pub state_dir: PathBuf,
    /// Simulated hardware.
    pub sim: bool,
    /// The configured external address.
    pub extaddr: Option<IpAddr>,
    /// The STUN server to ask for the external address.
    pub stun_server: Option<String>,
    /// Roll-call rate limit.
    pub max_rollcalls_per_s: u32,
    /// Relay grace after a roll-call's window.
    pub relay_grace: Duration,
    /// The brokers unsigned roll-calls may have answers relayed to.
    pub relay_brokers: Vec<BrokerUrl>,
    /// The logins of those `relay_brokers` that have one, by the URL as
    /// configured: a relay session carries one only to that very URL.
    pub relay_logins: HashMap<BrokerUrl, Credentials>,
    /// Sessions to requesters' brokers open at once, at most.
    pub max_relay_sessions: usize,
    /// The prefix every answer topic starts with.
    pub answer_prefix: String,
    /// MQTT keepalive.
    pub keepalive: Duration,
    /// The highest QoS the agent's sessions subscribe with.
    pub subscribe_qos: rollcall_net::Qos,
    /// The cluster key, if roll-calls must be signed.
    pub cluster_key: Option<Secret<Vec<u8>>>,
    /// The built-in services that run, in the registry's order, with
    /// their checked settings.
    pub services: Vec<ServiceSettings>,
    /// Where sysfs is.
    pub sysfs_root: PathBuf,
    /// Announced services.
    pub announce: Vec<AnnounceConfig>,
}

/// The `brokers` (or `broker`) list, checked as [`BrokerList`] says.
fn broker_list(urls: &[String]) -> Result<BrokerList, AgentError> {
    let key = if urls.len() == 1 { "broker" } else { "brokers" };
    let parsed = urls
        .iter()
        .map(|url| url.parse::<BrokerUrl>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, e.to_string()))?;
    BrokerList::new(parsed).map_err(|e| invalid(key, e.to_string()))
}

/// The `relay_brokers` URLs, and the logins of those that have one.
fn relay_brokers(
    raw: Vec<RawRelayBroker>,
) -> Result<(Vec<BrokerUrl>, HashMap<BrokerUrl, Credentials>), AgentError> {
    let parse = |url: &str| {
        url.parse::<BrokerUrl>()
            .map_err(|e| invalid("relay_brokers", e.to_string()))
    };
    let mut urls = Vec::new();
    let mut logins = HashMap::new();
    for entry in raw {
        match entry {
            RawRelayBroker::Url(url) => urls.push(parse(&url)?),
            RawRelayBroker::WithLogin(relay) => {
                let url = parse(&relay.url)?;
                let field = format!("relay_brokers ({})", relay.url);
                // The same rules as the agent's own login; no TLS files of
                // its own, so a relay trusts the agent's CA file.
                let credentials = LoginSettings {
                    username: Some(relay.username),
                    password: relay.password.map(Secret::new),
                    password_file: relay.password_file,
                    tls: TlsFiles::default(),
                }
                .resolve(&url)
                .map_err(|e| invalid(&field, e.to_string()))?
                .credentials
                .unwrap_or_else(|| Credentials::new("", ""));
                if logins.insert(url.clone(), credentials).is_some() {
                    return Err(invalid(&field, "listed twice with a login".into()));
                }
                urls.push(url);
            }
        }
    }
    Ok((urls, logins))
}

/// The embedded broker's options, checked now (a missing or bad file, an
/// address off loopback without a password file) so `--check` reports them.
fn embedded_options(
    addr: SocketAddr,
    password_file: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<BrokerOptions, AgentError> {
    if !rollcall_net::EMBEDDED_BROKER_BUILT_IN {
        return Err(invalid(
            "embedded_broker",
            "this rollcall was built without the embedded broker (cargo feature \
             `embedded-broker`); use an external broker (`broker`)"
                .into(),
        ));
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(ServerTls { cert, key }),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "embedded_broker_tls_cert",
                "give embedded_broker_tls_cert and embedded_broker_tls_key together".into(),
            ));
        }
    };
    let options = BrokerOptions {
        addr,
        password_file,
        tls,
    };
    options
        .check()
        .map_err(|e| invalid("embedded_broker", e.to_string()))?;
    Ok(options)
}

/// The general part of the default configuration, before the services.
const GENERAL_TOML: &str = r#"# rollcall agent configuration. Every key is optional; the values shown are
# the defaults. Command-line flags override what is written here.

# This host's name in topics (/{hostname}/gpio/...) and answers.
# Default: the machine's hostname.
# hostname = "pizero1"

# The MQTT broker shared by the agent and the host's services.
broker = "mqtt://127.0.0.1:1883"
# Or, instead of `broker`, the nodes of one clustered broker (NATS with
# MQTT, for instance), tried in turn whenever a connection fails; the login
# below goes to each of them. See docs/deploying.md.
# brokers = ["mqtt://10.0.0.1:1883", "mqtt://10.0.0.2:1883", "mqtt://10.0.0.3:1883"]

# Or: run an embedded broker on this address and use it, the original notes'
# broker on every host. Answers are then relayed to the scanner's broker.
# On loopback only, unless it has a password file: on any other address
# (another host's services, 0.0.0.0) it is refused without one. The agent
# logs in to its own embedded broker by itself.
# embedded_broker = "127.0.0.1:1883"
# Who may log in to it: one `user:password` a line, `#` comments; readable
# by its owner only (chmod 600). See docs/embedded-broker.md.
# embedded_broker_password_file = "/etc/rollcall/broker-passwords"
# TLS (mqtts://) on that address instead of plain MQTT: PEM files.
# embedded_broker_tls_cert = "/etc/rollcall/broker.pem"
# embedded_broker_tls_key = "/etc/rollcall/broker.key"

# Logging in to the broker. The password can also come from a file (its
# first line), or the ROLLCALL_PASSWORD environment variable; it is never
# printed. These go to this broker only, never to a relay.
# username = "rollcall"
# password = "secret"
# password_file = "/etc/rollcall/password"

# TLS, for a broker given as mqtts://host (port 8883). The broker's
# certificate must name the host in the URL. Without ca_file the system's
# trusted CAs are used.
# ca_file = "/etc/rollcall/ca.pem"
# client_cert = "/etc/rollcall/client.pem"   # if the broker wants one
# client_key = "/etc/rollcall/client.key"

# Topic root: "" gives /udp/report, "site1" gives site1/udp/report.
root = ""

# Where roll-calls are heard.
udp_port = 46464
udp_bind = "0.0.0.0"

# Where what must survive a restart is kept.
state_dir = "/var/lib/rollcall"

# Simulated hardware for every service, to try rollcall on a PC.
sim = false

# The host's address as the outside world sees it: set it, or name a STUN
# server to discover it. Left out of reports when unknown.
# extaddr = "203.0.113.7"
# stun_server = "stun.example.net:3478"

# Roll-calls handled per second at most; more are dropped and counted.
max_rollcalls_per_s = 20

# How long after a roll-call's window relayed answers are still forwarded.
relay_grace_ms = 2000

# Answers go to the agent's own broker. A roll-call may name another broker
# (the broker-per-host topology); answers are relayed there only when the
# roll-call is signed with the cluster key, or the broker is listed here.
# An unsigned roll-call can make the agent connect nowhere else. Relay
# sessions never carry the agent's own username, password or key.
relay_brokers = []
# relay_brokers = ["mqtt://192.168.1.10:1883"]
# A relay broker that wants a login (a scanner's password-protected
# embedded broker) is given as a table with its own; that login goes to
# that URL only (a roll-call naming the broker by its address is relayed
# to this URL).
# relay_brokers = ["mqtt://192.168.1.10:1883",
#   { url = "mqtt://192.168.1.11:1883", username = "relay",
#     password_file = "/etc/rollcall/relay-password" }]

# Sessions to requesters' brokers open at once; roll-calls naming another
# broker while this many are open are dropped and counted.
max_relay_sessions = 4

# Answers are published only on topics that start with this (under the
# topic root), never on a `$` topic or a host's topics.
answer_prefix = "/stat/"

# MQTT keepalive; a crashed agent shows offline about 1.5 times this later.
keepalive_s = 5

# The highest QoS the agent subscribes with: 0 on a NATS cluster, where a
# QoS 1 subscription is a JetStream consumer, slow to set up again after a
# node dies (docs/deploying.md).
subscribe_qos = 1

# A shared secret of at least 16 bytes: when set, only roll-calls signed
# with it are answered.
# cluster_key = "a long random string"

# Built-in services: one [services.NAME] table each. Sensors are read
# through the kernel's IIO drivers (found by the `name` file under
# {sysfs_root}/bus/iio/devices) or simulated with `sim = true`; each is off
# until enabled, publishes {"value":..,"unit":..,"ts":..} retained on
# /{hostname}/{service}/{item} and is configured over
# /{hostname}/{service}/control (saved in state_dir); a table's `config` is
# used when nothing was saved.
"#;

/// The part of the default configuration after the services.
const HW_TOML: &str = r#"[hw]
# Where sysfs is: PWM channels are under {sysfs_root}/class/pwm, IIO devices
# under {sysfs_root}/bus/iio/devices.
sysfs_root = "/sys"

# Programs that cannot answer a roll-call themselves, answered for by the agent:
# [[announce]]
# function = "backup"
# doc = "nightly backup to the NAS"
# outputs = ["/nas/backup/last"]
"#;

/// The commented default configuration `rollcall agent --print-config`
/// prints: the general keys, each built-in service's table from the
/// registry, then `[hw]` and `[[announce]]`.
pub fn default_toml() -> String {
    let mut text = GENERAL_TOML.to_owned();
    for builtin in registry::BUILTINS {
        text.push('\n');
        text.push_str(&builtin.default_toml());
    }
    text.push('\n');
    text.push_str(HW_TOML);
    text
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| AgentError::ParseConfig {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text. Each `[services.NAME]` table is checked against
    /// its registry entry now, so a misspelt key is named with its table.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, table) in &raw.services {
            let builtin = registry::find(name).ok_or_else(|| unknown_service(name))?;
            builtin
                .check_shape(table)
                .map_err(|e| format!("[services.{name}]: {e}"))?;
        }
        Ok(raw)
    }

    /// The `[services.NAME]` table, created empty if there is none: for
    /// whoever builds a configuration in code (the demo, tests).
    pub fn service_table(&mut self, name: &str) -> &mut toml::Table {
        let table = self
            .services
            .entry(name.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !table.is_table() {
            *table = toml::Value::Table(toml::Table::new());
        }
        table.as_table_mut().expect("made a table above")
    }

    /// Turns service `name` on or off.
    pub fn enable(&mut self, name: &str, on: bool) {
        self.service_table(name)
            .insert("enabled".into(), toml::Value::Boolean(on));
    }

    /// Checks every value and fills in the defaults.
    pub fn validate(self) -> Result<Config, AgentError> {
        let hostname = match self.hostname {
            Some(h) => h,
            None => machine_hostname().ok_or_else(|| {
                invalid(
                    "hostname",
                    "cannot read the machine's hostname; set one".into(),
                )
            })?,
        };
        check_name(&hostname).map_err(|e| invalid("hostname", e.to_string()))?;
        let embedded_only = self.embedded_broker_password_file.is_some()
            || self.embedded_broker_tls_cert.is_some()
            || self.embedded_broker_tls_key.is_some();
        if embedded_only && self.embedded_broker.is_none() {
            return Err(invalid(
                "embedded_broker_password_file",
                "the embedded_broker_* keys are for an embedded broker; set embedded_broker".into(),
            ));
        }
        let brokers_key = self.brokers.is_some();
        let listed = match (self.broker, self.brokers) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "brokers",
                    "give `broker` or `brokers`, not both".into(),
                ));
            }
            (Some(url), None) => Some(vec![url]),
            (None, brokers) => brokers,
        };
        let broker = match (self.embedded_broker, listed) {
            (Some(_), Some(list)) if brokers_key || list.len() > 1 => {
                return Err(invalid(
                    "brokers",
                    "an agent with embedded_broker uses its own broker; `brokers` is for \
                     an external cluster"
                        .into(),
                ));
            }
            (Some(addr), _) => BrokerChoice::Embedded(embedded_options(
                addr,
                self.embedded_broker_password_file,
                self.embedded_broker_tls_cert,
                self.embedded_broker_tls_key,
            )?),
            (None, Some(urls)) => BrokerChoice::External(broker_list(&urls)?),
            (None, None) => BrokerChoice::External(BrokerUrl::new("127.0.0.1", 1883).into()),
        };
        let topics = Topics::new(self.root.as_deref().unwrap_or(""))
            .map_err(|e| invalid("root", e.to_string()))?;
        let own_broker = match &broker {
            BrokerChoice::External(list) => list.first().clone(),
            BrokerChoice::Embedded(options) => {
                BrokerUrl::new(options.addr.ip().to_string(), options.addr.port())
            }
        };
        let login = LoginSettings {
            username: self.username,
            password: self.password.map(Secret::new),
            password_file: self.password_file,
            tls: TlsFiles {
                ca_file: self.ca_file,
                client_cert: self.client_cert,
                client_key: self.client_key,
            },
        }
        .resolve(&own_broker)
        .map_err(|e| match e {
            rollcall_net::NetError::Login { key, reason } => invalid(key, reason),
            rollcall_net::NetError::SecretFile { .. } => invalid("password_file", e.to_string()),
            other => invalid("ca_file", other.to_string()),
        })?;
        let max_rollcalls_per_s = self.max_rollcalls_per_s.unwrap_or(20);
        if max_rollcalls_per_s == 0 {
            return Err(invalid("max_rollcalls_per_s", "must be at least 1".into()));
        }
        let keepalive_s = self.keepalive_s.unwrap_or(5);
        if !(1..=3600).contains(&keepalive_s) {
            return Err(invalid("keepalive_s", "must be from 1 to 3600".into()));
        }
        let subscribe_qos = match self.subscribe_qos.unwrap_or(1) {
            0 => rollcall_net::Qos::AtMostOnce,
            1 => rollcall_net::Qos::AtLeastOnce,
            _ => return Err(invalid("subscribe_qos", "must be 0 or 1".into())),
        };
        let relay_grace_ms = self.relay_grace_ms.unwrap_or(2000);
        if relay_grace_ms > 60_000 {
            return Err(invalid("relay_grace_ms", "at most 60000".into()));
        }
        let (relay_brokers, relay_logins) = relay_brokers(self.relay_brokers.unwrap_or_default())?;
        let max_relay_sessions = self.max_relay_sessions.unwrap_or(4);
        if !(1..=64).contains(&max_relay_sessions) {
            return Err(invalid("max_relay_sessions", "must be from 1 to 64".into()));
        }
        let answer_prefix = match self.answer_prefix {
            Some(prefix) => prefix,
            None => topics.topic("stat/"),
        };
        check_answer_prefix(&answer_prefix).map_err(|e| invalid("answer_prefix", e))?;
        let cluster_key = self.cluster_key.map(|key| Secret::new(key.into_bytes()));
        if let Some(key) = &cluster_key {
            rollcall_proto::sign::check_key(key.expose())
                .map_err(|e| invalid("cluster_key", e.to_string()))?;
        }
        let common = Common {
            sim: self.sim == Some(true),
        };
        let mut tables = self.services;
        if let Some(name) = tables.keys().find(|n| registry::find(n).is_none()) {
            return Err(AgentError::Invalid {
                field: "services".into(),
                reason: unknown_service(name),
            });
        }
        let mut services = Vec::new();
        for builtin in registry::BUILTINS {
            let table = tables.remove(builtin.name());
            if let Some(settings) = builtin.settings(table, common)? {
                let name = builtin.name();
                services.push(ServiceSettings { name, settings });
            }
        }
        let mut names: Vec<String> = registry::names().map(str::to_owned).collect();
        for a in &self.announce {
            check_name(&a.function).map_err(|e| invalid("announce.function", e.to_string()))?;
            if names.contains(&a.function) {
                return Err(invalid(
                    "announce.function",
                    format!("`{}` is used twice", a.function),
                ));
            }
            names.push(a.function.clone());
        }
        Ok(Config {
            hostname,
            broker,
            login,
            topics,
            udp_listen: SocketAddr::new(
                self.udp_bind.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                self.udp_port.unwrap_or(rollcall_proto::DEFAULT_UDP_PORT),
            ),
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/rollcall")),
            sim: self.sim.unwrap_or(false),
            extaddr: self.extaddr,
            stun_server: self.stun_server,
            max_rollcalls_per_s,
            relay_grace: Duration::from_millis(relay_grace_ms),
            relay_brokers,
            relay_logins,
            max_relay_sessions,
            answer_prefix,
            keepalive: Duration::from_secs(keepalive_s),
            subscribe_qos,
            cluster_key,
            services,
            sysfs_root: self.hw.sysfs_root.unwrap_or_else(|| PathBuf::from("/sys")),
            announce: self.announce,
        })
    }
}

/// An answer prefix names a plain topic branch: no wildcard, no `$` level.
fn check_answer_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".into());
    }
    if prefix.contains(['+', '#']) {
        return Err("must not contain MQTT wildcards".into());
    }
    if prefix.split('/').any(|level| level.starts_with('$')) {
        return Err("must not contain a `$` level".into());
    }
    Ok(())
}

fn invalid(field: &str, reason: String) -> AgentError {
    AgentError::Invalid {
        field: field.to_owned(),
        reason,
    }
}

fn unknown_service(name: &str) -> String {
    let known: Vec<&str> = registry::names().collect();
    format!(
        "[services.{name}]: no such service; the built-in services are {}",
        known.join(", ")
    )
}

impl Config {
    /// The settings of built-in service `name`, when it runs and they are
    /// of type `T`.
    pub fn settings<T: Settings>(&self, name: &str) -> Option<&T> {
        let service = self.services.iter().find(|s| s.name == name)?;
        service.settings.as_any().downcast_ref()
    }

    /// Whether built-in service `name` runs.
    pub fn runs(&self, name: &str) -> bool {
        self.services.iter().any(|s| s.name == name)
    }
}

/// The kernel's idea of this machine's name.
fn machine_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::display::DisplaySettings;
    use crate::builtin::sensor::SensorSettings;
    use crate::builtin::system::SystemSettings;

    #[test]
    fn subscribe_qos_is_0_or_1_and_1_by_default() {
        let with = |qos: Option<u8>| {
            RawConfig {
                hostname: Some("h".into()),
                subscribe_qos: qos,
                ..RawConfig::default()
            }
            .validate()
        };
        assert_eq!(
            with(None).unwrap().subscribe_qos,
            rollcall_net::Qos::AtLeastOnce
        );
        assert_eq!(
            with(Some(0)).unwrap().subscribe_qos,
            rollcall_net::Qos::AtMostOnce
        );
        let Err(error) = with(Some(2)) else {
            panic!("QoS 2 accepted");
        };
        let error = error.to_string();
        assert!(error.contains("subscribe_qos"), "{error}");
    }

    #[test]
    fn the_printed_default_parses_and_validates() {
        let raw = RawConfig::from_toml(&default_toml()).unwrap();
        let cfg = RawConfig {
            hostname: Some("pizero1".into()),
            ..raw
        }
        .validate()
        .unwrap();
        assert_eq!(cfg.udp_listen.port(), 46464);
        assert_eq!(
            cfg.settings::<SystemSettings>("system").map(|s| s.interval),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            cfg.broker,
            BrokerChoice::External(BrokerUrl::new("127.0.0.1", 1883).into())
        );
    }

    #[test]
    fn a_broker_list_is_checked_whole() {
        let validate = |toml: &str| {
            RawConfig::from_toml(&format!("hostname = \"a\"\n{toml}"))
                .unwrap()
                .validate()
        };
        let config = validate(r#"brokers = ["mqtt://n1:1883", "n2:1884", "mqtt://n3"]"#).unwrap();
        let BrokerChoice::External(list) = &config.broker else {
            panic!("{:?}", config.broker);
        };
        assert_eq!(
            list.to_string(),
            "mqtt://n1:1883,mqtt://n2:1884,mqtt://n3:1883"
        );
        for (toml, says) in [
            ("brokers = []", "at least one"),
            (r#"brokers = ["n1", "mqtt://n1:1883"]"#, "each broker once"),
            (r#"brokers = ["n1", "http://n2"]"#, "scheme"),
            (r#"brokers = ["mqtt://n1", "mqtts://n2"]"#, "mixes"),
            ("broker = \"n1\"\nbrokers = [\"n2\"]", "not both"),
            (
                "embedded_broker = \"127.0.0.1:1883\"\nbrokers = [\"n1\", \"n2\"]",
                "embedded_broker",
            ),
            (
                "embedded_broker = \"127.0.0.1:1883\"\nbrokers = [\"n1\"]",
                "embedded_broker",
            ),
        ] {
            let err = validate(toml).unwrap_err().to_string();
            assert!(
                err.contains("brokers") && err.contains(says),
                "{toml}: {err}"
            );
        }
    }

    #[test]
    fn sensor_services_are_off_unless_enabled_and_their_tables_are_checked() {
        let cfg = RawConfig::from_toml(&default_toml())
            .map(|raw| RawConfig {
                hostname: Some("a".into()),
                ..raw
            })
            .unwrap()
            .validate()
            .unwrap();
        assert!(!cfg.runs("ain") && !cfg.runs("dht22") && !cfg.runs("sonar"));
        assert!(!cfg.runs("dac") && !cfg.runs("display"));
        let on = "hostname = \"a\"\n[services.dht22]\nenabled = true\n\
                  [services.display]\nenabled = true\nconfig = { input = \"/display\" }\n";
        let cfg = RawConfig::from_toml(on).unwrap().validate().unwrap();
        let dht22 = cfg.settings::<SensorSettings>("dht22").unwrap();
        assert_eq!(dht22.device, "dht11");
        let display = cfg.settings::<DisplaySettings>("display").unwrap();
        assert_eq!(display.address, 0x27);
        for (toml, key) in [
            (
                "[services.dht22]\nconfig = { interval_ms = 100 }",
                "services.dht22.config",
            ),
            (
                "[services.ain]\nconfig = { channels = [] }",
                "services.ain.config",
            ),
            (
                "[services.sonar]\nconfig = { topics = { distance = \"/a/#\" } }",
                "services.sonar.config",
            ),
            (
                "[services.dac]\nconfig = { channels = [{ name = \"1\", channel = 0 }] }",
                "services.dac.config",
            ),
            ("[services.dac]\nmax_code = 0", "services.dac.max_code"),
            (
                "[services.display]\nconfig = { input = \"/a/+\" }",
                "services.display.config",
            ),
            ("[services.display]\ncols = 41", "services.display"),
            (
                "[services.display]\naddress = 0x90",
                "services.display.address",
            ),
            ("[[announce]]\nfunction = \"dht22\"", "announce.function"),
        ] {
            let text = format!("hostname = \"a\"\n{toml}");
            let err = RawConfig::from_toml(&text).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        let err = RawConfig::from_toml("[services.sonar]\ndevise = \"x\"").unwrap_err();
        assert!(err.contains("devise"), "{err}");
    }

    #[test]
    fn relays_are_off_and_answers_under_stat_by_default() {
        let config = RawConfig::from_toml("hostname = \"a\"\nroot = \"site1\"")
            .unwrap()
            .validate()
            .unwrap();
        assert!(config.relay_brokers.is_empty());
        assert_eq!(config.max_relay_sessions, 4);
        assert_eq!(config.answer_prefix, "site1/stat/");
        let key = RawConfig::from_toml("hostname = \"a\"\ncluster_key = \"sixteen bytes...\"")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            key.cluster_key.as_ref().map(|k| k.expose().as_slice()),
            Some(&b"sixteen bytes..."[..])
        );
    }

    /// `cargo test -p rollcall-agent --no-default-features --lib`
    #[cfg(not(feature = "embedded-broker"))]
    #[test]
    fn without_the_broker_built_in_embedded_broker_is_refused_at_the_check() {
        let err = RawConfig::from_toml("hostname = \"a\"\nembedded_broker = \"127.0.0.1:1883\"")
            .unwrap()
            .validate()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("embedded_broker") && text.contains("embedded-broker"),
            "{text}"
        );
    }

    #[cfg(feature = "embedded-broker")]
    #[test]
    fn the_embedded_broker_takes_its_password_file_and_tls_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let passwords = dir.path().join("passwords");
        std::fs::write(&passwords, "agent:secret\n").unwrap();
        std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o600)).unwrap();
        let toml = format!(
            "hostname = \"a\"\nembedded_broker = \"0.0.0.0:1883\"\n\
             embedded_broker_password_file = \"{}\"\n",
            passwords.display()
        );
        let config = RawConfig::from_toml(&toml).unwrap().validate().unwrap();
        let BrokerChoice::Embedded(options) = config.broker else {
            panic!("{:?}", config.broker);
        };
        assert_eq!(options.password_file.as_deref(), Some(passwords.as_path()));
        assert_eq!(options.tls, None);
        // Loopback needs no password file.
        let config = RawConfig::from_toml("hostname = \"a\"\nembedded_broker = \"127.0.0.1:1883\"")
            .unwrap()
            .validate()
            .unwrap();
        assert!(matches!(config.broker, BrokerChoice::Embedded(_)));
    }

    #[test]
    fn a_relay_broker_may_carry_a_login_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("relay-password");
        std::fs::write(&password, "relay-secret\n").unwrap();
        let toml = format!(
            "hostname = \"a\"\nrelay_brokers = [\"mqtt://198.18.0.5:1883\", \
             {{ url = \"mqtt://198.18.0.6:1883\", username = \"relay\", password_file = \"{}\" }}]\n",
            password.display()
        );
        let config = RawConfig::from_toml(&toml).unwrap().validate().unwrap();
        let (five, six) = (
            BrokerUrl::new("198.18.0.5", 1883),
            BrokerUrl::new("198.18.0.6", 1883),
        );
        assert_eq!(config.relay_brokers, [five.clone(), six.clone()]);
        assert_eq!(
            config.relay_logins.get(&six),
            Some(&Credentials::new("relay", "relay-secret"))
        );
        assert_eq!(config.relay_logins.get(&five), None);
        assert!(!format!("{config:?}").contains("relay-secret"));
        for (toml, needle) in [
            (
                "relay_brokers = [{ url = \"mqtt://h:1\", username = \"u\", password = \"p\", \
                 password_file = \"/p\" }]",
                "not both",
            ),
            (
                "relay_brokers = [{ url = \"mqtt://h:1\", username = \"u\", password = \"p\" }, \
                 { url = \"mqtt://h:1\", username = \"v\", password = \"q\" }]",
                "twice",
            ),
        ] {
            let error = RawConfig::from_toml(&format!("hostname = \"a\"\n{toml}"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{toml}: {error}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = RawConfig::from_toml("hostnme = \"x\"").unwrap_err();
        assert!(err.contains("hostnme"), "{err}");
        let err = RawConfig::from_toml("[services.system]\nintervl_s = 3").unwrap_err();
        assert!(err.contains("intervl_s"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("hostname = \"a/b\"", "hostname"),
            ("hostname = \"a\"\nbroker = \"http://x\"", "broker"),
            (
                "hostname = \"a\"\nmax_rollcalls_per_s = 0",
                "max_rollcalls_per_s",
            ),
            ("hostname = \"a\"\nroot = \"a/#\"", "root"),
            (
                "hostname = \"a\"\n[[announce]]\nfunction = \"system\"",
                "announce.function",
            ),
            ("hostname = \"a\"\npassword = \"p\"", "password"),
            ("hostname = \"a\"\ncluster_key = \"\"", "cluster_key"),
            ("hostname = \"a\"\ncluster_key = \"s3cret\"", "cluster_key"),
            (
                "hostname = \"a\"\ncluster_key = \"sixteen bytes...\\u0000\"",
                "cluster_key",
            ),
            (
                "hostname = \"a\"\nrelay_brokers = [\"http://x\"]",
                "relay_brokers",
            ),
            (
                "hostname = \"a\"\nmax_relay_sessions = 0",
                "max_relay_sessions",
            ),
            (
                "hostname = \"a\"\nanswer_prefix = \"/stat/#\"",
                "answer_prefix",
            ),
            (
                "hostname = \"a\"\nanswer_prefix = \"/$SYS/\"",
                "answer_prefix",
            ),
            ("hostname = \"a\"\nanswer_prefix = \"\"", "answer_prefix"),
            (
                "hostname = \"a\"\nbroker = \"mqtts://b\"\nca_file = \"/nonexistent/ca.pem\"",
                "/nonexistent/ca.pem",
            ),
            (
                "hostname = \"a\"\nclient_cert = \"/c.pem\"\nclient_key = \"/c.key\"",
                "client_cert",
            ),
            (
                "hostname = \"a\"\nusername = \"u\"\npassword = \"p\"\npassword_file = \"/p\"",
                "not both",
            ),
            (
                "hostname = \"a\"\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"",
                "/nonexistent/pw",
            ),
            // The embedded broker off loopback needs a password file, and
            // its keys need it set.
            (
                "hostname = \"a\"\nembedded_broker = \"0.0.0.0:1883\"",
                "password file",
            ),
            (
                "hostname = \"a\"\nembedded_broker_password_file = \"/p\"",
                "set embedded_broker",
            ),
            (
                "hostname = \"a\"\nembedded_broker = \"127.0.0.1:0\"\nembedded_broker_tls_cert = \"/c\"",
                "together",
            ),
            (
                "hostname = \"a\"\nembedded_broker = \"0.0.0.0:1883\"\nembedded_broker_password_file = \"/nonexistent/bp\"",
                "/nonexistent/bp",
            ),
        ] {
            // Built without the broker, `embedded_broker` is refused before
            // these checks (its own test, below).
            if !rollcall_net::EMBEDDED_BROKER_BUILT_IN && toml.contains("embedded_broker =") {
                continue;
            }
            let err = RawConfig::from_toml(toml).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
    }
}
