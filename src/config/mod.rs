//! Configuration: the whole schema of SPEC §3, parsed once into typed values.
//!
//! Owns where settings come from (YAML text, then environment overrides, secrets only from
//! the environment) and every validation rule. It reports all problems at once, each with
//! its key path, so an operator fixes a config in one pass. It must not start anything:
//! other modules get a finished [`Config`] and never read the environment themselves.

//! # Layout
//! - `load`: the entry points and the order of the steps;
//! - `tree`: YAML into a tree, typed getters with key paths, the record of known keys;
//! - `agent`, `gateway`, `dashboard`, `cron`, `drain_storage`: one reader per section;
//! - `values`: URL, origin and variable-name checks the sections share;
//! - `env`: the [`Env`] source, overrides and secrets;
//! - `checks`: the checks of the effective values, the cross-field ones included.
//!
//! Config holds plain values (a PEM key or a password hash stays text); the domain
//! modules turn them into their own types. It imports no domain module: a value the
//! domain will parse is checked here with the same leaf parser ([`crate::formats`]).

mod agent;
mod checks;
mod cron;
mod dashboard;
mod drain_storage;
mod env;
mod gateway;
mod load;
mod tree;
mod values;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use secrecy::SecretString;

pub use env::{Env, ProcessEnv};
pub use load::{known_keys, load, load_file};

/// Exit status for a fatal configuration problem (EX_CONFIG), part of the compat contract.
pub const EXIT_CONFIG: i32 = 78;

/// One problem found in the configuration, with the key path (or env var) it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path such as `gateway.api_server.port`, or an environment variable name.
    pub path: String,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be loaded; every variant maps to exit 78.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn list(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The effective configuration of one gateway process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HERMES_HOME`: marker, state file, audit log and database live here.
    pub home: PathBuf,
    pub agent: AgentConfig,
    pub api_server: ApiServerConfig,
    /// Connection limits of both listeners (`gateway.connections`).
    pub connections: ConnectionsConfig,
    pub dashboard: DashboardConfig,
    pub drain: DrainConfig,
    pub cron: CronConfig,
    pub storage: StorageConfig,
    pub logging: LoggingConfig,
    pub secrets: Secrets,
}

/// Which backend executes turns; a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Echo,
    OpenAi,
    Command,
}

impl BackendKind {
    /// The name used in config and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::OpenAi => "openai",
            Self::Command => "command",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub backend: BackendKind,
    /// Seconds a shutdown or restart waits for in-flight turns.
    pub restart_drain_timeout: f64,
    pub echo: EchoConfig,
    pub openai: OpenAiConfig,
    pub command: CommandConfig,
}

#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Total time an echo turn takes, spread over its chunks (makes drains observable).
    pub delay_ms: u64,
}

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    pub base_url: String,
    /// Name of the environment variable holding the upstream key (never the key itself).
    pub api_key_env: String,
    pub model: String,
    /// Longest wait for the upstream's next byte (response head or stream chunk); an
    /// extension of the compat schema so a hanging upstream fails the turn instead of
    /// hanging the client.
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct CommandConfig {
    pub argv: Vec<String>,
    pub timeout_seconds: u64,
    pub workdir: Option<PathBuf>,
    /// `agent.command.env`: names of extra variables passed through to the agent (never a
    /// gateway secret; the loader refuses those).
    pub env: Vec<String>,
    /// The agent's whole environment, built at load time: the base variables of SPEC §3
    /// (`PATH`, `HOME`, `LANG`, `LC_*`, `TZ`, `TMPDIR`, `USER`) and the `env` names that are
    /// set. Values are secrets because a passed-through one may be a model key.
    pub environment: Vec<(String, SecretString)>,
    /// The executable that runs as each turn's keeper (`agent::keeper`): not a YAML key.
    /// `/proc/self/exe` (this very binary, even if its file was replaced since) unless a
    /// test process, which is not the gateway binary, names the binary.
    pub keeper_exe: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub cors_origins: Vec<String>,
    pub model_name: String,
    /// Most chat sessions stored (SPEC §11); past it the least recently updated go.
    pub max_stored_sessions: u64,
    /// Most messages one stored chat session keeps; past it its oldest go.
    pub max_session_messages: u64,
    /// Most Responses API responses kept in the store (SPEC §11); the least recently used
    /// go first.
    pub max_stored_responses: u64,
}

/// How both listeners treat their connections (an extension, SPEC §10): slow or idle
/// clients cannot hold the server.
#[derive(Debug, Clone)]
pub struct ConnectionsConfig {
    /// Open connections per listener (WebSockets included); more are closed at once.
    pub max_per_listener: usize,
    /// Seconds a client has to send a request's headers, from connecting or from the end
    /// of its previous response (so it also ends idle keep-alive connections).
    pub header_timeout_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub public_url: String,
    pub allowed_origins: Vec<String>,
    pub drain_auth: DrainAuthConfig,
    pub basic_auth: BasicAuthConfig,
    /// Seconds between pings on an idle dashboard WebSocket (an extension; proxies close
    /// sockets that stay silent too long).
    pub ws_heartbeat_seconds: u64,
    /// Proxies whose `X-Forwarded-For` names the real client (for the login rate limit
    /// and the audit log's `ip`); empty = the TCP peer is always the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub struct DrainAuthConfig {
    /// Scope attached to the drain-control principal.
    pub scope: String,
    /// Minimum secret length the entropy gate demands.
    pub min_secret_chars: usize,
}

#[derive(Debug, Clone)]
pub struct BasicAuthConfig {
    pub username: String,
    pub password_hash: String,
    pub session_ttl_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct DrainConfig {
    /// A marker older than this is ignored and audited; 0 disables the backstop.
    pub marker_max_age_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronProvider {
    /// `""`: the built-in ticker, chosen by default.
    Default,
    Builtin,
    Chronos,
}

impl CronProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "",
            Self::Builtin => "builtin",
            Self::Chronos => "chronos",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CronConfig {
    pub provider: CronProvider,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    pub tick_interval_seconds: u64,
    /// How long a claimed run is owned before another replica may record it interrupted
    /// (an extension; the lease is renewed while the run goes on).
    pub lease_seconds: u64,
    pub chronos: ChronosConfig,
}

#[derive(Debug, Clone)]
pub struct ChronosConfig {
    pub portal_url: String,
    pub callback_url: String,
    pub expected_audience: String,
    pub nas_jwks_url: String,
    pub nas_public_keys: Vec<String>,
}

/// How the gateway logs (to stderr): the line format and the level filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `info,hermes_gateway::cron=debug`); `RUST_LOG` wins.
    pub level: String,
}

/// One log line: human text, or one JSON object (level, target, message, fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The spelling in config and in `HERMES_LOG_FORMAT`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Empty = SQLite in `HERMES_HOME`; otherwise a `postgres://` URL (may hold a password).
    pub url: Option<SecretString>,
}

/// Credentials, read only from the environment and never printed.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub api_server_key: Option<SecretString>,
    pub drain_secret: Option<SecretString>,
    pub drain_secret_next: Option<SecretString>,
    pub session_token: Option<SecretString>,
    pub basic_auth_secret: Option<SecretString>,
    pub nous_access_token: Option<SecretString>,
    /// The `openai` backend's upstream key, read from the variable `agent.openai.api_key_env` names.
    pub openai_api_key: Option<SecretString>,
}

impl Config {
    /// All defaults, rooted at `home`; what an absent config file and empty env give.
    pub fn defaults(home: PathBuf) -> Self {
        load::load(&home, None, &HashMap::new()).expect("the built-in defaults are valid")
    }

    /// Path of the drain marker (compat name).
    pub fn marker_path(&self) -> PathBuf {
        self.home.join(".drain_request.json")
    }

    /// Path of the runtime status mirror (compat name).
    pub fn state_path(&self) -> PathBuf {
        self.home.join("gateway_state.json")
    }

    /// Path of the auth audit log (compat name).
    pub fn audit_path(&self) -> PathBuf {
        self.home.join("logs").join("dashboard-auth.log")
    }
}

/// True for `localhost` and loopback IP literals: binds that are not reachable from outside.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = unbracketed(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A host without the brackets an IPv6 literal may carry (`[::1]` → `::1`).
fn unbracketed(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests;
