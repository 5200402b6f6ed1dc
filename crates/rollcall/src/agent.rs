//! `rollcall agent`: the per-host daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use rollcall_agent::RawConfig;
use rollcall_agent::config::default_toml;

/// `rollcall agent` arguments. Each overrides the same key of `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (see --print-config).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print a commented default configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the configuration, print what it amounts to, and exit.
    #[arg(long)]
    check: bool,
    /// This host's name (default: the machine's hostname).
    #[arg(long)]
    hostname: Option<String>,
    /// The MQTT broker, mqtt://host:port; a comma-separated list names the
    /// nodes of one clustered broker, tried in turn (`brokers` in --config).
    #[arg(long)]
    broker: Option<String>,
    /// Run an embedded broker on ADDR (e.g. 127.0.0.1:1883) and use it;
    /// any other address needs embedded_broker_password_file in --config.
    /// Not in the agent-only build (cargo feature `embedded-broker`).
    #[arg(long, value_name = "ADDR")]
    embedded_broker: Option<SocketAddr>,
    /// UDP port roll-calls arrive on.
    #[arg(long)]
    udp_port: Option<u16>,
    /// A broker unsigned roll-calls may have answers relayed to (the
    /// scanner's, in the broker-per-host topology); repeat for more.
    #[arg(long = "relay-broker", value_name = "URL")]
    relay_brokers: Vec<String>,
    #[command(flatten)]
    login: crate::login::LoginArgs,
    /// Where what must survive a restart is kept.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Every service on its simulated backend, to try rollcall on a PC.
    #[arg(long)]
    sim: bool,
}

pub async fn run(args: Args) -> Result<()> {
    if args.print_config {
        print!("{}", default_toml());
        return Ok(());
    }
    let mut raw = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    raw.hostname = args.hostname.or(raw.hostname);
    // A flag's list replaces the file's `broker` or `brokers`, whichever.
    if let Some(list) = args.broker {
        raw.broker = None;
        raw.brokers = Some(list.split(',').map(|url| url.trim().to_owned()).collect());
    }
    raw.embedded_broker = args.embedded_broker.or(raw.embedded_broker);
    raw.udp_port = args.udp_port.or(raw.udp_port);
    args.login.apply_to(&mut raw);
    if !args.relay_brokers.is_empty() {
        raw.relay_brokers = Some(args.relay_brokers.into_iter().map(Into::into).collect());
    }
    raw.state_dir = args.state_dir.or(raw.state_dir);
    if args.sim {
        raw.sim = Some(true);
    }
    let config = raw.validate()?;
    if args.check {
        println!("configuration OK: {config:#?}");
        return Ok(());
    }
    let signals = tokio_util::task::TaskTracker::new();
    let shutdown = rollcall_net::ctrl_c_token(&signals);
    let result = rollcall_agent::run(config, shutdown.clone()).await;
    shutdown.cancel();
    signals.close();
    signals.wait().await;
    Ok(result?)
}
