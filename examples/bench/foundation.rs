//! Drain reaction, `/api/status` throughput, start-up, memory and idle CPU (issues 2, 11).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

pub fn write_marker(path: &Path) {
    // Atomic, as the CLI does: temp file then rename.
    let tmp = path.with_extension("bench.tmp");
    std::fs::write(
        &tmp,
        br#"{"action":"drain","requested_at":"2099-01-01T00:00:00Z","principal":"bench"}"#,
    )
    .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Marker written by this (other) process → first 503 on a chat turn: 200 times against
/// the gateway, then 20 times against `bench/drain_peer.py` (the original's 1 s poll), each
/// sample writing the marker after a random pause, sending turns back to back until the
/// first 503, then removing the marker and waiting for a 200.
pub async fn drain_latency() {
    let http = reqwest::Client::new();
    let gw = Gateway::start("");
    gw.ready(&http).await;
    let marker = gw.home.path().join(".drain_request.json");
    let samples = drain_samples(&http, &gw.api, &marker, 200, Duration::from_millis(2)).await;
    summary(
        "drain reaction (marker written -> first 503)",
        "ms",
        samples,
    );
    drop(gw);
    let home = tempfile::tempdir().unwrap();
    let marker = home.path().join(".drain_request.json");
    let port = free_port();
    let mut peer = server("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/drain_peer.py"))
        .arg(port.to_string())
        .arg(&marker)
        .spawn()
        .expect("python3 with aiohttp (.ci/deps installs it)");
    let base = format!("http://127.0.0.1:{port}");
    while http.get(format!("{base}/health")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let samples = drain_samples(&http, &base, &marker, 20, Duration::from_secs(1)).await;
    let _ = peer.kill();
    let _ = peer.wait();
    summary(
        "drain reaction, Python peer polling every 1 s (marker written -> first 503)",
        "ms",
        samples,
    );
}

/// `n` drain reactions of the receiver at `base` watching `marker`, in ms, each marker
/// written after a random pause of up to `jitter` (so a poller's phase is not locked to
/// the samples').
async fn drain_samples(
    http: &reqwest::Client,
    base: &str,
    marker: &Path,
    n: usize,
    jitter: Duration,
) -> Vec<f64> {
    let body = json!({"messages": [{"role": "user", "content": "x"}]});
    let turn = || async {
        http.post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    };
    let mut samples = Vec::new();
    for _ in 0..n {
        let random = u64::from_str_radix(&hermes_gateway::ids::random_hex128()[..8], 16).unwrap();
        tokio::time::sleep(jitter.mul_f64(random as f64 / f64::from(u32::MAX))).await;
        write_marker(marker);
        let t0 = Instant::now();
        while turn().await != 503 {}
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::fs::remove_file(marker).unwrap();
        while turn().await != 200 {}
    }
    samples
}

/// GET /api/status from 16 concurrent keep-alive clients for 5 s.
pub async fn status_throughput() {
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
pub async fn startup() {
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

/// VmRSS after start, idle, and after 1,000 turns then idle again; 5 gateways.
pub async fn rss() {
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
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (in parentheses, may hold spaces); utime and stime
    // are fields 14 and 15 of the line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

pub fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// CPU share of one core and RSS of an idle gateway over 10 s, then the same with a drain
/// marker present (the state a drained replica sits in); 3 gateways, one after the other.
pub async fn idle_cpu() {
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
