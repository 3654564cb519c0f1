//! The API server's router and its small routes: health, readiness, models and
//! capabilities (chat completions are `chat`'s, the Responses API `responses`', runs
//! `runs`', stored sessions `sessions`', the key check `api_key`'s).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::idempotency::Idempotency;
use super::{ApiError, BODY_LIMIT};
use crate::lifecycle::StatusRecord;
use crate::state::AppState;

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
            post(super::chat::chat_completions).layer(Extension(Arc::new(Idempotency::default()))),
        )
        .merge(super::responses::routes(&state))
        .merge(docs)
        // The fire token is this route's credential, never API_SERVER_KEY (SPEC §8).
        .merge(super::fire::routes())
        .merge(
            super::jobs::routes().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                super::api_key::require,
            )),
        )
        .merge(super::runs::routes(&state))
        .merge(
            super::sessions::routes().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                super::api_key::require,
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

/// The one model this gateway serves.
#[utoipa::path(get, path = "/v1/models", tag = "api",
    responses((status = 200, description = "OpenAI model list", body = super::schemas::ModelList)))]
pub async fn models(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    super::api_key::check(&s, &headers)?;
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
    super::api_key::check(&s, &headers)?;
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
    super::api_key::check(&s, &headers)?;
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
            "responses_api": true,
            "stream_usage": true,
            "session_continuity_header": super::chat::SESSION_HEADER_NAME,
            "idempotency_header": "Idempotency-Key",
            "cron_jobs": true,
            "run_submission": true,
            "run_status": true,
            "run_events_sse": true,
            "run_stop": true,
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
            "responses": endpoint("POST", "/v1/responses"),
            "jobs": endpoint("GET", "/api/jobs"),
            "job_create": endpoint("POST", "/api/jobs"),
            "job": endpoint("GET", "/api/jobs/{id}"),
            "cron_fire": endpoint("POST", "/api/cron/fire"),
            "runs": endpoint("POST", "/v1/runs"),
            "run": endpoint("GET", "/v1/runs/{id}"),
            "run_events": endpoint("GET", "/v1/runs/{id}/events"),
            "run_stop": endpoint("POST", "/v1/runs/{id}/stop"),
            "sessions": endpoint("GET", "/api/sessions"),
        },
    })))
}
