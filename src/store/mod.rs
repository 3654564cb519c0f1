//! The store: the only module that speaks SQL.
//!
//! A closed set of two backends behind one API — embedded SQLite (default,
//! `$HERMES_HOME/state.db`, WAL) and PostgreSQL (`storage.url` / `HERMES_DATABASE_URL`,
//! for several replicas on one store) — so the rest of the gateway never knows which one
//! it talks to. Each backend has its own migration directory; queries are written once
//! with `$N` placeholders and checked at runtime. Times are stored as Unix seconds.
//!
//! Errors keep "the database is unreachable" ([`StoreError::Unavailable`], a 503) apart from
//! "no such row" and from query failures.
//!
//! # Layout
//! - `jobs`: job CRUD and the due scan; `runs`: opening, renewing, ending, sweeping and
//!   reading runs; `claim`: the exactly-once claim of a slot; `claim_batch`: many claims
//!   in one transaction, and the PostgreSQL claim; `rows`: the row-to-model
//!   conversions they share. The model itself is [`crate::job`]; the store never imports
//!   `cron`.
//! - `sqlite_inline`: the hot paths' one-row statements run on the caller's thread
//!   (rusqlite), falling back to the sqlx pools whenever they would have to wait.
//! - `sqlite_writer`: group commit for the ops `claim`, `runs` and `fire_tokens` hand it,
//!   on a connection and a thread of its own (rusqlite), op after op in one transaction.
//! - `fire_tokens` also holds [`Store::fire_view`], the one read a fire makes before it
//!   writes (a replay is answered from it).
//! - `fire_tokens`, `dashboard_auth`: accepted fire-token ids; sessions and tickets.
//! - `agent_runs`: asynchronous runs (`POST /v1/runs`) and their event logs.
//! - `sessions`: stored chat sessions (`chat_sessions`) and their bounded messages.
//! - `responses`: stored Responses API responses and named conversations, bounded.

mod agent_runs;
mod claim;
mod claim_batch;
mod dashboard_auth;
mod fire_tokens;
mod jobs;
mod responses;
mod rows;
mod runs;
mod sessions;
mod sqlite_inline;
mod sqlite_writer;

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// What a claim needs and answers, named where the store's callers look for them (the
/// model itself lives in [`crate::job`]).
pub use crate::job::{ClaimOutcome, ClaimRequest, NewRun};
pub use agent_runs::{AgentRun, AgentRunStatus, RunEnd, RunProgress, Synced};
pub use dashboard_auth::{Redemption, StoredSession};
pub use fire_tokens::FireView;
pub use responses::{NewResponse, StoredResponse};
pub use sessions::{ChatAppend, ChatSession, StoredChat};

use crate::clock::Clock;
use crate::config::Config;

/// Migrations per backend, applied in order, each exactly once.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_cron.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_fire_tokens.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_dashboard_auth.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_responses.sql"),
    ),
    (5, include_str!("../../migrations/sqlite/0005_sessions.sql")),
    (6, include_str!("../../migrations/sqlite/0006_runs.sql")),
    (
        7,
        include_str!("../../migrations/sqlite/0007_response_counts.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_cron.sql")),
    (
        2,
        include_str!("../../migrations/postgres/0002_fire_tokens.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_dashboard_auth.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_responses.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_sessions.sql"),
    ),
    (6, include_str!("../../migrations/postgres/0006_runs.sql")),
    (
        7,
        include_str!("../../migrations/postgres/0007_response_counts.sql"),
    ),
];

/// How long a request waits for a database connection before the store counts as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's database.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePools),
    Postgres(PgPool),
}

/// SQLite allows one writer at a time; writers on several connections wait for each other
/// in SQLite's busy handler, which sleeps (1, 2, 5 … 25 ms). So this process's writers take
/// turns (`sqlite_inline::Turns`), fairly and without sleeping: the pool's one write
/// connection, the group-commit writer's and the inline writer's; reads (which WAL lets run
/// beside the writer) go through their own connections, the hot paths' one-row statements
/// inline first (`sqlite_inline`).
#[derive(Debug, Clone)]
pub struct SqlitePools {
    read: SqlitePool,
    write: SqlitePool,
    /// Group commit for claims, run ends and token ids, on a thread of its own.
    batch: sqlite_writer::Writer,
    /// The hot paths' short statements, on the caller's thread when they need not wait.
    inline: std::sync::Arc<sqlite_inline::Inline>,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (connect, pool timeout, I/O): retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("not found")]
    NotFound,
    /// A row holds something the code cannot read (hand-edited, newer schema).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database query failed: {0}")]
    Query(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => Self::Unavailable(e.to_string()),
            // SQLite's BUSY and LOCKED (and their extended codes): another writer held the
            // database past the busy timeout; IOERR, FULL, CANTOPEN: the disk failed, filled
            // up or the file went. Retry later, like a pool timeout.
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14)) =>
            {
                Self::Unavailable(e.to_string())
            }
            other => Self::Query(other.to_string()),
        }
    }
}

/// Runs the same query-building code against whichever pool the store holds (on SQLite,
/// the writer's; see [`on_read_pool`] for queries that only read).
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(pools) => {
                let _turn = pools.turns().pool().await;
                let $pool = pools.writer();
                $body
            }
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// [`on_pool`] for a query that only reads: on SQLite it runs beside the writer.
macro_rules! on_read_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(pools) => {
                let $pool = pools.reader();
                $body
            }
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_read_pool;

impl SqlitePools {
    pub(in crate::store) fn turns(&self) -> &sqlite_inline::Turns {
        self.inline.turns()
    }

    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.write
    }

    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.read
    }
}

impl Store {
    /// Opens the configured store and brings its schema up to date (`clock` dates the
    /// migrations it applies).
    pub async fn open(config: &Config, clock: &dyn Clock) -> Result<Self, StoreError> {
        match &config.storage.url {
            Some(url) => Self::postgres(url.expose_secret(), clock).await,
            None => Self::sqlite(&config.home.join("state.db"), clock).await,
        }
    }

    /// An SQLite store in `path` (created if missing, mode 0600).
    pub async fn sqlite(path: &Path, clock: &dyn Clock) -> Result<Self, StoreError> {
        // The file exists, 0600, before SQLite opens it: SQLite gives the `-wal` and `-shm`
        // files it creates the database file's mode. Loose leftovers are tightened.
        let sidecars = ["-wal", "-shm", "-journal"].map(|s| {
            let mut name = path.as_os_str().to_owned();
            name.push(s);
            std::path::PathBuf::from(name)
        });
        let sidecars: Vec<&Path> = sidecars.iter().map(|p| p.as_path()).collect();
        crate::files::ensure_private_file(path, &sidecars)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // A local file cannot go stale: no ping before each use (a round trip to the
        // connection's worker thread per query, a large share of a short query's cost).
        let pool = |n| {
            SqlitePoolOptions::new()
                .max_connections(n)
                .test_before_acquire(false)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.clone())
        };
        let unavailable = |e| StoreError::Unavailable(format!("{}: {e}", path.display()));
        // The writer connects first: it creates the file and switches it to WAL.
        let write = pool(1).await.map_err(unavailable)?;
        let read = pool(4).await.map_err(unavailable)?;
        let turns = std::sync::Arc::<sqlite_inline::Turns>::default();
        let batch = sqlite_writer::Writer::spawn(path, turns.clone())?;
        let inline = std::sync::Arc::new(sqlite_inline::Inline::spawn(path, write.clone(), turns));
        let store = Self::Sqlite(SqlitePools {
            read,
            write,
            batch,
            inline,
        });
        store.migrate(clock.now()).await?;
        Ok(store)
    }

    /// A PostgreSQL store at `url`. Errors never echo the URL (it may hold a password).
    pub async fn postgres(url: &str, clock: &dyn Clock) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("PostgreSQL: {}", redact(&e))))?;
        let store = Self::Postgres(pool);
        store.migrate(clock.now()).await?;
        Ok(store)
    }

    /// The inline statements of an SQLite store (see `sqlite_inline`).
    fn inline(&self) -> Option<&sqlite_inline::Inline> {
        match self {
            Self::Sqlite(pools) => Some(&pools.inline),
            Self::Postgres(_) => None,
        }
    }

    /// Which backend this is, for status output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Applies missing migrations, recording them applied at `now`. On PostgreSQL an
    /// advisory lock serialises replicas starting at the same moment.
    async fn migrate(&self, now: jiff::Timestamp) -> Result<(), StoreError> {
        const TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
        let now = now.as_second();
        let migrations = match self {
            Self::Sqlite(_) => SQLITE_MIGRATIONS,
            Self::Postgres(_) => POSTGRES_MIGRATIONS,
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Self::Postgres(_) = self {
                sqlx::query("SELECT pg_advisory_xact_lock(727274)")
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::raw_sql(TABLE).execute(&mut *tx).await?;
            for (version, text) in migrations {
                let done: Option<i64> =
                    sqlx::query_scalar(sql(self, "SELECT version FROM schema_migrations WHERE version = $1"))
                        .bind(version)
                        .fetch_optional(&mut *tx)
                        .await?;
                if done.is_none() {
                    sqlx::raw_sql(*text).execute(&mut *tx).await?;
                    sqlx::query(sql(self, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)"))
                        .bind(version)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }
}

/// SQL for this store: queries are written with `$N` placeholders (PostgreSQL), which
/// SQLite spells `?N`.
pub(crate) fn sql(
    store: &Store,
    text: &'static str,
) -> sqlx::AssertSqlSafe<std::borrow::Cow<'static, str>> {
    match store {
        Store::Postgres(_) => sqlx::AssertSqlSafe(std::borrow::Cow::Borrowed(text)),
        Store::Sqlite(_) => sqlx::AssertSqlSafe(std::borrow::Cow::Owned(text.replace('$', "?"))),
    }
}

/// A connection error without anything that could be a credential.
fn redact(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out connecting".into(),
        sqlx::Error::Configuration(_) => "invalid connection URL".into(),
        other => other
            .to_string()
            .split("postgres")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}
