//! Group commit on SQLite's write connection: a transport for the hot writes that knows
//! nothing of what they do.
//!
//! SQLite commits one writer at a time, and each commit writes its pages to the WAL; one
//! write per commit caps fires at a few thousand per second however fast the rest is. So
//! callers hand a [`Write`] to one task that takes whatever is queued (up to
//! [`MAX_BATCH`]), applies each in turn inside a single `BEGIN IMMEDIATE … COMMIT`, and
//! answers each caller after the commit: nothing is acknowledged before it is committed
//! (WAL with `synchronous=NORMAL`: a commit survives the process crashing; a power loss may
//! take the last ones), and a batch that fails is rolled back whole and every caller in it
//! gets the error (so a write that fails wrote nothing, and the caller's retry is safe).
//!
//! The ops themselves (the claim and the run end) are defined by the modules that own
//! them; each should need one round trip to the connection's thread, since the batch's ops
//! run one after another.

use std::future::Future;

use futures_util::future::BoxFuture;
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Most ops in one transaction.
const MAX_BATCH: usize = 128;
/// Ops waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

/// One write to group-commit: applied inside the batch's transaction, its output handed
/// to the caller only once that transaction has committed.
pub(super) trait Write: Send + 'static {
    type Output: Send + 'static;

    /// Runs the op's statements on the write connection, inside the open transaction. It
    /// must not commit or roll back.
    fn apply(
        &self,
        conn: &mut SqliteConnection,
    ) -> impl Future<Output = Result<Self::Output, StoreError>> + Send;
}

/// A queued write with its caller's reply channel, its output type erased.
trait Queued: Send {
    fn apply<'a>(
        &'a mut self,
        conn: &'a mut SqliteConnection,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Answers the caller with the op's output once `committed` is `Ok`, else the error.
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Pending<W: Write> {
    op: W,
    output: Option<W::Output>,
    reply: oneshot::Sender<Result<W::Output, StoreError>>,
}

impl<W: Write> Queued for Pending<W> {
    fn apply<'a>(
        &'a mut self,
        conn: &'a mut SqliteConnection,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.output = Some(self.op.apply(conn).await?);
            Ok(())
        })
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

/// The queue in front of the writer task; the task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Queued>>,
}

impl Writer {
    /// Starts the writer task on `pool` (the store's single write connection).
    pub fn spawn(pool: SqlitePool) -> Self {
        let (queue, ops) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, ops));
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

fn gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped".into())
}

async fn run(pool: SqlitePool, mut ops: mpsc::Receiver<Box<dyn Queued>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while ops.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let committed = apply(&pool, &mut batch).await;
        for op in batch.drain(..) {
            op.answer(committed.clone());
        }
    }
}

/// Applies `ops` in one transaction; all or nothing.
async fn apply(pool: &SqlitePool, ops: &mut [Box<dyn Queued>]) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let mut failed = None;
    for op in ops {
        if let Err(e) = op.apply(&mut conn).await {
            failed = Some(e);
            break;
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
