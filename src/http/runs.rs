//! `/v1/runs` (SPEC §11 "Runs", compat): start a run (202), read it, follow its events
//! (SSE: `data: <json>` per event, replayed from the first, `: keepalive` every 30 s,
//! `: stream closed` at the end) and stop it. The runs are `runs`'s; this maps its
//! answers to the wire. Behind `API_SERVER_KEY`, counted by route and outcome.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use super::ApiError;
use crate::runs::{EventFeed, RunView};
use crate::state::AppState;

/// A quiet event stream sends a comment this often, so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// The run routes, behind `API_SERVER_KEY` and counted by route and outcome.
pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/runs", post(start))
        .route("/v1/runs/{id}", get(show))
        .route("/v1/runs/{id}/events", get(events))
        .route("/v1/runs/{id}/stop", post(stop))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::api_key::require,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            super::route_metrics::count,
        ))
}

/// Starts a run; it lives on its own, whatever becomes of this connection.
#[utoipa::path(post, path = "/v1/runs", tag = "runs", operation_id = "start_run", request_body = super::schemas::RunRequest,
    responses(
        (status = 202, description = "started (its row is committed): follow it with GET /v1/runs/{id} or its events", body = super::schemas::RunStarted),
        (status = 400, description = "invalid request: the message names the field; `param` the field or item (`input`, `input[2].content`, `session_id`), `code` the kind", body = super::schemas::ChatRequestError),
        (status = 413, description = "body over 10 MB", body = super::schemas::OpenAiError),
        (status = 429, description = "rate_limit_exceeded: Too many concurrent runs (max 10), with Retry-After",
            headers(("Retry-After" = u64, description = "seconds")), body = super::schemas::OpenAiError),
        (status = 503, description = "gateway_draining (or starting), or the store is unavailable, with Retry-After",
            headers(("Retry-After" = u64, description = "seconds")), body = super::schemas::OpenAiError),
    ))]
pub async fn start(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_request(format!("invalid request body: {e}"), None))?;
    let request = crate::runs::run_request(&value).map_err(ApiError::Input)?;
    let id = s.runs.start(request).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run_id": id, "status": "started"})),
    )
        .into_response())
}

/// A run's state, on any replica.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", operation_id = "get_run",
    params(("id" = String, Path, description = "the run id (`run_…`)")),
    responses(
        (status = 200, description = "the run", body = super::schemas::RunObject),
        (status = 404, description = "run_not_found", body = super::schemas::OpenAiError),
        (status = 503, description = "the store is unavailable, with Retry-After",
            headers(("Retry-After" = u64, description = "seconds")), body = super::schemas::OpenAiError),
    ))]
pub async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&s.runs.get(&id).await?)))
}

/// A run's events as server-sent events, from its first, ending after its last.
#[utoipa::path(get, path = "/v1/runs/{id}/events", tag = "runs", operation_id = "run_events",
    params(("id" = String, Path, description = "the run id (`run_…`)")),
    responses(
        (status = 200, description = "`data: <json>` per event (each a RunEvent), replayed from the first for a late subscriber; `: keepalive` every 30 s of quiet; `: stream closed` after the run's last event", content_type = "text/event-stream", body = super::schemas::RunEventFrame),
        (status = 404, description = "run_not_found", body = super::schemas::OpenAiError),
        (status = 503, description = "the store is unavailable, with Retry-After",
            headers(("Retry-After" = u64, description = "seconds")), body = super::schemas::OpenAiError),
    ))]
pub async fn events(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(sse(s.runs.events(&id).await?))
}

/// Stops a running run (its agent is stopped within a few seconds, on whichever replica
/// runs it); it ends `cancelled` with a `run.stopped` event.
#[utoipa::path(post, path = "/v1/runs/{id}/stop", tag = "runs", operation_id = "stop_run",
    params(("id" = String, Path, description = "the run id (`run_…`)")),
    responses(
        (status = 200, description = "stopping", body = super::schemas::RunStopping),
        (status = 404, description = "run_not_found", body = super::schemas::OpenAiError),
        (status = 409, description = "run_not_running: the run has already ended", body = super::schemas::OpenAiError),
        (status = 503, description = "the store is unavailable, with Retry-After",
            headers(("Retry-After" = u64, description = "seconds")), body = super::schemas::OpenAiError),
    ))]
pub async fn stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.runs.stop(&id).await?;
    Ok(Json(json!({"run_id": id, "status": "stopping"})))
}

/// The compat `hermes.run` object; times in Unix seconds.
fn run_json(v: &RunView) -> Value {
    let seconds = |ms: i64| ms as f64 / 1000.0;
    let mut body = json!({
        "object": "hermes.run",
        "run_id": v.id,
        "status": v.status,
        "created_at": seconds(v.created_at_ms),
        "updated_at": seconds(v.updated_at_ms),
        "last_event": v.last_event,
        "session_id": v.session_id,
        "model": v.model,
    });
    if let Some(output) = &v.output {
        body["output"] = json!(output);
    }
    if let Some(error) = &v.error {
        body["error"] = json!(error);
    }
    body
}

/// One SSE frame per event, a keepalive comment after [`KEEPALIVE`] of quiet, and a
/// closing comment once the feed ends.
fn sse(feed: EventFeed) -> Response {
    let frames = stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        let frame = match tokio::time::timeout(KEEPALIVE, feed.next()).await {
            Ok(Some(event)) => Bytes::from(format!("data: {event}\n\n")),
            Ok(None) => return Some((Ok(Bytes::from_static(b": stream closed\n\n")), None)),
            Err(_) => Bytes::from_static(b": keepalive\n\n"),
        };
        Some((Ok::<_, Infallible>(frame), Some(feed)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::to_bytes;

    use super::*;

    async fn frames(body: Body, n: usize) -> Vec<String> {
        let mut stream = body.into_data_stream();
        let mut out = Vec::new();
        while out.len() < n {
            let chunk = stream.next().await.expect("more frames").unwrap();
            out.push(String::from_utf8(chunk.to_vec()).unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_sends_a_keepalive_every_30_seconds() {
        let quiet: EventFeed = Box::pin(stream::pending());
        let started = tokio::time::Instant::now();
        let got = frames(sse(quiet).into_body(), 2).await;
        assert_eq!(got, [": keepalive\n\n", ": keepalive\n\n"]);
        assert_eq!(started.elapsed(), 2 * KEEPALIVE);
    }

    #[tokio::test]
    async fn every_event_is_a_data_frame_and_the_end_is_a_closing_comment() {
        let events: Vec<Arc<str>> = vec![Arc::from(r#"{"event":"a"}"#), Arc::from("{}")];
        let feed: EventFeed = Box::pin(stream::iter(events));
        let response = sse(feed);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        assert_eq!(
            String::from_utf8(body.to_vec()).unwrap(),
            "data: {\"event\":\"a\"}\n\ndata: {}\n\n: stream closed\n\n"
        );
    }

    #[test]
    fn a_run_is_the_compat_hermes_run_object() {
        let mut view = RunView {
            id: "run_1".into(),
            status: "running",
            session_id: "s".into(),
            model: "m".into(),
            created_at_ms: 1_500,
            updated_at_ms: 2_250,
            last_event: None,
            output: None,
            error: None,
        };
        assert_eq!(
            run_json(&view),
            json!({"object": "hermes.run", "run_id": "run_1", "status": "running", "created_at": 1.5,
                   "updated_at": 2.25, "last_event": null, "session_id": "s", "model": "m"})
        );
        view.status = "failed";
        view.output = Some("part".into());
        view.error = Some("boom".into());
        let v = run_json(&view);
        assert_eq!(
            (&v["output"], &v["error"]),
            (&json!("part"), &json!("boom"))
        );
    }
}
