//! The one table of built-in services. Each entry says everything the agent
//! knows about one service: its name, its `[services.NAME]` table and the
//! commented text `--print-config` shows for it, how that table is checked,
//! how the service is built on simulated and on real hardware, the state it
//! starts from when it saved none, and its simulated controls. Configuration
//! parsing, `--print-config`, `--check`, restoring, the `--sim` topics and
//! the demo all go through this table; nothing else names a service.

use std::any::Any;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use rollcall_hw::HwError;
use rollcall_services::Service;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AgentError;
use rollcall_services::{ain, bme280, dht22, sonar};

use crate::builtin::sensor::Sensor;
use crate::builtin::{dac, display, gpio, system};
use crate::sim::SimControl;

/// Every built-in service, in the order the agent runs them.
pub static BUILTINS: &[&dyn Builtin] = &[
    &system::SYSTEM,
    &gpio::GPIO,
    &Sensor::new(
        &ain::SPEC,
        "ads1015",
        "an ADS1115 too (its driver names both so); or mcp3008",
    ),
    &Sensor::new(
        &dht22::SPEC,
        "dht11",
        "the dht11 driver also reads the DHT22",
    ),
    &Sensor::new(&sonar::SPEC, "srf04", "an HC-SR04"),
    &dac::DAC,
    &display::DISPLAY,
    &Sensor::new(
        &bme280::SPEC,
        "bme280",
        "a BME280 on I2C: dtoverlay=i2c-sensor,bme280",
    ),
];

/// The names of the built-in services.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|b| b.name())
}

/// The entry named `name`.
pub fn find(name: &str) -> Option<&'static dyn Builtin> {
    BUILTINS.iter().copied().find(|b| b.name() == name)
}

/// What a built-in's table is checked against besides itself.
#[derive(Debug, Clone, Copy)]
pub struct Common {
    /// Simulated hardware.
    pub sim: bool,
}

/// Where a service is built: what its hardware depends on.
#[derive(Debug, Clone, Copy)]
pub struct BuildEnv<'a> {
    /// Simulated hardware.
    pub sim: bool,
    /// The host's name (simulated values are seeded with it).
    pub hostname: &'a str,
    /// Where sysfs is.
    pub sysfs_root: &'a Path,
}

/// A service, built, with what the core keeps beside it.
pub struct Built {
    /// The service.
    pub service: Box<dyn Service>,
    /// Its simulated hardware's controls, when simulated.
    pub sim: Option<Box<dyn SimControl>>,
    /// The state it starts from when it saved none, in the shape its
    /// `restore` takes (the configuration file's `config`).
    pub configured: Option<Value>,
}

impl Built {
    /// A service with no simulated controls and no configured state.
    pub fn plain(service: impl Service + 'static) -> Self {
        Built {
            service: Box::new(service),
            sim: None,
            configured: None,
        }
    }
}

/// One built-in service, as the registry knows it.
pub trait Builtin: Sync {
    /// Its name in topics and in `[services.NAME]`.
    fn name(&self) -> &'static str;

    /// Its table for `--print-config`, commented, with the defaults.
    fn default_toml(&self) -> String;

    /// Whether its table has the right shape (unknown keys, wrong types):
    /// checked when the file is read, so the error names the key.
    fn check_shape(&self, table: &toml::Value) -> Result<(), String>;

    /// Its settings from its table (`None` when the file has none), checked
    /// whole; `None` when the service is off.
    fn settings(
        &self,
        table: Option<toml::Value>,
        common: Common,
    ) -> Result<Option<Arc<dyn Settings>>, AgentError>;
}

/// A built-in service's checked settings: what it is built from.
pub trait Settings: Debug + Send + Sync + Any {
    /// Builds the service on simulated or real hardware. An error (no GPIO
    /// chip, no display on the bus) leaves the service out, with a warning.
    fn build(&self, env: &BuildEnv<'_>) -> Result<Built, HwError>;

    /// The settings as `Any`, for whoever knows their type.
    fn as_any(&self) -> &dyn Any;
}

/// Reads a service's table into its raw type (every key optional, unknown
/// keys refused); no table is the raw type's default.
pub fn raw_table<R: DeserializeOwned + Default>(table: Option<toml::Value>) -> Result<R, String> {
    match table {
        Some(table) => R::deserialize(table).map_err(|e| e.message().to_owned()),
        None => Ok(R::default()),
    }
}

/// The configuration error for `field` of service `name`.
pub fn invalid(name: &str, key: &str, reason: impl std::fmt::Display) -> AgentError {
    let field = if key.is_empty() {
        format!("services.{name}")
    } else {
        format!("services.{name}.{key}")
    };
    AgentError::Invalid {
        field,
        reason: reason.to_string(),
    }
}

/// A per-host number, so simulated hosts do not all show the same values.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().map(u64::from).sum()
}
