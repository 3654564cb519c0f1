//! Reading a config: YAML text into a generic tree, then a schema walk that collects every
//! problem with its key path, then environment overrides and secrets.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde_json::{Map, Value};

use super::*;

/// Reads `config_path` (or `$home/config.yaml`) and the environment into a [`Config`].
///
/// An absent default config file means all defaults; an explicitly named file must exist.
pub fn load_file(
    home: &Path,
    config_path: Option<&Path>,
    env: &dyn Env,
) -> Result<Config, ConfigError> {
    let (path, explicit) = match config_path {
        Some(p) => (p.to_path_buf(), true),
        None => (home.join("config.yaml"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => load(home, Some((&path, &text)), env),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => load(home, None, env),
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

/// Builds a [`Config`] from YAML text (`None` = no file) and an environment.
pub fn load(
    home: &Path,
    yaml: Option<(&Path, &str)>,
    env: &dyn Env,
) -> Result<Config, ConfigError> {
    let root = match yaml {
        None => Value::Null,
        Some((path, text)) => parse_yaml(text).map_err(|message| ConfigError::Yaml {
            path: path.to_path_buf(),
            message,
        })?,
    };
    let mut r = Reader::default();
    let config = r.config(home.to_path_buf(), &root, env);
    if r.issues.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(r.issues))
    }
}

fn parse_yaml(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
    };
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| e.to_string())
}

/// A mapping in the tree together with its key path; `map` is `None` when absent or invalid.
struct Section<'v> {
    path: String,
    map: Option<&'v Map<String, Value>>,
}

impl Section<'_> {
    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

#[derive(Default)]
struct Reader {
    issues: Vec<ConfigIssue>,
    /// Every key the schema walk asked for, with its default (for the reference docs).
    known: Vec<(String, Value)>,
}

/// Every configuration key (dotted path) with its default as JSON, in schema order: what a
/// walk of the schema over an empty file and environment asks for. `docs/configuration.md`
/// is checked against this list.
pub fn known_keys() -> Vec<(String, Value)> {
    let mut r = Reader::default();
    r.config(
        PathBuf::new(),
        &Value::Null,
        &std::collections::HashMap::new(),
    );
    r.known
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

impl Reader {
    fn issue(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    fn check_keys(&mut self, path: &str, map: &Map<String, Value>, known: &[&str]) {
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                self.issue(
                    at,
                    format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
    }

    fn root<'v>(&mut self, v: &'v Value, known: &[&str]) -> Section<'v> {
        let map = match v {
            Value::Null => None,
            Value::Object(m) => Some(m),
            other => {
                self.issue(
                    "(top level)",
                    format!("expected a mapping, got {}", describe(other)),
                );
                None
            }
        };
        if let Some(m) = map {
            self.check_keys("", m, known);
        }
        Section {
            path: String::new(),
            map,
        }
    }

    fn section<'v>(&mut self, parent: &Section<'v>, key: &str, known: &[&str]) -> Section<'v> {
        let path = parent.key_path(key);
        let map = match parent.map.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                self.check_keys(&path, m, known);
                Some(m)
            }
            Some(other) => {
                self.issue(
                    &path,
                    format!("expected a mapping, got {}", describe(other)),
                );
                None
            }
        };
        Section { path, map }
    }

    fn value<'v>(s: &Section<'v>, key: &str) -> Option<&'v Value> {
        s.map.and_then(|m| m.get(key))
    }

    fn string(&mut self, s: &Section, key: &str, default: &str) -> String {
        self.known.push((s.key_path(key), Value::from(default)));
        match Self::value(s, key) {
            None => default.to_owned(),
            Some(Value::String(v)) => v.trim().to_owned(),
            Some(other) => {
                self.issue(
                    s.key_path(key),
                    format!("expected a string, got {}", describe(other)),
                );
                default.to_owned()
            }
        }
    }

    fn optional_string(&mut self, s: &Section, key: &str) -> Option<String> {
        match Self::value(s, key) {
            None | Some(Value::Null) => {
                self.known.push((s.key_path(key), Value::Null));
                None
            }
            Some(_) => Some(self.string(s, key, "")).filter(|v| !v.is_empty()),
        }
    }

    fn bool(&mut self, s: &Section, key: &str, default: bool) -> bool {
        self.known.push((s.key_path(key), Value::from(default)));
        match Self::value(s, key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.issue(
                    s.key_path(key),
                    format!("expected true or false, got {}", describe(other)),
                );
                default
            }
        }
    }

    fn uint(&mut self, s: &Section, key: &str, default: u64, min: u64, max: u64) -> u64 {
        self.known.push((s.key_path(key), Value::from(default)));
        match Self::value(s, key) {
            None => default,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|v| (min..=max).contains(&v)) => {
                n.as_u64().unwrap_or(default)
            }
            Some(other) => {
                self.issue(
                    s.key_path(key),
                    format!(
                        "expected a whole number from {min} to {max}, got {}",
                        describe(other)
                    ),
                );
                default
            }
        }
    }

    fn seconds(&mut self, s: &Section, key: &str, default: f64, max: f64) -> f64 {
        self.known.push((s.key_path(key), Value::from(default)));
        match Self::value(s, key) {
            None => default,
            Some(Value::Number(n))
                if n.as_f64()
                    .is_some_and(|v| v.is_finite() && (0.0..=max).contains(&v)) =>
            {
                n.as_f64().unwrap_or(default)
            }
            Some(other) => {
                self.issue(
                    s.key_path(key),
                    format!(
                        "expected a number of seconds from 0 to {max}, got {}",
                        describe(other)
                    ),
                );
                default
            }
        }
    }

    fn strings(&mut self, s: &Section, key: &str) -> Vec<String> {
        self.known.push((s.key_path(key), Value::Array(Vec::new())));
        match Self::value(s, key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(v) => out.push(v.clone()),
                        other => self.issue(
                            format!("{}[{i}]", s.key_path(key)),
                            format!("expected a string, got {}", describe(other)),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                self.issue(
                    s.key_path(key),
                    format!("expected a list of strings, got {}", describe(other)),
                );
                Vec::new()
            }
        }
    }

    /// A key that names a credential must not carry a value in the file.
    fn no_secret_in_file(&mut self, s: &Section, key: &str, env_name: &str) {
        self.known.push((s.key_path(key), Value::from("")));
        match Self::value(s, key) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if v.is_empty() => {}
            Some(_) => self.issue(
                s.key_path(key),
                format!(
                    "secrets come only from the environment: remove this value and set {env_name}"
                ),
            ),
        }
    }

    fn config(&mut self, home: PathBuf, root: &Value, env: &dyn Env) -> Config {
        let top = self.root(
            root,
            &["agent", "gateway", "dashboard", "drain", "cron", "storage"],
        );
        let mut agent = self.agent(&top);
        agent.command.environment = agent_environment(&agent.command.env, env);
        let mut api_server = self.api_server(&top);
        let connections = self.connections(&top);
        let mut dashboard = self.dashboard(&top);
        let drain = {
            let s = self.section(&top, "drain", &["marker_max_age_seconds"]);
            DrainConfig {
                marker_max_age_seconds: self.uint(&s, "marker_max_age_seconds", 3600, 0, u64::MAX),
            }
        };
        let cron = self.cron(&top);
        let storage_section = self.section(&top, "storage", &["url"]);
        let mut storage_url = self.optional_string(&storage_section, "url");

        // Environment overrides (compat names), then secrets.
        self.env_overrides(env, &mut api_server, &mut dashboard, &mut storage_url);
        if let Some(url) = &storage_url {
            self.check_storage_url(url);
        }
        let secret = |name: &str| env.var(name).map(SecretString::from);
        let secrets = Secrets {
            api_server_key: secret("API_SERVER_KEY"),
            drain_secret: env
                .var("HERMES_DASHBOARD_DRAIN_SECRET")
                .map(|v| SecretString::from(v.trim().to_owned())),
            drain_secret_next: env
                .var("HERMES_DASHBOARD_DRAIN_SECRET_NEXT")
                .map(|v| SecretString::from(v.trim().to_owned())),
            session_token: secret("HERMES_DASHBOARD_SESSION_TOKEN"),
            basic_auth_secret: secret("HERMES_DASHBOARD_BASIC_AUTH_SECRET"),
            nous_access_token: secret("HERMES_NOUS_ACCESS_TOKEN"),
            openai_api_key: Some(agent.openai.api_key_env.as_str())
                .filter(|n| !n.is_empty())
                .and_then(secret),
        };
        if api_server.enabled
            && !is_loopback_host(&api_server.host)
            && secrets.api_server_key.is_none()
        {
            self.issue(
                "gateway.api_server.host",
                format!(
                    "{:?} is not a loopback address, so API_SERVER_KEY must be set (refusing to serve turns unauthenticated)",
                    api_server.host
                ),
            );
        }
        Config {
            home,
            agent,
            api_server,
            connections,
            dashboard,
            drain,
            cron,
            storage: StorageConfig {
                url: storage_url.map(SecretString::from),
            },
            secrets,
        }
    }

    fn agent(&mut self, top: &Section) -> AgentConfig {
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
        let backend_name = self.string(&s, "backend", "echo");
        let backend = match backend_name.as_str() {
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
        };
        let restart_drain_timeout = self.seconds(&s, "restart_drain_timeout", 60.0, 86_400.0);
        let echo_s = self.section(&s, "echo", &["delay_ms"]);
        let echo = EchoConfig {
            delay_ms: self.uint(&echo_s, "delay_ms", 0, 0, 3_600_000),
        };
        let o = self.section(
            &s,
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
        let c = self.section(
            &s,
            "command",
            &["argv", "timeout_seconds", "workdir", "env"],
        );
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
        AgentConfig {
            backend,
            restart_drain_timeout,
            echo,
            openai,
            command,
        }
    }

    fn api_server(&mut self, top: &Section) -> ApiServerConfig {
        let g = self.section(top, "gateway", &["api_server", "connections"]);
        let s = self.section(
            &g,
            "api_server",
            &[
                "enabled",
                "host",
                "port",
                "key",
                "cors_origins",
                "model_name",
            ],
        );
        self.no_secret_in_file(&s, "key", "API_SERVER_KEY");
        ApiServerConfig {
            enabled: self.bool(&s, "enabled", true),
            host: self.string(&s, "host", "127.0.0.1"),
            port: self.uint(&s, "port", 8642, 0, 65535) as u16,
            cors_origins: self.strings(&s, "cors_origins"),
            model_name: self.string(&s, "model_name", "hermes-agent"),
        }
    }

    /// `gateway.connections` (its parent's keys are checked by `api_server`).
    fn connections(&mut self, top: &Section) -> ConnectionsConfig {
        let gateway = Section {
            path: "gateway".into(),
            map: Self::value(top, "gateway").and_then(Value::as_object),
        };
        let s = self.section(
            &gateway,
            "connections",
            &["max_per_listener", "header_timeout_seconds"],
        );
        ConnectionsConfig {
            max_per_listener: self.uint(&s, "max_per_listener", 1024, 1, 1_000_000) as usize,
            header_timeout_seconds: self.uint(&s, "header_timeout_seconds", 30, 1, 3600),
        }
    }

    /// `dashboard.trusted_proxies`: CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses.
    fn trusted_proxies(&mut self, s: &Section) -> Vec<ipnet::IpNet> {
        let path = s.key_path("trusted_proxies");
        self.known.push((path.clone(), Value::Array(Vec::new())));
        let items = match Self::value(s, "trusted_proxies") {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.issue(
                    path,
                    format!("expected a list of CIDRs, got {}", describe(other)),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Some(v) = item.as_str().map(str::trim) else {
                self.issue(
                    format!("{path}[{i}]"),
                    format!("expected a string, got {}", describe(item)),
                );
                continue;
            };
            let parsed = v
                .parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.issue(
                    format!("{path}[{i}]"),
                    format!("{v:?} is not a CIDR like 10.0.0.0/8 or fd00::/8, nor an IP address"),
                ),
            }
        }
        out
    }

    fn dashboard(&mut self, top: &Section) -> DashboardConfig {
        let s = self.section(
            top,
            "dashboard",
            &[
                "enabled",
                "host",
                "port",
                "public_url",
                "allowed_origins",
                "drain_auth",
                "basic_auth",
                "ws_heartbeat_seconds",
                "trusted_proxies",
            ],
        );
        let d = self.section(&s, "drain_auth", &["scope", "min_secret_chars"]);
        let drain_auth = DrainAuthConfig {
            scope: self.string(&d, "scope", "drain"),
            min_secret_chars: self.uint(&d, "min_secret_chars", 43, 1, 4096) as usize,
        };
        if drain_auth.scope.is_empty() {
            self.issue("dashboard.drain_auth.scope", "must not be empty");
        }
        let b = self.section(
            &s,
            "basic_auth",
            &["username", "password_hash", "secret", "session_ttl_seconds"],
        );
        self.no_secret_in_file(&b, "secret", "HERMES_DASHBOARD_BASIC_AUTH_SECRET");
        let basic_auth = BasicAuthConfig {
            username: self.string(&b, "username", ""),
            password_hash: self.string(&b, "password_hash", ""),
            session_ttl_seconds: self.uint(&b, "session_ttl_seconds", 0, 0, 31_536_000),
        };
        DashboardConfig {
            enabled: self.bool(&s, "enabled", true),
            host: self.string(&s, "host", "127.0.0.1"),
            port: self.uint(&s, "port", 9119, 0, 65535) as u16,
            public_url: self.string(&s, "public_url", ""),
            allowed_origins: self.strings(&s, "allowed_origins"),
            drain_auth,
            basic_auth,
            ws_heartbeat_seconds: self.uint(&s, "ws_heartbeat_seconds", 20, 1, 3600),
            trusted_proxies: self.trusted_proxies(&s),
        }
    }

    fn cron(&mut self, top: &Section) -> CronConfig {
        let s = self.section(
            top,
            "cron",
            &[
                "provider",
                "timezone",
                "tick_interval_seconds",
                "lease_seconds",
                "chronos",
            ],
        );
        let provider = match self.string(&s, "provider", "").as_str() {
            "" => CronProvider::Default,
            "builtin" => CronProvider::Builtin,
            "chronos" => CronProvider::Chronos,
            other => {
                self.issue(
                    "cron.provider",
                    format!("unknown provider {other:?} (expected \"\", builtin or chronos)"),
                );
                CronProvider::Default
            }
        };
        let timezone_name = self.string(&s, "timezone", "UTC");
        let timezone = match jiff::tz::TimeZone::get(&timezone_name) {
            Ok(tz) => tz,
            Err(_) => {
                self.issue(
                    "cron.timezone",
                    format!("unknown time zone {timezone_name:?} (use an IANA name such as Europe/Berlin)"),
                );
                jiff::tz::TimeZone::UTC
            }
        };
        let tick_interval_seconds = self.uint(&s, "tick_interval_seconds", 60, 1, 86_400);
        let lease_seconds = self.uint(&s, "lease_seconds", 300, 3, 86_400);
        let c = self.section(
            &s,
            "chronos",
            &[
                "portal_url",
                "callback_url",
                "expected_audience",
                "nas_jwks_url",
                "nas_public_keys",
            ],
        );
        let chronos = ChronosConfig {
            portal_url: self.string(&c, "portal_url", ""),
            callback_url: self.string(&c, "callback_url", ""),
            expected_audience: self.string(&c, "expected_audience", ""),
            nas_jwks_url: self.string(&c, "nas_jwks_url", ""),
            nas_public_keys: self.strings(&c, "nas_public_keys"),
        };
        for (key, value) in [
            ("portal_url", &chronos.portal_url),
            ("callback_url", &chronos.callback_url),
            ("nas_jwks_url", &chronos.nas_jwks_url),
        ] {
            self.check_url(&format!("cron.chronos.{key}"), value, true);
        }
        for (i, pem) in chronos.nas_public_keys.iter().enumerate() {
            let path = format!("cron.chronos.nas_public_keys[{i}]");
            if crate::chronos::verify::PublicKey::from_pem(pem, &path).is_err() {
                self.issue(
                    path,
                    "expected an RSA or EC public key in PEM form (-----BEGIN PUBLIC KEY-----)",
                );
            }
        }
        CronConfig {
            provider,
            timezone,
            timezone_name,
            tick_interval_seconds,
            lease_seconds,
            chronos,
        }
    }

    fn env_overrides(
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
        if let Some(v) = env.var("API_SERVER_HOST") {
            api.host = v.trim().to_owned();
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
        if let Some(v) = env.var("API_SERVER_MODEL_NAME") {
            api.model_name = v.trim().to_owned();
        }
        if let Some(v) = env.var("HERMES_DASHBOARD_PUBLIC_URL") {
            dashboard.public_url = v.trim().to_owned();
        }
        if let Some(v) = env.var("HERMES_DASHBOARD_BASIC_AUTH_USERNAME") {
            dashboard.basic_auth.username = v.trim().to_owned();
        }
        if let Some(v) = env.var("HERMES_DASHBOARD_BASIC_AUTH_PASSWORD_HASH") {
            dashboard.basic_auth.password_hash = v.trim().to_owned();
        }
        if let Some(v) = env.var("HERMES_DATABASE_URL") {
            *storage_url = Some(v.trim().to_owned());
        }

        // Checks that apply to the effective values, whichever source set them.
        if api.host.is_empty() {
            self.issue("gateway.api_server.host", "must not be empty");
        }
        if api.model_name.is_empty() {
            self.issue("gateway.api_server.model_name", "must not be empty");
        }
        if dashboard.host.is_empty() {
            self.issue("dashboard.host", "must not be empty");
        }
        self.check_url("dashboard.public_url", &dashboard.public_url.clone(), true);
        let basic = &dashboard.basic_auth;
        if basic.username.is_empty() != basic.password_hash.is_empty() {
            self.issue(
                "dashboard.basic_auth",
                "username and password_hash must be set together (or neither)",
            );
        }
        if !basic.password_hash.is_empty()
            && let Err(e) = crate::auth::password::PasswordHash::parse(&basic.password_hash)
        {
            self.issue("dashboard.basic_auth.password_hash", e.0);
        }
        let origins = std::mem::take(&mut api.cors_origins);
        api.cors_origins = self.origins("gateway.api_server.cors_origins", origins, true);
        let origins = std::mem::take(&mut dashboard.allowed_origins);
        dashboard.allowed_origins = self.origins("dashboard.allowed_origins", origins, false);
    }

    /// Normalises a list of origins (`scheme://host[:port]`), reporting malformed entries.
    fn origins(&mut self, path: &str, list: Vec<String>, allow_star: bool) -> Vec<String> {
        let mut out = Vec::with_capacity(list.len());
        for (i, raw) in list.into_iter().enumerate() {
            let v = raw.trim();
            if allow_star && v == "*" {
                out.push("*".to_owned());
                continue;
            }
            match reqwest::Url::parse(v) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.path() == "/"
                        && u.query().is_none() =>
                {
                    out.push(u.origin().ascii_serialization());
                }
                _ => self.issue(
                    format!("{path}[{i}]"),
                    format!("{v:?} is not an origin like https://example.com or http://host:8080"),
                ),
            }
        }
        out
    }

    fn check_url(&mut self, path: &str, value: &str, allow_empty: bool) {
        if value.is_empty() {
            if !allow_empty {
                self.issue(path, "must not be empty");
            }
            return;
        }
        match reqwest::Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => self.issue(path, format!("{value:?} is not an http(s) URL")),
        }
    }

    fn check_storage_url(&mut self, url: &str) {
        let ok = ["postgres://", "postgresql://"]
            .iter()
            .any(|p| url.starts_with(p))
            && reqwest::Url::parse(url).is_ok();
        if !ok {
            // Never echo the URL: it may carry a password.
            self.issue(
                "storage.url",
                "expected a postgres:// or postgresql:// URL (or empty for SQLite in HERMES_HOME)",
            );
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Variables every `command` agent gets when they are set (SPEC §3), besides `LC_*`.
const AGENT_BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER"];

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
fn agent_environment(extra: &[String], env: &dyn Env) -> Vec<(String, SecretString)> {
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

fn is_env_name(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load(
            Path::new("/tmp/hermes"),
            Some((Path::new("config.yaml"), yaml)),
            &env(vars),
        )
    }

    /// Asserts that `yaml` is rejected with exactly these `path: message-fragment` issues.
    fn check_err(yaml: &str, vars: &[(&str, &str)], expected: &[(&str, &str)]) {
        let issues = match parse(yaml, vars) {
            Err(ConfigError::Invalid(issues)) => issues,
            other => panic!("expected invalid config for {yaml:?}, got {other:?}"),
        };
        assert_eq!(
            issues.len(),
            expected.len(),
            "issues for {yaml:?}: {issues:#?}"
        );
        for ((path, fragment), issue) in expected.iter().zip(&issues) {
            assert_eq!(issue.path, *path, "{issues:#?}");
            assert!(
                issue.message.contains(fragment),
                "{:?} should contain {fragment:?}",
                issue.message
            );
        }
    }

    #[test]
    fn absent_and_empty_files_give_defaults() {
        let c = load(Path::new("/h"), None, &env(&[])).unwrap();
        assert_eq!(c.agent.backend, BackendKind::Echo);
        assert_eq!(c.agent.restart_drain_timeout, 60.0);
        assert_eq!(c.api_server.port, 8642);
        assert_eq!(c.api_server.model_name, "hermes-agent");
        assert_eq!(c.dashboard.port, 9119);
        assert_eq!(c.dashboard.drain_auth.min_secret_chars, 43);
        assert_eq!(c.drain.marker_max_age_seconds, 3600);
        assert_eq!(c.cron.tick_interval_seconds, 60);
        assert!(c.storage.url.is_none());
        assert_eq!(c.marker_path(), Path::new("/h/.drain_request.json"));
        let c = parse("# only a comment\n", &[]).unwrap();
        assert_eq!(c.api_server.host, "127.0.0.1");
    }

    #[test]
    fn full_file_is_read() {
        let yaml = r#"
agent:
  backend: command
  restart_drain_timeout: 2.5
  echo: {delay_ms: 300}
  command: {argv: ["/bin/cat"], timeout_seconds: 5, workdir: /tmp}
gateway:
  api_server: {host: 127.0.0.1, port: 0, cors_origins: ["https://a.example/"], model_name: m}
dashboard:
  port: 0
  allowed_origins: ["http://localhost:3000"]
  drain_auth: {scope: lifecycle, min_secret_chars: 50}
drain: {marker_max_age_seconds: 0}
cron: {provider: builtin, timezone: Europe/Berlin, tick_interval_seconds: 5}
storage: {url: "postgres://u:p@127.0.0.1/db"}
"#;
        let c = parse(yaml, &[]).unwrap();
        assert_eq!(c.agent.backend, BackendKind::Command);
        assert_eq!(c.agent.restart_drain_timeout, 2.5);
        assert_eq!(c.agent.echo.delay_ms, 300);
        assert_eq!(c.agent.command.argv, vec!["/bin/cat"]);
        assert_eq!(c.agent.command.workdir.as_deref(), Some(Path::new("/tmp")));
        assert_eq!(c.api_server.port, 0);
        assert_eq!(c.api_server.cors_origins, vec!["https://a.example"]);
        assert_eq!(c.dashboard.allowed_origins, vec!["http://localhost:3000"]);
        assert_eq!(c.dashboard.drain_auth.scope, "lifecycle");
        assert_eq!(c.drain.marker_max_age_seconds, 0);
        assert_eq!(c.cron.provider, CronProvider::Builtin);
        assert_eq!(c.cron.timezone_name, "Europe/Berlin");
        assert!(c.storage.url.is_some());
    }

    #[test]
    fn env_overrides_win_and_secrets_come_from_env() {
        let c = parse(
            "gateway: {api_server: {port: 1000, model_name: file}}\n",
            &[
                ("API_SERVER_PORT", "2000"),
                ("API_SERVER_MODEL_NAME", "envmodel"),
                ("API_SERVER_ENABLED", "no"),
                ("API_SERVER_CORS_ORIGINS", "http://a.test, http://b.test:81"),
                ("API_SERVER_KEY", "k-123"),
                ("HERMES_DASHBOARD_DRAIN_SECRET", "  padded  "),
                ("HERMES_DATABASE_URL", "postgresql://x@localhost/y"),
            ],
        )
        .unwrap();
        assert_eq!(c.api_server.port, 2000);
        assert_eq!(c.api_server.model_name, "envmodel");
        assert!(!c.api_server.enabled);
        assert_eq!(
            c.api_server.cors_origins,
            vec!["http://a.test", "http://b.test:81"]
        );
        assert_eq!(
            c.secrets.api_server_key.as_ref().unwrap().expose_secret(),
            "k-123"
        );
        assert_eq!(
            c.secrets.drain_secret.as_ref().unwrap().expose_secret(),
            "padded"
        );
        assert!(c.storage.url.is_some());
    }

    #[test]
    fn problems_are_reported_together_with_their_paths() {
        check_err(
            "agent:\n  backend: gpt\n  echo: {delay_ms: -1}\ngateway:\n  api_server:\n    port: 70000\n    prot: 1\n",
            &[],
            &[
                ("agent.backend", "unknown backend \"gpt\""),
                ("agent.echo.delay_ms", "whole number"),
                ("gateway.api_server.prot", "unknown key"),
                (
                    "gateway.api_server.port",
                    "from 0 to 65535, got the number 70000",
                ),
            ],
        );
    }

    #[test]
    fn config_error_table() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]);
        let table: &[Case] = &[
            ("[1, 2]", &[], &[("(top level)", "expected a mapping")]),
            ("agents: {}", &[], &[("agents", "unknown key")]),
            (
                "agent: echo",
                &[],
                &[("agent", "expected a mapping, got the string")],
            ),
            (
                "agent: {restart_drain_timeout: -5}",
                &[],
                &[("agent.restart_drain_timeout", "seconds")],
            ),
            (
                "agent: {restart_drain_timeout: \"60\"}",
                &[],
                &[("agent.restart_drain_timeout", "got the string")],
            ),
            (
                "agent: {backend: command}",
                &[],
                &[("agent.command.argv", "non-empty")],
            ),
            (
                "agent: {command: {argv: [1]}}",
                &[],
                &[("agent.command.argv[0]", "expected a string")],
            ),
            (
                "agent: {command: {timeout_seconds: 0}}",
                &[],
                &[("agent.command.timeout_seconds", "from 1")],
            ),
            (
                "agent: {command: {env: [OPENAI_API_KEY, API_SERVER_KEY, HERMES_DASHBOARD_DRAIN_SECRET]}}",
                &[],
                &[
                    ("agent.command.env[1]", "the gateway's own secrets"),
                    ("agent.command.env[2]", "the gateway's own secrets"),
                ],
            ),
            (
                "agent: {command: {env: [HERMES_NOUS_ACCESS_TOKEN, HERMES_DATABASE_URL, HERMES_DASHBOARD_SESSION_TOKEN, 'A B']}}",
                &[],
                &[
                    ("agent.command.env[0]", "never passed to the agent"),
                    ("agent.command.env[1]", "never passed to the agent"),
                    ("agent.command.env[2]", "never passed to the agent"),
                    ("agent.command.env[3]", "not an environment variable name"),
                ],
            ),
            (
                "agent: {command: {env: OPENAI_API_KEY}}",
                &[],
                &[("agent.command.env", "expected a list of strings")],
            ),
            (
                "agent: {openai: {base_url: ftp://x}}",
                &[],
                &[("agent.openai.base_url", "not an http(s) URL")],
            ),
            (
                "agent: {openai: {api_key_env: 'A-B'}}",
                &[],
                &[(
                    "agent.openai.api_key_env",
                    "not an environment variable name",
                )],
            ),
            (
                "gateway: {api_server: {enabled: maybe}}",
                &[],
                &[("gateway.api_server.enabled", "true or false")],
            ),
            (
                "gateway: {api_server: {key: abc}}",
                &[],
                &[("gateway.api_server.key", "API_SERVER_KEY")],
            ),
            (
                "gateway: {api_server: {host: 0.0.0.0}}",
                &[],
                &[("gateway.api_server.host", "API_SERVER_KEY must be set")],
            ),
            (
                "gateway: {api_server: {cors_origins: ['not a url']}}",
                &[],
                &[("gateway.api_server.cors_origins[0]", "not an origin")],
            ),
            (
                "gateway: {api_server: {model_name: ''}}",
                &[],
                &[("gateway.api_server.model_name", "must not be empty")],
            ),
            (
                "dashboard: {basic_auth: {secret: s3cret}}",
                &[],
                &[(
                    "dashboard.basic_auth.secret",
                    "HERMES_DASHBOARD_BASIC_AUTH_SECRET",
                )],
            ),
            (
                "dashboard: {drain_auth: {scope: ''}}",
                &[],
                &[("dashboard.drain_auth.scope", "must not be empty")],
            ),
            (
                "dashboard: {drain_auth: {min_secret_chars: 0}}",
                &[],
                &[("dashboard.drain_auth.min_secret_chars", "from 1")],
            ),
            (
                "dashboard: {public_url: 'nope'}",
                &[],
                &[("dashboard.public_url", "not an http(s) URL")],
            ),
            (
                "dashboard: {allowed_origins: ['https://x.test/path']}",
                &[],
                &[("dashboard.allowed_origins[0]", "not an origin")],
            ),
            (
                "drain: {marker_max_age_seconds: 1.5}",
                &[],
                &[("drain.marker_max_age_seconds", "whole number")],
            ),
            (
                "cron: {provider: cloud}",
                &[],
                &[("cron.provider", "unknown provider")],
            ),
            (
                "cron: {timezone: Mars/Olympus}",
                &[],
                &[("cron.timezone", "unknown time zone")],
            ),
            (
                "cron: {tick_interval_seconds: 0}",
                &[],
                &[("cron.tick_interval_seconds", "from 1")],
            ),
            (
                "cron: {chronos: {nas_public_keys: ['abc']}}",
                &[],
                &[("cron.chronos.nas_public_keys[0]", "PEM")],
            ),
            (
                "storage: {url: 'mysql://x'}",
                &[],
                &[("storage.url", "postgres://")],
            ),
            (
                "",
                &[("API_SERVER_PORT", "http")],
                &[("API_SERVER_PORT", "port number")],
            ),
            (
                "",
                &[("API_SERVER_ENABLED", "perhaps")],
                &[("API_SERVER_ENABLED", "true or false")],
            ),
            (
                "",
                &[("API_SERVER_HOST", "10.1.2.3")],
                &[("gateway.api_server.host", "not a loopback")],
            ),
            (
                "",
                &[("HERMES_DATABASE_URL", "sqlite://x")],
                &[("storage.url", "postgres://")],
            ),
        ];
        for (yaml, vars, expected) in table {
            check_err(yaml, vars, expected);
        }
    }

    #[test]
    fn the_command_agent_environment_is_built_not_inherited() {
        let c = parse(
            "agent: {command: {env: [OPENAI_API_KEY, UNSET_ONE, PATH]}}",
            &[
                ("PATH", "/usr/bin:/bin"),
                ("HOME", "/home/h"),
                ("LC_ALL", "C.UTF-8"),
                ("LC_TIME", "de_DE.UTF-8"),
                ("TZ", "UTC"),
                ("OPENAI_API_KEY", "sk-model"),
                ("API_SERVER_KEY", "k-api"),
                ("HERMES_DASHBOARD_DRAIN_SECRET", "d-secret"),
                ("HERMES_DASHBOARD_SESSION_TOKEN", "s-token"),
                ("HERMES_NOUS_ACCESS_TOKEN", "n-token"),
                ("HERMES_DATABASE_URL", "postgres://u:p@h/db"),
                ("SOMETHING_ELSE", "x"),
                ("LANG", ""),
            ],
        )
        .unwrap();
        let got: Vec<(&str, &str)> = c
            .agent
            .command
            .environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(
            got,
            [
                ("PATH", "/usr/bin:/bin"),
                ("HOME", "/home/h"),
                ("TZ", "UTC"),
                ("LC_ALL", "C.UTF-8"),
                ("LC_TIME", "de_DE.UTF-8"),
                ("OPENAI_API_KEY", "sk-model"),
            ]
        );
        assert_eq!(c.agent.command.env, ["OPENAI_API_KEY", "UNSET_ONE", "PATH"]);
        assert!(!format!("{c:?}").contains("sk-model"));
    }

    #[test]
    fn non_loopback_api_host_with_key_is_fine() {
        let c = parse(
            "gateway: {api_server: {host: 0.0.0.0}}",
            &[("API_SERVER_KEY", "k")],
        )
        .unwrap();
        assert_eq!(c.api_server.host, "0.0.0.0");
    }

    #[test]
    fn duplicate_keys_and_bad_yaml_are_errors() {
        let err = parse("agent:\n  backend: echo\n  backend: openai\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
        assert!(
            err.to_string().to_lowercase().contains("duplicate"),
            "{err}"
        );
        let err = parse("agent: [unclosed\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
    }

    #[test]
    fn storage_url_error_never_echoes_the_url() {
        let err = parse("storage: {url: 'mysql://user:hunter2@db'}", &[]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn connection_limits_and_trusted_proxies() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.connections.max_per_listener, 1024);
        assert_eq!(c.connections.header_timeout_seconds, 30);
        assert!(c.dashboard.trusted_proxies.is_empty());
        let c = parse(
            "gateway: {connections: {max_per_listener: 8, header_timeout_seconds: 2}}\n\
             dashboard: {trusted_proxies: ['10.0.0.0/8', ' 192.168.1.7 ', 'fd00::1/8', '::1']}",
            &[],
        )
        .unwrap();
        assert_eq!(c.connections.max_per_listener, 8);
        assert_eq!(c.connections.header_timeout_seconds, 2);
        let nets: Vec<String> = c
            .dashboard
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            nets,
            ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "::1/128"]
        );
        check_err(
            "gateway: {connections: {max_per_listener: 0, header_timeout_seconds: 0, idle: 1}}",
            &[],
            &[
                ("gateway.connections.idle", "unknown key"),
                ("gateway.connections.max_per_listener", "from 1"),
                ("gateway.connections.header_timeout_seconds", "from 1"),
            ],
        );
        check_err(
            "dashboard: {trusted_proxies: ['10.0.0.0/8', 7, '10.0.0.0/33', 'proxy.local']}",
            &[],
            &[
                ("dashboard.trusted_proxies[1]", "expected a string"),
                ("dashboard.trusted_proxies[2]", "not a CIDR"),
                ("dashboard.trusted_proxies[3]", "not a CIDR"),
            ],
        );
    }
}
