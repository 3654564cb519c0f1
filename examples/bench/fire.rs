//! Chronos fires against the Python receivers (issues 5 and 15): unique fires each claiming
//! (`fire`, `fire-no-claim`), one token per client replayed (`fire-replay`), and the
//! signature-verification ceiling those are measured against (`fire-verify`, in-process).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::cron::bench_job;

/// Jobs prepared per run: more than one run of [`FIRE_SECONDS`] can fire.
pub const FIRE_JOBS: usize = 75_000;
pub const FIRE_SECONDS: f64 = 5.0;
pub const FIRE_CLIENTS: usize = 16;
pub const FIRE_AUD: &str = "agent:bench";

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chronos")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `n` distinct fire tokens (own `jti`, ten minutes to live), minted on both cores.
pub fn mint(alg: jsonwebtoken::Algorithm, n: usize) -> Vec<String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(fixture("ec_a.key").as_bytes()),
        _ => EncodingKey::from_rsa_pem(fixture("rsa_a.key").as_bytes()),
    }
    .unwrap();
    let exp = jiff::Timestamp::now().as_second() + 600;
    let one = |i: usize| {
        let claims = json!({"exp": exp, "aud": FIRE_AUD, "purpose": "cron_fire", "jti": format!("bench-{i}")});
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
    };
    let half = n / 2;
    let one = &one;
    std::thread::scope(|s| {
        let a = s.spawn(move || (0..half).map(one).collect::<Vec<_>>());
        let b = s.spawn(move || (half..n).map(one).collect::<Vec<_>>());
        let mut all = a.join().unwrap();
        all.extend(b.join().unwrap());
        all
    })
}

/// A fire receiver with `FIRE_JOBS` one-shot jobs due at `slot`: the gateway or the Python
/// comparison. Dropping it stops the process.
pub enum Receiver {
    Gateway {
        _gateway: Gateway,
    },
    Python {
        child: Child,
        _home: tempfile::TempDir,
    },
}

impl Receiver {
    /// CPU seconds (user + system) the receiver process has used so far: divided into the
    /// answers of a window, what each costs the server however busy the machine is.
    pub fn cpu_seconds(&self) -> f64 {
        let pid = match self {
            Self::Gateway { _gateway } => _gateway.child.id(),
            Self::Python { child, .. } => child.id(),
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The fields after the parenthesised command name; utime and stime are 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }
}

/// One timed window: answers per second, their latencies (ms), and answers per CPU
/// second the server used in the window.
pub struct Window {
    pub rate: f64,
    pub lat: Vec<f64>,
    pub per_cpu_second: f64,
}

impl Window {
    /// Sorts the latencies and prints the window's line.
    pub fn print(&mut self, what: &str, unit: &str) {
        self.lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "  {what}: {:.0} {unit}/s, {:.0} per server CPU-second, p50 {:.2} ms, p99 {:.2} ms ({} answers)",
            self.rate,
            self.per_cpu_second,
            pct(&self.lat, 0.5),
            pct(&self.lat, 0.99),
            self.lat.len()
        );
    }
}

/// The median of each figure over `runs` (odd in number), and the rates of every run.
pub fn medians(runs: &[Window]) -> (f64, f64, f64, f64, String) {
    let med = |f: &dyn Fn(&Window) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let rates: Vec<String> = runs.iter().map(|w| format!("{:.0}", w.rate)).collect();
    (
        med(&|w| w.rate),
        med(&|w| w.per_cpu_second),
        med(&|w| pct(&w.lat, 0.5)),
        med(&|w| pct(&w.lat, 0.99)),
        rates.join(" / "),
    )
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Self::Python { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The receivers compared: the gateway, `bench/fire_receiver.py` on SQLite (the replay
/// table and claims in one SQLite file, as durable as the gateway's), and the same script
/// keeping them in memory, the way the Python original does.
pub const FIRE_KINDS: [&str; 3] = ["gateway", "python", "python-memory"];

pub async fn receiver(kind: &str, slot: i64, http: &reqwest::Client) -> (Receiver, String) {
    let home = tempfile::tempdir().unwrap();
    if let Some(rest) = kind.strip_prefix("python") {
        let state = if rest == "-memory" {
            "memory"
        } else {
            "sqlite"
        };
        let port = free_port();
        std::fs::write(home.path().join("rsa.pub"), fixture("rsa_a.pub")).unwrap();
        std::fs::write(home.path().join("ec.pub"), fixture("ec_a.pub")).unwrap();
        let child = server("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/fire_receiver.py"))
            .args([
                port.to_string(),
                home.path().join("py.db").display().to_string(),
            ])
            .args([FIRE_JOBS.to_string(), slot.to_string()])
            .args([home.path().join("rsa.pub"), home.path().join("ec.pub")])
            .args([FIRE_AUD, state])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 with aiohttp and PyJWT (.ci/deps installs them)");
        let receiver = Receiver::Python { child, _home: home };
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..3000 {
            if http.get(format!("{base}/api/status")).send().await.is_ok() {
                return (receiver, base);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the Python receiver never became ready");
    }
    let store = hermes_gateway::store::Store::sqlite(
        &home.path().join("state.db"),
        &hermes_gateway::clock::SystemClock,
    )
    .await
    .unwrap();
    let at = jiff::Timestamp::from_second(slot).unwrap().to_string();
    let jobs: Vec<_> = (0..FIRE_JOBS)
        .map(|i| {
            let mut job = bench_job(i, slot);
            job.schedule = at.clone();
            job
        })
        .collect();
    for chunk in jobs.chunks(10_000) {
        store.insert_jobs(chunk).await.unwrap();
    }
    drop(store);
    let keys = serde_json::to_string(&[fixture("rsa_a.pub"), fixture("ec_a.pub")]).unwrap();
    let gw = Gateway::start_in(
        home,
        &format!("cron: {{chronos: {{expected_audience: {FIRE_AUD:?}, nas_public_keys: {keys}}}}}"),
    );
    gw.ready(http).await;
    let base = gw.api.clone();
    (Receiver::Gateway { _gateway: gw }, base)
}

/// One fire: its status, its answer and how long it took (ms).
pub async fn timed_fire(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value, f64) {
    let t = Instant::now();
    let r = http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap();
    (status, v, t.elapsed().as_secs_f64() * 1000.0)
}

/// One run: 16 keep-alive clients fire distinct due jobs for 5 s; every answer must be a
/// 202 `started` (or, without `claim`, fire unknown jobs and get `unknown_job`). Returns
/// the window.
pub async fn fire_run(kind: &str, tokens: &std::sync::Arc<Vec<String>>, claim: bool) -> Window {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let http = reqwest::Client::new();
    // Due within the 30 s early tolerance, and not before the run ends (so no ticker fires them).
    let slot = jiff::Timestamp::now().as_second() + 28;
    let fire_at = jiff::Timestamp::from_second(slot).unwrap().to_string();
    let (receiver, base) = receiver(kind, slot, &http).await;
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let cpu = receiver.cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(FIRE_SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..FIRE_CLIENTS {
        let (http, url) = (reqwest::Client::new(), format!("{base}/api/cron/fire"));
        let (next, tokens, fire_at) = (next.clone(), tokens.clone(), fire_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= FIRE_JOBS.min(tokens.len()) {
                    break;
                }
                // Without a claim: a job id that does not exist (verify + one read + 202).
                let prefix = if claim { "" } else { "x" };
                let body = json!({"job_id": format!("{prefix}{i:012x}"), "fire_at": fire_at});
                let (status, v, ms) = timed_fire(&http, &url, &tokens[i], &body).await;
                lat.push(ms);
                assert_eq!(
                    (status, v["outcome"].as_str()),
                    (202, Some(if claim { "started" } else { "unknown_job" })),
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
    let secs = started.elapsed().as_secs_f64().min(FIRE_SECONDS);
    let cpu = receiver.cpu_seconds() - cpu;
    Window {
        rate: all.len() as f64 / secs,
        per_cpu_second: all.len() as f64 / cpu,
        lat: all,
    }
}

/// The algorithms measured.
pub const FIRE_ALGS: [(&str, jsonwebtoken::Algorithm); 2] = [
    ("RS256", jsonwebtoken::Algorithm::RS256),
    ("ES256", jsonwebtoken::Algorithm::ES256),
];

/// `FIRE_ONLY=ES256,gateway` (say) runs a subset: an algorithm (or a receiver) is run when
/// the list names it or names no algorithm (no receiver) at all; `python` does not
/// select `python-memory`.
pub fn selected(only: &str, what: &str) -> bool {
    let named: Vec<&str> = only.split(',').map(str::trim).collect();
    let algs: Vec<&str> = FIRE_ALGS.iter().map(|(name, _)| *name).collect();
    let group: &[&str] = if algs.contains(&what) {
        &algs
    } else {
        &FIRE_KINDS
    };
    named.contains(&what) || !named.iter().any(|n| group.contains(n))
}

/// Accepted fires per second and p99, RS256 and ES256, gateway vs. the Python receiver;
/// three runs each, medians printed. `claim: false` measures the path without the claim.
pub async fn fire_throughput(claim: bool) {
    let only = std::env::var("FIRE_ONLY").unwrap_or_default();
    for (name, alg) in FIRE_ALGS {
        if !selected(&only, name) {
            continue;
        }
        let tokens = std::sync::Arc::new(mint(alg, FIRE_JOBS));
        for kind in FIRE_KINDS {
            if !selected(&only, kind) {
                continue;
            }
            let mut runs = Vec::new();
            for _ in 0..3 {
                let mut w = fire_run(kind, &tokens, claim).await;
                w.print(&format!("{kind} {name}"), "fires");
                runs.push(w);
            }
            let (rate, per_cpu, p50, p99, all) = medians(&runs);
            println!(
                "fire {kind} {name}: median of 3 runs {rate:.0} accepted fires/s, {per_cpu:.0} per server CPU-second, p50 {p50:.2} ms, p99 {p99:.2} ms (runs {all}; {FIRE_CLIENTS} clients, {FIRE_SECONDS} s)"
            );
        }
    }
}
