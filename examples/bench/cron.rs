//! The cron store: one tick's claims and two claimers contending (issue 4).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::*;

pub fn bench_job(i: usize, next: i64) -> hermes_gateway::cron::Job {
    use hermes_gateway::cron::{Job, JobState, Repeat};
    let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    Job {
        id: format!("{i:012x}"),
        name: format!("job {i}"),
        prompt: "p".into(),
        schedule: "every 1h".into(),
        enabled: true,
        state: JobState::Scheduled,
        next_run_at: Some(jiff::Timestamp::from_second(next).unwrap()),
        last_run_at: None,
        last_status: None,
        last_error: None,
        repeat: Repeat {
            times: None,
            completed: 0,
        },
        deliver: "local".into(),
        created_at: t0,
        updated_at: t0,
    }
}

pub async fn open_store(kind: &str, where_: &str) -> hermes_gateway::store::Store {
    use hermes_gateway::clock::SystemClock;
    use hermes_gateway::store::Store;
    match kind {
        "sqlite" => Store::sqlite(Path::new(where_), &SystemClock)
            .await
            .unwrap(),
        _ => Store::postgres(where_, &SystemClock).await.unwrap(),
    }
}

/// A fresh place for a store: an SQLite file, or a new database on the test server.
pub async fn fresh_store_location(kind: &str, dir: &Path) -> String {
    if kind == "sqlite" {
        return dir
            .join(format!("bench-{}.db", hermes_gateway::ids::random_hex128()))
            .display()
            .to_string();
    }
    use sqlx::Connection;
    let admin = std::env::var("HERMES_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://hermes:hermes@127.0.0.1:5432/hermes_test".into());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL (run .ci/deps)");
    let name = format!(
        "hermes_bench_{}",
        &hermes_gateway::ids::random_hex128()[..12]
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

pub const NOW: i64 = 1_800_000_000;

/// Fills a store with `total` jobs of which `due` are due at NOW.
pub async fn fill(store: &hermes_gateway::store::Store, total: usize, due: usize) {
    let jobs: Vec<_> = (0..total)
        .map(|i| {
            bench_job(
                i,
                if i % (total / due) == 0 {
                    NOW - 10
                } else {
                    NOW + 3600 + i as i64
                },
            )
        })
        .collect();
    for chunk in jobs.chunks(10_000) {
        store.insert_jobs(chunk).await.unwrap();
    }
}

/// Claims every due job at NOW once (what one tick does before dispatch); returns claims.
pub async fn claim_all(store: &hermes_gateway::store::Store, owner: &str) -> usize {
    use hermes_gateway::cron::{JobState, RunStatus};
    use hermes_gateway::store::{ClaimOutcome, NewRun};
    let now = jiff::Timestamp::from_second(NOW).unwrap();
    let mut claimed = 0;
    loop {
        let due = store.due_jobs(now, 1000).await.unwrap();
        if due.is_empty() {
            return claimed;
        }
        for job in due {
            let run = NewRun {
                id: format!("{owner}-{}", job.id),
                job_id: job.id.clone(),
                scheduled_for: job.next_run_at.unwrap(),
                started_at: now,
                lease_until: jiff::Timestamp::from_second(NOW + 300).unwrap(),
                owner: owner.into(),
            };
            let next = jiff::Timestamp::from_second(NOW + 3600).unwrap();
            if store
                .claim_slot(
                    &run,
                    Some(next),
                    JobState::Scheduled,
                    RunStatus::Running,
                    None,
                )
                .await
                .unwrap()
                == ClaimOutcome::Claimed
            {
                claimed += 1;
            }
        }
    }
}

/// One tick finding and claiming 1,000 due jobs among 10,000 and 100,000; 3 rounds each.
pub async fn cron_tick() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["sqlite", "postgres"] {
        for total in [10_000, 100_000] {
            let mut samples = Vec::new();
            for _ in 0..3 {
                let loc = fresh_store_location(kind, dir.path()).await;
                let store = open_store(kind, &loc).await;
                fill(&store, total, 1000).await;
                let t = Instant::now();
                let n = claim_all(&store, "bench").await;
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(n, 1000);
            }
            summary(
                &format!("cron tick on {kind}: find + claim 1,000 due of {total} jobs"),
                "ms",
                samples,
            );
        }
    }
}

/// Two processes claim the same 5,000 due jobs at once: claims per second, none twice.
pub async fn cron_contention() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["sqlite", "postgres"] {
        let loc = fresh_store_location(kind, dir.path()).await;
        let store = open_store(kind, &loc).await;
        fill(&store, 100_000, 5_000).await;
        drop(store);
        let t = Instant::now();
        let children: Vec<_> = (0..2)
            .map(|i| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["cron-claimer", kind, &loc, &format!("p{i}")])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut counts = Vec::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            counts.push(
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<usize>()
                    .unwrap(),
            );
        }
        let secs = t.elapsed().as_secs_f64();
        let total: usize = counts.iter().sum();
        assert_eq!(total, 5_000, "every slot claimed exactly once");
        println!(
            "cron contention on {kind}: 2 processes claimed 5,000 due slots (split {counts:?}, none twice) in {secs:.2} s = {:.0} claims/s",
            total as f64 / secs
        );
    }
}

pub async fn cron_claimer(kind: &str, loc: &str, owner: &str) {
    let store = open_store(kind, loc).await;
    println!("{}", claim_all(&store, owner).await);
}
