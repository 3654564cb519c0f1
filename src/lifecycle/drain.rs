//! Drain control: keeps the turn gate in step with the marker and audits every change.
//!
//! Three paths lead here: the authenticated API (begin/cancel), the marker watcher
//! (another process wrote or removed the file) and startup. All of them go through one
//! lock and one reconcile rule — marker present and fresh ⇒ draining — so the API and the
//! watcher can never disagree or audit the same transition twice.

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
    /// Serialises marker I/O with gate transitions; also remembers an expiry already audited.
    lock: Mutex<ExpiryMemo>,
}

#[derive(Debug, Default)]
struct ExpiryMemo {
    audited: Option<Timestamp>,
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
            lock: Mutex::new(ExpiryMemo::default()),
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

    /// Begins (or refreshes) an external drain on behalf of `principal`.
    pub fn begin(&self, principal: &str) -> Result<Begun, DrainError> {
        let _lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let requested_at = self.clock.now();
        self.marker
            .write(requested_at, principal)
            .map_err(|source| DrainError::WriteMarker {
                path: self.marker.path().display().to_string(),
                source,
            })?;
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

    /// Cancels an external drain; returns whether one was in force. Idempotent.
    pub fn cancel(&self, principal: &str) -> Result<bool, DrainError> {
        let _lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let existed = self
            .marker
            .remove()
            .map_err(|source| DrainError::RemoveMarker {
                path: self.marker.path().display().to_string(),
                source,
            })?;
        let was_draining = self.gate.exit_drain() || existed;
        self.audit_change(AuditEvent::DrainCancel, principal, "api", !was_draining);
        Ok(was_draining)
    }

    /// Brings the gate in line with the marker on disk. Called at startup, on every file
    /// event and on a slow timer (which is also what notices a marker reaching its max age).
    pub fn reconcile(&self) {
        let mut memo = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match self.marker.read() {
            None => {
                memo.audited = None;
                if self.gate.exit_drain() {
                    self.audit_change(AuditEvent::DrainCancel, "marker", "marker", false);
                }
            }
            Some(content) if self.is_expired(&content) => {
                if let Err(e) = self.marker.remove() {
                    tracing::warn!(error = %e, "could not remove an expired drain marker");
                }
                let exited = self.gate.exit_drain();
                if exited || memo.audited != Some(content.requested_at) {
                    memo.audited = Some(content.requested_at);
                    self.expired(&content);
                }
            }
            Some(content) => {
                let principal = content.principal.clone();
                if !content.well_formed {
                    tracing::warn!(path = %self.marker.path().display(), "drain marker is not valid JSON; draining anyway");
                }
                if self.gate.enter_drain(DrainRequest {
                    requested_at: content.requested_at,
                    principal: content.principal,
                }) {
                    self.audit_change(AuditEvent::DrainBegin, &principal, "marker", false);
                }
            }
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
        let gate = TurnGate::new(clock.clone(), metrics.clone());
        gate.mark_serving();
        let audit_path = dir.path().join("audit.log");
        let audit = Arc::new(AuditLog::new(audit_path.clone(), clock.clone()));
        let ctl = DrainControl::new(
            gate,
            Marker::new(dir.path().join(".drain_request.json")),
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
    fn max_age_zero_never_expires() {
        let f = fixture(0);
        f.ctl.begin("nas").unwrap();
        f.clock.advance(Duration::from_secs(10 * 365 * 86_400));
        f.ctl.reconcile();
        assert_eq!(f.ctl.gate().snapshot().state, GatewayState::Draining);
    }
}
