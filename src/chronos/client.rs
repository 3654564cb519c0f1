//! The account service's agent-cron API (SPEC §8, outbound): provision, cancel and list the
//! one-shots an external scheduler will fire at this agent.
//!
//! Owns the wire shapes and the error taxonomy of that API. Every call carries the bearer
//! `HERMES_NOUS_ACCESS_TOKEN` and a 15 s timeout; errors carry the status and a bounded,
//! token-free excerpt of the answer. A 403 `invalid_client` is told apart as
//! [`AccountError::IdentityRejected`]: this agent's identity is refused, retrying will not help.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::clock::iso;
use crate::metrics::Metrics;
use crate::outbound::LazyClient;

/// Timeout of every account-service call (SPEC §8).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest excerpt of an error answer kept in an error.
const EXCERPT_CHARS: usize = 200;

/// Why an account-service call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    /// No answer: connection refused, DNS, timeout.
    #[error("account service unreachable ({call}): {detail}")]
    Unreachable { call: &'static str, detail: String },
    /// The service answered with an error status.
    #[error("account service answered HTTP {status} to {call}: {excerpt}")]
    Status {
        call: &'static str,
        status: u16,
        excerpt: String,
    },
    /// 403 `invalid_client`: the service does not accept this agent's identity. Permanent
    /// until the token or the agent's registration changes.
    #[error(
        "account service rejected this agent's identity (HTTP 403 invalid_client on {call}): {excerpt}"
    )]
    IdentityRejected { call: &'static str, excerpt: String },
    /// A 2xx answer that is not the documented shape.
    #[error("account service answer to {call} is not the expected JSON: {detail}")]
    Decode { call: &'static str, detail: String },
}

/// One one-shot the account service holds for this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    pub job_id: String,
    /// When it fires; `None` if the service did not say (then it is re-armed).
    pub fire_at: Option<Timestamp>,
}

/// A client for `{portal_url}/api/agent-cron/*`.
#[derive(Debug, Clone)]
pub struct AccountClient {
    http: LazyClient,
    portal: String,
    token: SecretString,
    metrics: Arc<Metrics>,
}

impl AccountClient {
    /// Its HTTP client is built by the first call (one that cannot be built fails that
    /// call as an unreachable service does).
    pub fn new(portal_url: &str, token: SecretString, metrics: Arc<Metrics>) -> Self {
        Self {
            http: LazyClient::new(|| {
                reqwest::Client::builder()
                    .timeout(CALL_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
            }),
            portal: portal_url.trim_end_matches('/').to_owned(),
            token,
            metrics,
        }
    }

    /// Arms a one-shot: at `fire_at` the scheduler POSTs `{callback_url}/api/cron/fire` with a
    /// fire token (it appends the path itself; `callback_url` is the agent's base URL).
    pub async fn provision(
        &self,
        job_id: &str,
        fire_at: Timestamp,
        callback_url: &str,
    ) -> Result<(), AccountError> {
        let fire_at = iso(fire_at);
        let body = json!({
            "job_id": job_id,
            "fire_at": fire_at,
            "agent_callback_url": callback_url,
            "dedup_key": format!("{job_id}:{fire_at}"),
        });
        self.call("provision", reqwest::Method::POST, Some(body))
            .await
            .map(drop)
    }

    /// Cancels whatever is armed for `job_id`.
    pub async fn cancel(&self, job_id: &str) -> Result<(), AccountError> {
        self.call(
            "cancel",
            reqwest::Method::POST,
            Some(json!({ "job_id": job_id })),
        )
        .await
        .map(drop)
    }

    /// What is armed for this agent.
    pub async fn list(&self) -> Result<Vec<Armed>, AccountError> {
        let body = self.call("list", reqwest::Method::GET, None).await?;
        parse_list(&body).map_err(|detail| AccountError::Decode {
            call: "list",
            detail,
        })
    }

    async fn call(
        &self,
        call: &'static str,
        method: reqwest::Method,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, AccountError> {
        let url = format!("{}/api/agent-cron/{call}", self.portal);
        let result = match self.http.get() {
            Ok(http) => {
                let mut req = http
                    .request(method, url)
                    .bearer_auth(self.token.expose_secret());
                if let Some(body) = body {
                    req = req.json(&body);
                }
                self.send(call, req).await
            }
            Err(e) => Err(AccountError::Unreachable {
                call,
                detail: e.to_owned(),
            }),
        };
        self.metrics.account_call(match &result {
            Ok(_) => "ok",
            Err(AccountError::IdentityRejected { .. }) => "rejected",
            Err(_) => "error",
        });
        result
    }

    async fn send(
        &self,
        call: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, AccountError> {
        let unreachable = |e: reqwest::Error| AccountError::Unreachable {
            call,
            detail: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(unreachable)?.to_vec();
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let excerpt = self.excerpt(&body);
        if status == 403 && excerpt.contains("invalid_client") {
            return Err(AccountError::IdentityRejected { call, excerpt });
        }
        Err(AccountError::Status {
            call,
            status,
            excerpt,
        })
    }

    /// At most [`EXCERPT_CHARS`] characters of an answer, on one line, never the token.
    fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let token = self.token.expose_secret();
        let text = if token.is_empty() {
            text.into_owned()
        } else {
            text.replace(token, "[redacted]")
        };
        let mut out: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(EXCERPT_CHARS)
            .collect();
        if text.chars().count() > EXCERPT_CHARS {
            out.push('…');
        }
        out
    }
}

#[derive(Deserialize)]
struct ListBody {
    armed: Vec<serde_json::Value>,
}

/// `{"armed":[{"job_id","fire_at"?,"dedup_key"?}...]}`; `fire_at` may also be read from
/// the `<job_id>:<fire_at>` dedup key.
fn parse_list(body: &[u8]) -> Result<Vec<Armed>, String> {
    let list: ListBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    list.armed
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let job_id = entry
                .get("job_id")
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("armed[{i}]: missing job_id"))?
                .to_owned();
            let from_key = entry
                .get("dedup_key")
                .and_then(|v| v.as_str())
                .and_then(|k| k.strip_prefix(&format!("{job_id}:")).map(str::to_owned));
            let fire_at = entry
                .get("fire_at")
                .and_then(|v| v.as_str().map(str::to_owned))
                .or(from_key)
                .and_then(|t| t.parse::<Timestamp>().ok());
            Ok(Armed { job_id, fire_at })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_shapes() {
        let ts: Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
        let got = parse_list(
            br#"{"armed":[{"job_id":"a","fire_at":"2026-12-01T09:00:00Z"},
                          {"job_id":"b","dedup_key":"b:2026-12-01T09:00:00Z"},
                          {"job_id":"c"}]}"#,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                Armed {
                    job_id: "a".into(),
                    fire_at: Some(ts)
                },
                Armed {
                    job_id: "b".into(),
                    fire_at: Some(ts)
                },
                Armed {
                    job_id: "c".into(),
                    fire_at: None
                },
            ]
        );
        assert!(
            parse_list(br#"{"armed":[{"fire_at":"x"}]}"#)
                .unwrap_err()
                .contains("armed[0]: missing job_id")
        );
        assert!(parse_list(b"[]").is_err());
    }

    #[test]
    fn excerpts_are_bounded_and_token_free() {
        let c = AccountClient::new(
            "http://x",
            SecretString::from("tok-123"),
            Arc::new(Metrics::default()),
        );
        let long = format!("{{\"error\":\"bad tok-123\"}}\n{}", "x".repeat(500));
        let e = c.excerpt(long.as_bytes());
        assert!(!e.contains("tok-123"), "{e}");
        assert!(e.contains("[redacted]"));
        assert!(!e.contains('\n'));
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
    }
}
