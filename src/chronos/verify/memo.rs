//! Signatures already checked: a token sent again (a scheduler's retry, a replay) is
//! answered without checking its signature again.
//!
//! A signature check is the whole cost of a repeated fire (about 25 µs of CPU for RS256,
//! 60 µs for ES256, against a few µs for the rest of the answer). Checking the same bytes
//! against the same key always gives the same answer, so the memo keeps, for each token
//! that a configured key signed, which key that was and the token's claims. A token is
//! only taken from the memo when that very key is still among the keys the verifier would
//! try (a key removed from the JWKS, or the set refetched, makes its entries useless); its
//! claims are then checked against the clock as on the first time, so an expired token is
//! refused all the same. Only tokens a key signed (and whose claims passed) are kept, so
//! an attacker who cannot sign cannot put anything in it; at most [`CAPACITY`] of them,
//! the expired ones dropped first when it fills.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;

use super::{FireAuthError, FireClaims, FirePolicy, LEEWAY_SECONDS, PublicKey, RawClaims};

/// Most tokens remembered. A scheduler keeps a few tokens in flight per job; past this the
/// expired entries are dropped, then, if none had expired, all of them.
const CAPACITY: usize = 1024;

/// The signed tokens seen, by their exact text.
#[derive(Debug, Default)]
pub struct SignatureMemo {
    signed: Mutex<HashMap<Box<str>, Signed>>,
}

#[derive(Debug)]
struct Signed {
    /// The [`PublicKey::id`] of the key that signed it.
    key: u64,
    claims: RawClaims,
    /// After this (Unix seconds) the token is refused whatever the key: of no more use.
    useless_after: i64,
}

impl SignatureMemo {
    /// Verifies `token` as [`super::verify_with_keys`] does with `keys`, checking its
    /// signature only if no key of `keys` is known to have signed it already.
    pub fn verify<'k>(
        &self,
        token: &str,
        keys: impl IntoIterator<Item = &'k PublicKey>,
        policy: &FirePolicy,
        now: Timestamp,
    ) -> Result<FireClaims, FireAuthError> {
        let keys: Vec<&PublicKey> = keys.into_iter().collect();
        if let Some(claims) = self.recall(token, &keys) {
            return super::check_claims(claims, policy, now);
        }
        let (key, claims) = super::signed_by(token, keys)?;
        let checked = super::check_claims(claims.clone(), policy, now)?;
        self.remember(token, key, claims, checked.exp, now);
        Ok(checked)
    }

    /// The claims of `token` if one of `keys` signed it before.
    fn recall(&self, token: &str, keys: &[&PublicKey]) -> Option<RawClaims> {
        let signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        let entry = signed.get(token)?;
        keys.iter()
            .any(|k| k.id() == entry.key)
            .then(|| entry.claims.clone())
    }

    fn remember(&self, token: &str, key: u64, claims: RawClaims, exp: i64, now: Timestamp) {
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if signed.len() >= CAPACITY && !signed.contains_key(token) {
            let now = now.as_second();
            signed.retain(|_, s| s.useless_after >= now);
            if signed.len() >= CAPACITY {
                signed.clear();
            }
        }
        let useless_after = exp.saturating_add(LEEWAY_SECONDS);
        signed.insert(
            token.into(),
            Signed {
                key,
                claims,
                useless_after,
            },
        );
    }

    /// How many tokens are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.signed.lock().map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{AUD, NOW, RSA_A_PUB, RSA_B_PUB, claims, rs256, with};
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn policy() -> FirePolicy {
        FirePolicy {
            expected_audience: AUD.into(),
            issuer: String::new(),
        }
    }

    fn key(pem: &str) -> PublicKey {
        PublicKey::from_pem(pem, "test").unwrap()
    }

    /// A remembered signature answers only for the key that made it, while that key is
    /// tried: not for another key, not for the same key parsed again (a refetched JWKS),
    /// not for other bytes, and never past the token's expiry.
    #[test]
    fn a_remembered_signature_counts_only_for_the_key_that_made_it() {
        let memo = SignatureMemo::default();
        let (a, b) = (key(RSA_A_PUB), key(RSA_B_PUB));
        let token = rs256(&claims());
        assert!(memo.recall(&token, &[&a]).is_none());
        assert!(memo.verify(&token, [&a], &policy(), at(NOW)).is_ok());
        assert!(memo.recall(&token, &[&a]).is_some(), "remembered for a");
        assert!(memo.recall(&token, &[&b]).is_none(), "not for b");
        assert_eq!(
            memo.verify(&token, [&b], &policy(), at(NOW)),
            Err(FireAuthError::BadToken("signature not by a configured key"))
        );
        let a_again = key(RSA_A_PUB);
        assert!(
            memo.recall(&token, &[&a_again]).is_none(),
            "a new parse is a new key"
        );
        assert!(memo.verify(&token, [&a_again], &policy(), at(NOW)).is_ok());
        assert!(memo.recall(&token, &[&a]).is_none(), "now a_again's");

        // The claims are checked each time: an expired token is refused from the memo.
        assert_eq!(
            memo.verify(
                &token,
                [&a_again],
                &policy(),
                at(NOW + 300 + LEEWAY_SECONDS + 1)
            ),
            Err(FireAuthError::BadToken("expired"))
        );
        let other_aud = FirePolicy {
            expected_audience: "someone-else".into(),
            ..policy()
        };
        assert_eq!(
            memo.verify(&token, [&a_again], &other_aud, at(NOW)),
            Err(FireAuthError::BadToken("wrong aud"))
        );

        // Other bytes are another token: a changed signature or payload is checked.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        let forged = format!("{head}.{flipped}{}", &sig[1..]);
        assert!(
            memo.verify(&forged, [&a_again], &policy(), at(NOW))
                .is_err()
        );
        let other_claims = rs256(&with(|c| {
            c.insert("jti".into(), "j-2".into());
        }));
        let (_, other_payload) = other_claims.split_once('.').unwrap();
        let (other_payload, _) = other_payload.split_once('.').unwrap();
        let (header, _) = token.split_once('.').unwrap();
        let spliced = format!("{header}.{other_payload}.{sig}");
        assert!(
            memo.verify(&spliced, [&a_again], &policy(), at(NOW))
                .is_err()
        );
        assert_eq!(memo.len(), 1, "refused tokens are not remembered");
    }

    /// The memo stays bounded: past its capacity the expired entries go, and if none had
    /// expired, all of them.
    #[test]
    fn the_memo_is_bounded() {
        let memo = SignatureMemo::default();
        let a = key(RSA_A_PUB);
        let token = |i: usize, exp: i64| {
            rs256(&with(|c| {
                c.insert("jti".into(), format!("j-{i}").into());
                c.insert("exp".into(), exp.into());
            }))
        };
        for i in 0..CAPACITY {
            // Half of them expire at NOW + 10.
            let exp = if i % 2 == 0 { NOW + 10 } else { NOW + 300 };
            memo.verify(&token(i, exp), [&a], &policy(), at(NOW))
                .unwrap();
        }
        assert_eq!(memo.len(), CAPACITY);
        let later = at(NOW + 10 + LEEWAY_SECONDS + 1);
        memo.verify(&token(CAPACITY, NOW + 300), [&a], &policy(), later)
            .unwrap();
        assert_eq!(memo.len(), CAPACITY / 2 + 1, "the expired half went");
        // 511 more fill it; the next finds none expired and starts again.
        for i in 0..CAPACITY / 2 + 1 {
            memo.verify(&token(CAPACITY + 1 + i, NOW + 300), [&a], &policy(), later)
                .unwrap();
        }
        assert_eq!(memo.len(), 2, "none had expired: all went");
    }
}
