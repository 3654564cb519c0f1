//! The route gate: who may reach a dashboard route. In order: the page's host check
//! (loopback mode), token routes (the bearer seam), public paths, then the mode's session
//! (the loopback token header, or a cookie session whose browser writes must come from an
//! allowed origin). Counts every check and audits token decisions and dead cookies.

use serde_json::json;

use super::{Access, Origin};
use crate::audit::AuditEvent;
use crate::auth::session::{DashboardAuth, SessionRejection};
use crate::auth::sessions::Session;
use crate::auth::token::{TokenDecision, TokenPrincipal};

/// The dashboard page: public in loopback mode (it carries the session token), and then
/// served only under the dashboard's own host names.
pub const PAGE_PATH: &str = "/";
/// Paths under this prefix are API calls: refused with a 401, never sent to the login page.
const API_PREFIX: &str = "/api/";

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

impl Access {
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
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::fixture::*;
    use super::*;

    /// Stands for the cookie of a live session in a table row.
    const LIVE: &str = "<a live session's cookie>";

    /// A GET of `path` with no credentials, from a non-browser client, sent to our name.
    fn get(path: &'static str) -> RouteRequest<'static> {
        RouteRequest {
            path,
            public: false,
            read: true,
            bearer: None,
            session_token: None,
            session_cookie: None,
            host_sent: true,
            own_host: true,
            origin: None,
            ip: IP,
        }
    }

    fn post(path: &'static str) -> RouteRequest<'static> {
        RouteRequest {
            read: false,
            ..get(path)
        }
    }

    fn describe(decision: &Decision) -> String {
        match decision {
            Decision::Allow(Caller::Anonymous) => "allow".into(),
            Decision::Allow(Caller::Token(p)) => format!("allow token {}", p.principal),
            Decision::Allow(Caller::Session(s)) => format!("allow session {}", s.principal),
            Decision::ForbiddenHost => "forbidden host".into(),
            Decision::ForbiddenOrigin => "forbidden origin".into(),
            Decision::Unauthenticated(Challenge::Token) => "401".into(),
            Decision::Unauthenticated(Challenge::Login) => "302 login".into(),
            Decision::Unauthenticated(Challenge::Session {
                reason,
                offer_login,
            }) => format!(
                "401 {}{}",
                reason.as_str(),
                if *offer_login { " +login_url" } else { "" }
            ),
            Decision::Unavailable(name) => format!("503 {name}"),
        }
    }

    /// Decides `req` on a fresh gateway in `mode` and checks the decision, the one
    /// `auth_decisions` sample it counts (if any) and the one audit record (if any).
    async fn check(
        mode: Mode,
        req: RouteRequest<'static>,
        expected: &str,
        metric: Option<&str>,
        audit: Option<Value>,
    ) {
        let fx = Fixture::new(mode).await;
        let (cookie, _) = fx.session().await;
        let req = RouteRequest {
            session_cookie: req
                .session_cookie
                .map(|c| if c == LIVE { cookie.as_str() } else { c }),
            ..req
        };
        let what = format!("{mode:?} {req:?}");
        let decision = fx.access.route(&req).await;
        assert_eq!(describe(&decision), expected, "{what}");
        let counted: Vec<String> = metric.iter().map(|m| format!("{m} 1")).collect();
        assert_eq!(fx.decisions(), counted, "{what}");
        assert_eq!(fx.audit(), audit.into_iter().collect::<Vec<_>>(), "{what}");
    }

    #[tokio::test]
    async fn who_may_reach_a_dashboard_route() {
        use Mode::*;
        let drain = get(TOKEN_ROUTE);
        let jobs = get("/api/jobs");
        let token_ok = json!({"event": "token_auth_success", "provider": "fake",
            "principal": "ops", "path": TOKEN_ROUTE, "ip": IP});
        let token_refused = json!({"event": "token_auth_failure",
            "reason": "no_provider_recognises_token", "path": TOKEN_ROUTE, "ip": IP});
        #[rustfmt::skip]
        let table = vec![
            // The page in loopback mode: only under our own names (or with no Host at all).
            (Loopback, RouteRequest { own_host: false, ..get("/") }, "forbidden host", None, None),
            (Loopback, RouteRequest { host_sent: false, own_host: false, ..get("/") }, "allow", None, None),
            (Loopback, get("/"), "allow", None, None),
            // Gated mode: the page needs a session; a foreign Host is not the refusal.
            (Gated, RouteRequest { own_host: false, ..get("/") }, "302 login", Some("session/rejected"), None),
            (Gated, get("/jobs"), "302 login", Some("session/rejected"), None),
            // Token routes: the bearer seam alone decides, in either mode.
            (Loopback, RouteRequest { bearer: Some(GOOD_TOKEN), ..drain }, "allow token ops", Some("token/accepted"), Some(token_ok.clone())),
            (Gated, RouteRequest { bearer: Some(GOOD_TOKEN), ..post(TOKEN_ROUTE) }, "allow token ops", Some("token/accepted"), Some(token_ok)),
            (Loopback, drain, "401", Some("token/rejected"), Some(token_refused.clone())),
            (Loopback, RouteRequest { bearer: Some("wrong"), session_token: Some(LOOPBACK_TOKEN), ..drain }, "401", Some("token/rejected"), Some(token_refused.clone())),
            (Gated, RouteRequest { session_cookie: Some(LIVE), ..drain }, "401", Some("token/rejected"), Some(token_refused)),
            (Loopback, RouteRequest { bearer: Some(DOWN_TOKEN), ..drain }, "503 fake", Some("token/unavailable"),
                Some(json!({"event": "token_auth_failure", "provider": "fake",
                    "reason": "provider_unreachable", "path": TOKEN_ROUTE, "ip": IP}))),
            // Public paths: nothing counted, nothing audited.
            (Loopback, RouteRequest { public: true, ..get("/api/status") }, "allow", None, None),
            (Gated, RouteRequest { public: true, session_cookie: Some("stale"), ..post("/auth/logout") }, "allow", None, None),
            // Loopback mode: the session-token header (a cookie means nothing).
            (Loopback, jobs, "401 missing_session_token", Some("session/rejected"), None),
            (Loopback, RouteRequest { session_token: Some(""), ..jobs }, "401 missing_session_token", Some("session/rejected"), None),
            (Loopback, RouteRequest { session_token: Some("wrong"), ..jobs }, "401 invalid_session_token", Some("session/rejected"), None),
            (Loopback, RouteRequest { session_cookie: Some(LIVE), ..jobs }, "401 missing_session_token", Some("session/rejected"), None),
            (Loopback, RouteRequest { session_token: Some(LOOPBACK_TOKEN), ..jobs }, "allow session local", Some("session/accepted"), None),
            // A header cannot be forged cross-site: no Origin check on it.
            (Loopback, RouteRequest { session_token: Some(LOOPBACK_TOKEN), origin: FOREIGN, ..post("/api/jobs") }, "allow session local", Some("session/accepted"), None),
            // Gated mode: a live cookie session; a dead cookie is audited.
            (Gated, jobs, "401 no_session +login_url", Some("session/rejected"), None),
            (Gated, RouteRequest { session_token: Some(LOOPBACK_TOKEN), ..jobs }, "401 no_session +login_url", Some("session/rejected"), None),
            (Gated, RouteRequest { session_cookie: Some("stale"), ..jobs }, "401 invalid_session +login_url", Some("session/rejected"),
                Some(json!({"event": "session_rejected", "reason": "invalid_session", "path": "/api/jobs", "ip": IP}))),
            (Gated, RouteRequest { session_cookie: Some("stale"), ..get("/") }, "302 login", Some("session/rejected"),
                Some(json!({"event": "session_rejected", "reason": "invalid_session", "path": "/", "ip": IP}))),
            (Gated, RouteRequest { session_cookie: Some(LIVE), ..jobs }, "allow session admin", Some("session/accepted"), None),
            // CSRF: a cookie session's write must come from an allowed origin (or no browser).
            (Gated, RouteRequest { session_cookie: Some(LIVE), origin: FOREIGN, ..post("/api/jobs") }, "forbidden origin", None, None),
            (Gated, RouteRequest { session_cookie: Some(LIVE), origin: OURS, ..post("/api/jobs") }, "allow session admin", Some("session/accepted"), None),
            (Gated, RouteRequest { session_cookie: Some(LIVE), ..post("/api/jobs") }, "allow session admin", Some("session/accepted"), None),
            (Gated, RouteRequest { session_cookie: Some(LIVE), origin: FOREIGN, ..jobs }, "allow session admin", Some("session/accepted"), None),
            (Gated, RouteRequest { session_cookie: Some("stale"), origin: FOREIGN, ..post("/api/jobs") }, "401 invalid_session +login_url", Some("session/rejected"),
                Some(json!({"event": "session_rejected", "reason": "invalid_session", "path": "/api/jobs", "ip": IP}))),
        ];
        for (mode, req, expected, metric, audit) in table {
            check(mode, req, expected, metric, audit).await;
        }
    }
}
