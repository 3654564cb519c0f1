//! The run claim: exactly one run per scheduled slot, whatever the number of replicas,
//! retries or crashes. One transaction records the fire token's id (if any; a replay stops
//! there), moves the job off the slot with a compare-and-swap (`UPDATE … WHERE
//! next_run_at = slot`), and opens the run row, whose `(job_id, scheduled_for)` is unique.
//!
//! PostgreSQL runs the steps as one set-based statement each, for one claim or a batch
//! (`claim_batch`); on SQLite the claim is an op the writer group-commits, and the claims
//! of a batch are taken together, set-based. Both report what they observed as a
//! [`ClaimSeen`], and
//! [`ClaimSeen::outcome`] alone turns that into the [`ClaimOutcome`].

use jiff::Timestamp;

use super::sqlite_writer::{Key, Write, run_script};
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

/// A claim's arguments, in the order `claims!` reads them.
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
        claim_round(claims, conn).await
    }
}

/// Claims `claims` set-based on the SQLite write connection, inside its open
/// transaction; no two of them may name one job or one token (the writer's rounds see to
/// that, and `claim_batch` passes them one at a time).
pub(super) async fn claim_round(
    claims: &[&SlotClaim],
    conn: &mut sqlx::SqliteConnection,
) -> Result<Vec<ClaimSeen>, StoreError> {
    let rows = run_script(
        CLAIM_SCRIPT,
        claims.iter().map(|c| c.json()),
        "claims",
        conn,
    )
    .await?;
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
