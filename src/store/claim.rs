//! The run claim: exactly one run per scheduled slot, whatever the number of replicas,
//! retries or crashes. One transaction records the fire token's id (if any; a replay stops
//! there), moves the job off the slot with a compare-and-swap (`UPDATE … WHERE
//! next_run_at = slot`), and opens the run row, whose `(job_id, scheduled_for)` is unique.
//!
//! PostgreSQL runs the steps as one set-based statement each, for one claim or a batch
//! (`claim_batch`); on SQLite the claim is an op the writer group-commits, one statement a
//! step. Both report what they observed as a [`ClaimSeen`], and [`ClaimSeen::outcome`]
//! alone turns that into the [`ClaimOutcome`].

use jiff::Timestamp;
use rusqlite::{Connection, params};

use super::fire_tokens::RECORD_TOKEN;
use super::sqlite_inline::execute_on;
use super::sqlite_writer::Write;
use super::{Store, StoreError};
use crate::job::{ClaimOutcome, ClaimSeen, JobState, NewRun, RunStatus};

impl Store {
    /// Claims `run.scheduled_for` of the job: moves the job from that slot to `next` (and
    /// `state`) only if it is still at that slot, and opens the run row, whose (job, slot)
    /// is unique — both or neither. Exactly one caller per slot gets `Claimed`.
    /// `status` is `Running`, or `Skipped` to consume the slot without running it.
    /// With a fire token's `(jti, kept until)`, the id is recorded in the same transaction:
    /// an id seen before claims nothing (`Replayed`). A fresh id is recorded whether the
    /// claim wins or loses: a lost claim means the slot was taken (or the job moved), so
    /// the token is spent either way.
    pub async fn claim_slot(
        &self,
        run: &NewRun,
        next: Option<Timestamp>,
        state: JobState,
        status: RunStatus,
        jti: Option<(&str, Timestamp)>,
    ) -> Result<ClaimOutcome, StoreError> {
        let claim = SlotClaim::new(run, next, state, status, jti);
        let seen = match self {
            Store::Sqlite(pools) => pools.batch.write(claim).await?,
            Store::Postgres(pool) => Store::claim_on_postgres(pool, std::slice::from_ref(&claim))
                .await?
                .pop()
                .ok_or_else(|| StoreError::Query("the claim returned no row".into()))?,
        };
        Ok(seen.outcome())
    }
}

/// A claim's arguments.
#[derive(Debug)]
pub(super) struct SlotClaim {
    pub(super) job: String,
    pub(super) next: Option<i64>,
    pub(super) state: &'static str,
    pub(super) now: i64,
    pub(super) slot: i64,
    pub(super) run: String,
    pub(super) status: &'static str,
    pub(super) lease: i64,
    pub(super) owner: String,
    pub(super) jti: Option<String>,
    pub(super) keep_until: Option<i64>,
    pub(super) finished: Option<i64>,
}

impl SlotClaim {
    /// The claim of `run`'s slot (see [`Store::claim_slot`]).
    pub(super) fn new(
        run: &NewRun,
        next: Option<Timestamp>,
        state: JobState,
        status: RunStatus,
        jti: Option<(&str, Timestamp)>,
    ) -> Self {
        Self {
            job: run.job_id.clone(),
            next: next.map(|t| t.as_second()),
            state: state.as_str(),
            now: run.started_at.as_second(),
            slot: run.scheduled_for.as_second(),
            run: run.id.clone(),
            status: status.as_str(),
            lease: run.lease_until.as_second(),
            owner: run.owner.clone(),
            jti: jti.map(|(id, _)| id.to_owned()),
            keep_until: jti.map(|(_, until)| until.as_second()),
            finished: (status != RunStatus::Running).then(|| run.started_at.as_second()),
        }
    }
}

/// Moves the job off the claimed slot if it is still there, enabled and scheduled.
const MOVE_JOB: &str = "UPDATE jobs SET next_run_at = $2, state = $3, updated_at = $4 \
     WHERE id = $1 AND next_run_at = $5 AND enabled = 1 AND state = 'scheduled'";
/// Opens the slot's run unless that (job, slot) has one.
const OPEN_RUN: &str = "INSERT INTO runs (id, job_id, scheduled_for, started_at, status, lease_until, owner, finished_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job_id, scheduled_for) DO NOTHING";

impl Write for SlotClaim {
    type Output = ClaimSeen;

    /// The claim on SQLite, inside the writer's transaction, after the ops queued before
    /// it: the steps of the PostgreSQL claim one statement each, each only if the one
    /// before it found what it needs — record the token's id (a replay stops there), move
    /// the job off its slot (compare-and-swap), open the run.
    fn apply(&self, conn: &Connection) -> Result<ClaimSeen, StoreError> {
        let mut seen = ClaimSeen::default();
        if let Some((jti, until)) = self.jti.as_ref().zip(self.keep_until) {
            let fresh = execute_on(conn, RECORD_TOKEN, params![jti, until])? == 1;
            seen.token_fresh = Some(fresh);
            if !fresh {
                return Ok(seen);
            }
        }
        let moved = params![self.job, self.next, self.state, self.now, self.slot];
        seen.moved = execute_on(conn, MOVE_JOB, moved)? == 1;
        if seen.moved {
            let run = params![
                self.run,
                self.job,
                self.slot,
                self.now,
                self.status,
                self.lease,
                self.owner,
                self.finished
            ];
            seen.opened = execute_on(conn, OPEN_RUN, run)? == 1;
        }
        Ok(seen)
    }
}
