//! Checks of single values that several sections share: http(s) URLs, browser origins
//! and environment-variable names.
//!
//! Each check reports through the [`Reader`] at the key path it is given; none knows
//! which section asked.

use super::tree::Reader;

impl Reader {
    /// An http(s) URL with a host; empty is an issue unless `allow_empty`.
    pub(super) fn check_url(&mut self, path: &str, value: &str, allow_empty: bool) {
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

    /// Normalises a list of origins (`scheme://host[:port]`), reporting malformed entries.
    pub(super) fn origins(
        &mut self,
        path: &str,
        list: Vec<String>,
        allow_star: bool,
    ) -> Vec<String> {
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
}

/// True for a name an environment variable can have (letters, digits, underscore, not
/// starting with a digit).
pub(super) fn is_env_name(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
