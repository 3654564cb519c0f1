//! Dashboard sign-in (SPEC §9): `/login`, `POST /auth/password-login`, `POST /auth/logout`,
//! `GET /api/auth/me`, `GET /api/auth/providers`, `POST /api/auth/ws-ticket`, and the
//! session cookie. The rules (hashes, sessions, tickets, the rate limit) and their audit
//! live in `auth::Access`; these handlers parse, call it, and map its outcome.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use crate::auth::access::{
    Credentials, LoginOutcome, MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES, MintOutcome,
};
use crate::auth::session::SessionRejection;
use crate::auth::sessions::{SESSION_COOKIE, Session, TICKET_TTL};
use crate::clock::iso;
use crate::state::AppState;

/// Paths of this module that anyone may call.
pub const PUBLIC: [&str; 4] = [
    "/login",
    "/auth/password-login",
    "/auth/logout",
    "/api/auth/providers",
];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page))
        .route(
            "/auth/password-login",
            post(password_login).layer(axum::extract::DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
        .route("/api/auth/providers", get(providers))
        .route("/api/auth/ws-ticket", post(ws_ticket))
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

fn cookie(s: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if s.config.dashboard.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let text = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn error(status: StatusCode, error: &'static str, detail: String) -> Response {
    ApiError::Dashboard {
        status,
        error,
        detail,
        retry_after: None,
    }
    .into_response()
}

/// The sign-in page (public).
#[utoipa::path(get, path = "/login", tag = "auth", responses((status = 200, description = "HTML sign-in form", content_type = "text/html", body = String)))]
pub async fn login_page() -> Response {
    let mut r = Html(include_str!("page/login.html")).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    );
    r
}

#[derive(Deserialize)]
struct PasswordLogin {
    username: String,
    password: String,
}

/// Signs in with the `basic` provider; sets the session cookie.
#[utoipa::path(post, path = "/auth/password-login", tag = "auth", request_body = super::schemas::PasswordLogin,
    responses((status = 200, description = "signed in; Set-Cookie hermes_session (HttpOnly, SameSite=Lax)", body = super::schemas::LoggedIn,
                  headers(("Set-Cookie" = String, description = "the session cookie"))),
              (status = 400, description = "invalid_body", body = super::schemas::DashboardError),
              (status = 401, description = "invalid_credentials", body = super::schemas::DashboardError),
              (status = 404, description = "no_password_provider: password sign-in is not configured", body = super::schemas::DashboardError),
              (status = 429, description = "rate_limited: the 11th attempt from one client within 60 s", body = super::schemas::DashboardError,
                  headers(("Retry-After" = u64, description = "seconds"))),
              (status = 500, description = "the session could not be stored", body = super::schemas::DashboardError)))]
pub async fn password_login(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = super::origin::client_addr(&s, peer, &headers);
    let login = serde_json::from_slice::<PasswordLogin>(&body).ok();
    let credentials = login.as_ref().map(|l| Credentials {
        username: &l.username,
        password: &l.password,
    });
    match s.access.password_login(ip, credentials).await {
        LoginOutcome::SignedIn { cookie, session } => signed_in(&s, &cookie, &session),
        LoginOutcome::RateLimited { retry_after } => {
            let secs = retry_after.as_secs().max(1);
            ApiError::Dashboard {
                status: StatusCode::TOO_MANY_REQUESTS,
                error: "rate_limited",
                detail: format!("too many login attempts from this client; retry in {secs} s"),
                retry_after: Some(secs),
            }
            .into_response()
        }
        LoginOutcome::NoPasswordProvider => error(
            StatusCode::NOT_FOUND,
            "no_password_provider",
            "password login is not configured (dashboard.basic_auth)".into(),
        ),
        LoginOutcome::InvalidBody => error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!(
                r#"expected a JSON body {{"username": "...", "password": "..."}} (at most {MAX_USERNAME_BYTES} and {MAX_PASSWORD_BYTES} bytes)"#
            ),
        ),
        LoginOutcome::InvalidCredentials => error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Invalid username or password".into(),
        ),
        LoginOutcome::StoreFailed(e) => ApiError::Internal {
            log: format!("cannot store the session: {e}"),
        }
        .into_response(),
    }
}

/// The signed-in answer: the user, the expiry, and the session cookie.
fn signed_in(s: &AppState, cookie_value: &SecretString, session: &Session) -> Response {
    let mut r = Json(json!({
        "ok": true,
        "user": {"id": session.principal, "provider": session.provider},
        "expires_at": iso(session.expires_at),
    }))
    .into_response();
    let cookie = cookie(
        s,
        cookie_value.expose_secret(),
        s.access.session_ttl().as_secs(),
    );
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}

/// Ends the session (its tickets die with it) and clears the cookie.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", responses((status = 200, description = "signed out; the cookie is cleared", body = super::schemas::Ok)))]
pub async fn logout(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    s.access.logout(session_cookie(&headers), peer.ip()).await;
    let mut r = Json(json!({"ok": true})).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie(&s, "", 0));
    r
}

/// Who is signed in: the compat fields (`user_id`, `email`, `display_name`, `org_id`,
/// `provider`, `expires_at` in Unix seconds, `null` for the loopback session), plus `user`
/// and `mode` for the dashboard page.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, description = "the session's user (compat fields, plus `user` and `mode` for the page)", body = super::schemas::Me)))]
pub async fn me(State(s): State<AppState>, Extension(session): Extension<Session>) -> Response {
    let expires_at =
        (session.expires_at != jiff::Timestamp::MAX).then(|| session.expires_at.as_second());
    Json(json!({
        "user_id": session.principal,
        // The password and session-token providers know no e-mail address or organisation.
        "email": null,
        "display_name": session.principal,
        "org_id": null,
        "provider": session.provider,
        "expires_at": expires_at,
        "user": {"id": session.principal, "provider": session.provider},
        "mode": if s.access.is_gated() { "gated" } else { "loopback" },
    }))
    .into_response()
}

/// The sign-in methods this dashboard offers (public), compat shape; 503 when none is
/// registered (loopback mode, or a gated dashboard without a provider).
#[utoipa::path(get, path = "/api/auth/providers", tag = "auth",
    responses((status = 200, description = "the sign-in methods", body = super::schemas::Providers),
              (status = 503, description = "no auth providers registered (loopback mode)", body = super::schemas::Detail)))]
pub async fn providers(State(s): State<AppState>) -> Response {
    let list: Vec<_> = s
        .access
        .dashboard()
        .basic()
        .map(|_| json!({"name": "basic", "display_name": "Password", "supports_password": true}))
        .into_iter()
        .collect();
    if list.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"detail": "no auth providers registered"})),
        )
            .into_response();
    }
    Json(json!({ "providers": list })).into_response()
}

/// Mints a single-use, 30-second WebSocket ticket bound to the caller's session. POST
/// only: a GET (which a link or an image could trigger) mints nothing.
#[utoipa::path(post, path = "/api/auth/ws-ticket", tag = "auth",
    responses((status = 200, description = "a single-use ticket, valid 30 s", body = super::schemas::WsTicket),
              (status = 503, description = "the session store is unavailable; Retry-After", body = super::schemas::DashboardError)))]
pub async fn ws_ticket(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(session): Extension<Session>,
) -> Response {
    match s.access.mint_ticket(&session, peer.ip()).await {
        MintOutcome::Minted(ticket) => {
            Json(json!({"ticket": ticket, "ttl_seconds": TICKET_TTL.as_secs()})).into_response()
        }
        // Signed out (on any replica) between the gate's check and the mint. (No
        // `login_url`: it is `http::dashboard`'s, which imports this module.)
        MintOutcome::SessionEnded => ApiError::Unauthenticated {
            reason: Some(SessionRejection::InvalidSession.as_str()),
            login_url: None,
        }
        .into_response(),
        MintOutcome::StoreFailed(_) => ApiError::Dashboard {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "store_unavailable",
            detail: "the session store is unavailable; retry later".into(),
            retry_after: Some(super::error::RETRY_AFTER_SECONDS),
        }
        .into_response(),
    }
}
