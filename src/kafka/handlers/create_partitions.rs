//! CreatePartitions: grow a topic's partition count.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ask_controller;
use crate::cluster::ControllerCall;
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_result;

/// Answers CreatePartitions.
pub async fn handle(
    conn: &Rc<Connection>,
    request: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let broker_id = conn.shard.metadata().broker.id;
    let mut results = Vec::new();
    let mut asked = Vec::new();
    for topic in &request.topics {
        // Manual assignments may only name this broker.
        let bad_assignment = topic
            .assignments
            .iter()
            .flatten()
            .any(|a| a.broker_ids.iter().any(|b| b.0 != broker_id) || a.broker_ids.len() != 1);
        if bad_assignment {
            results.push((
                topic.name.clone(),
                Some((
                    ResponseError::InvalidReplicaAssignment.code(),
                    "assignments may only name this broker".to_owned(),
                )),
            ));
        } else {
            asked.push((topic.name.as_str().to_owned(), topic.count));
            results.push((topic.name.clone(), None));
        }
    }
    let outcomes = ask_controller(&conn.shard, |reply| ControllerCall::CreatePartitions {
        topics: asked.clone(),
        validate_only: request.validate_only,
        reply,
    })
    .await
    .unwrap_or_default();
    let mut outcomes = outcomes.into_iter();
    let results = results
        .into_iter()
        .map(|(name, early)| {
            let (code, message) = match early {
                Some((code, message)) => (code, Some(message)),
                None => match outcomes.next() {
                    Some(outcome) => controller_result(&outcome),
                    None => (ResponseError::RequestTimedOut.code(), None),
                },
            };
            CreatePartitionsTopicResult::default()
                .with_name(name)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
