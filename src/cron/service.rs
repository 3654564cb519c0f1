//! [`CronService`]: what every part of cron shares — the store, the turn driver,
//! the clock and time zone, this process's lease owner and lease — built complete in its
//! constructor, plus the wake-ups and the small helpers the other files use. What the
//! service does lives beside it: `jobs` (CRUD), `fire`, `tick`, `run`, `deliver`.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::json;
use tokio::sync::Notify;

use super::owner::Owner;
use super::schedule::Schedule;
use crate::clock::{SharedClock, iso};
use crate::events::Events;
use crate::job::{NewRun, Run};
use crate::lifecycle::{CronStatus, RuntimeInfo};
use crate::outbound::LazyClient;
use crate::store::{Store, StoreError};
use crate::turn::Turns;

/// How long a claimed run is owned before another process may call it interrupted (the
/// default of `cron.lease_seconds`).
pub const LEASE: Duration = Duration::from_secs(300);

/// Why a cron operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// The request is wrong; the message names the field and the problem.
    #[error("{0}")]
    Invalid(String),
    #[error("no job with id {0:?}")]
    NotFound(String),
    #[error("the gateway is draining and not starting runs; retry later")]
    Draining,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Jobs, ticks and runs of one gateway process.
#[derive(Debug)]
pub struct CronService {
    pub(super) store: Store,
    /// Runs are turns: admitted, run, ended and counted by the driver (which the
    /// shutdown deadline cuts).
    pub(super) turns: Turns,
    clock: SharedClock,
    tz: TimeZone,
    info: Arc<RuntimeInfo>,
    /// The webhook client (15 s per request), built on the first delivery.
    pub(super) http: LazyClient,
    /// Identifies this process in run leases (and judges other owners of its host).
    pub(super) owner: Owner,
    /// How long a claim or a renewal holds a run.
    pub(super) lease: Duration,
    /// Wakes the ticker: a job changed.
    pub(super) wake: Notify,
    /// Job changes and fired slots, for an external provider that arms the next slot.
    pub(super) rearm: Notify,
    /// Where run starts and ends are announced (the dashboard's live events).
    events: Events,
    /// When [`CronService::upkeep`] last ran (Unix seconds).
    pub(super) last_upkeep: AtomicI64,
    /// Fire-token ids known recorded in the store (replays answered from memory).
    pub(super) seen: super::seen::SeenTokens,
}

impl CronService {
    /// The service of this process. `lease` is how long a claimed run is held between
    /// renewals (`cron.lease_seconds`; [`LEASE`] by default); run starts and ends are
    /// announced on `events`.
    pub fn new(
        store: Store,
        turns: Turns,
        clock: SharedClock,
        tz: TimeZone,
        info: Arc<RuntimeInfo>,
        lease: Duration,
        events: Events,
    ) -> Self {
        Self {
            store,
            turns,
            clock,
            tz,
            owner: Owner::current(info.pid),
            info,
            http: LazyClient::new(|| {
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(15))
                    .build()
            }),
            lease,
            wake: Notify::new(),
            rearm: Notify::new(),
            events,
            last_upkeep: AtomicI64::new(i64::MIN / 2),
            seen: super::seen::SeenTokens::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Now, in whole seconds (slots are whole seconds).
    pub fn now(&self) -> Timestamp {
        Timestamp::from_second(self.clock.now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// The zone schedules are evaluated in (`cron.timezone`).
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Parses a schedule text in the service's time zone (a refusal names the field).
    pub(super) fn parse(&self, text: &str, now: Timestamp) -> Result<Schedule, CronError> {
        Schedule::parse(text, &self.tz, now)
            .map_err(|e| CronError::Invalid(format!("schedule: {e}")))
    }

    /// The lease as a signed duration, for timestamp arithmetic.
    pub(super) fn signed_lease(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.lease).unwrap_or_default()
    }

    /// A new run of `job_id` for `slot`, started `now`, its lease held by this process.
    pub(super) fn new_run(&self, job_id: &str, slot: Timestamp, now: Timestamp) -> NewRun {
        NewRun {
            id: format!("run_{}", &crate::ids::random_hex128()[..16]),
            job_id: job_id.to_owned(),
            scheduled_for: slot,
            started_at: now,
            lease_until: now.checked_add(self.signed_lease()).unwrap_or(now),
            owner: self.owner.id.clone(),
        }
    }

    /// Announces a run's start (if anyone listens) or end (kept as activity too) on the
    /// live events.
    pub(super) fn announce(&self, run: &Run) {
        let ended = run.finished_at.is_some();
        if !ended && !self.events.has_listeners() {
            return;
        }
        let mut m = serde_json::Map::new();
        m.insert("run_id".into(), json!(run.id));
        m.insert("job_id".into(), json!(run.job_id));
        m.insert("status".into(), json!(run.status.as_str()));
        m.insert("scheduled_for".into(), json!(iso(run.scheduled_for)));
        m.insert("finished_at".into(), json!(run.finished_at.map(iso)));
        if ended {
            self.events.publish_activity("run", m);
        } else {
            self.events.publish("run", m);
        }
    }

    /// Changes the ticker's health in `/api/status`.
    pub(super) fn record(&self, f: impl FnOnce(&mut CronStatus)) {
        self.info.update_cron(f);
    }

    /// Resolves at the next job change or fired slot (a permit is kept if nobody was
    /// waiting), for the provider that keeps an external scheduler in step.
    pub async fn changed(&self) {
        self.rearm.notified().await;
    }

    /// Wakes the ticker and the external provider: a job changed.
    pub(super) fn job_changed(&self) {
        self.wake.notify_one();
        self.rearm.notify_one();
    }

    /// A job was `created`, `updated` (paused and resumed too) or `deleted`: wakes the
    /// ticker and the provider, and tells the live sockets (the page reloads its table).
    pub(super) fn job_edited(&self, id: &str, change: &'static str) {
        self.job_changed();
        if self.events.has_listeners() {
            let mut m = serde_json::Map::new();
            m.insert("job_id".into(), json!(id));
            m.insert("change".into(), json!(change));
            self.events.publish("job", m);
        }
    }
}
