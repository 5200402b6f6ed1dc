//! The running agent: one task that owns the roll-call socket, the MQTT
//! session's incoming messages, the built-in services and the relays, and
//! reacts to each in turn. Answers wait out their jitter in tasks of their
//! own so that one roll-call's `window_ms` never delays the next.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rollcall_hw::HwError;
use rollcall_hw::display::Display;
use rollcall_hw::display::hd44780::Hd44780;
use rollcall_hw::display::sim::{SimDisplay, SimDisplayHandle};
use rollcall_hw::gpio::cdev::CdevChip;
use rollcall_hw::gpio::shared::SharedChip;
use rollcall_hw::gpio::sim::{SimChip, SimHandle};
use rollcall_hw::iio::sim::{SimDac, SimHandle as IioSimHandle, SimSensor};
use rollcall_hw::iio::sysfs::{IioDac, IioSensor};
use rollcall_hw::iio::{Dac, Sensor};
use rollcall_hw::pwm::pi_pwm_channel;
use rollcall_hw::pwm::sim::SimPwm;
use rollcall_hw::pwm::soft::SoftPwm;
use rollcall_hw::pwm::sysfs::SysfsPwm;
use rollcall_hw::system::{LinuxSystem, SimSystem, SystemSource};
use rollcall_net::{
    BrokerUrl, EmbeddedBroker, Message, Qos, RollCallSocket, Session, SessionConfig, SessionHandle,
    Will,
};
use rollcall_proto::json::Object;
use rollcall_proto::topic::matches;
use rollcall_proto::{
    Answer, Body, HostReport, Query, Request, RollCall, RollCallLimits, Topics, error_reply,
    host_answer, ok_reply, service_answer,
};
use rollcall_services::announce::Announced;
use rollcall_services::dac::{DacSaved, DacService};
use rollcall_services::display::DisplayService;
use rollcall_services::gpio::service::parse_level;
use rollcall_services::gpio::{GpioService, PwmLine, PwmOpener, SavedState};
use rollcall_services::sensor::{SensorService, Spec};
use rollcall_services::system::SystemService;
use rollcall_services::{Ctx, Outcome, Publish, Service, ServiceError};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::SensorSettings;
use crate::delivery::{is_own_broker, requester_broker};
use crate::gate::Gate;
use crate::state;
use crate::{AgentError, AgentStats, BrokerChoice, Config, VERSION};

/// Bigger than any roll-call, so an oversized datagram is seen as oversized.
const DATAGRAM_BUFFER: usize = 2048;
/// The services built into the agent.
const BUILT_IN: [&str; 7] = ["system", "gpio", "ain", "dac", "dht22", "sonar", "display"];
/// The services whose simulated device `/{host}/sim/{service}/fail` and
/// `.../missing` act on.
const SIM_IIO: [&str; 4] = ["ain", "dac", "dht22", "sonar"];
/// How long after a change a service's state is saved: commands within it
/// share one write. A power cut inside it loses those last commands.
const SAVE_DELAY: Duration = Duration::from_millis(50);
/// The longest the loop waits on a requester's broker: to resolve its name,
/// or for room to queue a relayed answer.
const RELAY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after a failed save (a full disk) it is tried again.
const SAVE_RETRY: Duration = Duration::from_secs(5);
/// How long external-address discovery may take at start.
const STUN_TIMEOUT: Duration = Duration::from_secs(2);

/// A running agent.
pub struct Agent {
    stats: Arc<AgentStats>,
    session: SessionHandle,
    udp_addr: SocketAddr,
    broker_url: BrokerUrl,
    task: JoinHandle<Result<(), AgentError>>,
    tracker: TaskTracker,
}

impl Agent {
    /// What the agent has answered, relayed and dropped so far.
    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// The address roll-calls are heard on.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The broker the agent uses (its embedded one, where it runs one).
    pub fn broker_url(&self) -> &BrokerUrl {
        &self.broker_url
    }

    /// Waits until the agent's MQTT session is connected.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), AgentError> {
        Ok(self.session.wait_connected(timeout).await?)
    }

    /// Waits for the agent to stop (after its shutdown token is cancelled),
    /// and for every task it started.
    pub async fn join(self) -> Result<(), AgentError> {
        let result = self
            .task
            .await
            .unwrap_or_else(|e| Err(AgentError::Crashed(e.to_string())));
        self.tracker.close();
        self.tracker.wait().await;
        result
    }
}

/// Runs an agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    start(config, shutdown).await?.join().await
}

/// Starts an agent: its broker (if embedded), MQTT session, roll-call
/// listener and services. Returns once it is listening; the MQTT session
/// connects (and reconnects) by itself.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Agent, AgentError> {
    let tracker = TaskTracker::new();
    let (broker_url, own_broker) = match &config.broker {
        BrokerChoice::External(url) => (url.clone(), url.resolve()?),
        BrokerChoice::Embedded(addr) => {
            let broker = EmbeddedBroker::start(*addr)?;
            info!(addr = %broker.addr, "embedded broker listening");
            (broker.url(), broker.addr)
        }
    };
    let topics = config.topics.clone();
    let host = config.hostname.clone();
    // The session outlives the agent's loop by a little: it must carry the
    // final `offline` before it disconnects, so it has a token of its own.
    let session_token = CancellationToken::new();
    let mut session_config =
        SessionConfig::new(broker_url.clone(), format!("rollcall-agent-{host}"));
    session_config.keep_alive = config.keepalive;
    session_config.credentials = config.credentials.clone();
    session_config.ca_file = config.ca_file.clone();
    session_config.last_will = Some(Will {
        topic: topics.state(&host),
        payload: b"offline".to_vec(),
        retain: true,
    });
    let Session { handle, incoming } =
        Session::start(session_config.clone(), session_token.clone(), &tracker)?;
    let udp = RollCallSocket::bind_listener(config.udp_listen)?;
    let udp_addr = udp.local_addr()?;

    let (mut services, sim) = build_services(&config);
    // Hardware events wake the agent's loop, which asks the services for them.
    let hw_events = Arc::new(Notify::new());
    for service in &mut services {
        let notify = hw_events.clone();
        service.set_waker(Arc::new(move || notify.notify_one()));
    }
    // Every service publishes its first readings as soon as the agent runs.
    let due = services
        .iter()
        .map(|s| s.tick_every().map(|_| Instant::now()))
        .collect();
    let stats = Arc::new(AgentStats::default());
    let mut host_state = Host {
        gate: Gate::new(config.max_rollcalls_per_s, config.cluster_key.clone()),
        config,
        topics,
        services,
        known_apps: BTreeSet::new(),
        local: handle.clone(),
        own_broker,
        extaddr: None,
        started: Instant::now(),
        relays: Vec::new(),
        due,
        remotes: HashMap::new(),
        stats: stats.clone(),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
        session_token: session_token.clone(),
        session_template: session_config,
        hw_events,
        sim,
        topics_in: Vec::new(),
        relay_sessions: 0,
        unsaved: BTreeSet::new(),
        save_at: None,
    };
    host_state.restore_services().await;
    host_state.announce().await?;
    info!(%host, udp = %udp_addr, broker = %broker_url, "agent listening");

    let task = tokio::spawn(async move {
        // However this task ends, a panic included, the session ends too,
        // so `join` returns and the broker sends the will.
        let _session = session_token.clone().drop_guard();
        host_state.extaddr = discover_extaddr(&host_state.config).await;
        let result = host_state.serve(udp, incoming).await;
        // Said explicitly: a clean disconnect does not trigger the will.
        let _ = host_state
            .local
            .publish_state(
                &host_state.topics.state(&host_state.config.hostname),
                "offline",
            )
            .await;
        session_token.cancel();
        result
    });
    Ok(Agent {
        stats,
        session: handle,
        udp_addr,
        broker_url,
        task,
        tracker,
    })
}

/// Simulated hardware that a person or a test drives over `/{host}/sim/...`.
#[derive(Default)]
struct SimDevices {
    /// The GPIO chip: `/{host}/sim/gpio/{pin}`.
    gpio: Option<SimHandle>,
    /// Sensors and the DAC by service name: `/{host}/sim/{service}/fail`, `/missing`.
    iio: BTreeMap<&'static str, IioSimHandle>,
    /// The display's buttons: `/{host}/sim/display/button/{name}`.
    display: Option<SimDisplayHandle>,
}

/// The built-in services, and the handles of their simulated hardware when
/// the hardware is simulated.
fn build_services(config: &Config) -> (Vec<Box<dyn Service>>, SimDevices) {
    let mut services: Vec<Box<dyn Service>> = Vec::new();
    let mut sim = SimDevices::default();
    if let Some(interval) = config.system_interval {
        let source: Box<dyn SystemSource> = if config.sim {
            Box::new(SimSystem::new(seed_of(&config.hostname)))
        } else {
            Box::new(LinuxSystem::default())
        };
        services.push(Box::new(SystemService::new(source, interval)));
    }
    if let Some(gpio) = &config.gpio {
        match gpio_service(config, &gpio.chip) {
            Ok((service, handle)) => {
                services.push(Box::new(service));
                sim.gpio = handle;
            }
            Err(error) => warn!(%error, chip = %gpio.chip, "gpio service off: no GPIO chip"),
        }
    }
    let sensors = [
        (&config.ain, rollcall_services::ain::SPEC),
        (&config.dht22, rollcall_services::dht22::SPEC),
        (&config.sonar, rollcall_services::sonar::SPEC),
    ];
    for (settings, spec) in sensors {
        if let Some(settings) = settings {
            services.push(Box::new(sensor_service(config, settings, spec, &mut sim)));
        }
    }
    if let Some(dac) = &config.dac {
        let hw: Box<dyn Dac> = if config.sim {
            let dac = SimDac::new();
            sim.iio.insert("dac", dac.handle());
            Box::new(dac)
        } else {
            Box::new(IioDac::new(&config.sysfs_root, &dac.device, dac.max_code))
        };
        services.push(Box::new(DacService::new(hw)));
    }
    if let Some(d) = &config.display {
        let hw: Result<Box<dyn Display>, HwError> = if config.sim {
            let buttons: Vec<&str> = d.buttons.iter().map(String::as_str).collect();
            let display = SimDisplay::new(d.cols, d.rows, &buttons);
            sim.display = Some(display.handle());
            Ok(Box::new(display))
        } else {
            Hd44780::open(&d.i2c, d.address, d.cols, d.rows)
                .map(|lcd| Box::new(lcd) as Box<dyn Display>)
        };
        match hw {
            Ok(hw) => services.push(Box::new(DisplayService::new(hw))),
            Err(error) => {
                warn!(%error, i2c = %d.i2c.display(), "display service off: no display")
            }
        }
    }
    for a in &config.announce {
        services.push(Box::new(Announced::new(a.clone())));
    }
    (services, sim)
}

/// A reading service on its simulated sensor or its IIO device. A device
/// missing at start is not fatal: the service reports it and keeps trying.
fn sensor_service(
    config: &Config,
    settings: &SensorSettings,
    spec: Spec,
    sim: &mut SimDevices,
) -> SensorService {
    let sensor: Box<dyn Sensor> = if config.sim {
        let seed = seed_of(&config.hostname).wrapping_add(seed_of(spec.name));
        let sensor = SimSensor::new(seed);
        sim.iio.insert(spec.name, sensor.handle());
        Box::new(sensor)
    } else {
        Box::new(IioSensor::new(&config.sysfs_root, &settings.device))
    };
    SensorService::new(spec, sensor)
}

/// The GPIO service on the simulated chip, or on the Linux chip named by
/// `chip` with hardware PWM from sysfs.
fn gpio_service(config: &Config, chip: &str) -> Result<(GpioService, Option<SimHandle>), HwError> {
    if config.sim {
        let chip = SimChip::pi();
        let handle = chip.handle();
        let opener: PwmOpener = Box::new(|_pin| {
            Ok(PwmLine {
                channel: Box::new(SimPwm::default()),
                on_gpio_line: false,
            })
        });
        return Ok((GpioService::new(Box::new(chip), opener), Some(handle)));
    }
    let linux = match chip {
        "auto" => CdevChip::open_pi()?,
        path if path.starts_with('/') => CdevChip::open(path)?,
        label => CdevChip::open_by_label(&[label])?,
    };
    // Shared, so that software PWM can drive lines of the chip the service owns.
    let chip = SharedChip::new(Box::new(linux));
    let lines = chip.clone();
    let sysfs_root = config.sysfs_root.clone();
    let opener: PwmOpener = Box::new(move |pin| {
        Ok(match pi_pwm_channel(pin) {
            Some((chip, channel)) => PwmLine {
                channel: Box::new(SysfsPwm::open(&sysfs_root, chip, channel)?),
                on_gpio_line: false,
            },
            None => PwmLine {
                channel: Box::new(SoftPwm::new(lines.line_setter(pin))),
                on_gpio_line: true,
            },
        })
    });
    let service = GpioService::new(Box::new(chip), opener).with_pwm_channels(pi_pwm_channel);
    Ok((service, None))
}

/// A per-host number, so simulated hosts do not all show the same values.
fn seed_of(name: &str) -> u64 {
    name.bytes().map(u64::from).sum()
}

/// The configured external address, or the one a STUN server reports.
async fn discover_extaddr(config: &Config) -> Option<IpAddr> {
    if config.extaddr.is_some() {
        return config.extaddr;
    }
    let server = config.stun_server.as_deref()?;
    let addr = match tokio::net::lookup_host(server).await.map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) | Err(_) => {
            warn!(server, "cannot resolve the STUN server; extaddr left out");
            return None;
        }
    };
    match rollcall_net::discover_external_addr(addr, STUN_TIMEOUT).await {
        Ok(mapped) => {
            info!(extaddr = %mapped.ip(), "external address discovered");
            Some(mapped.ip())
        }
        Err(error) => {
            warn!(%error, "STUN discovery failed; extaddr left out");
            None
        }
    }
}

/// What a service is told of where it runs, now. A free function so that it
/// borrows only these fields while a service is borrowed mutably.
fn ctx_now<'a>(config: &'a Config, topics: &'a Topics) -> Ctx<'a> {
    Ctx {
        host: &config.hostname,
        topics,
        now_ms: unix_ms(),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Answers from this host's other services, forwarded to a requester's
/// broker until `until`, each (host, function) once.
struct Relay {
    topic: String,
    id: u64,
    remote: String,
    to: SessionHandle,
    until: Instant,
    forwarded: HashSet<(String, String)>,
}

/// A session to a requester's broker, kept while a relay uses it.
struct Remote {
    session: Session,
    stop: CancellationToken,
}

/// Everything the agent's loop owns.
struct Host {
    config: Config,
    topics: Topics,
    gate: Gate,
    services: Vec<Box<dyn Service>>,
    /// Services of this host that published a `$description`, ours included.
    known_apps: BTreeSet<String>,
    local: SessionHandle,
    own_broker: SocketAddr,
    extaddr: Option<IpAddr>,
    started: Instant,
    relays: Vec<Relay>,
    /// When each service's next tick is due (`None`: it never ticks).
    due: Vec<Option<Instant>>,
    /// Sessions to requesters' brokers, open while a relay needs them.
    remotes: HashMap<String, Remote>,
    stats: Arc<AgentStats>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    session_token: CancellationToken,
    session_template: SessionConfig,
    /// Notified when a service's hardware has events waiting.
    hw_events: Arc<Notify>,
    /// Simulated hardware, driven over `/{host}/sim/...`.
    sim: SimDevices,
    /// What each service subscribed to beside its queries ([`Service::topics_in`]).
    topics_in: Vec<Vec<String>>,
    /// Relay sessions opened so far: each gets a client id of its own.
    relay_sessions: u64,
    /// Services whose state changed since it was last saved.
    unsaved: BTreeSet<usize>,
    /// When those are saved.
    save_at: Option<Instant>,
}

impl Host {
    fn ctx(&self) -> Ctx<'_> {
        ctx_now(&self.config, &self.topics)
    }

    /// Subscribes to everything the agent serves and publishes its retained state.
    async fn announce(&mut self) -> Result<(), AgentError> {
        let host = self.config.hostname.clone();
        let mut filters = vec![
            self.topics.udp_request(),
            self.topics.getapps(&host),
            self.topics.description(&host, "+"),
        ];
        for svc in &self.services {
            filters.extend(self.topics.query_filters(&host, svc.name()));
        }
        filters.extend(self.sim_filters());
        for filter in filters {
            self.local.subscribe(&filter).await?;
        }
        for i in 0..self.services.len() {
            self.topics_in.push(Vec::new());
            self.refresh_topics_in(i).await;
        }
        // A built-in service that ran before and does not now (no GPIO chip
        // any more) must not stay listed through its retained description.
        for name in BUILT_IN {
            if !self.services.iter().any(|s| s.name() == name) {
                self.local
                    .publish_state(&self.topics.description(&host, name), "")
                    .await?;
            }
        }
        self.local
            .publish_state(&self.topics.state(&host), "online")
            .await?;
        for i in 0..self.services.len() {
            self.publish_description(i).await?;
        }
        Ok(())
    }

    async fn publish_description(&self, index: usize) -> Result<(), AgentError> {
        let svc = &self.services[index];
        let mut desc = serde_json::to_value(svc.describe(&self.ctx())).unwrap_or(Value::Null);
        desc["hostname"] = self.config.hostname.clone().into();
        let topic = self.topics.description(&self.config.hostname, svc.name());
        self.local
            .publish_state(&topic, serde_json::to_vec(&desc).unwrap_or_default())
            .await?;
        Ok(())
    }

    async fn serve(
        &mut self,
        udp: RollCallSocket,
        mut incoming: mpsc::Receiver<Message>,
    ) -> Result<(), AgentError> {
        let mut buf = vec![0u8; DATAGRAM_BUFFER];
        loop {
            let next_tick = self.due.iter().flatten().min().copied();
            let next_expiry = self.relays.iter().map(|r| r.until).min();
            let save_at = self.save_at;
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.save_changed();
                    return Ok(());
                }
                _ = sleep_until(save_at) => self.save_changed(),
                received = udp.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from).await,
                    Err(error) => warn!(%error, "roll-call socket"),
                },
                Some(msg) = incoming.recv() => self.on_message(msg).await,
                _ = sleep_until(next_tick) => self.tick().await,
                _ = self.hw_events.notified() => self.wake_services().await,
                _ = sleep_until(next_expiry) => self.expire_relays().await,
            }
        }
    }

    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        match RollCall::parse(bytes, RollCallLimits::default()) {
            Ok(rc) => self.on_rollcall(rc, Some(from.ip())).await,
            Err(error) => {
                AgentStats::bump(self.stats.dropped_malformed());
                debug!(%from, %error, "roll-call datagram dropped");
            }
        }
    }

    async fn on_message(&mut self, msg: Message) {
        let host = self.config.hostname.clone();
        if msg.topic == self.topics.udp_request() {
            match RollCall::parse(&msg.payload, RollCallLimits::default()) {
                Ok(rc) => self.on_rollcall(rc, None).await,
                Err(error) => {
                    AgentStats::bump(self.stats.dropped_malformed());
                    debug!(%error, "roll-call over MQTT dropped");
                }
            }
        } else if matches(&self.topics.description(&host, "+"), &msg.topic) {
            let app = msg.topic.rsplit('/').nth(1).unwrap_or_default().to_owned();
            if msg.payload.is_empty() {
                self.known_apps.remove(&app);
            } else {
                self.known_apps.insert(app);
            }
        } else if let Some(index) = self.topics_in.iter().position(|t| t.contains(&msg.topic)) {
            self.on_service_message(index, &msg).await;
        } else if self.sim.gpio.is_some() && matches(&self.sim_gpio_topic("+"), &msg.topic) {
            self.drive_sim_gpio(&msg).await;
        } else if self.sim_filters().iter().any(|f| matches(f, &msg.topic)) {
            self.drive_sim_device(&msg).await;
        } else if let Some(query) = self.topics.parse_query(&host, &msg.topic) {
            self.on_query(query, &msg.payload).await;
        } else if msg.topic == self.topics.getapps(&host) {
            self.on_query(Query::GetApps, &msg.payload).await;
        } else {
            self.relay(&msg).await;
        }
    }

    /// Whether answers on `topic` would land on a topic the agent serves:
    /// a relay would subscribe to it and, when it ends, unsubscribe the
    /// agent from it, and answers there would be taken for queries.
    fn is_own_topic(&self, topic: &str) -> bool {
        let host = &self.config.hostname;
        topic == self.topics.udp_report()
            || topic == self.topics.udp_request()
            || topic == self.topics.getapps(host)
            || self.topics.parse_query(host, topic).is_some()
            || matches(&self.topics.description(host, "+"), topic)
            || self.sim_filters().iter().any(|f| matches(f, topic))
            || self.topics_in.iter().flatten().any(|t| t == topic)
    }

    /// Every service this host has: built in, announced, and foreign ones
    /// that published a description.
    fn apps(&self) -> Vec<String> {
        let mut apps = self.known_apps.clone();
        apps.extend(self.services.iter().map(|s| s.name().to_owned()));
        apps.into_iter().collect()
    }

    async fn on_rollcall(&mut self, rc: RollCall, source: Option<IpAddr>) {
        if let Err(refusal) = self.gate.admit(&rc, source, unix_ms()) {
            AgentStats::bump(self.stats.dropped_refused());
            debug!(id = rc.id, replyto = %rc.replyto, ?refusal, "roll-call not answered");
            return;
        }
        if self.is_own_topic(&rc.topic) {
            AgentStats::bump(self.stats.dropped_malformed());
            debug!(topic = %rc.topic, "roll-call asks for answers on one of the agent's own topics; dropped");
            return;
        }
        let towards = source.unwrap_or(self.own_broker.ip());
        let ipaddr = match rollcall_net::local_addr_towards(towards) {
            Ok(ip) => ip,
            Err(error) => {
                warn!(%towards, %error, "no route back to the requester; roll-call dropped");
                return;
            }
        };
        let Some(target) = self.target(&rc, source).await else {
            return;
        };
        let report = HostReport {
            rollcall: rc,
            hostname: self.config.hostname.clone(),
            ipaddr,
            extaddr: self.extaddr,
        };
        let mut answers = vec![host_answer(
            &report,
            &self.apps(),
            VERSION,
            self.started.elapsed().as_secs(),
        )];
        let ctx = self.ctx();
        answers.extend(
            self.services
                .iter()
                .map(|s| service_answer(&report, &s.describe(&ctx))),
        );
        // The host's other services get the report at once: each is an
        // answerer and waits out its own share of the window.
        self.send_all(vec![plain(self.topics.udp_report(), report.to_bytes())])
            .await;
        let window = report.rollcall.window_ms.unwrap_or(0);
        let jitter = Duration::from_millis(rand::rng().random_range(0..=window));
        let topic = report.rollcall.topic;
        let shutdown = self.shutdown.clone();
        AgentStats::bump(self.stats.answered());
        self.tracker.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(jitter) => {}
            }
            for answer in answers {
                let bytes = serde_json::to_vec(&answer).unwrap_or_default();
                if let Err(error) = target.publish(&topic, bytes, Qos::AtLeastOnce, false).await {
                    warn!(%error, "cannot publish an answer");
                }
            }
        });
    }

    /// The session answers go through: ours, or one to the requester's broker
    /// with a relay set up for this host's other services.
    async fn target(&mut self, rc: &RollCall, source: Option<IpAddr>) -> Option<SessionHandle> {
        let Some(requester) = requester_broker(rc, source) else {
            return Some(self.local.clone());
        };
        let lookup = tokio::net::lookup_host((requester.host.as_str(), requester.port));
        let resolved = match tokio::time::timeout(RELAY_TIMEOUT, lookup)
            .await
            .map(|r| r.map(|mut a| a.next()))
        {
            Ok(Ok(Some(addr))) => addr,
            _ => {
                warn!(broker = %requester, "cannot resolve the requester's broker; roll-call dropped");
                return None;
            }
        };
        if is_own_broker(resolved, self.own_broker, is_local_address) {
            return Some(self.local.clone());
        }
        let remote = requester.to_string();
        let to = match self.remote(requester) {
            Ok(to) => to,
            Err(error) => {
                warn!(%error, "cannot open a session to the requester's broker; roll-call dropped");
                return None;
            }
        };
        let window = Duration::from_millis(rc.window_ms.unwrap_or(0));
        let until = Instant::now() + window + self.config.relay_grace;
        if !self.relays.iter().any(|r| r.topic == rc.topic)
            && let Err(error) = self.local.subscribe(&rc.topic).await
        {
            warn!(%error, "cannot subscribe to relay answers");
        }
        self.relays.push(Relay {
            topic: rc.topic.clone(),
            id: rc.id,
            remote,
            to: to.clone(),
            until,
            forwarded: HashSet::new(),
        });
        Some(to)
    }

    fn remote(&mut self, broker: BrokerUrl) -> Result<SessionHandle, AgentError> {
        let key = broker.to_string();
        if let Some(remote) = self.remotes.get(&key) {
            return Ok(remote.session.handle.clone());
        }
        let mut config = self.session_template.clone();
        self.relay_sessions += 1;
        config.client_id = format!(
            "rollcall-relay-{}-{}",
            self.config.hostname, self.relay_sessions
        );
        config.broker = broker;
        config.last_will = None;
        let stop = self.session_token.child_token();
        let session = Session::start(config, stop.clone(), &self.tracker)?;
        info!(broker = %key, "relaying answers to the requester's broker");
        let handle = session.handle.clone();
        self.remotes.insert(key, Remote { session, stop });
        Ok(handle)
    }

    /// Forwards a service's answer to the requester's broker, if a relay wants
    /// it. The agent's own answers went there directly and are not forwarded.
    async fn relay(&mut self, msg: &Message) {
        if !self.relays.iter().any(|r| r.topic == msg.topic) {
            return;
        }
        let Ok(answer) = Answer::parse(&msg.payload) else {
            return;
        };
        let own = answer.hostname == self.config.hostname
            && (answer.is_host() || self.services.iter().any(|s| s.name() == answer.function));
        if own {
            return;
        }
        let now = Instant::now();
        let key = (answer.hostname, answer.function);
        for relay in &mut self.relays {
            let wanted = relay.topic == msg.topic && relay.id == answer.id && relay.until > now;
            if !wanted || !relay.forwarded.insert(key.clone()) {
                continue;
            }
            // The requester's broker may be unreachable, its queue full: the
            // loop never waits on it for long.
            let forward =
                relay
                    .to
                    .publish(&msg.topic, msg.payload.to_vec(), Qos::AtLeastOnce, false);
            tokio::select! {
                forwarded = tokio::time::timeout(RELAY_TIMEOUT, forward) => match forwarded {
                    Ok(Ok(())) => AgentStats::bump(self.stats.relayed()),
                    Ok(Err(error)) => warn!(%error, "cannot relay an answer"),
                    Err(_) => warn!(broker = %relay.remote, "the requester's broker is not taking answers; one dropped"),
                },
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Ends relays past their time, and closes sessions no relay uses.
    async fn expire_relays(&mut self) {
        let now = Instant::now();
        let (expired, kept): (Vec<Relay>, Vec<Relay>) =
            self.relays.drain(..).partition(|r| r.until <= now);
        self.relays = kept;
        for relay in expired {
            if !self.relays.iter().any(|r| r.topic == relay.topic) {
                let _ = self.local.unsubscribe(&relay.topic).await;
            }
        }
        let relays = &self.relays;
        self.remotes.retain(|key, remote| {
            let used = relays.iter().any(|r| &r.remote == key);
            if !used {
                remote.stop.cancel();
            }
            used
        });
    }

    /// Runs every service whose tick is due; a service whose health changed
    /// re-publishes its description, so the map sees it without a roll-call.
    async fn tick(&mut self) {
        let now = Instant::now();
        for i in 0..self.services.len() {
            if self.due[i].is_none_or(|at| at > now) {
                continue;
            }
            let ctx = ctx_now(&self.config, &self.topics);
            let svc = &mut self.services[i];
            let health_before = svc.describe(&ctx).health;
            let out = svc.tick(&ctx);
            let health_changed = svc.describe(&ctx).health != health_before;
            self.due[i] = svc.tick_every().map(|every| now + every);
            self.send_all(out).await;
            if health_changed && let Err(error) = self.publish_description(i).await {
                warn!(%error, "cannot publish a description");
            }
        }
    }

    /// Re-publishes service `index`'s description when its health is no
    /// longer `before`: after a query or message that failed, whose error
    /// carries no outcome to say so (a display write that failed, a DAC set
    /// the converter refused), and after a `get`.
    async fn publish_if_health_changed(
        &mut self,
        index: usize,
        before: Option<rollcall_proto::Health>,
    ) {
        let ctx = ctx_now(&self.config, &self.topics);
        if self.services[index].describe(&ctx).health != before
            && let Err(error) = self.publish_description(index).await
        {
            warn!(%error, "cannot publish a description");
        }
    }

    /// Carries out what a `set` or `control` asks for besides its answer:
    /// the new states, the new description, and saving what must survive a
    /// restart.
    async fn after(&mut self, index: usize, outcome: Outcome) {
        // New topics first: the broker takes the subscription before it
        // delivers what follows on the same connection, so whoever sees the
        // outcome can already use them.
        if outcome.description_changed {
            self.refresh_topics_in(index).await;
        }
        self.send_all(outcome.publish).await;
        if outcome.description_changed
            && let Err(error) = self.publish_description(index).await
        {
            warn!(%error, "cannot publish a description");
        }
        if outcome.persist {
            // Saved a moment later, with whatever else changed meanwhile: a
            // burst of commands costs one write, not one fsync each.
            self.unsaved.insert(index);
            self.save_at.get_or_insert(Instant::now() + SAVE_DELAY);
        }
    }

    /// Saves the state of every service changed since the last save, each
    /// atomically.
    fn save_changed(&mut self) {
        self.save_at = None;
        let mut failed = Vec::new();
        for index in std::mem::take(&mut self.unsaved) {
            let svc = &self.services[index];
            let Some(saved) = svc.saved_state() else {
                continue;
            };
            if let Err(error) = state::save(&self.config.state_dir, svc.name(), &saved) {
                warn!(%error, service = svc.name(), dir = %self.config.state_dir.display(), "cannot save state; trying again");
                failed.push(index);
            }
        }
        if !failed.is_empty() {
            self.unsaved.extend(failed);
            self.save_at = Some(Instant::now() + SAVE_RETRY);
        }
    }

    /// Gives every service what it saved before the restart, or for the GPIO
    /// service the configuration file's `[services.gpio.config]` when it
    /// saved nothing. Runs before the session connects: what the services
    /// publish now is queued until it does.
    async fn restore_services(&mut self) {
        for index in 0..self.services.len() {
            let name = self.services[index].name().to_owned();
            let saved = match state::load(&self.config.state_dir, &name) {
                Ok(saved) => saved,
                Err(error) => {
                    warn!(%error, service = %name, "saved state unreadable; starting without it");
                    None
                }
            };
            // The configuration file's `[services.{name}.config]`, for when
            // nothing was saved or what was saved is refused.
            let configured = configured_state(&self.config, &name);
            for (origin, initial) in [("saved state", saved), ("configuration file", configured)] {
                let Some(initial) = initial else { continue };
                let ctx = ctx_now(&self.config, &self.topics);
                match self.services[index].restore(initial, &ctx) {
                    Ok(out) => {
                        info!(service = %name, from = origin, "configuration restored");
                        self.due[index] = self.services[index].tick_every().map(|_| Instant::now());
                        self.send_all(out).await;
                        break;
                    }
                    Err(error) => {
                        warn!(%error, service = %name, from = origin, "configuration refused")
                    }
                }
            }
        }
    }

    /// Hands the services' hardware events to them. A service may want its
    /// tick sooner afterwards (to read a line again after bounce).
    async fn wake_services(&mut self) {
        for i in 0..self.services.len() {
            let ctx = ctx_now(&self.config, &self.topics);
            let out = self.services[i].wake(&ctx);
            if let Some(every) = self.services[i].tick_every() {
                let sooner = Instant::now() + every;
                if self.due[i].is_none_or(|at| at > sooner) {
                    self.due[i] = Some(sooner);
                }
            }
            self.send_all(out).await;
        }
    }

    /// Subscribes to what service `index` now consumes beside its queries,
    /// and unsubscribes from what it no longer does.
    async fn refresh_topics_in(&mut self, index: usize) {
        let ctx = ctx_now(&self.config, &self.topics);
        let wanted = self.services[index].topics_in(&ctx);
        let old = std::mem::replace(&mut self.topics_in[index], wanted.clone());
        for topic in old.iter().filter(|t| !wanted.contains(t)) {
            if let Err(error) = self.local.unsubscribe(topic).await {
                warn!(%error, %topic, "cannot unsubscribe");
            }
        }
        for topic in wanted.iter().filter(|t| !old.contains(t)) {
            if let Err(error) = self.local.subscribe(topic).await {
                warn!(%error, %topic, "cannot subscribe");
            }
        }
    }

    /// A message on a topic a service consumes beside its queries (the
    /// display's input); a refusal goes to the service's error topic.
    async fn on_service_message(&mut self, index: usize, msg: &Message) {
        let ctx = ctx_now(&self.config, &self.topics);
        let svc = &mut self.services[index];
        let health_before = svc.describe(&ctx).health;
        match svc.on_message(&msg.topic, &msg.payload, &ctx) {
            Ok(outcome) => self.after(index, outcome).await,
            Err(error) => {
                self.publish_if_health_changed(index, health_before).await;
                let svc = &self.services[index];
                AgentStats::bump(self.stats.query_errors());
                let topic = self.topics.app_error(&self.config.hostname, svc.name());
                self.send_all(vec![plain(topic, error_reply(None, &error.to_string()))])
                    .await;
            }
        }
    }

    /// The filters of the simulated devices' topics, when there are any.
    fn sim_filters(&self) -> Vec<String> {
        let host = &self.config.hostname;
        let mut filters = Vec::new();
        if self.sim.gpio.is_some() {
            filters.push(self.sim_gpio_topic("+"));
        }
        for name in self.sim.iio.keys() {
            filters.push(self.topics.topic(&format!("{host}/sim/{name}/+")));
        }
        if self.sim.display.is_some() {
            filters.push(self.topics.topic(&format!("{host}/sim/display/button/+")));
        }
        filters
    }

    /// `/{host}/sim/{service}/fail` (the next N reads fail),
    /// `/{host}/sim/{service}/missing` (1: the device is gone, 0: back), and
    /// `/{host}/sim/display/button/{name}` (1: pressed, 0: released).
    async fn drive_sim_device(&mut self, msg: &Message) {
        let prefix = self.topics.topic(&format!("{}/sim/", self.config.hostname));
        let rest = msg.topic.strip_prefix(&prefix).unwrap_or_default();
        let levels: Vec<&str> = rest.split('/').collect();
        let body = Request::parse(&msg.payload).map(|r| r.body);
        let result = match (levels.as_slice(), body) {
            (_, Err(e)) => Err(ServiceError::from(e)),
            (["display", "button", name], Ok(body)) => match &self.sim.display {
                Some(display) => {
                    parse_level(&body).and_then(|pressed| Ok(display.set_button(name, pressed)?))
                }
                None => Err(ServiceError::UnknownItem((*name).to_owned())),
            },
            ([service, action], Ok(body)) => match (self.sim.iio.get(*service), *action) {
                (Some(sim), "fail") => fail_count(&body).map(|n| sim.fail_next(n)),
                (Some(sim), "missing") => parse_level(&body).map(|gone| sim.set_missing(gone)),
                _ => Err(ServiceError::UnknownItem(rest.to_owned())),
            },
            _ => Err(ServiceError::UnknownItem(rest.to_owned())),
        };
        if let Err(error) = result {
            let service = levels.first().copied().unwrap_or("sim");
            let service = if SIM_IIO.contains(&service) || service == "display" {
                service
            } else {
                "sim"
            };
            let topic = self.topics.app_error(&self.config.hostname, service);
            self.send_all(vec![plain(topic, error_reply(None, &error.to_string()))])
                .await;
        }
    }

    /// `/{host}/sim/gpio/{pin}`: where a person presses a virtual button.
    fn sim_gpio_topic(&self, pin: &str) -> String {
        self.topics
            .topic(&format!("{}/sim/gpio/{pin}", self.config.hostname))
    }

    /// Drives a simulated input from `/{host}/sim/gpio/{pin}`.
    async fn drive_sim_gpio(&mut self, msg: &Message) {
        let Some(sim) = &self.sim.gpio else { return };
        let pin = msg.topic.rsplit('/').next().and_then(|p| p.parse().ok());
        let level = Request::parse(&msg.payload)
            .map_err(ServiceError::from)
            .and_then(|r| parse_level(&r.body));
        let result = match (pin, level) {
            (Some(pin), Ok(level)) => sim.drive(pin, level).map_err(ServiceError::from),
            (None, _) => Err(ServiceError::Invalid(format!("`{}`: not a pin", msg.topic))),
            (_, Err(e)) => Err(e),
        };
        if let Err(error) = result {
            let topic = self.topics.app_error(&self.config.hostname, "gpio");
            self.send_all(vec![plain(topic, error_reply(None, &error.to_string()))])
                .await;
        }
    }

    /// Publishes on the agent's broker. While the broker is away the
    /// session's queue fills and a publish waits for room; a shutdown ends
    /// the wait, so the agent always stops when asked.
    async fn send_all(&self, out: Vec<Publish>) {
        for p in out {
            let publish = self
                .local
                .publish(&p.topic, p.payload, Qos::AtLeastOnce, p.retain);
            tokio::select! {
                result = publish => {
                    if let Err(error) = result {
                        warn!(%error, topic = %p.topic, "cannot publish");
                    }
                }
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn on_query(&mut self, query: Query, payload: &[u8]) {
        let host = self.config.hostname.clone();
        let (default_reply, default_error) = match query.app() {
            Some(app) => (
                self.topics.app_reply(&host, app),
                self.topics.app_error(&host, app),
            ),
            None => (self.topics.host_reply(&host), self.topics.host_reply(&host)),
        };
        let request = match Request::parse(payload) {
            Ok(r) => r,
            Err(error) => {
                AgentStats::bump(self.stats.query_errors());
                let reply = error_reply(None, &error.to_string());
                self.send_all(vec![plain(default_error, reply)]).await;
                return;
            }
        };
        let id = request.id;
        let explicit = request.topic.clone();
        let is_command = matches!(query, Query::Set { .. } | Query::Control { .. });
        match self.answer(query, &request).await {
            Ok(fields) => {
                // Commands answer only when asked to; queries always answer.
                if let Some(topic) = explicit.or((!is_command).then_some(default_reply)) {
                    self.send_all(vec![plain(topic, ok_reply(id, fields))])
                        .await;
                }
            }
            Err(error) => {
                AgentStats::bump(self.stats.query_errors());
                let topic = explicit.unwrap_or(default_error);
                self.send_all(vec![plain(topic, error_reply(id, &error.to_string()))])
                    .await;
            }
        }
    }

    /// Carries out a query on the addressed service; the fields of the answer.
    async fn answer(&mut self, query: Query, request: &Request) -> Result<Object, ServiceError> {
        let mut fields = Object::new();
        if let Query::GetApps = query {
            fields.insert("host".into(), self.config.hostname.clone().into());
            fields.insert("apps".into(), self.apps().into());
            return Ok(fields);
        }
        let app = query.app().unwrap_or_default().to_owned();
        let index = self
            .services
            .iter()
            .position(|s| s.name() == app)
            .ok_or_else(|| ServiceError::UnknownItem(app.clone()))?;
        let ctx = ctx_now(&self.config, &self.topics);
        let svc = &mut self.services[index];
        fields.insert("function".into(), app.clone().into());
        match query {
            Query::GetApps => unreachable!("answered above"),
            Query::Interfaces { .. } => {
                if let Value::Object(lists) = svc.describe(&ctx).interfaces.topic_lists() {
                    fields.extend(lists);
                }
            }
            Query::Interface { category, .. } => {
                let desc = svc.describe(&ctx);
                let list =
                    serde_json::to_value(desc.interfaces.list(category)).unwrap_or(Value::Null);
                fields.insert(category.as_str().into(), list);
            }
            Query::Get { item, .. } => {
                let health_before = svc.describe(&ctx).health;
                let value = svc.get(&item, &ctx);
                self.publish_if_health_changed(index, health_before).await;
                fields.insert("item".into(), item.into());
                fields.insert("value".into(), value?);
            }
            Query::Set { item, .. } => {
                if item.is_empty() {
                    return Err(ServiceError::Invalid(format!(
                        "name the item to set: {}",
                        ctx.topics.service(ctx.host, &app, "set/{item}")
                    )));
                }
                let health_before = svc.describe(&ctx).health;
                let outcome = match svc.set(&item, &request.body, &ctx) {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        self.publish_if_health_changed(index, health_before).await;
                        return Err(error);
                    }
                };
                fields.extend(outcome.reply.clone());
                self.after(index, outcome).await;
            }
            Query::Control { .. } => {
                let health_before = svc.describe(&ctx).health;
                let outcome = match svc.control(&request.body, &ctx) {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        self.publish_if_health_changed(index, health_before).await;
                        return Err(error);
                    }
                };
                // A new interval counts from now, not from the old schedule.
                let svc = &self.services[index];
                self.due[index] = svc.tick_every().map(|every| Instant::now() + every);
                fields.extend(outcome.reply.clone());
                self.after(index, outcome).await;
            }
        }
        Ok(fields)
    }
}

/// How many reads `/{host}/sim/{service}/fail` makes fail: a count, 1 to 1000.
fn fail_count(body: &Body) -> Result<u32, ServiceError> {
    let n = match body {
        Body::Json(Value::Number(n)) => n.as_u64(),
        Body::Text(t) => t.trim().parse().ok(),
        Body::Empty => Some(1),
        _ => None,
    };
    n.filter(|n| (1..=1000).contains(n))
        .map(|n| n as u32)
        .ok_or_else(|| ServiceError::Invalid("a count of reads to fail, 1 to 1000".into()))
}

/// The state a service starts from when it saved none: its table's `config`
/// in the agent's configuration file, in the shape its `restore` takes.
fn configured_state(config: &Config, name: &str) -> Option<Value> {
    let sensor = |s: &Option<SensorSettings>| {
        s.as_ref()?
            .config
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok())
    };
    match name {
        "gpio" => {
            let config = config.gpio.as_ref()?.config.clone()?;
            serde_json::to_value(SavedState {
                config,
                ..SavedState::default()
            })
            .ok()
        }
        "ain" => sensor(&config.ain),
        "dht22" => sensor(&config.dht22),
        "sonar" => sensor(&config.sonar),
        "dac" => serde_json::to_value(DacSaved {
            config: config.dac.as_ref()?.config.clone()?,
            ..DacSaved::default()
        })
        .ok(),
        "display" => {
            let config = config.display.as_ref()?.config.clone()?;
            Some(serde_json::json!({ "config": config }))
        }
        _ => None,
    }
}

/// A reply: not retained.
fn plain(topic: String, payload: Vec<u8>) -> Publish {
    Publish {
        topic,
        payload,
        retain: false,
    }
}

/// Whether `ip` is one of this host's addresses: the kernel routes to a local
/// address from that same address.
fn is_local_address(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || rollcall_net::local_addr_towards(ip).is_ok_and(|from| from == ip)
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
