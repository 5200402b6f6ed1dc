//! The sensor, DAC and display services over MQTT on simulated hardware, on
//! the embedded broker and on Mosquitto: configured, read with their units,
//! a failing read seen on the error topic and in the health, and recovery;
//! the DAC set in volts; the display on the notes' topics; bad
//! configuration refused with nothing changed; a restart.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Asker;
use crate::support::*;

/// `pibot01` with every sensor service and the display on, simulated.
async fn sensor_agent(
    broker: &rollcall_net::BrokerUrl,
    state: &std::path::Path,
    shutdown: &CancellationToken,
) -> rollcall_agent::Agent {
    sensor_agent_on(broker, state, shutdown, free_udp_port()).await
}

/// [`sensor_agent`], hearing roll-calls on `udp_port`.
async fn sensor_agent_on(
    broker: &rollcall_net::BrokerUrl,
    state: &std::path::Path,
    shutdown: &CancellationToken,
    udp_port: u16,
) -> rollcall_agent::Agent {
    let mut config = host_config("pibot01", broker, udp_port);
    config.state_dir = Some(state.to_owned());
    config.services = rollcall_agent::RawConfig::from_toml(
        "[services.ain]\nenabled = true\n[services.dht22]\nenabled = true\n\
         [services.sonar]\nenabled = true\n[services.dac]\nenabled = true\n\
         [services.display]\nenabled = true\nbuttons = [\"A\", \"B\"]\n",
    )
    .unwrap()
    .services;
    agent(config, shutdown).await
}

pub(crate) async fn json_on(me: &mut Asker, topic: &str) -> Value {
    serde_json::from_slice(&me.next_on(topic).await).unwrap()
}

/// The first message on `topic` that `pred` accepts, within 10 s.
pub(crate) async fn until(me: &mut Asker, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no accepted message on {topic} within 10 s"
        );
        let v = json_on(me, topic).await;
        if pred(&v) {
            return v;
        }
    }
}

/// Whether `actual` has everything `want` has (defaults filled in beside it).
fn contains(actual: &Value, want: &Value) -> bool {
    match (actual, want) {
        (Value::Object(a), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| a.get(k).is_some_and(|av| contains(av, wv))),
        (Value::Array(a), Value::Array(w)) => {
            a.len() == w.len() && a.iter().zip(w).all(|(av, wv)| contains(av, wv))
        }
        _ => actual == want,
    }
}

pub(crate) fn health(d: &Value) -> &str {
    d["health"]["status"].as_str().unwrap_or_default()
}

async fn configure_read_fail_recover(broker: rollcall_net::BrokerUrl) {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let state = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let a = sensor_agent_on(&broker, state.path(), &shutdown, port).await;
    let mut me = Asker::new(&broker, &shutdown, &tracker).await;
    me.listen("/pibot01/#").await;
    me.listen("/me/#").await;
    me.listen("/dbuts").await;

    // Each service answers getapps.
    me.send("/pibot01/getapps", r#"{"topic":"/me/apps"}"#).await;
    assert_eq!(
        json_on(&mut me, "/me/apps").await["apps"],
        json!(["ain", "dac", "dht22", "display", "gpio", "sonar", "system"])
    );

    // dht22: configured, it reads at once, in °C and %.
    me.send("/pibot01/dht22/control", r#"{"interval_ms": 2000}"#)
        .await;
    let t = json_on(&mut me, "/pibot01/dht22/temperature").await;
    assert_eq!(t["unit"], "°C");
    assert!(
        (-40.0..=80.0).contains(&t["value"].as_f64().unwrap()),
        "{t}"
    );
    let h = json_on(&mut me, "/pibot01/dht22/humidity").await;
    assert_eq!(h["unit"], "%");

    // ain: one named channel, volts and the raw code.
    me.send(
        "/pibot01/ain/control",
        r#"{"channels":[{"name":"soil","channel":2}],"interval_ms":200}"#,
    )
    .await;
    let soil = json_on(&mut me, "/pibot01/ain/soil").await;
    assert_eq!(soil["unit"], "V");
    let (v, raw) = (
        soil["value"].as_f64().unwrap(),
        soil["raw"].as_i64().unwrap(),
    );
    assert!((v - raw as f64 * 3.3 / 4096.0).abs() < 1e-5, "{soil}");

    // sonar: read on a get, in metres, and published too.
    me.send(
        "/pibot01/sonar/control",
        r#"{"interval_ms":100,"retry_ms":100}"#,
    )
    .await;
    json_on(&mut me, "/pibot01/sonar/distance").await;
    me.send("/pibot01/sonar/get/distance", r#"{"topic":"/me/d","id":3}"#)
        .await;
    let d = json_on(&mut me, "/me/d").await;
    assert_eq!(
        (d["id"].clone(), d["value"]["unit"].clone()),
        (json!(3), json!("m"))
    );

    // The description carries units and ranges (the retained one, on a
    // subscription of its own).
    me.listen("/pibot01/sonar/$description").await;
    let desc = until(&mut me, "/pibot01/sonar/$description", |d| {
        d["interfaces"]["outputs"][0]["name"] == "distance"
    })
    .await;
    let out = &desc["interfaces"]["outputs"][0];
    assert_eq!(
        (out["unit"].clone(), out["max"].clone()),
        (json!("m"), json!(4.0))
    );
    assert_eq!(health(&desc), "ok");

    // Three failed reads: each on the error topic, the health an alert;
    // then a good read, and the health back to ok.
    me.send("/pibot01/sim/sonar/fail", "3").await;
    let e = json_on(&mut me, "/pibot01/sonar/error").await;
    assert!(e["error"].as_str().unwrap().contains("distance: "), "{e}");
    assert!(e["ts"].as_u64().unwrap() > 0);
    let alert = until(&mut me, "/pibot01/sonar/$description", |d| {
        health(d) == "alert"
    })
    .await;
    assert!(
        alert["health"]["reason"]
            .as_str()
            .unwrap()
            .contains("simulated read failure"),
        "{alert}"
    );
    let failures: Vec<u64> = {
        let mut seen = vec![e["failures"].as_u64().unwrap()];
        while seen.len() < 3 {
            seen.push(
                json_on(&mut me, "/pibot01/sonar/error").await["failures"]
                    .as_u64()
                    .unwrap(),
            );
        }
        seen
    };
    assert_eq!(failures, [1, 2, 3]);
    until(&mut me, "/pibot01/sonar/$description", |d| {
        health(d) == "ok"
    })
    .await;
    json_on(&mut me, "/pibot01/sonar/distance").await;

    // dac: volts in, the volts the converter makes out.
    me.send("/pibot01/dac/set/out0", "1.5").await;
    let set = json_on(&mut me, "/pibot01/dac/out0").await;
    assert_eq!(
        (set["unit"].clone(), set["raw"].clone()),
        (json!("V"), json!(1862))
    );
    assert!((set["value"].as_f64().unwrap() - 1862.0 * 3.3 / 4096.0).abs() < 1e-5);

    // display: the notes' topics.
    me.send(
        "/pibot01/display/control",
        r#"{"input":"/display","output":"/dbuts","control":"/dcontrol"}"#,
    )
    .await;
    json_on(&mut me, "/pibot01/display/contents").await;
    me.send("/display", "Hello\nworld").await;
    let c = until(&mut me, "/pibot01/display/contents", |c| {
        c["rows"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("Hello"))
    })
    .await;
    assert!(c["rows"][1].as_str().unwrap().starts_with("world"), "{c}");
    me.send("/display", r#"{"text":"21C","row":1,"col":13}"#)
        .await;
    let c = json_on(&mut me, "/pibot01/display/contents").await;
    assert_eq!(c["rows"][1], "world        21C");
    me.send("/dcontrol", r#"{"brightness":20}"#).await;
    assert_eq!(
        json_on(&mut me, "/pibot01/display/contents").await["brightness"],
        20
    );
    // A roll-call: the display answers with the notes' flat fields.
    let mut scanner = scanner(&broker, &shutdown, &tracker);
    let report = scanner.scan(77, &broadcast(port, 1), |_| {}).await.unwrap();
    let host = report
        .hosts
        .iter()
        .find(|h| h.hostname == "pibot01")
        .unwrap();
    let display = host
        .services
        .iter()
        .find(|s| s.function == "display")
        .unwrap();
    assert_eq!(display.inputs.as_deref(), Some("/display"));
    assert_eq!(display.control.as_deref(), Some("/dcontrol"));
    let sonar = host
        .services
        .iter()
        .find(|s| s.function == "sonar")
        .unwrap();
    let distance = &sonar.interfaces.as_ref().unwrap().outputs[0];
    assert_eq!(
        (distance.unit.as_deref(), distance.min, distance.max),
        (Some("m"), Some(0.02), Some(4.0))
    );
    me.send("/pibot01/sim/display/button/A", "1").await;
    let b = json_on(&mut me, "/dbuts").await;
    assert_eq!(
        (b["button"].clone(), b["pressed"].clone()),
        (json!("A"), json!(true))
    );
    shutdown.cancel();
    a.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_over_mqtt_on_the_embedded_broker() {
    configure_read_fail_recover(embedded_broker()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_over_mqtt_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::for_test("sensors_over_mqtt_on_mosquitto") else {
        return;
    };
    configure_read_fail_recover(mosquitto.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sensor_configuration_gets_an_error_and_changes_nothing() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let state = tempfile::tempdir().unwrap();
    let a = sensor_agent(&broker, state.path(), &shutdown).await;
    let mut me = Asker::new(&broker, &shutdown, &tracker).await;
    me.listen("/pibot01/#").await;
    let good = [
        ("ain", r#"{"channels":[{"name":"soil","channel":1}]}"#),
        ("dht22", r#"{"interval_ms":3000}"#),
        ("sonar", r#"{"interval_ms":500}"#),
        ("dac", r#"{"channels":[{"name":"pump_speed","channel":0}]}"#),
        ("display", r#"{"input":"/display"}"#),
    ];
    for (svc, body) in good {
        me.send(&format!("/pibot01/{svc}/control"), body).await;
    }
    let cases = [
        ("ain", r#"{"channels":[]}"#, "at least one"),
        (
            "ain",
            r#"{"channels":[{"name":"error","channel":0}]}"#,
            "reserved",
        ),
        ("ain", r#"{"interval_ms":10}"#, "interval_ms"),
        ("dht22", r#"{"interval_ms":1000}"#, "interval_ms"),
        (
            "dht22",
            r#"{"channels":[{"name":"x","channel":0}]}"#,
            "no channels",
        ),
        ("dht22", "faster please", "expected a configuration"),
        (
            "sonar",
            r#"{"topics":{"distance":"/a/#"}}"#,
            "topics.distance",
        ),
        ("sonar", r#"{"range":4}"#, "range"),
        (
            "dac",
            r#"{"channels":[{"name":"7","channel":0}]}"#,
            "need a letter",
        ),
        (
            "dac",
            r#"{"channels":[{"name":"a","channel":0},{"name":"b","channel":0}]}"#,
            "used twice",
        ),
        ("display", r#"{"brightness":101}"#, "brightness"),
        ("display", r#"{"input":"/a/+"}"#, "input"),
        (
            "display",
            r#"{"output":"/x","contents":"/x"}"#,
            "two things",
        ),
    ];
    for (svc, body, needle) in cases {
        me.send(&format!("/pibot01/{svc}/control"), body).await;
        let e = json_on(&mut me, &format!("/pibot01/{svc}/error")).await;
        assert_eq!(e["ok"], false, "{svc} {body}");
        let error = e["error"].as_str().unwrap();
        assert!(error.contains(needle), "{svc} {body}: {error}");
    }
    // Each still has its good configuration.
    for (svc, body) in good {
        me.send(
            &format!("/pibot01/{svc}/get/config"),
            &format!(r#"{{"topic":"/pibot01/{svc}/me"}}"#),
        )
        .await;
        let v = json_on(&mut me, &format!("/pibot01/{svc}/me")).await;
        let want: Value = serde_json::from_str(body).unwrap();
        assert!(contains(&v["value"], &want), "{svc}: {v}");
    }
    // Bad values and unknown items on set and on the display's input.
    me.send("/pibot01/dac/set/pump_speed", "9").await;
    let e = json_on(&mut me, "/pibot01/dac/error").await;
    assert!(e["error"].as_str().unwrap().contains("out of range"), "{e}");
    me.send("/display", r#"{"text":"x","row":7}"#).await;
    let e = json_on(&mut me, "/pibot01/display/error").await;
    assert!(e["error"].as_str().unwrap().contains("outside"), "{e}");
    me.send("/pibot01/sim/sonar/fail", "lots").await;
    let e = json_on(&mut me, "/pibot01/sonar/error").await;
    assert!(e["error"].as_str().unwrap().contains("count"), "{e}");
    // A set the converter fails: an error answer, and the alert in the
    // description at once, though an error carries no outcome; a good set
    // clears it. (`#` does not bring `$description`: a subscription of its own.)
    me.listen("/pibot01/dac/$description").await;
    me.send("/pibot01/sim/dac/fail", "1").await;
    me.send("/pibot01/dac/set/pump_speed", "1").await;
    // The description goes out before the error answer: take both, in
    // whatever order they come.
    let (mut error, mut alert) = (None, false);
    tokio::time::timeout(Duration::from_secs(10), async {
        while error.is_none() || !alert {
            let msg = me.recv_within(Duration::from_secs(10)).await;
            let v: Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
            match msg.topic.as_str() {
                "/pibot01/dac/error" => error = Some(v),
                "/pibot01/dac/$description" => alert |= health(&v) == "alert",
                _ => {}
            }
        }
    })
    .await
    .expect("the error answer and the alert description within 10 s");
    let e = error.unwrap();
    assert!(e["error"].as_str().unwrap().contains("simulated"), "{e}");
    me.send("/pibot01/dac/set/pump_speed", "1").await;
    until(&mut me, "/pibot01/dac/$description", |d| health(d) == "ok").await;
    shutdown.cancel();
    a.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_configuration_and_dac_volts() {
    let broker = embedded_broker();
    let state = tempfile::tempdir().unwrap();
    let tracker = TaskTracker::new();
    let client_stop = CancellationToken::new();
    let mut me = Asker::new(&broker, &client_stop, &tracker).await;
    me.listen("/pibot01/#").await;

    let first = CancellationToken::new();
    let a = sensor_agent(&broker, state.path(), &first).await;
    me.send(
        "/pibot01/ain/control",
        r#"{"channels":[{"name":"tank","channel":3}],"topics":{"tank":"/pibot01/tank"}}"#,
    )
    .await;
    json_on(&mut me, "/pibot01/tank").await;
    me.send("/pibot01/dac/set/0", "2.0").await;
    json_on(&mut me, "/pibot01/dac/out0").await;
    first.cancel();
    a.join().await.unwrap();
    assert!(state.path().join("ain.json").is_file());
    assert!(state.path().join("dac.json").is_file());

    let second = CancellationToken::new();
    let b = sensor_agent(&broker, state.path(), &second).await;
    // The tank is read again on its own topic, straight after the start.
    json_on(&mut me, "/pibot01/tank").await;
    me.send("/pibot01/dac/get/out0", r#"{"topic":"/pibot01/dac/me"}"#)
        .await;
    assert_eq!(
        json_on(&mut me, "/pibot01/dac/me").await["value"]["raw"],
        2482
    );
    second.cancel();
    b.join().await.unwrap();
    client_stop.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_file_configures_a_service_that_saved_nothing() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let state = tempfile::tempdir().unwrap();
    let mut me = Asker::new(&broker, &shutdown, &tracker).await;
    me.listen("/garage/#").await;
    me.listen("/pibot01/#").await;
    let mut config = host_config("pibot01", &broker, free_udp_port());
    config.state_dir = Some(state.path().to_owned());
    config.services = rollcall_agent::RawConfig::from_toml(
        "[services.sonar]\nenabled = true\n\
         config = { interval_ms = 100, topics = { distance = \"/garage/distance\" } }\n\
         [services.display]\nenabled = true\nconfig = { input = \"/garage/display\" }\n",
    )
    .unwrap()
    .services;
    let a = agent(config, &shutdown).await;
    let d = json_on(&mut me, "/garage/distance").await;
    assert_eq!(d["unit"], "m");
    me.send("/garage/display", "open").await;
    until(&mut me, "/pibot01/display/contents", |c| {
        c["rows"][0].as_str().is_some_and(|r| r.starts_with("open"))
    })
    .await;
    shutdown.cancel();
    a.join().await.unwrap();
}

/// The display's text is not saved, but a text published retained on its
/// input topic is shown again when the agent starts (docs/hardware.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_text_on_the_display_input_is_shown_at_start() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let state = tempfile::tempdir().unwrap();
    let mut me = Asker::new(&broker, &shutdown, &tracker).await;
    me.listen("/pibot01/#").await;
    // Stored by the broker before the agent exists: it came back to us.
    me.session
        .handle
        .publish(
            "/pibot01/display/text",
            b"kept".to_vec(),
            rollcall_net::Qos::AtLeastOnce,
            true,
        )
        .await
        .unwrap();
    me.next_on("/pibot01/display/text").await;
    let a = sensor_agent(&broker, state.path(), &shutdown).await;
    until(&mut me, "/pibot01/display/contents", |c| {
        c["rows"][0].as_str().is_some_and(|r| r.starts_with("kept"))
    })
    .await;
    shutdown.cancel();
    a.join().await.unwrap();
}

/// A folder shaped like `/sys/bus/iio/devices/iio:device{n}` named `name`.
fn iio_device(
    root: &std::path::Path,
    n: u32,
    name: &str,
    files: &[(&str, &str)],
) -> std::path::PathBuf {
    let dir = root.join(format!("bus/iio/devices/iio:device{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("name"), format!("{name}\n")).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), format!("{text}\n")).unwrap();
    }
    dir
}

/// The Linux backends, not the simulated ones: the agent reads an HC-SR04
/// and drives an MCP4725 through folders shaped like sysfs, sees a read
/// fail with EIO and the device go away, and recovers when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iio_backends_read_sysfs_report_eio_and_a_missing_device_and_recover() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let state = tempfile::tempdir().unwrap();
    let sysfs = tempfile::tempdir().unwrap();
    let sonar = iio_device(
        sysfs.path(),
        0,
        "srf04",
        &[("in_distance_raw", "1234"), ("in_distance_scale", "0.001")],
    );
    let dac = iio_device(
        sysfs.path(),
        1,
        "mcp4725",
        &[
            ("out_voltage0_raw", "0"),
            ("out_voltage_scale", "0.805664062"),
        ],
    );
    let mut me = Asker::new(&broker, &shutdown, &tracker).await;
    me.listen("/pibot01/#").await;
    let mut config = host_config("pibot01", &broker, free_udp_port());
    config.sim = Some(false);
    config.state_dir = Some(state.path().to_owned());
    config.hw.sysfs_root = Some(sysfs.path().to_owned());
    config.services = rollcall_agent::RawConfig::from_toml(
        "[services.system]\nenabled = false\n[services.gpio]\nenabled = false\n\
         [services.sonar]\nenabled = true\nconfig = { interval_ms = 100, retry_ms = 100 }\n\
         [services.dac]\nenabled = true\n",
    )
    .unwrap()
    .services;
    let a = agent(config, &shutdown).await;
    let d = json_on(&mut me, "/pibot01/sonar/distance").await;
    assert_eq!(
        (d["value"].clone(), d["raw"].clone()),
        (json!(1.234), json!(1234))
    );

    // EIO, as the driver gives when the echo never comes.
    std::fs::remove_file(sonar.join("in_distance_raw")).unwrap();
    std::os::unix::fs::symlink("/proc/self/mem", sonar.join("in_distance_raw")).unwrap();
    // (A read between the two steps may find no file at all; EIO follows.)
    until(&mut me, "/pibot01/sonar/error", |e| {
        e["error"]
            .as_str()
            .is_some_and(|r| r.contains("os error 5"))
    })
    .await;
    until(&mut me, "/pibot01/sonar/$description", |d| {
        health(d) == "alert"
    })
    .await;

    // The device goes away: its folder is gone.
    std::fs::remove_dir_all(&sonar).unwrap();
    until(&mut me, "/pibot01/sonar/error", |e| {
        e["error"]
            .as_str()
            .is_some_and(|r| r.contains("no IIO device named `srf04`"))
    })
    .await;

    // It comes back under another number, and the health is ok again.
    iio_device(
        sysfs.path(),
        4,
        "srf04",
        &[("in_distance_raw", "500"), ("in_distance_scale", "0.001")],
    );
    until(&mut me, "/pibot01/sonar/$description", |d| {
        health(d) == "ok"
    })
    .await;
    let d = until(&mut me, "/pibot01/sonar/distance", |d| d["raw"] == 500).await;
    assert_eq!(d["value"], 0.5);

    // The DAC: the code lands in out_voltage0_raw.
    me.send("/pibot01/dac/set/out0", "1.0").await;
    let set = json_on(&mut me, "/pibot01/dac/out0").await;
    assert_eq!(set["raw"], 1241);
    assert_eq!(
        std::fs::read_to_string(dac.join("out_voltage0_raw")).unwrap(),
        "1241"
    );
    shutdown.cancel();
    a.join().await.unwrap();
}
