//! Reproducible benchmarks against the release binary (see BENCHMARKS.md).
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench -- all
//! ```
//! Subcommands: `drain-latency`, `status`, `startup`, `rss`, `idle-cpu` (CPU and RSS idle
//! and with a drain marker present, 10 s each, 3 gateways), `upstream-overhead`,
//! `echo-throughput`, `stream-memory`, `turns` (the last three), `cron-tick`,
//! `cron-contention`, `cron` (the last two; need PostgreSQL from `.ci/deps`), `fire` and
//! `fire-no-claim` (against `bench/fire_receiver.py`; need python3 with aiohttp and PyJWT;
//! `FIRE_ONLY=ES256,gateway` runs a subset), `tickets` (against `bench/ws_ticket_server.py`;
//! needs FastAPI and uvicorn), `events-memory`, `dashboard` (the last two), `all`. Each starts its own
//! gateway(s) in a temporary HERMES_HOME on loopback ports and prints medians.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn binary() -> PathBuf {
    std::env::var_os("HERMES_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/hermes-gateway")
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway {
    child: Child,
    api: String,
    dash: String,
    home: tempfile::TempDir,
}

impl Gateway {
    fn start(extra_yaml: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), extra_yaml)
    }

    /// Starts in a prepared home (e.g. with a filled `state.db`).
    fn start_in(home: tempfile::TempDir, extra_yaml: &str) -> Self {
        Self::start_full(home, "", extra_yaml)
    }

    /// Starts with extra `dashboard` fields (`, key: value...`) and extra YAML sections.
    fn start_full(home: tempfile::TempDir, dashboard_fields: &str, extra_yaml: &str) -> Self {
        let (a, d) = (free_port(), free_port());
        std::fs::write(
            home.path().join("config.yaml"),
            format!(
                "gateway: {{api_server: {{port: {a}}}}}\ndashboard: {{port: {d}{dashboard_fields}}}\n{extra_yaml}"
            ),
        )
        .unwrap();
        let child = Command::new(binary())
            .arg("--home")
            .arg(home.path())
            .arg("run")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("build the release binary first: cargo build --release");
        Self {
            child,
            api: format!("http://127.0.0.1:{a}"),
            dash: format!("http://127.0.0.1:{d}"),
            home,
        }
    }

    async fn ready(&self, http: &reqwest::Client) {
        for _ in 0..5000 {
            if http
                .get(format!("{}/api/status", self.dash))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("gateway never became ready");
    }

    /// Polls `/api/status` every `every` until `pred` holds.
    async fn wait_status(
        &self,
        http: &reqwest::Client,
        every: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) {
        loop {
            let s: serde_json::Value = http
                .get(format!("{}/api/status", self.dash))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if pred(&s) {
                return;
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, unit: &str, mut xs: Vec<f64>) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name}: n={} median={:.2}{unit} p90={:.2}{unit} p99={:.2}{unit} max={:.2}{unit}",
        xs.len(),
        pct(&xs, 0.5),
        pct(&xs, 0.9),
        pct(&xs, 0.99),
        xs[xs.len() - 1]
    );
}

fn write_marker(path: &Path) {
    // Atomic, as the CLI does: temp file then rename.
    let tmp = path.with_extension("bench.tmp");
    std::fs::write(
        &tmp,
        br#"{"action":"drain","requested_at":"2099-01-01T00:00:00Z","principal":"bench"}"#,
    )
    .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Marker written by this (other) process → first 503 on a chat turn, 200 times.
async fn drain_latency() {
    let gw = Gateway::start("");
    let http = reqwest::Client::new();
    gw.ready(&http).await;
    let marker = gw.home.path().join(".drain_request.json");
    let body = json!({"messages": [{"role": "user", "content": "x"}]});
    let mut samples = Vec::new();
    for _ in 0..200 {
        write_marker(&marker);
        let t0 = Instant::now();
        loop {
            let r = http
                .post(format!("{}/v1/chat/completions", gw.api))
                .json(&body)
                .send()
                .await
                .unwrap();
            if r.status() == 503 {
                break;
            }
        }
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::fs::remove_file(&marker).unwrap();
        loop {
            let r = http
                .post(format!("{}/v1/chat/completions", gw.api))
                .json(&body)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break;
            }
        }
    }
    summary(
        "drain reaction (marker written -> first 503)",
        "ms",
        samples,
    );
}

/// GET /api/status from 16 concurrent keep-alive clients for 5 s.
async fn status_throughput() {
    let gw = Gateway::start("");
    let http = reqwest::Client::new();
    gw.ready(&http).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = reqwest::Client::new();
        let url = format!("{}/api/status", gw.dash);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = http.get(&url).send().await.unwrap();
                let _ = r.bytes().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    println!(
        "/api/status throughput: {:.0} req/s (16 connections, 5 s, client on the same 2 cores)",
        all.len() as f64 / 5.0
    );
    summary("/api/status latency", "ms", all);
}

/// Spawn → first 200 from /health on the API server, 20 times.
async fn startup() {
    let http = reqwest::Client::new();
    let mut samples = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let gw = Gateway::start("");
        loop {
            if let Ok(r) = http.get(format!("{}/health", gw.api)).send().await
                && r.status() == 200
            {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    summary("start to ready (spawn -> first /health 200)", "ms", samples);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// VmRSS after start, idle, and after 1,000 turns then idle again; 5 gateways.
async fn rss() {
    let http = reqwest::Client::new();
    let mut idle = Vec::new();
    let mut after = Vec::new();
    for _ in 0..5 {
        let gw = Gateway::start("");
        gw.ready(&http).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.push(rss_kib(gw.child.id()) as f64 / 1024.0);
        let body = json!({"messages": [{"role": "user", "content": "hello"}]});
        for _ in 0..1000 {
            http.post(format!("{}/v1/chat/completions", gw.api))
                .json(&body)
                .send()
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        after.push(rss_kib(gw.child.id()) as f64 / 1024.0);
    }
    summary("idle RSS after start", "MiB", idle);
    summary("idle RSS after 1,000 turns", "MiB", after);
}

/// utime + stime of a process, in clock ticks (`getconf CLK_TCK` per second).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (in parentheses, may hold spaces); utime and stime
    // are fields 14 and 15 of the line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// CPU share of one core and RSS of an idle gateway over 10 s, then the same with a drain
/// marker present (the state a drained replica sits in); 3 gateways, one after the other.
async fn idle_cpu() {
    const WINDOW: Duration = Duration::from_secs(10);
    let hz = clock_ticks_per_second();
    let http = reqwest::Client::new();
    let (mut idle, mut draining, mut idle_rss, mut draining_rss) = (vec![], vec![], vec![], vec![]);
    let share = |ticks: u64| ticks as f64 / hz / WINDOW.as_secs_f64() * 100.0;
    for _ in 0..3 {
        let gw = Gateway::start("");
        gw.ready(&http).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = gw.child.id();
        let t0 = cpu_ticks(pid);
        tokio::time::sleep(WINDOW).await;
        idle.push(share(cpu_ticks(pid) - t0));
        idle_rss.push(rss_kib(pid) as f64 / 1024.0);
        write_marker(&gw.home.path().join(".drain_request.json"));
        gw.wait_status(&http, Duration::from_millis(5), |s| {
            s["gateway_state"] == "draining"
        })
        .await;
        let t0 = cpu_ticks(pid);
        tokio::time::sleep(WINDOW).await;
        draining.push(share(cpu_ticks(pid) - t0));
        draining_rss.push(rss_kib(pid) as f64 / 1024.0);
    }
    summary("idle CPU (10 s, % of one core)", "%", idle);
    summary(
        "draining CPU (10 s, marker present, % of one core)",
        "%",
        draining,
    );
    summary("idle RSS", "MiB", idle_rss);
    summary("draining RSS (after 10 s)", "MiB", draining_rss);
}

/// A fake OpenAI upstream inside the bench process: one short SSE answer, at once.
async fn fake_upstream() -> String {
    use axum::response::IntoResponse;
    async fn chat() -> axum::response::Response {
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"pong\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        ([("content-type", "text/event-stream")], body).into_response()
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

/// Latency the gateway adds over calling the upstream directly: 2,000 sequential
/// requests each way, interleaved, keep-alive.
async fn upstream_overhead() {
    let upstream = fake_upstream().await;
    let gw = Gateway::start(&format!(
        "agent: {{backend: openai, openai: {{base_url: {upstream:?}, model: m}}}}"
    ));
    let http = reqwest::Client::new();
    gw.ready(&http).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "ping"}]});
    let direct_body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "ping"}]});
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for i in 0..2200 {
        let t = Instant::now();
        let r = http
            .post(format!("{upstream}/chat/completions"))
            .json(&direct_body)
            .send()
            .await
            .unwrap();
        let _ = r.bytes().await.unwrap();
        let d = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let r = http
            .post(format!("{}/v1/chat/completions", gw.api))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        let v = t.elapsed().as_secs_f64() * 1000.0;
        if i >= 200 {
            // The first 200 of each warm the pools.
            direct.push(d);
            via.push(v);
        }
    }
    let med = |xs: &mut Vec<f64>| {
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (pct(xs, 0.5), pct(xs, 0.99))
    };
    let (d50, d99) = med(&mut direct);
    let (v50, v99) = med(&mut via);
    println!(
        "upstream overhead: direct p50={d50:.3}ms p99={d99:.3}ms | via gateway p50={v50:.3}ms p99={v99:.3}ms | added p50={:.3}ms p99={:.3}ms",
        v50 - d50,
        v99 - d99
    );
}

/// Non-streaming echo turns per second, 16 concurrent keep-alive clients, 5 s.
async fn echo_throughput() {
    let gw = Gateway::start("");
    let http = reqwest::Client::new();
    gw.ready(&http).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/chat/completions", gw.api);
        tasks.push(tokio::spawn(async move {
            let body = json!({"messages": [{"role": "user", "content": "hello there"}]});
            let mut n = 0u64;
            while Instant::now() < deadline {
                let r = http.post(&url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!(
        "echo turns: {:.0} turns/s (non-streaming, 16 connections, 5 s)",
        total as f64 / 5.0
    );
}

/// RSS growth with 1,000 streaming turns in flight at once (echo turns lasting 30 s).
async fn stream_memory() {
    let gw = Gateway::start("agent: {echo: {delay_ms: 30000}}");
    let http = reqwest::Client::new();
    gw.ready(&http).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(gw.child.id());
    let mut streams = Vec::new();
    for _ in 0..1000 {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/chat/completions", gw.api);
        streams.push(tokio::spawn(async move {
            let body = json!({"stream": true, "messages": [{"role": "user", "content": "one two three four five six"}]});
            let mut r = http.post(&url).json(&body).send().await.unwrap();
            let _ = r.chunk().await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }));
    }
    gw.wait_status(&http, Duration::from_millis(50), |s| {
        s["active_agents"] == 1000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_kib(gw.child.id());
    println!(
        "memory: RSS {:.1} MiB idle, {:.1} MiB with 1,000 streaming turns in flight: {:.1} KiB per turn ({:.1} MiB per 1,000)",
        before as f64 / 1024.0,
        during as f64 / 1024.0,
        (during - before) as f64 / 1000.0,
        (during - before) as f64 / 1024.0
    );
    for s in streams {
        s.abort();
    }
}

// ---- cron store benchmarks (issue 4) ------------------------------------------------

fn bench_job(i: usize, next: i64) -> hermes_gateway::cron::Job {
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

async fn open_store(kind: &str, where_: &str) -> hermes_gateway::store::Store {
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
async fn fresh_store_location(kind: &str, dir: &Path) -> String {
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

const NOW: i64 = 1_800_000_000;

/// Fills a store with `total` jobs of which `due` are due at NOW.
async fn fill(store: &hermes_gateway::store::Store, total: usize, due: usize) {
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
async fn claim_all(store: &hermes_gateway::store::Store, owner: &str) -> usize {
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
async fn cron_tick() {
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
async fn cron_contention() {
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

async fn cron_claimer(kind: &str, loc: &str, owner: &str) {
    let store = open_store(kind, loc).await;
    println!("{}", claim_all(&store, owner).await);
}

#[tokio::main]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match which.as_str() {
        "drain-latency" => drain_latency().await,
        "status" => status_throughput().await,
        "startup" => startup().await,
        "rss" => rss().await,
        "idle-cpu" => idle_cpu().await,
        "upstream-overhead" => upstream_overhead().await,
        "echo-throughput" => echo_throughput().await,
        "stream-memory" => stream_memory().await,
        "cron-tick" => cron_tick().await,
        "cron-contention" => cron_contention().await,
        "cron-claimer" => {
            let a: Vec<String> = std::env::args().collect();
            cron_claimer(&a[2], &a[3], &a[4]).await;
        }
        "fire" => fire_throughput(true).await,
        "fire-no-claim" => fire_throughput(false).await,
        "tickets" => tickets().await,
        "events-memory" => events_memory().await,
        "dashboard" => {
            tickets().await;
            events_memory().await;
        }
        "cron" => {
            cron_tick().await;
            cron_contention().await;
        }
        "turns" => {
            upstream_overhead().await;
            echo_throughput().await;
            stream_memory().await;
        }
        "all" => {
            drain_latency().await;
            status_throughput().await;
            startup().await;
            rss().await;
            upstream_overhead().await;
            echo_throughput().await;
            stream_memory().await;
        }
        other => {
            eprintln!(
                "unknown benchmark {other:?}: drain-latency | status | startup | rss | idle-cpu | upstream-overhead | echo-throughput | stream-memory | turns | cron-tick | cron-contention | cron | fire | fire-no-claim | tickets | events-memory | dashboard | all"
            );
            std::process::exit(2);
        }
    }
}

// ---- chronos fire benchmarks (issue 5) ----------------------------------------------

/// Jobs prepared per run: more than one run of [`FIRE_SECONDS`] can fire.
const FIRE_JOBS: usize = 40_000;
const FIRE_SECONDS: f64 = 5.0;
const FIRE_CLIENTS: usize = 16;
const FIRE_AUD: &str = "agent:bench";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chronos")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `n` distinct fire tokens (own `jti`, ten minutes to live), minted on both cores.
fn mint(alg: jsonwebtoken::Algorithm, n: usize) -> Vec<String> {
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
enum Receiver {
    Gateway {
        _gateway: Gateway,
    },
    Python {
        child: Child,
        _home: tempfile::TempDir,
    },
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Self::Python { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn receiver(kind: &str, slot: i64, http: &reqwest::Client) -> (Receiver, String) {
    let home = tempfile::tempdir().unwrap();
    if kind == "python" {
        let port = free_port();
        std::fs::write(home.path().join("rsa.pub"), fixture("rsa_a.pub")).unwrap();
        std::fs::write(home.path().join("ec.pub"), fixture("ec_a.pub")).unwrap();
        let child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/fire_receiver.py"))
            .args([
                port.to_string(),
                home.path().join("py.db").display().to_string(),
            ])
            .args([FIRE_JOBS.to_string(), slot.to_string()])
            .args([home.path().join("rsa.pub"), home.path().join("ec.pub")])
            .arg(FIRE_AUD)
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

/// One run: 16 keep-alive clients fire distinct due jobs for 5 s; every answer must be a
/// 202 `started` (or, without `claim`, fire unknown jobs and get `unknown_job`). Returns
/// (fires per second, latencies in ms).
async fn fire_run(
    kind: &str,
    tokens: &std::sync::Arc<Vec<String>>,
    claim: bool,
) -> (f64, Vec<f64>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let http = reqwest::Client::new();
    // Due within the 30 s early tolerance, and not before the run ends (so no ticker fires them).
    let slot = jiff::Timestamp::now().as_second() + 28;
    let fire_at = jiff::Timestamp::from_second(slot).unwrap().to_string();
    let (_receiver, base) = receiver(kind, slot, &http).await;
    let next = std::sync::Arc::new(AtomicUsize::new(0));
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
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .bearer_auth(&tokens[i])
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let v: serde_json::Value = r.json().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
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
    (all.len() as f64 / secs, all)
}

/// Accepted fires per second and p99, RS256 and ES256, gateway vs. the Python receiver;
/// three runs each, medians printed. `claim: false` measures the path without the claim.
async fn fire_throughput(claim: bool) {
    // FIRE_ONLY=ES256,gateway (say) runs a subset.
    let only = std::env::var("FIRE_ONLY").unwrap_or_default();
    for (name, alg) in [
        ("RS256", jsonwebtoken::Algorithm::RS256),
        ("ES256", jsonwebtoken::Algorithm::ES256),
    ] {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let tokens = std::sync::Arc::new(mint(alg, FIRE_JOBS));
        for kind in ["gateway", "python"] {
            if !only.is_empty() && !only.contains(kind) {
                continue;
            }
            let mut rates = Vec::new();
            let mut p99s = Vec::new();
            let mut p50s = Vec::new();
            for _ in 0..3 {
                let (rate, mut lat) = fire_run(kind, &tokens, claim).await;
                lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
                println!(
                    "  {kind} {name}: {rate:.0} fires/s, p50 {:.2} ms, p99 {:.2} ms ({} fires)",
                    pct(&lat, 0.5),
                    pct(&lat, 0.99),
                    lat.len()
                );
                rates.push(rate);
                p50s.push(pct(&lat, 0.5));
                p99s.push(pct(&lat, 0.99));
            }
            for v in [&mut rates, &mut p50s, &mut p99s] {
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            }
            println!(
                "fire {kind} {name}: median of 3 runs {:.0} accepted fires/s, p50 {:.2} ms, p99 {:.2} ms ({FIRE_CLIENTS} clients, {FIRE_SECONDS} s)",
                rates[1], p50s[1], p99s[1]
            );
        }
    }
}

// ---- dashboard tickets and sockets (issue 6) ----------------------------------------

const TICKET_SECONDS: f64 = 5.0;
const BENCH_PASSWORD: &str = "bench-password";

type WsSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A gated gateway with the `basic` provider; returns it and a signed-in session cookie.
async fn gated_gateway(http: &reqwest::Client) -> (Gateway, String) {
    let hash = hermes_gateway::auth::password::hash_password(BENCH_PASSWORD).unwrap();
    let gw = Gateway::start_full(
        tempfile::tempdir().unwrap(),
        &format!(", basic_auth: {{username: admin, password_hash: '{hash}'}}"),
        "",
    );
    gw.ready(http).await;
    let r = http
        .post(format!("{}/auth/password-login", gw.dash))
        .json(&json!({"username": "admin", "password": BENCH_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    (gw, cookie)
}

async fn mint_ticket(http: &reqwest::Client, base: &str, cookie: &str) -> String {
    let v: serde_json::Value = http
        .post(format!("{base}/api/auth/ws-ticket"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["ticket"].as_str().unwrap().to_owned()
}

/// Redeems a ticket by opening `/api/events` and reading the first (status) frame.
async fn redeem(base: &str, ticket: &str) -> WsSocket {
    use futures_util::StreamExt;
    let url = format!(
        "{}/api/events?ticket={ticket}",
        base.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    loop {
        match socket.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                assert!(t.contains("\"status\""), "{t}");
                return socket;
            }
            _ => continue,
        }
    }
}

/// `clients` loops of mint + redeem + close for 5 s; (round trips per second, ms each).
async fn ticket_run(base: &str, cookie: &str, clients: usize) -> (f64, Vec<f64>) {
    let deadline = Instant::now() + Duration::from_secs_f64(TICKET_SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (base, cookie) = (base.to_owned(), cookie.to_owned());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let ticket = mint_ticket(&http, &base, &cookie).await;
                let mut socket = redeem(&base, &ticket).await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                let _ = socket.close(None).await;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all.len() as f64 / TICKET_SECONDS, all)
}

/// Ticket mint + WebSocket redeem round trips, sequential and 8-way, the gateway (gated,
/// tickets in SQLite) vs. FastAPI with an in-memory dict; three runs each, medians.
async fn tickets() {
    let http = reqwest::Client::new();
    for kind in ["gateway", "python"] {
        for clients in [1usize, 8] {
            let mut rates = Vec::new();
            let mut p50s = Vec::new();
            let mut p99s = Vec::new();
            for _ in 0..3 {
                let (rate, mut lat) = if kind == "gateway" {
                    let (gw, cookie) = gated_gateway(&http).await;
                    ticket_run(&gw.dash, &cookie, clients).await
                } else {
                    let port = free_port();
                    let mut child = Command::new("python3")
                        .arg(
                            Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/ws_ticket_server.py"),
                        )
                        .arg(port.to_string())
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("python3 with fastapi and uvicorn (.ci/deps installs them)");
                    let base = format!("http://127.0.0.1:{port}");
                    for _ in 0..3000 {
                        if http.get(format!("{base}/api/status")).send().await.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let out = ticket_run(&base, "hermes_session=bench-session", clients).await;
                    let _ = child.kill();
                    let _ = child.wait();
                    out
                };
                lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
                println!(
                    "  {kind} x{clients}: {rate:.0} round trips/s, p50 {:.2} ms, p99 {:.2} ms",
                    pct(&lat, 0.5),
                    pct(&lat, 0.99)
                );
                rates.push(rate);
                p50s.push(pct(&lat, 0.5));
                p99s.push(pct(&lat, 0.99));
            }
            for v in [&mut rates, &mut p50s, &mut p99s] {
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            }
            println!(
                "tickets {kind} x{clients}: median of 3 runs {:.0} mint+redeem round trips/s, p50 {:.2} ms, p99 {:.2} ms",
                rates[1], p50s[1], p99s[1]
            );
        }
    }
}

/// RSS growth of the gateway for 1,000 idle `/api/events` sockets (opened with tickets,
/// first frame read, then 2 s idle); three runs, median.
async fn events_memory() {
    let http = reqwest::Client::new();
    let mut per_thousand = Vec::new();
    for _ in 0..3 {
        let (gw, cookie) = gated_gateway(&http).await;
        let mut tickets = Vec::new();
        for _ in 0..1000 {
            tickets.push(mint_ticket(&http, &gw.dash, &cookie).await);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss_kib(gw.child.id());
        let mut sockets = Vec::new();
        for t in &tickets {
            sockets.push(redeem(&gw.dash, t).await);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(gw.child.id());
        let grew = after.saturating_sub(before) as f64 / 1024.0;
        println!(
            "  1,000 idle /api/events sockets: RSS {:.1} → {:.1} MiB (+{grew:.2} MiB)",
            before as f64 / 1024.0,
            after as f64 / 1024.0
        );
        per_thousand.push(grew);
        drop(sockets);
    }
    per_thousand.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "events-memory: median of 3 runs {:.2} MiB per 1,000 idle /api/events sockets ({:.1} KiB each)",
        per_thousand[1],
        per_thousand[1] * 1024.0 / 1000.0
    );
}
