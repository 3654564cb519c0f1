//! `hermes-gateway drain begin|cancel|status|wait`.
//!
//! Locally (no `--url`) begin and cancel act on the marker in HERMES_HOME, which the running
//! gateway picks up within milliseconds; with `--url` they call the dashboard using
//! `HERMES_DASHBOARD_DRAIN_SECRET` (or `HERMES_DASHBOARD_SESSION_TOKEN`).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::{Client, ClientError};
use super::{DrainCommand, EXIT_FAILURE, Target};
use crate::clock::{Clock, SystemClock, iso};
use crate::config::Config;
use crate::lifecycle::Marker;

pub async fn command(config: &Config, cmd: DrainCommand) -> i32 {
    match cmd {
        DrainCommand::Begin(t) => change(config, &t, "drain").await,
        DrainCommand::Cancel(t) => change(config, &t, "cancel").await,
        DrainCommand::Status(t) => status(config, &t).await,
        DrainCommand::Wait { target, timeout } => wait(config, &target, timeout).await,
    }
}

fn cli_principal() -> String {
    use crate::config::Env;
    let user = crate::config::ProcessEnv
        .var("USER")
        .unwrap_or_else(|| "unknown".into());
    format!("cli:{user}")
}

async fn change(config: &Config, t: &Target, action: &str) -> i32 {
    let result = if t.url.is_some() {
        remote_change(config, t, action).await
    } else {
        local_change(config, action).map_err(|e| (EXIT_FAILURE, e))
    };
    match result {
        Ok(v) => {
            print_value(&v, t.json, |v| match action {
                "drain" => format!(
                    "drain requested at {}; new turns are refused, in-flight turns finish",
                    v["requested_at"].as_str().unwrap_or("?")
                ),
                _ => format!(
                    "drain cancelled (was draining: {}); turns are accepted again",
                    v["was_draining"]
                ),
            });
            0
        }
        Err((code, e)) => {
            eprintln!("hermes-gateway: {e}");
            code
        }
    }
}

/// Begins or cancels over HTTP; an error comes with its exit status.
async fn remote_change(config: &Config, t: &Target, action: &str) -> Result<Value, (i32, String)> {
    let client = Client::new(config, t.url.as_deref());
    if !client.has_credential() {
        return Err((
            EXIT_FAILURE,
            "a remote drain needs HERMES_DASHBOARD_DRAIN_SECRET (or HERMES_DASHBOARD_SESSION_TOKEN) in the environment"
                .into(),
        ));
    }
    let v = client
        .post("/api/gateway/drain", &json!({"action": action}))
        .await
        .map_err(|e| (e.exit_code(), e.to_string()))?;
    // A 200 that does not say the drain changed is not the gateway's answer (a proxy, a
    // wrong path): never report success on it.
    let confirmed = v["ok"] == true
        && v["action"] == action
        && match action {
            "drain" => v["draining"] == true && v["requested_at"].is_string(),
            _ => v["was_draining"].is_boolean(),
        };
    if !confirmed {
        let shown: String = v.to_string().chars().take(200).collect();
        return Err((
            EXIT_FAILURE,
            format!("the answer does not confirm the {action}: {shown}"),
        ));
    }
    Ok(v)
}

fn local_change(config: &Config, action: &str) -> Result<Value, String> {
    let clock = Arc::new(SystemClock);
    let marker = Marker::new(config.marker_path(), clock.clone());
    let path = marker.path().display().to_string();
    if action == "drain" {
        let now = clock.now();
        marker
            .write(now, &cli_principal())
            .map_err(|e| format!("cannot write the drain marker {path}: {e}"))?;
        Ok(
            json!({"ok": true, "action": "drain", "requested_at": iso(now), "draining": true, "marker": path}),
        )
    } else {
        let existed = marker
            .remove()
            .map_err(|e| format!("cannot remove the drain marker {path}: {e}"))?;
        Ok(json!({"ok": true, "action": "cancel", "was_draining": existed, "marker": path}))
    }
}

/// The drain picture: the authenticated detail when we hold a credential, else the
/// public status plus what the local marker says.
async fn fetch(config: &Config, client: &Client, local: bool) -> Result<Value, ClientError> {
    let mut v = if client.has_credential() {
        client.get("/api/gateway/drain", true).await
    } else {
        client.get("/api/status", false).await
    }?;
    if local && let Some(m) = Marker::new(config.marker_path(), Arc::new(SystemClock)).read() {
        v["marker_present"] = json!(true);
        v["requested_at"] = json!(iso(m.requested_at));
        v["principal"] = json!(m.principal);
    }
    Ok(v)
}

async fn status(config: &Config, t: &Target) -> i32 {
    let client = Client::new(config, t.url.as_deref());
    match fetch(config, &client, t.url.is_none()).await {
        Ok(v) => {
            print_value(&v, t.json, |v| {
                let mut line = format!(
                    "{}: {} turn(s) in flight",
                    v["gateway_state"].as_str().unwrap_or("unknown"),
                    v["active_agents"]
                );
                if let Some(p) = v["principal"].as_str() {
                    line.push_str(&format!(
                        "; drain requested by {p} at {}",
                        v["requested_at"].as_str().unwrap_or("?")
                    ));
                }
                line
            });
            0
        }
        Err(e) => {
            eprintln!("hermes-gateway: {e}");
            e.exit_code()
        }
    }
}

/// Polls until nothing is in flight (and the gateway is not simply running), or timeout.
async fn wait(config: &Config, t: &Target, timeout: f64) -> i32 {
    let client = Client::new(config, t.url.as_deref());
    let started = Instant::now();
    let limit = Duration::from_secs_f64(timeout.max(0.0));
    let live = std::io::stderr().is_terminal() && !t.json;
    loop {
        let snapshot = client.get("/api/status", false).await;
        let elapsed = started.elapsed();
        match &snapshot {
            Ok(v) => {
                let state = v["gateway_state"].as_str().unwrap_or("unknown");
                let active = v["active_agents"].as_u64().unwrap_or(0);
                if live {
                    eprint!(
                        "\r\x1b[K{state}: {active} turn(s) in flight, {:.1}s elapsed",
                        elapsed.as_secs_f64()
                    );
                    let _ = std::io::stderr().flush();
                }
                if active == 0 && state != "running" && state != "starting" {
                    if live {
                        eprintln!();
                    }
                    print_value(v, t.json, |_| {
                        format!(
                            "drained: no turns in flight after {:.1}s",
                            elapsed.as_secs_f64()
                        )
                    });
                    return 0;
                }
                if elapsed >= limit {
                    if live {
                        eprintln!();
                    }
                    let why = if state == "running" {
                        "the gateway is not draining (run `hermes-gateway drain begin` first)"
                            .to_owned()
                    } else {
                        format!("{active} turn(s) still in flight")
                    };
                    eprintln!("hermes-gateway: timed out after {timeout}s: {why}");
                    return EXIT_FAILURE;
                }
            }
            Err(e) => {
                if live {
                    eprintln!();
                }
                eprintln!("hermes-gateway: {e}");
                return EXIT_FAILURE;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_value(v: &Value, json: bool, human: impl FnOnce(&Value) -> String) {
    if json {
        println!("{v}");
    } else {
        println!("{}", human(v));
    }
}
