//! Password-hash strings: argon2id in PHC form (what `hermes-gateway auth hash-password`
//! makes) and the Hermes `scrypt$N$r$p$salt$dk` form, so existing configs keep working.
//!
//! Owns parsing a stored hash into its parameters, deriving a key with them, and writing
//! a new argon2id hash. Comparing a derived key with the stored one is `auth::password`'s
//! (in constant time). It must not log or return a password or a hash.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// argon2id costs for new hashes (OWASP's recommendation: 19 MiB, 2 passes, 1 lane).
const ARGON2_M_KIB: u32 = 19_456;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;
const SALT_BYTES: usize = 16;
const KEY_BYTES: usize = 32;
/// Upper bounds accepted from a stored hash (a config typo must not eat the machine).
const MAX_M_KIB: u32 = 1 << 20;
const MAX_SCRYPT_LOG_N: u8 = 20;

/// A parsed stored hash: the algorithm, its costs, the salt and the derived key.
#[derive(Clone)]
pub enum StoredHash {
    Argon2id {
        params: Params,
        salt: Vec<u8>,
        key: Vec<u8>,
    },
    Scrypt {
        params: scrypt::Params,
        salt: Vec<u8>,
        key: Vec<u8>,
    },
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Argon2id { .. } => "StoredHash::Argon2id",
            Self::Scrypt { .. } => "StoredHash::Scrypt",
        })
    }
}

/// Why a stored hash cannot be used; never holds the hash itself. The message (`.0`) is
/// what `config` reports under `dashboard.basic_auth.password_hash`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hash: {0}")]
pub struct HashParseError(pub String);

fn bad(what: impl Into<String>) -> HashParseError {
    HashParseError(what.into())
}

/// Hex, or base64 in any of its common spellings.
pub(crate) fn decode_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len().is_multiple_of(2)
        && !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect();
    }
    [URL_SAFE_NO_PAD, STANDARD_NO_PAD, URL_SAFE, STANDARD]
        .iter()
        .find_map(|e| e.decode(text).ok())
        .filter(|b| !b.is_empty())
}

impl StoredHash {
    /// Parses `$argon2id$v=19$m=..,t=..,p=..$salt$key` or `scrypt$N$r$p$salt$dk`.
    pub fn parse(text: &str) -> Result<Self, HashParseError> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("$argon2id$") {
            return Self::parse_argon2(rest);
        }
        if let Some(rest) = text.strip_prefix("scrypt$") {
            return Self::parse_scrypt(rest);
        }
        Err(bad(
            "expected an argon2id PHC string ($argon2id$...) or scrypt$N$r$p$salt$dk",
        ))
    }

    fn parse_argon2(rest: &str) -> Result<Self, HashParseError> {
        let parts: Vec<&str> = rest.split('$').collect();
        let [version, costs, salt, key] = parts[..] else {
            return Err(bad("argon2id: expected v=19$m=..,t=..,p=..$salt$hash"));
        };
        if version != "v=19" {
            return Err(bad("argon2id: only version 19 is supported"));
        }
        let (mut m, mut t, mut p) = (None, None, None);
        for kv in costs.split(',') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad("argon2id: bad cost list"))?;
            let v: u32 = v
                .parse()
                .map_err(|_| bad("argon2id: a cost is not a number"))?;
            match k {
                "m" => m = Some(v),
                "t" => t = Some(v),
                "p" => p = Some(v),
                _ => return Err(bad(format!("argon2id: unknown cost {k:?}"))),
            }
        }
        let (Some(m), Some(t), Some(p)) = (m, t, p) else {
            return Err(bad("argon2id: m, t and p are all required"));
        };
        if m > MAX_M_KIB {
            return Err(bad(format!("argon2id: m={m} KiB is more than {MAX_M_KIB}")));
        }
        let salt = decode_bytes(salt).ok_or_else(|| bad("argon2id: salt is not base64"))?;
        let key = decode_bytes(key).ok_or_else(|| bad("argon2id: hash is not base64"))?;
        let params =
            Params::new(m, t, p, Some(key.len())).map_err(|e| bad(format!("argon2id: {e}")))?;
        Ok(Self::Argon2id { params, salt, key })
    }

    fn parse_scrypt(rest: &str) -> Result<Self, HashParseError> {
        let parts: Vec<&str> = rest.split('$').collect();
        let [n, r, p, salt, key] = parts[..] else {
            return Err(bad("scrypt: expected scrypt$N$r$p$salt$dk"));
        };
        let n: u64 = n.parse().map_err(|_| bad("scrypt: N is not a number"))?;
        if !n.is_power_of_two() || n < 2 {
            return Err(bad("scrypt: N must be a power of two"));
        }
        let log_n = n.trailing_zeros() as u8;
        if log_n > MAX_SCRYPT_LOG_N {
            return Err(bad(format!(
                "scrypt: N is larger than 2^{MAX_SCRYPT_LOG_N}"
            )));
        }
        let r: u32 = r.parse().map_err(|_| bad("scrypt: r is not a number"))?;
        let p: u32 = p.parse().map_err(|_| bad("scrypt: p is not a number"))?;
        let params = scrypt::Params::new(log_n, r, p).map_err(|e| bad(format!("scrypt: {e}")))?;
        let salt =
            decode_bytes(salt).ok_or_else(|| bad("scrypt: salt is neither hex nor base64"))?;
        let key = decode_bytes(key).ok_or_else(|| bad("scrypt: dk is neither hex nor base64"))?;
        Ok(Self::Scrypt { params, salt, key })
    }

    /// The key `password` derives to under this hash's algorithm, costs and salt, as long
    /// as the stored key; `None` if the derivation fails. CPU-heavy by design.
    pub fn derive(&self, password: &str) -> Option<Vec<u8>> {
        let mut out = vec![0u8; self.key().len()];
        let derived = match self {
            Self::Argon2id { params, salt, .. } => {
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
                    .hash_password_into(password.as_bytes(), salt, &mut out)
                    .is_ok()
            }
            Self::Scrypt { params, salt, .. } => {
                scrypt::scrypt(password.as_bytes(), salt, params, &mut out).is_ok()
            }
        };
        derived.then_some(out)
    }

    /// The stored derived key, for the constant-time comparison.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Argon2id { key, .. } | Self::Scrypt { key, .. } => key,
        }
    }
}

/// Hashes `password` with argon2id and a fresh random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, HashParseError> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|e| bad(format!("no randomness: {e}")))?;
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(KEY_BYTES))
        .map_err(|e| bad(e.to_string()))?;
    let mut key = [0u8; KEY_BYTES];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password.as_bytes(), &salt, &mut key)
        .map_err(|e| bad(e.to_string()))?;
    Ok(format!(
        "$argon2id$v=19$m={ARGON2_M_KIB},t={ARGON2_T},p={ARGON2_P}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_hashes_are_named() {
        let check = |text: &str, want: &str| {
            let e = StoredHash::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(
                !e.contains(text) || text.len() < 8,
                "the hash is echoed: {e}"
            );
        };
        check("plaintext", "expected an argon2id PHC string");
        check(
            "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            "expected an argon2id",
        );
        check(
            "$argon2id$v=16$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            "version 19",
        );
        check("$argon2id$v=19$m=8,t=1$c2FsdHNhbHQ$aGFzaA", "m, t and p");
        check(
            "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            "more than",
        );
        check("scrypt$1000$8$1$00$00", "power of two");
        check("scrypt$16384$8$1$!!$00", "salt is neither");
        check("scrypt$16384$8", "expected scrypt$N$r$p$salt$dk");
    }
}
