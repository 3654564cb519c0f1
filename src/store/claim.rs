//! The run claim: exactly one run per scheduled slot, whatever the number of replicas,
//! retries or crashes. One transaction records the fire token's id (if any; a replay stops
//! there), moves the job off the slot with a compare-and-swap (`UPDATE … WHERE
//! next_run_at = slot`), and opens the run row, whose `(job_id, scheduled_for)` is unique.
//!
//! PostgreSQL runs the steps statement by statement; SQLite runs them as one script, the
//! op the writer group-commits. Both report what they observed as a [`ClaimSeen`], and
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
        let claim = SlotClaim {
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
        };
        let seen = match self {
            Store::Sqlite(pools) => pools.batch.write(claim).await?,
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let seen = claim.postgres(&mut tx).await?;
                tx.commit().await?;
                seen
            }
        };
        Ok(seen.outcome())
    }
}

/// A claim's arguments, in the order of `claim_args!`.
#[derive(Debug)]
struct SlotClaim {
    job: String,
    next: Option<i64>,
    state: &'static str,
    now: i64,
    slot: i64,
    run: String,
    status: &'static str,
    lease: i64,
    owner: String,
    jti: Option<String>,
    keep_until: Option<i64>,
    finished: Option<i64>,
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

impl SlotClaim {
    /// The claim's steps on PostgreSQL inside `tx`, each run only if the one before let it
    /// (as the SQLite script's `changes()` conditions do).
    async fn postgres(&self, tx: &mut sqlx::PgConnection) -> Result<ClaimSeen, StoreError> {
        let mut seen = ClaimSeen::default();
        if let (Some(jti), Some(until)) = (&self.jti, self.keep_until) {
            let fresh = sqlx::query(
                "INSERT INTO fire_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti)
            .bind(until)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            seen.token_fresh = Some(fresh == 1);
        }
        if seen.may_move() {
            let moved = sqlx::query(
                "UPDATE jobs SET next_run_at = $2, state = $3, updated_at = $4 \
                 WHERE id = $1 AND next_run_at = $5 AND enabled = 1 AND state = 'scheduled'",
            )
            .bind(&self.job)
            .bind(self.next)
            .bind(self.state)
            .bind(self.now)
            .bind(self.slot)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            seen.moved = moved == 1;
        }
        if seen.moved {
            let opened = sqlx::query(
                "INSERT INTO runs (id, job_id, scheduled_for, started_at, status, lease_until, owner, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job_id, scheduled_for) DO NOTHING",
            )
            .bind(&self.run)
            .bind(&self.job)
            .bind(self.slot)
            .bind(self.now)
            .bind(self.status)
            .bind(self.lease)
            .bind(&self.owner)
            .bind(self.finished)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            seen.opened = opened == 1;
        }
        Ok(seen)
    }
}

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
