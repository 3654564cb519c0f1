//! The dashboard page, served by the binary itself (no CDN): `/` and its `/assets/`.
//!
//! In loopback mode the page carries the process's session token (SPEC §9), which its
//! script sends as `X-Hermes-Session-Token`; in gated mode it carries none and relies on
//! the session cookie (the gate sends a browser without one to `/login`).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::ExposeSecret;

use crate::auth::DashboardAuth;
use crate::state::AppState;

const INDEX: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const CHARTS_JS: &str = include_str!("page/charts.js");
const JOBS_JS: &str = include_str!("page/jobs.js");
const ACTIVITY_JS: &str = include_str!("page/activity.js");
const CONNECTION_JS: &str = include_str!("page/connection.js");
const CHAT_JS: &str = include_str!("page/chat.js");
const APP_CSS: &str = include_str!("page/app.css");
const ICON_SVG: &str = include_str!("page/icon.svg");
const JS: &str = "text/javascript; charset=utf-8";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/charts.js", get(charts_js))
        .route("/assets/jobs.js", get(jobs_js))
        .route("/assets/activity.js", get(activity_js))
        .route("/assets/connection.js", get(connection_js))
        .route("/assets/chat.js", get(chat_js))
        .route("/assets/app.css", get(app_css))
        .route("/assets/icon.svg", get(icon_svg))
}

/// The page's core script: API calls, the confirmation dialog, live status, drain, start.
#[utoipa::path(get, path = "/assets/app.js", tag = "page",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn app_js() -> Response {
    asset(APP_JS, JS)
}

/// The page's charts of the last hour (SVG, drawn from the `history` messages).
#[utoipa::path(get, path = "/assets/charts.js", tag = "page",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn charts_js() -> Response {
    asset(CHARTS_JS, JS)
}

/// The page's cron jobs: table, create/edit with the schedule preview, actions, runs.
#[utoipa::path(get, path = "/assets/jobs.js", tag = "page",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn jobs_js() -> Response {
    asset(JOBS_JS, JS)
}

/// The page's activity feed (drains, sign-ins, fires, finished runs).
#[utoipa::path(get, path = "/assets/activity.js", tag = "page",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn activity_js() -> Response {
    asset(ACTIVITY_JS, JS)
}

/// The page's connection panel and client snippets.
#[utoipa::path(get, path = "/assets/connection.js", tag = "page",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn connection_js() -> Response {
    asset(CONNECTION_JS, JS)
}

/// The page's chat.
#[utoipa::path(get, path = "/assets/chat.js", tag = "page",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub async fn chat_js() -> Response {
    asset(CHAT_JS, JS)
}

/// The page's style sheet.
#[utoipa::path(get, path = "/assets/app.css", tag = "page",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// The page's icon (named by the page and the login page, so a browser does not ask for
/// `/favicon.ico` outside a path prefix).
#[utoipa::path(get, path = "/assets/icon.svg", tag = "page",
    responses((status = 200, description = "SVG", content_type = "image/svg+xml", body = String)))]
pub async fn icon_svg() -> Response {
    asset(ICON_SVG, "image/svg+xml")
}

/// The dashboard page. Loopback mode: served only under the dashboard's own host names
/// (it carries the session token). Gated mode: a browser without a session goes to /login.
#[utoipa::path(get, path = "/", tag = "page",
    responses((status = 200, description = "HTML", content_type = "text/html", body = String),
              (status = 302, description = "gated mode without a session: to the login page", headers(("Location" = String))),
              (status = 403, description = "forbidden_host: loopback mode under a foreign Host", body = super::schemas::DashboardError)))]
pub async fn index(State(s): State<AppState>) -> Response {
    let token = match s.access.dashboard() {
        DashboardAuth::Loopback { session_token } => session_token.expose_secret().to_owned(),
        DashboardAuth::Gated { .. } => String::new(),
    };
    // The token is URL-safe base64, but escape it anyway: it goes into an attribute.
    let escaped = token
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    let mut r = axum::response::Html(INDEX.replace("{{SESSION_TOKEN}}", &escaped)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'",
        ),
    );
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
