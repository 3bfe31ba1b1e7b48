//! `moldau topic create|list|describe|alter|delete`.

use std::collections::BTreeMap;

use clap::Subcommand;

use super::{connect, key_value};
use crate::client::ClientError;
use crate::client::admin::ConfigOp;

/// Topic actions.
#[derive(Subcommand, Debug)]
pub enum TopicAction {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (-1: the broker default).
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        /// Replication factor (-1: the broker default).
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// Topic config, as key=value (repeatable).
        #[arg(long = "config", value_parser = key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List {
        /// Include internal topics.
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions and its configs that differ from the defaults.
    Describe {
        /// Topic name.
        name: String,
        /// Show every config, defaults included.
        #[arg(long)]
        all_configs: bool,
    },
    /// Change a topic: configs and partition count.
    Alter {
        /// Topic name.
        name: String,
        /// Set a config, as key=value (repeatable).
        #[arg(long = "config", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Remove a config override (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
        /// Grow the topic to this many partitions.
        #[arg(long)]
        partitions: Option<i32>,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
    },
}

/// Runs a topic action.
pub async fn run(target: &super::Target, action: TopicAction) -> Result<(), ClientError> {
    let client = connect(target).await?;
    match action {
        TopicAction::Create { name, partitions, replication_factor, configs } => {
            let configs: BTreeMap<String, String> = configs.into_iter().collect();
            client.create_topic(&name, partitions, replication_factor, &configs).await?;
            println!("created topic {name}");
        }
        TopicAction::List { internal } => {
            let metadata = client.metadata(None, false).await?;
            let mut names: Vec<String> = metadata
                .topics
                .iter()
                .filter(|t| internal || !t.is_internal)
                .filter_map(|t| t.name.as_ref().map(|n| n.as_str().to_owned()))
                .collect();
            names.sort();
            for name in names {
                println!("{name}");
            }
        }
        TopicAction::Describe { name, all_configs } => {
            let topic = client.topic(&name, false).await?;
            println!(
                "topic {}  id {}  partitions {}{}",
                topic.name,
                topic.id,
                topic.partitions.len(),
                if topic.internal { "  (internal)" } else { "" }
            );
            let mut partitions = topic.partitions.clone();
            partitions.sort_by_key(|p| p.0);
            for (index, leader, replicas, isr) in partitions {
                let (start, _) = client.list_offset(&name, index, -2).await?;
                let (end, _) = client.list_offset(&name, index, -1).await?;
                println!(
                    "  partition {index:<4} leader {leader}  replicas {replicas:?}  isr {isr:?}  offsets {start}..{end}"
                );
            }
            for entry in client.describe_topic_configs(&name).await? {
                if all_configs || !entry.is_default {
                    println!(
                        "  config {}={}{}",
                        entry.name,
                        entry.value.unwrap_or_default(),
                        if entry.is_default { "  (default)" } else { "" }
                    );
                }
            }
        }
        TopicAction::Alter { name, configs, delete_configs, partitions } => {
            let mut ops: Vec<ConfigOp> = configs.into_iter().map(|(k, v)| ConfigOp::Set(k, v)).collect();
            ops.extend(delete_configs.into_iter().map(ConfigOp::Delete));
            if !ops.is_empty() {
                client.alter_topic_configs(&name, &ops).await?;
            }
            if let Some(count) = partitions {
                client.create_partitions(&name, count).await?;
            }
            println!("altered topic {name}");
        }
        TopicAction::Delete { name } => {
            client.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}
