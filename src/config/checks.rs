//! Checks of the effective values, once the environment has overridden the file:
//! whichever source set a value, it is checked (and origins normalised) here, including
//! the rules that relate two settings (a basic-auth username needs its hash, a public
//! API server needs `API_SERVER_KEY`).
//!
//! The password hash is checked with the parser `auth` verifies with
//! ([`crate::formats::password_hash`]); `config` keeps only its text.

use super::tree::Reader;
use super::{ApiServerConfig, DashboardConfig, Secrets, is_loopback_host, unbracketed};
use crate::formats::password_hash::StoredHash;

impl Reader {
    /// Checks the listeners' effective values and normalises their origin lists.
    pub(super) fn check_effective(
        &mut self,
        api: &mut ApiServerConfig,
        dashboard: &mut DashboardConfig,
    ) {
        self.check_host("gateway.api_server.host", &api.host);
        if api.model_name.is_empty() {
            self.issue("gateway.api_server.model_name", "must not be empty");
        }
        self.check_host("dashboard.host", &dashboard.host);
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

    /// A listener's host: an IP address (IPv6 with or without brackets) or a host name, so
    /// a typo is a config error here rather than a failed bind at start.
    fn check_host(&mut self, path: &str, host: &str) {
        if host.is_empty() {
            self.issue(path, "must not be empty");
            return;
        }
        if unbracketed(host).parse::<std::net::IpAddr>().is_err() && !is_host_name(host) {
            self.issue(
                path,
                format!("{host:?} is not an IP address or a host name"),
            );
        }
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

/// A DNS host name: dot-separated labels of letters, digits and inner hyphens (1–63
/// characters each, at most 253 in all).
fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}
