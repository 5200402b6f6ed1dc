//! The `display` service's registry entry: `[services.display]`, an HD44780
//! character LCD on a PCF8574 I2C backpack, or a simulated display with
//! buttons.

use std::path::PathBuf;
use std::sync::Arc;

use rollcall_hw::HwError;
use rollcall_hw::display::Display;
use rollcall_hw::display::hd44780::{Hd44780, check_size};
use rollcall_hw::display::sim::SimDisplay;
use rollcall_proto::topic::check_name;
use rollcall_services::display::{DisplayConfig, DisplayService};
use serde::Deserialize;

use crate::AgentError;
use crate::registry::{BuildEnv, Built, Builtin, Common, Settings, invalid, raw_table};
use crate::sim::SimButtons;

/// The entry.
pub static DISPLAY: DisplayEntry = DisplayEntry;

/// `[services.display]`.
pub struct DisplayEntry;

/// `[services.display]` as written.
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

impl Builtin for DisplayEntry {
    fn name(&self) -> &'static str {
        "display"
    }

    fn default_toml(&self) -> String {
        r#"# A 16x2 HD44780 character LCD on a PCF8574 I2C backpack. Text on
# /{hostname}/display/text, buttons on /{hostname}/display/buttons; the
# notes' topics: config = { input = "/display", output = "/dbuts", control = "/dcontrol" }
[services.display]
enabled = false
i2c = "/dev/i2c-1"
address = 0x27
cols = 16
rows = 2
# buttons = ["A", "B"]      # the simulated display's buttons
"#
        .to_owned()
    }

    fn check_shape(&self, table: &toml::Value) -> Result<(), String> {
        raw_table::<RawDisplay>(Some(table.clone())).map(drop)
    }

    fn settings(
        &self,
        table: Option<toml::Value>,
        _common: Common,
    ) -> Result<Option<Arc<dyn Settings>>, AgentError> {
        let raw: RawDisplay = raw_table(table).map_err(|e| invalid("display", "", e))?;
        if let Some(config) = &raw.config {
            config
                .check()
                .map_err(|e| invalid("display", "config", e))?;
        }
        let (cols, rows) = (raw.cols.unwrap_or(16), raw.rows.unwrap_or(2));
        check_size(cols, rows).map_err(|e| invalid("display", "", e))?;
        let address = raw.address.unwrap_or(0x27);
        if !(0x08..=0x77).contains(&address) {
            return Err(invalid(
                "display",
                "address",
                format!("{address:#x} is not a 7-bit I2C device address (0x08 to 0x77)"),
            ));
        }
        let buttons = raw.buttons.unwrap_or_else(|| vec!["A".into(), "B".into()]);
        for b in &buttons {
            check_name(b).map_err(|e| invalid("display", "buttons", e))?;
        }
        if raw.enabled != Some(true) {
            return Ok(None);
        }
        Ok(Some(Arc::new(DisplaySettings {
            i2c: raw.i2c.unwrap_or_else(|| PathBuf::from("/dev/i2c-1")),
            address,
            cols,
            rows,
            buttons,
            config: raw.config,
        })))
    }
}

impl Settings for DisplaySettings {
    fn build(&self, env: &BuildEnv<'_>) -> Result<Built, HwError> {
        let configured = self
            .config
            .as_ref()
            .map(|config| serde_json::json!({ "config": config }));
        let (hw, sim): (Box<dyn Display>, _) = if env.sim {
            let buttons: Vec<&str> = self.buttons.iter().map(String::as_str).collect();
            let display = SimDisplay::new(self.cols, self.rows, &buttons);
            let handle = display.handle();
            (Box::new(display), Some(Box::new(SimButtons(handle)) as _))
        } else {
            let lcd = Hd44780::open(&self.i2c, self.address, self.cols, self.rows)?;
            (Box::new(lcd), None)
        };
        Ok(Built {
            service: Box::new(DisplayService::new(hw)),
            sim,
            configured,
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
