//! The real binary: signals, restarts, exit codes and the CLI.

use std::time::Duration;

use serde_json::{Value, json};

use crate::responses::{announced_id, event_kinds};
use crate::support::{PATIENCE, Proc, cli, eventually_every, free_port, parse_sse, strong_secret};

async fn post_chat(
    http: &reqwest::Client,
    api: &str,
    text: &str,
    stream: bool,
) -> reqwest::Response {
    http.post(format!("{api}/v1/chat/completions"))
        .json(&json!({"stream": stream, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_drain_then_restart_is_still_draining_before_the_first_turn() {
    let home = tempfile::tempdir().unwrap();
    let secret = strong_secret();
    let env = [("HERMES_DASHBOARD_DRAIN_SECRET", secret.as_str())];
    let http = reqwest::Client::new();
    let mut p = Proc::start(home.path(), "", &env);
    p.wait_ready().await;
    let r = http
        .post(format!("{}/api/gateway/drain", p.dash))
        .bearer_auth(&secret)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    p.child.kill().unwrap();
    p.child.wait().unwrap();

    // Restart on fresh ports and fire the very first request as soon as the port opens
    // (probing every 2 ms, to catch a port that opens before the marker is in force).
    let (api, dash) = (free_port(), free_port());
    let yaml = format!("gateway: {{api_server: {{port: {api}}}}}\ndashboard: {{port: {dash}}}\n");
    let p2 = Proc::start_raw(home.path(), &yaml, &env, api, dash);
    let first = eventually_every(
        Duration::from_millis(2),
        PATIENCE,
        "the restarted gateway to answer its first turn",
        async || {
            http.post(format!("{}/v1/chat/completions", p2.api))
                .json(&json!({"messages": [{"role": "user", "content": "first"}]}))
                .send()
                .await
        },
    )
    .await;
    assert_eq!(
        first.status(),
        503,
        "the first turn after restart was accepted"
    );
    assert_eq!(
        first.json::<Value>().await.unwrap()["error"]["code"],
        "gateway_draining"
    );
    assert_eq!(p2.wait_ready().await["gateway_state"], "draining");
    let r = http
        .post(format!("{}/api/gateway/drain", p2.dash))
        .bearer_auth(&secret)
        .body(r#"{"action":"cancel"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["was_draining"], true);
    assert_eq!(post_chat(&http, &p2.api, "x", false).await.status(), 200);
    let log = p2.stderr();
    assert!(!log.contains(&secret), "the secret reached the log");
    assert!(
        !std::fs::read_to_string(home.path().join("logs/dashboard-auth.log"))
            .unwrap()
            .contains(&secret)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_turns_finish_refuses_new_ones_and_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let mut p = Proc::start(home.path(), "agent: {echo: {delay_ms: 1500}}", &[]);
    let http = reqwest::Client::new();
    p.wait_ready().await;
    let (api, h) = (p.api.clone(), http.clone());
    let streaming = tokio::spawn(async move {
        post_chat(&h, &api, "finish me please", true)
            .await
            .text()
            .await
            .unwrap()
    });
    let (api, h) = (p.api.clone(), http.clone());
    let plain = tokio::spawn(async move {
        post_chat(&h, &api, "and me too", false)
            .await
            .json::<Value>()
            .await
            .unwrap()
    });
    p.wait_status(|s| s["active_agents"] == 2).await;
    p.signal("TERM");
    // The turns take 1.5 s: the gateway stays `stopping` while they finish.
    p.wait_status(|s| s["gateway_state"] == "stopping").await;
    let r = post_chat(&http, &p.api, "late", false).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "gateway_draining"
    );
    assert_eq!(
        parse_sse(&streaming.await.unwrap()),
        ("finish me please".to_owned(), true)
    );
    assert_eq!(
        plain.await.unwrap()["choices"][0]["message"]["content"],
        "and me too"
    );
    let code = p.wait_exit().await;
    assert_eq!(code, 0, "{}", p.stderr());
    let state: Value =
        serde_json::from_slice(&std::fs::read(home.path().join("gateway_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["gateway_state"], "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_cancels_what_is_left_and_sigusr1_exits_75() {
    let home = tempfile::tempdir().unwrap();
    let mut p = Proc::start(
        home.path(),
        "agent: {echo: {delay_ms: 30000}, restart_drain_timeout: 0.5}",
        &[],
    );
    let http = reqwest::Client::new();
    p.wait_ready().await;
    let (api, h) = (p.api.clone(), http.clone());
    let stuck = tokio::spawn(async move {
        post_chat(&h, &api, "never finishes in time", true)
            .await
            .text()
            .await
            .unwrap_or_default()
    });
    p.wait_status(|s| s["active_agents"] == 1).await;
    let started = std::time::Instant::now();
    p.signal("USR1");
    let code = p.wait_exit().await;
    assert_eq!(code, 75, "{}", p.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the deadline was not enforced"
    );
    let (_, done) = parse_sse(&stuck.await.unwrap());
    assert!(!done, "a cancelled turn must not claim completion");
}

/// A streamed response still running when SIGTERM's drain deadline passes ends with
/// `response.incomplete` (the client is told, not left hanging), and is kept as
/// incomplete, with the reason, for the next process to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_cut_by_the_shutdown_deadline_ends_incomplete_and_is_kept() {
    let home = tempfile::tempdir().unwrap();
    let config = "agent: {echo: {delay_ms: 30000}, restart_drain_timeout: 0.5}";
    let mut p = Proc::start(home.path(), config, &[]);
    p.wait_ready().await;
    let http = reqwest::Client::new();
    let mut stream = http
        .post(format!("{}/v1/responses", p.api))
        .json(&json!({"input": "never finishes in time", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut body = String::from_utf8(stream.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    p.wait_status(|s| s["active_agents"] == 1).await;
    p.signal("TERM");
    let rest = tokio::time::timeout(PATIENCE, stream.text()).await;
    body.push_str(&rest.expect("the stream never ended").unwrap_or_default());
    p.wait_exit().await;
    // The first event announces the response (its id), the last one ends it.
    let id = announced_id(&body);
    assert_eq!(
        event_kinds(&body).last().map(String::as_str),
        Some("response.incomplete"),
        "{body}"
    );

    let again = Proc::start(home.path(), config, &[]);
    again.wait_ready().await;
    let got: Value = http
        .get(format!("{}/v1/responses/{id}", again.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "incomplete", "{got}");
    assert_eq!(
        got["incomplete_details"],
        json!({"reason": "interrupted"}),
        "{got}"
    );
}

/// A drain secret refused by the entropy gate is logged with the reason at start (never
/// the secret), not only shown by `config check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_drain_secret_is_logged_as_rejected_at_start() {
    let home = tempfile::tempdir().unwrap();
    let weak = "weakweakweak";
    let mut p = Proc::start(home.path(), "", &[("HERMES_DASHBOARD_DRAIN_SECRET", weak)]);
    p.wait_ready().await;
    p.signal("TERM");
    p.wait_exit().await;
    let log = p.stderr();
    assert!(
        log.contains("HERMES_DASHBOARD_DRAIN_SECRET rejected"),
        "{log}"
    );
    assert!(!log.contains(weak), "the secret reached the log: {log}");
}

#[test]
fn bad_config_exits_78_naming_every_problem() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.yaml"),
        "agent: {backend: gpt}\ngateway: {api_server: {port: nope}}\nsurprise: 1\n",
    )
    .unwrap();
    for args in [&["run"][..], &["config", "check"][..]] {
        let (code, _, err) = cli(home.path(), args, &[], "");
        assert_eq!(code, 78, "{args:?}: {err}");
        for path in ["agent.backend", "gateway.api_server.port", "surprise"] {
            assert!(err.contains(path), "{args:?} did not name {path}: {err}");
        }
    }
    let (code, out, _) = cli(home.path(), &["config", "check", "--json"], &[], "");
    assert_eq!(code, 78);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["problems"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (code, _, err) = cli(home.path(), &["run"], &[("API_SERVER_PORT", "x")], "");
    assert_eq!(code, 78);
    assert!(err.contains("API_SERVER_PORT"));
    let (code, _, _) = cli(home.path(), &["drain", "explode"], &[], "");
    assert_eq!(code, 2, "usage errors exit 2");
}

#[test]
fn config_show_redacts_secrets_and_explains_providers() {
    let home = tempfile::tempdir().unwrap();
    let strong = strong_secret();
    let (code, out, _) = cli(
        home.path(),
        &["config", "show", "--json"],
        &[
            ("HERMES_DASHBOARD_DRAIN_SECRET", &strong),
            ("API_SERVER_KEY", "sk-visible?"),
        ],
        "",
    );
    assert_eq!(code, 0);
    assert!(
        !out.contains(&strong) && !out.contains("sk-visible?"),
        "{out}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["providers"][0]["registered"], true);
    // A secret too short to use: named as such, its value never printed (a value that
    // cannot be mistaken for a word of the message).
    let (code, out, _) = cli(
        home.path(),
        &["config", "check"],
        &[("HERMES_DASHBOARD_DRAIN_SECRET", "xyzzy-7")],
        "",
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("drain-secret: skipped") && out.contains("too short"),
        "{out}"
    );
    assert!(
        !out.contains("xyzzy-7"),
        "the rejected secret was printed: {out}"
    );
}

#[test]
fn secret_generate_passes_and_weak_secrets_fail_the_check() {
    let home = tempfile::tempdir().unwrap();
    let (code, out, _) = cli(home.path(), &["secret", "generate"], &[], "");
    assert_eq!(code, 0);
    let secret = out.trim().to_owned();
    assert_eq!(secret.len(), 43);
    assert_eq!(
        cli(home.path(), &["secret", "check", "--stdin"], &[], &secret).0,
        0
    );
    assert_eq!(
        cli(
            home.path(),
            &["secret", "check"],
            &[("HERMES_DASHBOARD_DRAIN_SECRET", &secret)],
            ""
        )
        .0,
        0
    );
    let (code, out, _) = cli(
        home.path(),
        &["secret", "check", "--stdin"],
        &[],
        &"ab".repeat(40),
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("rejected") && !out.contains(&"ab".repeat(40)),
        "{out}"
    );
    assert_eq!(
        cli(home.path(), &["secret", "check"], &[], "").0,
        1,
        "unset is not ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drain_begin_status_wait_cancel() {
    let home = tempfile::tempdir().unwrap();
    let p = Proc::start(home.path(), "agent: {echo: {delay_ms: 1200}}", &[]);
    let http = reqwest::Client::new();
    p.wait_ready().await;
    let h = home.path().to_path_buf();
    let run = move |args: &'static [&'static str]| {
        let h = h.clone();
        tokio::task::spawn_blocking(move || cli(&h, args, &[], ""))
    };
    let (api, hc) = (p.api.clone(), http.clone());
    let turn = tokio::spawn(async move { post_chat(&hc, &api, "slow", false).await.status() });
    p.wait_status(|s| s["active_agents"] == 1).await;
    // `run` commands read the dashboard port from config.yaml written by Proc::start.
    let (code, out, err) = run(&["drain", "begin", "--json"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["action"],
        "drain"
    );
    let (code, out, _) = run(&["drain", "wait", "--timeout", "0.2"]).await.unwrap();
    assert_eq!(
        code, 1,
        "a wait that times out with a turn in flight fails: {out}"
    );
    let (code, out, err) = run(&["drain", "status", "--json"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["gateway_state"].as_str(), v["marker_present"].as_bool()),
        (Some("draining"), Some(true))
    );
    let (code, _, err) = run(&["drain", "wait", "--timeout", "10"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(turn.await.unwrap(), 200);
    let (code, out, _) = run(&["status", "--json"]).await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["active_agents"],
        0
    );
    let (code, out, _) = run(&["drain", "cancel", "--json"]).await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["was_draining"],
        true
    );
    p.wait_running().await;
    let events = std::fs::read_to_string(home.path().join("logs/dashboard-auth.log")).unwrap();
    assert!(events.contains("\"principal\":\"cli:"), "{events}");
    drop(p);
}
