//! `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}` (SPEC §11): each checks the
//! key, calls `responses::Responses` — which checks the body, reads the chain, runs the
//! turn and keeps the response — and maps the answer to OpenAI's Responses wire (`wire`):
//! the response object, or its streamed event sequence. Every answer is counted by route
//! and outcome.

mod wire;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::stream;
use serde_json::{Value, json};

use super::ApiError;
use super::idempotency::Idempotency;
use crate::responses::{Progress, Request, Running};
use crate::state::AppState;

/// The Responses routes, each answer counted by route and outcome (merged by `api::router`).
pub fn routes(state: &AppState) -> Router<AppState> {
    let metered =
        axum::middleware::from_fn_with_state(state.metrics.clone(), super::route_metrics::count);
    Router::new()
        .route(
            "/v1/responses",
            post(create).layer(Extension(Arc::new(Idempotency::default()))),
        )
        .route("/v1/responses/{id}", get(retrieve).delete(remove))
        .route_layer(metered)
}

/// One response: a turn continuing its chain (or conversation), answered whole or
/// streamed as OpenAI's Responses events, and kept unless `store` is false.
#[utoipa::path(post, path = "/v1/responses", tag = "api", operation_id = "create_response", request_body = super::schemas::responses::CreateResponse,
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~ ]{1,255}$", description = "non-streaming only: a retry with the same key, input, instructions, previous response, conversation, model and tools gets the first answer without a second turn"),
    ),
    responses(
        (status = 200, description = "the response, or (`stream: true`) its events: `response.created`, `response.in_progress`, `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, then `response.completed`, `response.failed` or `response.incomplete`, with increasing `sequence_number`",
            content(
                (super::schemas::responses::ResponseObject = "application/json"),
                (super::schemas::SseEvent = "text/event-stream"),
            )),
        (status = 400, description = "invalid request: the message names the field; `param` the item or part, `code` the kind", body = super::schemas::responses::ResponseRequestError),
        (status = 404, description = "response_not_found: `previous_response_id` names a response that is not stored", body = super::schemas::OpenAiError),
        (status = 413, description = "body over 10 MB", body = super::schemas::OpenAiError),
        (status = 422, description = "Idempotency-Key reused with a different request", body = super::schemas::OpenAiError),
        (status = 502, description = "the backend failed before producing any text", body = super::schemas::OpenAiError),
        (status = 503, description = "gateway_draining (or starting, or the turn was cut by shutdown), or the store is unavailable, with Retry-After",
            headers(("Retry-After" = u64, description = "seconds")), body = super::schemas::OpenAiError),
    ))]
pub async fn create(
    State(s): State<AppState>,
    Extension(idempotency): Extension<Arc<Idempotency>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::api_key::check(&s, &headers)?;
    let body = body?;
    let key = super::idempotency::header(&headers)?;
    if let Some(key) = key {
        super::idempotency::check_key(key)?;
    }
    let request = Request::parse(&body)?;
    if request.stream {
        return Ok(streamed(s.responses.start(request).await?));
    }
    match key {
        Some(key) => {
            let fingerprint = request.fingerprint.clone();
            idempotency
                .run(key, &fingerprint, || answer(&s, request))
                .await
        }
        None => Ok(Json(answer(&s, request).await?).into_response()),
    }
}

/// Runs the response to its end and answers it whole.
async fn answer(s: &AppState, request: Request) -> Result<Value, ApiError> {
    let record = s.responses.start(request).await?.finish().await?;
    Ok(wire::object(&record))
}

/// A stored response (retrieving it counts as using it, for the store's bound).
#[utoipa::path(get, path = "/v1/responses/{id}", tag = "api", operation_id = "retrieve_response",
    params(("id" = String, Path, description = "the response's id (`resp_…`)")),
    responses(
        (status = 200, description = "the response as it was answered", body = super::schemas::responses::ResponseObject),
        (status = 404, description = "Response not found: <id> (never stored, deleted, or dropped by the store's bound)", body = super::schemas::OpenAiError),
        (status = 503, description = "the store is unavailable; Retry-After", body = super::schemas::OpenAiError),
    ))]
pub async fn retrieve(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    super::api_key::check(&s, &headers)?;
    Ok(Json(wire::object(&s.responses.get(&id).await?)))
}

/// Forgets a stored response (and a conversation whose latest response it is).
#[utoipa::path(delete, path = "/v1/responses/{id}", tag = "api", operation_id = "delete_response",
    params(("id" = String, Path, description = "the response's id (`resp_…`)")),
    responses(
        (status = 200, description = "deleted", body = super::schemas::responses::ResponseDeleted),
        (status = 404, description = "Response not found: <id>", body = super::schemas::OpenAiError),
        (status = 503, description = "the store is unavailable; Retry-After", body = super::schemas::OpenAiError),
    ))]
pub async fn remove(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    super::api_key::check(&s, &headers)?;
    s.responses.delete(&id).await?;
    Ok(Json(
        json!({"id": id, "object": "response", "deleted": true}),
    ))
}

struct Sse {
    /// `None` once the last event was produced.
    running: Option<Running>,
    events: wire::Events,
    opened: bool,
}

/// Streams the response's events. The turn lives in the stream: it ends with the last
/// event, or (counted interrupted, nothing kept) when the client goes away.
fn streamed(running: Running) -> Response {
    let state = Sse {
        running: Some(running),
        events: wire::Events::default(),
        opened: false,
    };
    let frames = stream::unfold(state, |mut st| async move {
        let running = st.running.as_mut()?;
        if !st.opened {
            st.opened = true;
            let frame = st.events.opening(running.record());
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from(frame)), st));
        }
        loop {
            match running.next().await {
                Progress::Delta(text) if text.is_empty() => {}
                Progress::Delta(text) => {
                    let frame = st.events.delta(running.record(), &text);
                    return Some((Ok(Bytes::from(frame)), st));
                }
                Progress::End(record) => {
                    st.running = None;
                    return Some((Ok(Bytes::from(st.events.closing(&record))), st));
                }
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
