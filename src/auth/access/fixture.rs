//! A real [`Access`] for the unit tests: an SQLite store and an audit file in a temp dir,
//! and a token provider that accepts one token and is "unreachable" for another.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;

use super::{Access, Origin};
use crate::audit::AuditLog;
use crate::auth::basic::BasicProvider;
use crate::auth::password::{PasswordHash, hash_password};
use crate::auth::ratelimit::RateLimiter;
use crate::auth::session::DashboardAuth;
use crate::auth::sessions::{Session, Sessions};
use crate::auth::token::{ProviderError, TokenAuth, TokenPrincipal, TokenProvider, VerifyFuture};
use crate::clock::ManualClock;
use crate::metrics::{LiveGauges, Metrics};

/// A browser Origin the dashboard does not allow, and its own.
pub const FOREIGN: Option<Origin<'static>> = Some(Origin {
    value: "https://evil.example",
    allowed: false,
});
pub const OURS: Option<Origin<'static>> = Some(Origin {
    value: "http://127.0.0.1:9119",
    allowed: true,
});

/// The client every test request comes from.
pub const IP: &str = "203.0.113.7";
/// The loopback-mode session token.
pub const LOOPBACK_TOKEN: &str = "loopback-session-token";
/// A bearer token the fake provider accepts (as `ops`), and one it cannot check.
pub const GOOD_TOKEN: &str = "service-token";
pub const DOWN_TOKEN: &str = "token-while-the-provider-is-down";
pub const TOKEN_ROUTE: &str = "/api/gateway/drain";
/// The `basic` provider's user, in [`Mode::GatedPassword`].
pub const USER: &str = "admin";
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Loopback,
    /// Gated, without a password provider.
    Gated,
    GatedPassword,
}

#[derive(Debug)]
struct FakeProvider;

impl TokenProvider for FakeProvider {
    fn name(&self) -> &str {
        "fake"
    }
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        Box::pin(async move {
            match token {
                GOOD_TOKEN => Ok(Some(TokenPrincipal {
                    principal: "ops".into(),
                    provider: "fake".into(),
                    scopes: vec![],
                })),
                DOWN_TOKEN => Err(ProviderError::Unreachable("down".into())),
                _ => Ok(None),
            }
        })
    }
}

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub access: Access,
    audit_path: std::path::PathBuf,
    metrics: Arc<Metrics>,
}

fn dashboard(mode: Mode) -> DashboardAuth {
    static HASH: OnceLock<String> = OnceLock::new();
    match mode {
        Mode::Loopback => DashboardAuth::Loopback {
            session_token: SecretString::from(LOOPBACK_TOKEN),
        },
        Mode::Gated => DashboardAuth::Gated { basic: None },
        Mode::GatedPassword => {
            let hash = HASH.get_or_init(|| hash_password(PASSWORD).unwrap());
            let hash = PasswordHash::parse(hash).unwrap();
            DashboardAuth::Gated {
                basic: Some(Arc::new(BasicProvider::new(USER.into(), hash))),
            }
        }
    }
}

impl Fixture {
    pub async fn new(mode: Mode) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new("2026-11-22T10:00:00Z".parse().unwrap());
        let store = crate::store::Store::sqlite(&dir.path().join("state.db"), &*clock)
            .await
            .unwrap();
        let loopback = matches!(mode, Mode::Loopback);
        let sessions = Sessions::new(store, clock.clone(), Duration::from_secs(3600), loopback);
        let mut tokens = TokenAuth::default();
        tokens.register(Arc::new(FakeProvider));
        tokens.register_route(TOKEN_ROUTE);
        let audit_path = dir.path().join("logs/dashboard-auth.log");
        let metrics = Arc::new(Metrics::default());
        let access = Access::new(
            tokens,
            dashboard(mode),
            sessions,
            RateLimiter::new(10, Duration::from_secs(60)),
            Arc::new(AuditLog::new(audit_path.clone(), clock)),
            metrics.clone(),
        );
        Self {
            _dir: dir,
            access,
            audit_path,
            metrics,
        }
    }

    /// A live session (gated mode) and its cookie value.
    pub async fn session(&self) -> (String, Session) {
        use secrecy::ExposeSecret;
        let (cookie, session) = self.access.sessions.create(USER, "basic").await.unwrap();
        (cookie.expose_secret().to_owned(), session)
    }

    /// A ticket for `session`, minted without an audit record.
    pub async fn ticket(&self, session: &Session) -> String {
        self.access
            .sessions
            .mint_ticket(session)
            .await
            .unwrap()
            .unwrap()
    }

    /// The audit records written so far, without their timestamps.
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_path).unwrap_or_default();
        text.lines()
            .map(|line| {
                let mut record: Value = serde_json::from_str(line).unwrap();
                assert!(record["ts"].is_string(), "{line}");
                record.as_object_mut().unwrap().remove("ts");
                record
            })
            .collect()
    }

    /// The `auth_decisions` samples so far, as `gate/decision count`.
    pub fn decisions(&self) -> Vec<String> {
        let text = self.metrics.render(LiveGauges {
            in_flight: 0,
            state: "running",
        });
        text.lines()
            .filter_map(|l| l.strip_prefix("hermes_auth_decisions_total{gate=\""))
            .map(|l| l.replace("\",decision=\"", "/").replace("\"}", ""))
            .collect()
    }
}

pub fn ip() -> IpAddr {
    IP.parse().unwrap()
}
