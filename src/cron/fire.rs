//! Fires delivered by an external scheduler (SPEC §8), their token already verified:
//! admission first, then what the job says of the fire ([`check_fire`], pure), then the
//! slot's claim with the token's id, and the run started in the claim's own task. Every
//! final answer spends the token; a 503 (draining, a store outage) spends nothing.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::service::{CronError, CronService};
use super::tick::Claim;
use crate::job::{Job, JobState};
use crate::store::StoreError;
use crate::turn::Admission;

/// How long before its slot an external fire still runs a job (the scheduler's clock and
/// ours may disagree by this much).
pub(super) const FIRE_EARLY_TOLERANCE: Duration = Duration::from_secs(30);

/// A fire delivered by an external scheduler (SPEC §8), its token already verified.
#[derive(Debug, Clone)]
pub struct FireRequest {
    pub job_id: String,
    /// The slot the scheduler fires; `None` = the job's current slot.
    pub fire_at: Option<Timestamp>,
    /// The token's id and until when it must be remembered, for replay refusal.
    pub jti: Option<(String, Timestamp)>,
}

/// What a fire did (compat `outcome` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireOutcome {
    /// The slot was claimed and its run started.
    Started,
    /// A replayed token, a slot already claimed, or a previous run still going.
    Duplicate,
    /// The job has no slot at (or near) `fire_at`.
    NotDue,
    UnknownJob,
    Paused,
}

impl FireOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Duplicate => "duplicate",
            Self::NotDue => "not_due",
            Self::UnknownJob => "unknown_job",
            Self::Paused => "paused",
        }
    }
}

/// The answer to a fire: the outcome and the run it concerns, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub outcome: FireOutcome,
    pub run_id: Option<String>,
}

/// What the job, as read, says of a fire before anything is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FireCheck {
    /// The job's current slot is due (or at most [`FIRE_EARLY_TOLERANCE`] ahead): claim it.
    Claim,
    Paused,
    /// The fire names another slot than the job's current one: an earlier delivery
    /// claimed it, or the job moved.
    OtherSlot(Timestamp),
    NotDue,
}

/// Decides a fire of `job` for `fire_at` (`None` = its current slot) at `now`.
pub(super) fn check_fire(job: &Job, fire_at: Option<Timestamp>, now: Timestamp) -> FireCheck {
    if !job.enabled || job.state == JobState::Paused {
        return FireCheck::Paused;
    }
    if let Some(at) = fire_at
        && job.next_run_at != Some(at)
    {
        return FireCheck::OtherSlot(at);
    }
    let early = jiff::SignedDuration::try_from(FIRE_EARLY_TOLERANCE).unwrap_or_default();
    let due = job.state == JobState::Scheduled
        && job
            .next_run_at
            .is_some_and(|slot| slot <= now.checked_add(early).unwrap_or(now));
    if due {
        FireCheck::Claim
    } else {
        FireCheck::NotDue
    }
}

impl CronService {
    /// Carries out a fire: the slot's claim is taken here, synchronously, and the run goes on
    /// in the background. Admission comes first, so a draining gateway claims nothing
    /// (`Draining`) and the scheduler's retry runs the slot after the drain. A token whose
    /// `jti` this process knows recorded is a `duplicate` answered from memory (no turn, no
    /// read; still `Draining` while draining), one found recorded by the read before the
    /// claim a `duplicate` answered without a write; otherwise the `jti` is recorded in the claim's
    /// transaction, which refuses a replay that raced the lookup: a replayed token or an
    /// already-claimed slot starts nothing, and a fire that claims nothing uses up nothing.
    pub async fn fire(self: &Arc<Self>, req: FireRequest) -> Result<Fired, CronError> {
        if let Some((jti, _)) = &req.jti
            && self.seen.contains(jti, self.now())
        {
            // Starts nothing, so takes no turn; refused all the same while draining.
            return match self.turns.gate().refusal() {
                Some(_) => Err(CronError::Draining),
                None => Ok(replayed()),
            };
        }
        let guard = self
            .turns
            .admit(&format!("cron-{}", req.job_id))
            .map_err(|_| CronError::Draining)?;
        // The claim and the run's start happen in a task of their own: a caller that goes
        // away (its request dropped) cannot leave a claimed slot without its run.
        let this = self.clone();
        let fired = tokio::spawn(async move { Box::pin(this.fire_here(req, guard)).await })
            .await
            .map_err(|e| {
                CronError::Store(StoreError::Query(format!("the fire task failed: {e}")))
            })??;
        // Whatever the outcome, an external provider looks again: a fire that started
        // nothing (early, stale, for a moved slot) may have used up the scheduler's one-shot.
        self.rearm.notify_one();
        Ok(fired)
    }

    async fn fire_here(
        self: &Arc<Self>,
        req: FireRequest,
        guard: Admission,
    ) -> Result<Fired, CronError> {
        let now = self.now();
        let jti = req.jti.as_ref().map(|(id, _)| id.as_str());
        let view = self.store.fire_view(&req.job_id, jti, now).await?;
        if view.token_seen {
            if let Some((jti, until)) = &req.jti {
                self.seen.insert(jti, *until);
            }
            guard.release();
            return Ok(replayed());
        }
        // Not before the replay check: a replay writes nothing, not even the upkeep. The view
        // does not need it first (a lease that ran out does not count as running).
        self.upkeep(now).await?;
        let Some(job) = view.job else {
            return self
                .no_claim(guard, &req, FireOutcome::UnknownJob, None)
                .await;
        };
        let (outcome, run) = match check_fire(&job, req.fire_at, now) {
            FireCheck::Claim => {
                return Box::pin(self.claim_fired(job, now, view.running, &req, guard)).await;
            }
            FireCheck::Paused => (FireOutcome::Paused, None),
            FireCheck::NotDue => (FireOutcome::NotDue, None),
            FireCheck::OtherSlot(at) => match self.store.run_at_slot(&job.id, at).await? {
                Some(run) => (FireOutcome::Duplicate, Some(run.id)),
                None => (FireOutcome::NotDue, None),
            },
        };
        self.no_claim(guard, &req, outcome, run).await
    }

    /// Claims the fired job's current slot with the token's id and starts its run;
    /// `running` is whether a previous run still holds its lease (then the slot is skipped).
    async fn claim_fired(
        self: &Arc<Self>,
        job: Job,
        now: Timestamp,
        running: bool,
        req: &FireRequest,
        guard: Admission,
    ) -> Result<Fired, CronError> {
        let jti = req.jti.as_ref().map(|(id, until)| (id.as_str(), *until));
        let claim = self.claim(&job, now, running, jti).await?;
        // Committed: whatever the outcome, the store holds the token's id now.
        if let Some((jti, until)) = jti
            && claim != Claim::Lost
        {
            self.seen.insert(jti, until);
        }
        let run_id = match claim {
            Claim::Run(run, finish) => {
                let run_id = run.id.clone();
                self.spawn_run(job, run, finish, Some(guard));
                return Ok(Fired {
                    outcome: FireOutcome::Started,
                    run_id: Some(run_id),
                });
            }
            Claim::Skipped(run) => Some(run.id),
            Claim::Replayed => None,
            Claim::Lost => {
                let slot = job.next_run_at.unwrap_or(now);
                self.store.run_at_slot(&job.id, slot).await?.map(|r| r.id)
            }
        };
        guard.release();
        Ok(Fired {
            outcome: FireOutcome::Duplicate,
            run_id,
        })
    }

    /// Answers a fire that claims nothing. Its token id is recorded all the same (the
    /// answer is final), and a token seen before is a `duplicate` whatever it names.
    async fn no_claim(
        &self,
        guard: Admission,
        req: &FireRequest,
        outcome: FireOutcome,
        run_id: Option<String>,
    ) -> Result<Fired, CronError> {
        guard.release();
        if let Some((jti, until)) = &req.jti {
            let fresh = self.store.remember_jti(jti, *until).await?;
            self.seen.insert(jti, *until);
            if !fresh {
                return Ok(replayed());
            }
        }
        Ok(Fired { outcome, run_id })
    }
}

/// The answer to a replayed token: it starts nothing.
fn replayed() -> Fired {
    Fired {
        outcome: FireOutcome::Duplicate,
        run_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Repeat;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn job(enabled: bool, state: JobState, next: Option<i64>) -> Job {
        Job {
            id: "0123456789ab".into(),
            name: "j".into(),
            prompt: "p".into(),
            schedule: "every 1m".into(),
            enabled,
            state,
            next_run_at: next.map(t),
            last_run_at: None,
            last_status: None,
            last_error: None,
            repeat: Repeat {
                times: None,
                completed: 0,
            },
            deliver: "local".into(),
            created_at: t(0),
            updated_at: t(0),
        }
    }

    #[test]
    fn what_a_job_says_of_a_fire() {
        #[track_caller]
        fn check(job: Job, fire_at: Option<i64>, now: i64, expected: FireCheck) {
            assert_eq!(
                check_fire(&job, fire_at.map(t), t(now)),
                expected,
                "fire_at {fire_at:?} now {now} {job:?}"
            );
        }
        use FireCheck::*;
        use JobState::{Completed, Error, Paused as PausedState, Scheduled};
        // The current slot, due now or already past.
        check(job(true, Scheduled, Some(100)), None, 100, Claim);
        check(job(true, Scheduled, Some(100)), Some(100), 100, Claim);
        check(job(true, Scheduled, Some(100)), Some(100), 5_000, Claim);
        // Up to 30 s early still runs; earlier is not due.
        check(job(true, Scheduled, Some(100)), Some(100), 70, Claim);
        check(job(true, Scheduled, Some(100)), Some(100), 69, NotDue);
        // Paused (disabled, or in the paused state) wins over everything else.
        check(job(false, Scheduled, Some(100)), Some(7), 100, Paused);
        check(job(true, PausedState, Some(100)), None, 100, Paused);
        // Another slot than the current one.
        check(
            job(true, Scheduled, Some(160)),
            Some(100),
            100,
            OtherSlot(t(100)),
        );
        check(
            job(true, Completed, None),
            Some(100),
            100,
            OtherSlot(t(100)),
        );
        // No slot, or a job that is not scheduled, is not due.
        check(job(true, Completed, None), None, 100, NotDue);
        check(job(true, Error, Some(100)), None, 100, NotDue);
        check(job(true, Error, Some(100)), Some(100), 100, NotDue);
    }
}
