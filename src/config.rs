//! Broker configuration: embedded defaults, overridden by a TOML file, overridden by flags.
//!
//! Every bound the broker enforces is named here with its unit, so what happens at the limit is a
//! decision, not an accident.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::FlushPolicy;

/// Everything a broker process needs to start.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address every shard listens on (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Host advertised to clients in Metadata; defaults to the listen address.
    pub advertised_host: Option<String>,
    /// Port advertised to clients; defaults to the listen port.
    pub advertised_port: Option<u16>,
    /// Where partitions and cluster metadata live.
    pub data_dir: PathBuf,
    /// Number of shards (pinned executors); 0 means one per available core.
    pub shards: usize,
    /// Durability policy: `always`, `interval:<ms>` or `never`.
    pub flush: String,
    /// This broker's node id.
    pub broker_id: i32,
    /// Rack advertised in Metadata, if any.
    pub rack: Option<String>,
    /// Create topics on first Metadata request for them.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics with -1.
    pub num_partitions: i32,
    /// Replication factor for CreateTopics with -1.
    pub default_replication_factor: i16,
    /// Largest request frame accepted for Produce (`socket.request.max.bytes`).
    pub socket_request_max_bytes: usize,
    /// Largest request frame accepted for every other API. Smaller than the Produce bound
    /// because the protocol library sizes arrays from their wire counts before decoding them.
    pub control_request_max_bytes: usize,
    /// Default `max.message.bytes` for topics.
    pub message_max_bytes: usize,
    /// Connections each shard accepts; further ones are closed at once.
    pub max_connections_per_shard: usize,
    /// Requests a connection may have in flight before the broker stops reading from it.
    pub max_in_flight_requests_per_connection: usize,
    /// Bytes each shard's read cache of recent batches may hold.
    pub cache_bytes_per_shard: u64,
    /// Capacity of each shard's inbox of cross-shard messages (back-pressure beyond it).
    pub shard_queue_capacity: usize,
    /// Default `retention.ms` for topics (-1: forever).
    pub log_retention_ms: i64,
    /// Default `retention.bytes` for topics (-1: no limit).
    pub log_retention_bytes: i64,
    /// Default `segment.bytes` for topics.
    pub log_segment_bytes: u64,
    /// Default `segment.ms` for topics.
    pub log_segment_ms: i64,
    /// How often each shard runs retention over its partitions.
    pub log_retention_check_interval_ms: u64,
    /// Preallocate segment files.
    pub log_preallocate: bool,
    /// Partitions of the internal `__consumer_offsets` topic.
    pub offsets_topic_num_partitions: i32,
    /// How long a group waits for more members before its first rebalance completes.
    pub group_initial_rebalance_delay_ms: u64,
    /// Smallest session timeout a member may ask for.
    pub group_min_session_timeout_ms: i32,
    /// Largest session timeout a member may ask for.
    pub group_max_session_timeout_ms: i32,
    /// Largest number of members in one group.
    pub group_max_size: usize,
    /// Committed offsets of an empty group are kept this long.
    pub offsets_retention_minutes: i64,
    /// Largest metadata a member may attach to a committed offset.
    pub offset_metadata_max_bytes: usize,
    /// Address of the HTTP endpoint for metrics and shard status (off when unset).
    pub metrics_listen: Option<SocketAddr>,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9092".parse().expect("literal address"),
            advertised_host: None,
            advertised_port: None,
            data_dir: PathBuf::from("./moldau-data"),
            shards: 0,
            flush: "always".into(),
            broker_id: 0,
            rack: None,
            auto_create_topics: true,
            num_partitions: 1,
            default_replication_factor: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            control_request_max_bytes: 8 * 1024 * 1024,
            message_max_bytes: 1_048_588,
            max_connections_per_shard: 10_000,
            max_in_flight_requests_per_connection: 64,
            cache_bytes_per_shard: 256 * 1024 * 1024,
            shard_queue_capacity: 4096,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_segment_bytes: 1 << 30,
            log_segment_ms: 7 * 24 * 3600 * 1000,
            log_retention_check_interval_ms: 300_000,
            log_preallocate: true,
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 10_000,
            offsets_retention_minutes: 7 * 24 * 60,
            offset_metadata_max_bytes: 4096,
            metrics_listen: None,
            shutdown_grace_ms: 5000,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax or unknown/mistyped keys.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl BrokerConfig {
    /// Builds the configuration: defaults, then `file` (TOML), then `overrides` (`key=value`,
    /// values in TOML syntax, bare words taken as strings).
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::Invalid(format!("override {item:?} is not key=value")))?;
            let key = key.trim().replace('-', "_");
            let value = value.trim();
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_owned()));
            table.insert(key, parsed);
        }
        let config: BrokerConfig =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if let Err(e) = FlushPolicy::parse(&self.flush) {
            return bad(e);
        }
        if self.num_partitions < 1 {
            return bad("num_partitions must be at least 1".into());
        }
        if self.offsets_topic_num_partitions < 1 {
            return bad("offsets_topic_num_partitions must be at least 1".into());
        }
        if self.socket_request_max_bytes < 1024 || self.control_request_max_bytes < 1024 {
            return bad("request size limits must be at least 1024 bytes".into());
        }
        if self.max_in_flight_requests_per_connection == 0 || self.shard_queue_capacity == 0 {
            return bad("in-flight and queue bounds must be positive".into());
        }
        if self.log_segment_bytes < 4096 || self.log_segment_bytes > i32::MAX as u64 {
            return bad("log_segment_bytes must be between 4096 and 2147483647".into());
        }
        Ok(())
    }

    /// The flush policy, parsed.
    pub fn flush_policy(&self) -> FlushPolicy {
        FlushPolicy::parse(&self.flush).expect("validated")
    }

    /// Number of shards to run: the configured count, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            return self.shards;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Host and port clients should connect to.
    pub fn advertised(&self) -> (String, u16) {
        let host = self.advertised_host.clone().unwrap_or_else(|| self.listen.ip().to_string());
        (host, self.advertised_port.unwrap_or(self.listen.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_listen_on_loopback_9092() {
        let config = BrokerConfig::load(None, &[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.flush_policy(), FlushPolicy::Always);
        assert_eq!(config.data_dir, PathBuf::from("./moldau-data"));
    }

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moldau.toml");
        std::fs::write(&path, "num_partitions = 3\nflush = \"never\"\n").unwrap();
        let config = BrokerConfig::load(Some(&path), &["num-partitions=5".into(), "data_dir=/x".into()]).unwrap();
        assert_eq!(config.num_partitions, 5);
        assert_eq!(config.flush_policy(), FlushPolicy::Never);
        assert_eq!(config.data_dir, PathBuf::from("/x"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(BrokerConfig::load(None, &["no_such_key=1".into()]).is_err());
        assert!(BrokerConfig::load(None, &["flush=sometimes".into()]).is_err());
        assert!(BrokerConfig::load(None, &["num_partitions=0".into()]).is_err());
        assert!(BrokerConfig::load(None, &["num_partitions".into()]).is_err());
    }
}
