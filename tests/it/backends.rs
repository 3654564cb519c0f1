//! The `command` backend with real subprocess agents and the `openai` backend against a
//! fake upstream (the only fake: it stands in for the LLM server).

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{
    PATIENCE, Proc, TestApp, TestDatabase, cli, eventually, parse_sse, strong_secret,
};

/// Writes an executable shell script agent into `dir`.
pub(crate) fn agent(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&path)
        .status()
        .unwrap();
    path.display().to_string()
}

async fn command_app(script: &str, timeout_seconds: u64) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let argv = agent(dir.path(), "agent.sh", script);
    let yaml = format!(
        "agent: {{backend: command, command: {{argv: [{argv:?}], timeout_seconds: {timeout_seconds}}}}}"
    );
    (TestApp::spawn(&yaml, &[]).await, dir)
}

async fn chat_body(app: &TestApp, body: Value) -> (u16, Value) {
    let resp = app
        .http
        .post(format!("{}/v1/chat/completions", app.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn pid_alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{}", pid.trim())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn command_agent_gets_the_protocol_json_and_its_stdout_is_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let argv = agent(
        dir.path(),
        "agent.sh",
        &format!(
            "cat > {}/stdin.json; printf 'hello '; printf 'from agent'",
            dir.path().display()
        ),
    );
    let app = TestApp::spawn(
        &format!("agent: {{backend: command, command: {{argv: [{argv:?}]}}}}"),
        &[],
    )
    .await;
    let (status, body) = chat_body(
        &app,
        json!({"model": "m1", "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "hello from agent");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let input: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("stdin.json")).unwrap())
            .unwrap();
    assert_eq!(
        input["messages"],
        json!([{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(input["model"], "m1");
    assert!(input["session_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(input["turn_id"], body["id"]);
}

#[tokio::test]
async fn command_agent_streams_as_it_writes() {
    let (app, _dir) = command_app(
        "cat >/dev/null; printf one; sleep 0.2; printf two; sleep 0.2; printf three",
        10,
    )
    .await;
    let mut resp = app
        .http
        .post(format!("{}/v1/chat/completions", app.api))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let mut frames = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        frames.push(String::from_utf8_lossy(&c).into_owned());
    }
    let all = frames.concat();
    assert_eq!(parse_sse(&all), ("onetwothree".to_owned(), true));
    assert!(
        frames.len() >= 4,
        "expected the reply in several chunks: {frames:?}"
    );
}

#[tokio::test]
async fn command_failures_keep_partial_text_and_name_the_problem() {
    // Crash after some text: the text is kept and flagged.
    let (app, _d) = command_app("printf 'half an answer'; exit 3", 10).await;
    let (status, body) = chat_body(
        &app,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "half an answer");
    assert_eq!(body["choices"][0]["finish_reason"], "error");
    assert_eq!(body["hermes"]["incomplete"], true);
    assert!(
        body["hermes"]["error"]
            .as_str()
            .unwrap()
            .contains("exit status: 3"),
        "{body}"
    );
    // The same streamed: the text, then an error chunk and [DONE].
    let resp = app
        .http
        .post(format!("{}/v1/chat/completions", app.api))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("half an answer") && text.contains("\"finish_reason\":\"error\""));
    assert!(
        text.contains("agent_incomplete") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );

    // Crash with no text: 502 agent_incomplete.
    let (app, _d) = command_app("echo oops >&2; exit 1", 10).await;
    let (status, body) = chat_body(
        &app,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "agent_incomplete");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed")
    );
    assert!(
        !body.to_string().contains("oops"),
        "stderr must not reach the client"
    );

    // Timeout: the turn fails and says so.
    let (app, _d) = command_app("sleep 30", 1).await;
    let (status, body) = chat_body(
        &app,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 1 s")
    );
    app.wait_until(|s| s["active_agents"] == 0).await;

    // A program that does not exist.
    let app = TestApp::spawn(
        "agent: {backend: command, command: {argv: [/nonexistent/agent]}}",
        &[],
    )
    .await;
    let (status, body) = chat_body(
        &app,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be started")
    );
}

#[tokio::test]
async fn command_agent_ignoring_stdin_or_flooding_stdout_does_not_wedge_the_gateway() {
    // Never reads stdin, while the request is far larger than a pipe buffer.
    let (app, _d) = command_app("printf ignored-you", 10).await;
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, body) = chat_body(
        &app,
        json!({"messages": [{"role": "user", "content": big}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "ignored-you");

    // Floods stdout forever: cut at the output limit, turn failed, gateway fine.
    let (app, _d) = command_app("cat >/dev/null; yes flood", 30).await;
    let resp = app
        .http
        .post(format!("{}/v1/chat/completions", app.api))
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("more than 16777216 bytes"),
        "{}",
        &text[text.len().saturating_sub(400)..]
    );
    app.wait_until(|s| s["active_agents"] == 0).await;
    let health = app.get_json(format!("{}/health", app.api)).await;
    assert_eq!(health["status"], "ok");
}

/// Starts an agent that records its pid and a grandchild's, then sleeps.
async fn sleeper_app() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let argv = agent(
        dir.path(),
        "agent.sh",
        &format!(
            "cat >/dev/null; sleep 60 & echo $! > {d}/child.pid; echo $$ > {d}/agent.pid; printf started; wait"
        ),
    );
    let yaml = format!("agent: {{backend: command, command: {{argv: [{argv:?}]}}}}");
    (TestApp::spawn(&yaml, &[]).await, dir)
}

/// Waits until the file at `path` has something in it (an agent wrote a pid); its text.
pub(crate) async fn wait_for_file(path: &Path) -> String {
    let what = format!("{} to be written", path.display());
    eventually(PATIENCE, &what, async || {
        std::fs::read_to_string(path)
            .ok()
            .filter(|t| !t.trim().is_empty())
    })
    .await
}

/// Fails unless process `pid` is gone within 3 s (a keeper exits just after its kill).
pub(crate) async fn assert_gone(pid: &str) {
    let what = format!("process {} to be gone", pid.trim());
    eventually(Duration::from_secs(3), &what, async || {
        (!pid_alive(pid)).then_some(())
    })
    .await;
}

/// Fails unless every process whose command line contains `needle` is gone within 3 s (a
/// keeper exits just after the kill it did); `what` names what they must not outlive.
async fn assert_none_left(needle: &str, what: &str) {
    let what = format!("no process of {needle} to outlive {what}");
    eventually(Duration::from_secs(3), &what, async || {
        let left = processes_with(needle);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_its_turn_and_kills_the_agent() {
    for stream in [false, true] {
        let (app, dir) = sleeper_app().await;
        let client = reqwest::Client::new();
        let url = format!("{}/v1/chat/completions", app.api);
        let (heard, heard_rx) = tokio::sync::oneshot::channel();
        let request = tokio::spawn(async move {
            let resp = client
                .post(url)
                .json(&json!({"stream": stream, "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await;
            // Streaming: read until the agent's first words, then hang up (the abort below).
            if let Ok(mut r) = resp {
                let (mut seen, mut heard) = (String::new(), Some(heard));
                while let Ok(Some(c)) = r.chunk().await {
                    seen.push_str(&String::from_utf8_lossy(&c));
                    if seen.contains("started")
                        && let Some(heard) = heard.take()
                    {
                        let _ = heard.send(());
                        std::future::pending::<()>().await;
                    }
                }
            }
        });
        let agent_pid = wait_for_file(&dir.path().join("agent.pid")).await;
        let child_pid = wait_for_file(&dir.path().join("child.pid")).await;
        app.wait_until(|s| s["active_agents"] == 1).await;
        if stream {
            // Hang up only once the agent's first words reached the client.
            tokio::time::timeout(PATIENCE, heard_rx)
                .await
                .expect("the agent's first words reach the client in time")
                .expect("the stream ended before the agent's first words");
        }
        request.abort();
        let _ = request.await;
        app.wait_until(|s| s["active_agents"] == 0).await;
        assert_gone(&agent_pid).await;
        assert_gone(&child_pid).await;
        let metrics = app.metrics().await;
        assert!(
            metrics.contains("outcome=\"interrupted\"} 1"),
            "stream={stream}: {metrics}"
        );
    }
}

// ---- what the agent may see, and what it may leave behind (SPEC §3) ------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_agent_environment_is_built_and_holds_no_gateway_secret() {
    let home = tempfile::tempdir().unwrap();
    let argv = agent(home.path(), "agent.sh", "cat >/dev/null; env");
    let (drain, drain_next) = (strong_secret(), strong_secret());
    let db = TestDatabase::create().await;
    let database_url = db.url().to_owned();
    let secrets: &[(&str, &str)] = &[
        ("API_SERVER_KEY", "sk-api-key-never-for-agents"),
        ("HERMES_DASHBOARD_DRAIN_SECRET", &drain),
        ("HERMES_DASHBOARD_DRAIN_SECRET_NEXT", &drain_next),
        (
            "HERMES_DASHBOARD_SESSION_TOKEN",
            "session-token-never-for-agents",
        ),
        ("HERMES_NOUS_ACCESS_TOKEN", "nous-token-never-for-agents"),
        ("HERMES_DATABASE_URL", &database_url),
        // The openai backend's model key: not named in agent.command.env, so not passed.
        ("OPENAI_API_KEY", "sk-model-key-never-for-agents"),
    ];
    let mut env = secrets.to_vec();
    env.extend([
        ("MY_AGENT_VAR", "passed-through-value"),
        ("LC_TIME", "C"),
        ("UNLISTED_VAR", "not-for-agents"),
    ]);
    let p = Proc::start(
        home.path(),
        &format!("agent: {{backend: command, command: {{argv: [{argv:?}], env: [MY_AGENT_VAR]}}}}"),
        &env,
    );
    p.wait_running().await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", p.api))
        .bearer_auth("sk-api-key-never-for-agents")
        .json(&json!({"messages": [{"role": "user", "content": "print your environment"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let printed = body["choices"][0]["message"]["content"].as_str().unwrap();
    let names: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    assert!(names.contains(&"PATH"), "{printed}");
    assert!(
        printed.contains("MY_AGENT_VAR=passed-through-value"),
        "{printed}"
    );
    assert!(printed.contains("LC_TIME=C"), "{printed}");
    assert!(!printed.contains("UNLISTED_VAR"), "{printed}");
    for (name, value) in secrets {
        assert!(!names.contains(name), "{name} reached the agent: {printed}");
        assert!(
            !printed.contains(value),
            "the value of {name} reached the agent"
        );
    }
}

#[test]
fn naming_a_gateway_secret_in_agent_command_env_exits_78_with_its_key_path() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.yaml"),
        "agent: {backend: command, command: {argv: [/bin/cat], env: [OPENAI_API_KEY, HERMES_DASHBOARD_DRAIN_SECRET]}}\n",
    )
    .unwrap();
    for args in [&["run"][..], &["config", "check"][..]] {
        let (code, _, err) = cli(home.path(), args, &[], "");
        assert_eq!(code, 78, "{args:?}: {err}");
        assert!(
            err.contains("agent.command.env[1]") && err.contains("HERMES_DASHBOARD_DRAIN_SECRET"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("agent.command.env[0]"), "{err}");
    }
    std::fs::write(
        home.path().join("config.yaml"),
        "agent: {backend: command, command: {argv: [/bin/cat], env: [OPENAI_API_KEY]}}\n",
    )
    .unwrap();
    let (code, out, err) = cli(home.path(), &["config", "show", "--json"], &[], "");
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["agent"]["command"]["env"], json!(["OPENAI_API_KEY"]));
}

/// A link to sleep(1) with a unique path, so its processes can be found by command line.
fn sleeper(dir: &Path) -> String {
    let path = dir.join("hermes-test-sleeper");
    let sleep = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v sleep"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::os::unix::fs::symlink(sleep.trim(), &path).unwrap();
    path.display().to_string()
}

/// Live (not zombie) processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && pid_alive(&name) {
            out.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    out
}

/// Streams a chat turn; returns the text once `until` appears (then keeps the response
/// open until the returned task is aborted) or the whole body if the turn ends first.
fn stream_turn(
    api: String,
    bearer: Option<&'static str>,
    until: &'static str,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<String>,
) {
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut req = reqwest::Client::new()
            .post(format!("{api}/v1/chat/completions"))
            .json(&json!({"stream": true, "messages": [{"role": "user", "content": "x"}]}));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let mut seen = String::new();
        let mut seen_tx = Some(seen_tx);
        if let Ok(mut r) = req.send().await {
            while let Ok(Some(c)) = r.chunk().await {
                seen.push_str(&String::from_utf8_lossy(&c));
                if seen.contains(until)
                    && let Some(tx) = seen_tx.take()
                {
                    let _ = tx.send(seen.clone());
                }
            }
        }
        if let Some(tx) = seen_tx.take() {
            let _ = tx.send(seen);
        }
    });
    (task, seen_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setsid_child_cannot_hold_a_turn_past_its_timeout_nor_outlive_it() {
    let home = tempfile::tempdir().unwrap();
    let s = sleeper(home.path());
    // The reported case: a daemonised child holding stdout, the agent itself still busy.
    let argv = agent(
        home.path(),
        "agent.sh",
        &format!("cat >/dev/null; setsid {s} 30 & echo hi; sleep 60"),
    );
    let p = Proc::start(
        home.path(),
        &format!("agent: {{backend: command, command: {{argv: [{argv:?}], timeout_seconds: 3}}}}"),
        &[],
    );
    p.wait_running().await;
    let started = std::time::Instant::now();
    let (_task, seen) = stream_turn(p.api.clone(), None, "hi");
    let first = seen.await.unwrap();
    assert!(first.contains("hi"), "{first}");
    // `echo hi` may run before the background `setsid` has exec'd the sleeper.
    eventually(PATIENCE, "the setsid child to run", async || {
        (!processes_with(&s).is_empty()).then_some(())
    })
    .await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", p.api))
        .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        body["hermes"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out after 3 s"),
        "{body}"
    );
    assert_eq!(body["choices"][0]["message"]["content"], "hi\n");
    // Two 3 s turns back to back (the streamed one, then this one), plus slack.
    assert!(elapsed < Duration::from_secs(6 + 3), "took {elapsed:?}");
    assert_none_left(&s, "the turn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_exits_ends_its_turn_and_takes_its_daemons_with_it() {
    let home = tempfile::tempdir().unwrap();
    let s = sleeper(home.path());
    let d = home.path().display();
    // Two double-forked setsid daemons (re-parented away from the agent at once): one
    // holds the agent's stdout open, the other closed its stdio. The agent waits until both
    // run, then exits 0.
    let argv = agent(
        home.path(),
        "agent.sh",
        &format!(
            "cat >/dev/null\n\
             (setsid sh -c 'echo $$ > {d}/held.pid; exec {s} 30' &)\n\
             (setsid sh -c 'echo $$ > {d}/quiet.pid; exec {s} 30' >/dev/null 2>&1 </dev/null &)\n\
             while [ ! -s {d}/held.pid ] || [ ! -s {d}/quiet.pid ]; do sleep 0.01; done\n\
             echo hi"
        ),
    );
    let p = Proc::start(
        home.path(),
        &format!("agent: {{backend: command, command: {{argv: [{argv:?}], timeout_seconds: 30}}}}"),
        &[],
    );
    p.wait_running().await;
    let started = std::time::Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", p.api))
        .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(body["choices"][0]["message"]["content"], "hi\n", "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert!(
        elapsed < Duration::from_secs(5),
        "the daemon held the turn: {elapsed:?}"
    );
    for file in ["held.pid", "quiet.pid"] {
        let pid = std::fs::read_to_string(home.path().join(file)).unwrap();
        assert!(
            !pid_alive(&pid),
            "{file} ({}) outlived its turn",
            pid.trim()
        );
    }
    assert_none_left(&s, "the turn").await;
}

/// An agent whose double-forked setsid daemon records its pid, then the agent talks and
/// waits.
fn daemonising_agent(dir: &Path) -> String {
    let s = sleeper(dir);
    let d = dir.display();
    agent(
        dir,
        "agent.sh",
        &format!(
            "cat >/dev/null\n\
             (setsid sh -c 'echo $$ > {d}/daemon.pid; exec {s} 60' >/dev/null 2>&1 </dev/null &)\n\
             while [ ! -s {d}/daemon.pid ]; do sleep 0.01; done\n\
             printf started; sleep 60"
        ),
    )
}

#[tokio::test]
async fn a_client_that_disconnects_kills_setsid_descendants_too() {
    let dir = tempfile::tempdir().unwrap();
    let argv = daemonising_agent(dir.path());
    let app = TestApp::spawn(
        &format!("agent: {{backend: command, command: {{argv: [{argv:?}]}}}}"),
        &[],
    )
    .await;
    let (task, seen) = stream_turn(app.api.clone(), None, "started");
    assert!(seen.await.unwrap().contains("started"));
    let daemon = wait_for_file(&dir.path().join("daemon.pid")).await;
    assert!(pid_alive(&daemon));
    task.abort();
    let _ = task.await;
    app.wait_until(|s| s["active_agents"] == 0).await;
    assert_gone(&daemon).await;
    assert_none_left(&dir.path().display().to_string(), "the turn").await;
}

#[tokio::test]
async fn ending_one_turn_leaves_the_daemons_of_another_running_turn_alone() {
    // One agent; each turn's daemon writes its pid to a file named by the turn's message.
    let dir = tempfile::tempdir().unwrap();
    let s = sleeper(dir.path());
    let d = dir.path().display();
    let argv = agent(
        dir.path(),
        "agent.sh",
        &format!(
            "name=$(sed 's/.*\"content\":\"\\([a-z]*\\)\".*/\\1/')\n\
             (setsid sh -c \"echo \\$\\$ > {d}/$name.pid; exec {s} 60\" >/dev/null 2>&1 </dev/null &)\n\
             while [ ! -s {d}/$name.pid ]; do sleep 0.01; done\n\
             printf started; sleep 60"
        ),
    );
    let app = TestApp::spawn(
        &format!("agent: {{backend: command, command: {{argv: [{argv:?}]}}}}"),
        &[],
    )
    .await;
    let turn = |name: &'static str| {
        let (api, http) = (app.api.clone(), app.http.clone());
        tokio::spawn(async move {
            let mut r = http
                .post(format!("{api}/v1/chat/completions"))
                .json(&json!({"stream": true, "messages": [{"role": "user", "content": name}]}))
                .send()
                .await
                .unwrap();
            while let Ok(Some(_)) = r.chunk().await {}
        })
    };
    let (first, second) = (turn("first"), turn("second"));
    let first_daemon = wait_for_file(&dir.path().join("first.pid")).await;
    let second_daemon = wait_for_file(&dir.path().join("second.pid")).await;
    app.wait_until(|s| s["active_agents"] == 2).await;
    first.abort();
    let _ = first.await;
    app.wait_until(|s| s["active_agents"] == 1).await;
    assert_gone(&first_daemon).await;
    assert!(
        pid_alive(&second_daemon),
        "the other turn's daemon was killed"
    );
    second.abort();
    let _ = second.await;
    app.wait_until(|s| s["active_agents"] == 0).await;
    assert_gone(&second_daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_kills_setsid_descendants_too() {
    let home = tempfile::tempdir().unwrap();
    let argv = daemonising_agent(home.path());
    let mut p = Proc::start(
        home.path(),
        &format!(
            "agent: {{backend: command, restart_drain_timeout: 0.5, command: {{argv: [{argv:?}]}}}}"
        ),
        &[],
    );
    p.wait_running().await;
    let (_task, seen) = stream_turn(p.api.clone(), None, "started");
    assert!(seen.await.unwrap().contains("started"));
    let daemon = wait_for_file(&home.path().join("daemon.pid")).await;
    assert!(pid_alive(&daemon));
    p.signal("TERM");
    let code = p.wait_exit().await;
    assert_eq!(code, 0, "{}", p.stderr());
    assert_gone(&daemon).await;
    assert_none_left(&home.path().display().to_string(), "the gateway").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_gateway_takes_its_agents_and_their_daemons_with_it() {
    let home = tempfile::tempdir().unwrap();
    let s = sleeper(home.path());
    let d = home.path().display();
    // The hardest escapee: a double-forked daemon that leaves the session and clears its
    // environment, so neither group, session nor environment ties it to the turn.
    let argv = agent(
        home.path(),
        "agent.sh",
        &format!(
            "cat >/dev/null\n\
             (setsid env -i sh -c 'echo $$ > {d}/daemon.pid; exec {s} 60' >/dev/null 2>&1 </dev/null &)\n\
             while [ ! -s {d}/daemon.pid ]; do sleep 0.01; done\n\
             printf started; sleep 60"
        ),
    );
    let mut p = Proc::start(
        home.path(),
        &format!("agent: {{backend: command, command: {{argv: [{argv:?}]}}}}"),
        &[],
    );
    p.wait_running().await;
    let (_task, seen) = stream_turn(p.api.clone(), None, "started");
    assert!(seen.await.unwrap().contains("started"));
    let daemon = wait_for_file(&home.path().join("daemon.pid")).await;
    assert!(pid_alive(&daemon));
    // No clean-up code of the gateway runs: only the kernel and the turn's keeper act.
    p.signal("KILL");
    p.wait_exit().await;
    assert_gone(&daemon).await;
    assert_none_left(&home.path().display().to_string(), "the gateway").await;
}

#[tokio::test]
async fn an_agent_starts_with_no_signal_blocked() {
    // The keeper waits for its signals with them blocked; the agent must not inherit that
    // (a blocked SIGTERM makes `timeout`, `kill` and `Popen.terminate` do nothing).
    let dir = tempfile::tempdir().unwrap();
    let argv = agent(
        dir.path(),
        "agent.sh",
        "cat >/dev/null; grep -E '^Sig(Blk|Ign)' /proc/self/status",
    );
    let app = TestApp::spawn(
        &format!("agent: {{backend: command, command: {{argv: [{argv:?}]}}}}"),
        &[],
    )
    .await;
    let (status, body) = chat_body(
        &app,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    // The classic signals 1-31 (glibc reserves 32 and 33 for itself).
    let classic = |name: &str| {
        let hex = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} missing: {text}"));
        u64::from_str_radix(hex.trim(), 16).unwrap() & 0x7fff_ffff
    };
    assert_eq!(classic("SigBlk:"), 0, "blocked: {text}");
    assert_eq!(classic("SigIgn:"), 0, "ignored: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_kills_or_stops_its_keeper_still_leaves_nothing_behind() {
    for (how, timeout) in [("-KILL", 30), ("-STOP", 2)] {
        let home = tempfile::tempdir().unwrap();
        let s = sleeper(home.path());
        let d = home.path().display();
        // The agent is the keeper's child: it can signal it. Its helpers must still die.
        let argv = agent(
            home.path(),
            "agent.sh",
            &format!(
                "cat >/dev/null\n\
                 (setsid sh -c 'echo $$ > {d}/daemon.pid; exec {s} 60' >/dev/null 2>&1 </dev/null &)\n\
                 while [ ! -s {d}/daemon.pid ]; do sleep 0.01; done\n\
                 echo $$ > {d}/agent.pid\n\
                 kill {how} $PPID\n\
                 exec {s} 60"
            ),
        );
        let p = Proc::start(
            home.path(),
            &format!(
                "agent: {{backend: command, command: {{argv: [{argv:?}], timeout_seconds: {timeout}}}}}"
            ),
            &[],
        );
        p.wait_running().await;
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", p.api))
            .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        for file in ["daemon.pid", "agent.pid"] {
            let pid = wait_for_file(&home.path().join(file)).await;
            assert_gone(&pid).await;
        }
        assert_none_left(&s, &format!("the turn ({how}; it answered {body})")).await;
        p.wait_status(|st| st["active_agents"] == 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_read_the_gateway_secrets_from_proc() {
    // Root may read any process's environment, so the gateway runs as `nobody` here (the
    // agent then has the gateway's uid, as in production).
    let home = tempfile::tempdir().unwrap();
    let argv = agent(
        home.path(),
        "agent.sh",
        "cat >/dev/null; g=$(awk '{print $4}' /proc/$PPID/stat); tr '\\0' '\\n' < /proc/$g/environ; echo read-done",
    );
    let env = [("API_SERVER_KEY", "sk-proc-environ-secret")];
    let wrapped;
    let yaml = format!("agent: {{backend: command, command: {{argv: [{argv:?}]}}}}");
    let root = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid() == 0
    };
    let p = if root {
        use std::os::unix::fs::PermissionsExt;
        for entry in walk(home.path()) {
            std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).unwrap();
        }
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        wrapped = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ];
        Proc::start_wrapped(home.path(), &yaml, &env, &wrapped)
    } else {
        Proc::start(home.path(), &yaml, &env)
    };
    p.wait_running().await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", p.api))
        .bearer_auth("sk-proc-environ-secret")
        .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("read-done"), "{body}");
    assert!(
        !text.contains("sk-proc-environ-secret"),
        "the agent read the key: {text}"
    );
}

/// Every path below `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

// ---- the openai backend against a fake upstream -------------------------------------

/// The fake LLM upstream: every request it was sent, headers and body (also used by
/// `sessions`, to see the history a turn carried).
#[derive(Clone, Default)]
pub(crate) struct Upstream {
    pub(crate) seen: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

fn sse(frames: Vec<String>, pause: Duration) -> Response {
    let stream = futures_util::stream::unfold(frames.into_iter(), move |mut it| async move {
        let f = it.next()?;
        tokio::time::sleep(pause).await;
        Some((Ok::<_, Infallible>(Bytes::from(f)), it))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn delta(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "up", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

/// The model name picks the upstream's behaviour.
async fn upstream_chat(State(u): State<Upstream>, headers: HeaderMap, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap();
    u.seen.lock().unwrap().push((headers, v.clone()));
    let finish = format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    );
    let usage = format!(
        "data: {}\n\n",
        json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}})
    );
    match v["model"].as_str().unwrap_or("") {
        "ok" => sse(
            vec![
                delta("Hel"),
                delta("lo"),
                finish,
                usage,
                "data: [DONE]\n\n".into(),
            ],
            Duration::ZERO,
        ),
        "slow" => sse(
            vec![
                delta("a"),
                delta("b"),
                delta("c"),
                finish,
                "data: [DONE]\n\n".into(),
            ],
            Duration::from_millis(150),
        ),
        "cut" => sse(vec![delta("part")], Duration::ZERO),
        "error" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "model crashed"}})),
        )
            .into_response(),
        "badkey" => (StatusCode::UNAUTHORIZED, "no").into_response(),
        _ => {
            // "hang": accept and never answer.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// Serves the fake upstream on loopback: its base URL (`…/v1`) and what it records.
pub(crate) async fn fake_upstream() -> (String, Upstream) {
    let u = Upstream::default();
    let app = Router::new()
        .route("/v1/chat/completions", post(upstream_chat))
        .with_state(u.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), u)
}

async fn openai_app(base_url: &str) -> TestApp {
    TestApp::spawn(
        &format!("agent: {{backend: openai, openai: {{base_url: {base_url:?}, api_key_env: UP_KEY, timeout_seconds: 1}}}}"),
        &[("UP_KEY", "sk-upstream-secret")],
    )
    .await
}

#[tokio::test]
async fn openai_backend_forwards_and_streams_with_usage() {
    let (base, upstream) = fake_upstream().await;
    let app = openai_app(&base).await;
    let (status, body) = chat_body(
        &app,
        json!({"model": "ok", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13})
    );
    {
        let seen = upstream.seen.lock().unwrap();
        let (headers, sent) = &seen[0];
        assert_eq!(headers["authorization"], "Bearer sk-upstream-secret");
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    let mut resp = app
        .http
        .post(format!("{}/v1/chat/completions", app.api))
        .json(&json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let mut frames = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        frames.push(String::from_utf8_lossy(&c).into_owned());
    }
    assert_eq!(parse_sse(&frames.concat()), ("abc".to_owned(), true));
    assert!(frames.len() >= 4, "streamed chunk by chunk: {frames:?}");
}

#[tokio::test]
async fn openai_upstream_faults_become_clear_errors_never_hangs() {
    let (base, _u) = fake_upstream().await;
    let app = openai_app(&base).await;
    let check = |model: &'static str, status: u16, fragment: &'static str| {
        let app = &app;
        async move {
            let (s, body) = chat_body(
                app,
                json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
            assert_eq!(s, status, "{model}: {body}");
            let text = body.to_string();
            assert!(text.contains(fragment), "{model}: {body}");
            assert!(!text.contains("sk-upstream-secret"));
        }
    };
    check("error", 502, "HTTP 500): model crashed").await;
    check(
        "badkey",
        502,
        "rejected the gateway's credentials (HTTP 401)",
    )
    .await;
    check("hang", 502, "did not answer within 1 s").await;
    check("cut", 200, "before the answer was complete").await;
    app.wait_until(|s| s["active_agents"] == 0).await;

    let closed = format!("http://127.0.0.1:{}/v1", crate::support::free_port());
    let app = openai_app(&closed).await;
    let (s, body) = chat_body(
        &app,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(s, 502);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{body}"
    );
}
