//! `rollcall hub`: the scanner that runs all the time, keeping the cluster map.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rollcall_hub::{ClusterMap, HubConfig, HubShared, MapConfig};
use rollcall_net::BrokerUrl;

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
}

pub async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.scan_every > 0, "--scan-every must be at least 1");
    let broker = match (&args.broker, &args.embedded_broker) {
        (None, None) => Some(BrokerUrl::new("127.0.0.1", 1883)),
        (b, _) => b.clone(),
    };
    let config = HubConfig {
        broker,
        embedded_broker: args.embedded_broker,
        scan: args
            .rollcall
            .options(Duration::from_millis(args.wait_ms), None)?,
        every: Duration::from_secs(args.scan_every),
        expire_every: Duration::from_secs(1),
    };
    let signals = tokio_util::task::TaskTracker::new();
    let shutdown = rollcall_net::ctrl_c_token(&signals);
    let map = ClusterMap::with_config(MapConfig::for_rollcalls(config.every, config.scan.wait));
    let shared = Arc::new(HubShared::with_map(args.rollcall.topics()?, map));
    let result = rollcall_hub::run_hub(config, shared, shutdown.clone()).await;
    shutdown.cancel();
    signals.close();
    signals.wait().await;
    Ok(result?)
}
