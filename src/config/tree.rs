//! The generic half of reading a config: YAML text into a tree, and typed getters that
//! walk it by key path.
//!
//! Owns the shape checks every section shares (unknown keys, wrong types, ranges) and the
//! record of every key the schema asks for with its default (`known`, behind
//! [`super::known_keys`]). A getter never fails: it records an issue with the key path
//! and returns the default, so one pass reports every problem. It knows no section.

use serde_json::{Map, Value};

use super::ConfigIssue;

/// Parses YAML text into a tree; blank text is an empty file, a duplicate key an error.
pub(super) fn parse_yaml(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
    };
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| e.to_string())
}

/// A mapping in the tree together with its key path; `map` is `None` when absent or invalid.
pub(super) struct Section<'v> {
    pub(super) path: String,
    pub(super) map: Option<&'v Map<String, Value>>,
}

impl Section<'_> {
    /// The dotted path of `key` inside this section.
    pub(super) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

/// The schema walk's state: the problems found so far and every key asked for.
#[derive(Default)]
pub(super) struct Reader {
    pub(super) issues: Vec<ConfigIssue>,
    /// Every key the schema walk asked for, with its default (for the reference docs).
    pub(super) known: Vec<(String, Value)>,
}

/// How a value that has the wrong type is named in an issue (never a mapping's content).
pub(super) fn describe(v: &Value) -> String {
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
    /// Records one problem at `path` (a key path or an environment variable name).
    pub(super) fn issue(&mut self, path: impl Into<String>, message: impl Into<String>) {
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

    /// The top of the file, whose keys must be among `known`.
    pub(super) fn root<'v>(&mut self, v: &'v Value, known: &[&str]) -> Section<'v> {
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

    /// The mapping under `parent.key`, whose keys must be among `known`; absent or null
    /// is an empty section.
    pub(super) fn section<'v>(
        &mut self,
        parent: &Section<'v>,
        key: &str,
        known: &[&str],
    ) -> Section<'v> {
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

    /// The raw value at `s.key`, if present.
    pub(super) fn value<'v>(s: &Section<'v>, key: &str) -> Option<&'v Value> {
        s.map.and_then(|m| m.get(key))
    }

    /// A string, trimmed.
    pub(super) fn string(&mut self, s: &Section, key: &str, default: &str) -> String {
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

    /// A string whose absence, null or emptiness all mean "not set".
    pub(super) fn optional_string(&mut self, s: &Section, key: &str) -> Option<String> {
        match Self::value(s, key) {
            None | Some(Value::Null) => {
                self.known.push((s.key_path(key), Value::Null));
                None
            }
            Some(_) => Some(self.string(s, key, "")).filter(|v| !v.is_empty()),
        }
    }

    pub(super) fn bool(&mut self, s: &Section, key: &str, default: bool) -> bool {
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

    /// A whole number in `min..=max`.
    pub(super) fn uint(&mut self, s: &Section, key: &str, default: u64, min: u64, max: u64) -> u64 {
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

    /// A finite number of seconds in `0..=max` (fractions allowed).
    pub(super) fn seconds(&mut self, s: &Section, key: &str, default: f64, max: f64) -> f64 {
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

    /// A list of strings (untrimmed); each item that is not a string is reported at
    /// `key[i]`, and then the list is empty: the checks that look at its items by their
    /// index (`env[1]`...) would otherwise name the wrong ones.
    pub(super) fn strings(&mut self, s: &Section, key: &str) -> Vec<String> {
        self.known.push((s.key_path(key), Value::Array(Vec::new())));
        match Self::value(s, key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                let mut bad = false;
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(v) => out.push(v.clone()),
                        other => {
                            bad = true;
                            self.issue(
                                format!("{}[{i}]", s.key_path(key)),
                                format!("expected a string, got {}", describe(other)),
                            );
                        }
                    }
                }
                if bad { Vec::new() } else { out }
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
    pub(super) fn no_secret_in_file(&mut self, s: &Section, key: &str, env_name: &str) {
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
}
