//! DescribeClientQuotas: the client quotas whose entities match a filter (needs DESCRIBE_CONFIGS
//! on the cluster).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::connection::Connection;
use crate::security::acl::op;
use crate::security::quota::{self, Match};

fn refused(code: ResponseError, why: String) -> DescribeClientQuotasResponse {
    DescribeClientQuotasResponse::default()
        .with_error_code(code.code())
        .with_error_message(Some(StrBytes::from_string(why)))
        .with_entries(None)
}

/// Answers DescribeClientQuotas.
pub async fn handle(
    conn: &Rc<Connection>,
    request: DescribeClientQuotasRequest,
    _version: i16,
) -> DescribeClientQuotasResponse {
    if !conn.cluster_allowed(op::DESCRIBE_CONFIGS) {
        return refused(ResponseError::ClusterAuthorizationFailed, "DESCRIBE_CONFIGS on the cluster is needed".into());
    }
    let mut components: Vec<(&str, Match)> = Vec::new();
    for c in &request.components {
        let kind = c.entity_type.as_str();
        if components.iter().any(|(k, _)| *k == kind) {
            return refused(ResponseError::InvalidRequest, format!("entity type {kind} given twice"));
        }
        let wanted = match (c.match_type, &c._match) {
            (0, Some(name)) => Match::Exact(name.as_str().to_owned()),
            (0, None) => return refused(ResponseError::InvalidRequest, "an exact match needs a name".into()),
            (1, _) => Match::Default,
            (2, _) => Match::Specified,
            (other, _) => return refused(ResponseError::InvalidRequest, format!("unknown match type {other}")),
        };
        components.push((kind, wanted));
    }
    let view = conn.ctx.view();
    let entries = view
        .image
        .client_quotas
        .iter()
        .filter(|(entity, _)| quota::matches(entity, &components, request.strict))
        .map(|(entity, bounds)| {
            let entity = quota::parts_of(entity)
                .into_iter()
                .map(|(kind, name)| {
                    EntityData::default()
                        .with_entity_type(StrBytes::from_static_str(kind))
                        .with_entity_name(name.map(|n| StrBytes::from_string(n.to_owned())))
                })
                .collect();
            let values = bounds
                .iter()
                .map(|(key, value)| {
                    ValueData::default().with_key(StrBytes::from_string(key.clone())).with_value(*value)
                })
                .collect();
            EntryData::default().with_entity(entity).with_values(values)
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}
