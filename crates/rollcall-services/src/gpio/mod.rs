//! The GPIO service of the original notes: outputs, PWM and inputs on a
//! chip's lines, configured entirely over MQTT.
//!
//! [`config`] owns the configuration and its validation, [`text`] the notes'
//! text form of it.

pub mod config;
pub mod text;

pub use config::{ConfigError, GpioConfig};
