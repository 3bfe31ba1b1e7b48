//! `moldau group list|describe|delete|reset-offsets`.

use std::collections::BTreeMap;

use clap::Subcommand;

use super::connect;
use crate::client::{ClientError, KafkaClient};

/// Group actions.
#[derive(Subcommand, Debug)]
pub enum GroupAction {
    /// List groups with their state.
    List,
    /// Members with their partitions, and per partition the committed offset, the log end
    /// offset and the lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Delete a group that has no members (its committed offsets go with it).
    Delete {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets (the group must have no active members). Prints the
    /// plan; changes nothing without --execute.
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose partitions to reset.
        #[arg(long)]
        topic: String,
        /// To the first offset still held.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To the end.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// To this offset (clamped to what the partition holds).
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        /// To the first record at or after this time (milliseconds since the epoch).
        #[arg(long, group = "to")]
        to_timestamp: Option<i64>,
        /// Apply the plan.
        #[arg(long)]
        execute: bool,
    },
}

async fn end_offsets(
    client: &KafkaClient,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, (i64, i64)>, ClientError> {
    let mut out = BTreeMap::new();
    for &p in partitions {
        let start = client.list_offset(topic, p, -2).await?.0;
        let end = client.list_offset(topic, p, -1).await?.0;
        out.insert(p, (start, end));
    }
    Ok(out)
}

/// Runs a group action.
pub async fn run(target: &super::Target, action: GroupAction) -> Result<(), ClientError> {
    let client = connect(target).await?;
    match action {
        GroupAction::List => {
            for (group, state, protocol) in client.list_groups().await? {
                println!("{group}\t{state}\t{}", if protocol.is_empty() { "-" } else { &protocol });
            }
        }
        GroupAction::Describe { group } => {
            let info = client.describe_group(&group).await?;
            println!(
                "group {}  state {}  protocol {}  members {}",
                info.group_id,
                info.state,
                if info.protocol.is_empty() { "-" } else { &info.protocol },
                info.members.len()
            );
            let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
            for m in &info.members {
                let parts: Vec<String> = m.assignment.iter().map(|(t, p)| format!("{t}-{p}")).collect();
                println!(
                    "  member {}{}  client {}  host {}  partitions [{}]",
                    m.member_id,
                    m.instance_id.as_deref().map(|i| format!(" (instance {i})")).unwrap_or_default(),
                    m.client_id,
                    m.host,
                    parts.join(", ")
                );
                for tp in &m.assignment {
                    owner.insert(tp.clone(), m.client_id.clone());
                }
            }
            let committed = client.committed_offsets(&group).await?;
            let mut partitions: BTreeMap<(String, i32), i64> =
                committed.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
            for tp in owner.keys() {
                partitions.entry(tp.clone()).or_insert(-1);
            }
            println!("  {:<30} {:>9} {:>12} {:>14} {:>10}  owner", "topic", "partition", "committed", "log-end", "lag");
            for ((topic, p), offset) in &partitions {
                let end = client.list_offset(topic, *p, -1).await.map(|(o, _)| o).unwrap_or(-1);
                let lag = if *offset >= 0 && end >= 0 { (end - offset).to_string() } else { "-".to_owned() };
                println!(
                    "  {:<30} {:>9} {:>12} {:>14} {:>10}  {}",
                    topic,
                    p,
                    if *offset >= 0 { offset.to_string() } else { "-".to_owned() },
                    end,
                    lag,
                    owner.get(&(topic.clone(), *p)).map(String::as_str).unwrap_or("-")
                );
            }
        }
        GroupAction::Delete { group } => {
            client.delete_group(&group).await?;
            println!("deleted group {group}");
        }
        GroupAction::ResetOffsets { group, topic, to_earliest, to_latest, to_offset, to_timestamp, execute } => {
            let info = client.topic(&topic, false).await?;
            let partitions: Vec<i32> = info.partitions.iter().map(|p| p.0).collect();
            let bounds = end_offsets(&client, &topic, &partitions).await?;
            let mut plan = Vec::new();
            for (&p, &(start, end)) in &bounds {
                let target = if to_earliest {
                    start
                } else if to_latest {
                    end
                } else if let Some(offset) = to_offset {
                    offset.clamp(start, end)
                } else if let Some(ts) = to_timestamp {
                    match client.list_offset(&topic, p, ts).await?.0 {
                        -1 => end,
                        o => o,
                    }
                } else {
                    return Err(ClientError::Unavailable(
                        "say where to: --to-earliest, --to-latest, --to-offset or --to-timestamp".into(),
                    ));
                };
                plan.push((topic.clone(), p, target));
            }
            for (t, p, o) in &plan {
                println!("{t}\t{p}\t{o}");
            }
            if execute {
                let state = client.describe_group(&group).await.map(|g| g.members.len()).unwrap_or(0);
                if state > 0 {
                    return Err(ClientError::Unavailable(format!(
                        "group {group} has {state} active members; stop them before resetting offsets"
                    )));
                }
                client.commit_offsets(&group, &plan).await?;
                println!("offsets of {group} reset");
            } else {
                println!("(dry run: add --execute to apply)");
            }
        }
    }
    Ok(())
}
