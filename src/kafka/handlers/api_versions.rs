//! ApiVersions: which APIs and versions this broker speaks.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::{encode, respond, supported_apis};
use crate::kafka::connection::{Connection, Response, ResponseBody};

fn api_list() -> Vec<ApiVersion> {
    supported_apis()
        .into_iter()
        .map(|(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect()
}

/// Answers ApiVersions.
pub async fn handle(_conn: &Rc<Connection>, _request: ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_list())
}

/// The answer to an ApiVersions request of a version we do not speak: a v0 response with
/// UNSUPPORTED_VERSION and our ranges, from which the client picks a version we share.
pub fn unsupported_version_response(correlation_id: i32) -> Response {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_list());
    let body = encode(ApiKey::ApiVersions, 0, &response).expect("v0 ApiVersions encodes");
    respond(ApiKey::ApiVersions, 0, correlation_id, ResponseBody::Bytes(body))
}
