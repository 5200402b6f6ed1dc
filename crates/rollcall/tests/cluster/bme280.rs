//! The `bme280` service over MQTT, as the other sensors are tested: on the
//! simulated sensor (its three readings with their units, its description's
//! ranges, a failing read seen on the error topic and in the health, and
//! recovery, on the embedded broker and on Mosquitto), and on folders shaped
//! like the kernel's `bmp280` IIO driver's, through the agent.

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Asker;
use super::sensors::{health, json_on, until};
use crate::support::*;

async fn read_fail_recover(broker: rollcall_net::BrokerUrl) {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let state = tempfile::tempdir().unwrap();
    let mut config = host_config("weather1", &broker, free_udp_port());
    config.state_dir = Some(state.path().to_owned());
    config.services = rollcall_agent::RawConfig::from_toml(
        "[services.gpio]\nenabled = false\n[services.bme280]\nenabled = true\n",
    )
    .unwrap()
    .services;
    let a = agent(config, &shutdown).await;
    let mut me = Asker::new(&broker, &shutdown, &tracker).await;
    me.listen("/weather1/#").await;
    me.listen("/me/#").await;

    me.send("/weather1/getapps", r#"{"topic":"/me/apps"}"#)
        .await;
    assert_eq!(
        json_on(&mut me, "/me/apps").await["apps"],
        json!(["bme280", "system"])
    );
    // Configured, it reads at once: °C, % and hPa, each in its range.
    me.send("/weather1/bme280/control", r#"{"interval_ms": 1000}"#)
        .await;
    for (item, unit, range) in [
        ("temperature", "°C", -40.0..=85.0),
        ("humidity", "%", 0.0..=100.0),
        ("pressure", "hPa", 300.0..=1100.0),
    ] {
        let v = json_on(&mut me, &format!("/weather1/bme280/{item}")).await;
        assert_eq!(v["unit"], unit, "{item}: {v}");
        assert!(range.contains(&v["value"].as_f64().unwrap()), "{item}: {v}");
    }
    // The description carries the units and ranges.
    me.send(
        "/weather1/bme280/get/interface/outputs",
        r#"{"topic":"/me/outputs"}"#,
    )
    .await;
    let outputs = json_on(&mut me, "/me/outputs").await;
    let pressure = outputs["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "pressure")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            pressure["unit"].clone(),
            pressure["min"].clone(),
            pressure["max"].clone()
        ),
        (json!("hPa"), json!(300.0), json!(1100.0))
    );
    // Two failed reads: each on the error topic, the health an alert; then ok.
    me.send("/weather1/sim/bme280/fail", "2").await;
    let error = until(&mut me, "/weather1/bme280/error", |e| e["failures"] == 1).await;
    assert!(
        error["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{error}"
    );
    until(&mut me, "/weather1/bme280/$description", |d| {
        health(d) == "alert"
    })
    .await;
    until(&mut me, "/weather1/bme280/$description", |d| {
        health(d) == "ok"
    })
    .await;
    until(&mut me, "/weather1/bme280/pressure", |v| {
        v["value"].is_number()
    })
    .await;
    shutdown.cancel();
    a.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bme280_over_mqtt_on_the_embedded_broker() {
    read_fail_recover(embedded_broker()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bme280_over_mqtt_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::for_test("bme280_over_mqtt_on_mosquitto") else {
        return;
    };
    read_fail_recover(mosquitto.url()).await;
}

/// The Linux backend: the agent reads the `bmp280` driver's files (the
/// device named `bme280`) in milli-units and kilopascals and publishes °C,
/// % and hPa; a bad configuration in the file is refused by `--check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bme280_reads_the_kernel_drivers_files() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let state = tempfile::tempdir().unwrap();
    let sysfs = tempfile::tempdir().unwrap();
    let dir = sysfs.path().join("bus/iio/devices/iio:device0");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in [
        ("name", "bme280"),
        ("in_temp_input", "21340"),
        ("in_humidityrelative_input", "48250"),
        ("in_pressure_input", "101.325"),
    ] {
        std::fs::write(dir.join(file), format!("{text}\n")).unwrap();
    }
    let mut me = Asker::new(&broker, &shutdown, &tracker).await;
    me.listen("/weather1/#").await;
    let mut config = host_config("weather1", &broker, free_udp_port());
    config.sim = Some(false);
    config.state_dir = Some(state.path().to_owned());
    config.hw.sysfs_root = Some(sysfs.path().to_owned());
    config.services = rollcall_agent::RawConfig::from_toml(
        "[services.system]\nenabled = false\n[services.gpio]\nenabled = false\n\
         [services.bme280]\nenabled = true\nconfig = { interval_ms = 1000 }\n",
    )
    .unwrap()
    .services;
    let a = agent(config, &shutdown).await;
    let t = json_on(&mut me, "/weather1/bme280/temperature").await;
    let h = json_on(&mut me, "/weather1/bme280/humidity").await;
    let p = json_on(&mut me, "/weather1/bme280/pressure").await;
    assert_eq!(
        (t["value"].clone(), t["unit"].clone()),
        (json!(21.34), json!("°C"))
    );
    assert_eq!(
        (h["value"].clone(), h["unit"].clone()),
        (json!(48.25), json!("%"))
    );
    assert_eq!(
        (p["value"].clone(), p["unit"].clone()),
        (json!(1013.25), json!("hPa"))
    );
    shutdown.cancel();
    a.join().await.unwrap();

    // Faster than the sensor allows: refused with its table's name.
    let err = rollcall_agent::RawConfig::from_toml(
        "hostname = \"a\"\n[services.bme280]\nconfig = { interval_ms = 10 }\n",
    )
    .unwrap()
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("services.bme280.config"), "{err}");
}
