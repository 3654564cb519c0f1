//! What the environment contributes: the [`Env`] source itself, the overrides with their
//! compat names (`API_SERVER_PORT`, `HERMES_DATABASE_URL`, ...) and the secrets, which
//! come only from here.
//!
//! An override replaces the file's value before any check of the effective value runs
//! (`checks`); one that cannot be parsed is reported under the variable's name.

use std::collections::HashMap;

use secrecy::SecretString;

use super::tree::Reader;
use super::{ApiServerConfig, DashboardConfig, Secrets};

/// Where environment variables come from; a trait so tests never touch the process env.
pub trait Env {
    /// Returns the variable's value, treating an empty value as unset.
    fn var(&self, name: &str) -> Option<String>;

    /// Every variable whose name starts with `prefix` (empty values left out), sorted by
    /// name; how the `command` agent's `LC_*` locale variables are found.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out: Vec<_> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, v)| k.starts_with(prefix) && !v.is_empty())
            .collect();
        out.sort();
        out
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out: Vec<_> = self
            .iter()
            .filter(|(k, v)| k.starts_with(prefix) && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort();
        out
    }
}

impl Reader {
    /// Applies the environment overrides (compat names) to the values read from the file.
    pub(super) fn env_overrides(
        &mut self,
        env: &dyn Env,
        api: &mut ApiServerConfig,
        dashboard: &mut DashboardConfig,
        storage_url: &mut Option<String>,
    ) {
        if let Some(v) = env.var("API_SERVER_ENABLED") {
            match parse_bool(&v) {
                Some(b) => api.enabled = b,
                None => self.issue(
                    "API_SERVER_ENABLED",
                    format!("expected true or false, got {v:?}"),
                ),
            }
        }
        let trimmed = |name: &str| env.var(name).map(|v| v.trim().to_owned());
        if let Some(v) = trimmed("API_SERVER_HOST") {
            api.host = v;
        }
        if let Some(v) = env.var("API_SERVER_PORT") {
            match v.trim().parse::<u16>() {
                Ok(p) => api.port = p,
                Err(_) => self.issue(
                    "API_SERVER_PORT",
                    format!("expected a port number from 0 to 65535, got {v:?}"),
                ),
            }
        }
        if let Some(v) = env.var("API_SERVER_CORS_ORIGINS") {
            api.cors_origins = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = trimmed("API_SERVER_MODEL_NAME") {
            api.model_name = v;
        }
        if let Some(v) = trimmed("HERMES_DASHBOARD_PUBLIC_URL") {
            dashboard.public_url = v;
        }
        if let Some(v) = trimmed("HERMES_DASHBOARD_BASIC_AUTH_USERNAME") {
            dashboard.basic_auth.username = v;
        }
        if let Some(v) = trimmed("HERMES_DASHBOARD_BASIC_AUTH_PASSWORD_HASH") {
            dashboard.basic_auth.password_hash = v;
        }
        if let Some(v) = trimmed("HERMES_DATABASE_URL") {
            *storage_url = Some(v);
        }
    }
}

impl Reader {
    /// `HERMES_LOG_FORMAT` replaces `logging.format`. (`RUST_LOG` replaces the level when
    /// logging starts, as `tracing`'s own variable; it is checked here like the level.)
    pub(super) fn log_format_override(
        &mut self,
        env: &dyn Env,
        logging: &mut super::LoggingConfig,
    ) {
        if let Some(v) = env.var("HERMES_LOG_FORMAT") {
            match super::LogFormat::parse(&v) {
                Some(f) => logging.format = f,
                None => self.issue(
                    "HERMES_LOG_FORMAT",
                    format!("expected text or json, got {v:?}"),
                ),
            }
        }
        if let Some(v) = env.var("RUST_LOG").filter(|v| !v.trim().is_empty())
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(&v)
        {
            self.issue("RUST_LOG", format!("not a log filter ({e}): {v:?}"));
        }
    }
}

/// The compat spellings of a boolean in the environment.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The credentials, read only from the environment; `openai_key_env` names the variable
/// holding the `openai` backend's upstream key (empty = none).
pub(super) fn secrets(env: &dyn Env, openai_key_env: &str) -> Secrets {
    let secret = |name: &str| env.var(name).map(SecretString::from);
    let trimmed = |name: &str| {
        env.var(name)
            .map(|v| SecretString::from(v.trim().to_owned()))
    };
    Secrets {
        api_server_key: secret("API_SERVER_KEY"),
        drain_secret: trimmed("HERMES_DASHBOARD_DRAIN_SECRET"),
        drain_secret_next: trimmed("HERMES_DASHBOARD_DRAIN_SECRET_NEXT"),
        session_token: secret("HERMES_DASHBOARD_SESSION_TOKEN"),
        basic_auth_secret: secret("HERMES_DASHBOARD_BASIC_AUTH_SECRET"),
        nous_access_token: secret("HERMES_NOUS_ACCESS_TOKEN"),
        openai_api_key: Some(openai_key_env)
            .filter(|n| !n.is_empty())
            .and_then(secret),
    }
}
