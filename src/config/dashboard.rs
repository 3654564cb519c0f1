//! The `dashboard` section: its listener, drain auth, the `basic` login provider and
//! the proxies whose `X-Forwarded-For` is believed.
//!
//! The basic-auth secret is refused in the file (it comes only from the environment);
//! the password hash is checked once the environment may have replaced it
//! (`checks`).

use serde_json::Value;

use super::tree::{Reader, Section, describe};
use super::{BasicAuthConfig, DashboardConfig, DrainAuthConfig};

impl Reader {
    pub(super) fn dashboard(&mut self, top: &Section) -> DashboardConfig {
        let s = self.section(
            top,
            "dashboard",
            &[
                "enabled",
                "host",
                "port",
                "public_url",
                "allowed_origins",
                "drain_auth",
                "basic_auth",
                "ws_heartbeat_seconds",
                "trusted_proxies",
            ],
        );
        let drain_auth = self.drain_auth(&s);
        let basic_auth = self.basic_auth(&s);
        DashboardConfig {
            enabled: self.bool(&s, "enabled", true),
            host: self.string(&s, "host", "127.0.0.1"),
            port: self.uint(&s, "port", 9119, 0, 65535) as u16,
            public_url: self.string(&s, "public_url", ""),
            allowed_origins: self.strings(&s, "allowed_origins"),
            drain_auth,
            basic_auth,
            ws_heartbeat_seconds: self.uint(&s, "ws_heartbeat_seconds", 20, 1, 3600),
            trusted_proxies: self.trusted_proxies(&s),
        }
    }

    fn drain_auth(&mut self, s: &Section) -> DrainAuthConfig {
        let d = self.section(s, "drain_auth", &["scope", "min_secret_chars"]);
        let drain_auth = DrainAuthConfig {
            scope: self.string(&d, "scope", "drain"),
            min_secret_chars: self.uint(&d, "min_secret_chars", 43, 1, 4096) as usize,
        };
        if drain_auth.scope.is_empty() {
            self.issue("dashboard.drain_auth.scope", "must not be empty");
        }
        drain_auth
    }

    fn basic_auth(&mut self, s: &Section) -> BasicAuthConfig {
        let b = self.section(
            s,
            "basic_auth",
            &["username", "password_hash", "secret", "session_ttl_seconds"],
        );
        self.no_secret_in_file(&b, "secret", "HERMES_DASHBOARD_BASIC_AUTH_SECRET");
        BasicAuthConfig {
            username: self.string(&b, "username", ""),
            password_hash: self.string(&b, "password_hash", ""),
            session_ttl_seconds: self.uint(&b, "session_ttl_seconds", 0, 0, 31_536_000),
        }
    }

    /// `dashboard.trusted_proxies`: CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses.
    fn trusted_proxies(&mut self, s: &Section) -> Vec<ipnet::IpNet> {
        let path = s.key_path("trusted_proxies");
        self.known.push((path.clone(), Value::Array(Vec::new())));
        let items = match Self::value(s, "trusted_proxies") {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.issue(
                    path,
                    format!("expected a list of CIDRs, got {}", describe(other)),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Some(v) = item.as_str().map(str::trim) else {
                self.issue(
                    format!("{path}[{i}]"),
                    format!("expected a string, got {}", describe(item)),
                );
                continue;
            };
            let parsed = v
                .parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.issue(
                    format!("{path}[{i}]"),
                    format!("{v:?} is not a CIDR like 10.0.0.0/8 or fd00::/8, nor an IP address"),
                ),
            }
        }
        out
    }
}
