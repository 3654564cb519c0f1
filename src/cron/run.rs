//! Running a claimed run: a gated turn on the backend while the run's lease is renewed,
//! then its end recorded (retried, and only while this process still holds the run) and
//! delivered. Also `run_now`, a run outside the job's schedule.

use std::sync::Arc;

use futures_util::StreamExt;

use super::deliver::DELIVERY_BACKOFF;
use super::service::{CronError, CronService};
use crate::agent::{Message, TurnEvent, TurnRequest};
use crate::job::{ClaimOutcome, Job, JobState, Run, RunStatus};
use crate::lifecycle::TurnGuard;
use crate::metrics::TurnOutcome;

/// Attempts to record a run's end (backing off like deliveries).
const FINISH_ATTEMPTS: u32 = 5;

impl CronService {
    /// Runs a job now, outside its schedule (the job's slots are untouched).
    pub async fn run_now(self: &Arc<Self>, id: &str) -> Result<Run, CronError> {
        let job = self.get(id).await?;
        // Admitted before the run is opened: a drain never turns it into an interrupted run.
        let guard = self
            .gate
            .admit(&format!("cron-{}", job.id))
            .map_err(|_| CronError::Draining)?;
        let now = self.now();
        let new = self.new_run(&job.id, now, now);
        match self.store.open_run(&new, RunStatus::Running).await {
            Ok(ClaimOutcome::Claimed) => {}
            Ok(_) => {
                guard.release();
                return Err(CronError::Invalid(
                    "this job was already started this second".into(),
                ));
            }
            Err(e) => {
                guard.release();
                return Err(e.into());
            }
        }
        let run = new.running();
        self.spawn_run(job, run.clone(), None, Some(guard));
        Ok(run)
    }

    /// Executes a claimed run as a gated turn in the background (admitted here unless the
    /// caller already holds its admission).
    pub(super) fn spawn_run(
        self: &Arc<Self>,
        job: Job,
        run: Run,
        finish_job: Option<JobState>,
        admitted: Option<TurnGuard>,
    ) {
        let this = self.clone();
        self.announce(&run);
        tokio::spawn(async move {
            let Some(ended) = this.execute(&job, run, admitted).await else {
                // The lease was taken over: the run is another owner's to record.
                return;
            };
            this.announce(&ended);
            let final_state = finish_job.filter(|_| ended.status != RunStatus::Interrupted);
            if this.record_end(&ended, final_state).await {
                this.deliver(&job, &ended).await;
            }
        });
    }

    /// Records the run's end; true when it was recorded here. Retried: a store hiccup
    /// must not leave a finished run to be called interrupted when its lease runs out.
    async fn record_end(&self, ended: &Run, final_state: Option<JobState>) -> bool {
        let mut attempt = 1;
        loop {
            match self
                .store
                .finish_run(ended, &self.owner.id, final_state)
                .await
            {
                Ok(true) => return true,
                Ok(false) => {
                    tracing::warn!(run = %ended.id, "run was already ended or taken over elsewhere (lease lost); not recorded again");
                    return false;
                }
                Err(e) if attempt < FINISH_ATTEMPTS => {
                    tracing::warn!(run = %ended.id, error = %e, attempt, "cannot record the run's end yet; retrying");
                    tokio::time::sleep(DELIVERY_BACKOFF * attempt).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::error!(run = %ended.id, error = %e, "cannot record the run's end");
                    return false;
                }
            }
        }
    }

    /// Runs the turn, renewing the lease; `None` when the lease was lost (the turn is then
    /// cancelled and the run is not this process's to record).
    async fn execute(&self, job: &Job, mut run: Run, admitted: Option<TurnGuard>) -> Option<Run> {
        let session = format!("cron-{}", job.id);
        let mut guard = match admitted.map_or_else(|| self.gate.admit(&session), Ok) {
            Ok(g) => g,
            Err(refusal) => {
                run.status = RunStatus::Interrupted;
                run.error = Some(refusal.to_string());
                run.finished_at = Some(self.now());
                return Some(run);
            }
        };
        let mut events = self.backend.start(TurnRequest {
            messages: vec![Message {
                role: "user".into(),
                content: job.prompt.clone(),
            }],
            model: "cron".into(),
            session_id: session,
            turn_id: run.id.clone(),
        });
        let mut text = String::new();
        let lease = self.signed_lease();
        let mut lease_until = run.started_at.checked_add(lease).unwrap_or(run.started_at);
        let mut renew = tokio::time::interval(self.lease / 3);
        renew.tick().await;
        let (status, error) = loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(TurnEvent::Delta(t)) => text.push_str(&t),
                    Some(TurnEvent::Usage(_)) => {}
                    Some(TurnEvent::Done) => break (RunStatus::Completed, None),
                    Some(TurnEvent::Failed(m)) => break (RunStatus::Failed, Some(m)),
                    None => break (RunStatus::Interrupted, Some("the turn ended without an outcome".into())),
                },
                _ = renew.tick() => {
                    let now = self.now();
                    let until = now.checked_add(lease).unwrap_or(now);
                    match self.store.renew_lease(&run.id, &self.owner.id, until).await {
                        Ok(true) => lease_until = until,
                        Ok(false) => {
                            // Dropping the turn stream cancels the turn (the agent process
                            // group is killed); whoever holds the run now records it.
                            tracing::warn!(run = %run.id, job = %job.id, "the run's lease was taken over (or the run ended elsewhere); stopping it without recording it");
                            drop(events);
                            guard.set_outcome(TurnOutcome::Interrupted);
                            return None;
                        }
                        Err(e) if now >= lease_until => {
                            // Another process may now call it interrupted; stop rather
                            // than run on beside it (the end is written only if still ours).
                            tracing::warn!(run = %run.id, error = %e, "cannot renew the run lease and it has run out; stopping the run");
                            break (RunStatus::Interrupted, Some("the run's lease could not be renewed".into()));
                        }
                        Err(e) => tracing::warn!(run = %run.id, error = %e, "cannot renew the run lease"),
                    }
                }
                () = self.cancel.cancelled() => break (RunStatus::Interrupted, Some("the gateway shut down before the run finished".into())),
            }
        };
        guard.set_outcome(match status {
            RunStatus::Completed => TurnOutcome::Completed,
            RunStatus::Failed => TurnOutcome::Failed,
            _ => TurnOutcome::Interrupted,
        });
        run.status = status;
        run.error = error;
        run.output = Some(text);
        run.finished_at = Some(self.now());
        Some(run)
    }
}
