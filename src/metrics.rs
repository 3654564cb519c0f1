//! Prometheus metrics: the registry, the counters domain code bumps, and text rendering.
//!
//! Owns metric names and label sets. Gauges that mirror live state (in-flight turns, gateway
//! state) are set from a snapshot at scrape time, so nothing has to keep them in sync.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a turn ended, as counted by `hermes_turns_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOutcome {
    Completed,
    Failed,
    /// The client went away or shutdown cancelled the turn before it finished.
    Interrupted,
    /// Refused at the gate (draining, stopping or starting).
    Refused,
}

impl TurnOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Refused => "refused",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    gate: &'static str,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    turns: Family<OutcomeLabels, Counter>,
    in_flight: Gauge,
    state: Family<StateLabels, Gauge>,
    auth: Family<AuthLabels, Counter>,
    drain_events: Family<EventLabels, Counter>,
    jwks_fetches: Family<OutcomeLabels, Counter>,
    cron_fires: Family<OutcomeLabels, Counter>,
    account_calls: Family<OutcomeLabels, Counter>,
}

/// The live values scraped into gauges.
#[derive(Debug, Clone, Copy)]
pub struct LiveGauges {
    pub in_flight: usize,
    pub state: &'static str,
}

const STATES: [&str; 6] = [
    "starting",
    "running",
    "draining",
    "stopping",
    "stopped",
    "startup_failed",
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hermes");
        let turns = Family::<OutcomeLabels, Counter>::default();
        let in_flight = Gauge::default();
        let state = Family::<StateLabels, Gauge>::default();
        let auth = Family::<AuthLabels, Counter>::default();
        let drain_events = Family::<EventLabels, Counter>::default();
        let jwks_fetches = Family::<OutcomeLabels, Counter>::default();
        let cron_fires = Family::<OutcomeLabels, Counter>::default();
        let account_calls = Family::<OutcomeLabels, Counter>::default();
        registry.register("turns", "Agent turns by how they ended", turns.clone());
        registry.register(
            "turns_in_flight",
            "Turns admitted and not yet finished (active_agents)",
            in_flight.clone(),
        );
        registry.register(
            "gateway_state",
            "1 for the gateway's current lifecycle state, 0 for the others",
            state.clone(),
        );
        registry.register(
            "auth_decisions",
            "Authentication decisions by gate and result",
            auth.clone(),
        );
        registry.register(
            "drain_events",
            "Drain begin, cancel and marker expiry events",
            drain_events.clone(),
        );
        registry.register(
            "chronos_jwks_fetches",
            "Fetches of the fire-token JWKS by result (ok, error)",
            jwks_fetches.clone(),
        );
        registry.register(
            "cron_fires",
            "POST /api/cron/fire answers by outcome (started, duplicate, not_due, unknown_job, paused, unauthorized, unavailable, draining, bad_request)",
            cron_fires.clone(),
        );
        registry.register(
            "chronos_account_calls",
            "Calls to the account service's agent-cron API by result (ok, error, rejected)",
            account_calls.clone(),
        );
        // Pre-create the common series so dashboards see zeros, not gaps.
        for outcome in ["completed", "failed", "interrupted", "refused"] {
            let _ = turns.get_or_create(&OutcomeLabels { outcome });
        }
        Self {
            registry,
            turns,
            in_flight,
            state,
            auth,
            drain_events,
            jwks_fetches,
            cron_fires,
            account_calls,
        }
    }
}

impl Metrics {
    /// Counts one finished (or refused) turn.
    pub fn turn(&self, outcome: TurnOutcome) {
        self.turns
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts one authentication decision, e.g. `("token", "accepted")`.
    pub fn auth_decision(&self, gate: &'static str, decision: &'static str) {
        self.auth
            .get_or_create(&AuthLabels { gate, decision })
            .inc();
    }

    /// Counts one drain event (`begin`, `cancel`, `expired`).
    pub fn drain_event(&self, event: &'static str) {
        self.drain_events
            .get_or_create(&EventLabels { event })
            .inc();
    }

    /// Counts one JWKS fetch (`ok` or `error`).
    pub fn jwks_fetch(&self, outcome: &'static str) {
        self.jwks_fetches
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one answer of `POST /api/cron/fire` by its outcome.
    pub fn cron_fire(&self, outcome: &'static str) {
        self.cron_fires
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one call to the account service (`ok`, `error`, `rejected`).
    pub fn account_call(&self, outcome: &'static str) {
        self.account_calls
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Renders everything in the Prometheus/OpenMetrics text format.
    pub fn render(&self, live: LiveGauges) -> String {
        self.in_flight
            .set(i64::try_from(live.in_flight).unwrap_or(i64::MAX));
        for s in STATES {
            self.state
                .get_or_create(&StateLabels { state: s })
                .set(i64::from(s == live.state));
        }
        let mut out = String::with_capacity(2048);
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_live_gauges() {
        let m = Metrics::default();
        m.turn(TurnOutcome::Completed);
        m.turn(TurnOutcome::Completed);
        m.auth_decision("token", "rejected");
        let text = m.render(LiveGauges {
            in_flight: 7,
            state: "draining",
        });
        assert!(
            text.contains("hermes_turns_total{outcome=\"completed\"} 2"),
            "{text}"
        );
        assert!(text.contains("hermes_turns_in_flight 7"), "{text}");
        assert!(
            text.contains("hermes_gateway_state{state=\"draining\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hermes_gateway_state{state=\"running\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("hermes_auth_decisions_total{gate=\"token\",decision=\"rejected\"} 1"),
            "{text}"
        );
    }
}
