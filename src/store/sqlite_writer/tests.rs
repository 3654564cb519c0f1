//! The writer's batches: ops apply in queue order, each seeing the ones before it, and one
//! faulty op in a batch fails only its own caller.

use std::sync::Mutex;

use super::*;
use crate::clock::SystemClock;
use crate::store::Store;
use crate::store::sqlite_inline::connect;

/// A token id to record (`until` = `None` breaks the NOT NULL column), answering whether
/// the id was new; it notes how many ids were committed when it applied.
struct Record {
    jti: &'static str,
    until: Option<i64>,
    seen: Arc<Seen>,
}

/// A connection outside the writer's transaction, and what it counted for each op.
struct Seen {
    outside: Mutex<Connection>,
    committed: Mutex<Vec<i64>>,
}

impl Seen {
    /// What each op but the one holding the writer counted, in the order they applied.
    fn counts(&self) -> Vec<i64> {
        self.committed.lock().unwrap().clone()
    }
}

impl Write for Record {
    type Output = bool;

    fn apply(&self, conn: &Connection) -> Result<bool, StoreError> {
        assert_ne!(self.jti, "panic", "an op that panics");
        let outside = self.seen.outside.lock().unwrap();
        let committed = outside.query_row("SELECT count(*) FROM fire_tokens", [], |r| r.get(0))?;
        if self.jti != "first" {
            self.seen.committed.lock().unwrap().push(committed);
        }
        let q = "INSERT INTO fire_tokens (jti, expires_at) VALUES (?1, ?2) ON CONFLICT (jti) DO NOTHING";
        Ok(conn.execute(q, rusqlite::params![self.jti, self.until])? == 1)
    }
}

struct Fixture {
    path: std::path::PathBuf,
    /// The store's pools (its own writer and turns are not the ones under test).
    pools: crate::store::SqlitePools,
    writer: Writer,
    turns: Arc<Turns>,
    seen: Arc<Seen>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let Store::Sqlite(pools) = Store::sqlite(&path, &SystemClock).await.unwrap() else {
        unreachable!("an SQLite store")
    };
    let turns = Arc::<Turns>::default();
    let seen = Arc::new(Seen {
        outside: Mutex::new(connect(&path, std::time::Duration::ZERO).unwrap()),
        committed: Mutex::default(),
    });
    let writer = Writer::spawn(&path, turns.clone()).unwrap();
    Fixture {
        path,
        pools,
        writer,
        turns,
        seen,
        _dir: dir,
    }
}

impl Fixture {
    fn op(&self, jti: &'static str, until: Option<i64>) -> Record {
        Record {
            jti,
            until,
            seen: self.seen.clone(),
        }
    }

    /// Writes `ops` as one batch: the writer is held at its turn (busy with a first op)
    /// until all of them are queued behind it.
    async fn one_batch(&self, ops: Vec<Record>) -> Vec<Result<bool, StoreError>> {
        let turn = self.turns.pool().await;
        let first = tokio::spawn({
            let (writer, op) = (self.writer.clone(), self.op("first", Some(1)));
            async move { writer.write(op).await }
        });
        wait_for(|| self.turns.announced() == 2).await;
        let n = ops.len();
        let answers: Vec<_> = ops
            .into_iter()
            .map(|op| {
                let writer = self.writer.clone();
                tokio::spawn(async move { writer.write(op).await })
            })
            .collect();
        let queue = &self.writer.queue;
        wait_for(|| queue.max_capacity() - queue.capacity() == n).await;
        drop(turn);
        assert!(first.await.unwrap().unwrap());
        let mut got = Vec::new();
        for answer in answers {
            got.push(answer.await.unwrap());
        }
        got
    }

    fn stored(&self) -> Vec<String> {
        let outside = self.seen.outside.lock().unwrap();
        let mut q = outside
            .prepare("SELECT jti FROM fire_tokens WHERE jti <> 'first' ORDER BY jti")
            .unwrap();
        q.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// Waits (at most 5 s) until `done`.
async fn wait_for(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn ops_of_one_batch_apply_in_queue_order_each_seeing_the_ones_before() {
    let f = fixture().await;
    let ops = ["a", "a", "b", "a"].map(|jti| f.op(jti, Some(10)));
    let got = f.one_batch(ops.into()).await;
    let got: Vec<bool> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        f.seen.counts(),
        [1, 1, 1, 1],
        "one transaction: none of them committed while it ran"
    );
    // Applied together from what was committed before, every `a` would have been new.
    assert_eq!(got, [true, false, true, false]);
    assert_eq!(f.stored(), ["a", "b"]);
}

#[tokio::test]
async fn a_batch_with_one_failing_op_fails_only_that_op_and_commits_the_rest() {
    let f = fixture().await;
    let ops = vec![f.op("a", Some(10)), f.op("bad", None), f.op("c", Some(10))];
    let got = f.one_batch(ops).await;
    assert_eq!(
        f.seen.counts(),
        [1, 1, 1, 2, 2],
        "the batch up to the faulty op, rolled back; then each op alone, committing"
    );
    assert!(matches!(got[0], Ok(true)), "{:?}", got[0]);
    assert!(matches!(got[1], Err(StoreError::Query(_))), "{:?}", got[1]);
    assert!(matches!(got[2], Ok(true)), "{:?}", got[2]);
    assert_eq!(f.stored(), ["a", "c"], "the faulty op wrote nothing");
}

#[tokio::test]
async fn an_op_that_panics_fails_alone_and_the_writer_goes_on() {
    let f = fixture().await;
    let ops = vec![
        f.op("a", Some(10)),
        f.op("panic", Some(10)),
        f.op("c", Some(10)),
    ];
    let got = f.one_batch(ops).await;
    assert!(matches!(got[0], Ok(true)), "{:?}", got[0]);
    assert!(matches!(got[1], Err(StoreError::Query(_))), "{:?}", got[1]);
    assert!(matches!(got[2], Ok(true)), "{:?}", got[2]);
    assert!(f.writer.write(f.op("d", Some(10))).await.unwrap());
    assert_eq!(f.stored(), ["a", "c", "d"]);
}

/// An op that holds the writer inside its transaction until released.
struct Hold {
    entered: std::cell::Cell<Option<oneshot::Sender<()>>>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Write for Hold {
    type Output = ();

    fn apply(&self, _: &Connection) -> Result<(), StoreError> {
        if let Some(entered) = self.entered.take() {
            entered.send(()).unwrap();
        }
        self.release.recv().unwrap();
        Ok(())
    }
}

#[tokio::test]
async fn an_inline_write_steps_aside_while_the_writer_holds_its_turn_instead_of_waiting() {
    let f = fixture().await;
    let (writer, turns) = (f.writer.clone(), f.turns.clone());
    let inline = crate::store::sqlite_inline::Inline::spawn(
        &f.path,
        f.pools.writer().clone(),
        turns.clone(),
    );
    let insert = |jti: &str| {
        inline.execute(
            "INSERT INTO fire_tokens (jti, expires_at) VALUES ($1, $2)",
            rusqlite::params![jti, 10],
        )
    };
    use crate::store::sqlite_inline::Attempt;
    let (entered, inside) = oneshot::channel();
    let (release, held) = std::sync::mpsc::channel();
    let hold = Hold {
        entered: std::cell::Cell::new(Some(entered)),
        release: held,
    };
    let holding = tokio::spawn(async move { writer.write(hold).await });
    inside.await.unwrap();
    // The writer is inside its transaction, holding SQLite's write lock: the inline write
    // does nothing and says so at once (its caller goes to the pool, which waits its turn).
    let started = std::time::Instant::now();
    assert!(matches!(insert("during"), Attempt::Busy));
    assert!(started.elapsed() < std::time::Duration::from_millis(100));
    release.send(()).unwrap();
    holding.await.unwrap().unwrap();
    wait_for(|| turns.announced() == 0).await;
    assert!(matches!(insert("after"), Attempt::Done(Ok(1))));
}

/// The scheduling policy of the thread it is applied on (`/proc/thread-self/sched`).
struct PolicyOfTheWriter;

impl Write for PolicyOfTheWriter {
    type Output = String;

    fn apply(&self, _: &Connection) -> Result<String, StoreError> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").unwrap();
        let line = sched.lines().find(|l| l.starts_with("policy")).unwrap();
        Ok(line.rsplit(' ').next().unwrap().to_owned())
    }
}

#[tokio::test]
async fn the_writer_thread_runs_as_sched_batch_so_a_queued_op_does_not_preempt_its_caller() {
    const SCHED_BATCH: &str = "3";
    let f = fixture().await;
    assert_eq!(
        f.writer.write(PolicyOfTheWriter).await.unwrap(),
        SCHED_BATCH
    );
}
