//! Credential formats: pure parsers for the public keys and password hashes a
//! configuration names.
//!
//! Owns the text forms (PEM and JWK public keys, argon2id PHC and Hermes scrypt hashes)
//! and nothing else. A leaf: it imports nothing of the crate, so `config` checks a value
//! with the very parser `chronos` and `auth` later build their types with, without
//! `config` importing a domain module. It must not decide policy (which algorithm a
//! token may use, whether a password matches): that stays with the domain.

pub mod password_hash;
pub mod public_key;
