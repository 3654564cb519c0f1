//! Dashboard auth and WebSockets (SPEC §9): gated mode with the `basic` provider and
//! cookie sessions, the login rate limit, single-use tickets (concurrency, the 30 s edge on
//! an injected clock, logout, two processes on one PostgreSQL), `?token=` and Origin rules,
//! live events and chat over real WebSockets, and the public-path prefix.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hermes_gateway::clock::ManualClock;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::support::{PATIENCE, Proc, TestApp, TestDatabase, eventually, matching};

const USER: &str = "admin";
const PASSWORD: &str = "correct horse battery staple";

/// The argon2id hash of [`PASSWORD`], made once per test binary.
fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hermes_gateway::auth::password::hash_password(PASSWORD).unwrap())
}

fn gated_env() -> [(&'static str, &'static str); 2] {
    [
        ("HERMES_DASHBOARD_BASIC_AUTH_USERNAME", USER),
        ("HERMES_DASHBOARD_BASIC_AUTH_PASSWORD_HASH", password_hash()),
    ]
}

async fn gated_app(yaml: &str) -> TestApp {
    TestApp::spawn(yaml, &gated_env()).await
}

/// Signs in; returns the `Cookie` header value.
async fn login(http: &reqwest::Client, dash: &str) -> String {
    let r = http
        .post(format!("{dash}/auth/password-login"))
        .json(&json!({"username": USER, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

async fn mint(http: &reqwest::Client, dash: &str, cookie: &str) -> String {
    let v: Value = http
        .post(format!("{dash}/api/auth/ws-ticket"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ttl_seconds"], 30, "{v}");
    v["ticket"].as_str().unwrap().to_owned()
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket; `Err((status, body))` if the upgrade was refused.
pub(crate) async fn connect(
    dash: &str,
    path_and_query: &str,
    origin: Option<&str>,
) -> Result<Socket, (u16, String)> {
    let url = format!("{}{path_and_query}", dash.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("websocket connect failed: {e}"),
    }
}

/// The next JSON text frame (5 s at most).
pub(crate) async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("the socket is open")
            .unwrap();
        if let tungstenite::Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test]
async fn gated_mode_signs_in_with_basic_and_keeps_sessions_in_the_store() {
    let app = gated_app("").await;
    let http = &app.http;
    let dash = &app.dash;
    // Public: status, providers, the login page; everything else wants a session.
    let v: Value = http
        .get(format!("{dash}/api/auth/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"providers": [{"name": "basic", "display_name": "Password", "supports_password": true}]})
    );
    let r = http.get(format!("{dash}/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<form id=\"login\">"));
    let r = http.get(format!("{dash}/api/jobs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["reason"].as_str(), v["login_url"].as_str()),
        (Some("no_session"), Some("/login"))
    );
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(format!("{dash}/")).send().await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (302, "/login")
    );

    // Wrong password, unknown user, bad body: refused, audited, nothing set.
    for (user, pass) in [(USER, "wrong"), ("root", PASSWORD)] {
        let r = http
            .post(format!("{dash}/auth/password-login"))
            .json(&json!({"username": user, "password": pass}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().get("set-cookie").is_none());
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "invalid_credentials"
        );
    }
    let r = http
        .post(format!("{dash}/auth/password-login"))
        .body("user=admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Sign in: an HttpOnly, SameSite=Lax cookie (no Secure over plain HTTP).
    let r = http
        .post(format!("{dash}/auth/password-login"))
        .json(&json!({"username": USER, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.starts_with("hermes_session=")
            && set.contains("HttpOnly")
            && set.contains("SameSite=Lax")
            && !set.contains("Secure"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let me: Value = http
        .get(format!("{dash}/api/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["user"]["id"].as_str(), me["mode"].as_str()),
        (Some(USER), Some("gated"))
    );
    // The compat fields (SPEC §9), `expires_at` in Unix seconds.
    assert_eq!(
        (
            &me["user_id"],
            &me["email"],
            &me["display_name"],
            &me["org_id"],
            &me["provider"]
        ),
        (
            &json!(USER),
            &Value::Null,
            &json!(USER),
            &Value::Null,
            &json!("basic")
        ),
        "{me}"
    );
    let expires = me["expires_at"].as_i64().expect("expires_at in seconds");
    let now = jiff::Timestamp::now().as_second();
    assert!(expires > now && expires <= now + 31 * 24 * 3600, "{me}");
    // A cookie-borne write from a foreign origin is refused (CSRF); nothing changes.
    let r = http
        .post(format!("{dash}/api/gateway/drain"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.status().await["gateway_state"], "running");
    // The session drives the dashboard: a drain is recorded under the user's name.
    let r = http
        .post(format!("{dash}/api/gateway/drain"))
        .header("cookie", &cookie)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.status().await["gateway_state"], "draining");
    let d: Value = http
        .get(format!("{dash}/api/gateway/drain"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["principal"], USER);
    // The page is served to a signed-in browser, without any session token in it.
    let page = http
        .get(format!("{dash}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("assets/app.js")
            && page.contains("name=\"hermes-session-token\" content=\"\"")
    );

    // Logout ends the session everywhere: an open chat socket says so at its next message,
    // the old cookie is refused and audited.
    let t = mint(http, dash, &cookie).await;
    let mut chat = connect(dash, &format!("/api/ws?ticket={t}"), Some(dash))
        .await
        .unwrap();
    let r = http
        .post(format!("{dash}/auth/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    chat.send(tungstenite::Message::Text("still there?".into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut chat).await["code"], "session_ended");
    let r = http
        .get(format!("{dash}/api/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["reason"],
        "invalid_session"
    );

    let audit = app.audit_text();
    assert!(!audit.contains(PASSWORD) && !audit.contains(cookie.split('=').nth(1).unwrap()));
    let events: Vec<String> = app
        .audit_events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    for want in [
        "login_failure",
        "login_success",
        "logout",
        "session_rejected",
    ] {
        assert!(
            events.iter().any(|e| e == want),
            "{want} missing from {events:?}"
        );
    }
}

#[tokio::test]
async fn the_eleventh_login_attempt_within_a_minute_is_429() {
    let app = gated_app("").await;
    for i in 0..10 {
        let r = app
            .http
            .post(format!("{}/auth/password-login", app.dash))
            .json(&json!({"username": USER, "password": "nope"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {}", i + 1);
    }
    // Even the right password is refused now: the limit counts attempts, not failures.
    let r = app
        .http
        .post(format!("{}/auth/password-login", app.dash))
        .json(&json!({"username": USER, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn tickets_are_single_use_bound_to_a_live_session_and_never_from_get() {
    let app = gated_app("").await;
    let (http, dash) = (&app.http, app.dash.as_str());
    // No session, or GET: no ticket.
    assert_eq!(
        http.post(format!("{dash}/api/auth/ws-ticket"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let cookie = login(http, dash).await;
    let r = http
        .get(format!("{dash}/api/auth/ws-ticket"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    let ticket = mint(http, dash, &cookie).await;
    assert!(ticket.len() >= 43, "256 bits: {ticket}");
    // A ticket opens the events socket once, which sends the status at once.
    let mut socket = connect(dash, &format!("/api/events?ticket={ticket}"), None)
        .await
        .unwrap();
    let first = next_json(&mut socket).await;
    assert_eq!(
        (
            first["type"].as_str(),
            first["status"]["gateway_state"].as_str()
        ),
        (Some("status"), Some("running"))
    );
    let (status, body) = connect(dash, &format!("/api/events?ticket={ticket}"), None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    assert!(
        body.contains("already used")
            && body.contains(&ticket[..8])
            && !body.contains(&ticket[..9]),
        "{body}"
    );

    // ?token= is never accepted in gated mode, whatever its value; unknown tickets fail.
    let (status, body) = connect(dash, "/api/events?token=anything", None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("token_not_accepted"), "{body}");
    let (status, _) = connect(dash, "/api/events?ticket=made-up-ticket-value", None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        connect(dash, "/api/events", None).await.err().unwrap().0,
        401
    );

    // A foreign Origin is refused even with a good ticket; the dashboard's own is fine.
    let t = mint(http, dash, &cookie).await;
    let (status, _) = connect(
        dash,
        &format!("/api/events?ticket={t}"),
        Some("https://evil.example"),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 403);
    let own = dash.to_owned();
    let t = mint(http, dash, &cookie).await;
    assert!(
        connect(dash, &format!("/api/events?ticket={t}"), Some(&own))
            .await
            .is_ok()
    );

    // A logged-out session's ticket is dead.
    let t = mint(http, dash, &cookie).await;
    http.post(format!("{dash}/auth/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let (status, body) = connect(dash, &format!("/api/ws?ticket={t}"), None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("session_ended"), "{body}");

    // Twenty concurrent redemptions of one ticket: exactly one opens.
    let cookie = login(http, dash).await;
    let t = mint(http, dash, &cookie).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (dash, t) = (dash.to_owned(), t.clone());
        tasks.push(tokio::spawn(async move {
            connect(&dash, &format!("/api/events?ticket={t}"), None)
                .await
                .is_ok()
        }));
    }
    let mut opened = 0;
    for task in tasks {
        opened += usize::from(task.await.unwrap());
    }
    assert_eq!(opened, 1);

    let audit = app.audit_text();
    assert!(
        !audit.contains(&ticket[..12]),
        "tickets never reach the audit log"
    );
    let rejected: Vec<String> = app
        .audit_events()
        .iter()
        .filter(|e| e["event"] == "ws_ticket_rejected")
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    for want in [
        "already_used",
        "token_not_accepted",
        "unknown",
        "foreign_origin",
        "session_ended",
        "missing_ticket",
    ] {
        assert!(
            rejected.iter().any(|r| r == want),
            "{want} missing from {rejected:?}"
        );
    }
    assert!(
        app.audit_events()
            .iter()
            .any(|e| e["event"] == "ws_ticket_minted")
    );
}

#[tokio::test]
async fn a_ticket_is_valid_at_30_seconds_and_dead_at_31() {
    let clock = ManualClock::new(jiff::Timestamp::now());
    let app = TestApp::spawn_with_clock("", &gated_env(), clock.clone()).await;
    let cookie = login(&app.http, &app.dash).await;
    let at_30 = mint(&app.http, &app.dash, &cookie).await;
    let at_31 = mint(&app.http, &app.dash, &cookie).await;
    clock.advance(Duration::from_secs(30));
    assert!(
        connect(&app.dash, &format!("/api/events?ticket={at_30}"), None)
            .await
            .is_ok()
    );
    clock.advance(Duration::from_secs(1));
    let (status, body) = connect(&app.dash, &format!("/api/events?ticket={at_31}"), None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn loopback_mode_serves_the_token_in_the_page_and_chats_and_streams_events() {
    let app = TestApp::spawn(
        "agent: {echo: {delay_ms: 1500}}",
        &[("HERMES_DASHBOARD_SESSION_TOKEN", "local-session-token-123")],
    )
    .await;
    let page = app
        .http
        .get(format!("{}/", app.dash))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("content=\"local-session-token-123\""),
        "the page carries the session token"
    );
    // No sign-in provider in loopback mode: the compat 503.
    let r = app
        .http
        .get(format!("{}/api/auth/providers", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "no auth providers registered"})
    );
    // An unknown /api route or method, with the session token, is a JSON 404/405.
    for (method, path, want) in [
        (reqwest::Method::GET, "/api/no-such-route", 404),
        (reqwest::Method::DELETE, "/api/status", 405),
    ] {
        let r = app
            .http
            .request(method.clone(), format!("{}{path}", app.dash))
            .header("x-hermes-session-token", "local-session-token-123")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["detail"].as_str().unwrap().contains(path), "{v}");
    }
    // Only under its own names: a rebound DNS name gets nothing, not even the page.
    let port = app.dash.rsplit(':').next().unwrap().to_owned();
    for (host, want) in [
        (format!("evil.example:{port}"), 403),
        (format!("localhost:{port}"), 200),
    ] {
        let r = app
            .http
            .get(format!("{}/", app.dash))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{host}");
    }
    let js = app
        .http
        .get(format!("{}/assets/app.js", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        connect(&app.dash, "/api/events?token=wrong", None)
            .await
            .is_err()
    );
    // The page's way: a ticket minted with the session token opens a socket, once.
    let v: Value = app
        .http
        .post(format!("{}/api/auth/ws-ticket", app.dash))
        .header("x-hermes-session-token", "local-session-token-123")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = v["ticket"].as_str().unwrap();
    assert!(
        connect(&app.dash, &format!("/api/events?ticket={t}"), None)
            .await
            .is_ok()
    );
    assert!(
        connect(&app.dash, &format!("/api/events?ticket={t}"), None)
            .await
            .is_err()
    );

    // Live events: the status, then the drain change, then the audit record of it.
    let mut events = connect(&app.dash, "/api/events?token=local-session-token-123", None)
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut events).await["status"]["gateway_state"],
        "running"
    );
    app.state.drain.begin("operator").unwrap();
    let (mut saw_status, mut saw_audit) = (false, false);
    eventually(
        PATIENCE,
        "the draining status and its audit record",
        async || {
            let v = next_json(&mut events).await;
            if v["type"] == "status" && v["status"]["gateway_state"] == "draining" {
                assert_eq!(v["drain"]["principal"], "operator");
                saw_status = true;
            }
            saw_audit |= v["type"] == "audit" && v["event"] == "drain_begin";
            matching(v, |_| saw_status && saw_audit)
        },
    )
    .await;

    // Chat through the gate: refused while draining, with a clear message...
    let mut chat = connect(&app.dash, "/api/ws?token=local-session-token-123", None)
        .await
        .unwrap();
    chat.send(tungstenite::Message::Text(
        json!({"message": "hello there"}).to_string().into(),
    ))
    .await
    .unwrap();
    let refused = next_json(&mut chat).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("gateway_draining"))
    );
    assert!(refused["message"].as_str().unwrap().contains("draining"));
    // ...then streamed back once the drain is cancelled; the turn counts as in flight.
    app.state.drain.cancel("operator").unwrap();
    chat.send(tungstenite::Message::Text("hello there".into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut chat).await["type"], "start");
    // The turn's start event and a status with it in flight, in whichever order.
    let (mut started, mut busy) = (false, false);
    eventually(PATIENCE, "the turn's start and a busy status", async || {
        let v = next_json(&mut events).await;
        started |= v["type"] == "turn" && v["phase"] == "started";
        if v["type"] == "status" && v["status"]["active_agents"] == 1 {
            assert_eq!(v["status"]["gateway_busy"], true);
            busy = true;
        }
        matching(v, |_| started && busy)
    })
    .await;
    let mut text = String::new();
    loop {
        let v = next_json(&mut chat).await;
        match v["type"].as_str() {
            Some("delta") => text.push_str(v["text"].as_str().unwrap()),
            Some("done") => break,
            other => panic!("unexpected frame {other:?}: {v}"),
        }
    }
    assert_eq!(text, "hello there");
    eventually(PATIENCE, "a status with no turn in flight", async || {
        matching(next_json(&mut events).await, |v| {
            v["type"] == "status" && v["status"]["active_agents"] == 0
        })
    })
    .await;
}

#[tokio::test]
async fn behind_a_path_prefix_the_login_links_carry_it() {
    let app = gated_app("dashboard: {public_url: 'https://agents.example/hermes/'}").await;
    let r = app
        .http
        .get(format!("{}/api/jobs", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["login_url"],
        "/hermes/login"
    );
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(format!("{}/", app.dash))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/hermes/login");
    // Over HTTPS (per public_url) the cookie is Secure; the public origin may open sockets.
    let r = app
        .http
        .post(format!("{}/auth/password-login", app.dash))
        .json(&json!({"username": USER, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("; Secure"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let t = mint(&app.http, &app.dash, &cookie).await;
    assert!(
        connect(
            &app.dash,
            &format!("/api/events?ticket={t}"),
            Some("https://agents.example")
        )
        .await
        .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_minted_on_one_process_opens_once_on_another() {
    let db = TestDatabase::create().await;
    let mut env = gated_env().to_vec();
    env.push(("HERMES_DATABASE_URL", db.url()));
    let (home_a, home_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Proc::start(home_a.path(), "", &env);
    let b = Proc::start(home_b.path(), "", &env);
    let http = reqwest::Client::new();
    a.wait_running().await;
    b.wait_running().await;
    // Signed in on A; the session works on B too (it lives in the store).
    let cookie = login(&http, &a.dash).await;
    let me = http
        .get(format!("{}/api/auth/me", b.dash))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let t = mint(&http, &a.dash, &cookie).await;
    let mut socket = connect(&b.dash, &format!("/api/events?ticket={t}"), None)
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "status");
    assert_eq!(
        connect(&a.dash, &format!("/api/events?ticket={t}"), None)
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        connect(&b.dash, &format!("/api/events?ticket={t}"), None)
            .await
            .err()
            .unwrap()
            .0,
        401
    );
}

#[tokio::test]
async fn idle_sockets_are_pinged() {
    let app = TestApp::spawn(
        "dashboard: {ws_heartbeat_seconds: 1}",
        &[("HERMES_DASHBOARD_SESSION_TOKEN", "tok-heartbeat")],
    )
    .await;
    for path in ["/api/events", "/api/ws"] {
        let mut socket = connect(&app.dash, &format!("{path}?token=tok-heartbeat"), None)
            .await
            .unwrap();
        let ping = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                if let Some(Ok(tungstenite::Message::Ping(_))) = socket.next().await {
                    return;
                }
            }
        })
        .await;
        assert!(ping.is_ok(), "{path}: no ping within 3 s");
    }
}
