//! `POST /api/cron/fire` (SPEC §8): an external scheduler fires a job with a signed JWT.
//!
//! Served on the API server (not behind `API_SERVER_KEY`) and as a public path on the
//! dashboard: the fire token is this route's only credential and authenticates nothing
//! else. Token first, then body: 401 `invalid fire token`, 503 + `Retry-After` when no key
//! is obtainable or the gateway is draining, 400 `missing job_id`, 202 with the outcome.
//! Every answer is audited with its reason; the token never is.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::error::unavailable;
use super::jobs::JobsError;
use crate::audit::AuditEvent;
use crate::auth::bearer_token;
use crate::chronos::FireAuthError;
use crate::chronos::verify::LEEWAY_SECONDS;
use crate::cron::{CronError, FireRequest};
use crate::state::AppState;

/// Largest fire body read; a fire is two short fields.
const FIRE_BODY_LIMIT: usize = 64 * 1024;

/// The fire route; no authentication layer in front: the handler checks the token.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/cron/fire", post(fire))
}

/// Verifies the fire token, then claims the job's slot and starts its run in the background.
#[utoipa::path(post, path = "/api/cron/fire", tag = "cron", request_body = super::schemas::FireRequest,
    responses((status = 202, description = "accepted; the run (if any) goes on in the background", body = super::schemas::FireAccepted),
              (status = 400, description = "missing job_id (or a bad fire_at)", body = super::schemas::JobsError),
              (status = 401, description = "invalid fire token", body = super::schemas::JobsError),
              (status = 503, description = "no key obtainable, or draining: nothing claimed; Retry-After", body = super::schemas::JobsError)))]
pub async fn fire(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = peer.ip().to_string();
    let reject = |status: &'static str, reason: &str, job_id: Option<&str>| {
        s.metrics.cron_fire(status);
        s.audit.record(
            AuditEvent::CronFireRejected,
            &[
                ("reason", json!(reason)),
                ("job_id", json!(job_id)),
                ("ip", json!(ip)),
            ],
        );
    };
    let token = bearer_token(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let Some(token) = token else {
        reject("unauthorized", "missing token", None);
        return unauthorized();
    };
    let claims = match s.fire_verifier.verify(token).await {
        Ok(claims) => claims,
        Err(FireAuthError::BadToken(reason)) => {
            reject("unauthorized", reason, None);
            return unauthorized();
        }
        Err(FireAuthError::NoKey(reason)) => {
            reject("unavailable", reason, None);
            return unavailable(
                json!({"error": "no fire-token key can be obtained right now; retry later"}),
            );
        }
    };
    let (job_id, fire_at) = match parse_body(&body) {
        Ok(parsed) => parsed,
        Err(message) => {
            reject("bad_request", &message, None);
            return (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response();
        }
    };
    let jti = claims.jti.map(|j| {
        let until = Timestamp::from_second(claims.exp.saturating_add(LEEWAY_SECONDS))
            .unwrap_or(Timestamp::MAX);
        (j, until)
    });
    let request = FireRequest {
        job_id: job_id.clone(),
        fire_at,
        jti,
    };
    match s.cron.fire(request).await {
        Ok(fired) => {
            let outcome = fired.outcome.as_str();
            s.metrics.cron_fire(outcome);
            s.audit.record(
                AuditEvent::CronFireAccepted,
                &[
                    ("job_id", json!(job_id)),
                    ("outcome", json!(outcome)),
                    ("run_id", json!(fired.run_id)),
                    ("ip", json!(ip)),
                ],
            );
            let body = json!({"status": "accepted", "job_id": job_id, "run_id": fired.run_id, "outcome": outcome});
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(e) => {
            let status = if matches!(e, CronError::Draining) {
                "draining"
            } else {
                "unavailable"
            };
            reject(status, &e.to_string(), Some(&job_id));
            JobsError::from(e).into_response()
        }
    }
}

/// `{"job_id", "fire_at"?}`; `fire_at` is an RFC 3339 time or Unix seconds.
fn parse_body(body: &[u8]) -> Result<(String, Option<Timestamp>), String> {
    let missing = || "missing job_id".to_owned();
    if body.len() > FIRE_BODY_LIMIT {
        return Err(format!("body larger than {FIRE_BODY_LIMIT} bytes"));
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(missing());
    };
    let job_id = match map.get("job_id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => return Err(missing()),
    };
    let fire_at = match map.get("fire_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(
            t.parse::<Timestamp>()
                .map_err(|e| format!("invalid fire_at {t:?}: expected an RFC 3339 time ({e})"))?,
        ),
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .and_then(|secs| Timestamp::from_second(secs).ok())
                .ok_or_else(|| format!("invalid fire_at {n}: not a Unix time in seconds"))?,
        ),
        Some(other) => {
            return Err(format!(
                "invalid fire_at {other}: expected an RFC 3339 time or Unix seconds"
            ));
        }
    };
    Ok((job_id, fire_at))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "invalid fire token"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_parsing() {
        let at: Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
        let ok = |body: &str, want: (&str, Option<Timestamp>)| {
            let (id, fire_at) = parse_body(body.as_bytes()).unwrap();
            assert_eq!((id.as_str(), fire_at), want, "{body}");
        };
        ok(r#"{"job_id":"abc"}"#, ("abc", None));
        ok(r#"{"job_id":" abc ","fire_at":null}"#, ("abc", None));
        ok(
            r#"{"job_id":"abc","fire_at":"2026-12-01T09:00:00Z"}"#,
            ("abc", Some(at)),
        );
        ok(
            r#"{"job_id":"abc","fire_at":1796115600}"#,
            ("abc", Some(at)),
        );
        let err = |body: &str, want: &str| {
            let e = parse_body(body.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        };
        for body in [
            "",
            "nope",
            "[]",
            "{}",
            r#"{"job_id":""}"#,
            r#"{"job_id":5}"#,
        ] {
            err(body, "missing job_id");
        }
        err(
            r#"{"job_id":"a","fire_at":"tomorrow"}"#,
            "invalid fire_at \"tomorrow\"",
        );
        err(r#"{"job_id":"a","fire_at":true}"#, "invalid fire_at true");
    }
}
