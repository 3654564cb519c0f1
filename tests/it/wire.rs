//! The wire's self-description: readiness, the Prometheus text formats (checked by
//! `promtool`), the OpenAPI documents (checked by `openapi-spec-validator` and fuzzed by
//! `schemathesis` against the real binary) and the committed copies under `docs/`.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{TestApp, strong_secret};

/// Runs `program args` with `stdin`; (exit code, stdout + stderr). A missing tool is a
/// clear failure pointing at `.ci/deps`, which installs it.
fn run_tool(program: &str, args: &[&str], stdin: &[u8]) -> (i32, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is needed for this test: run .ci/deps ({e})"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn ready(app: &TestApp, base: &str) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn readiness_is_200_only_while_running_on_both_listeners() {
    let secret = strong_secret();
    let app = TestApp::spawn("", &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)]).await;
    for base in [&app.api, &app.dash] {
        let (status, v) = ready(&app, base).await;
        assert_eq!(
            (status, &v["status"], &v["ready"]),
            (200, &"running".into(), &true.into()),
            "{base}: {v}"
        );
    }
    let (status, _) = app.drain_post(Some(&secret), r#"{"action":"drain"}"#).await;
    assert_eq!(status, 200);
    for base in [&app.api, &app.dash] {
        let (status, v) = ready(&app, base).await;
        assert_eq!(status, 503, "{base}: {v}");
        assert_eq!(v["status"], "draining", "{base}: {v}");
        assert_eq!(v["ready"], false, "{base}: {v}");
    }
    // Liveness stays up: a draining gateway is healthy, just not taking turns.
    let live = app
        .http
        .get(format!("{}/health", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let (status, _) = app
        .drain_post(Some(&secret), r#"{"action":"cancel"}"#)
        .await;
    assert_eq!(status, 200);
    let (status, v) = ready(&app, &app.api).await;
    assert_eq!((status, &v["status"]), (200, &"running".into()), "{v}");
}

async fn metrics_with(app: &TestApp, accept: Option<&str>) -> (String, String) {
    let mut req = app.http.get(format!("{}/metrics", app.dash));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, r.text().await.unwrap())
}

#[tokio::test]
async fn metrics_are_classic_text_that_promtool_accepts_unless_openmetrics_is_asked_for() {
    let app = TestApp::spawn("", &[]).await;
    let (status, _, _) = app.chat("count me").await;
    assert_eq!(status, 200);
    for accept in [None, Some("text/plain"), Some("*/*")] {
        let (ct, text) = metrics_with(&app, accept).await;
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8", "{accept:?}");
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("# TYPE hermes_turns_total counter"), "{text}");
        assert!(
            text.contains("hermes_turns_total{outcome=\"completed\"} 1"),
            "{text}"
        );
        let (code, out) = run_tool("promtool", &["check", "metrics"], text.as_bytes());
        assert_eq!(
            code, 0,
            "promtool check metrics refused:\n{out}\n---\n{text}"
        );
    }
    let (ct, text) = metrics_with(
        &app,
        Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"),
    )
    .await;
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE hermes_turns counter"), "{text}");
}

/// `(key, default)` of every row of the key table in `docs/configuration.md`.
fn documented_keys(doc: &str) -> Vec<(String, String)> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| {
            let (key, rest) = l.split_once("` |")?;
            let default = rest.split(" | ").next()?.trim().trim_matches('`');
            key.contains('.')
                .then(|| (key.to_owned(), default.to_owned()))
        })
        .collect()
}

fn same_default(documented: &str, known: &Value) -> bool {
    match (serde_json::from_str::<Value>(documented), known) {
        (Ok(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Ok(a), b) => &a == b,
        (Err(_), _) => false,
    }
}

#[test]
fn the_configuration_reference_lists_every_key_with_its_default_and_env_override() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let documented = documented_keys(&doc);
    let known = hermes_gateway::config::known_keys();
    assert!(known.len() > 30, "the schema walk found only {known:?}");
    let mut problems = Vec::new();
    for (key, default) in &known {
        match documented.iter().find(|(k, _)| k == key) {
            None => problems.push(format!(
                "{key} (default {default}) is not in docs/configuration.md"
            )),
            Some((_, d)) if !same_default(d, default) => problems.push(format!(
                "{key}: documented default {d}, the reader's is {default}"
            )),
            Some(_) => {}
        }
    }
    for (key, _) in &documented {
        if !known.iter().any(|(k, _)| k == key) {
            problems.push(format!(
                "{key} is documented but the config reader does not know it"
            ));
        }
    }
    // Every environment variable the reader consults is documented.
    struct Recorder(std::sync::Mutex<Vec<String>>);
    impl hermes_gateway::config::Env for Recorder {
        fn var(&self, name: &str) -> Option<String> {
            self.0.lock().unwrap().push(name.to_owned());
            None
        }
        fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
            self.0.lock().unwrap().push(format!("{prefix}*"));
            Vec::new()
        }
    }
    let env = Recorder(Default::default());
    hermes_gateway::config::load(std::path::Path::new("/nonexistent"), None, &env).unwrap();
    let names = env.0.into_inner().unwrap();
    assert!(names.contains(&"API_SERVER_KEY".to_owned()), "{names:?}");
    for name in names {
        if !doc.contains(&format!("`{name}`")) {
            problems.push(format!(
                "environment variable {name} is not in docs/configuration.md"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md is out of date:\n  {}",
        problems.join("\n  ")
    );
}

async fn fetch(http: &reqwest::Client, url: String) -> String {
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    assert_eq!(r.headers()["content-type"], "application/json", "{url}");
    r.text().await.unwrap()
}

/// Both listeners serve their own valid OpenAPI 3.1 document, equal to the copy committed
/// under `docs/openapi/` (`HERMES_UPDATE_OPENAPI=1` rewrites the copies).
#[tokio::test]
async fn committed_openapi_documents_are_what_each_listener_serves_and_are_valid() {
    let app = TestApp::spawn("", &[]).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi");
    let scratch = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (base, name) in [(&app.api, "api-server.json"), (&app.dash, "dashboard.json")] {
        let served = fetch(&app.http, format!("{base}/openapi.json")).await;
        let v: Value = serde_json::from_str(&served).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3.1"), "{name}");
        let committed = dir.join(name);
        if std::env::var_os("HERMES_UPDATE_OPENAPI").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&committed, format!("{served}\n")).unwrap();
        }
        let on_disk = std::fs::read_to_string(&committed).unwrap_or_default();
        assert!(
            on_disk.trim_end() == served.trim_end(),
            "docs/openapi/{name} differs from what the server serves: run HERMES_UPDATE_OPENAPI=1 cargo test --test it wire::committed_openapi"
        );
        let file = scratch.path().join(name);
        std::fs::write(&file, &served).unwrap();
        files.push(file);
    }
    // The two documents differ: each lists its own listener's routes.
    let api: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    assert!(api["paths"].get("/v1/chat/completions").is_some());
    assert!(dash["paths"].get("/v1/chat/completions").is_none());
    assert!(dash["paths"].get("/api/gateway/drain").is_some());
    for doc in [&api, &dash] {
        assert!(doc["paths"].get("/api/jobs/{id}/runs").is_some());
        assert!(doc["paths"].get("/health/ready").is_some());
    }
    // A WebSocket route asked without an upgrade answers its documented 400 (text/plain).
    for path in ["/api/events", "/api/ws"] {
        let r = app
            .http
            .get(format!("{}{path}", app.dash))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert!(
            dash["paths"][path]["get"]["responses"]["400"]["content"]["text/plain"].is_object(),
            "{path}"
        );
    }
    // Gated mode's dashboard document (the cookie scheme instead of the page's token) is
    // validated too: it is what a signed-in operator's tools read.
    let hash = hermes_gateway::auth::password::hash_password("wire-gated-password").unwrap();
    let gated = TestApp::spawn(
        "",
        &[
            ("HERMES_DASHBOARD_BASIC_AUTH_USERNAME", "admin"),
            ("HERMES_DASHBOARD_BASIC_AUTH_PASSWORD_HASH", &hash),
        ],
    )
    .await;
    let served = fetch(&gated.http, format!("{}/openapi.json", gated.dash)).await;
    let doc: Value = serde_json::from_str(&served).unwrap();
    let schemes = &doc["components"]["securitySchemes"];
    assert!(schemes.get("sessionCookie").is_some(), "{schemes}");
    assert!(schemes.get("sessionToken").is_none(), "{schemes}");
    let file = scratch.path().join("dashboard-gated.json");
    std::fs::write(&file, &served).unwrap();
    files.push(file);
    let args: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let (code, out) = run_tool("openapi-spec-validator", &args, b"");
    assert_eq!(code, 0, "openapi-spec-validator refused a document:\n{out}");
}

/// `schemathesis run --checks all` against both listeners of the real binary: every
/// request it generates from the documents gets an answer the document describes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_on_either_listener() {
    let home = tempfile::tempdir().unwrap();
    let (key, token, drain) = (
        "schemathesis-api-key",
        "schemathesis-session-token",
        strong_secret(),
    );
    // The drain secret guards drain and restart: schemathesis holds no credential for
    // them, so its requests there are 401s and the process is never restarted mid-run.
    let mut proc = crate::support::Proc::start(
        home.path(),
        "",
        &[
            ("API_SERVER_KEY", key),
            ("HERMES_DASHBOARD_SESSION_TOKEN", token),
            ("HERMES_DASHBOARD_DRAIN_SECRET", &drain),
        ],
    );
    proc.wait_running().await;
    let seed = std::env::var("HERMES_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261201".into());
    let scratch = tempfile::tempdir().unwrap();
    let api_auth = format!("Authorization: Bearer {key}");
    let dash_auth = format!("X-Hermes-Session-Token: {token}");
    for (base, header) in [(&proc.api, &api_auth), (&proc.dash, &dash_auth)] {
        let url = format!("{base}/openapi.json");
        let out = Command::new("schemathesis")
            .current_dir(scratch.path())
            .arg("--config-file")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/it/schemathesis.toml"
            ))
            .args(["run", &url, "--checks", "all", "-H", header])
            .args(["--max-examples", "10", "--seed", &seed, "--workers", "1"])
            .args(["--request-timeout", "10", "--no-color"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("schemathesis is needed for this test: run .ci/deps ({e})"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis found failures against {url} (seed {seed}):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Nothing it sent stopped or crashed the gateway.
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "{}",
        proc.stderr()
    );
}
