//! The command-line tools beside `serve`: topics, produce and consume, against any
//! Kafka-compatible broker reached with `--bootstrap`.

pub mod consume;
pub mod group;
pub mod produce;
pub mod topic;

use std::process::ExitCode;

use clap::Subcommand;

use crate::client::{ClientError, KafkaClient};

pub use crate::client::DEFAULT_BOOTSTRAP;

/// The tools.
#[derive(Subcommand, Debug)]
pub enum ToolCommand {
    /// Create, list, describe, alter or delete topics.
    Topic {
        /// Broker(s) to talk to, host:port[,host:port...].
        #[arg(long, global = true, default_value = DEFAULT_BOOTSTRAP)]
        bootstrap: String,
        /// What to do.
        #[command(subcommand)]
        action: topic::TopicAction,
    },
    /// List, describe (with lag), delete consumer groups, or reset their offsets.
    Group {
        /// Broker(s) to talk to, host:port[,host:port...].
        #[arg(long, global = true, default_value = DEFAULT_BOOTSTRAP)]
        bootstrap: String,
        /// What to do.
        #[command(subcommand)]
        action: group::GroupAction,
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
            ToolCommand::Topic { bootstrap, action } => topic::run(&bootstrap, action).await,
            ToolCommand::Group { bootstrap, action } => group::run(&bootstrap, action).await,
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
pub async fn connect(bootstrap: &str) -> Result<KafkaClient, ClientError> {
    KafkaClient::connect(bootstrap, "moldau-cli").await
}

/// Parses `key=value`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}
