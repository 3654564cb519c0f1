//! `/api/sessions`: the stored chat sessions (SPEC §11) — list them, show one with its
//! messages, forget one. Served on the API server (behind `API_SERVER_KEY`) and on the
//! dashboard (behind its session gate), like `/api/jobs`, and in the job API's error shape
//! (`{"error": message}`: 400 `Invalid session ID`, 404 `Unknown session ID`, 503 with
//! `Retry-After` while the store is down). `sessions` decides and counts; these map.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::clock::iso;
use crate::sessions::{ChatSession, StoredChat};
use crate::state::AppState;

/// The session routes; the caller adds its own authentication in front.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/sessions", get(list))
        .route("/api/sessions/{id}", get(show).delete(forget))
}

/// A stored session on the wire, without its messages.
#[derive(Serialize, ToSchema)]
pub struct SessionSummary {
    /// The session id (`X-Hermes-Session-Id`).
    #[schema(pattern = "^(api-[0-9a-f]{16}|[0-9]{8}_[0-9]{6}_[0-9a-f]{6})$")]
    id: String,
    /// When its first turn was recorded (RFC 3339, UTC).
    #[schema(format = DateTime)]
    created_at: String,
    /// When its last turn was recorded (RFC 3339, UTC).
    #[schema(format = DateTime)]
    updated_at: String,
    /// How many messages it holds (at most `gateway.api_server.max_session_messages`).
    message_count: u64,
}

impl From<ChatSession> for SessionSummary {
    fn from(s: ChatSession) -> Self {
        Self {
            id: s.id,
            created_at: iso(s.created_at),
            updated_at: iso(s.updated_at),
            message_count: s.message_count,
        }
    }
}

/// `GET /api/sessions`.
#[derive(Serialize, ToSchema)]
pub struct SessionList {
    /// The most recently updated first.
    sessions: Vec<SessionSummary>,
}

/// One stored message.
#[derive(Serialize, ToSchema)]
pub struct SessionMessage {
    /// `user`, `assistant` or `tool` (instructions — `system`, `developer` — are not kept).
    role: String,
    /// The text the turn carried (content parts flattened).
    content: String,
}

/// `GET /api/sessions/{id}`: the session and its messages, oldest first.
#[derive(Serialize, ToSchema)]
pub struct SessionDetail {
    #[serde(flatten)]
    session: SessionSummary,
    messages: Vec<SessionMessage>,
}

impl From<StoredChat> for SessionDetail {
    fn from(c: StoredChat) -> Self {
        Self {
            session: c.session.into(),
            messages: c
                .messages
                .into_iter()
                .map(|m| SessionMessage {
                    role: m.role,
                    content: m.content,
                })
                .collect(),
        }
    }
}

/// `DELETE /api/sessions/{id}`.
#[derive(Serialize, ToSchema)]
pub struct SessionDeleted {
    id: String,
    /// Always true.
    deleted: bool,
}

/// Every stored chat session.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions", operation_id = "list_sessions",
    responses((status = 200, description = "the sessions, the most recently updated first", body = SessionList),
              (status = 503, description = "the session store is unavailable; Retry-After", body = super::schemas::SessionsError)))]
pub async fn list(State(s): State<AppState>) -> Result<Json<SessionList>, ApiError> {
    let sessions = s.sessions.list().await?;
    Ok(Json(SessionList {
        sessions: sessions.into_iter().map(SessionSummary::from).collect(),
    }))
}

/// One stored chat session with its messages.
#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions", operation_id = "show_session",
    params(("id" = String, Path, description = "the session id", pattern = "^(api-[0-9a-f]{16}|[0-9]{8}_[0-9]{6}_[0-9a-f]{6})$")),
    responses((status = 200, description = "the session and its messages, oldest first", body = SessionDetail),
              (status = 400, description = "Invalid session ID: neither `api-` and 16 hex digits nor `YYYYMMDD_HHMMSS_` and 6 hex digits", body = super::schemas::SessionsError),
              (status = 404, description = "Unknown session ID", body = super::schemas::SessionsError),
              (status = 503, description = "the session store is unavailable; Retry-After", body = super::schemas::SessionsError)))]
pub async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionDetail>, ApiError> {
    Ok(Json(s.sessions.show(&id).await?.into()))
}

/// Forgets a stored chat session and its messages.
#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "sessions", operation_id = "forget_session",
    params(("id" = String, Path, description = "the session id", pattern = "^(api-[0-9a-f]{16}|[0-9]{8}_[0-9]{6}_[0-9a-f]{6})$")),
    responses((status = 200, description = "forgotten", body = SessionDeleted),
              (status = 400, description = "Invalid session ID: neither `api-` and 16 hex digits nor `YYYYMMDD_HHMMSS_` and 6 hex digits", body = super::schemas::SessionsError),
              (status = 404, description = "Unknown session ID", body = super::schemas::SessionsError),
              (status = 503, description = "the session store is unavailable; Retry-After", body = super::schemas::SessionsError)))]
pub async fn forget(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SessionDeleted>, ApiError> {
    s.sessions.forget(&id).await?;
    Ok(Json(SessionDeleted { id, deleted: true }))
}

#[cfg(test)]
mod tests {
    /// The annotations spell the id pattern out (they take literals); it is the domain's.
    #[test]
    fn the_documented_id_pattern_is_the_domains() {
        let pattern = crate::sessions::SESSION_ID_PATTERN;
        let annotations = include_str!("sessions.rs")
            .split("#[cfg(test)]")
            .next()
            .unwrap();
        assert_eq!(annotations.matches(pattern).count(), 3);
        assert_eq!(include_str!("chat.rs").matches(pattern).count(), 1);
    }
}
