//! Public keys that check fire-token signatures: PEM (SPKI `PUBLIC KEY` or PKCS#1
//! `RSA PUBLIC KEY`) and JWKS entries, each with the kind that decides its algorithms.
//!
//! Owns parsing a key's text and the algorithm family each kind allows. Private keys,
//! certificates and symmetric keys are refused. Which keys are trusted, and the token's
//! claims, are `chronos::verify`'s.

use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::{Algorithm, DecodingKey};

/// The next key's [`PublicKey::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The kind of a configured public key; it alone decides the acceptable algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA: RS256, RS384, RS512.
    Rsa,
    /// EC: ES256, ES384.
    Ec,
}

impl KeyKind {
    /// Whether a token signed with `alg` may be checked with a key of this kind.
    pub fn allows(self, alg: Algorithm) -> bool {
        match self {
            Self::Rsa => matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512),
            Self::Ec => matches!(alg, Algorithm::ES256 | Algorithm::ES384),
        }
    }
}

/// A parsed public key with its kind (and, from a JWK with `alg`, the one algorithm it
/// was published for).
#[derive(Clone)]
pub struct PublicKey {
    kind: KeyKind,
    only: Option<Algorithm>,
    key: DecodingKey,
    /// Unique to this parse of the key (its clones share it): a key parsed again, from a
    /// refetched JWKS say, gets a new one.
    id: u64,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A PEM text that is not an RSA or EC public key.
#[derive(Debug, thiserror::Error)]
#[error("{what}: not an RSA or EC public key in PEM form")]
pub struct KeyParseError {
    /// Where the key came from, e.g. `cron.chronos.nas_public_keys[1]`.
    pub what: String,
}

impl PublicKey {
    /// Parses a PEM public key (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str, what: &str) -> Result<Self, KeyParseError> {
        let err = || KeyParseError {
            what: what.to_string(),
        };
        if !pem.contains("PUBLIC KEY-----") {
            // Private keys, certificates and secrets are refused: only public keys pin.
            return Err(err());
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
            return Ok(Self::new(KeyKind::Rsa, None, key));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
            return Ok(Self::new(KeyKind::Ec, None, key));
        }
        Err(err())
    }

    /// A signing key from a JWKS entry: RSA or EC (P-256/P-384) only, not marked for
    /// encryption; a symmetric (`oct`) or unknown key yields `None` and is never used.
    pub fn from_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Self> {
        use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, PublicKeyUse};
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(ec)
                if matches!(ec.curve, EllipticCurve::P256 | EllipticCurve::P384) =>
            {
                KeyKind::Ec
            }
            _ => return None,
        };
        let only = match jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(
                a.to_string()
                    .parse::<Algorithm>()
                    .ok()
                    .filter(|a| kind.allows(*a))?,
            ),
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self::new(kind, only, key))
    }

    fn new(kind: KeyKind, only: Option<Algorithm>, key: DecodingKey) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Self {
            kind,
            only,
            key,
            id,
        }
    }

    /// This key's identity: equal only for clones of one parsed key.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether this key may check a token signed with `alg`: its kind allows it and, for a
    /// JWK published with an `alg`, it is that one.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.kind.allows(alg) && self.only.is_none_or(|only| only == alg)
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key in the form `jsonwebtoken` checks a signature with.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_A_PUB: &str = include_str!("../../tests/fixtures/chronos/rsa_a.pub");
    const RSA_A_KEY: &str = include_str!("../../tests/fixtures/chronos/rsa_a.key");
    const EC_A_PUB: &str = include_str!("../../tests/fixtures/chronos/ec_a.pub");

    #[test]
    fn pem_public_keys_parse_with_their_kind_and_nothing_else_does() {
        assert_eq!(
            PublicKey::from_pem(RSA_A_PUB, "k").unwrap().kind(),
            KeyKind::Rsa
        );
        assert_eq!(
            PublicKey::from_pem(EC_A_PUB, "k").unwrap().kind(),
            KeyKind::Ec
        );
        let empty_key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        for (what, text) in [
            ("a private key", RSA_A_KEY),
            ("not PEM", "abc"),
            ("a PEM frame around no key", empty_key),
        ] {
            let err = PublicKey::from_pem(text, "cron.chronos.nas_public_keys[1]").unwrap_err();
            assert_eq!(
                err.to_string(),
                "cron.chronos.nas_public_keys[1]: not an RSA or EC public key in PEM form",
                "{what}"
            );
        }
    }

    #[test]
    fn a_key_kind_allows_only_its_own_family() {
        let rsa = PublicKey::from_pem(RSA_A_PUB, "k").unwrap();
        let ec = PublicKey::from_pem(EC_A_PUB, "k").unwrap();
        for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
            assert!(rsa.allows(alg) && !ec.allows(alg), "{alg:?}");
        }
        for alg in [Algorithm::ES256, Algorithm::ES384] {
            assert!(ec.allows(alg) && !rsa.allows(alg), "{alg:?}");
        }
        for alg in [Algorithm::HS256, Algorithm::PS256, Algorithm::EdDSA] {
            assert!(!rsa.allows(alg) && !ec.allows(alg), "{alg:?}");
        }
    }
}
