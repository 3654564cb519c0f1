//! A live run's state in memory on the process that runs it: its event log (every event
//! since the start, so a late subscriber replays it all), its end once known, a stop
//! request, and the feed that reads the log as it grows.
//!
//! Only the process running a run has it; everyone else reads the store.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::stream;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::model::{EventFeed, RunView};
use crate::store::AgentRunStatus;

/// A run being run here.
#[derive(Debug)]
pub(super) struct LiveRun {
    pub id: String,
    pub session_id: String,
    pub model: String,
    pub created_at_ms: i64,
    /// Fired by a stop request: the run's turn is dropped (its agent killed).
    pub stop: CancellationToken,
    state: Mutex<LogState>,
    /// Bumped at every change of the log, for the feeds waiting on it.
    grown: watch::Sender<()>,
}

#[derive(Debug)]
struct LogState {
    events: Vec<Arc<str>>,
    last_event: Option<&'static str>,
    updated_at_ms: i64,
    stopping: bool,
    /// Set once the run has ended (its last event is in the log).
    end: Option<Ended>,
}

/// What the store has not seen yet of a run's log.
#[derive(Debug, Clone)]
pub(super) struct Unsynced {
    pub events: Vec<Arc<str>>,
    pub last_event: Option<&'static str>,
    pub updated_at_ms: i64,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub(super) struct Ended {
    pub status: AgentRunStatus,
    pub output: String,
    pub error: Option<String>,
}

/// One event's JSON text: `{"event", "run_id", "timestamp", ...fields}`, the time in Unix
/// seconds (with milliseconds, as Hermes sends it).
pub(super) fn event_text(
    name: &str,
    run_id: &str,
    at_ms: i64,
    fields: Map<String, Value>,
) -> Arc<str> {
    let mut obj = Map::with_capacity(fields.len() + 3);
    obj.insert("event".into(), json!(name));
    obj.insert("run_id".into(), json!(run_id));
    obj.insert("timestamp".into(), json!(seconds(at_ms)));
    obj.extend(fields);
    Arc::from(Value::Object(obj).to_string())
}

/// Unix milliseconds as fractional seconds.
pub(super) fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl LiveRun {
    pub fn new(id: String, session_id: String, model: String, now_ms: i64) -> Self {
        Self {
            id,
            session_id,
            model,
            created_at_ms: now_ms,
            stop: CancellationToken::new(),
            state: Mutex::new(LogState {
                events: Vec::new(),
                last_event: None,
                updated_at_ms: now_ms,
                stopping: false,
                end: None,
            }),
            grown: watch::Sender::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the event `name` with `fields` at `now_ms`.
    pub fn push(&self, name: &'static str, fields: Map<String, Value>, now_ms: i64) {
        let text = event_text(name, &self.id, now_ms, fields);
        {
            let mut s = self.state();
            s.events.push(text);
            s.last_event = Some(name);
            s.updated_at_ms = now_ms;
        }
        self.grown.send_replace(());
    }

    /// The events from `from` on, the name of the last one and its time, for a sync to
    /// the store.
    pub fn since(&self, from: usize) -> Unsynced {
        let s = self.state();
        Unsynced {
            events: s.events.get(from..).unwrap_or_default().to_vec(),
            last_event: s.last_event,
            updated_at_ms: s.updated_at_ms,
        }
    }

    /// Marks the run ended (its last event already pushed): the feeds end after it.
    pub fn close(&self, ended: Ended) {
        self.state().end = Some(ended);
        self.grown.send_replace(());
    }

    /// Asks the run to stop; when it has already ended, nothing is done and its status is
    /// the answer.
    pub fn request_stop(&self) -> Result<(), AgentRunStatus> {
        {
            let mut s = self.state();
            if let Some(end) = &s.end {
                return Err(end.status);
            }
            s.stopping = true;
        }
        self.stop.cancel();
        Ok(())
    }

    /// What `GET /v1/runs/{id}` shows of it now.
    pub fn view(&self) -> RunView {
        let s = self.state();
        let (status, output, error) = match &s.end {
            Some(e) => (e.status.as_str(), Some(e.output.clone()), e.error.clone()),
            None if s.stopping => ("stopping", None, None),
            None => (AgentRunStatus::Running.as_str(), None, None),
        };
        RunView {
            id: self.id.clone(),
            status,
            session_id: self.session_id.clone(),
            model: self.model.clone(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: s.updated_at_ms,
            last_event: s.last_event.map(str::to_owned),
            output,
            error,
        }
    }

    /// Every event from the first, then each new one as it is pushed, ending after the
    /// last one once the run has ended.
    pub fn feed(self: &Arc<Self>) -> EventFeed {
        // Subscribed before the first read, so no push after that read goes unseen.
        let grown = self.grown.subscribe();
        let start = (self.clone(), 0usize, grown, VecDeque::new());
        Box::pin(stream::unfold(
            start,
            |(run, mut next, mut grown, mut ready)| async move {
                loop {
                    if let Some(event) = ready.pop_front() {
                        return Some((event, (run, next, grown, ready)));
                    }
                    let ended = {
                        let s = run.state();
                        ready.extend(s.events.get(next..).unwrap_or_default().iter().cloned());
                        next = s.events.len();
                        s.end.is_some()
                    };
                    if !ready.is_empty() {
                        continue;
                    }
                    if ended || grown.changed().await.is_err() {
                        return None;
                    }
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn delta(text: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("delta".into(), json!(text));
        m
    }

    fn ended() -> Ended {
        Ended {
            status: AgentRunStatus::Completed,
            output: "ab".into(),
            error: None,
        }
    }

    #[tokio::test]
    async fn a_late_feed_replays_from_the_first_event_and_follows_until_the_end() {
        let run = Arc::new(LiveRun::new("run_x".into(), "s".into(), "m".into(), 1_500));
        run.push("message.delta", delta("a"), 2_000);
        let mut feed = run.feed();
        let first: Value = serde_json::from_str(&feed.next().await.unwrap()).unwrap();
        assert_eq!(
            first,
            json!({"event": "message.delta", "run_id": "run_x", "timestamp": 2.0, "delta": "a"})
        );
        let waiting = tokio::spawn(async move { feed.collect::<Vec<_>>().await });
        run.push("message.delta", delta("b"), 2_001);
        run.push("run.completed", Map::new(), 2_002);
        run.close(ended());
        let rest = waiting.await.unwrap();
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert!(rest[1].contains("\"run.completed\""), "{rest:?}");
        // A feed opened after the end replays everything and ends.
        assert_eq!(run.feed().collect::<Vec<_>>().await.len(), 3);
    }

    #[test]
    fn a_stop_is_refused_once_the_run_has_ended_and_the_view_follows_the_run() {
        let run = LiveRun::new("run_x".into(), "s".into(), "m".into(), 1_000);
        assert_eq!(
            (run.view().status, run.view().last_event),
            ("running", None)
        );
        assert_eq!(run.request_stop(), Ok(()));
        assert!(run.stop.is_cancelled());
        assert_eq!(run.view().status, "stopping");
        run.push("run.stopped", Map::new(), 1_100);
        run.close(Ended {
            status: AgentRunStatus::Cancelled,
            output: String::new(),
            error: None,
        });
        let view = run.view();
        assert_eq!(
            (view.status, view.last_event.as_deref(), view.updated_at_ms),
            ("cancelled", Some("run.stopped"), 1_100)
        );
        assert_eq!(run.request_stop(), Err(AgentRunStatus::Cancelled));
    }
}
