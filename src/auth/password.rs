//! Password verification for the dashboard's `basic` provider, over the hash formats of
//! [`crate::formats::password_hash`] (argon2id PHC and the Hermes `scrypt$N$r$p$salt$dk`).
//!
//! Owns the decision whether a password matches: the derived key is compared with the
//! stored one in constant time. It must not log or return a password or a hash.

use crate::formats::password_hash::StoredHash;
pub use crate::formats::password_hash::{HashParseError, hash_password};

use super::constant_time_eq;

/// A parsed password hash a password can be checked against.
#[derive(Clone)]
pub struct PasswordHash(StoredHash);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            StoredHash::Argon2id { .. } => "PasswordHash::Argon2id",
            StoredHash::Scrypt { .. } => "PasswordHash::Scrypt",
        })
    }
}

impl PasswordHash {
    /// Parses `$argon2id$v=19$m=..,t=..,p=..$salt$key` or `scrypt$N$r$p$salt$dk`.
    pub fn parse(text: &str) -> Result<Self, HashParseError> {
        StoredHash::parse(text).map(Self)
    }

    /// Whether `password` matches, in time that does not depend on where it differs.
    /// CPU-heavy by design: call it off the async runtime.
    pub fn verify(&self, password: &str) -> bool {
        self.0
            .derive(password)
            .is_some_and(|derived| constant_time_eq(&derived, self.0.key()))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;
    use crate::formats::password_hash::decode_bytes;

    #[test]
    fn argon2id_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let parsed = PasswordHash::parse(&h).unwrap();
        assert!(parsed.verify("correct horse"));
        assert!(!parsed.verify("correct horsE"));
        assert!(!parsed.verify(""));
        assert_ne!(hash_password("correct horse").unwrap(), h, "salts differ");
    }

    #[test]
    fn hermes_scrypt_hashes_verify() {
        // dk = hashlib.scrypt(b"hunter2", salt=b"0123456789abcdef", n=16384, r=8, p=1,
        // dklen=32).hex(), computed with CPython 3.11; written here in hex and in base64.
        let salt = b"0123456789abcdef";
        let dk_hex = "a84c7deddb70b3d9f7b8233a571e6e722a03466fd864c2fa2ff39ec82654646f";
        let dk = decode_bytes(dk_hex).unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        for text in [
            format!("scrypt$16384$8$1${}${dk_hex}", hex(salt)),
            format!(
                "scrypt$16384$8$1${}${}",
                URL_SAFE_NO_PAD.encode(salt),
                URL_SAFE_NO_PAD.encode(&dk)
            ),
            format!(
                "scrypt$16384$8$1${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(&dk)
            ),
        ] {
            let h = PasswordHash::parse(&text).unwrap();
            assert!(h.verify("hunter2"), "{text}");
            assert!(!h.verify("hunter3"), "{text}");
        }
    }
}
