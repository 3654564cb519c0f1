//! The API server's response shapes and rules.

use serde_json::{Value, json};

use crate::support::TestApp;

#[tokio::test]
async fn health_models_and_security_headers() {
    let app = TestApp::spawn("", &[]).await;
    for path in ["/health", "/v1/health"] {
        let r = app
            .http
            .get(format!("{}{path}", app.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"status": "ok", "platform": "hermes-agent"}));
    }
    let v: Value = app.get_json(format!("{}/health/detailed", app.api)).await;
    assert_eq!(v["pid"], std::process::id());
    assert_eq!(v["gateway_state"], "running");
    assert_eq!(v["active_agents"], 0);
    let v: Value = app.get_json(format!("{}/v1/models", app.api)).await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "hermes-agent");
    // Error responses carry the headers too.
    let r = app
        .http
        .get(format!("{}/nope", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = app
        .http
        .get(format!("{}/nope", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn api_key_is_checked_on_turns_and_models() {
    let app = TestApp::spawn("", &[("API_SERVER_KEY", "sk-test-key")]).await;
    let expected = json!({"error": {"message": "Invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"}});
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer sk-test-keyX"),
        Some("Basic sk-test-key"),
    ] {
        for (method, path) in [("GET", "/v1/models"), ("POST", "/v1/chat/completions")] {
            let mut req = app
                .http
                .request(method.parse().unwrap(), format!("{}{path}", app.api))
                .json(&json!({"messages": [{"role": "user", "content": "x"}]}));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{auth:?} {path}");
            assert_eq!(r.json::<Value>().await.unwrap(), expected);
        }
    }
    let r = app
        .http
        .get(format!("{}/v1/models", app.api))
        .bearer_auth("sk-test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .get(format!("{}/health", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "health stays open");
    assert_eq!(
        app.status().await["active_agents"],
        0,
        "refused calls never counted"
    );
}

#[tokio::test]
async fn non_streaming_turn_shape() {
    let app = TestApp::spawn("", &[]).await;
    let (status, headers, v) = app.chat("hello there world").await;
    assert_eq!(status, 200, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "hermes-agent");
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "hello there world"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert!(v["created"].as_i64().unwrap() > 1_700_000_000);
    assert!(headers.contains_key("x-hermes-session-id"));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hermes_turns_total{outcome=\"completed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn streaming_turn_shape() {
    let app = TestApp::spawn("", &[]).await;
    let resp = app.http.post(format!("{}/v1/chat/completions", app.api))
        .header("x-hermes-session-id", "20260102_030405_0a1b2c")
        .json(&json!({"stream": true, "model": "custom", "messages": [{"role": "user", "content": "a b c"}]}))
        .send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(
        resp.headers()["x-hermes-session-id"],
        "20260102_030405_0a1b2c"
    );
    let body = resp.text().await.unwrap();
    let frames: Vec<&str> = body.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert_eq!(*frames.last().unwrap(), "data: [DONE]");
    let first: Value = serde_json::from_str(frames[0].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["model"], "custom");
    let last: Value =
        serde_json::from_str(frames[frames.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    let (content, done) = crate::support::parse_sse(&body);
    assert_eq!((content.as_str(), done), ("a b c", true));
}

#[tokio::test]
async fn bad_requests_get_clear_openai_errors() {
    let app = TestApp::spawn("", &[]).await;
    let cases: &[(&str, &str)] = &[
        ("not json", "invalid request body"),
        ("{}", "messages: must be a non-empty list"),
        (r#"{"messages": []}"#, "messages: must be a non-empty list"),
        (
            r#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
            "messages[0].role",
        ),
    ];
    for (body, fragment) in cases {
        let r = app
            .http
            .post(format!("{}/v1/chat/completions", app.api))
            .header("content-type", "application/json")
            .body(*body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(fragment),
            "{v}"
        );
    }
    let big = vec![b'x'; 10 * 1024 * 1024 + 1];
    let r = app
        .http
        .post(format!("{}/v1/chat/completions", app.api))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");
    // The job and fire routes say the same in their own `{"error"}` shape.
    for (method, path) in [
        (reqwest::Method::POST, "/api/jobs"),
        (reqwest::Method::PATCH, "/api/jobs/0123456789ab"),
        (reqwest::Method::POST, "/api/cron/fire"),
    ] {
        let r = app
            .http
            .request(method, format!("{}{path}", app.api))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["error"], "request body larger than 10485760 bytes",
            "{path}"
        );
    }
}

#[tokio::test]
async fn openapi_and_metrics_are_served() {
    let app = TestApp::spawn("", &[]).await;
    let v: Value = app.get_json(format!("{}/openapi.json", app.dash)).await;
    for path in ["/api/status", "/api/gateway/drain", "/metrics"] {
        assert!(
            v["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let v: Value = app.get_json(format!("{}/openapi.json", app.api)).await;
    assert!(v["paths"].get("/v1/chat/completions").is_some());
    let text = app.metrics().await;
    for name in [
        "hermes_turns_in_flight",
        "hermes_gateway_state{state=\"running\"} 1",
        "hermes_turns_total",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
}

async fn chat(app: &TestApp, body: Value) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/v1/chat/completions", app.api))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// SPEC §4 request validation on the wire: each refusal is an OpenAI error naming the
/// message's content in `param`, with the compat code; nothing reaches the agent.
#[tokio::test]
async fn chat_content_is_validated_with_param_and_code() {
    let app = TestApp::spawn("", &[]).await;
    let user = |content: Value| json!({"messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": content}]});
    let c1 = "messages[1].content";
    for (body, param, code, fragment) in [
        (
            json!({"messages": [{"role": "user"}]}),
            "messages[0].content",
            Value::Null,
            "required",
        ),
        (
            user(json!([{"type": "file", "file": {"file_id": "file-1"}}])),
            c1,
            json!("unsupported_content_type"),
            "file parts",
        ),
        (
            user(
                json!([{"type": "image_url", "image_url": {"url": "data:application/pdf;base64,JVBE"}}]),
            ),
            c1,
            json!("unsupported_content_type"),
            "data:image",
        ),
        (
            user(json!([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}])),
            c1,
            json!("invalid_image_url"),
            "http(s)",
        ),
        (
            user(json!([{"type": "text", "text": "x".repeat(64 * 1024 + 1)}])),
            c1,
            json!("invalid_content_part"),
            "at most 65536",
        ),
        (
            user(json!(vec![json!({"type": "text", "text": "a"}); 1001])),
            c1,
            json!("invalid_content_part"),
            "at most 1000",
        ),
        (
            json!({"messages": [{"role": "system", "content": "rules only"}]}),
            "messages",
            Value::Null,
            "No user message found in messages",
        ),
    ] {
        let (status, v) = chat(&app, body.clone()).await;
        assert_eq!(status, 400, "{v}");
        let e = &v["error"];
        assert_eq!(
            (&e["type"], &e["param"], &e["code"]),
            (&json!("invalid_request_error"), &json!(param), &code),
            "{v}"
        );
        assert!(e["message"].as_str().unwrap().contains(fragment), "{v}");
    }
    // Text and image parts are accepted; the text reaches the agent, joined by newlines.
    let (status, v) = chat(
        &app,
        user(
            json!([{"type": "text", "text": "look at"}, {"type": "input_text", "text": "this"},
                    {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}}]),
        ),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "look at\nthis");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hermes_turns_total{outcome=\"completed\"} 1\n")
            && !metrics.contains("outcome=\"failed\"} 1"),
        "only the accepted request became a turn:\n{metrics}"
    );
}

#[tokio::test]
async fn models_by_id_capabilities_and_unknown_routes_answer_in_the_openai_shape() {
    let app = TestApp::spawn("", &[("API_SERVER_KEY", "sk-k")]).await;
    let get = |path: &str| {
        app.http
            .get(format!("{}{path}", app.api))
            .bearer_auth("sk-k")
            .send()
    };
    let r = get("/v1/models/hermes-agent").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["id"], &v["object"]),
        (&json!("hermes-agent"), &json!("model"))
    );
    for id in ["gpt-4o", "org/some-model"] {
        let r = get(&format!("/v1/models/{id}")).await.unwrap();
        assert_eq!(r.status(), 404, "{id}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "model_not_found", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(id), "{v}");
    }

    let v: Value = get("/v1/capabilities").await.unwrap().json().await.unwrap();
    assert_eq!(v["object"], "hermes.api_server.capabilities");
    assert_eq!(v["model"], "hermes-agent");
    assert_eq!(v["auth"], json!({"type": "bearer", "required": true}));
    assert_eq!(v["features"]["chat_completions_streaming"], true);
    assert_eq!(
        v["endpoints"]["chat_completions"],
        json!({"method": "POST", "path": "/v1/chat/completions"})
    );
    // The key guards them like /v1/models.
    for path in ["/v1/capabilities", "/v1/models/hermes-agent"] {
        let r = app
            .http
            .get(format!("{}{path}", app.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }

    // Unknown routes and methods: JSON, never an empty body.
    for (method, path, status, code) in [
        (reqwest::Method::GET, "/v1/no-such-thing", 404, "not_found"),
        (
            reqwest::Method::POST,
            "/v2/chat/completions",
            404,
            "not_found",
        ),
        (
            reqwest::Method::GET,
            "/v1/chat/completions",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/models",
            405,
            "method_not_allowed",
        ),
    ] {
        let r = app
            .http
            .request(method.clone(), format!("{}{path}", app.api))
            .bearer_auth("sk-k")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (&v["error"]["type"], &v["error"]["code"]),
            (&json!("invalid_request_error"), &json!(code)),
            "{method} {path}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(path),
            "{v}"
        );
    }
}

/// Splits an SSE body into its `data:` payloads.
fn sse_data(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .collect()
}

#[tokio::test]
async fn stream_options_include_usage_ends_the_stream_with_a_usage_chunk() {
    let app = TestApp::spawn("", &[]).await;
    let stream = |include: Option<bool>| {
        let mut body = json!({"stream": true, "messages": [{"role": "user", "content": "count these four words"}]});
        if let Some(i) = include {
            body["stream_options"] = json!({"include_usage": i});
        }
        let req = app
            .http
            .post(format!("{}/v1/chat/completions", app.api))
            .json(&body);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let text = stream(Some(true)).await;
    let data = sse_data(&text);
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let usage: Value = serde_json::from_str(data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert_eq!(usage["object"], "chat.completion.chunk");
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8})
    );
    let before: Value = serde_json::from_str(data[data.len() - 3]).unwrap();
    assert_eq!(before["choices"][0]["finish_reason"], "stop", "{text}");
    // Without it (or with false), no usage chunk.
    for include in [None, Some(false)] {
        let text = stream(include).await;
        assert!(!text.contains("\"usage\""), "{include:?}: {text}");
    }
}
