//! The `moldau` command: the broker (`serve`) and tools that talk to any Kafka-compatible broker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use moldau::broker::Broker;
use moldau::config::BrokerConfig;

#[derive(Parser)]
#[command(name = "moldau", version, about = "A Kafka-wire-compatible, thread-per-core event-streaming broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (defaults: 127.0.0.1:9092, ./moldau-data, one shard per core, flush=always).
    Serve(Box<ServeArgs>),
    #[command(flatten)]
    Tool(Box<moldau::cli::ToolCommand>),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file: TOML with Moldau's names (as in `moldau::config::BrokerConfig`), or
    /// Kafka's `server.properties` (a `.properties` file, Kafka's property names).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Number of shards (pinned executors); default one per core.
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Durability: always, interval:MS or never.
    #[arg(long, value_name = "always|interval:MS|never")]
    flush: Option<String>,
    /// This node's id (broker_id), unique in the cluster.
    #[arg(long, value_name = "ID")]
    node_id: Option<i32>,
    /// The metadata quorum's voters, the same list on every node: ID@HOST:PORT,... (their
    /// controller listeners). Unset: a cluster of this broker alone.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    voters: Option<String>,
    /// This voter's controller listener (default: its entry in --voters).
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// What clients are told to connect to (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Any other setting, as KEY=VALUE (repeatable), e.g. --set num_partitions=3.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOLDAU_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journal gets plain `key=value` fields.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread it spawns afterwards), so
/// they can be taken synchronously with `sigwait`.
fn block_shutdown_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: `set` holds blocked signals; sigwait stores the one taken.
    unsafe { libc::sigwait(set, &mut signal) };
    signal
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut overrides = args.set;
    if let Some(listen) = args.listen {
        overrides.push(format!("listen=\"{listen}\""));
    }
    if let Some(dir) = args.data_dir {
        overrides.push(format!("data_dir=\"{}\"", dir.display()));
    }
    if let Some(shards) = args.shards {
        overrides.push(format!("shards={shards}"));
    }
    if let Some(flush) = args.flush {
        overrides.push(format!("flush=\"{flush}\""));
    }
    if let Some(advertised) = args.advertised_listener {
        let Some((host, port)) = advertised.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        else {
            eprintln!("moldau: --advertised-listener {advertised:?} is not HOST:PORT");
            return ExitCode::from(2);
        };
        overrides.push(format!("advertised_host=\"{}\"", host.trim_matches(['[', ']'])));
        overrides.push(format!("advertised_port={port}"));
    }
    if let Some(id) = args.node_id {
        overrides.push(format!("broker_id={id}"));
    }
    if let Some(voters) = args.voters {
        overrides.push(format!("voters=\"{voters}\""));
    }
    if let Some(addr) = args.controller_listen {
        overrides.push(format!("controller_listen=\"{addr}\""));
    }
    let config = match BrokerConfig::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("moldau: {err}");
            return ExitCode::from(2);
        }
    };
    let signals = block_shutdown_signals();
    let broker = match Broker::start(config) {
        Ok(broker) => broker,
        Err(err) => {
            eprintln!("moldau: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Plain lines on stdout for scripts and tests: where the broker really listens (the other
    // listeners first, the main one last).
    for spec in broker.config().extra_listeners().unwrap_or_default() {
        println!("moldau listener {} {:?} on {}", spec.name, spec.protocol, spec.addr);
    }
    println!("moldau listening on {}", broker.config().listen);
    let signal = wait_for_signal(&signals);
    tracing::info!(signal, "shutting down");
    broker.stop();
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Tool(tool) => {
            // Tools end quietly when their output pipe closes (`moldau consume | head`).
            // SAFETY: resetting a signal disposition before any other thread exists.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            moldau::cli::run(*tool)
        }
    }
}
