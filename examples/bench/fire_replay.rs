//! Replayed fires and the signature ceiling (issue 15): `fire-replay` (one token per
//! client, repeated: every answer a 202 `duplicate` that must start nothing and write
//! nothing) and `fire-verify` (how many tokens one core verifies per second, in-process,
//! the ceiling the replay path is measured against).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::fire::*;

/// Clients (and tokens) of `fire-replay`.
const REPLAY_CLIENTS: usize = FIRE_CLIENTS;

/// One run: `REPLAY_CLIENTS` keep-alive clients, each with its own token for its own due
/// job. Each first fires once (a 202 `started`, untimed), then repeats that same fire for
/// `FIRE_SECONDS`; every repeat must be a 202 `duplicate` without a run. Returns the
/// window.
async fn replay_run(kind: &str, tokens: &[String]) -> Window {
    let http = reqwest::Client::new();
    let slot = jiff::Timestamp::now().as_second() + 28;
    let fire_at = jiff::Timestamp::from_second(slot).unwrap().to_string();
    let (receiver, base) = receiver(kind, slot, &http).await;
    let url = format!("{base}/api/cron/fire");
    let clients: Vec<_> = (0..REPLAY_CLIENTS)
        .map(|_| reqwest::Client::new())
        .collect();
    for (i, client) in clients.iter().enumerate() {
        let body = json!({"job_id": format!("{i:012x}"), "fire_at": fire_at});
        let (_, v, _) = timed_fire(client, &url, &tokens[i], &body).await;
        assert_eq!(v["outcome"], "started", "the first delivery: {v}");
    }
    let cpu = receiver.cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(FIRE_SECONDS);
    let mut tasks = Vec::new();
    for (i, http) in clients.into_iter().enumerate() {
        let (url, token) = (url.clone(), tokens[i].clone());
        let body = json!({"job_id": format!("{i:012x}"), "fire_at": fire_at});
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let (status, v, ms) = timed_fire(&http, &url, &token, &body).await;
                lat.push(ms);
                assert_eq!(
                    (status, v["outcome"].as_str(), &v["run_id"]),
                    (202, Some("duplicate"), &serde_json::Value::Null),
                    "{v}"
                );
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = receiver.cpu_seconds() - cpu;
    Window {
        rate: all.len() as f64 / secs,
        per_cpu_second: all.len() as f64 / cpu,
        lat: all,
    }
}

/// Replayed fires per second, RS256 and ES256, the gateway beside both Python receivers;
/// three runs each, medians printed (`FIRE_ONLY` as for `fire`).
pub async fn fire_replay() {
    let only = std::env::var("FIRE_ONLY").unwrap_or_default();
    for (name, alg) in FIRE_ALGS {
        if !selected(&only, name) {
            continue;
        }
        let tokens = mint(alg, REPLAY_CLIENTS);
        for kind in FIRE_KINDS {
            if !selected(&only, kind) {
                continue;
            }
            let mut runs = Vec::new();
            for _ in 0..3 {
                let mut w = replay_run(kind, &tokens).await;
                w.print(&format!("{kind} {name}"), "replays");
                runs.push(w);
            }
            let (rate, per_cpu, p50, p99, all) = medians(&runs);
            println!(
                "fire-replay {kind} {name}: median of 3 runs {rate:.0} duplicate answers/s, {per_cpu:.0} per server CPU-second, p50 {p50:.2} ms, p99 {p99:.2} ms (runs {all}; {REPLAY_CLIENTS} clients, {FIRE_SECONDS} s)"
            );
        }
    }
}

/// CPU seconds (user + system) this thread has used, from `/proc/thread-self/stat`.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// Runs `verify` in a loop on this thread for about `secs`: (verifications per second,
/// per CPU-second of this thread — the ceiling of one core even when others share it).
fn verify_loop(secs: f64, mut verify: impl FnMut() -> bool) -> (f64, f64) {
    let cpu = thread_cpu_seconds();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            assert!(verify(), "a good token failed to verify");
        }
        n += 64;
    }
    let wall = started.elapsed().as_secs_f64();
    (n as f64 / wall, n as f64 / (thread_cpu_seconds() - cpu))
}

/// The signature ceiling on one core: a `jsonwebtoken` decode loop on this one thread (with
/// `BENCH_PIN`, on the load generator's CPU), then the gateway's own verifier (the same
/// decode plus its key-independent prechecks and claim checks). Three runs of 2 s each,
/// medians printed, with the 80% mark the replay path must reach.
pub async fn fire_verify() {
    let only = std::env::var("FIRE_ONLY").unwrap_or_default();
    for (name, alg) in FIRE_ALGS {
        if !selected(&only, name) {
            continue;
        }
        let token = mint(alg, 1).remove(0);
        let pem = fixture(if name == "ES256" {
            "ec_a.pub"
        } else {
            "rsa_a.pub"
        });
        let decoding = match alg {
            jsonwebtoken::Algorithm::ES256 => {
                jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes())
            }
            _ => jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_audience(&[FIRE_AUD]);
        let key = hermes_gateway::chronos::verify::PublicKey::from_pem(&pem, "bench").unwrap();
        let policy = hermes_gateway::chronos::verify::FirePolicy {
            expected_audience: FIRE_AUD.into(),
            issuer: String::new(),
        };
        let mut raw = Vec::new();
        let mut gateway = Vec::new();
        for _ in 0..3 {
            raw.push(verify_loop(2.0, || {
                jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).is_ok()
            }));
            gateway.push(verify_loop(2.0, || {
                hermes_gateway::chronos::verify::verify_with_keys(
                    &token,
                    [&key],
                    &policy,
                    jiff::Timestamp::now(),
                )
                .is_ok()
            }));
        }
        for (what, v) in [
            ("jsonwebtoken::decode", raw),
            ("the gateway's verify_with_keys", gateway),
        ] {
            let mut wall: Vec<f64> = v.iter().map(|r| r.0).collect();
            let mut cpu: Vec<f64> = v.iter().map(|r| r.1).collect();
            let runs: Vec<String> = wall.iter().map(|r| format!("{r:.0}")).collect();
            wall.sort_by(|a, b| a.partial_cmp(b).unwrap());
            cpu.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "fire-verify {name} {what}: median of 3 runs {:.0} verifies/s on one thread (runs {}), {:.0} per CPU-second; 80% = {:.0}/s, {:.0} per CPU-second",
                wall[1],
                runs.join(" / "),
                cpu[1],
                wall[1] * 0.8,
                cpu[1] * 0.8
            );
        }
    }
}
