//! DescribeConfigs for topics and for this broker.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use std::collections::BTreeMap;

use crate::cluster::MetadataView;
use crate::cluster::topic_config::ConfigType;
use crate::config::{BrokerConfig, TOPIC_DEFAULTS};
use crate::kafka::connection::Connection;
use crate::security::acl;

/// Resource type of a topic.
pub const RESOURCE_TOPIC: i8 = 2;
/// Resource type of a broker.
pub const RESOURCE_BROKER: i8 = 4;

const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Kafka's broker config names described for a BROKER resource, each with the Moldau setting it
/// reads (the field of [`BrokerConfig`], whose value as Moldau writes it is Kafka's) and its type.
/// Those [`crate::config::is_dynamic`] names may be altered at runtime; the rest are read-only.
const BROKER_KEYS: &[(&str, &str, ConfigType)] = &[
    ("node.id", "broker_id", ConfigType::Int),
    ("broker.id", "broker_id", ConfigType::Int),
    ("broker.rack", "rack", ConfigType::String),
    ("log.dirs", "data_dir", ConfigType::String),
    ("listener.security.protocol.map", "listener_security_protocol_map", ConfigType::String),
    ("inter.broker.listener.name", "inter_broker_listener_name", ConfigType::String),
    ("sasl.mechanism.inter.broker.protocol", "sasl_mechanism_inter_broker_protocol", ConfigType::String),
    ("controller.quorum.voters", "voters", ConfigType::List),
    ("num.partitions", "num_partitions", ConfigType::Int),
    ("default.replication.factor", "default_replication_factor", ConfigType::Int),
    ("auto.create.topics.enable", "auto_create_topics", ConfigType::Boolean),
    ("message.max.bytes", "message_max_bytes", ConfigType::Int),
    ("socket.request.max.bytes", "socket_request_max_bytes", ConfigType::Int),
    ("queued.max.request.bytes", "queued_max_request_bytes", ConfigType::Long),
    ("connections.max.idle.ms", "connections_max_idle_ms", ConfigType::Long),
    ("fetch.max.bytes", "fetch_max_bytes", ConfigType::Int),
    ("log.retention.ms", "log_retention_ms", ConfigType::Long),
    ("log.retention.bytes", "log_retention_bytes", ConfigType::Long),
    ("log.segment.bytes", "log_segment_bytes", ConfigType::Int),
    ("log.roll.ms", "log_segment_ms", ConfigType::Long),
    ("log.retention.check.interval.ms", "log_retention_check_interval_ms", ConfigType::Long),
    ("log.preallocate", "log_preallocate", ConfigType::Boolean),
    ("log.cleaner.enable", "log_cleaner_enable", ConfigType::Boolean),
    ("log.cleaner.dedupe.buffer.size", "log_cleaner_dedupe_buffer_size", ConfigType::Long),
    ("log.cleaner.backoff.ms", "log_cleaner_backoff_ms", ConfigType::Long),
    ("log.cleaner.io.max.bytes.per.second", "log_cleaner_io_max_bytes_per_second", ConfigType::Double),
    ("offsets.topic.num.partitions", "offsets_topic_num_partitions", ConfigType::Int),
    ("offsets.retention.minutes", "offsets_retention_minutes", ConfigType::Int),
    ("offset.metadata.max.bytes", "offset_metadata_max_bytes", ConfigType::Int),
    ("group.initial.rebalance.delay.ms", "group_initial_rebalance_delay_ms", ConfigType::Int),
    ("group.min.session.timeout.ms", "group_min_session_timeout_ms", ConfigType::Int),
    ("group.max.session.timeout.ms", "group_max_session_timeout_ms", ConfigType::Int),
    ("group.max.size", "group_max_size", ConfigType::Int),
    ("group.consumer.session.timeout.ms", "group_consumer_session_timeout_ms", ConfigType::Int),
    ("group.consumer.heartbeat.interval.ms", "group_consumer_heartbeat_interval_ms", ConfigType::Int),
    ("group.consumer.max.size", "group_consumer_max_size", ConfigType::Int),
    ("broker.session.timeout.ms", "broker_session_timeout_ms", ConfigType::Int),
    ("broker.heartbeat.interval.ms", "broker_heartbeat_interval_ms", ConfigType::Int),
    ("auto.leader.rebalance.enable", "auto_leader_rebalance_enable", ConfigType::Boolean),
    ("replica.lag.time.max.ms", "replica_lag_time_max_ms", ConfigType::Long),
    ("replica.fetch.max.bytes", "replica_fetch_max_bytes", ConfigType::Int),
    ("replica.fetch.response.max.bytes", "replica_fetch_response_max_bytes", ConfigType::Int),
    ("replica.fetch.wait.max.ms", "replica_fetch_wait_max_ms", ConfigType::Int),
    ("replica.selector.class", "replica_selector", ConfigType::Class),
    ("sasl.enabled.mechanisms", "sasl_enabled_mechanisms", ConfigType::List),
    ("ssl.client.auth", "ssl_client_auth", ConfigType::String),
    ("ssl.keystore.type", "ssl_keystore_type", ConfigType::String),
    ("ssl.keystore.location", "ssl_keystore_location", ConfigType::String),
    ("ssl.keystore.key", "ssl_keystore_key", ConfigType::Password),
    ("ssl.truststore.type", "ssl_truststore_type", ConfigType::String),
    ("ssl.truststore.location", "ssl_truststore_location", ConfigType::String),
    ("ssl.endpoint.identification.algorithm", "ssl_endpoint_identification_algorithm", ConfigType::String),
    ("authorizer.class.name", "authorizer_class_name", ConfigType::String),
    ("super.users", "super_users", ConfigType::String),
    ("allow.everyone.if.no.acl.found", "allow_everyone_if_no_acl_found", ConfigType::Boolean),
    ("connections.max.reauth.ms", "connections_max_reauth_ms", ConfigType::Long),
    ("connection.failed.authentication.delay.ms", "connection_failed_authentication_delay_ms", ConfigType::Int),
    ("quota.window.num", "quota_window_num", ConfigType::Int),
    ("quota.window.size.seconds", "quota_window_size_seconds", ConfigType::Int),
];

/// Every described broker config of `broker` by Kafka's name, with its type: [`BROKER_KEYS`],
/// and those Moldau keeps in another form. A sensitive value is `None`.
fn broker_configs(broker: &BrokerConfig) -> Vec<(&'static str, Option<String>, ConfigType)> {
    let table = match toml::Value::try_from(broker) {
        Ok(toml::Value::Table(table)) => table,
        _ => toml::Table::new(),
    };
    let text = |value: &toml::Value| match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) if *f == f64::MAX => "1.7976931348623157E308".to_owned(),
        other => other.to_string(),
    };
    let mut out: Vec<(&'static str, Option<String>, ConfigType)> = BROKER_KEYS
        .iter()
        .map(|(name, field, kind)| {
            let value = match kind {
                ConfigType::Password => None,
                _ => table.get(*field).map(text),
            };
            (*name, value, *kind)
        })
        .collect();
    let (flush_messages, flush_ms) = crate::cluster::topic_config::flush_defaults(broker);
    let listen = broker.listen;
    let mut listeners = vec![format!("PLAINTEXT://{listen}")];
    listeners.extend(broker.listeners.split(',').filter(|l| !l.is_empty()).map(str::to_owned));
    if let Some(controller) = broker.controller_listen {
        listeners.push(format!("CONTROLLER://{controller}"));
    }
    let host = broker.advertised_host.clone().unwrap_or_else(|| listen.ip().to_string());
    let port = broker.advertised_port.unwrap_or(listen.port());
    let mut advertised = vec![format!("PLAINTEXT://{host}:{port}")];
    advertised.extend(broker.advertised_listeners.split(',').filter(|l| !l.is_empty()).map(str::to_owned));
    out.extend([
        ("listeners", Some(listeners.join(",")), ConfigType::String),
        ("advertised.listeners", Some(advertised.join(",")), ConfigType::String),
        ("log.flush.interval.messages", Some(flush_messages), ConfigType::Long),
        ("log.flush.interval.ms", Some(flush_ms), ConfigType::Long),
        (
            "leader.imbalance.check.interval.seconds",
            Some((broker.leader_imbalance_check_interval_ms / 1000).to_string()),
            ConfigType::Long,
        ),
        ("sasl.jaas.config", None, ConfigType::Password),
        ("moldau.flush.policy", Some(broker.flush.to_string()), ConfigType::String),
        ("moldau.shards", Some(broker.shard_count().to_string()), ConfigType::Int),
    ]);
    out.extend(TOPIC_DEFAULTS.iter().filter_map(|(name, topic)| {
        let key = crate::cluster::topic_config::config_key(topic)?;
        Some((*name, Some(key.default_value(broker)), key.kind))
    }));
    out.sort_by_key(|(name, _, _)| *name);
    out
}

/// The broker configs whose value a topic config takes when the topic does not set it (Kafka's
/// synonyms), the finest unit first, for the topic configs that follow a broker setting; those
/// that follow only a broker default have theirs in [`TOPIC_DEFAULTS`].
const TOPIC_SYNONYMS: &[(&str, &[&str])] = &[
    ("flush.messages", &["log.flush.interval.messages"]),
    ("flush.ms", &["log.flush.interval.ms"]),
    ("max.message.bytes", &["message.max.bytes"]),
    ("preallocate", &["log.preallocate"]),
    ("retention.bytes", &["log.retention.bytes"]),
    ("retention.ms", &["log.retention.ms", "log.retention.minutes", "log.retention.hours"]),
    ("segment.bytes", &["log.segment.bytes"]),
    ("segment.ms", &["log.roll.ms", "log.roll.hours"]),
];

/// Where a broker config's value comes from, layer by layer: this broker's dynamic config, the
/// cluster-wide dynamic default, the broker's file or flags, Kafka's default.
struct BrokerLayers<'a> {
    own: Option<&'a BTreeMap<String, String>>,
    cluster: Option<&'a BTreeMap<String, String>>,
    started: Vec<(&'static str, Option<String>, ConfigType)>,
    defaults: Vec<(&'static str, Option<String>, ConfigType)>,
}

impl<'a> BrokerLayers<'a> {
    fn of(started: &BrokerConfig, view: &'a MetadataView) -> Self {
        let defaults = BrokerConfig {
            broker_id: started.broker_id,
            data_dir: started.data_dir.clone(),
            ..BrokerConfig::default()
        };
        Self {
            own: view.image.broker_configs.get(&started.broker_id.to_string()),
            cluster: view.image.broker_configs.get(""),
            started: broker_configs(started),
            defaults: broker_configs(&defaults),
        }
    }

    /// The layers that set `key`, the one in force first (`value`, as described).
    fn synonyms(&self, key: &str, value: Option<String>) -> Vec<(i8, Option<String>)> {
        let mut out = Vec::new();
        if let Some(v) = self.own.and_then(|c| c.get(key)) {
            out.push((SOURCE_DYNAMIC_BROKER, Some(v.clone())));
        }
        if let Some(v) = self.cluster.and_then(|c| c.get(key)) {
            out.push((SOURCE_DYNAMIC_DEFAULT_BROKER, Some(v.clone())));
        }
        let (started, default) = (value_in(&self.started, key), value_in(&self.defaults, key));
        if started != default {
            out.push((SOURCE_STATIC_BROKER, started));
        }
        out.push((SOURCE_DEFAULT, default));
        if out.len() == 1 {
            // Kafka's default: as described (a sensitive one has no value either way).
            out[0].1 = value;
        }
        out
    }

    /// The broker-level layers behind topic config `topic_key` when the topic does not set it,
    /// the one in force first (Kafka's order: this broker's dynamic config, the cluster-wide
    /// one, the broker's file or flags, the default; within a layer the finest unit first), as
    /// (source, broker config name, value). Empty for a config with no broker synonym.
    fn topic_synonyms(&self, topic_key: &str) -> Vec<(i8, &'static str, Option<String>)> {
        let names: &[&'static str] = match TOPIC_SYNONYMS.iter().find(|(key, _)| *key == topic_key) {
            Some((_, names)) => names,
            None => match TOPIC_DEFAULTS.iter().find(|(_, topic)| *topic == topic_key) {
                Some((name, _)) => std::slice::from_ref(name),
                None => return Vec::new(),
            },
        };
        let mut out = Vec::new();
        for (source, layer) in [(SOURCE_DYNAMIC_BROKER, self.own), (SOURCE_DYNAMIC_DEFAULT_BROKER, self.cluster)] {
            for name in names.iter().copied() {
                if let Some(v) = layer.and_then(|c| c.get(name)) {
                    out.push((source, name, Some(v.clone())));
                }
            }
        }
        for name in names.iter().copied() {
            let started = value_in(&self.started, name);
            if started.is_some() && started != value_in(&self.defaults, name) {
                out.push((SOURCE_STATIC_BROKER, name, started));
            }
        }
        if let Some((name, default)) = names.iter().find_map(|name| value_in(&self.defaults, name).map(|v| (*name, v)))
        {
            out.push((SOURCE_DEFAULT, name, Some(default)));
        }
        out
    }
}

/// The value of broker config `key` in a [`broker_configs`] list.
fn value_in(list: &[(&'static str, Option<String>, ConfigType)], key: &str) -> Option<String> {
    list.iter().find(|(name, _, _)| *name == key).and_then(|(_, v, _)| v.clone())
}

fn wanted(keys: &Option<Vec<StrBytes>>, name: &str) -> bool {
    keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
}

/// Answers DescribeConfigs.
pub async fn handle(conn: &Rc<Connection>, request: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let metadata = conn.ctx.view();
    let broker = &conn.ctx.config;
    // What the broker layers hold, worked out once per request (it serializes the config twice).
    let layers = std::cell::OnceCell::new();
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let (kind, name) = match resource.resource_type {
                RESOURCE_TOPIC => (acl::resource::TOPIC, resource.resource_name.as_str()),
                _ => (acl::resource::CLUSTER, acl::CLUSTER_NAME),
            };
            if !conn.allowed(acl::op::DESCRIBE_CONFIGS, kind, name) {
                let code = if kind == acl::resource::TOPIC {
                    ResponseError::TopicAuthorizationFailed
                } else {
                    ResponseError::ClusterAuthorizationFailed
                };
                return result.with_error_code(code.code());
            }
            match resource.resource_type {
                RESOURCE_TOPIC => match metadata
                    .topic(resource.resource_name.as_str())
                    .and_then(|t| metadata.config_of(&t.id))
                {
                    None => result.with_error_code(ResponseError::UnknownTopicOrPartition.code()).with_error_message(
                        Some(StrBytes::from_string(format!("unknown topic {}", resource.resource_name.as_str()))),
                    ),
                    Some(config) => {
                        let layers = layers.get_or_init(|| BrokerLayers::of(broker, &metadata));
                        let configs = config
                            .describe(metadata.broker_config())
                            .into_iter()
                            .filter(|(key, _, _)| wanted(&resource.configuration_keys, key.name))
                            .map(|(key, value, is_default)| {
                                // A value the topic does not set comes from the first broker
                                // layer that does, else Kafka's default.
                                let mut synonyms = Vec::new();
                                if !is_default {
                                    synonyms.push((SOURCE_TOPIC, key.name, Some(value.clone())));
                                }
                                synonyms.extend(layers.topic_synonyms(key.name));
                                if synonyms.is_empty() {
                                    synonyms.push((
                                        SOURCE_DEFAULT,
                                        key.name,
                                        Some(key.default_value(metadata.broker_config())),
                                    ));
                                }
                                let source = synonyms[0].0;
                                let mut entry = DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_static_str(key.name))
                                    .with_value(Some(StrBytes::from_string(value)))
                                    .with_config_source(source);
                                if request.include_synonyms {
                                    entry = entry.with_synonyms(
                                        synonyms
                                            .into_iter()
                                            .map(|(source, name, value)| {
                                                DescribeConfigsSynonym::default()
                                                    .with_name(StrBytes::from_static_str(name))
                                                    .with_value(value.map(StrBytes::from_string))
                                                    .with_source(source)
                                            })
                                            .collect(),
                                    );
                                }
                                if version >= 3 {
                                    entry = entry.with_config_type(key.kind as i8);
                                    if request.include_documentation {
                                        entry = entry.with_documentation(Some(StrBytes::from_static_str(key.doc)));
                                    }
                                }
                                entry
                            })
                            .collect();
                        result.with_configs(configs)
                    }
                },
                RESOURCE_BROKER => {
                    let name = resource.resource_name.as_str();
                    if name.is_empty() {
                        // The cluster-wide defaults: only what is set (`--entity-default`).
                        let defaults = metadata.image.broker_configs.get("").cloned().unwrap_or_default();
                        let configs = defaults
                            .into_iter()
                            .filter(|(key, _)| wanted(&resource.configuration_keys, key))
                            .map(|(key, value)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_string(key))
                                    .with_value(Some(StrBytes::from_string(value)))
                                    .with_config_source(SOURCE_DYNAMIC_DEFAULT_BROKER)
                            })
                            .collect();
                        return result.with_configs(configs);
                    }
                    if name != broker.broker_id.to_string() {
                        return result
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(StrBytes::from_string(format!("unknown broker {name}"))));
                    }
                    let layers = layers.get_or_init(|| BrokerLayers::of(broker, &metadata));
                    let configs = broker_configs(metadata.broker_config())
                        .into_iter()
                        .filter(|(key, _, _)| wanted(&resource.configuration_keys, key))
                        .map(|(key, value, kind)| {
                            let synonyms = layers.synonyms(key, value.clone());
                            let source = synonyms.first().map_or(SOURCE_DEFAULT, |(source, _)| *source);
                            let mut entry = DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(key))
                                .with_value(value.map(StrBytes::from_string))
                                .with_read_only(!crate::config::is_dynamic(key))
                                .with_is_sensitive(kind == ConfigType::Password)
                                .with_config_source(source);
                            if request.include_synonyms {
                                entry = entry.with_synonyms(
                                    synonyms
                                        .into_iter()
                                        .map(|(source, value)| {
                                            DescribeConfigsSynonym::default()
                                                .with_name(StrBytes::from_static_str(key))
                                                .with_value(value.map(StrBytes::from_string))
                                                .with_source(source)
                                        })
                                        .collect(),
                                );
                            }
                            if version >= 3 { entry.with_config_type(kind as i8) } else { entry }
                        })
                        .collect();
                    result.with_configs(configs)
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_string(format!("resource type {other} is not supported")))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_default_names_the_broker_layers_behind_it_in_kafkas_order() {
        let own = BTreeMap::from([("log.retention.hours".to_owned(), "2".to_owned())]);
        let cluster = BTreeMap::from([
            ("log.retention.hours".to_owned(), "5".to_owned()),
            ("log.retention.ms".to_owned(), "1000".to_owned()),
        ]);
        let started = BrokerConfig { log_retention_ms: 3_600_000, ..BrokerConfig::default() };
        let layers = BrokerLayers {
            own: Some(&own),
            cluster: Some(&cluster),
            started: broker_configs(&started),
            defaults: broker_configs(&BrokerConfig::default()),
        };
        let synonyms = layers.topic_synonyms("retention.ms");
        let seen: Vec<(i8, &str, Option<&str>)> =
            synonyms.iter().map(|(source, name, value)| (*source, *name, value.as_deref())).collect();
        assert_eq!(
            seen,
            [
                (SOURCE_DYNAMIC_BROKER, "log.retention.hours", Some("2")),
                (SOURCE_DYNAMIC_DEFAULT_BROKER, "log.retention.ms", Some("1000")),
                (SOURCE_DYNAMIC_DEFAULT_BROKER, "log.retention.hours", Some("5")),
                (SOURCE_STATIC_BROKER, "log.retention.ms", Some("3600000")),
                (SOURCE_DEFAULT, "log.retention.ms", Some("604800000")),
            ]
        );
        // Nothing set anywhere but the default: the default alone.
        let bare =
            BrokerLayers { own: None, cluster: None, started: broker_configs(&started), defaults: layers.defaults };
        assert_eq!(
            bare.topic_synonyms("segment.bytes"),
            [(SOURCE_DEFAULT, "log.segment.bytes", Some("1073741824".into()))]
        );
        // A topic config no broker config stands behind.
        assert!(bare.topic_synonyms("follower.replication.throttled.replicas").is_empty());
        // One that follows only a broker default: set at start, then dynamically for the cluster.
        let started = BrokerConfig {
            topic_defaults: [("min.insync.replicas".to_owned(), "2".to_owned())].into(),
            ..BrokerConfig::default()
        };
        let cluster = BTreeMap::from([("min.insync.replicas".to_owned(), "3".to_owned())]);
        let layers = BrokerLayers {
            own: None,
            cluster: Some(&cluster),
            started: broker_configs(&started),
            defaults: broker_configs(&BrokerConfig::default()),
        };
        assert_eq!(
            layers.topic_synonyms("min.insync.replicas"),
            [
                (SOURCE_DYNAMIC_DEFAULT_BROKER, "min.insync.replicas", Some("3".into())),
                (SOURCE_STATIC_BROKER, "min.insync.replicas", Some("2".into())),
                (SOURCE_DEFAULT, "min.insync.replicas", Some("1".into())),
            ]
        );
    }
}
