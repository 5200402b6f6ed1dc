//! IIO devices read and written through sysfs,
//! `{sysfs_root}/bus/iio/devices/iio:deviceN/`, found by their `name` file:
//! the drivers Raspberry Pi overlays load (`dht11` for the DHT22,
//! `ti-ads1015` and `mcp3008` for analog in, `srf04` for the HC-SR04,
//! `mcp4725` for the DAC).
//!
//! A channel's value is `in_{chan}_input` (already scaled, in the kernel's
//! unit) where the driver gives one, else (`in_{chan}_raw` + offset) × scale,
//! offset and scale taken from the channel's own file or the one its type
//! shares (`in_voltage0_scale`, else `in_voltage_scale`); a raw value without
//! a scale is an error, not a value in no unit. The device's folder
//! is looked up again after any failure, so a device that goes away and
//! comes back under another number is found again.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::{Channel, Dac, Quantity, Sample, Sensor};
use crate::HwError;

/// Finds the device whose `name` file says `wanted` under
/// `{sysfs_root}/bus/iio/devices`. Device-tree instances are named
/// `{driver}@{address}` (`dht11@4`), so `dht11` finds those too.
pub fn find_device(sysfs_root: &Path, wanted: &str) -> Result<PathBuf, HwError> {
    let devices = sysfs_root.join("bus/iio/devices");
    let entries = fs::read_dir(&devices).map_err(|e| HwError::io(&devices, e))?;
    // The lowest-numbered match, whatever order the directory lists them in:
    // by number, so `iio:device2` comes before `iio:device10`.
    let mut dirs: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("iio:device")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    dirs.sort();
    for (_, dir) in dirs {
        let Ok(name) = fs::read_to_string(dir.join("name")) else {
            continue;
        };
        let name = name.trim();
        let at = name.strip_prefix(wanted);
        if at.is_some_and(|rest| rest.is_empty() || rest.starts_with('@')) {
            return Ok(dir);
        }
    }
    Err(HwError::io(
        devices,
        std::io::Error::new(
            ErrorKind::NotFound,
            format!("no IIO device named `{wanted}`"),
        ),
    ))
}

/// The contents of a sysfs file; `None` when it does not exist.
fn read_opt(path: &Path) -> Result<Option<String>, HwError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HwError::io(path, e)),
    }
}

fn parse<T: std::str::FromStr>(path: &Path, text: &str, what: &str) -> Result<T, HwError> {
    text.trim().parse().map_err(|_| HwError::Parse {
        path: path.to_owned(),
        reason: format!("{:?} is not {what}", text.trim()),
    })
}

/// An attribute of `channel` (`scale`, `offset`) from its own file or the
/// one its type shares; `None` when the driver gives neither.
fn shared_attr(
    dir: &Path,
    direction: &str,
    channel: Channel,
    attr: &str,
) -> Result<Option<f64>, HwError> {
    let own = dir.join(format!("{direction}_{}_{attr}", channel.iio_name()));
    let shared = dir.join(format!(
        "{direction}_{}_{attr}",
        channel.quantity.iio_type()
    ));
    for path in [own, shared] {
        if let Some(text) = read_opt(&path)? {
            return Ok(Some(parse(&path, &text, "a number")?));
        }
    }
    Ok(None)
}

/// Reads one input channel of the device in `dir`.
pub fn read_channel(dir: &Path, channel: Channel) -> Result<Sample, HwError> {
    let name = channel.iio_name();
    let to_unit = channel.quantity.from_kernel();
    let input = dir.join(format!("in_{name}_input"));
    if let Some(text) = read_opt(&input)? {
        let value: f64 = parse(&input, &text, "a number")?;
        return Ok(Sample {
            value: value * to_unit,
            raw: None,
        });
    }
    let raw_path = dir.join(format!("in_{name}_raw"));
    let Some(text) = read_opt(&raw_path)? else {
        // Neither file: the channel does not exist, or the device went away.
        fs::metadata(dir).map_err(|e| HwError::io(dir, e))?;
        return Err(HwError::io(
            &input,
            std::io::Error::new(
                ErrorKind::NotFound,
                format!("the device has no channel {name} (no in_{name}_input or in_{name}_raw)"),
            ),
        ));
    };
    let raw: i64 = parse(&raw_path, &text, "an integer")?;
    let offset = shared_attr(dir, "in", channel, "offset")?.unwrap_or(0.0);
    // A raw code without a scale is in no unit: taking it as one kernel unit
    // would publish an HC-SR04's millimetres as metres.
    let scale = shared_attr(dir, "in", channel, "scale")?.ok_or_else(|| HwError::Parse {
        path: dir.join(format!("in_{name}_scale")),
        reason: format!("the driver gives in_{name}_raw but no scale for it"),
    })?;
    Ok(Sample {
        value: (raw as f64 + offset) * scale * to_unit,
        raw: Some(raw),
    })
}

/// The device named `name`, kept found between reads and looked for again
/// after any failure.
#[derive(Debug)]
struct Located {
    sysfs_root: PathBuf,
    name: String,
    dir: Option<PathBuf>,
}

impl Located {
    fn new(sysfs_root: &Path, name: &str) -> Self {
        Located {
            sysfs_root: sysfs_root.to_owned(),
            name: name.to_owned(),
            dir: None,
        }
    }

    /// Runs `op` on the device's folder; a failure forgets the folder.
    fn with<T>(&mut self, op: impl FnOnce(&Path) -> Result<T, HwError>) -> Result<T, HwError> {
        let dir = match &self.dir {
            Some(dir) => dir.clone(),
            None => find_device(&self.sysfs_root, &self.name)?,
        };
        let result = op(&dir);
        self.dir = result.is_ok().then_some(dir);
        result
    }
}

/// A sensor read through IIO sysfs: a DHT22 (`dht11`), an ADC (`ads1015`,
/// `mcp3008`), an HC-SR04 (`srf04`).
#[derive(Debug)]
pub struct IioSensor {
    device: Located,
}

impl IioSensor {
    /// The device named `name` under `sysfs_root` (`/sys` on a real system).
    /// It need not exist yet: each read looks for it until it is found.
    pub fn new(sysfs_root: &Path, name: &str) -> Self {
        IioSensor {
            device: Located::new(sysfs_root, name),
        }
    }
}

impl Sensor for IioSensor {
    fn read(&mut self, channel: Channel) -> Result<Sample, HwError> {
        self.device.with(|dir| read_channel(dir, channel))
    }
}

/// A DAC driven through IIO sysfs (`mcp4725`): `out_voltageN_raw` takes the
/// code, `out_voltageN_scale` (or `out_voltage_scale`) gives millivolts per
/// code.
#[derive(Debug)]
pub struct IioDac {
    device: Located,
    max_code: u32,
}

impl IioDac {
    /// The DAC named `name` under `sysfs_root`, with codes 0..=`max_code`
    /// (4095 for the 12-bit MCP4725).
    pub fn new(sysfs_root: &Path, name: &str, max_code: u32) -> Self {
        IioDac {
            device: Located::new(sysfs_root, name),
            max_code,
        }
    }
}

fn out_raw(dir: &Path, channel: u32) -> PathBuf {
    dir.join(format!("out_voltage{channel}_raw"))
}

impl Dac for IioDac {
    fn max_code(&self) -> u32 {
        self.max_code
    }

    fn volts_per_code(&mut self, channel: u32) -> Result<f64, HwError> {
        let ch = Channel::indexed(Quantity::Voltage, channel);
        self.device.with(|dir| {
            let path = dir.join(format!("out_voltage{channel}_scale"));
            let scale = shared_attr(dir, "out", ch, "scale")?.ok_or_else(|| HwError::Parse {
                path: path.clone(),
                reason: "the driver gives no scale for the channel".into(),
            })?;
            // Volts are divided by it: zero or less would make every code wrong.
            if !(scale.is_finite() && scale > 0.0) {
                return Err(HwError::Parse {
                    path,
                    reason: format!("scale {scale} is not a positive number"),
                });
            }
            Ok(scale * Quantity::Voltage.from_kernel())
        })
    }

    fn write_code(&mut self, channel: u32, code: u32) -> Result<(), HwError> {
        self.device.with(|dir| {
            let path = out_raw(dir, channel);
            // Never created: a missing file is a missing channel or device.
            let mut file = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| HwError::io(&path, e))?;
            file.write_all(code.to_string().as_bytes())
                .map_err(|e| HwError::io(&path, e))
        })
    }

    fn read_code(&mut self, channel: u32) -> Result<u32, HwError> {
        self.device.with(|dir| {
            let path = out_raw(dir, channel);
            let text = fs::read_to_string(&path).map_err(|e| HwError::io(&path, e))?;
            parse(&path, &text, "a DAC code")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_whole_or_before_an_at() {
        let root = tempfile::tempdir().unwrap();
        let devices = root.path().join("bus/iio/devices");
        for (dir, name) in [("iio:device0", "dht110\n"), ("iio:device1", "dht11@4\n")] {
            fs::create_dir_all(devices.join(dir)).unwrap();
            fs::write(devices.join(dir).join("name"), name).unwrap();
        }
        assert_eq!(
            find_device(root.path(), "dht11").unwrap(),
            devices.join("iio:device1")
        );
        assert!(find_device(root.path(), "dht").is_err());
    }

    #[test]
    fn the_lowest_numbered_match_wins_by_number_not_by_name() {
        let root = tempfile::tempdir().unwrap();
        let devices = root.path().join("bus/iio/devices");
        for dir in ["iio:device10", "iio:device2", "iio:device11", "trigger0"] {
            fs::create_dir_all(devices.join(dir)).unwrap();
            fs::write(devices.join(dir).join("name"), "srf04\n").unwrap();
        }
        assert_eq!(
            find_device(root.path(), "srf04").unwrap(),
            devices.join("iio:device2")
        );
    }
}
