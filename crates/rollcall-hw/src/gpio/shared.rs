//! One chip shared by its owner and the threads that drive some of its lines
//! (software PWM), each call taking the lock for just that call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{EdgeEvent, EventWaker, GpioChip, LineConfig, Pin};
use crate::HwError;

/// A [`GpioChip`] behind a lock; clones share the chip.
#[derive(Clone)]
pub struct SharedChip {
    chip: Arc<Mutex<Box<dyn GpioChip>>>,
}

impl SharedChip {
    /// Shares `chip`.
    pub fn new(chip: Box<dyn GpioChip>) -> Self {
        SharedChip {
            chip: Arc::new(Mutex::new(chip)),
        }
    }

    /// Every call changes the chip whole or not at all, so a lock poisoned by
    /// a panic elsewhere guards a consistent chip and is used as is.
    fn lock(&self) -> MutexGuard<'_, Box<dyn GpioChip>> {
        self.chip.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A setter for one output line, for [`crate::pwm::soft::SoftPwm`].
    pub fn line_setter(&self, pin: Pin) -> crate::pwm::soft::LineSetter {
        let shared = self.clone();
        Box::new(move |level| shared.lock().set(pin, level))
    }
}

impl GpioChip for SharedChip {
    fn line_count(&self) -> u32 {
        self.lock().line_count()
    }

    fn configure(&mut self, lines: &BTreeMap<Pin, LineConfig>) -> Result<(), HwError> {
        self.lock().configure(lines)
    }

    fn set(&mut self, pin: Pin, value: bool) -> Result<(), HwError> {
        self.lock().set(pin, value)
    }

    fn get(&mut self, pin: Pin) -> Result<bool, HwError> {
        self.lock().get(pin)
    }

    fn take_events(&mut self) -> Vec<EdgeEvent> {
        self.lock().take_events()
    }

    fn set_waker(&mut self, waker: EventWaker) {
        self.lock().set_waker(waker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpio::Bias;
    use crate::gpio::sim::SimChip;

    #[test]
    fn clones_drive_the_same_chip() {
        let sim = SimChip::pi();
        let handle = sim.handle();
        let mut shared = SharedChip::new(Box::new(sim));
        shared
            .configure(&BTreeMap::from([(
                5,
                LineConfig::Output {
                    initial: false,
                    bias: Bias::Disabled,
                },
            )]))
            .unwrap();
        let mut setter = shared.line_setter(5);
        setter(true).unwrap();
        assert_eq!(handle.level(5), Some(true));
        assert!(shared.clone().get(5).unwrap());
        assert!(shared.line_setter(6)(true).is_err());
    }
}
