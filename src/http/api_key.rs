//! `API_SERVER_KEY`: when it is set, every API-server route but the fire (whose token is
//! its own credential) and the health probes wants it as a bearer token.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::auth::{bearer_token, constant_time_eq};
use crate::state::AppState;

/// Guards API-server routes other than chat (the job API) with `API_SERVER_KEY`.
pub(super) async fn require(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match check(&s, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// `Ok` when no key is set or the bearer token is the key (compared in constant time).
pub(super) fn check(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    use secrecy::ExposeSecret;
    let Some(key) = &s.config.secrets.api_server_key else {
        return Ok(());
    };
    let presented = bearer_token(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), key.expose_secret().as_bytes()) => Ok(()),
        _ => Err(ApiError::invalid_api_key()),
    }
}
