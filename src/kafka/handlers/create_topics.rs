//! CreateTopics.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::controller_items;
use crate::cluster::{ControllerRequest, ControllerResponse, NewTopic, TopicConfig};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_result;
use crate::security::acl;

/// DescribeConfigs config source for a value set on the topic.
const SOURCE_TOPIC: i8 = 1;
/// DescribeConfigs config source for a default.
const SOURCE_DEFAULT: i8 = 5;

/// Answers CreateTopics.
pub async fn handle(conn: &Rc<Connection>, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let names: Vec<_> = request.topics.iter().map(|t| t.name.clone()).collect();
    let topics: Vec<NewTopic> = request
        .topics
        .iter()
        .map(|t| NewTopic {
            name: t.name.as_str().to_owned(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| (a.partition_index, a.broker_ids.iter().map(|b| b.0).collect()))
                .collect(),
            configs: t
                .configs
                .iter()
                .map(|c| (c.name.as_str().to_owned(), c.value.as_ref().map(|v| v.as_str().to_owned())))
                .collect(),
        })
        .collect();
    // A name listed twice is refused for both, as Kafka does.
    let mut duplicate = std::collections::HashSet::new();
    let dupes: std::collections::HashSet<String> =
        topics.iter().filter(|t| !duplicate.insert(t.name.clone())).map(|t| t.name.clone()).collect();
    // CREATE on the cluster or on each topic.
    let create_any = conn.cluster_allowed(acl::op::CREATE);
    let denied: std::collections::HashSet<String> = topics
        .iter()
        .filter(|t| !create_any && !conn.allowed(acl::op::CREATE, acl::resource::TOPIC, &t.name))
        .map(|t| t.name.clone())
        .collect();
    let (unique, _): (Vec<NewTopic>, Vec<NewTopic>) =
        topics.into_iter().partition(|t| !dupes.contains(&t.name) && !denied.contains(&t.name));
    let count = unique.len();
    let ask = ControllerRequest::CreateTopics {
        topics: unique.clone(),
        validate_only: request.validate_only,
        internal: false,
    };
    let results = controller_items(conn, ask, count, |r| match r {
        ControllerResponse::CreatedTopics(results) => Some(results),
        _ => None,
    })
    .await;
    let broker = conn.ctx.view().broker_config().clone();
    let mut results = unique.iter().map(|t| t.name.clone()).zip(results).collect::<std::collections::HashMap<_, _>>();
    let topics = names
        .into_iter()
        .map(|name| {
            let result = CreatableTopicResult::default().with_name(name.clone());
            if dupes.contains(name.as_str()) {
                return result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str("topic listed more than once in the request")));
            }
            if denied.contains(name.as_str()) {
                return result.with_error_code(ResponseError::TopicAuthorizationFailed.code());
            }
            let Some(outcome) = results.remove(name.as_str()) else {
                return result.with_error_code(ResponseError::RequestTimedOut.code());
            };
            let (code, message) = controller_result(&outcome);
            let result = result.with_error_code(code).with_error_message(message.map(StrBytes::from_string));
            match outcome {
                Ok(created) if version >= 5 => {
                    let configs = TopicConfig::resolve(created.configs.clone(), &broker, false)
                        .describe(&broker)
                        .into_iter()
                        .map(|(key, value, is_default)| {
                            CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_static_str(key.name))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_config_source(if is_default { SOURCE_DEFAULT } else { SOURCE_TOPIC })
                        })
                        .collect();
                    result
                        .with_topic_id(if version >= 7 { created.id } else { uuid::Uuid::nil() })
                        .with_num_partitions(created.partitions)
                        .with_replication_factor(created.replication_factor)
                        .with_configs(Some(configs))
                }
                Ok(_) => result,
                Err(_) if version >= 5 => result.with_num_partitions(-1).with_replication_factor(-1),
                Err(_) => result,
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}
