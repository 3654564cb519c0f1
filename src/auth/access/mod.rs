//! Who may reach the dashboard, and the sign-in actions around it (SPEC §9).
//!
//! [`Access`] holds what those decisions need — the token seam, the session mode, sessions
//! and tickets, the login limit — and decides and records: every `auth_decision` metric
//! and every auth audit event is written here, so the HTTP layer only extracts a request's
//! facts (the header checks of `http::origin`, as booleans and strings) and maps the
//! outcome to its response. `gate` decides who reaches a route (the page's host check,
//! token routes, public paths, sessions, CSRF); `signin` does password login and logout,
//! mints WebSocket tickets and checks a socket's ticket, token and Origin. Nothing here
//! knows an HTTP type or a status code.

use std::sync::Arc;
use std::time::Duration;

use super::ratelimit::RateLimiter;
use super::session::DashboardAuth;
use super::sessions::{Session, Sessions};
use super::token::TokenAuth;
use crate::audit::AuditLog;
use crate::metrics::Metrics;

#[cfg(test)]
mod fixture;
mod gate;
mod signin;

pub use gate::{Caller, Challenge, Decision, PAGE_PATH, RouteRequest};
pub use signin::{
    Credentials, LoginOutcome, MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES, MintOutcome, SocketRefusal,
    SocketRequest,
};

/// A browser's `Origin` and whether the dashboard accepts it (its own origin, or one in
/// `dashboard.allowed_origins`). Non-browser clients send none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub value: &'a str,
    pub allowed: bool,
}

/// The dashboard's access policy: the token seam, the session mode, sessions and tickets,
/// the login limit, and where decisions are recorded. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Access {
    tokens: TokenAuth,
    dashboard: DashboardAuth,
    sessions: Sessions,
    login_limiter: RateLimiter,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
}

impl Access {
    /// Built complete from its parts (`app::prepare` makes them from the config); nothing
    /// is set after construction.
    pub fn new(
        tokens: TokenAuth,
        dashboard: DashboardAuth,
        sessions: Sessions,
        login_limiter: RateLimiter,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            tokens,
            dashboard,
            sessions,
            login_limiter,
            audit,
            metrics,
        }
    }

    /// The session mode (the page reads the loopback token from it).
    pub fn dashboard(&self) -> &DashboardAuth {
        &self.dashboard
    }

    /// True in gated mode (the `mode` of `/api/auth/me`, the OpenAPI document's gate).
    pub fn is_gated(&self) -> bool {
        self.dashboard.is_gated()
    }

    /// True if `path` (exactly) is a token route.
    pub fn is_token_route(&self, path: &str) -> bool {
        self.tokens.is_token_route(path)
    }

    /// The session lifetime (the cookie's `Max-Age`).
    pub fn session_ttl(&self) -> Duration {
        self.sessions.ttl()
    }

    /// Whether the session a socket was opened with is still live.
    pub async fn still_live(&self, session: &Session) -> bool {
        self.sessions.still_live(session).await
    }
}
