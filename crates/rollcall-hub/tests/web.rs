//! The dashboard's router, tested without a server (`tower`'s `oneshot`):
//! the page and its assets, `/api/map`, the event stream, every refusal of
//! the set route, the documents and `/metrics`; then the set route end to
//! end through a running hub to a scripted service over MQTT, on the
//! embedded broker and on a real Mosquitto; and `serve` ending its open
//! event streams on shutdown.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use rollcall_hub::{HubConfig, HubShared, MapEvent, ScanOptions, now_ms, web};
use rollcall_net::{BrokerUrl, Qos, Session, SessionConfig};
use rollcall_proto::Topics;
use rollcall_testsupport::{Mosquitto, embedded_broker};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

fn shared() -> Arc<HubShared> {
    Arc::new(HubShared::new(Topics::default()))
}

/// Takes one MQTT message into the map, as the hub's watch loop does.
fn feed(shared: &HubShared, topic: &str, payload: &str) {
    let mut map = shared.lock_map();
    map.ingest(&shared.topics, topic, payload.as_bytes(), now_ms())
        .unwrap_or_else(|e| panic!("{topic}: {e}"));
}

/// The GPIO-like service the tests describe: a lamp (bool) and a duty (%).
fn description(host: &str) -> String {
    json!({
        "function": "gpio",
        "doc": "test outputs",
        "interfaces": {
            "inputs": [
                {"name": "lamp", "topic": format!("/{host}/gpio/set/lamp"), "type": "bool", "doc": "drives pin 23"},
                {"name": "duty", "topic": format!("/{host}/gpio/set/duty"), "type": "float", "unit": "%", "min": 0.0, "max": 100.0},
                {"name": "outputs", "topic": format!("/{host}/gpio/set/outputs"), "type": "json"}
            ],
            "outputs": [
                {"name": "lamp", "topic": format!("/{host}/gpio/output/lamp"), "type": "bool", "retained": true}
            ],
            "functions": [],
            "controls": []
        },
        "health": {"status": "ok"}
    })
    .to_string()
}

/// A map with pizero2 online, described, its lamp on.
fn described() -> Arc<HubShared> {
    let s = shared();
    feed(&s, "/pizero2/$state", "online");
    feed(&s, "/pizero2/gpio/$description", &description("pizero2"));
    feed(&s, "/pizero2/gpio/output/lamp", r#"{"value":1,"ts":5}"#);
    s
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = app.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

async fn get(shared: &Arc<HubShared>, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let request = Request::get(path).body(Body::empty()).unwrap();
    send(web::app(Arc::clone(shared)), request).await
}

async fn post(shared: &Arc<HubShared>, path: &str, body: &str) -> (StatusCode, Value) {
    post_as(shared, path, "application/json", body).await
}

async fn post_as(
    shared: &Arc<HubShared>,
    path: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let (status, headers, bytes) = send(web::app(Arc::clone(shared)), request).await;
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/json",
        "{path}: every answer of the API is JSON"
    );
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn content_type(headers: &HeaderMap) -> &str {
    headers[header::CONTENT_TYPE].to_str().unwrap()
}

#[tokio::test]
async fn the_page_and_its_assets_come_from_the_binary_and_nothing_from_elsewhere() {
    let s = shared();
    let (status, headers, page) = get(&s, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type(&headers), "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let page = String::from_utf8(page).unwrap();

    // Every path the page names is served here.
    let mut local = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for (at, _) in page.match_indices(attr) {
            let rest = &page[at + attr.len()..];
            let target = &rest[..rest.find('"').unwrap()];
            if target.starts_with('/') {
                local.push(target.to_owned());
            }
        }
    }
    assert!(local.contains(&"/assets/app.js".to_owned()), "{local:?}");
    assert!(local.contains(&"/assets/app.css".to_owned()), "{local:?}");
    for path in &local {
        let (status, _, _) = get(&s, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (_, js_headers, js) = get(&s, "/assets/app.js").await;
    assert_eq!(content_type(&js_headers), "text/javascript; charset=utf-8");
    let (_, css_headers, css) = get(&s, "/assets/app.css").await;
    assert_eq!(content_type(&css_headers), "text/css; charset=utf-8");
    for (name, text) in [("page", page.as_bytes()), ("js", &js), ("css", &css)] {
        let text = String::from_utf8_lossy(text);
        for scheme in ["http://", "https://", "//cdn", "@import"] {
            assert!(!text.contains(scheme), "the {name} names {scheme}");
        }
    }
}

#[tokio::test]
async fn api_map_is_the_snapshot_as_json() {
    let s = described();
    let (status, headers, body) = get(&s, "/api/map").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type(&headers), "application/json");
    let map: Value = serde_json::from_slice(&body).unwrap();
    let now = serde_json::to_value(s.snapshot()).unwrap();
    assert_eq!(map["hosts"], now["hosts"]);
    assert_eq!(map["edges"], now["edges"]);
    let host = &map["hosts"][0];
    assert_eq!(host["name"], "pizero2");
    assert_eq!(host["status"], "online");
    assert_eq!(host["online"], true);
    let gpio = &host["services"][0];
    assert_eq!(gpio["name"], "gpio");
    assert_eq!(gpio["health"]["status"], "ok");
    assert_eq!(gpio["values"]["/pizero2/gpio/output/lamp"]["value"], 1);
    assert_eq!(host["pins"][0]["pin"], 23);
    assert!(
        map.get("ha_discovery").is_none(),
        "only with --ha-discovery"
    );

    // With Home Assistant discovery: what it skipped, in an added field.
    s.set_ha_status(rollcall_hub::ha::HaStatus {
        prefix: "homeassistant".into(),
        entities: 3,
        skipped: vec![rollcall_hub::ha::Skipped {
            host: "pizero2".into(),
            service: "gpio".into(),
            list: "inputs".into(),
            interface: "outputs".into(),
            reason: "a JSON document has no Home Assistant entity".into(),
        }],
        refused: 0,
    });
    let (_, _, body) = get(&s, "/api/map").await;
    let map: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(map["hosts"], now["hosts"]);
    assert_eq!(map["ha_discovery"]["prefix"], "homeassistant");
    assert_eq!(map["ha_discovery"]["entities"], 3);
    assert_eq!(map["ha_discovery"]["skipped"][0]["interface"], "outputs");
}

#[tokio::test]
async fn set_refuses_unknown_targets_and_bad_values_before_publishing() {
    let s = described();
    feed(&s, "/gone/$state", "offline");
    feed(&s, "/gone/gpio/$description", &description("gone"));
    let set = "/api/hosts/pizero2/services/gpio/set";
    let cases: [(&str, &str, StatusCode, &str); 14] = [
        (
            "/api/hosts/nohost/services/gpio/set/lamp",
            r#"{"value":1}"#,
            StatusCode::NOT_FOUND,
            "unknown host `nohost`",
        ),
        (
            "/api/hosts/pizero2/services/dac/set/lamp",
            r#"{"value":1}"#,
            StatusCode::NOT_FOUND,
            "has no service `dac`",
        ),
        (
            "/api/hosts/pizero2/services/gpio/set/pump",
            r#"{"value":1}"#,
            StatusCode::NOT_FOUND,
            "no settable item `pump` (it has: lamp, duty, outputs)",
        ),
        (
            "/api/hosts/pizero2/services/gpio/set/lamp/x",
            r#"{"value":1}"#,
            StatusCode::NOT_FOUND,
            "no settable item `lamp/x`",
        ),
        (
            &format!("{set}/lamp"),
            "on",
            StatusCode::BAD_REQUEST,
            "not JSON",
        ),
        (
            &format!("{set}/lamp"),
            "",
            StatusCode::BAD_REQUEST,
            "not JSON",
        ),
        (
            &format!("{set}/lamp"),
            "[1]",
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            &format!("{set}/lamp"),
            "{}",
            StatusCode::BAD_REQUEST,
            "no `value`",
        ),
        (
            &format!("{set}/lamp"),
            r#"{"value":1,"topic":"/elsewhere"}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `topic`",
        ),
        (
            &format!("{set}/lamp"),
            r#"{"value":"dim"}"#,
            StatusCode::BAD_REQUEST,
            "lamp takes on or off",
        ),
        (
            &format!("{set}/duty"),
            r#"{"value":101}"#,
            StatusCode::BAD_REQUEST,
            "duty is at most 100%, not 101",
        ),
        (
            &format!("{set}/duty"),
            r#"{"value":"50"}"#,
            StatusCode::BAD_REQUEST,
            "duty takes a number",
        ),
        (
            "/api/hosts/gone/services/gpio/set/lamp",
            r#"{"value":1}"#,
            StatusCode::CONFLICT,
            "host `gone` is offline",
        ),
        // Everything is right, but this hub has no broker.
        (
            &format!("{set}/lamp"),
            r#"{"value":true}"#,
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected",
        ),
    ];
    for (path, body, want, says) in cases {
        let (status, answer) = post(&s, path, body).await;
        assert_eq!(status, want, "{path} {body}: {answer}");
        let reason = answer["error"].as_str().unwrap();
        assert!(reason.contains(says), "{path} {body}: {reason}");
    }
    assert_eq!(
        s.metrics
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing was sent"
    );

    // A form on another site can send text/plain from a visitor's browser.
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = Request::post(format!("{set}/lamp"));
        if let Some(t) = content_type {
            request = request.header(header::CONTENT_TYPE, t);
        }
        let request = request.body(Body::from(r#"{"value":true}"#)).unwrap();
        let (status, _, body) = send(web::app(Arc::clone(&s)), request).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"].as_str().unwrap().contains("application/json"));
    }
    let (status, _) = post_as(
        &s,
        &format!("{set}/lamp"),
        "application/json; charset=utf-8",
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a charset is fine");

    let big = format!(r#"{{"value":"{}"}}"#, "x".repeat(70 * 1024));
    let request = Request::post(format!("{set}/lamp"))
        .body(Body::from(big))
        .unwrap();
    let (status, _, _) = send(web::app(Arc::clone(&s)), request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let (status, _, _) = get(&s, &format!("{set}/lamp")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, headers, body) = get(&s, "/api/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type(&headers), "application/json");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "no such page or route: GET /api/nothing");
}

#[tokio::test]
async fn the_documents_are_generated_from_the_map() {
    let s = described();
    for (file, kind, expect) in [
        ("cluster.md", "text/markdown; charset=utf-8", "pizero2"),
        (
            "asyncapi.json",
            "application/json",
            "/pizero2/gpio/set/lamp",
        ),
        ("cluster.svg", "image/svg+xml", "pizero2"),
        ("cluster.dot", "text/vnd.graphviz; charset=utf-8", "digraph"),
    ] {
        let (status, headers, body) = get(&s, &format!("/api/docs/{file}")).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert_eq!(content_type(&headers), kind, "{file}");
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(expect), "{file} lacks {expect}");
        if file == "asyncapi.json" {
            let doc: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(doc["asyncapi"], "3.0.0");
            // As `rollcall docs` writes it: the agents' own topics too, and
            // no server while the hub is not connected to one.
            assert!(has_channel(&doc, "/{host}/$state"), "{doc:#}");
            assert!(doc.get("servers").is_none());
        }
        if file == "cluster.svg" {
            assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
        }
    }
    let (status, _, body) = get(&s, "/api/docs/secrets.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8(body).unwrap().contains("cluster.md"));
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_map_and_the_counters() {
    let s = described();
    s.metrics.record_error("bad_value");
    let (status, headers, body) = get(&s, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        content_type(&headers),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = String::from_utf8(body).unwrap();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        samples.insert(series.to_owned(), value);
    }
    assert_eq!(samples["rollcall_hosts_online"], 1.0, "{text}");
    assert_eq!(
        samples["rollcall_hub_errors_total{kind=\"bad_value\"}"],
        1.0
    );
    assert!(samples.contains_key("rollcall_answers_total"));
    assert!(samples.contains_key("rollcall_rollcall_duration_seconds_count"));
    // The wiring: nothing reads the lamp, and its set topics are commands.
    assert_eq!(samples["rollcall_edges{stale=\"false\"}"], 0.0, "{text}");
    assert_eq!(samples["rollcall_inputs_unfed"], 0.0, "{text}");
    assert_eq!(samples["rollcall_outputs_unread"], 1.0, "{text}");
    // A lamp watcher reads it (a message crossed just now) and waits for a
    // topic nothing writes.
    let watcher = json!({"function": "watch", "interfaces": {"inputs": [
        {"name": "lamp", "topic": "/pizero2/gpio/output/+", "type": "bool"},
        {"name": "other", "topic": "/nowhere/feed", "type": "bool"}
    ]}});
    feed(&s, "/pibot01/watch/$description", &watcher.to_string());
    let (_, _, body) = get(&s, "/metrics").await;
    let text = String::from_utf8(body).unwrap();
    for line in [
        "rollcall_edges{stale=\"false\"} 1",
        "rollcall_edges{stale=\"true\"} 0",
        "rollcall_inputs_unfed 1",
        "rollcall_outputs_unread 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in {text}");
    }
    let (_, _, body) = get(&s, "/api/map").await;
    let map: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(map["unfed"][0]["topic"], "/nowhere/feed");
    assert!(
        map["edges"][0]["last_crossed_ms"].as_u64().is_some(),
        "{map}"
    );
    assert_eq!(map["edges"][0]["stale"], false);
    assert_eq!(map["edge_stale_after_ms"], 600_000);
}

/// The next piece of an event stream's body as text.
async fn next_text(body: &mut Body) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open")
        .unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn events_stream_each_change_and_say_resync_to_a_client_that_fell_behind() {
    let s = shared();
    let request = Request::get("/api/events").body(Body::empty()).unwrap();
    let response = web::app(Arc::clone(&s)).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();

    // A real change, from the map.
    let events = s
        .lock_map()
        .ingest(&s.topics, "/pizero1/$state", b"online", now_ms())
        .unwrap();
    assert!(!events.is_empty());
    for e in events {
        s.changes.send(e).unwrap();
    }
    let text = next_text(&mut body).await;
    assert!(text.starts_with("event: map\n"), "{text}");
    let data: Value =
        serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(data["host"], "pizero1");
    assert_eq!(data["event"], "host_appeared");

    // More than the channel holds, before the client reads any.
    let flood = rollcall_hub::hub::CHANGES_CAPACITY + 10;
    for i in 0..flood {
        s.changes
            .send(MapEvent::HostOnline {
                host: format!("h{i}"),
            })
            .unwrap();
    }
    let text = next_text(&mut body).await;
    assert!(text.starts_with("event: resync\n"), "{text}");
    assert!(text.contains("\"lagged\":10"), "{text}");
    // Then the stream goes on with what it still holds.
    let text = next_text(&mut body).await;
    assert!(text.contains("\"host\":\"h10\""), "{text}");
}

#[tokio::test]
async fn serve_answers_over_tcp_and_ends_open_event_streams_on_shutdown() {
    let listener = rollcall_net::http_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(web::serve(
        listener,
        shared(),
        web::Access::default(),
        shutdown.clone(),
    ));

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops within 5 s although a stream was open")
        .unwrap()
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the stream is closed")
        .unwrap();
}

/// Whether the AsyncAPI document has a channel at `address`.
fn has_channel(doc: &Value, address: &str) -> bool {
    doc["channels"]
        .as_object()
        .is_some_and(|c| c.values().any(|ch| ch["address"] == address))
}

/// Waits for `check` to hold, looking every 20 ms, for at most 10 s.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service in a test's hands: describes itself retained, then answers
/// `set/lamp` with `ok`, refuses a duty of 13, and leaves a duty of 77
/// unanswered.
async fn scripted_service(
    broker: BrokerUrl,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> tokio::task::JoinHandle<Vec<Value>> {
    let mut session = Session::start(
        SessionConfig::new(broker, "scripted-gpio"),
        shutdown.clone(),
        tracker,
    )
    .unwrap();
    session
        .handle
        .subscribe("/pizero2/gpio/set/+")
        .await
        .unwrap();
    session
        .handle
        .publish("/pizero2/$state", "online", Qos::AtLeastOnce, true)
        .await
        .unwrap();
    session
        .handle
        .publish(
            "/pizero2/gpio/$description",
            description("pizero2"),
            Qos::AtLeastOnce,
            true,
        )
        .await
        .unwrap();
    let handle = session.handle.clone();
    tracker.spawn(async move {
        let mut seen = Vec::new();
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return seen,
                m = session.incoming.recv() => match m { Some(m) => m, None => return seen },
            };
            let request: Value = serde_json::from_slice(&msg.payload).unwrap();
            seen.push(request.clone());
            let id = request["id"].clone();
            let answer = match (msg.topic.as_str(), request["value"].as_f64()) {
                ("/pizero2/gpio/set/duty", Some(77.0)) => continue,
                ("/pizero2/gpio/set/duty", Some(13.0)) => {
                    json!({"ok": false, "id": id, "error": "pin 18 is busy"})
                }
                (_, _) => {
                    json!({"ok": true, "id": id, "function": "gpio", "value": request["value"]})
                }
            };
            let reply_to = request["topic"].as_str().unwrap().to_owned();
            handle
                .publish(&reply_to, answer.to_string(), Qos::AtLeastOnce, false)
                .await
                .unwrap();
        }
    })
}

async fn set_through_a_running_hub(broker: BrokerUrl) {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let service = scripted_service(broker.clone(), shutdown.clone(), &tracker).await;

    let s = shared();
    let scan = ScanOptions {
        replyto: "web-test".into(),
        topic: "/stat/web-test".into(),
        udp_port: 9,
        // Nobody listens; the hub learns of pizero2 from retained state.
        broadcasts: Vec::new(),
        targets: Vec::new(),
        via_mqtt: false,
        wait: Duration::from_millis(10),
        window_ms: 0,
        expect: None,
        cluster_key: None,
        sends: 1,
        descriptions: Default::default(),
    };
    let config = HubConfig::new(broker.clone(), scan, Duration::from_secs(3600));
    let hub = tracker.spawn(rollcall_hub::run_hub(
        config,
        Arc::clone(&s),
        shutdown.clone(),
    ));
    until("the hub knows pizero2's gpio and is connected", || {
        s.is_connected()
            && s.snapshot()
                .host("pizero2")
                .and_then(|h| h.service("gpio"))
                .is_some_and(|g| g.description.is_some())
    })
    .await;

    // The running hub's document names its broker.
    let (status, _, body) = get(&s, "/api/docs/asyncapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        doc["servers"]["broker"]["host"],
        format!("{}:{}", broker.host, broker.port),
        "{doc:#}"
    );
    assert!(has_channel(&doc, "/{host}/{service}/$description"));

    let set = "/api/hosts/pizero2/services/gpio/set";
    let (status, answer) = post(&s, &format!("{set}/lamp"), r#"{"value":"on"}"#).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ok"], true);
    // The service got a JSON bool, whatever the page wrote.
    assert_eq!(answer["value"], true);

    let (status, answer) = post(&s, &format!("{set}/duty"), r#"{"value":13}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"], "pizero2/gpio: pin 18 is busy");
    assert_eq!(answer["answer"]["ok"], false);

    let started = Instant::now();
    let (status, answer) = post(&s, &format!("{set}/duty"), r#"{"value":77}"#).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{answer}");
    assert!(started.elapsed() >= web::SET_TIMEOUT);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("did not answer on `/pizero2/gpio/set/duty`"),
        "{answer}"
    );

    shutdown.cancel();
    hub.await.unwrap().unwrap();
    let seen = service.await.unwrap();
    let values: Vec<&Value> = seen.iter().map(|r| &r["value"]).collect();
    assert_eq!(values, [&json!(true), &json!(13), &json!(77)]);
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn set_reaches_the_service_and_returns_its_answer_on_the_embedded_broker() {
    set_through_a_running_hub(embedded_broker()).await;
}

#[tokio::test]
async fn set_reaches_the_service_and_returns_its_answer_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::for_test("set on mosquitto") else {
        return;
    };
    set_through_a_running_hub(mosquitto.url()).await;
}
