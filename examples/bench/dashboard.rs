//! Dashboard tickets and sockets against the Python peer (issue 6).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

pub const TICKET_SECONDS: f64 = 5.0;
pub const BENCH_PASSWORD: &str = "bench-password";

type WsSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A gated gateway with the `basic` provider; returns it and a signed-in session cookie.
pub async fn gated_gateway(http: &reqwest::Client) -> (Gateway, String) {
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

pub async fn mint_ticket(http: &reqwest::Client, base: &str, cookie: &str) -> String {
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
pub async fn redeem(base: &str, ticket: &str) -> WsSocket {
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
pub async fn ticket_run(base: &str, cookie: &str, clients: usize) -> (f64, Vec<f64>) {
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

/// A server under test for `tickets`: the gated gateway, or the Python peer.
struct Peer {
    base: String,
    cookie: String,
    pid: u32,
    _gateway: Option<Gateway>,
    python: Option<std::process::Child>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(child) = self.python.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn start_peer(http: &reqwest::Client, kind: &str) -> Peer {
    if kind == "gateway" {
        let (gw, cookie) = gated_gateway(http).await;
        return Peer {
            base: gw.dash.clone(),
            cookie,
            pid: gw.child.id(),
            _gateway: Some(gw),
            python: None,
        };
    }
    let port = free_port();
    let child = server("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/ws_ticket_server.py"))
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
    Peer {
        base,
        cookie: "hermes_session=bench-session".into(),
        pid: child.id(),
        _gateway: None,
        python: Some(child),
    }
}

/// CPU time a process has used (user + system, all threads), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Median of three.
fn mid(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Ticket mint + WebSocket redeem round trips against the gateway (gated, tickets in the
/// store) and FastAPI with an in-memory dict: our client sequential and 8-way, then the
/// standard Python client (`bench/ws_ticket_client.py`: `websockets`, which also waits for
/// the closing handshake) sequential. Three fresh servers each, medians; with the server's
/// CPU (share of one core, and per round trip). `TICKETS_ONLY=gateway` (or `python`) runs one side.
pub async fn tickets() {
    let http = reqwest::Client::new();
    let only = std::env::var("TICKETS_ONLY").unwrap_or_default();
    for kind in ["gateway", "python"] {
        if !only.is_empty() && only != kind {
            continue;
        }
        for clients in [1usize, 8] {
            let (mut rates, mut p50s, mut p99s, mut busy, mut per) =
                (vec![], vec![], vec![], vec![], vec![]);
            for _ in 0..3 {
                let peer = start_peer(&http, kind).await;
                let cpu = cpu_seconds(peer.pid);
                let (rate, mut lat) = ticket_run(&peer.base, &peer.cookie, clients).await;
                let used = cpu_seconds(peer.pid) - cpu;
                lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let (p50, p99) = (pct(&lat, 0.5), pct(&lat, 0.99));
                let core = used / TICKET_SECONDS * 100.0;
                let us = used * 1e6 / (rate * TICKET_SECONDS);
                println!(
                    "  {kind} x{clients}: {rate:.0} round trips/s, p50 {p50:.2} ms, p99 {p99:.2} ms, server core {core:.0}% busy, {us:.0} µs CPU each"
                );
                rates.push(rate);
                p50s.push(p50);
                p99s.push(p99);
                busy.push(core);
                per.push(us);
            }
            println!(
                "tickets {kind} x{clients}: median of 3 runs {:.0} mint+redeem round trips/s, p50 {:.2} ms, p99 {:.2} ms, server core {:.0}% busy, {:.0} µs CPU each",
                mid(rates),
                mid(p50s),
                mid(p99s),
                mid(busy),
                mid(per)
            );
        }
        python_client_runs(&http, kind).await;
    }
}

/// The standard Python client against `kind`, sequential, three fresh servers.
async fn python_client_runs(http: &reqwest::Client, kind: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/ws_ticket_client.py");
    let mut runs: Vec<Vec<f64>> = Vec::new();
    for _ in 0..3 {
        let peer = start_peer(http, kind).await;
        let port = peer.base.rsplit(':').next().unwrap().to_owned();
        // Inherits this process's CPU when pinning: the client's core, not the server's.
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args([port.as_str(), peer.cookie.as_str()])
            .arg(TICKET_SECONDS.to_string())
            .output()
            .expect("python3 with websockets (.ci/deps installs it)");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        assert_eq!(
            v.len(),
            5,
            "ws_ticket_client.py said {text:?} {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "  {kind} x1 (Python websockets client): {:.0} round trips/s; p50 mint {:.2} ms, open {:.2} ms, first frame {:.2} ms, close {:.2} ms",
            v[0], v[1], v[2], v[3], v[4]
        );
        runs.push(v);
    }
    let col = |i: usize| mid(runs.iter().map(|r| r[i]).collect());
    println!(
        "tickets {kind} x1 Python client: median of 3 runs {:.0} round trips/s; p50 mint {:.2} ms, open {:.2} ms, first frame {:.2} ms, close {:.2} ms",
        col(0),
        col(1),
        col(2),
        col(3),
        col(4)
    );
}

/// RSS growth of the gateway for 1,000 idle `/api/events` sockets (opened with tickets,
/// first frame read, then 2 s idle); three runs, median.
pub async fn events_memory() {
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
