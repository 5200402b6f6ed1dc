//! `rollcall docs`: reads the cluster from a broker (every retained `$state`
//! and `$description`, and one roll-call) into a cluster map, and writes the
//! documentation the hub generates from it: Markdown, AsyncAPI 3.0, SVG and
//! Graphviz DOT, as files in a folder or one of them on stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rollcall_hub::docs::{AsyncApiOptions, Format};
use rollcall_hub::{ClusterMap, Descriptions, Scanner, now_ms};
use rollcall_net::{BrokerList, Qos, Session, SessionConfig};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::login::LoginArgs;

use crate::query::rand_id;
use crate::scan::RollCallArgs;

/// How long the broker may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retained messages arrive in a burst after the subscription; once none
/// has come for this long after the roll-call, the burst is over.
const QUIET: Duration = Duration::from_millis(150);
/// How many retained messages the session buffers between reads: a
/// thousand hosts with a few services each, with room to spare.
const RETAINED_BUFFER: usize = 65_536;

/// `rollcall docs` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The broker to read the cluster from.
    /// A comma-separated list names the nodes of one clustered broker,
    /// tried in turn (docs/deploying.md).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: BrokerList,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    rollcall: RollCallArgs,
    /// Write the files (cluster.md, asyncapi.json, cluster.svg, cluster.dot)
    /// into this folder, created if missing. Without it, the one --format
    /// asked for goes to stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// md, asyncapi, svg, dot, or all (all needs --out).
    #[arg(long, default_value = "all", value_parser = parse_formats)]
    format: Formats,
    /// How long to wait for answers to the roll-call (with --no-rollcall:
    /// for the broker's first retained message), in ms.
    #[arg(long, default_value_t = 2000)]
    wait_ms: u64,
    /// Stop waiting as soon as N hosts and all the services they list have answered.
    #[arg(long, value_name = "N")]
    expect: Option<usize>,
    /// Call no roll: document only what the broker retains.
    #[arg(long)]
    no_rollcall: bool,
}

/// The formats to write.
#[derive(Debug, Clone)]
struct Formats(Vec<Format>);

fn parse_formats(s: &str) -> Result<Formats, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(Formats(Format::ALL.to_vec()));
    }
    Ok(Formats(vec![s.parse()?]))
}

/// Checks the arguments and the output folder before anything connects, so
/// that a typo costs no roll-call.
fn check(args: &Args) -> Result<()> {
    if args.out.is_none() && args.format.0.len() > 1 {
        bail!(
            "--format all writes four files: give --out DIR, or one of --format md|asyncapi|svg|dot for stdout"
        );
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
        let probe = dir.join(format!(".rollcall-docs-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .with_context(|| format!("the output folder {} is not writable", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

/// Writes `text` to `path` whole or not at all: a temporary file beside
/// it, then a rename over it.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

pub async fn run(args: Args) -> Result<()> {
    check(&args)?;
    let topics = args.rollcall.topics()?;
    let opts = if args.no_rollcall {
        None
    } else {
        Some(
            args.rollcall
                .options(Duration::from_millis(args.wait_ms), args.expect)?,
        )
    };
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let result = gather(&args, &topics, opts.as_ref(), &shutdown, &tracker).await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    let map = result?;

    let snapshot = map.snapshot(now_ms());
    let options = AsyncApiOptions {
        broker: Some(args.broker.first().clone()),
        topics: Some(topics),
    };
    match &args.out {
        None => {
            let text = args.format.0[0].render(&snapshot, &options);
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write to stdout")?;
        }
        Some(dir) => {
            let mut written = Vec::new();
            for f in &args.format.0 {
                let path = dir.join(f.file_name());
                write_atomically(&path, &f.render(&snapshot, &options))?;
                written.push(f.file_name());
            }
            let services: usize = snapshot.hosts.iter().map(|h| h.services.len()).sum();
            eprintln!(
                "wrote {} in {}: {}, {}, {}",
                written.join(", "),
                dir.display(),
                count(snapshot.hosts.len(), "host"),
                count(services, "service"),
                count(snapshot.edges.len(), "data-flow edge"),
            );
        }
    }
    Ok(())
}

/// Clears the spinner line however `gather` ends, an error included.
struct Spinner(ProgressBar);

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Fills a map from the broker's retained `$state`s and `$description`s
/// and, unless `--no-rollcall`, one roll-call's answers.
async fn gather(
    args: &Args,
    topics: &rollcall_proto::Topics,
    opts: Option<&rollcall_hub::ScanOptions>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<ClusterMap> {
    let guard = Spinner(ProgressBar::new_spinner());
    let spinner = &guard.0;
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner.set_message(format!("connecting to {}", args.broker));
    let pid = std::process::id();
    let config = SessionConfig {
        channel_capacity: RETAINED_BUFFER,
        ..args
            .login
            .session(&args.broker, format!("rollcall-docs-{pid}"))?
    };
    let mut watch = Session::start(config, shutdown.clone(), tracker)?;
    watch
        .handle
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .with_context(|| format!("cannot reach the broker at {}", args.broker))?;
    let mut map = ClusterMap::new();
    // QoS 0: rumqttd hands out at most 100 retained messages per QoS 1
    // subscription, and a lost one is only a thinner document.
    for filter in map.watch_filters(topics) {
        watch
            .handle
            .subscribe_with_qos(&filter, Qos::AtMostOnce)
            .await
            .with_context(|| format!("subscribing to {filter}"))?;
    }
    let mut retained = 0usize;
    let mut answered = (0usize, 0usize);
    let take = |map: &mut ClusterMap, msg: rollcall_net::Message, retained: &mut usize| {
        *retained += 1;
        // A message the map refuses (a bad name, a malformed description)
        // is left out of the documents, as the hub leaves it out of the map.
        if let Err(error) = map.ingest(topics, &msg.topic, &msg.payload, now_ms()) {
            tracing::debug!(%error, "message left out");
        }
    };
    let show = |retained: usize, answered: (usize, usize)| {
        format!(
            "{}, {} and {} answered",
            count(retained, "retained message"),
            count(answered.0, "host"),
            count(answered.1, "service")
        )
    };
    spinner.set_message(show(0, answered));

    if let Some(opts) = opts {
        // Every `$description` comes in on the watch session: the roll-call
        // asks for brief answers and reads none a second time.
        let mut opts = opts.clone();
        if opts.descriptions == Descriptions::Read {
            opts.descriptions = Descriptions::Watched;
        }
        let opts = &opts;
        let mut scanner = Scanner::connect(
            args.login
                .session(&args.broker, format!("rollcall-docs-scan-{pid}"))?,
            topics.clone(),
            shutdown.clone(),
            tracker,
        )?;
        let progress = spinner.clone();
        let scan = scanner.scan(u64::from(rand_id()), opts, move |c| {
            progress.set_message(format!(
                "calling the roll: {} hosts, {} services answered",
                c.hosts_answered(),
                c.services_answered()
            ))
        });
        tokio::pin!(scan);
        // Retained messages are taken in while the roll-call waits.
        let report = loop {
            tokio::select! {
                report = &mut scan => break report,
                Some(msg) = watch.incoming.recv() => take(&mut map, msg, &mut retained),
            }
        }
        .with_context(|| format!("roll-call through {}", args.broker))?;
        answered = (report.hosts.len(), report.service_count());
        map.apply_scan(&report, now_ms());
    }
    // The rest of the retained burst: until it has been quiet a moment, and
    // never longer than the roll-call's own wait. Without a roll-call the
    // burst may not have started yet: the first message gets the whole wait.
    let limit = Instant::now() + Duration::from_millis(args.wait_ms).max(QUIET);
    loop {
        spinner.set_message(show(retained, answered));
        let started = opts.is_some() || retained > 0;
        let until = if started {
            (Instant::now() + QUIET).min(limit)
        } else {
            limit
        };
        match tokio::time::timeout_at(until, watch.incoming.recv()).await {
            Ok(Some(msg)) => take(&mut map, msg, &mut retained),
            Ok(None) => bail!("the session to {} closed", args.broker),
            Err(_) => break,
        }
    }
    drop(guard);
    let lost = watch.handle.stats().dropped;
    if lost > 0 {
        tracing::warn!(lost, "retained messages dropped by the full session buffer");
    }
    Ok(map)
}
