//! The IIO sysfs backends against folders shaped like
//! `/sys/bus/iio/devices`, with the files the Raspberry Pi overlays' drivers
//! create (`dht11`, `ads1015`, `mcp3008`, `srf04`, `mcp4725`), and their
//! real failure modes: a read that returns EIO, a device that goes away and
//! comes back under another number, a file with nonsense in it.

use std::fs;
use std::path::{Path, PathBuf};

use rollcall_hw::HwError;
use rollcall_hw::iio::sysfs::{IioDac, IioSensor, find_device};
use rollcall_hw::iio::{Channel, Dac, Quantity, Sensor};

/// A device folder `iio:device{n}` named `name` with `files`.
fn device(root: &Path, n: u32, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(format!("bus/iio/devices/iio:device{n}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("name"), format!("{name}\n")).unwrap();
    for (file, text) in files {
        fs::write(dir.join(file), format!("{text}\n")).unwrap();
    }
    dir
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_dht22_on_the_dht11_driver_reads_in_degrees_and_percent() {
    let root = tempfile::tempdir().unwrap();
    device(root.path(), 0, "iio-hwmon", &[("in_temp_input", "99000")]);
    device(
        root.path(),
        1,
        "dht11@4",
        &[
            ("in_temp_input", "23400"),
            ("in_humidityrelative_input", "45600"),
        ],
    );
    let mut s = IioSensor::new(root.path(), "dht11");
    let t = s.read(Channel::plain(Quantity::Temperature)).unwrap();
    assert!(close(t.value, 23.4), "{t:?}");
    assert_eq!(t.raw, None);
    let h = s.read(Channel::plain(Quantity::Humidity)).unwrap();
    assert!(close(h.value, 45.6), "{h:?}");
}

#[test]
fn adcs_read_raw_times_scale_from_the_channel_or_the_type() {
    let root = tempfile::tempdir().unwrap();
    // ti-ads1015: a scale per channel (mV per code at its gain).
    device(
        root.path(),
        0,
        "ads1015",
        &[
            ("in_voltage0_raw", "1000"),
            ("in_voltage0_scale", "2.000000000"),
        ],
    );
    // mcp3008: one scale for every channel: 3300 mV / 1024.
    device(
        root.path(),
        1,
        "mcp3008",
        &[
            ("in_voltage3_raw", "512"),
            ("in_voltage_scale", "3.222656250"),
        ],
    );
    let mut ads = IioSensor::new(root.path(), "ads1015");
    let v = ads.read(Channel::indexed(Quantity::Voltage, 0)).unwrap();
    assert!(close(v.value, 2.0), "{v:?}");
    assert_eq!(v.raw, Some(1000));
    let mut mcp = IioSensor::new(root.path(), "mcp3008");
    let v = mcp.read(Channel::indexed(Quantity::Voltage, 3)).unwrap();
    assert!(close(v.value, 1.65), "{v:?}");
    assert_eq!(v.raw, Some(512));
    let err = mcp
        .read(Channel::indexed(Quantity::Voltage, 5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no channel voltage5"), "{err}");
}

#[test]
fn an_offset_is_added_before_scaling() {
    let root = tempfile::tempdir().unwrap();
    device(
        root.path(),
        0,
        "adc",
        &[
            ("in_voltage1_raw", "-100"),
            ("in_voltage1_offset", "200"),
            ("in_voltage1_scale", "0.5"),
        ],
    );
    let v = IioSensor::new(root.path(), "adc")
        .read(Channel::indexed(Quantity::Voltage, 1))
        .unwrap();
    assert!(close(v.value, 0.05), "{v:?}");
}

#[test]
fn an_hc_sr04_on_the_srf04_driver_reads_in_metres() {
    let root = tempfile::tempdir().unwrap();
    device(
        root.path(),
        2,
        "srf04",
        &[("in_distance_raw", "1234"), ("in_distance_scale", "0.001")],
    );
    let d = IioSensor::new(root.path(), "srf04")
        .read(Channel::plain(Quantity::Distance))
        .unwrap();
    assert!(close(d.value, 1.234), "{d:?}");
    assert_eq!(d.raw, Some(1234));
}

#[test]
fn a_read_that_returns_eio_is_an_error_and_the_next_good_read_works() {
    let root = tempfile::tempdir().unwrap();
    let dir = device(
        root.path(),
        0,
        "dht11",
        &[("in_humidityrelative_input", "50000")],
    );
    // Reading /proc/self/mem at offset 0 fails with EIO, as the dht11
    // driver's read does on a checksum error or a missed handshake.
    std::os::unix::fs::symlink("/proc/self/mem", dir.join("in_temp_input")).unwrap();
    let mut s = IioSensor::new(root.path(), "dht11");
    let err = s.read(Channel::plain(Quantity::Temperature)).unwrap_err();
    match &err {
        HwError::Io { path, source } => {
            assert_eq!(source.raw_os_error(), Some(5), "{err}");
            assert!(path.ends_with("in_temp_input"));
        }
        other => panic!("expected an I/O error, got {other}"),
    }
    fs::remove_file(dir.join("in_temp_input")).unwrap();
    fs::write(dir.join("in_temp_input"), "21000\n").unwrap();
    let t = s.read(Channel::plain(Quantity::Temperature)).unwrap();
    assert!(close(t.value, 21.0));
}

#[test]
fn a_device_that_goes_away_is_an_error_and_is_found_again_under_a_new_number() {
    let root = tempfile::tempdir().unwrap();
    let srf04 = |n, raw| {
        device(
            root.path(),
            n,
            "srf04",
            &[("in_distance_raw", raw), ("in_distance_scale", "0.001")],
        )
    };
    let dir = srf04(0, "500");
    let mut s = IioSensor::new(root.path(), "srf04");
    let d = Channel::plain(Quantity::Distance);
    assert!(close(s.read(d).unwrap().value, 0.5));
    fs::remove_dir_all(&dir).unwrap();
    let err = s.read(d).unwrap_err().to_string();
    assert!(err.contains("iio:device0"), "{err}");
    let err = s.read(d).unwrap_err().to_string();
    assert!(err.contains("no IIO device named `srf04`"), "{err}");
    srf04(3, "700");
    assert!(close(s.read(d).unwrap().value, 0.7));
}

#[test]
fn a_raw_value_without_a_scale_is_an_error_not_a_value_in_no_unit() {
    let root = tempfile::tempdir().unwrap();
    device(root.path(), 0, "srf04", &[("in_distance_raw", "1234")]);
    match IioSensor::new(root.path(), "srf04").read(Channel::plain(Quantity::Distance)) {
        Err(HwError::Parse { path, reason }) => {
            assert!(path.ends_with("in_distance_scale"), "{path:?}");
            assert!(reason.contains("no scale"), "{reason}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn nonsense_in_a_file_is_a_parse_error_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    device(
        root.path(),
        0,
        "ads1015",
        &[("in_voltage0_raw", "lots"), ("in_voltage1_raw", "5")],
    );
    fs::write(
        root.path()
            .join("bus/iio/devices/iio:device0/in_voltage1_scale"),
        "x",
    )
    .unwrap();
    let mut s = IioSensor::new(root.path(), "ads1015");
    for ch in [0, 1] {
        match s.read(Channel::indexed(Quantity::Voltage, ch)) {
            Err(HwError::Parse { path, .. }) => {
                assert!(path.to_string_lossy().contains(&format!("voltage{ch}")))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn no_device_folder_at_all_is_an_error_not_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let err = find_device(root.path(), "dht11").unwrap_err().to_string();
    assert!(err.contains("bus/iio/devices"), "{err}");
}

#[test]
fn an_mcp4725_takes_codes_and_gives_its_scale() {
    let root = tempfile::tempdir().unwrap();
    let dir = device(
        root.path(),
        0,
        "mcp4725",
        &[
            ("out_voltage0_raw", "0"),
            ("out_voltage_scale", "0.805664062"),
        ],
    );
    let mut dac = IioDac::new(root.path(), "mcp4725", 4095);
    assert_eq!(dac.max_code(), 4095);
    assert!((dac.volts_per_code(0).unwrap() - 3.3 / 4096.0).abs() < 1e-9);
    dac.write_code(0, 2048).unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("out_voltage0_raw")).unwrap(),
        "2048"
    );
    assert_eq!(dac.read_code(0).unwrap(), 2048);
    // A channel the device does not have: refused, and no file is created.
    assert!(dac.write_code(1, 5).is_err());
    assert!(!dir.join("out_voltage1_raw").exists());
    fs::remove_dir_all(&dir).unwrap();
    assert!(dac.write_code(0, 1).is_err());
}

#[test]
fn a_dac_scale_of_zero_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    device(
        root.path(),
        0,
        "mcp4725",
        &[("out_voltage0_raw", "0"), ("out_voltage_scale", "0")],
    );
    let mut dac = IioDac::new(root.path(), "mcp4725", 4095);
    let err = dac.volts_per_code(0).unwrap_err().to_string();
    assert!(err.contains("not a positive number"), "{err}");
}

/// The kernel's `bmp280` driver names a BME280's device `bme280` and gives
/// milli-degrees, milli-percent and kilopascals; rollcall publishes °C, %
/// and hPa.
#[test]
fn a_bme280_on_the_bmp280_driver_reads_in_degrees_percent_and_hectopascals() {
    let root = tempfile::tempdir().unwrap();
    device(root.path(), 0, "bmp280", &[("in_pressure_input", "99.0")]);
    device(
        root.path(),
        1,
        "bme280",
        &[
            ("in_temp_input", "21340"),
            ("in_humidityrelative_input", "48250"),
            ("in_pressure_input", "101.325"),
        ],
    );
    let mut s = IioSensor::new(root.path(), "bme280");
    let t = s.read(Channel::plain(Quantity::Temperature)).unwrap();
    assert!(close(t.value, 21.34), "{t:?}");
    let h = s.read(Channel::plain(Quantity::Humidity)).unwrap();
    assert!(close(h.value, 48.25), "{h:?}");
    let p = s.read(Channel::plain(Quantity::Pressure)).unwrap();
    assert!(close(p.value, 1013.25), "{p:?}");
    assert_eq!(Quantity::Pressure.unit(), "hPa");
    assert_eq!(Channel::plain(Quantity::Pressure).iio_name(), "pressure");
}
