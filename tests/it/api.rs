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
        .header("x-hermes-session-id", "sess-1")
        .json(&json!({"stream": true, "model": "custom", "messages": [{"role": "user", "content": "a b c"}]}))
        .send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-hermes-session-id"], "sess-1");
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
        ("{}", "missing field `messages`"),
        (r#"{"messages": []}"#, "at least one message"),
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
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");
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
