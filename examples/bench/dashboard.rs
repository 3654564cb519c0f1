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

/// Ticket mint + WebSocket redeem round trips, sequential and 8-way, the gateway (gated,
/// tickets in SQLite) vs. FastAPI with an in-memory dict; three runs each, medians.
pub async fn tickets() {
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
                    let mut child = server("python3")
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
