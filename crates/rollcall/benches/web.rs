//! The dashboard's speed, over real HTTP on 127.0.0.1 (`web::serve` on a
//! listener from `rollcall-net`, a plain HTTP/1.1 client with keep-alive):
//!
//! 1. `GET /api/map` for maps of 10, 100 and 1,000 hosts, each host online
//!    with a `system` and a `gpio` service described and six values: time to
//!    the whole body and its size, 50 requests per map (20 for 1,000 hosts).
//! 2. `POST /api/hosts/{host}/services/gpio/set/lamp` through a running hub
//!    on the embedded broker, its map holding 1,000 other hosts besides, to a
//!    service that answers at once (a plain MQTT session in this process): the time from the request to the 200, 500
//!    requests one after another. The floor beside it: the same service asked
//!    directly over MQTT (publish, wait for the answer) by a session in this
//!    process, 500 times. Both after 20 exchanges not counted.
//!
//! Run with `cargo bench -p rollcall --bench web`. Markdown on stdout,
//! progress on stderr. Bounded: every request waits at most 10 s.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rollcall_hub::{HubConfig, HubShared, ScanOptions, now_ms, run_hub};
use rollcall_net::{BrokerUrl, EmbeddedBroker, Qos, Session, SessionConfig};
use rollcall_proto::Topics;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const LIMIT: Duration = Duration::from_secs(10);

/// A keep-alive HTTP/1.1 connection; bodies end where `Content-Length` says.
struct Client {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            addr,
            buf: Vec::new(),
        })
    }

    /// The status and the body.
    async fn send(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, Vec<u8>)> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        tokio::time::timeout(LIMIT, self.exchange(request.as_bytes()))
            .await
            .with_context(|| format!("{method} {path}: no answer in {LIMIT:?}"))?
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .context("no status")?;
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("no content-length")?;
                if self.buf.len() >= end + 4 + length {
                    let body = self.buf[end + 4..end + 4 + length].to_vec();
                    self.buf.drain(..end + 4 + length);
                    return Ok((status, body));
                }
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn gpio_description(host: &str) -> String {
    json!({"function": "gpio", "doc": "GPIO outputs, PWM and inputs",
        "interfaces": {
            "inputs": [
                {"name": "lamp", "topic": format!("/{host}/gpio/set/lamp"), "type": "bool", "doc": "drives pin 23"},
                {"name": "angle", "topic": format!("/{host}/gpio/set/angle"), "type": "float", "unit": "%", "min": 0.0, "max": 100.0, "doc": "duty cycle of pin 18"}
            ],
            "outputs": [
                {"name": "lamp", "topic": format!("/{host}/gpio/output/lamp"), "type": "bool", "retained": true},
                {"name": "angle", "topic": format!("/{host}/gpio/pwm/angle"), "type": "float", "unit": "%", "retained": true},
                {"name": "button", "topic": format!("/{host}/gpio/input/button"), "type": "bool", "retained": true, "doc": "pin 22, reported on change"}
            ],
            "functions": [{"name": "all", "topic": format!("/{host}/gpio/get"), "type": "json"}],
            "controls": [{"name": "control", "topic": format!("/{host}/gpio/control"), "type": "json"}]
        },
        "health": {"status": "ok"}})
    .to_string()
}

fn system_description(host: &str) -> String {
    let out = |name: &str, unit: &str| json!({"name": name, "topic": format!("/{host}/system/{name}"), "type": "float", "unit": unit, "retained": true});
    json!({"function": "system", "doc": "uptime, load, memory",
        "interfaces": {"inputs": [], "outputs": [out("uptime", "s"), out("load", ""), out("cpu_temp", "°C")],
                       "functions": [], "controls": []},
        "health": {"status": "ok"}})
    .to_string()
}

/// What a hub's map would hold after these messages.
fn fill(shared: &HubShared, hosts: usize) -> Result<()> {
    let mut map = shared.lock_map();
    let t = &shared.topics;
    let now = now_ms();
    for i in 0..hosts {
        let h = format!("host{i:04}");
        let mut feed = |topic: String, payload: String| -> Result<()> {
            map.ingest(t, &topic, payload.as_bytes(), now)
                .map(|_| ())
                .with_context(|| topic.clone())
        };
        feed(format!("/{h}/$state"), "online".into())?;
        feed(format!("/{h}/system/$description"), system_description(&h))?;
        feed(format!("/{h}/gpio/$description"), gpio_description(&h))?;
        for (topic, value) in [
            ("system/uptime", "12345.5"),
            ("system/load", "0.25"),
            ("system/cpu_temp", "41.2"),
            ("gpio/output/lamp", "1"),
            ("gpio/pwm/angle", "20"),
            ("gpio/input/button", "0"),
        ] {
            feed(
                format!("/{h}/{topic}"),
                format!(r#"{{"value":{value},"ts":{now}}}"#),
            )?;
        }
    }
    Ok(())
}

async fn serve(
    shared: Arc<HubShared>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<SocketAddr> {
    let listener = rollcall_net::http_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let addr = listener.local_addr()?;
    tracker.spawn(rollcall_hub::web::serve(
        listener,
        shared,
        rollcall_hub::web::Access::default(),
        shutdown.clone(),
    ));
    Ok(addr)
}

async fn map_phase(shutdown: &CancellationToken, tracker: &TaskTracker) -> Result<()> {
    println!("| hosts in the map | requests | body | p50 | p95 | max |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for (hosts, requests) in [(10, 50), (100, 50), (1000, 20)] {
        eprintln!("GET /api/map, {hosts} hosts");
        let shared = Arc::new(HubShared::new(Topics::default()));
        fill(&shared, hosts)?;
        let addr = serve(Arc::clone(&shared), shutdown, tracker).await?;
        let mut client = Client::connect(addr).await?;
        let mut times = Vec::new();
        let mut size = 0;
        // One to warm up, not counted.
        client.send("GET", "/api/map", "").await?;
        for _ in 0..requests {
            let started = Instant::now();
            let (status, body) = client.send("GET", "/api/map", "").await?;
            times.push(started.elapsed());
            if status != 200 {
                bail!("GET /api/map: {status}");
            }
            let map: Value = serde_json::from_slice(&body)?;
            if map["hosts"].as_array().map(Vec::len) != Some(hosts) {
                bail!("the map has not {hosts} hosts");
            }
            size = body.len();
        }
        times.sort();
        println!(
            "| {hosts} | {requests} | {:.0} kB | {} | {} | {} |",
            size as f64 / 1000.0,
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95)),
            ms(*times.last().unwrap()),
        );
    }
    Ok(())
}

/// A service that answers every `set` at once with `ok`.
async fn answering_service(
    broker: BrokerUrl,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<()> {
    let mut session = Session::start(
        SessionConfig::new(broker, "bench-gpio"),
        shutdown.clone(),
        tracker,
    )?;
    session.handle.wait_connected(LIMIT).await?;
    session.handle.subscribe("/bench/gpio/set/+").await?;
    session
        .handle
        .publish("/bench/$state", "online", Qos::AtLeastOnce, true)
        .await?;
    session
        .handle
        .publish(
            "/bench/gpio/$description",
            gpio_description("bench"),
            Qos::AtLeastOnce,
            true,
        )
        .await?;
    let handle = session.handle.clone();
    let stop = shutdown.clone();
    tracker.spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = session.incoming.recv() => match m { Some(m) => m, None => return },
            };
            let Ok(request) = serde_json::from_slice::<Value>(&msg.payload) else {
                continue;
            };
            let Some(reply) = request["topic"].as_str() else {
                continue;
            };
            let answer = json!({"ok": true, "id": request["id"], "function": "gpio"});
            let _ = handle
                .publish(reply, answer.to_string(), Qos::AtLeastOnce, false)
                .await;
        }
    });
    Ok(())
}

async fn set_phase(shutdown: &CancellationToken, tracker: &TaskTracker) -> Result<()> {
    const N: usize = 500;
    const WARM_UP: usize = 20;
    let broker = EmbeddedBroker::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?.url();
    answering_service(broker.clone(), shutdown, tracker).await?;

    // The floor: the same exchange from a plain session, no HTTP, no hub.
    eprintln!("MQTT request/answer floor, {N} times");
    let mut direct = Session::start(
        SessionConfig::new(broker.clone(), "bench-direct"),
        shutdown.clone(),
        tracker,
    )?;
    direct.handle.wait_connected(LIMIT).await?;
    direct.handle.subscribe("/bench-reply").await?;
    let mut floor = Vec::new();
    // The first WARM_UP of each are not counted.
    for id in 0..N + WARM_UP {
        let started = Instant::now();
        let body = json!({"value": true, "id": id, "topic": "/bench-reply"}).to_string();
        direct
            .handle
            .publish("/bench/gpio/set/lamp", body, Qos::AtLeastOnce, false)
            .await?;
        tokio::time::timeout(LIMIT, async {
            while let Some(m) = direct.incoming.recv().await {
                let a: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                if a["id"] == id {
                    return;
                }
            }
        })
        .await
        .context("no direct answer")?;
        if id >= WARM_UP {
            floor.push(started.elapsed());
        }
    }

    eprintln!("POST .../set/lamp through the hub, {N} times");
    let shared = Arc::new(HubShared::new(Topics::default()));
    // A large map around the one service, as a real cluster would have.
    fill(&shared, 1000)?;
    let scan = ScanOptions {
        replyto: "bench".into(),
        topic: "/stat/bench".into(),
        udp_port: 9,
        broadcasts: Vec::new(),
        targets: Vec::new(),
        // The hub's one roll-call goes to /udp/request, where nobody listens.
        via_mqtt: true,
        wait: Duration::from_millis(10),
        window_ms: 0,
        expect: None,
        cluster_key: None,
        sends: 1,
        descriptions: Default::default(),
    };
    let config = HubConfig::new(broker, scan, Duration::from_secs(3600));
    tracker.spawn(run_hub(config, Arc::clone(&shared), shutdown.clone()));
    let deadline = Instant::now() + LIMIT;
    while !(shared.is_connected()
        && shared
            .snapshot()
            .host("bench")
            .and_then(|h| h.service("gpio"))
            .is_some_and(|s| s.description.is_some()))
    {
        if Instant::now() > deadline {
            bail!("the hub did not learn of the service");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = serve(Arc::clone(&shared), shutdown, tracker).await?;
    let mut client = Client::connect(addr).await?;
    let mut times = Vec::new();
    for i in 0..N + WARM_UP {
        let body = if i % 2 == 0 {
            r#"{"value":true}"#
        } else {
            r#"{"value":false}"#
        };
        let started = Instant::now();
        let (status, answer) = client
            .send("POST", "/api/hosts/bench/services/gpio/set/lamp", body)
            .await?;
        if i >= WARM_UP {
            times.push(started.elapsed());
        }
        if status != 200 {
            bail!("set: {status} {}", String::from_utf8_lossy(&answer));
        }
    }
    floor.sort();
    times.sort();
    println!();
    println!("| exchange | n | p50 | p95 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (what, t) in [
        ("MQTT request → answer, direct (floor)", &floor),
        ("HTTP POST set → hub → MQTT → answer → 200", &times),
    ] {
        println!(
            "| {what} | {N} | {} | {} | {} | {} |",
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.95)),
            ms(percentile(t, 0.99)),
            ms(*t.last().unwrap()),
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    support::init_logging();
    println!("Load average at start: {}", support::load_line());
    println!();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let result = async {
        map_phase(&shutdown, &tracker).await?;
        set_phase(&shutdown, &tracker).await
    }
    .await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    println!();
    println!("Load average at end: {}", support::load_line());
    result
}
