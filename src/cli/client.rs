//! A small HTTP client for commands that talk to a running gateway.

use std::future::Future;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::{Config, is_loopback_host};

/// Runs a command's future on a single-threaded runtime.
pub fn block_on(f: impl Future<Output = i32>) -> i32 {
    super::run::init_logging("warn");
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
            .build()
            .unwrap_or_default();
        Self {
            base,
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

    fn authorise(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match &self.bearer {
            Some(b) => req.bearer_auth(b),
            None => req,
        };
        match &self.session_token {
            Some(t) => req.header("X-Hermes-Session-Token", t),
            None => req,
        }
    }

    /// `GET path`, parsed as JSON.
    pub async fn get(&self, path: &str, authed: bool) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if authed {
            req = self.authorise(req);
        }
        Self::finish(url, req.send().await).await
    }

    /// `POST path` with a JSON body, parsed as JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let req = self.authorise(self.http.post(&url).json(body));
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
