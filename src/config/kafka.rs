//! Kafka's broker property names (`server.properties`, `--set log.retention.hours=168`) mapped
//! onto Moldau's settings, so a Kafka user's configuration works as it is. Properties that only
//! tune machinery Moldau does not have (network and I/O thread pools, socket buffers) are taken
//! and said to be without effect; security settings Moldau cannot honour yet are refused.

use toml::Value;

/// What one Kafka property becomes.
#[derive(Debug, PartialEq)]
pub(super) enum Mapped {
    /// Moldau settings (name, value).
    Set(Vec<(&'static str, Value)>),
    /// Known to Kafka, nothing to do here (the reason is logged).
    NoEffect(&'static str),
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
    "auto.create.topics.enable",
    "auto.leader.rebalance.enable",
    "broker.heartbeat.interval.ms",
    "broker.id",
    "broker.rack",
    "broker.session.timeout.ms",
    "connections.max.idle.ms",
    "controller.quorum.voters",
    "default.replication.factor",
    "fetch.max.bytes",
    "group.initial.rebalance.delay.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "group.min.session.timeout.ms",
    "leader.imbalance.check.interval.seconds",
    "listener.security.protocol.map",
    "listeners",
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
    "socket.request.max.bytes",
];

/// Kafka properties taken without effect, and why.
const NO_EFFECT: &[(&str, &str)] = &[
    ("process.roles", "every Moldau node is a broker; voters are those in controller.quorum.voters"),
    ("controller.listener.names", "the listener named CONTROLLER is the controller listener"),
    ("inter.broker.listener.name", "brokers talk over their one client listener"),
    ("num.network.threads", "each shard serves its own connections"),
    ("num.io.threads", "each shard serves its own partitions"),
    ("num.replica.fetchers", "each shard runs one fetcher per leader"),
    ("num.recovery.threads.per.data.dir", "each shard recovers its own partitions"),
    ("socket.send.buffer.bytes", "the kernel's defaults apply"),
    ("socket.receive.buffer.bytes", "the kernel's defaults apply"),
    ("offsets.topic.replication.factor", "__consumer_offsets takes three replicas, or every broker when fewer"),
    ("transaction.state.log.replication.factor", "there are no transactions yet"),
    ("transaction.state.log.min.isr", "there are no transactions yet"),
    ("log.segment.delete.delay.ms", "retention deletes at once, paced"),
    ("log.cleaner.enable", "there is no log compaction yet"),
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
        "listener.security.protocol.map" => {
            let plain = value.split(',').filter(|m| !m.trim().is_empty()).all(|m| m.trim().ends_with(":PLAINTEXT"));
            Some(if plain {
                Ok(Mapped::NoEffect("every listener is plaintext"))
            } else {
                Err(format!("{name}: {value:?}: TLS and SASL are not supported yet"))
            })
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

/// `listeners` / `advertised.listeners`: `NAME://host:port,...`. The one named CONTROLLER is
/// the controller listener (not advertised); the other must be plaintext (no TLS or SASL yet).
fn listeners(value: &str, advertised: bool) -> Result<Mapped, String> {
    let mut set = Vec::new();
    for listener in value.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        let (name, address) =
            listener.split_once("://").ok_or_else(|| format!("listener {listener:?} is not NAME://host:port"))?;
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("listener {listener:?} is not NAME://host:port"))?;
        match name {
            "CONTROLLER" if !advertised => {
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                set.push(("controller_listen", Value::String(format!("{host}:{port}"))));
            }
            "CONTROLLER" => {}
            "SSL" | "SASL_SSL" | "SASL_PLAINTEXT" => {
                return Err(format!("listener {listener:?}: TLS and SASL are not supported yet"));
            }
            _ if advertised => {
                set.push(("advertised_host", Value::String(host.to_owned())));
                set.push(("advertised_port", Value::Integer(i64::from(port))));
            }
            _ => {
                let host = if host.is_empty() { "0.0.0.0" } else { host };
                set.push(("listen", Value::String(format!("{host}:{port}"))));
            }
        }
    }
    Ok(Mapped::Set(set))
}

/// Parses a Java properties file (`key=value` or `key: value` lines, `#` and `!` comments,
/// backslash continuations).
pub(super) fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
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
