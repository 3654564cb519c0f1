//! The built-in ticker and the claim both it and fires use: upkeep (expire dead leases,
//! forget expired token ids, record this host's dead runs interrupted), the due scan, the
//! claim of the due slots in one batch (and of one slot, for a fire), and the ticker loop. What a claim decides — the slot after this
//! one (fast-forwarded past missed slots), overlap = skip, what a claim's outcome means
//! here — are pure functions below, tested beside them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::owner::Procfs;
use super::schedule::Schedule;
use super::service::{CronError, CronService};
use crate::clock::iso;
use crate::job::{ClaimOutcome, ClaimRequest, Job, JobState, NewRun, Repeat, Run, RunStatus};
use crate::lifecycle::GatewayState;
use crate::turn::Admission;

/// Most due jobs one tick claims; the rest wait for the next tick (which comes at once).
const TICK_BATCH: i64 = 1000;
/// Most slots claimed in one transaction. A batch costs one commit, and a drain begun
/// while one is claimed leaves the batches after it due.
pub const CLAIM_BATCH: usize = 250;
/// Least time between two [`CronService::upkeep`]s on the fire path.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(10);

/// What one tick did (for status, tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    pub due: usize,
    pub claimed: usize,
    pub skipped_overlap: usize,
    pub lost: usize,
    pub expired: usize,
    /// Due jobs left due because a drain (or shutdown) began during the tick.
    pub refused: usize,
}

/// The result of claiming a job's current slot.
#[derive(Debug, PartialEq)]
pub(super) enum Claim {
    /// Ours to execute; with `Completed` when this was the job's last slot.
    Run(Run, Option<JobState>),
    /// Consumed as skipped: the previous run still holds its lease.
    Skipped(Run),
    /// Another claimer won (or the job changed).
    Lost,
    /// The fire token's id was used before: nothing claimed.
    Replayed,
}

impl Claim {
    /// What the store's `outcome` for a claim made with `status` means here: a slot won
    /// as running is ours to run (the job's last when there is no `next` slot), one won
    /// as skipped is only consumed.
    pub(super) fn decide(
        outcome: ClaimOutcome,
        status: RunStatus,
        run: Run,
        next: Option<Timestamp>,
    ) -> Self {
        match (outcome, status) {
            (ClaimOutcome::Claimed, RunStatus::Running) => {
                Self::Run(run, next.is_none().then_some(JobState::Completed))
            }
            (ClaimOutcome::Claimed, _) => Self::Skipped(run),
            (ClaimOutcome::Lost, _) => Self::Lost,
            (ClaimOutcome::Replayed, _) => Self::Replayed,
        }
    }
}

/// Overlap = skip: a slot that comes while the job's previous run still holds a live
/// lease is consumed as skipped, never run beside it.
pub(super) fn slot_status(previous_running: bool) -> RunStatus {
    if previous_running {
        RunStatus::Skipped
    } else {
        RunStatus::Running
    }
}

/// The slot after `slot` (the job's current one, of `schedule`), past `now`: `None` when
/// there is none (a one-shot, or the run of this slot is the last of `repeat`).
pub(super) fn following(
    slot: Timestamp,
    repeat: Repeat,
    schedule: &Schedule,
    now: Timestamp,
) -> Option<Timestamp> {
    if repeat.times.is_some_and(|n| repeat.completed + 1 >= n) {
        return None;
    }
    match schedule {
        Schedule::Once(_) => None,
        Schedule::Every(d) => fast_forward(slot, *d, now),
        cron @ Schedule::Cron { .. } => cron.next_after(slot.max(now)),
    }
}

/// The first slot of an `every` schedule on `slot`'s grid after both `slot` and `now`: a
/// job many periods behind fires once, not once per missed period.
pub(super) fn fast_forward(slot: Timestamp, every: Duration, now: Timestamp) -> Option<Timestamp> {
    let d = every.as_secs().max(1) as i64;
    let behind = now.as_second() - slot.as_second();
    let k = behind.max(0) / d + 1;
    Timestamp::from_second(slot.as_second() + k * d).ok()
}

impl CronService {
    /// One tick: expire dead leases, then claim and dispatch every due slot (skipped while
    /// draining: due jobs stay due), [`CLAIM_BATCH`] slots at a time. Each slot's turn is
    /// admitted before its batch is claimed, so a drain begun mid-tick leaves the jobs not
    /// yet admitted due.
    pub async fn tick(self: &Arc<Self>) -> Result<TickReport, CronError> {
        let mut report = TickReport::default();
        if self.turns.gate().snapshot().state != GatewayState::Running {
            self.record(|s| s.skipped_while_draining = true);
            return Ok(report);
        }
        let now = self.now();
        report.expired = self.store.expire_leases(now).await?.len();
        let due = self.store.due_jobs(now, TICK_BATCH).await?;
        report.due = due.len();
        let mut due = due.into_iter().peekable();
        while due.peek().is_some() {
            let mut admitted = Vec::with_capacity(CLAIM_BATCH);
            let mut refused = false;
            for job in due.by_ref() {
                let Ok(guard) = self.turns.admit(&format!("cron-{}", job.id)) else {
                    refused = true;
                    break;
                };
                admitted.push((job, guard));
                if admitted.len() == CLAIM_BATCH {
                    break;
                }
            }
            self.claim_and_start(admitted, now, &mut report).await?;
            if refused {
                report.refused = report.due - report.claimed - report.skipped_overlap - report.lost;
                self.record(|s| s.skipped_while_draining = true);
                break;
            }
        }
        Ok(report)
    }

    /// Claims the admitted jobs' slots in one batch, starts the runs won and gives the
    /// other admissions back. A batch that fails claimed nothing: its slots stay due.
    async fn claim_and_start(
        self: &Arc<Self>,
        admitted: Vec<(Job, Admission)>,
        now: Timestamp,
        report: &mut TickReport,
    ) -> Result<(), CronError> {
        let claims = match self.claim_batch(&admitted, now).await {
            Ok(claims) => claims,
            Err(e) => {
                admitted.into_iter().for_each(|(_, guard)| guard.release());
                return Err(e);
            }
        };
        for ((job, guard), claim) in admitted.into_iter().zip(claims) {
            match claim {
                Claim::Run(run, finish) => {
                    report.claimed += 1;
                    self.spawn_run(job, run, finish, Some(guard));
                }
                Claim::Skipped(_) => {
                    guard.release();
                    report.skipped_overlap += 1;
                }
                Claim::Lost | Claim::Replayed => {
                    guard.release();
                    report.lost += 1;
                }
            }
        }
        Ok(())
    }

    /// Claims the jobs' current slots (see [`Claim`]), one per job in order: the overlap
    /// check is one query and the claims one transaction, so an error claimed nothing.
    async fn claim_batch(
        &self,
        jobs: &[(Job, Admission)],
        now: Timestamp,
    ) -> Result<Vec<Claim>, CronError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = jobs.iter().map(|(job, _)| job.id.clone()).collect();
        let running = self.store.running_jobs(&ids, now).await?;
        let mut requests = Vec::with_capacity(jobs.len());
        // `None` for a claim the batch decides, in the order of `requests`.
        let mut claims = Vec::with_capacity(jobs.len());
        for (job, _) in jobs {
            match self.prepare(job, now).await? {
                Some((run, next)) => {
                    let status = slot_status(running.contains(&job.id));
                    let state = JobState::Scheduled;
                    requests.push(ClaimRequest {
                        run,
                        next,
                        state,
                        status,
                    });
                    claims.push(None);
                }
                None => claims.push(Some(Claim::Lost)),
            }
        }
        let outcomes = self.store.claim_slots(&requests).await?;
        let mut decided = requests
            .into_iter()
            .zip(outcomes)
            .map(|(r, outcome)| Claim::decide(outcome, r.status, r.run.running(), r.next));
        Ok(claims
            .into_iter()
            .map(|claim| claim.or_else(|| decided.next()).unwrap_or(Claim::Lost))
            .collect())
    }

    /// Claims the job's current slot alone (see [`Claim`]), with the fire token's id if any.
    /// `running` is whether a previous run still holds its lease (the fire's view read it).
    pub(super) async fn claim(
        &self,
        job: &Job,
        now: Timestamp,
        running: bool,
        jti: Option<(&str, Timestamp)>,
    ) -> Result<Claim, CronError> {
        let Some((new, next)) = self.prepare(job, now).await? else {
            return Ok(Claim::Lost);
        };
        let status = slot_status(running);
        let outcome = self
            .store
            .claim_slot(&new, next, JobState::Scheduled, status, jti)
            .await?;
        Ok(Claim::decide(outcome, status, new.running(), next))
    }

    /// What claiming the job's current slot writes: the run to open on it and the slot
    /// after it; `None` when there is nothing to claim (no slot, or a schedule that can no
    /// longer be parsed: the job is parked). The schedule is parsed once, here.
    async fn prepare(
        &self,
        job: &Job,
        now: Timestamp,
    ) -> Result<Option<(NewRun, Option<Timestamp>)>, CronError> {
        let Some(slot) = job.next_run_at else {
            return Ok(None);
        };
        let Ok(schedule) = self.parse(&job.schedule, slot) else {
            self.park_unreadable(job, now).await?;
            return Ok(None);
        };
        let next = following(slot, job.repeat, &schedule, now);
        let late = Duration::try_from(now.duration_since(slot)).unwrap_or_default();
        if late > schedule.grace(slot) {
            tracing::info!(job = %job.id, late_s = late.as_secs(), "job missed its slot(s); firing once and fast-forwarding");
        }
        Ok(Some((self.new_run(&job.id, slot, now), next)))
    }

    /// Parks a job whose stored schedule can no longer be parsed in `error`, visibly.
    async fn park_unreadable(&self, job: &Job, now: Timestamp) -> Result<(), CronError> {
        let mut broken = job.clone();
        broken.state = JobState::Error;
        broken.last_error = Some(format!(
            "schedule {:?} can no longer be parsed",
            job.schedule
        ));
        broken.updated_at = now;
        self.store.update_job(&broken).await?;
        Ok(())
    }

    /// What the ticker would otherwise do, for the scale-to-zero mode where none runs:
    /// record runs of dead processes interrupted and forget expired fire-token ids. At most
    /// once per [`UPKEEP_INTERVAL`], so fires in a burst do not each pay for it.
    pub(super) async fn upkeep(&self, now: Timestamp) -> Result<(), CronError> {
        let last = self.last_upkeep.load(Ordering::Relaxed);
        if now.as_second() - last < UPKEEP_INTERVAL.as_secs() as i64
            || self
                .last_upkeep
                .compare_exchange(last, now.as_second(), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        self.store.expire_leases(now).await?;
        self.store.sweep_fire_tokens(now).await?;
        Ok(())
    }

    /// Records the runs of this host's dead processes (a gateway that was killed before
    /// this one started) interrupted at once, without waiting for their leases; called
    /// at startup. Each is ended only if its dead owner still holds it and it is still
    /// running, so a run swept by another process, or already ended, is not recorded twice.
    /// Returns how many were recorded.
    pub async fn interrupt_own_dead_runs(&self) -> Result<usize, CronError> {
        let now = self.now();
        let mut ended = 0;
        for (run_id, owner) in self.store.running_owners().await? {
            if !self.owner.is_dead(&owner, &Procfs) {
                continue;
            }
            if self.store.interrupt_dead_run(&run_id, &owner, now).await? {
                tracing::info!(run = %run_id, owner = %owner, "recorded a run of a process that is gone as interrupted");
                ended += 1;
            }
        }
        if ended > 0 {
            // The jobs' next slots may be free to run now (overlap no longer blocks them).
            self.job_changed();
        }
        Ok(ended)
    }

    /// Ticks every `interval`, at once when a job changes, and when the next job is due;
    /// never dies: errors are logged and shown in status.
    pub async fn run_ticker(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        self.record(|s| s.provider = "builtin".into());
        loop {
            let started = self.now();
            match self.tick().await {
                Ok(report) => self.record(|s| {
                    s.last_tick_at = Some(iso(started));
                    s.due_jobs = report.due;
                    s.last_error = None;
                    s.skipped_while_draining = report.refused > 0
                        || (report == TickReport::default()
                            && self.turns.gate().snapshot().state != GatewayState::Running);
                }),
                Err(e) => {
                    tracing::error!(error = %e, "cron tick failed");
                    self.record(|s| {
                        s.last_tick_at = Some(iso(started));
                        s.last_error = Some(e.to_string());
                    });
                }
            }
            let sleep = match self.store.next_due_at().await {
                Ok(Some(at)) => Duration::try_from(at.duration_since(self.now()))
                    .unwrap_or(Duration::ZERO)
                    .min(interval)
                    .max(Duration::from_millis(200)),
                _ => interval,
            };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;

    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    const FOREVER: Repeat = Repeat {
        times: None,
        completed: 0,
    };

    #[test]
    fn fast_forward_lands_on_the_first_grid_slot_after_now() {
        #[track_caller]
        fn check(slot: i64, every: u64, now: i64, expected: i64) {
            let got = fast_forward(t(slot), Duration::from_secs(every), t(now));
            assert_eq!(
                got,
                Some(t(expected)),
                "slot {slot}, every {every}s, now {now}"
            );
        }
        // On time: the next period.
        check(0, 60, 0, 60);
        // Early (a fire ahead of its slot): still the next period after the slot.
        check(0, 60, -20, 60);
        // Late within one period: the slot after, not a replay of the missed one.
        check(0, 60, 59, 60);
        // Exactly one period late: that slot is now, so the one after it.
        check(0, 60, 60, 120);
        // Many periods behind: once, then on the grid past now.
        check(0, 60, 3_601, 3_660);
        check(10, 3_600, 86_400 * 3, 86_400 * 3 + 10);
        // A sub-second interval counts as one second.
        check(0, 0, 5, 6);
    }

    #[test]
    fn following_slots() {
        let utc = TimeZone::UTC;
        let every = Schedule::parse("every 1m", &utc, t(0)).unwrap();
        let hourly = Schedule::parse("0 * * * *", &utc, t(0)).unwrap();
        let once = Schedule::parse(&t(0).to_string(), &utc, t(0)).unwrap();
        let repeat = |times, completed| Repeat {
            times: Some(times),
            completed,
        };
        // 1_800_000_000 is 2027-01-15T08:00:00Z, on the hour.
        #[track_caller]
        fn check(schedule: &Schedule, repeat: Repeat, now: i64, expected: Option<i64>) {
            let got = following(t(0), repeat, schedule, t(now));
            assert_eq!(got, expected.map(t), "{schedule:?} {repeat:?} now {now}");
        }
        check(&every, FOREVER, 0, Some(60));
        check(&every, FOREVER, 125, Some(180));
        check(&hourly, FOREVER, 0, Some(3_600));
        // A cron job behind by hours fires once and resumes after now.
        check(&hourly, FOREVER, 3 * 3_600 + 5, Some(4 * 3_600));
        // A one-shot has no following slot.
        check(&once, FOREVER, 0, None);
        // repeat: N ends after the Nth run's slot.
        check(&every, repeat(3, 0), 0, Some(60));
        check(&every, repeat(3, 1), 0, Some(60));
        check(&every, repeat(3, 2), 0, None);
        check(&every, repeat(1, 0), 0, None);
        check(&hourly, repeat(2, 5), 0, None);
    }

    #[test]
    fn overlap_is_skip() {
        assert_eq!(slot_status(true), RunStatus::Skipped);
        assert_eq!(slot_status(false), RunStatus::Running);
    }

    #[test]
    fn what_a_claim_outcome_means_here() {
        let run = Run {
            id: "run_1".into(),
            job_id: "0123456789ab".into(),
            scheduled_for: t(0),
            started_at: t(1),
            finished_at: None,
            status: RunStatus::Running,
            output: None,
            error: None,
        };
        #[track_caller]
        fn check(
            run: &Run,
            outcome: ClaimOutcome,
            status: RunStatus,
            next: Option<i64>,
            expected: Claim,
        ) {
            let got = Claim::decide(outcome, status, run.clone(), next.map(t));
            assert_eq!(got, expected, "{outcome:?} {status:?} next {next:?}");
        }
        use ClaimOutcome::*;
        use RunStatus::{Running, Skipped};
        let r = || run.clone();
        check(&run, Claimed, Running, Some(60), Claim::Run(r(), None));
        // The job's last slot: its state moves to completed when the run ends.
        check(
            &run,
            Claimed,
            Running,
            None,
            Claim::Run(r(), Some(JobState::Completed)),
        );
        // Overlap: the slot is consumed, nothing runs.
        check(&run, Claimed, Skipped, Some(60), Claim::Skipped(r()));
        check(&run, Claimed, Skipped, None, Claim::Skipped(r()));
        for status in [Running, Skipped] {
            check(&run, Lost, status, Some(60), Claim::Lost);
            check(&run, Replayed, status, Some(60), Claim::Replayed);
        }
    }
}
