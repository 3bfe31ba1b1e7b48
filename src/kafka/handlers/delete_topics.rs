//! DeleteTopics (by name, or by topic id from v6).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::controller_items;
use crate::cluster::{ControllerError, ControllerRequest, ControllerResponse, TopicRef};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_result;
use crate::security::acl;

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
    // DELETE on each topic; the others are refused before the controller hears of them.
    let view = conn.ctx.view();
    let allowed: Vec<bool> = refs
        .iter()
        .map(|r| {
            let name = match r {
                TopicRef::Name(name) => Some(name.clone()),
                TopicRef::Id(id) => view.topic_by_id(id).map(|t| t.name.clone()),
            };
            name.is_none_or(|name| conn.allowed(acl::op::DELETE, acl::resource::TOPIC, &name))
        })
        .collect();
    let asked: Vec<TopicRef> = refs.iter().zip(&allowed).filter(|(_, ok)| **ok).map(|(r, _)| r.clone()).collect();
    let count = asked.len();
    let mut results = if count == 0 {
        Vec::new()
    } else {
        controller_items(conn, ControllerRequest::DeleteTopics { topics: asked }, count, |r| match r {
            ControllerResponse::DeletedTopics(results) => Some(results),
            _ => None,
        })
        .await
    }
    .into_iter();
    let responses = refs
        .iter()
        .zip(allowed)
        .map(|(topic, allowed)| {
            let outcome = if allowed {
                results.next().unwrap_or(Err(ControllerError::Storage("controller did not answer".into())))
            } else {
                Err(ControllerError::InvalidRequest(String::new()))
            };
            let (code, message) = if allowed {
                controller_result(&outcome)
            } else {
                (ResponseError::TopicAuthorizationFailed.code(), None)
            };
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
