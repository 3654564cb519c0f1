//! Password login and logout, WebSocket tickets, and the check a WebSocket makes before
//! its upgrade (Origin, then ticket or loopback token). Every refusal and success is
//! audited with non-secret fields only: never a password, cookie or ticket.

use std::net::IpAddr;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;

use super::{Access, Origin};
use crate::audit::AuditEvent;
use crate::auth::session::SessionRejection;
use crate::auth::sessions::{Session, TicketRejection, ticket_prefix};
use crate::store::StoreError;

/// Longest username a password login may carry (the username is audited).
pub const MAX_USERNAME_BYTES: usize = 128;
/// Longest password a password login may carry.
pub const MAX_PASSWORD_BYTES: usize = 1024;

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

/// How minting a WebSocket ticket ended.
#[derive(Debug)]
pub enum MintOutcome {
    /// The ticket (shown once; the store keeps its digest).
    Minted(String),
    /// The session ended (logged out or expired) before the ticket could be stored.
    SessionEnded,
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

impl Access {
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

    /// Mints a single-use WebSocket ticket bound to `session`; audited. A session that
    /// ended after the gate looked it up (a logout on any replica) mints nothing.
    pub async fn mint_ticket(&self, session: &Session, ip: IpAddr) -> MintOutcome {
        match self.sessions.mint_ticket(session).await {
            Ok(Some(ticket)) => {
                self.audit.record(
                    AuditEvent::WsTicketMinted,
                    &[
                        ("principal", json!(session.principal)),
                        ("provider", json!(session.provider)),
                        ("ip", json!(ip.to_string())),
                    ],
                );
                MintOutcome::Minted(ticket)
            }
            Ok(None) => {
                self.metrics.auth_decision("session", "rejected");
                self.audit.record(
                    AuditEvent::SessionRejected,
                    &[
                        ("reason", json!(SessionRejection::InvalidSession.as_str())),
                        ("ip", json!(ip.to_string())),
                    ],
                );
                MintOutcome::SessionEnded
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store a WebSocket ticket");
                MintOutcome::StoreFailed(e)
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

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::{Value, json};

    use super::super::fixture::*;
    use super::super::{Decision, RouteRequest};
    use super::*;

    fn describe(outcome: &LoginOutcome) -> String {
        match outcome {
            LoginOutcome::SignedIn { session, .. } => {
                format!("signed in {} via {}", session.principal, session.provider)
            }
            LoginOutcome::RateLimited { .. } => "rate limited".into(),
            LoginOutcome::NoPasswordProvider => "no password provider".into(),
            LoginOutcome::InvalidBody => "invalid body".into(),
            LoginOutcome::InvalidCredentials => "invalid credentials".into(),
            LoginOutcome::StoreFailed(e) => format!("store failed: {e}"),
        }
    }

    fn failure(reason: &str, username: Option<&str>) -> Value {
        json!({"event": "login_failure", "provider": "basic", "reason": reason,
            "username": username, "ip": IP})
    }

    fn login(username: &'static str, password: &'static str) -> Option<Credentials<'static>> {
        Some(Credentials { username, password })
    }

    #[tokio::test]
    async fn a_password_login_is_decided_and_audited() {
        let long_name = "u".repeat(MAX_USERNAME_BYTES + 1);
        let long_password = "p".repeat(MAX_PASSWORD_BYTES + 1);
        #[rustfmt::skip]
        let table = [
            (Mode::Gated, login(USER, PASSWORD), "no password provider", failure("no_password_provider", None)),
            (Mode::Loopback, login(USER, PASSWORD), "no password provider", failure("no_password_provider", None)),
            (Mode::GatedPassword, None, "invalid body", failure("invalid_body", None)),
            (Mode::GatedPassword, Some(Credentials { username: &long_name, password: PASSWORD }), "invalid body", failure("invalid_body", None)),
            (Mode::GatedPassword, Some(Credentials { username: USER, password: &long_password }), "invalid body", failure("invalid_body", None)),
            (Mode::GatedPassword, login(USER, "wrong"), "invalid credentials", failure("invalid_credentials", Some(USER))),
            (Mode::GatedPassword, login("nobody", PASSWORD), "invalid credentials", failure("invalid_credentials", Some("nobody"))),
            (Mode::GatedPassword, login(USER, PASSWORD), "signed in admin via basic",
                json!({"event": "login_success", "provider": "basic", "principal": USER, "ip": IP})),
        ];
        for (mode, credentials, expected, audit) in table {
            let fx = Fixture::new(mode).await;
            let outcome = fx.access.password_login(ip(), credentials).await;
            let what = format!("{mode:?} {credentials:?}");
            assert_eq!(describe(&outcome), expected, "{what}");
            assert_eq!(fx.audit(), [audit], "{what}");
            assert!(
                fx.decisions().is_empty(),
                "{what}: logins are not gate decisions"
            );
        }
    }

    #[tokio::test]
    async fn a_signed_in_cookie_opens_routes_until_logout() {
        let fx = Fixture::new(Mode::GatedPassword).await;
        let LoginOutcome::SignedIn { cookie, .. } =
            fx.access.password_login(ip(), login(USER, PASSWORD)).await
        else {
            panic!("the right password signs in");
        };
        let req = RouteRequest {
            path: "/api/jobs",
            public: false,
            read: true,
            bearer: None,
            session_token: None,
            session_cookie: Some(cookie.expose_secret()),
            host_sent: true,
            own_host: true,
            origin: None,
            ip: IP,
        };
        let signed_in = fx.access.route(&req).await;
        assert!(matches!(signed_in, Decision::Allow(_)), "{signed_in:?}");
        fx.access.logout(Some(cookie.expose_secret()), ip()).await;
        // A second logout and one without a cookie end nothing and audit nothing.
        fx.access.logout(Some(cookie.expose_secret()), ip()).await;
        fx.access.logout(None, ip()).await;
        let after = fx.access.route(&req).await;
        assert!(matches!(after, Decision::Unauthenticated(_)), "{after:?}");
        let events: Vec<Value> = fx.audit().iter().map(|r| r["event"].clone()).collect();
        assert_eq!(events, ["login_success", "logout", "session_rejected"]);
        assert_eq!(fx.audit()[1], json!({"event": "logout", "ip": IP}));
        assert!(
            !fx.audit()
                .iter()
                .any(|r| r.to_string().contains(cookie.expose_secret()))
        );
    }

    #[tokio::test]
    async fn the_eleventh_login_attempt_in_a_minute_is_refused_and_audited() {
        let fx = Fixture::new(Mode::Gated).await;
        for _ in 0..10 {
            let outcome = fx.access.password_login(ip(), None).await;
            assert_eq!(describe(&outcome), "no password provider");
        }
        match fx.access.password_login(ip(), login(USER, PASSWORD)).await {
            LoginOutcome::RateLimited { retry_after } => assert!(
                retry_after > Duration::from_secs(30) && retry_after <= Duration::from_secs(60),
                "{retry_after:?}"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(fx.audit().len(), 11);
        assert_eq!(fx.audit()[10], failure("rate_limited", None));
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let outcome = fx.access.password_login(other, None).await;
        assert_eq!(
            describe(&outcome),
            "no password provider",
            "another client is not limited"
        );
    }

    /// Stands for a fresh ticket of a live session (the loopback one in loopback mode).
    const MINTED: &str = "<a fresh ticket>";

    fn socket(
        origin: Option<Origin<'static>>,
        ticket: Option<&'static str>,
        token: Option<&'static str>,
    ) -> SocketRequest<'static> {
        SocketRequest {
            origin,
            ticket,
            token,
            ip: IP,
        }
    }

    fn rejected(reason: &str) -> Option<Value> {
        Some(json!({"event": "ws_ticket_rejected", "reason": reason, "ip": IP}))
    }

    #[tokio::test]
    async fn who_may_open_a_dashboard_websocket() {
        use Mode::*;
        let foreign_origin = json!({"event": "ws_ticket_rejected", "reason": "foreign_origin",
            "origin": "https://evil.example", "ip": IP});
        let foreign =
            "refused foreign_origin: Origin https://evil.example may not open dashboard WebSockets";
        let token_not_accepted = "refused token_not_accepted: this dashboard requires a ticket from POST /api/auth/ws-ticket; ?token= is not accepted";
        #[rustfmt::skip]
        let table = [
            (Gated, socket(OURS, Some(MINTED), None), "open admin", None),
            (Gated, socket(None, Some(MINTED), None), "open admin", None),
            (Gated, socket(FOREIGN, Some(MINTED), None), foreign, Some(foreign_origin.clone())),
            (Gated, socket(None, None, Some(LOOPBACK_TOKEN)), token_not_accepted, rejected("token_not_accepted")),
            (Gated, socket(None, Some(MINTED), Some("x")), token_not_accepted, rejected("token_not_accepted")),
            (Gated, socket(None, Some("unknown-ticket"), None), "refused unknown: ticket unknown-… is unknown", rejected("unknown")),
            (Gated, socket(None, None, None), "refused missing_ticket: open this socket with ?ticket= from POST /api/auth/ws-ticket", rejected("missing_ticket")),
            (Loopback, socket(None, None, Some(LOOPBACK_TOKEN)), "open local", None),
            // A ticket, when given, decides (the token is not consulted).
            (Loopback, socket(None, Some(MINTED), Some("wrong")), "open local", None),
            (Loopback, socket(None, None, Some("wrong")), "refused invalid_session_token: the session token is not valid", rejected("invalid_session_token")),
            (Loopback, socket(FOREIGN, None, Some(LOOPBACK_TOKEN)), foreign, Some(foreign_origin)),
        ];
        for (mode, req, expected, audit) in table {
            let fx = Fixture::new(mode).await;
            let session = match mode {
                Loopback => Session::loopback(),
                _ => fx.session().await.1,
            };
            let ticket = fx.ticket(&session).await;
            let req = SocketRequest {
                ticket: req
                    .ticket
                    .map(|t| if t == MINTED { ticket.as_str() } else { t }),
                ..req
            };
            let what = format!("{mode:?} {req:?}");
            let got = match fx.access.open_socket(&req).await {
                Ok(session) => format!("open {}", session.principal),
                Err(refusal) => format!("refused {}: {refusal}", refusal.reason()),
            };
            assert_eq!(got, expected, "{what}");
            assert_eq!(fx.audit(), audit.into_iter().collect::<Vec<_>>(), "{what}");
        }
    }

    #[tokio::test]
    async fn a_minted_ticket_is_audited_and_opens_one_socket() {
        let fx = Fixture::new(Mode::Gated).await;
        let (_, session) = fx.session().await;
        let MintOutcome::Minted(ticket) = fx.access.mint_ticket(&session, ip()).await else {
            panic!("a live session mints");
        };
        let req = socket(None, None, None);
        let req = SocketRequest {
            ticket: Some(&ticket),
            ..req
        };
        assert_eq!(fx.access.open_socket(&req).await, Ok(session));
        let again = fx.access.open_socket(&req).await.unwrap_err();
        assert_eq!(again.reason(), "already_used");
        assert_eq!(
            fx.audit(),
            [
                json!({"event": "ws_ticket_minted", "principal": USER, "provider": "basic", "ip": IP}),
                rejected("already_used").unwrap(),
            ]
        );
        assert!(
            !fx.audit()
                .iter()
                .any(|r| r.to_string().contains(&ticket[..8]))
        );
    }
}
