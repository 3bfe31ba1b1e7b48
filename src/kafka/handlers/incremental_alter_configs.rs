//! IncrementalAlterConfigs: set, delete, append to or subtract from individual topic configs.

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::alter_configs::apply;
use crate::cluster::{AlterOp, ConfigChange};
use crate::kafka::connection::Connection;

/// Answers IncrementalAlterConfigs.
pub async fn handle(
    conn: &Rc<Connection>,
    request: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let mut invalid = Vec::new();
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let ops = r
                .configs
                .iter()
                .map(|c| {
                    let op = match c.config_operation {
                        0 => AlterOp::Set,
                        1 => AlterOp::Delete,
                        2 => AlterOp::Append,
                        3 => AlterOp::Subtract,
                        other => {
                            invalid.push((r.resource_name.clone(), other));
                            AlterOp::Set
                        }
                    };
                    (c.name.as_str().to_owned(), op, c.value.as_ref().map(|v| v.as_str().to_owned()))
                })
                .collect();
            (r.resource_type, r.resource_name, ConfigChange::Incremental(ops))
        })
        .collect::<Vec<_>>();
    let outcomes = if invalid.is_empty() {
        apply(conn, resources, request.validate_only).await
    } else {
        resources
            .into_iter()
            .map(|(kind, name, _)| {
                let message = format!(
                    "unknown config operation {:?}",
                    invalid.iter().find(|(n, _)| *n == name).map(|(_, op)| op)
                );
                (kind, name, kafka_protocol::error::ResponseError::InvalidRequest.code(), Some(message))
            })
            .collect()
    };
    let responses = outcomes
        .into_iter()
        .map(|(kind, name, code, message)| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(kind)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
