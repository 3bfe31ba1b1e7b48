//! SaslAuthenticate (v0-v2): one token of the exchange SaslHandshake started. A failed
//! exchange is answered SASL_AUTHENTICATION_FAILED after `connection.failed.authentication.delay.ms`
//! and the connection closes.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::connection::{Auth, Connection};
use crate::kafka::server::KafkaMetrics;
use crate::security::sasl::SaslOutcome;

/// Answers SaslAuthenticate.
pub async fn handle(
    conn: &Rc<Connection>,
    request: SaslAuthenticateRequest,
    _version: i16,
) -> SaslAuthenticateResponse {
    let illegal = |message: &str| {
        SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::IllegalSaslState.code())
            .with_error_message(Some(StrBytes::from_string(message.to_owned())))
    };
    if !conn.listener.protocol.sasl() {
        return illegal("SaslAuthenticate on a listener without SASL");
    }
    let mut exchange = match std::mem::replace(&mut *conn.auth.borrow_mut(), Auth::Failed) {
        Auth::Exchanging(exchange) => exchange,
        _ => return illegal("SaslAuthenticate without a SaslHandshake before it"),
    };
    let users = conn.ctx.security.plain_users().await;
    let view = conn.ctx.view();
    match exchange.step(&request.auth_bytes, &users, &view.image) {
        SaslOutcome::Continue(reply) => {
            *conn.auth.borrow_mut() = Auth::Exchanging(exchange);
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(reply))
        }
        SaslOutcome::Authenticated { principal, reply } => {
            let lifetime = conn.ctx.config.connections_max_reauth_ms;
            let expires = (lifetime > 0).then(|| Instant::now() + Duration::from_millis(lifetime));
            tracing::debug!(peer = %conn.peer, %principal, mechanism = exchange.mechanism().name(), "authenticated");
            *conn.principal.borrow_mut() = principal;
            *conn.auth.borrow_mut() = Auth::Authenticated { mechanism: exchange.mechanism(), expires };
            SaslAuthenticateResponse::default()
                .with_auth_bytes(Bytes::from(reply))
                .with_session_lifetime_ms(lifetime.min(i64::MAX as u64) as i64)
        }
        SaslOutcome::Failed(message) => {
            KafkaMetrics::add(&conn.ctx.metrics.authentication_failures, 1);
            if let Some(more) = conn.ctx.auth_log.borrow_mut().due() {
                tracing::warn!(
                    peer = %conn.peer,
                    listener = %conn.listener.name,
                    mechanism = exchange.mechanism().name(),
                    more,
                    "SASL authentication failed: {message}"
                );
            }
            // Slow answers make guessing passwords slow (the connection closes after it).
            crate::io::sleep(Duration::from_millis(conn.ctx.config.connection_failed_authentication_delay_ms)).await;
            SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                .with_error_message(Some(StrBytes::from_string(message)))
        }
    }
}
