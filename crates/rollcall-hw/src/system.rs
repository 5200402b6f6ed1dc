//! Facts about the host itself: uptime, load, memory and CPU temperature,
//! from `/proc` and `/sys/class/thermal` on Linux, or simulated.

use std::fs;
use std::path::{Path, PathBuf};

use crate::HwError;

/// One reading of the host's vital signs.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemSnapshot {
    /// Seconds since the host booted.
    pub uptime_s: f64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// Total memory, in kB.
    pub mem_total_kb: u64,
    /// Memory available to new programs, in kB.
    pub mem_available_kb: u64,
    /// CPU temperature in °C, where the host has a thermal zone.
    pub cpu_temp_c: Option<f64>,
}

/// Where system facts come from.
pub trait SystemSource: Send + Sync {
    /// Takes a reading; `now_ms` lets a simulation move with the caller's clock.
    fn read(&mut self, now_ms: u64) -> Result<SystemSnapshot, HwError>;
}

/// Reads `/proc` and `/sys` (or folders shaped like them, for tests).
#[derive(Debug, Clone)]
pub struct LinuxSystem {
    proc_root: PathBuf,
    sys_root: PathBuf,
}

impl LinuxSystem {
    /// Reads below `proc_root` (normally `/proc`) and `sys_root` (normally `/sys`).
    pub fn new(proc_root: impl Into<PathBuf>, sys_root: impl Into<PathBuf>) -> Self {
        LinuxSystem {
            proc_root: proc_root.into(),
            sys_root: sys_root.into(),
        }
    }

    /// The first thermal zone's temperature; CPU zones are zone 0 on a Pi.
    fn cpu_temp(&self) -> Option<f64> {
        let path = self.sys_root.join("class/thermal/thermal_zone0/temp");
        let milli: f64 = fs::read_to_string(path).ok()?.trim().parse().ok()?;
        Some(milli / 1000.0)
    }
}

impl Default for LinuxSystem {
    fn default() -> Self {
        LinuxSystem::new("/proc", "/sys")
    }
}

fn read(path: &Path) -> Result<String, HwError> {
    fs::read_to_string(path).map_err(|e| HwError::io(path, e))
}

fn parse_err(path: &Path, reason: &str) -> HwError {
    HwError::Parse {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The first `n` whitespace-separated numbers of a file.
fn leading_numbers<const N: usize>(path: &Path) -> Result<[f64; N], HwError> {
    let text = read(path)?;
    let mut out = [0.0; N];
    let mut words = text.split_whitespace();
    for slot in &mut out {
        *slot = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| parse_err(path, "expected numbers"))?;
    }
    Ok(out)
}

/// A `Key:   1234 kB` line of `/proc/meminfo`.
fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

impl SystemSource for LinuxSystem {
    fn read(&mut self, _now_ms: u64) -> Result<SystemSnapshot, HwError> {
        let [uptime_s] = leading_numbers::<1>(&self.proc_root.join("uptime"))?;
        let load = leading_numbers::<3>(&self.proc_root.join("loadavg"))?;
        let meminfo_path = self.proc_root.join("meminfo");
        let meminfo = read(&meminfo_path)?;
        let kb = |key| meminfo_kb(&meminfo, key).ok_or_else(|| parse_err(&meminfo_path, key));
        Ok(SystemSnapshot {
            uptime_s,
            load,
            mem_total_kb: kb("MemTotal")?,
            mem_available_kb: kb("MemAvailable")?,
            cpu_temp_c: self.cpu_temp(),
        })
    }
}

/// A host that boots when the simulation starts and breathes a little.
#[derive(Debug, Clone)]
pub struct SimSystem {
    started_ms: Option<u64>,
    seed: u64,
}

impl SimSystem {
    /// A simulated host; `seed` makes several of them differ.
    pub fn new(seed: u64) -> Self {
        SimSystem {
            started_ms: None,
            seed,
        }
    }
}

impl SystemSource for SimSystem {
    fn read(&mut self, now_ms: u64) -> Result<SystemSnapshot, HwError> {
        let started = *self.started_ms.get_or_insert(now_ms);
        let uptime_s = now_ms.saturating_sub(started) as f64 / 1000.0;
        // A slow wave per host, so dashboards show values that move.
        let phase = (uptime_s / 60.0 + self.seed as f64).sin();
        Ok(SystemSnapshot {
            uptime_s,
            load: [0.3 + 0.2 * phase, 0.25, 0.2],
            mem_total_kb: 512 * 1024,
            mem_available_kb: (300.0 * 1024.0 + 40.0 * 1024.0 * phase) as u64,
            cpu_temp_c: Some(45.0 + 5.0 * phase),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(dir: &Path, with_thermal: bool) -> LinuxSystem {
        let proc_root = dir.join("proc");
        let sys_root = dir.join("sys");
        fs::create_dir_all(&proc_root).unwrap();
        fs::write(proc_root.join("uptime"), "12345.67 40000.00\n").unwrap();
        fs::write(proc_root.join("loadavg"), "0.52 0.40 0.31 1/123 4567\n").unwrap();
        fs::write(
            proc_root.join("meminfo"),
            "MemTotal:        3884472 kB\nMemFree:  100 kB\nMemAvailable:    2000000 kB\n",
        )
        .unwrap();
        if with_thermal {
            let zone = sys_root.join("class/thermal/thermal_zone0");
            fs::create_dir_all(&zone).unwrap();
            fs::write(zone.join("temp"), "48312\n").unwrap();
        }
        LinuxSystem::new(proc_root, sys_root)
    }

    #[test]
    fn reads_proc_and_thermal_files() {
        let dir = tempfile::tempdir().unwrap();
        let snap = fake_host(dir.path(), true).read(0).unwrap();
        assert_eq!(snap.uptime_s, 12345.67);
        assert_eq!(snap.load, [0.52, 0.40, 0.31]);
        assert_eq!(snap.mem_total_kb, 3884472);
        assert_eq!(snap.mem_available_kb, 2000000);
        assert_eq!(snap.cpu_temp_c, Some(48.312));
    }

    #[test]
    fn no_thermal_zone_means_no_temperature() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            fake_host(dir.path(), false).read(0).unwrap().cpu_temp_c,
            None
        );
    }

    #[test]
    fn missing_or_garbled_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = fake_host(dir.path(), false);
        fs::write(dir.path().join("proc/loadavg"), "garbage").unwrap();
        assert!(host.read(0).unwrap_err().to_string().contains("loadavg"));
        fs::remove_file(dir.path().join("proc/uptime")).unwrap();
        assert!(host.read(0).unwrap_err().to_string().contains("uptime"));
    }

    #[test]
    fn this_machine_reads() {
        // Every Linux machine, CI's included, has /proc.
        let snap = LinuxSystem::default().read(0).unwrap();
        assert!(snap.mem_total_kb > 0);
    }

    #[test]
    fn the_simulation_moves_with_the_clock() {
        let mut sim = SimSystem::new(1);
        assert_eq!(sim.read(1000).unwrap().uptime_s, 0.0);
        assert_eq!(sim.read(6000).unwrap().uptime_s, 5.0);
    }
}
