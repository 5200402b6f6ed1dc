//! The `gpio` service's registry entry: `[services.gpio]`, on by default
//! where there is a chip; the simulated Pi header under `--sim`, else the
//! Linux character device with hardware PWM from sysfs.

use std::sync::Arc;

use rollcall_hw::HwError;
use rollcall_hw::gpio::cdev::CdevChip;
use rollcall_hw::gpio::shared::SharedChip;
use rollcall_hw::gpio::sim::SimChip;
use rollcall_hw::pwm::PiPwm;
use rollcall_hw::pwm::sim::SimPwm;
use rollcall_hw::pwm::soft::SoftPwm;
use rollcall_hw::pwm::sysfs::SysfsPwm;
use rollcall_services::gpio::config::PI_LINES;
use rollcall_services::gpio::{GpioConfig, GpioService, PwmLine, PwmOpener, SavedState};
use serde::Deserialize;

use crate::AgentError;
use crate::registry::{BuildEnv, Built, Builtin, Common, Settings, invalid, raw_table};
use crate::sim::SimGpio;

/// The entry.
pub static GPIO: Gpio = Gpio;

/// `[services.gpio]`.
pub struct Gpio;

/// `[services.gpio]` as written.
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

/// The GPIO service's settings.
#[derive(Debug, Clone)]
pub struct GpioSettings {
    /// `auto`, a path or a label.
    pub chip: String,
    /// The configuration applied when none was saved.
    pub config: Option<GpioConfig>,
}

impl Builtin for Gpio {
    fn name(&self) -> &'static str {
        "gpio"
    }

    fn default_toml(&self) -> String {
        r#"# The GPIO service: outputs, PWM and inputs, configured over
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
"#
        .to_owned()
    }

    fn check_shape(&self, table: &toml::Value) -> Result<(), String> {
        raw_table::<RawGpio>(Some(table.clone())).map(drop)
    }

    fn settings(
        &self,
        table: Option<toml::Value>,
        common: Common,
    ) -> Result<Option<Arc<dyn Settings>>, AgentError> {
        let raw: RawGpio = raw_table(table).map_err(|e| invalid("gpio", "", e))?;
        // A Raspberry Pi header's lines, or the simulated one: the
        // configuration is checked now, so `agent --check` finds bad pins.
        if let Some(config) = &raw.config
            && (common.sim || raw.chip.as_deref().is_none_or(|c| c == "auto"))
        {
            config
                .validate(PI_LINES)
                .map_err(|e| invalid("gpio", "config", e))?;
        }
        if raw.enabled == Some(false) {
            return Ok(None);
        }
        Ok(Some(Arc::new(GpioSettings {
            chip: raw.chip.unwrap_or_else(|| "auto".to_owned()),
            config: raw.config,
        })))
    }
}

impl Settings for GpioSettings {
    fn build(&self, env: &BuildEnv<'_>) -> Result<Built, HwError> {
        let configured = self.config.clone().and_then(|config| {
            serde_json::to_value(SavedState {
                config,
                ..SavedState::default()
            })
            .ok()
        });
        if env.sim {
            let chip = SimChip::pi();
            let handle = chip.handle();
            let opener: PwmOpener = Box::new(|_pin| {
                Ok(PwmLine {
                    channel: Box::new(SimPwm::default()),
                    on_gpio_line: false,
                })
            });
            return Ok(Built {
                service: Box::new(GpioService::new(Box::new(chip), opener)),
                sim: Some(Box::new(SimGpio(handle))),
                configured,
            });
        }
        let linux = match self.chip.as_str() {
            "auto" => CdevChip::open_pi()?,
            path if path.starts_with('/') => CdevChip::open(path)?,
            label => CdevChip::open_by_label(&[label])?,
        };
        // Shared, so that software PWM can drive lines of the chip the service owns.
        let chip = SharedChip::new(Box::new(linux));
        let lines = chip.clone();
        // The header's hardware PWM: the BCM2835's two channels on a Pi 1 to
        // 4, RP1's four on a Pi 5, told apart by the device tree.
        let sysfs_root = env.sysfs_root.to_owned();
        let board = PiPwm::detect(&sysfs_root);
        let channel_of = board.channel_of();
        let opener: PwmOpener = Box::new(move |pin| {
            Ok(match channel_of(pin) {
                Some((_, channel)) => PwmLine {
                    // Looked up at each open: the overlay may be loaded later.
                    channel: Box::new(SysfsPwm::open(
                        &sysfs_root,
                        board.sysfs_chip(&sysfs_root)?,
                        channel,
                    )?),
                    on_gpio_line: false,
                },
                None => PwmLine {
                    channel: Box::new(SoftPwm::new(lines.line_setter(pin))),
                    on_gpio_line: true,
                },
            })
        });
        let service = GpioService::new(Box::new(chip), opener).with_pwm_channels(channel_of);
        Ok(Built {
            service: Box::new(service),
            sim: None,
            configured,
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
