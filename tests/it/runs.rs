//! Asynchronous runs (SPEC §11 "Runs"): a run outlives its clients, a stop ends it (and its
//! agent) within 5 s, a drain waits for it and refuses new ones, a shutdown's deadline
//! records it interrupted, the 11th in flight is refused, a late subscriber gets every
//! event, and a run started on one replica is read and stopped on another.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hermes_gateway::store::{AgentRun, AgentRunStatus, RunEnd, RunProgress, Synced};
use serde_json::{Value, json};

use crate::backends::{agent, assert_gone, wait_for_file};
use crate::support::{
    PATIENCE, Proc, TestApp, TestDatabase, both_stores, eventually, strong_secret,
};

/// The run API of one gateway.
struct Runs<'a> {
    http: reqwest::Client,
    api: &'a str,
}

impl<'a> Runs<'a> {
    fn of(api: &'a str) -> Self {
        Self {
            http: reqwest::Client::new(),
            api,
        }
    }

    async fn post(
        &self,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.post(format!("{}{path}", self.api));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    /// Starts a run with `input`; its id (a 202 is asserted).
    async fn start(&self, input: &str) -> String {
        let (status, _, body) = self.post("/v1/runs", Some(json!({"input": input}))).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "started", "{body}");
        body["run_id"].as_str().unwrap().to_owned()
    }

    async fn get(&self, id: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/v1/runs/{id}", self.api))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// Polls the run until `pred` holds; that view.
    async fn wait(&self, id: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(within, &format!("run {id} to match"), async || {
            let (status, v) = self.get(id).await;
            if status == 200 && pred(&v) {
                Ok(v)
            } else {
                Err(format!("{status} {v}"))
            }
        })
        .await
    }

    async fn stop(&self, id: &str) -> (u16, Value) {
        let (status, _, body) = self.post(&format!("/v1/runs/{id}/stop"), None).await;
        (status, body)
    }

    /// The event stream, open.
    async fn events(&self, id: &str) -> reqwest::Response {
        let resp = self
            .http
            .get(format!("{}/v1/runs/{id}/events", self.api))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        resp
    }
}

/// Reads `resp` until its text so far contains `needle` (or the stream ends); that text.
async fn read_until(resp: &mut reqwest::Response, mut seen: String, needle: &str) -> String {
    let read = async {
        while !seen.contains(needle) {
            match resp.chunk().await.unwrap() {
                Some(c) => seen.push_str(&String::from_utf8_lossy(&c)),
                None => break,
            }
        }
        seen
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("the event stream did not bring {needle:?} in time"))
}

/// The JSON of every complete `data:` frame of an event stream's text.
fn events_of(text: &str) -> Vec<Value> {
    let complete = text.rfind("\n\n").map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// The text of every `message.delta`, joined.
fn deltas(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["event"] == "message.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect()
}

/// An agent that says `started`, waits for the file `go` in `dir`, then says ` done`.
fn waiting_agent(dir: &Path) -> String {
    let d = dir.display();
    agent(
        dir,
        "agent.sh",
        &format!(
            "cat >/dev/null; printf started; while [ ! -e {d}/go ]; do sleep 0.02; done; printf ' done'"
        ),
    )
}

/// An agent that records its pid, says `started` and sleeps a minute.
fn sleeping_agent(dir: &Path) -> String {
    let d = dir.display();
    agent(
        dir,
        "agent.sh",
        &format!("cat >/dev/null; echo $$ > {d}/agent.pid; printf started; sleep 60"),
    )
}

fn command_yaml(argv: &str) -> String {
    format!("agent: {{backend: command, command: {{argv: [{argv:?}]}}}}")
}

#[tokio::test]
async fn a_run_outlives_the_client_that_started_it_and_the_one_watching_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(&command_yaml(&waiting_agent(dir.path())), &[]).await;
    // Started by a client that then goes away.
    let id = Runs::of(&app.api).start("hello").await;
    // A watcher reads the agent's first words and hangs up.
    {
        let watcher = Runs::of(&app.api);
        let mut stream = watcher.events(&id).await;
        let seen = read_until(&mut stream, String::new(), "started").await;
        assert!(
            events_of(&seen).iter().all(|e| e["run_id"] == id.as_str()),
            "{seen}"
        );
    }
    let runs = Runs::of(&app.api);
    let (_, running) = runs.get(&id).await;
    assert_eq!(running["status"], "running", "{running}");
    assert_eq!(app.status().await["active_agents"], 1);
    std::fs::write(dir.path().join("go"), "").unwrap();
    let done = runs
        .wait(&id, PATIENCE, |r| r["status"] == "completed")
        .await;
    assert_eq!(done["object"], "hermes.run");
    assert_eq!(done["output"], "started done", "{done}");
    assert_eq!(done["last_event"], "run.completed", "{done}");
    assert!(done["updated_at"].as_f64().unwrap() >= done["created_at"].as_f64().unwrap());
    app.wait_until(|s| s["active_agents"] == 0).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hermes_turns_total{outcome=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hermes_api_requests_total{route=\"POST /v1/runs\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn stop_ends_a_long_command_run_within_5_seconds_and_kills_its_agent() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(&command_yaml(&sleeping_agent(dir.path())), &[]).await;
    let runs = Runs::of(&app.api);
    let id = runs.start("work for a minute").await;
    let pid = wait_for_file(&dir.path().join("agent.pid")).await;
    runs.wait(&id, PATIENCE, |r| r["last_event"] == "message.delta")
        .await;
    let asked = std::time::Instant::now();
    let (status, body) = runs.stop(&id).await;
    assert_eq!(
        (status, body),
        (200, json!({"run_id": id, "status": "stopping"}))
    );
    let stopped = runs
        .wait(&id, Duration::from_secs(5), |r| r["status"] == "cancelled")
        .await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        (&stopped["output"], &stopped["last_event"]),
        (&json!("started"), &json!("run.stopped"))
    );
    assert_gone(&pid).await;
    app.wait_until(|s| s["active_agents"] == 0).await;
    // Its events end with the stop.
    let text = runs.events(&id).await.text().await.unwrap();
    let events = events_of(&text);
    let last = events.last().unwrap();
    assert_eq!(
        (&last["event"], &last["status"]),
        (&json!("run.stopped"), &json!("cancelled")),
        "{text}"
    );
    assert!(text.ends_with(": stream closed\n\n"), "{text}");
    // A run that has ended cannot be stopped again; an unknown one is not found.
    let (status, body) = runs.stop(&id).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("run_not_running")),
        "{body}"
    );
    for (status, body) in [runs.stop("run_nope").await, runs.get("run_nope").await] {
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &json!("run_not_found")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_drain_waits_for_a_run_and_refuses_a_new_one_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let secret = strong_secret();
    let app = TestApp::spawn(
        &command_yaml(&waiting_agent(dir.path())),
        &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)],
    )
    .await;
    let runs = Runs::of(&app.api);
    let id = runs.start("hello").await;
    app.wait_until(|s| s["active_agents"] == 1).await;
    let (status, _) = app.drain_post(Some(&secret), r#"{"action":"drain"}"#).await;
    assert_eq!(status, 200);
    let status = app.wait_until(|s| s["gateway_state"] == "draining").await;
    assert_eq!(status["active_agents"], 1, "{status}");
    let (code, headers, body) = runs
        .post("/v1/runs", Some(json!({"input": "another"})))
        .await;
    assert_eq!(
        (code, &body["error"]["code"]),
        (503, &json!("gateway_draining")),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"));
    // The drain never interrupts the run: it completes, and then the gateway is idle.
    assert_eq!(runs.get(&id).await.1["status"], "running");
    std::fs::write(dir.path().join("go"), "").unwrap();
    let done = runs
        .wait(&id, PATIENCE, |r| r["status"] == "completed")
        .await;
    assert_eq!(done["output"], "started done");
    app.wait_until(|s| s["active_agents"] == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_the_deadline_records_a_run_interrupted() {
    let home = tempfile::tempdir().unwrap();
    let argv = sleeping_agent(home.path());
    let yaml = format!(
        "agent: {{backend: command, restart_drain_timeout: 0.5, command: {{argv: [{argv:?}]}}}}"
    );
    let mut p = Proc::start(home.path(), &yaml, &[]);
    p.wait_running().await;
    let id = Runs::of(&p.api).start("work for a minute").await;
    let pid = wait_for_file(&home.path().join("agent.pid")).await;
    Runs::of(&p.api)
        .wait(&id, PATIENCE, |r| r["last_event"] == "message.delta")
        .await;
    p.wait_status(|s| s["active_agents"] == 1).await;
    p.signal("TERM");
    assert_eq!(p.wait_exit().await, 0, "{}", p.stderr());
    assert_gone(&pid).await;
    // The next process on the same home reads it as the shutdown left it.
    let q = Proc::start(home.path(), &yaml, &[]);
    q.wait_running().await;
    let runs = Runs::of(&q.api);
    let (status, run) = runs.get(&id).await;
    assert_eq!(
        (status, &run["status"]),
        (200, &json!("interrupted")),
        "{run}"
    );
    assert_eq!(run["output"], "started", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("shut down"),
        "{run}"
    );
    let text = runs.events(&id).await.text().await.unwrap();
    let last = events_of(&text).pop().unwrap();
    assert_eq!(
        (&last["event"], &last["status"]),
        (&json!("run.failed"), &json!("interrupted")),
        "{text}"
    );
}

#[tokio::test]
async fn the_eleventh_run_in_flight_gets_429() {
    // Each echo run says its one word after a minute: all ten stay in flight.
    let app = TestApp::spawn("agent: {echo: {delay_ms: 60000}}", &[]).await;
    let runs = Runs::of(&app.api);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(runs.start(&format!("run{i}")).await);
    }
    let (status, headers, body) = runs
        .post("/v1/runs", Some(json!({"input": "one too many"})))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["error"],
        json!({"message": "Too many concurrent runs (max 10)", "type": "rate_limit_error", "code": "rate_limit_exceeded"})
    );
    assert!(headers.contains_key("retry-after"));
    assert_eq!(app.status().await["active_agents"], 10);
    // A run that ends frees its place.
    assert_eq!(runs.stop(&ids[0]).await.0, 200);
    runs.wait(&ids[0], PATIENCE, |r| r["status"] == "cancelled")
        .await;
    eventually(PATIENCE, "a new run to be admitted", async || {
        let (status, _, body) = runs.post("/v1/runs", Some(json!({"input": "next"}))).await;
        if status == 202 {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "hermes_api_requests_total{route=\"POST /v1/runs\",outcome=\"rate_limited\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_late_subscriber_gets_every_event_from_the_first() {
    // A run that has ended: its whole log, from the store.
    let app = TestApp::spawn("", &[]).await;
    let runs = Runs::of(&app.api);
    let id = runs.start("alpha beta gamma").await;
    runs.wait(&id, PATIENCE, |r| r["status"] == "completed")
        .await;
    let text = runs.events(&id).await.text().await.unwrap();
    assert!(text.ends_with(": stream closed\n\n"), "{text}");
    let events = events_of(&text);
    assert_eq!(deltas(&events), "alpha beta gamma", "{text}");
    for e in &events {
        assert_eq!(e["run_id"], id.as_str(), "{e}");
        assert!(e["timestamp"].as_f64().is_some(), "{e}");
    }
    let last = events.last().unwrap();
    assert_eq!(
        (&last["event"], &last["output"]),
        (&json!("run.completed"), &json!("alpha beta gamma"))
    );
    assert_eq!(last["usage"]["output_tokens"], 3, "{last}");
    drop(app);

    // A run still going: what it said so far, then the rest as it comes.
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(&command_yaml(&waiting_agent(dir.path())), &[]).await;
    let runs = Runs::of(&app.api);
    let id = runs.start("hello").await;
    runs.wait(&id, PATIENCE, |r| r["last_event"] == "message.delta")
        .await;
    let mut stream = runs.events(&id).await;
    let seen = read_until(&mut stream, String::new(), "started").await;
    std::fs::write(dir.path().join("go"), "").unwrap();
    let text = read_until(&mut stream, seen, ": stream closed").await;
    let events = events_of(&text);
    assert_eq!(deltas(&events), "started done", "{text}");
    assert_eq!(events.last().unwrap()["event"], "run.completed", "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_on_one_replica_is_read_and_stopped_on_another() {
    let db = TestDatabase::create().await;
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let argv = sleeping_agent(home_a.path());
    let yaml = command_yaml(&argv);
    let env = [("HERMES_DATABASE_URL", db.url())];
    let a = Proc::start(home_a.path(), &yaml, &env);
    let b = Proc::start(home_b.path(), &yaml, &env);
    a.wait_running().await;
    b.wait_running().await;
    let id = Runs::of(&a.api).start("work for a minute").await;
    let pid = wait_for_file(&home_a.path().join("agent.pid")).await;
    // B reads it, and its events, from the store.
    let on_b = Runs::of(&b.api);
    let run = on_b
        .wait(&id, PATIENCE, |r| r["last_event"] == "message.delta")
        .await;
    assert_eq!(run["status"], "running", "{run}");
    let mut stream = on_b.events(&id).await;
    let seen = read_until(&mut stream, String::new(), "started").await;
    // A stop asked on B stops the run on A, within 5 s.
    let asked = std::time::Instant::now();
    assert_eq!(
        on_b.stop(&id).await,
        (200, json!({"run_id": id, "status": "stopping"}))
    );
    let stopped = on_b
        .wait(&id, Duration::from_secs(5), |r| r["status"] == "cancelled")
        .await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(stopped["output"], "started", "{stopped}");
    assert_gone(&pid).await;
    a.wait_status(|s| s["active_agents"] == 0).await;
    // B's open stream follows it to its end.
    let text = read_until(&mut stream, seen, ": stream closed").await;
    let last = events_of(&text).pop().unwrap();
    assert_eq!(last["event"], "run.stopped", "{text}");
    assert_eq!(deltas(&events_of(&text)), "started", "{text}");
}

#[tokio::test]
async fn the_dashboard_live_socket_shows_a_run_start_and_its_end() {
    use futures_util::StreamExt;
    let token = "runs-test-session-token";
    let app = TestApp::spawn("", &[("HERMES_DASHBOARD_SESSION_TOKEN", token)]).await;
    let url = format!(
        "{}/api/events?token={token}",
        app.dash.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut next = async || loop {
        let frame = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a frame in time");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = frame.unwrap().unwrap() {
            return serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    // The status comes first, once the socket follows the live events.
    assert_eq!(next().await["type"], "status");
    let id = Runs::of(&app.api).start("hello").await;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|s| s != "completed") {
        let v = next().await;
        if v["type"] == "agent_run" {
            assert_eq!(
                (&v["run_id"], &v["session_id"]),
                (&json!(id), &json!(id)),
                "{v}"
            );
            seen.push(v["status"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen, ["running", "completed"]);
}

// ---- the store's part: writes by the owner only, once; expiry; pruning -----------------

fn row(id: &str, created_at_ms: i64, lease_until_ms: i64) -> AgentRun {
    AgentRun {
        id: id.into(),
        session_id: "s".into(),
        model: "m".into(),
        status: AgentRunStatus::Running,
        created_at_ms,
        updated_at_ms: created_at_ms,
        last_event: None,
        output: None,
        error: None,
        lease_until_ms,
        stop_requested: false,
    }
}

fn progress<'a>(
    owner: &'a str,
    first_seq: i64,
    events: &'a [Arc<str>],
    last: &'a str,
) -> RunProgress<'a> {
    RunProgress {
        id: "run_a",
        owner,
        first_seq,
        events,
        last_event: Some(last),
        updated_at_ms: 2_000,
        lease_until_ms: 40_000,
    }
}

#[tokio::test]
async fn the_run_store_writes_a_run_only_for_its_owner_once_and_keeps_the_newest() {
    let (stores, _dir, _db) = both_stores().await;
    for store in &stores {
        let kind = store.kind();
        store
            .insert_agent_run(&row("run_a", 1_000, 31_000), "me", 1_000)
            .await
            .unwrap();
        let two: Vec<Arc<str>> = vec![Arc::from(r#"{"n":0}"#), Arc::from(r#"{"n":1}"#)];
        let held = |stop_requested| Synced::Held { stop_requested };
        assert_eq!(
            store
                .sync_agent_run(&progress("me", 0, &two, "message.delta"))
                .await
                .unwrap(),
            held(false),
            "{kind}"
        );
        // A sync retried after a lost answer adds nothing twice; another owner writes nothing.
        assert_eq!(
            store
                .sync_agent_run(&progress("me", 0, &two, "message.delta"))
                .await
                .unwrap(),
            held(false),
            "{kind}"
        );
        assert_eq!(
            store
                .sync_agent_run(&progress("other", 2, &[], "x"))
                .await
                .unwrap(),
            Synced::Lost,
            "{kind}"
        );
        // A stop asked elsewhere reaches the owner at its next sync.
        assert!(
            store.request_agent_run_stop("run_a").await.unwrap(),
            "{kind}"
        );
        assert_eq!(
            store
                .sync_agent_run(&progress("me", 2, &[], "message.delta"))
                .await
                .unwrap(),
            held(true),
            "{kind}"
        );
        // Its lease (renewed to 40 s) holds: it is not found dead.
        let never = |_: i64| -> String { unreachable!("a live run is not expired") };
        assert!(
            !store
                .expire_agent_run("run_a", 39_999, "dead", "run.failed", never)
                .await
                .unwrap()
        );
        let last: Vec<Arc<str>> = vec![Arc::from(r#"{"n":2}"#)];
        let end = RunEnd {
            progress: progress("me", 2, &last, "run.stopped"),
            status: AgentRunStatus::Cancelled,
            output: "out",
            error: None,
        };
        assert!(store.finish_agent_run(&end).await.unwrap(), "{kind}");
        assert!(
            !store.finish_agent_run(&end).await.unwrap(),
            "{kind}: ended twice"
        );
        assert!(
            !store.request_agent_run_stop("run_a").await.unwrap(),
            "{kind}"
        );
        let a = store.agent_run("run_a").await.unwrap().unwrap();
        assert_eq!(
            (
                a.status,
                a.output.as_deref(),
                a.last_event.as_deref(),
                a.updated_at_ms
            ),
            (
                AgentRunStatus::Cancelled,
                Some("out"),
                Some("run.stopped"),
                2_000
            ),
            "{kind}"
        );
        let seqs: Vec<i64> = store
            .agent_run_events("run_a", 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, [0, 1, 2], "{kind}");
        assert_eq!(
            store.agent_run_events("run_a", 1, 1).await.unwrap(),
            [(1, r#"{"n":1}"#.to_owned())],
            "{kind}"
        );

        // A run whose lease ran out is recorded interrupted once, its last event after the others.
        store
            .insert_agent_run(&row("run_b", 1_001, 5_000), "gone", 1_000)
            .await
            .unwrap();
        let event = |seq: i64| format!(r#"{{"seq":{seq}}}"#);
        assert!(
            store
                .expire_agent_run("run_b", 6_000, "dead", "run.failed", event)
                .await
                .unwrap(),
            "{kind}"
        );
        assert!(
            !store
                .expire_agent_run("run_b", 6_000, "dead", "run.failed", event)
                .await
                .unwrap(),
            "{kind}"
        );
        let b = store.agent_run("run_b").await.unwrap().unwrap();
        assert_eq!(
            (
                b.status,
                b.error.as_deref(),
                b.last_event.as_deref(),
                b.output.as_deref()
            ),
            (
                AgentRunStatus::Interrupted,
                Some("dead"),
                Some("run.failed"),
                Some("")
            ),
            "{kind}"
        );
        assert_eq!(
            store.agent_run_events("run_b", 0, 10).await.unwrap(),
            [(0, r#"{"seq":0}"#.to_owned())]
        );

        // Keeping the newest one: the older ended runs go, with their events; running ones stay.
        store
            .insert_agent_run(&row("run_r", 900, 99_000), "me", 1_000)
            .await
            .unwrap();
        store
            .insert_agent_run(&row("run_c", 1_002, 99_000), "me", 1)
            .await
            .unwrap();
        for (id, kept) in [
            ("run_a", false),
            ("run_b", false),
            ("run_r", true),
            ("run_c", true),
        ] {
            assert_eq!(
                store.agent_run(id).await.unwrap().is_some(),
                kept,
                "{kind}: {id}"
            );
        }
        assert!(
            store
                .agent_run_events("run_a", 0, 10)
                .await
                .unwrap()
                .is_empty(),
            "{kind}"
        );
        assert!(store.agent_run("run_nope").await.unwrap().is_none());
    }
}
