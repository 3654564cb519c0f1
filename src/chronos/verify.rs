//! The fire-token verifier: signature, algorithm and claims of a Chronos fire JWT.
//!
//! Owns the policy of SPEC §8 (asymmetric algorithms only, `exp`/`aud` required, 30 s
//! leeway, `iss` when configured, `purpose = cron_fire`). The algorithm is decided by the
//! configured key's type; the header only picks among what that key allows. Header
//! `jku`, `x5u`, `jwk` and `x5c` are never fetched or trusted. It must not do I/O of its
//! own beyond what a key source does, and never logs or returns the token.

use std::future::Future;
use std::pin::Pin;

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::clock::SharedClock;
pub use crate::formats::public_key::{KeyKind, KeyParseError, PublicKey};
pub use memo::SignatureMemo;

mod memo;

/// Leeway applied to `exp` and `nbf`, in seconds (SPEC §8).
pub const LEEWAY_SECONDS: i64 = 30;

/// Longest `jti` kept for replay refusal.
pub const MAX_JTI_BYTES: usize = 256;

/// The required value of the `purpose` claim.
pub const FIRE_PURPOSE: &str = "cron_fire";

/// Why a fire token was not accepted. `BadToken` maps to 401, `NoKey` to 503 + Retry-After:
/// a key outage must never look like a bad credential.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FireAuthError {
    /// The token is malformed, unsigned, signed by an unknown key or fails a claim check.
    /// The reason is for the audit log and never holds token material.
    #[error("invalid fire token: {0}")]
    BadToken(&'static str),
    /// No key could be obtained to check the token (the JWKS is unreachable and the
    /// token's `kid` is not cached). Having no key configured at all is a `BadToken`:
    /// that is not an outage a retry could outlast.
    #[error("no fire-token key obtainable: {0}")]
    NoKey(&'static str),
}

/// The claims of an accepted fire token that fire acceptance needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireClaims {
    /// Token id, for replay refusal (kept until `exp` + leeway).
    pub jti: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

impl FireClaims {
    /// The token id and until when the replay table must remember it: `exp` plus the
    /// leeway, the last moment this verifier still accepts the token. `None` for a token
    /// without a `jti`.
    pub fn replay_entry(self) -> Option<(String, Timestamp)> {
        let until = Timestamp::from_second(self.exp.saturating_add(LEEWAY_SECONDS))
            .unwrap_or(Timestamp::MAX);
        self.jti.map(|jti| (jti, until))
    }
}

/// The checks every verifier applies to claims, whatever the key source.
#[derive(Debug, Clone)]
pub struct FirePolicy {
    /// `aud` must equal (or, as an array, contain) this. Empty = every token refused.
    pub expected_audience: String,
    /// When non-empty, `iss` is required and must equal this.
    pub issuer: String,
}

/// A fire-token verifier. A trait so that a per-job key mode (or a JWKS source) can
/// replace the pinned-key one without touching the handler.
pub trait FireVerifier: Send + Sync + std::fmt::Debug {
    /// Verifies `token` (the bearer value, without the scheme).
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<FireClaims, FireAuthError>> + Send + 'a>>;
}

#[derive(Debug, Clone, Deserialize)]
struct RawClaims {
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
    aud: Option<serde_json::Value>,
    iss: Option<serde_json::Value>,
    purpose: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
}

fn numeric(v: &serde_json::Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// Checks the claims of an already signature-verified token against `policy` at `now`.
fn check_claims(
    raw: RawClaims,
    policy: &FirePolicy,
    now: Timestamp,
) -> Result<FireClaims, FireAuthError> {
    use FireAuthError::BadToken;
    let now = now.as_second();
    let exp = raw.exp.as_ref().ok_or(BadToken("missing exp"))?;
    let exp = numeric(exp).ok_or(BadToken("exp is not a number"))?;
    if now > exp.saturating_add(LEEWAY_SECONDS) {
        return Err(BadToken("expired"));
    }
    if let Some(nbf) = &raw.nbf {
        let nbf = numeric(nbf).ok_or(BadToken("nbf is not a number"))?;
        if now < nbf.saturating_sub(LEEWAY_SECONDS) {
            return Err(BadToken("not yet valid"));
        }
    }
    let aud = raw.aud.as_ref().ok_or(BadToken("missing aud"))?;
    let want = policy.expected_audience.as_str();
    let aud_ok = !want.is_empty()
        && match aud {
            serde_json::Value::String(s) => s == want,
            serde_json::Value::Array(items) => items.iter().any(|i| i.as_str() == Some(want)),
            _ => false,
        };
    if !aud_ok {
        return Err(BadToken("wrong aud"));
    }
    if !policy.issuer.is_empty() {
        match raw.iss.as_ref().and_then(|v| v.as_str()) {
            None => return Err(BadToken("missing iss")),
            Some(iss) if iss != policy.issuer => return Err(BadToken("wrong iss")),
            Some(_) => {}
        }
    }
    match raw.purpose.as_ref().and_then(|v| v.as_str()) {
        None => return Err(BadToken("missing purpose")),
        Some(p) if p != FIRE_PURPOSE => return Err(BadToken("wrong purpose")),
        Some(_) => {}
    }
    let jti = match raw.jti {
        None => None,
        Some(serde_json::Value::String(s)) if s.len() > MAX_JTI_BYTES => {
            return Err(BadToken("jti too long"));
        }
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err(BadToken("jti is not a string")),
    };
    Ok(FireClaims { jti, exp })
}

/// The token's header; `none` and unknown algorithms (any case) are refused as malformed.
pub fn header(token: &str) -> Result<jsonwebtoken::Header, FireAuthError> {
    jsonwebtoken::decode_header(token).map_err(|_| FireAuthError::BadToken("malformed header"))
}

/// The algorithms a fire token may be signed with, whatever the key (SPEC §8).
const ALLOWED_ALGS: [Algorithm; 5] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// What can be decided without a key, decided before any key is looked up (so a bad
/// token is a 401 even while no key can be obtained): the token's shape, its algorithm
/// against the allow-list (never `none`, never HS*), and the presence of `exp` and `aud`.
/// Returns the header. Nothing here is trusted: the claims are checked again once a
/// configured key has verified the signature.
pub fn precheck(token: &str) -> Result<jsonwebtoken::Header, FireAuthError> {
    use FireAuthError::BadToken;
    let header = header(token)?;
    if !ALLOWED_ALGS.contains(&header.alg) {
        return Err(BadToken("algorithm not allowed"));
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadToken("malformed token"));
    };
    use base64::Engine;
    let raw: RawClaims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(BadToken("malformed claims"))?;
    if raw.exp.is_none() {
        return Err(BadToken("missing exp"));
    }
    if raw.aud.is_none() {
        return Err(BadToken("missing aud"));
    }
    Ok(header)
}

/// Verifies `token` against `keys` (the candidates for its `kid`, or all pinned keys).
/// Key-independent checks first ([`precheck`]), then the signature; the claims' values
/// are only looked at once a configured key signed them.
pub fn verify_with_keys<'k>(
    token: &str,
    keys: impl IntoIterator<Item = &'k PublicKey>,
    policy: &FirePolicy,
    now: Timestamp,
) -> Result<FireClaims, FireAuthError> {
    let (_, raw) = signed_by(token, keys)?;
    check_claims(raw, policy, now)
}

/// The key of `keys` that signed `token` (its [`PublicKey::id`]) and the token's claims,
/// not yet checked.
fn signed_by<'k>(
    token: &str,
    keys: impl IntoIterator<Item = &'k PublicKey>,
) -> Result<(u64, RawClaims), FireAuthError> {
    use FireAuthError::BadToken;
    let alg = precheck(token)?.alg;
    let mut any_key = false;
    let mut any_allowed = false;
    for key in keys {
        any_key = true;
        if !key.allows(alg) {
            continue;
        }
        any_allowed = true;
        // Time checks are done by `check_claims` against the injected clock, so the
        // library's own wall-clock checks are turned off here.
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        if let Ok(data) = jsonwebtoken::decode::<RawClaims>(token, key.decoding_key(), &v) {
            return Ok((key.id(), data.claims));
        }
    }
    if !any_key {
        Err(BadToken("no fire-token key configured"))
    } else if any_allowed {
        Err(BadToken("signature not by a configured key"))
    } else {
        Err(BadToken("algorithm not allowed for the configured keys"))
    }
}

/// Verifies against pinned PEM public keys (`cron.chronos.nas_public_keys`: current and
/// next). Any `kid` in the header is ignored; every pinned key of the right kind is tried.
#[derive(Debug)]
pub struct PinnedKeyVerifier {
    keys: Vec<PublicKey>,
    policy: FirePolicy,
    clock: SharedClock,
    memo: SignatureMemo,
}

impl PinnedKeyVerifier {
    /// Parses every PEM; any unparseable one is an error naming its position.
    pub fn new(
        pems: &[String],
        policy: FirePolicy,
        clock: SharedClock,
    ) -> Result<Self, KeyParseError> {
        let keys = pems
            .iter()
            .enumerate()
            .map(|(i, pem)| PublicKey::from_pem(pem, &format!("cron.chronos.nas_public_keys[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            keys,
            policy,
            clock,
            memo: SignatureMemo::default(),
        })
    }
}

impl FireVerifier for PinnedKeyVerifier {
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<FireClaims, FireAuthError>> + Send + 'a>> {
        let result = self
            .memo
            .verify(token, &self.keys, &self.policy, self.clock.now());
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests;
