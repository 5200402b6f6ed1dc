//! The reading services' registry entry (`ain`, `dht22`, `sonar`): one
//! entry type for every [`Spec`], read through the kernel's IIO driver named
//! by `device`, or simulated.

use std::sync::Arc;

use rollcall_hw::HwError;
use rollcall_hw::iio::sim::SimSensor;
use rollcall_hw::iio::sysfs::IioSensor;
use rollcall_services::sensor::{SensorConfig, SensorService, Spec};
use serde::Deserialize;

use crate::AgentError;
use crate::registry::{BuildEnv, Built, Builtin, Common, Settings, invalid, raw_table, seed_of};
use crate::sim::SimIio;

/// A reading service's entry: what the sensor is, the IIO device it is
/// read from when the table names none, and a note on that device for
/// `--print-config`.
pub struct Sensor {
    spec: &'static Spec,
    device: &'static str,
    note: &'static str,
}

impl Sensor {
    /// The entry for `spec`, read from the IIO device named `device` by
    /// default; `note` says which hardware that driver reads.
    pub const fn new(spec: &'static Spec, device: &'static str, note: &'static str) -> Self {
        Sensor { spec, device, note }
    }
}

/// `[services.{name}]` of a reading service as written.
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

/// A reading service's settings.
#[derive(Debug, Clone)]
pub struct SensorSettings {
    /// What the sensor is.
    pub spec: &'static Spec,
    /// The IIO device's name.
    pub device: String,
    /// The configuration applied when none was saved.
    pub config: Option<SensorConfig>,
}

impl Builtin for Sensor {
    fn name(&self) -> &'static str {
        self.spec.name
    }

    fn default_toml(&self) -> String {
        let Spec { name, doc, .. } = *self.spec;
        let (device, note) = (self.device, self.note);
        let interval = self.spec.default_interval_ms;
        format!(
            "# {doc}.\n[services.{name}]\nenabled = false\ndevice = \"{device}\"  # {note}\n\
             # config = {{ interval_ms = {interval} }}\n"
        )
    }

    fn check_shape(&self, table: &toml::Value) -> Result<(), String> {
        raw_table::<RawSensor>(Some(table.clone())).map(drop)
    }

    fn settings(
        &self,
        table: Option<toml::Value>,
        _common: Common,
    ) -> Result<Option<Arc<dyn Settings>>, AgentError> {
        let name = self.spec.name;
        let raw: RawSensor = raw_table(table).map_err(|e| invalid(name, "", e))?;
        if let Some(config) = &raw.config {
            config
                .validate(self.spec)
                .map_err(|e| invalid(name, "config", e))?;
        }
        if raw.enabled != Some(true) {
            return Ok(None);
        }
        Ok(Some(Arc::new(SensorSettings {
            spec: self.spec,
            device: raw.device.unwrap_or_else(|| self.device.to_owned()),
            config: raw.config,
        })))
    }
}

impl Settings for SensorSettings {
    fn build(&self, env: &BuildEnv<'_>) -> Result<Built, HwError> {
        let spec = *self.spec;
        let configured = self
            .config
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok());
        // A device missing at start is not fatal: the service reports it
        // and keeps trying.
        let (sensor, sim): (Box<dyn rollcall_hw::iio::Sensor>, _) = if env.sim {
            let seed = seed_of(env.hostname).wrapping_add(seed_of(spec.name));
            let sensor = SimSensor::new(seed);
            let handle = sensor.handle();
            (Box::new(sensor), Some(Box::new(SimIio(handle)) as _))
        } else {
            let sensor = IioSensor::new(env.sysfs_root, &self.device);
            (Box::new(sensor), None)
        };
        Ok(Built {
            service: Box::new(SensorService::new(spec, sensor)),
            sim,
            configured,
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
