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
//! the snapshot went stale, the write connection is in use on another thread — reports
//! [`Attempt::Busy`] having done nothing, and the caller runs it through the sqlx pool,
//! whose connection thread waits in SQLite's busy handler. So the runtime's threads never
//! sleep on a lock, and the writes stay one at a time as SQLite requires.
//!
//! Checkpoints, which `fsync`, never run here either: the inline writer has automatic
//! checkpoints off and, every [`CHECKPOINT_EVERY`] commits, asks the sqlx write connection
//! (its own thread) for one. A `RESTART` checkpoint: it holds the write lock until the WAL
//! is copied back, so the next commit starts the WAL from its beginning again. (A passive
//! one never catches up with a steady stream of commits from another connection, and the
//! WAL would grow without bound.) From the request until it is done, inline writes go
//! through the pool, queued behind the checkpoint on its one connection, as SQLite's own
//! automatic checkpoint makes the committing writer wait; otherwise they would keep the
//! lock from the checkpoint, whose busy handler only polls for it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

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

/// The inline connections of one SQLite store, opened on first use.
#[derive(Debug)]
pub(super) struct Inline {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<Connection>>,
    commits: AtomicU32,
    checkpoint: mpsc::Sender<()>,
    /// A checkpoint was asked for and has not finished.
    checkpointing: Arc<AtomicBool>,
}

impl Inline {
    /// Inline connections to the database at `path` (already created and migrated by the
    /// sqlx pool), and the task that checkpoints for them on `write`, the pool's writer.
    pub(super) fn spawn(path: &Path, write: sqlx::SqlitePool) -> Self {
        let (checkpoint, asked) = mpsc::channel(1);
        let checkpointing = Arc::new(AtomicBool::new(false));
        tokio::spawn(checkpoints(asked, checkpointing.clone(), write));
        Self {
            path: path.to_owned(),
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
            commits: AtomicU32::new(0),
            checkpoint,
            checkpointing,
        }
    }

    /// Runs `read` on an idle read connection (a new one if none is idle).
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, InlineError>,
    ) -> Attempt<T> {
        let idle = self.readers.lock().map(|mut idle| idle.pop());
        let conn = match idle {
            Ok(Some(conn)) => conn,
            Ok(None) => match self.open(true) {
                Ok(conn) => conn,
                Err(e) => return Attempt::Done(Err(e.into())),
            },
            Err(_) => return Attempt::Busy,
        };
        let attempt = settle(read(&conn));
        if let Ok(mut idle) = self.readers.lock()
            && idle.len() < IDLE_READERS
        {
            idle.push(conn);
        }
        attempt
    }

    /// Runs `write` (one autocommit statement, or several the caller wraps itself) on the
    /// write connection, if no other thread is using it.
    pub(super) fn write<T>(
        &self,
        write: impl FnOnce(&Connection) -> Result<T, InlineError>,
    ) -> Attempt<T> {
        if self.checkpointing.load(Ordering::Acquire) {
            return Attempt::Busy;
        }
        let Ok(mut slot) = self.writer.try_lock() else {
            return Attempt::Busy;
        };
        if slot.is_none() {
            match self.open(false) {
                Ok(conn) => *slot = Some(conn),
                Err(e) => return Attempt::Done(Err(e.into())),
            }
        }
        let Some(conn) = slot.as_ref() else {
            return Attempt::Busy;
        };
        let attempt = settle(write(conn));
        drop(slot);
        if matches!(attempt, Attempt::Done(Ok(_)))
            && self.commits.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY
                == CHECKPOINT_EVERY - 1
            && !self.checkpointing.swap(true, Ordering::AcqRel)
            && self.checkpoint.try_send(()).is_err()
        {
            // The task is gone (the runtime is shutting down): nobody would clear the flag.
            self.checkpointing.store(false, Ordering::Release);
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

    /// One write statement (`$N` placeholders): the rows it changed.
    pub(super) fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Attempt<usize> {
        self.write(|conn| Ok(conn.prepare_cached(&placeholders(sql))?.execute(params)?))
    }

    fn open(&self, reader: bool) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        // rusqlite waits 5 s by default; these connections never wait.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        if reader {
            conn.pragma_update(None, "query_only", true)?;
        } else {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        Ok(conn)
    }
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

/// Runs the checkpoints the inline writer asks for, on the sqlx write connection, until
/// the store is dropped; `pending` is cleared after each.
async fn checkpoints(
    mut asked: mpsc::Receiver<()>,
    pending: Arc<AtomicBool>,
    pool: sqlx::SqlitePool,
) {
    while asked.recv().await.is_some() {
        let done = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .execute(&pool)
            .await;
        pending.store(false, Ordering::Release);
        if let Err(e) = done {
            tracing::warn!(error = %e, "SQLite checkpoint failed; the WAL grows until the next one");
        }
    }
}
