//! The command-line tools beside `serve`: topics, groups, produce and consume, ACLs and SCRAM
//! users, against any Kafka-compatible broker reached with `--bootstrap` (secured as a
//! `--command-config` file of librdkafka's client properties says).

pub mod acl;
pub mod command_config;
pub mod consume;
pub mod group;
pub mod produce;
pub mod topic;
pub mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::client::{ClientError, ClientSecurity, KafkaClient};

pub use crate::client::DEFAULT_BOOTSTRAP;

/// The tools.
#[derive(Subcommand, Debug)]
pub enum ToolCommand {
    /// Create, list, describe, alter or delete topics.
    Topic {
        /// The brokers, and how to secure connections to them.
        #[command(flatten)]
        target: Target,
        /// What to do.
        #[command(subcommand)]
        action: topic::TopicAction,
    },
    /// List, describe (with lag), delete consumer groups, or reset their offsets.
    Group {
        /// The brokers, and how to secure connections to them.
        #[command(flatten)]
        target: Target,
        /// What to do.
        #[command(subcommand)]
        action: group::GroupAction,
    },
    /// Add, list or remove ACLs.
    Acl {
        /// The brokers, and how to secure connections to them.
        #[command(flatten)]
        target: Target,
        /// What to do.
        #[command(subcommand)]
        action: acl::AclAction,
    },
    /// Set, list or delete SCRAM users.
    User {
        /// The brokers, and how to secure connections to them.
        #[command(flatten)]
        target: Target,
        /// What to do.
        #[command(subcommand)]
        action: user::UserAction,
    },
    /// Produce lines from stdin or a file, one record per line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, from an offset or the end, optionally following new ones.
    Consume(consume::ConsumeArgs),
    /// Load test with HDR latency percentiles (OpenMessaging-Benchmark style), against any
    /// Kafka-compatible broker.
    Bench(crate::bench::BenchArgs),
    /// A Kafka endpoint that acknowledges and discards produces: the load tool's own ceiling.
    BenchSink(crate::bench::sink::SinkArgs),
    /// Bounded, verifying load: fails if any acknowledged record is lost (optionally killing and
    /// restarting a broker it started itself).
    Soak(crate::bench::soak::SoakArgs),
}

/// Where a tool connects, and how.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Broker(s) to talk to, host:port[,host:port...].
    #[arg(long, global = true, default_value = DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    /// A properties file of client settings, librdkafka's names: security.protocol,
    /// sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, ssl.certificate.location,
    /// ssl.key.location, ssl.endpoint.identification.algorithm.
    #[arg(long, global = true)]
    pub command_config: Option<PathBuf>,
}

/// Runs a tool and returns the process exit code.
pub fn run(command: ToolCommand) -> ExitCode {
    // The load tools run their own threads and executors.
    let command = match command {
        ToolCommand::Bench(args) => return report(crate::bench::run(args).map(|_| ())),
        ToolCommand::BenchSink(args) => return report(crate::bench::sink::run(args)),
        ToolCommand::Soak(args) => {
            return match crate::bench::soak::run(args) {
                Ok(r) if r.passed => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(3),
                Err(e) => report(Err(e)),
            };
        }
        other => other,
    };
    let outcome = crate::io::block_on(async move {
        match command {
            ToolCommand::Topic { target, action } => topic::run(&target, action).await,
            ToolCommand::Group { target, action } => group::run(&target, action).await,
            ToolCommand::Acl { target, action } => acl::run(&target, action).await,
            ToolCommand::User { target, action } => user::run(&target, action).await,
            ToolCommand::Produce(args) => produce::run(args).await,
            ToolCommand::Consume(args) => consume::run(args).await,
            ToolCommand::Bench(_) | ToolCommand::BenchSink(_) | ToolCommand::Soak(_) => unreachable!("handled above"),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moldau: {err}");
            ExitCode::FAILURE
        }
    }
}

fn report(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("moldau: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to the cluster for a tool.
pub async fn connect(target: &Target) -> Result<KafkaClient, ClientError> {
    let security = match &target.command_config {
        Some(path) => command_config::load(path).await.map_err(|reason| ClientError::Security {
            addr: target.bootstrap.clone(),
            reason: format!("--command-config {}: {reason}", path.display()),
        })?,
        None => ClientSecurity::default(),
    };
    KafkaClient::connect_secured(&target.bootstrap, "moldau-cli", security).await
}

/// Parses `key=value`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}
