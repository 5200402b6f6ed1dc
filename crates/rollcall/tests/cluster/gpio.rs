//! The GPIO service over MQTT with the simulated chip, on the embedded
//! broker and on Mosquitto: configuration in both forms, set and read back,
//! a virtual button press, scanning, bad input, and a restart.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Asker;
use crate::support::*;

/// The notes' example, in the notes' text form (the pwm on a PWM pin, and
/// the float switch scanned every 100 ms so the test need not wait long).
const NOTES_TEXT: &str = "
output
     name        pump_drive
     pin         25
     init        0
     pull down
     single

output
     name        lamp
     pin         23

pwm
     name        sonar_angle
     pin         18
     init        20   (20%)
     period      1000
     pol         norm

input
     name        button
     pin         22
     pull        down
     debounce    0

input
     name        float_switch
     pin         17
     pull        down
     report      scan
     scan        100
";

/// An agent for `pizero2` with the simulated chip, saving state in `state`.
async fn gpio_agent(
    broker: &rollcall_net::BrokerUrl,
    state: &std::path::Path,
    shutdown: &CancellationToken,
) -> rollcall_agent::Agent {
    let mut config = host_config("pizero2", broker, free_udp_port());
    config.state_dir = Some(state.to_owned());
    agent(config, shutdown).await
}

/// The JSON of the next message on `topic`.
async fn json_on(asker: &mut Asker, topic: &str) -> Value {
    serde_json::from_slice(&asker.next_on(topic).await).unwrap()
}

async fn configure_set_read_and_press(broker: rollcall_net::BrokerUrl) {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let state = tempfile::tempdir().unwrap();
    let a = gpio_agent(&broker, state.path(), &shutdown).await;
    let mut me = Asker::new(&broker, &shutdown, &tracker).await;
    me.listen("/pizero2/gpio/#").await;
    me.listen("/me/#").await;

    me.send("/pizero2/gpio/control", NOTES_TEXT).await;
    assert_eq!(
        json_on(&mut me, "/pizero2/gpio/output/pump_drive").await["value"],
        0
    );
    assert_eq!(
        json_on(&mut me, "/pizero2/gpio/pwm/sonar_angle").await["value"],
        20.0
    );

    // Set as people type it, and read the state back.
    me.send("/pizero2/gpio/set/pump_drive", "ON").await;
    assert_eq!(
        json_on(&mut me, "/pizero2/gpio/output/pump_drive").await["value"],
        1
    );
    me.send("/pizero2/gpio/set/outputs", r#"{"pump_drive":0,"23":1}"#)
        .await;
    // Both states arrive, in whatever order the service sets them.
    let (mut pump, mut lamp) = (None, None);
    while pump.is_none() || lamp.is_none() {
        let (topic, v) = me.next().await;
        match topic.as_str() {
            "/pizero2/gpio/output/pump_drive" => pump = Some(v["value"].clone()),
            "/pizero2/gpio/output/lamp" => lamp = Some(v["value"].clone()),
            _ => {}
        }
    }
    assert_eq!((pump, lamp), (Some(json!(0)), Some(json!(1))));
    me.send("/pizero2/gpio/set/sonar_angle", "75").await;
    assert_eq!(
        json_on(&mut me, "/pizero2/gpio/pwm/sonar_angle").await["value"],
        75.0
    );

    // A virtual button press, seen as an input event.
    me.send("/pizero2/sim/gpio/22", "1").await;
    let pressed = json_on(&mut me, "/pizero2/gpio/input/button").await;
    assert_eq!(pressed["value"], 1);
    assert!(pressed["ts"].as_u64().unwrap() > 0);

    // Both query forms answer every input.
    me.send(
        "/pizero2/gpio/get/input",
        r#"{"topic":"/me/inputs","id":4}"#,
    )
    .await;
    let v = json_on(&mut me, "/me/inputs").await;
    assert_eq!(
        (v["id"].clone(), v["value"]["button"].clone()),
        (json!(4), json!(1))
    );
    me.send("/pizero2/get/gpio/input/22", r#"{"topic":"/me/one"}"#)
        .await;
    assert_eq!(json_on(&mut me, "/me/one").await["value"], 1);

    // Scanned every 100 ms and published when a scan finds it changed
    // (issue 12): a change on the line shows up at the next scan, with
    // the value it changed to.
    let before = unix_ms();
    me.send("/pizero2/sim/gpio/17", "1").await;
    let reading = loop {
        let reading = json_on(&mut me, "/pizero2/gpio/input/float_switch").await;
        // (A retained reading from configuration time may come first.)
        if reading["value"] == 1 {
            break reading;
        }
    };
    let ts = reading["ts"].as_u64().unwrap();
    assert!(ts >= before, "read at {ts}, changed at {before}");

    // The description lists every configured pin.
    me.listen("/pizero2/gpio/$description").await;
    let d = json_on(&mut me, "/pizero2/gpio/$description").await;
    let inputs: Vec<&str> = d["interfaces"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["topic"].as_str().unwrap())
        .collect();
    assert!(inputs.contains(&"/pizero2/gpio/set/pump_drive"));
    assert!(inputs.contains(&"/pizero2/gpio/set/sonar_angle"));
    shutdown.cancel();
    a.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_over_mqtt_on_the_embedded_broker() {
    configure_set_read_and_press(embedded_broker()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpio_over_mqtt_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::for_test("gpio_over_mqtt_on_mosquitto") else {
        return;
    };
    configure_set_read_and_press(mosquitto.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_and_changes_nothing() {
    let broker = embedded_broker();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let state = tempfile::tempdir().unwrap();
    let a = gpio_agent(&broker, state.path(), &shutdown).await;
    let mut me = Asker::new(&broker, &shutdown, &tracker).await;
    me.listen("/pizero2/gpio/#").await;
    me.send("/pizero2/gpio/control", NOTES_TEXT).await;
    json_on(&mut me, "/pizero2/gpio/output/pump_drive").await;

    let huge = format!(
        "{{\"outputs\":[{{\"name\":\"{}\",\"pin\":4}}]}}",
        "x".repeat(70_000)
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("control", "{\"outputs\": [".into(), "outputs"),
        ("control", "output\n pin twenty\n".into(), "line 2"),
        ("control", "name x\n".into(), "outside an output"),
        (
            "control",
            r#"{"outputs":[{"name":"a","pin":4},{"name":"b","pin":4}]}"#.into(),
            "used twice",
        ),
        (
            "control",
            r#"{"outputs":[{"name":"a","pin":40}]}"#.into(),
            "40 is not a line",
        ),
        (
            "control",
            r#"{"pwm":[{"name":"p","pin":18,"init":150}]}"#.into(),
            "pwm[0].init",
        ),
        (
            "control",
            r#"{"pwm":[{"name":"p","pin":18,"period_us":-5}]}"#.into(),
            "pwm[0].period_us",
        ),
        (
            "control",
            r#"{"outputs":[{"name":"a","pin":4,"colour":"red"}]}"#.into(),
            "colour",
        ),
        (
            "control",
            r#"{"outputs":[{"name":"a","pin":"four"}]}"#.into(),
            "outputs[0].pin",
        ),
        (
            "control",
            r#"{"inputs":[{"name":"b","pin":5,"report":"scan"}]}"#.into(),
            "scan_ms",
        ),
        (
            "control",
            r#"{"outputs":[{"name":"a","pin":4}],"inputs":[{"name":"a","pin":5}]}"#.into(),
            "`a` is used twice",
        ),
        ("control", r#"[1,2]"#.into(), "expected a configuration"),
        ("control", huge, "too large"),
        ("set/pump_drive", "maybe".into(), "a level is"),
        ("set/sonar_angle", "150".into(), "out of range"),
        ("set/nothing", "1".into(), "unknown item `nothing`"),
        (
            "set/outputs",
            r#"{"pump_drive":1,"ghost":0}"#.into(),
            "unknown item `ghost`",
        ),
        ("set/inputs", r#"["x"]"#.into(), "list of pin numbers"),
    ];
    assert!(cases.len() >= 15);
    for (rest, payload, needle) in &cases {
        me.send(&format!("/pizero2/gpio/{rest}"), payload).await;
        let e = json_on(&mut me, "/pizero2/gpio/error").await;
        assert_eq!(e["ok"], false, "{rest}");
        let error = e["error"].as_str().unwrap();
        assert!(
            error.contains(needle),
            "{rest} {}: {error}",
            &payload[..payload.len().min(60)]
        );
        // The old configuration still works.
        me.send("/pizero2/gpio/set/lamp", "1").await;
        assert_eq!(
            json_on(&mut me, "/pizero2/gpio/output/lamp").await["value"],
            1,
            "after {rest}"
        );
    }
    // One bad entry in set/outputs set nothing: pump_drive is still 0.
    me.send(
        "/pizero2/gpio/get/output/pump_drive",
        r#"{"topic":"/pizero2/gpio/me"}"#,
    )
    .await;
    assert_eq!(json_on(&mut me, "/pizero2/gpio/me").await["value"], 0);
    shutdown.cancel();
    a.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_configuration_and_output_levels() {
    let broker = embedded_broker();
    let state = tempfile::tempdir().unwrap();
    let tracker = TaskTracker::new();
    let client_stop = CancellationToken::new();
    let mut me = Asker::new(&broker, &client_stop, &tracker).await;
    me.listen("/pizero2/gpio/#").await;

    let first = CancellationToken::new();
    let a = gpio_agent(&broker, state.path(), &first).await;
    me.send("/pizero2/gpio/control", NOTES_TEXT).await;
    json_on(&mut me, "/pizero2/gpio/output/pump_drive").await;
    me.send("/pizero2/gpio/set/pump_drive", "1").await;
    assert_eq!(
        json_on(&mut me, "/pizero2/gpio/output/pump_drive").await["value"],
        1
    );
    me.send("/pizero2/gpio/set/sonar_angle", "55").await;
    json_on(&mut me, "/pizero2/gpio/pwm/sonar_angle").await;
    first.cancel();
    a.join().await.unwrap();
    assert!(state.path().join("gpio.json").is_file());

    let second = CancellationToken::new();
    let b = gpio_agent(&broker, state.path(), &second).await;
    me.send("/pizero2/gpio/get", r#"{"topic":"/pizero2/gpio/me"}"#)
        .await;
    let v = json_on(&mut me, "/pizero2/gpio/me").await;
    assert_eq!(v["value"]["outputs"]["pump_drive"], 1, "{v}");
    assert_eq!(v["value"]["pwm"]["sonar_angle"], 55.0, "{v}");
    me.send(
        "/pizero2/gpio/get/config",
        r#"{"topic":"/pizero2/gpio/me"}"#,
    )
    .await;
    let config = json_on(&mut me, "/pizero2/gpio/me").await;
    assert_eq!(config["value"]["inputs"][1]["scan_ms"], 100);
    second.cancel();
    b.join().await.unwrap();
    client_stop.cancel();
    let _ = Duration::ZERO;
}

/// The wall clock in unix ms, the clock readings' `ts` is on.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
