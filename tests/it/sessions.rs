//! Stored chat sessions (SPEC §11): a session keeps its history in the store, so a client
//! sends only its new message — the upstream (a fake LLM server, the one fake) sees the
//! whole history; ids are checked; `/api/sessions` on both listeners; failed and
//! interrupted turns append nothing; the bounds; two replicas on one PostgreSQL; and the
//! official Python `openai` client continuing a session.

use std::sync::Arc;
use std::time::Duration;

use hermes_gateway::clock::{ManualClock, SharedClock, SystemClock};
use serde_json::{Value, json};

use crate::backends::{Upstream, fake_upstream};
use crate::support::{PATIENCE, Proc, TestApp, TestDatabase, eventually};

const KEY: &str = "sk-sessions-test-key";
const TOKEN: &str = "sessions-dashboard-token";

/// A gateway on the `openai` backend against the fake upstream at `base`, with an API key
/// and a known dashboard token.
async fn openai_app(base: &str, extra: &str) -> TestApp {
    openai_app_at(base, extra, Arc::new(SystemClock)).await
}

/// [`openai_app`] with its wall clock; `extra` is more YAML (not `agent`).
async fn openai_app_at(base: &str, extra: &str, clock: SharedClock) -> TestApp {
    spawn(&format!("{}\n{extra}", agent_yaml(base, "")), clock).await
}

/// The `agent` section: the `openai` backend against `base`, with `more` keys of its own.
fn agent_yaml(base: &str, more: &str) -> String {
    format!(
        "agent: {{backend: openai, openai: {{base_url: {base:?}, api_key_env: UP_KEY, timeout_seconds: 5{more}}}}}"
    )
}

/// Starts a gateway on `yaml` with the upstream key, the API key and the dashboard token.
async fn spawn(yaml: &str, clock: SharedClock) -> TestApp {
    TestApp::spawn_with_clock(
        yaml,
        &[
            ("UP_KEY", "sk-upstream"),
            ("API_SERVER_KEY", KEY),
            ("HERMES_DASHBOARD_SESSION_TOKEN", TOKEN),
        ],
        clock,
    )
    .await
}

fn msg(role: &str, content: &str) -> Value {
    json!({"role": role, "content": content})
}

/// One chat request to `api` (non-streaming unless `body` says so): status, session id
/// header and body text.
async fn chat(
    http: &reqwest::Client,
    api: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, Option<String>, String) {
    let mut req = http
        .post(format!("{api}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body);
    if let Some(id) = session {
        req = req.header("x-hermes-session-id", id);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-hermes-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, id, r.text().await.unwrap())
}

/// The messages the upstream was sent by its `n`th request (from 0).
fn sent(upstream: &Upstream, n: usize) -> Value {
    upstream.seen.lock().unwrap()[n].1["messages"].clone()
}

/// `GET path` on the dashboard with its token, as JSON with the status.
async fn dash_get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{}{path}", app.dash))
        .header("x-hermes-session-token", TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// `GET path` on the API server with its key, as JSON with the status.
async fn api_get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{}{path}", app.api))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_session_begun_by_two_turns_continues_with_only_the_new_message() {
    let (base, upstream) = fake_upstream().await;
    let app = openai_app(&base, "").await;
    let (http, api) = (&app.http, app.api.as_str());
    let system = msg("system", "be brief");
    // Two turns of a client that resends its whole conversation (no id: derived).
    let first = json!({"model": "ok", "messages": [system, msg("user", "one")]});
    let (status, id, body) = chat(http, api, None, first).await;
    assert_eq!(status, 200, "{body}");
    let id = id.unwrap();
    let second = json!({"model": "ok", "messages": [system, msg("user", "one"),
        msg("assistant", "Hello"), msg("user", "two")]});
    let (status, again, body) = chat(http, api, None, second).await;
    assert_eq!(
        (status, again.as_deref()),
        (200, Some(id.as_str())),
        "{body}"
    );
    // The third names the session and sends only its new message: the upstream gets the
    // stored history (the request's instructions first).
    let third = json!({"model": "ok", "messages": [system, msg("user", "three")]});
    let (status, again, body) = chat(http, api, Some(&id), third).await;
    assert_eq!(
        (status, again.as_deref()),
        (200, Some(id.as_str())),
        "{body}"
    );
    let history = |upto: &str| {
        let mut v = vec![system.clone()];
        for (i, u) in ["one", "two", "three", "four"].iter().enumerate() {
            if i > 0 {
                v.push(msg("assistant", "Hello"));
            }
            v.push(msg("user", u));
            if *u == upto {
                break;
            }
        }
        Value::Array(v)
    };
    assert_eq!(sent(&upstream, 2), history("three"));
    // Streamed, without the instructions: the stored history and the new message.
    let fourth = json!({"model": "ok", "stream": true, "messages": [msg("user", "four")]});
    let (status, _, body) = chat(http, api, Some(&id), fourth).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let mut expected = history("four");
    expected.as_array_mut().unwrap().remove(0);
    assert_eq!(sent(&upstream, 3), expected);
    // The store holds the conversation, instructions aside: 4 turns, 8 messages.
    let (status, v) = api_get(&app, &format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["message_count"], 8, "{v}");
    let mut stored = expected.as_array().unwrap().clone();
    stored.push(msg("assistant", "Hello"));
    assert_eq!(v["messages"], Value::Array(stored));
    let metrics = app.metrics().await;
    for line in [
        "hermes_session_requests_total{route=\"chat\",outcome=\"derived\"} 2",
        "hermes_session_requests_total{route=\"chat\",outcome=\"continued\"} 2",
        "hermes_session_requests_total{route=\"record\",outcome=\"appended\"} 4",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}

#[tokio::test]
async fn invalid_ids_are_400_and_an_unknown_given_id_with_earlier_turns_is_404() {
    let app = TestApp::spawn("", &[("HERMES_DASHBOARD_SESSION_TOKEN", TOKEN)]).await;
    let (http, api) = (&app.http, app.api.as_str());
    let one = json!({"messages": [msg("user", "hi")]});
    for bad in [
        "my-session",
        "api-0123456789ABCDEF",
        "api-0123",
        "20260101_120000_abcdeg",
        "../../etc",
    ] {
        let (status, _, body) = chat(http, api, Some(bad), one.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["message"], "Invalid session ID", "{bad}");
        assert_eq!(v["error"]["code"], "invalid_session_id", "{bad}");
    }
    // An id the store does not hold, named by a request that carries earlier turns, or an
    // `api-` (derived) id that is not this request's own: 404.
    let later =
        json!({"messages": [msg("user", "hi"), msg("assistant", "hi"), msg("user", "more")]});
    for (unknown, body) in [
        ("api-0123456789abcdef", &later),
        ("20260101_120000_abcdef", &later),
        ("api-0123456789abcdef", &one),
    ] {
        let (status, _, text) = chat(http, api, Some(unknown), body.clone()).await;
        assert_eq!(status, 404, "{unknown} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["message"], "Unknown session ID", "{text}");
        assert_eq!(v["error"]["code"], "session_not_found", "{text}");
    }
    // A request that begins a conversation may name it: it is then stored under that id.
    let named = "20261224_180000_c0ffee";
    let (status, id, body) = chat(http, api, Some(named), one.clone()).await;
    assert_eq!((status, id.as_deref()), (200, Some(named)), "{body}");
    let (_, v) = dash_get(&app, "/api/sessions").await;
    let ids: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&named), "{v}");
    assert!(
        !ids.contains(&"api-0123456789abcdef") && !ids.contains(&"20260101_120000_abcdef"),
        "a refused request stores nothing: {v}"
    );
    // Naming a stored session without a new user message: nothing to answer (409).
    let no_new = json!({"messages": [msg("user", "hi"), msg("assistant", "hi")]});
    let (status, _, body) = chat(http, api, Some(named), no_new).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("no_new_message"), "{body}");
}

#[tokio::test]
async fn sessions_are_listed_shown_and_forgotten_on_both_listeners() {
    let (base, _upstream) = fake_upstream().await;
    let clock = ManualClock::new(jiff::Timestamp::from_second(1_900_000_000).unwrap());
    let app = openai_app_at(&base, "", clock.clone()).await;
    let (http, api) = (&app.http, app.api.as_str());
    let (_, a, _) = chat(
        http,
        api,
        None,
        json!({"model": "ok", "messages": [msg("user", "a")]}),
    )
    .await;
    clock.advance(Duration::from_secs(1));
    let (_, b, _) = chat(
        http,
        api,
        None,
        json!({"model": "ok", "messages": [msg("user", "b")]}),
    )
    .await;
    let (a, b) = (a.unwrap(), b.unwrap());
    // Behind each listener's gate.
    let r = http
        .get(format!("{api}/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{}/api/sessions", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for (listener, get) in [("api", true), ("dashboard", false)] {
        let fetch = async |path: &str| {
            if get {
                api_get(&app, path).await
            } else {
                dash_get(&app, path).await
            }
        };
        let (status, v) = fetch("/api/sessions").await;
        assert_eq!(status, 200, "{listener}: {v}");
        let listed = v["sessions"].as_array().unwrap();
        assert_eq!(listed.len(), 2, "{listener}: {v}");
        assert_eq!(
            listed[0]["id"], b,
            "{listener}: the most recently updated first"
        );
        assert_eq!(listed[1]["id"], a, "{listener}");
        assert_eq!(listed[0]["message_count"], 2, "{listener}");
        assert_eq!(
            listed[0]["created_at"], "2030-03-17T17:46:41.000000Z",
            "{v}"
        );
        let (status, v) = fetch(&format!("/api/sessions/{a}")).await;
        assert_eq!(status, 200, "{listener}: {v}");
        assert_eq!(
            v["messages"],
            json!([msg("user", "a"), msg("assistant", "Hello")])
        );
        let (status, v) = fetch("/api/sessions/not-an-id").await;
        assert_eq!(
            (status, &v),
            (400, &json!({"error": "Invalid session ID"})),
            "{listener}"
        );
        let (status, v) = fetch("/api/sessions/api-00000000000000ff").await;
        assert_eq!(
            (status, &v),
            (404, &json!({"error": "Unknown session ID"})),
            "{listener}"
        );
    }
    // Forgotten on one listener, gone on both.
    let r = http
        .delete(format!("{api}/api/sessions/{a}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"id": a, "deleted": true})
    );
    assert_eq!(dash_get(&app, &format!("/api/sessions/{a}")).await.0, 404);
    let r = http
        .delete(format!("{}/api/sessions/{b}", app.dash))
        .header("x-hermes-session-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .delete(format!("{}/api/sessions/{b}", app.dash))
        .header("x-hermes-session-token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "forgetting twice");
    assert_eq!(
        api_get(&app, "/api/sessions").await.1,
        json!({"sessions": []})
    );
    // The forgotten session's id, echoed with only a new message: 404, the history is gone.
    let again = json!({"model": "ok", "messages": [msg("user", "again")]});
    let (status, _, body) = chat(http, api, Some(&a), again).await;
    assert_eq!(status, 404, "{body}");
    // Its own first message derives it: that request begins the conversation anew.
    let (status, _, body) = chat(
        http,
        api,
        Some(&a),
        json!({"model": "ok", "messages": [msg("user", "a")]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        api_get(&app, &format!("/api/sessions/{a}")).await.1["message_count"],
        2
    );
    // Every decision above is counted by route and outcome (the 401s never reached it).
    let metrics = app.metrics().await;
    for line in [
        "hermes_session_requests_total{route=\"list\",outcome=\"ok\"} 3",
        "hermes_session_requests_total{route=\"show\",outcome=\"ok\"} 3",
        "hermes_session_requests_total{route=\"show\",outcome=\"invalid_id\"} 2",
        "hermes_session_requests_total{route=\"show\",outcome=\"unknown\"} 3",
        "hermes_session_requests_total{route=\"delete\",outcome=\"ok\"} 2",
        "hermes_session_requests_total{route=\"delete\",outcome=\"unknown\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn a_failed_or_interrupted_turn_appends_nothing() {
    let (base, _upstream) = fake_upstream().await;
    let app = openai_app(&base, "").await;
    let (http, api) = (&app.http, app.api.as_str());
    let (_, id, _) = chat(
        http,
        api,
        None,
        json!({"model": "ok", "messages": [msg("user", "start")]}),
    )
    .await;
    let id = id.unwrap();
    let count =
        async || api_get(&app, &format!("/api/sessions/{id}")).await.1["message_count"].clone();
    assert_eq!(count().await, 2);
    // The upstream fails before any text (502), after some (200, incomplete), or streamed.
    for (model, stream, status) in [
        ("error", false, 502),
        ("cut", false, 200),
        ("cut", true, 200),
    ] {
        let body = json!({"model": model, "stream": stream, "messages": [msg("user", "fails")]});
        let (got, _, text) = chat(http, api, Some(&id), body).await;
        assert_eq!(got, status, "{model} stream={stream}: {text}");
        assert_eq!(count().await, 2, "{model} stream={stream}: {text}");
    }
    // A client that goes away mid-stream interrupts its turn: nothing either.
    let mut r = http
        .post(format!("{api}/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-hermes-session-id", &id)
        .json(&json!({"model": "slow", "stream": true, "messages": [msg("user", "bye")]}))
        .send()
        .await
        .unwrap();
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    eventually(PATIENCE, "the interrupted turn to end", async || {
        let m = app.metrics().await;
        if m.contains("hermes_turns_total{outcome=\"interrupted\"} 1") {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await;
    assert_eq!(count().await, 2);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hermes_session_requests_total{route=\"record\",outcome=\"appended\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sessions_keep_their_bounds() {
    let (base, _upstream) = fake_upstream().await;
    // Each turn a second after the one before, so "least recently updated" is exact.
    let clock = ManualClock::new(jiff::Timestamp::from_second(1_900_000_000).unwrap());
    let app = openai_app_at(
        &base,
        "gateway: {api_server: {max_stored_sessions: 2, max_session_messages: 4}}",
        clock.clone(),
    )
    .await;
    let (http, api) = (&app.http, app.api.as_str());
    let turn = async |id: Option<&str>, text: &str| {
        clock.advance(Duration::from_secs(1));
        let (status, id, body) = chat(
            http,
            api,
            id,
            json!({"model": "ok", "messages": [msg("user", text)]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        id.unwrap()
    };
    // A session past its message bound keeps its newest messages.
    let a = turn(None, "a1").await;
    turn(Some(&a), "a2").await;
    turn(Some(&a), "a3").await;
    let (_, v) = api_get(&app, &format!("/api/sessions/{a}")).await;
    assert_eq!(v["message_count"], 4, "{v}");
    assert_eq!(
        v["messages"],
        json!([
            msg("user", "a2"),
            msg("assistant", "Hello"),
            msg("user", "a3"),
            msg("assistant", "Hello")
        ])
    );
    // Past the session bound the least recently updated session goes: b, then c arrive;
    // a was updated after b, so b goes.
    let b = turn(None, "b1").await;
    turn(Some(&a), "a4").await;
    let c = turn(None, "c1").await;
    let (_, v) = api_get(&app, "/api/sessions").await;
    let ids: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [c.as_str(), a.as_str()], "{v}");
    assert_eq!(api_get(&app, &format!("/api/sessions/{b}")).await.0, 404);
}

/// The dashboard's chat socket: its conversation is a stored session (named in `start`),
/// and a message naming another session continues that one.
#[tokio::test]
async fn the_dashboard_chat_holds_and_continues_stored_sessions() {
    use futures_util::SinkExt;
    let (base, upstream) = fake_upstream().await;
    // The socket's turns ask for the advertised model; the upstream answers model "ok".
    let app = spawn(&agent_yaml(&base, ", model: ok"), Arc::new(SystemClock)).await;
    let (_, begun, _) = chat(
        &app.http,
        &app.api,
        None,
        json!({"messages": [msg("user", "over the API")]}),
    )
    .await;
    let begun = begun.unwrap();
    let query = format!("/api/ws?token={TOKEN}");
    let mut socket = crate::dashboard::connect(&app.dash, &query, None)
        .await
        .unwrap();
    let mut say = async |frame: Value| {
        socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                frame.to_string().into(),
            ))
            .await
            .unwrap();
        let start = crate::dashboard::next_json(&mut socket).await;
        assert_eq!(start["type"], "start", "{start}");
        loop {
            let v = crate::dashboard::next_json(&mut socket).await;
            match v["type"].as_str() {
                Some("delta") => continue,
                Some("done") => return start["session_id"].as_str().unwrap().to_owned(),
                other => panic!("unexpected frame {other:?}: {v}"),
            }
        }
    };
    let own = say(json!({"message": "from the page"})).await;
    assert!(
        own.len() == 22 && own.as_bytes()[8] == b'_' && own.as_bytes()[15] == b'_',
        "the socket's own session has Hermes's form: {own}"
    );
    assert_eq!(say(json!({"message": "and more"})).await, own);
    assert_eq!(
        sent(&upstream, 2),
        json!([
            msg("user", "from the page"),
            msg("assistant", "Hello"),
            msg("user", "and more")
        ])
    );
    // Naming the session begun over the API continues it.
    let named = say(json!({"message": "on the page now", "session_id": begun})).await;
    assert_eq!(named, begun);
    assert_eq!(
        sent(&upstream, 3),
        json!([
            msg("user", "over the API"),
            msg("assistant", "Hello"),
            msg("user", "on the page now")
        ])
    );
    let (_, v) = dash_get(&app, "/api/sessions").await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2, "{v}");
}

/// The upstream answers "Hello" to every turn; the gateways reach it over loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_begun_on_one_replica_continues_on_another() {
    let db = TestDatabase::create().await;
    let (base, upstream) = fake_upstream().await;
    let yaml =
        format!("agent: {{backend: openai, openai: {{base_url: {base:?}, api_key_env: UP_KEY}}}}");
    let env = [
        ("HERMES_DATABASE_URL", db.url()),
        ("UP_KEY", "sk-upstream"),
        ("API_SERVER_KEY", KEY),
    ];
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Proc::start(home_a.path(), &yaml, &env);
    let b = Proc::start(home_b.path(), &yaml, &env);
    a.wait_running().await;
    b.wait_running().await;
    let http = reqwest::Client::new();
    let first = json!({"model": "ok", "messages": [msg("user", "begun on a")]});
    let (status, id, body) = chat(&http, &a.api, None, first).await;
    assert_eq!(status, 200, "{body}");
    let id = id.unwrap();
    let next = json!({"model": "ok", "stream": true, "messages": [msg("user", "continued on b")]});
    let (status, again, body) = chat(&http, &b.api, Some(&id), next).await;
    assert_eq!(
        (status, again.as_deref()),
        (200, Some(id.as_str())),
        "{body}"
    );
    assert_eq!(
        sent(&upstream, 1),
        json!([
            msg("user", "begun on a"),
            msg("assistant", "Hello"),
            msg("user", "continued on b")
        ])
    );
    // Both replicas show the one session.
    for p in [&a, &b] {
        let v: Value = http
            .get(format!("{}/api/sessions/{id}", p.api))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["message_count"], 4, "{v}");
    }
}

/// The official Python client: begins a conversation, reads the session id from the raw
/// response, then continues it sending only the new message (`extra_headers`), streamed
/// and not, and reads it back through `/api/sessions`.
const PYTHON_SCRIPT: &str = r#"
import sys, openai
base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
raw = client.chat.completions.with_raw_response.create(model="ok",
    messages=[{"role": "user", "content": "my name is Ada"}])
sid = raw.headers["x-hermes-session-id"]
assert raw.parse().choices[0].message.content == "Hello", raw.parse()
r = client.chat.completions.create(model="ok", messages=[{"role": "user", "content": "what is my name?"}],
    extra_headers={"X-Hermes-Session-Id": sid})
assert r.choices[0].message.content == "Hello", r
parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(model="ok", stream=True,
    messages=[{"role": "user", "content": "and again?"}], extra_headers={"X-Hermes-Session-Id": sid}) if c.choices]
assert "".join(parts) == "Hello", parts
stored = openai.OpenAI(base_url=base, api_key=key).get("/api/sessions/" + sid, cast_to=object)
assert stored["message_count"] == 6, stored
try:
    client.chat.completions.create(model="ok", extra_headers={"X-Hermes-Session-Id": "nope"},
        messages=[{"role": "user", "content": "x"}])
    raise SystemExit("an invalid session id was accepted")
except openai.BadRequestError as e:
    assert e.code == "invalid_session_id" and "Invalid session ID" in e.message, e
print(sid)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_continues_a_session_with_only_the_new_message() {
    let (base, upstream) = fake_upstream().await;
    let app = openai_app(&base, "").await;
    let out = crate::compat::run_client(
        "python openai sessions",
        "python3",
        vec![
            "-c".into(),
            PYTHON_SCRIPT.into(),
            app.api.clone(),
            KEY.into(),
        ],
        None,
    )
    .await;
    assert!(out.starts_with("api-"), "{out}");
    let ada = msg("user", "my name is Ada");
    let hello = msg("assistant", "Hello");
    assert_eq!(
        sent(&upstream, 1),
        json!([ada, hello, msg("user", "what is my name?")])
    );
    assert_eq!(
        sent(&upstream, 2),
        json!([
            ada,
            hello,
            msg("user", "what is my name?"),
            hello,
            msg("user", "and again?")
        ])
    );
}

/// The store's half, on SQLite and PostgreSQL alike: a created session takes the seed, an
/// existing one only the turn; the oldest messages go past the bound; eviction drops the
/// least recently updated; a delete takes the messages along.
#[tokio::test]
async fn the_store_appends_trims_and_evicts_on_both_backends() {
    use hermes_gateway::agent::Message;
    use hermes_gateway::store::{ChatAppend, Store};
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    let clock = SystemClock;
    let stores = [
        Store::sqlite(&dir.path().join("state.db"), &clock)
            .await
            .unwrap(),
        Store::postgres(db.url(), &clock).await.unwrap(),
    ];
    let m = |role: &str, content: &str| Message {
        role: role.into(),
        content: content.into(),
    };
    let at = |s: i64| jiff::Timestamp::from_second(1_900_000_000 + s).unwrap();
    for store in stores {
        let kind = store.kind();
        let append = async |id: &str, seed: &[Message], messages: &[Message], now| {
            let turn = ChatAppend {
                id,
                seed,
                messages,
                max_messages: 3,
            };
            store.append_chat_turn(turn, now).await.unwrap()
        };
        let seed = [m("user", "u0"), m("assistant", "a0")];
        assert!(
            append(
                "api-000000000000000a",
                &seed[..],
                &[m("user", "u1"), m("assistant", "a1")][..],
                at(1)
            )
            .await,
            "{kind}"
        );
        let stored = store
            .chat_session("api-000000000000000a")
            .await
            .unwrap()
            .unwrap();
        let contents: Vec<&str> = stored.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            contents,
            ["a0", "u1", "a1"],
            "{kind}: the newest 3 of seed and turn"
        );
        assert_eq!(stored.session.message_count, 3, "{kind}");
        assert_eq!(stored.session.created_at, at(1), "{kind}");
        // An existing session takes only the turn, never the seed again.
        assert!(
            !append(
                "api-000000000000000a",
                &seed[..],
                &[m("user", "u2")][..],
                at(2)
            )
            .await,
            "{kind}"
        );
        let stored = store
            .chat_session("api-000000000000000a")
            .await
            .unwrap()
            .unwrap();
        let contents: Vec<&str> = stored.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["u1", "a1", "u2"], "{kind}");
        assert_eq!(
            (stored.session.created_at, stored.session.updated_at),
            (at(1), at(2)),
            "{kind}"
        );
        // Eviction: b, then c, then a touched; keeping 2 drops b.
        append(
            "api-000000000000000b",
            &[][..],
            &[m("user", "b")][..],
            at(3),
        )
        .await;
        append(
            "api-000000000000000c",
            &[][..],
            &[m("user", "c")][..],
            at(4),
        )
        .await;
        append(
            "api-000000000000000a",
            &[][..],
            &[m("user", "u3")][..],
            at(5),
        )
        .await;
        assert_eq!(store.evict_chat_sessions(2).await.unwrap(), 1, "{kind}");
        assert_eq!(store.evict_chat_sessions(2).await.unwrap(), 0, "{kind}");
        let ids: Vec<String> = store
            .list_chat_sessions()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(
            ids,
            ["api-000000000000000a", "api-000000000000000c"],
            "{kind}"
        );
        assert!(
            store
                .chat_session("api-000000000000000b")
                .await
                .unwrap()
                .is_none(),
            "{kind}"
        );
        // A delete takes the messages along: a session begun again under the id is empty.
        assert!(
            store
                .delete_chat_session("api-000000000000000a")
                .await
                .unwrap(),
            "{kind}"
        );
        assert!(
            !store
                .delete_chat_session("api-000000000000000a")
                .await
                .unwrap(),
            "{kind}"
        );
        assert!(
            append(
                "api-000000000000000a",
                &[][..],
                &[m("user", "new")][..],
                at(6)
            )
            .await,
            "{kind}"
        );
        let stored = store
            .chat_session("api-000000000000000a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.messages, [m("user", "new")], "{kind}");
    }
}
