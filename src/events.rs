//! Live events for the dashboard's `/api/events` WebSocket: audit records and cron runs,
//! published as JSON objects with a `type`. Status changes are not published here: sockets
//! watch the turn gate directly, so they always send the latest state, never a backlog.
//!
//! A bounded broadcast: a socket that falls behind skips what it missed (and is told),
//! publishing never waits and never fails.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// Events a slow socket may lag behind before it skips.
const CAPACITY: usize = 256;

#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Events {
    /// Publishes `{"type": kind, ...fields}` to every connected socket (if any).
    pub fn publish(&self, kind: &str, fields: Map<String, Value>) {
        if !self.has_listeners() {
            return;
        }
        let mut obj = fields;
        obj.insert("type".into(), Value::String(kind.into()));
        let _ = self.tx.send(Arc::from(Value::Object(obj).to_string()));
    }

    /// Whether any socket listens (so callers can skip building an event nobody reads).
    pub fn has_listeners(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}
