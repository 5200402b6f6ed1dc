//! Simulated sensors and DAC: plausible values that drift from read to read,
//! deterministic for a given seed, and a handle through which a test (or a
//! person, over the agent's `/{host}/sim/...` topics) makes reads fail or
//! the device go away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Channel, Dac, Quantity, Sample, Sensor};
use crate::HwError;

/// A simulated ADC's and DAC's reference and resolution: 3.3 V over 12 bits,
/// a code being 3.3 V / 4096 as the kernel's ADC and DAC drivers scale it
/// (`mcp320x`, `mcp4725`: reference / 2^bits).
const FULL_SCALE_V: f64 = 3.3;
const CODES: u32 = 4096;
const MAX_CODE: u32 = CODES - 1;

/// What a test can do to a simulated device from outside.
#[derive(Debug, Default)]
struct Faults {
    fail_next: u32,
    missing: bool,
    reads: u64,
}

impl Faults {
    /// The error the next operation gets, if it must fail; counts reads.
    fn check(&mut self, what: &str) -> Result<(), HwError> {
        self.reads += 1;
        if self.missing {
            return Err(HwError::io(
                format!("sim/{what}"),
                std::io::Error::new(std::io::ErrorKind::NotFound, "the device went away"),
            ));
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(HwError::io(
                format!("sim/{what}"),
                std::io::Error::other("simulated read failure (EIO)"),
            ));
        }
        Ok(())
    }
}

/// Controls a simulated device from outside: clone it freely.
#[derive(Debug, Clone, Default)]
pub struct SimHandle {
    faults: Arc<Mutex<Faults>>,
}

impl SimHandle {
    fn lock(&self) -> MutexGuard<'_, Faults> {
        // A panic elsewhere while holding it left plain counters behind.
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `n` reads (or writes) fail, as a DHT22's checksum
    /// errors or an I2C glitch do.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// Takes the device away (every read fails) or brings it back.
    pub fn set_missing(&self, missing: bool) {
        self.lock().missing = missing;
    }

    /// How many reads were tried so far, failed ones included.
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }
}

/// A tiny deterministic generator (SplitMix64): reproducible noise without
/// a dependency.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A number in -1..1 from `seed` and `n`.
fn noise(seed: u64, n: u64) -> f64 {
    (mix(seed ^ mix(n)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// A simulated DHT22, ADC or HC-SR04: each channel follows a slow wave
/// with a little noise around a plausible level.
#[derive(Debug)]
pub struct SimSensor {
    seed: u64,
    /// Reads so far per channel: the simulation's clock.
    counts: HashMap<Channel, u64>,
    handle: SimHandle,
}

impl SimSensor {
    /// A sensor whose values depend only on `seed` and the reads made.
    pub fn new(seed: u64) -> Self {
        SimSensor {
            seed,
            counts: HashMap::new(),
            handle: SimHandle::default(),
        }
    }

    /// The handle that makes reads fail.
    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }
}

impl Sensor for SimSensor {
    fn read(&mut self, channel: Channel) -> Result<Sample, HwError> {
        self.handle.lock().check(&channel.iio_name())?;
        let n = self.counts.entry(channel).or_default();
        *n += 1;
        let index = channel.index.unwrap_or(0);
        let seed = self.seed.wrapping_add(u64::from(index) * 7919);
        let phase = (seed % 628) as f64 / 100.0 + *n as f64 / 20.0;
        let wave = phase.sin();
        let jitter = noise(seed, *n);
        Ok(match channel.quantity {
            Quantity::Temperature => Sample {
                value: round(21.0 + 3.0 * wave + 0.2 * jitter, 1),
                raw: None,
            },
            Quantity::Humidity => Sample {
                value: round(55.0 + 10.0 * wave + 0.5 * jitter, 1),
                raw: None,
            },
            Quantity::Voltage => {
                let level = 0.3 * f64::from(index % 4) + 1.2 + 0.8 * wave + 0.02 * jitter;
                let code = (level / volts_per_code()).round() as i64;
                let code = code.clamp(0, i64::from(MAX_CODE));
                Sample {
                    value: code as f64 * volts_per_code(),
                    raw: Some(code),
                }
            }
            Quantity::Pressure => Sample {
                value: round(1013.0 + 8.0 * wave + 0.3 * jitter, 1),
                raw: None,
            },
            Quantity::Distance => {
                let mm = (900.0 + 400.0 * wave + 5.0 * jitter).round() as i64;
                Sample {
                    value: mm as f64 / 1000.0,
                    raw: Some(mm),
                }
            }
        })
    }
}

fn volts_per_code() -> f64 {
    FULL_SCALE_V / f64::from(CODES)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// A simulated 12-bit DAC on a 3.3 V supply, as an MCP4725 is
/// (Vout = 3.3 V × code / 4096). Every channel exists; a code above 4095 is
/// refused, as the `mcp4725` driver refuses it (EINVAL).
#[derive(Debug, Default)]
pub struct SimDac {
    codes: HashMap<u32, u32>,
    handle: SimHandle,
}

impl SimDac {
    /// A DAC with every channel at 0.
    pub fn new() -> Self {
        SimDac::default()
    }

    /// The handle that makes writes fail.
    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }
}

impl Dac for SimDac {
    fn max_code(&self) -> u32 {
        MAX_CODE
    }

    fn volts_per_code(&mut self, _channel: u32) -> Result<f64, HwError> {
        Ok(volts_per_code())
    }

    fn write_code(&mut self, channel: u32, code: u32) -> Result<(), HwError> {
        let what = format!("out_voltage{channel}");
        self.handle.lock().check(&what)?;
        if code > MAX_CODE {
            return Err(HwError::io(
                format!("sim/{what}"),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("code {code} is above {MAX_CODE}"),
                ),
            ));
        }
        self.codes.insert(channel, code);
        Ok(())
    }

    fn read_code(&mut self, channel: u32) -> Result<u32, HwError> {
        self.handle.lock().check(&format!("out_voltage{channel}"))?;
        Ok(self.codes.get(&channel).copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_values_and_values_move() {
        let t = Channel::plain(Quantity::Temperature);
        let mut a = SimSensor::new(7);
        let mut b = SimSensor::new(7);
        let va: Vec<f64> = (0..20).map(|_| a.read(t).unwrap().value).collect();
        let vb: Vec<f64> = (0..20).map(|_| b.read(t).unwrap().value).collect();
        assert_eq!(va, vb);
        assert!(va.iter().any(|v| *v != va[0]), "{va:?}");
        assert!(va.iter().all(|v| (15.0..30.0).contains(v)), "{va:?}");
    }

    #[test]
    fn voltages_agree_with_their_raw_codes() {
        let mut s = SimSensor::new(1);
        for i in 0..4 {
            let sample = s.read(Channel::indexed(Quantity::Voltage, i)).unwrap();
            let raw = sample.raw.unwrap();
            assert!((0..=4095).contains(&raw));
            assert!((sample.value - raw as f64 * 3.3 / 4096.0).abs() < 1e-9);
        }
    }

    #[test]
    fn fail_next_fails_that_many_reads_then_recovers() {
        let mut s = SimSensor::new(1);
        let h = s.handle();
        let d = Channel::plain(Quantity::Distance);
        h.fail_next(2);
        assert!(s.read(d).is_err());
        assert!(s.read(d).is_err());
        assert!(s.read(d).is_ok());
        h.set_missing(true);
        let err = s.read(d).unwrap_err().to_string();
        assert!(err.contains("went away"), "{err}");
        h.set_missing(false);
        assert!(s.read(d).is_ok());
        assert_eq!(h.reads(), 5);
    }

    #[test]
    fn the_dac_keeps_codes_per_channel() {
        let mut d = SimDac::new();
        d.write_code(1, 2048).unwrap();
        assert_eq!(d.read_code(1).unwrap(), 2048);
        assert_eq!(d.read_code(0).unwrap(), 0);
        d.handle().fail_next(1);
        assert!(d.write_code(0, 1).is_err());
        assert_eq!(d.read_code(0).unwrap(), 0);
        // Out of range: refused, not clamped, and the code stays.
        assert!(d.write_code(1, 4096).is_err());
        assert_eq!(d.read_code(1).unwrap(), 2048);
        d.write_code(1, 4095).unwrap();
    }
}
