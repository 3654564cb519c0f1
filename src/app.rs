//! Wiring: builds the [`AppState`] from a [`Config`], binds the listeners, runs the servers
//! and background tasks, and carries out the shutdown drain.
//!
//! Startup order is the drain contract: the marker is reconciled before any listener is
//! bound, so a drain that survived a restart is in force before the first turn can arrive.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::{Backend, BackendError};
use crate::audit::AuditLog;
use crate::auth::drain_secret::{DRAIN_ROUTE, RESTART_ROUTE};
use crate::auth::{Access, DashboardAuth, DrainSecretProvider, ProviderStatus, TokenAuth};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::lifecycle::{DrainControl, Marker, RuntimeInfo, StateFile, TurnGate};
use crate::metrics::Metrics;
use crate::responses::Responses;
use crate::runs::Runs;
pub use crate::state::{AppState, Shutdown};
use crate::turn::Turns;

/// How `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Stopped,
    Restart,
}

impl Exit {
    /// The process exit status (compat: 75 = restart requested).
    pub fn code(self) -> i32 {
        match self {
            Self::Stopped => 0,
            Self::Restart => 75,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create HERMES_HOME {path}: {source}")]
    Home {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    FireVerifier(#[from] crate::chronos::VerifierError),
}

/// The bound sockets; `None` where a listener is disabled.
#[derive(Debug)]
pub struct Listeners {
    pub api: Option<TcpListener>,
    pub dashboard: Option<TcpListener>,
}

/// Builds the state and honours a drain marker left by an earlier run.
pub async fn prepare(config: Config, clock: SharedClock) -> Result<AppState, StartupError> {
    crate::files::create_private_dir_all(&config.home).map_err(|source| StartupError::Home {
        path: config.home.display().to_string(),
        source,
    })?;
    let metrics = Arc::new(Metrics::new(clock.clone()));
    let events = crate::events::Events::default();
    let audit =
        Arc::new(AuditLog::new(config.audit_path(), clock.clone()).with_events(events.clone()));
    let backend = Arc::new(Backend::from_config(
        &config.agent,
        config.secrets.openai_api_key.clone(),
    )?);

    let (token_auth, providers) = token_auth(&config);
    log_providers(&providers);
    let dashboard_auth = DashboardAuth::from_config(&config);
    let info = runtime_info(&config, &clock, &token_auth, &dashboard_auth);

    let gate = TurnGate::new(clock.clone(), metrics.clone(), events.clone());
    let drain = Arc::new(DrainControl::new(
        gate.clone(),
        Marker::new(config.marker_path(), clock.clone()),
        audit.clone(),
        metrics.clone(),
        clock.clone(),
        config.drain.marker_max_age_seconds,
    ));
    drain.reconcile();

    let store = crate::store::Store::open(&config, &*clock).await?;
    let turns = Turns::new(gate.clone(), backend);
    let sessions = sessions(&config, &store, &clock, &metrics);
    let cron = Arc::new(crate::cron::CronService::new(
        store.clone(),
        turns.clone(),
        clock.clone(),
        config.cron.timezone.clone(),
        info.clone(),
        Duration::from_secs(config.cron.lease_seconds),
        events.clone(),
    ));
    let runs = Runs::new(&store, &turns, &clock, &events, &config);
    let access = access(
        &config,
        &store,
        &clock,
        &audit,
        &metrics,
        token_auth,
        dashboard_auth,
    );
    let responses = Responses::new(store.clone(), turns.clone(), clock.clone(), &config);
    let fires = fires(&config, &cron, &clock, &audit, &metrics)?;

    Ok(AppState::new(crate::state::Shared {
        turns,
        runs,
        cron,
        fires,
        sessions,
        responses,
        public_url: crate::http::public_url(&config.dashboard.public_url),
        config: Arc::new(config),
        clock,
        gate,
        drain,
        metrics,
        info,
        access,
        events,
        shutdown: Shutdown::default(),
    }))
}

/// What decides `POST /api/cron/fire`: the configured verifier, handing off to `cron`.
fn fires(
    config: &Config,
    cron: &Arc<crate::cron::CronService>,
    clock: &SharedClock,
    audit: &Arc<AuditLog>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<crate::chronos::Fires>, StartupError> {
    let verifier =
        crate::chronos::verifier_from_config(&config.cron.chronos, clock.clone(), metrics.clone())?;
    Ok(Arc::new(crate::chronos::Fires::new(
        verifier,
        cron.clone(),
        audit.clone(),
        metrics.clone(),
    )))
}

/// The stored chat sessions, bounded as configured.
fn sessions(
    config: &Config,
    store: &crate::store::Store,
    clock: &SharedClock,
    metrics: &Arc<Metrics>,
) -> crate::sessions::Sessions {
    let limits = crate::sessions::Limits {
        sessions: config.api_server.max_stored_sessions,
        messages: config.api_server.max_session_messages,
    };
    crate::sessions::Sessions::new(store.clone(), clock.clone(), metrics.clone(), limits)
}

/// What `/api/status` reports about this process beyond the gate's state.
fn runtime_info(
    config: &Config,
    clock: &SharedClock,
    token_auth: &TokenAuth,
    dashboard_auth: &DashboardAuth,
) -> Arc<RuntimeInfo> {
    Arc::new(RuntimeInfo {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        start_time: clock.now(),
        restart_drain_timeout: config.agent.restart_drain_timeout,
        auth_required: dashboard_auth.is_gated(),
        auth_providers: token_auth.provider_names(),
        api_server_addr: OnceLock::new(),
        dashboard_addr: OnceLock::new(),
        cron: Default::default(),
    })
}

/// Who may reach what: the token seam, the dashboard's mode, its sessions (in the store)
/// and the login limit, recording to `audit` and `metrics`.
fn access(
    config: &Config,
    store: &crate::store::Store,
    clock: &SharedClock,
    audit: &Arc<AuditLog>,
    metrics: &Arc<Metrics>,
    token_auth: TokenAuth,
    dashboard_auth: DashboardAuth,
) -> Arc<Access> {
    let session_ttl = match config.dashboard.basic_auth.session_ttl_seconds {
        0 => crate::auth::sessions::DEFAULT_SESSION_TTL,
        n => Duration::from_secs(n),
    };
    let sessions = crate::auth::sessions::Sessions::new(
        store.clone(),
        clock.clone(),
        session_ttl,
        !dashboard_auth.is_gated(),
    );
    Arc::new(Access::new(
        token_auth,
        dashboard_auth,
        sessions,
        crate::auth::ratelimit::RateLimiter::new(
            LOGIN_ATTEMPTS_PER_MINUTE,
            Duration::from_secs(60),
        ),
        audit.clone(),
        metrics.clone(),
    ))
}

/// Binds the enabled listeners.
pub async fn bind(config: &Config) -> Result<Listeners, StartupError> {
    let api = &config.api_server;
    let dash = &config.dashboard;
    Ok(Listeners {
        api: bind_if(api.enabled, "the API server", &api.host, api.port).await?,
        dashboard: bind_if(dash.enabled, "the dashboard", &dash.host, dash.port).await?,
    })
}

/// Registers token providers and their routes; returns each provider's status.
pub fn token_auth(config: &Config) -> (TokenAuth, Vec<ProviderStatus>) {
    let mut seam = TokenAuth::default();
    let (provider, status) = DrainSecretProvider::from_env_secrets(
        config.secrets.drain_secret.as_ref(),
        config.secrets.drain_secret_next.as_ref(),
        &config.dashboard.drain_auth.scope,
        config.dashboard.drain_auth.min_secret_chars,
    );
    if let Some(p) = provider {
        seam.register(Arc::new(p));
        seam.register_route(DRAIN_ROUTE);
        seam.register_route(RESTART_ROUTE);
    }
    (seam, vec![status])
}

/// Logs what each token provider decided: a secret refused by its gate (or a `_NEXT` one
/// dropped) as a warning, so an operator who set one learns why the route stays closed.
fn log_providers(providers: &[ProviderStatus]) {
    for p in providers {
        if p.refused {
            tracing::warn!(provider = %p.name, registered = p.registered, "{}", p.detail);
        } else {
            tracing::info!(provider = %p.name, registered = p.registered, "{}", p.detail);
        }
    }
}

async fn bind_if(
    enabled: bool,
    what: &'static str,
    host: &str,
    port: u16,
) -> Result<Option<TcpListener>, StartupError> {
    if !enabled {
        return Ok(None);
    }
    let addr = format!("{}:{port}", bracket_v6(host));
    TcpListener::bind(&addr)
        .await
        .map(Some)
        .map_err(|source| StartupError::Bind { what, addr, source })
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Password-login attempts a client may make per minute (SPEC §9).
const LOGIN_ATTEMPTS_PER_MINUTE: usize = 10;

/// Longest the servers get to close connections after the turns are done.
const SERVER_CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long cancelled turns get to unwind after the drain deadline.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Serves until a stop or restart is requested, then drains (and waits for the runs to
/// record their ends) and returns how it ended.
pub async fn run(state: AppState, listeners: Listeners) -> Exit {
    let background = CancellationToken::new();
    let servers_stop = CancellationToken::new();
    let mut servers = Vec::new();

    let watcher = tokio::spawn(crate::lifecycle::watch::watch_marker(
        state.drain.clone(),
        background.clone(),
    ));
    let state_file = StateFile::new(state.config.state_path(), state.clock.clone());
    for (listener, router, cell, what) in [
        (
            listeners.api,
            crate::http::api_router(state.clone()),
            &state.info.api_server_addr,
            "api server",
        ),
        (
            listeners.dashboard,
            crate::http::dashboard_router(state.clone()),
            &state.info.dashboard_addr,
            "dashboard",
        ),
    ] {
        let Some(listener) = listener else { continue };
        if let Ok(addr) = listener.local_addr() {
            let _ = cell.set(addr.to_string());
            tracing::info!(%addr, "{what} listening");
        }
        servers.push(tokio::spawn(crate::http::listen(
            listener,
            router,
            state.config.connections.clone(),
            servers_stop.clone(),
            what,
        )));
    }
    let mirror = tokio::spawn(state_file.clone().mirror(
        state.gate.clone(),
        state.info.clone(),
        background.clone(),
    ));

    state.gate.mark_serving();
    let ticker = tokio::spawn(cron_provider(state.clone(), background.clone()));
    tracing::info!(
        state = state.gate.snapshot().state.as_str(),
        "gateway ready"
    );

    state.shutdown.requested().await;
    let exit = if state.shutdown.is_restart() {
        Exit::Restart
    } else {
        Exit::Stopped
    };
    shutdown_drain(&state).await;
    state.runs.settle(CANCEL_GRACE).await;

    servers_stop.cancel();
    for server in servers {
        let abort = server.abort_handle();
        if tokio::time::timeout(SERVER_CLOSE_GRACE, server)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    background.cancel();
    let _ = watcher.await;
    let _ = ticker.await;
    let _ = mirror.await;
    state.gate.mark_stopped();
    if let Err(e) = state_file.write(&state.gate.snapshot(), &state.info) {
        tracing::warn!(error = %e, "cannot write the final gateway state");
    }
    tracing::info!(exit_code = exit.code(), "gateway stopped");
    exit
}

/// Runs the configured cron provider: the chronos reconciler when it is usable, the
/// built-in ticker otherwise (with a warning in status when chronos was asked for).
async fn cron_provider(state: AppState, stop: CancellationToken) {
    // A restart records its own dead runs (this host, a process that is gone) at once.
    if let Err(e) = state.cron.interrupt_own_dead_runs().await {
        tracing::warn!(error = %e, "cannot check for runs of dead processes; their leases will expire");
    }
    let cron = &state.config.cron;
    let chronos =
        crate::chronos::reconcile::usable(cron.provider, &cron.chronos, &state.config.secrets).map(
            |token| {
                token.map(|token| {
                    crate::chronos::Reconciler::new(
                        &cron.chronos,
                        token,
                        state.cron.clone(),
                        state.info.clone(),
                        state.metrics.clone(),
                    )
                })
            },
        );
    match chronos {
        Ok(Some(reconciler)) => reconciler.run(stop).await,
        other => {
            if let Err(why) = other {
                tracing::warn!("{why}");
                state.info.update_cron(|s| s.warning = Some(why));
            }
            let interval = Duration::from_secs(cron.tick_interval_seconds);
            state.cron.clone().run_ticker(interval, stop).await;
        }
    }
}

/// Refuses new turns, waits for in-flight ones up to the timeout, then cancels the rest.
async fn shutdown_drain(state: &AppState) {
    state.gate.begin_shutdown();
    let timeout = Duration::from_secs_f64(state.config.agent.restart_drain_timeout);
    let active = state.gate.snapshot().active_agents;
    tracing::info!(
        active_agents = active,
        timeout_s = timeout.as_secs_f64(),
        "shutdown drain: refusing new turns, waiting for in-flight ones"
    );
    if state.gate.wait_idle(Instant::now() + timeout).await {
        return;
    }
    let left = state.gate.snapshot().active_agents;
    tracing::warn!(
        active_agents = left,
        "shutdown drain timed out; cancelling the remaining turns"
    );
    state.turns.cancel_all();
    state.gate.wait_idle(Instant::now() + CANCEL_GRACE).await;
}
