//! Reproducible benchmarks against the release binary (see BENCHMARKS.md).
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench -- all
//! ```
//! Subcommands: `drain-latency`, `status`, `startup`, `rss`, `idle-cpu` (CPU and RSS idle
//! and with a drain marker present, 10 s each, 3 gateways), `upstream-overhead`,
//! `echo-throughput`, `stream-memory`, `turns` (the last three), `cron-tick`,
//! `cron-contention`, `cron` (the last two; need PostgreSQL from `.ci/deps`), `fire` and
//! `fire-no-claim`, `fire-replay` (against `bench/fire_receiver.py` on SQLite and in memory;
//! need python3 with aiohttp and PyJWT; `FIRE_ONLY=ES256,gateway` runs a subset),
//! `fire-verify` (the in-process signature ceiling), `tickets` (against
//! `bench/ws_ticket_server.py`; needs FastAPI and uvicorn), `events-memory`, `dashboard`
//! (the last two), `responses-overhead [sqlite|postgres]`, `sessions-memory`,
//! `conversations` (the three), `cold-fire` (spawn -> first fire 202, against
//! `bench/fire_receiver.py`), `all`. Each starts its own
//! gateway(s) in a temporary HERMES_HOME on loopback ports and prints medians.

mod coldstart;
mod common;
mod conversations;
mod cron;
mod dashboard;
mod fire;
mod fire_replay;
mod foundation;
mod turns;

use coldstart::*;
use conversations::*;
use cron::*;
use dashboard::*;
use fire::*;
use fire_replay::*;
use foundation::*;
use turns::*;

#[tokio::main]
pub async fn main() {
    common::pin_self();
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match which.as_str() {
        "drain-latency" => drain_latency().await,
        "status" => status_throughput().await,
        "startup" => startup().await,
        "rss" => rss().await,
        "idle-cpu" => idle_cpu().await,
        "upstream-overhead" => upstream_overhead().await,
        "echo-throughput" => echo_throughput().await,
        "stream-memory" => stream_memory().await,
        "cron-tick" => cron_tick().await,
        "cron-contention" => cron_contention().await,
        "cron-claimer" => {
            let a: Vec<String> = std::env::args().collect();
            cron_claimer(&a[2], &a[3], &a[4], &a[5]).await;
        }
        "fire" => fire_throughput(true).await,
        "fire-no-claim" => fire_throughput(false).await,
        "fire-replay" => fire_replay().await,
        "fire-verify" => fire_verify().await,
        "tickets" => tickets().await,
        "responses-overhead" => {
            let kind = std::env::args().nth(2).unwrap_or_else(|| "sqlite".into());
            responses_overhead(&kind).await;
        }
        "sessions-memory" => sessions_memory().await,
        "cold-fire" => cold_fire().await,
        "conversations" => {
            responses_overhead("sqlite").await;
            responses_overhead("postgres").await;
            sessions_memory().await;
        }
        "events-memory" => events_memory().await,
        "dashboard" => {
            tickets().await;
            events_memory().await;
        }
        "cron" => {
            cron_tick().await;
            cron_contention().await;
        }
        "turns" => {
            upstream_overhead().await;
            echo_throughput().await;
            stream_memory().await;
        }
        "all" => {
            drain_latency().await;
            status_throughput().await;
            startup().await;
            rss().await;
            upstream_overhead().await;
            echo_throughput().await;
            stream_memory().await;
        }
        other => {
            eprintln!(
                "unknown benchmark {other:?}: drain-latency | status | startup | rss | idle-cpu | upstream-overhead | echo-throughput | stream-memory | turns | cron-tick | cron-contention | cron | fire | fire-no-claim | fire-replay | fire-verify | tickets | events-memory | responses-overhead [sqlite|postgres] | sessions-memory | conversations | cold-fire | dashboard | all"
            );
            std::process::exit(2);
        }
    }
}
