//! The dashboard page in a real browser: Debian's headless chromium driven through
//! chromedriver's WebDriver HTTP API (both installed by `.ci/deps`). Sign in, see
//! `running`, drain and see `draining` with the in-flight count, cancel, chat and see the
//! streamed answer, and (on the loopback page) continue the stored conversation after a
//! reload. A screenshot is kept in `target/artifacts/dashboard.png`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::{PATIENCE, TestApp, eventually, free_port, matching};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver is needed for the page test: run .ci/deps (Debian's chromium-driver)",
            );
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        eventually(
            Duration::from_secs(20),
            "chromedriver to answer",
            async || http.get(format!("{root}/status")).send().await,
        )
        .await;
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                         format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let v: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromium did not start: {v}"))
            .to_owned();
        Self {
            driver,
            base: format!("{root}/session/{id}"),
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    async fn element(&self, css: &str) -> String {
        let what = format!("an element {css}");
        eventually(PATIENCE, &what, async || self.find(css).await).await
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        match self.find(css).await {
            Some(e) => self
                .call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
                .await
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            None => String::new(),
        }
    }

    /// Waits (20 s at most: every probe is two WebDriver calls) until the element's text
    /// satisfies `pred`.
    async fn wait_text(&self, css: &str, pred: impl Fn(&str) -> bool) -> String {
        let what = format!("the text of {css} to match");
        eventually(Duration::from_secs(20), &what, async || {
            matching(self.text(css).await, |t| pred(t)).map_err(|t| format!("{t:?}"))
        })
        .await
    }

    /// Accepts the `confirm()` dialog once it is open.
    async fn accept_dialog(&self) {
        eventually(PATIENCE, "a confirmation dialog to accept", async || {
            let v: Value = self
                .http
                .post(format!("{}/alert/accept", self.base))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            matching(v, |v| v["value"].is_null())
        })
        .await;
    }

    async fn screenshot(&self, path: &PathBuf) {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_signs_in_drains_cancels_and_chats_in_chromium() {
    let hash = hermes_gateway::auth::password::hash_password("page-test-password").unwrap();
    let app = TestApp::spawn(
        "agent: {echo: {delay_ms: 2500}}",
        &[
            ("HERMES_DASHBOARD_BASIC_AUTH_USERNAME", "operator"),
            ("HERMES_DASHBOARD_BASIC_AUTH_PASSWORD_HASH", &hash),
        ],
    )
    .await;
    let browser = Browser::start().await;

    // Without a session the page sends the browser to the login form.
    browser.goto(&format!("{}/", app.dash)).await;
    browser.type_into("#username", "operator").await;
    browser.type_into("#password", "page-test-password").await;
    browser.click("#submit").await;
    browser
        .wait_text("#who", |t| t == "Signed in as operator")
        .await;
    browser.wait_text("#state", |t| t == "running").await;
    browser.wait_text("#live", |t| t == "live").await;

    // Drain with confirmation, while a turn is in flight: the page shows both.
    let api = app.api.clone();
    let turn = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{api}/v1/chat/completions"))
            .json(&json!({"messages": [{"role": "user", "content": "one two three four five"}]}))
            .send()
            .await
            .unwrap()
            .status()
    });
    app.wait_until(|s| s["active_agents"] == 1).await;
    browser.click("#drain").await;
    browser.accept_dialog().await;
    browser.wait_text("#state", |t| t == "draining").await;
    browser.wait_text("#active", |t| t == "1").await;
    browser
        .wait_text("#drain-by", |t| t.starts_with("operator at "))
        .await;
    assert_eq!(
        turn.await.unwrap(),
        200,
        "the in-flight turn finished during the drain"
    );
    browser.wait_text("#active", |t| t == "0").await;
    browser.click("#undrain").await;
    browser.accept_dialog().await;
    browser.wait_text("#state", |t| t == "running").await;
    assert_eq!(app.status().await["gateway_state"], "running");

    // Chat: the echo agent's answer streams into the conversation.
    browser
        .type_into("#chat-input", "hello from the browser")
        .await;
    browser.click("#chat-send").await;
    browser
        .wait_text(".messages li.assistant", |t| t == "hello from the browser")
        .await;
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/artifacts/dashboard.png");
    browser.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loopback_page_uses_its_injected_token_for_api_calls_and_sockets() {
    let app = TestApp::spawn("", &[]).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", app.dash)).await;
    browser.wait_text("#who", |t| t == "Local session").await;
    browser.wait_text("#state", |t| t == "running").await;
    browser.wait_text("#live", |t| t == "live").await;
    // A drain begun elsewhere (the marker, as an orchestrator's CLI would) shows up live.
    app.state.drain.begin("orchestrator").unwrap();
    browser.wait_text("#state", |t| t == "draining").await;
    browser
        .wait_text("#drain-by", |t| t.starts_with("orchestrator at "))
        .await;
    app.state.drain.cancel("orchestrator").unwrap();
    browser.wait_text("#state", |t| t == "running").await;
    browser.type_into("#chat-input", "loopback hello").await;
    browser.click("#chat-send").await;
    browser
        .wait_text(".messages li.assistant", |t| t == "loopback hello")
        .await;
    // The conversation is a stored session: a reload shows it and continues it.
    let stored = async |count: u64| {
        eventually(PATIENCE, "the chat turn to be recorded", async || {
            let sessions = app.state.sessions.list().await.map_err(|e| e.to_string())?;
            match sessions.as_slice() {
                [one] if one.message_count == count => Ok(one.id.clone()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    };
    stored(2).await;
    browser.goto(&format!("{}/", app.dash)).await;
    browser
        .wait_text(".messages li.user", |t| t == "loopback hello")
        .await;
    browser.type_into("#chat-input", "and again").await;
    browser.click("#chat-send").await;
    browser
        .wait_text(".messages li:nth-of-type(4)", |t| t == "and again")
        .await;
    let id = stored(4).await;
    let stored = app.state.sessions.show(&id).await.unwrap();
    let texts: Vec<&str> = stored.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        texts,
        ["loopback hello", "loopback hello", "and again", "and again"]
    );
}
