//! `hermes-gateway run`: logging, the runtime, signals, and the gateway itself.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::app::{self, AppState};
use crate::clock::SystemClock;
use crate::config::Config;

pub fn run(config: Config) -> i32 {
    super::logging::init(&config.logging.level, config.logging.format);
    // Agents run as the gateway's user: without this they could read the gateway's secrets
    // from /proc/<pid>/environ (or its memory) and ptrace it. Exec resets it, so agents and
    // their keepers are unaffected.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make the gateway undumpable; same-user processes can read its environment");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return super::EXIT_FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> i32 {
    let state = match app::prepare(config, Arc::new(SystemClock)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return super::EXIT_FAILURE;
        }
    };
    let listeners = match app::bind(&state.config).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            state.gate.mark_startup_failed();
            let file =
                crate::lifecycle::StateFile::new(state.config.state_path(), state.clock.clone());
            let _ = file.write(&state.gate.snapshot(), &state.info);
            return super::EXIT_FAILURE;
        }
    };
    if let Err(e) = spawn_signal_handler(&state) {
        tracing::error!(error = %e, "cannot install signal handlers");
        return super::EXIT_FAILURE;
    }
    app::run(state, listeners).await.code()
}

/// SIGTERM/SIGINT stop (a second one cancels in-flight turns at once); SIGUSR1 restarts.
fn spawn_signal_handler(state: &AppState) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let shutdown = state.shutdown.clone();
    let turns = state.turns.clone();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: restart requested; draining then exiting 75");
                    shutdown.restart();
                    continue;
                }
            };
            if shutdown.is_requested() {
                tracing::warn!("{name} again: cancelling in-flight turns now");
                turns.cancel_all();
            } else {
                tracing::info!("{name}: shutdown requested; draining");
                shutdown.stop();
            }
        }
    });
    Ok(())
}
