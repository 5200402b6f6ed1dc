//! The built-in services' registry entries, one file each (the reading
//! services share one entry type): see [`crate::registry`].

pub mod dac;
pub mod display;
pub mod gpio;
pub mod sensor;
pub mod system;
