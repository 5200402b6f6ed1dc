//! `rollcall hub`: calls the roll every few seconds, keeps the latest cluster
//! map, and logs who appeared and who went missing.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollcall_net::{BrokerUrl, EmbeddedBroker};
use rollcall_proto::Topics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::{ClusterMap, HubError, MapEvent, ScanOptions, Scanner};

/// How the hub runs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Use this broker...
    pub broker: Option<BrokerUrl>,
    /// ...or run an embedded one here.
    pub embedded_broker: Option<SocketAddr>,
    /// The deployment's topics.
    pub topics: Topics,
    /// The roll-calls it sends.
    pub scan: ScanOptions,
    /// Time between roll-calls.
    pub every: Duration,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the hub until `shutdown`; `map` always holds the latest cluster map.
pub async fn run_hub(
    config: HubConfig,
    map: Arc<Mutex<ClusterMap>>,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    let broker = match (&config.embedded_broker, &config.broker) {
        (Some(addr), _) => {
            let b = EmbeddedBroker::start(*addr)?;
            info!(addr = %b.addr, "embedded broker listening");
            b.url()
        }
        (None, Some(url)) => url.clone(),
        (None, None) => {
            return Err(HubError::Invalid(
                "give a broker or an embedded broker".into(),
            ));
        }
    };
    let tracker = TaskTracker::new();
    let mut scanner = Scanner::connect(
        broker,
        format!("rollcall-hub-{}", config.scan.replyto),
        config.topics.clone(),
        shutdown.clone(),
        &tracker,
    )?;
    let mut ticker = tokio::time::interval(config.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut id: u64 = rand::random::<u32>().into();
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = ticker.tick() => {}
        }
        id += 1;
        let report = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            r = scanner.scan(id, &config.scan, |_| {}) => r,
        };
        let report = match report {
            Ok(r) => r,
            Err(_) if shutdown.is_cancelled() => break Ok(()),
            Err(error) => {
                warn!(%error, "roll-call failed");
                continue;
            }
        };
        let events = map
            .lock()
            .map(|mut m| m.apply_scan(&report, unix_ms()))
            .unwrap_or_default();
        for event in events {
            match event {
                MapEvent::HostAppeared(h) => info!(host = %h, "host appeared"),
                MapEvent::HostMissing(h) => warn!(host = %h, "host missing"),
                MapEvent::ServiceAppeared(h, s) => {
                    info!(host = %h, service = %s, "service appeared")
                }
                MapEvent::ServiceMissing(h, s) => warn!(host = %h, service = %s, "service missing"),
            }
        }
        info!(
            id,
            hosts = report.hosts.len(),
            services = report.service_count(),
            last_ms = report.last_answer_ms(),
            "roll-call done"
        );
    };
    tracker.close();
    tracker.wait().await;
    result
}

/// Default broadcast destinations: every interface's broadcast address.
pub fn default_broadcasts() -> Result<Vec<IpAddr>, HubError> {
    Ok(rollcall_net::interface_broadcasts()?
        .into_iter()
        .map(IpAddr::V4)
        .collect())
}
