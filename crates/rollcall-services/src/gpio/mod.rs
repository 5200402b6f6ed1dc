//! The GPIO service of the original notes: outputs, PWM and inputs on a
//! chip's lines, configured entirely over MQTT.
//!
//! [`config`] owns the configuration and its validation, [`text`] the notes'
//! text form of it, [`service`] the state machine the agent runs.

pub mod config;
pub mod service;
pub mod text;

pub use config::{ConfigError, GpioConfig};
pub use service::{GpioError, GpioService, NotALevel, PwmLine, PwmOpener, SavedState};
