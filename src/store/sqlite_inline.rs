//! Short SQLite statements run on the caller's own thread, for the hot paths where a
//! statement is a point read or a one-row write (the dashboard's session read, a ticket's
//! insert and redeem, a fire's view).
//!
//! sqlx runs each SQLite connection on a thread of its own, so every statement through it
//! is a hand-off to that thread and back, and the pool's return task after it: about half
//! of a one-row statement's cost, and two context switches when the gateway has one core.
//! These connections (rusqlite, over the same bundled SQLite) run the statement inline.
//!
//! They never wait. A statement that would have to — another writer holds the database,
//! the snapshot went stale, a write that may wait (the pool's, the group commit's) is under
//! way or announced, the connection will not open — reports [`Attempt::Busy`] having done
//! nothing, and the caller runs it through the sqlx pool, whose connection thread waits in
//! SQLite's busy handler.
//! So the runtime's threads never sleep on a lock, and the writes stay one at a time as
//! SQLite requires. In this process the writers take turns ([`Turns`]) rather than meet
//! at SQLite's lock.
//!
//! Checkpoints, which `fsync`, never run here either: the inline writer has automatic
//! checkpoints off and, every [`CHECKPOINT_EVERY`] commits, asks the pool's write
//! connection (its own thread) for one, taken in a pool turn so that no inline commit
//! races it (a checkpoint chasing a steady stream of commits from another connection never
//! catches up, and the WAL grew to 56 MB in a test before this). The pool's connection and
//! the group commit's keep SQLite's own automatic checkpoint (1,000 pages) for what they
//! write, each in its turn; after one of those the next commit, inline or not, starts the
//! WAL over and syncs its header.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use super::StoreError;

/// Inline commits between two checkpoint requests. A one-row commit appends two or three
/// pages to the WAL; 256 of them stay under SQLite's own default threshold (1,000 pages).
const CHECKPOINT_EVERY: u32 = 256;
/// Idle read connections kept for reuse (one per thread that reads at once is enough).
const IDLE_READERS: usize = 4;

/// What an inline attempt did.
#[derive(Debug)]
pub(super) enum Attempt<T> {
    /// The statement ran (or failed for a reason that waiting would not cure).
    Done(Result<T, StoreError>),
    /// It would have had to wait; nothing was written. Run it through the pool.
    Busy,
}

/// Why an inline statement stopped: SQLite's own error (kept whole, so a busy database is
/// told apart) or one of the store's (a row that does not convert).
#[derive(Debug)]
pub(super) enum InlineError {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for InlineError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<StoreError> for InlineError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(
                rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DatabaseLocked
                | rusqlite::ErrorCode::CannotOpen
                | rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::DiskFull,
            ) => Self::Unavailable(e.to_string()),
            _ => Self::Query(e.to_string()),
        }
    }
}

/// Whose turn it is to write, in this process: the inline writer, or one of the writers
/// that may wait (the group-commit thread, the pool's write connection). Writes from
/// several connections would otherwise meet at SQLite's write lock, where the loser sleeps
/// in the busy handler (1 ms at least) for a lock held some 20 µs.
#[derive(Debug, Default)]
pub(super) struct Turns {
    /// Waiting writes announced and not yet done: inline writes step aside meanwhile.
    pool_writers: AtomicUsize,
    /// Held by the waiting writer whose turn it is: they go one at a time, in order.
    pool_side: tokio::sync::Mutex<()>,
    /// The inline write connection, opened on first use; held while it writes.
    inline: Mutex<Option<Connection>>,
}

impl Turns {
    /// A turn for a write through the pool (an `on_pool!` statement, a checkpoint): no
    /// inline write starts until the turn is dropped, and one under way, and the waiting
    /// writers' turns before this one, have ended when this returns.
    pub(super) async fn pool(&self) -> PoolTurn<'_> {
        let announced = Announced::new(&self.pool_writers);
        let side = self.pool_side.lock().await;
        while matches!(self.inline.try_lock(), Err(TryLockError::WouldBlock)) {
            tokio::task::yield_now().await;
        }
        PoolTurn {
            _announced: announced,
            _side: side,
        }
    }

    /// [`Turns::pool`] for a thread outside the runtime (the group-commit writer's): it
    /// blocks until the turn is this caller's.
    pub(super) fn pool_blocking(&self) -> PoolTurn<'_> {
        let announced = Announced::new(&self.pool_writers);
        let side = self.pool_side.blocking_lock();
        drop(self.inline.lock());
        PoolTurn {
            _announced: announced,
            _side: side,
        }
    }

    /// Waiting writes announced (their turn or waiting for it).
    #[cfg(test)]
    pub(super) fn announced(&self) -> usize {
        self.pool_writers.load(Ordering::SeqCst)
    }
}

/// A waiting writer's turn (see [`Turns::pool`]); dropping it ends the turn.
#[derive(Debug)]
pub(super) struct PoolTurn<'a> {
    _announced: Announced<'a>,
    _side: tokio::sync::MutexGuard<'a, ()>,
}

/// A waiting write counted in [`Turns::pool_writers`] until dropped (also when the wait
/// for its turn is given up).
#[derive(Debug)]
struct Announced<'a>(&'a AtomicUsize);

impl<'a> Announced<'a> {
    fn new(writers: &'a AtomicUsize) -> Self {
        writers.fetch_add(1, Ordering::SeqCst);
        Self(writers)
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The inline connections of one SQLite store, opened on first use.
#[derive(Debug)]
pub(super) struct Inline {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    turns: Arc<Turns>,
    commits: AtomicU32,
    checkpoint: mpsc::Sender<()>,
}

impl Inline {
    /// Inline connections to the database at `path` (already created and migrated by the
    /// sqlx pool), taking turns with `write`, the pool's writer, which also runs their
    /// checkpoints (a task that ends with this).
    pub(super) fn spawn(path: &Path, write: sqlx::SqlitePool, turns: Arc<Turns>) -> Self {
        let (checkpoint, asked) = mpsc::channel(1);
        tokio::spawn(checkpoints(asked, turns.clone(), write));
        Self {
            path: path.to_owned(),
            readers: Mutex::new(Vec::new()),
            turns,
            commits: AtomicU32::new(0),
            checkpoint,
        }
    }

    /// The turns this store's writers take (see [`Turns::pool`]).
    pub(super) fn turns(&self) -> &Turns {
        &self.turns
    }

    /// Runs `read` on an idle read connection (a new one if none is idle).
    fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T, InlineError>) -> Attempt<T> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle.map_or_else(|| self.open(true), Ok) {
            Ok(conn) => conn,
            Err(e) => return unopened(&e),
        };
        let attempt = settle(read(&conn));
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        attempt
    }

    /// Runs `write`, one autocommit write statement, on the inline write connection if it
    /// is this side's turn (see [`Turns`]).
    fn write<T>(&self, write: impl FnOnce(&Connection) -> Result<T, InlineError>) -> Attempt<T> {
        let turns = &*self.turns;
        if turns.pool_writers.load(Ordering::SeqCst) > 0 {
            return Attempt::Busy;
        }
        let mut slot = match turns.inline.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Attempt::Busy,
        };
        // Announced while this took the lock: the pool's writer is waiting for it.
        if turns.pool_writers.load(Ordering::SeqCst) > 0 {
            return Attempt::Busy;
        }
        let conn = match &mut *slot {
            Some(conn) => conn,
            None => match self.open(false) {
                Ok(conn) => slot.insert(conn),
                Err(e) => return unopened(&e),
            },
        };
        let attempt = settle(write(conn));
        drop(slot);
        if matches!(attempt, Attempt::Done(Ok(_)))
            && self.commits.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY
                == CHECKPOINT_EVERY - 1
        {
            // Full: one is asked for already. Closed: the runtime is shutting down.
            self.checkpoint.try_send(()).ok();
        }
        attempt
    }

    /// The first row of `sql` (`$N` placeholders) with `params`, read inline.
    pub(super) fn query_row<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, InlineError>,
    ) -> Attempt<Option<T>> {
        self.read(|conn| rows(conn, sql, params, map))
    }

    /// One write statement (`$N` placeholders), with `RETURNING`: its first row.
    pub(super) fn write_row<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, InlineError>,
    ) -> Attempt<Option<T>> {
        self.write(|conn| rows(conn, sql, params, map))
    }

    /// One write statement (`$N` placeholders) without `RETURNING`: the rows it changed.
    pub(super) fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Attempt<usize> {
        self.write(|conn| Ok(execute_on(conn, sql, params)?))
    }

    fn open(&self, reader: bool) -> rusqlite::Result<Connection> {
        // These connections never wait.
        let conn = connect(&self.path, std::time::Duration::ZERO)?;
        if reader {
            conn.pragma_update(None, "query_only", true)?;
        } else {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        Ok(conn)
    }
}

/// A rusqlite connection to the store's database at `path` (created and migrated by the
/// sqlx pools), set up as theirs are, waiting at most `busy` for another writer.
pub(super) fn connect(path: &Path, busy: std::time::Duration) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

/// A connection that would not open (descriptors exhausted, say): the pool's connections
/// are open already, so the statement goes there.
fn unopened<T>(e: &rusqlite::Error) -> Attempt<T> {
    tracing::warn!(error = %e, "an inline SQLite connection did not open; using the pool");
    Attempt::Busy
}

/// Runs `sql` to its end, mapping its first row (a write's changes are all made, and
/// committed, only when the statement is done).
fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, InlineError>,
) -> Result<Option<T>, InlineError> {
    let mut statement = conn.prepare_cached(&placeholders(sql))?;
    let mut rows = statement.query(params)?;
    let first = match rows.next()? {
        Some(row) => Some(map(row)?),
        None => None,
    };
    while rows.next()?.is_some() {}
    Ok(first)
}

/// Runs one write statement (`$N` placeholders) on `conn`, prepared once per connection:
/// the rows it changed (inline, and the group-commit writer's ops in its transaction).
pub(super) fn execute_on(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(&placeholders(sql))?.execute(params)
}

/// The store's queries number their parameters `$N` (PostgreSQL), which SQLite reads as
/// named parameters, numbered by first appearance; `?N` keeps the numbers.
fn placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

/// An outcome as the caller sees it: SQLite's busy and locked answers (any extended code)
/// mean "would wait", everything else is final.
fn settle<T>(outcome: Result<T, InlineError>) -> Attempt<T> {
    match outcome {
        Ok(value) => Attempt::Done(Ok(value)),
        Err(InlineError::Sqlite(e))
            if matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ) =>
        {
            Attempt::Busy
        }
        Err(InlineError::Sqlite(e)) => Attempt::Done(Err(e.into())),
        Err(InlineError::Store(e)) => Attempt::Done(Err(e)),
    }
}

/// Runs the checkpoints the inline writer asks for on the pool's write connection, in a
/// pool turn, until the store is dropped.
async fn checkpoints(mut asked: mpsc::Receiver<()>, turns: Arc<Turns>, pool: sqlx::SqlitePool) {
    while asked.recv().await.is_some() {
        if let Err(e) = checkpoint(&pool, &turns).await {
            tracing::warn!(error = %e, "SQLite checkpoint failed; the WAL grows until the next one");
        }
    }
}

/// A passive checkpoint (it never waits; with the inline writer stepped aside nothing
/// commits meanwhile, so it catches up with the WAL unless a reader holds an old
/// snapshot), then one commit, which starts the WAL over from its beginning and syncs its
/// new header here rather than on a runtime thread at the next inline commit. The commit
/// must change bytes (SQLite writes no frame for a row updated to itself): it flips the
/// database header's `user_version`, which the gateway does not use.
async fn checkpoint(pool: &sqlx::SqlitePool, turns: &Turns) -> Result<(), sqlx::Error> {
    use sqlx::Row as _;
    let _turn = turns.pool().await;
    let mut conn = pool.acquire().await?;
    let done = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await?;
    let (log, copied): (i64, i64) = (done.try_get(1)?, done.try_get(2)?);
    if log == copied {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await?;
        let flip = sqlx::AssertSqlSafe(format!("PRAGMA user_version = {}", version ^ 1));
        sqlx::raw_sql(flip).execute(&mut *conn).await?;
    } else {
        tracing::debug!(
            log,
            copied,
            "SQLite checkpoint left frames a reader still needs"
        );
    }
    Ok(())
}
