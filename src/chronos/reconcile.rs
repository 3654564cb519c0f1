//! The `chronos` cron provider: keeps the account service's armed one-shots equal to the
//! jobs' next slots, so the agent can scale to zero between fires.
//!
//! Reconciles once at start and after every job change (a fired run moves its job to the
//! next slot, which counts): arm what is missing or moved, cancel what is no longer wanted.
//! There is no periodic timer; a failed reconcile is retried with a capped back-off until it
//! succeeds (changes during the back-off wait for it, coalesced), except a 403
//! `invalid_client`, which is shown in status and waits for the back-off and then the next
//! job change. Failures are logged when they start and then at most once a minute. It must not run jobs: firing is `POST /api/cron/fire`'s business.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{AccountClient, AccountError};
use crate::clock::iso;
use crate::config::{ChronosConfig, CronProvider, Secrets};
use crate::cron::{CronService, JobState};
use crate::lifecycle::RuntimeInfo;
use crate::metrics::Metrics;

/// Back-off after a failed reconcile: doubles from the first value up to the cap.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(300);

/// What one reconcile changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub armed: usize,
    pub provisioned: usize,
    pub cancelled: usize,
}

/// Keeps the account service in step with the jobs.
#[derive(Debug)]
pub struct Reconciler {
    client: AccountClient,
    cron: Arc<CronService>,
    /// `callback_url` as configured, trailing `/` stripped: the account service appends
    /// `/api/cron/fire` itself (SPEC §8), so adding it here would make every fire miss.
    callback: String,
    info: Arc<RuntimeInfo>,
}

/// The account-service token when `cron.provider: chronos` can run, `None` when another
/// provider is chosen, the reason why not otherwise.
pub fn usable(
    provider: CronProvider,
    chronos: &ChronosConfig,
    secrets: &Secrets,
) -> Result<Option<secrecy::SecretString>, String> {
    if provider != CronProvider::Chronos {
        return Ok(None);
    }
    let mut missing = Vec::new();
    if chronos.portal_url.is_empty() {
        missing.push("cron.chronos.portal_url");
    }
    if chronos.callback_url.is_empty() {
        missing.push("cron.chronos.callback_url");
    }
    let token = secrets.nous_access_token.clone();
    if token.is_none() {
        missing.push("HERMES_NOUS_ACCESS_TOKEN");
    }
    if missing.is_empty() {
        Ok(token)
    } else {
        Err(format!(
            "cron.provider is chronos but {} is not set; the built-in ticker runs instead",
            missing.join(", ")
        ))
    }
}

impl Reconciler {
    /// The reconciler for a usable chronos configuration (see [`usable`]).
    pub fn new(
        chronos: &ChronosConfig,
        token: secrecy::SecretString,
        cron: Arc<CronService>,
        info: Arc<RuntimeInfo>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client: AccountClient::new(&chronos.portal_url, token, metrics),
            cron,
            callback: chronos.callback_url.trim_end_matches('/').to_owned(),
            info,
        }
    }

    /// One pass: compare the wanted slots with what is armed, then arm and cancel.
    ///
    /// The armed list is read before the jobs, so the jobs are never older than it: when
    /// replicas reconcile at once, each acts only where its (newer) jobs differ from the
    /// (older) list, never re-arming a slot another replica already moved past.
    pub async fn reconcile(&self) -> Result<ReconcileReport, ReconcileError> {
        let mut armed: HashMap<String, Vec<Option<jiff::Timestamp>>> = HashMap::new();
        for a in self.client.list().await? {
            armed.entry(a.job_id).or_default().push(a.fire_at);
        }
        let wanted: HashMap<String, jiff::Timestamp> = self
            .cron
            .list()
            .await
            .map_err(|e| ReconcileError::Jobs(e.to_string()))?
            .into_iter()
            .filter(|j| j.enabled && j.state == JobState::Scheduled)
            .filter_map(|j| Some((j.id, j.next_run_at?)))
            .collect();
        let mut report = ReconcileReport {
            armed: wanted.len(),
            ..Default::default()
        };
        for (job_id, slots) in &armed {
            let keep = wanted
                .get(job_id)
                .is_some_and(|at| slots.len() == 1 && slots[0] == Some(*at));
            if !keep {
                self.client.cancel(job_id).await?;
                report.cancelled += 1;
            }
        }
        for (job_id, at) in &wanted {
            let already = armed
                .get(job_id)
                .is_some_and(|slots| slots.len() == 1 && slots[0] == Some(*at));
            if !already {
                self.client.provision(job_id, *at, &self.callback).await?;
                report.provisioned += 1;
            }
        }
        Ok(report)
    }

    /// Reconciles at start and after each job change until `stop`.
    ///
    /// After a failure the next attempt waits for the back-off (doubling from
    /// [`RETRY_FIRST`] to [`RETRY_CAP`]); job changes and fires during it are coalesced into
    /// that one attempt, so a burst of fires against a down account service costs a
    /// handful of calls, not one each. After an identity rejection the back-off is waited
    /// out too, and then the next job change. Failures are logged once when they start and
    /// then at most once per [`FAILURE_LOG_INTERVAL`], with how many were not logged.
    pub async fn run(self, stop: CancellationToken) {
        self.info.update_cron(|s| s.provider = "chronos".into());
        let mut backoff = RETRY_FIRST;
        let mut failures = FailureLog::default();
        loop {
            // This pass covers every change made before it: forget the wake-up they left.
            let _ = futures_util::FutureExt::now_or_never(self.cron.changed());
            let result = self.reconcile().await;
            let now = iso(self.cron.now());
            let retry = match &result {
                Ok(report) => {
                    failures.recovered();
                    tracing::info!(?report, "chronos reconcile done");
                    backoff = RETRY_FIRST;
                    None
                }
                Err(e) => {
                    let rejected = matches!(
                        e,
                        ReconcileError::Account(AccountError::IdentityRejected { .. })
                    );
                    failures.failed(e, rejected, backoff);
                    Some((backoff, rejected))
                }
            };
            self.info.update_cron(|s| {
                s.last_reconcile_at = Some(now);
                match &result {
                    Ok(report) => {
                        s.armed = Some(report.armed);
                        s.last_error = None;
                        s.identity_rejected = false;
                    }
                    Err(e) => {
                        s.last_error = Some(e.to_string());
                        s.identity_rejected = matches!(
                            e,
                            ReconcileError::Account(AccountError::IdentityRejected { .. })
                        );
                    }
                }
            });
            if let Some((after, rejected)) = retry {
                tokio::select! {
                    () = tokio::time::sleep(after) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(RETRY_CAP);
                if !rejected {
                    continue;
                }
            }
            tokio::select! {
                () = self.cron.changed() => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Least time between two log lines about a run of failed reconciles.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Rate-limits the log of failing reconciles: the first failure is logged, then at most
/// one line per [`FAILURE_LOG_INTERVAL`] saying how many were not.
#[derive(Debug, Default)]
struct FailureLog {
    /// Failures since the last success.
    failures: u64,
    /// When the last line was logged, and how many failures went unlogged since.
    last_logged: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl FailureLog {
    fn failed(&mut self, error: &ReconcileError, rejected: bool, retry_in: Duration) {
        self.failures += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < FAILURE_LOG_INTERVAL)
        {
            self.suppressed += 1;
            tracing::debug!(error = %error, "chronos reconcile failed again");
            return;
        }
        let (suppressed, failures) = (self.suppressed, self.failures);
        if rejected {
            tracing::error!(error = %error, failures, failures_not_logged = suppressed,
                "chronos: the account service rejects this agent's identity; retrying only after a job changes");
        } else {
            tracing::warn!(error = %error, failures, failures_not_logged = suppressed,
                retry_in_s = retry_in.as_secs(), "chronos reconcile failed; retrying with back-off");
        }
        self.last_logged = Some(now);
        self.suppressed = 0;
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "chronos reconcile succeeded again"
            );
        }
        *self = Self::default();
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("cannot read the jobs: {0}")]
    Jobs(String),
}
