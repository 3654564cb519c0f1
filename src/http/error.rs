//! Error responses: every failure a handler can return, mapped to its compat JSON shape.
//!
//! Two families: OpenAI-style `{"error":{"message","type","code"}}` on the API server, and
//! the dashboard's `{"error","detail",...}`. 5xx bodies never carry internal text; the
//! detail is logged instead.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::agent::input::InputError;
use crate::lifecycle::Refusal;

/// Seconds a refused client is told to wait before retrying.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// A 503 with `body` and `Retry-After`: something we need is down for now.
pub fn unavailable(body: Value) -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    r
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
    /// Dashboard: something failed on our side; `log` is never sent.
    Internal { log: String },
    /// API server: a chat input refused by `agent::input`, OpenAI shape with its `param`.
    Input(InputError),
    /// A response already built by a handler, passed through unchanged.
    Passthrough(Box<Response>),
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body, retry_after) = match self {
            Self::Passthrough(response) => return *response,
            Self::OpenAi {
                status,
                message,
                kind,
                code,
                retry_after,
            } => (
                status,
                json!({"error": {"message": message, "type": kind, "code": code}}),
                retry_after,
            ),
            Self::Input(e) => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": e.message, "type": "invalid_request_error",
                    "param": e.param, "code": e.code}}),
                false,
            ),
            Self::Unauthenticated { reason, login_url } => {
                let mut body = json!({"error": "unauthenticated", "detail": "Unauthorized"});
                if let Some(r) = reason {
                    body["reason"] = Value::from(r);
                }
                if let Some(url) = login_url {
                    body["login_url"] = Value::from(url);
                }
                (StatusCode::UNAUTHORIZED, body, false)
            }
            Self::ProviderUnreachable(name) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": format!("Auth provider '{name}' unreachable")}),
                true,
            ),
            Self::BadRequest { error, detail } => (
                StatusCode::BAD_REQUEST,
                json!({"error": error, "detail": detail}),
                false,
            ),
            Self::Conflict { error, detail } => (
                StatusCode::CONFLICT,
                json!({"error": error, "detail": detail}),
                false,
            ),
            Self::Internal { log } => {
                tracing::error!(error = %log, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal_error", "detail": "Internal server error"}),
                    false,
                )
            }
        };
        let mut response = (status, Json(body)).into_response();
        if retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}
