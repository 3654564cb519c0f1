//! Authentication: the generic bearer-token seam, its providers, and the dashboard's
//! session modes.
//!
//! Owns every credential comparison (always constant time) and every auth decision, with
//! its audit event and metric ([`Access`]); the HTTP layer only extracts a request's facts
//! and maps the outcome to a response. Secrets never leave this module except as a yes/no.

pub mod access;
pub mod basic;
pub mod drain_secret;
pub mod password;
pub mod proxy;
pub mod ratelimit;
pub mod session;
pub mod sessions;
pub mod token;

pub use access::Access;
pub use drain_secret::{DrainSecretProvider, assess_secret_strength};
pub use session::DashboardAuth;
pub use token::{
    ProviderError, ProviderStatus, TokenAuth, TokenDecision, TokenPrincipal, TokenProvider,
    bearer_token,
};

/// Compares a presented credential with a secret in time that depends only on the
/// presented value's length: neither the secret's bytes nor its length leak.
pub fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    if secret.is_empty() {
        return false;
    }
    let mut equal = (presented.len() as u64).ct_eq(&(secret.len() as u64));
    for (i, b) in presented.iter().enumerate() {
        equal &= b.ct_eq(&secret[i % secret.len()]);
    }
    equal.into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_matches_only_the_exact_secret() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(
            !constant_time_eq(b"secretsecret", b"secret"),
            "a repeat is not a match"
        );
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(
            !constant_time_eq(b"", b""),
            "an empty secret matches nothing"
        );
    }
}
