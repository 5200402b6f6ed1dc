//! The agent's configuration: read raw from TOML (unknown keys rejected),
//! overridden by command-line flags, then validated once into [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_net::BrokerUrl;
use rollcall_proto::Topics;
use rollcall_proto::topic::check_name;
use rollcall_services::announce::AnnounceConfig;
use rollcall_services::dac::DacConfig;
use rollcall_services::display::DisplayConfig;
use rollcall_services::gpio::GpioConfig;
use rollcall_services::sensor::{SensorConfig, Spec};
use serde::Deserialize;

use crate::AgentError;

/// The configuration file as written, every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This host's name in topics and answers.
    pub hostname: Option<String>,
    /// The MQTT broker the agent and its services use.
    pub broker: Option<String>,
    /// Run an embedded broker on this address and use it.
    pub embedded_broker: Option<SocketAddr>,
    /// MQTT username.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
    /// CA file for `mqtts://` brokers.
    pub ca_file: Option<PathBuf>,
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
    /// MQTT keepalive, seconds.
    pub keepalive_s: Option<u64>,
    /// Shared secret: roll-calls must be signed with it (PROTOCOL.md section 7).
    pub cluster_key: Option<String>,
    /// Built-in services.
    #[serde(default)]
    pub services: RawServices,
    /// Hardware paths.
    #[serde(default)]
    pub hw: RawHw,
    /// Programs the agent answers for.
    #[serde(default)]
    pub announce: Vec<AnnounceConfig>,
}

/// `[services.*]` tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServices {
    /// `[services.system]`
    #[serde(default)]
    pub system: RawSystem,
    /// `[services.gpio]`
    #[serde(default)]
    pub gpio: RawGpio,
    /// `[services.ain]`
    #[serde(default)]
    pub ain: RawSensor,
    /// `[services.dht22]`
    #[serde(default)]
    pub dht22: RawSensor,
    /// `[services.sonar]`
    #[serde(default)]
    pub sonar: RawSensor,
    /// `[services.dac]`
    #[serde(default)]
    pub dac: RawDac,
    /// `[services.display]`
    #[serde(default)]
    pub display: RawDisplay,
}

/// `[services.ain]`, `[services.dht22]`, `[services.sonar]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSensor {
    /// Whether the service runs (default: no).
    pub enabled: Option<bool>,
    /// The IIO device's `name` (`dht11`, `ads1015`, `mcp3008`, `srf04`).
    pub device: Option<String>,
    /// The configuration applied when none was saved before, in the same
    /// shape as on `/{host}/{service}/control`.
    pub config: Option<SensorConfig>,
}

/// `[services.dac]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDac {
    /// Whether the service runs (default: no).
    pub enabled: Option<bool>,
    /// The IIO device's `name` (default `mcp4725`).
    pub device: Option<String>,
    /// The largest code (default 4095, 12 bits).
    pub max_code: Option<u32>,
    /// The configuration applied when none was saved before.
    pub config: Option<DacConfig>,
}

/// `[services.display]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisplay {
    /// Whether the service runs (default: no).
    pub enabled: Option<bool>,
    /// The i2c-dev bus of the HD44780's PCF8574 backpack (default `/dev/i2c-1`).
    pub i2c: Option<PathBuf>,
    /// The backpack's I2C address (default 0x27).
    pub address: Option<u16>,
    /// Columns (default 16).
    pub cols: Option<u8>,
    /// Rows (default 2).
    pub rows: Option<u8>,
    /// The simulated display's buttons (default `["A", "B"]`), under `sim` only.
    pub buttons: Option<Vec<String>>,
    /// The configuration applied when none was saved before.
    pub config: Option<DisplayConfig>,
}

/// A reading service's settings (`ain`, `dht22`, `sonar`).
#[derive(Debug, Clone)]
pub struct SensorSettings {
    /// The IIO device's name.
    pub device: String,
    /// The configuration applied when none was saved.
    pub config: Option<SensorConfig>,
}

/// The DAC service's settings.
#[derive(Debug, Clone)]
pub struct DacSettings {
    /// The IIO device's name.
    pub device: String,
    /// The largest code.
    pub max_code: u32,
    /// The configuration applied when none was saved.
    pub config: Option<DacConfig>,
}

/// The display service's settings.
#[derive(Debug, Clone)]
pub struct DisplaySettings {
    /// The I2C bus.
    pub i2c: PathBuf,
    /// The backpack's address.
    pub address: u16,
    /// Columns.
    pub cols: u8,
    /// Rows.
    pub rows: u8,
    /// The simulated display's buttons.
    pub buttons: Vec<String>,
    /// The configuration applied when none was saved.
    pub config: Option<DisplayConfig>,
}

/// `[services.gpio]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpio {
    /// Whether the service runs (default: yes, where there is a chip).
    pub enabled: Option<bool>,
    /// The GPIO chip: a path (`/dev/gpiochip0`), a label, or `auto`.
    pub chip: Option<String>,
    /// The configuration applied when none was saved before, in the same
    /// shape as on `/{host}/gpio/control`.
    pub config: Option<GpioConfig>,
}

/// `[hw]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHw {
    /// Where sysfs is (PWM channels are under `{sysfs_root}/class/pwm`).
    pub sysfs_root: Option<PathBuf>,
}

/// The GPIO service's settings.
#[derive(Debug, Clone)]
pub struct GpioSettings {
    /// `auto`, a path or a label.
    pub chip: String,
    /// The configuration applied when none was saved.
    pub config: Option<GpioConfig>,
}

/// `[services.system]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    /// Whether the service runs.
    pub enabled: Option<bool>,
    /// Seconds between published readings.
    pub interval_s: Option<u64>,
}

/// Where the agent's MQTT traffic goes.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerChoice {
    /// An existing broker.
    External(BrokerUrl),
    /// A broker the agent runs itself on this address (the notes' broker on every host).
    Embedded(SocketAddr),
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// This host's name.
    pub hostname: String,
    /// The broker.
    pub broker: BrokerChoice,
    /// MQTT username and password.
    pub credentials: Option<(String, String)>,
    /// CA file for TLS.
    pub ca_file: Option<PathBuf>,
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
    /// MQTT keepalive.
    pub keepalive: Duration,
    /// The cluster key, if roll-calls must be signed.
    pub cluster_key: Option<Vec<u8>>,
    /// The system service's interval, if it runs.
    pub system_interval: Option<Duration>,
    /// The GPIO service's settings, if it runs.
    pub gpio: Option<GpioSettings>,
    /// The `ain` service's settings, if it runs.
    pub ain: Option<SensorSettings>,
    /// The `dht22` service's settings, if it runs.
    pub dht22: Option<SensorSettings>,
    /// The `sonar` service's settings, if it runs.
    pub sonar: Option<SensorSettings>,
    /// The `dac` service's settings, if it runs.
    pub dac: Option<DacSettings>,
    /// The `display` service's settings, if it runs.
    pub display: Option<DisplaySettings>,
    /// Where sysfs is.
    pub sysfs_root: PathBuf,
    /// Announced services.
    pub announce: Vec<AnnounceConfig>,
}

/// The commented default configuration `rollcall agent --print-config` prints.
pub const DEFAULT_TOML: &str = r#"# rollcall agent configuration. Every key is optional; the values shown are
# the defaults. Command-line flags override what is written here.

# This host's name in topics (/{hostname}/gpio/...) and answers.
# Default: the machine's hostname.
# hostname = "pizero1"

# The MQTT broker shared by the agent and the host's services.
broker = "mqtt://127.0.0.1:1883"

# Or: run an embedded broker on this address and use it, the original notes'
# broker on every host. Answers are then relayed to the scanner's broker.
# embedded_broker = "0.0.0.0:1883"

# username = "rollcall"
# password = "secret"
# ca_file = "/etc/rollcall/ca.pem"     # for mqtts:// brokers

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

# MQTT keepalive; a crashed agent shows offline about 1.5 times this later.
keepalive_s = 5

# A shared secret: when set, only roll-calls signed with it are answered.
# cluster_key = "a long random string"

[services.system]
enabled = true
interval_s = 30

# The GPIO service: outputs, PWM and inputs, configured over
# /{hostname}/gpio/control. What is applied there is saved in state_dir and
# restored at start; the configuration below is used when nothing was saved.
[services.gpio]
enabled = true
# "auto" finds a Raspberry Pi's GPIO chip; or a path or a label.
chip = "auto"
# [services.gpio.config]
# outputs = [{ name = "pump_drive", pin = 25, init = 0, pull = "down" }]
# pwm = [{ name = "sonar_angle", pin = 18, init = 20, period_us = 1000 }]
# inputs = [{ name = "button", pin = 22, pull = "down", report = "change", debounce_ms = 5 },
#           { name = "float_switch", pin = 17, pull = "up", report = "scan", scan_ms = 500 }]

# Sensors, read through the kernel's IIO drivers (found by the `name` file
# under {sysfs_root}/bus/iio/devices) or simulated with `sim = true`. Each is
# off until enabled; each publishes {"value":..,"unit":..,"ts":..} retained
# on /{hostname}/{service}/{item} and is configured over
# /{hostname}/{service}/control (saved in state_dir); `config` below is used
# when nothing was saved.
[services.dht22]
enabled = false
device = "dht11"            # the dht11 driver also reads the DHT22
# config = { interval_ms = 10000, retry_ms = 2000 }

[services.ain]
enabled = false
device = "ads1015"          # an ADS1115 too (its driver names both so); or "mcp3008"
# config = { interval_ms = 1000, channels = [{ name = "soil", channel = 0 }] }

[services.sonar]
enabled = false
device = "srf04"            # an HC-SR04
# config = { interval_ms = 1000, topics = { distance = "/garage/distance" } }

# An analog output, set in volts on /{hostname}/dac/set/{channel}.
[services.dac]
enabled = false
device = "mcp4725"
max_code = 4095
# config = { channels = [{ name = "pump_speed", channel = 0 }] }

# A 16x2 HD44780 character LCD on a PCF8574 I2C backpack. Text on
# /{hostname}/display/text, buttons on /{hostname}/display/buttons; the
# notes' topics: config = { input = "/display", output = "/dbuts", control = "/dcontrol" }
[services.display]
enabled = false
i2c = "/dev/i2c-1"
address = 0x27
cols = 16
rows = 2
# buttons = ["A", "B"]      # the simulated display's buttons

[hw]
# Where sysfs is: PWM channels are under {sysfs_root}/class/pwm, IIO devices
# under {sysfs_root}/bus/iio/devices.
sysfs_root = "/sys"

# Programs that cannot answer a roll-call themselves, answered for by the agent:
# [[announce]]
# function = "backup"
# doc = "nightly backup to the NAS"
# outputs = ["/nas/backup/last"]
"#;

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

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks every value and fills in the defaults.
    pub fn validate(self) -> Result<Config, AgentError> {
        let invalid = |field: &'static str, reason: String| AgentError::Invalid { field, reason };
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
        let broker = match (self.embedded_broker, self.broker) {
            (Some(addr), _) => BrokerChoice::Embedded(addr),
            (None, Some(url)) => BrokerChoice::External(
                url.parse()
                    .map_err(|e: rollcall_net::NetError| invalid("broker", e.to_string()))?,
            ),
            (None, None) => BrokerChoice::External(BrokerUrl::new("127.0.0.1", 1883)),
        };
        let topics = Topics::new(self.root.as_deref().unwrap_or(""))
            .map_err(|e| invalid("root", e.to_string()))?;
        let credentials = match (self.username, self.password) {
            (Some(u), Some(p)) => Some((u, p)),
            (Some(u), None) => Some((u, String::new())),
            (None, Some(_)) => return Err(invalid("password", "given without a username".into())),
            (None, None) => None,
        };
        let max_rollcalls_per_s = self.max_rollcalls_per_s.unwrap_or(20);
        if max_rollcalls_per_s == 0 {
            return Err(invalid("max_rollcalls_per_s", "must be at least 1".into()));
        }
        let keepalive_s = self.keepalive_s.unwrap_or(5);
        if !(1..=3600).contains(&keepalive_s) {
            return Err(invalid("keepalive_s", "must be from 1 to 3600".into()));
        }
        let relay_grace_ms = self.relay_grace_ms.unwrap_or(2000);
        if relay_grace_ms > 60_000 {
            return Err(invalid("relay_grace_ms", "at most 60000".into()));
        }
        let system_interval = match (
            self.services.system.enabled,
            self.services.system.interval_s,
        ) {
            (Some(false), _) => None,
            (_, Some(secs)) if !(1..=86_400).contains(&secs) => {
                return Err(invalid("services.system.interval_s", "1 to 86400".into()));
            }
            (_, secs) => Some(Duration::from_secs(secs.unwrap_or(30))),
        };
        // A Raspberry Pi header's lines, or the simulated one: the
        // configuration is checked now, so `agent --check` finds bad pins.
        if let Some(gpio) = &self.services.gpio.config
            && (self.sim == Some(true)
                || self
                    .services
                    .gpio
                    .chip
                    .as_deref()
                    .is_none_or(|c| c == "auto"))
        {
            gpio.validate(rollcall_services::gpio::config::PI_LINES)
                .map_err(|e| invalid("services.gpio.config", e.to_string()))?;
        }
        let gpio = match self.services.gpio.enabled {
            Some(false) => None,
            _ => Some(GpioSettings {
                chip: self.services.gpio.chip.unwrap_or_else(|| "auto".to_owned()),
                config: self.services.gpio.config,
            }),
        };
        let ain = sensor_settings(self.services.ain, &rollcall_services::ain::SPEC, "ads1015")?;
        let dht22 = sensor_settings(
            self.services.dht22,
            &rollcall_services::dht22::SPEC,
            "dht11",
        )?;
        let sonar = sensor_settings(
            self.services.sonar,
            &rollcall_services::sonar::SPEC,
            "srf04",
        )?;
        let dac = dac_settings(self.services.dac)?;
        let display = display_settings(self.services.display)?;
        let mut names: Vec<String> = ["system", "gpio", "ain", "dac", "dht22", "sonar", "display"]
            .map(str::to_owned)
            .to_vec();
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
            credentials,
            ca_file: self.ca_file,
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
            keepalive: Duration::from_secs(keepalive_s),
            cluster_key: self.cluster_key.map(String::into_bytes),
            system_interval,
            gpio,
            ain,
            dht22,
            sonar,
            dac,
            display,
            sysfs_root: self.hw.sysfs_root.unwrap_or_else(|| PathBuf::from("/sys")),
            announce: self.announce,
        })
    }
}

fn invalid(field: &'static str, reason: String) -> AgentError {
    AgentError::Invalid { field, reason }
}

/// A reading service's settings, its configuration checked now so that
/// `agent --check` finds mistakes.
fn sensor_settings(
    raw: RawSensor,
    spec: &Spec,
    device: &str,
) -> Result<Option<SensorSettings>, AgentError> {
    let field = match spec.name {
        "ain" => "services.ain.config",
        "dht22" => "services.dht22.config",
        _ => "services.sonar.config",
    };
    if let Some(config) = &raw.config {
        config.validate(spec).map_err(|e| invalid(field, e))?;
    }
    Ok((raw.enabled == Some(true)).then(|| SensorSettings {
        device: raw.device.unwrap_or_else(|| device.to_owned()),
        config: raw.config,
    }))
}

fn dac_settings(raw: RawDac) -> Result<Option<DacSettings>, AgentError> {
    if let Some(config) = &raw.config {
        let value = serde_json::to_value(config).unwrap_or_default();
        DacConfig::from_json(value).map_err(|e| invalid("services.dac.config", e))?;
    }
    let max_code = raw.max_code.unwrap_or(4095);
    if !(1..=0xFF_FFFF).contains(&max_code) {
        return Err(invalid(
            "services.dac.max_code",
            "from 1 to 16777215 (24 bits)".into(),
        ));
    }
    Ok((raw.enabled == Some(true)).then(|| DacSettings {
        device: raw.device.unwrap_or_else(|| "mcp4725".to_owned()),
        max_code,
        config: raw.config,
    }))
}

fn display_settings(raw: RawDisplay) -> Result<Option<DisplaySettings>, AgentError> {
    if let Some(config) = &raw.config {
        config
            .check()
            .map_err(|e| invalid("services.display.config", e))?;
    }
    let (cols, rows) = (raw.cols.unwrap_or(16), raw.rows.unwrap_or(2));
    rollcall_hw::display::hd44780::check_size(cols, rows)
        .map_err(|e| invalid("services.display", e.to_string()))?;
    let address = raw.address.unwrap_or(0x27);
    if !(0x08..=0x77).contains(&address) {
        return Err(invalid(
            "services.display.address",
            format!("{address:#x} is not a 7-bit I2C device address (0x08 to 0x77)"),
        ));
    }
    let buttons = raw.buttons.unwrap_or_else(|| vec!["A".into(), "B".into()]);
    for b in &buttons {
        check_name(b).map_err(|e| invalid("services.display.buttons", e.to_string()))?;
    }
    Ok((raw.enabled == Some(true)).then(|| DisplaySettings {
        i2c: raw.i2c.unwrap_or_else(|| PathBuf::from("/dev/i2c-1")),
        address,
        cols,
        rows,
        buttons,
        config: raw.config,
    }))
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

    #[test]
    fn the_printed_default_parses_and_validates() {
        let raw = RawConfig::from_toml(DEFAULT_TOML).unwrap();
        let cfg = RawConfig {
            hostname: Some("pizero1".into()),
            ..raw
        }
        .validate()
        .unwrap();
        assert_eq!(cfg.udp_listen.port(), 46464);
        assert_eq!(cfg.system_interval, Some(Duration::from_secs(30)));
        assert_eq!(
            cfg.broker,
            BrokerChoice::External(BrokerUrl::new("127.0.0.1", 1883))
        );
    }

    #[test]
    fn sensor_services_are_off_unless_enabled_and_their_tables_are_checked() {
        let cfg = RawConfig::from_toml(DEFAULT_TOML)
            .map(|raw| RawConfig {
                hostname: Some("a".into()),
                ..raw
            })
            .unwrap()
            .validate()
            .unwrap();
        assert!(cfg.ain.is_none() && cfg.dht22.is_none() && cfg.sonar.is_none());
        assert!(cfg.dac.is_none() && cfg.display.is_none());
        let on = "hostname = \"a\"\n[services.dht22]\nenabled = true\n\
                  [services.display]\nenabled = true\nconfig = { input = \"/display\" }\n";
        let cfg = RawConfig::from_toml(on).unwrap().validate().unwrap();
        assert_eq!(cfg.dht22.unwrap().device, "dht11");
        assert_eq!(cfg.display.unwrap().address, 0x27);
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
        ] {
            let err = RawConfig::from_toml(toml).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
    }
}
