//! The Responses API (SPEC §11): the store's bound on SQLite and PostgreSQL, chains and
//! conversations as the backend sees them (the `openai` backend against the fake
//! upstream), `store: false`, `Idempotency-Key`, drain, two replicas on one PostgreSQL,
//! and the official clients: Python and Node `openai`, LangChain's
//! `ChatOpenAI(use_responses_api=True)` and the OpenAI Agents SDK.

use serde_json::{Value, json};

use crate::backends::{Upstream, fake_upstream};
use crate::compat::run_client;
use crate::support::{Proc, TestApp, TestDatabase, both_stores, strong_secret};
use hermes_gateway::store::{NewResponse, Store};

fn new_response<'a>(id: &'a str, conversation: Option<&'a str>) -> NewResponse<'a> {
    NewResponse {
        id,
        body: "{}",
        history: "[]",
        session_id: "s",
        created_at: 1,
        conversation,
    }
}

/// Two responses at most: each write drops the least recently used beyond the bound (a
/// use is a write, a read as previous, a retrieve), and a conversation goes with the
/// response it points at; the same instant twice still orders the uses.
#[tokio::test]
async fn the_store_drops_the_least_recently_used_response_first_on_both_backends() {
    let (stores, _dir, _db) = both_stores().await;
    for store in &stores {
        let kind = store.kind();
        let ids = async |store: &Store| {
            let mut out = Vec::new();
            for id in ["r1", "r2", "r3", "r4"] {
                if store.use_response(id, 0).await.unwrap().is_some() {
                    out.push(id);
                }
            }
            out
        };
        store
            .put_response(&new_response("r1", Some("talk")), 2, 1000)
            .await
            .unwrap();
        store
            .put_response(&new_response("r2", None), 2, 1000)
            .await
            .unwrap();
        // r1 used after r2 (at the same millisecond: the store still orders them).
        let got = store.use_conversation("talk", 1000).await.unwrap().unwrap();
        assert_eq!(
            (
                got.id.as_str(),
                got.body.as_str(),
                got.history.as_str(),
                got.session_id.as_str()
            ),
            ("r1", "{}", "[]", "s"),
            "{kind}"
        );
        store
            .put_response(&new_response("r3", None), 2, 1000)
            .await
            .unwrap();
        // `ids` uses each, in order, at time 0: which are left, and r1 then r3 renewed.
        let left = ids(store).await;
        assert_eq!(left, ["r1", "r3"], "{kind}: r2 was the least recently used");
        // r3 is now the most recent; r4 drops r1, and the conversation pointing at it.
        store
            .put_response(&new_response("r4", None), 2, 2000)
            .await
            .unwrap();
        assert!(
            store
                .use_conversation("talk", 2000)
                .await
                .unwrap()
                .is_none(),
            "{kind}"
        );
        assert!(
            store.use_response("r1", 2000).await.unwrap().is_none(),
            "{kind}"
        );
        assert!(store.delete_response("r4").await.unwrap(), "{kind}");
        assert!(!store.delete_response("r4").await.unwrap(), "{kind}");
        assert!(
            store.use_response("r4", 2000).await.unwrap().is_none(),
            "{kind}"
        );
        assert!(
            store.use_response("r3", 2000).await.unwrap().is_some(),
            "{kind}"
        );
    }
}

async fn post(app: &TestApp, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("{}/v1/responses", app.api))
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, id: &str) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{}/v1/responses/{id}", app.api))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The messages the upstream was sent in its `n`th request, as (role, content).
fn sent(upstream: &Upstream, n: usize) -> Vec<(String, String)> {
    let seen = upstream.seen.lock().unwrap();
    seen[n].1["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn msgs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(r, c)| ((*r).to_owned(), (*c).to_owned()))
        .collect()
}

async fn openai_app(base: &str, yaml: &str) -> TestApp {
    TestApp::spawn(
        &format!(
            "agent: {{backend: openai, openai: {{base_url: {base:?}, model: ok, timeout_seconds: 5}}}}\n{yaml}"
        ),
        &[],
    )
    .await
}

/// A store at a larger bound (200) evicts the least recently used beyond it plus 1 %
/// (2 more), so it evicts once per few writes, not on each; the count it checks is kept
/// beside the rows, and a `DELETE` lowers it (else the store would evict early).
#[tokio::test]
async fn a_store_at_its_bound_evicts_with_slack_and_counts_deletes_on_both_backends() {
    let (stores, _dir, _db) = both_stores().await;
    for store in &stores {
        let kind = store.kind();
        let put = async |id: String| {
            store
                .put_response(&new_response(&id, None), 200, 1000)
                .await
                .unwrap();
        };
        let here = async |id: &str| store.use_response(id, 1000).await.unwrap().is_some();
        for i in 0..=200 {
            put(format!("p{i}")).await;
        }
        // 201 > 200: the 1 beyond and 2 more went, the oldest first.
        assert!(!here("p2").await, "{kind}: p0..p2 evicted");
        assert!(
            here("p3").await,
            "{kind}: 198 left, p3 the oldest (now used)"
        );
        assert!(store.delete_response("p4").await.unwrap(), "{kind}");
        for i in 0..3 {
            put(format!("q{i}")).await;
        }
        // 197 after the delete, 200 now: nothing evicted yet.
        assert!(here("p5").await, "{kind}: a delete is counted");
        put("q3".into()).await;
        assert!(!here("p8").await, "{kind}: 201 again: p6..p8 evicted");
        assert!(here("p9").await, "{kind}");
    }
}

/// The backend sees the instructions as the system message, then the chain's turns in
/// order, then the new input; instructions carry on until replaced and are never kept in
/// the history; a conversation name continues its latest response.
#[tokio::test]
async fn a_chain_and_a_conversation_reach_the_backend_as_one_history() {
    let (base, upstream) = fake_upstream().await;
    let app = openai_app(&base, "").await;
    let (s, r1) = post(&app, json!({"input": "one", "instructions": "sys A"}), &[]).await;
    assert_eq!(s, 200, "{r1}");
    assert_eq!(r1["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(
        r1["usage"]["input_tokens"], 11,
        "the upstream's usage: {r1}"
    );
    assert_eq!(
        sent(&upstream, 0),
        msgs(&[("system", "sys A"), ("user", "one")])
    );
    let two = json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "two"}]}]);
    let (s, r2) = post(
        &app,
        json!({"input": two, "previous_response_id": r1["id"]}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{r2}");
    assert_eq!(
        (&r2["previous_response_id"], &r2["instructions"]),
        (&r1["id"], &json!("sys A"))
    );
    assert_eq!(
        sent(&upstream, 1),
        msgs(&[
            ("system", "sys A"),
            ("user", "one"),
            ("assistant", "Hello"),
            ("user", "two")
        ])
    );
    let (s, r3) = post(
        &app,
        json!({"input": "three", "previous_response_id": r2["id"], "instructions": "sys B"}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{r3}");
    assert_eq!(
        sent(&upstream, 2),
        msgs(&[
            ("system", "sys B"),
            ("user", "one"),
            ("assistant", "Hello"),
            ("user", "two"),
            ("assistant", "Hello"),
            ("user", "three")
        ])
    );
    // A conversation: the first turn starts it, the next continues its latest response.
    let (_, c1) = post(&app, json!({"input": "a", "conversation": "talk"}), &[]).await;
    assert_eq!(
        (&c1["conversation"], &c1["previous_response_id"]),
        (&json!({"id": "talk"}), &Value::Null)
    );
    let (_, c2) = post(
        &app,
        json!({"input": "b", "conversation": {"id": "talk"}}),
        &[],
    )
    .await;
    assert_eq!(c2["previous_response_id"], c1["id"]);
    assert_eq!(
        sent(&upstream, 4),
        msgs(&[("user", "a"), ("assistant", "Hello"), ("user", "b")])
    );
    let (_, c3) = post(&app, json!({"input": "c", "conversation": "talk"}), &[]).await;
    assert_eq!(
        c3["previous_response_id"], c2["id"],
        "the name points at its latest"
    );
    // A retrieved response is the one answered.
    let (s, got) = get(&app, r2["id"].as_str().unwrap()).await;
    assert_eq!((s, &got), (200, &r2));
}

/// `store: false` answers but keeps nothing; unknown ids are 404s naming them; a delete
/// forgets; the request's refusals name their field.
#[tokio::test]
async fn store_false_unknown_ids_deletes_and_refusals() {
    let app = TestApp::spawn("", &[]).await;
    let (s, kept) = post(&app, json!({"input": "keep me"}), &[]).await;
    assert_eq!(s, 200, "{kept}");
    assert_eq!(
        (&kept["status"], &kept["store"]),
        (&json!("completed"), &json!(true))
    );
    assert!(kept["id"].as_str().unwrap().starts_with("resp_"), "{kept}");
    let (s, eph) = post(&app, json!({"input": "forget me", "store": false}), &[]).await;
    assert_eq!(
        (s, &eph["output"][0]["content"][0]["text"]),
        (200, &json!("forget me"))
    );
    let eph_id = eph["id"].as_str().unwrap();
    let (s, e) = get(&app, eph_id).await;
    assert_eq!(s, 404, "{e}");
    assert_eq!(
        e["error"]["message"],
        format!("Response not found: {eph_id}")
    );
    let (s, e) = post(
        &app,
        json!({"input": "x", "previous_response_id": eph_id}),
        &[],
    )
    .await;
    assert_eq!(s, 404, "{e}");
    assert_eq!(
        e["error"]["message"],
        format!("Previous response not found: {eph_id}")
    );

    let id = kept["id"].as_str().unwrap();
    let url = format!("{}/v1/responses/{id}", app.api);
    let r = app.http.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    assert_eq!(get(&app, id).await.0, 404);
    let r = app.http.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);

    for (body, param, fragment) in [
        (json!({}), "input", "input: must be"),
        (
            json!({"input": [{"role": "assistant", "content": "hi"}]}),
            "input",
            "No user message found in input",
        ),
        (
            json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "o"}]}),
            "input[0].type",
            "not supported",
        ),
        (
            json!({"input": "x", "conversation": "c", "previous_response_id": "resp_1"}),
            "conversation",
            "Cannot use both",
        ),
    ] {
        let (s, e) = post(&app, body.clone(), &[]).await;
        assert_eq!(
            (s, &e["error"]["param"]),
            (400, &json!(param)),
            "{body}: {e}"
        );
        assert!(
            e["error"]["message"].as_str().unwrap().contains(fragment),
            "{body}: {e}"
        );
    }
    let metrics = app.metrics().await;
    for line in [
        "hermes_api_requests_total{route=\"POST /v1/responses\",outcome=\"ok\"} 2",
        "hermes_api_requests_total{route=\"GET /v1/responses/{id}\",outcome=\"not_found\"} 2",
        "hermes_api_requests_total{route=\"DELETE /v1/responses/{id}\",outcome=\"ok\"} 1",
        "hermes_api_requests_total{route=\"POST /v1/responses\",outcome=\"bad_request\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

/// The same key and request run one turn; a different request under the key is a 422.
#[tokio::test]
async fn idempotency_key_runs_one_response_per_key_and_request() {
    let app = TestApp::spawn("agent: {echo: {delay_ms: 300}}", &[]).await;
    let key = [("idempotency-key", "resp-42")];
    let body = json!({"input": "once", "metadata": {"try": "1"}});
    let (a, b) = tokio::join!(
        post(&app, body.clone(), &key),
        post(&app, body.clone(), &key)
    );
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(a.1["id"], b.1["id"], "both callers get the one response");
    // Metadata is not part of the fingerprint: a retry that changes it is the same request.
    let (_, c) = post(
        &app,
        json!({"input": "once", "metadata": {"try": "2"}}),
        &key,
    )
    .await;
    assert_eq!(c["id"], a.1["id"]);
    assert!(app.metrics().await.contains("outcome=\"completed\"} 1"));
    let (s, e) = post(&app, json!({"input": "twice"}), &key).await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (422, &json!("idempotency_key_reused"))
    );
}

/// `max_stored_responses: 2`: a third response drops the least recently used of the two.
#[tokio::test]
async fn the_bound_drops_the_least_recently_used_response() {
    let app = TestApp::spawn("gateway: {api_server: {max_stored_responses: 2}}", &[]).await;
    let mut ids = Vec::new();
    for text in ["first", "second"] {
        let (_, r) = post(&app, json!({"input": text}), &[]).await;
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        get(&app, &ids[0]).await.0,
        200,
        "retrieving the first uses it"
    );
    let (_, third) = post(&app, json!({"input": "third"}), &[]).await;
    assert_eq!(
        get(&app, &ids[1]).await.0,
        404,
        "the second was the least recently used"
    );
    assert_eq!(get(&app, &ids[0]).await.0, 200);
    assert_eq!(get(&app, third["id"].as_str().unwrap()).await.0, 200);
}

/// While draining a new response is refused (503 `gateway_draining`, streamed or not);
/// the one in flight completes and is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_refuses_new_responses_and_lets_the_running_one_finish() {
    let secret = strong_secret();
    let app = std::sync::Arc::new(
        TestApp::spawn(
            "agent: {echo: {delay_ms: 1500}}",
            &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)],
        )
        .await,
    );
    let running = {
        let app = app.clone();
        tokio::spawn(async move { post(&app, json!({"input": "finish me please"}), &[]).await })
    };
    app.wait_until(|s| s["active_agents"] == 1).await;
    let (status, _) = app.drain_post(Some(&secret), r#"{"action":"drain"}"#).await;
    assert_eq!(status, 200);
    for stream in [false, true] {
        let r = app
            .http
            .post(format!("{}/v1/responses", app.api))
            .json(&json!({"input": "late", "stream": stream}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "stream={stream}");
        assert!(r.headers().contains_key("retry-after"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "gateway_draining", "stream={stream}");
    }
    let (s, done) = running.await.unwrap();
    assert_eq!(
        (s, &done["output"][0]["content"][0]["text"]),
        (200, &json!("finish me please"))
    );
    assert_eq!(get(&app, done["id"].as_str().unwrap()).await.0, 200);
}

/// Two gateway processes on one PostgreSQL: a response created on A is continued on B by
/// `previous_response_id` (its instructions carry on, so B read A's record), retrieved
/// there, and a conversation begun on A goes on on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_created_on_one_replica_is_continued_on_another() {
    let db = TestDatabase::create().await;
    let env = [("HERMES_DATABASE_URL", db.url())];
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Proc::start(home_a.path(), "", &env);
    let b = Proc::start(home_b.path(), "", &env);
    a.wait_running().await;
    b.wait_running().await;
    let http = reqwest::Client::new();
    let call = async |base: &str, body: Value| -> (u16, Value) {
        let r = http
            .post(format!("{base}/v1/responses"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    };
    let (s, on_a) = call(
        &a.api,
        json!({"input": "begun on A", "instructions": "from A", "conversation": "x"}),
    )
    .await;
    assert_eq!(s, 200, "{on_a}");
    let (s, on_b) = call(
        &b.api,
        json!({"input": "continued on B", "previous_response_id": on_a["id"]}),
    )
    .await;
    assert_eq!(s, 200, "{on_b}\n{}", b.stderr());
    assert_eq!(
        (&on_b["previous_response_id"], &on_b["instructions"]),
        (&on_a["id"], &json!("from A"))
    );
    let got: Value = http
        .get(format!(
            "{}/v1/responses/{}",
            b.api,
            on_a["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, on_a);
    let (_, conv) = call(&b.api, json!({"input": "next in x", "conversation": "x"})).await;
    assert_eq!(conv["previous_response_id"], on_a["id"], "{conv}");
}

const OPENAI_SCRIPT: &str = r#"
import sys, openai
base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
r = client.responses.create(model="hermes-agent", input="hello from python")
assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_"), r
assert r.output_text == "hello from python", r
assert r.usage.output_tokens == 3 and r.usage.total_tokens == r.usage.input_tokens + 3, r.usage
events = list(client.responses.create(model="hermes-agent", input="streamed words here", stream=True))
kinds = [e.type for e in events]
assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added"], kinds
assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                      "response.output_item.done", "response.completed"], kinds
assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "streamed words here"
assert [e.sequence_number for e in events] == list(range(len(events))), events
assert events[-1].response.output_text == "streamed words here", events[-1]
with client.responses.stream(model="hermes-agent", input="through the stream helper") as s:
    for _ in s:
        pass
    final = s.get_final_response()
assert final.output_text == "through the stream helper" and final.status == "completed", final
first = client.responses.create(model="hermes-agent", input="one", instructions="be brief")
second = client.responses.create(model="hermes-agent", input="two", previous_response_id=first.id)
third = client.responses.create(model="hermes-agent", input="three", previous_response_id=second.id)
assert third.previous_response_id == second.id and third.output_text == "three", third
assert third.instructions == "be brief", third
got = client.responses.retrieve(second.id)
assert got.id == second.id and got.output_text == "two" and got.previous_response_id == first.id, got
client.responses.delete(second.id)
try:
    client.responses.retrieve(second.id)
    raise SystemExit("a deleted response was found")
except openai.NotFoundError as e:
    assert f"Response not found: {second.id}" in e.message, e
fourth = client.responses.create(model="hermes-agent", input="four", previous_response_id=third.id)
assert fourth.output_text == "four", fourth
try:
    client.responses.create(model="hermes-agent", input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}])
    raise SystemExit("a file part was accepted")
except openai.BadRequestError as e:
    assert e.param == "input[0].content" and e.code == "unsupported_content_type", e
print("openai responses ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_client_drives_the_responses_api() {
    let key = "sk-gateway-responses-key";
    let app = TestApp::spawn("", &[("API_SERVER_KEY", key)]).await;
    let args = vec![
        "-c".into(),
        OPENAI_SCRIPT.into(),
        format!("{}/v1", app.api),
        key.into(),
    ];
    let out = run_client("python openai responses", "python3", args, None).await;
    assert_eq!(out, "openai responses ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_node_client_drives_the_responses_api() {
    let key = "sk-gateway-node-responses";
    let app = TestApp::spawn("", &[("API_SERVER_KEY", key)]).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/openai/package.json").is_file(),
        "the openai Node package is missing: run .ci/deps (npm ci in tests/node)"
    );
    let args = vec![
        "responses.mjs".into(),
        format!("{}/v1", app.api),
        key.into(),
    ];
    let out = run_client("node openai responses", "node", args, Some(dir)).await;
    assert_eq!(out, "node openai responses ok");
}

const LANGCHAIN_SCRIPT: &str = r#"
import sys
from langchain_openai import ChatOpenAI
base, key = sys.argv[1], sys.argv[2]
llm = ChatOpenAI(base_url=base, api_key=key, model="hermes-agent", use_responses_api=True, max_retries=0)
msg = llm.invoke("hello from langchain")
assert msg.text == "hello from langchain", msg
assert msg.usage_metadata["output_tokens"] == 3, msg.usage_metadata
total = None
for chunk in llm.stream("streamed through langchain responses"):
    total = chunk if total is None else total + chunk
assert total.text == "streamed through langchain responses", total
assert total.usage_metadata["output_tokens"] == 4, total.usage_metadata
print("langchain responses ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn langchain_chat_openai_with_the_responses_api_works_against_the_gateway() {
    let key = "sk-gateway-langchain-responses";
    let app = TestApp::spawn("", &[("API_SERVER_KEY", key)]).await;
    let args = vec![
        "-c".into(),
        LANGCHAIN_SCRIPT.into(),
        format!("{}/v1", app.api),
        key.into(),
    ];
    let out = run_client("langchain responses", "python3", args, None).await;
    assert_eq!(out, "langchain responses ok");
}

/// An agent on the Agents SDK's default model (the Responses API), run twice (the second
/// continuing the first by `previous_response_id`) and once streamed; prints the outputs.
const AGENTS_SCRIPT: &str = r#"
import sys, asyncio, json
from openai import AsyncOpenAI
from agents import Agent, Runner, set_default_openai_client, set_tracing_disabled
base, key = sys.argv[1], sys.argv[2]
async def main():
    set_tracing_disabled(True)
    set_default_openai_client(AsyncOpenAI(base_url=base, api_key=key, max_retries=0), use_for_tracing=False)
    agent = Agent(name="assistant", instructions="You are a helpful assistant.")
    first = await Runner.run(agent, "first question")
    second = await Runner.run(agent, "second question", previous_response_id=first.last_response_id)
    run = Runner.run_streamed(agent, "streamed question")
    deltas = []
    async for event in run.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
    assert run.final_output == "".join(deltas), (run.final_output, deltas)
    return [first.final_output, second.final_output, run.final_output]
print(json.dumps(asyncio.run(main())))
"#;

async fn run_agents(app: &TestApp, key: &str) -> Value {
    let args = vec![
        "-c".into(),
        AGENTS_SCRIPT.into(),
        format!("{}/v1", app.api),
        key.into(),
    ];
    let out = run_client("openai agents sdk", "python3", args, None).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_agents_sdk_agent_runs_on_its_default_model_through_the_gateway() {
    let key = "sk-gateway-agents";
    let app = TestApp::spawn("", &[("API_SERVER_KEY", key)]).await;
    let outputs = run_agents(&app, key).await;
    assert_eq!(
        outputs,
        json!(["first question", "second question", "streamed question"])
    );
}

/// With the `openai` backend, the upstream sees the agent's instructions as the system
/// message and the chain's turns in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_agents_sdk_agent_reaches_the_upstream_with_its_history() {
    let (base, upstream) = fake_upstream().await;
    let key = "sk-gateway-agents-upstream";
    let app = TestApp::spawn(
        &format!("agent: {{backend: openai, openai: {{base_url: {base:?}, model: ok, timeout_seconds: 5}}}}"),
        &[("API_SERVER_KEY", key)],
    )
    .await;
    let outputs = run_agents(&app, key).await;
    assert_eq!(outputs, json!(["Hello", "Hello", "Hello"]));
    let system = ("system", "You are a helpful assistant.");
    assert_eq!(
        sent(&upstream, 0),
        msgs(&[system, ("user", "first question")])
    );
    assert_eq!(
        sent(&upstream, 1),
        msgs(&[
            system,
            ("user", "first question"),
            ("assistant", "Hello"),
            ("user", "second question")
        ])
    );
    assert_eq!(
        sent(&upstream, 2),
        msgs(&[system, ("user", "streamed question")])
    );
}

/// A browser page on an allowed origin may delete a response: the preflight allows DELETE.
#[tokio::test]
async fn a_preflight_from_an_allowed_origin_allows_delete() {
    let app = TestApp::spawn(
        "gateway: {api_server: {cors_origins: [\"https://app.example\"]}}",
        &[],
    )
    .await;
    let r = app
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/responses/resp_1", app.api),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.split(", ").any(|m| m == "DELETE"), "{methods}");
}

/// The id a stream announces in its first event.
pub fn announced_id(first: &str) -> String {
    let data = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data in {first:?}"));
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["type"], "response.created", "{v}");
    v["response"]["id"].as_str().unwrap().to_owned()
}

/// A streamed response that ends is kept like any other; one whose client goes away
/// mid-stream is cut (its turn ends, counted interrupted) and never kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_stream_is_kept_and_a_client_that_goes_away_leaves_nothing() {
    let app = TestApp::spawn("agent: {echo: {delay_ms: 3000}}", &[]).await;
    let stream = |text: &str| {
        app.http
            .post(format!("{}/v1/responses", app.api))
            .json(&json!({"input": text, "stream": true}))
            .send()
    };
    let mut cut = stream("a b c d e f").await.unwrap();
    assert_eq!(cut.headers()["content-type"], "text/event-stream");
    let first = String::from_utf8(cut.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    let cut_id = announced_id(&first);
    app.wait_until(|s| s["active_agents"] == 1).await;
    drop(cut);
    app.wait_until(|s| s["active_agents"] == 0).await;
    assert_eq!(get(&app, &cut_id).await.0, 404, "a cut stream is not kept");
    assert!(app.metrics().await.contains("outcome=\"interrupted\"} 1"));

    let body = stream("kept words").await.unwrap().text().await.unwrap();
    let id = announced_id(&body);
    assert!(body.contains("event: response.completed"), "{body}");
    let (s, got) = get(&app, &id).await;
    assert_eq!((s, &got["status"]), (200, &json!("completed")), "{got}");
    assert_eq!(got["output"][0]["content"][0]["text"], "kept words");
}

/// The kinds of a Responses stream's events, in order.
pub fn event_kinds(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_owned)
        .collect()
}

/// Through the `openai` backend against the fake upstream: an upstream that fails before
/// any text, and one that stops mid-answer, end a streamed response with
/// `response.failed`, and each is kept as failed with what it produced and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_upstream_fails_or_stops_mid_answer_ends_failed_and_is_kept() {
    let (base, _upstream) = fake_upstream().await;
    for (model, text) in [("error", ""), ("cut", "part")] {
        let app = TestApp::spawn(
            &format!(
                "agent: {{backend: openai, openai: {{base_url: {base:?}, model: {model}, timeout_seconds: 5}}}}"
            ),
            &[],
        )
        .await;
        let r = app
            .http
            .post(format!("{}/v1/responses", app.api))
            .json(&json!({"input": "hello", "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        let body = r.text().await.unwrap();
        let kinds = event_kinds(&body);
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("response.created"),
            "{model}: {body}"
        );
        assert_eq!(
            kinds.last().map(String::as_str),
            Some("response.failed"),
            "{model}: {body}"
        );
        assert!(!kinds.iter().any(|k| k == "response.completed"), "{body}");
        let id = announced_id(&body);
        let (status, kept) = get(&app, &id).await;
        assert_eq!(status, 200, "{model}: {kept}");
        assert_eq!(kept["status"], "failed", "{model}: {kept}");
        assert_eq!(kept["error"]["code"], "server_error", "{model}: {kept}");
        assert!(
            !kept["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{model}: {kept}"
        );
        assert_eq!(
            kept["output"][0]["content"][0]["text"], text,
            "{model}: {kept}"
        );
        assert!(
            app.metrics()
                .await
                .contains("hermes_turns_total{outcome=\"failed\"} 1"),
            "{model}"
        );
    }
}
