//! The agent's shell: it owns the roll-call socket, the MQTT sessions, the
//! state folder and the clock, feeds what happens to the [`AgentCore`] and
//! carries out the effects it returns, in order. Every decision is the
//! core's; this file only does I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollcall_net::{
    BrokerUrl, EmbeddedBroker, Message, RollCallSocket, Session, SessionConfig, SessionHandle, Will,
};
use rollcall_services::announce::Announced;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::core::{AgentCore, Effect, Input, Now, Routes, SessionId};
use crate::registry::{BuildEnv, Built};
use crate::{AgentError, AgentStats, BrokerChoice, Config, state};

/// Bigger than any roll-call, so an oversized datagram is seen as oversized.
const DATAGRAM_BUFFER: usize = 2048;
/// The longest the loop waits on a requester's broker: to resolve its name,
/// or for room to queue an answer.
const RELAY_TIMEOUT: Duration = Duration::from_secs(1);
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
        let result = (self.task.await).unwrap_or_else(|e| Err(AgentError::Crashed(e.to_string())));
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
    let host = config.hostname.clone();
    // The session outlives the agent's loop by a little: it must carry the
    // final `offline` before it disconnects, so it has a token of its own.
    let session_token = CancellationToken::new();
    let mut template = SessionConfig::new(broker_url.clone(), format!("rollcall-agent-{host}"));
    template.keep_alive = config.keepalive;
    template.credentials = config.credentials.clone();
    template.ca_file = config.ca_file.clone();
    template.last_will = Some(Will {
        topic: config.topics.state(&host),
        payload: b"offline".to_vec(),
        retain: true,
    });
    let Session { handle, incoming } =
        Session::start(template.clone(), session_token.clone(), &tracker)?;
    let udp = RollCallSocket::bind_listener(config.udp_listen)?;
    let udp_addr = udp.local_addr()?;

    // Hardware events wake the loop, which hands them to the core.
    let hw_events = Arc::new(Notify::new());
    let services = build_services(&config, &hw_events);
    let stats = Arc::new(AgentStats::default());
    let config = Arc::new(config);
    let core = AgentCore::new(
        config.clone(),
        services,
        own_broker,
        Box::new(KernelRoutes),
        stats.clone(),
        rand::random(),
    );
    let saved: BTreeMap<_, _> = core
        .service_names()
        .into_iter()
        .filter_map(|name| match state::load(&config.state_dir, &name) {
            Ok(saved) => saved.map(|s| (name, s)),
            Err(error) => {
                warn!(%error, service = %name, "saved state unreadable; starting without it");
                None
            }
        })
        .collect();
    let (resolved_tx, resolved) = mpsc::channel(64);
    let mut shell = Shell {
        core,
        config,
        local: handle.clone(),
        template,
        remotes: HashMap::new(),
        wake: None,
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
        session_token: session_token.clone(),
        resolved_tx,
    };
    shell.step(Input::Start { saved }).await?;
    info!(%host, udp = %udp_addr, broker = %broker_url, "agent listening");

    let task = tokio::spawn(async move {
        // However this task ends, a panic included, the session ends too,
        // so `join` returns and the broker sends the will.
        let _session = session_token.clone().drop_guard();
        if let Some(ip) = discover_extaddr(&shell.config).await {
            let _ = shell.step(Input::ExternalAddr(ip)).await;
        }
        shell.serve(udp, incoming, resolved, hw_events).await;
        session_token.cancel();
        Ok(())
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

/// The built-in services that run, on their hardware, and the announced
/// ones. A service whose hardware is missing is left out with a warning.
fn build_services(config: &Config, hw_events: &Arc<Notify>) -> Vec<Built> {
    let env = BuildEnv {
        sim: config.sim,
        hostname: &config.hostname,
        sysfs_root: &config.sysfs_root,
    };
    let built = config
        .services
        .iter()
        .filter_map(|s| match s.settings.build(&env) {
            Ok(built) => Some(built),
            Err(error) => {
                warn!(%error, service = s.name, "service off: its hardware is missing");
                None
            }
        });
    let announced = config
        .announce
        .iter()
        .map(|a| Built::plain(Announced::new(a.clone())));
    let mut services: Vec<Built> = built.chain(announced).collect();
    for built in &mut services {
        let notify = hw_events.clone();
        built
            .service
            .set_waker(Arc::new(move || notify.notify_one()));
    }
    services
}

/// The kernel's answers about this host's addresses.
struct KernelRoutes;

impl Routes for KernelRoutes {
    fn local_addr_towards(&self, ip: IpAddr) -> Option<IpAddr> {
        rollcall_net::local_addr_towards(ip)
            .map_err(|error| warn!(%ip, %error, "no route"))
            .ok()
    }

    /// The kernel routes to a local address from that same address.
    fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || ip.is_unspecified()
            || rollcall_net::local_addr_towards(ip).is_ok_and(|from| from == ip)
    }
}

/// Everything the loop owns besides the core: the sessions and the timer.
struct Shell {
    core: AgentCore,
    config: Arc<Config>,
    local: SessionHandle,
    template: SessionConfig,
    /// Sessions to requesters' brokers, with the token that closes each.
    remotes: HashMap<SessionId, (Session, CancellationToken)>,
    /// When the core wants [`Input::Timer`].
    wake: Option<Instant>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    session_token: CancellationToken,
    resolved_tx: mpsc::Sender<(u64, Option<SocketAddr>)>,
}

impl Shell {
    async fn serve(
        &mut self,
        udp: RollCallSocket,
        mut incoming: mpsc::Receiver<Message>,
        mut resolved: mpsc::Receiver<(u64, Option<SocketAddr>)>,
        hw_events: Arc<Notify>,
    ) {
        let mut buf = vec![0u8; DATAGRAM_BUFFER];
        loop {
            let wake = self.wake;
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => {
                    let _ = self.step(Input::Shutdown).await;
                    return;
                }
                received = udp.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.step(Input::Datagram { bytes: &buf[..len], from }).await,
                    Err(error) => {
                        warn!(%error, "roll-call socket");
                        Ok(())
                    }
                },
                Some(msg) = incoming.recv() => {
                    self.step(Input::Message { session: SessionId::Local, topic: &msg.topic, payload: &msg.payload }).await
                }
                Some((lookup, addr)) = resolved.recv() => self.step(Input::Resolved { lookup, addr }).await,
                _ = sleep_until(wake) => self.step(Input::Timer).await,
                _ = hw_events.notified() => self.step(Input::Hardware).await,
            };
            if let Err(error) = result {
                warn!(%error, "cannot reach the agent's broker");
            }
        }
    }

    /// Hands `input` to the core and carries out what it decides, and then
    /// what the outcome of that makes it decide (a failed save, a lost session).
    async fn step(&mut self, input: Input<'_>) -> Result<(), AgentError> {
        let now = Now {
            at: Instant::now().into_std(),
            unix_ms: unix_ms(),
        };
        let mut effects = self.core.handle(input, now);
        let mut result = Ok(());
        loop {
            // Each batch ends with the core's next wake-up, or has none.
            self.wake = None;
            let mut feedback = Vec::new();
            for effect in effects {
                if let Err(error) = self.carry_out(effect, &mut feedback).await {
                    result = result.and(Err(error));
                }
            }
            if feedback.is_empty() {
                return result;
            }
            effects = feedback
                .into_iter()
                .flat_map(|input| self.core.handle(input, now))
                .collect();
        }
    }

    async fn carry_out(
        &mut self,
        effect: Effect,
        feedback: &mut Vec<Input<'static>>,
    ) -> Result<(), AgentError> {
        match effect {
            Effect::Publish {
                session: SessionId::Local,
                topic,
                payload,
                qos,
                retain,
            } => {
                // While the broker is away the session's queue fills and a
                // publish waits for room; a shutdown ends the wait.
                tokio::select! {
                    result = self.local.publish(&topic, payload, qos, retain) => result?,
                    _ = self.shutdown.cancelled() => {}
                }
            }
            Effect::Publish {
                session,
                topic,
                payload,
                qos,
                retain,
            } => {
                let Some((remote, _)) = self.remotes.get(&session) else {
                    return Ok(());
                };
                // The requester's broker may be unreachable, its queue full:
                // the loop never waits on it for long.
                let publish = remote.handle.publish(&topic, payload, qos, retain);
                match tokio::time::timeout(RELAY_TIMEOUT, publish).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => warn!(%error, "cannot publish to the requester's broker"),
                    Err(_) => warn!("the requester's broker is not taking messages; one dropped"),
                }
            }
            Effect::PublishState { topic, payload } => {
                self.local.publish_state(&topic, payload).await?
            }
            Effect::Subscribe {
                session: SessionId::Local,
                filter,
            } => self.local.subscribe(&filter).await?,
            Effect::Unsubscribe {
                session: SessionId::Local,
                filter,
            } => self.local.unsubscribe(&filter).await?,
            // Sessions to other brokers only publish.
            Effect::Subscribe { .. } | Effect::Unsubscribe { .. } => {}
            Effect::Open { session, broker } => {
                let mut config = self.template.clone();
                let SessionId::Remote(n) = session else {
                    return Ok(());
                };
                config.client_id = format!("rollcall-relay-{}-{n}", self.config.hostname);
                config.broker = broker;
                config.last_will = None;
                let stop = self.session_token.child_token();
                match Session::start(config, stop.clone(), &self.tracker) {
                    Ok(remote) => drop(self.remotes.insert(session, (remote, stop))),
                    Err(error) => {
                        warn!(%error, "cannot open a session to the requester's broker");
                        feedback.push(Input::SessionLost(session));
                    }
                }
            }
            Effect::Close { session } => {
                if let Some((_, stop)) = self.remotes.remove(&session) {
                    stop.cancel();
                }
            }
            Effect::Resolve { lookup, host, port } => {
                let (tx, shutdown) = (self.resolved_tx.clone(), self.shutdown.clone());
                self.tracker.spawn(async move {
                    let found = tokio::time::timeout(
                        RELAY_TIMEOUT,
                        tokio::net::lookup_host((host.as_str(), port)),
                    );
                    tokio::select! {
                        found = found => {
                            let addr = found.ok().and_then(Result::ok).and_then(|mut a| a.next());
                            let _ = tx.send((lookup, addr)).await;
                        }
                        _ = shutdown.cancelled() => {}
                    }
                });
            }
            Effect::Save { service, state } => {
                if let Err(error) = state::save(&self.config.state_dir, &service, &state) {
                    warn!(%error, %service, dir = %self.config.state_dir.display(), "cannot save state; trying again");
                    feedback.push(Input::SaveFailed { service });
                }
            }
            Effect::WakeAt(at) => self.wake = Some(Instant::from_std(at)),
        }
        Ok(())
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The configured external address, or the one a STUN server reports.
async fn discover_extaddr(config: &Config) -> Option<IpAddr> {
    if config.extaddr.is_some() {
        return config.extaddr;
    }
    let server = config.stun_server.as_deref()?;
    let Ok(Some(addr)) = tokio::net::lookup_host(server).await.map(|mut a| a.next()) else {
        warn!(server, "cannot resolve the STUN server; extaddr left out");
        return None;
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

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
