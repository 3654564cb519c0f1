//! The `openai` backend: forwards the conversation to any OpenAI-compatible server
//! (`{base_url}/chat/completions`: vLLM, llama.cpp, Ollama, a hosted API) and streams its
//! answer back chunk by chunk.
//!
//! The upstream is always asked to stream (with usage), so a client's streamed turn sees
//! tokens as they arrive and a non-streamed one is simply collected. Every upstream fault —
//! refused connection, an error status, a stream cut short, silence longer than
//! `timeout_seconds` — ends the turn as failed with a message safe to show a client; the
//! upstream key is never part of one. One pooled HTTP client serves all turns.

use std::time::Duration;

use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{TurnEvent, TurnRequest, TurnStream, Usage, channel_stream};
use crate::config::OpenAiConfig;

/// How much of an upstream error body is quoted back to the client.
const ERROR_EXCERPT_CHARS: usize = 300;

/// Talks to one OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct OpenAiBackend {
    http: reqwest::Client,
    url: String,
    model: String,
    key: Option<SecretString>,
    timeout: Duration,
}

/// Why the backend could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for the openai backend: {0}")]
pub struct ClientError(String);

impl OpenAiBackend {
    pub fn new(config: &OpenAiConfig, key: Option<SecretString>) -> Result<Self, ClientError> {
        let timeout = Duration::from_secs(config.timeout_seconds);
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .read_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Self {
            http,
            url: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            model: config.model.clone(),
            key,
            timeout,
        })
    }

    pub fn start(&self, request: TurnRequest) -> TurnStream {
        let (tx, rx) = mpsc::channel(32);
        let backend = self.clone();
        tokio::spawn(async move {
            let event = tokio::select! {
                event = backend.run(request, &tx) => event,
                // The client went away: dropping `run` closes the upstream connection.
                () = tx.closed() => return,
            };
            let _ = tx.send(event).await;
        });
        channel_stream(rx)
    }

    async fn run(&self, request: TurnRequest, tx: &mpsc::Sender<TurnEvent>) -> TurnEvent {
        let model = if self.model.is_empty() {
            request.model.clone()
        } else {
            self.model.clone()
        };
        let body = json!({
            "model": model,
            "messages": request.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key.expose_secret());
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return TurnEvent::Failed(self.transport_error(e)),
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return TurnEvent::Failed(upstream_status_error(status.as_u16(), &text));
        }
        let mut sse = SseParser::default();
        let mut finished = false;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return TurnEvent::Failed(self.transport_error(e)),
            };
            for data in sse.push(&chunk) {
                match parse_data(&data) {
                    Data::Done => return TurnEvent::Done,
                    Data::Chunk { events, finish } => {
                        finished |= finish;
                        for event in events {
                            if tx.send(event).await.is_err() {
                                return TurnEvent::Failed("the turn was cancelled".into());
                            }
                        }
                    }
                    Data::Error(message) => return TurnEvent::Failed(message),
                }
            }
        }
        if finished {
            TurnEvent::Done
        } else {
            TurnEvent::Failed(
                "the upstream closed the stream before the answer was complete".into(),
            )
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> String {
        if e.is_timeout() {
            format!(
                "the upstream did not answer within {} s",
                self.timeout.as_secs()
            )
        } else if e.is_connect() {
            format!("the upstream at {} is unreachable", self.url)
        } else {
            format!("the connection to the upstream failed: {}", e.without_url())
        }
    }
}

fn upstream_status_error(status: u16, body: &str) -> String {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned());
    let detail: String = detail.chars().take(ERROR_EXCERPT_CHARS).collect();
    let what = match status {
        401 | 403 => "rejected the gateway's credentials",
        404 => "has no such endpoint or model",
        429 => "is rate limiting",
        400..=499 => "refused the request",
        _ => "failed",
    };
    if detail.is_empty() {
        format!("the upstream {what} (HTTP {status})")
    } else {
        format!("the upstream {what} (HTTP {status}): {detail}")
    }
}

enum Data {
    /// `[DONE]`: the answer is complete.
    Done,
    /// A chunk: its events, and whether it carried a `finish_reason`.
    Chunk {
        events: Vec<TurnEvent>,
        finish: bool,
    },
    Error(String),
}

/// Interprets one SSE `data:` payload of a chat.completion.chunk stream.
fn parse_data(data: &str) -> Data {
    if data.trim() == "[DONE]" {
        return Data::Done;
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return Data::Error("the upstream sent a stream event that is not JSON".into());
    };
    if let Some(message) = v["error"]["message"].as_str() {
        return Data::Error(format!("the upstream failed mid-answer: {message}"));
    }
    let mut events = Vec::new();
    if let Some(text) = v["choices"][0]["delta"]["content"].as_str()
        && !text.is_empty()
    {
        events.push(TurnEvent::Delta(text.to_owned()));
    }
    if let (Some(p), Some(c)) = (
        v["usage"]["prompt_tokens"].as_u64(),
        v["usage"]["completion_tokens"].as_u64(),
    ) {
        events.push(TurnEvent::Usage(Usage {
            prompt_tokens: p,
            completion_tokens: c,
        }));
    }
    Data::Chunk {
        events,
        finish: v["choices"][0]["finish_reason"].is_string(),
    }
}

/// Splits an SSE byte stream into `data:` payloads (multi-line data joined with `\n`).
#[derive(Debug, Default)]
struct SseParser {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                self.data
                    .push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_frames_split_anywhere() {
        let text = "data: {\"choices\":[{\"delta\":{\"content\":\"he\"}}]}\n\n: comment\n\ndata: [DONE]\n\n";
        for cut in 0..text.len() {
            let mut p = SseParser::default();
            let mut out = p.push(&text.as_bytes()[..cut]);
            out.extend(p.push(&text.as_bytes()[cut..]));
            assert_eq!(out.len(), 2, "cut at {cut}");
            assert!(matches!(parse_data(&out[1]), Data::Done));
            assert!(
                matches!(parse_data(&out[0]), Data::Chunk { ref events, finish: false } if events == &[TurnEvent::Delta("he".into())])
            );
        }
    }

    #[test]
    fn upstream_errors_are_named() {
        let check = |status, body: &str, expected: &str| {
            assert_eq!(upstream_status_error(status, body), expected);
        };
        check(
            401,
            r#"{"error":{"message":"bad key"}}"#,
            "the upstream rejected the gateway's credentials (HTTP 401): bad key",
        );
        check(503, "", "the upstream failed (HTTP 503)");
        check(
            429,
            "slow down",
            "the upstream is rate limiting (HTTP 429): slow down",
        );
    }
}
