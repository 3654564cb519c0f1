//! Chronos: externally fired cron (SPEC §8).
//!
//! Owns the verification of fire tokens (`verify` with pinned keys, `jwks` with a cached
//! JWKS), fire acceptance (`fire`: token, body, the hand-off to `cron`, and the audit and
//! metric of every answer) and the `chronos` provider (`client` for the account service's
//! agent-cron API, `reconcile` keeping it in step with the jobs). It may call `cron`'s
//! public API; `cron` never imports it. It must not know the HTTP server, the store or the
//! run path: the fire handler calls [`Fires::fire`] and maps its [`FireRefusal`].

pub mod client;
pub mod fire;
pub mod jwks;
pub mod reconcile;
pub mod verify;

use std::sync::Arc;

pub use client::{AccountClient, AccountError, Armed};
pub use fire::{Accepted, FireRefusal, Fires};
pub use jwks::JwksVerifier;
pub use reconcile::{ReconcileReport, Reconciler};
pub use verify::{
    FireAuthError, FireClaims, FirePolicy, FireVerifier, KeyParseError, PinnedKeyVerifier,
};

use crate::clock::SharedClock;
use crate::config::ChronosConfig;
use crate::metrics::Metrics;

/// Why no fire-token verifier could be set up (the gateway does not start).
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error(transparent)]
    Key(#[from] KeyParseError),
}

/// The fire-token verifier the configuration asks for: JWKS when `nas_jwks_url` is set,
/// else the pinned `nas_public_keys`; with neither, a verifier that refuses every token.
pub fn verifier_from_config(
    chronos: &ChronosConfig,
    clock: SharedClock,
    metrics: Arc<Metrics>,
) -> Result<Arc<dyn FireVerifier>, VerifierError> {
    let policy = FirePolicy {
        expected_audience: chronos.expected_audience.clone(),
        issuer: chronos.portal_url.clone(),
    };
    if !chronos.nas_jwks_url.is_empty() {
        if !chronos.nas_public_keys.is_empty() {
            tracing::warn!(
                "cron.chronos: both nas_jwks_url and nas_public_keys are set; the JWKS is used and the pinned keys are ignored"
            );
        }
        let jwks = JwksVerifier::new(&chronos.nas_jwks_url, policy, clock, metrics);
        return Ok(Arc::new(jwks));
    }
    Ok(Arc::new(PinnedKeyVerifier::new(
        &chronos.nas_public_keys,
        policy,
        clock,
    )?))
}
