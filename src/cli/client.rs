//! A small HTTP client for commands that talk to a running gateway.
//!
//! Credentials (the drain secret, the session token) go only over https or to loopback
//! when the address came from `--url`, and never along a redirect: redirects are not
//! followed at all, a 3xx is an error naming where it pointed (SPEC §2).

use std::future::Future;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::{Config, is_loopback_host};

/// Runs a command's future on a single-threaded runtime.
pub fn block_on(f: impl Future<Output = i32>) -> i32 {
    super::logging::init("warn", crate::config::LogFormat::Text);
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("hermes-gateway: cannot start the async runtime: {e}");
            super::EXIT_FAILURE
        }
    }
}

/// A client bound to one dashboard base URL.
#[derive(Debug)]
pub struct Client {
    base: String,
    /// The base came from `--url` (the configured address is this machine's own).
    from_flag: bool,
    http: reqwest::Client,
    bearer: Option<String>,
    session_token: Option<String>,
}

/// Why a call failed, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gateway at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "{url} answered {status}, a redirect to {location}; redirects are not followed (a credential must not travel along one): use that address with --url if it is the gateway"
    )]
    Redirect {
        url: String,
        status: u16,
        location: String,
    },
    #[error(
        "refusing to send the drain secret or session token to {url} over plain http: use an https:// URL, or a loopback one (http://127.0.0.1, http://localhost, http://[::1])"
    )]
    Insecure { url: String },
    #[error("--url {url:?} is not an http(s) URL")]
    BadUrl { url: String },
}

impl ClientError {
    /// The exit status for this failure: 2 (usage) for a `--url` that must not be used
    /// this way, 1 for an answer that is no.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Insecure { .. } | Self::BadUrl { .. } => super::EXIT_USAGE,
            _ => super::EXIT_FAILURE,
        }
    }
}

/// Whether a credential may be sent to `url`: over https, or over plain http to a
/// loopback address or `localhost` (the traffic never leaves the machine).
pub fn may_carry_credentials(url: &reqwest::Url) -> bool {
    match (url.scheme(), url.host_str()) {
        ("https", Some(_)) => true,
        // The URL parser has normalised the host (`0x7f.1` is `127.0.0.1`).
        ("http", Some(host)) => is_loopback_host(host),
        _ => false,
    }
}

impl Client {
    /// The dashboard of this config: `--url`, else the configured address, else (port 0)
    /// the address the running gateway recorded in `gateway_state.json`.
    pub fn new(config: &Config, url: Option<&str>) -> Self {
        let base = url
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| default_base(config));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            base,
            from_flag: url.is_some(),
            http,
            bearer: config
                .secrets
                .drain_secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            session_token: config
                .secrets
                .session_token
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// True when the client holds a credential for the drain endpoint.
    pub fn has_credential(&self) -> bool {
        self.bearer.is_some() || self.session_token.is_some()
    }

    /// Adds the credentials, if the base URL may carry them (fails closed otherwise).
    fn authorise(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        if !self.has_credential() {
            return Ok(req);
        }
        if self.from_flag {
            let url = reqwest::Url::parse(&self.base).map_err(|_| ClientError::BadUrl {
                url: self.base.clone(),
            })?;
            if !may_carry_credentials(&url) {
                return Err(ClientError::Insecure {
                    url: self.base.clone(),
                });
            }
        }
        let req = match &self.bearer {
            Some(b) => req.bearer_auth(b),
            None => req,
        };
        Ok(match &self.session_token {
            Some(t) => req.header("X-Hermes-Session-Token", t),
            None => req,
        })
    }

    /// `GET path`, parsed as JSON.
    pub async fn get(&self, path: &str, authed: bool) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if authed {
            req = self.authorise(req)?;
        }
        Self::finish(url, req.send().await).await
    }

    /// `POST path` with a JSON body, parsed as JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let req = self.authorise(self.http.post(&url).json(body))?;
        Self::finish(url, req.send().await).await
    }

    async fn finish(
        url: String,
        sent: reqwest::Result<reqwest::Response>,
    ) -> Result<Value, ClientError> {
        let resp = sent.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            why: e.to_string(),
        })?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("(no Location)")
                .chars()
                .take(300)
                .collect();
            return Err(ClientError::Redirect {
                url,
                status: status.as_u16(),
                location,
            });
        }
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let body: String = text.chars().take(300).collect();
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                body,
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Unreachable {
            url,
            why: format!("not a JSON answer: {e}"),
        })
    }
}

fn default_base(config: &Config) -> String {
    let d = &config.dashboard;
    if d.port == 0 {
        let recorded = crate::files::read_regular(
            &config.state_path(),
            crate::lifecycle::status::MAX_STATE_FILE_BYTES,
        )
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["dashboard_addr"].as_str().map(str::to_owned));
        if let Some(addr) = recorded {
            return format!("http://{addr}");
        }
    }
    let host = if is_loopback_host(&d.host) || d.host == "0.0.0.0" || d.host == "::" {
        "127.0.0.1".to_owned()
    } else if d.host.contains(':') {
        format!("[{}]", d.host)
    } else {
        d.host.clone()
    };
    format!("http://{host}:{}", d.port)
}

#[cfg(test)]
mod tests {
    use super::may_carry_credentials;

    #[test]
    fn credentials_go_only_over_https_or_to_loopback() {
        for (url, allowed) in [
            ("https://gateway.example", true),
            ("https://gateway.example:9119/prefix", true),
            ("https://10.0.0.5", true),
            ("http://127.0.0.1:9119", true),
            ("http://127.8.0.1", true),
            ("http://localhost:9119", true),
            ("http://LocalHost", true),
            ("http://[::1]:9119", true),
            ("http://0x7f.1:9119", true),
            ("http://gateway.example:9119", false),
            ("http://10.0.0.5:9119", false),
            ("http://0.0.0.0:9119", false),
            ("http://[::]:9119", false),
            ("http://localhost.attacker.example", false),
            ("http://127.0.0.1.attacker.example", false),
            ("http://[::ffff:10.0.0.1]", false),
            ("ftp://127.0.0.1", false),
            ("file:///tmp/x", false),
        ] {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert_eq!(may_carry_credentials(&parsed), allowed, "{url}");
        }
    }
}
