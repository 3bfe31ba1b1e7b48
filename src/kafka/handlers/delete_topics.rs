//! DeleteTopics (by name, or by topic id from v6).

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::controller_items;
use crate::cluster::{ControllerRequest, ControllerResponse, TopicRef};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_result;

/// Answers DeleteTopics.
pub async fn handle(conn: &Rc<Connection>, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let refs: Vec<TopicRef> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => TopicRef::Name(name.as_str().to_owned()),
                None => TopicRef::Id(t.topic_id),
            })
            .collect()
    } else {
        request.topic_names.iter().map(|n| TopicRef::Name(n.as_str().to_owned())).collect()
    };
    let ask = ControllerRequest::DeleteTopics { topics: refs.clone() };
    let results = controller_items(conn, ask, refs.len(), |r| match r {
        ControllerResponse::DeletedTopics(results) => Some(results),
        _ => None,
    })
    .await;
    let responses = refs
        .iter()
        .zip(results)
        .map(|(topic, outcome)| {
            let (code, message) = controller_result(&outcome);
            let (name, id) = match (&outcome, topic) {
                (Ok((name, id)), _) => (Some(name.clone()), *id),
                (Err(_), TopicRef::Name(name)) => (Some(name.clone()), uuid::Uuid::nil()),
                (Err(_), TopicRef::Id(id)) => (None, *id),
            };
            DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(if version >= 6 { id } else { uuid::Uuid::nil() })
                .with_error_code(code)
                .with_error_message(if version >= 5 { message.map(StrBytes::from_string) } else { None })
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
