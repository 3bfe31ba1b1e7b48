//! Admin calls: topics and their configs, ACLs, SCRAM users.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, CreateAclsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteAclsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeAclsRequest, DescribeConfigsRequest,
    DescribeUserScramCredentialsRequest, IncrementalAlterConfigsRequest,
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

/// One ACL (Kafka's codes for the resource type, pattern type, operation and permission).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    /// Resource type (TOPIC 2, GROUP 3, CLUSTER 4, TRANSACTIONAL_ID 5, ...).
    pub resource_type: i8,
    /// Resource name or prefix (`*`: every one).
    pub resource_name: String,
    /// LITERAL 3 or PREFIXED 4.
    pub pattern_type: i8,
    /// `User:NAME` (or `User:*`).
    pub principal: String,
    /// Host the ACL applies to (`*`: any).
    pub host: String,
    /// Operation code.
    pub operation: i8,
    /// DENY 2 or ALLOW 3.
    pub permission: i8,
}

/// Which ACLs [`KafkaClient::describe_acls`] and [`KafkaClient::delete_acls`] take: `None` and
/// the ANY codes (1) match everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclFilter {
    /// Resource type, or ANY.
    pub resource_type: i8,
    /// Resource name.
    pub resource_name: Option<String>,
    /// Pattern type, ANY, or MATCH (2: every ACL that applies to the named resource).
    pub pattern_type: i8,
    /// Principal.
    pub principal: Option<String>,
    /// Host.
    pub host: Option<String>,
    /// Operation, or ANY.
    pub operation: i8,
    /// Permission, or ANY.
    pub permission: i8,
}

/// A SCRAM credential to create or replace: the password salted on the client side, as
/// Kafka's AdminClient sends it (the broker never sees the password).
#[derive(Clone, Debug)]
pub struct ScramUpsert {
    /// User name.
    pub user: String,
    /// Mechanism code (SCRAM-SHA-256 1, SCRAM-SHA-512 2).
    pub mechanism: i8,
    /// PBKDF2 iterations.
    pub iterations: i32,
    /// Salt.
    pub salt: Vec<u8>,
    /// Hi(password, salt, iterations).
    pub salted_password: Vec<u8>,
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

impl KafkaClient {
    /// Creates ACLs; the first refused one is the error.
    pub async fn create_acls(&self, acls: &[Acl]) -> Result<(), ClientError> {
        let creations = acls
            .iter()
            .map(|a| {
                AclCreation::default()
                    .with_resource_type(a.resource_type)
                    .with_resource_name(text(&a.resource_name))
                    .with_resource_pattern_type(a.pattern_type)
                    .with_principal(text(&a.principal))
                    .with_host(text(&a.host))
                    .with_operation(a.operation)
                    .with_permission_type(a.permission)
            })
            .collect();
        let response = self.controller().await?.send(CreateAclsRequest::default().with_creations(creations)).await?;
        for r in response.results {
            if let Some(err) =
                ClientError::from_code("create ACL", r.error_code, r.error_message.map(|m| m.to_string()))
            {
                return Err(err);
            }
        }
        Ok(())
    }

    /// The ACLs `filter` matches.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<Acl>, ClientError> {
        let request = DescribeAclsRequest::default()
            .with_resource_type_filter(filter.resource_type)
            .with_resource_name_filter(filter.resource_name.as_deref().map(text))
            .with_pattern_type_filter(filter.pattern_type)
            .with_principal_filter(filter.principal.as_deref().map(text))
            .with_host_filter(filter.host.as_deref().map(text))
            .with_operation(filter.operation)
            .with_permission_type(filter.permission);
        let response = self.controller().await?.send(request).await?;
        let message = response.error_message.map(|m| m.to_string());
        if let Some(err) = ClientError::from_code("describe ACLs", response.error_code, message) {
            return Err(err);
        }
        let mut acls = Vec::new();
        for resource in response.resources {
            for acl in resource.acls {
                acls.push(Acl {
                    resource_type: resource.resource_type,
                    resource_name: resource.resource_name.to_string(),
                    pattern_type: resource.pattern_type,
                    principal: acl.principal.to_string(),
                    host: acl.host.to_string(),
                    operation: acl.operation,
                    permission: acl.permission_type,
                });
            }
        }
        Ok(acls)
    }

    /// Deletes the ACLs `filter` matches; returns them.
    pub async fn delete_acls(&self, filter: &AclFilter) -> Result<Vec<Acl>, ClientError> {
        let request = DeleteAclsRequest::default().with_filters(vec![
            DeleteAclsFilter::default()
                .with_resource_type_filter(filter.resource_type)
                .with_resource_name_filter(filter.resource_name.as_deref().map(text))
                .with_pattern_type_filter(filter.pattern_type)
                .with_principal_filter(filter.principal.as_deref().map(text))
                .with_host_filter(filter.host.as_deref().map(text))
                .with_operation(filter.operation)
                .with_permission_type(filter.permission),
        ]);
        let response = self.controller().await?.send(request).await?;
        let mut deleted = Vec::new();
        for result in response.filter_results {
            let message = result.error_message.map(|m| m.to_string());
            if let Some(err) = ClientError::from_code("delete ACLs", result.error_code, message) {
                return Err(err);
            }
            for m in result.matching_acls {
                deleted.push(Acl {
                    resource_type: m.resource_type,
                    resource_name: m.resource_name.to_string(),
                    pattern_type: m.pattern_type,
                    principal: m.principal.to_string(),
                    host: m.host.to_string(),
                    operation: m.operation,
                    permission: m.permission_type,
                });
            }
        }
        Ok(deleted)
    }

    /// Creates or replaces SCRAM credentials and deletes others (user, mechanism code).
    pub async fn alter_scram_credentials(
        &self,
        upserts: &[ScramUpsert],
        deletions: &[(String, i8)],
    ) -> Result<(), ClientError> {
        let request = AlterUserScramCredentialsRequest::default()
            .with_upsertions(
                upserts
                    .iter()
                    .map(|u| {
                        ScramCredentialUpsertion::default()
                            .with_name(text(&u.user))
                            .with_mechanism(u.mechanism)
                            .with_iterations(u.iterations)
                            .with_salt(Bytes::from(u.salt.clone()))
                            .with_salted_password(Bytes::from(u.salted_password.clone()))
                    })
                    .collect(),
            )
            .with_deletions(
                deletions
                    .iter()
                    .map(|(user, mechanism)| {
                        ScramCredentialDeletion::default().with_name(text(user)).with_mechanism(*mechanism)
                    })
                    .collect(),
            );
        let response = self.controller().await?.send(request).await?;
        for r in response.results {
            let context = format!("SCRAM credential of {}", r.user.as_str());
            if let Some(err) = ClientError::from_code(context, r.error_code, r.error_message.map(|m| m.to_string())) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// The SCRAM credentials of `users` (every user when `None`): per user, the mechanism
    /// codes and iterations.
    pub async fn describe_scram_credentials(
        &self,
        users: Option<&[String]>,
    ) -> Result<Vec<(String, Vec<(i8, i32)>)>, ClientError> {
        let request = DescribeUserScramCredentialsRequest::default()
            .with_users(users.map(|names| names.iter().map(|n| UserName::default().with_name(text(n))).collect()));
        let response = self.controller().await?.send(request).await?;
        let message = response.error_message.map(|m| m.to_string());
        if let Some(err) = ClientError::from_code("describe SCRAM users", response.error_code, message) {
            return Err(err);
        }
        let mut out = Vec::new();
        for r in response.results {
            let context = format!("SCRAM user {}", r.user.as_str());
            if let Some(err) = ClientError::from_code(context, r.error_code, r.error_message.map(|m| m.to_string())) {
                return Err(err);
            }
            out.push((r.user.to_string(), r.credential_infos.iter().map(|c| (c.mechanism, c.iterations)).collect()));
        }
        Ok(out)
    }

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
