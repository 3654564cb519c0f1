//! The cron store: one tick's claims and two claimers contending (issues 4 and 15),
//! batched (`claim_slots`, what the ticker does) and one transaction per claim.

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
    let admin = admin_url();
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

/// The test server's database the bench connects to to create and drop its own.
fn admin_url() -> String {
    std::env::var("HERMES_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://hermes:hermes@127.0.0.1:5432/hermes_test".into())
}

/// Removes a store [`fresh_store_location`] made (the SQLite files go with their directory).
pub async fn remove_store_location(kind: &str, loc: &str) {
    if kind == "sqlite" {
        return;
    }
    use sqlx::Connection;
    let name = loc.rsplit_once('/').unwrap().1;
    let mut conn = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
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

/// How a bench claimer claims the due slots: one transaction per claim (what the ticker
/// did before issue 15), or one batch per tick (`claim_slots`, what it does now).
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    PerClaim,
    Batched,
}

impl Mode {
    fn parse(s: &str) -> Self {
        match s {
            "per-claim" => Self::PerClaim,
            _ => Self::Batched,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::PerClaim => "per-claim",
            Self::Batched => "batched",
        }
    }
}

/// The stores to bench: `CRON_STORES=postgres` (or `sqlite`) runs one of them.
fn kinds() -> Vec<&'static str> {
    let only = std::env::var("CRON_STORES").unwrap_or_default();
    ["sqlite", "postgres"]
        .into_iter()
        .filter(|k| only.is_empty() || only.split(',').any(|o| o == *k))
        .collect()
}

/// Claims every due job at NOW once, tick by tick as the ticker does before dispatch
/// (the due scan; in batched mode also the overlap check, one query per tick, and the
/// claims in batches of `CLAIM_BATCH`, as the ticker runs them); returns claims won.
pub async fn claim_all(store: &hermes_gateway::store::Store, owner: &str, mode: Mode) -> usize {
    use hermes_gateway::cron::{JobState, RunStatus};
    use hermes_gateway::store::{ClaimOutcome, ClaimRequest, NewRun};
    let now = jiff::Timestamp::from_second(NOW).unwrap();
    let next = jiff::Timestamp::from_second(NOW + 3600).unwrap();
    let mut claimed = 0;
    loop {
        let scan = Instant::now();
        let due = store.due_jobs(now, 1000).await.unwrap();
        if due.is_empty() {
            return claimed;
        }
        let scanned = scan.elapsed();
        let runs = due.iter().map(|job| NewRun {
            id: format!("{owner}-{}", job.id),
            job_id: job.id.clone(),
            scheduled_for: job.next_run_at.unwrap(),
            started_at: now,
            lease_until: jiff::Timestamp::from_second(NOW + 300).unwrap(),
            owner: owner.into(),
        });
        let (state, status) = (JobState::Scheduled, RunStatus::Running);
        let outcomes = match mode {
            Mode::PerClaim => {
                let mut outcomes = Vec::new();
                for run in runs {
                    let outcome = store.claim_slot(&run, Some(next), state, status, None);
                    outcomes.push(outcome.await.unwrap());
                }
                outcomes
            }
            Mode::Batched => {
                let ids: Vec<String> = due.iter().map(|job| job.id.clone()).collect();
                let running = store.running_jobs(&ids, now).await.unwrap();
                assert!(running.is_empty());
                let requests: Vec<_> = runs
                    .map(|run| ClaimRequest {
                        run,
                        next: Some(next),
                        state,
                        status,
                    })
                    .collect();
                let checked = scan.elapsed();
                let mut outcomes = Vec::new();
                for batch in requests.chunks(hermes_gateway::cron::CLAIM_BATCH) {
                    outcomes.extend(store.claim_slots(batch).await.unwrap());
                }
                if std::env::var_os("CRON_PHASES").is_some() {
                    eprintln!(
                        "  phases: due scan {scanned:.1?}, + overlap check {checked:.1?}, + {} claim batches {:.1?}",
                        requests.len().div_ceil(hermes_gateway::cron::CLAIM_BATCH),
                        scan.elapsed()
                    );
                }
                outcomes
            }
        };
        claimed += outcomes
            .iter()
            .filter(|o| **o == ClaimOutcome::Claimed)
            .count();
    }
}

/// One tick finding and claiming 1,000 due jobs among 10,000 and 100,000, batched and
/// per claim; a fresh store per run, 3 runs each.
pub async fn cron_tick() {
    let dir = tempfile::tempdir().unwrap();
    for kind in kinds() {
        for total in [10_000, 100_000] {
            for mode in [Mode::Batched, Mode::PerClaim] {
                let mut samples = Vec::new();
                for _ in 0..3 {
                    let loc = fresh_store_location(kind, dir.path()).await;
                    let store = open_store(kind, &loc).await;
                    fill(&store, total, 1000).await;
                    let t = Instant::now();
                    let n = claim_all(&store, "bench", mode).await;
                    samples.push(t.elapsed().as_secs_f64() * 1000.0);
                    assert_eq!(n, 1000);
                    drop(store);
                    remove_store_location(kind, &loc).await;
                }
                summary(
                    &format!(
                        "cron tick on {kind}, {}: find + claim 1,000 due of {total} jobs (runs {})",
                        mode.name(),
                        runs(&samples, 0)
                    ),
                    "ms",
                    samples,
                );
            }
        }
    }
}

/// The samples as measured, in order.
fn runs(samples: &[f64], decimals: usize) -> String {
    let all: Vec<String> = samples.iter().map(|s| format!("{s:.decimals$}")).collect();
    all.join(" / ")
}

/// Two processes claim the same 5,000 due jobs at once: claims per second, none twice.
/// Both open the store first and start on one signal; the time runs from that signal to
/// the last claimer's report. A fresh store per run, 3 runs per mode.
pub async fn cron_contention() {
    let dir = tempfile::tempdir().unwrap();
    for kind in kinds() {
        for mode in [Mode::Batched, Mode::PerClaim] {
            let mut rates = Vec::new();
            let mut splits = Vec::new();
            for _ in 0..3 {
                let loc = fresh_store_location(kind, dir.path()).await;
                let store = open_store(kind, &loc).await;
                fill(&store, 100_000, 5_000).await;
                drop(store);
                let (counts, secs) = contend(kind, &loc, mode);
                remove_store_location(kind, &loc).await;
                let total: usize = counts.iter().sum();
                assert_eq!(total, 5_000, "every slot claimed exactly once");
                rates.push(total as f64 / secs);
                splits.push(counts);
            }
            let mut sorted = rates.clone();
            sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "cron contention on {kind}, {}: 2 processes claimed 5,000 due slots (none twice; splits {splits:?}): median {:.0} claims/s (runs {})",
                mode.name(),
                sorted[1],
                runs(&rates, 0)
            );
        }
    }
}

/// Runs two claimers on the store at `loc` from one start signal; their claim counts
/// and the seconds from the signal to the last count.
fn contend(kind: &str, loc: &str, mode: Mode) -> (Vec<usize>, f64) {
    use std::io::{BufRead, BufReader, Write};
    let mut children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args(["cron-claimer", kind, loc, &format!("p{i}"), mode.name()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outs: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()))
        .collect();
    for out in &mut outs {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let t = Instant::now();
    for c in &mut children {
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let counts = outs
        .iter_mut()
        .map(|out| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim().parse::<usize>().unwrap()
        })
        .collect();
    let secs = t.elapsed().as_secs_f64();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    (counts, secs)
}

/// A claimer process: opens the store, says `ready`, waits for a line on stdin, claims
/// every due slot it can and prints how many it won.
pub async fn cron_claimer(kind: &str, loc: &str, owner: &str, mode: &str) {
    let store = open_store(kind, loc).await;
    println!("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    println!("{}", claim_all(&store, owner, Mode::parse(mode)).await);
}
