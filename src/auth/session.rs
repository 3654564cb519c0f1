//! Dashboard session modes (SPEC §9).
//!
//! Loopback mode: the dashboard is bound to loopback and no session provider is set, so a
//! per-process session token (from `HERMES_DASHBOARD_SESSION_TOKEN` or random) guards
//! `/api/*`. Gated mode: any other bind; cookie sessions from registered providers are
//! required, and until a provider exists nothing but public paths and token routes opens.

use secrecy::{ExposeSecret, SecretString};

use super::constant_time_eq;
use crate::config::{Config, is_loopback_host};

/// How dashboard requests are authenticated.
pub enum DashboardAuth {
    Loopback { session_token: SecretString },
    Gated,
}

impl std::fmt::Debug for DashboardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Loopback { .. } => "Loopback",
            Self::Gated => "Gated",
        })
    }
}

/// Why a dashboard request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRejection {
    MissingSessionToken,
    InvalidSessionToken,
    NoSession,
}

impl SessionRejection {
    /// The `reason` field of the 401 body.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingSessionToken => "missing_session_token",
            Self::InvalidSessionToken => "invalid_session_token",
            Self::NoSession => "no_session",
        }
    }
}

impl DashboardAuth {
    /// Chooses the mode from the config.
    pub fn from_config(config: &Config) -> Self {
        let provider_configured = !config.dashboard.basic_auth.username.is_empty()
            && !config.dashboard.basic_auth.password_hash.is_empty();
        if is_loopback_host(&config.dashboard.host) && !provider_configured {
            let session_token = config
                .secrets
                .session_token
                .clone()
                .unwrap_or_else(|| SecretString::from(crate::ids::random_urlsafe(32)));
            Self::Loopback { session_token }
        } else {
            Self::Gated
        }
    }

    /// True in gated mode (the `auth_required` status field).
    pub fn is_gated(&self) -> bool {
        matches!(self, Self::Gated)
    }

    /// Checks a non-public dashboard request given its `X-Hermes-Session-Token` header.
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
            Self::Gated => Err(SessionRejection::NoSession),
        }
    }
}
