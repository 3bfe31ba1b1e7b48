//! Topic configuration: the keys Moldau understands, their defaults (from the broker config),
//! validation, and the resolved per-log settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::BrokerConfig;
use crate::partition::PartitionConfig;
use crate::storage::{FlushPolicy, LogConfig, PREALLOCATE_STEP_BYTES, TimestampType};

/// Kafka's config value types, as reported by DescribeConfigs v3+.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    /// true/false.
    Boolean = 1,
    /// 32-bit integer.
    Int = 3,
    /// 64-bit integer.
    Long = 5,
    /// Free text.
    String = 2,
    /// Comma-separated list.
    List = 7,
    /// Floating point.
    Double = 6,
    /// A Java class name.
    Class = 8,
    /// A secret: described without its value.
    Password = 9,
}

/// One topic config key.
pub struct ConfigKey {
    /// Kafka name.
    pub name: &'static str,
    /// Value type.
    pub kind: ConfigType,
    /// One-line documentation (DescribeConfigs v3+).
    pub doc: &'static str,
    default: fn(&BrokerConfig) -> String,
    check: fn(&str) -> Result<(), String>,
}

impl ConfigKey {
    /// The default value given the broker's settings: the broker's `topic_defaults` entry
    /// (Kafka's broker synonym, such as `log.cleanup.policy`) when it holds one this key takes,
    /// else Kafka's default or the broker setting it follows.
    pub fn default_value(&self, broker: &BrokerConfig) -> String {
        match broker.topic_defaults.get(self.name) {
            Some(value) if (self.check)(value).is_ok() => value.clone(),
            _ => (self.default)(broker),
        }
    }
}

/// Checks the broker's `topic_defaults` (from Kafka's broker names such as
/// `min.insync.replicas`) as the topic configs they default; the error names the broker config.
pub fn check_broker_defaults(broker: &BrokerConfig) -> Result<(), String> {
    for (name, value) in &broker.topic_defaults {
        let broker_name =
            crate::config::TOPIC_DEFAULTS.iter().find(|(_, topic)| topic == name).map_or(name.as_str(), |(b, _)| *b);
        validate_entry(name, value).map_err(|e| format!("{broker_name}: {e}"))?;
    }
    Ok(())
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        _ => Err(format!("must be an integer of at least {min}")),
    }
}

fn long_min_1(v: &str) -> Result<(), String> {
    long_at_least(-1)(v)
}
fn long_positive(v: &str) -> Result<(), String> {
    long_at_least(1)(v)
}
fn long_non_negative(v: &str) -> Result<(), String> {
    long_at_least(0)(v)
}
fn int_in(v: &str, min: i64, max: i64) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(format!("must be an integer between {min} and {max}")),
    }
}
fn segment_bytes(v: &str) -> Result<(), String> {
    int_in(v, 4096, i64::from(i32::MAX))
}
fn max_message_bytes(v: &str) -> Result<(), String> {
    int_in(v, 0, i64::from(i32::MAX))
}
fn index_interval(v: &str) -> Result<(), String> {
    int_in(v, 0, i64::from(i32::MAX))
}
fn min_insync(v: &str) -> Result<(), String> {
    int_in(v, 1, i64::from(i32::MAX))
}
fn boolean(v: &str) -> Result<(), String> {
    match v {
        "true" | "false" => Ok(()),
        _ => Err("must be true or false".into()),
    }
}
fn cleanup_policy(v: &str) -> Result<(), String> {
    // Empty (what an incremental SUBTRACT of every policy leaves): neither deletes nor compacts.
    if v.trim().is_empty() || v.split(',').all(|p| matches!(p.trim(), "delete" | "compact")) {
        Ok(())
    } else {
        Err("must be a list of delete and compact".into())
    }
}
fn int_at_least(v: &str, min: i64) -> Result<(), String> {
    int_in(v, min, i64::from(i32::MAX))
}
fn remote_storage(v: &str) -> Result<(), String> {
    match v {
        "false" => Ok(()),
        "true" => Err("tiered storage is not supported".into()),
        _ => Err("must be true or false".into()),
    }
}
/// `*`, empty, or `partition:broker` pairs (replication throttles).
fn throttled_replicas(v: &str) -> Result<(), String> {
    let pair =
        |p: &str| p.trim().split_once(':').is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<i32>().is_ok());
    if v.trim().is_empty() || v.trim() == "*" || v.split(',').all(pair) {
        Ok(())
    } else {
        Err("must be *, empty, or a list of partition:broker".into())
    }
}
/// Kafka's "no limit" for longs.
const LONG_MAX: &str = "9223372036854775807";

/// `flush.messages` and `flush.ms` as the broker's flush policy sets them.
pub(crate) fn flush_defaults(b: &BrokerConfig) -> (String, String) {
    match b.flush {
        FlushPolicy::Always => ("1".into(), "0".into()),
        FlushPolicy::IntervalMs(ms) => (LONG_MAX.into(), ms.to_string()),
        FlushPolicy::Never => (LONG_MAX.into(), LONG_MAX.into()),
    }
}
fn timestamp_type(v: &str) -> Result<(), String> {
    match v {
        "CreateTime" | "LogAppendTime" => Ok(()),
        _ => Err("must be CreateTime or LogAppendTime".into()),
    }
}
fn compression_type(v: &str) -> Result<(), String> {
    match v {
        "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
        _ => Err("must be producer, uncompressed, gzip, snappy, lz4 or zstd".into()),
    }
}

/// The codec id `compression.type` names (`None`: keep the producer's).
fn codec_of(compression_type: &str) -> Option<i16> {
    match compression_type {
        "uncompressed" => Some(0),
        "gzip" => Some(1),
        "snappy" => Some(2),
        "lz4" => Some(3),
        "zstd" => Some(4),
        _ => None,
    }
}
fn ratio(v: &str) -> Result<(), String> {
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
        _ => Err("must be a number between 0 and 1".into()),
    }
}

/// Every topic config key Moldau accepts.
pub static TOPIC_CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        kind: ConfigType::List,
        doc: "delete: remove old segments by retention.ms / retention.bytes; compact: keep the newest record per key",
        default: |_| "delete".into(),
        check: cleanup_policy,
    },
    ConfigKey {
        name: "compression.gzip.level",
        kind: ConfigType::Int,
        doc: "Accepted; recompression uses the codec's default level",
        default: |_| "-1".into(),
        check: |v| int_in(v, -1, 9),
    },
    ConfigKey {
        name: "compression.lz4.level",
        kind: ConfigType::Int,
        doc: "Accepted; recompression uses the codec's default level",
        default: |_| "9".into(),
        check: |v| int_in(v, 1, 17),
    },
    ConfigKey {
        name: "compression.type",
        kind: ConfigType::String,
        doc: "producer: batches are stored as the producer compressed them; a codec name (or uncompressed): batches in another codec are recompressed with it",
        default: |_| "producer".into(),
        check: compression_type,
    },
    ConfigKey {
        name: "compression.zstd.level",
        kind: ConfigType::Int,
        doc: "Accepted; recompression uses the codec's default level",
        default: |_| "3".into(),
        check: |v| int_in(v, -131072, 22),
    },
    ConfigKey {
        name: "delete.retention.ms",
        kind: ConfigType::Long,
        doc: "How long delete markers are kept in compacted topics",
        default: |_| "86400000".into(),
        check: long_non_negative,
    },
    ConfigKey {
        name: "file.delete.delay.ms",
        kind: ConfigType::Long,
        doc: "Accepted; retention deletes a removed segment's files at once, paced",
        default: |_| "60000".into(),
        check: long_non_negative,
    },
    ConfigKey {
        name: "flush.messages",
        kind: ConfigType::Long,
        doc: "1: every batch is durable (fdatasync) before it is acknowledged; more: flush by flush.ms instead (counts are not tracked)",
        default: |b| flush_defaults(b).0,
        check: long_positive,
    },
    ConfigKey {
        name: "flush.ms",
        kind: ConfigType::Long,
        doc: "Longest time appended data waits for fdatasync (0: before the acknowledgement)",
        default: |b| flush_defaults(b).1,
        check: long_non_negative,
    },
    ConfigKey {
        name: "follower.replication.throttled.replicas",
        kind: ConfigType::List,
        doc: "Accepted; replication is not throttled",
        default: |_| String::new(),
        check: throttled_replicas,
    },
    ConfigKey {
        name: "index.interval.bytes",
        kind: ConfigType::Int,
        doc: "Bytes of data between entries of the sparse offset index",
        default: |_| "4096".into(),
        check: index_interval,
    },
    ConfigKey {
        name: "leader.replication.throttled.replicas",
        kind: ConfigType::List,
        doc: "Accepted; replication is not throttled",
        default: |_| String::new(),
        check: throttled_replicas,
    },
    ConfigKey {
        name: "local.retention.bytes",
        kind: ConfigType::Long,
        doc: "Accepted; without tiered storage everything is local",
        default: |_| "-2".into(),
        check: |v| long_at_least(-2)(v),
    },
    ConfigKey {
        name: "local.retention.ms",
        kind: ConfigType::Long,
        doc: "Accepted; without tiered storage everything is local",
        default: |_| "-2".into(),
        check: |v| long_at_least(-2)(v),
    },
    ConfigKey {
        name: "max.compaction.lag.ms",
        kind: ConfigType::Long,
        doc: "A compacted log whose oldest uncleaned record is older is cleaned whatever its dirty ratio",
        default: |_| LONG_MAX.into(),
        check: long_positive,
    },
    ConfigKey {
        name: "max.message.bytes",
        kind: ConfigType::Int,
        doc: "Largest record batch accepted",
        default: |b| b.message_max_bytes.to_string(),
        check: max_message_bytes,
    },
    ConfigKey {
        name: "message.timestamp.after.max.ms",
        kind: ConfigType::Long,
        doc: "CreateTime topics refuse records stamped further ahead of the broker's clock (INVALID_TIMESTAMP)",
        default: |_| "3600000".into(),
        check: long_non_negative,
    },
    ConfigKey {
        name: "message.timestamp.before.max.ms",
        kind: ConfigType::Long,
        doc: "CreateTime topics refuse records stamped further behind the broker's clock (INVALID_TIMESTAMP)",
        default: |_| LONG_MAX.into(),
        check: long_non_negative,
    },
    ConfigKey {
        name: "message.timestamp.type",
        kind: ConfigType::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's time",
        default: |_| "CreateTime".into(),
        check: timestamp_type,
    },
    ConfigKey {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigType::String,
        doc: "Fraction of a compacted log that must be uncompacted before cleaning",
        default: |_| "0.5".into(),
        check: ratio,
    },
    ConfigKey {
        name: "min.compaction.lag.ms",
        kind: ConfigType::Long,
        doc: "How long a record stays uncompacted at least",
        default: |_| "0".into(),
        check: long_non_negative,
    },
    ConfigKey {
        name: "min.insync.replicas",
        kind: ConfigType::Int,
        doc: "Replicas that must acknowledge a produce with acks=all",
        default: |_| "1".into(),
        check: min_insync,
    },
    ConfigKey {
        name: "preallocate",
        kind: ConfigType::Boolean,
        doc: "Preallocate segment files ahead of the write position",
        default: |b| b.log_preallocate.to_string(),
        check: boolean,
    },
    ConfigKey {
        name: "remote.log.copy.disable",
        kind: ConfigType::Boolean,
        doc: "Accepted; tiered storage is not supported",
        default: |_| "false".into(),
        check: boolean,
    },
    ConfigKey {
        name: "remote.log.delete.on.disable",
        kind: ConfigType::Boolean,
        doc: "Accepted; tiered storage is not supported",
        default: |_| "false".into(),
        check: boolean,
    },
    ConfigKey {
        name: "remote.storage.enable",
        kind: ConfigType::Boolean,
        doc: "Tiered storage is not supported (only false)",
        default: |_| "false".into(),
        check: remote_storage,
    },
    ConfigKey {
        name: "retention.bytes",
        kind: ConfigType::Long,
        doc: "Largest size of a partition before its oldest segments are deleted (-1: no limit)",
        default: |b| b.log_retention_bytes.to_string(),
        check: long_min_1,
    },
    ConfigKey {
        name: "retention.ms",
        kind: ConfigType::Long,
        doc: "Age after which closed segments are deleted (-1: forever)",
        default: |b| b.log_retention_ms.to_string(),
        check: long_min_1,
    },
    ConfigKey {
        name: "segment.bytes",
        kind: ConfigType::Int,
        doc: "Segment file size at which the log rolls to a new segment",
        default: |b| b.log_segment_bytes.to_string(),
        check: segment_bytes,
    },
    ConfigKey {
        name: "segment.index.bytes",
        kind: ConfigType::Int,
        doc: "Accepted; indexes are kept in memory and saved at their real size",
        default: |_| "10485760".into(),
        check: |v| int_at_least(v, 4),
    },
    ConfigKey {
        name: "segment.jitter.ms",
        kind: ConfigType::Long,
        doc: "Accepted; segments roll at segment.ms exactly",
        default: |_| "0".into(),
        check: long_non_negative,
    },
    ConfigKey {
        name: "segment.ms",
        kind: ConfigType::Long,
        doc: "Age at which the active segment is rolled",
        default: |b| b.log_segment_ms.to_string(),
        check: long_positive,
    },
    ConfigKey {
        name: "unclean.leader.election.enable",
        kind: ConfigType::Boolean,
        doc: "Allow a replica outside the ISR to become leader",
        default: |_| "false".into(),
        check: boolean,
    },
];

/// Looks a key up by name.
pub fn config_key(name: &str) -> Option<&'static ConfigKey> {
    TOPIC_CONFIG_KEYS.iter().find(|k| k.name == name)
}

/// Checks one `name=value` pair.
pub fn validate_entry(name: &str, value: &str) -> Result<(), String> {
    let key = config_key(name).ok_or_else(|| format!("unknown topic config {name:?}"))?;
    (key.check)(value).map_err(|e| format!("invalid value {value:?} for {name}: {e}"))
}

/// A topic's configuration on this broker: the values set on the topic, over this broker's
/// defaults, parsed once into the typed settings its partitions use.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicConfig {
    /// Values set explicitly on the topic.
    pub overrides: BTreeMap<String, String>,
    /// Settings of the topic's partitions on this broker.
    pub partition: Arc<PartitionConfig>,
    /// `unclean.leader.election.enable`: a replica outside the ISR may lead when no in-sync one
    /// is left (losing what only the ISR had).
    pub unclean_leader_election: bool,
    /// `message.timestamp.before.max.ms` and `after.max.ms`: how far behind and ahead of the
    /// broker's clock a CreateTime record may be stamped.
    pub timestamp_before_max_ms: i64,
    /// See `timestamp_before_max_ms`.
    pub timestamp_after_max_ms: i64,
    /// `compression.type`: the codec batches are stored in (`None`: the producer's).
    pub compression: Option<i16>,
}

/// Preallocation step of internal topics' segments.
const INTERNAL_PREALLOCATE_STEP_BYTES: u64 = 1 << 20;

impl TopicConfig {
    /// Resolves `overrides` (already validated) against this broker's defaults, for an
    /// `internal` topic (`__consumer_offsets`) or a user's.
    pub fn resolve(overrides: BTreeMap<String, String>, broker: &BrokerConfig, internal: bool) -> Self {
        let get = |name: &str| -> String {
            overrides.get(name).cloned().unwrap_or_else(|| config_key(name).expect("known key").default_value(broker))
        };
        let long = |name: &str| get(name).parse::<i64>().expect("validated");
        let log = LogConfig {
            segment_bytes: long("segment.bytes") as u64,
            segment_ms: long("segment.ms"),
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            max_message_bytes: long("max.message.bytes") as usize,
            index_interval_bytes: long("index.interval.bytes") as usize,
            flush: match (long("flush.messages"), long("flush.ms")) {
                (1, _) | (_, 0) => FlushPolicy::Always,
                (_, i64::MAX) => FlushPolicy::Never,
                (_, ms) => FlushPolicy::IntervalMs(ms as u64),
            },
            timestamp_type: if get("message.timestamp.type") == "LogAppendTime" {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            preallocate: get("preallocate") == "true",
            recycle_segments: get("preallocate") == "true",
            prepare_ahead_bytes: broker.log_prepare_ahead_bytes,
            delete_retention: get("cleanup.policy").split(',').any(|p| p.trim() == "delete"),
            compact: get("cleanup.policy").split(',').any(|p| p.trim() == "compact"),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio").parse().expect("validated"),
            min_compaction_lag_ms: long("min.compaction.lag.ms"),
            max_compaction_lag_ms: long("max.compaction.lag.ms"),
            delete_retention_ms: long("delete.retention.ms"),
            // An offsets partition holds a few small records per group: 1 MiB steps.
            preallocate_step_bytes: if internal { INTERNAL_PREALLOCATE_STEP_BYTES } else { PREALLOCATE_STEP_BYTES },
            ..LogConfig::default()
        };
        let min_insync_replicas = long("min.insync.replicas").max(1) as usize;
        Self {
            partition: Arc::new(PartitionConfig { log, min_insync_replicas }),
            unclean_leader_election: get("unclean.leader.election.enable") == "true",
            timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
            compression: codec_of(&get("compression.type")),
            overrides,
        }
    }

    /// The producer timestamps a CreateTime topic accepts at `now_ms` (inclusive), if any
    /// limit applies.
    pub fn timestamp_window(&self, now_ms: i64) -> Option<(i64, i64)> {
        let limited = self.timestamp_before_max_ms < i64::MAX || self.timestamp_after_max_ms < i64::MAX;
        (limited && self.log().timestamp_type == TimestampType::CreateTime).then(|| {
            (now_ms.saturating_sub(self.timestamp_before_max_ms), now_ms.saturating_add(self.timestamp_after_max_ms))
        })
    }

    /// Settings of the topic's partition logs.
    pub fn log(&self) -> &LogConfig {
        &self.partition.log
    }

    /// True when retention by time and size deletes old segments (`cleanup.policy` has delete).
    pub fn retention_enabled(&self) -> bool {
        self.partition.log.delete_retention
    }

    /// True when the cleaner compacts the topic's logs (`cleanup.policy` has compact).
    pub fn compacted(&self) -> bool {
        self.partition.log.compact
    }

    /// Every key with its effective value and whether it is the default.
    pub fn describe(&self, broker: &BrokerConfig) -> Vec<(&'static ConfigKey, String, bool)> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|key| match self.overrides.get(key.name) {
                Some(value) => (key, value.clone(), false),
                None => (key, key.default_value(broker), true),
            })
            .collect()
    }
}

/// Checks a topic name the way Kafka does.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if name.len() > 249 {
        return Err("topic name is longer than 249 characters".into());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(format!(
            "topic name {name:?} contains characters other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_topic_defaults_are_checked_and_resolve_topics_without_overrides() {
        let broker = BrokerConfig {
            topic_defaults: [
                ("min.insync.replicas".to_owned(), "2".to_owned()),
                ("cleanup.policy".to_owned(), "compact".to_owned()),
                ("compression.type".to_owned(), "zstd".to_owned()),
            ]
            .into(),
            ..BrokerConfig::default()
        };
        assert_eq!(check_broker_defaults(&broker), Ok(()));
        let resolved = TopicConfig::resolve(BTreeMap::new(), &broker, false);
        assert_eq!(resolved.partition.min_insync_replicas, 2);
        assert!(resolved.compacted() && !resolved.retention_enabled());
        assert_eq!(resolved.compression, Some(4));
        // The topic's own value wins.
        let own = TopicConfig::resolve([("min.insync.replicas".to_owned(), "1".to_owned())].into(), &broker, false);
        assert_eq!(own.partition.min_insync_replicas, 1);
        // A value the topic config refuses is refused, named by the broker config.
        let bad = BrokerConfig {
            topic_defaults: [("min.insync.replicas".to_owned(), "0".to_owned())].into(),
            ..BrokerConfig::default()
        };
        let err = check_broker_defaults(&bad).unwrap_err();
        assert!(err.starts_with("min.insync.replicas: invalid value \"0\""), "{err}");
        let bad = BrokerConfig {
            topic_defaults: [("cleanup.policy".to_owned(), "sometimes".to_owned())].into(),
            ..BrokerConfig::default()
        };
        assert!(check_broker_defaults(&bad).unwrap_err().starts_with("log.cleanup.policy: "));
        // Should one get past the checks anyway, the key's own default stands.
        assert!(!TopicConfig::resolve(BTreeMap::new(), &bad, false).compacted());
    }

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entries_are_validated() {
        assert!(validate_entry("retention.ms", "1000").is_ok());
        assert!(validate_entry("retention.ms", "-2").is_err());
        assert!(validate_entry("segment.bytes", "100").is_err());
        assert!(validate_entry("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_entry("cleanup.policy", "archive").is_err());
        assert!(validate_entry("no.such.config", "1").is_err());
        assert!(validate_entry("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn overrides_resolve_over_broker_defaults() {
        let broker = BrokerConfig::default();
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.bytes".to_string(), "1000".to_string());
        let config = TopicConfig::resolve(overrides, &broker, false);
        assert_eq!(config.log().retention_bytes, 1000);
        assert_eq!(config.log().retention_ms, broker.log_retention_ms);
        assert_eq!(config.log().flush, broker.flush, "the flush policy is this broker's");
        let described = config.describe(&broker);
        let retention = described.iter().find(|(k, _, _)| k.name == "retention.bytes").unwrap();
        assert_eq!((retention.1.as_str(), retention.2), ("1000", false));
    }

    #[test]
    fn kafkas_other_topic_configs_are_accepted_and_checked() {
        for (name, value) in [
            ("flush.ms", "1000"),
            ("segment.jitter.ms", "5"),
            ("min.compaction.lag.ms", "0"),
            ("file.delete.delay.ms", "60000"),
            ("leader.replication.throttled.replicas", "0:1,1:2"),
            ("follower.replication.throttled.replicas", "*"),
            ("compression.zstd.level", "-5"),
            ("remote.storage.enable", "false"),
            ("cleanup.policy", ""),
        ] {
            assert!(validate_entry(name, value).is_ok(), "{name}={value}");
        }
        for (name, value) in [
            ("remote.storage.enable", "true"),
            ("flush.messages", "0"),
            ("compression.gzip.level", "10"),
            ("leader.replication.throttled.replicas", "p:1"),
            ("message.timestamp.after.max.ms", "-1"),
        ] {
            assert!(validate_entry(name, value).is_err(), "{name}={value}");
        }
        let broker = BrokerConfig::default();
        let empty = TopicConfig::resolve([("cleanup.policy".to_owned(), String::new())].into(), &broker, false);
        assert!(!empty.compacted() && !empty.retention_enabled(), "an empty policy keeps everything");
    }

    #[test]
    fn flush_settings_pick_the_topics_flush_policy_and_default_to_the_brokers() {
        let resolve = |broker_flush, pairs: &[(&str, &str)]| {
            let broker = BrokerConfig { flush: broker_flush, ..BrokerConfig::default() };
            let overrides = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            TopicConfig::resolve(overrides, &broker, false).log().flush
        };
        for broker_flush in [FlushPolicy::Always, FlushPolicy::IntervalMs(250), FlushPolicy::Never] {
            assert_eq!(resolve(broker_flush, &[]), broker_flush);
        }
        assert_eq!(resolve(FlushPolicy::Never, &[("flush.messages", "1")]), FlushPolicy::Always);
        assert_eq!(resolve(FlushPolicy::Never, &[("flush.ms", "100")]), FlushPolicy::IntervalMs(100));
        assert_eq!(
            resolve(FlushPolicy::Always, &[("flush.messages", "1000"), ("flush.ms", LONG_MAX)]),
            FlushPolicy::Never
        );
    }

    #[test]
    fn create_time_topics_take_timestamps_within_the_window_only() {
        let broker = BrokerConfig::default();
        let config = TopicConfig::resolve(BTreeMap::new(), &broker, false);
        assert_eq!(config.timestamp_window(10_000), Some((10_000 - i64::MAX, 3_610_000)), "Kafka 4's defaults");
        let set = [("message.timestamp.before.max.ms", "100"), ("message.timestamp.after.max.ms", "50")];
        let overrides = set.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(TopicConfig::resolve(overrides, &broker, false).timestamp_window(1_000), Some((900, 1_050)));
        let append_time = [("message.timestamp.type".to_owned(), "LogAppendTime".to_owned())].into();
        assert_eq!(TopicConfig::resolve(append_time, &broker, false).timestamp_window(1_000), None);
    }
}
