//! The run claim: exactly one run per scheduled slot, whatever the number of replicas,
//! retries or crashes. One transaction records the fire token's id (if any; a replay stops
//! there), moves the job off the slot with a compare-and-swap (`UPDATE … WHERE
//! next_run_at = slot`), and opens the run row, whose `(job_id, scheduled_for)` is unique.
//!
//! PostgreSQL runs the steps as one set-based statement, for one claim or a batch
//! (`claim_batch`); SQLite runs them as one script, the op the writer group-commits. Both
//! report what they observed as a [`ClaimSeen`], and
//! [`ClaimSeen::outcome`] alone turns that into the [`ClaimOutcome`].

use jiff::Timestamp;

use super::rows::count;
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

/// A claim's arguments, in the order of `claim_args!`.
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

macro_rules! claim_args {
    () => {
        "WITH a(job, next, state, now, slot, run, status, lease, owner, jti, keep_until, fin) \
         AS (VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)) "
    };
}

/// The claim on SQLite, as one script (one round trip in the writer's batch). Each step
/// runs only if the one before let it, through `changes()` (the row count of the last
/// completed INSERT/UPDATE/DELETE, which a `SELECT` leaves alone): the job moves only if
/// there is no token or its id is fresh, the run opens only if the job moved. The three
/// `SELECT`s report each step. Every statement binds all of the arguments through a
/// one-row table, because the driver binds a script's numbered parameters statement by
/// statement and stops at a gap.
const CLAIM_SCRIPT: &str = concat!(
    claim_args!(),
    "INSERT INTO fire_tokens (jti, expires_at) SELECT jti, keep_until FROM a WHERE jti IS NOT NULL \
     ON CONFLICT (jti) DO NOTHING;\n",
    "SELECT changes();\n",
    claim_args!(),
    "UPDATE jobs SET next_run_at = a.next, state = a.state, updated_at = a.now FROM a \
     WHERE jobs.id = a.job AND jobs.next_run_at = a.slot AND jobs.enabled = 1 \
     AND jobs.state = 'scheduled' AND (a.jti IS NULL OR changes() = 1);\n",
    "SELECT changes();\n",
    claim_args!(),
    "INSERT INTO runs (id, job_id, scheduled_for, started_at, status, lease_until, owner, finished_at) \
     SELECT run, job, slot, now, status, lease, owner, fin FROM a WHERE changes() = 1 \
     ON CONFLICT (job_id, scheduled_for) DO NOTHING;\n",
    "SELECT changes();"
);

impl Write for SlotClaim {
    type Output = ClaimSeen;

    async fn apply(&self, conn: &mut sqlx::SqliteConnection) -> Result<ClaimSeen, StoreError> {
        let rows = sqlx::query(CLAIM_SCRIPT)
            .bind(&self.job)
            .bind(self.next)
            .bind(self.state)
            .bind(self.now)
            .bind(self.slot)
            .bind(&self.run)
            .bind(self.status)
            .bind(self.lease)
            .bind(&self.owner)
            .bind(&self.jti)
            .bind(self.keep_until)
            .bind(self.finished)
            .fetch_all(&mut *conn)
            .await?;
        let token = count(&rows, 0)?;
        Ok(ClaimSeen {
            token_fresh: self.jti.as_ref().map(|_| token == 1),
            moved: count(&rows, 1)? == 1,
            opened: count(&rows, 2)? == 1,
        })
    }
}
