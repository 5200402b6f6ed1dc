//! `rollcall hub`: the scanner that runs all the time, keeping the cluster map.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rollcall_hub::{ClusterMap, HubConfig, HubError, HubShared, MapConfig};
use rollcall_net::BrokerUrl;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::scan::RollCallArgs;

/// `rollcall hub` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this broker.
    #[arg(long, conflicts_with = "embedded_broker")]
    broker: Option<BrokerUrl>,
    /// Run an embedded MQTT broker on this address and use it.
    #[arg(long, value_name = "ADDR")]
    embedded_broker: Option<SocketAddr>,
    #[command(flatten)]
    rollcall: RollCallArgs,
    /// Seconds between roll-calls.
    #[arg(long, default_value_t = 10)]
    scan_every: u64,
    /// How long each roll-call waits for answers, in ms.
    #[arg(long, default_value_t = 2000)]
    wait_ms: u64,
    /// Serve the dashboard and its JSON API on this address (port 0: any
    /// free port; the URL is printed). See docs/dashboard.md.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
}

/// Starts serving the dashboard on `listener`, printing its URL as
/// `{who}: dashboard http://...` on stderr; the task ends on `shutdown`.
pub(crate) fn start_dashboard(
    who: &str,
    listener: tokio::net::TcpListener,
    shared: Arc<HubShared>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<Result<(), HubError>>> {
    let addr = listener.local_addr()?;
    eprintln!("{who}: dashboard http://{addr}/");
    Ok(tokio::spawn(rollcall_hub::web::serve(
        listener, shared, shutdown,
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
    let broker = match (&args.broker, &args.embedded_broker) {
        (None, None) => Some(BrokerUrl::new("127.0.0.1", 1883)),
        (b, _) => b.clone(),
    };
    let every = Duration::from_secs(args.scan_every);
    let config = HubConfig {
        broker,
        embedded_broker: args.embedded_broker,
        scan: args
            .rollcall
            .options(Duration::from_millis(args.wait_ms), None)?,
        every: Some(every),
        expire_every: Duration::from_secs(1),
    };
    let signals = tokio_util::task::TaskTracker::new();
    let shutdown = rollcall_net::ctrl_c_token(&signals);
    let map = ClusterMap::with_config(MapConfig::for_rollcalls(every, config.scan.wait));
    let shared = Arc::new(HubShared::with_map(args.rollcall.topics()?, map));
    let dashboard = match args.http {
        Some(addr) => {
            let listener = rollcall_net::http_listener(addr).await?;
            let task = start_dashboard(
                "rollcall hub",
                listener,
                Arc::clone(&shared),
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
