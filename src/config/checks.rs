//! Checks of the effective values, once the environment has overridden the file:
//! whichever source set a value, it is checked (and origins normalised) here, including
//! the rules that relate two settings (a basic-auth username needs its hash, a public
//! API server needs `API_SERVER_KEY`).
//!
//! The password hash is checked with the parser `auth` verifies with
//! ([`crate::formats::password_hash`]); `config` keeps only its text.

use super::tree::Reader;
use super::{ApiServerConfig, DashboardConfig, Secrets, is_loopback_host};
use crate::formats::password_hash::StoredHash;

impl Reader {
    /// Checks the listeners' effective values and normalises their origin lists.
    pub(super) fn check_effective(
        &mut self,
        api: &mut ApiServerConfig,
        dashboard: &mut DashboardConfig,
    ) {
        if api.host.is_empty() {
            self.issue("gateway.api_server.host", "must not be empty");
        }
        if api.model_name.is_empty() {
            self.issue("gateway.api_server.model_name", "must not be empty");
        }
        if dashboard.host.is_empty() {
            self.issue("dashboard.host", "must not be empty");
        }
        self.check_url("dashboard.public_url", &dashboard.public_url, true);
        let basic = &dashboard.basic_auth;
        if basic.username.is_empty() != basic.password_hash.is_empty() {
            self.issue(
                "dashboard.basic_auth",
                "username and password_hash must be set together (or neither)",
            );
        }
        if !basic.password_hash.is_empty()
            && let Err(e) = StoredHash::parse(&basic.password_hash)
        {
            self.issue("dashboard.basic_auth.password_hash", e.0);
        }
        let origins = std::mem::take(&mut api.cors_origins);
        api.cors_origins = self.origins("gateway.api_server.cors_origins", origins, true);
        let origins = std::mem::take(&mut dashboard.allowed_origins);
        dashboard.allowed_origins = self.origins("dashboard.allowed_origins", origins, false);
    }

    /// The effective `storage.url`: PostgreSQL only (SQLite is the absence of a URL).
    pub(super) fn check_storage_url(&mut self, url: &str) {
        let ok = ["postgres://", "postgresql://"]
            .iter()
            .any(|p| url.starts_with(p))
            && reqwest::Url::parse(url).is_ok();
        if !ok {
            // Never echo the URL: it may carry a password.
            self.issue(
                "storage.url",
                "expected a postgres:// or postgresql:// URL (or empty for SQLite in HERMES_HOME)",
            );
        }
    }

    /// An API server reachable from outside must have a key: refuse to serve turns
    /// unauthenticated.
    pub(super) fn check_api_key_required(&mut self, api: &ApiServerConfig, secrets: &Secrets) {
        if api.enabled && !is_loopback_host(&api.host) && secrets.api_server_key.is_none() {
            self.issue(
                "gateway.api_server.host",
                format!(
                    "{:?} is not a loopback address, so API_SERVER_KEY must be set (refusing to serve turns unauthenticated)",
                    api.host
                ),
            );
        }
    }
}
