//! Admin calls: topics and their configs.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::{ClientError, KafkaClient, topic_name};

const RESOURCE_TOPIC: i8 = 2;

/// One config entry as described by the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Name.
    pub name: String,
    /// Value (None when sensitive or unset).
    pub value: Option<String>,
    /// True when it is the default, not set on the topic.
    pub is_default: bool,
}

/// A change for [`KafkaClient::alter_topic_configs`].
#[derive(Clone, Debug)]
pub enum ConfigOp {
    /// Set a value.
    Set(String, String),
    /// Remove an override.
    Delete(String),
}

impl KafkaClient {
    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), ClientError> {
        let request = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                ),
        ]);
        let response = self.controller().await?.send(request).await?;
        for t in response.topics {
            if let Some(err) = ClientError::from_code(
                format!("create topic {name}"),
                t.error_code,
                t.error_message.map(|m| m.as_str().to_owned()),
            ) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let conn = self.controller().await?;
        let version = conn.version_for::<DeleteTopicsRequest>(i16::MAX)?;
        let request = if version >= 6 {
            DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_name(Some(topic_name(name)))])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name(name)])
        }
        .with_timeout_ms(30_000);
        let response = conn.send_version(request, version).await?;
        for t in response.responses {
            if let Some(err) = ClientError::from_code(
                format!("delete topic {name}"),
                t.error_code,
                t.error_message.map(|m| m.as_str().to_owned()),
            ) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(&self, name: &str, count: i32) -> Result<(), ClientError> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatePartitionsTopic::default().with_name(topic_name(name)).with_count(count)]);
        let response = self.controller().await?.send(request).await?;
        for r in response.results {
            if let Some(err) = ClientError::from_code(
                format!("create partitions for {name}"),
                r.error_code,
                r.error_message.map(|m| m.as_str().to_owned()),
            ) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Every config of a topic.
    pub async fn describe_topic_configs(&self, name: &str) -> Result<Vec<ConfigEntry>, ClientError> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_owned()))
                .with_configuration_keys(None),
        ]);
        let response = self.any().await?.send(request).await?;
        let result = response
            .results
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty describe configs response".into()))?;
        if let Some(err) = ClientError::from_code(
            format!("describe configs of {name}"),
            result.error_code,
            result.error_message.map(|m| m.as_str().to_owned()),
        ) {
            return Err(err);
        }
        Ok(result
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.as_str().to_owned(),
                value: c.value.map(|v| v.as_str().to_owned()),
                // Source 5 is DEFAULT_CONFIG; v0 has no source, where is_default is not known.
                is_default: c.config_source == 5,
            })
            .collect())
    }

    /// Sets or removes topic config overrides.
    pub async fn alter_topic_configs(&self, name: &str, ops: &[ConfigOp]) -> Result<(), ClientError> {
        let configs = ops
            .iter()
            .map(|op| match op {
                ConfigOp::Set(k, v) => AlterableConfig::default()
                    .with_name(StrBytes::from_string(k.clone()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(v.clone()))),
                ConfigOp::Delete(k) => {
                    AlterableConfig::default().with_name(StrBytes::from_string(k.clone())).with_config_operation(1)
                }
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_owned()))
                .with_configs(configs),
        ]);
        let response = self.controller().await?.send(request).await?;
        for r in response.responses {
            if let Some(err) = ClientError::from_code(
                format!("alter configs of {name}"),
                r.error_code,
                r.error_message.map(|m| m.as_str().to_owned()),
            ) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Deletes records of a partition before `offset` (-1: up to the high watermark); returns
    /// the new low watermark.
    pub async fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, ClientError> {
        let request = DeleteRecordsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            DeleteRecordsTopic::default().with_name(topic_name(topic)).with_partitions(vec![
                DeleteRecordsPartition::default().with_partition_index(partition).with_offset(offset),
            ]),
        ]);
        let response = self.leader(topic, partition).await?.send(request).await?;
        let p = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty delete records response".into()))?;
        if let Some(err) = ClientError::from_code(format!("delete records of {topic}-{partition}"), p.error_code, None)
        {
            return Err(err);
        }
        Ok(p.low_watermark)
    }
}
