//! Group commit on SQLite's write connection: a transport for the hot writes that knows
//! nothing of what they do.
//!
//! SQLite commits one writer at a time, and each commit writes its pages to the WAL; one
//! write per commit caps fires at a few thousand per second however fast the rest is. So
//! callers hand a [`Write`] to one task that takes whatever is queued (up to
//! [`MAX_BATCH`]) and applies it inside a single `BEGIN IMMEDIATE … COMMIT`, answering each
//! caller after the commit: nothing is acknowledged before it is committed (WAL with
//! `synchronous=NORMAL`: a commit survives the process crashing; a power loss may take the
//! last ones).
//!
//! Set-based: the ops of one kind are applied together, by the kind's own statements over
//! the whole group (one round trip to the connection's thread per group, not per op).
//! That equals applying them one by one only when they touch different rows, so each op
//! names what it touches ([`Key`]) and the batch is split into rounds: an op goes in the
//! round after the last one holding any of its keys, so ops that share a row keep their
//! queue order, and the ops of one round touch disjoint rows.
//!
//! A batch that fails is rolled back whole. When the error is the query's (not the
//! database being unavailable), one op may be at fault, so each op is then applied again
//! in a transaction of its own: only the faulty op's caller gets the error, and a write
//! that fails wrote nothing (so the caller's retry is safe).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::sqlite_inline::Turns;

/// Most ops in one transaction.
const MAX_BATCH: usize = 128;
/// Ops waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

/// A row an op reads or writes, for ordering the ops of a batch: two ops with a key in
/// common are applied in queue order, never in one set-based statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Key<'a> {
    /// The job row, and the runs of that job.
    Job(&'a str),
    /// A fire token's id.
    Token(&'a str),
}

/// A kind of write to group-commit: the ops of a group are applied inside the batch's
/// transaction, their outputs handed to their callers only once it has committed.
pub(super) trait Write: Send + Sync + Sized + 'static {
    type Output: Send + 'static;

    /// The rows this op touches (see [`Key`]).
    fn keys(&self) -> Vec<Key<'_>>;

    /// Applies `ops` (pairwise without a common key) on the write connection, inside the
    /// open transaction, as if one after another; one output per op, in order. It must
    /// not commit or roll back.
    fn apply(
        ops: &[&Self],
        conn: &mut SqliteConnection,
    ) -> impl Future<Output = Result<Vec<Self::Output>, StoreError>> + Send;
}

/// Applies the ops at `group` (all of one kind) of a batch and keeps their outputs.
type GroupFn = for<'a> fn(
    &'a mut [Box<dyn Queued>],
    &'a [usize],
    &'a mut SqliteConnection,
) -> BoxFuture<'a, Result<(), StoreError>>;

/// A queued write with its caller's reply channel, its type erased.
trait Queued: Any + Send {
    fn keys(&self) -> Vec<Key<'_>>;

    /// The op's kind and how a group of that kind is applied.
    fn kind(&self) -> (TypeId, GroupFn);

    /// Answers the caller with the op's output once `committed` is `Ok`, else the error.
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Pending<W: Write> {
    op: W,
    output: Option<W::Output>,
    reply: oneshot::Sender<Result<W::Output, StoreError>>,
}

impl<W: Write> Queued for Pending<W> {
    fn keys(&self) -> Vec<Key<'_>> {
        self.op.keys()
    }

    fn kind(&self) -> (TypeId, GroupFn) {
        (TypeId::of::<W>(), apply_group::<W>)
    }

    fn answer(self: Box<Self>, committed: Result<(), StoreError>) {
        let Self { output, reply, .. } = *self;
        let answer = committed.and_then(|()| {
            output.ok_or_else(|| StoreError::Query("the SQLite writer skipped an op".into()))
        });
        // A caller that went away (its request was dropped) needs no answer.
        drop(reply.send(answer));
    }
}

fn pending<W: Write>(op: &dyn Queued) -> Result<&Pending<W>, StoreError> {
    (op as &dyn Any)
        .downcast_ref()
        .ok_or_else(|| StoreError::Query("the SQLite writer mixed two kinds of op".into()))
}

fn apply_group<'a, W: Write>(
    batch: &'a mut [Box<dyn Queued>],
    group: &'a [usize],
    conn: &'a mut SqliteConnection,
) -> BoxFuture<'a, Result<(), StoreError>> {
    Box::pin(async move {
        let outputs = {
            let ops = group
                .iter()
                .map(|&i| pending::<W>(&*batch[i]).map(|p| &p.op))
                .collect::<Result<Vec<&W>, _>>()?;
            W::apply(&ops, conn).await?
        };
        if outputs.len() != group.len() {
            return Err(StoreError::Query(format!(
                "a write group of {} ops answered {}",
                group.len(),
                outputs.len()
            )));
        }
        for (&i, output) in group.iter().zip(outputs) {
            if let Some(p) = (&mut *batch[i] as &mut dyn Any).downcast_mut::<Pending<W>>() {
                p.output = Some(output);
            }
        }
        Ok(())
    })
}

/// The queue in front of the writer task; the task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Queued>>,
}

impl Writer {
    /// Starts the writer task on `pool` (the store's single write connection), each batch
    /// in a pool turn of `turns`.
    pub fn spawn(pool: SqlitePool, turns: Arc<Turns>) -> Self {
        let (queue, ops) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, turns, ops));
        Self { queue }
    }

    /// Applies `op` in the next batch; its output once the batch has committed.
    pub async fn write<W: Write>(&self, op: W) -> Result<W::Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            op,
            output: None,
            reply,
        };
        self.queue
            .send(Box::new(pending))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Runs the set-based `script` of one group: `rows` (one JSON array per op, in the order
/// the script's `json_each(?1)` reads them) bound as `?1`; the report rows, one per op in
/// order (anything else is an error naming the `ops`).
pub(super) async fn run_script(
    script: &'static str,
    rows: impl Iterator<Item = serde_json::Value>,
    ops: &str,
    conn: &mut SqliteConnection,
) -> Result<Vec<sqlx::sqlite::SqliteRow>, StoreError> {
    let rows: Vec<serde_json::Value> = rows.collect();
    let want = rows.len();
    let report = sqlx::query(script)
        .bind(serde_json::Value::Array(rows).to_string())
        .fetch_all(&mut *conn)
        .await?;
    if report.len() != want {
        return Err(StoreError::Query(format!(
            "the {ops} script saw {} of {want} {ops}",
            report.len()
        )));
    }
    Ok(report)
}

fn gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped".into())
}

async fn run(pool: SqlitePool, turns: Arc<Turns>, mut ops: mpsc::Receiver<Box<dyn Queued>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while ops.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match commit(&pool, &turns, &mut batch).await {
            Err(StoreError::Query(_) | StoreError::Corrupt(_)) if batch.len() > 1 => {
                // One op may be at fault: each alone, so only its caller gets the error.
                for op in batch.drain(..) {
                    let mut one = [op];
                    let committed = commit(&pool, &turns, &mut one).await;
                    let [op] = one;
                    op.answer(committed);
                }
            }
            committed => {
                for op in batch.drain(..) {
                    op.answer(committed.clone());
                }
            }
        }
    }
}

/// The order `batch` is applied in: rounds, each a list of groups of one kind (indices
/// into `batch`). No two ops of a round share a key; ops sharing a key keep their order.
fn plan(batch: &[Box<dyn Queued>]) -> Vec<Vec<(TypeId, GroupFn, Vec<usize>)>> {
    let mut last: HashMap<Key<'_>, usize> = HashMap::new();
    let mut rounds: Vec<Vec<(TypeId, GroupFn, Vec<usize>)>> = Vec::new();
    for (i, op) in batch.iter().enumerate() {
        let keys = op.keys();
        let round = keys
            .iter()
            .filter_map(|k| last.get(k).map(|r| r + 1))
            .max()
            .unwrap_or(0);
        for key in keys {
            last.insert(key, round);
        }
        if rounds.len() <= round {
            rounds.resize_with(round + 1, Vec::new);
        }
        let (kind, apply) = op.kind();
        match rounds[round].iter_mut().find(|(k, ..)| *k == kind) {
            Some((.., group)) => group.push(i),
            None => rounds[round].push((kind, apply, vec![i])),
        }
    }
    rounds
}

/// Applies `batch` in one transaction; all or nothing. The pool turn is taken once the
/// connection is held, so inline writes go on while the batch waits for it.
async fn commit(
    pool: &SqlitePool,
    turns: &Turns,
    batch: &mut [Box<dyn Queued>],
) -> Result<(), StoreError> {
    let rounds = plan(batch);
    let mut conn = pool.acquire().await?;
    let _turn = turns.pool().await;
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut failed = None;
    'rounds: for round in &rounds {
        for (_, apply, group) in round {
            if let Err(e) = apply(batch, group, &mut conn).await {
                failed = Some(e);
                break 'rounds;
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
        None => Ok(()),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
