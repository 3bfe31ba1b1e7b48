//! DescribeConfigs for topics and for this broker.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::topic_config::ConfigType;
use crate::config::BrokerConfig;
use crate::kafka::connection::Connection;
use crate::security::acl;

/// Resource type of a topic.
pub const RESOURCE_TOPIC: i8 = 2;
/// Resource type of a broker.
pub const RESOURCE_BROKER: i8 = 4;

const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// The broker-level settings reported for a BROKER resource (read-only: set at start).
fn broker_configs(broker: &BrokerConfig) -> Vec<(&'static str, String, ConfigType)> {
    vec![
        ("node.id", broker.broker_id.to_string(), ConfigType::Int),
        ("log.dirs", broker.data_dir.display().to_string(), ConfigType::String),
        ("num.partitions", broker.num_partitions.to_string(), ConfigType::Int),
        ("default.replication.factor", broker.default_replication_factor.to_string(), ConfigType::Int),
        ("auto.create.topics.enable", broker.auto_create_topics.to_string(), ConfigType::Boolean),
        ("message.max.bytes", broker.message_max_bytes.to_string(), ConfigType::Int),
        ("socket.request.max.bytes", broker.socket_request_max_bytes.to_string(), ConfigType::Int),
        ("log.retention.ms", broker.log_retention_ms.to_string(), ConfigType::Long),
        ("log.retention.bytes", broker.log_retention_bytes.to_string(), ConfigType::Long),
        ("log.segment.bytes", broker.log_segment_bytes.to_string(), ConfigType::Int),
        ("log.roll.ms", broker.log_segment_ms.to_string(), ConfigType::Long),
        ("log.retention.check.interval.ms", broker.log_retention_check_interval_ms.to_string(), ConfigType::Long),
        ("offsets.topic.num.partitions", broker.offsets_topic_num_partitions.to_string(), ConfigType::Int),
        ("group.initial.rebalance.delay.ms", broker.group_initial_rebalance_delay_ms.to_string(), ConfigType::Int),
        ("moldau.flush.policy", broker.flush.to_string(), ConfigType::String),
        ("moldau.shards", broker.shard_count().to_string(), ConfigType::Int),
    ]
}

fn wanted(keys: &Option<Vec<StrBytes>>, name: &str) -> bool {
    keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
}

/// Answers DescribeConfigs.
pub async fn handle(conn: &Rc<Connection>, request: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let metadata = conn.ctx.view();
    let broker = &conn.ctx.config;
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
                        let configs = config
                            .describe(broker)
                            .into_iter()
                            .filter(|(key, _, _)| wanted(&resource.configuration_keys, key.name))
                            .map(|(key, value, is_default)| {
                                let source = if is_default { SOURCE_DEFAULT } else { SOURCE_TOPIC };
                                let mut entry = DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_static_str(key.name))
                                    .with_value(Some(StrBytes::from_string(value.clone())))
                                    .with_config_source(source);
                                if request.include_synonyms {
                                    let mut synonyms = Vec::new();
                                    if !is_default {
                                        synonyms.push(
                                            DescribeConfigsSynonym::default()
                                                .with_name(StrBytes::from_static_str(key.name))
                                                .with_value(Some(StrBytes::from_string(value)))
                                                .with_source(SOURCE_TOPIC),
                                        );
                                    }
                                    synonyms.push(
                                        DescribeConfigsSynonym::default()
                                            .with_name(StrBytes::from_static_str(key.name))
                                            .with_value(Some(StrBytes::from_string(key.default_value(broker))))
                                            .with_source(SOURCE_DEFAULT),
                                    );
                                    entry = entry.with_synonyms(synonyms);
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
                    if !name.is_empty() && name != broker.broker_id.to_string() {
                        return result
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(StrBytes::from_string(format!("unknown broker {name}"))));
                    }
                    let configs = broker_configs(broker)
                        .into_iter()
                        .filter(|(key, _, _)| wanted(&resource.configuration_keys, key))
                        .map(|(key, value, kind)| {
                            let entry = DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(key))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_read_only(true)
                                .with_config_source(SOURCE_STATIC_BROKER);
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
