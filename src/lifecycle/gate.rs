//! The turn gate: the one place that decides whether a new turn may start, and the
//! lifecycle state machine that decision depends on.
//!
//! Admission and the drain flip happen under one lock, so once a drain (or shutdown) has
//! begun the in-flight count can only fall. Every admitted turn holds a [`TurnGuard`]; the
//! count drops when the guard does, however the turn ends. Status reads never admit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::metrics::{Metrics, TurnOutcome};

/// The compat `gateway_state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayState {
    Starting,
    Running,
    Draining,
    Stopping,
    Stopped,
    StartupFailed,
}

impl GatewayState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Draining => "draining",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::StartupFailed => "startup_failed",
        }
    }
}

/// Where the process is in its life, independent of any external drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Serving,
    Stopping,
    Stopped,
    StartupFailed,
}

/// Who asked for the current external drain, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainRequest {
    pub requested_at: Timestamp,
    pub principal: String,
}

/// Why a turn was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the gateway is draining and not accepting new turns")]
    Draining,
    #[error("the gateway is shutting down and not accepting new turns")]
    Stopping,
    #[error("the gateway is not ready to accept turns yet")]
    NotReady,
}

/// A consistent picture of the gate at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: GatewayState,
    pub active_agents: usize,
    pub active_sessions: usize,
    pub oldest_active: Option<Instant>,
    pub drain: Option<DrainRequest>,
    pub updated_at: Timestamp,
}

impl Snapshot {
    /// Seconds the oldest in-flight turn has been running (0 when none).
    pub fn oldest_active_seconds(&self) -> f64 {
        self.oldest_active
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0)
    }
}

#[derive(Debug)]
struct TurnEntry {
    started: Instant,
    session: Arc<str>,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    drain: Option<DrainRequest>,
    turns: BTreeMap<u64, TurnEntry>,
    sessions: HashMap<Arc<str>, usize>,
    next_id: u64,
    updated_at: Timestamp,
}

impl Inner {
    /// Why a turn is refused in this state, if it is.
    fn refusal(&self) -> Option<Refusal> {
        match self.phase {
            Phase::Serving if self.drain.is_some() => Some(Refusal::Draining),
            Phase::Serving => None,
            Phase::Stopping | Phase::Stopped => Some(Refusal::Stopping),
            // A drain that survived a restart is reported as such even before serving.
            Phase::Starting if self.drain.is_some() => Some(Refusal::Draining),
            Phase::Starting | Phase::StartupFailed => Some(Refusal::NotReady),
        }
    }

    fn state(&self) -> GatewayState {
        match self.phase {
            Phase::Starting => GatewayState::Starting,
            Phase::Serving if self.drain.is_some() => GatewayState::Draining,
            Phase::Serving => GatewayState::Running,
            Phase::Stopping => GatewayState::Stopping,
            Phase::Stopped => GatewayState::Stopped,
            Phase::StartupFailed => GatewayState::StartupFailed,
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state(),
            active_agents: self.turns.len(),
            active_sessions: self.sessions.len(),
            oldest_active: self.turns.values().next().map(|t| t.started),
            drain: self.drain.clone(),
            updated_at: self.updated_at,
        }
    }
}

/// Admits turns and tracks the lifecycle state; share it behind an `Arc`.
#[derive(Debug)]
pub struct TurnGate {
    inner: Mutex<Inner>,
    tx: watch::Sender<Snapshot>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    /// Where turn starts and ends are announced (the dashboard's live events).
    events: crate::events::Events,
}

impl TurnGate {
    fn announce(&self, id: u64, phase: &str, outcome: Option<TurnOutcome>) {
        if self.events.has_listeners() {
            let events = &self.events;
            let mut m = serde_json::Map::new();
            m.insert("turn".into(), id.into());
            m.insert("phase".into(), phase.into());
            if let Some(o) = outcome {
                m.insert("outcome".into(), o.as_str().into());
            }
            events.publish("turn", m);
        }
    }

    /// A gate in the `starting` state: nothing is admitted until [`TurnGate::mark_serving`].
    /// Every turn's start and end is announced on `events`.
    pub fn new(
        clock: SharedClock,
        metrics: Arc<Metrics>,
        events: crate::events::Events,
    ) -> Arc<Self> {
        let inner = Inner {
            phase: Phase::Starting,
            drain: None,
            turns: BTreeMap::new(),
            sessions: HashMap::new(),
            next_id: 0,
            updated_at: clock.now(),
        };
        let (tx, _) = watch::channel(inner.snapshot());
        Arc::new(Self {
            inner: Mutex::new(inner),
            tx,
            clock,
            metrics,
            events,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock is never held across a panic-prone call; recover the data if it was.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` under the lock; if it reports a change, stamps and publishes a snapshot.
    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> (R, bool)) -> R {
        let mut inner = self.lock();
        let (result, changed) = f(&mut inner);
        if changed {
            inner.updated_at = self.clock.now();
            self.tx.send_replace(inner.snapshot());
        }
        result
    }

    /// Starts a turn for `session` if the gateway is accepting; the guard ends it.
    pub fn admit(self: &Arc<Self>, session: &str) -> Result<TurnGuard, Refusal> {
        let admitted = self.update(|inner| {
            if let Some(r) = inner.refusal() {
                return (Err(r), false);
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let session: Arc<str> = Arc::from(session);
            *inner.sessions.entry(session.clone()).or_default() += 1;
            inner.turns.insert(
                id,
                TurnEntry {
                    started: Instant::now(),
                    session,
                },
            );
            // Under the lock, so the history hears the levels in order.
            self.metrics.history().in_flight(inner.turns.len());
            (Ok(id), true)
        });
        match admitted {
            Ok(id) => {
                self.announce(id, "started", None);
                Ok(TurnGuard {
                    gate: self.clone(),
                    id,
                    outcome: Some(TurnOutcome::Interrupted),
                })
            }
            Err(r) => {
                self.metrics.turn(TurnOutcome::Refused);
                Err(r)
            }
        }
    }

    fn finish(&self, id: u64, outcome: Option<TurnOutcome>) {
        self.announce(id, "ended", outcome);
        self.update(|inner| {
            let Some(entry) = inner.turns.remove(&id) else {
                return ((), false);
            };
            if let Some(n) = inner.sessions.get_mut(&entry.session) {
                *n -= 1;
                if *n == 0 {
                    inner.sessions.remove(&entry.session);
                }
            }
            self.metrics.history().in_flight(inner.turns.len());
            ((), true)
        });
        if let Some(outcome) = outcome {
            self.metrics.turn(outcome);
        }
    }

    /// `starting` → `running` (or `draining` if a drain was recorded while starting).
    pub fn mark_serving(&self) {
        self.update(|inner| {
            let changed = inner.phase == Phase::Starting;
            if changed {
                inner.phase = Phase::Serving;
            }
            ((), changed)
        });
    }

    /// Records an external drain; returns true if the gate was not already draining.
    ///
    /// Allowed in any phase so a marker found at startup is in force before the first
    /// turn; a later request refreshes who asked and when.
    pub fn enter_drain(&self, request: DrainRequest) -> bool {
        self.update(|inner| {
            let was = inner.drain.replace(request.clone());
            let entered = was.is_none();
            (entered, was.as_ref() != Some(&request))
        })
    }

    /// Lifts the external drain; returns true if one was in force.
    ///
    /// During shutdown this clears the request but the state stays `stopping`: shutdown wins.
    pub fn exit_drain(&self) -> bool {
        self.update(|inner| {
            let was = inner.drain.take().is_some();
            (was, was)
        })
    }

    /// One-way: refuse new turns from now on because the process is going away.
    pub fn begin_shutdown(&self) {
        self.update(|inner| {
            let changed = matches!(inner.phase, Phase::Starting | Phase::Serving);
            if changed {
                inner.phase = Phase::Stopping;
            }
            ((), changed)
        });
    }

    /// Final state of a clean exit.
    pub fn mark_stopped(&self) {
        self.update(|inner| {
            let changed = inner.phase != Phase::Stopped;
            inner.phase = Phase::Stopped;
            ((), changed)
        });
    }

    /// Final state when startup could not complete (e.g. a port was taken).
    pub fn mark_startup_failed(&self) {
        self.update(|inner| {
            inner.phase = Phase::StartupFailed;
            ((), true)
        });
    }

    /// Why a turn would be refused now, without admitting one: for an answer that starts
    /// nothing but must still be refused while draining (a replayed fire).
    pub fn refusal(&self) -> Option<Refusal> {
        self.lock().refusal()
    }

    /// The current picture.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().snapshot()
    }

    /// A receiver that sees every published change (coalesced).
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    /// Waits until no turn is in flight, or `deadline` passes; returns true if idle.
    pub async fn wait_idle(&self, deadline: Instant) -> bool {
        let mut rx = self.subscribe();
        loop {
            if rx.borrow_and_update().active_agents == 0 {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.snapshot().active_agents == 0,
            }
        }
    }
}

/// Proof that a turn was admitted; dropping it ends the turn.
#[derive(Debug)]
pub struct TurnGuard {
    gate: Arc<TurnGate>,
    id: u64,
    /// `None` once released: the admission was given back before any work started.
    outcome: Option<TurnOutcome>,
}

impl TurnGuard {
    /// Records how the turn ended; without a call the turn counts as interrupted.
    pub fn set_outcome(&mut self, outcome: TurnOutcome) {
        self.outcome = Some(outcome);
    }

    /// Gives the admission back before any work started (e.g. a cron fire that turned out
    /// to be a duplicate): the count falls and no turn is counted.
    pub fn release(mut self) {
        self.outcome = None;
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        self.gate.finish(self.id, self.outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn gate() -> Arc<TurnGate> {
        let g = TurnGate::new(
            Arc::new(SystemClock),
            Arc::new(Metrics::default()),
            Default::default(),
        );
        g.mark_serving();
        g
    }

    fn request() -> DrainRequest {
        DrainRequest {
            requested_at: Timestamp::UNIX_EPOCH,
            principal: "t".into(),
        }
    }

    #[test]
    fn nothing_is_admitted_while_starting() {
        let g = TurnGate::new(
            Arc::new(SystemClock),
            Arc::new(Metrics::default()),
            Default::default(),
        );
        assert_eq!(g.admit("s").unwrap_err(), Refusal::NotReady);
        assert_eq!(g.snapshot().state, GatewayState::Starting);
    }

    #[test]
    fn the_history_sees_the_in_flight_peak_and_the_outcomes() {
        let clock = crate::clock::ManualClock::new("2026-03-01T10:00:00Z".parse().unwrap());
        let metrics = Arc::new(Metrics::new(clock.clone()));
        let g = TurnGate::new(clock.clone(), metrics.clone(), Default::default());
        g.mark_serving();
        let (mut a, b) = (g.admit("s").unwrap(), g.admit("s").unwrap());
        a.outcome = Some(TurnOutcome::Completed);
        drop(a);
        clock.advance(std::time::Duration::from_secs(60));
        drop(b);
        g.enter_drain(request());
        assert!(g.admit("s").is_err());
        let h = metrics.history().snapshot();
        let [.., before, now] = &h.minutes[..] else {
            unreachable!("an hour of minutes")
        };
        assert_eq!((before.in_flight, now.in_flight, h.in_flight), (2, 1, 0));
        assert_eq!(before.turns.get("completed"), Some(&1));
        assert_eq!(now.turns.get("interrupted"), Some(&1));
        assert_eq!(now.turns.get("refused"), Some(&1));
    }

    #[test]
    fn guards_count_turns_and_sessions() {
        let g = gate();
        let a = g.admit("s1").unwrap();
        let b = g.admit("s1").unwrap();
        let c = g.admit("s2").unwrap();
        let s = g.snapshot();
        assert_eq!((s.active_agents, s.active_sessions), (3, 2));
        drop(a);
        drop(c);
        let s = g.snapshot();
        assert_eq!((s.active_agents, s.active_sessions), (1, 1));
        drop(b);
        assert_eq!(g.snapshot().active_agents, 0);
    }

    #[test]
    fn drain_refuses_new_turns_keeps_old_and_is_reversible() {
        let g = gate();
        let inflight = g.admit("s").unwrap();
        assert!(g.enter_drain(request()));
        assert!(!g.enter_drain(request()), "idempotent");
        assert_eq!(g.snapshot().state, GatewayState::Draining);
        assert_eq!(g.admit("s").unwrap_err(), Refusal::Draining);
        assert_eq!(g.snapshot().active_agents, 1);
        drop(inflight);
        assert_eq!(g.snapshot().active_agents, 0);
        assert!(g.exit_drain());
        assert!(!g.exit_drain(), "idempotent");
        assert_eq!(g.snapshot().state, GatewayState::Running);
        assert!(g.admit("s").is_ok());
    }

    #[test]
    fn shutdown_wins_over_drain_cancel() {
        let g = gate();
        g.enter_drain(request());
        g.begin_shutdown();
        assert_eq!(g.snapshot().state, GatewayState::Stopping);
        g.exit_drain();
        assert_eq!(g.snapshot().state, GatewayState::Stopping);
        assert_eq!(g.admit("s").unwrap_err(), Refusal::Stopping);
        g.mark_serving();
        assert_eq!(g.snapshot().state, GatewayState::Stopping, "no way back");
    }

    #[test]
    fn drain_recorded_while_starting_is_in_force_when_serving() {
        let g = TurnGate::new(
            Arc::new(SystemClock),
            Arc::new(Metrics::default()),
            Default::default(),
        );
        g.enter_drain(request());
        g.mark_serving();
        assert_eq!(g.snapshot().state, GatewayState::Draining);
        assert_eq!(g.admit("s").unwrap_err(), Refusal::Draining);
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_guard_drops() {
        let g = gate();
        let guard = g.admit("s").unwrap();
        let g2 = g.clone();
        let waiter = tokio::spawn(async move {
            g2.wait_idle(Instant::now() + std::time::Duration::from_secs(5))
                .await
        });
        tokio::task::yield_now().await;
        drop(guard);
        assert!(waiter.await.unwrap());
        let _busy = g.admit("s").unwrap();
        assert!(!g.wait_idle(Instant::now()).await);
    }
}
