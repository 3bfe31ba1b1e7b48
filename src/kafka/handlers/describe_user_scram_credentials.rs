//! DescribeUserScramCredentials: which SCRAM mechanisms (and iterations) each user has; never
//! the credentials themselves.

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::connection::Connection;
use crate::security::acl;
use crate::security::scram::ScramMechanism;

/// Answers DescribeUserScramCredentials (every user when none is named).
pub async fn handle(
    conn: &Rc<Connection>,
    request: DescribeUserScramCredentialsRequest,
    _version: i16,
) -> DescribeUserScramCredentialsResponse {
    if !conn.cluster_allowed(acl::op::DESCRIBE) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code());
    }
    let view = conn.ctx.view();
    let credentials = &view.image.scram_credentials;
    let (users, named): (Vec<String>, bool) = match &request.users {
        Some(users) if !users.is_empty() => (users.iter().map(|u| u.name.as_str().to_owned()).collect(), true),
        _ => (credentials.keys().map(|(user, _)| user.clone()).collect::<BTreeSet<_>>().into_iter().collect(), false),
    };
    let mut asked = BTreeSet::new();
    let results = users
        .into_iter()
        .map(|user| {
            let entry = DescribeUserScramCredentialsResult::default().with_user(StrBytes::from_string(user.clone()));
            if named && !asked.insert(user.clone()) {
                return entry
                    .with_error_code(ResponseError::DuplicateResource.code())
                    .with_error_message(Some(StrBytes::from_static_str("Cannot describe the same user twice")));
            }
            let infos: Vec<CredentialInfo> = credentials
                .iter()
                .filter(|((name, _), _)| *name == user)
                .filter_map(|((_, mechanism), credential)| {
                    let mechanism = ScramMechanism::from_name(mechanism)?;
                    Some(
                        CredentialInfo::default()
                            .with_mechanism(mechanism.type_code())
                            .with_iterations(credential.iterations as i32),
                    )
                })
                .collect();
            if infos.is_empty() {
                return entry.with_error_code(ResponseError::ResourceNotFound.code()).with_error_message(Some(
                    StrBytes::from_static_str("Attempt to describe a user credential that does not exist"),
                ));
            }
            entry.with_credential_infos(infos)
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
