//! The API server: health, models and OpenAI-compatible chat completions.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use std::sync::Arc;

use super::idempotency::Idempotency;
use super::{ApiError, BODY_LIMIT};
use crate::agent::{Message, TurnRequest, Usage};
use crate::auth::{bearer_token, constant_time_eq};
use crate::lifecycle::StatusRecord;
use crate::state::AppState;
use crate::turn::{End, Step};

/// Header carrying the conversation's session id, in and out.
const SESSION_HEADER: &str = "x-hermes-session-id";
/// The same, as documented (compat spelling).
const SESSION_HEADER_NAME: &str = "X-Hermes-Session-Id";
/// Header making a non-streaming request safe to retry.
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The API server's routes; `docs` serves its OpenAPI document (built by `openapi` from
/// these handlers, so passed in rather than imported).
pub fn router(state: AppState, docs: Router<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(v1_health))
        .route("/health/detailed", get(health_detailed))
        .route("/health/ready", get(ready))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/capabilities", get(capabilities))
        .route(
            "/v1/chat/completions",
            post(chat_completions).layer(Extension(Arc::new(Idempotency::default()))),
        )
        .merge(docs)
        // The fire token is this route's credential, never API_SERVER_KEY (SPEC §8).
        .merge(super::fire::routes())
        .merge(
            super::jobs::routes().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_api_key,
            )),
        )
        // Unknown routes and methods answer in the OpenAI shape, never with an empty body
        // (set after every route, so it covers them all).
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// A JSON 404 for a path this server does not serve.
pub(super) async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::no_route(StatusCode::NOT_FOUND, method.as_str(), uri.path())
}

/// A JSON 405 for a method a path does not take.
pub(super) async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::no_route(StatusCode::METHOD_NOT_ALLOWED, method.as_str(), uri.path())
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    /// Always `hermes-agent`.
    #[schema(value_type = String, example = "hermes-agent")]
    platform: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct DetailedHealth {
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    #[schema(value_type = String, example = "hermes-agent")]
    platform: &'static str,
    pid: u32,
    #[serde(flatten)]
    record: StatusRecord,
}

/// Liveness (compat shape).
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        platform: "hermes-agent",
    })
}

/// Liveness (compat shape), under `/v1`.
#[utoipa::path(get, path = "/v1/health", tag = "health", responses((status = 200, description = "alive", body = Health)))]
pub async fn v1_health() -> Json<Health> {
    health().await
}

/// Liveness plus the status record and pid.
#[utoipa::path(get, path = "/health/detailed", tag = "health", responses((status = 200, description = "alive, with the status record", body = DetailedHealth)))]
pub async fn health_detailed(State(s): State<AppState>) -> Json<DetailedHealth> {
    Json(DetailedHealth {
        status: "ok",
        platform: "hermes-agent",
        pid: s.info.pid,
        record: StatusRecord::build(&s.gate.snapshot(), &s.info),
    })
}

/// `GET /health/ready`: whether this gateway takes new turns now.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// The lifecycle state (`starting|running|draining|stopping|stopped|startup_failed`).
    #[schema(value_type = String, example = "running")]
    status: &'static str,
    /// True only while `running`.
    ready: bool,
    /// In-flight turns.
    active_agents: usize,
}

/// Readiness for load balancers: 200 only while `running`, else 503 with the state. Not
/// the drain mechanism: a drain is begun with `POST /api/gateway/drain`.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "running: new turns are admitted", body = Readiness),
              (status = 503, description = "not running (starting, draining, stopping, ...)", body = Readiness)))]
pub async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let snap = s.gate.snapshot();
    let ready = snap.state == crate::lifecycle::GatewayState::Running;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: snap.state.as_str(),
            ready,
            active_agents: snap.active_agents,
        }),
    )
}

/// Guards API-server routes other than chat (the job API) with `API_SERVER_KEY`.
async fn require_api_key(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match check_api_key(&s, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check_api_key(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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

/// The one model this gateway serves.
#[utoipa::path(get, path = "/v1/models", tag = "api",
    responses((status = 200, description = "OpenAI model list", body = super::schemas::ModelList)))]
pub async fn models(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_api_key(&s, &headers)?;
    Ok(Json(json!({"object": "list", "data": [model_object(&s)]})))
}

fn model_object(s: &AppState) -> Value {
    json!({
        "id": s.config.api_server.model_name,
        "object": "model",
        "created": s.info.start_time.as_second(),
        "owned_by": "hermes",
    })
}

/// The advertised model by id; any other id is a 404 `model_not_found`.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "api",
    params(("id" = String, Path, description = "the model id (may contain `/`, e.g. `org/model`)")),
    responses((status = 200, description = "OpenAI model object", body = super::schemas::Model),
              (status = 404, description = "model_not_found: not the model this gateway serves", body = super::schemas::OpenAiError)))]
pub async fn model(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_api_key(&s, &headers)?;
    if id != s.config.api_server.model_name {
        return Err(ApiError::model_not_found(&id));
    }
    Ok(Json(model_object(&s)))
}

/// What this server offers (compat shape): auth, the model, features and endpoints, so
/// a UI or orchestrator need not guess.
#[utoipa::path(get, path = "/v1/capabilities", tag = "api",
    responses((status = 200, description = "hermes.api_server.capabilities", body = super::schemas::Capabilities)))]
pub async fn capabilities(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_api_key(&s, &headers)?;
    let endpoint = |method: &str, path: &str| json!({"method": method, "path": path});
    Ok(Json(json!({
        "object": "hermes.api_server.capabilities",
        "platform": "hermes-agent",
        "model": s.config.api_server.model_name,
        "auth": {"type": "bearer", "required": s.config.secrets.api_server_key.is_some()},
        "runtime": {
            "mode": "server_agent",
            "tool_execution": "server",
            "split_runtime": false,
            "backend": s.config.agent.backend.as_str(),
        },
        "features": {
            "chat_completions": true,
            "chat_completions_streaming": true,
            "stream_usage": true,
            "session_continuity_header": SESSION_HEADER_NAME,
            "idempotency_header": "Idempotency-Key",
            "cron_jobs": true,
            "cors": !s.config.api_server.cors_origins.is_empty(),
            "limits": {
                "body_bytes": BODY_LIMIT,
                "text_part_bytes": crate::agent::input::MAX_TEXT_PART_BYTES,
                "content_parts": crate::agent::input::MAX_PARTS,
            },
        },
        "endpoints": {
            "health": endpoint("GET", "/health"),
            "health_detailed": endpoint("GET", "/health/detailed"),
            "models": endpoint("GET", "/v1/models"),
            "model": endpoint("GET", "/v1/models/{id}"),
            "capabilities": endpoint("GET", "/v1/capabilities"),
            "chat_completions": endpoint("POST", "/v1/chat/completions"),
            "jobs": endpoint("GET", "/api/jobs"),
            "job_create": endpoint("POST", "/api/jobs"),
            "job": endpoint("GET", "/api/jobs/{id}"),
            "cron_fire": endpoint("POST", "/api/cron/fire"),
        },
    })))
}

/// `POST /v1/chat/completions` body (the fields the gateway reads; others are ignored).
// `messages` is read as JSON and checked by `agent::input::chat_messages`, so each
// refusal names its message and part; `schemas::ChatMessages` documents what it
// accepts.
#[derive(Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// Echoed back; empty, null or absent = `gateway.api_server.model_name`.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    #[schema(value_type = super::schemas::ChatMessages, required = true)]
    messages: Option<Value>,
    /// Stream the answer as server-sent `chat.completion.chunk` events ending in `[DONE]`.
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

/// `stream_options`: with `include_usage`, a stream ends with a usage chunk.
#[derive(Deserialize, ToSchema)]
pub struct StreamOptions {
    /// End the stream with a chunk carrying `usage` (and no choices) before `[DONE]`.
    #[serde(default)]
    include_usage: Option<bool>,
}

/// A chat request, checked: what the turn runs on.
struct ChatRequest {
    model: Option<String>,
    messages: Vec<Message>,
    stream: bool,
    include_usage: bool,
}

fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let req: ChatCompletionRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_request(format!("invalid request body: {e}"), None))?;
    let messages =
        crate::agent::input::chat_messages(req.messages.as_ref()).map_err(ApiError::Input)?;
    Ok(ChatRequest {
        model: req.model,
        messages,
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// The conversation's session id: the client's `X-Hermes-Session-Id`, else one derived from
/// the conversation's start (its system messages and first user message), so a client
/// resending a growing conversation keeps one session without sending an id.
fn session_id(headers: &HeaderMap, messages: &[Message]) -> Result<String, ApiError> {
    if let Some(v) = headers.get(SESSION_HEADER) {
        let v = v.to_str().map(str::trim).unwrap_or_default();
        if v.is_empty() || v.len() > 128 || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid_request(
                "X-Hermes-Session-Id must be 1 to 128 visible ASCII characters",
                Some("invalid_session_id"),
            ));
        }
        return Ok(v.to_owned());
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let start = messages
        .iter()
        .filter(|m| m.role == "system" || m.role == "developer")
        .chain(messages.iter().find(|m| m.role == "user"));
    for m in start {
        for part in [m.role.as_bytes(), b"\0", m.content.as_bytes(), b"\0"] {
            ctx.update(part);
        }
    }
    let digest = ctx.finish();
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("api-{hex}"))
}

/// One chat turn through the gate and the backend, streamed (SSE) or not.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "api", request_body = ChatCompletionRequest,
    params(
        ("X-Hermes-Session-Id" = Option<String>, Header, pattern = "^[!-~]{1,128}$", description = "the conversation's session id (1 to 128 visible ASCII characters); derived from the conversation's start when absent, and answered in the same header"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~ ]{1,255}$", description = "non-streaming only: a retry with the same key and body gets the first answer without a second turn"),
    ),
    responses(
        (status = 200, description = "the answer",
            headers(("X-Hermes-Session-Id" = String, description = "the conversation's session id")),
            content(
                (super::schemas::ChatCompletion = "application/json"),
                (super::schemas::SseEvent = "text/event-stream"),
            )),
        (status = 400, description = "invalid request: the message names the field; `param` the message or part, `code` the kind", body = super::schemas::ChatRequestError),
        (status = 413, description = "body over 10 MB", body = super::schemas::OpenAiError),
        (status = 422, description = "Idempotency-Key reused with a different body", body = super::schemas::OpenAiError),
        (status = 502, description = "the backend failed before producing any text", body = super::schemas::OpenAiError),
        (status = 503, description = "gateway_draining (or starting, or the turn was cut by shutdown), with Retry-After",
            headers(("Retry-After" = u64, description = "seconds")), body = super::schemas::OpenAiError),
    ))]
pub async fn chat_completions(
    State(s): State<AppState>,
    Extension(idempotency): Extension<Arc<Idempotency>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_api_key(&s, &headers)?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(BODY_LIMIT),
        _ => ApiError::invalid_request(format!("cannot read request body: {e}"), None),
    })?;
    let req = parse_chat(&body)?;
    let stream = req.stream;
    let model = req
        .model
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| s.config.api_server.model_name.clone());
    let session = session_id(&headers, &req.messages)?;
    let turn = Turn {
        model,
        messages: req.messages,
        session: session.clone(),
        include_usage: req.include_usage,
    };
    let idempotency_key = match headers.get(IDEMPOTENCY_HEADER) {
        Some(v) if !stream => Some(v.to_str().map_err(|_| {
            ApiError::invalid_request("Idempotency-Key must be visible ASCII", None)
        })?),
        _ => None,
    };
    let mut response = match idempotency_key {
        Some(key) => idempotency.run(key, &body, || completed(&s, turn)).await?,
        None if stream => streamed(&s, turn)?,
        None => Json(completed(&s, turn).await?).into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&session) {
        response.headers_mut().insert(SESSION_HEADER, v);
    }
    Ok(response)
}

/// A validated chat request, ready to run.
struct Turn {
    model: String,
    messages: Vec<Message>,
    session: String,
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    include_usage: bool,
}

/// A turn started on the backend, with what its answer reports.
struct Started {
    meta: ChunkMeta,
    running: crate::turn::Turn,
    prompt_tokens: u64,
}

/// Admits the turn through the driver and starts it on the backend.
fn start(s: &AppState, turn: Turn) -> Result<Started, ApiError> {
    let admission = s.turns.admit(&turn.session).map_err(ApiError::refused)?;
    let meta = ChunkMeta {
        id: format!("chatcmpl-{}", crate::ids::random_hex128()),
        created: s.clock.now().as_second(),
        model: turn.model.clone(),
    };
    let prompt_tokens = turn.messages.iter().map(|m| count_tokens(&m.content)).sum();
    let running = admission.start(TurnRequest {
        messages: turn.messages,
        model: turn.model,
        session_id: turn.session,
        turn_id: meta.id.clone(),
    });
    Ok(Started {
        meta,
        running,
        prompt_tokens,
    })
}

/// Runs the turn and answers it as an SSE stream.
fn streamed(s: &AppState, turn: Turn) -> Result<Response, ApiError> {
    let include_usage = turn.include_usage;
    let started = start(s, turn)?;
    let usage = include_usage.then_some(StreamUsage {
        prompt_tokens: started.prompt_tokens,
        completion_tokens: 0,
    });
    Ok(stream_response(started.meta, started.running, usage))
}

/// Runs the turn to its end and answers it as one completion.
async fn completed(s: &AppState, turn: Turn) -> Result<Value, ApiError> {
    let started = start(s, turn)?;
    complete(started.meta, started.running, started.prompt_tokens).await
}

/// A rough token count for `usage` when the backend reports none (whitespace-separated words).
fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

struct ChunkMeta {
    id: String,
    created: i64,
    model: String,
}

async fn complete(
    meta: ChunkMeta,
    running: crate::turn::Turn,
    prompt_tokens: u64,
) -> Result<Value, ApiError> {
    let done = running.collect().await;
    let failure = match done.end {
        End::Completed => None,
        End::Failed(message) if done.text.is_empty() => return Err(ApiError::turn_failed(message)),
        End::Failed(message) => Some(message),
        End::Interrupted(_) => return Err(ApiError::interrupted()),
    };
    let text = done.text;
    let usage = done.usage.unwrap_or(Usage {
        prompt_tokens,
        completion_tokens: count_tokens(&text),
    });
    let mut body = json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": if failure.is_some() { "error" } else { "stop" },
        }],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    });
    // A failed turn that produced text keeps it, flagged as incomplete.
    if let Some(message) = failure {
        body["hermes"] = json!({"incomplete": true, "error": message});
    }
    Ok(body)
}

fn chunk(meta: &ChunkMeta, delta: Value, finish_reason: Option<&str>) -> Bytes {
    let v = json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    });
    Bytes::from(format!("data: {v}\n\n"))
}

/// Token counts for the final usage chunk of a stream (`stream_options.include_usage`).
struct StreamUsage {
    prompt_tokens: u64,
    /// Counted from the deltas, for a backend that reports nothing.
    completion_tokens: u64,
}

impl StreamUsage {
    /// The usage chunk: no choices, the turn's token counts (OpenAI's shape); what the
    /// backend reported wins over the counts.
    fn chunk(&self, meta: &ChunkMeta, reported: Option<Usage>) -> Bytes {
        let u = reported.unwrap_or(Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
        });
        let v = json!({
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "choices": [],
            "usage": {
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.prompt_tokens + u.completion_tokens,
            },
        });
        Bytes::from(format!("data: {v}\n\n"))
    }
}

struct SseTurn {
    meta: ChunkMeta,
    /// `None` once the last frame was produced.
    running: Option<crate::turn::Turn>,
    sent_role: bool,
    sent_text: bool,
    usage: Option<StreamUsage>,
}

/// Streams the turn as SSE. The turn lives in the stream: it ends when the last frame is
/// produced, or (counted as interrupted) when the client goes away and the body is dropped.
/// With `usage`, a completed stream sends a usage chunk before `[DONE]`.
fn stream_response(
    meta: ChunkMeta,
    running: crate::turn::Turn,
    usage: Option<StreamUsage>,
) -> Response {
    let state = SseTurn {
        meta,
        running: Some(running),
        sent_role: false,
        sent_text: false,
        usage,
    };
    let frames = stream::unfold(state, |mut st| async move {
        let running = st.running.as_mut()?;
        if !st.sent_role {
            st.sent_role = true;
            let frame = chunk(&st.meta, json!({"role": "assistant", "content": ""}), None);
            return Some((Ok::<_, std::convert::Infallible>(frame), st));
        }
        let end = match running.next().await {
            Step::Delta(text) => {
                st.sent_text |= !text.is_empty();
                if let Some(u) = &mut st.usage {
                    u.completion_tokens += count_tokens(&text);
                }
                return Some((Ok(chunk(&st.meta, json!({"content": text}), None)), st));
            }
            Step::End(end) => end,
        };
        let reported = running.usage();
        st.running = None;
        let frame = match end {
            End::Completed => {
                let mut last = chunk(&st.meta, json!({}), Some("stop")).to_vec();
                if let Some(u) = &st.usage {
                    last.extend_from_slice(&u.chunk(&st.meta, reported));
                }
                last.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(last)
            }
            End::Failed(message) => {
                // Text already sent stays with the client; the last chunk marks it incomplete.
                let mut last = chunk(&st.meta, json!({}), Some("error")).to_vec();
                let err = super::error::incomplete_stream(&message, st.sent_text);
                last.extend_from_slice(format!("data: {err}\n\ndata: [DONE]\n\n").as_bytes());
                Bytes::from(last)
            }
            // Cut by shutdown (or no outcome): end the stream without [DONE]; the turn is
            // recorded interrupted.
            End::Interrupted(_) => return None,
        };
        Some((Ok(frame), st))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_body_validation_names_the_problem() {
        // (body, fragment, param): the body's framing is checked here, the messages by
        // `agent::input` (whose table covers every rule), mapped with their `param`.
        let table: &[(&str, &str, Option<&str>)] = &[
            ("", "invalid request body", None),
            ("{", "invalid request body", None),
            ("{}", "messages: must be a non-empty list", Some("messages")),
            (r#"{"messages": []}"#, "non-empty list", Some("messages")),
            (
                r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
                "messages[0].role",
                Some("messages[0].role"),
            ),
            (
                r#"{"messages": [{"role": "user", "content": 5}]}"#,
                "messages[0].content",
                Some("messages[0].content"),
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#,
                "invalid request body",
                None,
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": 1}}"#,
                "invalid request body",
                None,
            ),
        ];
        for (body, fragment, param) in table {
            let (message, got_param) = match parse_chat(body.as_bytes()) {
                Err(ApiError::OpenAi {
                    message, status, ..
                }) => {
                    assert_eq!(status, StatusCode::BAD_REQUEST);
                    (message, None)
                }
                Err(ApiError::Input(e)) => (e.message, Some(e.param)),
                Err(other) => panic!("{body}: unexpected {other:?}"),
                Ok(_) => panic!("{body}: accepted"),
            };
            assert!(message.contains(fragment), "{body}: {message}");
            assert_eq!(got_param.as_deref(), *param, "{body}");
        }
    }

    #[test]
    fn stream_options_include_usage_is_read() {
        let req = parse_chat(
            br#"{"messages":[{"role":"user","content":"a"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(req.stream && req.include_usage);
        let req = parse_chat(br#"{"messages":[{"role":"user","content":"a"}]}"#).unwrap();
        assert!(!req.stream && !req.include_usage);
    }
}
