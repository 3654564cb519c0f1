//! The `cron` section: which provider fires jobs, the default time zone, the tick and
//! lease, and the `cron.chronos` endpoints and pinned keys.
//!
//! The chronos URLs carry keys and the agent's token, so they must be https (plain http
//! only to loopback). A pinned key is checked with the parser `chronos` builds its
//! verifier with ([`crate::formats::public_key`]); `config` keeps only its PEM text.

use super::tree::{Reader, Section};
use super::{ChronosConfig, CronConfig, CronProvider, is_loopback_host};
use crate::formats::public_key::PublicKey;

impl Reader {
    pub(super) fn cron(&mut self, top: &Section) -> CronConfig {
        let s = self.section(
            top,
            "cron",
            &[
                "provider",
                "timezone",
                "tick_interval_seconds",
                "lease_seconds",
                "chronos",
            ],
        );
        let provider = self.provider(&s);
        let timezone_name = self.string(&s, "timezone", "UTC");
        let timezone = match jiff::tz::TimeZone::get(&timezone_name) {
            Ok(tz) => tz,
            Err(_) => {
                self.issue(
                    "cron.timezone",
                    format!("unknown time zone {timezone_name:?} (use an IANA name such as Europe/Berlin)"),
                );
                jiff::tz::TimeZone::UTC
            }
        };
        let tick_interval_seconds = self.uint(&s, "tick_interval_seconds", 60, 1, 86_400);
        let lease_seconds = self.uint(&s, "lease_seconds", 300, 3, 86_400);
        let chronos = self.chronos(&s);
        CronConfig {
            provider,
            timezone,
            timezone_name,
            tick_interval_seconds,
            lease_seconds,
            chronos,
        }
    }

    fn provider(&mut self, s: &Section) -> CronProvider {
        match self.string(s, "provider", "").as_str() {
            "" => CronProvider::Default,
            "builtin" => CronProvider::Builtin,
            "chronos" => CronProvider::Chronos,
            other => {
                self.issue(
                    "cron.provider",
                    format!("unknown provider {other:?} (expected \"\", builtin or chronos)"),
                );
                CronProvider::Default
            }
        }
    }

    fn chronos(&mut self, s: &Section) -> ChronosConfig {
        let c = self.section(
            s,
            "chronos",
            &[
                "portal_url",
                "callback_url",
                "expected_audience",
                "nas_jwks_url",
                "nas_public_keys",
            ],
        );
        let chronos = ChronosConfig {
            portal_url: self.string(&c, "portal_url", ""),
            callback_url: self.string(&c, "callback_url", ""),
            expected_audience: self.string(&c, "expected_audience", ""),
            nas_jwks_url: self.string(&c, "nas_jwks_url", ""),
            nas_public_keys: self.strings(&c, "nas_public_keys"),
        };
        self.check_chronos_urls(&chronos);
        for (i, pem) in chronos.nas_public_keys.iter().enumerate() {
            let path = format!("cron.chronos.nas_public_keys[{i}]");
            if PublicKey::from_pem(pem, &path).is_err() {
                self.issue(
                    path,
                    "expected an RSA or EC public key in PEM form (-----BEGIN PUBLIC KEY-----)",
                );
            }
        }
        chronos
    }

    fn check_chronos_urls(&mut self, chronos: &ChronosConfig) {
        for (key, value) in [
            ("portal_url", &chronos.portal_url),
            ("callback_url", &chronos.callback_url),
            ("nas_jwks_url", &chronos.nas_jwks_url),
        ] {
            self.check_url(&format!("cron.chronos.{key}"), value, true);
        }
        // Keys and the agent's token travel over these: https, or plain http to loopback.
        for (key, value) in [
            ("portal_url", &chronos.portal_url),
            ("nas_jwks_url", &chronos.nas_jwks_url),
        ] {
            if let Ok(u) = reqwest::Url::parse(value)
                && u.scheme() == "http"
                && !u.host_str().is_some_and(is_loopback_host)
            {
                self.issue(
                    format!("cron.chronos.{key}"),
                    format!("{value:?} must be an https URL (plain http only to a loopback host such as 127.0.0.1)"),
                );
            }
        }
    }
}
