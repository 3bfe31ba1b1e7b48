//! Kafka's broker property names (`server.properties`, `--set log.retention.hours=168`) mapped
//! onto Moldau's settings, so a Kafka user's configuration works as it is. Properties that only
//! tune machinery Moldau does not have (network and I/O thread pools, socket buffers) are taken
//! and said to be without effect; security settings Moldau cannot honour
//! yet are refused.

use toml::Value;

/// What one Kafka property becomes.
#[derive(Debug, PartialEq)]
pub(super) enum Mapped {
    /// Moldau settings (name, value).
    Set(Vec<(&'static str, Value)>),
    /// Known to Kafka, nothing to do here (the reason is logged).
    NoEffect(&'static str),
    /// The default of a topic config (its name, the value as given): see [`TOPIC_DEFAULTS`].
    TopicDefault(&'static str, String),
}

/// Kafka's broker configs that are only the default of one topic config (Kafka's topic config
/// synonyms), as (broker name, topic name): kept as given in `topic_defaults`, checked and read
/// by the topic config layer, dynamic cluster-wide as in Kafka. (The topic defaults that are also
/// broker settings, such as `log.retention.ms`, have their own fields.)
pub const TOPIC_DEFAULTS: &[(&str, &str)] = &[
    ("compression.gzip.level", "compression.gzip.level"),
    ("compression.lz4.level", "compression.lz4.level"),
    ("compression.type", "compression.type"),
    ("compression.zstd.level", "compression.zstd.level"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    ("log.cleaner.min.cleanable.ratio", "min.cleanable.dirty.ratio"),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("log.cleanup.policy", "cleanup.policy"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.index.size.max.bytes", "segment.index.bytes"),
    ("log.local.retention.bytes", "local.retention.bytes"),
    ("log.local.retention.ms", "local.retention.ms"),
    ("log.message.timestamp.after.max.ms", "message.timestamp.after.max.ms"),
    ("log.message.timestamp.before.max.ms", "message.timestamp.before.max.ms"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.roll.jitter.ms", "segment.jitter.ms"),
    ("log.segment.delete.delay.ms", "file.delete.delay.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("unclean.leader.election.enable", "unclean.leader.election.enable"),
];

/// The topic config whose default broker config `name` is, if it is one of [`TOPIC_DEFAULTS`].
pub fn topic_default_of(name: &str) -> Option<&'static str> {
    TOPIC_DEFAULTS.iter().find(|(broker, _)| *broker == name).map(|(_, topic)| *topic)
}

/// Which of several names for one setting wins, as in Kafka (`log.retention.ms` over
/// `.minutes` over `.hours`): higher is applied later.
pub(super) fn precedence(name: &str) -> u8 {
    match name {
        "log.retention.hours" | "log.roll.hours" => 0,
        "log.retention.minutes" => 1,
        _ => 2,
    }
}

/// Kafka's names Moldau takes, for error messages.
pub(super) const KNOWN: &[&str] = &[
    "advertised.listeners",
    "allow.everyone.if.no.acl.found",
    "authorizer.class.name",
    "auto.create.topics.enable",
    "auto.leader.rebalance.enable",
    "broker.heartbeat.interval.ms",
    "broker.id",
    "broker.rack",
    "broker.session.timeout.ms",
    "connection.failed.authentication.delay.ms",
    "connections.max.idle.ms",
    "connections.max.reauth.ms",
    "controller.quorum.voters",
    "default.replication.factor",
    "fetch.max.bytes",
    "group.initial.rebalance.delay.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "group.min.session.timeout.ms",
    "inter.broker.listener.name",
    "leader.imbalance.check.interval.seconds",
    "listener.security.protocol.map",
    "listeners",
    "log.cleaner.backoff.ms",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.enable",
    "log.cleaner.io.max.bytes.per.second",
    "log.dir",
    "log.dirs",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.preallocate",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.roll.hours",
    "log.roll.ms",
    "log.segment.bytes",
    "message.max.bytes",
    "node.id",
    "num.partitions",
    "offset.metadata.max.bytes",
    "offsets.retention.minutes",
    "offsets.topic.num.partitions",
    "queued.max.request.bytes",
    "replica.fetch.max.bytes",
    "replica.fetch.response.max.bytes",
    "replica.fetch.wait.max.ms",
    "replica.lag.time.max.ms",
    "replica.selector.class",
    "sasl.enabled.mechanisms",
    "sasl.jaas.config",
    "sasl.mechanism.inter.broker.protocol",
    "security.inter.broker.protocol",
    "socket.request.max.bytes",
    "ssl.client.auth",
    "ssl.endpoint.identification.algorithm",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "super.users",
];

/// Kafka properties taken without effect, and why.
const NO_EFFECT: &[(&str, &str)] = &[
    ("process.roles", "every Moldau node is a broker; voters are those in controller.quorum.voters"),
    ("controller.listener.names", "the listener named CONTROLLER is the controller listener"),
    ("ssl.keystore.password", "PEM key stores hold an unencrypted key"),
    ("ssl.truststore.password", "PEM trust stores need no password"),
    ("ssl.enabled.protocols", "TLS 1.2 and 1.3 are enabled"),
    ("ssl.protocol", "TLS 1.2 and 1.3 are enabled"),
    ("num.network.threads", "each shard serves its own connections"),
    ("num.io.threads", "each shard serves its own partitions"),
    ("num.replica.fetchers", "each shard runs one fetcher per leader"),
    ("num.recovery.threads.per.data.dir", "each shard recovers its own partitions"),
    ("socket.send.buffer.bytes", "the kernel's defaults apply"),
    ("socket.receive.buffer.bytes", "the kernel's defaults apply"),
    ("offsets.topic.replication.factor", "__consumer_offsets takes three replicas, or every broker when fewer"),
    ("transaction.state.log.replication.factor", "there are no transactions yet"),
    ("transaction.state.log.min.isr", "there are no transactions yet"),
    ("group.coordinator.rebalance.protocols", "only the classic group protocol exists yet"),
];

/// Maps Kafka property `name` = `value`; `None` when `name` is not one of Kafka's that Moldau
/// knows (the caller then takes it as one of Moldau's own, or refuses it).
pub(super) fn translate(name: &str, value: &str) -> Option<Result<Mapped, String>> {
    let value = value.trim();
    let int = || value.parse::<i64>().map(Value::Integer).map_err(|_| format!("{name}: {value:?} is not an integer"));
    let scaled = |factor: i64| {
        value
            .parse::<i64>()
            .ok()
            .and_then(|v| v.checked_mul(factor))
            .map(Value::Integer)
            .ok_or_else(|| format!("{name}: {value:?} is not an integer"))
    };
    let boolean = || match value {
        "true" => Ok(Value::Boolean(true)),
        "false" => Ok(Value::Boolean(false)),
        _ => Err(format!("{name}: {value:?} is not true or false")),
    };
    let text = || Ok(Value::String(value.to_owned()));
    let one = |key: &'static str, v: Result<Value, String>| Some(v.map(|v| Mapped::Set(vec![(key, v)])));
    if let Some((_, why)) = NO_EFFECT.iter().find(|(n, _)| *n == name) {
        return Some(Ok(Mapped::NoEffect(why)));
    }
    if let Some(topic) = topic_default_of(name) {
        return Some(Ok(Mapped::TopicDefault(topic, value.to_owned())));
    }
    match name {
        "broker.id" | "node.id" => one("broker_id", int()),
        "broker.rack" => one("rack", text()),
        "log.dirs" | "log.dir" => {
            let dirs: Vec<&str> = value.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
            match dirs.as_slice() {
                [dir] => one("data_dir", Ok(Value::String((*dir).to_owned()))),
                _ => Some(Err(format!("{name}: exactly one data directory per broker ({value:?})"))),
            }
        }
        "listeners" => Some(listeners(value, false)),
        "listener.security.protocol.map" => one("listener_security_protocol_map", text()),
        // Kafka's security.inter.broker.protocol names the listener called after the protocol.
        "inter.broker.listener.name" | "security.inter.broker.protocol" => one("inter_broker_listener_name", text()),
        "sasl.mechanism.inter.broker.protocol" => one("sasl_mechanism_inter_broker_protocol", text()),
        "ssl.endpoint.identification.algorithm" => one("ssl_endpoint_identification_algorithm", text()),
        "ssl.keystore.type" => one("ssl_keystore_type", text()),
        "ssl.keystore.location" => one("ssl_keystore_location", text()),
        "ssl.keystore.key" => one("ssl_keystore_key", text()),
        "ssl.keystore.certificate.chain" => one("ssl_keystore_certificate_chain", text()),
        "ssl.truststore.type" => one("ssl_truststore_type", text()),
        "ssl.truststore.location" => one("ssl_truststore_location", text()),
        "ssl.client.auth" => one("ssl_client_auth", text()),
        "ssl.key.password" => {
            Some(Err(format!("{name}: encrypted private keys are not supported; give the key unencrypted (PEM)")))
        }
        "sasl.enabled.mechanisms" => one("sasl_enabled_mechanisms", text()),
        "authorizer.class.name" => one("authorizer_class_name", text()),
        "super.users" => one("super_users", text()),
        "allow.everyone.if.no.acl.found" => one("allow_everyone_if_no_acl_found", boolean()),
        "connection.failed.authentication.delay.ms" => one("connection_failed_authentication_delay_ms", int()),
        "connections.max.reauth.ms" => one("connections_max_reauth_ms", int()),
        "quota.window.num" => one("quota_window_num", int()),
        "quota.window.size.seconds" => one("quota_window_size_seconds", int()),
        _ if name == "sasl.jaas.config"
            || (name.starts_with("listener.name.") && name.ends_with(".sasl.jaas.config")) =>
        {
            match super::listeners::jaas(value) {
                Ok(jaas) => {
                    let mut set = Vec::new();
                    if !jaas.users.is_empty() {
                        let table: toml::Table = jaas.users.into_iter().map(|(u, p)| (u, Value::String(p))).collect();
                        set.push(("sasl_plain_users", Value::Table(table)));
                    }
                    if let Some((user, password)) = jaas.login {
                        set.push(("inter_broker_sasl_username", Value::String(user)));
                        set.push(("inter_broker_sasl_password", Value::String(password)));
                    }
                    Some(Ok(Mapped::Set(set)))
                }
                Err(e) => Some(Err(e)),
            }
        }
        "advertised.listeners" => Some(listeners(value, true)),
        "controller.quorum.voters" => one("voters", text()),
        "num.partitions" => one("num_partitions", int()),
        "default.replication.factor" => one("default_replication_factor", int()),
        "auto.create.topics.enable" => one("auto_create_topics", boolean()),
        "message.max.bytes" => one("message_max_bytes", int()),
        "socket.request.max.bytes" => one("socket_request_max_bytes", int()),
        "queued.max.request.bytes" => one("queued_max_request_bytes", int()),
        "connections.max.idle.ms" => one("connections_max_idle_ms", int()),
        "fetch.max.bytes" => one("fetch_max_bytes", int()),
        "log.retention.ms" => one("log_retention_ms", int()),
        "log.retention.minutes" => one("log_retention_ms", scaled(60_000)),
        "log.retention.hours" => one("log_retention_ms", scaled(3_600_000)),
        "log.retention.bytes" => one("log_retention_bytes", int()),
        "log.segment.bytes" => one("log_segment_bytes", int()),
        "log.roll.ms" => one("log_segment_ms", int()),
        "log.roll.hours" => one("log_segment_ms", scaled(3_600_000)),
        "log.retention.check.interval.ms" => one("log_retention_check_interval_ms", int()),
        "log.preallocate" => one("log_preallocate", boolean()),
        "log.cleaner.enable" => one("log_cleaner_enable", boolean()),
        "log.cleaner.dedupe.buffer.size" => one("log_cleaner_dedupe_buffer_size", int()),
        "log.cleaner.backoff.ms" => one("log_cleaner_backoff_ms", int()),
        "log.cleaner.io.max.bytes.per.second" => match value.parse::<f64>() {
            Ok(rate) if rate > 0.0 => one("log_cleaner_io_max_bytes_per_second", Ok(Value::Float(rate))),
            _ => Some(Err(format!("{name}: {value:?} is not a positive number"))),
        },
        "log.flush.interval.messages" => match value.parse::<i64>() {
            Ok(1) => one("flush", Ok(Value::String("always".into()))),
            Ok(n) if n > 1 => {
                Some(Ok(Mapped::NoEffect("only 1 (sync every batch) is taken; flush by log.flush.interval.ms")))
            }
            _ => Some(Err(format!("{name}: {value:?} is not a positive integer"))),
        },
        "log.flush.interval.ms" => match value.parse::<i64>() {
            Ok(0) => one("flush", Ok(Value::String("always".into()))),
            Ok(i64::MAX) => one("flush", Ok(Value::String("never".into()))),
            Ok(ms) if ms > 0 => one("flush", Ok(Value::String(format!("interval:{ms}")))),
            _ => Some(Err(format!("{name}: {value:?} is not a non-negative integer"))),
        },
        "offsets.topic.num.partitions" => one("offsets_topic_num_partitions", int()),
        "group.initial.rebalance.delay.ms" => one("group_initial_rebalance_delay_ms", int()),
        "group.min.session.timeout.ms" => one("group_min_session_timeout_ms", int()),
        "group.max.session.timeout.ms" => one("group_max_session_timeout_ms", int()),
        "group.max.size" => one("group_max_size", int()),
        "group.consumer.session.timeout.ms" => one("group_consumer_session_timeout_ms", int()),
        "group.consumer.heartbeat.interval.ms" => one("group_consumer_heartbeat_interval_ms", int()),
        "group.consumer.max.size" => one("group_consumer_max_size", int()),
        "offsets.retention.minutes" => one("offsets_retention_minutes", int()),
        "offset.metadata.max.bytes" => one("offset_metadata_max_bytes", int()),
        "broker.session.timeout.ms" => one("broker_session_timeout_ms", int()),
        "broker.heartbeat.interval.ms" => one("broker_heartbeat_interval_ms", int()),
        "auto.leader.rebalance.enable" => one("auto_leader_rebalance_enable", boolean()),
        "leader.imbalance.check.interval.seconds" => one("leader_imbalance_check_interval_ms", scaled(1000)),
        "replica.lag.time.max.ms" => one("replica_lag_time_max_ms", int()),
        "replica.fetch.max.bytes" => one("replica_fetch_max_bytes", int()),
        "replica.fetch.response.max.bytes" => one("replica_fetch_response_max_bytes", int()),
        "replica.fetch.wait.max.ms" => one("replica_fetch_wait_max_ms", int()),
        "replica.selector.class" => one("replica_selector", text()),
        _ => None,
    }
}

/// `listeners` / `advertised.listeners`: `NAME://host:port,...`. PLAINTEXT is the main listener
/// (`listen`, which brokers talk over), CONTROLLER the controller listener (not advertised); the
/// others are kept in Kafka's syntax and resolved with the protocol map when the config is checked.
fn listeners(value: &str, advertised: bool) -> Result<Mapped, String> {
    let mut set = Vec::new();
    let mut others = Vec::new();
    let mut main = false;
    for (name, host, port) in super::listeners::parse_listener_list(value)? {
        match name.as_str() {
            "CONTROLLER" if !advertised => {
                let host = if host.is_empty() { "0.0.0.0" } else { host.as_str() };
                set.push(("controller_listen", Value::String(format!("{host}:{port}"))));
            }
            "CONTROLLER" => {}
            super::PLAINTEXT_LISTENER if advertised => {
                set.push(("advertised_host", Value::String(host)));
                set.push(("advertised_port", Value::Integer(i64::from(port))));
            }
            super::PLAINTEXT_LISTENER => {
                main = true;
                let host = if host.is_empty() { "0.0.0.0" } else { host.as_str() };
                set.push(("listen", Value::String(format!("{host}:{port}"))));
            }
            _ => others.push(format!("{name}://{host}:{port}")),
        }
    }
    if !advertised && !main {
        return Err(format!(
            "listeners {value:?}: Moldau needs a PLAINTEXT listener (its main one, which the tools reach); \
             bind it to 127.0.0.1 to keep it to this host"
        ));
    }
    let key = if advertised { "advertised_listeners" } else { "listeners" };
    set.push((key, Value::String(others.join(","))));
    Ok(Mapped::Set(set))
}

/// Parses a Java properties file (`key=value` or `key: value` lines, `#` and `!` comments,
/// backslash continuations).
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let at = entry.find(['=', ':']).ok_or_else(|| format!("line {}: {entry:?} is not key=value", number + 1))?;
        out.push((entry[..at].trim().to_owned(), entry[at + 1..].trim().to_owned()));
    }
    Ok(out)
}
