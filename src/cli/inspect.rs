//! `status`, `config check|show` and `secret check`.

use std::io::Read;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::client::Client;
use super::{EXIT_FAILURE, Target};
use crate::auth::{DashboardAuth, assess_secret_strength};
use crate::config::{Config, ConfigError, EXIT_CONFIG, LogFormat};

pub async fn status(config: &Config, t: &Target) -> i32 {
    let client = Client::new(config, t.url.as_deref());
    match client.get("/api/status", false).await {
        Ok(v) => {
            if t.json {
                println!("{v}");
            } else {
                println!(
                    "hermes-gateway {} at {}\n  state:           {}\n  active turns:    {}\n  active sessions: {}\n  auth providers:  {}\n  updated:         {}",
                    v["version"].as_str().unwrap_or("?"),
                    client.base(),
                    v["gateway_state"].as_str().unwrap_or("?"),
                    v["active_agents"],
                    v["active_sessions"],
                    v["auth_providers"],
                    v["gateway_updated_at"].as_str().unwrap_or("?"),
                );
            }
            0
        }
        Err(e) => {
            // Fall back to what the last run recorded, so "stopped" is still an answer.
            let recorded = crate::files::read_regular(
                &config.state_path(),
                crate::lifecycle::status::MAX_STATE_FILE_BYTES,
            )
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            if t.json {
                println!(
                    "{}",
                    json!({"reachable": false, "error": e.to_string(), "recorded": recorded})
                );
            } else {
                eprintln!("hermes-gateway: {e}");
                if let Some(r) = recorded {
                    eprintln!(
                        "last recorded state: {} (updated {})",
                        r["gateway_state"].as_str().unwrap_or("?"),
                        r["updated_at"].as_str().unwrap_or("?")
                    );
                }
            }
            EXIT_FAILURE
        }
    }
}

fn redacted(s: &Option<SecretString>) -> Value {
    match s {
        Some(_) => json!("(set, redacted)"),
        None => Value::Null,
    }
}

/// The effective config as JSON, secrets redacted, with provider statuses.
pub fn effective(config: &Config) -> Value {
    let (_, providers) = crate::app::token_auth(config);
    let c = config;
    let mode = if DashboardAuth::from_config(config).is_gated() {
        "gated"
    } else {
        "loopback"
    };
    let cron_provider =
        match crate::chronos::reconcile::usable(c.cron.provider, &c.cron.chronos, &c.secrets) {
            Ok(Some(_)) => "chronos".to_owned(),
            Ok(None) => "builtin ticker".to_owned(),
            Err(why) => format!("builtin ticker ({why})"),
        };
    json!({
        "home": c.home,
        "agent": {
            "backend": c.agent.backend.as_str(),
            "restart_drain_timeout": c.agent.restart_drain_timeout,
            "echo": {"delay_ms": c.agent.echo.delay_ms},
            "openai": {"base_url": c.agent.openai.base_url, "api_key_env": c.agent.openai.api_key_env, "model": c.agent.openai.model},
            "command": {"argv": c.agent.command.argv, "timeout_seconds": c.agent.command.timeout_seconds, "workdir": c.agent.command.workdir, "env": c.agent.command.env},
        },
        "gateway": {"api_server": {
            "enabled": c.api_server.enabled, "host": c.api_server.host, "port": c.api_server.port,
            "key": redacted(&c.secrets.api_server_key),
            "cors_origins": c.api_server.cors_origins, "model_name": c.api_server.model_name,
            "max_stored_responses": c.api_server.max_stored_responses,
        }},
        "dashboard": {
            "enabled": c.dashboard.enabled, "host": c.dashboard.host, "port": c.dashboard.port,
            "public_url": c.dashboard.public_url, "allowed_origins": c.dashboard.allowed_origins,
            "ws_heartbeat_seconds": c.dashboard.ws_heartbeat_seconds,
            "drain_auth": {"scope": c.dashboard.drain_auth.scope, "min_secret_chars": c.dashboard.drain_auth.min_secret_chars},
            "basic_auth": {
                "username": c.dashboard.basic_auth.username,
                "password_hash": if c.dashboard.basic_auth.password_hash.is_empty() { Value::Null } else { json!("(set, redacted)") },
                "secret": redacted(&c.secrets.basic_auth_secret),
                "session_ttl_seconds": c.dashboard.basic_auth.session_ttl_seconds,
            },
            "auth_mode": mode,
        },
        "drain": {"marker_max_age_seconds": c.drain.marker_max_age_seconds},
        "cron": {
            "provider": c.cron.provider.as_str(), "timezone": c.cron.timezone_name,
            "tick_interval_seconds": c.cron.tick_interval_seconds,
            "chronos": {
                "portal_url": c.cron.chronos.portal_url, "callback_url": c.cron.chronos.callback_url,
                "expected_audience": c.cron.chronos.expected_audience, "nas_jwks_url": c.cron.chronos.nas_jwks_url,
                "nas_public_keys": c.cron.chronos.nas_public_keys.len(),
            },
        },
        "storage": {"url": redacted(&c.storage.url), "kind": if c.storage.url.is_some() { "postgres" } else { "sqlite" }},
        "logging": {"format": match c.logging.format { LogFormat::Text => "text", LogFormat::Json => "json" }, "level": c.logging.level},
        "secrets": {
            "API_SERVER_KEY": redacted(&c.secrets.api_server_key),
            "HERMES_DASHBOARD_DRAIN_SECRET": redacted(&c.secrets.drain_secret),
            "HERMES_DASHBOARD_DRAIN_SECRET_NEXT": redacted(&c.secrets.drain_secret_next),
            "HERMES_DASHBOARD_SESSION_TOKEN": redacted(&c.secrets.session_token),
            "HERMES_NOUS_ACCESS_TOKEN": redacted(&c.secrets.nous_access_token),
        },
        "providers": providers.iter().map(|p| json!({"name": p.name, "registered": p.registered, "detail": p.detail})).collect::<Vec<_>>(),
        "cron_runner": cron_provider,
    })
}

pub fn config_check(config: &Config, json: bool) -> i32 {
    let v = effective(config);
    if json {
        println!(
            "{}",
            json!({"ok": true, "providers": v["providers"], "cron_runner": v["cron_runner"]})
        );
    } else {
        println!("config ok ({})", config.home.display());
        print_providers(&v);
    }
    0
}

pub fn config_error_json(e: &ConfigError) -> Value {
    let problems: Vec<Value> = match e {
        ConfigError::Invalid(issues) => issues
            .iter()
            .map(|i| json!({"path": i.path, "message": i.message}))
            .collect(),
        other => vec![json!({"path": null, "message": other.to_string()})],
    };
    json!({"ok": false, "exit_code": EXIT_CONFIG, "problems": problems})
}

pub fn config_show(config: &Config, json: bool) -> i32 {
    let v = effective(config);
    if json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    0
}

fn print_providers(v: &Value) {
    for p in v["providers"].as_array().into_iter().flatten() {
        let state = if p["registered"] == true {
            "registered"
        } else {
            "skipped"
        };
        println!(
            "  provider {}: {state}: {}",
            p["name"].as_str().unwrap_or("?"),
            p["detail"].as_str().unwrap_or("")
        );
    }
    println!("  cron: {}", v["cron_runner"].as_str().unwrap_or("?"));
}

pub fn secret_check(config: &Config, stdin: bool) -> i32 {
    let min = config.dashboard.drain_auth.min_secret_chars;
    let candidates: Vec<(&str, Option<SecretString>)> = if stdin {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("hermes-gateway: cannot read standard input: {e}");
            return EXIT_FAILURE;
        }
        vec![("stdin", Some(SecretString::from(text.trim().to_owned())))]
    } else {
        vec![
            (
                "HERMES_DASHBOARD_DRAIN_SECRET",
                config.secrets.drain_secret.clone(),
            ),
            (
                "HERMES_DASHBOARD_DRAIN_SECRET_NEXT",
                config.secrets.drain_secret_next.clone(),
            ),
        ]
    };
    let mut code = 0;
    for (name, secret) in candidates {
        match secret {
            None if name.ends_with("_NEXT") => {}
            None => {
                println!("{name}: not set");
                code = EXIT_FAILURE;
            }
            Some(s) => match assess_secret_strength(s.expose_secret(), min) {
                Ok(()) => println!("{name}: ok (passes the entropy gate)"),
                Err(reason) => {
                    println!("{name}: rejected: {reason}");
                    code = EXIT_FAILURE;
                }
            },
        }
    }
    code
}
