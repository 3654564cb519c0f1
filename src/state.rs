//! What request handlers and background tasks share: [`AppState`], one struct of `Arc`s
//! built by `app::prepare`, and the [`Shutdown`] request.
//!
//! It sits below `http` and `app` (both import it; it imports neither), so a handler
//! reaches the domain without reaching back up into the wiring.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::chronos::Fires;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::cron::CronService;
use crate::events::Events;
use crate::lifecycle::{DrainControl, RuntimeInfo, TurnGate};
use crate::metrics::Metrics;
use crate::runs::Runs;
use crate::sessions::Sessions;
use crate::turn::Turns;

/// Everything request handlers and background tasks share: a handle (one `Arc`), since
/// every extractor and middleware layer of a request takes a clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub clock: SharedClock,
    /// The lifecycle state and in-flight turns (status reads; admission goes through `turns`).
    pub gate: Arc<TurnGate>,
    /// Starts every turn (the API, WebSocket chat).
    pub turns: Turns,
    pub drain: Arc<DrainControl>,
    pub metrics: Arc<Metrics>,
    pub info: Arc<RuntimeInfo>,
    /// Who may reach the dashboard: the token seam, the session mode, sessions and
    /// WebSocket tickets, the login limit; decides and audits.
    pub access: Arc<Access>,
    /// Cron jobs, the ticker and runs (and, through `cron.store()`, the database).
    pub cron: Arc<CronService>,
    /// Decides `POST /api/cron/fire`: its token (pinned keys or a JWKS, per config), body,
    /// hand-off to `cron`, audit and metric.
    pub fires: Arc<Fires>,
    /// Asynchronous runs (`/v1/runs`): started, read, stopped; settled at shutdown.
    pub runs: Arc<Runs>,
    /// Stored chat sessions: the history of a chat completion's session, `/api/sessions`.
    pub sessions: Sessions,
    /// Responses API responses: runs their turns and keeps them in the store.
    pub responses: crate::responses::Responses,
    /// Live audit and cron-run events for `/api/events`.
    pub events: Events,
    /// `dashboard.public_url`, parsed once.
    pub public_url: PublicUrl,
    pub shutdown: Shutdown,
}

/// `dashboard.public_url`, parsed (by `http::public_url`): the name and origin the dashboard is reached at (behind
/// a proxy) and its path prefix, which the host and origin checks read on every request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicUrl {
    pub host: Option<String>,
    /// The URL's origin (`https://gw.example:8443`); `None` when it does not parse.
    pub origin: Option<String>,
    /// The path without its final `/` (`https://h/hermes/` → `/hermes`); empty by default.
    pub prefix: String,
}

/// A request to end the process: a plain stop (exit 0) or a restart (exit 75).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    restart: Arc<AtomicBool>,
}

impl Shutdown {
    /// Asks for a stop; the first request decides stop vs restart.
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// Asks for a restart (exit 75) unless a stop was already requested.
    pub fn restart(&self) {
        if !self.token.is_cancelled() {
            self.restart.store(true, Ordering::SeqCst);
        }
        self.token.cancel();
    }

    /// Resolves once a stop or restart was requested.
    pub async fn requested(&self) {
        self.token.cancelled().await;
    }

    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Whether the request was a restart.
    pub fn is_restart(&self) -> bool {
        self.restart.load(Ordering::SeqCst)
    }
}
