//! Many claims in one transaction (a tick's due slots), and the PostgreSQL claim.
//!
//! A claim's cost on PostgreSQL is its commit (the WAL flush, ≈2 ms on this kind of
//! disk), not its statements; one committed transaction per claim made a tick of 1,000
//! due jobs take seconds. So the batch is one transaction: on PostgreSQL each step of
//! [`super::claim`] (record the fire token's id, move the job off its slot with a
//! compare-and-swap, open the run row) is one set-based statement for the whole batch,
//! and a single claim is a batch of one. On SQLite the batch is one op of the group-commit
//! writer, claiming slot after slot. Either way the batch commits whole or not at all:
//! a batch that fails claimed nothing.
//!
//! Two replicas claiming overlapping batches lock the jobs' rows in one order (by id)
//! before claiming, so they wait for each other rather than deadlock; the one that waits
//! then finds the slots moved and loses them. The compare-and-swap reads the locked rows
//! (nothing can move them before the commit) and compares again as it moves them.

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, PgPool, Row};

use super::claim::SlotClaim;
use super::sqlite_writer::Write;
use super::{Store, StoreError};
use crate::job::{ClaimOutcome, ClaimRequest, ClaimSeen};

impl Store {
    /// Claims every request's slot in one transaction, each as [`Store::claim_slot`] does
    /// without a fire token; the outcomes in the requests' order. Exactly one claimer per
    /// slot gets `Claimed`, whatever the batches of other replicas hold; a slot already
    /// claimed, a job moved, paused or gone is `Lost`. An error means nothing was claimed.
    /// A job appears at most once in a batch (a second claim of it in the same batch is
    /// `Lost`).
    pub async fn claim_slots(
        &self,
        requests: &[ClaimRequest],
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let claims: Vec<SlotClaim> = requests
            .iter()
            .map(|r| SlotClaim::new(&r.run, r.next, r.state, r.status, None))
            .collect();
        let seen = match self {
            Store::Sqlite(pools) => pools.batch.write(ClaimBatch(claims)).await?,
            Store::Postgres(pool) => Store::claim_on_postgres(pool, &claims).await?,
        };
        Ok(seen.iter().map(ClaimSeen::outcome).collect())
    }
}

/// A batch of claims as one op of SQLite's group-commit writer: each claim in order, all
/// inside the writer's transaction (so a slot named twice is claimed once, and an op that
/// fails is rolled back whole).
struct ClaimBatch(Vec<SlotClaim>);

impl Write for ClaimBatch {
    type Output = Vec<ClaimSeen>;

    fn apply(&self, conn: &rusqlite::Connection) -> Result<Vec<ClaimSeen>, StoreError> {
        self.0.iter().map(|claim| claim.apply(conn)).collect()
    }
}

/// The fire tokens' ids of `$1` (with their `$2` kept-until) recorded; the fresh ones.
/// Sorted, so that two batches recording the same ids wait for each other in one order.
const RECORD_TOKENS: &str = "\
INSERT INTO fire_tokens (jti, expires_at)
SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1
ON CONFLICT (jti) DO NOTHING
RETURNING jti";

/// The batch's jobs, locked in id order (so that two batches over the same jobs queue up
/// instead of deadlocking), with what the compare-and-swap compares. The jobs are found by
/// id: no index serves the other columns here, so no plan can scan all due jobs instead.
const LOCK_JOBS: &str = "\
SELECT id, next_run_at, enabled, state FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE";

/// The claim of every slot of `$1…$10` (one array per argument of [`SlotClaim`], for the
/// claims whose job the lock found at its slot), one statement: each job moves off its
/// slot (compared again), and each run opens only for a job that moved, as the SQLite
/// claim's steps do. Reports the index (`$11`) of each claim that moved
/// and whether its run opened.
const MOVE_AND_OPEN: &str = "\
WITH a AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
        $6::text[], $7::text[], $8::bigint[], $9::text[], $10::bigint[], $11::bigint[]) \
        AS a(job, next, state, now, slot, run, status, lease, owner, fin, i)
), moved AS (
    UPDATE jobs SET next_run_at = a.next, state = a.state, updated_at = a.now FROM a
    WHERE jobs.id = a.job AND jobs.next_run_at = a.slot
    RETURNING a.i, a.job, a.slot, a.now, a.run, a.status, a.lease, a.owner, a.fin
), opened AS (
    INSERT INTO runs (id, job_id, scheduled_for, started_at, status, lease_until, owner, finished_at)
    SELECT run, job, slot, now, status, lease, owner, fin FROM moved
    ON CONFLICT (job_id, scheduled_for) DO NOTHING
    RETURNING id
)
SELECT i, run IN (SELECT id FROM opened) AS opened FROM moved";

impl Store {
    /// Claims `claims` on PostgreSQL in one transaction; what each claim observed, in
    /// order. The steps of the claim, each for the whole batch: record the tokens' ids,
    /// lock the jobs and compare each with its claim's slot, move the ones still there and
    /// open their runs.
    pub(super) async fn claim_on_postgres(
        pool: &PgPool,
        claims: &[SlotClaim],
    ) -> Result<Vec<ClaimSeen>, StoreError> {
        let mut tx = pool.begin().await?;
        let mut seen = record_tokens(&mut tx, claims).await?;
        let movers = at_their_slots(&mut tx, claims, &seen).await?;
        if !movers.is_empty() {
            move_and_open(&mut tx, claims, &movers, &mut seen).await?;
        }
        tx.commit().await?;
        Ok(seen)
    }
}

/// Records the claims' token ids; each claim's [`ClaimSeen`] with `token_fresh` set.
async fn record_tokens(
    tx: &mut PgConnection,
    claims: &[SlotClaim],
) -> Result<Vec<ClaimSeen>, StoreError> {
    let (ids, until): (Vec<&str>, Vec<i64>) = claims
        .iter()
        .filter_map(|c| Some((c.jti.as_deref()?, c.keep_until?)))
        .unzip();
    let fresh: HashSet<String> = if ids.is_empty() {
        HashSet::new()
    } else {
        let q = sqlx::query_scalar(RECORD_TOKENS).bind(ids).bind(until);
        q.fetch_all(&mut *tx).await?.into_iter().collect()
    };
    Ok(claims
        .iter()
        .map(|c| ClaimSeen {
            token_fresh: c.jti.as_ref().map(|jti| fresh.contains(jti)),
            ..ClaimSeen::default()
        })
        .collect())
}

/// Locks the claims' jobs; the indexes of the claims that may move their job: no replayed
/// token, and the job enabled, scheduled and still at the claim's slot (the first claim of
/// a job, if the batch holds it twice).
async fn at_their_slots(
    tx: &mut PgConnection,
    claims: &[SlotClaim],
    seen: &[ClaimSeen],
) -> Result<Vec<usize>, StoreError> {
    let ids: Vec<&str> = claims.iter().map(|c| c.job.as_str()).collect();
    let rows = sqlx::query(LOCK_JOBS).bind(ids).fetch_all(&mut *tx).await?;
    let mut slots: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for row in rows {
        let (enabled, state): (i64, String) = (row.try_get("enabled")?, row.try_get("state")?);
        if let (1, "scheduled", Some(slot)) = (enabled, state.as_str(), row.try_get("next_run_at")?)
        {
            slots.insert(row.try_get("id")?, slot);
        }
    }
    Ok((0..claims.len())
        .filter(|&i| seen[i].may_move() && slots.remove(&claims[i].job) == Some(claims[i].slot))
        .collect())
}

/// Moves the `movers`' jobs off their slots and opens their runs, noting both in `seen`.
async fn move_and_open(
    tx: &mut PgConnection,
    claims: &[SlotClaim],
    movers: &[usize],
    seen: &mut [ClaimSeen],
) -> Result<(), StoreError> {
    let m: Vec<&SlotClaim> = movers.iter().map(|&i| &claims[i]).collect();
    let int = |f: fn(&SlotClaim) -> Option<i64>| m.iter().map(|c| f(c)).collect::<Vec<_>>();
    let text = |f: fn(&SlotClaim) -> &str| m.iter().map(|c| f(c)).collect::<Vec<_>>();
    let rows = sqlx::query(MOVE_AND_OPEN)
        .bind(text(|c| c.job.as_str()))
        .bind(int(|c| c.next))
        .bind(text(|c| c.state))
        .bind(int(|c| Some(c.now)))
        .bind(int(|c| Some(c.slot)))
        .bind(text(|c| c.run.as_str()))
        .bind(text(|c| c.status))
        .bind(int(|c| Some(c.lease)))
        .bind(text(|c| c.owner.as_str()))
        .bind(int(|c| c.finished))
        .bind(movers.iter().map(|&i| i as i64).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    for row in rows {
        let i: i64 = row.try_get("i")?;
        let claim = usize::try_from(i)
            .ok()
            .and_then(|i| seen.get_mut(i))
            .ok_or_else(|| StoreError::Query(format!("the claim reported claim {i}")))?;
        claim.moved = true;
        claim.opened = row.try_get("opened")?;
    }
    Ok(())
}
