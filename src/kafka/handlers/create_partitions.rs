//! CreatePartitions: grow a topic's partition count.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::controller_items;
use crate::cluster::{ControllerRequest, ControllerResponse};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_result;
use crate::security::acl;

/// Answers CreatePartitions.
pub async fn handle(
    conn: &Rc<Connection>,
    request: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    let mut asked = Vec::new();
    for topic in &request.topics {
        let assignments: Vec<Vec<i32>> =
            topic.assignments.iter().flatten().map(|a| a.broker_ids.iter().map(|b| b.0).collect()).collect();
        if !conn.allowed(acl::op::ALTER, acl::resource::TOPIC, topic.name.as_str()) {
            let refused = (ResponseError::TopicAuthorizationFailed.code(), "ALTER on the topic is needed".to_owned());
            results.push((topic.name.clone(), Some(refused)));
            continue;
        }
        asked.push((topic.name.as_str().to_owned(), topic.count, assignments));
        results.push((topic.name.clone(), None::<(i16, String)>));
    }
    let count = asked.len();
    let ask = ControllerRequest::CreatePartitions { topics: asked, validate_only: request.validate_only };
    let outcomes = controller_items(conn, ask, count, |r| match r {
        ControllerResponse::Done(results) => Some(results),
        _ => None,
    })
    .await;
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
