//! Fire-token keys from a JWKS URL, with a cache that survives the URL going down.
//!
//! Owns the fetch policy of SPEC §8: the last good key set is kept; an unknown `kid`
//! triggers at most one refetch per 30 s, and concurrent verifications share one fetch
//! (single flight); the set's lifetime comes from `Cache-Control: max-age`, clamped to
//! [1 min, 1 h]. A fetched set that is too large (over 1 MiB, counted while it streams) or
//! holds no usable key is a failed fetch: the last good set stays. When no key can be obtained (the JWKS is unreachable and the `kid` is not
//! cached) the answer is `NoKey` (503), never `BadToken`. Only the configured URL is ever
//! fetched: `jku`/`x5u`/`jwk` in a token header are ignored. Redirects are not followed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::verify::{
    FireAuthError, FireClaims, FirePolicy, FireVerifier, PublicKey, SignatureMemo,
};
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::outbound::LazyClient;

/// Least time between two fetches caused by unknown `kid`s (or retried after a failure).
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// The bounds on a key set's lifetime, whatever `Cache-Control` says.
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// The refusal of a token whose `kid` the JWKS, just asked, does not publish.
const UNKNOWN_KID: &str = "kid not in the JWKS";
/// Lifetime when the JWKS response has no `max-age`.
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// A JWKS larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The last good key set and when to look again.
#[derive(Debug, Default)]
struct Cache {
    /// Keys by `kid`; keys published without one are tried for tokens without a `kid`.
    by_kid: HashMap<String, PublicKey>,
    unnamed: Vec<PublicKey>,
    /// When the set goes stale (refetched on the next verification; kept if that fails).
    fresh_until: Option<Instant>,
    /// The last fetch attempt and whether it failed.
    last_attempt: Option<Instant>,
    last_failed: bool,
}

impl Cache {
    fn may_refetch(&self, now: Instant, interval: Duration) -> bool {
        self.last_attempt
            .is_none_or(|at| now.duration_since(at) >= interval)
    }
}

/// A fire-token verifier whose keys come from `cron.chronos.nas_jwks_url`.
#[derive(Debug)]
pub struct JwksVerifier {
    url: String,
    http: LazyClient,
    policy: FirePolicy,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    refetch_interval: Duration,
    cache: RwLock<Cache>,
    /// Tokens a key of the cache signed (a refetched key is a new key to it).
    memo: SignatureMemo,
    /// Held while fetching: one fetch at a time, the others wait for its result.
    fetching: tokio::sync::Mutex<()>,
}

/// Why a fetch failed (logged; never shown to the token's sender).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("JWKS request failed: {0}")]
    Http(String),
    #[error("JWKS answered HTTP {0}")]
    Status(u16),
    #[error("JWKS is not a JSON object with a `keys` array")]
    Shape,
    #[error("JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// A well-formed set without one usable signing key: never replaces a good set.
    #[error("JWKS holds no usable signing key (RSA or EC P-256/P-384)")]
    NoUsableKey,
}

impl JwksVerifier {
    /// Its HTTP client is built by the first fetch (one that cannot be built fails that
    /// fetch, as an unreachable JWKS does).
    pub fn new(url: &str, policy: FirePolicy, clock: SharedClock, metrics: Arc<Metrics>) -> Self {
        Self {
            url: url.to_owned(),
            http: LazyClient::new(|| {
                reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
            }),
            policy,
            clock,
            metrics,
            refetch_interval: REFETCH_INTERVAL,
            cache: RwLock::new(Cache::default()),
            memo: SignatureMemo::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Changes the least time between fetches (tests of rotation shorten it; production
    /// keeps [`REFETCH_INTERVAL`]).
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// Verifies with the cached keys if they can decide; `None` means "fetch first".
    fn try_cached(
        &self,
        token: &str,
        kid: Option<&str>,
        refetch_allowed: bool,
    ) -> Option<Result<FireClaims, FireAuthError>> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let stale = cache.fresh_until.is_none_or(|t| now >= t);
        let keys: Vec<&PublicKey> = match kid {
            Some(kid) => cache.by_kid.get(kid).into_iter().collect(),
            None => cache.unnamed.iter().chain(cache.by_kid.values()).collect(),
        };
        let may_ask = refetch_allowed && cache.may_refetch(now, self.refetch_interval);
        if (keys.is_empty() || stale) && may_ask {
            return None;
        }
        // A stale set still counts while the JWKS cannot be asked again (or is down).
        if !keys.is_empty() {
            return Some(
                self.memo
                    .verify(token, keys, &self.policy, self.clock.now()),
            );
        }
        Some(Err(if cache.last_failed || cache.last_attempt.is_none() {
            FireAuthError::NoKey("JWKS unreachable and the token's key is not cached")
        } else {
            FireAuthError::BadToken(UNKNOWN_KID)
        }))
    }

    async fn verify_token(&self, token: &str) -> Result<FireClaims, FireAuthError> {
        // A token that is bad whatever the key is refused before any key is looked up.
        let header = super::verify::precheck(token)?;
        let kid = header.kid.as_deref();
        match self.try_cached(token, kid, true) {
            // The JWKS was not asked for this token (a refetch is at most every 30 s): the
            // key may well be published, so this is "cannot check now", not a bad token.
            Some(Err(FireAuthError::BadToken(UNKNOWN_KID))) => {
                return Err(FireAuthError::NoKey(
                    "kid not in the cached JWKS; it is asked again within 30 s",
                ));
            }
            Some(done) => return done,
            None => {}
        }
        {
            let _one = self.fetching.lock().await;
            // Whoever held the lock may have just fetched: only fetch if still allowed.
            let due = {
                let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
                cache.may_refetch(Instant::now(), self.refetch_interval)
            };
            if due {
                self.refresh().await;
            }
        }
        self.try_cached(token, kid, false)
            .unwrap_or(Err(FireAuthError::NoKey("JWKS unreachable")))
    }

    /// Fetches the key set; on success replaces the cache, on failure keeps it.
    async fn refresh(&self) {
        let started = Instant::now();
        let result = self.fetch().await;
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.last_attempt = Some(started);
        match result {
            Ok((by_kid, unnamed, ttl)) => {
                self.metrics.jwks_fetch("ok");
                tracing::info!(
                    keys = by_kid.len() + unnamed.len(),
                    ttl_s = ttl.as_secs(),
                    "fire-token JWKS fetched"
                );
                cache.by_kid = by_kid;
                cache.unnamed = unnamed;
                cache.fresh_until = Some(started + ttl);
                cache.last_failed = false;
            }
            Err(e) => {
                self.metrics.jwks_fetch("error");
                tracing::warn!(error = %e, cached_keys = cache.by_kid.len() + cache.unnamed.len(), "fire-token JWKS fetch failed; keeping the last good key set");
                cache.last_failed = true;
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn fetch(
        &self,
    ) -> Result<(HashMap<String, PublicKey>, Vec<PublicKey>, Duration), FetchError> {
        let http = |e: reqwest::Error| FetchError::Http(e.without_url().to_string());
        let client = self
            .http
            .get()
            .map_err(|e| FetchError::Http(e.to_owned()))?;
        let resp = client.get(&self.url).send().await.map_err(http)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let ttl = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map_or(DEFAULT_TTL, ttl_from_cache_control);
        let mut resp = resp;
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        // Counted as it streams: a body without (or lying about) its length is cut off at
        // the limit, never buffered whole.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let (by_kid, unnamed) = parse_jwks(&body)?;
        if by_kid.is_empty() && unnamed.is_empty() {
            return Err(FetchError::NoUsableKey);
        }
        Ok((by_kid, unnamed, ttl))
    }
}

/// The usable signing keys of a JWKS document. Entries that are not RSA/EC signing keys
/// are skipped (a set may also publish encryption or symmetric keys), not fatal.
#[allow(clippy::type_complexity)]
fn parse_jwks(body: &[u8]) -> Result<(HashMap<String, PublicKey>, Vec<PublicKey>), FetchError> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| FetchError::Shape)?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or(FetchError::Shape)?;
    let mut by_kid = HashMap::new();
    let mut unnamed = Vec::new();
    for entry in keys {
        let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(entry.clone()) else {
            continue;
        };
        let Some(key) = PublicKey::from_jwk(&jwk) else {
            continue;
        };
        match jwk.common.key_id {
            Some(kid) => {
                by_kid.insert(kid, key);
            }
            None => unnamed.push(key),
        }
    }
    Ok((by_kid, unnamed))
}

/// The key set's lifetime from a `Cache-Control` value: `max-age` clamped to
/// [`MIN_TTL`, `MAX_TTL`]; `no-store`/`no-cache` mean the minimum.
fn ttl_from_cache_control(value: &str) -> Duration {
    let mut ttl = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return MIN_TTL;
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            ttl = secs
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    ttl.unwrap_or(DEFAULT_TTL).clamp(MIN_TTL, MAX_TTL)
}

impl FireVerifier for JwksVerifier {
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<FireClaims, FireAuthError>> + Send + 'a>> {
        Box::pin(self.verify_token(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_ttl_is_clamped() {
        let check = |value: &str, secs: u64| {
            assert_eq!(
                ttl_from_cache_control(value),
                Duration::from_secs(secs),
                "{value}"
            );
        };
        check("max-age=600", 600);
        check("public, max-age=10", 60);
        check("max-age=86400, must-revalidate", 3600);
        check("no-store", 60);
        check("Max-Age=120", 120);
        check("private", 300);
        check("max-age=banana", 300);
    }

    #[test]
    fn jwks_keeps_signing_keys_only() {
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": "sXch", "e": "AQAB"},
            {"nonsense": true},
            {"kty": "RSA", "kid": "good", "alg": "RS256", "n": "sXch", "e": "AQAB"},
        ]});
        let (by_kid, unnamed) = parse_jwks(body.to_string().as_bytes()).expect("parses");
        assert_eq!(by_kid.keys().collect::<Vec<_>>(), vec!["good"]);
        assert!(unnamed.is_empty());
        assert!(matches!(parse_jwks(b"[]"), Err(FetchError::Shape)));
        assert!(matches!(
            parse_jwks(b"{\"keys\":{}}"),
            Err(FetchError::Shape)
        ));
    }
}
