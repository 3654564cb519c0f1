//! Scale-to-zero wake-up: spawn → first Chronos fire accepted (issue 15).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::cron::bench_job;
use crate::fire::{FIRE_AUD, fixture, mint};

/// Wake-ups per series.
const SAMPLES: usize = 20;

/// `cold-fire`: a scaled-to-zero agent woken by its fire. Each sample spawns the receiver
/// and POSTs one fire (RS256, its own `jti`) every 0.2 ms until it is answered 202; the
/// time from spawn to that 202. Three series:
/// - `gateway, empty home`: only `config.yaml` (pinned key): the gateway creates and
///   migrates `state.db`, verifies the token, finds no such job: 202 `unknown_job`;
/// - `gateway, home with the job`: `state.db` holds the one-shot job (due in 28 s, inside the early tolerance): open,
///   check the migrations, verify, claim, 202 `started`;
/// - `python`: `bench/fire_receiver.py` (aiohttp + PyJWT) with its one job: 202 `started`.
pub async fn cold_fire() {
    let http = reqwest::Client::new();
    let tokens = mint(jsonwebtoken::Algorithm::RS256, SAMPLES * 3);
    let mut tokens = tokens.into_iter();
    for series in [
        "gateway, empty home",
        "gateway, home with the job",
        "python",
    ] {
        let mut samples = Vec::new();
        for _ in 0..SAMPLES {
            let token = tokens.next().unwrap();
            samples.push(wake(series, &token, &http).await);
        }
        summary(
            &format!("spawn -> first fire 202 ({series})"),
            "ms",
            samples,
        );
    }
}

/// The job every series fires.
const JOB: usize = 7;

/// One wake-up: spawn → 202 in ms, with the outcome the series expects.
async fn wake(series: &str, token: &str, http: &reqwest::Client) -> f64 {
    let home = tempfile::tempdir().unwrap();
    // Due within the 30 s early tolerance, but not yet: no ticker takes it first.
    let slot = jiff::Timestamp::now().as_second() + 28;
    let job = bench_job(JOB, slot);
    let body = json!({"job_id": job.id, "fire_at": jiff::Timestamp::from_second(slot).unwrap().to_string()});
    let (port, expected) = match series {
        "python" => (free_port(), "started"),
        "gateway, empty home" => (0, "unknown_job"),
        _ => (0, "started"),
    };
    if series == "gateway, home with the job" {
        let store = hermes_gateway::store::Store::sqlite(
            &home.path().join("state.db"),
            &hermes_gateway::clock::SystemClock,
        )
        .await
        .unwrap();
        let mut job = job.clone();
        job.schedule = jiff::Timestamp::from_second(slot).unwrap().to_string();
        store.insert_jobs(&[job]).await.unwrap();
        drop(store);
    }
    if series == "python" {
        std::fs::write(home.path().join("rsa.pub"), fixture("rsa_a.pub")).unwrap();
        std::fs::write(home.path().join("ec.pub"), fixture("ec_a.pub")).unwrap();
    }
    let keys = serde_json::to_string(&[fixture("rsa_a.pub")]).unwrap();
    let t0 = Instant::now();
    let (_gateway, mut python, base) = if series == "python" {
        let child = server("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/fire_receiver.py"))
            .args([
                port.to_string(),
                home.path().join("py.db").display().to_string(),
            ])
            // One job, the bench's job number JOB: the receiver numbers its jobs as bench_job.
            .args([(JOB + 1).to_string(), slot.to_string()])
            .args([home.path().join("rsa.pub"), home.path().join("ec.pub")])
            .arg(FIRE_AUD)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 with aiohttp and PyJWT (.ci/deps installs them)");
        (None, Some(child), format!("http://127.0.0.1:{port}"))
    } else {
        let gw = Gateway::start_in(
            home,
            &format!(
                "cron: {{chronos: {{expected_audience: {FIRE_AUD:?}, nas_public_keys: {keys}}}}}"
            ),
        );
        let base = gw.api.clone();
        (Some(gw), None, base)
    };
    let answer = loop {
        let sent = http
            .post(format!("{base}/api/cron/fire"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
        if let Ok(r) = sent
            && r.status() == 202
        {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(answer["outcome"], expected, "{series}: {answer}");
    if let Some(mut child) = python.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    ms
}
