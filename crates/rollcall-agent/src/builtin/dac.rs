//! The `dac` service's registry entry: `[services.dac]`, an analog output
//! set in volts, on an IIO DAC (an MCP4725 by default) or simulated.

use std::sync::Arc;

use rollcall_hw::HwError;
use rollcall_hw::iio::Dac;
use rollcall_hw::iio::sim::SimDac;
use rollcall_hw::iio::sysfs::IioDac;
use rollcall_services::dac::{DacConfig, DacSaved, DacService};
use serde::Deserialize;

use crate::AgentError;
use crate::registry::{BuildEnv, Built, Builtin, Common, Settings, invalid, raw_table};
use crate::sim::SimIio;

/// The entry.
pub static DAC: DacEntry = DacEntry;

/// `[services.dac]`.
pub struct DacEntry;

/// `[services.dac]` as written.
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

impl Builtin for DacEntry {
    fn name(&self) -> &'static str {
        "dac"
    }

    fn default_toml(&self) -> String {
        r#"# An analog output, set in volts on /{hostname}/dac/set/{channel}.
[services.dac]
enabled = false
device = "mcp4725"
max_code = 4095
# config = { channels = [{ name = "pump_speed", channel = 0 }] }
"#
        .to_owned()
    }

    fn check_shape(&self, table: &toml::Value) -> Result<(), String> {
        raw_table::<RawDac>(Some(table.clone())).map(drop)
    }

    fn settings(
        &self,
        table: Option<toml::Value>,
        _common: Common,
    ) -> Result<Option<Arc<dyn Settings>>, AgentError> {
        let raw: RawDac = raw_table(table).map_err(|e| invalid("dac", "", e))?;
        if let Some(config) = &raw.config {
            let value = serde_json::to_value(config).unwrap_or_default();
            DacConfig::from_json(value).map_err(|e| invalid("dac", "config", e))?;
        }
        let max_code = raw.max_code.unwrap_or(4095);
        if !(1..=0xFF_FFFF).contains(&max_code) {
            return Err(invalid("dac", "max_code", "from 1 to 16777215 (24 bits)"));
        }
        if raw.enabled != Some(true) {
            return Ok(None);
        }
        Ok(Some(Arc::new(DacSettings {
            device: raw.device.unwrap_or_else(|| "mcp4725".to_owned()),
            max_code,
            config: raw.config,
        })))
    }
}

impl Settings for DacSettings {
    fn build(&self, env: &BuildEnv<'_>) -> Result<Built, HwError> {
        let configured = self.config.clone().and_then(|config| {
            serde_json::to_value(DacSaved {
                config,
                ..DacSaved::default()
            })
            .ok()
        });
        let (hw, sim): (Box<dyn Dac>, _) = if env.sim {
            let dac = SimDac::new();
            let handle = dac.handle();
            (Box::new(dac), Some(Box::new(SimIio(handle)) as _))
        } else {
            let dac = IioDac::new(env.sysfs_root, &self.device, self.max_code);
            (Box::new(dac), None)
        };
        Ok(Built {
            service: Box::new(DacService::new(hw)),
            sim,
            configured,
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
