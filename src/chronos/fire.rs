//! Fire acceptance (SPEC §8): whether one delivery of an external fire is taken, and the
//! audit record and metric of every answer.
//!
//! [`Fires::fire`] decides in a fixed order — token first, then body: no token or a bad
//! one is refused, a key outage is a refusal to retry (never a bad credential), a body
//! without a `job_id` is refused, and only then is the fire handed to `cron`, which
//! claims the slot or says why not. Every answer is audited (`cron_fire_accepted` /
//! `cron_fire_rejected` with its reason) and counted by outcome here, once. It must not
//! know HTTP (the fire handler maps [`FireRefusal`] to a status), and never audits or logs
//! the token.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::verify::{FireAuthError, FireVerifier};
use crate::audit::{AuditEvent, AuditLog};
use crate::cron::{CronError, CronService, FireRequest, Fired};
use crate::metrics::Metrics;

/// Largest fire body read; a fire is two short fields.
pub const FIRE_BODY_LIMIT: usize = 64 * 1024;

/// Decides external fires: built once from the verifier and the services it reports to.
#[derive(Debug)]
pub struct Fires {
    verifier: Arc<dyn FireVerifier>,
    cron: Arc<CronService>,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
}

/// A fire taken: `cron` answered it with an outcome (which may be that nothing ran).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub job_id: String,
    pub fired: Fired,
}

/// Why a fire was refused; nothing was claimed. Each is audited with its reason.
#[derive(Debug)]
pub enum FireRefusal {
    /// No bearer token, or one that fails verification.
    BadToken,
    /// No key can be obtained to check the token right now; a retry may succeed.
    NoKey,
    /// The body names no job, or carries a bad `fire_at`; the message says which.
    BadBody(String),
    /// `cron` refused the fire (draining, the store down).
    Cron(CronError),
}

impl FireRefusal {
    /// The `outcome` label of the fire counter.
    fn metric(&self) -> &'static str {
        match self {
            Self::BadToken => "unauthorized",
            Self::NoKey => "unavailable",
            Self::BadBody(_) => "bad_request",
            Self::Cron(CronError::Draining) => "draining",
            Self::Cron(_) => "unavailable",
        }
    }
}

/// A refusal with what its audit record says.
struct Rejected {
    refusal: FireRefusal,
    reason: String,
    job_id: Option<String>,
}

impl Rejected {
    fn new(refusal: FireRefusal, reason: impl Into<String>) -> Self {
        Self {
            refusal,
            reason: reason.into(),
            job_id: None,
        }
    }
}

impl Fires {
    pub fn new(
        verifier: Arc<dyn FireVerifier>,
        cron: Arc<CronService>,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            verifier,
            cron,
            audit,
            metrics,
        }
    }

    /// Decides one fire: `token` is the bearer value (without the scheme), `body` the
    /// request body, `ip` the client for the audit record.
    pub async fn fire(
        &self,
        token: Option<&str>,
        body: &[u8],
        ip: &str,
    ) -> Result<Accepted, FireRefusal> {
        match self.decide(token, body).await {
            Ok(accepted) => {
                let outcome = accepted.fired.outcome.as_str();
                self.metrics.cron_fire(outcome);
                self.audit.record(
                    AuditEvent::CronFireAccepted,
                    &[
                        ("job_id", json!(accepted.job_id)),
                        ("outcome", json!(outcome)),
                        ("run_id", json!(accepted.fired.run_id)),
                        ("ip", json!(ip)),
                    ],
                );
                Ok(accepted)
            }
            Err(rejected) => {
                self.metrics.cron_fire(rejected.refusal.metric());
                self.audit.record(
                    AuditEvent::CronFireRejected,
                    &[
                        ("reason", json!(rejected.reason)),
                        ("job_id", json!(rejected.job_id)),
                        ("ip", json!(ip)),
                    ],
                );
                Err(rejected.refusal)
            }
        }
    }

    async fn decide(&self, token: Option<&str>, body: &[u8]) -> Result<Accepted, Rejected> {
        let token = token.ok_or_else(|| Rejected::new(FireRefusal::BadToken, "missing token"))?;
        let claims = self.verifier.verify(token).await.map_err(|e| match e {
            FireAuthError::BadToken(reason) => Rejected::new(FireRefusal::BadToken, reason),
            FireAuthError::NoKey(reason) => Rejected::new(FireRefusal::NoKey, reason),
        })?;
        let (job_id, fire_at) = parse_body(body)
            .map_err(|message| Rejected::new(FireRefusal::BadBody(message.clone()), message))?;
        let request = FireRequest {
            job_id: job_id.clone(),
            fire_at,
            jti: claims.replay_entry(),
        };
        match self.cron.fire(request).await {
            Ok(fired) => Ok(Accepted { job_id, fired }),
            Err(e) => Err(Rejected {
                reason: e.to_string(),
                refusal: FireRefusal::Cron(e),
                job_id: Some(job_id),
            }),
        }
    }
}

/// `{"job_id", "fire_at"?}`; `fire_at` is an RFC 3339 time or Unix seconds.
fn parse_body(body: &[u8]) -> Result<(String, Option<Timestamp>), String> {
    let missing = || "missing job_id".to_owned();
    if body.len() > FIRE_BODY_LIMIT {
        return Err(format!("body larger than {FIRE_BODY_LIMIT} bytes"));
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(missing());
    };
    let job_id = match map.get("job_id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => return Err(missing()),
    };
    let fire_at = match map.get("fire_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(
            t.parse::<Timestamp>()
                .map_err(|e| format!("invalid fire_at {t:?}: expected an RFC 3339 time ({e})"))?,
        ),
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .and_then(|secs| Timestamp::from_second(secs).ok())
                .ok_or_else(|| format!("invalid fire_at {n}: not a Unix time in seconds"))?,
        ),
        Some(other) => {
            return Err(format!(
                "invalid fire_at {other}: expected an RFC 3339 time or Unix seconds"
            ));
        }
    };
    Ok((job_id, fire_at))
}

#[cfg(test)]
mod tests;
