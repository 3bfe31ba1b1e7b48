//! Broker configuration: embedded defaults, overridden by a file (TOML, or Kafka's
//! `server.properties`), overridden by flags. Kafka's dotted property names work wherever
//! Moldau's own do (`config/kafka.rs` maps them).
//!
//! Every bound the broker enforces is named here with its unit, so what happens at the limit is a
//! decision, not an accident.

mod kafka;
mod listeners;

pub use kafka::parse_properties;
pub use listeners::{Jaas, ListenerSpec, PLAINTEXT_LISTENER, SASL_MECHANISMS, SecurityProtocol, jaas};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::FlushPolicy;

/// Kafka's authorizer class names, either of which turns on ACLs.
pub const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";
/// The ZooKeeper-era name, taken for the same authorizer.
pub const ACL_AUTHORIZER: &str = "kafka.security.authorizer.AclAuthorizer";

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
    /// Client listeners beside `listen`, in Kafka's syntax: `NAME://host:port,...` (e.g.
    /// `SASL_SSL://127.0.0.1:9094`). `listen` stays the plaintext one brokers talk over.
    pub listeners: String,
    /// Where clients are told to reach each of `listeners`: `NAME://host:port,...`.
    pub advertised_listeners: String,
    /// Security protocol of listener names that are not one themselves: `NAME:PROTOCOL,...`.
    pub listener_security_protocol_map: String,
    /// Format of the key store: PEM only (`ssl.keystore.type`).
    pub ssl_keystore_type: String,
    /// A PEM file holding the private key and the certificate chain (`ssl.keystore.location`);
    /// read again when it changes.
    pub ssl_keystore_location: Option<PathBuf>,
    /// The private key, PEM, instead of a file (`ssl.keystore.key`).
    pub ssl_keystore_key: Option<String>,
    /// The certificate chain, PEM, instead of a file (`ssl.keystore.certificate.chain`).
    pub ssl_keystore_certificate_chain: Option<String>,
    /// Format of the trust store: PEM only (`ssl.truststore.type`).
    pub ssl_truststore_type: String,
    /// CA certificates (PEM) client certificates must chain to (`ssl.truststore.location`).
    pub ssl_truststore_location: Option<PathBuf>,
    /// Client certificates: `none`, `requested` or `required` (`ssl.client.auth`).
    pub ssl_client_auth: String,
    /// SASL mechanisms offered on SASL listeners, comma-separated (`sasl.enabled.mechanisms`).
    pub sasl_enabled_mechanisms: String,
    /// PLAIN users and their passwords (Kafka's `user_NAME="password"` options of
    /// `sasl.jaas.config`).
    pub sasl_plain_users: BTreeMap<String, String>,
    /// A file of PLAIN users, one `name=password` per line; read again when it changes.
    pub sasl_plain_users_file: Option<PathBuf>,
    /// The listener brokers replicate over (`inter.broker.listener.name`): PLAINTEXT (the main
    /// one) or one of `listeners`; a follower connects to the leader's listener of this name,
    /// secured and authenticated as that listener's protocol asks.
    pub inter_broker_listener_name: String,
    /// The SASL mechanism brokers log in to each other with, over a SASL inter-broker listener
    /// (`sasl.mechanism.inter.broker.protocol`).
    pub sasl_mechanism_inter_broker_protocol: String,
    /// The user a broker logs in as on another's SASL listener (Kafka: `username` in the
    /// listener's `sasl.jaas.config`).
    pub inter_broker_sasl_username: Option<String>,
    /// Its password (Kafka: `password` in the listener's `sasl.jaas.config`).
    pub inter_broker_sasl_password: Option<String>,
    /// `https`: a broker connecting to another over TLS checks that the certificate names the
    /// host it connects to; empty: the chain is checked, the name is not
    /// (`ssl.endpoint.identification.algorithm`).
    pub ssl_endpoint_identification_algorithm: String,
    /// A failed authentication is answered after this delay, then the connection closes
    /// (`connection.failed.authentication.delay.ms`), so guessing passwords is slow.
    pub connection_failed_authentication_delay_ms: u64,
    /// Longest an authenticated SASL session lasts before the client must authenticate again
    /// (`connections.max.reauth.ms`, KIP-368); 0: for the connection's life.
    pub connections_max_reauth_ms: u64,
    /// Client quotas measure rates over this many samples (`quota.window.num`)...
    pub quota_window_num: u32,
    /// ... of this many seconds each (`quota.window.size.seconds`).
    pub quota_window_size_seconds: u64,
    /// The authorizer (`authorizer.class.name`): empty for none (everyone may do everything),
    /// or Kafka's `StandardAuthorizer` (or `AclAuthorizer`) class name for ACLs in the cluster
    /// metadata.
    pub authorizer_class_name: String,
    /// Principals allowed everything, `;`-separated (`super.users`, e.g. `User:admin;User:ANONYMOUS`).
    pub super_users: String,
    /// With an authorizer: whether a resource no ACL names is open to everyone
    /// (`allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
    /// Where partitions and cluster metadata live.
    pub data_dir: PathBuf,
    /// Number of shards (pinned executors); 0 means one per available core.
    pub shards: usize,
    /// Durability policy: `always`, `interval:<ms>` or `never`.
    pub flush: FlushPolicy,
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
    /// Bytes of requests being read or served the broker holds at most, split evenly over the
    /// shards (`queued.max.request.bytes`): a connection whose next bytes do not fit waits
    /// (its socket fills, the client slows) until requests before it are done.
    pub queued_max_request_bytes: usize,
    /// A request whose frame has begun must arrive in full within this (ms), and a response
    /// must be taken by the client within it, or the connection is closed: a client trickling
    /// a frame, or not reading what it asked for, holds nothing for long.
    pub request_read_timeout_ms: u64,
    /// A connection that sends nothing for this long is closed (`connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Largest Fetch response the broker builds, whatever the client asks (`fetch.max.bytes`);
    /// each partition's share is capped by it too.
    pub fetch_max_bytes: usize,
    /// Bytes of record data the broker's fetches may hold at once between reading and writing
    /// them, split evenly over the shards: a fetch that does not fit waits its turn.
    pub fetch_read_budget_bytes: usize,
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
    /// How far past its data each log's active segment is zero-filled in the background while
    /// its writes are small, so appends overwrite written blocks (`storage/log/prepare.rs`;
    /// Moldau's own, no Kafka name); 0 turns it off.
    pub log_prepare_ahead_bytes: u64,
    /// Run the log cleaner (compaction of `cleanup.policy=compact` topics) on every shard.
    pub log_cleaner_enable: bool,
    /// Memory for the cleaners' offset maps, split evenly over the shards (Kafka's
    /// `log.cleaner.dedupe.buffer.size`).
    pub log_cleaner_dedupe_buffer_size: u64,
    /// Bytes per second the cleaners read and write, split evenly over the shards (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`; unlimited by default, as in Kafka).
    pub log_cleaner_io_max_bytes_per_second: f64,
    /// How long a shard's cleaner sleeps when no log is due.
    pub log_cleaner_backoff_ms: u64,
    /// Defaults of topic configs that are no setting of the broker's own, by topic config name
    /// (`"min.insync.replicas" = 2`); Kafka's broker names for them (`min.insync.replicas`,
    /// `log.cleanup.policy`, ...: `TOPIC_DEFAULTS`) land here. The topic config layer checks
    /// the values (`cluster::topic_config::check_broker_defaults`).
    #[serde(deserialize_with = "scalar_texts")]
    pub topic_defaults: BTreeMap<String, String>,
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
    /// Session timeout of consumer-protocol (KIP-848) members: the coordinator's, not theirs.
    pub group_consumer_session_timeout_ms: i32,
    /// How often consumer-protocol members heartbeat (told in every heartbeat answer).
    pub group_consumer_heartbeat_interval_ms: i32,
    /// Largest number of members in one consumer-protocol group.
    pub group_consumer_max_size: usize,
    /// Committed offsets of an empty group are kept this long.
    pub offsets_retention_minutes: i64,
    /// Largest metadata a member may attach to a committed offset.
    pub offset_metadata_max_bytes: usize,
    /// Address of the HTTP endpoint for metrics and shard status (off when unset): `host:port`,
    /// or a port alone (`9644`, `":9644"`) for 127.0.0.1, so it stays on the host unless told.
    #[serde(deserialize_with = "metrics_address")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the metrics endpoint over HTTPS with the listeners' key store (`ssl.keystore.*`),
    /// asking for client certificates as `ssl.client.auth` says.
    pub metrics_tls: bool,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace_ms: u64,
    /// The metadata quorum's voters, `id@host:port,...` (their controller listeners), the same
    /// on every node of the cluster. Unset: this broker is a cluster of its own (one voter, no
    /// controller listener).
    pub voters: Option<String>,
    /// Address of this node's controller listener (Raft and controller requests from other
    /// nodes); defaults to its own entry in `voters`. Only voters listen.
    pub controller_listen: Option<SocketAddr>,
    /// A broker whose heartbeats stop for this long is fenced: what it led moves to another
    /// in-sync replica (`broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// How often a broker heartbeats to the active controller (`broker.heartbeat.interval.ms`).
    pub broker_heartbeat_interval_ms: u64,
    /// The controller moves leadership back to preferred replicas that are live and in sync
    /// (`auto.leader.rebalance.enable`).
    pub auto_leader_rebalance_enable: bool,
    /// How often it checks (`leader.imbalance.check.interval.seconds`, in ms here).
    pub leader_imbalance_check_interval_ms: u64,
    /// A follower that has not caught up with its leader for this long leaves the ISR
    /// (`replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// Bytes a follower asks for per partition and fetch (`replica.fetch.max.bytes`).
    pub replica_fetch_max_bytes: usize,
    /// Bytes a follower asks for per fetch (`replica.fetch.response.max.bytes`).
    pub replica_fetch_response_max_bytes: usize,
    /// Longest a follower's fetch waits at the leader for new data (`replica.fetch.wait.max.ms`).
    pub replica_fetch_wait_max_ms: u64,
    /// Which replica a consumer reads from (KIP-392, `replica.selector.class`): empty for the
    /// leader only, `rack-aware` (or Kafka's `RackAwareReplicaSelector` class name) for an
    /// in-sync replica in the consumer's rack (`client.rack`).
    pub replica_selector: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9092".parse().expect("literal address"),
            advertised_host: None,
            advertised_port: None,
            listeners: String::new(),
            advertised_listeners: String::new(),
            listener_security_protocol_map: String::new(),
            ssl_keystore_type: "PEM".into(),
            ssl_keystore_location: None,
            ssl_keystore_key: None,
            ssl_keystore_certificate_chain: None,
            ssl_truststore_type: "PEM".into(),
            ssl_truststore_location: None,
            ssl_client_auth: "none".into(),
            sasl_enabled_mechanisms: SASL_MECHANISMS.join(","),
            sasl_plain_users: BTreeMap::new(),
            sasl_plain_users_file: None,
            inter_broker_listener_name: PLAINTEXT_LISTENER.into(),
            sasl_mechanism_inter_broker_protocol: "PLAIN".into(),
            inter_broker_sasl_username: None,
            inter_broker_sasl_password: None,
            ssl_endpoint_identification_algorithm: "https".into(),
            connection_failed_authentication_delay_ms: 100,
            connections_max_reauth_ms: 0,
            quota_window_num: 11,
            quota_window_size_seconds: 1,
            authorizer_class_name: String::new(),
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            data_dir: PathBuf::from("./moldau-data"),
            shards: 0,
            flush: FlushPolicy::Always,
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
            queued_max_request_bytes: 512 * 1024 * 1024,
            request_read_timeout_ms: 30_000,
            connections_max_idle_ms: 600_000,
            fetch_max_bytes: 57_671_680,
            fetch_read_budget_bytes: 512 * 1024 * 1024,
            cache_bytes_per_shard: 256 * 1024 * 1024,
            shard_queue_capacity: 4096,
            log_retention_ms: 7 * 24 * 3600 * 1000,
            log_retention_bytes: -1,
            log_segment_bytes: 1 << 30,
            log_segment_ms: 7 * 24 * 3600 * 1000,
            log_retention_check_interval_ms: 300_000,
            log_preallocate: true,
            log_prepare_ahead_bytes: crate::storage::PREPARE_AHEAD_BYTES,
            log_cleaner_enable: true,
            log_cleaner_dedupe_buffer_size: 128 << 20,
            log_cleaner_io_max_bytes_per_second: f64::MAX,
            log_cleaner_backoff_ms: 15_000,
            topic_defaults: BTreeMap::new(),
            offsets_topic_num_partitions: 50,
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 10_000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_consumer_max_size: i32::MAX as usize,
            offsets_retention_minutes: 7 * 24 * 60,
            offset_metadata_max_bytes: 4096,
            metrics_listen: None,
            metrics_tls: false,
            shutdown_grace_ms: 5000,
            voters: None,
            controller_listen: None,
            broker_session_timeout_ms: 9000,
            broker_heartbeat_interval_ms: 2000,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_ms: 300_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_response_max_bytes: 10 << 20,
            replica_fetch_wait_max_ms: 500,
            replica_selector: String::new(),
        }
    }
}

/// Sets `name` = `value` in `table`: one of Kafka's property names (mapped), or one of Moldau's
/// own (`-` taken as `_`; the value in TOML syntax, a bare word taken as a string).
fn set(table: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    match kafka::translate(name, value) {
        Some(Ok(kafka::Mapped::Set(pairs))) => {
            for (key, value) in pairs {
                table.insert(key.to_owned(), value);
            }
            Ok(())
        }
        Some(Ok(kafka::Mapped::TopicDefault(topic, value))) => {
            let defaults = table.entry("topic_defaults").or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(defaults) = defaults {
                defaults.insert(topic.to_owned(), toml::Value::String(value));
            }
            Ok(())
        }
        Some(Ok(kafka::Mapped::NoEffect(why))) => {
            tracing::info!(property = name, "taken without effect: {why}");
            Ok(())
        }
        Some(Err(reason)) => Err(ConfigError::Invalid(reason)),
        None if name.contains('.') => Err(ConfigError::Invalid(format!(
            "unknown broker property {name:?}; Kafka's names Moldau takes: {}",
            with_topic_defaults(kafka::KNOWN).join(", ")
        ))),
        None => {
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_owned()));
            table.insert(name.replace('-', "_"), parsed);
            Ok(())
        }
    }
}

/// `names` and the broker names of [`TOPIC_DEFAULTS`], sorted (for error messages).
fn with_topic_defaults(names: &[&'static str]) -> Vec<&'static str> {
    let mut names: Vec<&str> = names.iter().copied().chain(TOPIC_DEFAULTS.iter().map(|(b, _)| *b)).collect();
    names.sort_unstable();
    names
}

/// `topic_defaults`: a table of scalars (`2`, `0.5`, `true`, `"compact"`), kept as Kafka writes
/// them.
fn scalar_texts<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    BTreeMap::<String, toml::Value>::deserialize(deserializer)?
        .into_iter()
        .map(|(name, value)| match value {
            toml::Value::String(s) => Ok((name, s)),
            toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => Ok((name, value.to_string())),
            other => Err(serde::de::Error::custom(format!("topic_defaults.{name}: {other} is not a single value"))),
        })
        .collect()
}

/// `metrics_listen`: `host:port`, or a port alone for 127.0.0.1.
fn metrics_address<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Port(u16),
        Text(String),
    }
    let localhost = |port: u16| Some(SocketAddr::from(([127, 0, 0, 1], port)));
    match Option::<Given>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Given::Port(port)) => Ok(localhost(port)),
        Some(Given::Text(text)) => {
            let text = text.trim();
            if let Ok(port) = text.strip_prefix(':').unwrap_or(text).parse::<u16>() {
                return Ok(localhost(port));
            }
            text.parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!("metrics_listen: {text:?} is neither host:port nor a port"))
            })
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

pub use kafka::{TOPIC_DEFAULTS, topic_default_of};

/// True when IncrementalAlterConfigs may change broker config `name` at runtime: one of
/// [`DYNAMIC_BROKER_CONFIGS`] or of [`TOPIC_DEFAULTS`].
pub fn is_dynamic(name: &str) -> bool {
    DYNAMIC_BROKER_CONFIGS.contains(&name) || topic_default_of(name).is_some()
}

/// Kafka's broker configs that IncrementalAlterConfigs may change at runtime on a BROKER
/// resource (for every broker, or one) and that are settings of the broker's own: the topic
/// defaults, which Kafka also takes dynamically, as are those of [`TOPIC_DEFAULTS`].
/// Every other broker config is read-only: set in the file or by flags, and read at start.
pub const DYNAMIC_BROKER_CONFIGS: &[&str] = &[
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.preallocate",
    "log.retention.bytes",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.roll.hours",
    "log.roll.ms",
    "log.segment.bytes",
    "message.max.bytes",
];

impl BrokerConfig {
    /// This configuration with dynamic broker configs (Kafka's names and values) applied, as
    /// when they are given at start; of a setting's several names the finest unit wins
    /// (`log.retention.ms` over `.minutes` over `.hours`), as in Kafka. Refuses names that are
    /// not in [`DYNAMIC_BROKER_CONFIGS`] and values the setting does not take.
    pub fn with_dynamic<'a>(&self, entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ConfigError> {
        let mut entries: Vec<(&str, &str)> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(self.clone());
        }
        entries.sort_by_key(|(name, _)| kafka::precedence(name));
        let mut table = match toml::Value::try_from(self) {
            Ok(toml::Value::Table(table)) => table,
            other => {
                return Err(ConfigError::Invalid(format!("the broker's configuration does not serialize: {other:?}")));
            }
        };
        for (name, value) in entries {
            if !is_dynamic(name) {
                return Err(ConfigError::Invalid(format!(
                    "{name} cannot be changed at runtime; the broker configs that can: {}",
                    with_topic_defaults(DYNAMIC_BROKER_CONFIGS).join(", ")
                )));
            }
            set(&mut table, name, value)?;
        }
        let config: BrokerConfig =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Builds the configuration: defaults, then `file` (TOML), then `overrides` (`key=value`,
    /// values in TOML syntax, bare words taken as strings).
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                let invalid = |e: String| ConfigError::Invalid(format!("{}: {e}", path.display()));
                if path.extension().is_some_and(|e| e == "properties") {
                    let mut entries = kafka::parse_properties(&text).map_err(invalid)?;
                    // Kafka's precedence among names of one setting, whatever the file's order.
                    entries.sort_by_key(|(name, _)| kafka::precedence(name));
                    let mut table = toml::Table::new();
                    for (name, value) in entries {
                        set(&mut table, &name, &value)?;
                    }
                    table
                } else {
                    text.parse::<toml::Table>().map_err(|e| invalid(e.to_string()))?
                }
            }
            None => toml::Table::new(),
        };
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::Invalid(format!("override {item:?} is not key=value")))?;
            set(&mut table, key.trim(), value.trim())?;
        }
        let config: BrokerConfig =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.num_partitions < 1 {
            return bad("num_partitions must be at least 1".into());
        }
        if self.offsets_topic_num_partitions < 1 {
            return bad("offsets_topic_num_partitions must be at least 1".into());
        }
        if self.socket_request_max_bytes < 1024 || self.control_request_max_bytes < 1024 {
            return bad("request size limits must be at least 1024 bytes".into());
        }
        if self.queued_max_request_bytes < 1024 * 1024 {
            return bad("queued_max_request_bytes must be at least 1 MiB".into());
        }
        if self.fetch_max_bytes < 1024 || self.fetch_read_budget_bytes < 1024 * 1024 {
            return bad("fetch_max_bytes must be at least 1024 and fetch_read_budget_bytes at least 1 MiB".into());
        }
        if self.request_read_timeout_ms == 0 || self.connections_max_idle_ms == 0 {
            return bad("request_read_timeout_ms and connections_max_idle_ms must be positive".into());
        }
        if self.max_in_flight_requests_per_connection == 0 || self.shard_queue_capacity == 0 {
            return bad("in-flight and queue bounds must be positive".into());
        }
        if self.log_segment_bytes < 4096 || self.log_segment_bytes > i32::MAX as u64 {
            return bad("log_segment_bytes must be between 4096 and 2147483647".into());
        }
        if self.broker_heartbeat_interval_ms == 0 || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
        {
            return bad("broker_session_timeout_ms must be larger than broker_heartbeat_interval_ms (> 0)".into());
        }
        if self.broker_id < 0 {
            return bad("broker_id must not be negative".into());
        }
        if let Some(name) = self.topic_defaults.keys().find(|n| !TOPIC_DEFAULTS.iter().any(|(_, t)| t == n)) {
            let mut names: Vec<&str> = TOPIC_DEFAULTS.iter().map(|(_, t)| *t).collect();
            names.sort_unstable();
            return bad(format!("topic_defaults: {name:?} is not one of {}", names.join(", ")));
        }
        if self.group_consumer_heartbeat_interval_ms <= 0
            || self.group_consumer_session_timeout_ms <= self.group_consumer_heartbeat_interval_ms
        {
            return bad(
                "group_consumer_session_timeout_ms must be larger than group_consumer_heartbeat_interval_ms (> 0)"
                    .into(),
            );
        }
        if !matches!(
            self.replica_selector.as_str(),
            "" | "rack-aware" | "org.apache.kafka.common.replica.RackAwareReplicaSelector"
        ) {
            return bad(format!(
                "replica_selector must be empty (the leader) or rack-aware, not {:?}",
                self.replica_selector
            ));
        }
        if self.quota_window_num == 0 || self.quota_window_size_seconds == 0 {
            return bad("quota_window_num and quota_window_size_seconds must be at least 1".into());
        }
        self.inter_broker_protocol().map_err(ConfigError::Invalid)?;
        self.controller_protocol().map_err(ConfigError::Invalid)?;
        if self.metrics_tls && self.ssl_keystore_location.is_none() && self.ssl_keystore_certificate_chain.is_none() {
            return bad("metrics_tls needs the key store: ssl_keystore_location, or ssl_keystore_key and \
                        ssl_keystore_certificate_chain"
                .into());
        }
        if !matches!(self.authorizer_class_name.as_str(), "" | STANDARD_AUTHORIZER | ACL_AUTHORIZER) {
            return bad(format!(
                "authorizer_class_name must be empty or {STANDARD_AUTHORIZER}, not {:?}",
                self.authorizer_class_name
            ));
        }
        let voters = self.parsed_voters().map_err(ConfigError::Invalid)?;
        if self.voters.is_some() && self.controller_listen.is_some() && !voters.iter().any(|v| v.0 == self.broker_id) {
            return bad(format!("controller_listen is set but broker {} is not among the voters", self.broker_id));
        }
        Ok(())
    }

    /// The voters: node id and controller listener address; one (this broker, no listener
    /// needed) when `voters` is unset.
    pub fn parsed_voters(&self) -> Result<Vec<(i32, SocketAddr)>, String> {
        let Some(list) = &self.voters else {
            let addr = self.controller_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            return Ok(vec![(self.broker_id, addr)]);
        };
        let mut voters = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parsed = item.split_once('@').and_then(|(id, addr)| {
                let id = id.trim().parse::<i32>().ok().filter(|id| *id >= 0)?;
                let addr = std::net::ToSocketAddrs::to_socket_addrs(addr.trim()).ok()?.next()?;
                Some((id, addr))
            });
            let Some((id, addr)) = parsed else {
                return Err(format!("voters: {item:?} is not id@host:port"));
            };
            if voters.iter().any(|(other, _): &(i32, SocketAddr)| *other == id) {
                return Err(format!("voters: node {id} is listed twice"));
            }
            voters.push((id, addr));
        }
        if voters.is_empty() {
            return Err("voters: the list is empty".into());
        }
        voters.sort_unstable();
        Ok(voters)
    }

    /// Whether consumers may be sent to an in-sync replica in their rack (KIP-392).
    pub fn rack_aware_reads(&self) -> bool {
        !self.replica_selector.is_empty()
    }

    /// Where this node's controller listener binds, when it is a voter of a cluster of several
    /// nodes.
    pub fn controller_listener(&self) -> Option<SocketAddr> {
        self.voters.as_ref()?;
        let voters = self.parsed_voters().ok()?;
        let own = voters.iter().find(|v| v.0 == self.broker_id)?.1;
        Some(self.controller_listen.unwrap_or(own))
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
    fn dynamic_broker_configs_apply_over_the_started_config_and_refuse_what_kafka_reads_once() {
        let started = BrokerConfig::load(None, &["log.retention.ms=1000".into(), "num.partitions=4".into()]).unwrap();
        assert_eq!(started.with_dynamic([]).unwrap(), started);
        // Of one setting's names the finest unit wins, whatever the order given.
        let changed = started
            .with_dynamic([
                ("log.retention.ms", "7000"),
                ("log.retention.hours", "1"),
                ("log.flush.interval.ms", "250"),
            ])
            .unwrap();
        assert_eq!((changed.log_retention_ms, changed.flush), (7000, FlushPolicy::IntervalMs(250)));
        assert_eq!(changed.num_partitions, 4, "the rest as started");
        assert_eq!(started.with_dynamic([("log.retention.hours", "2")]).unwrap().log_retention_ms, 7_200_000);
        let refused = |name: &str, value: &str| started.with_dynamic([(name, value)]).unwrap_err().to_string();
        assert!(refused("num.partitions", "3").contains("cannot be changed at runtime"));
        assert!(refused("log.segment.bytes", "10").contains("log_segment_bytes"));
        assert!(refused("log.retention.ms", "soon").contains("log.retention.ms"));
    }

    #[test]
    fn kafka_names_of_topic_defaults_land_in_topic_defaults_from_flags_files_and_dynamic_configs() {
        let started =
            BrokerConfig::load(None, &["min.insync.replicas=2".into(), "log.cleanup.policy=compact".into()]).unwrap();
        let expected = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(started.topic_defaults, expected(&[("cleanup.policy", "compact"), ("min.insync.replicas", "2")]));
        // Dynamic: over the started ones, the rest kept.
        let changed =
            started.with_dynamic([("min.insync.replicas", "3"), ("log.index.interval.bytes", "8192")]).unwrap();
        assert_eq!(
            changed.topic_defaults,
            expected(&[("cleanup.policy", "compact"), ("index.interval.bytes", "8192"), ("min.insync.replicas", "3")])
        );
        // A TOML file names them by topic config, with TOML's own scalars.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moldau.toml");
        std::fs::write(&path, "[topic_defaults]\n\"min.insync.replicas\" = 2\n\"min.cleanable.dirty.ratio\" = 0.25\n")
            .unwrap();
        let from_file = BrokerConfig::load(Some(&path), &["compression.type=gzip".into()]).unwrap();
        assert_eq!(
            from_file.topic_defaults,
            expected(&[
                ("compression.type", "gzip"),
                ("min.cleanable.dirty.ratio", "0.25"),
                ("min.insync.replicas", "2")
            ])
        );
        std::fs::write(&path, "[topic_defaults]\n\"retention.ms\" = 5\n").unwrap();
        let refused = BrokerConfig::load(Some(&path), &[]).unwrap_err().to_string();
        assert!(refused.contains("\"retention.ms\" is not one of"), "{refused}");
        let unknown = BrokerConfig::load(None, &["log.cleanup.policies=compact".into()]).unwrap_err().to_string();
        assert!(unknown.contains("log.cleanup.policy,"), "the known names include the topic defaults: {unknown}");
    }

    #[test]
    fn defaults_are_valid_and_listen_on_loopback_9092() {
        let config = BrokerConfig::load(None, &[]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.flush, FlushPolicy::Always);
        assert_eq!(config.data_dir, PathBuf::from("./moldau-data"));
    }

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moldau.toml");
        std::fs::write(&path, "num_partitions = 3\nflush = \"never\"\n").unwrap();
        let config = BrokerConfig::load(Some(&path), &["num-partitions=5".into(), "data_dir=/x".into()]).unwrap();
        assert_eq!(config.num_partitions, 5);
        assert_eq!(config.flush, FlushPolicy::Never);
        assert_eq!(config.data_dir, PathBuf::from("/x"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(BrokerConfig::load(None, &["no_such_key=1".into()]).is_err());
        assert!(BrokerConfig::load(None, &["flush=sometimes".into()]).is_err());
        assert!(BrokerConfig::load(None, &["num_partitions=0".into()]).is_err());
        assert!(BrokerConfig::load(None, &["num_partitions".into()]).is_err());
    }

    #[test]
    fn a_metrics_port_alone_binds_localhost() {
        let at = |value: &str| BrokerConfig::load(None, &[format!("metrics_listen={value}")]).map(|c| c.metrics_listen);
        let localhost = Some("127.0.0.1:9644".parse().unwrap());
        assert_eq!(at("9644").unwrap(), localhost);
        assert_eq!(at("\":9644\"").unwrap(), localhost);
        assert_eq!(at("\"0.0.0.0:9644\"").unwrap(), Some("0.0.0.0:9644".parse().unwrap()));
        assert!(at("\"nowhere\"").is_err());
        assert_eq!(BrokerConfig::default().metrics_listen, None, "off unless asked for");
        let tls = BrokerConfig::load(None, &["metrics_listen=9644".into(), "metrics_tls=true".into()]);
        assert!(matches!(tls, Err(ConfigError::Invalid(reason)) if reason.contains("key store")));
    }

    #[test]
    fn voters_are_parsed_and_checked() {
        let config =
            BrokerConfig::load(None, &["voters=\"2@127.0.0.2:9093, 1@127.0.0.1:9093\"".into(), "broker_id=1".into()])
                .unwrap();
        let voters = config.parsed_voters().unwrap();
        assert_eq!(voters, vec![(1, "127.0.0.1:9093".parse().unwrap()), (2, "127.0.0.2:9093".parse().unwrap())]);
        assert_eq!(config.controller_listener(), Some("127.0.0.1:9093".parse().unwrap()));
        let single = BrokerConfig::load(None, &[]).unwrap();
        assert_eq!(single.parsed_voters().unwrap().len(), 1);
        assert_eq!(single.controller_listener(), None, "a cluster of one listens for no one");
        for bad in [
            "voters=\"1@127.0.0.1:9093,1@127.0.0.2:9093\"",
            "voters=\"x@127.0.0.1:1\"",
            "voters=\"1@nowhere\"",
            "voters=\"\"",
        ] {
            assert!(BrokerConfig::load(None, &[bad.into()]).is_err(), "{bad}");
        }
    }

    /// Kafka's KRaft sample `server.properties`, abridged, as a Kafka user has it.
    const SERVER_PROPERTIES: &str = r"
# The role of this server. Setting this puts us in KRaft mode
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:9093
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
inter.broker.listener.name=PLAINTEXT
advertised.listeners=PLAINTEXT://kafka-1.example:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600
log.dirs=/tmp/kraft-combined-logs
num.partitions=3
num.recovery.threads.per.data.dir=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
log.retention.ms=3600000
log.retention.hours=168
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
log.flush.interval.ms=\
  1000
";

    #[test]
    fn a_kafka_server_properties_file_configures_the_broker() {
        let text = SERVER_PROPERTIES;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.properties");
        std::fs::write(&path, text).unwrap();
        let config = BrokerConfig::load(Some(&path), &["log.retention.minutes=5".into()]).unwrap();
        assert_eq!(config.broker_id, 1);
        assert_eq!(config.listen.to_string(), "0.0.0.0:9092");
        assert_eq!(config.controller_listen.map(|a| a.to_string()).as_deref(), Some("0.0.0.0:9093"));
        assert_eq!(config.voters.as_deref(), Some("1@localhost:9093"));
        assert_eq!((config.advertised_host.as_deref(), config.advertised_port), (Some("kafka-1.example"), Some(9092)));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/kraft-combined-logs"));
        assert_eq!(config.num_partitions, 3);
        assert_eq!(config.log_retention_ms, 5 * 60_000, "a flag overrides the file");
        assert_eq!(config.flush, FlushPolicy::IntervalMs(1000), "a continued line");
        // Within the file, log.retention.ms wins over .hours whatever their order.
        std::fs::write(&path, "log.retention.hours=168\nlog.retention.ms=3600000\n").unwrap();
        assert_eq!(BrokerConfig::load(Some(&path), &[]).unwrap().log_retention_ms, 3_600_000);
        std::fs::write(&path, "log.retention.ms=3600000\nlog.retention.hours=168\n").unwrap();
        assert_eq!(BrokerConfig::load(Some(&path), &[]).unwrap().log_retention_ms, 3_600_000);
    }

    #[test]
    fn kafka_names_work_as_flags_and_unknown_or_unsupported_ones_are_refused() {
        let config =
            BrokerConfig::load(None, &["log.retention.hours=2".into(), "auto.create.topics.enable=false".into()])
                .unwrap();
        assert_eq!((config.log_retention_ms, config.auto_create_topics), (7_200_000, false));
        let refused = |item: &str| match BrokerConfig::load(None, &[item.into()]) {
            Err(ConfigError::Invalid(reason)) => reason,
            other => panic!("{item}: {other:?}"),
        };
        assert!(refused("log.retention.dayz=1").contains("log.retention.hours"), "the known names are listed");
        assert!(refused("listeners=SSL://:9093").contains("needs a PLAINTEXT listener"));
        assert!(refused("listeners=PLAINTEXT://:9092,SSL://:9093").contains("ssl_keystore_location"));
        assert!(refused("ssl.key.password=x").contains("encrypted private keys"));
        assert!(refused("log.dirs=/a,/b").contains("exactly one data directory"));
        assert!(refused("num.partitions=three").contains("not an integer"));
        assert!(refused("listener.security.protocol.map=OTHER:TLS").contains("is not PLAINTEXT, SSL"));
        assert!(refused("controller.quorum.bootstrap.servers=localhost:9093").contains("unknown broker property"));
    }
}
