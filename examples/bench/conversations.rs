//! Conversations: the latency `POST /v1/responses` adds over the upstream (store write
//! included) and the memory stored chat sessions cost (issue 14).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::cron::fresh_store_location;
use crate::turns::fake_upstream;

/// Sequential requests per series, after [`WARM_UP`] of each.
const SAMPLES: usize = 2_000;
const WARM_UP: usize = 200;

/// `responses-overhead [sqlite|postgres]`: the latency the gateway adds to a
/// `responses.create` turn over calling the upstream directly. Three series interleaved
/// request by request on keep-alive connections: the upstream itself, `POST /v1/responses`
/// stored (the default: the response is written to the store before it is answered), and
/// the same with `store: false` (no write), so the store's share is visible
/// (`RESPONSES_PREFILL`: on a store filled first; `RESPONSES_INPUT_BYTES`: a longer input).
pub async fn responses_overhead(kind: &str) {
    let upstream = fake_upstream().await;
    let home = tempfile::tempdir().unwrap();
    let storage = match kind {
        "sqlite" => String::new(),
        "postgres" => format!(
            "storage: {{url: {:?}}}\n",
            fresh_store_location("postgres", home.path()).await
        ),
        other => panic!("responses-overhead {other:?}: want sqlite or postgres"),
    };
    let gw = Gateway::start_in(
        home,
        &format!(
            "agent: {{backend: openai, openai: {{base_url: {upstream:?}, model: m}}}}\n{storage}"
        ),
    );
    let http = reqwest::Client::new();
    gw.ready(&http).await;
    prefill(&http, &gw.api).await;
    // `RESPONSES_INPUT_BYTES=N`: an input of N bytes instead of "ping" (a long turn, whose
    // stored response is a large statement).
    let input = std::env::var("RESPONSES_INPUT_BYTES").map_or_else(
        |_| "ping".to_owned(),
        |n| "p".repeat(n.parse().expect("RESPONSES_INPUT_BYTES: a number")),
    );
    let direct =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": input}]});
    let stored = json!({"model": "m", "input": input});
    let unstored = json!({"model": "m", "input": input, "store": false});
    let (mut d, mut s, mut u) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..WARM_UP + SAMPLES {
        let a = timed(&http, &format!("{upstream}/chat/completions"), &direct).await;
        let b = timed(&http, &format!("{}/v1/responses", gw.api), &stored).await;
        let c = timed(&http, &format!("{}/v1/responses", gw.api), &unstored).await;
        if i >= WARM_UP {
            d.push(a);
            s.push(b);
            u.push(c);
        }
    }
    let (d50, d99) = p50_p99(d);
    let (s50, s99) = p50_p99(s);
    let (u50, u99) = p50_p99(u);
    println!(
        "responses overhead ({kind}): direct p50={d50:.3}ms p99={d99:.3}ms | stored p50={s50:.3}ms p99={s99:.3}ms (added p50={:.3}ms p99={:.3}ms) | store:false p50={u50:.3}ms p99={u99:.3}ms (added p50={:.3}ms p99={:.3}ms)",
        s50 - d50,
        s99 - d99,
        u50 - d50,
        u99 - d99,
    );
}

/// `RESPONSES_PREFILL=N` (default 0): N stored responses first, 16 at a time, so the
/// series run on a store at its bound (`max_stored_responses`, 10,000 by default), where
/// every write also evicts.
async fn prefill(http: &reqwest::Client, api: &str) {
    let n: usize = std::env::var("RESPONSES_PREFILL")
        .map_or(0, |s| s.parse().expect("RESPONSES_PREFILL: a number"));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients = (0..16).map(|_| {
        let (http, next, url) = (http.clone(), next.clone(), format!("{api}/v1/responses"));
        tokio::spawn(async move {
            let body = json!({"model": "m", "input": "ping"});
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                timed(&http, &url, &body).await;
            }
        })
    });
    for c in clients.collect::<Vec<_>>() {
        c.await.unwrap();
    }
    if n > 0 {
        println!("responses overhead: {n} responses stored first");
    }
}

/// One POST, answered 200 and read to the end; its latency in ms.
async fn timed(http: &reqwest::Client, url: &str, body: &serde_json::Value) -> f64 {
    let t = Instant::now();
    let r = http.post(url).json(body).send().await.unwrap();
    let status = r.status();
    if status != 200 {
        panic!("{url}: {status} {}", r.text().await.unwrap_or_default());
    }
    let _ = r.bytes().await.unwrap();
    t.elapsed().as_secs_f64() * 1000.0
}

fn p50_p99(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (pct(&xs, 0.5), pct(&xs, 0.99))
}

/// Sessions per step of `sessions-memory`.
const SESSIONS: usize = 1_000;

/// `sessions-memory`: RSS a gateway (SQLite, `echo`) grows by per 1,000 stored chat
/// sessions of one turn each (a user and an assistant message, each named by the client in
/// Hermes's `YYYYMMDD_HHMMSS_xxxxxx` form), measured after 1,000 turns without a session id
/// (all one derived session, bounded to its last 200 messages) have warmed the allocator,
/// then after each of five (`SESSIONS_STEPS`) steps of 1,000 new sessions, 1 s idle
/// before each reading. The store file's growth is printed beside it: the history lives
/// in the store, not in the process.
pub async fn sessions_memory() {
    let gw = Gateway::start("");
    let http = reqwest::Client::new();
    gw.ready(&http).await;
    let url = format!("{}/v1/chat/completions", gw.api);
    let turn = |session: Option<String>| {
        let mut req = http.post(&url).json(&json!({
            "model": "hermes-agent",
            "messages": [{"role": "user", "content": "remember: the quick brown fox jumps over the lazy dog"}],
        }));
        if let Some(id) = session {
            req = req.header("X-Hermes-Session-Id", id);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            if status != 200 {
                panic!("chat turn: {status} {}", r.text().await.unwrap_or_default());
            }
            let _ = r.bytes().await.unwrap();
        }
    };
    for _ in 0..SESSIONS {
        turn(None).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = gw.child.id();
    let db = gw.home.path().join("state.db");
    let (rss0, db0) = (rss_kib(pid), store_kib(&db));
    println!(
        "sessions memory: baseline RSS {:.2} MiB",
        rss0 as f64 / 1024.0
    );
    let mut made = 0;
    let steps: usize =
        std::env::var("SESSIONS_STEPS").map_or(5, |s| s.parse().expect("SESSIONS_STEPS: a number"));
    for step in 1..=steps {
        for _ in 0..SESSIONS {
            made += 1;
            turn(Some(format!("20261201_120000_{made:06x}"))).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss, size) = (rss_kib(pid), store_kib(&db));
        println!(
            "sessions memory: {} sessions: RSS {:.2} MiB (+{:.2} MiB, {:.2} MiB per 1,000), store +{:.2} MiB",
            step * SESSIONS,
            rss as f64 / 1024.0,
            (rss as f64 - rss0 as f64) / 1024.0,
            (rss as f64 - rss0 as f64) / 1024.0 / step as f64,
            (size as f64 - db0 as f64) / 1024.0,
        );
    }
    let listed: serde_json::Value = http
        .get(format!("{}/api/sessions", gw.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "sessions memory: /api/sessions answered {} bytes",
        listed.to_string().len()
    );
}

/// The store's size on disk: the database and its WAL.
fn store_kib(db: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    (size(db) + size(&db.with_extension("db-wal"))) / 1024
}
