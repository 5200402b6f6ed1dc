//! `rollcall scan`: one roll-call, then the report.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rollcall_hub::{ScanOptions, Scanner};
use rollcall_net::BrokerList;
use rollcall_proto::Topics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::login::LoginArgs;
use crate::query::rand_id;
use crate::report;

/// Where and how a roll-call is sent: shared by `scan` and `hub`.
#[derive(Debug, Clone, clap::Args)]
pub struct RollCallArgs {
    /// UDP port the agents listen on.
    #[arg(long, default_value_t = rollcall_proto::DEFAULT_UDP_PORT)]
    pub udp_port: u16,
    /// Broadcast address to send the roll-call to (repeatable). Default: every
    /// interface's broadcast address.
    #[arg(long = "broadcast", value_name = "ADDR")]
    pub broadcasts: Vec<IpAddr>,
    /// Unicast address to send the roll-call to (repeatable).
    #[arg(long = "target", value_name = "ADDR")]
    pub targets: Vec<IpAddr>,
    /// Also publish the roll-call on MQTT `/udp/request`, for hosts beyond the broadcast domain.
    #[arg(long)]
    pub via_mqtt: bool,
    /// Topic the answers go to.
    #[arg(long, default_value = "/stat/data")]
    pub topic: String,
    /// This requester's name.
    #[arg(long, default_value = "rollcall-scan")]
    pub replyto: String,
    /// Each answerer waits a random 0..N ms first, so thousands do not answer
    /// at once. Default: 0.1 ms per host expected (`scan --expect`) or seen
    /// answering (`hub`), at most 1000; 20 when no count is known.
    #[arg(long, value_name = "N")]
    pub window_ms: Option<u64>,
    /// Topic root (`""` gives `/udp/request`).
    #[arg(long, default_value = "")]
    pub root: String,
    /// Sign roll-calls with this cluster key, for agents that have one.
    #[arg(long, env = "ROLLCALL_CLUSTER_KEY", hide_env_values = true)]
    pub cluster_key: Option<String>,
    /// Send each roll-call up to N times, spread over the wait, while
    /// answers are missing (with an expected count, until it is met), for
    /// links that lose datagrams. The same id each time: hosts that heard an
    /// earlier copy answer once only.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,
}

impl RollCallArgs {
    /// The scanner's options; no destination given means every interface's broadcast.
    pub fn options(&self, wait: Duration, expect: Option<usize>) -> Result<ScanOptions> {
        let mut broadcasts = self.broadcasts.clone();
        if broadcasts.is_empty() && self.targets.is_empty() && !self.via_mqtt {
            broadcasts = rollcall_hub::hub::default_broadcasts()?;
            anyhow::ensure!(
                !broadcasts.is_empty(),
                "no interface with a broadcast address: give --broadcast, --target or --via-mqtt"
            );
        }
        let cluster_key = self.cluster_key.clone().map(String::into_bytes);
        if let Some(key) = &cluster_key {
            rollcall_proto::sign::check_key(key).context("--cluster-key")?;
        }
        Ok(ScanOptions {
            replyto: self.replyto.clone(),
            topic: self.topic.clone(),
            udp_port: self.udp_port,
            broadcasts,
            targets: self.targets.clone(),
            via_mqtt: self.via_mqtt,
            wait,
            window_ms: self.window_ms.unwrap_or_else(|| {
                expect.map_or(
                    rollcall_hub::scan::DEFAULT_WINDOW_MS,
                    rollcall_hub::scan::window_for,
                )
            }),
            expect,
            cluster_key,
            sends: self.repeat,
            descriptions: Default::default(),
        })
    }

    /// The deployment's topics.
    pub fn topics(&self) -> Result<Topics> {
        Topics::new(&self.root).context("--root")
    }
}

/// `rollcall scan` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The broker answers arrive at.
    /// A comma-separated list names the nodes of one clustered broker,
    /// tried in turn (docs/deploying.md).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: BrokerList,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    rollcall: RollCallArgs,
    /// How long to wait for answers.
    #[arg(long, default_value_t = 2000)]
    wait_ms: u64,
    /// Stop waiting as soon as N hosts and all the services they list have answered.
    #[arg(long, value_name = "N")]
    expect: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> Result<()> {
    let opts = args
        .rollcall
        .options(Duration::from_millis(args.wait_ms), args.expect)?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let session = args.login.session(
        &args.broker,
        format!("rollcall-scan-{}", std::process::id()),
    )?;
    let mut scanner =
        Scanner::connect(session, args.rollcall.topics()?, shutdown.clone(), &tracker)?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message("calling the roll");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let report = scanner
        .scan(u64::from(rand_id()), &opts, |c| {
            spinner.set_message(format!(
                "{} hosts, {} services answered",
                c.hosts_answered(),
                c.services_answered()
            ))
        })
        .await
        .with_context(|| format!("roll-call through {}", args.broker));
    spinner.finish_and_clear();
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    let report = report?;
    report::print(&report, args.json);
    if let Some(n) = args.expect {
        anyhow::ensure!(
            report.hosts.len() >= n,
            "expected {n} hosts, {} answered",
            report.hosts.len()
        );
    }
    Ok(())
}
