//! Error answers, counted per API and error code for the metrics endpoint, and the unusual ones
//! logged (at most once per [`Throttled::INTERVAL`] for each API and code).
//!
//! "Unusual" is an error a healthy cluster does not answer as part of its normal work: not a
//! retriable one (leadership moving, a coordinator loading, a timeout), and not one of the
//! answers a group or consumer protocol runs through every time ([`ROUTINE`]). A topic created
//! with a bad config, a refused ACL check or an unsupported feature leaves a line at `info`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;

use crate::io::Throttled;

/// Non-retriable codes that clients meet in normal operation: not worth a log line.
const ROUTINE: [ResponseError; 9] = [
    ResponseError::OffsetOutOfRange,
    ResponseError::IllegalGeneration,
    ResponseError::UnknownMemberId,
    ResponseError::RebalanceInProgress,
    ResponseError::MemberIdRequired,
    ResponseError::TopicAlreadyExists,
    ResponseError::GroupIdNotFound,
    ResponseError::StaleMemberEpoch,
    ResponseError::FencedMemberEpoch,
];

/// One shard's error answers (only its thread touches them).
#[derive(Default)]
pub struct ErrorStats {
    counts: RefCell<BTreeMap<(i16, i16), u64>>,
    logged: RefCell<HashMap<(i16, i16), Throttled>>,
}

impl ErrorStats {
    /// Counts an answer of `api` with error `code` (0 is no error and is not counted), logging
    /// it when unusual; `message` is the answer's own error message, `client` the caller's id.
    pub fn record(&self, api: ApiKey, code: i16, message: Option<&str>, client: &str) {
        if code == 0 {
            return;
        }
        *self.counts.borrow_mut().entry((api as i16, code)).or_default() += 1;
        let known = ResponseError::try_from_code(code);
        if known.is_some_and(|e| e.is_retriable() || ROUTINE.contains(&e)) {
            return;
        }
        let due = self.logged.borrow_mut().entry((api as i16, code)).or_default().due();
        if let Some(held_back) = due {
            tracing::info!(
                api = ?api,
                error = %error_name(code),
                reason = message.unwrap_or(""),
                client,
                held_back,
                "request answered with an error"
            );
        }
    }

    /// Every count so far, by API then code: (API name, error name, code, answers).
    pub fn snapshot(&self) -> Vec<(String, String, i16, u64)> {
        self.counts
            .borrow()
            .iter()
            .map(|(&(api, code), &count)| {
                let api = ApiKey::try_from(api).map_or_else(|_| api.to_string(), |k| format!("{k:?}"));
                (api, error_name(code), code, count)
            })
            .collect()
    }
}

/// Kafka's name for an error code (`NOT_LEADER_OR_FOLLOWER`), or the number when unknown.
pub fn error_name(code: i16) -> String {
    let camel = ResponseError::try_from_code(code).map(|e| format!("{e:?}")).unwrap_or_default();
    if camel.is_empty() || !camel.chars().all(|c| c.is_ascii_alphabetic()) {
        // A code the protocol crate does not name (it shows as `Unknown(code)`).
        return format!("ERROR_{code}");
    }
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kafkas() {
        assert_eq!(error_name(38), "INVALID_REPLICATION_FACTOR");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(29), "TOPIC_AUTHORIZATION_FAILED");
        assert_eq!(error_name(9999), "ERROR_9999");
    }

    #[test]
    fn counts_are_kept_per_api_and_code_and_successes_are_not_counted() {
        let stats = ErrorStats::default();
        for code in [38, 38, 0, 36] {
            stats.record(ApiKey::CreateTopics, code, None, "c");
        }
        stats.record(ApiKey::Metadata, 3, None, "c");
        let seen: Vec<(String, String, u64)> =
            stats.snapshot().into_iter().map(|(api, error, _, count)| (api, error, count)).collect();
        assert_eq!(
            seen,
            [
                ("Metadata".to_owned(), "UNKNOWN_TOPIC_OR_PARTITION".to_owned(), 1),
                ("CreateTopics".to_owned(), "TOPIC_ALREADY_EXISTS".to_owned(), 1),
                ("CreateTopics".to_owned(), "INVALID_REPLICATION_FACTOR".to_owned(), 2),
            ]
        );
    }
}
