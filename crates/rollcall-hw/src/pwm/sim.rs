//! A simulated PWM channel: it takes settings as a real channel would
//! (refusing the same impossible ones) and lets a test or the demo read them
//! back through a [`SimPwmHandle`]; no line switches.

use std::sync::{Arc, Mutex, PoisonError};

use super::{PwmChannel, PwmSettings};
use crate::HwError;

/// A PWM channel that records its settings.
#[derive(Debug, Default)]
pub struct SimPwm {
    settings: Arc<Mutex<Option<PwmSettings>>>,
}

/// Reads a [`SimPwm`]'s settings from elsewhere; clones share the channel.
#[derive(Debug, Clone)]
pub struct SimPwmHandle {
    settings: Arc<Mutex<Option<PwmSettings>>>,
}

impl SimPwm {
    /// A channel never set.
    pub fn new() -> Self {
        SimPwm::default()
    }

    /// A handle to read the settings back.
    pub fn handle(&self) -> SimPwmHandle {
        SimPwmHandle {
            settings: Arc::clone(&self.settings),
        }
    }
}

impl SimPwmHandle {
    /// The settings last applied.
    pub fn settings(&self) -> Option<PwmSettings> {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PwmChannel for SimPwm {
    fn apply(&mut self, settings: &PwmSettings) -> Result<(), HwError> {
        settings.check()?;
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = Some(*settings);
        Ok(())
    }

    fn settings(&self) -> Option<PwmSettings> {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Polarity;
    use super::*;

    #[test]
    fn records_what_it_takes_and_refuses_what_it_cannot() {
        let mut pwm = SimPwm::new();
        let handle = pwm.handle();
        assert_eq!(handle.settings(), None);
        let good = PwmSettings {
            period_ns: 1_000,
            duty_ns: 400,
            polarity: Polarity::Inversed,
            enabled: true,
        };
        pwm.apply(&good).unwrap();
        assert_eq!(handle.settings(), Some(good));
        let bad = PwmSettings {
            duty_ns: 2_000,
            ..good
        };
        assert!(pwm.apply(&bad).is_err());
        assert_eq!(pwm.settings(), Some(good));
    }
}
