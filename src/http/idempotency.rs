//! `Idempotency-Key` for non-streaming chat completions: the same key with the same body
//! runs one turn; every repeat (also while the first is still running) gets that turn's
//! response. The same key with a different body is refused (422), never silently served.
//!
//! Only completed answers are kept: a refusal (draining, a failed turn) is an `ApiError`,
//! returned as it is and never kept, so a retry after one runs again. Entries live for
//! [`TTL`], at most [`MAX_ENTRIES`] of them; memory is bounded whatever clients send. Process-local by design: a retry normally reaches the
//! same instance, and the turn itself is what must not run twice concurrently.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::ApiError;

/// How long a key is remembered.
pub const TTL: Duration = Duration::from_secs(3600);
/// Most keys remembered at once; the oldest go first.
pub const MAX_ENTRIES: usize = 10_000;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

#[derive(Debug)]
struct Entry {
    body_digest: Vec<u8>,
    created: Instant,
    /// The completed turn's JSON answer, once there is one.
    answer: OnceCell<Value>,
}

/// The remembered keys of one process.
#[derive(Debug, Default)]
pub struct Idempotency {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

/// Refuses a key that is empty, longer than [`MAX_KEY_LEN`] or holds anything but visible
/// ASCII and spaces (a tab, say), as documented (also where no turn is kept under it, a
/// streamed one: a bad key is a bad request either way).
pub fn check_key(key: &str) -> Result<(), ApiError> {
    let printable = key.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_KEY_LEN || !printable {
        return Err(ApiError::invalid_request(
            format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters or spaces"
            ),
            Some("invalid_idempotency_key"),
        ));
    }
    Ok(())
}

/// The request's `Idempotency-Key`, if it sent one; a value that is not visible ASCII is a
/// 400.
pub fn header(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::invalid_request("Idempotency-Key must be visible ASCII", None)
            })
        })
        .transpose()
}

impl Idempotency {
    /// Runs `turn` once per (key, body); repeats get its answer (a 200 with that JSON).
    /// A turn that fails answers its error and is not kept.
    pub async fn run<F, Fut>(&self, key: &str, body: &[u8], turn: F) -> Result<Response, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Value, ApiError>>,
    {
        check_key(key)?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body)
            .as_ref()
            .to_vec();
        let entry = self.entry(key, digest.clone());
        if entry.body_digest != digest {
            return Err(ApiError::idempotency_key_reused());
        }
        let answer = entry.answer.get_or_try_init(turn).await?;
        Ok(Json(answer.clone()).into_response())
    }

    fn entry(&self, key: &str, digest: Vec<u8>) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(e) = entries.get(key)
            && now.duration_since(e.created) < TTL
        {
            return e.clone();
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.duration_since(e.created) < TTL);
            if entries.len() >= MAX_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.created)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        let entry = Arc::new(Entry {
            body_digest: digest,
            created: now,
            answer: OnceCell::new(),
        });
        entries.insert(key.to_owned(), entry.clone());
        entry
    }
}
