//! `rollcall scan`: one roll-call, then the report.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rollcall_hub::{ScanOptions, ScanReport, Scanner};
use rollcall_net::BrokerUrl;
use rollcall_proto::Topics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    /// Each answerer waits a random 0..N ms first, so thousands do not answer at once.
    #[arg(long, default_value_t = 20)]
    pub window_ms: u64,
    /// Topic root (`""` gives `/udp/request`).
    #[arg(long, default_value = "")]
    pub root: String,
    /// Sign roll-calls with this cluster key, for agents that have one.
    #[arg(long, env = "ROLLCALL_CLUSTER_KEY", hide_env_values = true)]
    pub cluster_key: Option<String>,
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
        Ok(ScanOptions {
            replyto: self.replyto.clone(),
            topic: self.topic.clone(),
            udp_port: self.udp_port,
            broadcasts,
            targets: self.targets.clone(),
            via_mqtt: self.via_mqtt,
            wait,
            window_ms: self.window_ms,
            expect,
            cluster_key: self.cluster_key.clone().map(String::into_bytes),
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
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: BrokerUrl,
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
    /// Send the roll-call up to N times, the same id each time, while
    /// answers are missing: each send waits `--wait-ms`/N. On a lossy link a
    /// datagram may miss some hosts; those that heard it already answer
    /// once only.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    repeat: u32,
}

pub async fn run(args: Args) -> Result<()> {
    let per_send = Duration::from_millis((args.wait_ms / u64::from(args.repeat)).max(1));
    let opts = args.rollcall.options(per_send, args.expect)?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut scanner = Scanner::connect(
        args.broker.clone(),
        format!("rollcall-scan-{}", std::process::id()),
        args.rollcall.topics()?,
        shutdown.clone(),
        &tracker,
    )?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message("calling the roll");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let id = u64::from(rand_id());
    let first = tokio::time::Instant::now();
    let mut report: Result<ScanReport> = Err(anyhow::anyhow!("no roll-call sent"));
    for _ in 0..args.repeat {
        let since_first = first.elapsed();
        let part = scanner
            .scan(id, &opts, |c| {
                spinner.set_message(format!(
                    "{} hosts, {} services answered",
                    c.hosts_answered(),
                    c.services_answered()
                ))
            })
            .await
            .with_context(|| format!("roll-call through {}", args.broker));
        report = match (report, part) {
            (Ok(so_far), Ok(part)) => Ok(merge(so_far, part, since_first)),
            (_, part) => part,
        };
        let done = match (&report, args.expect) {
            (Err(_), _) => true,
            (Ok(r), Some(n)) => complete(r, n),
            (Ok(_), None) => false,
        };
        if done {
            break;
        }
    }
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

/// Adds the answers of a repeated send of the same roll-call, which began
/// `since_first` after the first, to the report so far: each (host,
/// function) once, every time counted from the first send.
fn merge(mut so_far: ScanReport, part: ScanReport, since_first: Duration) -> ScanReport {
    let offset = since_first.as_millis() as u64;
    so_far.elapsed_ms = offset + part.elapsed_ms;
    so_far.other_ids += part.other_ids;
    so_far.duplicates += part.duplicates;
    so_far.lost_in_session += part.lost_in_session;
    for mut host in part.hosts {
        host.t_ms = host.t_ms.map(|t| t + offset);
        for s in &mut host.services {
            s.t_ms += offset;
        }
        let Some(known) = so_far
            .hosts
            .iter_mut()
            .find(|h| h.hostname == host.hostname)
        else {
            so_far.hosts.push(host);
            continue;
        };
        if known.t_ms.is_none() {
            known.t_ms = host.t_ms;
            known.apps = host.apps;
            known.version = host.version;
        }
        known.ipaddr = known.ipaddr.take().or(host.ipaddr);
        known.extaddr = known.extaddr.take().or(host.extaddr);
        for s in host.services {
            if !known.services.iter().any(|k| k.function == s.function) {
                known.services.push(s);
            }
        }
        known.services.sort_by(|a, b| a.function.cmp(&b.function));
    }
    so_far.hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    so_far
}

/// What `--expect n` waits for, in a merged report: n host answers, and
/// every service those hosts list.
fn complete(report: &ScanReport, n: usize) -> bool {
    let answered: Vec<_> = report.hosts.iter().filter(|h| h.t_ms.is_some()).collect();
    answered.len() >= n
        && answered.iter().all(|h| {
            h.apps
                .iter()
                .flatten()
                .all(|app| h.services.iter().any(|s| &s.function == app))
        })
}

/// A roll-call id unlikely to collide with another scanner's.
pub fn rand_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use rollcall_hub::{HostSeen, ServiceSeen};

    use super::*;

    fn service(function: &str, t_ms: u64) -> ServiceSeen {
        ServiceSeen {
            function: function.into(),
            inputs: None,
            outputs: None,
            control: None,
            t_ms,
            interfaces: None,
            health: None,
        }
    }

    fn host(name: &str, t_ms: Option<u64>, services: Vec<ServiceSeen>) -> HostSeen {
        HostSeen {
            hostname: name.into(),
            ipaddr: Some(format!("198.18.0.{}", name.len())),
            extaddr: None,
            t_ms,
            apps: t_ms.map(|_| vec!["gpio".into(), "system".into()]),
            version: None,
            services,
        }
    }

    fn report(hosts: Vec<HostSeen>, elapsed_ms: u64) -> ScanReport {
        ScanReport {
            id: 7,
            elapsed_ms,
            window_ms: 20,
            other_ids: 1,
            duplicates: 0,
            lost_in_session: 0,
            hosts,
        }
    }

    #[test]
    fn a_repeat_fills_in_what_the_first_send_missed_with_times_from_the_first_send() {
        let first = report(
            vec![
                host("a", Some(3), vec![service("system", 4), service("gpio", 5)]),
                // Only a service of c answered; its host answer was lost.
                host("c", None, vec![service("system", 9)]),
            ],
            1000,
        );
        assert!(!complete(&first, 2));
        let second = report(
            vec![
                host("b", Some(2), vec![service("gpio", 3), service("system", 4)]),
                host("c", Some(6), vec![service("gpio", 7), service("system", 8)]),
            ],
            500,
        );
        let merged = merge(first, second, Duration::from_millis(1000));
        assert_eq!(merged.elapsed_ms, 1500);
        assert_eq!(merged.other_ids, 2);
        let names: Vec<&str> = merged.hosts.iter().map(|h| h.hostname.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let b = &merged.hosts[1];
        assert_eq!(b.t_ms, Some(1002));
        assert_eq!(b.services[0].t_ms, 1003);
        // c keeps its first `system` answer and gains its host answer and gpio.
        let c = &merged.hosts[2];
        assert_eq!(c.t_ms, Some(1006));
        assert_eq!(c.apps.as_ref().map(Vec::len), Some(2));
        let c_services: Vec<(&str, u64)> = c
            .services
            .iter()
            .map(|s| (s.function.as_str(), s.t_ms))
            .collect();
        assert_eq!(c_services, [("gpio", 1007), ("system", 9)]);
        assert!(complete(&merged, 3));
        assert!(!complete(&merged, 4));
    }

    #[test]
    fn a_host_is_complete_only_with_every_service_it_lists() {
        let r = report(vec![host("a", Some(1), vec![service("system", 2)])], 10);
        assert!(!complete(&r, 1), "gpio is listed and has not answered");
    }
}
