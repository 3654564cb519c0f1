//! Live events for the dashboard's `/api/events` WebSocket: audit records and cron runs,
//! published as JSON objects with a `type`. Status changes are not published here: sockets
//! watch the turn gate directly, so they always send the latest state, never a backlog.
//!
//! A bounded broadcast: a socket that falls behind skips what it missed (and is told),
//! publishing never waits and never fails.
//!
//! The activity a page's feed shows (drains, sign-ins, fires, run ends) is also kept: the
//! last [`RECENT`] such events, sent as one `activity` message when a socket opens, so a
//! page opened now sees what happened before it (the audit log's tail seeds it at start,
//! so a restart keeps the drains, sign-ins and fires).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// Events a slow socket may lag behind before it skips.
const CAPACITY: usize = 256;
/// Activity events kept for a socket that opens later.
pub const RECENT: usize = 50;

#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<str>>,
    recent: Arc<Mutex<VecDeque<Arc<str>>>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(RECENT))),
        }
    }
}

impl Events {
    /// Publishes `{"type": kind, ...fields}` to every connected socket (if any).
    pub fn publish(&self, kind: &str, fields: Map<String, Value>) {
        if !self.has_listeners() {
            return;
        }
        let _ = self.tx.send(message(kind, fields));
    }

    /// Publishes like [`Events::publish`] and keeps the event for the `activity` message,
    /// whether or not a socket listens now.
    pub fn publish_activity(&self, kind: &str, fields: Map<String, Value>) {
        self.publish_rendered(message(kind, fields), true);
    }

    /// Sends one already-rendered event (a JSON object with its `type`) to the sockets,
    /// keeping it as activity too when `activity`.
    pub fn publish_rendered(&self, text: Arc<str>, activity: bool) {
        if activity {
            self.remember(text.clone());
        }
        if self.has_listeners() {
            let _ = self.tx.send(text);
        }
    }

    /// Keeps one already-rendered event (a JSON object with its `type`) as activity.
    pub fn remember(&self, text: Arc<str>) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(text);
    }

    /// `{"type":"activity","recent":[...]}`: the kept activity, oldest first.
    pub fn activity_message(&self) -> String {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(40 + recent.iter().map(|t| t.len() + 1).sum::<usize>());
        out.push_str("{\"type\":\"activity\",\"recent\":[");
        for (i, text) in recent.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(text);
        }
        out.push_str("]}");
        out
    }

    /// Whether any socket listens (so callers can skip building an event nobody reads).
    pub fn has_listeners(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

fn message(kind: &str, fields: Map<String, Value>) -> Arc<str> {
    let mut obj = fields;
    obj.insert("type".into(), Value::String(kind.into()));
    Arc::from(Value::Object(obj).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(n: usize) -> Map<String, Value> {
        json!({"n": n}).as_object().unwrap().clone()
    }

    #[test]
    fn activity_keeps_the_last_events_oldest_first_without_listeners() {
        let events = Events::default();
        assert_eq!(
            serde_json::from_str::<Value>(&events.activity_message()).unwrap(),
            json!({"type": "activity", "recent": []})
        );
        for n in 0..RECENT + 3 {
            events.publish_activity("audit", fields(n));
        }
        events.publish("turn", fields(999));
        let v: Value = serde_json::from_str(&events.activity_message()).unwrap();
        let recent = v["recent"].as_array().unwrap();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0], json!({"n": 3, "type": "audit"}));
        assert_eq!(recent[RECENT - 1]["n"], RECENT + 2);
    }

    #[test]
    fn activity_reaches_a_listener_live_too() {
        let events = Events::default();
        let mut rx = events.subscribe();
        events.publish_activity("run", fields(1));
        let got: Value = serde_json::from_str(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(got, json!({"n": 1, "type": "run"}));
    }
}
