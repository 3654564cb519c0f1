//! Dashboard session modes (SPEC §9).
//!
//! Loopback mode: the dashboard is bound to loopback and no session provider is set, so a
//! per-process session token (from `HERMES_DASHBOARD_SESSION_TOKEN` or random) guards
//! `/api/*`. Gated mode: any other bind; cookie sessions from registered providers are
//! required, and until a provider exists nothing but public paths and token routes opens.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::basic::BasicProvider;
use super::constant_time_eq;
use super::password::PasswordHash;
use crate::config::{Config, is_loopback_host};

/// How dashboard requests are authenticated.
pub enum DashboardAuth {
    Loopback {
        session_token: SecretString,
    },
    /// Cookie sessions from the registered providers (none registered = nothing opens).
    Gated {
        basic: Option<Arc<BasicProvider>>,
    },
}

impl std::fmt::Debug for DashboardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Loopback { .. } => "Loopback",
            Self::Gated { .. } => "Gated",
        })
    }
}

/// Why a dashboard request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRejection {
    MissingSessionToken,
    InvalidSessionToken,
    NoSession,
    /// A session cookie that names no live session (unknown, expired or logged out).
    InvalidSession,
}

impl SessionRejection {
    /// The `reason` field of the 401 body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingSessionToken => "missing_session_token",
            Self::InvalidSessionToken => "invalid_session_token",
            Self::NoSession => "no_session",
            Self::InvalidSession => "invalid_session",
        }
    }
}

impl DashboardAuth {
    /// Chooses the mode from the config.
    pub fn from_config(config: &Config) -> Self {
        let b = &config.dashboard.basic_auth;
        let basic = (!b.username.is_empty())
            .then(|| PasswordHash::parse(&b.password_hash).ok())
            .flatten()
            .map(|hash| Arc::new(BasicProvider::new(b.username.clone(), hash)));
        if is_loopback_host(&config.dashboard.host) && basic.is_none() {
            let session_token = config
                .secrets
                .session_token
                .clone()
                .unwrap_or_else(|| SecretString::from(crate::ids::random_urlsafe(32)));
            Self::Loopback { session_token }
        } else {
            Self::Gated { basic }
        }
    }

    /// True in gated mode (the `auth_required` status field).
    pub fn is_gated(&self) -> bool {
        matches!(self, Self::Gated { .. })
    }

    /// The password provider, when one is registered (gated mode only).
    pub fn basic(&self) -> Option<&Arc<BasicProvider>> {
        match self {
            Self::Gated { basic } => basic.as_ref(),
            Self::Loopback { .. } => None,
        }
    }

    /// Checks a loopback-mode session token (`X-Hermes-Session-Token` header, or `?token=`
    /// on a WebSocket). Gated mode never accepts it.
    pub fn check(&self, session_header: Option<&str>) -> Result<(), SessionRejection> {
        match self {
            Self::Loopback { session_token } => match session_header {
                None | Some("") => Err(SessionRejection::MissingSessionToken),
                Some(t)
                    if constant_time_eq(t.as_bytes(), session_token.expose_secret().as_bytes()) =>
                {
                    Ok(())
                }
                Some(_) => Err(SessionRejection::InvalidSessionToken),
            },
            Self::Gated { .. } => Err(SessionRejection::NoSession),
        }
    }
}
