//! The `drain-secret` token provider: a per-agent shared secret for the drain endpoint.
//!
//! A secret is used only if it passes the entropy gate (length, distinct characters,
//! Shannon bits); otherwise the provider is not registered and the drain route stays
//! behind the session gate (fail closed). `HERMES_DASHBOARD_DRAIN_SECRET_NEXT` is accepted
//! too, so a new secret can be rolled out before the old one is withdrawn.

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};

use super::token::{TokenPrincipal, TokenProvider, VerifyFuture};
use super::{ProviderStatus, constant_time_eq};

/// The exact path the provider opts into the token seam.
pub const DRAIN_ROUTE: &str = "/api/gateway/drain";
/// The restart endpoint: the same orchestrator drives it with the same secret.
pub const RESTART_ROUTE: &str = "/api/gateway/restart";
/// Provider name (compat).
pub const PROVIDER_NAME: &str = "drain-secret";
/// Principal of a verified caller (compat).
pub const PRINCIPAL: &str = "drain-control";
/// A secret needs at least this many distinct characters.
pub const MIN_DISTINCT_CHARS: usize = 16;
/// And at least this much total Shannon entropy.
pub const MIN_SHANNON_BITS: f64 = 128.0;

/// Total Shannon entropy of `s` in bits: length × per-character entropy.
fn shannon_bits(s: &str) -> f64 {
    let mut counts: HashMap<char, usize> = HashMap::new();
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let n = s.chars().count() as f64;
    let per_char: f64 = counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_char * n
}

/// Returns why `secret` is too weak, or `Ok(())`. The reason never contains the secret.
pub fn assess_secret_strength(secret: &str, min_chars: usize) -> Result<(), String> {
    let len = secret.chars().count();
    if len == 0 {
        return Err("secret is empty".into());
    }
    if len < min_chars {
        return Err(format!(
            "secret too short: {len} characters (need at least {min_chars}; generate one with `hermes-gateway secret generate`)"
        ));
    }
    let distinct = secret
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if distinct < MIN_DISTINCT_CHARS {
        return Err(format!(
            "secret has only {distinct} distinct characters (need at least {MIN_DISTINCT_CHARS}); it looks structured"
        ));
    }
    let bits = shannon_bits(secret);
    if bits < MIN_SHANNON_BITS {
        return Err(format!(
            "secret entropy too low: {bits:.0} bits (need at least {MIN_SHANNON_BITS:.0}); it looks repeated"
        ));
    }
    Ok(())
}

/// Verifies bearer tokens against the current (and optional next) drain secret.
pub struct DrainSecretProvider {
    secrets: Vec<SecretString>,
    scope: String,
}

impl std::fmt::Debug for DrainSecretProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainSecretProvider")
            .field("secrets", &self.secrets.len())
            .field("scope", &self.scope)
            .finish()
    }
}

impl DrainSecretProvider {
    /// Builds the provider if the secrets pass the gate; always says what it decided.
    ///
    /// The current secret must be set and strong. A weak `_NEXT` is dropped (with the
    /// reason in the status) while the current one keeps working.
    pub fn from_env_secrets(
        current: Option<&SecretString>,
        next: Option<&SecretString>,
        scope: &str,
        min_chars: usize,
    ) -> (Option<Self>, ProviderStatus) {
        let status = |registered: bool, refused: bool, detail: String| ProviderStatus {
            name: PROVIDER_NAME.into(),
            registered,
            refused,
            detail,
        };
        let Some(current) = current else {
            let detail = if next.is_some() {
                "HERMES_DASHBOARD_DRAIN_SECRET is not set (HERMES_DASHBOARD_DRAIN_SECRET_NEXT alone is not enough); the drain endpoint stays behind the dashboard session gate"
            } else {
                "HERMES_DASHBOARD_DRAIN_SECRET is not set; the drain endpoint stays behind the dashboard session gate"
            };
            return (None, status(false, false, detail.into()));
        };
        if let Err(reason) = assess_secret_strength(current.expose_secret(), min_chars) {
            return (
                None,
                status(
                    false,
                    true,
                    format!(
                        "HERMES_DASHBOARD_DRAIN_SECRET rejected: {reason}; the drain endpoint stays behind the dashboard session gate (fail closed)"
                    ),
                ),
            );
        }
        let mut secrets = vec![current.clone()];
        let mut detail = format!("registered for {DRAIN_ROUTE} (scope {scope:?})");
        let mut refused = false;
        if let Some(next) = next {
            match assess_secret_strength(next.expose_secret(), min_chars) {
                Ok(()) => {
                    secrets.push(next.clone());
                    detail.push_str(", accepting the _NEXT secret too");
                }
                Err(reason) => {
                    refused = true;
                    detail.push_str(&format!(
                        "; HERMES_DASHBOARD_DRAIN_SECRET_NEXT ignored: {reason}"
                    ));
                }
            }
        }
        let provider = Self {
            secrets,
            scope: scope.to_owned(),
        };
        (Some(provider), status(true, refused, detail))
    }

    fn matches(&self, token: &str) -> bool {
        // Check every secret, without short-circuit, so timing says nothing about which.
        self.secrets.iter().fold(false, |acc, s| {
            acc | constant_time_eq(token.as_bytes(), s.expose_secret().as_bytes())
        })
    }
}

impl TokenProvider for DrainSecretProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        let principal = self.matches(token).then(|| TokenPrincipal {
            principal: PRINCIPAL.into(),
            provider: PROVIDER_NAME.into(),
            scopes: vec![self.scope.clone()],
        });
        Box::pin(std::future::ready(Ok(principal)))
    }
}

/// Generates a strong secret: 32 random bytes, URL-safe base64 without padding (43 chars).
pub fn generate_secret() -> String {
    loop {
        let s = crate::ids::random_urlsafe(32);
        // Rarely a random draw has under 16 distinct characters; draw again.
        if assess_secret_strength(&s, 43).is_ok() {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn entropy_gate_table() {
        let strong = generate_secret();
        assert_eq!(strong.len(), 43);
        let table: &[(&str, usize, Option<&str>)] = &[
            (&strong, 43, None),
            ("", 43, Some("empty")),
            ("a1B2c3d4e5f6g7h8i9j0", 43, Some("too short")),
            (&"a".repeat(60), 43, Some("distinct")),
            (&"abcd".repeat(15), 43, Some("distinct")),
            // 48 chars, 16 distinct, but one character dominates: low entropy.
            (
                &format!("{}{}", "a".repeat(33), "bcdefghijklmnop"),
                43,
                Some("entropy too low"),
            ),
            (&strong, 999, Some("too short")),
        ];
        for (s, min, expected) in table {
            let got = assess_secret_strength(s, *min);
            match expected {
                None => assert!(got.is_ok(), "{s:?}: {got:?}"),
                Some(fragment) => {
                    let reason = got.expect_err(s);
                    assert!(reason.contains(fragment), "{reason}");
                    assert!(
                        s.is_empty() || !reason.contains(*s),
                        "reason leaks the secret"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn verifies_current_and_next() {
        let (cur, next) = (generate_secret(), generate_secret());
        let (p, status) = DrainSecretProvider::from_env_secrets(
            Some(&secret(&cur)),
            Some(&secret(&next)),
            "drain",
            43,
        );
        let p = p.unwrap();
        assert!(
            status.registered && status.detail.contains("_NEXT"),
            "{status:?}"
        );
        let principal = p.verify(&cur).await.unwrap().unwrap();
        assert_eq!(principal.principal, "drain-control");
        assert_eq!(principal.provider, "drain-secret");
        assert_eq!(principal.scopes, vec!["drain"]);
        assert!(p.verify(&next).await.unwrap().is_some());
        assert!(p.verify(&generate_secret()).await.unwrap().is_none());
        assert!(p.verify("").await.unwrap().is_none());
        assert!(
            !format!("{p:?}").contains(&cur),
            "Debug never shows a secret"
        );
    }

    #[test]
    fn weak_or_missing_secrets_are_not_registered() {
        let (p, s) = DrainSecretProvider::from_env_secrets(None, None, "drain", 43);
        assert!(p.is_none() && !s.registered && s.detail.contains("not set"));
        assert!(!s.refused, "nothing was configured, so nothing was refused");
        let (p, s) = DrainSecretProvider::from_env_secrets(
            Some(&secret(&"ab".repeat(30))),
            None,
            "drain",
            43,
        );
        assert!(p.is_none() && s.detail.contains("rejected"), "{s:?}");
        assert!(s.refused, "{s:?}");
        let (p, s) = DrainSecretProvider::from_env_secrets(
            Some(&secret(&generate_secret())),
            Some(&secret("weak")),
            "lifecycle",
            43,
        );
        assert!(p.is_some() && s.detail.contains("_NEXT ignored"), "{s:?}");
        assert!(s.refused, "{s:?}");
    }
}
