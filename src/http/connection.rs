//! `GET /api/connection`: how a client reaches this gateway, for the dashboard page's
//! connection panel and its chat — the API server's base URL, the model clients name,
//! the backend that runs turns, whether a key is required, the cron zone, and which
//! optional features the page may use. Never a secret: only whether a key is set.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::BackendKind;
use crate::state::AppState;

/// Optional features the page may use, by name. A slice that adds one names it here:
/// `chat_sessions` would mean the chat socket takes a `session_id` and continues that
/// stored conversation (the page sends it only when advertised).
const FEATURES: &[&str] = &["history", "job_preview", "chat_sessions"];

/// Where and how a client talks to this gateway.
#[derive(Serialize, ToSchema)]
pub struct Connection {
    /// The OpenAI-compatible base URL (ending in `/v1`); null when the API server is off.
    api_base_url: Option<String>,
    /// The model name clients send and see (`gateway.api_server.model_name`).
    model: String,
    /// The backend that runs turns: `echo`, `openai` or `command`.
    backend: &'static str,
    /// The `openai` backend's upstream model (`agent.openai.model`), when one is set.
    upstream_model: Option<String>,
    /// Whether the API server wants `Authorization: Bearer <API_SERVER_KEY>`.
    key_required: bool,
    /// The zone cron schedules are evaluated and shown in (`cron.timezone`).
    cron_timezone: String,
    /// Optional features the page may use (see the dashboard's documentation).
    features: Vec<&'static str>,
    /// The gateway's version.
    version: &'static str,
}

/// The API server's address for clients, the model, the backend and whether a key is
/// required (no secret).
#[utoipa::path(get, path = "/api/connection", tag = "dashboard",
    responses((status = 200, description = "how a client reaches this gateway", body = Connection)))]
pub async fn connection(State(s): State<AppState>, headers: HeaderMap) -> Json<Connection> {
    let c = &s.config;
    let request_host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_name);
    let upstream_model = (c.agent.backend == BackendKind::OpenAi
        && !c.agent.openai.model.is_empty())
    .then(|| c.agent.openai.model.clone());
    Json(Connection {
        api_base_url: c
            .api_server
            .enabled
            .then(|| base_url(&c.api_server.host, api_port(&s), request_host)),
        model: c.api_server.model_name.clone(),
        backend: c.agent.backend.as_str(),
        upstream_model,
        key_required: c.secrets.api_server_key.is_some(),
        cron_timezone: c.cron.timezone_name.clone(),
        features: FEATURES.to_vec(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The API server's port: the bound one (port 0 binds any), else the configured one.
fn api_port(s: &AppState) -> u16 {
    s.info
        .api_server_addr
        .get()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map_or(s.config.api_server.port, |a| a.port())
}

/// A `Host` header's name without its port (`[::1]:9119` → `[::1]`).
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// The base URL of the API server bound at `host:port`. A wildcard bind (`0.0.0.0`, `::`)
/// names no host, so the name the operator reached the dashboard by stands in for it.
fn base_url(host: &str, port: u16, request_host: Option<&str>) -> String {
    let wildcard = matches!(host, "0.0.0.0" | "::" | "[::]" | "");
    let name = match request_host {
        Some(r) if wildcard && !r.is_empty() => r.to_owned(),
        _ if wildcard => "127.0.0.1".to_owned(),
        _ if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
        _ => host.to_owned(),
    };
    format!("http://{name}:{port}/v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_names_a_host_a_client_can_reach() {
        assert_eq!(
            base_url("127.0.0.1", 8642, Some("localhost")),
            "http://127.0.0.1:8642/v1"
        );
        assert_eq!(base_url("::1", 8642, None), "http://[::1]:8642/v1");
        assert_eq!(
            base_url("0.0.0.0", 8642, Some("gw.example")),
            "http://gw.example:8642/v1"
        );
        assert_eq!(
            base_url("::", 9000, Some("[fd00::2]")),
            "http://[fd00::2]:9000/v1"
        );
        assert_eq!(base_url("0.0.0.0", 8642, None), "http://127.0.0.1:8642/v1");
        assert_eq!(host_name("gw.example:9119"), "gw.example");
        assert_eq!(host_name("[::1]:9119"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("gw.example"), "gw.example");
    }
}
