//! The `system` service's registry entry: `[services.system]`, on by
//! default, its readings from `/proc` and `/sys` or simulated.

use std::sync::Arc;
use std::time::Duration;

use rollcall_hw::HwError;
use rollcall_hw::system::{LinuxSystem, SimSystem, SystemSource};
use rollcall_services::system::SystemService;
use serde::Deserialize;

use crate::AgentError;
use crate::registry::{BuildEnv, Built, Builtin, Common, Settings, invalid, raw_table, seed_of};

/// The entry.
pub static SYSTEM: System = System;

/// `[services.system]`.
pub struct System;

/// `[services.system]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    /// Whether the service runs (default: yes).
    pub enabled: Option<bool>,
    /// Seconds between published readings.
    pub interval_s: Option<u64>,
}

/// The system service's settings.
#[derive(Debug, Clone)]
pub struct SystemSettings {
    /// Between published readings.
    pub interval: Duration,
}

impl Builtin for System {
    fn name(&self) -> &'static str {
        "system"
    }

    fn default_toml(&self) -> String {
        "[services.system]\nenabled = true\ninterval_s = 30\n".to_owned()
    }

    fn check_shape(&self, table: &toml::Value) -> Result<(), String> {
        raw_table::<RawSystem>(Some(table.clone())).map(drop)
    }

    fn settings(
        &self,
        table: Option<toml::Value>,
        _common: Common,
    ) -> Result<Option<Arc<dyn Settings>>, AgentError> {
        let raw: RawSystem = raw_table(table).map_err(|e| invalid("system", "", e))?;
        match (raw.enabled, raw.interval_s) {
            (Some(false), _) => Ok(None),
            (_, Some(secs)) if !(1..=86_400).contains(&secs) => {
                Err(invalid("system", "interval_s", "1 to 86400"))
            }
            (_, secs) => Ok(Some(Arc::new(SystemSettings {
                interval: Duration::from_secs(secs.unwrap_or(30)),
            }))),
        }
    }
}

impl Settings for SystemSettings {
    fn build(&self, env: &BuildEnv<'_>) -> Result<Built, HwError> {
        let source: Box<dyn SystemSource> = if env.sim {
            Box::new(SimSystem::new(seed_of(env.hostname)))
        } else {
            Box::new(LinuxSystem::default())
        };
        Ok(Built::plain(SystemService::new(source, self.interval)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
