//! `rollcall hub`: the scanner that runs all the time, keeping the cluster map.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rollcall_hub::web::Access;
use rollcall_hub::{ClusterMap, HubConfig, HubError, HubShared, MapConfig};
use rollcall_net::{BrokerList, BrokerUrl, Login, Secret};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::login::LoginArgs;
use crate::scan::RollCallArgs;

/// `rollcall hub` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this broker.
    /// A comma-separated list names the nodes of one clustered broker,
    /// tried in turn (docs/deploying.md).
    #[arg(long, conflicts_with = "embedded_broker")]
    broker: Option<BrokerList>,
    /// Run an embedded MQTT broker on this address and use it (e.g.
    /// 127.0.0.1:1883). Any address but a loopback one needs
    /// --embedded-broker-password-file. See docs/embedded-broker.md.
    #[arg(long, value_name = "ADDR")]
    embedded_broker: Option<SocketAddr>,
    #[command(flatten)]
    embedded: EmbeddedBrokerArgs,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    rollcall: RollCallArgs,
    /// Seconds between roll-calls.
    #[arg(long, default_value_t = 10)]
    scan_every: u64,
    /// How long each roll-call waits for answers, in ms.
    #[arg(long, default_value_t = 2000)]
    wait_ms: u64,
    /// The most memory the cluster map may hold, in MiB, by its own
    /// estimate. Past it, hosts never seen answering a roll-call are
    /// evicted (least recently heard from first); hosts that answered never
    /// are.
    #[arg(long, value_name = "MIB", default_value_t = rollcall_hub::map::DEFAULT_MAX_BYTES >> 20)]
    map_budget_mb: usize,
    /// Serve the dashboard and its JSON API on this address (port 0: any
    /// free port; the URL is printed). On any address but loopback it needs
    /// a token. See docs/dashboard.md.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Publish Home Assistant MQTT discovery for the map under this prefix
    /// (default `homeassistant`): an entity per GPIO pin, reading, DAC
    /// channel and display, one device per host. See docs/home-assistant.md.
    #[arg(
        long,
        value_name = "PREFIX",
        num_args = 0..=1,
        default_missing_value = rollcall_hub::ha::DEFAULT_PREFIX
    )]
    ha_discovery: Option<String>,
    #[command(flatten)]
    access: HttpAccessArgs,
}

/// Who may log in to the embedded broker, and its TLS files.
#[derive(Debug, clap::Args)]
pub struct EmbeddedBrokerArgs {
    /// Who may log in to the embedded broker: a file of `user:password`
    /// lines, readable by its owner only.
    #[arg(long, value_name = "FILE", requires = "embedded_broker")]
    embedded_broker_password_file: Option<std::path::PathBuf>,
    /// The embedded broker speaks TLS (mqtts://) with this certificate
    /// (PEM, the chain) ...
    #[arg(
        long,
        value_name = "FILE",
        requires_all = ["embedded_broker", "embedded_broker_tls_key"]
    )]
    embedded_broker_tls_cert: Option<std::path::PathBuf>,
    /// ... and this private key (PEM).
    #[arg(long, value_name = "FILE", requires = "embedded_broker_tls_cert")]
    embedded_broker_tls_key: Option<std::path::PathBuf>,
}

impl EmbeddedBrokerArgs {
    /// The embedded broker's options on `addr`.
    pub fn options(&self, addr: SocketAddr) -> rollcall_net::BrokerOptions {
        let tls = match (
            &self.embedded_broker_tls_cert,
            &self.embedded_broker_tls_key,
        ) {
            (Some(cert), Some(key)) => Some(rollcall_net::ServerTls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        rollcall_net::BrokerOptions {
            addr,
            password_file: self.embedded_broker_password_file.clone(),
            tls,
        }
    }
}

/// Who may use the dashboard (`rollcall hub`, `rollcall demo`).
#[derive(Debug, clap::Args)]
pub struct HttpAccessArgs {
    /// The dashboard's token (at least 16 bytes): every request that changes
    /// something must carry it, and reads too unless --http-read-only-public.
    /// Required when --http is not a loopback address.
    #[arg(long, env = "ROLLCALL_HTTP_TOKEN", hide_env_values = true)]
    http_token: Option<String>,
    /// Read the dashboard's token from this file (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "http_token")]
    http_token_file: Option<std::path::PathBuf>,
    /// Let anyone read the dashboard (the page, the map, events, documents,
    /// metrics); changes still need the token.
    #[arg(long)]
    http_read_only_public: bool,
    /// A host name the dashboard answers to, beside IP addresses and
    /// localhost (requests naming any other Host are refused, against DNS
    /// rebinding); repeat for more.
    #[arg(long = "http-host", value_name = "NAME")]
    http_hosts: Vec<String>,
}

impl HttpAccessArgs {
    /// The dashboard's access rules.
    pub fn access(&self) -> Result<Access> {
        let token = match (&self.http_token, &self.http_token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading --http-token-file {}", path.display()))?;
                Some(text.lines().next().unwrap_or_default().trim().to_owned())
            }
            (None, None) => None,
        };
        Ok(Access {
            token: token.map(Secret::new),
            public_read: self.http_read_only_public,
            hosts: self.http_hosts.clone(),
        })
    }
}

/// Starts serving the dashboard on `listener`, printing its URL as
/// `{who}: dashboard http://...` on stderr; the task ends on `shutdown`.
pub(crate) fn start_dashboard(
    who: &str,
    listener: tokio::net::TcpListener,
    shared: Arc<HubShared>,
    access: Access,
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<(), HubError>>> {
    let addr = listener.local_addr()?;
    access.check_for(addr)?;
    eprintln!("{who}: dashboard http://{addr}/");
    Ok(tokio::spawn(rollcall_hub::web::serve(
        listener, shared, access, shutdown,
    )))
}

/// Waits for the dashboard's task, which `shutdown` has ended.
pub(crate) async fn join_dashboard(task: Option<JoinHandle<Result<(), HubError>>>) -> Result<()> {
    if let Some(task) = task {
        task.await.context("the dashboard's task failed")??;
    }
    Ok(())
}

pub async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.scan_every > 0, "--scan-every must be at least 1");
    // Checked, not shifted: on a 32-bit Pi 4096 MiB would wrap to 0 bytes.
    let map_budget = args
        .map_budget_mb
        .checked_mul(1 << 20)
        .filter(|_| args.map_budget_mb > 0)
        .with_context(|| {
            format!(
                "--map-budget-mb must be from 1 to {} on this machine",
                usize::MAX >> 20
            )
        })?;
    // The hub's sessions log in to the broker given as the login flags say,
    // or to its embedded broker as that broker's in-process user.
    let (broker, embedded_broker) = match args.embedded_broker {
        Some(addr) => (None, Some(args.embedded.options(addr))),
        None => (
            Some(
                args.broker
                    .clone()
                    .unwrap_or_else(|| BrokerUrl::new("127.0.0.1", 1883).into()),
            ),
            None,
        ),
    };
    let login = match &broker {
        Some(list) => args.login.login(list.first())?,
        None => Login::default(),
    };
    let every = Duration::from_secs(args.scan_every);
    let config = HubConfig {
        broker,
        embedded_broker,
        login,
        scan: args
            .rollcall
            .options(Duration::from_millis(args.wait_ms), None)?,
        every: Some(every),
        expire_every: Duration::from_secs(1),
        window_per_host: args.rollcall.window_ms.is_none(),
        ha_discovery: args
            .ha_discovery
            .clone()
            .map(rollcall_hub::ha::HaConfig::new),
        subscribe_qos: args.login.max_subscribe_qos(),
    };
    if let Some(ha) = &config.ha_discovery {
        ha.check()?;
    }
    let signals = tokio_util::task::TaskTracker::new();
    let shutdown = rollcall_net::ctrl_c_token(&signals);
    let map = ClusterMap::with_config(MapConfig {
        max_bytes: map_budget,
        ..MapConfig::for_rollcalls(every, config.scan.wait)
    });
    let shared = Arc::new(HubShared::with_map(args.rollcall.topics()?, map));
    let dashboard = match args.http {
        Some(addr) => {
            let listener = rollcall_net::http_listener(addr).await?;
            let task = start_dashboard(
                "rollcall hub",
                listener,
                Arc::clone(&shared),
                args.access.access()?,
                shutdown.clone(),
            )?;
            Some(task)
        }
        None => None,
    };
    let result = rollcall_hub::run_hub(config, shared, shutdown.clone()).await;
    shutdown.cancel();
    let served = join_dashboard(dashboard).await;
    signals.close();
    signals.wait().await;
    result?;
    served
}
