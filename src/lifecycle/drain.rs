//! Drain control: keeps the turn gate in step with the marker and audits every change.
//!
//! Three paths lead here: the authenticated API (begin/cancel), the marker watcher
//! (another process wrote or removed the file) and startup. All of them go through one
//! lock and one reconcile rule — marker present and fresh ⇒ draining — so the API and the
//! watcher can never disagree or audit the same transition twice.
//!
//! Reading the marker happens outside that lock (the read is bounded and never blocks, but
//! no lock is held across file reads): a reconcile applies what it read only if no begin,
//! cancel or other reconcile changed things while it was reading; otherwise the newer
//! change stands and its own file event brings the next reconcile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::gate::{DrainRequest, TurnGate};
use super::marker::{Marker, MarkerContent};
use crate::audit::{AuditEvent, AuditLog};
use crate::clock::SharedClock;
use crate::metrics::Metrics;

/// The result of a successful begin.
#[derive(Debug, Clone)]
pub struct Begun {
    pub requested_at: Timestamp,
    pub already_draining: bool,
}

/// Why a drain could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("could not write the drain marker {path}: {source}")]
    WriteMarker {
        path: String,
        source: std::io::Error,
    },
    #[error("could not remove the drain marker {path}: {source}")]
    RemoveMarker {
        path: String,
        source: std::io::Error,
    },
    /// A directory sits where the marker goes: it means draining, and only an operator
    /// can remove it (the gateway never deletes a directory tree).
    #[error(
        "the drain marker {path} is a directory, not a regular file; remove it by hand to change the drain"
    )]
    MarkerIsDirectory { path: String },
}

/// Owns begin, cancel and reconcile; share it behind an `Arc`.
#[derive(Debug)]
pub struct DrainControl {
    gate: Arc<TurnGate>,
    marker: Marker,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    max_age: Option<Duration>,
    /// Serialises marker writes with gate transitions; remembers what was already said.
    lock: Mutex<Memo>,
}

#[derive(Debug, Default)]
struct Memo {
    /// The expiry already audited.
    audited: Option<Timestamp>,
    /// The marker problem already logged, so an odd marker is logged once per change.
    logged_problem: Option<String>,
    /// Bumped by every change made under the lock; a reconcile whose read started before
    /// a change does not apply what it read.
    generation: u64,
    /// A drain was entered from a marker still being written (see
    /// [`MarkerContent::settling`]): its begin is audited once the content settles, with
    /// the principal the finished file names.
    begin_unaudited: bool,
}

impl Memo {
    /// Records the marker's current problem; true when it is new and should be logged.
    fn note_problem(&mut self, problem: Option<&str>) -> bool {
        if self.logged_problem.as_deref() == problem {
            return false;
        }
        self.logged_problem = problem.map(str::to_owned);
        problem.is_some()
    }
}

impl DrainControl {
    pub fn new(
        gate: Arc<TurnGate>,
        marker: Marker,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
        clock: SharedClock,
        max_age_seconds: u64,
    ) -> Self {
        Self {
            gate,
            marker,
            audit,
            metrics,
            clock,
            max_age: (max_age_seconds > 0).then(|| Duration::from_secs(max_age_seconds)),
            lock: Mutex::new(Memo::default()),
        }
    }

    /// The gate this controls.
    pub fn gate(&self) -> &Arc<TurnGate> {
        &self.gate
    }

    /// The marker this controls.
    pub fn marker(&self) -> &Marker {
        &self.marker
    }

    /// Begins (or refreshes) an external drain on behalf of `principal`. Blocks on file
    /// I/O (two fsyncs): async callers run it on a blocking thread.
    pub fn begin(&self, principal: &str) -> Result<Begun, DrainError> {
        let mut memo = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        memo.generation += 1;
        self.audit_unaudited_begin(&mut memo);
        let requested_at = self.clock.now();
        self.marker
            .write(requested_at, principal)
            .map_err(|source| self.io_error(source, true))?;
        let entered = self.gate.enter_drain(DrainRequest {
            requested_at,
            principal: principal.to_owned(),
        });
        self.audit_change(AuditEvent::DrainBegin, principal, "api", !entered);
        Ok(Begun {
            requested_at,
            already_draining: !entered,
        })
    }

    /// Cancels an external drain; returns whether one was in force. Idempotent. A FIFO or
    /// a link at the marker path is removed like a marker; a directory is an error.
    pub fn cancel(&self, principal: &str) -> Result<bool, DrainError> {
        let mut memo = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        memo.generation += 1;
        self.audit_unaudited_begin(&mut memo);
        let existed = self
            .marker
            .remove()
            .map_err(|source| self.io_error(source, false))?;
        let was_draining = self.gate.exit_drain() || existed;
        self.audit_change(AuditEvent::DrainCancel, principal, "api", !was_draining);
        Ok(was_draining)
    }

    /// Brings the gate in line with the marker on disk. Called at startup, on every file
    /// event and on a slow timer (which is also what notices a marker reaching its max age).
    pub fn reconcile(&self) {
        let seen = self
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation;
        let found = self.marker.read();
        let mut memo = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if memo.generation != seen {
            // A begin, cancel or reconcile changed things while we read: the newer stands.
            return;
        }
        memo.generation += 1;
        let problem = found
            .as_ref()
            .filter(|c| !c.settling)
            .and_then(|c| c.problem.as_deref());
        if memo.note_problem(problem) {
            tracing::warn!(
                path = %self.marker.path().display(),
                "drain marker {}; draining anyway",
                problem.unwrap_or_default()
            );
        }
        match found {
            None => {
                memo.audited = None;
                self.audit_unaudited_begin(&mut memo);
                if self.gate.exit_drain() {
                    self.audit_change(AuditEvent::DrainCancel, "marker", "marker", false);
                }
            }
            Some(content) if self.is_expired(&content) => {
                let removed = self.marker.remove();
                self.audit_unaudited_begin(&mut memo);
                let exited = self.gate.exit_drain();
                if exited || memo.audited != Some(content.requested_at) {
                    memo.audited = Some(content.requested_at);
                    self.expired(&content);
                    if let Err(e) = removed {
                        tracing::warn!(error = %e, "could not remove an expired drain marker");
                    }
                }
            }
            Some(content) => {
                let (principal, settling) = (content.principal.clone(), content.settling);
                if self.gate.enter_drain(DrainRequest {
                    requested_at: content.requested_at,
                    principal: content.principal,
                }) {
                    memo.begin_unaudited = true;
                }
                // A marker caught half-written drains at once; its begin is audited when
                // the file is complete, naming its principal rather than "marker".
                if memo.begin_unaudited && !settling {
                    memo.begin_unaudited = false;
                    self.audit_change(AuditEvent::DrainBegin, &principal, "marker", false);
                }
            }
        }
    }

    /// Audits a marker drain whose begin was waiting for its file to settle.
    fn audit_unaudited_begin(&self, memo: &mut Memo) {
        if std::mem::take(&mut memo.begin_unaudited) {
            self.audit_change(AuditEvent::DrainBegin, "marker", "marker", false);
        }
    }

    /// A failed marker write or removal; a directory in the way gets its own clear error.
    fn io_error(&self, source: std::io::Error, writing: bool) -> DrainError {
        let path = self.marker.path().display().to_string();
        if self.marker.is_directory() {
            DrainError::MarkerIsDirectory { path }
        } else if writing {
            DrainError::WriteMarker { path, source }
        } else {
            DrainError::RemoveMarker { path, source }
        }
    }

    fn is_expired(&self, content: &MarkerContent) -> bool {
        let Some(max) = self.max_age else {
            return false;
        };
        let age = self.clock.now().duration_since(content.requested_at);
        age.as_secs_f64() > max.as_secs_f64()
    }

    fn expired(&self, content: &MarkerContent) {
        let age = self
            .clock
            .now()
            .duration_since(content.requested_at)
            .as_secs();
        tracing::warn!(
            principal = %content.principal,
            age_seconds = age,
            "drain marker older than drain.marker_max_age_seconds: ignored and removed"
        );
        self.metrics.drain_event("expired");
        self.audit.record(
            AuditEvent::DrainExpired,
            &[
                ("principal", json!(content.principal)),
                ("age_seconds", json!(age)),
                (
                    "requested_at",
                    json!(crate::clock::iso(content.requested_at)),
                ),
                ("active_agents", json!(self.gate.snapshot().active_agents)),
            ],
        );
    }

    fn audit_change(&self, event: AuditEvent, principal: &str, source: &str, no_op: bool) {
        let active = self.gate.snapshot().active_agents;
        let (name, verb) = match event {
            AuditEvent::DrainBegin => ("begin", "drain begun"),
            _ => ("cancel", "drain cancelled"),
        };
        if !no_op {
            self.metrics.drain_event(name);
            tracing::info!(principal, source, active_agents = active, "{verb}");
        }
        self.audit.record(
            event,
            &[
                ("principal", json!(principal)),
                ("source", json!(source)),
                ("active_agents", json!(active)),
                ("changed", json!(!no_op)),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::lifecycle::gate::GatewayState;

    struct Fixture {
        _dir: tempfile::TempDir,
        ctl: DrainControl,
        clock: Arc<ManualClock>,
        audit_path: std::path::PathBuf,
    }

    fn fixture(max_age: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new("2026-11-22T10:00:00Z".parse().unwrap());
        let metrics = Arc::new(Metrics::default());
        let gate = TurnGate::new(clock.clone(), metrics.clone(), Default::default());
        gate.mark_serving();
        let audit_path = dir.path().join("audit.log");
        let audit = Arc::new(AuditLog::new(audit_path.clone(), clock.clone()));
        let ctl = DrainControl::new(
            gate,
            Marker::new(dir.path().join(".drain_request.json"), clock.clone()),
            audit,
            metrics,
            clock.clone(),
            max_age,
        );
        Fixture {
            _dir: dir,
            ctl,
            clock,
            audit_path,
        }
    }

    fn events(f: &Fixture) -> Vec<String> {
        std::fs::read_to_string(&f.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn api_begin_and_cancel_write_the_marker_and_audit_once() {
        let f = fixture(3600);
        f.ctl.begin("drain-control").unwrap();
        assert!(f.ctl.marker().read().is_some());
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Draining);
        f.ctl.reconcile(); // the watcher sees our own write: no second event
        assert!(f.ctl.cancel("drain-control").unwrap());
        assert!(!f.ctl.cancel("drain-control").unwrap());
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Running);
        assert_eq!(events(&f), ["drain_begin", "drain_cancel", "drain_cancel"]);
    }

    #[test]
    fn reconcile_follows_a_marker_written_elsewhere() {
        let f = fixture(3600);
        std::fs::write(f.ctl.marker().path(), "garbage").unwrap();
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Draining);
        std::fs::remove_file(f.ctl.marker().path()).unwrap();
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Running);
        assert_eq!(events(&f), ["drain_begin", "drain_cancel"]);
    }

    #[test]
    fn an_old_marker_expires_once() {
        let f = fixture(60);
        f.ctl.begin("nas").unwrap();
        f.clock.advance(Duration::from_secs(61));
        f.ctl.reconcile();
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Running);
        assert!(f.ctl.marker().read().is_none(), "expired marker removed");
        assert_eq!(events(&f), ["drain_begin", "drain_expired"]);
    }

    #[test]
    fn special_markers_drain_cancel_and_log_once_per_change() {
        let f = fixture(3600);
        let path = f.ctl.marker().path().to_path_buf();
        let ok = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Draining);
        let first = f.ctl.gate().snapshot().drain;
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().drain, first, "a stable request");
        // Begin replaces the FIFO, cancel removes the marker.
        f.ctl.begin("api").unwrap();
        assert!(f.ctl.marker().read().unwrap().well_formed());
        assert!(f.ctl.cancel("api").unwrap());
        std::fs::create_dir(&path).unwrap();
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Draining);
        for result in [
            f.ctl.cancel("api").map(|_| ()),
            f.ctl.begin("api").map(|_| ()),
        ] {
            let e = result.unwrap_err();
            assert!(matches!(e, DrainError::MarkerIsDirectory { .. }), "{e}");
            assert!(e.to_string().contains(".drain_request.json"), "{e}");
        }
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Draining);
    }

    #[test]
    fn a_marker_problem_is_logged_once_per_change() {
        let mut memo = Memo::default();
        let fifo = Some("is a FIFO, not a regular file");
        assert!(memo.note_problem(fifo));
        assert!(!memo.note_problem(fifo), "not on every reconcile");
        assert!(memo.note_problem(Some("is a directory, not a regular file")));
        assert!(!memo.note_problem(None));
        assert!(memo.note_problem(fifo), "logged again after it went away");
    }

    #[test]
    fn a_half_written_marker_drains_at_once_and_audits_the_finished_principal() {
        let f = fixture(3600);
        let path = f.ctl.marker().path().to_path_buf();
        std::fs::write(&path, "").unwrap(); // created, not yet written
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Draining);
        assert!(events(&f).is_empty(), "the begin waits for the content");
        std::fs::write(
            &path,
            r#"{"action":"drain","requested_at":"2026-11-22T10:00:00Z","principal":"operator"}"#,
        )
        .unwrap();
        f.ctl.reconcile();
        f.ctl.reconcile();
        let audit = std::fs::read_to_string(&f.audit_path).unwrap();
        assert_eq!(events(&f), ["drain_begin"]);
        assert!(audit.contains(r#""principal":"operator""#), "{audit}");
        // A half-written marker removed before it settles is still audited, begin and end.
        std::fs::write(&path, "{").unwrap();
        std::fs::remove_file(&path).unwrap();
        f.ctl.reconcile();
        std::fs::write(&path, "{").unwrap();
        f.ctl.reconcile();
        std::fs::remove_file(&path).unwrap();
        f.ctl.reconcile();
        assert_eq!(
            events(&f),
            ["drain_begin", "drain_cancel", "drain_begin", "drain_cancel"]
        );
    }

    #[test]
    fn max_age_zero_never_expires() {
        let f = fixture(0);
        f.ctl.begin("nas").unwrap();
        f.clock.advance(Duration::from_secs(10 * 365 * 86_400));
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Draining);
    }
}
