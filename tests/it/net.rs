//! Hostile network clients (SPEC §10, §4, §9, §2): headers that never finish, idle
//! keep-alive connections, more connections than the cap, oversized WebSocket frames, a
//! rebound DNS name on the keyless API server, login attempts through a proxy, and a
//! `--url` client pointed at something that is not the gateway.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

use crate::support::{TestApp, eventually};

/// Generous cap for anything the server should do within about a second.
const CAP: Duration = Duration::from_secs(10);

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes (EOF or reset); returns what arrived. Panics after `CAP`.
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(CAP, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: the server kept the connection open");
    got
}

/// One keep-alive request on `stream`; `None` if the server closed without answering.
async fn request(stream: &mut TcpStream, path: &str) -> Option<String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(CAP, async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    return Some(text);
                }
            }
        }
    })
    .await
    .expect("an answer or a close within the cap")
}

/// A new connection with one answered request on it (the server holds it afterwards).
async fn served(base: &str, path: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr(base)).await.unwrap();
    let answer = request(&mut stream, path).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    Some(stream)
}

/// Retries `served` until it succeeds (a freed slot is noticed asynchronously).
async fn served_eventually(base: &str, path: &str) -> TcpStream {
    eventually(CAP, "a connection slot to be freed", async || {
        served(base, path).await
    })
    .await
}

#[tokio::test]
async fn headers_that_never_finish_and_silent_clients_are_disconnected_on_both_listeners() {
    let app = TestApp::spawn("gateway: {connections: {header_timeout_seconds: 1}}", &[]).await;
    for base in [&app.api, &app.dash] {
        // Slowloris: a request line and one header, then nothing more.
        let mut slow = TcpStream::connect(addr(base)).await.unwrap();
        slow.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let got = read_until_closed(&mut slow, "unfinished headers").await;
        let answer = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "closed or 408, got {answer:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "not before the timeout"
        );
        // A client that connects and says nothing at all.
        let mut silent = TcpStream::connect(addr(base)).await.unwrap();
        read_until_closed(&mut silent, "a silent client").await;
    }
    // The server is fine afterwards.
    assert_eq!(app.status().await["gateway_state"], "running");
}

#[tokio::test]
async fn a_body_trickled_byte_by_byte_cannot_hold_its_connection_on_any_route() {
    // The routes that read their body before any credential is checked: chat (even with a
    // key), fires, and the dashboard's password login.
    let limits = "gateway: {connections: {header_timeout_seconds: 1}}";
    let app = TestApp::spawn(limits, &[("API_SERVER_KEY", "sk-slow-body-test")]).await;
    let gated = gated(limits).await;
    for (base, path) in [
        (&app.api, "/v1/chat/completions"),
        (&app.api, "/api/cron/fire"),
        (&gated.dash, "/auth/password-login"),
    ] {
        let mut slow = TcpStream::connect(addr(base)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 16000\r\n\r\n{{"
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        // One byte every 200 ms: far more often than any idle timeout would notice.
        let got = tokio::time::timeout(CAP, async {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                tokio::select! {
                    r = slow.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return got,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    },
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        if slow.write_all(b" ").await.is_err() {
                            return got;
                        }
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{path}: a trickled body held the connection past {CAP:?}"));
        let answer = String::from_utf8_lossy(&got);
        assert!(
            got.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{path}: closed or a 4xx, got {answer:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{path}: not before the timeout"
        );
    }
    assert_eq!(app.status().await["gateway_state"], "running");
    assert_eq!(gated.status().await["gateway_state"], "running");
}

#[tokio::test]
async fn a_request_head_over_64_kib_is_refused_with_431_before_the_header_timeout() {
    let app = TestApp::spawn("", &[]).await;
    let mut stream = TcpStream::connect(addr(&app.api)).await.unwrap();
    let filler = "a".repeat(100 * 1024);
    // The head never ends: the server must stop buffering it at its limit.
    let head = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: {filler}");
    let _ = stream.write_all(head.as_bytes()).await;
    let got = read_until_closed(&mut stream, "an oversized head").await;
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(app.chat("still fine").await.0, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_an_sse_stream_and_a_websocket_outlive_the_timeout()
 {
    let app = TestApp::spawn(
        "gateway: {connections: {header_timeout_seconds: 1}}\nagent: {echo: {delay_ms: 2500}}",
        &[("HERMES_DASHBOARD_SESSION_TOKEN", "tok-net-idle")],
    )
    .await;
    for (base, path) in [(&app.api, "/health"), (&app.dash, "/api/status")] {
        let mut idle = served(base, path).await.unwrap();
        read_until_closed(&mut idle, "an idle keep-alive connection").await;
    }
    let ws_url = format!(
        "{}/api/ws?token=tok-net-idle",
        app.dash.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    // A streamed turn that takes 2.5 s, over twice the header timeout.
    let (status, content, done) = app.chat_stream("still streaming").await;
    assert_eq!(
        (status, content.as_str(), done),
        (200, "still streaming", true)
    );
    // The socket, open all that time, still chats.
    socket
        .send(tungstenite::Message::Text(
            json!({"message": "hello"}).to_string().into(),
        ))
        .await
        .unwrap();
    let mut reply = String::new();
    while let Some(msg) = tokio::time::timeout(CAP, socket.next()).await.unwrap() {
        if let tungstenite::Message::Text(t) = msg.unwrap() {
            let v: Value = serde_json::from_str(&t).unwrap();
            match v["type"].as_str() {
                Some("delta") => reply.push_str(v["text"].as_str().unwrap_or_default()),
                Some("done") => break,
                Some("error") => panic!("{v}"),
                _ => {}
            }
        }
    }
    assert_eq!(reply, "hello");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_a_freed_slot_is_reused() {
    let app = TestApp::spawn("gateway: {connections: {max_per_listener: 2}}", &[]).await;
    let a = served(&app.api, "/health").await.expect("first");
    let _b = served(&app.api, "/health").await.expect("second");
    assert!(
        served(&app.api, "/health").await.is_none(),
        "a third connection is over the cap"
    );
    drop(a);
    let _c = served_eventually(&app.api, "/health").await;
}

#[tokio::test]
async fn websockets_count_against_the_cap_until_they_close() {
    let app = TestApp::spawn(
        "gateway: {connections: {max_per_listener: 2, header_timeout_seconds: 1}}",
        &[("HERMES_DASHBOARD_SESSION_TOKEN", "tok-net-cap")],
    )
    .await;
    let url = format!(
        "{}/api/events?token=tok-net-cap",
        app.dash.replacen("http://", "ws://", 1)
    );
    let open = || async { tokio_tungstenite::connect_async(url.clone()).await.ok() };
    let first = open().await.expect("first socket");
    // The harness's own pooled connection holds a slot until the 1 s header timeout ends it.
    let second = eventually(CAP, "a slot for a second socket", open).await;
    assert!(
        served(&app.dash, "/api/status").await.is_none(),
        "two open sockets fill the cap"
    );
    drop(first.0);
    drop(second);
    let _ok = served_eventually(&app.dash, "/api/status").await;
}

/// A masked client frame header announcing `len` payload bytes.
fn frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![0x80 | opcode, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    h
}

#[tokio::test]
async fn a_websocket_frame_over_64_kib_closes_the_socket_before_its_payload_is_read() {
    let app = TestApp::spawn("", &[("HERMES_DASHBOARD_SESSION_TOKEN", "tok-net-frame")]).await;
    for path in ["/api/ws", "/api/events"] {
        let mut stream = TcpStream::connect(addr(&app.dash)).await.unwrap();
        let upgrade = format!(
            "GET {path}?token=tok-net-frame HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(upgrade.as_bytes()).await.unwrap();
        let head = tokio::time::timeout(CAP, async {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "{path}: upgrade");
                head.push(byte[0]);
            }
            head
        })
        .await
        .unwrap_or_else(|_| panic!("{path}: no upgrade answer within {CAP:?}"));
        assert!(head.starts_with(b"HTTP/1.1 101"), "{path}");
        // A 100 KiB text frame: its header and the first 1 KiB, then the client waits. The
        // server must refuse on the header, not wait for (and buffer) the whole payload.
        stream
            .write_all(&frame_header(0x1, 100 * 1024))
            .await
            .unwrap();
        stream.write_all(&[b'a' ^ 1; 1024]).await.unwrap();
        read_until_closed(&mut stream, path).await;
    }
    assert_eq!(app.status().await["gateway_state"], "running");
    let url = format!(
        "{}/api/events?token=tok-net-frame",
        app.dash.replacen("http://", "ws://", 1)
    );
    assert!(tokio_tungstenite::connect_async(url).await.is_ok());
}

/// Sends `GET path` to `base` with this `Host` header (`None`: an HTTP/1.0 request without
/// one); returns (status, body).
async fn with_host(base: &str, method: &str, path: &str, host: Option<&str>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr(base)).await.unwrap();
    let req = match host {
        Some(h) => format!(
            "{method} {path} HTTP/1.1\r\nHost: {h}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        None => format!("{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
    };
    stream.write_all(req.as_bytes()).await.unwrap();
    let got = read_until_closed(&mut stream, "a Connection: close request").await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn the_keyless_api_server_refuses_a_rebound_dns_name() {
    let app = TestApp::spawn("", &[]).await;
    let port = app.api.rsplit(':').next().unwrap().to_owned();
    for path in ["/api/jobs", "/v1/models", "/health", "/v1/nope"] {
        let (status, body) = with_host(
            &app.api,
            "GET",
            path,
            Some(&format!("attacker.example:{port}")),
        )
        .await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "host_not_allowed", "{path}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let (status, body) = with_host(
        &app.api,
        "POST",
        "/v1/chat/completions",
        Some("attacker.example"),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("host_not_allowed"))
    );
    for host in [
        Some(format!("127.0.0.1:{port}")),
        Some(format!("localhost:{port}")),
        Some("LOCALHOST".to_owned()),
        Some(format!("[::1]:{port}")),
        Some("127.0.0.2".to_owned()),
        Some(format!("localhost.:{port}")),
        None,
    ] {
        let (status, body) = with_host(&app.api, "GET", "/api/jobs", host.as_deref()).await;
        assert_eq!(status, 200, "{host:?}: {body}");
    }
    for bad in [
        "attacker.example",
        "127.0.0.1.attacker.example",
        "localhost.attacker.example",
        "",
        // Not a plain host: userinfo, a path, or a second Host header (whichever a proxy
        // or the browser would read).
        "user@localhost",
        "localhost/evil",
        "localhost\r\nHost: attacker.example",
        "attacker.example\r\nHost: localhost",
    ] {
        let (status, _) = with_host(&app.api, "GET", "/health", Some(bad)).await;
        assert_eq!(status, 403, "Host {bad:?}");
    }
    // With a key the key is the guard: any name may be used.
    let keyed = TestApp::spawn("", &[("API_SERVER_KEY", "k-net-host")]).await;
    let (status, _) = with_host(&keyed.api, "GET", "/health", Some("gateway.example")).await;
    assert_eq!(status, 200);
}

/// A gated dashboard (the `basic` provider) with `yaml`.
async fn gated(yaml: &str) -> TestApp {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| hermes_gateway::auth::password::hash_password("right").unwrap());
    TestApp::spawn(
        yaml,
        &[
            ("HERMES_DASHBOARD_BASIC_AUTH_USERNAME", "admin"),
            ("HERMES_DASHBOARD_BASIC_AUTH_PASSWORD_HASH", hash),
        ],
    )
    .await
}

/// A failed login claiming to come from `xff`; the status.
async fn bad_login(app: &TestApp, xff: &str) -> u16 {
    app.http
        .post(format!("{}/auth/password-login", app.dash))
        .header("x-forwarded-for", xff)
        .json(&json!({"username": "admin", "password": "wrong"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_login_budget() {
    let app = gated("dashboard: {trusted_proxies: [127.0.0.1/32]}").await;
    for i in 0..10 {
        // A client-supplied entry to the left does not change who the proxy says it is.
        let xff = format!("192.0.2.{i}, 198.51.100.1");
        assert_eq!(bad_login(&app, &xff).await, 401, "attempt {}", i + 1);
    }
    assert_eq!(
        bad_login(&app, "198.51.100.1").await,
        429,
        "client A's 11th"
    );
    assert_eq!(
        bad_login(&app, "198.51.100.2").await,
        401,
        "client B is not limited"
    );
    let audit = app.audit_text();
    assert!(audit.contains("\"ip\":\"198.51.100.2\""), "{audit}");
}

#[tokio::test]
async fn without_trusted_proxies_a_forged_x_forwarded_for_does_not_escape_the_login_limit() {
    let app = gated("").await;
    for i in 0..10 {
        assert_eq!(bad_login(&app, &format!("192.0.2.{i}")).await, 401);
    }
    assert_eq!(bad_login(&app, "192.0.2.200").await, 429);
    // Every attempt is audited under the peer's address, none under a forged one.
    let failures: Vec<Value> = app
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "login_failure")
        .collect();
    assert_eq!(failures.len(), 11, "{failures:?}");
    assert!(
        failures.iter().all(|e| e["ip"] == "127.0.0.1"),
        "{failures:?}"
    );
    assert!(!app.audit_text().contains("192.0.2."));
}

/// A loopback HTTP server answering every request with `answer`; records each request's
/// credential headers. Returns its base URL and the record.
async fn recording_server(
    answer: axum::response::Response,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::response::IntoResponse;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (record, parts) = (seen.clone(), answer.into_parts());
    let (status, headers) = (parts.0.status, parts.0.headers);
    let app = axum::Router::new().fallback(move |h: axum::http::HeaderMap| {
        let (record, headers) = (record.clone(), headers.clone());
        async move {
            let credential = ["authorization", "x-hermes-session-token"]
                .iter()
                .filter_map(|name| h.get(*name).map(|v| format!("{name}: {v:?}")))
                .collect::<Vec<_>>()
                .join("; ");
            record.lock().unwrap().push(credential);
            (status, headers, "{\"ok\": true}").into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

fn cli_credentials() -> Vec<(&'static str, String)> {
    vec![
        (
            "HERMES_DASHBOARD_DRAIN_SECRET",
            crate::support::strong_secret(),
        ),
        ("HERMES_DASHBOARD_SESSION_TOKEN", "tok-net-cli".to_owned()),
    ]
}

async fn run_cli(args: Vec<String>) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        let env = cli_credentials();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::cli(home.path(), &args, &env, "")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_client_never_follows_a_redirect_with_its_credentials() {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let (elsewhere, seen_elsewhere) = recording_server(StatusCode::OK.into_response()).await;
    let target = format!("{elsewhere}/api/gateway/drain");
    let (redirector, seen_redirector) = recording_server(
        (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, target.clone())],
        )
            .into_response(),
    )
    .await;
    for args in [
        vec!["drain", "begin", "--url", &redirector],
        vec!["drain", "status", "--url", &redirector],
    ] {
        let (code, out, err) = run_cli(args.iter().map(|a| a.to_string()).collect()).await;
        assert_eq!(code, 1, "{args:?}: {out} {err}");
        assert!(
            err.contains("307") && err.contains(&target),
            "{args:?}: {err}"
        );
        assert!(!err.contains("tok-net-cli"), "{err}");
    }
    assert_eq!(
        seen_redirector.lock().unwrap().len(),
        2,
        "the gateway address was asked"
    );
    let leaked = seen_elsewhere.lock().unwrap().clone();
    assert!(leaked.is_empty(), "the redirect target got {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_client_refuses_to_send_credentials_over_plain_http_to_another_host() {
    for args in [
        vec!["drain", "begin", "--url", "http://192.0.2.1:9119"],
        vec!["drain", "cancel", "--url", "http://gateway.example:9119"],
        vec!["drain", "status", "--url", "http://192.0.2.1:9119"],
    ] {
        let started = std::time::Instant::now();
        let (code, out, err) = run_cli(args.iter().map(|a| a.to_string()).collect()).await;
        assert_eq!(code, 2, "{args:?}: {out} {err}");
        assert!(err.contains("refusing to send"), "{err}");
        assert!(err.contains("https://"), "says what to use instead: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused before any connection attempt"
        );
    }
    // Without a credential to protect, a plain-http status check still works as before
    // (here: nothing listens, so it is the ordinary "unreachable").
    let home = tempfile::tempdir().unwrap();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        crate::support::cli(
            home.path(),
            &["status", "--url", "http://127.0.0.1:9"],
            &[],
            "",
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_client_reports_no_success_on_an_answer_that_does_not_confirm_it() {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    // A 200 `{"ok": true}` from something that is not the gateway (a proxy, a wrong path).
    let (impostor, seen) = recording_server(StatusCode::OK.into_response()).await;
    for action in ["begin", "cancel"] {
        let (code, out, err) = run_cli(
            ["drain", action, "--url", &impostor]
                .iter()
                .map(|a| a.to_string())
                .collect(),
        )
        .await;
        assert_eq!(code, 1, "drain {action}: {out} {err}");
        assert!(err.contains("does not confirm"), "drain {action}: {err}");
    }
    assert_eq!(seen.lock().unwrap().len(), 2);
}
