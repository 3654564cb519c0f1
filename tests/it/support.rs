//! Test harness: a real gateway on loopback, in process ([`TestApp`]) or as the release
//! binary in a child process ([`Proc`]), with helpers to drive and observe it; waiting
//! ([`eventually`]) and PostgreSQL test databases ([`TestDatabase`]) in submodules.

mod jobs;
mod pg;
mod poll;

pub use jobs::{stored_job, t};
pub use pg::{TestDatabase, both_stores};
pub use poll::{EVERY, PATIENCE, eventually, eventually_every, matching, poll};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hermes_gateway::app::{self, AppState, Exit};
use hermes_gateway::clock::SystemClock;
use hermes_gateway::config;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// A strong drain secret for tests (43 URL-safe characters).
pub fn strong_secret() -> String {
    hermes_gateway::auth::drain_secret::generate_secret()
}

/// Base YAML every test starts from: ephemeral ports on loopback.
pub const BASE_YAML: &str = "gateway: {api_server: {port: 0}}\ndashboard: {port: 0}\n";

/// A gateway running inside the test process.
pub struct TestApp {
    pub home: tempfile::TempDir,
    pub api: String,
    pub dash: String,
    pub state: AppState,
    pub http: reqwest::Client,
    task: Option<JoinHandle<Exit>>,
}

impl TestApp {
    /// Starts a gateway with `yaml` (merged after the ephemeral-port base) and `env`.
    pub async fn spawn(yaml: &str, env: &[(&str, &str)]) -> Self {
        let home = tempfile::tempdir().unwrap();
        Self::spawn_in(home, yaml, env).await
    }

    /// Like [`TestApp::spawn`] but in an existing home (e.g. with a marker already there).
    pub async fn spawn_in(home: tempfile::TempDir, yaml: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_with(home, yaml, env, Arc::new(SystemClock)).await
    }

    /// Like [`TestApp::spawn`] with an injected wall clock (e.g. a `ManualClock`).
    pub async fn spawn_with_clock(
        yaml: &str,
        env: &[(&str, &str)],
        clock: hermes_gateway::clock::SharedClock,
    ) -> Self {
        Self::spawn_with(tempfile::tempdir().unwrap(), yaml, env, clock).await
    }

    async fn spawn_with(
        home: tempfile::TempDir,
        yaml: &str,
        env: &[(&str, &str)],
        clock: hermes_gateway::clock::SharedClock,
    ) -> Self {
        let text = merge_yaml(yaml);
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut config = config::load(home.path(), Some((Path::new("test.yaml"), &text)), &env)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        // This test binary is not the gateway: agent keepers run from the real one.
        config.agent.command.keeper_exe = env!("CARGO_BIN_EXE_hermes-gateway").into();
        let state = app::prepare(config, clock).await.unwrap();
        let listeners = app::bind(&state.config).await.unwrap();
        let api = format!(
            "http://{}",
            listeners.api.as_ref().unwrap().local_addr().unwrap()
        );
        let dash = format!(
            "http://{}",
            listeners.dashboard.as_ref().unwrap().local_addr().unwrap()
        );
        let task = tokio::spawn(app::run(state.clone(), listeners));
        let app = Self {
            home,
            api,
            dash,
            state,
            http: reqwest::Client::new(),
            task: Some(task),
        };
        app.wait_until(|s| s["gateway_state"] != "starting").await;
        app
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub async fn status(&self) -> Value {
        self.get_json(format!("{}/api/status", self.dash)).await
    }

    /// `GET url` as JSON.
    pub async fn get_json(&self, url: String) -> Value {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The dashboard's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.dash);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls `/api/status` until `pred` holds ([`PATIENCE`] at most); returns that status.
    pub async fn wait_until(&self, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(PATIENCE, "the status to match", async || {
            matching(self.status().await, &pred)
        })
        .await
    }

    /// A non-streaming chat turn; returns (status, headers, body).
    pub async fn chat(&self, text: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/chat/completions", self.api))
            .json(&json!({"messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    /// A streaming chat turn: the concatenated content and whether `[DONE]` arrived.
    pub async fn chat_stream(&self, text: &str) -> (u16, String, bool) {
        let resp = self
            .http
            .post(format!("{}/v1/chat/completions", self.api))
            .json(&json!({"stream": true, "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let (content, done) = parse_sse(&body);
        (status, content, done)
    }

    /// POSTs a drain action to the dashboard with optional bearer and session headers.
    pub async fn drain_post(&self, bearer: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/api/gateway/drain", self.dash))
            .body(body.to_owned());
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.home().join("logs/dashboard-auth.log")).unwrap_or_default()
    }

    pub fn audit_events(&self) -> Vec<Value> {
        self.audit_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Requests a stop and waits for the run to end.
    pub async fn stop(&mut self) -> Exit {
        self.state.shutdown.stop();
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            self.state.shutdown.stop();
            self.state.turns.cancel_all();
            t.abort();
        }
    }
}

/// Appends test YAML to the ephemeral-port base, letting the test override sections.
fn merge_yaml(extra: &str) -> String {
    let mut doc: serde_json::Map<String, Value> =
        serde_json::from_value(yaml_to_json(BASE_YAML)).unwrap();
    if !extra.trim().is_empty() {
        merge(&mut doc, yaml_to_json(extra));
    }
    Value::Object(doc).to_string()
}

fn yaml_to_json(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).unwrap()
}

fn merge(into: &mut serde_json::Map<String, Value>, from: Value) {
    let Value::Object(from) = from else { return };
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, Value::Object(b)),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Concatenates the `delta.content` of an SSE body; reports whether `[DONE]` ended it.
pub fn parse_sse(body: &str) -> (String, bool) {
    let mut content = String::new();
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
    }
    (content, done)
}

/// A free loopback port (bound and released; fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The release/debug binary as a child process.
pub struct Proc {
    pub child: Child,
    pub api: String,
    pub dash: String,
    /// Where its stderr goes (`stderr.log` in its home unless the test started it itself).
    pub stderr_log: PathBuf,
}

impl Proc {
    /// Starts `hermes-gateway run` in `home` on fixed ports, with `yaml` and `env`.
    pub fn start(home: &Path, yaml: &str, env: &[(&str, &str)]) -> Self {
        let (api_port, dash_port) = (free_port(), free_port());
        let text = format!(
            "{}\n{yaml}",
            format_args!(
                "gateway: {{api_server: {{port: {api_port}}}}}\ndashboard: {{port: {dash_port}}}"
            )
        );
        Self::start_raw(home, &text, env, api_port, dash_port)
    }

    /// Like [`Proc::start`], run through `wrapper` (e.g. `setpriv` to another user).
    pub fn start_wrapped(home: &Path, yaml: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Self {
        let (api_port, dash_port) = (free_port(), free_port());
        let text = format!(
            "gateway: {{api_server: {{port: {api_port}}}}}\ndashboard: {{port: {dash_port}}}\n{yaml}"
        );
        Self::spawn(home, &text, env, api_port, dash_port, wrapper)
    }

    /// Starts with a complete config text; ports must match it.
    pub fn start_raw(home: &Path, yaml: &str, env: &[(&str, &str)], api: u16, dash: u16) -> Self {
        Self::spawn(home, yaml, env, api, dash, &[])
    }

    fn spawn(
        home: &Path,
        yaml: &str,
        env: &[(&str, &str)],
        api: u16,
        dash: u16,
        wrapper: &[&str],
    ) -> Self {
        std::fs::create_dir_all(home).unwrap();
        std::fs::write(home.join("config.yaml"), yaml).unwrap();
        let binary = env!("CARGO_BIN_EXE_hermes-gateway");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        cmd.arg("--home")
            .arg(home)
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(home.join("stderr.log"))
                    .unwrap(),
            ));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            api: format!("http://127.0.0.1:{api}"),
            dash: format!("http://127.0.0.1:{dash}"),
            stderr_log: home.join("stderr.log"),
        }
    }

    /// Waits until the process serves `/api/status` in state `running`.
    pub async fn wait_running(&self) {
        self.wait_status(|s| s["gateway_state"] == "running").await;
    }

    /// Waits until the process answers and has left `starting`; returns its status.
    pub async fn wait_ready(&self) -> Value {
        self.wait_status(|s| s["gateway_state"] != "starting").await
    }

    /// Polls `/api/status` (20 s at most, each request too) until `pred` holds; returns
    /// that status. A timeout shows the last answer and the process's stderr.
    pub async fn wait_status(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let http = reqwest::Client::new();
        let url = format!("{}/api/status", self.dash);
        let status = async || -> Result<Value, String> {
            let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            matching(v, &pred).map_err(|v| v.to_string())
        };
        let within = Duration::from_secs(20);
        match poll(EVERY, within, status).await {
            Ok(v) => v,
            Err(t) => panic!(
                "the status did not match within {within:?}; last: {}; stderr:\n{}",
                t.last,
                self.stderr()
            ),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Sends a signal by name with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for exit (10 s at most) and returns the exit code (-1 for a signal); a process
    /// still running then is killed and the test fails with its stderr.
    pub async fn wait_exit(&mut self) -> i32 {
        let child = &mut self.child;
        let exited = async || child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
        match poll(EVERY, PATIENCE, exited).await {
            Ok(code) => code,
            Err(_) => {
                let _ = self.child.kill();
                panic!(
                    "the process did not exit within {PATIENCE:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI to completion: (exit code, stdout, stderr).
pub fn cli(home: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hermes-gateway"));
    cmd.arg("--home")
        .arg(home)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
