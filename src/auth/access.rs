//! Who may reach the dashboard, and the sign-in actions around it (SPEC §9): the route
//! gate (the page's host check, token routes, public paths, sessions, CSRF), password
//! login and logout, WebSocket tickets and the sockets' own check.
//!
//! [`Access`] decides and records: every `auth_decision` metric and every auth audit event
//! is written here, so the HTTP layer only extracts a request's facts (the header checks
//! of `http::origin`, as booleans and strings) and maps the outcome to its response. It
//! knows no HTTP type and never sees a status code.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;

use super::ratelimit::RateLimiter;
use super::session::{DashboardAuth, SessionRejection};
use super::sessions::{Session, Sessions, TicketRejection, ticket_prefix};
use super::token::{TokenAuth, TokenDecision, TokenPrincipal};
use crate::audit::{AuditEvent, AuditLog};
use crate::metrics::Metrics;
use crate::store::StoreError;

/// The dashboard page: public in loopback mode (it carries the session token), and then
/// served only under the dashboard's own host names.
pub const PAGE_PATH: &str = "/";
/// Longest username a password login may carry (the username is audited).
pub const MAX_USERNAME_BYTES: usize = 128;
/// Longest password a password login may carry.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Paths under this prefix are API calls: refused with a 401, never sent to the login page.
const API_PREFIX: &str = "/api/";

/// A browser's `Origin` and whether the dashboard accepts it (its own origin, or one in
/// `dashboard.allowed_origins`). Non-browser clients send none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub value: &'a str,
    pub allowed: bool,
}

/// A dashboard request as the gate sees it: plain facts the HTTP layer extracted.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    pub path: &'a str,
    /// Public in every mode (the listener's own list: status, sign-in routes, assets, the
    /// WebSocket endpoints, which check their own ticket).
    pub public: bool,
    /// GET, HEAD or OPTIONS: a read, which a cross-site page may send harmlessly.
    pub read: bool,
    /// The `Authorization: Bearer` token.
    pub bearer: Option<&'a str>,
    /// The loopback-mode session-token header.
    pub session_token: Option<&'a str>,
    /// The session cookie's value.
    pub session_cookie: Option<&'a str>,
    /// Whether a `Host` header was sent (no Host at all is not a browser).
    pub host_sent: bool,
    /// Whether the `Host` names this dashboard.
    pub own_host: bool,
    pub origin: Option<Origin<'a>>,
    /// The client, as audited.
    pub ip: &'a str,
}

impl RouteRequest<'_> {
    /// A read, a non-browser client (no Origin), or a browser on an allowed origin.
    fn same_origin_write(&self) -> bool {
        self.read || self.origin.is_none_or(|o| o.allowed)
    }
}

/// The gate's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on to the route, as this caller.
    Allow(Caller),
    /// Loopback mode: the page was asked for under a name that is not ours (DNS rebinding).
    ForbiddenHost,
    /// A cookie session's write from a foreign browser origin (CSRF).
    ForbiddenOrigin,
    Unauthenticated(Challenge),
    /// A token provider or the session store could not answer; names it.
    Unavailable(String),
}

/// Who reaches a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A public path: nobody in particular.
    Anonymous,
    /// A service caller on a token route.
    Token(TokenPrincipal),
    /// A signed-in user, or the loopback pseudo-session.
    Session(Session),
}

/// How an unauthenticated request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// A token route without an accepted token: a bare refusal.
    Token,
    /// Gated mode, a page: the browser goes to the login page.
    Login,
    /// An API call without a session: the reason, and (gated mode) the login page to offer.
    Session {
        reason: SessionRejection,
        offer_login: bool,
    },
}

/// What a password login presents; `None` where the body was not a login at all.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// How a password login ended.
#[derive(Debug)]
pub enum LoginOutcome {
    /// Signed in: the cookie value (shown once) and the session.
    SignedIn {
        cookie: SecretString,
        session: Session,
    },
    /// Over the per-client limit; retry after this long.
    RateLimited {
        retry_after: Duration,
    },
    /// No password provider is configured.
    NoPasswordProvider,
    /// Not a login body, or a field over its limit.
    InvalidBody,
    InvalidCredentials,
    /// The credentials were right but the session could not be stored.
    StoreFailed(StoreError),
}

/// What opening a dashboard WebSocket presents (`?ticket=`, `?token=`).
#[derive(Debug, Clone, Copy)]
pub struct SocketRequest<'a> {
    pub origin: Option<Origin<'a>>,
    pub ticket: Option<&'a str>,
    pub token: Option<&'a str>,
    /// The client, as audited.
    pub ip: &'a str,
}

/// Why a WebSocket may not open; the text is the refusal's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketRefusal {
    #[error("Origin {0} may not open dashboard WebSockets")]
    ForeignOrigin(String),
    #[error(
        "this dashboard requires a ticket from POST /api/auth/ws-ticket; ?token= is not accepted"
    )]
    TokenNotAccepted,
    #[error(transparent)]
    Ticket(TicketRejection),
    #[error("the session token is not valid")]
    InvalidSessionToken,
    #[error("open this socket with ?ticket= from POST /api/auth/ws-ticket")]
    MissingTicket,
}

impl SocketRefusal {
    /// The machine reason (the refusal's `reason` and the audit `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ForeignOrigin(_) => "foreign_origin",
            Self::TokenNotAccepted => "token_not_accepted",
            Self::Ticket(t) => t.reason(),
            Self::InvalidSessionToken => "invalid_session_token",
            Self::MissingTicket => "missing_ticket",
        }
    }
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

    /// Decides who may reach a dashboard route: the page's host check (loopback mode), then
    /// token routes, then public paths, then the session of the mode (with the CSRF check
    /// for cookie sessions).
    pub async fn route(&self, req: &RouteRequest<'_>) -> Decision {
        let gated = self.dashboard.is_gated();
        if req.path == PAGE_PATH && !gated && req.host_sent && !req.own_host {
            return Decision::ForbiddenHost;
        }
        if self.tokens.is_token_route(req.path) {
            return self.token_route(req).await;
        }
        if req.public || (req.path == PAGE_PATH && !gated) {
            return Decision::Allow(Caller::Anonymous);
        }
        match &self.dashboard {
            DashboardAuth::Loopback { .. } => {
                let checked = self.dashboard.check(req.session_token);
                self.settle(checked.map(|()| Session::loopback()), req)
            }
            DashboardAuth::Gated { .. } => self.cookie_session(req).await,
        }
    }

    async fn token_route(&self, req: &RouteRequest<'_>) -> Decision {
        match self.tokens.authenticate(req.bearer).await {
            TokenDecision::Accepted(principal) => {
                self.metrics.auth_decision("token", "accepted");
                self.audit.record(
                    AuditEvent::TokenAuthSuccess,
                    &[
                        ("provider", json!(principal.provider)),
                        ("principal", json!(principal.principal)),
                        ("path", json!(req.path)),
                        ("ip", json!(req.ip)),
                    ],
                );
                Decision::Allow(Caller::Token(principal))
            }
            TokenDecision::Rejected => {
                self.metrics.auth_decision("token", "rejected");
                self.audit.record(
                    AuditEvent::TokenAuthFailure,
                    &[
                        ("reason", json!("no_provider_recognises_token")),
                        ("path", json!(req.path)),
                        ("ip", json!(req.ip)),
                    ],
                );
                Decision::Unauthenticated(Challenge::Token)
            }
            TokenDecision::Unavailable(provider) => {
                self.metrics.auth_decision("token", "unavailable");
                self.audit.record(
                    AuditEvent::TokenAuthFailure,
                    &[
                        ("provider", json!(provider)),
                        ("reason", json!("provider_unreachable")),
                        ("path", json!(req.path)),
                        ("ip", json!(req.ip)),
                    ],
                );
                Decision::Unavailable(provider)
            }
        }
    }

    /// Gated mode: the cookie must name a live session, and a browser's write must come
    /// from an allowed origin (a cookie rides along on cross-site requests).
    async fn cookie_session(&self, req: &RouteRequest<'_>) -> Decision {
        let Some(cookie) = req.session_cookie else {
            return self.settle(Err(SessionRejection::NoSession), req);
        };
        match self.sessions.lookup(cookie).await {
            Ok(Some(_)) if !req.same_origin_write() => Decision::ForbiddenOrigin,
            Ok(Some(session)) => self.settle(Ok(session), req),
            Ok(None) => self.settle(Err(SessionRejection::InvalidSession), req),
            Err(e) => {
                tracing::error!(error = %e, "session store unavailable");
                Decision::Unavailable("session store".into())
            }
        }
    }

    /// Counts a session check and, for a refusal, says how it is answered; a cookie that
    /// names no live session is audited.
    fn settle(
        &self,
        checked: Result<Session, SessionRejection>,
        req: &RouteRequest<'_>,
    ) -> Decision {
        let rejection = match checked {
            Ok(session) => {
                self.metrics.auth_decision("session", "accepted");
                return Decision::Allow(Caller::Session(session));
            }
            Err(rejection) => rejection,
        };
        self.metrics.auth_decision("session", "rejected");
        if rejection == SessionRejection::InvalidSession {
            self.audit.record(
                AuditEvent::SessionRejected,
                &[
                    ("reason", json!(rejection.as_str())),
                    ("path", json!(req.path)),
                    ("ip", json!(req.ip)),
                ],
            );
        }
        let gated = self.dashboard.is_gated();
        Decision::Unauthenticated(if gated && !req.path.starts_with(API_PREFIX) {
            // SPEC §9: a page without a session goes to the login page.
            Challenge::Login
        } else {
            Challenge::Session {
                reason: rejection,
                offer_login: gated,
            }
        })
    }

    /// Signs in with the `basic` provider: counts the attempt against the client's limit,
    /// checks the provider, the body and the credentials, and starts a session. Every
    /// refusal and the success are audited (the username only when it was checked).
    pub async fn password_login(
        &self,
        ip: IpAddr,
        credentials: Option<Credentials<'_>>,
    ) -> LoginOutcome {
        let failure = |reason: &str, username: Option<&str>| {
            self.audit.record(
                AuditEvent::LoginFailure,
                &[
                    ("provider", json!("basic")),
                    ("reason", json!(reason)),
                    ("username", json!(username)),
                    ("ip", json!(ip.to_string())),
                ],
            );
        };
        if let Err(retry_after) = self.login_limiter.attempt(ip) {
            failure("rate_limited", None);
            return LoginOutcome::RateLimited { retry_after };
        }
        let Some(basic) = self.dashboard.basic() else {
            failure("no_password_provider", None);
            return LoginOutcome::NoPasswordProvider;
        };
        let credentials = credentials.filter(|c| {
            c.username.len() <= MAX_USERNAME_BYTES && c.password.len() <= MAX_PASSWORD_BYTES
        });
        let Some(c) = credentials else {
            failure("invalid_body", None);
            return LoginOutcome::InvalidBody;
        };
        let Some(principal) = basic.authenticate(c.username, c.password).await else {
            failure("invalid_credentials", Some(c.username));
            return LoginOutcome::InvalidCredentials;
        };
        match self.sessions.create(&principal, "basic").await {
            Ok((cookie, session)) => {
                self.audit.record(
                    AuditEvent::LoginSuccess,
                    &[
                        ("provider", json!("basic")),
                        ("principal", json!(principal)),
                        ("ip", json!(ip.to_string())),
                    ],
                );
                LoginOutcome::SignedIn { cookie, session }
            }
            Err(e) => LoginOutcome::StoreFailed(e),
        }
    }

    /// Ends the session a cookie names (its tickets die with it); audited when one ended.
    pub async fn logout(&self, cookie: Option<&str>, ip: IpAddr) {
        if let Some(token) = cookie
            && let Ok(true) = self.sessions.revoke(token).await
        {
            self.audit
                .record(AuditEvent::Logout, &[("ip", json!(ip.to_string()))]);
        }
    }

    /// Mints a single-use WebSocket ticket bound to `session`; audited.
    pub async fn mint_ticket(&self, session: &Session, ip: IpAddr) -> Result<String, StoreError> {
        match self.sessions.mint_ticket(session).await {
            Ok(ticket) => {
                self.audit.record(
                    AuditEvent::WsTicketMinted,
                    &[
                        ("principal", json!(session.principal)),
                        ("provider", json!(session.provider)),
                        ("ip", json!(ip.to_string())),
                    ],
                );
                Ok(ticket)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store a WebSocket ticket");
                Err(e)
            }
        }
    }

    /// Decides who opens a WebSocket, before the upgrade: a browser's Origin must be
    /// allowed; then gated mode takes only a ticket, loopback mode a ticket or the session
    /// token. Every refusal is audited.
    pub async fn open_socket(&self, req: &SocketRequest<'_>) -> Result<Session, SocketRefusal> {
        if let Some(origin) = req.origin.filter(|o| !o.allowed) {
            self.audit.record(
                AuditEvent::WsTicketRejected,
                &[
                    ("reason", json!("foreign_origin")),
                    ("origin", json!(origin.value)),
                    ("ip", json!(req.ip)),
                ],
            );
            return Err(SocketRefusal::ForeignOrigin(origin.value.to_owned()));
        }
        let checked = self.socket_credentials(req).await;
        if let Err(refusal) = &checked {
            self.audit.record(
                AuditEvent::WsTicketRejected,
                &[("reason", json!(refusal.reason())), ("ip", json!(req.ip))],
            );
        }
        checked
    }

    async fn socket_credentials(&self, req: &SocketRequest<'_>) -> Result<Session, SocketRefusal> {
        if self.dashboard.is_gated() && req.token.is_some() {
            return Err(SocketRefusal::TokenNotAccepted);
        }
        if let Some(ticket) = req.ticket {
            return self.sessions.redeem_ticket(ticket).await.map_err(|e| {
                tracing::info!(ticket = %ticket_prefix(ticket), reason = e.reason(), "WebSocket ticket refused");
                SocketRefusal::Ticket(e)
            });
        }
        match req.token {
            Some(token) if self.dashboard.check(Some(token)).is_ok() => Ok(Session::loopback()),
            Some(_) => Err(SocketRefusal::InvalidSessionToken),
            None => Err(SocketRefusal::MissingTicket),
        }
    }
}
