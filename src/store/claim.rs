//! The run claim: exactly one run per scheduled slot, whatever the number of replicas,
//! retries or crashes. One transaction records the fire token's id (if any; a replay stops
//! there), moves the job off the slot with a compare-and-swap (`UPDATE … WHERE
//! next_run_at = slot`), and opens the run row, whose `(job_id, scheduled_for)` is unique.
//!
//! PostgreSQL runs the steps statement by statement; on SQLite the claim is an op the
//! writer group-commits, and the claims of a batch are taken together, set-based. Both report what they observed as a [`ClaimSeen`], and
//! [`ClaimSeen::outcome`] alone turns that into the [`ClaimOutcome`].

use jiff::Timestamp;

use super::sqlite_writer::{Key, Write};
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

/// A claim's arguments.
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

/// The claims of a batch on SQLite as one table: `?1` is a JSON array with one array per
/// claim, in the order of [`SlotClaim::json`]; `i` is the claim's place in the batch.
macro_rules! claims {
    () => {
        "WITH b AS (SELECT key AS i, value ->> 0 AS job, value ->> 1 AS next, value ->> 2 AS state, \
         value ->> 3 AS now, value ->> 4 AS slot, value ->> 5 AS run, value ->> 6 AS status, \
         value ->> 7 AS lease, value ->> 8 AS owner, value ->> 9 AS jti, value ->> 10 AS keep, \
         value ->> 11 AS fin FROM json_each(?1)) "
    };
}

/// What each claim of a round finds before anything is written: its token is fresh, its
/// job is still at its slot, no run holds that slot.
macro_rules! fresh {
    () => {
        "(b.jti IS NULL OR NOT EXISTS (SELECT 1 FROM fire_tokens t WHERE t.jti = b.jti))"
    };
}
macro_rules! at_slot {
    () => {
        "EXISTS (SELECT 1 FROM jobs j WHERE j.id = b.job AND j.next_run_at = b.slot \
         AND j.enabled = 1 AND j.state = 'scheduled')"
    };
}
macro_rules! free {
    () => {
        "NOT EXISTS (SELECT 1 FROM runs r WHERE r.job_id = b.job AND r.scheduled_for = b.slot)"
    };
}

/// The claims of one round on SQLite, set-based: one script (one round trip) for all of
/// them. The writer puts no two claims of one job or one token in a round, so each claim's
/// rows are its own and the steps can be taken for all claims at once, each from what was
/// there before the round: first report what each claim finds, then open the run where the
/// token is fresh, the job at its slot and the slot free, then move the job where the token
/// is fresh and the job at its slot (each statement still sees the tables the statements
/// after it change as they were), and last record every token id (a lost claim spends its
/// token too). The same steps, in the same dependence, as the PostgreSQL transaction.
const CLAIM_SCRIPT: &str = concat!(
    claims!(),
    "SELECT i, ",
    fresh!(),
    " AS fresh, ",
    at_slot!(),
    " AS at_slot, ",
    free!(),
    " AS free FROM b ORDER BY i;\n",
    claims!(),
    "INSERT INTO runs (id, job_id, scheduled_for, started_at, status, lease_until, owner, finished_at) \
     SELECT run, job, slot, now, status, lease, owner, fin FROM b WHERE ",
    fresh!(),
    " AND ",
    at_slot!(),
    " AND ",
    free!(),
    ";\n",
    claims!(),
    "UPDATE jobs SET next_run_at = b.next, state = b.state, updated_at = b.now FROM b \
     WHERE jobs.id = b.job AND jobs.next_run_at = b.slot AND jobs.enabled = 1 \
     AND jobs.state = 'scheduled' AND ",
    fresh!(),
    ";\n",
    claims!(),
    "INSERT INTO fire_tokens (jti, expires_at) SELECT jti, keep FROM b WHERE jti IS NOT NULL \
     ON CONFLICT (jti) DO NOTHING;"
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

impl SlotClaim {
    /// The claim as one element of the batch's JSON, in the order `claims!` reads.
    fn json(&self) -> serde_json::Value {
        serde_json::json!([
            self.job,
            self.next,
            self.state,
            self.now,
            self.slot,
            self.run,
            self.status,
            self.lease,
            self.owner,
            self.jti,
            self.keep_until,
            self.finished
        ])
    }
}

impl Write for SlotClaim {
    type Output = ClaimSeen;

    fn keys(&self) -> Vec<Key<'_>> {
        let mut keys = vec![Key::Job(&self.job)];
        keys.extend(self.jti.as_deref().map(Key::Token));
        keys
    }

    async fn apply(
        claims: &[&Self],
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<Vec<ClaimSeen>, StoreError> {
        let batch = serde_json::Value::Array(claims.iter().map(|c| c.json()).collect());
        let rows = sqlx::query(CLAIM_SCRIPT)
            .bind(batch.to_string())
            .fetch_all(&mut *conn)
            .await?;
        if rows.len() != claims.len() {
            return Err(StoreError::Query(format!(
                "the claim script saw {} of {} claims",
                rows.len(),
                claims.len()
            )));
        }
        claims
            .iter()
            .zip(&rows)
            .map(|(claim, row)| {
                use sqlx::Row as _;
                let flag = |name| row.try_get::<i64, _>(name).map(|v| v != 0);
                let fresh = flag("fresh")?;
                let moved = fresh && flag("at_slot")?;
                Ok(ClaimSeen {
                    token_fresh: claim.jti.as_ref().map(|_| fresh),
                    moved,
                    opened: moved && flag("free")?,
                })
            })
            .collect()
    }
}
