//! Turns: the latency added over an upstream, echo throughput, streaming memory (issue 3).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

pub async fn fake_upstream() -> String {
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
pub async fn upstream_overhead() {
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
pub async fn echo_throughput() {
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
pub async fn stream_memory() {
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
