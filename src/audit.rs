//! The auth audit trail: `$HERMES_HOME/logs/dashboard-auth.log`, one JSON object per line.
//!
//! Owns the file and the event names of SPEC §9. Callers pass only non-secret fields; this
//! module never sees tokens, tickets, cookies or passwords, and a failed write is logged and
//! swallowed so that auditing can never fail a request. The file is private: 0600 in a
//! 0700 `logs/` (SPEC §6).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::clock::{SharedClock, iso};

/// The closed set of audit events (compat names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEvent {
    LoginSuccess,
    LoginFailure,
    Logout,
    SessionRejected,
    WsTicketMinted,
    WsTicketRejected,
    TokenAuthSuccess,
    TokenAuthFailure,
    DrainBegin,
    DrainCancel,
    DrainExpired,
    CronFireAccepted,
    CronFireRejected,
}

impl AuditEvent {
    /// The `event` field written to the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginSuccess => "login_success",
            Self::LoginFailure => "login_failure",
            Self::Logout => "logout",
            Self::SessionRejected => "session_rejected",
            Self::WsTicketMinted => "ws_ticket_minted",
            Self::WsTicketRejected => "ws_ticket_rejected",
            Self::TokenAuthSuccess => "token_auth_success",
            Self::TokenAuthFailure => "token_auth_failure",
            Self::DrainBegin => "drain_begin",
            Self::DrainCancel => "drain_cancel",
            Self::DrainExpired => "drain_expired",
            Self::CronFireAccepted => "cron_fire_accepted",
            Self::CronFireRejected => "cron_fire_rejected",
        }
    }

    /// Whether the dashboard's activity feed shows it: drains, sign-ins, fires.
    pub fn is_activity(self) -> bool {
        ACTIVITY.contains(&self.as_str())
    }
}

/// The `event`s of the activity feed (see [`AuditEvent::is_activity`]).
const ACTIVITY: &[&str] = &[
    "login_success",
    "login_failure",
    "logout",
    "drain_begin",
    "drain_cancel",
    "drain_expired",
    "cron_fire_accepted",
    "cron_fire_rejected",
];

/// How much of the log's end seeds the activity feed at start.
const SEED_BYTES: usize = 64 * 1024;

/// Appends audit events to the log file; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    clock: SharedClock,
    file: Mutex<Option<File>>,
    events: Option<crate::events::Events>,
}

impl AuditLog {
    /// Also publishes every record (they hold no secrets) to the dashboard's live events;
    /// the activity among the log's last records (its last 64 KiB) is kept there at once,
    /// so a restart keeps the feed.
    pub fn with_events(mut self, events: crate::events::Events) -> Self {
        match crate::files::read_regular_tail(&self.path, SEED_BYTES) {
            Ok(Some(tail)) => seed(&events, &tail),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the audit log's end for the activity feed");
            }
        }
        self.events = Some(events);
        self
    }

    /// An audit log writing to `path` (opened lazily, created with its directory).
    pub fn new(path: PathBuf, clock: SharedClock) -> Self {
        Self {
            path,
            clock,
            file: Mutex::new(None),
            events: None,
        }
    }

    /// Where events go.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Records `event` with extra non-secret `fields`; never fails the caller.
    pub fn record(&self, event: AuditEvent, fields: &[(&str, Value)]) {
        let mut obj = Map::with_capacity(fields.len() + 2);
        obj.insert("ts".into(), Value::String(iso(self.clock.now())));
        obj.insert("event".into(), Value::String(event.as_str().into()));
        for (k, v) in fields {
            obj.insert((*k).to_owned(), v.clone());
        }
        let mut line = Value::Object(obj).to_string();
        if let Some(events) = &self.events {
            let activity = event.is_activity();
            if activity || events.has_listeners() {
                // The live event is the line itself with its `type` first (`line` is an
                // object with at least `ts` and `event`, so it goes on after its `{`).
                let text = format!("{{\"type\":\"audit\",{}", &line[1..]);
                events.publish_rendered(text.into(), activity);
            }
        }
        line.push('\n');
        if let Err(e) = self.append(line.as_bytes()) {
            tracing::warn!(path = %self.path.display(), error = %e, event = event.as_str(), "audit write failed");
        }
    }

    fn append(&self, line: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(crate::files::open_private_append(&self.path)?);
        }
        let file = guard.as_mut().expect("opened above");
        // One write per line with O_APPEND keeps lines whole across processes.
        let result = file.write_all(line);
        if result.is_err() {
            // Reopen next time: the file may have been rotated or its directory removed.
            *guard = None;
        }
        result
    }
}

/// Keeps the activity records of `tail` (the end of a log: a full tail's first line may be
/// cut and is skipped, as is any line that does not parse) as the feed's recent events.
fn seed(events: &crate::events::Events, tail: &[u8]) {
    let text = String::from_utf8_lossy(tail);
    let cut = usize::from(tail.len() == SEED_BYTES);
    for line in text.lines().skip(cut) {
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if obj
            .get("event")
            .and_then(Value::as_str)
            .is_some_and(|e| ACTIVITY.contains(&e))
        {
            obj.insert("type".into(), Value::String("audit".into()));
            events.remember(std::sync::Arc::from(Value::Object(obj).to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn the_logs_tail_seeds_the_activity_feed_with_its_activity_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let first = AuditLog::new(path.clone(), Arc::new(SystemClock));
        first.record(AuditEvent::WsTicketMinted, &[]);
        first.record(AuditEvent::DrainBegin, &[("principal", "ops".into())]);
        first.record(AuditEvent::TokenAuthSuccess, &[]);
        first.record(AuditEvent::LoginSuccess, &[("principal", "admin".into())]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        let events = crate::events::Events::default();
        let again = AuditLog::new(path, Arc::new(SystemClock)).with_events(events.clone());
        again.record(AuditEvent::SessionRejected, &[]);
        again.record(AuditEvent::DrainCancel, &[("principal", "ops".into())]);
        let v: Value = serde_json::from_str(&events.activity_message()).unwrap();
        let kept: Vec<(&str, &str)> = v["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["type"].as_str().unwrap(), r["event"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kept,
            [
                ("audit", "drain_begin"),
                ("audit", "login_success"),
                ("audit", "drain_cancel")
            ]
        );
    }

    #[test]
    fn writes_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path().join("logs/a.log"), Arc::new(SystemClock));
        log.record(AuditEvent::DrainBegin, &[("principal", "p".into())]);
        log.record(AuditEvent::DrainCancel, &[("active_agents", 3.into())]);
        let text = std::fs::read_to_string(dir.path().join("logs/a.log")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "drain_begin");
        assert_eq!(lines[0]["principal"], "p");
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["active_agents"], 3);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode("logs"), mode("logs/a.log")), (0o700, 0o600));
    }

    #[test]
    fn a_failed_write_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the log directory should be makes every write fail.
        std::fs::write(dir.path().join("logs"), b"x").unwrap();
        let log = AuditLog::new(dir.path().join("logs/a.log"), Arc::new(SystemClock));
        log.record(AuditEvent::DrainBegin, &[]);
    }
}
