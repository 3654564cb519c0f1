//! API-server compatibility: CORS, framing errors, session ids, idempotency, the restart
//! endpoint, and the official `openai` Python client against the gateway.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Proc, TestApp, strong_secret};

#[tokio::test]
async fn cors_allows_listed_origins_and_refuses_others() {
    let app = TestApp::spawn(
        "gateway: {api_server: {cors_origins: [\"https://app.example\"]}}",
        &[],
    )
    .await;
    let url = format!("{}/v1/chat/completions", app.api);
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let check = |origin: Option<&'static str>, preflight: bool, status: u16| {
        let (app, url, body) = (&app, url.clone(), body.clone());
        async move {
            let mut req = if preflight {
                app.http
                    .request(reqwest::Method::OPTIONS, url)
                    .header("access-control-request-method", "POST")
            } else {
                app.http.post(url).json(&body)
            };
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                r.status().as_u16(),
                status,
                "{origin:?} preflight={preflight}"
            );
            assert_eq!(r.headers()["x-content-type-options"], "nosniff");
            let acao = r.headers().get("access-control-allow-origin").cloned();
            (acao, r.headers().clone(), r.json::<Value>().await.ok())
        }
    };
    let (acao, _, _) = check(Some("https://app.example"), false, 200).await;
    assert_eq!(acao.unwrap(), "https://app.example");
    let (acao, headers, _) = check(Some("https://app.example"), true, 204).await;
    assert_eq!(acao.unwrap(), "https://app.example");
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization")
    );
    let (acao, _, body) = check(Some("https://evil.example"), false, 403).await;
    assert!(acao.is_none());
    assert_eq!(body.unwrap()["error"]["code"], "origin_not_allowed");
    check(Some("https://evil.example"), true, 403).await;
    let (acao, _, _) = check(None, false, 200).await;
    assert!(acao.is_none(), "no Origin, no CORS headers");
}

/// Sends raw bytes and returns the status line.
fn raw_status(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_bad_content_length_is_a_400() {
    let app = TestApp::spawn("", &[]).await;
    let api = app.api.clone();
    let line = tokio::task::spawn_blocking(move || {
        raw_status(
            &api,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\nConnection: close\r\n\r\n{}",
        )
    })
    .await
    .unwrap();
    assert!(line.contains(" 400 "), "{line}");
}

async fn chat_with(app: &TestApp, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app
        .http
        .post(format!("{}/v1/chat/completions", app.api))
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn session_ids_are_stable_for_one_conversation() {
    let app = TestApp::spawn("", &[]).await;
    let sid = |r: &reqwest::Response| {
        r.headers()["x-hermes-session-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let first = json!({"messages": [{"role": "system", "content": "you are terse"}, {"role": "user", "content": "hi"}]});
    let later = json!({"messages": [{"role": "system", "content": "you are terse"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hi"}, {"role": "user", "content": "and now?"}]});
    let other = json!({"messages": [{"role": "system", "content": "you are chatty"}, {"role": "user", "content": "hi"}]});
    let a = sid(&chat_with(&app, first, &[]).await);
    let b = sid(&chat_with(&app, later, &[]).await);
    let c = sid(&chat_with(&app, other.clone(), &[]).await);
    assert_eq!(a, b, "a growing conversation keeps its session");
    assert_ne!(a, c);
    let given = chat_with(
        &app,
        other.clone(),
        &[("x-hermes-session-id", "my-session-7")],
    )
    .await;
    assert_eq!(sid(&given), "my-session-7");
    let bad = chat_with(&app, other, &[("x-hermes-session-id", "has spaces in it")]).await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn idempotency_key_runs_one_turn_per_key_and_body() {
    let app = TestApp::spawn("agent: {echo: {delay_ms: 300}}", &[]).await;
    let body = json!({"messages": [{"role": "user", "content": "pay once"}]});
    let key = [("idempotency-key", "order-42")];
    let (r1, r2) = tokio::join!(
        chat_with(&app, body.clone(), &key),
        chat_with(&app, body.clone(), &key)
    );
    let (v1, v2): (Value, Value) = (r1.json().await.unwrap(), r2.json().await.unwrap());
    assert_eq!(v1["id"], v2["id"], "both callers get the one turn");
    let v3: Value = chat_with(&app, body.clone(), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v1["id"], v3["id"], "a later retry too");
    assert!(app.metrics().await.contains("outcome=\"completed\"} 1"));

    let other = json!({"messages": [{"role": "user", "content": "pay twice"}]});
    let r = chat_with(&app, other, &key).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "idempotency_key_reused");

    let fresh: Value = chat_with(&app, body, &[("idempotency-key", "order-43")])
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(fresh["id"], v1["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_endpoint_drains_and_exits_75() {
    let home = tempfile::tempdir().unwrap();
    let secret = strong_secret();
    let mut p = Proc::start(
        home.path(),
        "agent: {echo: {delay_ms: 1500}}",
        &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)],
    );
    let http = reqwest::Client::new();
    p.wait_running().await;
    let url = format!("{}/api/gateway/restart", p.dash);
    let r = http.post(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let (api, h) = (p.api.clone(), http.clone());
    let in_flight = tokio::spawn(async move {
        h.post(format!("{api}/v1/chat/completions"))
            .json(&json!({"messages": [{"role": "user", "content": "finish me"}]}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    // The turn must be in flight before the restart is asked for (a sleep is not enough on
    // a loaded machine).
    p.wait_status(|s| s["active_agents"] == 1).await;
    let r = http.post(&url).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["action"], "restart");
    let done = in_flight.await.unwrap();
    assert_eq!(done["choices"][0]["message"]["content"], "finish me");
    assert_eq!(p.wait_exit().await, 75, "{}", p.stderr());
}

const OPENAI_SCRIPT: &str = r#"
import sys, openai
base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key)
models = [m.id for m in client.models.list()]
assert models == ["hermes-agent"], models
r = client.chat.completions.create(model="hermes-agent", messages=[{"role": "user", "content": "hello from python"}])
assert r.choices[0].message.content == "hello from python", r
assert r.choices[0].finish_reason == "stop"
assert r.id.startswith("chatcmpl-")
parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model="hermes-agent", stream=True, messages=[{"role": "user", "content": "streamed words here"}]) if c.choices]
assert "".join(parts) == "streamed words here", parts
bad = openai.OpenAI(base_url=base, api_key="wrong-key", max_retries=0)
try:
    bad.models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401
assert client.models.retrieve("hermes-agent").id == "hermes-agent"
try:
    client.models.retrieve("gpt-nope")
    raise SystemExit("an unknown model was found")
except openai.NotFoundError as e:
    assert e.code == "model_not_found" and "gpt-nope" in e.message, e
chunks = list(client.chat.completions.create(model="hermes-agent", stream=True,
    stream_options={"include_usage": True}, messages=[{"role": "user", "content": "two words"}]))
assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2, chunks[-1]
try:
    client.chat.completions.create(model="hermes-agent",
        messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "f-1"}}]}])
    raise SystemExit("a file part was accepted")
except openai.BadRequestError as e:
    assert e.param == "messages[0].content" and e.code == "unsupported_content_type", e
try:
    client.get("/no-such-route", cast_to=object)
    raise SystemExit("an unknown route answered")
except openai.NotFoundError as e:
    assert e.code == "not_found" and "no-such-route" in e.message, e
print("openai client ok")
"#;

/// LangChain's `ChatOpenAI` (PyPI `langchain-openai`) drives the gateway like OpenAI.
const LANGCHAIN_SCRIPT: &str = r#"
import sys, openai
from langchain_openai import ChatOpenAI
base, key = sys.argv[1], sys.argv[2]
llm = ChatOpenAI(base_url=base, api_key=key, model="hermes-agent", max_retries=0)
assert llm.invoke("hello from langchain").content == "hello from langchain"
total = None
for chunk in llm.stream("streamed through langchain", stream_usage=True):
    total = chunk if total is None else total + chunk
assert total.content == "streamed through langchain", total
assert total.usage_metadata["output_tokens"] == 3, total.usage_metadata
assert total.usage_metadata["total_tokens"] == 6, total.usage_metadata
wrong = ChatOpenAI(base_url=base + "/nope", api_key=key, model="hermes-agent", max_retries=0)
try:
    wrong.invoke("hi")
    raise SystemExit("an unknown route answered")
except openai.NotFoundError as e:
    assert "no body" not in str(e) and "/nope/chat/completions" in str(e), e
print("langchain ok")
"#;

/// Runs an official client program against the gateway; `what` names it in failures.
pub(crate) async fn run_client(
    what: &str,
    program: &str,
    args: Vec<String>,
    cwd: Option<std::path::PathBuf>,
) -> String {
    let what = what.to_owned();
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("{program} is needed for the {what} test ({e}): run .ci/deps")
        });
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{what} failed:\n{stderr}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_client_works_against_the_gateway() {
    let key = "sk-gateway-test-key";
    let app = TestApp::spawn("", &[("API_SERVER_KEY", key)]).await;
    let base = format!("{}/v1", app.api);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", OPENAI_SCRIPT, &base, key])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 is needed for this test: run .ci/deps");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'openai'"),
        "the openai Python package is missing: run .ci/deps"
    );
    assert!(
        out.status.success(),
        "python openai client failed:\n{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "openai client ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_node_client_works_against_the_gateway() {
    let key = "sk-gateway-node-key";
    let app = TestApp::spawn("", &[("API_SERVER_KEY", key)]).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/openai/package.json").is_file(),
        "the openai Node package is missing: run .ci/deps (npm ci in tests/node)"
    );
    let out = run_client(
        "node openai client",
        "node",
        vec!["compat.mjs".into(), format!("{}/v1", app.api), key.into()],
        Some(dir),
    )
    .await;
    assert_eq!(out, "node openai client ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_chat_openai_works_against_the_gateway() {
    let key = "sk-gateway-langchain-key";
    let app = TestApp::spawn("", &[("API_SERVER_KEY", key)]).await;
    let out = run_client(
        "langchain ChatOpenAI",
        "python3",
        vec![
            "-c".into(),
            LANGCHAIN_SCRIPT.into(),
            format!("{}/v1", app.api),
            key.into(),
        ],
        None,
    )
    .await;
    assert_eq!(
        out, "langchain ok",
        "the langchain-openai package is needed: run .ci/deps"
    );
}
