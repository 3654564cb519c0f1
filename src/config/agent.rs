//! The `agent` section: which backend runs turns and each backend's settings, and the
//! `command` agent's environment, built here from an allow-list.
//!
//! Owns the rule that no gateway secret reaches an agent: a secret's name in
//! `agent.command.env` is refused, and [`agent_environment`] never copies one.

use std::path::PathBuf;

use secrecy::SecretString;

use super::tree::{Reader, Section};
use super::values::is_env_name;
use super::{AgentConfig, BackendKind, CommandConfig, EchoConfig, Env, OpenAiConfig};

/// Variables every `command` agent gets when they are set (SPEC §3), besides `LC_*`.
const AGENT_BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER"];

impl Reader {
    pub(super) fn agent(&mut self, top: &Section) -> AgentConfig {
        let s = self.section(
            top,
            "agent",
            &[
                "backend",
                "restart_drain_timeout",
                "echo",
                "openai",
                "command",
            ],
        );
        let backend = self.backend(&s);
        let restart_drain_timeout = self.seconds(&s, "restart_drain_timeout", 60.0, 86_400.0);
        let echo_s = self.section(&s, "echo", &["delay_ms"]);
        let echo = EchoConfig {
            delay_ms: self.uint(&echo_s, "delay_ms", 0, 0, 3_600_000),
        };
        let openai = self.openai(&s);
        let command = self.command(&s, backend);
        AgentConfig {
            backend,
            restart_drain_timeout,
            echo,
            openai,
            command,
        }
    }

    fn backend(&mut self, s: &Section) -> BackendKind {
        match self.string(s, "backend", "echo").as_str() {
            "echo" => BackendKind::Echo,
            "openai" => BackendKind::OpenAi,
            "command" => BackendKind::Command,
            other => {
                self.issue(
                    "agent.backend",
                    format!("unknown backend {other:?} (expected echo, openai or command)"),
                );
                BackendKind::Echo
            }
        }
    }

    fn openai(&mut self, s: &Section) -> OpenAiConfig {
        let o = self.section(
            s,
            "openai",
            &["base_url", "api_key_env", "model", "timeout_seconds"],
        );
        let openai = OpenAiConfig {
            base_url: self.string(&o, "base_url", "http://127.0.0.1:11434/v1"),
            api_key_env: self.string(&o, "api_key_env", "OPENAI_API_KEY"),
            model: self.string(&o, "model", ""),
            timeout_seconds: self.uint(&o, "timeout_seconds", 120, 1, 86_400),
        };
        self.check_url("agent.openai.base_url", &openai.base_url, false);
        if !openai.api_key_env.is_empty() && !is_env_name(&openai.api_key_env) {
            self.issue(
                "agent.openai.api_key_env",
                format!(
                    "{:?} is not an environment variable name (letters, digits, underscore)",
                    openai.api_key_env
                ),
            );
        }
        openai
    }

    /// `agent.command`; its `environment` is filled in later from the real environment.
    fn command(&mut self, s: &Section, backend: BackendKind) -> CommandConfig {
        let c = self.section(s, "command", &["argv", "timeout_seconds", "workdir", "env"]);
        let command = CommandConfig {
            argv: self.strings(&c, "argv"),
            timeout_seconds: self.uint(&c, "timeout_seconds", 600, 1, 86_400),
            workdir: self.optional_string(&c, "workdir").map(PathBuf::from),
            env: self.strings(&c, "env"),
            environment: Vec::new(),
            keeper_exe: PathBuf::from("/proc/self/exe"),
        };
        for (i, name) in command.env.iter().enumerate() {
            let at = format!("agent.command.env[{i}]");
            if !is_env_name(name) {
                self.issue(
                    at,
                    format!(
                        "{name:?} is not an environment variable name (letters, digits, underscore)"
                    ),
                );
            } else if is_gateway_secret(name) {
                self.issue(
                    at,
                    format!("{name} is one of the gateway's own secrets and is never passed to the agent"),
                );
            }
        }
        if backend == BackendKind::Command && command.argv.is_empty() {
            self.issue(
                "agent.command.argv",
                "the command backend needs a program to run (a non-empty list)",
            );
        }
        command
    }
}

/// True for the names of the gateway's own credentials, which no agent may receive. Every
/// `HERMES_DASHBOARD_*` name counts (fail closed: the dashboard's secrets share the prefix).
fn is_gateway_secret(name: &str) -> bool {
    matches!(
        name,
        "API_SERVER_KEY" | "HERMES_NOUS_ACCESS_TOKEN" | "HERMES_DATABASE_URL"
    ) || name.starts_with("HERMES_DASHBOARD_")
}

/// The `command` agent's environment: the base variables, `LC_*`, then the configured
/// names, each once and only when set. Secret names never get here (refused at load).
pub(super) fn agent_environment(extra: &[String], env: &dyn Env) -> Vec<(String, SecretString)> {
    let mut out: Vec<(String, SecretString)> = Vec::new();
    let mut add = |name: &str, value: String| {
        if !is_gateway_secret(name) && !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_owned(), SecretString::from(value)));
        }
    };
    for name in AGENT_BASE_ENV {
        if let Some(v) = env.var(name) {
            add(name, v);
        }
    }
    for (name, v) in env.vars_with_prefix("LC_") {
        add(&name, v);
    }
    for name in extra {
        if let Some(v) = env.var(name) {
            add(name, v);
        }
    }
    out
}
