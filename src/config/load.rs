//! Reading a config, start to end: YAML text into a tree (`tree`), the schema walk over
//! every section, the environment's overrides (`env`), the checks of the effective values
//! (`checks`), then the secrets.
//!
//! Owns the order of those steps and nothing else; every problem any step finds is
//! collected, and the config is returned only when there is none.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde_json::Value;

use super::agent::agent_environment;
use super::env::secrets;
use super::tree::{Reader, parse_yaml};
use super::{Config, ConfigError, Env, StorageConfig};

/// The top-level sections of SPEC §3.
const SECTIONS: &[&str] = &[
    "agent",
    "gateway",
    "dashboard",
    "drain",
    "cron",
    "storage",
    "logging",
];

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

impl Reader {
    /// The whole walk; its problems are left in `self.issues`.
    fn config(&mut self, home: PathBuf, root: &Value, env: &dyn Env) -> Config {
        let top = self.root(root, SECTIONS);
        let mut agent = self.agent(&top);
        agent.command.environment = agent_environment(&agent.command.env, env);
        let mut api_server = self.api_server(&top);
        let connections = self.connections(&top);
        let mut dashboard = self.dashboard(&top);
        let drain = self.drain(&top);
        let cron = self.cron(&top);
        let mut storage_url = self.storage_url(&top);
        let mut logging = self.logging(&top);

        // Environment overrides (compat names), the effective values' checks, then secrets.
        self.env_overrides(env, &mut api_server, &mut dashboard, &mut storage_url);
        self.log_format_override(env, &mut logging);
        self.check_effective(&mut api_server, &mut dashboard);
        if let Some(url) = &storage_url {
            self.check_storage_url(url);
        }
        let secrets = secrets(env, &agent.openai.api_key_env);
        self.check_api_key_required(&api_server, &secrets);
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
            logging,
            secrets,
        }
    }
}
