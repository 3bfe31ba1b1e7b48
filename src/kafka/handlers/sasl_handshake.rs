//! SaslHandshake (v1): the client names a SASL mechanism; SaslAuthenticate tokens follow. On a
//! listener without SASL it is ILLEGAL_SASL_STATE (the connection stays); an unsupported
//! mechanism is UNSUPPORTED_SASL_MECHANISM and closes the connection, as Kafka does.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::connection::{Auth, Connection};
use crate::security::sasl::{Mechanism, SaslExchange};

/// Answers SaslHandshake.
pub async fn handle(conn: &Rc<Connection>, request: SaslHandshakeRequest, _version: i16) -> SaslHandshakeResponse {
    let enabled = conn.ctx.config.sasl_mechanisms();
    let listed = |names: &[String]| names.iter().map(|m| StrBytes::from_string(m.clone())).collect();
    if !conn.listener.protocol.sasl() {
        return SaslHandshakeResponse::default().with_error_code(ResponseError::IllegalSaslState.code());
    }
    let asked = request.mechanism.as_str();
    let chosen = Mechanism::from_name(asked).filter(|m| enabled.iter().any(|e| e == m.name()));
    let mut auth = conn.auth.borrow_mut();
    let reauth_with = match &*auth {
        Auth::Handshake => None,
        Auth::Authenticated { mechanism, .. } => Some(*mechanism),
        _ => {
            *auth = Auth::Failed;
            return SaslHandshakeResponse::default().with_error_code(ResponseError::IllegalSaslState.code());
        }
    };
    match chosen {
        // Re-authentication (KIP-368) keeps the mechanism.
        Some(mechanism) if reauth_with.is_none_or(|m| m == mechanism) => {
            *auth = Auth::Exchanging(SaslExchange::new(mechanism));
            SaslHandshakeResponse::default().with_mechanisms(listed(&enabled))
        }
        _ => {
            *auth = Auth::Failed;
            SaslHandshakeResponse::default()
                .with_error_code(ResponseError::UnsupportedSaslMechanism.code())
                .with_mechanisms(listed(&enabled))
        }
    }
}
