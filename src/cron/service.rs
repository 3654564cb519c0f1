//! The cron service: job CRUD with validation, the tick (find due jobs, claim each slot
//! once, dispatch), run execution as gated turns with a renewed lease, and delivery.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Job, JobState, Repeat, Run, RunStatus, Schedule};
use crate::agent::{Backend, Message, TurnEvent, TurnRequest};
use crate::clock::{SharedClock, iso};
use crate::lifecycle::{CronStatus, GatewayState, RuntimeInfo, TurnGate, TurnGuard};
use crate::metrics::TurnOutcome;
use crate::store::{ClaimOutcome, NewRun, Store, StoreError};

/// How long a claimed run is owned before another process may call it interrupted.
pub const LEASE: Duration = Duration::from_secs(300);
/// Most due jobs one tick claims; the rest wait for the next tick (which comes at once).
const TICK_BATCH: i64 = 1000;
/// Longest prompt accepted (compat).
pub const MAX_PROMPT_CHARS: usize = 5_000;
/// Longest job name accepted (compat).
pub const MAX_NAME_CHARS: usize = 200;
/// Webhook delivery attempts and the first back-off.
const DELIVERY_ATTEMPTS: u32 = 3;
const DELIVERY_BACKOFF: Duration = Duration::from_millis(500);
/// Attempts to record a run's end (backing off like deliveries).
const FINISH_ATTEMPTS: u32 = 5;

/// A new job, as a client describes it (the job API parses the wire body into this).
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    /// Required: 1 to [`MAX_NAME_CHARS`] characters.
    pub name: String,
    pub prompt: String,
    /// Required.
    pub schedule: String,
    pub enabled: Option<bool>,
    /// Times to run; absent = forever.
    pub repeat: Option<u32>,
    pub deliver: Option<String>,
}

/// A change to a job; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct JobPatch {
    pub name: Option<String>,
    pub prompt: Option<String>,
    pub schedule: Option<String>,
    pub enabled: Option<bool>,
    /// `Some(None)` = repeat forever from now on.
    pub repeat: Option<Option<u32>>,
    pub deliver: Option<String>,
}

/// Why a cron operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// The request is wrong; the message names the field and the problem.
    #[error("{0}")]
    Invalid(String),
    #[error("no job with id {0:?}")]
    NotFound(String),
    #[error("the gateway is draining and not starting runs; retry later")]
    Draining,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long before its slot an external fire still runs a job (the scheduler's clock and
/// ours may disagree by this much).
pub const FIRE_EARLY_TOLERANCE: Duration = Duration::from_secs(30);

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

/// Least time between two [`CronService::upkeep`]s on the fire path.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The result of claiming a job's current slot.
#[derive(Debug)]
enum Claim {
    /// Ours to execute; with `Completed` when this was the job's last slot.
    Run(Run, Option<JobState>),
    /// Consumed as skipped: the previous run still holds its lease.
    Skipped(Run),
    /// Another claimer won (or the job changed).
    Lost,
    /// The fire token's id was used before: nothing claimed.
    Replayed,
}

/// What one tick did (for status, tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    pub due: usize,
    pub claimed: usize,
    pub skipped_overlap: usize,
    pub lost: usize,
    pub expired: usize,
}

/// Jobs, ticks and runs of one gateway process.
#[derive(Debug)]
pub struct CronService {
    store: Store,
    gate: Arc<TurnGate>,
    backend: Arc<Backend>,
    clock: SharedClock,
    tz: TimeZone,
    info: Arc<RuntimeInfo>,
    http: reqwest::Client,
    /// Identifies this process in run leases.
    owner: String,
    lease: Mutex<Duration>,
    wake: Notify,
    /// Job changes and fired slots, for an external provider that arms the next slot.
    rearm: Notify,
    /// Where run starts and ends are announced (the dashboard's live events).
    events: std::sync::OnceLock<crate::events::Events>,
    /// When [`CronService::upkeep`] last ran (Unix seconds).
    last_upkeep: AtomicI64,
    /// Fired at the shutdown deadline: running runs stop and are recorded interrupted.
    cancel: CancellationToken,
}

impl CronService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        gate: Arc<TurnGate>,
        backend: Arc<Backend>,
        clock: SharedClock,
        tz: TimeZone,
        info: Arc<RuntimeInfo>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            store,
            gate,
            backend,
            clock,
            tz,
            owner: format!("pid-{}-{}", info.pid, &crate::ids::random_hex128()[..8]),
            info,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
            lease: Mutex::new(LEASE),
            wake: Notify::new(),
            rearm: Notify::new(),
            events: std::sync::OnceLock::new(),
            last_upkeep: AtomicI64::new(i64::MIN / 2),
            cancel,
        }
    }

    /// Shortens the run lease (tests of crash recovery; never in production config).
    pub fn set_lease(&self, lease: Duration) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    /// Announces run starts and ends on `events` from now on.
    pub fn set_events(&self, events: crate::events::Events) {
        let _ = self.events.set(events);
    }

    fn announce(&self, run: &Run) {
        if let Some(events) = self.events.get().filter(|e| e.has_listeners()) {
            let mut m = serde_json::Map::new();
            m.insert("run_id".into(), json!(run.id));
            m.insert("job_id".into(), json!(run.job_id));
            m.insert("status".into(), json!(run.status.as_str()));
            m.insert("scheduled_for".into(), json!(iso(run.scheduled_for)));
            m.insert("finished_at".into(), json!(run.finished_at.map(iso)));
            events.publish("run", m);
        }
    }

    fn lease(&self) -> Duration {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Now, in whole seconds (slots are whole seconds).
    pub fn now(&self) -> Timestamp {
        // Slots are whole seconds.
        Timestamp::from_second(self.clock.now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn parse(&self, text: &str, now: Timestamp) -> Result<Schedule, CronError> {
        Schedule::parse(text, &self.tz, now)
            .map_err(|e| CronError::Invalid(format!("schedule: {e}")))
    }

    // ---- jobs -----------------------------------------------------------------------

    pub async fn create(&self, spec: JobSpec) -> Result<Job, CronError> {
        let now = self.now();
        let name = check_name(&spec.name)?;
        let prompt = check_prompt(&spec.prompt)?;
        if spec.schedule.trim().is_empty() {
            return Err(CronError::Invalid("schedule: required".into()));
        }
        let schedule = self.parse(&spec.schedule, now)?;
        let deliver = check_deliver(spec.deliver.as_deref().unwrap_or("local"))?;
        if spec.repeat == Some(0) {
            return Err(CronError::Invalid(REPEAT_RULE.into()));
        }
        let enabled = spec.enabled.unwrap_or(true);
        let job = Job {
            id: crate::ids::random_hex128()[..12].to_owned(),
            name,
            prompt,
            schedule: stored_text(&spec.schedule, &schedule),
            enabled,
            state: if enabled {
                JobState::Scheduled
            } else {
                JobState::Paused
            },
            next_run_at: schedule.first(now),
            last_run_at: None,
            last_status: None,
            last_error: None,
            repeat: Repeat {
                times: spec.repeat,
                completed: 0,
            },
            deliver,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_job(&job).await?;
        self.job_changed();
        Ok(job)
    }

    pub async fn get(&self, id: &str) -> Result<Job, CronError> {
        self.store.get_job(id).await.map_err(|e| not_found(e, id))
    }

    pub async fn list(&self) -> Result<Vec<Job>, CronError> {
        Ok(self.store.list_jobs().await?)
    }

    pub async fn update(&self, id: &str, patch: JobPatch) -> Result<Job, CronError> {
        let now = self.now();
        let mut job = self.get(id).await?;
        if let Some(p) = patch.prompt {
            job.prompt = check_prompt(&p)?;
        }
        if let Some(n) = patch.name {
            job.name = check_name(&n)?;
        }
        if let Some(d) = patch.deliver {
            job.deliver = check_deliver(&d)?;
        }
        if let Some(r) = patch.repeat {
            if r == Some(0) {
                return Err(CronError::Invalid(REPEAT_RULE.into()));
            }
            job.repeat.times = r;
        }
        if let Some(text) = patch.schedule {
            let schedule = self.parse(&text, now)?;
            job.schedule = stored_text(&text, &schedule);
            job.next_run_at = schedule.first(now);
            if job.state == JobState::Completed {
                job.state = JobState::Scheduled;
            }
        }
        if let Some(enabled) = patch.enabled {
            self.set_enabled(&mut job, enabled, now)?;
        }
        job.updated_at = now;
        self.store
            .update_job(&job)
            .await
            .map_err(|e| not_found(e, id))?;
        self.job_changed();
        Ok(job)
    }

    fn set_enabled(&self, job: &mut Job, enabled: bool, now: Timestamp) -> Result<(), CronError> {
        job.enabled = enabled;
        if !enabled {
            if job.state == JobState::Scheduled {
                job.state = JobState::Paused;
            }
            return Ok(());
        }
        if job.state == JobState::Paused || job.state == JobState::Error {
            job.state = JobState::Scheduled;
            let schedule = Schedule::parse(&job.schedule, &self.tz, job.next_run_at.unwrap_or(now))
                .map_err(|e| CronError::Invalid(format!("schedule: {e}")))?;
            // Resuming does not replay what was missed while paused.
            if !schedule.is_once() && job.next_run_at.is_none_or(|t| t < now) {
                job.next_run_at = schedule.next_after(now);
            }
        }
        Ok(())
    }

    pub async fn pause(&self, id: &str) -> Result<Job, CronError> {
        self.update(
            id,
            JobPatch {
                enabled: Some(false),
                ..JobPatch::default()
            },
        )
        .await
    }

    pub async fn resume(&self, id: &str) -> Result<Job, CronError> {
        self.update(
            id,
            JobPatch {
                enabled: Some(true),
                ..JobPatch::default()
            },
        )
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<(), CronError> {
        if self.store.delete_job(id).await? {
            self.job_changed();
            Ok(())
        } else {
            Err(CronError::NotFound(id.to_owned()))
        }
    }

    pub async fn runs(&self, id: &str, limit: i64) -> Result<Vec<Run>, CronError> {
        self.get(id).await?;
        Ok(self.store.list_runs(id, limit).await?)
    }

    /// Runs a job now, outside its schedule (the job's slots are untouched).
    pub async fn run_now(self: &Arc<Self>, id: &str) -> Result<Run, CronError> {
        let job = self.get(id).await?;
        if self.gate.snapshot().state != GatewayState::Running {
            return Err(CronError::Draining);
        }
        let now = self.now();
        let new = self.new_run(&job.id, now, now);
        if self.store.open_run(&new, RunStatus::Running).await? != ClaimOutcome::Claimed {
            return Err(CronError::Invalid(
                "this job was already started this second".into(),
            ));
        }
        let run = running(&new);
        self.spawn_run(job, run.clone(), None, None);
        Ok(run)
    }

    fn new_run(&self, job_id: &str, slot: Timestamp, now: Timestamp) -> NewRun {
        NewRun {
            id: format!("run_{}", &crate::ids::random_hex128()[..16]),
            job_id: job_id.to_owned(),
            scheduled_for: slot,
            started_at: now,
            lease_until: now
                .checked_add(jiff::SignedDuration::try_from(self.lease()).unwrap_or_default())
                .unwrap_or(now),
            owner: self.owner.clone(),
        }
    }

    // ---- external fires -------------------------------------------------------------

    /// Carries out a fire: the slot's claim is taken here, synchronously, and the run goes on
    /// in the background. Admission comes first, so a draining gateway claims nothing
    /// (`Draining`) and the scheduler's retry runs the slot after the drain. The token's
    /// `jti` is recorded in the claim's transaction: a replayed token or an already-claimed
    /// slot starts nothing, and a fire that claims nothing uses up nothing.
    pub async fn fire(self: &Arc<Self>, req: FireRequest) -> Result<Fired, CronError> {
        // The claim and the run's start happen in a task of their own: a caller that goes
        // away (its request dropped) cannot leave a claimed slot without its run.
        let this = self.clone();
        let fired = tokio::spawn(async move { this.fire_here(req).await })
            .await
            .map_err(|e| {
                CronError::Store(StoreError::Query(format!("the fire task failed: {e}")))
            })??;
        // Whatever the outcome, an external provider looks again: a fire that started
        // nothing (early, stale, for a moved slot) may have used up the scheduler's one-shot.
        self.rearm.notify_one();
        Ok(fired)
    }

    async fn fire_here(self: &Arc<Self>, req: FireRequest) -> Result<Fired, CronError> {
        let guard = self
            .gate
            .admit(&format!("cron-{}", req.job_id))
            .map_err(|_| CronError::Draining)?;
        let now = self.now();
        self.upkeep(now).await?;
        let job = match self.store.get_job(&req.job_id).await {
            Ok(job) => job,
            Err(StoreError::NotFound) => {
                return self
                    .no_claim(guard, &req, FireOutcome::UnknownJob, None)
                    .await;
            }
            Err(e) => return Err(e.into()),
        };
        if !job.enabled || job.state == JobState::Paused {
            return self.no_claim(guard, &req, FireOutcome::Paused, None).await;
        }
        if let Some(at) = req.fire_at
            && job.next_run_at != Some(at)
        {
            // Not the job's current slot: an earlier delivery claimed it, or it moved.
            let (outcome, run) = match self.store.run_at_slot(&job.id, at).await? {
                Some(run) => (FireOutcome::Duplicate, Some(run.id)),
                None => (FireOutcome::NotDue, None),
            };
            return self.no_claim(guard, &req, outcome, run).await;
        }
        let early = jiff::SignedDuration::try_from(FIRE_EARLY_TOLERANCE).unwrap_or_default();
        let due = job.state == JobState::Scheduled
            && job
                .next_run_at
                .is_some_and(|slot| slot <= now.checked_add(early).unwrap_or(now));
        if !due {
            return self.no_claim(guard, &req, FireOutcome::NotDue, None).await;
        }
        let jti = req.jti.as_ref().map(|(id, until)| (id.as_str(), *until));
        let nothing = |guard: TurnGuard, run_id| {
            guard.release();
            Ok(Fired {
                outcome: FireOutcome::Duplicate,
                run_id,
            })
        };
        match self.claim(&job, now, jti).await? {
            Claim::Run(run, finish) => {
                let run_id = run.id.clone();
                self.spawn_run(job, run, finish, Some(guard));
                Ok(Fired {
                    outcome: FireOutcome::Started,
                    run_id: Some(run_id),
                })
            }
            Claim::Skipped(run) => nothing(guard, Some(run.id)),
            Claim::Replayed => nothing(guard, None),
            Claim::Lost => {
                let slot = job.next_run_at.unwrap_or(now);
                let run = self.store.run_at_slot(&job.id, slot).await?;
                nothing(guard, run.map(|r| r.id))
            }
        }
    }

    /// Answers a fire that claims nothing. Its token id is recorded all the same (the
    /// answer is final), and a token seen before is a `duplicate` whatever it names.
    async fn no_claim(
        &self,
        guard: TurnGuard,
        req: &FireRequest,
        outcome: FireOutcome,
        run_id: Option<String>,
    ) -> Result<Fired, CronError> {
        guard.release();
        if let Some((jti, until)) = &req.jti
            && !self.store.remember_jti(jti, *until).await?
        {
            return Ok(Fired {
                outcome: FireOutcome::Duplicate,
                run_id: None,
            });
        }
        Ok(Fired { outcome, run_id })
    }

    /// What the ticker would otherwise do, for the scale-to-zero mode where none runs:
    /// record runs of dead processes interrupted and forget expired fire-token ids. At most
    /// once per [`UPKEEP_INTERVAL`], so fires in a burst do not each pay for it.
    async fn upkeep(&self, now: Timestamp) -> Result<(), CronError> {
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

    // ---- the tick -------------------------------------------------------------------

    /// One tick: expire dead leases, then claim and dispatch every due slot (skipped while
    /// draining: due jobs stay due).
    pub async fn tick(self: &Arc<Self>) -> Result<TickReport, CronError> {
        let mut report = TickReport::default();
        if self.gate.snapshot().state != GatewayState::Running {
            self.record(|s| s.skipped_while_draining = true);
            return Ok(report);
        }
        let now = self.now();
        report.expired = self.store.expire_leases(now).await?.len();
        let due = self.store.due_jobs(now, TICK_BATCH).await?;
        report.due = due.len();
        for job in due {
            match self.claim(&job, now, None).await? {
                Claim::Run(run, finish) => {
                    report.claimed += 1;
                    self.spawn_run(job, run, finish, None);
                }
                Claim::Skipped(_) => report.skipped_overlap += 1,
                Claim::Lost | Claim::Replayed => report.lost += 1,
            }
        }
        Ok(report)
    }

    /// The slot after the job's current one, fast-forwarded past `now` (a job many
    /// periods behind fires once, not once per missed period).
    fn following(&self, job: &Job, now: Timestamp) -> Option<Timestamp> {
        let slot = job.next_run_at?;
        if job
            .repeat
            .times
            .is_some_and(|n| job.repeat.completed + 1 >= n)
        {
            return None;
        }
        let schedule = Schedule::parse(&job.schedule, &self.tz, slot).ok()?;
        match schedule {
            Schedule::Once(_) => None,
            Schedule::Every(d) => {
                let d = d.as_secs().max(1) as i64;
                let behind = now.as_second() - slot.as_second();
                let k = behind.max(0) / d + 1;
                Timestamp::from_second(slot.as_second() + k * d).ok()
            }
            cron @ Schedule::Cron { .. } => cron.next_after(slot.max(now)),
        }
    }

    /// Claims the job's current slot (see [`Claim`]).
    async fn claim(
        &self,
        job: &Job,
        now: Timestamp,
        jti: Option<(&str, Timestamp)>,
    ) -> Result<Claim, CronError> {
        let Some(slot) = job.next_run_at else {
            return Ok(Claim::Lost);
        };
        let Ok(schedule) = Schedule::parse(&job.schedule, &self.tz, slot) else {
            // Unreadable stored schedule: park the job in `error`, visibly.
            let mut broken = job.clone();
            broken.state = JobState::Error;
            broken.last_error = Some(format!(
                "schedule {:?} can no longer be parsed",
                job.schedule
            ));
            broken.updated_at = now;
            self.store.update_job(&broken).await?;
            return Ok(Claim::Lost);
        };
        let next = self.following(job, now);
        let late = Duration::try_from(now.duration_since(slot)).unwrap_or_default();
        if late > schedule.grace(slot) {
            tracing::info!(job = %job.id, late_s = late.as_secs(), "job missed its slot(s); firing once and fast-forwarding");
        }
        let status = if self.store.running_run(&job.id, now).await?.is_some() {
            RunStatus::Skipped
        } else {
            RunStatus::Running
        };
        let new = self.new_run(&job.id, slot, now);
        let state = JobState::Scheduled;
        let outcome = self
            .store
            .claim_slot(&new, next, state, status, jti)
            .await?;
        Ok(match (outcome, status) {
            (ClaimOutcome::Claimed, RunStatus::Running) => {
                Claim::Run(running(&new), next.is_none().then_some(JobState::Completed))
            }
            (ClaimOutcome::Claimed, _) => Claim::Skipped(running(&new)),
            (ClaimOutcome::Lost, _) => Claim::Lost,
            (ClaimOutcome::Replayed, _) => Claim::Replayed,
        })
    }

    /// Executes a claimed run as a gated turn in the background (admitted here unless the
    /// caller already holds its admission).
    fn spawn_run(
        self: &Arc<Self>,
        job: Job,
        run: Run,
        finish_job: Option<JobState>,
        admitted: Option<TurnGuard>,
    ) {
        let this = self.clone();
        self.announce(&run);
        tokio::spawn(async move {
            let ended = this.execute(&job, run, admitted).await;
            this.announce(&ended);
            let final_state = finish_job.filter(|_| ended.status != RunStatus::Interrupted);
            // Recording the end is retried: a store hiccup must not leave a finished run
            // to be called interrupted when its lease runs out.
            let mut attempt = 1;
            loop {
                match this.store.finish_run(&ended, final_state).await {
                    Ok(true) => break this.deliver(&job, &ended).await,
                    Ok(false) => {
                        break tracing::warn!(run = %ended.id, "run was already ended elsewhere (lease expired)");
                    }
                    Err(e) if attempt < FINISH_ATTEMPTS => {
                        tracing::warn!(run = %ended.id, error = %e, attempt, "cannot record the run's end yet; retrying");
                        tokio::time::sleep(DELIVERY_BACKOFF * attempt).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        break tracing::error!(run = %ended.id, error = %e, "cannot record the run's end");
                    }
                }
            }
        });
    }

    async fn execute(&self, job: &Job, mut run: Run, admitted: Option<TurnGuard>) -> Run {
        let session = format!("cron-{}", job.id);
        let mut guard = match admitted.map_or_else(|| self.gate.admit(&session), Ok) {
            Ok(g) => g,
            Err(refusal) => {
                run.status = RunStatus::Interrupted;
                run.error = Some(refusal.to_string());
                run.finished_at = Some(self.now());
                return run;
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
        let mut renew = tokio::time::interval(self.lease() / 3);
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
                    let until = self.now().checked_add(jiff::SignedDuration::try_from(self.lease()).unwrap_or_default()).unwrap_or(self.now());
                    if let Err(e) = self.store.renew_lease(&run.id, until).await {
                        tracing::warn!(run = %run.id, error = %e, "cannot renew the run lease");
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
        run
    }

    /// Posts the run to the job's webhook (retried with back-off); failures are recorded.
    async fn deliver(&self, job: &Job, run: &Run) {
        if job.deliver == "local" || run.status == RunStatus::Interrupted {
            return;
        }
        let body = json!({
            "job_id": job.id, "job_name": job.name, "run_id": run.id, "status": run.status.as_str(),
            "scheduled_for": iso(run.scheduled_for), "finished_at": run.finished_at.map(iso),
            "output": run.output, "error": run.error,
        });
        let mut last = String::new();
        for attempt in 0..DELIVERY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(DELIVERY_BACKOFF * 2u32.pow(attempt - 1)).await;
            }
            match self.http.post(&job.deliver).json(&body).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = e.without_url().to_string(),
            }
        }
        let message =
            format!("delivery to the webhook failed after {DELIVERY_ATTEMPTS} attempts: {last}");
        tracing::warn!(job = %job.id, run = %run.id, "{message}");
        if let Err(e) = self
            .store
            .record_delivery_failure(&run.id, &job.id, &message)
            .await
        {
            tracing::error!(error = %e, "cannot record the delivery failure");
        }
    }

    // ---- the ticker -----------------------------------------------------------------

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
                    s.skipped_while_draining = report == TickReport::default()
                        && self.gate.snapshot().state != GatewayState::Running;
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

    fn record(&self, f: impl FnOnce(&mut CronStatus)) {
        self.info.update_cron(f);
    }

    /// Resolves at the next job change or fired slot (a permit is kept if nobody was
    /// waiting), for the provider that keeps an external scheduler in step.
    pub async fn changed(&self) {
        self.rearm.notified().await;
    }

    /// Wakes the ticker and the external provider: a job changed.
    fn job_changed(&self) {
        self.wake.notify_one();
        self.rearm.notify_one();
    }
}

fn running(new: &NewRun) -> Run {
    Run {
        id: new.id.clone(),
        job_id: new.job_id.clone(),
        scheduled_for: new.scheduled_for,
        started_at: new.started_at,
        finished_at: None,
        status: RunStatus::Running,
        output: None,
        error: None,
    }
}

fn not_found(e: StoreError, id: &str) -> CronError {
    match e {
        StoreError::NotFound => CronError::NotFound(id.to_owned()),
        other => CronError::Store(other),
    }
}

/// Relative one-shots (`in 30m`) are stored as the instant they name.
fn stored_text(text: &str, schedule: &Schedule) -> String {
    match schedule {
        Schedule::Once(at) => at.to_string(),
        _ => text.trim().to_owned(),
    }
}

/// What a `repeat` must be (SPEC §7).
pub const REPEAT_RULE: &str =
    "repeat: must be an integer of at least 1 (omit it to repeat forever)";

fn check_name(n: &str) -> Result<String, CronError> {
    let n = n.trim();
    if n.is_empty() {
        return Err(CronError::Invalid(format!(
            "name: required (1 to {MAX_NAME_CHARS} characters)"
        )));
    }
    if n.chars().count() > MAX_NAME_CHARS {
        return Err(CronError::Invalid(format!(
            "name: longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(n.to_owned())
}

fn check_prompt(p: &str) -> Result<String, CronError> {
    if p.chars().count() > MAX_PROMPT_CHARS {
        return Err(CronError::Invalid(format!(
            "prompt: longer than {MAX_PROMPT_CHARS} characters"
        )));
    }
    let p = p.trim();
    if p.is_empty() {
        return Err(CronError::Invalid("prompt: must not be empty".into()));
    }
    Ok(p.to_owned())
}

fn check_deliver(d: &str) -> Result<String, CronError> {
    let d = d.trim();
    if d == "local" {
        return Ok(d.to_owned());
    }
    match reqwest::Url::parse(d) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(d.to_owned()),
        _ => Err(CronError::Invalid(format!(
            "deliver: expected \"local\" or an http(s) webhook URL, got {d:?}"
        ))),
    }
}
