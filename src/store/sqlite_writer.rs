//! Group commit for SQLite's hot writes: run claims and run ends.
//!
//! SQLite commits one writer at a time, and each commit writes its pages to the WAL; a
//! claim per commit caps fires at a few thousand per second however fast the rest is. So
//! claims and run ends go to one task that takes whatever is queued (up to
//! [`MAX_BATCH`]), runs each as one script inside a single `BEGIN IMMEDIATE … COMMIT`, and
//! answers each caller after the commit: nothing is acknowledged before it is committed
//! (WAL with `synchronous=NORMAL`: a commit survives the process crashing; a power loss may
//! take the last ones), and a batch that fails is rolled back whole and every caller in it
//! gets the error (a claim that fails claims nothing, so the caller's retry is safe).
//!
//! Each op's statements are data-dependent on the one before through `changes()` (the row
//! count of the last completed INSERT/UPDATE/DELETE), so an op needs one round trip to the
//! connection's thread. Every statement binds all of its op's arguments through a one-row
//! table, because the driver binds a script's numbered parameters statement by statement
//! and stops at a gap.

use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::jobs::ClaimOutcome;

/// Most ops in one transaction.
const MAX_BATCH: usize = 128;
/// Ops waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

macro_rules! claim_args {
    () => {
        "WITH a(job, next, state, now, slot, run, status, lease, owner, jti, keep_until, fin) \
         AS (VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)) "
    };
}

/// Claims a slot: record the token id (if any; a replay stops here), move the job off the
/// slot (compare-and-swap), open the run. The two `SELECT`s report the first and last step.
const CLAIM: &str = concat!(
    claim_args!(),
    "INSERT INTO fire_tokens (jti, expires_at) SELECT jti, keep_until FROM a WHERE jti IS NOT NULL \
     ON CONFLICT (jti) DO NOTHING;\n",
    "SELECT changes();\n",
    claim_args!(),
    "UPDATE jobs SET next_run_at = a.next, state = a.state, updated_at = a.now FROM a \
     WHERE jobs.id = a.job AND jobs.next_run_at = a.slot AND jobs.enabled = 1 \
     AND jobs.state = 'scheduled' AND (a.jti IS NULL OR changes() = 1);\n",
    claim_args!(),
    "INSERT INTO runs (id, job_id, scheduled_for, started_at, status, lease_until, owner, finished_at) \
     SELECT run, job, slot, now, status, lease, owner, fin FROM a WHERE changes() = 1 \
     ON CONFLICT (job_id, scheduled_for) DO NOTHING;\n",
    "SELECT changes();"
);

macro_rules! finish_args {
    () => {
        "WITH f(run, status, fin, output, error, job, started, done, job_state, owner) \
         AS (VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)) "
    };
}

/// Ends a run still marked running and held by the owner, then (only if it did) records
/// the outcome on its job.
const FINISH: &str = concat!(
    finish_args!(),
    "UPDATE runs SET status = f.status, finished_at = f.fin, output = f.output, error = f.error \
     FROM f WHERE runs.id = f.run AND runs.status = 'running' AND runs.owner = f.owner;\n",
    "SELECT changes();\n",
    finish_args!(),
    "UPDATE jobs SET last_run_at = f.started, last_status = f.status, last_error = f.error, \
     repeat_completed = repeat_completed + f.done, state = COALESCE(f.job_state, jobs.state), \
     updated_at = f.fin FROM f WHERE jobs.id = f.job AND changes() = 1;"
);

/// A claim's arguments, in the order of `claim_args!`.
#[derive(Debug)]
pub(super) struct ClaimArgs {
    pub job: String,
    pub next: Option<i64>,
    pub state: &'static str,
    pub now: i64,
    pub slot: i64,
    pub run: String,
    pub status: &'static str,
    pub lease: i64,
    pub owner: String,
    pub jti: Option<String>,
    pub keep_until: Option<i64>,
    pub finished: Option<i64>,
}

/// A run end's arguments, in the order of `finish_args!`.
#[derive(Debug)]
pub(super) struct FinishArgs {
    pub run: String,
    /// Who must still hold the run's lease for the end to be recorded.
    pub owner: String,
    pub status: &'static str,
    pub finished_at: i64,
    pub output: Option<String>,
    pub error: Option<String>,
    pub job: String,
    pub started_at: i64,
    /// 1 when the run counts towards `repeat.completed`.
    pub done: i64,
    pub job_state: Option<&'static str>,
}

#[derive(Debug)]
enum Op {
    Claim(ClaimArgs, oneshot::Sender<Result<ClaimOutcome, StoreError>>),
    Finish(FinishArgs, oneshot::Sender<Result<bool, StoreError>>),
}

#[derive(Debug)]
enum Done {
    Claim(ClaimOutcome),
    Finish(bool),
}

/// The queue in front of the writer task; the task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Op>,
}

impl Writer {
    /// Starts the writer task on `pool` (the store's single write connection).
    pub fn spawn(pool: SqlitePool) -> Self {
        let (queue, ops) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, ops));
        Self { queue }
    }

    pub async fn claim(&self, args: ClaimArgs) -> Result<ClaimOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Claim(args, tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn finish(&self, args: FinishArgs) -> Result<bool, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Finish(args, tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    async fn send(&self, op: Op) -> Result<(), StoreError> {
        self.queue.send(op).await.map_err(|_| gone())
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped".into())
}

async fn run(pool: SqlitePool, mut ops: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while ops.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = apply(&pool, &batch).await;
        for (i, op) in batch.drain(..).enumerate() {
            let done = match &result {
                Ok(done) => Ok(&done[i]),
                Err(e) => Err(e.clone()),
            };
            // A caller that went away (its request was dropped) needs no answer.
            match (op, done) {
                (Op::Claim(_, tx), Ok(Done::Claim(c))) => drop(tx.send(Ok(*c))),
                (Op::Finish(_, tx), Ok(Done::Finish(f))) => drop(tx.send(Ok(*f))),
                (Op::Claim(_, tx), Err(e)) => drop(tx.send(Err(e))),
                (Op::Finish(_, tx), Err(e)) => drop(tx.send(Err(e))),
                (op, Ok(other)) => {
                    tracing::error!(
                        ?op,
                        ?other,
                        "SQLite writer answered an op with another op's result"
                    );
                }
            }
        }
    }
}

/// Runs `ops` in one transaction; all or nothing.
async fn apply(pool: &SqlitePool, ops: &[Op]) -> Result<Vec<Done>, StoreError> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut done = Vec::with_capacity(ops.len());
    let mut failed = None;
    for op in ops {
        match execute(&mut conn, op).await {
            Ok(d) => done.push(d),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let end = if failed.is_none() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    if let Err(e) = sqlx::raw_sql(end).execute(&mut *conn).await {
        // A failed COMMIT leaves the transaction open: end it before the next batch.
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        failed.get_or_insert(e.into());
    }
    match failed {
        None => Ok(done),
        Some(e) => Err(e),
    }
}

async fn execute(conn: &mut sqlx::SqliteConnection, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::Claim(a, _) => {
            let rows = sqlx::query(CLAIM)
                .bind(&a.job)
                .bind(a.next)
                .bind(a.state)
                .bind(a.now)
                .bind(a.slot)
                .bind(&a.run)
                .bind(a.status)
                .bind(a.lease)
                .bind(&a.owner)
                .bind(&a.jti)
                .bind(a.keep_until)
                .bind(a.finished)
                .fetch_all(&mut *conn)
                .await?;
            let (token, opened) = (count(&rows, 0)?, count(&rows, 1)?);
            Ok(Done::Claim(if a.jti.is_some() && token == 0 {
                ClaimOutcome::Replayed
            } else if opened == 1 {
                ClaimOutcome::Claimed
            } else {
                ClaimOutcome::Lost
            }))
        }
        Op::Finish(f, _) => {
            let rows = sqlx::query(FINISH)
                .bind(&f.run)
                .bind(f.status)
                .bind(f.finished_at)
                .bind(&f.output)
                .bind(&f.error)
                .bind(&f.job)
                .bind(f.started_at)
                .bind(f.done)
                .bind(f.job_state)
                .bind(&f.owner)
                .fetch_all(&mut *conn)
                .await?;
            Ok(Done::Finish(count(&rows, 0)? == 1))
        }
    }
}

fn count(rows: &[sqlx::sqlite::SqliteRow], i: usize) -> Result<i64, StoreError> {
    let row = rows
        .get(i)
        .ok_or_else(|| StoreError::Query(format!("writer script returned {} rows", rows.len())))?;
    Ok(row.try_get::<i64, _>(0)?)
}
