//! The dashboard listener: status, drain control, metrics, the OpenAPI document, and the
//! auth gate in front of them. The gate reads the request's facts, asks `auth::Access`
//! (which decides and audits: token routes first, then public paths, then sessions) and
//! maps its decision to a response.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AsHeaderName;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::ApiError;
use crate::auth::access::{Caller, Challenge, Decision, RouteRequest};
use crate::auth::sessions::Session;
use crate::auth::{TokenPrincipal, bearer_token};
use crate::clock::iso;
use crate::lifecycle::{DrainDetail, StatusRecord};
use crate::metrics::{Format, LiveGauges};
use crate::state::AppState;

/// Header carrying the loopback-mode session token (compat).
const SESSION_TOKEN_HEADER: &str = "x-hermes-session-token";
/// Where gated mode sends a browser that has no session (under the public path prefix).
const LOGIN_URL: &str = "/login";
/// Paths anyone may call, whatever the mode.
/// `/api/cron/fire` checks its own token (SPEC §8).
const PUBLIC_PATHS: [&str; 5] = [
    "/api/status",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/api/cron/fire",
];

/// The dashboard's routes behind its auth gate; `docs` serves its OpenAPI document (built
/// by `openapi` from these handlers, so passed in rather than imported).
pub fn router(state: AppState, docs: Router<AppState>) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/connection", get(super::connection::connection))
        .route("/health/ready", get(super::api::ready))
        .route("/api/gateway/drain", get(drain_status).post(drain_action))
        .route("/api/gateway/restart", post(restart))
        .route("/metrics", get(metrics))
        .merge(docs)
        .merge(super::jobs::routes())
        .merge(super::sessions::routes())
        .merge(super::fire::routes())
        .merge(super::session::routes())
        .merge(super::ws::routes())
        .merge(super::page::routes())
        // Unknown routes and methods answer in JSON (behind the gate, like any route).
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth_gate,
        ))
        .with_state(state)
}

/// A JSON 404 (dashboard shape) for a path the dashboard does not serve.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::no_dashboard_route(StatusCode::NOT_FOUND, method.as_str(), uri.path())
}

/// A JSON 405 (dashboard shape) for a method a path does not take.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::no_dashboard_route(StatusCode::METHOD_NOT_ALLOWED, method.as_str(), uri.path())
}

fn client_ip(s: &AppState, parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| super::origin::client_addr(s, c.0, &parts.headers).to_string())
        .unwrap_or_default()
}

/// Lets a request through to its route or answers it; `auth::Access` decides (and audits).
async fn auth_gate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let ip = client_ip(&s, &parts);
    let decision = s.access.route(&route_request(&s, &parts, &ip)).await;
    match decision {
        Decision::Allow(caller) => {
            match caller {
                Caller::Anonymous => {}
                Caller::Token(principal) => {
                    parts.extensions.insert(principal);
                }
                Caller::Session(session) => {
                    parts.extensions.insert(session);
                }
            }
            next.run(Request::from_parts(parts, body)).await
        }
        Decision::ForbiddenHost => forbidden(
            "forbidden_host",
            "this dashboard page is served only under its own host names (set dashboard.public_url for another)",
        ),
        Decision::ForbiddenOrigin => forbidden(
            "forbidden_origin",
            "this request must come from the dashboard's own origin",
        ),
        Decision::Unauthenticated(challenge) => challenge_response(&s, challenge),
        Decision::Unavailable(provider) => ApiError::ProviderUnreachable(provider).into_response(),
    }
}

/// The facts the gate decides on, read from the request's head.
fn route_request<'r>(s: &AppState, parts: &'r Parts, ip: &'r str) -> RouteRequest<'r> {
    let headers = &parts.headers;
    let path = parts.uri.path();
    RouteRequest {
        path,
        public: is_public_path(path),
        read: matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS),
        bearer: bearer_token(header_text(headers, header::AUTHORIZATION)),
        session_token: header_text(headers, SESSION_TOKEN_HEADER),
        session_cookie: super::session::session_cookie(headers),
        host_sent: headers.contains_key(header::HOST),
        own_host: super::origin::own_host(s, headers).is_some(),
        origin: super::origin::browser_origin(s, headers),
        ip,
    }
}

fn header_text(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn forbidden(error: &'static str, detail: &str) -> Response {
    ApiError::Dashboard {
        status: StatusCode::FORBIDDEN,
        error,
        detail: detail.to_owned(),
        retry_after: None,
    }
    .into_response()
}

/// A request without credentials: 401, or in gated mode a page's 302 to the login page.
fn challenge_response(s: &AppState, challenge: Challenge) -> Response {
    match challenge {
        Challenge::Token => ApiError::Unauthenticated {
            reason: None,
            login_url: None,
        }
        .into_response(),
        // SPEC §9: a page without a session gets 302 to the login page.
        Challenge::Login => (StatusCode::FOUND, [(header::LOCATION, login_url(s))]).into_response(),
        Challenge::Session {
            reason,
            offer_login,
        } => ApiError::Unauthenticated {
            reason: Some(reason.as_str()),
            login_url: offer_login.then(|| login_url(s)),
        }
        .into_response(),
    }
}

/// Paths public in every mode (the OpenAPI document marks them so): status, health,
/// metrics, the documents, the fire route (it checks its own token), the sign-in routes,
/// static assets and the WebSocket endpoints (they check their own ticket or token). In
/// loopback mode `auth::Access` also lets the page through (it carries the session token).
pub fn is_public_path(path: &str) -> bool {
    PUBLIC_PATHS.contains(&path)
        || super::session::PUBLIC.contains(&path)
        || super::ws::PATHS.contains(&path)
        || path.starts_with("/assets/")
}

/// Where a browser signs in, under the dashboard's public path prefix.
pub fn login_url(s: &AppState) -> String {
    format!("{}{LOGIN_URL}", s.public_url.prefix)
}

/// Runtime status (public).
#[utoipa::path(get, path = "/api/status", tag = "dashboard", responses((status = 200, description = "the compat status record", body = StatusRecord)))]
pub async fn status(State(s): State<AppState>) -> Json<StatusRecord> {
    Json(StatusRecord::build(&s.gate.snapshot(), &s.info))
}

/// Drain detail: whether draining, who asked and when, what is still in flight.
#[utoipa::path(get, path = "/api/gateway/drain", tag = "dashboard",
    responses((status = 200, description = "the status record with the drain detail", body = DrainDetail)))]
pub async fn drain_status(State(s): State<AppState>) -> Json<DrainDetail> {
    Json(DrainDetail::build(&s.gate.snapshot(), &s.info))
}

/// Who asked: the token provider's principal, a signed-in user, or the loopback page.
fn caller(token: Option<Extension<TokenPrincipal>>, session: Option<Extension<Session>>) -> String {
    match (token, session) {
        (Some(p), _) => p.0.principal,
        (None, Some(s)) if s.0 != Session::loopback() => s.0.principal,
        _ => "dashboard".to_owned(),
    }
}

/// `POST /api/gateway/drain` body; a missing or non-JSON body, or no `action`, means `drain`.
#[derive(Deserialize, ToSchema)]
pub struct DrainActionRequest {
    /// `drain` or `cancel`; trimmed and case-insensitive, so ` Cancel ` is `cancel`.
    #[allow(dead_code)]
    #[schema(value_type = Option<String>, pattern = "^\\s*([Dd][Rr][Aa][Ii][Nn]|[Cc][Aa][Nn][Cc][Ee][Ll])\\s*$")]
    action: Option<String>,
}

/// `drain` answer.
#[derive(Serialize, ToSchema)]
pub struct DrainBegun {
    ok: bool,
    /// Always `drain`.
    #[schema(value_type = String, pattern = "^drain$")]
    action: &'static str,
    /// RFC 3339, UTC.
    requested_at: String,
    draining: bool,
}

/// `cancel` answer (idempotent).
#[derive(Serialize, ToSchema)]
pub struct DrainCancelled {
    ok: bool,
    /// Always `cancel`.
    #[schema(value_type = String, pattern = "^cancel$")]
    action: &'static str,
    was_draining: bool,
}

/// Either drain answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum DrainAnswer {
    Begun(DrainBegun),
    Cancelled(DrainCancelled),
}

#[derive(Debug, PartialEq, Eq)]
enum DrainAction {
    Drain,
    Cancel,
}

fn parse_drain_action(body: &[u8]) -> Result<DrainAction, ApiError> {
    let action = match serde_json::from_slice::<Value>(body) {
        Err(_) | Ok(Value::Null) => return Ok(DrainAction::Drain),
        Ok(Value::Object(map)) => match map.get("action") {
            None | Some(Value::Null) => return Ok(DrainAction::Drain),
            Some(Value::String(s)) => s.trim().to_lowercase(),
            Some(other) => other.to_string(),
        },
        Ok(other) => {
            return Err(ApiError::BadRequest {
                error: "invalid_body",
                detail: format!(
                    "body must be a JSON object like {{\"action\":\"drain\"}}, got {other}"
                ),
            });
        }
    };
    match action.as_str() {
        "drain" => Ok(DrainAction::Drain),
        "cancel" => Ok(DrainAction::Cancel),
        _ => Err(ApiError::BadRequest {
            error: "invalid_action",
            detail: format!("unknown drain action {action:?}; expected \"drain\" or \"cancel\""),
        }),
    }
}

/// Begins or cancels an external drain.
#[utoipa::path(post, path = "/api/gateway/drain", tag = "dashboard",
    request_body(content = Option<DrainActionRequest>, content_type = "application/json",
        description = "optional: a missing or non-JSON body means drain"),
    responses((status = 200, description = "drain begun, or cancelled", body = DrainAnswer),
              (status = 400, description = "invalid_action or invalid_body, naming it", body = super::schemas::DashboardError),
              (status = 409, description = "drain_marker_blocked: a directory sits at the drain marker path", body = super::schemas::DashboardError)))]
pub async fn drain_action(
    State(s): State<AppState>,
    principal: Option<Extension<TokenPrincipal>>,
    session: Option<Extension<Session>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let action = parse_drain_action(&body)?;
    let who = caller(principal, session);
    let drain = s.drain.clone();
    Ok(match action {
        DrainAction::Drain => {
            let begun = on_blocking_thread(move || drain.begin(&who)).await?;
            Json(DrainBegun {
                ok: true,
                action: "drain",
                requested_at: iso(begun.requested_at),
                draining: true,
            })
            .into_response()
        }
        DrainAction::Cancel => Json(DrainCancelled {
            ok: true,
            action: "cancel",
            was_draining: on_blocking_thread(move || drain.cancel(&who)).await?,
        })
        .into_response(),
    })
}

/// Runs a drain change on a blocking thread (it syncs the marker to disk, never on a
/// runtime worker) and maps its error: a directory at the marker path is a 409 naming it.
async fn on_blocking_thread<T: Send + 'static>(
    change: impl FnOnce() -> Result<T, crate::lifecycle::DrainError> + Send + 'static,
) -> Result<T, ApiError> {
    use crate::lifecycle::DrainError;
    match tokio::task::spawn_blocking(change).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e @ DrainError::MarkerIsDirectory { .. })) => Err(ApiError::Conflict {
            error: "drain_marker_blocked",
            detail: e.to_string(),
        }),
        Ok(Err(e)) => Err(ApiError::Internal { log: e.to_string() }),
        Err(e) => Err(ApiError::Internal {
            log: format!("the drain change failed: {e}"),
        }),
    }
}

/// `POST /api/gateway/restart` answer: the restart drain has begun.
#[derive(Serialize, ToSchema)]
pub struct RestartAccepted {
    ok: bool,
    /// Always `restart`.
    #[schema(value_type = String, pattern = "^restart$")]
    action: &'static str,
    active_agents: usize,
    restart_drain_timeout: f64,
}

/// Runs the restart drain (refuse new turns, wait for in-flight ones up to
/// `restart_drain_timeout`), then exits 75 so a supervisor starts the process again.
#[utoipa::path(post, path = "/api/gateway/restart", tag = "dashboard",
    responses((status = 202, description = "the restart drain has begun; the process exits 75", body = RestartAccepted)))]
pub async fn restart(
    State(s): State<AppState>,
    principal: Option<Extension<TokenPrincipal>>,
    session: Option<Extension<Session>>,
) -> (StatusCode, Json<RestartAccepted>) {
    let who = caller(principal, session);
    tracing::info!(principal = %who, "restart requested over HTTP; draining then exiting 75");
    s.shutdown.restart();
    (
        StatusCode::ACCEPTED,
        Json(RestartAccepted {
            ok: true,
            action: "restart",
            active_agents: s.gate.snapshot().active_agents,
            restart_drain_timeout: s.config.agent.restart_drain_timeout,
        }),
    )
}

/// Prometheus metrics (public).
#[utoipa::path(get, path = "/metrics", tag = "dashboard",
    params(("Accept" = Option<String>, Header, description = "`application/openmetrics-text` for OpenMetrics 1.0.0; anything else gets the classic format")),
    responses((status = 200, description = "Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), or OpenMetrics when asked for",
        content((String = "text/plain"), (String = "application/openmetrics-text")))))]
pub async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let snap = s.gate.snapshot();
    let text = s.metrics.render_as(
        LiveGauges {
            in_flight: snap.active_agents,
            state: snap.state.as_str(),
        },
        format,
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_action_parsing() {
        use DrainAction::*;
        let ok: &[(&str, DrainAction)] = &[
            ("", Drain),
            ("not json", Drain),
            ("null", Drain),
            ("{}", Drain),
            (r#"{"action": null}"#, Drain),
            (r#"{"action": "drain"}"#, Drain),
            (r#"{"action": "  CANCEL "}"#, Cancel),
            (r#"{"action": "Drain"}"#, Drain),
        ];
        for (body, expected) in ok {
            assert_eq!(
                &parse_drain_action(body.as_bytes()).unwrap(),
                expected,
                "{body}"
            );
        }
        for (body, fragment) in [
            (r#"{"action": "explode"}"#, "\"explode\""),
            (r#"{"action": 5}"#, "\"5\""),
            ("[1]", "JSON object"),
        ] {
            match parse_drain_action(body.as_bytes()) {
                Err(ApiError::BadRequest { detail, .. }) => {
                    assert!(detail.contains(fragment), "{body}: {detail}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
