//! PostgreSQL for the suite: a fresh database per test on the server `.ci/deps` starts,
//! dropped again when the test ends (passing or not), so test runs leave nothing behind.

use sqlx::Connection;

/// The PostgreSQL server the suite uses (`.ci/deps` starts it on loopback); the URL names
/// the admin database new ones are created from.
pub fn postgres_admin_url() -> String {
    std::env::var("HERMES_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://hermes:hermes@127.0.0.1:5432/hermes_test".into())
}

/// Every test database's name starts with this.
pub const PREFIX: &str = "hermes_it_";

/// A freshly created, empty database on the test server. Dropping the guard drops the
/// database, with any connection still open to it (a gateway the test left running).
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates the database; panics (saying how to get PostgreSQL) when the server is down.
    pub async fn create() -> Self {
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is needed for this test ({admin}): run .ci/deps to install and start it ({e})")
        });
        let name = format!("{PREFIX}{}", &hermes_gateway::ids::random_hex128()[..16]);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Self { name, url }
    }

    /// The database's URL, for `HERMES_DATABASE_URL` or `Store::postgres`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    /// Drops the database over its own admin connection, on a thread of its own (a `Drop`
    /// cannot await, and the test's runtime may be the one it runs on). A failure is
    /// reported, never a panic: the test's own result is what counts.
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let admin = postgres_admin_url();
                let work = async {
                    let mut conn = sqlx::PgConnection::connect(&admin).await?;
                    // FORCE (PostgreSQL 13+) ends the sessions a test's gateway left open.
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await?;
                    conn.close().await
                };
                match tokio::time::timeout(std::time::Duration::from_secs(30), work).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("no answer within 30 s".to_owned()),
                }
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database {}: {e}", self.name),
            Err(_) => eprintln!("dropping the test database {} panicked", self.name),
        }
    }
}

#[tokio::test]
async fn a_test_database_is_dropped_with_its_guard_even_with_a_session_still_open() {
    let db = TestDatabase::create().await;
    let name = db.name.clone();
    let mut open = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql("SELECT 1").execute(&mut open).await.unwrap();
    drop(db);
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "{name} is still there");
    assert!(
        sqlx::raw_sql("SELECT 1").execute(&mut open).await.is_err(),
        "the session open on {name} was not ended"
    );
}

/// One fresh store of each kind, with the directory and the database they live in (which
/// must outlive them).
pub async fn both_stores() -> (
    Vec<hermes_gateway::store::Store>,
    tempfile::TempDir,
    TestDatabase,
) {
    use hermes_gateway::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let clock = hermes_gateway::clock::SystemClock;
    let db = TestDatabase::create().await;
    let sqlite = Store::sqlite(&dir.path().join("state.db"), &clock)
        .await
        .unwrap();
    let pg = Store::postgres(db.url(), &clock).await.unwrap();
    (vec![sqlite, pg], dir, db)
}
