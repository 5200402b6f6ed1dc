//! The running agent as its owner sees it: [`start`] builds the broker (if
//! embedded), the MQTT session, the roll-call listener and the services,
//! hands them to the shell (`host.rs`) and returns an [`Agent`] handle.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rollcall_net::{
    BrokerList, BrokerUrl, EmbeddedBroker, NetError, RollCallSocket, Session, SessionConfig,
    SessionHandle,
};
use rollcall_services::announce::Announced;
use std::collections::HashMap;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::alarm::Alarm;
use crate::core::{AgentCore, Input};
use crate::host::{KernelRoutes, Shell, unix_ms};
use crate::registry::{BuildEnv, Built};
use crate::{AgentError, AgentStats, BrokerChoice, Config, state};

/// How long external-address discovery may take at start.
const STUN_TIMEOUT: Duration = Duration::from_secs(2);

/// A running agent.
pub struct Agent {
    stats: Arc<AgentStats>,
    session_number: u64,
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

    /// The counters of the agent's session to its broker: connections,
    /// messages, and what it dropped.
    pub fn session_stats(&self) -> rollcall_net::SessionStats {
        self.session.stats()
    }

    /// This run's session number, in its `$state` (`online N`) and its
    /// last will (`offline N`).
    pub fn session_number(&self) -> u64 {
        self.session_number
    }

    /// The address roll-calls are heard on.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The broker the agent uses (its embedded one, where it runs one), the
    /// first of its list where it has several.
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

/// The addresses of the brokers of `list` that resolve now: a roll-call
/// whose `broker` is one of them is answered on our own session. A node
/// that does not resolve is skipped with a warning (the session resolves
/// each node again when it tries it, so a name that resolves later is
/// used then; it is only not recognised as ours in a roll-call's
/// `broker`). A list none of which resolves is an error, a single broker
/// included: a misspelt name is said at once, and a service manager
/// restarts an agent that started before DNS was up.
fn resolve_brokers(
    list: &BrokerList,
    resolve: impl Fn(&BrokerUrl) -> Result<SocketAddr, NetError>,
) -> Result<Vec<SocketAddr>, AgentError> {
    let mut own = Vec::new();
    let mut first_error = None;
    for url in list.iter() {
        match resolve(url) {
            Ok(addr) => own.push(addr),
            Err(error) => {
                if list.alternates().is_empty() {
                    return Err(error.into());
                }
                warn!(broker = %url, %error, "cannot resolve a broker of the list now; skipped");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if own.is_empty() => Err(error.into()),
        _ => Ok(own),
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
    let (brokers, own_brokers, login) = match &config.broker {
        BrokerChoice::External(list) => {
            let own = resolve_brokers(list, BrokerUrl::resolve)?;
            (list.clone(), own, config.login.clone())
        }
        BrokerChoice::Embedded(options) => {
            let broker = EmbeddedBroker::start(options.clone())?;
            info!(addr = %broker.addr, tls = broker.tls, "embedded broker listening");
            // Our own broker is logged in to as its in-process user; the
            // configured TLS files stay, for relays (which get the CA only).
            let login = rollcall_net::Login {
                credentials: broker.login().credentials,
                tls: config.login.tls.clone(),
            };
            (broker.url().into(), vec![broker.addr], login)
        }
    };
    let host = config.hostname.clone();
    let (session, problem) = state::next_session(&config.state_dir, unix_ms());
    if let Some(error) = problem {
        warn!(%error, session, "session number not kept in the state folder; \
            the next start counts from the clock alone");
    }
    // Hardware events wake the loop, which hands them to the core.
    let hw_events = Arc::new(Notify::new());
    let services = build_services(&config, &hw_events);
    let stats = Arc::new(AgentStats::default());
    let config = Arc::new(config);
    let core = AgentCore::new(
        config.clone(),
        services,
        own_brokers,
        Box::new(KernelRoutes),
        stats.clone(),
        session,
        rand::random(),
    );
    // The session outlives the agent's loop by a little: it must carry the
    // final `offline` before it disconnects, so it has a token of its own.
    let session_token = CancellationToken::new();
    let mut template = SessionConfig::for_brokers(&brokers, format!("rollcall-agent-{host}"));
    template.keep_alive = config.keepalive;
    template.max_subscribe_qos = config.subscribe_qos;
    template.login = login;
    template.last_will = Some(core.last_will());
    let Session { handle, incoming } =
        Session::start(template.clone(), session_token.clone(), &tracker)?;
    let udp = RollCallSocket::bind_listener(config.udp_listen)?;
    let udp_addr = udp.local_addr()?;
    let saved: BTreeMap<_, _> = core
        .service_names()
        .into_iter()
        .filter_map(|name| match state::load(&config.state_dir, &name) {
            Ok(state::Loaded::State(saved)) => Some((name, saved)),
            Ok(state::Loaded::Nothing) => None,
            Ok(state::Loaded::Corrupt { kept, error }) => {
                error!(%error, service = %name, kept = %kept.display(),
                    "saved state is not JSON; kept aside, starting from the configured state");
                None
            }
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
    let alarm = Alarm::new().map_err(AgentError::Timer)?;
    shell.step(Input::Start { saved }).await?;
    info!(%host, udp = %udp_addr, broker = %brokers, "agent listening");

    let task = tokio::spawn(async move {
        // However this task ends, a panic included, the session ends too,
        // so `join` returns and the broker sends the will.
        let _session = session_token.clone().drop_guard();
        if let Some(ip) = discover_extaddr(shell.config()).await {
            let _ = shell.step(Input::ExternalAddr(ip)).await;
        }
        shell.serve(udp, incoming, resolved, hw_events, alarm).await;
        session_token.cancel();
        Ok(())
    });
    Ok(Agent {
        stats,
        session_number: session,
        session: handle,
        udp_addr,
        broker_url: brokers.first().clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves `*.invalid` to an error and anything else to 192.0.2.1:
    /// no DNS asked.
    fn fake(url: &BrokerUrl) -> Result<SocketAddr, NetError> {
        if url.host.ends_with(".invalid") {
            Err(NetError::Resolve {
                host: url.host.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            })
        } else {
            Ok(SocketAddr::from(([192, 0, 2, 1], url.port)))
        }
    }

    fn list(text: &str) -> BrokerList {
        text.parse().unwrap()
    }

    #[test]
    fn a_broker_of_the_list_that_does_not_resolve_is_skipped() {
        let own = resolve_brokers(&list("mqtt://a.invalid:1883,mqtt://b:1884"), fake).unwrap();
        assert_eq!(own, [SocketAddr::from(([192, 0, 2, 1], 1884))]);
        let own = resolve_brokers(&list("mqtt://b:1884,mqtt://a.invalid:1883"), fake).unwrap();
        assert_eq!(own.len(), 1);
    }

    #[test]
    fn a_list_none_of_which_resolves_is_an_error_a_single_broker_included() {
        for text in ["mqtt://a.invalid:1883", "mqtt://a.invalid,mqtt://c.invalid"] {
            let error = resolve_brokers(&list(text), fake).unwrap_err();
            assert!(error.to_string().contains("a.invalid"), "{error}");
        }
    }
}
