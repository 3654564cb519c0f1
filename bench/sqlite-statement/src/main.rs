//! One ticket-like insert and one compare-and-swap update per key, `ROUNDS` keys per way,
//! the runtime on one worker thread (pin the process with `taskset -c 0` to put sqlx's
//! worker thread on the same core, as the gateway runs in the benchmarks).

use std::path::Path;
use std::time::Instant;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

const ROUNDS: i64 = 20_000;
const INSERT: &str = "INSERT INTO t (h, s, a) VALUES (?1, ?2, ?3)";
const UPDATE: &str = "UPDATE t SET u = ?2 WHERE h = ?1 AND u IS NULL RETURNING s";

fn report(way: &str, started: Instant) {
    let per = started.elapsed().as_secs_f64() * 1e6 / (2 * ROUNDS) as f64;
    println!("{way}: {per:.1} µs per statement");
}

fn key(i: i64) -> String {
    format!("{i:064}")
}

fn main() {
    let dir = std::env::temp_dir().join(format!("sqlite-statement-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let db = dir.join("bench.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(through_sqlx(&db));
    inline(&db);
    std::fs::remove_dir_all(&dir).ok();
}

async fn through_sqlx(db: &Path) {
    let options = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("open");
    sqlx::raw_sql("CREATE TABLE t (h TEXT PRIMARY KEY, s TEXT, a INTEGER, u INTEGER)")
        .execute(&pool)
        .await
        .expect("schema");
    let started = Instant::now();
    for i in 0..ROUNDS {
        let q = sqlx::query(INSERT).bind(key(i)).bind("session").bind(i);
        q.execute(&pool).await.expect("insert");
        let q = sqlx::query(UPDATE).bind(key(i)).bind(i);
        q.fetch_optional(&pool).await.expect("update");
    }
    report("sqlx, through the pool", started);
    let mut conn = pool.acquire().await.expect("a connection");
    let started = Instant::now();
    for i in ROUNDS..2 * ROUNDS {
        let q = sqlx::query(INSERT).bind(key(i)).bind("session").bind(i);
        q.execute(&mut *conn).await.expect("insert");
        let q = sqlx::query(UPDATE).bind(key(i)).bind(i);
        q.fetch_optional(&mut *conn).await.expect("update");
    }
    report("sqlx, one held connection", started);
}

fn inline(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("pragma");
    let started = Instant::now();
    for i in 2 * ROUNDS..3 * ROUNDS {
        let mut insert = conn.prepare_cached(INSERT).expect("prepare");
        insert
            .execute(rusqlite::params![key(i), "session", i])
            .expect("insert");
        let mut update = conn.prepare_cached(UPDATE).expect("prepare");
        let _: Option<String> = update
            .query_row(rusqlite::params![key(i), i], |r| r.get(0))
            .ok();
    }
    report("rusqlite, inline on the calling thread", started);
}
