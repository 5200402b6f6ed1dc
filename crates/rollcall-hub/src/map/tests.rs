//! The map's lifecycle with the time passed in: appearing, going missing,
//! offline and back, expiry, descriptions, values, edges and pins.

use serde_json::json;

use super::*;

fn report(hosts: &[(&str, &[&str])]) -> ScanReport {
    ScanReport {
        id: 1,
        elapsed_ms: 0,
        window_ms: 0,
        other_ids: 0,
        duplicates: 0,
        lost_in_session: 0,
        digests: Default::default(),
        hosts: hosts
            .iter()
            .map(|(h, services)| HostSeen {
                hostname: h.to_string(),
                ipaddr: Some("10.0.0.1".into()),
                extaddr: None,
                t_ms: Some(1),
                apps: None,
                version: None,
                services: services
                    .iter()
                    .map(|f| ServiceSeen {
                        function: f.to_string(),
                        inputs: None,
                        outputs: None,
                        control: None,
                        t_ms: 1,
                        interfaces: None,
                        health: None,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn t() -> Topics {
    Topics::default()
}

fn host_event(kind: &str, host: &str) -> MapEvent {
    let host = host.to_owned();
    match kind {
        "online" => MapEvent::HostOnline { host },
        "offline" => MapEvent::HostOffline { host },
        "missing" => MapEvent::HostMissing { host },
        "expired" => MapEvent::HostExpired { host },
        _ => unreachable!(),
    }
}

fn status(map: &ClusterMap, host: &str) -> HostStatus {
    map.host(host).unwrap().status
}

/// A description shaped as the GPIO service writes it: the pin is in each
/// entry's doc.
fn gpio_description(host: &str, outputs: &[(&str, u32)], inputs: &[(&str, u32)]) -> Vec<u8> {
    let mut ins = Vec::new();
    let mut outs = Vec::new();
    for (name, pin) in outputs {
        ins.push(
            json!({"name": name, "topic": format!("/{host}/gpio/set/{name}"),
            "type": "bool", "doc": format!("drives pin {pin}")}),
        );
        outs.push(
            json!({"name": name, "topic": format!("/{host}/gpio/output/{name}"),
            "type": "bool", "retained": true, "doc": "the output's level after each change"}),
        );
    }
    for (name, pin) in inputs {
        outs.push(
            json!({"name": name, "topic": format!("/{host}/gpio/input/{name}"),
            "type": "bool", "retained": true, "doc": format!("pin {pin}, reported on change")}),
        );
    }
    serde_json::to_vec(&json!({
        "function": "gpio", "hostname": host, "health": {"status": "ok"},
        "interfaces": {"inputs": ins, "outputs": outs, "functions": [], "controls": []}
    }))
    .unwrap()
}

fn description(function: &str, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
    let list = |topics: &[&str]| -> Vec<serde_json::Value> {
        topics
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"name": format!("e{i}"), "topic": t, "type": "json"}))
            .collect()
    };
    serde_json::to_vec(&json!({
        "function": function,
        "interfaces": {"inputs": list(inputs), "outputs": list(outputs)}
    }))
    .unwrap()
}

#[test]
fn hosts_and_services_appear_go_missing_and_come_back() {
    let mut map = ClusterMap::new();
    let e = map.apply_scan(&report(&[("a", &["gpio", "system"]), ("b", &[])]), 10);
    assert!(e.contains(&MapEvent::HostAppeared {
        host: "a".into(),
        status: HostStatus::Online
    }));
    assert!(e.contains(&MapEvent::ServiceAppeared {
        host: "a".into(),
        service: "gpio".into()
    }));
    assert!(
        map.apply_scan(&report(&[("a", &["gpio", "system"]), ("b", &[])]), 20)
            .is_empty()
    );

    let e = map.apply_scan(&report(&[("a", &["system"])]), 30);
    assert_eq!(
        e,
        vec![
            MapEvent::ServiceMissing {
                host: "a".into(),
                service: "gpio".into()
            },
            host_event("missing", "b"),
        ]
    );
    let b = map.host("b").unwrap();
    assert_eq!(
        (b.status, b.last_seen_ms, b.status_since_ms),
        (HostStatus::Missing, 20, 30)
    );
    // Still missing: said once only.
    assert!(
        map.apply_scan(&report(&[("a", &["system"])]), 40)
            .is_empty()
    );

    let e = map.apply_scan(&report(&[("a", &["gpio", "system"]), ("b", &[])]), 50);
    assert!(e.contains(&host_event("online", "b")));
    assert!(e.contains(&MapEvent::ServiceAppeared {
        host: "a".into(),
        service: "gpio".into()
    }));
    assert!(map.host("a").unwrap().services["gpio"].present);
    assert_eq!(map.host("b").unwrap().ipaddr.as_deref(), Some("10.0.0.1"));
}

#[test]
fn state_says_online_and_offline_and_time_makes_hosts_missing_then_forgotten() {
    let config = MapConfig {
        stale_after_ms: 100,
        forget_after_ms: 1000,
        ..MapConfig::default()
    };
    let mut map = ClusterMap::with_config(config);
    let e = map.apply_message(&t(), "/a/$state", b"online", 0);
    assert_eq!(
        e,
        vec![MapEvent::HostAppeared {
            host: "a".into(),
            status: HostStatus::Online
        }]
    );
    // Retained `offline` of a host never seen before: it appears offline.
    let e = map.apply_message(&t(), "/b/$state", b"offline", 0);
    assert_eq!(
        e,
        vec![MapEvent::HostAppeared {
            host: "b".into(),
            status: HostStatus::Offline
        }]
    );
    // Exactly stale_after is not yet stale.
    assert!(map.expire(100).is_empty());
    assert_eq!(map.expire(101), vec![host_event("missing", "a")]);
    assert_eq!(status(&map, "a"), HostStatus::Missing);
    // Heard from again: online.
    assert_eq!(
        map.apply_message(&t(), "/a/$state", b"online\n", 150),
        vec![host_event("online", "a")]
    );
    assert_eq!(
        map.apply_message(&t(), "/a/$state", b"offline", 200),
        vec![host_event("offline", "a")]
    );
    // Offline twice is one event.
    assert!(
        map.apply_message(&t(), "/a/$state", b"offline", 210)
            .is_empty()
    );
    // Offline hosts do not go stale; b is forgotten forget_after after it
    // went offline, a (offline since 200) later.
    assert!(map.expire(1000).is_empty());
    assert_eq!(map.expire(1001), vec![host_event("expired", "b")]);
    assert!(map.host("b").is_none());
    assert_eq!(map.expire(1201), vec![host_event("expired", "a")]);
    assert_eq!(map.hosts().count(), 0);
    // A forgotten host that comes back is new again.
    let e = map.apply_scan(&report(&[("a", &["system"])]), 1300);
    assert!(e.contains(&MapEvent::HostAppeared {
        host: "a".into(),
        status: HostStatus::Online
    }));
}

#[test]
fn answers_keep_a_host_fresh_and_a_missed_roll_call_does_not_forget_it_early() {
    let config = MapConfig {
        stale_after_ms: 100,
        forget_after_ms: 500,
        ..MapConfig::default()
    };
    let mut map = ClusterMap::with_config(config);
    map.apply_scan(&report(&[("a", &[])]), 0);
    map.apply_scan(&report(&[("a", &[])]), 90);
    assert!(map.expire(150).is_empty(), "answered at 90");
    // Missed a roll-call at 200: missing from then; forgotten 500 later.
    assert_eq!(
        map.apply_scan(&report(&[]), 200),
        vec![host_event("missing", "a")]
    );
    assert!(map.expire(700).is_empty());
    assert_eq!(map.expire(701), vec![host_event("expired", "a")]);
}

#[test]
fn bad_state_and_bad_names_are_refused_and_change_nothing() {
    let mut map = ClusterMap::new();
    let err = map.ingest(&t(), "/a/$state", b"maybe", 0).unwrap_err();
    assert_eq!(err.kind(), "bad_state");
    assert!(err.to_string().contains("maybe"), "{err}");
    let err = map.ingest(&t(), "/get/$state", b"online", 0).unwrap_err();
    assert_eq!(err.kind(), "bad_name");
    let err = map
        .ingest(&t(), "/a/$x/$description", b"{}", 0)
        .unwrap_err();
    assert_eq!(err.kind(), "bad_name");
    assert_eq!(map.hosts().count(), 0);
    // A cleared retained state says nothing.
    assert!(map.ingest(&t(), "/a/$state", b"", 0).unwrap().is_empty());
    assert_eq!(map.hosts().count(), 0);
    // Not the map's business: no error, nothing.
    assert!(map.ingest(&t(), "/a/b/c/d", b"1", 0).unwrap().is_empty());
    assert!(
        map.ingest(&t(), "/a/$state/x", b"online", 0)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_older_sessions_offline_is_a_stale_will_and_ignored() {
    let mut map = ClusterMap::new();
    map.apply_message(&t(), "/a/$state", b"online 16", 0);
    // The agent restarted: session 17 says online (no change: it never
    // went offline here), then the broker publishes session 16's will.
    assert!(
        map.apply_message(&t(), "/a/$state", b"online 17", 10)
            .is_empty()
    );
    let stale = map.ingest(&t(), "/a/$state", b"offline 16", 20).unwrap();
    assert!(stale.is_empty(), "{stale:?}");
    assert_eq!(status(&map, "a"), HostStatus::Online);
    assert_eq!(map.host("a").unwrap().status_since_ms, 0);
    // Its own session's `offline` (a clean stop, or its will) counts.
    assert_eq!(
        map.apply_message(&t(), "/a/$state", b"offline 17", 30),
        vec![host_event("offline", "a")]
    );
    // So does a newer session's (its `online` was missed), a plain
    // `offline` (an agent from before session numbers), and any `offline`
    // after a plain `online`.
    for (online, offline) in [
        ("online 17", "offline 18"),
        ("online 18", "offline"),
        ("online", "offline 3"),
    ] {
        assert_eq!(
            map.apply_message(&t(), "/a/$state", online.as_bytes(), 40),
            vec![host_event("online", "a")]
        );
        assert_eq!(
            map.apply_message(&t(), "/a/$state", offline.as_bytes(), 50),
            vec![host_event("offline", "a")],
            "{offline} after {online}"
        );
    }
    // A restart whose number went down (a lost state folder and a clock
    // behind) is the latest session all the same.
    map.apply_message(&t(), "/a/$state", b"online 99", 60);
    map.apply_message(&t(), "/a/$state", b"online 5", 70);
    assert_eq!(
        map.apply_message(&t(), "/a/$state", b"offline 5", 80),
        vec![host_event("offline", "a")]
    );
    // A never-seen host's retained `offline N` is taken as it is.
    map.apply_message(&t(), "/b/$state", b"offline 4", 90);
    assert_eq!(status(&map, "b"), HostStatus::Offline);
}

#[test]
fn descriptions_add_change_and_remove_services() {
    let mut map = ClusterMap::new();
    map.apply_message(&t(), "/h/$state", b"online", 0);
    let e = map.apply_message(
        &t(),
        "/h/gpio/$description",
        &gpio_description("h", &[("lamp", 23)], &[]),
        1,
    );
    assert_eq!(
        e,
        vec![
            MapEvent::ServiceAppeared {
                host: "h".into(),
                service: "gpio".into()
            },
            MapEvent::DescriptionChanged {
                host: "h".into(),
                service: "gpio".into()
            },
            MapEvent::HealthChanged {
                host: "h".into(),
                service: "gpio".into(),
                health: Some(Health::Ok)
            },
        ]
    );
    // The same again (a reconnect republishes it): nothing new.
    let same = gpio_description("h", &[("lamp", 23)], &[]);
    assert!(
        map.apply_message(&t(), "/h/gpio/$description", &same, 2)
            .is_empty()
    );
    // A different one.
    let e = map.apply_message(
        &t(),
        "/h/gpio/$description",
        &gpio_description("h", &[("lamp", 24)], &[]),
        3,
    );
    assert_eq!(
        e,
        vec![MapEvent::DescriptionChanged {
            host: "h".into(),
            service: "gpio".into()
        }]
    );
    // A description of another function on this topic is refused whole.
    let err = map
        .ingest(
            &t(),
            "/h/gpio/$description",
            &description("pump", &[], &[]),
            4,
        )
        .unwrap_err();
    assert_eq!(err.kind(), "bad_description");
    assert!(err.to_string().contains("pump"), "{err}");
    for bad in [
        &b"{"[..],
        b"[]",
        b"{\"function\":\"gpio\"}",
        &[0xff, 0xfe][..],
    ] {
        let err = map
            .ingest(&t(), "/h/gpio/$description", bad, 5)
            .unwrap_err();
        assert_eq!(err.kind(), "bad_description", "{bad:?}");
    }
    assert_eq!(
        pins::pin_in_doc(
            &map.host("h").unwrap().services["gpio"]
                .description
                .as_ref()
                .unwrap()
                .interfaces
                .inputs[0]
                .doc
                .clone()
                .unwrap()
        ),
        Some(24),
        "the refused descriptions changed nothing"
    );
    // Cleared: gone, and its topics are no longer watched.
    assert!(map.value_topics().contains("/h/gpio/output/lamp"));
    let e = map.apply_message(&t(), "/h/gpio/$description", b"", 6);
    assert_eq!(
        e,
        vec![MapEvent::ServiceRemoved {
            host: "h".into(),
            service: "gpio".into()
        }]
    );
    assert!(map.host("h").unwrap().services.is_empty());
    assert!(map.value_topics().is_empty());
    // Clearing what is not there is nothing.
    assert!(
        map.apply_message(&t(), "/h/gpio/$description", b"", 7)
            .is_empty()
    );
}

#[test]
fn a_description_before_the_state_makes_a_missing_host_that_state_brings_online() {
    let mut map = ClusterMap::new();
    let e = map.apply_message(&t(), "/h/x/$description", &description("x", &[], &[]), 5);
    assert_eq!(
        e[0],
        MapEvent::HostAppeared {
            host: "h".into(),
            status: HostStatus::Missing
        }
    );
    assert_eq!(
        map.apply_message(&t(), "/h/$state", b"online", 6),
        vec![host_event("online", "h")]
    );
}

#[test]
fn values_on_output_topics_are_kept_and_reported_when_they_change() {
    let mut map = ClusterMap::new();
    map.apply_message(
        &t(),
        "/h/gpio/$description",
        &gpio_description("h", &[("lamp", 23)], &[("button", 22)]),
        0,
    );
    map.apply_message(
        &t(),
        "/h/system/$description",
        &description("system", &[], &["/h/system/cpu_temp", "/h/system/+/raw"]),
        0,
    );
    let e = map.apply_message(
        &t(),
        "/h/system/cpu_temp",
        br#"{"value":48.5,"unit":"\u00b0C","ts":1700}"#,
        10,
    );
    let expected = ValueRecord {
        value: json!(48.5),
        unit: Some("°C".into()),
        ts: Some(1700),
        received_ms: 10,
    };
    assert_eq!(
        e,
        vec![MapEvent::ValueChanged {
            host: "h".into(),
            service: "system".into(),
            topic: "/h/system/cpu_temp".into(),
            value: expected.clone()
        }]
    );
    // The same reading again (same ts) is no change, but is kept as received later.
    assert!(
        map.apply_message(
            &t(),
            "/h/system/cpu_temp",
            br#"{"value":48.5,"unit":"\u00b0C","ts":1700}"#,
            11
        )
        .is_empty()
    );
    // GPIO states, bare JSON, text, and a wildcard output.
    map.apply_message(&t(), "/h/gpio/input/button", br#"{"value":1,"ts":5}"#, 12);
    map.apply_message(&t(), "/h/gpio/output/lamp", b"0", 12);
    map.apply_message(&t(), "/h/system/adc/raw", b" on \n", 12);
    let h = map.host("h").unwrap();
    let gpio = &h.services["gpio"].values;
    assert_eq!(gpio["/h/gpio/input/button"].value, json!(1));
    assert_eq!(gpio["/h/gpio/input/button"].ts, Some(5));
    assert_eq!(gpio["/h/gpio/output/lamp"].value, json!(0));
    assert_eq!(gpio["/h/gpio/output/lamp"].unit, None);
    let system = &h.services["system"].values;
    assert_eq!(system["/h/system/adc/raw"].value, json!("on"));
    assert_eq!(system["/h/system/cpu_temp"].received_ms, 11);
    // Inputs of a service are not values; nor are unknown topics.
    assert!(
        map.apply_message(&t(), "/h/gpio/set/lamp", b"1", 13)
            .is_empty()
    );
    assert!(map.apply_message(&t(), "/h/other", b"1", 13).is_empty());
    // An unreadable value is refused; a cleared one ignored.
    let err = map
        .ingest(&t(), "/h/gpio/output/lamp", &[0xff], 14)
        .unwrap_err();
    assert_eq!(err.kind(), "bad_value");
    assert!(
        map.ingest(&t(), "/h/gpio/output/lamp", b"", 14)
            .unwrap()
            .is_empty()
    );
    assert_eq!(map.counts().values, 4);
    // The input goes from the configuration: its value goes too.
    map.apply_message(
        &t(),
        "/h/gpio/$description",
        &gpio_description("h", &[("lamp", 23)], &[]),
        15,
    );
    assert!(
        !map.host("h").unwrap().services["gpio"]
            .values
            .contains_key("/h/gpio/input/button")
    );
    assert!(
        map.apply_message(&t(), "/h/gpio/input/button", b"1", 16)
            .is_empty()
    );
}

#[test]
fn watch_filters_follow_the_described_outputs() {
    let site = Topics::new("site1").unwrap();
    let mut map = ClusterMap::new();
    assert_eq!(
        map.watch_filters(&site),
        ["site1/+/$state", "site1/+/+/$description"]
    );
    map.apply_message(
        &site,
        "site1/h/s/$description",
        &description("s", &["site1/h/s/set"], &["site1/h/s/a", "site1/h/s/+/b"]),
        0,
    );
    assert_eq!(
        map.watch_filters(&site)[2..],
        ["site1/h/s/+/b", "site1/h/s/a"]
    );
    assert_eq!(
        map.take_watch_changes(),
        vec![
            WatchChange::Subscribe("site1/h/s/+/b".into()),
            WatchChange::Subscribe("site1/h/s/a".into())
        ]
    );
    assert!(map.take_watch_changes().is_empty());
    // Another service on a topic already watched: nothing new to subscribe.
    map.apply_message(
        &site,
        "site1/g/t/$description",
        &description("t", &[], &["site1/h/s/a"]),
        0,
    );
    assert!(map.take_watch_changes().is_empty());
    // Both claim the value.
    assert_eq!(map.apply_message(&site, "site1/h/s/a", b"1", 1).len(), 2);
    map.apply_message(&site, "site1/h/s/$description", b"", 2);
    assert_eq!(
        map.take_watch_changes(),
        vec![WatchChange::Unsubscribe("site1/h/s/+/b".into())]
    );
    // Under another root these are values, not states.
    assert!(
        map.apply_message(&site, "/h/$state", b"online", 3)
            .is_empty()
    );
    assert!(map.host("h").is_none() || map.host("h").unwrap().services.is_empty());
}

#[test]
fn edges_join_outputs_to_inputs_through_wildcards_on_both_sides() {
    let mut map = ClusterMap::new();
    map.apply_message(
        &t(),
        "/a/sensor/$description",
        &description("sensor", &[], &["/a/sensor/temp", "/a/sensor/humidity"]),
        0,
    );
    map.apply_message(
        &t(),
        "/b/display/$description",
        &description("display", &["/+/sensor/temp", "/b/display/text"], &[]),
        0,
    );
    map.apply_message(
        &t(),
        "/c/logger/$description",
        &description("logger", &["/a/#"], &["/c/logger/+"]),
        0,
    );
    map.apply_message(
        &t(),
        "/b/relay/$description",
        &description("relay", &["/c/logger/alarm"], &[]),
        0,
    );
    let edges: Vec<(String, String)> = map
        .edges(0)
        .into_iter()
        .map(|e| {
            (
                format!("{}/{} {}", e.from.host, e.from.service, e.from.topic),
                format!("{}/{} {}", e.to.host, e.to.service, e.to.topic),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("a/sensor /a/sensor/humidity", "c/logger /a/#"),
        ("a/sensor /a/sensor/temp", "b/display /+/sensor/temp"),
        ("a/sensor /a/sensor/temp", "c/logger /a/#"),
        ("c/logger /c/logger/+", "b/relay /c/logger/alarm"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(edges, expected);
}

#[test]
fn wiring_flags_unfed_inputs_and_unread_outputs_but_not_commands() {
    let mut map = ClusterMap::new();
    let describe = |map: &mut ClusterMap, host: &str, f: &str, i: &[&str], o: &[&str]| {
        map.apply_message(
            &t(),
            &format!("/{host}/{f}/$description"),
            &description(f, i, o),
            0,
        );
    };
    describe(
        &mut map,
        "a",
        "sensor",
        &[],
        &["/a/sensor/temp", "/a/sensor/rh"],
    );
    // Reads the sensor, and a topic nobody writes, and takes commands.
    describe(
        &mut map,
        "b",
        "display",
        &[
            "/+/sensor/temp",
            "/b/display/text",
            "/b/display/set/+",
            "/b/set/display/x",
        ],
        &[],
    );
    let w = map.wiring(0);
    let ends = |v: &[Endpoint]| -> Vec<String> {
        v.iter()
            .map(|e| format!("{}/{} {}", e.host, e.service, e.topic))
            .collect()
    };
    assert_eq!(ends(&w.unfed), ["b/display /b/display/text"]);
    assert_eq!(ends(&w.unread), ["a/sensor /a/sensor/rh"]);
    assert_eq!(w.edges.len(), 1);
    assert_eq!(map.snapshot(0).unfed, w.unfed);
    // Something starts writing the text: it is fed; the command topics
    // stay unflagged whether fed or not.
    describe(&mut map, "c", "clock", &[], &["/b/display/text"]);
    let w = map.wiring(0);
    assert!(w.unfed.is_empty(), "{:?}", w.unfed);
    assert!(crate::is_command("/h/gpio/set/pump") && crate::is_command("/h/set/gpio/pump"));
    assert!(!crate::is_command("/h/gpio/settings") && !crate::is_command("/h/a/b/c/set"));
}

#[test]
fn an_edge_carries_its_last_message_and_goes_stale_without_one() {
    let stale_after = 60_000;
    let mut map = ClusterMap::with_config(MapConfig {
        edge_stale_after_ms: stale_after,
        ..MapConfig::default()
    });
    map.apply_message(
        &t(),
        "/a/sensor/$description",
        &description("sensor", &[], &["/a/sensor/+"]),
        1_000,
    );
    map.apply_message(
        &t(),
        "/b/fan/$description",
        &description("fan", &["/a/sensor/temp"], &[]),
        1_000,
    );
    map.apply_message(
        &t(),
        "/c/log/$description",
        &description("log", &["/a/sensor/rh"], &[]),
        1_000,
    );
    let edge = |map: &ClusterMap, now: u64, to: &str| -> Edge {
        map.edges(now)
            .into_iter()
            .find(|e| e.to.service == to)
            .unwrap()
    };
    // Nothing yet, and not followed for long: not stale.
    let e = edge(&map, 30_000, "fan");
    assert_eq!((e.last_crossed_ms, e.stale), (None, false));
    // Followed for longer than the limit with nothing: stale.
    assert!(edge(&map, 1_000 + stale_after + 1, "fan").stale);
    // A reading of the temperature crosses the fan's edge, not the log's.
    map.apply_message(&t(), "/a/sensor/temp", br#"{"value":21}"#, 70_000);
    let e = edge(&map, 70_500, "fan");
    assert_eq!((e.last_crossed_ms, e.stale), (Some(70_000), false));
    let log = edge(&map, 70_500, "log");
    assert_eq!((log.last_crossed_ms, log.stale), (None, true));
    // Past the limit after it, stale again; a new reading makes it live.
    assert!(edge(&map, 70_000 + stale_after + 1, "fan").stale);
    assert!(!edge(&map, 70_000 + stale_after, "fan").stale);
    map.apply_message(&t(), "/a/sensor/temp", br#"{"value":21}"#, 200_000);
    let e = edge(&map, 200_000, "fan");
    assert_eq!((e.last_crossed_ms, e.stale), (Some(200_000), false));
    let s = map.snapshot(200_000);
    assert_eq!(s.edge_stale_after_ms, stale_after);
    assert_eq!(s.edges.iter().filter(|e| e.stale).count(), 1);
}

#[test]
fn answers_without_interfaces_take_part_in_edges_with_their_flat_fields() {
    let mut map = ClusterMap::new();
    let answer =
        |body: serde_json::Value| Answer::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
    map.apply_answer(
        &answer(json!({"id":1,"hostname":"p","function":"pump","inputs":"/p/pump/+"})),
        0,
    )
    .unwrap();
    map.apply_answer(
        &answer(json!({"id":1,"hostname":"q","function":"ctl","outputs":"/p/pump/speed"})),
        0,
    )
    .unwrap();
    let edges = map.edges(0);
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].from.service, "ctl");
    assert_eq!(edges[0].to.topic, "/p/pump/+");
    // The flat output is watched for values.
    assert!(map.value_topics().contains("/p/pump/speed"));
}

#[test]
fn pins_claimed_twice_are_conflicts() {
    let mut map = ClusterMap::new();
    map.apply_message(
        &t(),
        "/h/gpio/$description",
        &gpio_description("h", &[("pump", 25), ("lamp", 17)], &[("button", 17)]),
        0,
    );
    // A foreign service that names a pin the gpio service also drives.
    let fan = serde_json::to_vec(&json!({"function":"fan","interfaces":{
        "inputs":[{"name":"speed","topic":"/h/fan/set/speed","type":"int","doc":"PWM on pin 25"}]}}))
    .unwrap();
    map.apply_message(&t(), "/h/fan/$description", &fan, 0);
    let pins = map.pin_map("h");
    let summary: Vec<(u32, &str, &str, &str)> = pins
        .pins
        .iter()
        .map(|p| {
            (
                p.pin,
                p.service.as_str(),
                p.name.as_str(),
                p.direction.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (17, "gpio", "button", "read"),
            (17, "gpio", "lamp", "driven"),
            (25, "fan", "speed", "driven"),
            (25, "gpio", "pump", "driven"),
        ]
    );
    assert_eq!(
        pins.conflicts,
        [
            PinConflict {
                pin: 17,
                claimed_by: vec!["gpio/button".into(), "gpio/lamp".into()]
            },
            PinConflict {
                pin: 25,
                claimed_by: vec!["fan/speed".into(), "gpio/pump".into()]
            },
        ]
    );
    // An output is named twice in its description (set topic and state
    // topic) and still claims its pin once.
    map.apply_message(
        &t(),
        "/g/gpio/$description",
        &gpio_description("g", &[("lamp", 4)], &[("b", 5)]),
        0,
    );
    assert!(map.pin_map("g").conflicts.is_empty());
    assert_eq!(map.pin_map("g").pins.len(), 2);
    assert_eq!(map.pin_map("nobody"), PinMap::default());
}

#[test]
fn the_snapshot_has_the_names_the_dashboard_and_test_bed_read() {
    let mut map = ClusterMap::new();
    map.apply_scan(&report(&[("a", &["system"])]), 10);
    map.apply_message(
        &t(),
        "/a/gpio/$description",
        &gpio_description("a", &[("lamp", 4)], &[]),
        11,
    );
    map.apply_message(&t(), "/a/gpio/output/lamp", br#"{"value":1,"ts":9}"#, 12);
    let v = serde_json::to_value(map.snapshot(20)).unwrap();
    assert_eq!(v["now_ms"], 20);
    let host = &v["hosts"][0];
    for key in [
        "name",
        "ipaddr",
        "extaddr",
        "online",
        "status",
        "last_seen_ms",
        "services",
        "pins",
        "pin_conflicts",
    ] {
        assert!(host.get(key).is_some(), "{key} in {host}");
    }
    assert_eq!(host["name"], "a");
    assert_eq!(host["online"], true);
    assert_eq!(host["status"], "online");
    assert_eq!(host["ipaddr"], "10.0.0.1");
    assert_eq!(host["extaddr"], serde_json::Value::Null);
    let gpio = &host["services"][0];
    assert_eq!(gpio["name"], "gpio");
    assert_eq!(gpio["present"], true);
    assert_eq!(gpio["health"], json!({"status":"ok"}));
    assert_eq!(gpio["description"]["function"], "gpio");
    assert_eq!(
        gpio["values"]["/a/gpio/output/lamp"],
        json!({"value":1,"unit":null,"ts":9,"received_ms":12})
    );
    assert_eq!(host["pins"][0]["pin"], 4);
    // A service known from its answer only gets a description from it.
    assert_eq!(host["services"][1]["name"], "system");
    assert_eq!(host["services"][1]["description"]["function"], "system");
    assert_eq!(host["services"][1]["described_by"], "answer");
    assert!(v["edges"].as_array().unwrap().is_empty());
    // It reads back.
    let back: MapSnapshot = serde_json::from_value(v).unwrap();
    assert_eq!(back, map.snapshot(20));
}

#[test]
fn events_serialise_with_their_kind() {
    let v = serde_json::to_value(MapEvent::HostOffline { host: "a".into() }).unwrap();
    assert_eq!(v, json!({"event":"host_offline","host":"a"}));
    let v = serde_json::to_value(MapEvent::HostAppeared {
        host: "a".into(),
        status: HostStatus::Missing,
    })
    .unwrap();
    assert_eq!(
        v,
        json!({"event":"host_appeared","host":"a","status":"missing"})
    );
}

#[test]
fn a_full_map_refuses_new_hosts_and_services_and_counts_them() {
    let mut map = ClusterMap::with_config(MapConfig {
        max_hosts: 2,
        max_services: 1,
        ..MapConfig::default()
    });
    // Hosts that answered a roll-call are never evicted for a new one.
    map.apply_scan(&report(&[("a", &[]), ("b", &[])]), 0);
    let err = map.ingest(&t(), "/c/$state", b"online", 0).unwrap_err();
    assert_eq!(err.kind(), "too_many_hosts");
    // Known hosts still change.
    assert_eq!(
        map.apply_message(&t(), "/a/$state", b"offline", 1),
        vec![host_event("offline", "a")]
    );
    map.apply_message(&t(), "/a/x/$description", &description("x", &[], &[]), 2);
    let err = map
        .ingest(&t(), "/a/y/$description", &description("y", &[], &[]), 2)
        .unwrap_err();
    assert_eq!(err.kind(), "too_many_services");
    // A report with a third host: the two known ones are taken.
    let e = map.apply_scan(&report(&[("a", &["x"]), ("b", &[]), ("c", &[])]), 3);
    assert!(e.contains(&host_event("online", "a")));
    assert!(map.host("c").is_none());
    // A report whose host has one service too many is refused whole.
    let e = map.apply_scan(&report(&[("b", &["p", "q"])]), 4);
    assert!(map.host("b").unwrap().services.is_empty());
    assert!(e.contains(&host_event("missing", "a")));
    assert_eq!(map.counts().refused, 4);
    // A host whose name is no name is left out, but not for want of room.
    map.apply_scan(&report(&[("a/b", &[]), ("", &[])]), 5);
    assert!(map.host("a/b").is_none() && map.host("").is_none());
    assert_eq!(map.counts().refused, 4);
}

#[test]
fn single_answers_fill_the_map_as_they_arrive() {
    let mut map = ClusterMap::new();
    let host = Answer::parse(
        br#"{"id":1,"hostname":"h","function":"host","ipaddr":"10.1.1.1","apps":["gpio"],"version":"0.1.0"}"#,
    )
    .unwrap();
    let gpio = Answer::parse(
        br#"{"id":1,"hostname":"h","function":"gpio","health":{"status":"alert","reason":"pwm"},
             "interfaces":{"inputs":[{"name":"lamp","topic":"/h/gpio/set/lamp","type":"bool","doc":"drives pin 4"}]}}"#,
    )
    .unwrap();
    let e = map.apply_answer(&host, 5).unwrap();
    assert_eq!(
        e,
        [
            MapEvent::HostAppeared {
                host: "h".into(),
                status: HostStatus::Online
            },
            MapEvent::HostChanged { host: "h".into() }
        ]
    );
    // A new address is a change; an answer without one keeps the old.
    let moved =
        Answer::parse(br#"{"id":2,"hostname":"h","function":"host","ipaddr":"10.1.1.2"}"#).unwrap();
    assert_eq!(
        map.apply_answer(&moved, 5).unwrap(),
        [MapEvent::HostChanged { host: "h".into() }]
    );
    assert!(map.apply_answer(&moved, 5).unwrap().is_empty());
    map.apply_answer(&host, 5).unwrap();
    let e = map.apply_answer(&gpio, 6).unwrap();
    assert!(e.contains(&MapEvent::ServiceAppeared {
        host: "h".into(),
        service: "gpio".into()
    }));
    assert!(e.contains(&MapEvent::HealthChanged {
        host: "h".into(),
        service: "gpio".into(),
        health: Some(Health::Alert {
            reason: "pwm".into()
        })
    }));
    // The same answer again changes nothing.
    assert!(map.apply_answer(&gpio, 7).unwrap().is_empty());
    let h = map.host("h").unwrap();
    assert_eq!(h.ipaddr.as_deref(), Some("10.1.1.1"));
    assert_eq!(h.apps.as_deref(), Some(&["gpio".to_string()][..]));
    assert_eq!(h.last_seen_ms, 7);
    assert_eq!(map.pin_map("h").pins[0].pin, 4);
    assert_eq!(map.counts().services_alert, 1);
}

#[test]
fn outputs_sharing_a_parent_are_watched_with_one_filter_counted_per_service() {
    let mut map = ClusterMap::new();
    map.apply_message(
        &t(),
        "/h/system/$description",
        &description(
            "system",
            &[],
            &["/h/system/uptime", "/h/system/load", "/x/alone"],
        ),
        0,
    );
    assert_eq!(
        map.take_watch_changes(),
        vec![
            WatchChange::Subscribe("/h/system/+".into()),
            WatchChange::Subscribe("/x/alone".into())
        ]
    );
    // A second service needing the same filter adds no subscription.
    map.apply_message(
        &t(),
        "/g/mirror/$description",
        &description("mirror", &[], &["/h/system/a", "/h/system/b"]),
        0,
    );
    assert!(map.take_watch_changes().is_empty());
    // Values still go to the service whose topic it is.
    let e = map.apply_message(&t(), "/h/system/load", b"0.5", 1);
    assert!(matches!(&e[..], [MapEvent::ValueChanged { service, .. }] if service == "system"));
    assert!(
        map.apply_message(&t(), "/h/system/other", b"1", 1)
            .is_empty()
    );
    // Down to one topic under the parent: the exact topic replaces the filter
    // only once no service needs the filter.
    map.apply_message(
        &t(),
        "/h/system/$description",
        &description("system", &[], &["/h/system/uptime"]),
        2,
    );
    assert_eq!(
        map.take_watch_changes(),
        vec![
            WatchChange::Subscribe("/h/system/uptime".into()),
            WatchChange::Unsubscribe("/x/alone".into())
        ]
    );
    map.apply_message(&t(), "/g/mirror/$description", b"", 3);
    assert_eq!(
        map.take_watch_changes(),
        vec![WatchChange::Unsubscribe("/h/system/+".into())]
    );
    assert_eq!(
        map.value_topics().into_iter().collect::<Vec<_>>(),
        ["/h/system/uptime"]
    );
}

#[test]
fn hosts_stay_fresh_between_slow_roll_calls() {
    let every = std::time::Duration::from_secs(60);
    let wait = std::time::Duration::from_secs(2);
    assert_eq!(
        MapConfig::for_rollcalls(every, wait).stale_after_ms,
        182_000
    );
    assert_eq!(
        MapConfig::for_rollcalls(every / 60, wait).stale_after_ms,
        MapConfig::default().stale_after_ms
    );
}

#[test]
fn an_answer_from_before_a_host_said_offline_does_not_bring_it_back() {
    let mut map = ClusterMap::new();
    map.apply_scan(&report(&[("a", &["system"]), ("b", &[])]), 1000);
    // The next roll-call is sent at 2000 and waits 500 ms; both answer
    // 1 ms after sending, then a stops and says so at 2100.
    assert_eq!(
        map.apply_message(&t(), "/a/$state", b"offline", 2100),
        vec![host_event("offline", "a")]
    );
    let mut r = report(&[("a", &["system"]), ("b", &[])]);
    r.elapsed_ms = 500;
    assert!(map.apply_scan(&r, 2500).is_empty());
    assert_eq!(status(&map, "a"), HostStatus::Offline);
    assert_eq!(map.host("b").unwrap().last_seen_ms, 2500);
    // Nor does the next roll-call, which it does not answer, make it
    // missing, nor does time: it stays offline (offline, online, missing
    // within a second was what a cleanly stopped host showed before).
    let mut r = report(&[("b", &[])]);
    r.elapsed_ms = 500;
    assert!(map.apply_scan(&r, 3000).is_empty());
    assert!(map.expire(3000 + 20_000).is_empty());
    assert_eq!(status(&map, "a"), HostStatus::Offline);
    // An answer after the offline (it came back) counts.
    map.apply_message(&t(), "/a/$state", b"offline", 3000);
    let mut r = report(&[("a", &["system"])]);
    r.elapsed_ms = 500;
    r.hosts[0].t_ms = Some(200);
    assert!(
        map.apply_scan(&r, 3400)
            .contains(&host_event("online", "a"))
    );
    // An answer in the very millisecond of the `offline` came before it.
    let mut map = ClusterMap::new();
    map.apply_scan(&report(&[("a", &[])]), 1000);
    map.apply_message(&t(), "/a/$state", b"offline", 2001);
    let mut r = report(&[("a", &[])]);
    r.elapsed_ms = 500;
    assert!(map.apply_scan(&r, 2500).is_empty());
    assert_eq!(status(&map, "a"), HostStatus::Offline);
}

#[test]
fn a_host_that_came_online_while_a_roll_call_waited_is_not_missing_for_it() {
    let mut map = ClusterMap::new();
    // Sent at 1000, taken in at 1500; the host came up at 1200.
    map.apply_message(&t(), "/late/$state", b"online", 1200);
    let mut r = report(&[]);
    r.elapsed_ms = 500;
    assert!(map.apply_scan(&r, 1500).is_empty());
    assert_eq!(status(&map, "late"), HostStatus::Online);
    // The next roll-call it does not answer either: missing.
    let mut r = report(&[]);
    r.elapsed_ms = 500;
    assert_eq!(
        map.apply_scan(&r, 2500),
        vec![host_event("missing", "late")]
    );
}

// ---- the byte budget (issue 11, finding 7: 20,000 made-up hosts took a hub
// to 460 MB, and a map full of made-up `$state`s refused a real host) ----

/// Every host's bytes recomputed from scratch, checked against what the map
/// keeps, and the totals (all, unproven).
fn recounted(map: &ClusterMap) -> (usize, usize) {
    let (mut all, mut unproven) = (0, 0);
    for h in map.hosts() {
        let services: usize = h
            .services
            .values()
            .map(|s| {
                budget::service_bytes(
                    &h.name,
                    &s.name,
                    s.description.as_ref(),
                    s.answered.as_ref(),
                ) + s
                    .values
                    .iter()
                    .map(|(t, v)| budget::value_bytes(t, v))
                    .sum::<usize>()
            })
            .sum();
        let bytes =
            budget::host_bytes(&h.name, &h.ipaddr, &h.extaddr, &h.version, &h.apps) + services;
        assert_eq!(h.bytes(), bytes, "{}", h.name);
        all += bytes;
        if !h.proven {
            unproven += bytes;
        }
    }
    let unproven_hosts = map.hosts().filter(|h| !h.proven).count();
    assert_eq!(map.budget.order.len(), unproven_hosts);
    assert_eq!((map.bytes(), map.budget.unproven_bytes), (all, unproven));
    (all, unproven)
}

/// An attacker's host: a retained `online` and a description with an input
/// and an output.
fn fake(map: &mut ClusterMap, name: &str, now_ms: u64) -> Vec<MapEvent> {
    let mut events = map.apply_message(&t(), &format!("/{name}/$state"), b"online", now_ms);
    let d = description(
        "svc",
        &[&format!("/{name}/svc/set")],
        &[&format!("/{name}/svc/out")],
    );
    events.extend(map.apply_message(&t(), &format!("/{name}/svc/$description"), &d, now_ms));
    events
}

/// The bytes of one fake host, and of the real host of [`real_scan`].
fn sizes() -> (usize, usize) {
    let mut one = ClusterMap::new();
    fake(&mut one, "f00000", 0);
    let mut real = ClusterMap::new();
    real.apply_scan(&report(&[("real", &["gpio", "system"])]), 0);
    (one.bytes(), real.bytes())
}

fn budget_for(fakes: usize) -> MapConfig {
    let (fake, real) = sizes();
    MapConfig {
        max_bytes: 2 * real + fakes * fake,
        ..MapConfig::default()
    }
}

#[test]
fn a_flood_of_made_up_hosts_stays_within_the_budget_and_keeps_the_proven_host() {
    let mut map = ClusterMap::with_config(budget_for(10));
    map.apply_scan(&report(&[("real", &["gpio", "system"])]), 0);
    let mut evicted = Vec::new();
    for i in 0..200u64 {
        for e in fake(&mut map, &format!("f{i:05}"), 1 + i) {
            if let MapEvent::HostEvicted { host } = e {
                evicted.push(host);
            }
        }
        assert!(map.bytes() <= map.config().max_bytes, "after f{i}");
    }
    recounted(&map);
    assert!(map.host("real").is_some_and(|h| h.proven));
    // The newest fakes are kept, the oldest went first, in order.
    assert!(map.host("f00199").is_some());
    assert!(map.host("f00000").is_none());
    let kept = map.hosts().count() - 1;
    assert!((9..=11).contains(&kept), "{kept} fakes kept");
    assert_eq!(evicted.len(), 200 - kept);
    let mut sorted = evicted.clone();
    sorted.sort();
    assert_eq!(evicted, sorted, "least recently heard from first");
    assert_eq!(map.counts().evicted, evicted.len() as u64);
    // Their subscriptions went with them: one per kept fake.
    assert_eq!(map.value_topics().len(), kept);

    // A real host started after the flood appears: when it answers a
    // roll-call (proven), and also when only its retained state came yet.
    map.apply_scan(
        &report(&[("real", &["gpio", "system"]), ("late", &["system"])]),
        500,
    );
    assert!(map.host("late").is_some_and(|h| h.proven));
    fake(&mut map, "newcomer", 501);
    assert!(map.host("newcomer").is_some());
    assert!(map.bytes() <= map.config().max_bytes);
    recounted(&map);
}

#[test]
fn a_proven_host_that_goes_missing_or_offline_may_be_evicted_again() {
    let mut map = ClusterMap::with_config(budget_for(2));
    map.apply_scan(&report(&[("gone", &["system"]), ("off", &["system"])]), 0);
    assert!(map.host("gone").is_some_and(|h| h.proven));
    // A roll-call "gone" does not answer, and "off" saying offline.
    map.apply_scan(&report(&[("off", &["system"])]), 10);
    map.apply_message(&t(), "/off/$state", b"offline", 11);
    for name in ["gone", "off"] {
        assert!(map.host(name).is_some_and(|h| !h.proven), "{name}");
    }
    recounted(&map);
    // So a flood may push them out: nothing holds room for ever on the
    // strength of one answer, which anyone under the answer prefix can forge.
    for i in 0..50u64 {
        fake(&mut map, &format!("f{i:03}"), 20 + i);
    }
    assert!(map.host("gone").is_none() && map.host("off").is_none());
    assert!(map.bytes() <= map.config().max_bytes);
    recounted(&map);
}

#[test]
fn with_the_budget_full_of_proven_hosts_new_unproven_ones_are_refused() {
    let (fake_bytes, _) = sizes();
    let mut map = ClusterMap::with_config(budget_for(0));
    // Two real hosts fill the budget exactly as budget_for made it.
    map.apply_scan(
        &report(&[("real", &["gpio", "system"]), ("twin", &["gpio", "system"])]),
        0,
    );
    let full = map.bytes();
    assert!(full <= map.config().max_bytes);
    assert!(map.config().max_bytes - full < fake_bytes);
    let err = map.ingest(&t(), "/f1/$state", b"online", 1).unwrap_err();
    assert_eq!(err.kind(), "over_budget");
    let d = description("svc", &["/f1/in"], &[]);
    let err = map.ingest(&t(), "/f1/svc/$description", &d, 1).unwrap_err();
    assert_eq!(err.kind(), "over_budget");
    assert!(map.host("f1").is_none());
    // A proven host that would grow past the budget is refused too, and
    // nothing proven is evicted for it.
    let big = description("gpio", &["/real/gpio/set/a"; 1], &["/real/gpio/x"; 1]);
    let mut huge = serde_json::from_slice::<serde_json::Value>(&big).unwrap();
    huge["doc"] = "x".repeat(10_000).into();
    let err = map
        .ingest(
            &t(),
            "/real/gpio/$description",
            huge.to_string().as_bytes(),
            2,
        )
        .unwrap_err();
    assert_eq!(err.kind(), "over_budget");
    assert!(
        map.host("real").unwrap().services["gpio"]
            .description
            .is_none()
    );
    assert!(map.host("twin").is_some());
    assert_eq!(map.counts().evicted, 0);
    assert_eq!(map.counts().refused, 3);
    assert_eq!(map.bytes(), full);
    recounted(&map);
}

#[test]
fn a_host_heard_from_again_goes_to_the_back_of_the_eviction_order() {
    let (fake_bytes, _) = sizes();
    let mut map = ClusterMap::with_config(MapConfig {
        max_bytes: 2 * fake_bytes + fake_bytes / 2,
        ..MapConfig::default()
    });
    fake(&mut map, "f1", 1);
    fake(&mut map, "f2", 2);
    // f1 publishes again: now f2 is the least recently heard from.
    map.apply_message(&t(), "/f1/$state", b"online", 3);
    let e = fake(&mut map, "f3", 4);
    assert!(
        e.contains(&MapEvent::HostEvicted { host: "f2".into() }),
        "{e:?}"
    );
    assert!(map.host("f1").is_some() && map.host("f3").is_some());
    recounted(&map);
}

#[test]
fn a_full_host_table_evicts_unproven_hosts_for_new_ones() {
    let mut map = ClusterMap::with_config(MapConfig {
        max_hosts: 3,
        ..MapConfig::default()
    });
    map.apply_scan(&report(&[("real", &[])]), 0);
    for i in 0..100 {
        map.apply_message(&t(), &format!("/f{i}/$state"), b"online", i);
    }
    assert_eq!(map.hosts().count(), 3);
    assert!(map.host("real").is_some() && map.host("f99").is_some());
    // A real host after 100 made-up ones: it answers and is in.
    map.apply_scan(&report(&[("real", &[]), ("late", &[])]), 200);
    assert!(map.host("late").is_some());
    recounted(&map);
}

#[test]
fn bytes_follow_values_descriptions_and_expiry_back_to_zero() {
    let mut map = ClusterMap::with_config(MapConfig {
        stale_after_ms: 10,
        forget_after_ms: 100,
        ..MapConfig::default()
    });
    map.apply_scan(&report(&[("a", &["svc"])]), 0);
    let d = description("svc", &[], &["/a/svc/out"]);
    map.apply_message(&t(), "/a/svc/$description", &d, 1);
    let before = map.bytes();
    map.apply_message(&t(), "/a/svc/out", br#"{"value":"a long reading text"}"#, 2);
    let with_value = map.bytes();
    assert!(with_value > before);
    // A shorter value: fewer bytes.
    map.apply_message(&t(), "/a/svc/out", b"1", 3);
    assert!(map.bytes() < with_value);
    recounted(&map);
    map.apply_message(&t(), "/a/svc/$description", b"", 4);
    assert!(map.bytes() < before);
    fake(&mut map, "f", 5);
    recounted(&map);
    map.expire(50);
    map.expire(500);
    assert_eq!(map.hosts().count(), 0);
    assert_eq!(map.bytes(), 0);
    assert_eq!(map.budget.unproven_bytes, 0);
    assert!(map.budget.order.is_empty());
}

#[test]
fn the_generation_moves_on_changes_and_not_on_values() {
    let mut map = ClusterMap::new();
    map.apply_scan(&report(&[("a", &["svc"])]), 0);
    let d = description("svc", &[], &["/a/svc/out"]);
    map.apply_message(&t(), "/a/svc/$description", &d, 1);
    let g = map.generation();
    map.apply_message(&t(), "/a/svc/out", b"1", 2);
    map.apply_message(&t(), "/a/svc/out", b"2", 3);
    assert_eq!(map.generation(), g);
    map.apply_message(&t(), "/a/$state", b"offline", 4);
    assert!(map.generation() > g);
}

mod budget_properties {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        State(u8, bool),
        Describe(u8, u8, u8),
        Clear(u8, u8),
        Scan(Vec<u8>),
        Value(u8, u16),
        Expire,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..24u8, any::<bool>()).prop_map(|(h, on)| Op::State(h, on)),
            (0..24u8, 0..3u8, 0..6u8).prop_map(|(h, s, n)| Op::Describe(h, s, n)),
            (0..24u8, 0..3u8).prop_map(|(h, s)| Op::Clear(h, s)),
            proptest::collection::vec(0..24u8, 0..4).prop_map(Op::Scan),
            (0..24u8, 0..2000u16).prop_map(|(h, len)| Op::Value(h, len)),
            Just(Op::Expire),
        ]
    }

    proptest! {
        /// Whatever arrives in whatever order: the map's bytes are what its
        /// hosts hold, never over the budget, and a host that answered a
        /// roll-call stays while it is present (until it goes missing,
        /// offline or expires).
        #[test]
        fn the_budget_holds_and_proven_hosts_stay(
            ops in proptest::collection::vec(op(), 1..60),
            budget in 2_000usize..40_000,
        ) {
            let mut map = ClusterMap::with_config(MapConfig {
                max_bytes: budget,
                max_hosts: 12,
                forget_after_ms: 40,
                stale_after_ms: 20,
                ..MapConfig::default()
            });
            let mut proven: BTreeSet<String> = BTreeSet::new();
            for (now, op) in ops.into_iter().enumerate() {
                let now = now as u64;
                let host = |h: u8| format!("h{h}");
                let mut scanned = Vec::new();
                let events = match op {
                    Op::State(h, on) => {
                        let state: &[u8] = if on { b"online" } else { b"offline" };
                        map.apply_message(&t(), &format!("/{}/$state", host(h)), state, now)
                    }
                    Op::Describe(h, s, n) => {
                        let topics: Vec<String> =
                            (0..n).map(|i| format!("/{}/s{s}/o{i}", host(h))).collect();
                        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
                        let d = description(&format!("s{s}"), &refs, &refs);
                        let topic = format!("/{}/s{s}/$description", host(h));
                        map.apply_message(&t(), &topic, &d, now)
                    }
                    Op::Clear(h, s) => {
                        let topic = format!("/{}/s{s}/$description", host(h));
                        map.apply_message(&t(), &topic, b"", now)
                    }
                    Op::Scan(hosts) => {
                        scanned = hosts.iter().map(|h| host(*h)).collect();
                        let entries: Vec<(&str, &[&str])> =
                            scanned.iter().map(|n| (n.as_str(), &["s0"][..])).collect();
                        map.apply_scan(&report(&entries), now)
                    }
                    Op::Value(h, len) => {
                        let value = format!("\"{}\"", "v".repeat(len as usize));
                        let topic = format!("/{}/s0/o0", host(h));
                        map.apply_message(&t(), &topic, value.as_bytes(), now)
                    }
                    Op::Expire => map.expire(now),
                };
                // Gone (missing, offline, expired): proven no more.
                for e in &events {
                    if let MapEvent::HostMissing { host }
                    | MapEvent::HostOffline { host }
                    | MapEvent::HostExpired { host } = e
                    {
                        proven.remove(host);
                    }
                }
                for n in scanned {
                    if map.host(&n).is_some_and(|h| h.proven) {
                        proven.insert(n);
                    }
                }
                prop_assert!(map.bytes() <= budget, "{} > {budget}", map.bytes());
                recounted(&map);
                for p in &proven {
                    prop_assert!(map.host(p).is_some_and(|h| h.proven), "{p} lost");
                }
            }
        }
    }
}

#[test]
fn a_host_described_and_evicted_between_two_looks_costs_no_subscription() {
    let (fake_bytes, _) = sizes();
    let mut map = ClusterMap::with_config(MapConfig {
        max_bytes: fake_bytes + fake_bytes / 2,
        ..MapConfig::default()
    });
    fake(&mut map, "f1", 1);
    assert_eq!(
        map.take_watch_changes(),
        vec![WatchChange::Subscribe("/f1/svc/out".into())]
    );
    // f2 evicts f1, f3 evicts f2: one batch for the hub.
    fake(&mut map, "f2", 2);
    fake(&mut map, "f3", 3);
    assert_eq!(
        map.take_watch_changes(),
        vec![
            WatchChange::Unsubscribe("/f1/svc/out".into()),
            WatchChange::Subscribe("/f3/svc/out".into()),
        ]
    );
    assert_eq!(
        map.value_topics().into_iter().collect::<Vec<_>>(),
        ["/f3/svc/out"]
    );
}
