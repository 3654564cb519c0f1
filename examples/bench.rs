//! Reproducible benchmarks against the release binary (see BENCHMARKS.md).
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench -- all
//! ```
//! Subcommands: `drain-latency`, `status`, `startup`, `rss`, `upstream-overhead`,
//! `echo-throughput`, `stream-memory`, `turns` (the last three), `all`. Each starts its own
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
        let home = tempfile::tempdir().unwrap();
        let (a, d) = (free_port(), free_port());
        std::fs::write(
            home.path().join("config.yaml"),
            format!(
                "gateway: {{api_server: {{port: {a}}}}}\ndashboard: {{port: {d}}}\n{extra_yaml}"
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
    loop {
        let s: serde_json::Value = http
            .get(format!("{}/api/status", gw.dash))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["active_agents"] == 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

#[tokio::main]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match which.as_str() {
        "drain-latency" => drain_latency().await,
        "status" => status_throughput().await,
        "startup" => startup().await,
        "rss" => rss().await,
        "upstream-overhead" => upstream_overhead().await,
        "echo-throughput" => echo_throughput().await,
        "stream-memory" => stream_memory().await,
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
                "unknown benchmark {other:?}: drain-latency | status | startup | rss | upstream-overhead | echo-throughput | stream-memory | turns | all"
            );
            std::process::exit(2);
        }
    }
}
