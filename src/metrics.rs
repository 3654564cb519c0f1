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
struct RouteLabels {
    /// `METHOD /path/{param}`: the route's template, never a concrete id.
    route: String,
    outcome: &'static str,
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
    api_requests: Family<RouteLabels, Counter>,
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
        let api_requests = Family::<RouteLabels, Counter>::default();
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
        registry.register(
            "api_requests",
            "API-server answers by route and outcome (ok, invalid, unauthorized, not_found, conflict, too_large, failed, unavailable, error)",
            api_requests.clone(),
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
            api_requests,
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

    /// Counts one answer of the API-server route `route` (`POST /v1/responses`) by its
    /// HTTP status (see [`route_outcome`]).
    pub fn api_request(&self, route: &str, status: u16) {
        self.api_requests
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                outcome: route_outcome(status),
            })
            .inc();
    }

    /// Renders everything in the format asked for: the classic Prometheus text format
    /// 0.0.4 (what `promtool check metrics` reads), or OpenMetrics 1.0.
    pub fn render_as(&self, live: LiveGauges, format: Format) -> String {
        let text = self.render(live);
        match format {
            Format::OpenMetrics => text,
            Format::Classic => to_classic(&text),
        }
    }

    /// Renders everything in the OpenMetrics text format (prometheus-client's only one).
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

/// The outcome an API-server answer counts as, by its status: a streamed answer is `ok`
/// when it starts (how its turn ended is `hermes_turns_total`'s).
pub fn route_outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        401 | 403 => "unauthorized",
        404 | 405 => "not_found",
        409 | 422 => "conflict",
        413 => "too_large",
        400..=499 => "invalid",
        502 => "failed",
        503 => "unavailable",
        _ => "error",
    }
}

/// A text exposition format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Classic,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Chooses by the request's `Accept` header: OpenMetrics only when the client asks for
    /// `application/openmetrics-text` and does not prefer `text/plain` (by q-value); the
    /// classic format otherwise, an absent or unparsable header included.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Classic;
        };
        let (mut open, mut plain) = (0.0_f32, 0.0_f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => open = open.max(q),
                "text/plain" => plain = plain.max(q),
                _ => {}
            }
        }
        if open > 0.0 && open >= plain {
            Self::OpenMetrics
        } else {
            Self::Classic
        }
    }
}

/// Converts OpenMetrics text (as prometheus-client writes it) to the classic Prometheus text
/// format 0.0.4: a counter family is named after its samples (`x_total`), `_created`
/// samples, `# UNIT`, `# EOF` and exemplars are dropped, timestamps become milliseconds,
/// `info` and `stateset` families become gauges, and types classic has no word for become
/// `untyped`. HELP text is re-escaped (classic escapes only `\\` and newlines).
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The family being read: its OpenMetrics name and type.
    let mut family = String::new();
    let mut kind = String::new();
    let mut help: Option<(String, String)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_owned(), text.to_owned()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, om_kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            family = name.to_owned();
            kind = om_kind.trim().to_owned();
            let (classic_name, classic_kind) = match kind.as_str() {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "counter" => (name.to_owned(), "counter"),
                "gauge" => (name.to_owned(), "gauge"),
                "histogram" => (name.to_owned(), "histogram"),
                "summary" => (name.to_owned(), "summary"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_owned(), "gauge"),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some((help_name, text)) = help.take()
                && help_name == name
            {
                out.push_str(&format!("# HELP {classic_name} {}\n", classic_help(&text)));
            }
            out.push_str(&format!("# TYPE {classic_name} {classic_kind}\n"));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            // `# UNIT`, `# EOF` and any other comment have no classic form.
            continue;
        }
        let Some(sample) = classic_sample(line) else {
            continue;
        };
        let name = sample_name(line);
        let created = name.strip_suffix("_created") == Some(family.as_str());
        if created && matches!(kind.as_str(), "counter" | "histogram" | "summary") {
            continue;
        }
        out.push_str(&sample);
        out.push('\n');
    }
    out
}

/// OpenMetrics HELP escapes `\\`, `\n` and `\"`; classic only the first two.
fn classic_help(text: &str) -> String {
    text.replace("\\\"", "\"")
}

fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// One sample line without its exemplar, its timestamp (if any) in milliseconds.
fn classic_sample(line: &str) -> Option<String> {
    let name = sample_name(line);
    let mut rest = &line[name.len()..];
    let mut labels = "";
    if rest.starts_with('{') {
        // Find the closing brace outside quoted label values.
        let (mut quoted, mut escaped, mut end) = (false, false, None);
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        labels = &rest[..=end];
        rest = &rest[end + 1..];
    }
    // Drop an exemplar (` # {...} value`).
    let rest = rest.split(" # ").next().unwrap_or_default();
    let mut fields = rest.split_whitespace();
    let value = fields.next()?;
    let mut sample = format!("{name}{labels} {value}");
    if let Some(ts) = fields.next() {
        let ms = ts.parse::<f64>().ok()? * 1000.0;
        sample.push_str(&format!(" {}", ms.round() as i64));
    }
    Some(sample)
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

#[cfg(test)]
mod classic_tests {
    use super::*;

    #[test]
    fn counters_are_named_after_their_samples_and_eof_is_dropped() {
        let m = Metrics::default();
        m.turn(TurnOutcome::Completed);
        let text = m.render_as(
            LiveGauges {
                in_flight: 3,
                state: "running",
            },
            Format::Classic,
        );
        assert!(
            text.contains("# HELP hermes_turns_total Agent turns by how they ended"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE hermes_turns_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("hermes_turns_total{outcome=\"completed\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE hermes_turns_in_flight gauge\nhermes_turns_in_flight 3\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains("# TYPE hermes_turns counter"), "{text}");
        // Every sample belongs to the family declared just before it.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_owned();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&family), "{line} outside {family}");
            }
        }
    }

    #[test]
    fn conversion_handles_created_exemplars_timestamps_info_and_quoted_labels() {
        let om = concat!(
            "# HELP req Requests with \\\"quotes\\\".\n",
            "# TYPE req counter\n",
            "# UNIT req requests\n",
            "req_total{path=\"/a} # b\",x=\"q\\\"\"} 5 # {trace=\"1\"} 1.0 1.5\n",
            "req_created{path=\"/a} # b\",x=\"q\\\"\"} 1700000000.5\n",
            "# HELP lat Latency.\n",
            "# TYPE lat histogram\n",
            "lat_bucket{le=\"+Inf\"} 2\n",
            "lat_sum 0.5\n",
            "lat_count 2 1700000000.25\n",
            "lat_created 1700000000\n",
            "# HELP build Build.\n",
            "# TYPE build info\n",
            "build_info{version=\"1\"} 1\n",
            "# TYPE odd gaugehistogram\n",
            "odd_gcount 1\n",
            "# EOF\n",
        );
        let want = concat!(
            "# HELP req_total Requests with \"quotes\".\n",
            "# TYPE req_total counter\n",
            "req_total{path=\"/a} # b\",x=\"q\\\"\"} 5\n",
            "# HELP lat Latency.\n",
            "# TYPE lat histogram\n",
            "lat_bucket{le=\"+Inf\"} 2\n",
            "lat_sum 0.5\n",
            "lat_count 2 1700000000250\n",
            "# HELP build_info Build.\n",
            "# TYPE build_info gauge\n",
            "build_info{version=\"1\"} 1\n",
            "# TYPE odd untyped\n",
            "odd_gcount 1\n",
        );
        assert_eq!(to_classic(om), want);
    }

    #[test]
    fn accept_header_negotiation() {
        use Format::*;
        for (accept, want) in [
            (None, Classic),
            (Some("text/plain"), Classic),
            (Some("*/*"), Classic),
            (Some("text/plain;version=0.0.4"), Classic),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                OpenMetrics,
            ),
            // What Prometheus itself sends: OpenMetrics preferred.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ),
                OpenMetrics,
            ),
            (
                Some("text/plain;q=0.9,application/openmetrics-text;q=0.5"),
                Classic,
            ),
            (Some("application/openmetrics-text;q=0"), Classic),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }
}
