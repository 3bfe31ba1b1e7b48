//! AlterUserScramCredentials: SCRAM credentials set and removed, stored in the cluster
//! metadata (clients send the salted password; the broker keeps only the derived keys).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{ControllerRequest, ScramCredential};
use crate::kafka::connection::Connection;
use crate::kafka::errors::controller_error;
use crate::security::acl;
use crate::security::scram::{MAX_ITERATIONS, MIN_ITERATIONS, ScramMechanism};

type Failure = (ResponseError, String);

/// Answers AlterUserScramCredentials.
pub async fn handle(
    conn: &Rc<Connection>,
    request: AlterUserScramCredentialsRequest,
    _version: i16,
) -> AlterUserScramCredentialsResponse {
    if !conn.cluster_allowed(acl::op::ALTER) {
        let mut users: Vec<String> = request.deletions.iter().map(|d| d.name.as_str().to_owned()).collect();
        users.extend(request.upsertions.iter().map(|u| u.name.as_str().to_owned()));
        users.sort();
        users.dedup();
        let results = users
            .into_iter()
            .map(|user| {
                AlterUserScramCredentialsResult::default()
                    .with_user(StrBytes::from_string(user))
                    .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            })
            .collect();
        return AlterUserScramCredentialsResponse::default().with_results(results);
    }
    let view = conn.ctx.view();
    // Per user: its first failure, else the changes it asks for.
    let mut outcome: BTreeMap<String, Result<(), Failure>> = BTreeMap::new();
    let mut upserts: Vec<(String, ScramCredential)> = Vec::new();
    let mut deletions: Vec<(String, String)> = Vec::new();
    let mut seen: BTreeMap<(String, i8), usize> = BTreeMap::new();
    let fail = |outcome: &mut BTreeMap<String, Result<(), Failure>>, user: &str, error: ResponseError, why: String| {
        let entry = outcome.entry(user.to_owned()).or_insert(Ok(()));
        if entry.is_ok() {
            *entry = Err((error, why));
        }
    };
    for deletion in &request.deletions {
        let user = deletion.name.as_str();
        outcome.entry(user.to_owned()).or_insert(Ok(()));
        *seen.entry((user.to_owned(), deletion.mechanism)).or_default() += 1;
        let Some(mechanism) = ScramMechanism::from_type(deletion.mechanism) else {
            fail(&mut outcome, user, ResponseError::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".into());
            continue;
        };
        if user.is_empty() {
            fail(&mut outcome, user, ResponseError::UnacceptableCredential, "Username must not be empty".into());
        } else if !view.image.scram_credentials.contains_key(&(user.to_owned(), mechanism.name().to_owned())) {
            let why = "Attempt to delete a user credential that does not exist".to_owned();
            fail(&mut outcome, user, ResponseError::ResourceNotFound, why);
        } else {
            deletions.push((user.to_owned(), mechanism.name().to_owned()));
        }
    }
    for upsertion in &request.upsertions {
        let user = upsertion.name.as_str();
        outcome.entry(user.to_owned()).or_insert(Ok(()));
        *seen.entry((user.to_owned(), upsertion.mechanism)).or_default() += 1;
        let Some(mechanism) = ScramMechanism::from_type(upsertion.mechanism) else {
            fail(&mut outcome, user, ResponseError::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".into());
            continue;
        };
        let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
        if user.is_empty() {
            fail(&mut outcome, user, ResponseError::UnacceptableCredential, "Username must not be empty".into());
        } else if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            let why = format!(
                "Iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, not {}",
                upsertion.iterations
            );
            fail(&mut outcome, user, ResponseError::UnacceptableCredential, why);
        } else if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
            fail(
                &mut outcome,
                user,
                ResponseError::UnacceptableCredential,
                "Salt and salted password must not be empty".into(),
            );
        } else {
            upserts
                .push((user.to_owned(), mechanism.credential(&upsertion.salt, &upsertion.salted_password, iterations)));
        }
    }
    for ((user, _), count) in &seen {
        if *count > 1 {
            let why = "A user credential cannot be altered twice in the same request".to_owned();
            fail(&mut outcome, user, ResponseError::DuplicateResource, why);
        }
    }
    // A user with any failure changes nothing.
    upserts.retain(|(user, _)| outcome.get(user).is_some_and(Result::is_ok));
    deletions.retain(|(user, _)| outcome.get(user).is_some_and(Result::is_ok));
    let changes = !upserts.is_empty() || !deletions.is_empty();
    if changes
        && let Err(err) = conn.ctx.ask_controller(ControllerRequest::AlterScramCredentials { upserts, deletions }).await
    {
        let (code, why) = (controller_error(&err), err.to_string());
        for result in outcome.values_mut().filter(|r| r.is_ok()) {
            *result = Err((code, why.clone()));
        }
    }
    let results = outcome
        .into_iter()
        .map(|(user, result)| {
            let entry = AlterUserScramCredentialsResult::default().with_user(StrBytes::from_string(user));
            match result {
                Ok(()) => entry,
                Err((code, why)) => {
                    entry.with_error_code(code.code()).with_error_message(Some(StrBytes::from_string(why)))
                }
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
