//! `POST /v1/chat/completions`: the OpenAI-compatible chat turn, streamed (SSE, with the
//! optional `include_usage` chunk) or collected, in its stored session (given in
//! `X-Hermes-Session-Id` or derived; `sessions` decides the history and records the turn),
//! with `Idempotency-Key`. The turn itself is `turn`'s; this maps its steps to the wire.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::ApiError;
use super::idempotency::Idempotency;
use crate::agent::{Message, TurnRequest, Usage};
use crate::sessions::{RecordedTurn, Recording, SessionError};
use crate::state::AppState;
use crate::turn::{End, Step};

/// Header carrying the conversation's session id, in and out.
const SESSION_HEADER: &str = "x-hermes-session-id";
/// The same, as documented (compat spelling).
pub(super) const SESSION_HEADER_NAME: &str = "X-Hermes-Session-Id";
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

/// The client's `X-Hermes-Session-Id`, if it sent one: an empty value (whitespace around a
/// value never reaches us) counts as none, as in Hermes; a value that is not text is an
/// invalid id.
fn given_session(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get(SESSION_HEADER).map(HeaderValue::to_str) {
        None | Some(Ok("")) => Ok(None),
        Some(Ok(id)) => Ok(Some(id)),
        Some(Err(_)) => Err(ApiError::chat_session(SessionError::InvalidId)),
    }
}

/// One chat turn through the gate and the backend, streamed (SSE) or not.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "api", request_body = ChatCompletionRequest,
    params(
        ("X-Hermes-Session-Id" = Option<String>, Header, nullable = false, pattern = "^(api-[0-9a-f]{16}|[0-9]{8}_[0-9]{6}_[0-9a-f]{6})$", description = "the conversation's stored session (empty: none): when stored, its history replaces the request's earlier messages (send only the new message); when not stored, a request without an assistant message begins it (an `api-` id only if it is the request's own derived one), else it is a 404. Absent: derived from the conversation's start. Answered in the same header"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~ ]{1,255}$", description = "non-streaming only: a retry with the same key and body gets the first answer without a second turn"),
    ),
    responses(
        (status = 200, description = "the answer",
            headers(("X-Hermes-Session-Id" = String, description = "the conversation's session id")),
            content(
                (super::schemas::ChatCompletion = "application/json"),
                (super::schemas::SseEvent = "text/event-stream"),
            )),
        (status = 400, description = "invalid request: the message names the field; `param` the message or part, `code` the kind (`invalid_session_id`: `Invalid session ID`)", body = super::schemas::ChatRequestError),
        (status = 404, description = "session_not_found: `Unknown session ID`, a given session that is not stored, named by a request that carries earlier turns or with an `api-` id it does not derive", body = super::schemas::OpenAiError),
        (status = 409, description = "no_new_message: a stored session is named but the request has no user message after its last assistant message", body = super::schemas::OpenAiError),
        (status = 413, description = "body over 10 MB", body = super::schemas::OpenAiError),
        (status = 422, description = "Idempotency-Key reused with a different body", body = super::schemas::OpenAiError),
        (status = 502, description = "the backend failed before producing any text", body = super::schemas::OpenAiError),
        (status = 503, description = "gateway_draining (or starting, or the turn was cut by shutdown), or store_unavailable (a given session cannot be read), with Retry-After",
            headers(("Retry-After" = u64, description = "seconds")), body = super::schemas::OpenAiError),
    ))]
pub async fn chat_completions(
    State(s): State<AppState>,
    Extension(idempotency): Extension<Arc<Idempotency>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::api_key::check(&s, &headers)?;
    let body = body?;
    let req = parse_chat(&body)?;
    let stream = req.stream;
    let model = req
        .model
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| s.config.api_server.model_name.clone());
    let opened = s
        .sessions
        .open(given_session(&headers)?, req.messages)
        .await
        .map_err(ApiError::chat_session)?;
    let session = opened.id.clone();
    let turn = Turn {
        model,
        messages: opened.messages,
        session: opened.id,
        recording: opened.recording,
        include_usage: req.include_usage,
    };
    let idempotency_key = if stream {
        None
    } else {
        super::idempotency::header(&headers)?
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
    /// Appends the turn to its session when it completes.
    recording: Recording,
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    include_usage: bool,
}

/// A turn started on the backend, with what its answer reports.
struct Started {
    meta: ChunkMeta,
    running: RecordedTurn,
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
    let running = turn.recording.around(admission.start(TurnRequest {
        messages: turn.messages,
        model: turn.model,
        session_id: turn.session,
        turn_id: meta.id.clone(),
    }));
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
    running: RecordedTurn,
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
    running: Option<RecordedTurn>,
    sent_role: bool,
    sent_text: bool,
    usage: Option<StreamUsage>,
}

/// Streams the turn as SSE. The turn lives in the stream: it ends when the last frame is
/// produced, or (counted as interrupted) when the client goes away and the body is dropped.
/// A completed turn is recorded in its session before its last frame.
/// With `usage`, a completed stream sends a usage chunk before `[DONE]`.
fn stream_response(meta: ChunkMeta, running: RecordedTurn, usage: Option<StreamUsage>) -> Response {
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
