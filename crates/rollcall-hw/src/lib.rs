//! Hardware behind small synchronous traits, each with a Linux backend that
//! reads the kernel's files and a simulated backend for tests and the demo.
//!
//! Only the Linux backends here open device or sysfs files; everything that
//! decides what to do with a reading lives in `rollcall-services`, which both
//! backends feed.

pub mod display;
mod error;
pub mod gpio;
pub mod iio;
pub mod pwm;
pub mod system;

pub use error::HwError;
