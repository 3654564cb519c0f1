//! Error responses: the one error type every `http` handler returns, and every compat JSON
//! error shape, written here once.
//!
//! Three families: OpenAI-style `{"error":{"message","type","code"}}` on the API server
//! (and the last frame of a stream that failed, [`incomplete_stream`]); the dashboard's
//! `{"error","detail",...}`; and `{"error": message}` of the job API and the fire route
//! (SPEC §7, §8), which `/api/sessions` shares. The domain's errors (`CronError`,
//! `FireRefusal`, `Refusal`, `InputError`, `SessionError`, `ResponsesError`) become an
//! [`ApiError`] here and nowhere else. 5xx bodies never carry
//! internal text; the detail is logged instead.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::agent::input::InputError;
use crate::chronos::FireRefusal;
use crate::cron::CronError;
use crate::lifecycle::Refusal;
use crate::sessions::SessionError;
use crate::store::StoreError;

/// Seconds a refused client is told to wait before retrying.
pub const RETRY_AFTER_SECONDS: u64 = 5;

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The error event a stream sends as its last frame when the backend failed after the
/// answer began (`partial`: some text was already sent).
pub fn incomplete_stream(message: &str, partial: bool) -> Value {
    json!({"error": {"message": message, "type": "server_error",
        "code": "agent_incomplete", "partial": partial}})
}

/// A failed request.
#[derive(Debug)]
pub enum ApiError {
    /// API server, OpenAI shape.
    OpenAi {
        status: StatusCode,
        message: String,
        kind: &'static str,
        code: Option<&'static str>,
        retry_after: bool,
    },
    /// API server: a chat input refused by `agent::input`, OpenAI shape with its `param`.
    Input(InputError),
    /// Dashboard: no or bad credential.
    Unauthenticated {
        reason: Option<&'static str>,
        login_url: Option<String>,
    },
    /// Dashboard: an auth provider we need is unreachable.
    ProviderUnreachable(String),
    /// Dashboard: malformed request.
    BadRequest { error: &'static str, detail: String },
    /// Dashboard: the request is fine but the state on disk prevents it (409).
    Conflict { error: &'static str, detail: String },
    /// Dashboard: any other refusal in its `{"error","detail"}` shape (403, 404, 405,
    /// 429, 503...), with `Retry-After` seconds when set.
    Dashboard {
        status: StatusCode,
        error: &'static str,
        detail: String,
        retry_after: Option<u64>,
    },
    /// Dashboard: a refused WebSocket upgrade, `{"error":"unauthenticated","detail","reason"}`.
    Socket {
        status: StatusCode,
        reason: &'static str,
        detail: String,
    },
    /// Dashboard: something failed on our side; `log` is never sent.
    Internal { log: String },
    /// Job API and fire route: `{"error": message}`; a 503 carries `Retry-After`. Built
    /// from a [`CronError`] or a [`FireRefusal`], whose 5xx messages are fixed texts.
    Jobs { status: StatusCode, message: String },
}

impl ApiError {
    pub fn invalid_request(message: impl Into<String>, code: Option<&'static str>) -> Self {
        Self::OpenAi {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code,
            retry_after: false,
        }
    }

    pub fn invalid_api_key() -> Self {
        Self::OpenAi {
            status: StatusCode::UNAUTHORIZED,
            message: "Invalid API key".into(),
            kind: "invalid_request_error",
            code: Some("invalid_api_key"),
            retry_after: false,
        }
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::OpenAi {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body is larger than {limit} bytes"),
            kind: "invalid_request_error",
            code: Some("payload_too_large"),
            retry_after: false,
        }
    }

    /// An `Idempotency-Key` seen before with another body (422).
    pub fn idempotency_key_reused() -> Self {
        Self::OpenAi {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "this Idempotency-Key was already used with a different request body".into(),
            kind: "invalid_request_error",
            code: Some("idempotency_key_reused"),
            retry_after: false,
        }
    }

    /// A turn the gate did not admit.
    pub fn refused(r: Refusal) -> Self {
        let code = match r {
            Refusal::Draining | Refusal::Stopping => "gateway_draining",
            Refusal::NotReady => "gateway_starting",
        };
        Self::OpenAi {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("{r}; retry later"),
            kind: "service_unavailable",
            code: Some(code),
            retry_after: true,
        }
    }

    /// No such route, or no such method on it (API server): an OpenAI-shaped 404/405, so
    /// a client shows a reason rather than an empty body.
    pub fn no_route(status: StatusCode, method: &str, path: &str) -> Self {
        let (message, code) = if status == StatusCode::METHOD_NOT_ALLOWED {
            (
                format!("{method} is not allowed on {path}"),
                "method_not_allowed",
            )
        } else {
            (
                format!("no route {method} {path} on this server"),
                "not_found",
            )
        };
        Self::OpenAi {
            status,
            message,
            kind: "invalid_request_error",
            code: Some(code),
            retry_after: false,
        }
    }

    /// No such route, or no such method on it (dashboard shape): 404 `not_found` or
    /// 405 `method_not_allowed`.
    pub fn no_dashboard_route(status: StatusCode, method: &str, path: &str) -> Self {
        let (error, detail) = if status == StatusCode::METHOD_NOT_ALLOWED {
            (
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )
        } else {
            ("not_found", format!("no route {method} {path}"))
        };
        Self::Dashboard {
            status,
            error,
            detail,
            retry_after: None,
        }
    }

    /// `GET /v1/models/{id}` for a model this gateway does not serve.
    pub fn model_not_found(id: &str) -> Self {
        Self::OpenAi {
            status: StatusCode::NOT_FOUND,
            message: format!("The model '{id}' does not exist"),
            kind: "invalid_request_error",
            code: Some("model_not_found"),
            retry_after: false,
        }
    }

    /// A turn cut short by shutdown before it produced its answer.
    pub fn interrupted() -> Self {
        Self::OpenAi {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the turn was interrupted because the gateway is shutting down; retry later"
                .into(),
            kind: "service_unavailable",
            code: Some("turn_interrupted"),
            retry_after: true,
        }
    }

    /// A turn the backend reported as failed.
    pub fn turn_failed(message: String) -> Self {
        Self::OpenAi {
            status: StatusCode::BAD_GATEWAY,
            message,
            kind: "server_error",
            code: Some("agent_incomplete"),
            retry_after: false,
        }
    }

    /// A chat request's session refused (OpenAI shape): 400 `Invalid session ID`, 404
    /// `Unknown session ID`, 409 when a stored session is named without a new user message
    /// (the request is valid alone; the session's state makes it one with nothing to
    /// answer), a store outage 503 with `Retry-After`.
    pub fn chat_session(e: SessionError) -> Self {
        let openai = |status, message: String, kind, code, retry_after| Self::OpenAi {
            status,
            message,
            kind,
            code: Some(code),
            retry_after,
        };
        let message = e.to_string();
        match e {
            SessionError::InvalidId => openai(
                StatusCode::BAD_REQUEST,
                message,
                "invalid_request_error",
                "invalid_session_id",
                false,
            ),
            SessionError::NoNewMessage => openai(
                StatusCode::CONFLICT,
                message,
                "invalid_request_error",
                "no_new_message",
                false,
            ),
            SessionError::Unknown => openai(
                StatusCode::NOT_FOUND,
                message,
                "invalid_request_error",
                "session_not_found",
                false,
            ),
            SessionError::Store(e) => {
                tracing::error!(error = %e, "session store error");
                let (status, text) = store_failure(&e, "the session store");
                let down = status == StatusCode::SERVICE_UNAVAILABLE;
                let code = if down {
                    "store_unavailable"
                } else {
                    "internal_error"
                };
                openai(status, text, "server_error", code, down)
            }
        }
    }

    fn jobs(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Jobs {
            status,
            message: message.into(),
        }
    }

    /// The status, body and `Retry-After` seconds of this error.
    fn parts(self) -> (StatusCode, Value, Option<u64>) {
        let retry = |yes: bool| yes.then_some(RETRY_AFTER_SECONDS);
        match self {
            Self::OpenAi {
                status,
                message,
                kind,
                code,
                retry_after,
            } => (
                status,
                json!({"error": {"message": message, "type": kind, "code": code}}),
                retry(retry_after),
            ),
            Self::Input(e) => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": e.message, "type": "invalid_request_error",
                    "param": e.param, "code": e.code}}),
                None,
            ),
            Self::Unauthenticated { reason, login_url } => {
                let mut body = json!({"error": "unauthenticated", "detail": "Unauthorized"});
                if let Some(r) = reason {
                    body["reason"] = Value::from(r);
                }
                if let Some(url) = login_url {
                    body["login_url"] = Value::from(url);
                }
                (StatusCode::UNAUTHORIZED, body, None)
            }
            Self::ProviderUnreachable(name) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": format!("Auth provider '{name}' unreachable")}),
                retry(true),
            ),
            Self::BadRequest { error, detail } => {
                Self::dashboard(StatusCode::BAD_REQUEST, error, detail).parts()
            }
            Self::Conflict { error, detail } => {
                Self::dashboard(StatusCode::CONFLICT, error, detail).parts()
            }
            Self::Dashboard {
                status,
                error,
                detail,
                retry_after,
            } => (
                status,
                json!({"error": error, "detail": detail}),
                retry_after,
            ),
            Self::Socket {
                status,
                reason,
                detail,
            } => (
                status,
                json!({"error": "unauthenticated", "detail": detail, "reason": reason}),
                None,
            ),
            Self::Internal { log } => {
                tracing::error!(error = %log, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal_error", "detail": "Internal server error"}),
                    None,
                )
            }
            Self::Jobs { status, message } => (
                status,
                json!({"error": message}),
                retry(status == StatusCode::SERVICE_UNAVAILABLE),
            ),
        }
    }

    fn dashboard(status: StatusCode, error: &'static str, detail: String) -> Self {
        Self::Dashboard {
            status,
            error,
            detail,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body, retry_after) = self.parts();
        let response = (status, Json(body)).into_response();
        match retry_after {
            Some(seconds) => with_retry_after(response, seconds),
            None => response,
        }
    }
}

/// A cron failure in the job API's shape: the 400 names the field, an unknown job is
/// `Job not found` (compat), a store outage is a 503 to retry, anything else a 500.
impl From<CronError> for ApiError {
    fn from(e: CronError) -> Self {
        match e {
            CronError::Invalid(message) => Self::jobs(StatusCode::BAD_REQUEST, message),
            CronError::NotFound(_) => Self::jobs(StatusCode::NOT_FOUND, "Job not found"),
            CronError::Draining => Self::jobs(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            CronError::Store(StoreError::Unavailable(detail)) => {
                tracing::error!(%detail, "store unavailable");
                Self::jobs(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the job store is unavailable; retry later",
                )
            }
            CronError::Store(e) => {
                tracing::error!(error = %e, "job store error");
                Self::jobs(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// The 5xx of a store failure: an outage is a 503 to retry, anything else a 500; the
/// texts are fixed (`what` names the store), never the internal detail.
fn store_failure(e: &StoreError, what: &str) -> (StatusCode, String) {
    match e {
        StoreError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{what} is unavailable; retry later"),
        ),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
    }
}

/// A refused `/api/sessions` request, in the job API's `{"error": message}` shape (the
/// route family both listeners share): 400 `Invalid session ID`, 404 `Unknown session ID`,
/// a store outage 503 with `Retry-After`.
impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let message = e.to_string();
        match e {
            SessionError::InvalidId => Self::jobs(StatusCode::BAD_REQUEST, message),
            SessionError::Unknown => Self::jobs(StatusCode::NOT_FOUND, message),
            SessionError::NoNewMessage => Self::jobs(StatusCode::CONFLICT, message),
            SessionError::Store(e) => {
                tracing::error!(error = %e, "session store error");
                let (status, text) = store_failure(&e, "the session store");
                Self::jobs(status, text)
            }
        }
    }
}

/// A refused fire (SPEC §8): 401 for any token problem, 503 to retry when no key can be
/// had, 400 naming the body's problem, and `cron`'s refusals as in the job API.
impl From<FireRefusal> for ApiError {
    fn from(r: FireRefusal) -> Self {
        match r {
            FireRefusal::BadToken => Self::jobs(StatusCode::UNAUTHORIZED, "invalid fire token"),
            FireRefusal::NoKey => Self::jobs(
                StatusCode::SERVICE_UNAVAILABLE,
                "no fire-token key can be obtained right now; retry later",
            ),
            FireRefusal::BadBody(message) => Self::jobs(StatusCode::BAD_REQUEST, message),
            FireRefusal::Cron(e) => e.into(),
        }
    }
}

mod body;
mod responses;
mod runs;
#[cfg(test)]
mod tests;
