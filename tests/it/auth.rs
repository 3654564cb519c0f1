//! The token seam with the drain-secret provider, and the dashboard session modes.

use serde_json::{Value, json};

use crate::support::{TestApp, strong_secret};

#[tokio::test]
async fn strong_secret_opens_the_drain_route_to_its_bearer_only() {
    let secret = strong_secret();
    let app = TestApp::spawn("", &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)]).await;
    assert_eq!(
        app.status().await["auth_providers"],
        json!(["drain-secret"])
    );
    let unauth = json!({"error": "unauthenticated", "detail": "Unauthorized"});
    for bearer in [
        None,
        Some("wrong"),
        Some(&secret[..42]),
        Some(&*format!("{secret}x")),
    ] {
        let (status, body) = app.drain_post(bearer, r#"{"action":"drain"}"#).await;
        assert_eq!((status, &body), (401, &unauth), "{bearer:?}");
    }
    assert_eq!(app.status().await["gateway_state"], "running");
    let (status, body) = app.drain_post(Some(&secret), r#"{"action":"drain"}"#).await;
    assert_eq!(status, 200, "{body}");
    let marker: Value =
        serde_json::from_slice(&std::fs::read(app.home().join(".drain_request.json")).unwrap())
            .unwrap();
    assert_eq!(marker["principal"], "drain-control");
    // GET on the exact path is a token route too.
    let r = app
        .http
        .get(format!("{}/api/gateway/drain", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .get(format!("{}/api/gateway/drain", app.dash))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    let detail: Value = r.json().await.unwrap();
    assert_eq!(
        (detail["draining"].clone(), detail["principal"].clone()),
        (json!(true), json!("drain-control"))
    );

    let audit = app.audit_text();
    assert!(!audit.contains(&secret), "the audit file holds the secret");
    assert!(!audit.contains(&secret[..20]));
    let events: Vec<String> = app
        .audit_events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(events.contains(&"token_auth_failure".to_owned()));
    assert!(events.contains(&"token_auth_success".to_owned()));
    assert!(events.contains(&"drain_begin".to_owned()));
    let begin = app
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "drain_begin")
        .unwrap();
    assert_eq!(begin["principal"], "drain-control");
    assert_eq!(begin["active_agents"], 0);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hermes_auth_decisions_total{gate=\"token\",decision=\"rejected\"} 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn next_secret_rotation() {
    let (cur, next) = (strong_secret(), strong_secret());
    let app = TestApp::spawn(
        "",
        &[
            ("HERMES_DASHBOARD_DRAIN_SECRET", &cur),
            ("HERMES_DASHBOARD_DRAIN_SECRET_NEXT", &next),
        ],
    )
    .await;
    assert_eq!(
        app.drain_post(Some(&next), r#"{"action":"drain"}"#).await.0,
        200
    );
    assert_eq!(
        app.drain_post(Some(&cur), r#"{"action":"cancel"}"#).await.0,
        200
    );
    assert_eq!(app.drain_post(Some(&strong_secret()), "").await.0, 401);
}

#[tokio::test]
async fn weak_secrets_leave_the_route_unregistered_and_closed() {
    let weak = [
        "a1B2c3d4e5f6g7h8i9j0k1L2m3".to_owned(), // short
        "Zz".repeat(40),                         // repeated
        "abcdefghij".repeat(5),                  // few distinct
    ];
    for secret in weak {
        let app = TestApp::spawn("", &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)]).await;
        assert_eq!(app.status().await["auth_providers"], json!([]), "{secret}");
        let (status, body) = app.drain_post(Some(&secret), r#"{"action":"drain"}"#).await;
        assert_eq!(status, 401, "{secret}: {body}");
        assert_eq!(
            body["reason"], "missing_session_token",
            "the session gate answered, not the token seam"
        );
        assert_eq!(app.status().await["gateway_state"], "running");
        assert!(!app.home().join(".drain_request.json").exists());
        assert!(!app.audit_text().contains(&secret));
    }
}

#[tokio::test]
async fn loopback_session_token_mode() {
    let app = TestApp::spawn(
        "",
        &[("HERMES_DASHBOARD_SESSION_TOKEN", "local-session-token")],
    )
    .await;
    assert_eq!(app.status().await["auth_required"], false);
    let r = app
        .http
        .get(format!("{}/api/gateway/drain", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["reason"],
        "missing_session_token"
    );
    let r = app
        .http
        .get(format!("{}/api/gateway/drain", app.dash))
        .header("x-hermes-session-token", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["reason"],
        "invalid_session_token"
    );
    let r = app
        .http
        .post(format!("{}/api/gateway/drain", app.dash))
        .header("x-hermes-session-token", "local-session-token")
        .body(r#"{"action":"drain"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let marker: Value =
        serde_json::from_slice(&std::fs::read(app.home().join(".drain_request.json")).unwrap())
            .unwrap();
    assert_eq!(marker["principal"], "dashboard");
}

#[tokio::test]
async fn gated_mode_refuses_without_a_session() {
    // A configured session provider makes even a loopback dashboard gated.
    let hash = hermes_gateway::auth::password::hash_password("pw").unwrap();
    let yaml = format!("dashboard: {{basic_auth: {{username: admin, password_hash: '{hash}'}}}}");
    let app = TestApp::spawn(&yaml, &[]).await;
    let s = app.status().await;
    assert_eq!(s["auth_required"], true, "status is public: {s}");
    let r = app
        .http
        .post(format!("{}/api/gateway/drain", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"].as_str(), v["login_url"].as_str()),
        (Some("unauthenticated"), Some("/login"))
    );
    assert_eq!(app.status().await["gateway_state"], "running");
}
