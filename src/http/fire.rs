//! `POST /api/cron/fire` (SPEC §8): an external scheduler fires a job with a signed JWT.
//!
//! Served on the API server (not behind `API_SERVER_KEY`) and as a public path on the
//! dashboard: the fire token is this route's only credential and authenticates nothing
//! else. The handler extracts the bearer token, body and client address, calls
//! `chronos::Fires::fire` (which decides, audits and counts) and maps its answer: 202 with
//! the outcome, or the refusal through `ApiError` (401 `invalid fire token`, 503 +
//! `Retry-After` when no key is obtainable or the gateway is draining, 400 `missing job_id`).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::ApiError;
use crate::auth::bearer_token;
use crate::state::AppState;

/// The fire route; no authentication layer in front: `Fires` checks the token.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/cron/fire", post(fire))
}

/// Verifies the fire token, then claims the job's slot and starts its run in the background.
#[utoipa::path(post, path = "/api/cron/fire", tag = "cron", request_body = super::schemas::FireRequest,
    responses((status = 202, description = "accepted; the run (if any) goes on in the background", body = super::schemas::FireAccepted),
              (status = 400, description = "missing job_id (or a bad fire_at)", body = super::schemas::JobsError),
              (status = 401, description = "invalid fire token", body = super::schemas::JobsError),
              (status = 413, description = "a body over the 10 MB limit", body = super::schemas::JobsError),
              (status = 503, description = "no key obtainable, or draining: nothing claimed; Retry-After", body = super::schemas::JobsError)))]
pub async fn fire(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::unreadable_job_body(e.status(), &e.body_text()))?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = bearer_token(authorization);
    let accepted = s.fires.fire(token, &body, &peer.ip().to_string()).await?;
    let fired = accepted.fired;
    let body = json!({"status": "accepted", "job_id": accepted.job_id,
        "run_id": fired.run_id, "outcome": fired.outcome.as_str()});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
