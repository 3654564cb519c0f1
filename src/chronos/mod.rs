//! Chronos: externally fired cron (SPEC §8).
//!
//! Owns the verification of fire tokens (`verify`). It must not know HTTP, the store or
//! the run path: handlers call `FireVerifier::verify` and map `FireAuthError` to 401/503.

pub mod verify;

pub use verify::{FireAuthError, FireClaims, FirePolicy, FireVerifier, PinnedKeyVerifier};
