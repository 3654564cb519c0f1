//! The writer's batches: ops that share a key keep their order, and one faulty op in a
//! batch fails only its own caller.

use super::*;
use crate::clock::SystemClock;
use crate::store::Store;

/// A token id to record (`until` = `None` breaks the NOT NULL column): set-based like the
/// real ops, answering whether the id was new.
struct Record {
    jti: &'static str,
    until: Option<i64>,
    /// The size of every group applied, in order.
    groups: Groups,
}

type Groups = std::sync::Arc<std::sync::Mutex<Vec<usize>>>;

impl Write for Record {
    type Output = bool;

    fn keys(&self) -> Vec<Key<'_>> {
        vec![Key::Token(self.jti)]
    }

    async fn apply(ops: &[&Self], conn: &mut SqliteConnection) -> Result<Vec<bool>, StoreError> {
        ops[0].groups.lock().unwrap().push(ops.len());
        let batch = serde_json::json!(ops.iter().map(|o| (o.jti, o.until)).collect::<Vec<_>>());
        let rows = sqlx::query(
            "WITH b AS (SELECT key AS i, value ->> 0 AS jti, value ->> 1 AS until FROM json_each(?1)) \
             SELECT NOT EXISTS (SELECT 1 FROM fire_tokens t WHERE t.jti = b.jti) AS fresh FROM b ORDER BY i;\n\
             WITH b AS (SELECT key AS i, value ->> 0 AS jti, value ->> 1 AS until FROM json_each(?1)) \
             INSERT INTO fire_tokens (jti, expires_at) SELECT jti, until FROM b WHERE true \
             ON CONFLICT (jti) DO NOTHING;",
        )
        .bind(batch.to_string())
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| Ok(sqlx::Row::try_get::<bool, _>(r, "fresh")?))
            .collect()
    }
}

async fn writer() -> (Writer, SqlitePool, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let Store::Sqlite(pools) = Store::sqlite(&dir.path().join("state.db"), &SystemClock)
        .await
        .unwrap()
    else {
        unreachable!("an SQLite store")
    };
    let pool = pools.writer().clone();
    (Writer::spawn(pool.clone(), Default::default()), pool, dir)
}

async fn stored(pool: &SqlitePool) -> Vec<String> {
    sqlx::query_scalar("SELECT jti FROM fire_tokens ORDER BY jti")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Queues every op before the writer task runs (this test's runtime has one thread), so
/// they all land in one batch.
async fn one_batch(writer: &Writer, ops: Vec<Record>) -> Vec<Result<bool, StoreError>> {
    futures_util::future::join_all(ops.into_iter().map(|op| writer.write(op))).await
}

#[tokio::test]
async fn ops_sharing_a_key_in_one_batch_keep_their_queue_order() {
    let (writer, pool, _dir) = writer().await;
    let groups = Groups::default();
    let rec = |jti| Record {
        jti,
        until: Some(10),
        groups: groups.clone(),
    };
    let got = one_batch(&writer, vec![rec("a"), rec("a"), rec("b"), rec("a")]).await;
    let got: Vec<bool> = got.into_iter().map(Result::unwrap).collect();
    // Set-based in one statement, every delivery of `a` would have found it new.
    assert_eq!(got, [true, false, true, false]);
    assert_eq!(
        *groups.lock().unwrap(),
        [2, 1, 1],
        "rounds: a b, then a, then a"
    );
    assert_eq!(stored(&pool).await, ["a", "b"]);
}

#[tokio::test]
async fn a_batch_with_one_failing_op_fails_only_that_op_and_commits_the_rest() {
    let (writer, pool, _dir) = writer().await;
    let groups = Groups::default();
    let rec = |jti, until| Record {
        jti,
        until,
        groups: groups.clone(),
    };
    let ops = vec![rec("a", Some(10)), rec("bad", None), rec("c", Some(10))];
    let got = one_batch(&writer, ops).await;
    assert_eq!(
        *groups.lock().unwrap(),
        [3, 1, 1, 1],
        "the batch whole, then each op alone"
    );
    assert!(matches!(got[0], Ok(true)), "{:?}", got[0]);
    assert!(matches!(got[1], Err(StoreError::Query(_))), "{:?}", got[1]);
    assert!(matches!(got[2], Ok(true)), "{:?}", got[2]);
    assert_eq!(
        stored(&pool).await,
        ["a", "c"],
        "the faulty op wrote nothing"
    );
}
