//! `rollcall demo`: an embedded broker on loopback, three simulated hosts
//! (agents in this process on simulated hardware), and a roll-call over the
//! loopback broadcast address every few seconds, printed as a table.
//! Nothing leaves this machine: the broker, the agents and the roll-call all
//! live on 127.0.0.0/8. With `--broker`, the demo uses that broker instead
//! (logging in as the login flags say); roll-calls stay on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rollcall_agent::{Agent, RawConfig};
use rollcall_hub::ha::HaConfig;
use rollcall_hub::{ClusterMap, HubConfig, HubShared, MapConfig, ScanOptions, Scanner};
use rollcall_net::{BrokerUrl, EmbeddedBroker, NetError, Qos, SessionConfig};
use rollcall_proto::Topics;
use rollcall_services::announce::AnnounceConfig;
use tokio_util::task::TaskTracker;

use crate::login::LoginArgs;
use crate::report;

/// The loopback broadcast address: every socket on this machine bound to the
/// port hears it, and no packet reaches a real interface.
const LOOPBACK_BROADCAST: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 255);
/// The simulated hosts, named as in the original notes.
const HOSTS: [&str; 3] = ["pizero1", "pizero2", "pibot01"];

/// `rollcall demo` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one report and exit.
    #[arg(long)]
    once: bool,
    /// Print reports as JSON.
    #[arg(long)]
    json: bool,
    /// Seconds between roll-calls.
    #[arg(long, default_value_t = 5)]
    every: u64,
    /// Serve the dashboard on this address (port 0: any free port). Without
    /// it: 127.0.0.1:8080, or any free port when that one is taken, and none
    /// with --once. The URL is printed.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_http")]
    http: Option<SocketAddr>,
    /// Serve no dashboard.
    #[arg(long)]
    no_http: bool,
    #[command(flatten)]
    access: crate::hub::HttpAccessArgs,
    /// Use this broker (mqtt:// or mqtts://) instead of an embedded one on
    /// loopback; the simulated hosts, the hub and the demo's programs all
    /// log in with the flags below. Roll-calls stay on the loopback broadcast.
    #[arg(long)]
    broker: Option<BrokerUrl>,
    #[command(flatten)]
    login: LoginArgs,
    /// Publish Home Assistant MQTT discovery for the demo's hosts under
    /// this prefix (default `homeassistant`). See docs/home-assistant.md.
    #[arg(
        long,
        value_name = "PREFIX",
        num_args = 0..=1,
        default_missing_value = rollcall_hub::ha::DEFAULT_PREFIX
    )]
    ha_discovery: Option<String>,
}

/// Where the demo's dashboard goes when no --http is given.
const DEFAULT_HTTP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The listener the dashboard is served on, if one is to be.
async fn dashboard_listener(args: &Args) -> Result<Option<tokio::net::TcpListener>> {
    if args.no_http || (args.once && args.http.is_none()) {
        return Ok(None);
    }
    if let Some(addr) = args.http {
        return Ok(Some(rollcall_net::http_listener(addr).await?));
    }
    match rollcall_net::http_listener(DEFAULT_HTTP).await {
        Ok(listener) => Ok(Some(listener)),
        // A second demo, or anything else on 8080: the demo must still start.
        Err(NetError::Listen { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("rollcall demo: {DEFAULT_HTTP} is taken; the dashboard takes a free port");
            let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
            Ok(Some(rollcall_net::http_listener(any).await?))
        }
        Err(e) => Err(e.into()),
    }
}

/// A UDP port nobody on this machine is using now.
fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?
        .local_addr()?
        .port())
}

/// The original notes' GPIO example, which pizero2 runs: outputs on 25 and
/// 23, inputs with pull-down on 17 and 22, and a PWM.
const NOTES_GPIO: &str = r#"{
    "outputs": [{"name": "pump_drive", "pin": 25, "init": 0, "pull": "down", "single": true},
                {"name": "lamp", "pin": 23}],
    "pwm": [{"name": "sonar_angle", "pin": 18, "init": 20, "period_us": 1000}],
    "inputs": [{"name": "button", "pin": 22, "pull": "down", "report": "change"},
               {"name": "float_switch", "pin": 17, "pull": "down", "report": "scan", "scan_ms": 500}]
}"#;

/// What each simulated host runs: the system and GPIO services (pizero2's
/// configured as in the notes, its button pressed and released by the demo
/// between roll-calls); pizero1 a DHT22 and a 16x2 display, and, announced
/// by configuration, the demo's ticker ([`write_display_and_dac`]) that
/// writes on the display between roll-calls; pizero2 an ADC and a DAC,
/// which the demo sets as a person would; pibot01 an HC-SR04 sonar, and, announced by
/// configuration, the notes' display driver and an irrigation program
/// ([`irrigation`]) that reads pizero1's humidity and runs pizero2's pump,
/// so the cluster has a data flow to draw. Nothing in the demo writes the
/// display driver's `/display`: the map flags it as an unfed input, on
/// purpose, so a user sees what a wiring mistake looks like.
fn host_config(
    name: &str,
    broker: &BrokerUrl,
    login: &LoginArgs,
    udp_port: u16,
    state: &std::path::Path,
) -> RawConfig {
    let announce = if name == "pibot01" {
        vec![
            AnnounceConfig {
                function: "display_driver".into(),
                doc: Some("the notes' display: text in, buttons out".into()),
                inputs: vec!["/display".into()],
                outputs: vec!["/dbuts".into()],
                controls: vec!["/dcontrol".into()],
            },
            AnnounceConfig {
                function: "irrigation".into(),
                doc: Some("runs pizero2's pump while pizero1's humidity is under 50 %".into()),
                inputs: vec![HUMIDITY.into()],
                outputs: vec![PUMP.into()],
                controls: Vec::new(),
            },
        ]
    } else if name == "pizero1" {
        vec![AnnounceConfig {
            function: "ticker".into(),
            doc: Some("the demo's program: writes each roll-call's number on the display".into()),
            inputs: Vec::new(),
            // Only the display: the DAC's `set` topic is a command, which
            // the demo sets as a person would (docs/generated-docs.md).
            outputs: vec![DISPLAY_TEXT.into()],
            controls: Vec::new(),
        }]
    } else {
        Vec::new()
    };
    let mut config = RawConfig::default();
    match name {
        "pizero1" => {
            config.enable("dht22", true);
            config.enable("display", true);
        }
        "pizero2" => {
            let gpio: serde_json::Value = serde_json::from_str(NOTES_GPIO).unwrap_or_default();
            if let Ok(gpio) = toml::Value::try_from(gpio) {
                config.service_table("gpio").insert("config".into(), gpio);
            }
            config.enable("ain", true);
            config.enable("dac", true);
        }
        _ => config.enable("sonar", true),
    }
    let mut config = RawConfig {
        hostname: Some(name.into()),
        services: config.services,
        broker: Some(broker.to_string()),
        udp_port: Some(udp_port),
        state_dir: Some(state.join(name)),
        sim: Some(true),
        announce,
        ..RawConfig::default()
    };
    login.apply_to(&mut config);
    config
}

/// What the demo's irrigation program reads, what it switches, and the
/// pump's state it checks its work against.
const HUMIDITY: &str = "/pizero1/dht22/humidity";
const PUMP: &str = "/pizero2/gpio/set/pump_drive";
const PUMP_STATE: &str = "/pizero2/gpio/output/pump_drive";
/// It waters below this relative humidity, in percent.
const DRY_BELOW: f64 = 50.0;
/// It says again what the pump should do at least this often, even when
/// nothing changed: a pump controller that restarted is put right, and the
/// map sees the link live (an edge no message crosses for ten minutes is
/// stale).
const RESTATE_EVERY: Duration = Duration::from_secs(60);
/// What the demo's ticker writes.
const DISPLAY_TEXT: &str = "/pizero1/display/text";
const DAC: &str = "/pizero2/dac/set/out0";

/// The irrigation program pibot01 announces: it runs pizero2's pump while
/// pizero1's humidity is under [`DRY_BELOW`]. At each humidity reading it
/// compares what the pump should do with what its state says it does, and
/// sets it when they differ, so a command lost (sent before pizero2 was
/// listening, say) is sent again; and at least every [`RESTATE_EVERY`]. A real one would be a program of its own
/// (in any language, announced because it cannot answer a roll-call); in the
/// demo it is a task with its own MQTT session.
async fn irrigation(
    session: SessionConfig,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), NetError> {
    let tracker = TaskTracker::new();
    let mut session = rollcall_net::Session::start(session, shutdown.clone(), &tracker)?;
    session.handle.subscribe(PUMP_STATE).await?;
    session.handle.subscribe(HUMIDITY).await?;
    let mut pumping: Option<bool> = None;
    let mut said: Option<Instant> = None;
    let result = loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            msg = session.incoming.recv() => match msg {
                Some(msg) => msg,
                None => break Ok(()),
            },
        };
        let value = serde_json::from_slice::<serde_json::Value>(&msg.payload)
            .ok()
            .map(|v| v["value"].clone());
        if msg.topic == PUMP_STATE {
            pumping = value.and_then(|v| v.as_u64()).map(|level| level == 1);
            continue;
        }
        let Some(humidity) = value.and_then(|v| v.as_f64()) else {
            continue;
        };
        let pump = humidity < DRY_BELOW;
        let due = said.is_none_or(|t| t.elapsed() >= RESTATE_EVERY);
        if pumping != Some(pump) || due {
            said = Some(Instant::now());
            let level = if pump { "ON" } else { "OFF" };
            if let Err(e) = session
                .handle
                .publish(PUMP, level, Qos::AtLeastOnce, false)
                .await
            {
                break Err(e);
            }
        }
    };
    tracker.close();
    tracker.wait().await;
    result
}

/// Between roll-calls the demo's ticker (announced on pizero1) writes the
/// roll-call's number on pizero1's display, and the demo moves pizero2's
/// DAC (1.0 to 2.9 V), so the dashboard has something changing to show; a
/// person can do the same with mosquitto_pub.
async fn write_display_and_dac(
    session: &rollcall_net::SessionHandle,
    id: u64,
) -> Result<(), rollcall_net::NetError> {
    let text = format!("rollcall demo\nroll-call {}", id % 10_000);
    session
        .publish(DISPLAY_TEXT, text, Qos::AtLeastOnce, false)
        .await?;
    let volts = format!("{:.1}", 1.0 + (id % 20) as f64 / 10.0);
    session.publish(DAC, volts, Qos::AtLeastOnce, false).await
}

pub async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.every > 0, "--every must be at least 1");
    let broker = match &args.broker {
        Some(url) => url.clone(),
        None => EmbeddedBroker::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .context("starting the embedded broker")?
            .url(),
    };
    // Checked now, so that a mistake in them is one error and not four.
    let login = args.login.login(&broker)?;
    let session = |client_id: &str| SessionConfig {
        login: login.clone(),
        ..SessionConfig::new(broker.clone(), client_id)
    };
    let udp_port = free_udp_port()?;
    let state = std::env::temp_dir().join(format!("rollcall-demo-{}", std::process::id()));
    eprintln!(
        "rollcall demo: broker {}, roll-calls on udp {LOOPBACK_BROADCAST}:{udp_port}, hosts {}",
        broker,
        HOSTS.join(", ")
    );

    let signals = TaskTracker::new();
    let shutdown = rollcall_net::ctrl_c_token(&signals);
    let mut agents: Vec<Agent> = Vec::new();
    for name in HOSTS {
        let config = host_config(name, &broker, &args.login, udp_port, &state).validate()?;
        agents.push(rollcall_agent::start(config, shutdown.clone()).await?);
    }
    for agent in &agents {
        agent.wait_connected(Duration::from_secs(5)).await?;
    }

    let tracker = TaskTracker::new();
    let irrigating = tracker.spawn(irrigation(
        session("rollcall-demo-irrigation"),
        shutdown.clone(),
    ));
    let mut scanner = Scanner::connect(
        session("rollcall-demo-hub"),
        Topics::default(),
        shutdown.clone(),
        &tracker,
    )?;
    let opts = ScanOptions {
        replyto: "demo".into(),
        topic: "/stat/data".into(),
        udp_port,
        broadcasts: vec![IpAddr::V4(LOOPBACK_BROADCAST)],
        targets: Vec::new(),
        via_mqtt: false,
        wait: Duration::from_millis(1500),
        window_ms: 20,
        expect: Some(HOSTS.len()),
        cluster_key: None,
        sends: 1,
        descriptions: Default::default(),
    };
    let listener = dashboard_listener(&args).await?;
    // The hub runs for the dashboard, for Home Assistant, or both.
    let dashboard = if listener.is_some() || args.ha_discovery.is_some() {
        // The demo calls the roll itself (it prints each report) and
        // hands the reports to the map; the hub only watches.
        let every = Duration::from_secs(args.every);
        let map = ClusterMap::with_config(MapConfig::for_rollcalls(every, opts.wait));
        let shared = Arc::new(HubShared::with_map(Topics::default(), map));
        let config = HubConfig {
            login: login.clone(),
            ha_discovery: args.ha_discovery.clone().map(HaConfig::new),
            subscribe_qos: args.login.max_subscribe_qos(),
            ..HubConfig::watching(broker.clone(), opts.clone())
        };
        if let Some(ha) = &config.ha_discovery {
            ha.check()?;
            eprintln!(
                "rollcall demo: Home Assistant discovery under `{}/`",
                ha.options.prefix
            );
        }
        let hub = tracker.spawn(rollcall_hub::run_hub(
            config,
            Arc::clone(&shared),
            shutdown.clone(),
        ));
        let web = match listener {
            Some(listener) => Some(crate::hub::start_dashboard(
                "rollcall demo",
                listener,
                Arc::clone(&shared),
                args.access.access()?,
                shutdown.clone(),
            )?),
            None => None,
        };
        Some((shared, hub, web))
    } else {
        None
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(args.every));
    let mut id = u64::from(crate::query::rand_id());
    let result: Result<()> = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = ticker.tick() => {}
        }
        id += 1;
        let started = Instant::now();
        match scanner.scan(id, &opts, |_| {}).await {
            Ok(r) => {
                report::print(&r, args.json);
                if let Some((shared, ..)) = &dashboard {
                    shared.record_scan(&r, started.elapsed());
                }
            }
            Err(e) => break Err(e.into()),
        }
        if args.once {
            break Ok(());
        }
        // Someone presses pizero2's button between roll-calls, so that its
        // input moves; a person can do the same with mosquitto_pub.
        let pressed = if id % 2 == 0 { "1" } else { "0" };
        let press = scanner
            .session()
            .publish("/pizero2/sim/gpio/22", pressed, Qos::AtLeastOnce, false)
            .await;
        if let Err(e) = press {
            break Err(e.into());
        }
        if let Err(e) = write_display_and_dac(scanner.session(), id).await {
            break Err(e.into());
        }
    };
    shutdown.cancel();
    for agent in agents {
        agent.join().await?;
    }
    irrigating
        .await
        .context("the demo's irrigation task failed")??;
    if let Some((_, hub, web)) = dashboard {
        hub.await.context("the demo's hub task failed")??;
        crate::hub::join_dashboard(web).await?;
    }
    tracker.close();
    tracker.wait().await;
    signals.close();
    signals.wait().await;
    let _ = std::fs::remove_dir_all(&state);
    result
}
