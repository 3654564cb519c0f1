//! Safe drain end to end: concurrent turns, the endpoint, the marker and the state file.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::support::{PATIENCE, TestApp, eventually, matching, strong_secret};

/// 100 slow turns (half streaming); a drain mid-way refuses new turns while every
/// in-flight turn completes with its full text and the count falls monotonically to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_mid_way_through_100_turns_loses_nothing() {
    let secret = strong_secret();
    let app = Arc::new(
        TestApp::spawn(
            "agent: {echo: {delay_ms: 1500}}",
            &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)],
        )
        .await,
    );
    let mut turns = Vec::new();
    for i in 0..100 {
        let app = app.clone();
        turns.push(tokio::spawn(async move {
            let text = format!("turn {i} says hello to the gateway");
            if i % 2 == 0 {
                let (status, content, done) = app.chat_stream(&text).await;
                (status, content, done, text)
            } else {
                let (status, _, v) = app.chat(&text).await;
                let content = v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                (status, content, true, text)
            }
        }));
    }
    app.wait_until(|s| s["active_agents"] == 100).await;
    let (status, body) = app.drain_post(Some(&secret), r#"{"action":"drain"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["action"], "drain");
    assert_eq!(body["draining"], true);
    assert!(body["requested_at"].as_str().unwrap().ends_with('Z'));

    // New turns are refused with 503 gateway_draining and Retry-After, streaming or not.
    let (status, headers, v) = app.chat("late").await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["code"], "gateway_draining");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    let (status, _, _) = app.chat_stream("late").await;
    assert_eq!(status, 503);

    // The in-flight count only falls, down to 0.
    let mut last = u64::MAX;
    eventually(PATIENCE, "the in-flight count to fall to 0", async || {
        let s = app.status().await;
        assert_eq!(s["gateway_state"], "draining");
        assert_eq!(s["gateway_drainable"], false);
        let n = s["active_agents"].as_u64().unwrap();
        assert!(n <= last, "active_agents rose from {last} to {n}");
        last = n;
        matching(s, |_| n == 0)
    })
    .await;
    for t in turns {
        let (status, content, done, text) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(content, text, "an in-flight turn lost text");
        assert!(done, "a stream ended without [DONE]");
    }

    let (status, body) = app
        .drain_post(Some(&secret), r#"{"action":"cancel"}"#)
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"ok": true, "action": "cancel", "was_draining": true})
        )
    );
    assert_eq!(app.status().await["gateway_state"], "running");
    assert_eq!(app.chat("back").await.0, 200);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hermes_turns_total{outcome=\"completed\"} 101"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hermes_turns_total{outcome=\"refused\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn endpoint_shapes_and_idempotence() {
    let secret = strong_secret();
    let app = TestApp::spawn("", &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)]).await;
    let cancel = |was| json!({"ok": true, "action": "cancel", "was_draining": was});
    assert_eq!(
        app.drain_post(Some(&secret), r#"{"action":"cancel"}"#)
            .await,
        (200, cancel(false))
    );
    for body in ["", "not json", "{}", r#"{"action":"  DRAIN "}"#] {
        let (status, v) = app.drain_post(Some(&secret), body).await;
        assert_eq!(
            (status, v["action"].as_str()),
            (200, Some("drain")),
            "{body:?}"
        );
    }
    assert_eq!(
        app.drain_post(Some(&secret), r#"{"action":"Cancel"}"#)
            .await,
        (200, cancel(true))
    );
    assert_eq!(
        app.drain_post(Some(&secret), r#"{"action":"cancel"}"#)
            .await,
        (200, cancel(false))
    );
    let (status, v) = app
        .drain_post(Some(&secret), r#"{"action":"explode"}"#)
        .await;
    assert_eq!(status, 400);
    assert!(v["detail"].as_str().unwrap().contains("explode"), "{v}");
    assert_eq!(app.status().await["gateway_state"], "running");
}

#[tokio::test]
async fn status_and_drain_detail_fields() {
    let secret = strong_secret();
    let app = TestApp::spawn(
        "agent: {echo: {delay_ms: 800}, restart_drain_timeout: 12}",
        &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)],
    )
    .await;
    let s = app.status().await;
    for key in [
        "version",
        "gateway_running",
        "gateway_state",
        "active_agents",
        "gateway_busy",
        "gateway_drainable",
        "restart_drain_timeout",
        "active_sessions",
        "auth_required",
        "auth_providers",
        "gateway_updated_at",
    ] {
        assert!(s.get(key).is_some(), "{key} missing from {s}");
    }
    assert_eq!(
        (
            s["gateway_running"].clone(),
            s["gateway_busy"].clone(),
            s["gateway_drainable"].clone()
        ),
        (json!(true), json!(false), json!(true))
    );
    assert_eq!(s["restart_drain_timeout"], 12.0);
    let app = Arc::new(app);
    let a2 = app.clone();
    let sent = Instant::now();
    let turn = tokio::spawn(async move { a2.chat("slow one").await });
    let s = app.wait_until(|s| s["active_agents"] == 1).await;
    // The turn was admitted after `sent` and before `in_flight`.
    let in_flight = Instant::now();
    assert_eq!(
        (s["gateway_busy"].clone(), s["active_sessions"].clone()),
        (json!(true), json!(1))
    );
    // Status polls never count.
    for _ in 0..20 {
        assert_eq!(app.status().await["active_agents"], 1);
    }
    app.drain_post(Some(&secret), "").await;
    // The oldest turn's age, read until it is past 0.15 s: each reading lies between the
    // time since the turn was seen in flight and the time since it was sent (±1 ms of
    // rounding).
    let d = eventually(PATIENCE, "the turn to be 0.15 s old", async || {
        let not_before = in_flight.elapsed();
        let d: Value = app
            .http
            .get(format!("{}/api/gateway/drain", app.dash))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let not_after = sent.elapsed();
        let age = d["oldest_active_seconds"].as_f64().unwrap();
        assert!(
            age + 0.002 >= not_before.as_secs_f64() && age <= not_after.as_secs_f64() + 0.002,
            "age {age} s outside {not_before:?}..{not_after:?}: {d}"
        );
        matching(d, |_| age >= 0.15)
    })
    .await;
    assert_eq!(d["draining"], true);
    assert_eq!(d["principal"], "drain-control");
    assert_eq!(d["active_agents"], 1);
    assert_eq!(d["gateway_state"], "draining");
    assert!(d["oldest_active_seconds"].as_f64().unwrap() >= 0.15, "{d}");
    assert!(d["requested_at"].as_str().is_some());
    assert_eq!(turn.await.unwrap().0, 200);
    // gateway_state.json mirrors the record and keeps foreign keys (merge-write). The note
    // is added once the mirror has written the last change (a write in flight would
    // replace it, as it would any concurrent writer's).
    let path = app.home().join("gateway_state.json");
    let mut doc = wait_file(&path, |d| {
        d["active_agents"] == 0 && d["gateway_state"] == "draining"
    })
    .await;
    doc["operator_note"] = json!("keep me");
    std::fs::write(&path, doc.to_string()).unwrap();
    app.drain_post(Some(&secret), r#"{"action":"cancel"}"#)
        .await;
    let doc = wait_file(&path, |d| d["gateway_state"] == "running").await;
    assert_eq!(doc["operator_note"], "keep me");
    assert_eq!(doc["pid"], std::process::id());
    assert!(doc["start_time"].is_string() && doc["updated_at"].is_string());
    let mut app = Arc::into_inner(app).unwrap();
    assert_eq!(app.stop().await, hermes_gateway::app::Exit::Stopped);
    let doc: Value =
        serde_json::from_slice(&std::fs::read(app.home().join("gateway_state.json")).unwrap())
            .unwrap();
    assert_eq!(doc["gateway_state"], "stopped");
    assert_eq!(doc["gateway_running"], false);
}

/// Polls the JSON file at `path` until it parses and satisfies `pred`.
async fn wait_file(path: &std::path::Path, pred: impl Fn(&Value) -> bool) -> Value {
    let what = format!("{} to match", path.display());
    eventually(PATIENCE, &what, async || -> Result<Value, String> {
        let text = std::fs::read(path).map_err(|e| e.to_string())?;
        let doc: Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
        matching(doc, &pred).map_err(|d| d.to_string())
    })
    .await
}

#[tokio::test]
async fn a_marker_written_by_another_process_drains_and_its_removal_undrains() {
    let app = TestApp::spawn("", &[]).await;
    let marker = app.home().join(".drain_request.json");
    std::fs::write(
        &marker,
        r#"{"action":"drain","requested_at":"2099-01-01T00:00:00Z","principal":"operator"}"#,
    )
    .unwrap();
    let s = app.wait_until(|s| s["gateway_state"] == "draining").await;
    assert_eq!(s["gateway_drainable"], false);
    let (status, _, v) = app.chat("x").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("gateway_draining"))
    );
    std::fs::remove_file(&marker).unwrap();
    app.wait_until(|s| s["gateway_state"] == "running").await;
    assert_eq!(app.chat("x").await.0, 200);
    // The gate flips a moment before the audit line is written.
    let events = eventually(PATIENCE, "both audit records", async || {
        matching(app.audit_events(), |e| e.len() >= 2).map_err(|e| json!(e))
    })
    .await;
    assert_eq!(events[0]["event"], "drain_begin");
    assert_eq!(events[0]["principal"], "operator", "{events:?}");
    assert_eq!(events[0]["source"], "marker");
    assert_eq!(events[1]["event"], "drain_cancel");
}

#[tokio::test]
async fn a_corrupt_or_empty_marker_still_drains() {
    for body in ["{half a marker", ""] {
        let app = TestApp::spawn("", &[]).await;
        std::fs::write(app.home().join(".drain_request.json"), body).unwrap();
        app.wait_until(|s| s["gateway_state"] == "draining").await;
        assert_eq!(app.chat("x").await.0, 503);
    }
}

#[tokio::test]
async fn a_marker_found_at_startup_is_in_force_before_the_first_turn() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join(".drain_request.json"), "corrupt").unwrap();
    let app = TestApp::spawn_in(home, "", &[]).await;
    assert_eq!(app.chat("first").await.0, 503);
    assert_eq!(app.status().await["gateway_state"], "draining");
}

#[tokio::test]
async fn an_expired_marker_is_ignored_removed_and_audited() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".drain_request.json"),
        r#"{"action":"drain","requested_at":"2020-01-01T00:00:00Z","principal":"forgotten"}"#,
    )
    .unwrap();
    let app = TestApp::spawn_in(home, "drain: {marker_max_age_seconds: 60}", &[]).await;
    assert_eq!(app.status().await["gateway_state"], "running");
    assert_eq!(app.chat("x").await.0, 200);
    assert!(!app.home().join(".drain_request.json").exists());
    let expired = app
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "drain_expired")
        .expect("drain_expired audited");
    assert_eq!(expired["principal"], "forgotten");
}
