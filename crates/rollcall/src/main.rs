//! `rollcall`: one binary, a module per subcommand. Parsing arguments,
//! printing for people (tables) or programs (`--json`), and turning errors
//! into exit codes live here; everything else lives in the library crates.
//! Without the cargo feature `hub` (default on) the binary is the agent
//! alone: `agent`, `get` and `set`.

mod agent;
#[cfg(feature = "assets")]
mod assets;
#[cfg(feature = "hub")]
mod demo;
#[cfg(feature = "hub")]
mod docs;
#[cfg(feature = "hub")]
mod hub;
mod login;
mod query;
#[cfg(feature = "hub")]
mod report;
#[cfg(feature = "hub")]
mod scan;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A self-documenting, self-reporting IoT cluster.
#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about, long_about = None)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A hub, its embedded broker and three simulated hosts, in one process.
    #[cfg(feature = "hub")]
    Demo(demo::Args),
    /// The per-host daemon: answers roll-calls and runs the built-in services.
    Agent(agent::Args),
    /// Calls the roll every few seconds and keeps the cluster map.
    #[cfg(feature = "hub")]
    Hub(hub::Args),
    /// Calls the roll once and prints who answered.
    #[cfg(feature = "hub")]
    Scan(scan::Args),
    /// Writes the cluster's documentation: Markdown, AsyncAPI 3.0, SVG, DOT.
    #[cfg(feature = "hub")]
    Docs(docs::Args),
    /// Asks a service for a value (`/{host}/{app}/get/{item}`).
    Get(query::GetArgs),
    /// Sets a service's value (`/{host}/{app}/set/{item}`).
    Set(query::SetArgs),
    /// Writes the man pages and shell completions (for packaging).
    #[cfg(feature = "assets")]
    #[command(hide = true)]
    Assets(assets::Args),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        // rumqttd logs every client that disconnects uncleanly as an error;
        // its own failures reach us as errors from EmbeddedBroker::start.
        0 => "info,rumqttd=off",
        1 => "debug,rumqttd=warn",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Otherwise a failed write (stderr a closed pipe) is reported with
        // eprintln!, which panics, inside whichever task logged: the signal
        // task among them, after which SIGTERM no longer stops the process.
        .log_internal_errors(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // The agent runs on one thread: it waits on the network and its
    // hardware, never on the CPU, and its wakeups (a scan every 100 ms, a
    // message) then cost no hand-over between worker threads, which was
    // most of an idle agent's CPU time (BENCHMARKS.md). A Pi Zero has one
    // core anyway. The hub, the demo and the rest keep a worker per core.
    let runtime = if matches!(cli.command, Command::Agent(_)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rollcall: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            #[cfg(feature = "hub")]
            Command::Demo(args) => demo::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            #[cfg(feature = "hub")]
            Command::Hub(args) => hub::run(args).await,
            #[cfg(feature = "hub")]
            Command::Scan(args) => scan::run(args).await,
            #[cfg(feature = "hub")]
            Command::Docs(args) => docs::run(args).await,
            Command::Get(args) => query::get(args).await,
            Command::Set(args) => query::set(args).await,
            #[cfg(feature = "assets")]
            Command::Assets(args) => assets::run::<Cli>(args),
        }
    });
    // rumqttd's threads cannot be stopped; leaving the runtime must not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rollcall: {error:#}");
            ExitCode::FAILURE
        }
    }
}
