//! The runtime status record (compat, SPEC §6) and its on-disk mirror `gateway_state.json`.
//!
//! One builder makes the record from a gate snapshot, so `/api/status`, `/health/detailed`,
//! the state file and the CLI always agree. The file is merge-written atomically: keys that
//! other tools put there survive our writes. It is written 0600 (SPEC §6) off the async
//! runtime's workers, and read only if it is a regular file of at most 1 MiB.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::gate::{GatewayState, Snapshot, TurnGate};
use crate::clock::{SharedClock, iso};
use crate::files::{read_regular, write_atomic};

/// Facts about this process that do not change while it runs (addresses are set once bound).
#[derive(Debug)]
pub struct RuntimeInfo {
    pub version: &'static str,
    pub pid: u32,
    pub start_time: Timestamp,
    pub restart_drain_timeout: f64,
    pub auth_required: bool,
    pub auth_providers: Vec<String>,
    pub api_server_addr: OnceLock<String>,
    pub dashboard_addr: OnceLock<String>,
    /// The cron ticker's health, written by the ticker (None until it first runs).
    pub cron: Mutex<Option<CronStatus>>,
}

/// The built-in cron ticker's health: it never dies silently.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CronStatus {
    /// `builtin` (or the external provider's name).
    pub provider: String,
    pub last_tick_at: Option<String>,
    pub last_error: Option<String>,
    /// Jobs due at the last tick.
    pub due_jobs: usize,
    /// The last tick was skipped because the gateway is draining (due jobs stay due).
    pub skipped_while_draining: bool,
    /// Chronos: jobs armed with the account service after the last good reconcile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub armed: Option<usize>,
    /// Chronos: when the last reconcile ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reconcile_at: Option<String>,
    /// Chronos: the account service refused this agent's identity (403 `invalid_client`);
    /// reconciles stop until a job changes.
    pub identity_rejected: bool,
    /// Why the configured provider is not the one running, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl RuntimeInfo {
    /// Changes the cron part of the status record.
    pub fn update_cron(&self, f: impl FnOnce(&mut CronStatus)) {
        let mut s = self.cron.lock().unwrap_or_else(|e| e.into_inner());
        f(s.get_or_insert_with(CronStatus::default));
    }
}

/// The compat status record served by `GET /api/status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusRecord {
    pub version: &'static str,
    /// The gateway process is up (any state but `stopped` and `startup_failed`).
    pub gateway_running: bool,
    /// `starting|running|draining|stopping|stopped|startup_failed`.
    pub gateway_state: &'static str,
    /// In-flight turns; status polls never count.
    pub active_agents: usize,
    /// `gateway_state == "running"` and `active_agents > 0`.
    pub gateway_busy: bool,
    /// `gateway_state == "running"`.
    pub gateway_drainable: bool,
    pub restart_drain_timeout: f64,
    /// Distinct sessions with a turn in flight.
    pub active_sessions: usize,
    pub auth_required: bool,
    pub auth_providers: Vec<String>,
    pub gateway_updated_at: String,
    /// True while an external drain is requested (also during shutdown).
    pub draining: bool,
    /// The cron ticker's health (absent until it first ticks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronStatus>,
}

/// `GET /api/gateway/drain`: the status record plus the drain detail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DrainDetail {
    #[serde(flatten)]
    pub status: StatusRecord,
    /// When the current external drain was requested (null when none).
    pub requested_at: Option<String>,
    /// Who requested it (null when none).
    pub principal: Option<String>,
    /// Seconds the oldest in-flight turn has been running (0 when none).
    pub oldest_active_seconds: f64,
}

impl StatusRecord {
    /// Builds the record from a snapshot.
    pub fn build(s: &Snapshot, info: &RuntimeInfo) -> Self {
        let running = s.state == GatewayState::Running;
        Self {
            version: info.version,
            gateway_running: !matches!(
                s.state,
                GatewayState::Stopped | GatewayState::StartupFailed
            ),
            gateway_state: s.state.as_str(),
            active_agents: s.active_agents,
            gateway_busy: running && s.active_agents > 0,
            gateway_drainable: running,
            restart_drain_timeout: info.restart_drain_timeout,
            active_sessions: s.active_sessions,
            auth_required: info.auth_required,
            auth_providers: info.auth_providers.clone(),
            gateway_updated_at: iso(s.updated_at),
            draining: s.drain.is_some() || s.state == GatewayState::Stopping,
            cron: info.cron.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

impl DrainDetail {
    pub fn build(s: &Snapshot, info: &RuntimeInfo) -> Self {
        Self {
            status: StatusRecord::build(s, info),
            requested_at: s.drain.as_ref().map(|d| iso(d.requested_at)),
            principal: s.drain.as_ref().map(|d| d.principal.clone()),
            oldest_active_seconds: (s.oldest_active_seconds() * 1000.0).round() / 1000.0,
        }
    }
}

/// Writes `gateway_state.json`.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    /// Stamps each write's `updated_at`.
    clock: SharedClock,
}

/// Least time between two writes of the state file; bounds I/O under heavy turn churn.
const MIN_WRITE_INTERVAL: Duration = Duration::from_millis(25);

/// The most of an existing state file read back for the merge; a bigger one is replaced.
pub const MAX_STATE_FILE_BYTES: usize = 1024 * 1024;

impl StateFile {
    /// The state file at `path`; `clock` stamps each write's `updated_at`.
    pub fn new(path: PathBuf, clock: SharedClock) -> Self {
        Self { path, clock }
    }

    /// Merges the current record into the file, atomically.
    pub fn write(&self, s: &Snapshot, info: &RuntimeInfo) -> std::io::Result<()> {
        let mut doc = read_regular(&self.path, MAX_STATE_FILE_BYTES)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
            .unwrap_or_default();
        let detail = DrainDetail::build(s, info);
        doc.insert("drain_requested_at".into(), detail.requested_at.into());
        doc.insert("drain_principal".into(), detail.principal.into());
        if let Value::Object(fields) = serde_json::to_value(detail.status)? {
            doc.extend(fields);
        }
        doc.insert("pid".into(), info.pid.into());
        doc.insert("start_time".into(), iso(info.start_time).into());
        doc.insert("updated_at".into(), iso(self.clock.now()).into());
        for (key, cell) in [
            ("api_server_addr", &info.api_server_addr),
            ("dashboard_addr", &info.dashboard_addr),
        ] {
            doc.insert(key.into(), cell.get().cloned().into());
        }
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(doc))?;
        bytes.push(b'\n');
        write_atomic(&self.path, &bytes)
    }

    /// Mirrors every gate change into the file until `shutdown`, then returns.
    pub async fn mirror(
        self,
        gate: Arc<TurnGate>,
        info: Arc<RuntimeInfo>,
        shutdown: CancellationToken,
    ) {
        let mut rx = gate.subscribe();
        let file = Arc::new(self);
        loop {
            let snapshot = rx.borrow_and_update().clone();
            // Two fsyncs per write: on a blocking thread, never on a runtime worker.
            let (f, i) = (file.clone(), info.clone());
            match tokio::task::spawn_blocking(move || f.write(&snapshot, &i)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(path = %file.path.display(), error = %e, "cannot write gateway state file");
                }
                Err(e) => tracing::warn!(error = %e, "the state file writer failed"),
            }
            tokio::time::sleep(MIN_WRITE_INTERVAL).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metrics::Metrics;

    #[test]
    fn the_state_file_is_stamped_by_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let pinned: Timestamp = "2001-02-03T04:05:06Z".parse().unwrap();
        let clock = ManualClock::new(pinned);
        let gate = TurnGate::new(
            clock.clone(),
            Arc::new(Metrics::default()),
            Default::default(),
        );
        let info = RuntimeInfo {
            version: "test",
            pid: 1,
            start_time: pinned,
            restart_drain_timeout: 1.0,
            auth_required: false,
            auth_providers: Vec::new(),
            api_server_addr: OnceLock::new(),
            dashboard_addr: OnceLock::new(),
            cron: Mutex::new(None),
        };
        let path = dir.path().join("gateway_state.json");
        let file = StateFile::new(path.clone(), clock.clone());
        clock.advance(Duration::from_secs(90));
        file.write(&gate.snapshot(), &info).unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["updated_at"], "2001-02-03T04:06:36.000000Z");
        assert_eq!(doc["start_time"], "2001-02-03T04:05:06.000000Z");
    }
}
