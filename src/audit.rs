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
}

/// Appends audit events to the log file; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    clock: SharedClock,
    file: Mutex<Option<File>>,
    events: Option<crate::events::Events>,
}

impl AuditLog {
    /// Also publishes every record (they hold no secrets) to the dashboard's live events.
    pub fn with_events(mut self, events: crate::events::Events) -> Self {
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
        if let Some(events) = self.events.as_ref().filter(|e| e.has_listeners()) {
            events.publish("audit", obj.clone());
        }
        let mut line = Value::Object(obj).to_string();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::SystemClock;

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
