//! The hub over MQTT, on the embedded broker and on a real Mosquitto, with
//! real agents: the map fills from retained state before any roll-call,
//! values follow, a stopped agent goes offline, `request` configures and
//! sets GPIO, and roll-calls feed the map and the metrics.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use rollcall_hub::{
    HostStatus, HubConfig, HubError, HubShared, MapEvent, MapSnapshot, ScanOptions, run_hub,
};
use rollcall_net::{BrokerUrl, Qos, Session, SessionConfig};
use rollcall_proto::Topics;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const WAIT: Duration = Duration::from_secs(10);

/// Waits until `ok` holds for the hub's snapshot, or fails with the last one.
pub(crate) async fn until(
    shared: &HubShared,
    what: &str,
    ok: impl Fn(&MapSnapshot) -> bool,
) -> MapSnapshot {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut changes = shared.changes.subscribe();
    loop {
        let snapshot = shared.snapshot();
        if ok(&snapshot) {
            return snapshot;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}: {snapshot:#?}"
        );
        // Any change (or a lagged channel) is a reason to look again; so is
        // a tenth of a second passing, for what no event announces.
        let soon = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
        let _ = tokio::time::timeout_at(soon, changes.recv()).await;
    }
}

/// Waits for an event matching `ok` on `rx`.
async fn event(rx: &mut broadcast::Receiver<MapEvent>, what: &str, ok: impl Fn(&MapEvent) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if ok(&e) => return,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("{what}: channel: {e}"),
            Err(_) => panic!("{what}: no such event within {WAIT:?}"),
        }
    }
}

pub(crate) fn online(s: &MapSnapshot, host: &str) -> bool {
    s.host(host).is_some_and(|h| h.status == HostStatus::Online)
}

pub(crate) fn scan_options(udp_port: u16, wait: Duration, expect: Option<usize>) -> ScanOptions {
    ScanOptions {
        expect,
        wait,
        ..broadcast(udp_port, 0)
    }
}

pub(crate) fn start_hub(
    broker: &BrokerUrl,
    scan: ScanOptions,
    every: Duration,
) -> (
    Arc<HubShared>,
    CancellationToken,
    JoinHandle<Result<(), HubError>>,
) {
    let shared = Arc::new(HubShared::new(Topics::default()));
    let stop = CancellationToken::new();
    let config = HubConfig::new(broker.clone(), scan, every);
    let hub = tokio::spawn(run_hub(config, Arc::clone(&shared), stop.clone()));
    (shared, stop, hub)
}

/// Agents up first, so their `$state` and `$description`s are retained
/// before the hub connects; the hub's one roll-call goes to a port nobody
/// listens on and waits a minute, so everything it knows in this test came
/// from retained state and live messages.
async fn retained_state_values_offline_and_requests(broker: BrokerUrl) {
    let shutdown = CancellationToken::new();
    let h2_stop = CancellationToken::new();
    let port = free_udp_port();
    let h1 = agent(host_config("h1", &broker, port), &shutdown).await;
    let h2 = agent(host_config("h2", &broker, port), &h2_stop).await;

    let nobody = free_udp_port();
    let (shared, stop, hub) = start_hub(
        &broker,
        scan_options(nobody, Duration::from_secs(60), None),
        Duration::from_secs(3600),
    );
    let mut changes = shared.changes.subscribe();
    let snapshot = until(&shared, "both hosts online with their services", |s| {
        ["h1", "h2"].iter().all(|h| {
            online(s, h)
                && s.host(h).is_some_and(|h| {
                    ["gpio", "system"].iter().all(|name| {
                        h.service(name)
                            .is_some_and(|svc| svc.described_by.as_deref() == Some("retained"))
                    })
                })
        })
    })
    .await;
    assert_eq!(
        shared
            .metrics
            .rollcalls
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no roll-call has finished: this is retained state"
    );
    // The system service's retained readings arrive once it is described.
    until(&shared, "h1's uptime", |s| {
        s.host("h1")
            .and_then(|h| h.service("system"))
            .is_some_and(|svc| svc.values.contains_key("/h1/system/uptime"))
    })
    .await;
    assert!(
        snapshot.host("h1").unwrap().pins.is_empty(),
        "gpio not configured yet"
    );

    // Configure h1's GPIO through the hub; the new description gives the pin map.
    let answer = shared
        .request(
            "/h1/gpio/control",
            json!({"outputs":[{"name":"lamp","pin":23}],
                   "inputs":[{"name":"button","pin":22,"pull":"down"},
                             {"name":"float","pin":23}]}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(answer["ok"], false, "pin 23 twice is refused: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("23"), "{answer}");
    let answer = shared
        .request(
            "/h1/gpio/control",
            json!({"outputs":[{"name":"lamp","pin":23}],
                   "inputs":[{"name":"button","pin":22,"pull":"down"}]}),
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let snapshot = until(&shared, "h1's pin map", |s| {
        s.host("h1").is_some_and(|h| h.pins.len() == 2)
    })
    .await;
    let pins: Vec<(u32, &str, &str)> = snapshot
        .host("h1")
        .unwrap()
        .pins
        .iter()
        .map(|p| (p.pin, p.name.as_str(), p.direction.as_str()))
        .collect();
    assert_eq!(pins, [(22, "button", "read"), (23, "lamp", "driven")]);
    assert!(snapshot.host("h1").unwrap().pin_conflicts.is_empty());

    // Set the output through the hub: the value comes back into the map.
    let answer = shared
        .request("/h1/gpio/set/lamp", json!("on"), WAIT)
        .await
        .unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    until(&shared, "lamp on in the map", |s| {
        s.host("h1")
            .and_then(|h| h.service("gpio"))
            .and_then(|g| g.values.get("/h1/gpio/output/lamp"))
            .is_some_and(|v| v.value == json!(1))
    })
    .await;
    let answer = shared
        .request("/h1/gpio/set/lamp", json!({"value": "maybe"}), WAIT)
        .await
        .unwrap();
    assert_eq!(answer["ok"], false, "{answer}");

    // Press h1's virtual button: a value event.
    let tracker = TaskTracker::new();
    let me_stop = CancellationToken::new();
    let me = Session::start(
        SessionConfig::new(broker.clone(), format!("me-{}", unique())),
        me_stop.clone(),
        &tracker,
    )
    .unwrap();
    me.handle.wait_connected(WAIT).await.unwrap();
    me.handle
        .publish("/h1/sim/gpio/22", "1", Qos::AtLeastOnce, false)
        .await
        .unwrap();
    event(&mut changes, "button pressed", |e| {
        matches!(e, MapEvent::ValueChanged { topic, value, .. }
            if topic == "/h1/gpio/input/button" && value.value == json!(1))
    })
    .await;

    // Requests nobody answers, or that cannot be sent.
    let started = tokio::time::Instant::now();
    match shared
        .request("/nobody/x/get", json!({}), Duration::from_millis(300))
        .await
    {
        Err(HubError::Timeout { topic, .. }) => assert_eq!(topic, "/nobody/x/get"),
        other => panic!("expected a timeout: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        shared.request("/h1/+/get", json!({}), WAIT).await,
        Err(HubError::Invalid(_))
    ));

    // h2 stops: its agent says offline.
    h2_stop.cancel();
    h2.join().await.unwrap();
    event(
        &mut changes,
        "h2 offline",
        |e| matches!(e, MapEvent::HostOffline { host } if host == "h2"),
    )
    .await;
    let snapshot = shared.snapshot();
    assert_eq!(snapshot.host("h2").unwrap().status, HostStatus::Offline);
    assert!(!snapshot.host("h2").unwrap().online);
    assert!(online(&snapshot, "h1"));
    let metrics = shared.render_prometheus();
    assert!(
        metrics.contains("rollcall_hosts{status=\"online\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollcall_hosts{status=\"offline\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollcall_hub_requests_total 5\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollcall_hub_errors_total{kind=\"request_timeout\"} 1\n"),
        "{metrics}"
    );

    // The hub stops cleanly; afterwards requests say it is not connected.
    stop.cancel();
    hub.await.unwrap().unwrap();
    assert!(matches!(
        shared.request("/h1/gpio/get", json!({}), WAIT).await,
        Err(HubError::NotConnected)
    ));
    me_stop.cancel();
    shutdown.cancel();
    h1.join().await.unwrap();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_values_offline_and_requests_on_the_embedded_broker() {
    retained_state_values_offline_and_requests(embedded_broker()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_values_offline_and_requests_on_mosquitto() {
    let Some(mosquitto) =
        Mosquitto::for_test("retained_state_values_offline_and_requests_on_mosquitto")
    else {
        return;
    };
    retained_state_values_offline_and_requests(mosquitto.url()).await;
}

/// Roll-calls every 100 ms reach both agents: answers fill in what retained
/// state does not carry (addresses, versions, apps), and are counted.
async fn rollcalls_feed_the_map_and_the_metrics(broker: BrokerUrl) {
    let shutdown = CancellationToken::new();
    let port = free_udp_port();
    let mut agents = Vec::new();
    for name in ["r1", "r2"] {
        agents.push(agent(host_config(name, &broker, port), &shutdown).await);
    }
    let (shared, stop, hub) = start_hub(
        &broker,
        scan_options(port, Duration::from_secs(5), Some(2)),
        Duration::from_millis(100),
    );
    let snapshot = until(&shared, "addresses from answers", |s| {
        ["r1", "r2"].iter().all(|h| {
            s.host(h).is_some_and(|h| {
                h.online
                    && h.ipaddr.as_deref() == Some("127.0.0.1")
                    && h.apps.as_deref() == Some(&["gpio".to_string(), "system".to_string()][..])
            })
        })
    })
    .await;
    assert!(snapshot.host("r1").unwrap().version.is_some());
    let metrics = &shared.metrics;
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.rollcalls.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "three roll-calls");
        let mut changes = shared.changes.subscribe();
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.recv()).await;
    }
    let text = shared.render_prometheus();
    // Each roll-call: two host answers, two services each.
    let answers = metrics.answers.load(std::sync::atomic::Ordering::Relaxed);
    let rollcalls = metrics.rollcalls.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        answers >= 6 * rollcalls - 6,
        "{answers} answers in {rollcalls} roll-calls"
    );
    assert!(
        text.contains("rollcall_rollcall_duration_seconds_count "),
        "{text}"
    );
    assert!(
        text.contains("rollcall_rollcall_duration_seconds_bucket{le=\"+Inf\"} "),
        "{text}"
    );
    assert_eq!(metrics.errors("rollcall"), 0);
    stop.cancel();
    hub.await.unwrap().unwrap();
    shutdown.cancel();
    for a in agents {
        a.join().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollcalls_feed_the_map_and_the_metrics_on_the_embedded_broker() {
    rollcalls_feed_the_map_and_the_metrics(embedded_broker()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollcalls_feed_the_map_and_the_metrics_on_mosquitto() {
    let Some(mosquitto) =
        Mosquitto::for_test("rollcalls_feed_the_map_and_the_metrics_on_mosquitto")
    else {
        return;
    };
    rollcalls_feed_the_map_and_the_metrics(mosquitto.url()).await;
}

/// Issue 12: without `--window-ms` the hub asks for 0.1 ms per host it has
/// seen answer. It starts at the configured window (20 ms here) and, once
/// its one host has answered, asks for none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_sizes_the_window_to_the_hosts_it_has_seen_answer() {
    let broker = rollcall_testsupport::embedded_broker();
    let shutdown = CancellationToken::new();
    let port = free_udp_port();
    let one = agent(host_config("w1", &broker, port), &shutdown).await;
    let shared = Arc::new(HubShared::new(Topics::default()));
    let stop = CancellationToken::new();
    let config = HubConfig {
        window_per_host: true,
        ..HubConfig::new(
            broker.clone(),
            ScanOptions {
                window_ms: 20,
                ..scan_options(port, Duration::from_secs(2), Some(1))
            },
            Duration::from_millis(100),
        )
    };
    let hub = tokio::spawn(run_hub(config, Arc::clone(&shared), stop.clone()));
    let metrics = &shared.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut windows = std::collections::BTreeSet::new();
    let mut changes = shared.changes.subscribe();
    loop {
        if load(&metrics.rollcalls) > 0 {
            windows.insert(load(&metrics.last_window_ms));
        }
        if windows.contains(&0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the window never shrank: {windows:?}"
        );
        // A roll-call's answers change the map; the timeout covers one
        // that changed nothing.
        let _ = tokio::time::timeout(Duration::from_millis(50), changes.recv()).await;
    }
    assert!(
        shared
            .render_prometheus()
            .contains("rollcall_last_window_seconds 0"),
        "{}",
        shared.render_prometheus()
    );
    stop.cancel();
    hub.await.unwrap().unwrap();
    shutdown.cancel();
    one.join().await.unwrap();
}

#[tokio::test]
async fn a_hub_without_a_broker_or_with_zero_intervals_is_refused() {
    let shared = Arc::new(HubShared::new(Topics::default()));
    let mut config = HubConfig::new(
        BrokerUrl::new("127.0.0.1", 1),
        broadcast(1, 0),
        Duration::ZERO,
    );
    let err = run_hub(
        config.clone(),
        Arc::clone(&shared),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HubError::Invalid(_)), "{err}");
    config.every = Some(Duration::from_secs(1));
    config.broker = None;
    let err = run_hub(config, Arc::clone(&shared), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("broker"), "{err}");
    assert!(matches!(
        shared.request("/h/x/get", json!({}), WAIT).await,
        Err(HubError::NotConnected)
    ));
}
