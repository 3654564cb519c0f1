//! The dashboard page in a real browser: Debian's headless chromium driven through
//! chromedriver's WebDriver HTTP API (both installed by `.ci/deps`). Sign in, see
//! `running`, drain and see `draining` with the in-flight count, cancel, chat and see the
//! streamed answer, and (on the loopback page) continue the stored conversation after a
//! reload; make, preview, run, pause, edit and delete a job; watch the charts move
//! while turns run; drain and cancel from the keyboard alone; and read the page at 1366
//! and 390 px, light and dark. Screenshots are kept in `target/artifacts/`
//! (`dashboard.png`, `dashboard-1366.png`, `dashboard-390.png`, `dashboard-1366-dark.png`).

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::{PATIENCE, TestApp, eventually, free_port, matching};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver key codes.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/artifacts")
        .join(name)
}

/// A chromedriver process and one browser session in it, in a process group of their
/// own: dropped, the whole group is killed (killing chromedriver alone left its chromium
/// processes running after the tests).
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
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

    /// Opens `url` (the gate sends the browser to the login form) and signs in as
    /// `operator`.
    async fn sign_in(&self, url: &str, password: &str) {
        self.goto(url).await;
        self.type_into("#username", "operator").await;
        self.type_into("#password", password).await;
        self.click("#submit").await;
        self.wait_text("#who", |t| t == "Signed in as operator")
            .await;
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

    /// Confirms in the page's confirmation dialog once it is open.
    async fn confirm(&self) {
        self.wait_script(
            "the confirmation dialog to open",
            "return document.getElementById('confirm').open",
        )
        .await;
        self.click("#confirm-ok").await;
    }

    /// Runs `js` in the page and returns what it returns.
    async fn script(&self, js: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    /// Waits until `js` returns `true`.
    async fn wait_script(&self, what: &str, js: &str) {
        eventually(Duration::from_secs(20), what, async || {
            matching(self.script(js).await, |v| v == &json!(true))
        })
        .await;
    }

    /// Presses and releases one key (a WebDriver key code such as [`TAB`]) wherever the
    /// focus is, as a keyboard would.
    async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.call(reqwest::Method::POST, "/actions", Some(actions))
            .await;
    }

    /// The id of the focused element ("" for none).
    async fn focused(&self) -> String {
        let v = self
            .script("return document.activeElement ? document.activeElement.id : ''")
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Presses Tab until the element `id` has the focus, as a keyboard user gets there.
    async fn tab_to(&self, id: &str) {
        for _ in 0..80 {
            if self.focused().await == id {
                return;
            }
            self.press(TAB).await;
        }
        panic!("80 presses of Tab never reached #{id}");
    }

    async fn clear(&self, css: &str) {
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
    }

    /// An attribute of the first element matching `css` ("" when absent).
    async fn attribute(&self, css: &str, name: &str) -> String {
        let e = self.element(css).await;
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{e}/attribute/{name}"),
                None,
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Makes the page `width` CSS pixels wide (and `height` tall).
    async fn resize(&self, width: i64, height: i64) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
        // The window's frame, if any, is not the page's: make the viewport the size asked.
        let inner = self
            .script("return [window.innerWidth, window.innerHeight]")
            .await;
        let (w, h) = (
            inner[0].as_i64().unwrap_or(width),
            inner[1].as_i64().unwrap_or(height),
        );
        if (w, h) != (width, height) {
            self.call(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({"width": 2 * width - w, "height": 2 * height - h})),
            )
            .await;
        }
    }

    /// A screenshot of the whole page at `width`: the window made as tall as the page.
    async fn page_screenshot(&self, width: i64, name: &str) -> PathBuf {
        self.resize(width, 900).await;
        let height = self
            .script("return document.documentElement.scrollHeight")
            .await
            .as_i64()
            .unwrap_or(900);
        self.resize(width, height.clamp(600, 6000)).await;
        self.script("window.scrollTo(0, 0)").await;
        let path = artifact(name);
        self.screenshot(&path).await;
        path
    }

    /// Asks the page to render as if the system preferred `scheme` (`light`, `dark`).
    async fn color_scheme(&self, scheme: &str) {
        let v: Value = self
            .http
            .post(format!("{}/goog/cdp/execute", self.base))
            .json(&json!({"cmd": "Emulation.setEmulatedMedia", "params": {
                "features": [{"name": "prefers-color-scheme", "value": scheme}]}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v["value"].is_object(), "{v}");
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
    browser
        .sign_in(&format!("{}/", app.dash), "page-test-password")
        .await;
    browser.wait_text("#state", |t| t == "running").await;
    browser.wait_text("#live", |t| t == "live").await;
    // The sign-in happened before the page's socket opened: the feed has it all the same.
    browser
        .wait_text("#activity li", |t| {
            t.ends_with("operator signed in from 127.0.0.1")
        })
        .await;

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
    browser.confirm().await;
    browser.wait_text("#state", |t| t == "draining").await;
    browser.wait_text("#active", |t| t == "1").await;
    browser
        .wait_text("#drain-by", |t| t.starts_with("operator at "))
        .await;
    // The feed says who drained, and how many turns were in flight then.
    browser
        .wait_text("#activity li", |t| {
            t.ends_with("Drain begun by operator · 1 turn in flight")
        })
        .await;
    assert_eq!(
        turn.await.unwrap(),
        200,
        "the in-flight turn finished during the drain"
    );
    browser.wait_text("#active", |t| t == "0").await;
    browser.click("#undrain").await;
    browser.confirm().await;
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
    let shot = artifact("dashboard.png");
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

/// The texts of every element matching `css`.
fn texts_js(css: &str) -> String {
    format!("return [...document.querySelectorAll({css:?})].map(e => e.textContent)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_made_previewed_in_the_cron_zone_run_and_read_from_the_page() {
    let token = "tok-page-jobs";
    let app = TestApp::spawn(
        "cron: {timezone: Europe/Berlin}",
        &[("HERMES_DASHBOARD_SESSION_TOKEN", token)],
    )
    .await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", app.dash)).await;
    browser.wait_text("#live", |t| t == "live").await;
    browser
        .wait_text("#jobs-h + button, #job-new", |t| t == "New job")
        .await;
    assert_eq!(browser.text("#jobs-zone").await, "(Europe/Berlin)");

    // A bad schedule is refused in the preview, with the reason, before anything is saved.
    browser.click("#job-new").await;
    assert_eq!(browser.text("#job-zone").await, "Europe/Berlin");
    browser.type_into("#job-name", "morning report").await;
    browser.type_into("#job-schedule", "every 5 parsecs").await;
    browser
        .wait_text("#job-preview li.error", |t| t.contains("unknown unit"))
        .await;
    // A good one lists its next runs, in the cron zone, named: the server's slots.
    browser.clear("#job-schedule").await;
    browser.type_into("#job-schedule", "0 9 * * *").await;
    browser
        .wait_text("#job-preview-h", |t| t == "Next runs in Europe/Berlin")
        .await;
    browser
        .wait_script(
            "five slots in the preview",
            "return document.querySelectorAll('#job-preview li[data-at]').length === 5",
        )
        .await;
    let shown = browser.script(&texts_js("#job-preview li")).await;
    for slot in shown.as_array().unwrap() {
        let slot = slot.as_str().unwrap();
        assert!(slot.contains(" 09:00:00 "), "9 am in Berlin: {slot}");
    }
    let at = browser
        .script("return [...document.querySelectorAll('#job-preview li')].map(e => e.dataset.at)")
        .await;
    let preview: Value = app
        .http
        .get(format!("{}/api/jobs/preview?schedule=0+9+*+*+*", app.dash))
        .header("X-Hermes-Session-Token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected: Vec<Value> = preview["next_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["at"].clone())
        .collect();
    assert_eq!(at, json!(expected), "the page shows the server's slots");
    browser.resize(390, 844).await;
    browser.screenshot(&artifact("dashboard-job-390.png")).await;
    browser.resize(1366, 900).await;

    // Saved: the table shows it, its next run at 9 in Berlin, the zone named above.
    browser
        .type_into("#job-prompt", "summarise the night")
        .await;
    browser.click("#job-save").await;
    browser
        .wait_text("#jobs tr[data-job] td:nth-child(2)", |t| t == "0 9 * * *")
        .await;
    let next = browser.text("#jobs tr[data-job] td:nth-child(4)").await;
    assert!(next.contains(" 09:00:00 "), "{next}");

    // Run now: the run's output (the echo agent answers with the prompt) is readable.
    browser
        .click("#jobs tr[data-job] button[aria-label^='Run ']")
        .await;
    browser
        .wait_text(".runs li details[open] .run-status", |t| t == "completed")
        .await;
    assert_eq!(
        browser.text(".runs li details[open] .run-output").await,
        "summarise the night"
    );
    browser
        .wait_text("#activity li", |t| {
            t.contains("Run of morning report completed")
        })
        .await;

    // Pause, resume, edit, delete.
    browser
        .click("#jobs tr[data-job] button[aria-label^='Pause ']")
        .await;
    browser
        .wait_text("#jobs tr[data-job] td:nth-child(3)", |t| t == "paused")
        .await;
    browser
        .click("#jobs tr[data-job] button[aria-label^='Resume ']")
        .await;
    browser
        .wait_text("#jobs tr[data-job] td:nth-child(3)", |t| t == "scheduled")
        .await;
    browser
        .click("#jobs tr[data-job] button[aria-label^='Edit ']")
        .await;
    browser
        .wait_text("#job-title", |t| t == "Edit “morning report”")
        .await;
    browser.clear("#job-name").await;
    browser.type_into("#job-name", "evening report").await;
    browser.clear("#job-schedule").await;
    browser.type_into("#job-schedule", "every 2h").await;
    browser
        .wait_script(
            "the edited schedule's preview",
            "return document.querySelectorAll('#job-preview li[data-at]').length === 5",
        )
        .await;
    browser.click("#job-save").await;
    browser
        .wait_text("#jobs tr[data-job] td:nth-child(1)", |t| {
            t == "evening report"
        })
        .await;
    let jobs = app.get_json(format!("{}/api/jobs", app.api)).await;
    assert_eq!(jobs["jobs"][0]["schedule"], "every 2h");
    assert_eq!(jobs["jobs"][0]["prompt"], "summarise the night");
    browser
        .click("#jobs tr[data-job] button[aria-label^='Delete ']")
        .await;
    browser.confirm().await;
    browser
        .wait_text("#jobs td", |t| t.starts_with("No jobs yet"))
        .await;
    let jobs = app.get_json(format!("{}/api/jobs", app.api)).await;
    assert_eq!(jobs["jobs"], json!([]));
}

/// How far the page is wider than the window (0 or less: not at all), and the table cells
/// one of whose texts runs onto a second line.
const LAYOUT_JS: &str = "
  const wraps = (t) => { const r = document.createRange(); r.selectNodeContents(t);
    return new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size > 1; };
  const texts = (c) => { const w = document.createTreeWalker(c, NodeFilter.SHOW_TEXT); const out = [];
    while (w.nextNode()) if (w.currentNode.textContent.trim()) out.push(w.currentNode); return out; };
  const wrapped = [...document.querySelectorAll('th, td')].filter((c) => texts(c).some(wraps))
    .map((c) => c.textContent);
  return {overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth, wrapped};";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_charts_turns_drains_from_the_keyboard_and_reads_at_1366_and_390() {
    let app = TestApp::spawn(
        "agent: {echo: {delay_ms: 1500}}\ncron: {timezone: America/New_York}",
        &[("HERMES_DASHBOARD_SESSION_TOKEN", "tok-page-ops")],
    )
    .await;
    let made = app
        .http
        .post(format!("{}/api/jobs", app.api))
        .json(&json!({"name": "nightly summary", "schedule": "30 2 * * *", "prompt": "summarise"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let browser = Browser::start().await;
    browser.resize(1366, 900).await;
    browser.goto(&format!("{}/", app.dash)).await;
    browser.wait_text("#live", |t| t == "live").await;

    // The connection panel and the chat say where clients go and what answers.
    browser
        .wait_text("#conn-url", |t| t == format!("{}/v1", app.api))
        .await;
    assert_eq!(browser.text("#conn-model").await, "hermes-agent");
    assert_eq!(browser.text("#conn-backend").await, "echo");
    assert!(browser.text("#conn-key").await.starts_with("not required"));
    let curl = browser.text("#snippet-curl").await;
    assert!(
        curl.starts_with(&format!("curl {}/v1/chat/completions", app.api)),
        "{curl}"
    );
    let python = browser.text("#snippet-python").await;
    assert!(
        python.contains(&format!("base_url=\"{}/v1\"", app.api)),
        "{python}"
    );
    assert_eq!(
        browser.text("#chat-with").await,
        "With hermes-agent on the echo backend."
    );
    // Stored sessions are advertised (`chat_sessions`), so the session field is offered.
    assert_eq!(
        browser
            .script("return document.getElementById('chat-session-row').offsetParent === null")
            .await,
        json!(false)
    );

    // The charts move while turns run: the in-flight line rises, then the turns are counted.
    browser
        .wait_script(
            "an empty hour charted",
            "return document.getElementById('chart-turns').dataset.total === '0'",
        )
        .await;
    let turns: Vec<_> = (0..3)
        .map(|i| {
            let api = app.api.clone();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{api}/v1/chat/completions"))
                    .json(&json!({"messages": [{"role": "user", "content": format!("turn {i}")}]}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    app.wait_until(|s| s["active_agents"] == 3).await;
    browser
        .wait_script(
            "the in-flight chart to show three turns",
            "return document.getElementById('chart-inflight').dataset.peak === '3'",
        )
        .await;
    assert!(browser.text("#inflight-summary").await.contains("peak 3"));
    for t in turns {
        assert_eq!(t.await.unwrap(), 200);
    }
    browser
        .wait_script(
            "three completed turns charted",
            "return document.getElementById('chart-turns').dataset.total === '3'
                && document.querySelectorAll('#chart-turns rect.o-completed').length >= 1",
        )
        .await;
    let points = browser.attribute("#chart-inflight", "data-points").await;
    assert_eq!(points.split(',').count(), 60, "{points}");

    // Drain and cancel with the keyboard alone: Tab to the button, Enter opens the dialog
    // (OK focused), Escape cancels, Enter confirms; focus moves to the control that undoes it.
    browser.tab_to("drain").await;
    browser.press(ENTER).await;
    browser
        .wait_script(
            "the dialog to open",
            "return document.getElementById('confirm').open",
        )
        .await;
    assert_eq!(browser.focused().await, "confirm-ok");
    assert_eq!(browser.text("#confirm-title").await, "Drain the gateway?");
    browser.press(ESCAPE).await;
    browser
        .wait_script(
            "the dialog to close",
            "return !document.getElementById('confirm').open",
        )
        .await;
    assert_eq!(browser.focused().await, "drain", "focus back on the opener");
    assert_eq!(app.status().await["gateway_state"], "running");
    browser.press(ENTER).await;
    browser
        .wait_script(
            "the dialog to open",
            "return document.getElementById('confirm').open",
        )
        .await;
    browser.press(ENTER).await;
    browser.wait_text("#state", |t| t == "draining").await;
    eventually(PATIENCE, "the focus on Cancel drain", async || {
        matching(browser.focused().await, |f| f == "undrain")
    })
    .await;
    browser
        .wait_text("#activity li", |t| {
            t.contains("Drain begun by ") && t.contains("0 turns in flight")
        })
        .await;
    browser.press(ENTER).await;
    browser
        .wait_script(
            "the dialog to open",
            "return document.getElementById('confirm').open",
        )
        .await;
    browser.press(ENTER).await;
    browser.wait_text("#state", |t| t == "running").await;
    assert_eq!(app.status().await["gateway_state"], "running");
    browser
        .wait_text("#activity li", |t| t.contains("Drain cancelled by "))
        .await;

    // A fire without a token: refused, in the feed and on the fires chart.
    let fire = app
        .http
        .post(format!("{}/api/cron/fire", app.api))
        .json(&json!({"job_id": "0123456789ab"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fire.status(), 401);
    browser
        .wait_text("#activity li", |t| {
            t.ends_with("Fire refused: missing token")
        })
        .await;
    browser
        .wait_script(
            "the refused fire charted",
            "return document.getElementById('chart-fires').dataset.total === '1'
                && document.querySelectorAll('#chart-fires rect.o-unauthorized').length === 1",
        )
        .await;

    // Chat from the keyboard: type, Enter; the answer streams in.
    browser
        .type_into("#chat-input", "hello at two widths")
        .await;
    browser.press(ENTER).await;
    browser
        .wait_text(".messages li.assistant", |t| t == "hello at two widths")
        .await;

    // The next run is shown in the cron zone, named.
    assert_eq!(browser.text("#jobs-zone").await, "(America/New_York)");
    let next = browser.text("#jobs tr[data-job] td:nth-child(4)").await;
    assert!(
        next.contains(" 02:30:00 GMT-"),
        "2:30 in New York (GMT-5 or -4): {next}"
    );

    // Readable at both widths: nothing wider than the window, no table cell wrapped.
    for (width, name) in [(1366, "dashboard-1366.png"), (390, "dashboard-390.png")] {
        let shot = browser.page_screenshot(width, name).await;
        assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
        let layout = browser.script(LAYOUT_JS).await;
        assert_eq!(layout["overflow"], 0, "at {width} px: {layout}");
        assert_eq!(layout["wrapped"], json!([]), "at {width} px: {layout}");
    }
    // Dark when the system prefers it.
    browser.color_scheme("dark").await;
    let bg = browser
        .script("return getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(bg, "rgb(16, 19, 23)");
    browser
        .page_screenshot(1366, "dashboard-1366-dark.png")
        .await;
}

/// A reverse proxy serving the dashboard under `/hermes`, as
/// `location /hermes/ { proxy_pass http://dashboard/; }` would: each request's path loses
/// the prefix, a path outside it gets 404 (and is recorded, so the test can say the page
/// asked for one), and every connection closes after its answer except a WebSocket's,
/// which is passed through. Returns its port and the paths it refused.
async fn prefix_proxy(upstream: String) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (upstream, seen) = (upstream.clone(), seen.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                let end = loop {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let text = String::from_utf8_lossy(&head[..end]).into_owned();
                let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
                let request = lines.next().unwrap_or_default();
                let mut parts = request.splitn(3, ' ');
                let (method, target, version) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                let Some(path) = target
                    .strip_prefix("/hermes")
                    .filter(|p| p.starts_with('/'))
                else {
                    seen.lock().unwrap().push(target.to_owned());
                    let _ = client
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                };
                let upgrade = text.to_ascii_lowercase().contains("\r\nupgrade: websocket");
                let mut out = format!("{method} {path} {version}\r\n");
                for line in lines {
                    if upgrade || !line.to_ascii_lowercase().starts_with("connection:") {
                        out.push_str(line);
                        out.push_str("\r\n");
                    }
                }
                if !upgrade {
                    out.push_str("Connection: close\r\n");
                }
                out.push_str("\r\n");
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server.write_all(out.as_bytes()).await.is_ok()
                    && server.write_all(&head[end..]).await.is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (port, refused)
}

/// Behind a reverse proxy that serves the dashboard under a path prefix (`public_url`
/// names it), the page signs in through the prefixed login, goes live over its sockets,
/// shows a sign-in from elsewhere in the feed, chats, and runs a job whose agent fails,
/// showing the run's error: and never asks for a path outside the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_prefix_proxy_the_page_signs_in_goes_live_chats_and_shows_a_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent.sh");
    std::fs::write(
        &agent,
        "#!/bin/sh\nin=$(cat)\ncase \"$in\" in *'please fail'*) printf 'half an answer'; exit 3;; esac\nprintf 'proxied answer'\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hash = hermes_gateway::auth::password::hash_password("prefix-test-password").unwrap();
    let dash_port = free_port();
    let (proxy, refused) = prefix_proxy(format!("127.0.0.1:{dash_port}")).await;
    let public = format!("http://127.0.0.1:{proxy}/hermes/");
    let app = TestApp::spawn(
        &format!(
            "agent: {{backend: command, command: {{argv: [{agent:?}]}}}}\ndashboard: {{port: {dash_port}, public_url: '{public}'}}"
        ),
        &[
            ("HERMES_DASHBOARD_BASIC_AUTH_USERNAME", "operator"),
            ("HERMES_DASHBOARD_BASIC_AUTH_PASSWORD_HASH", &hash),
        ],
    )
    .await;
    assert!(app.dash.ends_with(&format!(":{dash_port}")), "{}", app.dash);
    let browser = Browser::start().await;

    browser.sign_in(&public, "prefix-test-password").await;
    browser.wait_text("#state", |t| t == "running").await;
    browser.wait_text("#live", |t| t == "live").await;
    let url = browser.script("return location.pathname").await;
    assert_eq!(url, "/hermes/", "the page is served under the prefix");

    // A sign-in from elsewhere (through the proxy too) shows up in the activity feed.
    let r = reqwest::Client::new()
        .post(format!("{public}auth/password-login"))
        .json(&json!({"username": "operator", "password": "prefix-test-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    browser
        .wait_text("#activity li", |t| {
            t.ends_with("operator signed in from 127.0.0.1")
        })
        .await;

    browser
        .type_into("#chat-input", "hello through the proxy")
        .await;
    browser.click("#chat-send").await;
    browser
        .wait_text(".messages li.assistant", |t| t == "proxied answer")
        .await;

    // A job whose agent fails: run from the page, its error is readable beside its output.
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let made = reqwest::Client::new()
        .post(format!("{public}api/jobs"))
        .header("cookie", &cookie)
        .header("origin", format!("http://127.0.0.1:{proxy}"))
        .json(&json!({"name": "flaky", "schedule": "every 6h", "prompt": "please fail"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201, "{:?}", made.text().await);
    browser
        .wait_text("#jobs tr[data-job] td:nth-child(1)", |t| t == "flaky")
        .await;
    browser
        .click("#jobs tr[data-job] button[aria-label^='Run ']")
        .await;
    browser
        .wait_text(".runs li details[open] .run-status", |t| t == "failed")
        .await;
    assert_eq!(
        browser.text(".runs li details[open] .run-output").await,
        "half an answer"
    );
    let jobs = app.get_json(format!("{}/api/jobs", app.api)).await;
    let id = jobs["jobs"][0]["id"].as_str().unwrap().to_owned();
    let runs = app
        .get_json(format!("{}/api/jobs/{id}/runs", app.api))
        .await;
    let error = runs["runs"][0]["error"].as_str().unwrap().to_owned();
    assert!(!error.is_empty(), "{runs}");
    assert_eq!(
        browser.text(".runs li details[open] .run-error").await,
        error
    );
    browser
        .wait_text("#activity li", |t| t.contains("Run of flaky failed"))
        .await;
    assert_eq!(
        *refused.lock().unwrap(),
        Vec::<String>::new(),
        "the page asked for paths outside its prefix"
    );
}
