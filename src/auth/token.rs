//! The generic service-token seam (SPEC §9): routes opt in by exact path; a bearer token is
//! offered to every provider in order and the first that accepts wins.
//!
//! Fails closed: a token route with no provider, no token or an unrecognised token is
//! rejected. A provider that cannot reach its backing store makes the answer 503 (only if
//! nobody accepted), and a provider that errors or panics is skipped, never fatal.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;

/// A verified service caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrincipal {
    /// Stable name of the caller, e.g. `drain-control`.
    pub principal: String,
    /// The provider that vouched for it.
    pub provider: String,
    /// Capabilities the caller holds.
    pub scopes: Vec<String>,
}

/// A provider could neither confirm nor deny a token.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("backing store unreachable: {0}")]
    Unreachable(String),
    #[error("provider failed: {0}")]
    Failed(String),
}

/// Boxed future returned by [`TokenProvider::verify`], so providers can do I/O.
pub type VerifyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<TokenPrincipal>, ProviderError>> + Send + 'a>>;

/// Anything that can vouch for a bearer token. `Ok(None)` means "not mine".
pub trait TokenProvider: Send + Sync + std::fmt::Debug {
    /// Name shown in status, logs and 503 bodies.
    fn name(&self) -> &str;
    /// Checks `token`; must compare secrets in constant time.
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a>;
}

/// The outcome of authenticating one request on a token route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenDecision {
    Accepted(TokenPrincipal),
    /// No token, no provider, or nobody recognised it: 401.
    Rejected,
    /// Nobody accepted and this provider was unreachable: 503.
    Unavailable(String),
}

/// Whether a provider is active, and if not, why (for `config check` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStatus {
    pub name: String,
    pub registered: bool,
    /// A credential was configured and the provider's gate refused it (or one of them):
    /// logged as a warning at start.
    pub refused: bool,
    pub detail: String,
}

/// The registry of token providers and token routes; immutable once built.
#[derive(Debug, Default)]
pub struct TokenAuth {
    providers: Vec<Arc<dyn TokenProvider>>,
    routes: HashSet<String>,
}

impl TokenAuth {
    /// Adds a provider; order of registration is order of consultation.
    pub fn register(&mut self, provider: Arc<dyn TokenProvider>) {
        self.providers.push(provider);
    }

    /// Opts an exact path into token auth.
    pub fn register_route(&mut self, path: &str) {
        self.routes.insert(path.to_owned());
    }

    /// True if `path` (exactly) is a token route.
    pub fn is_token_route(&self, path: &str) -> bool {
        self.routes.contains(path)
    }

    /// Names of the registered providers, in order.
    pub fn provider_names(&self) -> Vec<String> {
        self.providers.iter().map(|p| p.name().to_owned()).collect()
    }

    /// Offers `token` to every provider in order; see [`TokenDecision`].
    pub async fn authenticate(&self, token: Option<&str>) -> TokenDecision {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return TokenDecision::Rejected;
        };
        let mut unreachable = None;
        for provider in &self.providers {
            let verdict = AssertUnwindSafe(provider.verify(token))
                .catch_unwind()
                .await;
            match verdict {
                Ok(Ok(Some(principal))) => return TokenDecision::Accepted(principal),
                Ok(Ok(None)) => {}
                Ok(Err(ProviderError::Unreachable(why))) => {
                    tracing::warn!(provider = provider.name(), %why, "token provider unreachable");
                    unreachable.get_or_insert_with(|| provider.name().to_owned());
                }
                Ok(Err(e)) => {
                    tracing::warn!(provider = provider.name(), error = %e, "token provider failed; skipped");
                }
                Err(_) => {
                    tracing::error!(
                        provider = provider.name(),
                        "token provider panicked; skipped"
                    );
                }
            }
        }
        match unreachable {
            Some(name) => TokenDecision::Unavailable(name),
            None => TokenDecision::Rejected,
        }
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` header value (scheme
/// case-insensitive); anything else is no token.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let (scheme, rest) = header?.trim().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Fake {
        Accepts(&'static str, &'static str),
        Down(&'static str),
        Errors,
        Panics,
    }

    impl TokenProvider for Fake {
        fn name(&self) -> &str {
            match self {
                Fake::Accepts(n, _) | Fake::Down(n) => n,
                Fake::Errors => "errors",
                Fake::Panics => "panics",
            }
        }
        fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
            Box::pin(async move {
                match self {
                    Fake::Accepts(name, secret) => Ok((token == *secret).then(|| TokenPrincipal {
                        principal: (*name).into(),
                        provider: (*name).into(),
                        scopes: vec![],
                    })),
                    Fake::Down(_) => Err(ProviderError::Unreachable("down".into())),
                    Fake::Errors => Err(ProviderError::Failed("bug".into())),
                    Fake::Panics => panic!("provider bug"),
                }
            })
        }
    }

    fn seam(providers: Vec<Fake>) -> TokenAuth {
        let mut t = TokenAuth::default();
        for p in providers {
            t.register(Arc::new(p));
        }
        t.register_route("/api/gateway/drain");
        t
    }

    fn accepted_by(d: TokenDecision) -> String {
        match d {
            TokenDecision::Accepted(p) => p.provider,
            other => panic!("expected acceptance, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn stacking_rules() {
        use Fake::*;
        // First accepting provider wins.
        let t = seam(vec![
            Accepts("a", "x"),
            Accepts("b", "y"),
            Accepts("c", "y"),
        ]);
        assert_eq!(accepted_by(t.authenticate(Some("y")).await), "b");
        // No token, wrong token, no provider: rejected.
        assert_eq!(t.authenticate(None).await, TokenDecision::Rejected);
        assert_eq!(t.authenticate(Some("")).await, TokenDecision::Rejected);
        assert_eq!(t.authenticate(Some("z")).await, TokenDecision::Rejected);
        assert_eq!(
            seam(vec![]).authenticate(Some("y")).await,
            TokenDecision::Rejected
        );
        // Unreachable only matters when nobody accepts.
        let t = seam(vec![Down("d"), Accepts("a", "x")]);
        assert_eq!(accepted_by(t.authenticate(Some("x")).await), "a");
        assert_eq!(
            t.authenticate(Some("nope")).await,
            TokenDecision::Unavailable("d".into())
        );
        // Errors and panics are skipped.
        let t = seam(vec![Errors, Panics, Accepts("a", "x")]);
        assert_eq!(accepted_by(t.authenticate(Some("x")).await), "a");
        assert_eq!(t.authenticate(Some("q")).await, TokenDecision::Rejected);
    }

    #[test]
    fn routes_match_exactly() {
        let t = seam(vec![]);
        assert!(t.is_token_route("/api/gateway/drain"));
        assert!(!t.is_token_route("/api/gateway/drain/"));
        assert!(!t.is_token_route("/api/gateway/DRAIN"));
        assert!(!t.is_token_route("/api/gateway"));
    }

    #[test]
    fn bearer_extraction() {
        let table = [
            (Some("Bearer abc"), Some("abc")),
            (Some("bearer abc"), Some("abc")),
            (Some("BEARER  abc "), Some("abc")),
            (Some("Basic abc"), None),
            (Some("abc"), None),
            (Some("Bearer "), None),
            (None, None),
        ];
        for (header, expected) in table {
            assert_eq!(bearer_token(header), expected, "{header:?}");
        }
    }
}
