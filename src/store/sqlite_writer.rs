//! Group commit on a write connection of its own, on a thread of its own: a transport for
//! the hot writes that knows nothing of what they do.
//!
//! SQLite commits one writer at a time, and each commit writes its pages to the WAL; one
//! write per commit caps fires at a few thousand per second however fast the rest is. So
//! callers hand a [`Write`] to one thread that takes whatever is queued (up to
//! [`MAX_BATCH`]) and applies it, op after op in queue order, inside a single `BEGIN
//! IMMEDIATE … COMMIT`, answering each caller after the commit: nothing is acknowledged
//! before it is committed (WAL with `synchronous=NORMAL`: a commit survives the process
//! crashing; a power loss may take the last ones).
//!
//! The thread runs the statements itself (rusqlite, each prepared once and cached), so a
//! batch costs one wake-up of the thread whatever it holds; and it may wait — for another
//! process holding the database, in SQLite's busy handler, or for a checkpoint's `fsync` —
//! without holding up the runtime. In this process it takes its turn with the other writers
//! ([`Turns::pool_blocking`]) rather than meet them at SQLite's lock. It runs as
//! `SCHED_BATCH` ([`batch_policy`]): queued to while the runtime's thread is busy, it
//! waits for that thread to wait instead of cutting in at every op, so the batch holds
//! what was queued meanwhile.
//!
//! A batch that fails is rolled back whole. When the error is the query's (not the
//! database being unavailable), one op may be at fault, so each op is then applied again
//! in a transaction of its own: only the faulty op's caller gets the error, and a write
//! that fails wrote nothing (so the caller's retry is safe).

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::sqlite_inline::{Turns, connect};

/// Most ops in one transaction.
const MAX_BATCH: usize = 128;
/// Ops waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// How long a batch waits for another process's write to end (as the sqlx pools do).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A kind of write to group-commit: applied inside the batch's transaction after the ops
/// queued before it, its output handed to its caller only once the batch has committed.
pub(super) trait Write: Send + 'static {
    type Output: Send + 'static;

    /// Applies the op on the write connection, inside the open transaction. It must not
    /// commit or roll back.
    fn apply(&self, conn: &Connection) -> Result<Self::Output, StoreError>;
}

/// A queued write with its caller's reply channel, its type erased.
trait Queued: Send {
    /// Applies the op (see [`Write::apply`]) and keeps its output for [`Queued::answer`].
    fn apply(&mut self, conn: &Connection) -> Result<(), StoreError>;

    /// Answers the caller with the op's output once `committed` is `Ok`, else the error.
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Pending<W: Write> {
    op: W,
    output: Option<W::Output>,
    reply: oneshot::Sender<Result<W::Output, StoreError>>,
}

impl<W: Write> Queued for Pending<W> {
    fn apply(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.output = Some(self.op.apply(conn)?);
        Ok(())
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

/// The queue in front of the writer thread; the thread ends when the last handle is
/// dropped.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Queued>>,
}

impl Writer {
    /// Starts the writer thread on the database at `path` (created and migrated by the
    /// sqlx pools), each batch in a turn of `turns`.
    pub fn spawn(path: &Path, turns: Arc<Turns>) -> Result<Self, StoreError> {
        let (queue, ops) = mpsc::channel(QUEUE);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                batch_policy();
                run(&path, &turns, ops);
            })
            .map_err(|e| StoreError::Unavailable(format!("the SQLite writer thread: {e}")))?;
        Ok(Self { queue })
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

fn gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped".into())
}

/// Puts the calling thread under `SCHED_BATCH` (its nice value and CPU share unchanged):
/// a thread woken by a queued op then does not preempt the thread that queued it. Without
/// it, on a busy core (or a gateway confined to one), every op woke the writer in front
/// of the runtime's thread: two context switches and a commit for each one or two ops
/// (the unique-fire benchmark: 9,800 preemptions of the runtime's thread in 2 s, 2.3 ops
/// a batch). A refusal (a sandbox without the call) only costs that; it is logged.
fn batch_policy() {
    if scheduler::set_self_policy(scheduler::Policy::Batch, 0).is_err() {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot run the SQLite writer as SCHED_BATCH; its batches will be smaller on a busy core");
    }
}

/// The writer thread: a batch of whatever is queued, until the queue closes.
fn run(path: &Path, turns: &Turns, mut ops: mpsc::Receiver<Box<dyn Queued>>) {
    let mut conn = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = ops.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH
            && let Ok(op) = ops.try_recv()
        {
            batch.push(op);
        }
        match commit(&mut conn, path, turns, &mut batch) {
            // One op may be at fault: each alone, so only its caller gets the error.
            Err(StoreError::Query(_) | StoreError::Corrupt(_)) if batch.len() > 1 => {
                each_alone(&mut conn, path, turns, batch.drain(..));
            }
            committed => {
                for op in batch.drain(..) {
                    op.answer(committed.clone());
                }
            }
        }
    }
}

/// Commits each of `ops` in a transaction of its own and answers it; once the database
/// is unavailable, the rest are answered so at once.
fn each_alone(
    conn: &mut Option<Connection>,
    path: &Path,
    turns: &Turns,
    ops: impl Iterator<Item = Box<dyn Queued>>,
) {
    let mut unavailable = None;
    for op in ops {
        let mut one = [op];
        let committed = match &unavailable {
            Some(e) => Err(StoreError::clone(e)),
            None => commit(conn, path, turns, &mut one),
        };
        if let Err(e @ StoreError::Unavailable(_)) = &committed {
            unavailable = Some(e.clone());
        }
        let [op] = one;
        op.answer(committed);
    }
}

/// Applies `batch` in one transaction, in a writers' turn; all or nothing. The connection
/// is opened on first use, and again after one that failed to open or could not end its
/// transaction.
fn commit(
    conn: &mut Option<Connection>,
    path: &Path,
    turns: &Turns,
    batch: &mut [Box<dyn Queued>],
) -> Result<(), StoreError> {
    let db = match conn {
        Some(db) => db,
        None => conn.insert(
            connect(path, BUSY_TIMEOUT)
                .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?,
        ),
    };
    let _turn = turns.pool_blocking();
    db.execute_batch("BEGIN IMMEDIATE")?;
    let applied = batch.iter_mut().try_for_each(|op| apply(&mut **op, db));
    let end = if applied.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    let ended = db.execute_batch(end);
    if !db.is_autocommit() {
        // A failed COMMIT leaves the transaction open: end it before the next batch, or
        // start over on a new connection (closing this one rolls it back).
        if db.execute_batch("ROLLBACK").is_err() {
            *conn = None;
        }
    }
    applied?;
    Ok(ended?)
}

/// Applies one op; a panic in it fails the op (and so its batch), not the writer.
fn apply(op: &mut dyn Queued, db: &Connection) -> Result<(), StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.apply(db))).unwrap_or_else(|_| {
        tracing::error!("an SQLite write panicked; its batch is rolled back");
        Err(StoreError::Query("the write failed unexpectedly".into()))
    })
}

#[cfg(test)]
mod tests;
