//! What the operator's page reads besides the job API: `GET /api/connection` (where clients
//! go, never a secret), `GET /api/jobs/preview` (a schedule's next slots in `cron.timezone`)
//! and the `history` and `activity` frames of `/api/events` (the last hour per minute, fed
//! by turns and fires as they end; the recent drains, sign-ins, fires and run ends).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::support::{PATIENCE, TestApp, eventually, matching};

const TOKEN: &str = "tok-operator-page";

async fn get(app: &TestApp, url: String) -> (u16, Value) {
    let r = app
        .http
        .get(url)
        .header("X-Hermes-Session-Token", TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_connection_names_the_api_model_backend_and_key_but_never_the_key() {
    let key = "operator-page-api-key-not-to-be-shown";
    let app = TestApp::spawn(
        "gateway: {api_server: {model_name: ops-model}}\ncron: {timezone: Asia/Tokyo}",
        &[
            ("HERMES_DASHBOARD_SESSION_TOKEN", TOKEN),
            ("API_SERVER_KEY", key),
        ],
    )
    .await;
    let (status, c) = get(&app, format!("{}/api/connection", app.dash)).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["api_base_url"], format!("{}/v1", app.api));
    assert_eq!(
        (&c["model"], &c["backend"], &c["key_required"]),
        (&json!("ops-model"), &json!("echo"), &json!(true))
    );
    assert_eq!(c["cron_timezone"], "Asia/Tokyo");
    assert_eq!(c["upstream_model"], Value::Null);
    assert!(
        c["features"]
            .as_array()
            .unwrap()
            .contains(&json!("job_preview"))
    );
    assert!(!c.to_string().contains(key), "{c}");
    // The page's session is needed (it is not a public path).
    let r = app
        .http
        .get(format!("{}/api/connection", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_preview_lists_the_next_slots_in_the_cron_zone_and_refuses_what_create_would() {
    let app = TestApp::spawn(
        "cron: {timezone: Asia/Tokyo}",
        &[("HERMES_DASHBOARD_SESSION_TOKEN", TOKEN)],
    )
    .await;
    let (status, p) = get(
        &app,
        format!(
            "{}/api/jobs/preview?schedule=0%209%20*%20*%20*&count=3",
            app.dash
        ),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (&p["schedule"], &p["timezone"]),
        (&json!("0 9 * * *"), &json!("Asia/Tokyo"))
    );
    let slots = p["next_runs"].as_array().unwrap();
    assert_eq!(slots.len(), 3);
    for s in slots {
        // 09:00 in Tokyo (no DST) is 00:00 UTC.
        assert!(
            s["local"].as_str().unwrap().ends_with("T09:00:00+09:00"),
            "{s}"
        );
        assert!(
            s["at"].as_str().unwrap().ends_with("T00:00:00.000000Z"),
            "{s}"
        );
    }
    // The default is five; a one-shot has one; the API server answers it too.
    let (_, p) = get(
        &app,
        format!("{}/api/jobs/preview?schedule=every%2015m", app.dash),
    )
    .await;
    assert_eq!(p["next_runs"].as_array().unwrap().len(), 5);
    let (status, p) = get(
        &app,
        format!("{}/api/jobs/preview?schedule=in%2010m", app.api),
    )
    .await;
    assert_eq!((status, p["next_runs"].as_array().unwrap().len()), (200, 1));
    // Refusals name what is wrong; nothing was saved.
    for (query, fragment) in [
        ("schedule=every%205%20parsecs", "unknown unit"),
        ("schedule=", "schedule: required"),
        ("", "schedule: required"),
        ("schedule=every%201h&count=0", "count: must be from 1 to 20"),
        (
            "schedule=every%201h&count=21",
            "count: must be from 1 to 20",
        ),
        ("schedule=every%201h&count=many", "invalid query"),
    ] {
        let (status, body) = get(&app, format!("{}/api/jobs/preview?{query}", app.dash)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(fragment),
            "{query}: {body}"
        );
    }
    let (_, jobs) = get(&app, format!("{}/api/jobs", app.dash)).await;
    assert_eq!(jobs["jobs"], json!([]));
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("the socket is open")
            .unwrap();
        if let tungstenite::Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// The current (last) minute of a `history` frame.
fn this_minute(h: &Value) -> &Value {
    let minutes = h["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60, "{h}");
    &minutes[59]
}

/// The hour's total of `key.outcome` (a minute may roll over mid-test), and the peak in flight.
fn hour(h: &Value, key: &str, outcome: &str) -> (u64, u64) {
    let minutes = h["minutes"].as_array().unwrap();
    let total = minutes
        .iter()
        .filter_map(|m| m[key][outcome].as_u64())
        .sum();
    let peak = minutes
        .iter()
        .filter_map(|m| m["in_flight"].as_u64())
        .max()
        .unwrap_or(0);
    (total, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_socket_sends_the_hour_on_connect_and_as_turns_and_fires_end() {
    let app = TestApp::spawn(
        "agent: {echo: {delay_ms: 300}}",
        &[("HERMES_DASHBOARD_SESSION_TOKEN", TOKEN)],
    )
    .await;
    let url = format!(
        "{}/api/events?token={TOKEN}",
        app.dash.replacen("http://", "ws://", 1)
    );
    let (mut events, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // The status first, as before; the hour second, empty.
    assert_eq!(next_json(&mut events).await["type"], "status");
    let first = next_json(&mut events).await;
    assert_eq!(
        (&first["type"], &first["minute_seconds"]),
        (&json!("history"), &json!(60))
    );
    assert_eq!(this_minute(&first)["turns"], json!({}));
    // A turn and a refused fire (no token) show up in the current minute.
    let (status, _, _) = app.chat("count me").await;
    assert_eq!(status, 200);
    let r = app
        .http
        .post(format!("{}/api/cron/fire", app.api))
        .json(&json!({"job_id": "0123456789ab"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let seen = eventually(
        PATIENCE,
        "a history frame with the turn and the fire",
        async || {
            let v = next_json(&mut events).await;
            matching(v, |v| {
                v["type"] == "history"
                    && hour(v, "turns", "completed").0 == 1
                    && hour(v, "fires", "unauthorized").0 == 1
            })
        },
    )
    .await;
    assert_eq!(
        hour(&seen, "turns", "completed").1,
        1,
        "the turn's peak: {seen}"
    );
    assert_eq!(seen["in_flight"], 0);
}

/// The frames a fresh `/api/events` socket opens with: status, history, activity.
async fn opening_activity(dash: &str) -> Vec<Value> {
    let url = format!(
        "{}/api/events?token={TOKEN}",
        dash.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "status");
    assert_eq!(next_json(&mut socket).await["type"], "history");
    let activity = next_json(&mut socket).await;
    assert_eq!(activity["type"], "activity", "{activity}");
    activity["recent"].as_array().unwrap().clone()
}

/// What each kept activity event says: the audit `event`, or `run <status>`.
fn said(recent: &[Value]) -> Vec<String> {
    recent
        .iter()
        .map(|e| match e["type"].as_str() {
            Some("audit") => e["event"].as_str().unwrap().to_owned(),
            Some("run") => format!("run {}", e["status"].as_str().unwrap()),
            other => panic!("{other:?} in the activity: {e}"),
        })
        .collect()
}

/// A page opened after the fact still sees the drains, fires and run ends before it (and
/// not the ticket and token noise); after a restart of the real binary, the audit log's
/// part of it is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_opened_later_gets_the_recent_activity_and_a_restart_keeps_the_audited_part() {
    let home = tempfile::tempdir().unwrap();
    let secret = crate::support::strong_secret();
    let env = [
        ("HERMES_DASHBOARD_SESSION_TOKEN", TOKEN),
        ("HERMES_DASHBOARD_DRAIN_SECRET", secret.as_str()),
    ];
    let mut proc = crate::support::Proc::start(home.path(), "", &env);
    proc.wait_running().await;
    let http = reqwest::Client::new();
    for action in ["drain", "cancel"] {
        let r = http
            .post(format!("{}/api/gateway/drain", proc.dash))
            .bearer_auth(&secret)
            .json(&json!({"action": action}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .post(format!("{}/api/cron/fire", proc.api))
        .json(&json!({"job_id": "0123456789ab"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let made: Value = http
        .post(format!("{}/api/jobs", proc.api))
        .json(&json!({"name": "later", "schedule": "every 6h", "prompt": "p"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["job"]["id"].as_str().unwrap().to_owned();
    let r = http
        .post(format!("{}/api/jobs/{id}/run", proc.api))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let before = eventually(PATIENCE, "the run's end among the activity", async || {
        let recent = said(&opening_activity(&proc.dash).await);
        if recent.last().map(String::as_str) == Some("run completed") {
            Ok(recent)
        } else {
            Err(format!("{recent:?}"))
        }
    })
    .await;
    assert_eq!(
        before,
        [
            "drain_begin",
            "drain_cancel",
            "cron_fire_rejected",
            "run completed"
        ],
        "in order, tickets and token checks left out"
    );
    proc.signal("TERM");
    assert_eq!(proc.wait_exit().await, 0);
    let proc = crate::support::Proc::start(home.path(), "", &env);
    proc.wait_running().await;
    assert_eq!(
        said(&opening_activity(&proc.dash).await),
        ["drain_begin", "drain_cancel", "cron_fire_rejected"],
        "the audited activity outlives the restart"
    );
}
