//! Batched claims (`Store::claim_slots`, what the ticker claims its due jobs with): exactly
//! once across stores contending on one PostgreSQL, the compare-and-swap per slot inside a
//! batch, all or nothing on both backends, and a tick whose claim fails giving its
//! admissions back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hermes_gateway::cron::{Job, JobState, RunStatus};
use hermes_gateway::store::{ClaimOutcome, ClaimRequest, NewRun, Store};
use jiff::Timestamp;

use crate::support::{TestApp, TestDatabase, both_stores, stored_job, t};

fn job(id: &str, slot: i64) -> Job {
    stored_job(id, "every 1h", Some(slot), -7200)
}

/// The claim of `job`'s `slot` as run `run`, moving the job an hour on.
fn request(run: &str, job: &str, slot: i64, status: RunStatus) -> ClaimRequest {
    ClaimRequest {
        run: NewRun {
            id: run.into(),
            job_id: job.into(),
            scheduled_for: t(slot),
            started_at: t(1),
            lease_until: t(301),
            owner: "test".into(),
        },
        next: Some(t(slot + 3600)),
        state: JobState::Scheduled,
        status,
    }
}

fn running(run: &str, job: &str, slot: i64) -> ClaimRequest {
    request(run, job, slot, RunStatus::Running)
}

/// Two stores on one PostgreSQL, two claimers each, claim the same 500 due slots in
/// batches at once, half of them handing each batch over in reverse: every slot is claimed
/// exactly once, and no batch fails (a deadlock would be an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_contending_on_one_postgres_claim_each_of_500_slots_once() {
    const JOBS: usize = 500;
    let db = TestDatabase::create().await;
    let clock = hermes_gateway::clock::SystemClock;
    let first = Store::postgres(db.url(), &clock).await.unwrap();
    let second = Store::postgres(db.url(), &clock).await.unwrap();
    // Slots spread so that the due order (by slot) is not the id order.
    let jobs: Vec<Job> = (0..JOBS)
        .map(|i| job(&format!("{i:012x}"), -((i * 7919 % JOBS) as i64) - 1))
        .collect();
    first.insert_jobs(&jobs).await.unwrap();

    let start = Arc::new(tokio::sync::Barrier::new(4));
    let claimers: Vec<_> = (0..4)
        .map(|n| {
            let store = (if n % 2 == 0 { &first } else { &second }).clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let mut won = Vec::new();
                loop {
                    let due = store.due_jobs(t(0), 100).await.unwrap();
                    if due.is_empty() {
                        return won;
                    }
                    let mut batch: Vec<ClaimRequest> = due
                        .iter()
                        .map(|j| {
                            let slot = j.next_run_at.unwrap().as_second() - 1_800_000_000;
                            running(&format!("run-{n}-{}", j.id), &j.id, slot)
                        })
                        .collect();
                    if n >= 2 {
                        batch.reverse();
                    }
                    let outcomes = store.claim_slots(&batch).await.unwrap();
                    assert_eq!(outcomes.len(), batch.len());
                    for (r, outcome) in batch.into_iter().zip(outcomes) {
                        if outcome == ClaimOutcome::Claimed {
                            won.push((r.run.job_id, r.run.id));
                        }
                    }
                }
            })
        })
        .collect();
    let mut won: HashMap<String, String> = HashMap::new();
    let mut per_claimer = Vec::new();
    for claimer in claimers {
        let mine = claimer.await.unwrap();
        per_claimer.push(mine.len());
        for (job, run) in mine {
            assert!(
                won.insert(job.clone(), run).is_none(),
                "{job} claimed twice"
            );
        }
    }
    assert_eq!(won.len(), JOBS, "every slot claimed: {per_claimer:?}");
    for j in &jobs {
        let runs = first.list_runs(&j.id, 10).await.unwrap();
        assert_eq!(runs.len(), 1, "{}: {runs:?}", j.id);
        assert_eq!(runs[0].id, won[&j.id]);
        assert_eq!(runs[0].scheduled_for, j.next_run_at.unwrap());
        let moved = first.get_job(&j.id).await.unwrap().next_run_at;
        assert_eq!(
            moved,
            Some(j.next_run_at.unwrap() + jiff::SignedDuration::from_hours(1))
        );
    }
}

/// One batch over slots in every state a slot can be in by the time its claim runs: only
/// those still due are claimed, each alone, on both backends alike.
#[tokio::test]
async fn a_batch_claims_only_the_slots_still_due() {
    let (stores, _dir, _db) = both_stores().await;
    for store in stores {
        let kind = store.kind();
        let mut paused = job("dddddddddddd", 0);
        paused.state = JobState::Paused;
        let mut disabled = job("eeeeeeeeeeee", 0);
        disabled.enabled = false;
        let ids = [
            "aaaaaaaaaaaa",
            "bbbbbbbbbbbb",
            "cccccccccccc",
            "777777777777",
            "888888888888",
        ];
        let mut jobs: Vec<Job> = ids.iter().map(|id| job(id, 0)).collect();
        jobs.extend([paused, disabled]);
        store.insert_jobs(&jobs).await.unwrap();
        // Claimed already, by a claim of its own.
        let earlier = store
            .claim_slots(&[running("run-b0", "bbbbbbbbbbbb", 0)])
            .await;
        assert_eq!(earlier.unwrap(), [ClaimOutcome::Claimed], "{kind}");
        // Moved to another slot (rescheduled) since it was read.
        let mut moved = store.get_job("cccccccccccc").await.unwrap();
        moved.next_run_at = Some(t(30));
        store.update_job(&moved).await.unwrap();
        // Its slot's run opened without moving the job (a manual run of that slot).
        let manual = running("run-80", "888888888888", 0).run;
        let opened = store.open_run(&manual, RunStatus::Running).await.unwrap();
        assert_eq!(opened, ClaimOutcome::Claimed, "{kind}");

        let batch = [
            running("run-a", "aaaaaaaaaaaa", 0),
            running("run-b", "bbbbbbbbbbbb", 0),
            running("run-c", "cccccccccccc", 0),
            running("run-d", "dddddddddddd", 0),
            running("run-e", "eeeeeeeeeeee", 0),
            running("run-f", "ffffffffffff", 0),
            request("run-7", "777777777777", 0, RunStatus::Skipped),
            running("run-8", "888888888888", 0),
            running("run-a2", "aaaaaaaaaaaa", 0),
        ];
        let outcomes = store.claim_slots(&batch).await.unwrap();
        use ClaimOutcome::{Claimed, Lost};
        assert_eq!(
            outcomes,
            [Claimed, Lost, Lost, Lost, Lost, Lost, Claimed, Lost, Lost],
            "{kind}"
        );
        let runs = |id: &'static str| {
            let store = store.clone();
            async move { store.list_runs(id, 10).await.unwrap() }
        };
        let a = runs("aaaaaaaaaaaa").await;
        assert_eq!(a.len(), 1, "{kind}: {a:?}");
        assert_eq!(
            (a[0].id.as_str(), a[0].status),
            ("run-a", RunStatus::Running)
        );
        let b = runs("bbbbbbbbbbbb").await;
        assert_eq!(
            b.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["run-b0"]
        );
        for id in [
            "cccccccccccc",
            "dddddddddddd",
            "eeeeeeeeeeee",
            "ffffffffffff",
        ] {
            assert!(runs(id).await.is_empty(), "{kind}: {id}");
        }
        // Overlap = skip: the slot consumed, its run ended at once, nothing running.
        let skipped = runs("777777777777").await;
        assert_eq!(skipped.len(), 1, "{kind}");
        assert_eq!(skipped[0].status, RunStatus::Skipped, "{kind}");
        assert_eq!(skipped[0].finished_at, Some(t(1)), "{kind}");
        let manual = runs("888888888888").await;
        assert_eq!(
            manual.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["run-80"]
        );
        let at = |id| {
            let store = store.clone();
            async move { store.get_job(id).await.unwrap().next_run_at }
        };
        assert_eq!(at("aaaaaaaaaaaa").await, Some(t(3600)), "{kind}");
        assert_eq!(
            at("cccccccccccc").await,
            Some(t(30)),
            "{kind}: left where it was moved"
        );
        assert_eq!(
            at("dddddddddddd").await,
            Some(t(0)),
            "{kind}: a paused job stays"
        );
        assert_eq!(
            at("eeeeeeeeeeee").await,
            Some(t(0)),
            "{kind}: a disabled job stays"
        );
        assert_eq!(store.claim_slots(&[]).await.unwrap(), [], "{kind}");
    }
}

/// A batch whose transaction fails (here a run id already taken) claims nothing on either
/// backend: its other slots stay due, with no run; the same batch retried claims them.
#[tokio::test]
async fn a_batch_that_fails_claims_nothing() {
    let (stores, _dir, _db) = both_stores().await;
    for store in stores {
        let kind = store.kind();
        let ids = ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"];
        let jobs: Vec<Job> = ids.iter().map(|id| job(id, 0)).collect();
        store.insert_jobs(&jobs).await.unwrap();
        let first = store
            .claim_slots(&[running("run-taken", "cccccccccccc", 0)])
            .await;
        assert_eq!(first.unwrap(), [ClaimOutcome::Claimed], "{kind}");

        let batch = [
            running("run-a", "aaaaaaaaaaaa", 0),
            running("run-taken", "bbbbbbbbbbbb", 0),
        ];
        assert!(store.claim_slots(&batch).await.is_err(), "{kind}");
        let due: HashSet<String> = store
            .due_jobs(t(0), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        let expected: HashSet<String> = ids[..2].iter().map(|s| s.to_string()).collect();
        assert_eq!(due, expected, "{kind}");
        for id in &ids[..2] {
            assert!(
                store.list_runs(id, 10).await.unwrap().is_empty(),
                "{kind}: {id}"
            );
        }

        let retry = [
            running("run-a", "aaaaaaaaaaaa", 0),
            running("run-b", "bbbbbbbbbbbb", 0),
        ];
        let outcomes = store.claim_slots(&retry).await.unwrap();
        assert_eq!(outcomes, [ClaimOutcome::Claimed; 2], "{kind}");
    }
}

/// The overlap check of a batch: the jobs whose run still runs under a live lease.
#[tokio::test]
async fn running_jobs_are_those_with_a_live_running_run() {
    let (stores, _dir, _db) = both_stores().await;
    for store in stores {
        let kind = store.kind();
        let ids = [
            "aaaaaaaaaaaa",
            "bbbbbbbbbbbb",
            "cccccccccccc",
            "dddddddddddd",
        ];
        let jobs: Vec<Job> = ids.iter().map(|id| job(id, 0)).collect();
        store.insert_jobs(&jobs).await.unwrap();
        let batch = [
            running("run-a", "aaaaaaaaaaaa", 0),
            request("run-b", "bbbbbbbbbbbb", 0, RunStatus::Skipped),
            running("run-c", "cccccccccccc", 0),
        ];
        store.claim_slots(&batch).await.unwrap();
        let all: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let live = store.running_jobs(&all, t(2)).await.unwrap();
        let expected = HashSet::from(["aaaaaaaaaaaa".to_string(), "cccccccccccc".to_string()]);
        assert_eq!(live, expected, "{kind}");
        // Past the leases (301): none.
        assert!(
            store.running_jobs(&all, t(301)).await.unwrap().is_empty(),
            "{kind}"
        );
        let one = store.running_jobs(&all[..1], t(2)).await.unwrap();
        assert_eq!(one, HashSet::from(["aaaaaaaaaaaa".to_string()]), "{kind}");
        assert!(
            store.running_jobs(&[], t(2)).await.unwrap().is_empty(),
            "{kind}"
        );
    }
}

/// A tick whose batch fails to commit (the store refuses every new run) claims nothing:
/// its admissions are given back (nothing in flight, no turn counted), the jobs stay due,
/// and the next tick, once the store accepts runs again, claims them.
#[tokio::test]
async fn a_tick_whose_claim_fails_gives_its_admissions_back() {
    let app = TestApp::spawn("cron: {tick_interval_seconds: 3600}", &[]).await;
    let now = Timestamp::now().as_second() - 1_800_000_000;
    let jobs: Vec<Job> = (0..3).map(|i| job(&format!("{i:012x}"), now - 5)).collect();
    let store = app.state.cron.store();
    store.insert_jobs(&jobs).await.unwrap();
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        app.home().join("state.db").display()
    ))
    .await
    .unwrap();
    let refuse = "CREATE TRIGGER refuse_runs BEFORE INSERT ON runs BEGIN SELECT RAISE(ABORT, 'refused'); END";
    sqlx::raw_sql(refuse).execute(&db).await.unwrap();

    assert!(app.state.cron.tick().await.is_err());
    assert_eq!(app.state.gate.snapshot().active_agents, 0);
    let metrics = app.metrics().await;
    let turns: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("hermes_turns_total{"))
        .collect();
    assert!(!turns.is_empty(), "{metrics}");
    assert!(
        turns.iter().all(|l| l.ends_with(" 0")),
        "no turn counted: {turns:?}"
    );
    let due = store.due_jobs(Timestamp::now(), 10).await.unwrap();
    assert_eq!(due.len(), 3);
    for j in &jobs {
        assert!(store.list_runs(&j.id, 10).await.unwrap().is_empty());
    }

    sqlx::raw_sql("DROP TRIGGER refuse_runs")
        .execute(&db)
        .await
        .unwrap();
    let report = app.state.cron.tick().await.unwrap();
    assert_eq!((report.due, report.claimed), (3, 3), "{report:?}");
}

/// A batch's statement is larger than one TCP segment of the driver's writes (250 claims'
/// arrays are about 40 KB): without `TCP_NODELAY` on the connection, its last segment waits
/// for the server's delayed ACK (sqlx 0.9.0 dropped the option; `vendor/sqlx-core` puts it
/// back). Linux delays an ACK by at least 40 ms, so then no batch can take less; with the
/// option a batch takes a few milliseconds (18–35 ms on a loaded machine in a debug build).
/// The fastest of twenty is checked: a floor that load cannot lower, not a timing.
#[tokio::test]
async fn a_large_batch_on_postgres_waits_for_no_delayed_ack() {
    const BATCHES: usize = 20;
    const PER: usize = 250;
    let db = TestDatabase::create().await;
    let store = Store::postgres(db.url(), &hermes_gateway::clock::SystemClock)
        .await
        .unwrap();
    let jobs: Vec<Job> = (0..BATCHES * PER)
        .map(|i| job(&format!("{i:012x}"), -1))
        .collect();
    store.insert_jobs(&jobs).await.unwrap();
    let mut took = Vec::new();
    for (b, batch) in jobs.chunks(PER).enumerate() {
        let requests: Vec<ClaimRequest> = batch
            .iter()
            .map(|j| running(&format!("run-{b}-{}-with-a-longer-id", j.id), &j.id, -1))
            .collect();
        let started = std::time::Instant::now();
        let outcomes = store.claim_slots(&requests).await.unwrap();
        took.push(started.elapsed());
        assert!(outcomes.iter().all(|o| *o == ClaimOutcome::Claimed));
    }
    let fastest = took.iter().min().unwrap();
    assert!(
        *fastest < std::time::Duration::from_millis(40),
        "even the fastest of {BATCHES} claim batches of {PER} took {fastest:?} (all: {took:?}): the connection waits for delayed ACKs (TCP_NODELAY off?)"
    );
}
