//! AlterClientQuotas: client quotas into the cluster metadata (needs ALTER_CONFIGS on the
//! cluster). Each entry succeeds or fails on its own; a bad key, value or entity fails its entry
//! with INVALID_REQUEST and a message naming what is wrong.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_request::EntityData as RequestEntity;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{ControllerRequest, QuotaEntity};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_error;
use crate::security::acl::op;
use crate::security::quota;

fn echo(entity: &[RequestEntity]) -> Vec<EntityData> {
    entity
        .iter()
        .map(|e| EntityData::default().with_entity_type(e.entity_type.clone()).with_entity_name(e.entity_name.clone()))
        .collect()
}

fn failed(code: ResponseError, why: String, entity: &[RequestEntity]) -> EntryData {
    EntryData::default()
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(why)))
        .with_entity(echo(entity))
}

/// The entity and its changes, or why the entry is refused.
type Changes = Vec<(QuotaEntity, String, Option<f64>)>;

fn check(
    entity: &[RequestEntity],
    ops: &[kafka_protocol::messages::alter_client_quotas_request::OpData],
) -> Result<Changes, String> {
    let entity = quota::entity_of(entity.iter().map(|e| (e.entity_type.as_str(), e.entity_name.as_deref())))?;
    let mut changes: Changes = Vec::new();
    for op in ops {
        let key = op.key.as_str();
        if changes.iter().any(|(_, k, _)| k == key) {
            return Err(format!("quota key {key} given twice"));
        }
        let refused = if op.remove { quota::invalid_key(key) } else { quota::invalid_value(key, op.value) };
        if let Some(why) = refused {
            return Err(why);
        }
        let value = (!op.remove).then_some(op.value);
        changes.push((entity.clone(), key.to_owned(), value));
    }
    Ok(changes)
}

/// Answers AlterClientQuotas.
pub async fn handle(
    conn: &Rc<Connection>,
    request: AlterClientQuotasRequest,
    _version: i16,
) -> AlterClientQuotasResponse {
    if !conn.cluster_allowed(op::ALTER_CONFIGS) {
        let entries = request
            .entries
            .iter()
            .map(|e| {
                failed(
                    ResponseError::ClusterAuthorizationFailed,
                    "ALTER_CONFIGS on the cluster is needed".into(),
                    &e.entity,
                )
            })
            .collect();
        return AlterClientQuotasResponse::default().with_entries(entries);
    }
    let mut results: Vec<Option<EntryData>> = Vec::new();
    let mut changes = Vec::new();
    for entry in &request.entries {
        match check(&entry.entity, &entry.ops) {
            Err(why) => results.push(Some(failed(ResponseError::InvalidRequest, why, &entry.entity))),
            Ok(mine) => {
                results.push(None);
                changes.extend(mine);
            }
        }
    }
    let outcome = if changes.is_empty() || request.validate_only {
        Ok(())
    } else {
        conn.ctx.ask_controller(ControllerRequest::AlterClientQuotas { changes }).await.map(|_| ())
    };
    let entries = results
        .into_iter()
        .zip(&request.entries)
        .map(|(result, entry)| match (result, &outcome) {
            (Some(result), _) => result,
            (None, Ok(())) => EntryData::default().with_entity(echo(&entry.entity)),
            (None, Err(err)) => failed(controller_error(err), err.to_string(), &entry.entity),
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
