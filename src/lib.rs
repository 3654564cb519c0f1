//! hermes-gateway: the control plane of the Hermes agent gateway.
//!
//! # Layout
//! - [`config`]: the schema of SPEC §3, parsed once, every problem reported with its path.
//! - [`lifecycle`]: the turn gate, drain state machine, marker contract and status record.
//! - [`auth`]: the bearer-token seam, the drain-secret provider, dashboard session modes.
//! - [`agent`]: backends that execute turns.
//! - [`chronos`]: externally fired cron (SPEC §8): fire-token verification (pinned keys or a
//!   cached JWKS) and the account-service provider that arms each job's next slot.
//! - [`cron`]: jobs, schedules, the ticker and run execution.
//! - [`job`]: the job and run model `cron` and `store` share (a leaf), and the one
//!   decision of a claim's outcome.
//! - [`store`]: the database (SQLite or PostgreSQL); the only module that speaks SQL.
//! - [`http`]: routers, DTOs and error mapping for the API server and the dashboard.
//! - [`runs`]: asynchronous runs (`POST /v1/runs`): turns that outlive their client,
//!   their events in memory and in the store, stop and the in-flight cap.
//! - [`sessions`]: stored chat sessions (SPEC §11): which session a chat request belongs
//!   to, the history its turn runs on, each completed turn recorded, both bounds kept.
//! - [`responses`]: the Responses API's conversations: chains of responses, run as turns
//!   and kept (bounded) in the store.
//! - [`turn`]: the one turn driver every source of turns adapts (admission, backend
//!   stream, outcome, in-flight count).
//! - [`state`]: [`state::AppState`], what handlers and background tasks share.
//! - [`app`]: wiring, listeners, background tasks and the shutdown drain.
//! - [`audit`], [`events`], [`metrics`], [`clock`], [`ids`]: cross-cutting pieces.
//! - [`history`]: the last hour of turns, fires and in-flight levels per minute, for the
//!   dashboard's charts.
//! - [`formats`]: pure parsers of credential text (PEM/JWK public keys, password hashes),
//!   a leaf that `config`, `auth` and `chronos` share.
//! - [`files`]: private (0700/0600), atomic and bounded non-blocking file I/O under
//!   `HERMES_HOME`.
//! - [`procfs`]: reading `/proc` (a process's stat line and children) for the turn
//!   keeper and cron lease owners.
//! - [`cli`]: the `hermes-gateway` command line.
//!
//! See `ARCHITECTURE.md` for the invariants.

pub mod agent;
pub mod app;
pub mod audit;
pub mod auth;
pub mod chronos;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cron;
pub mod events;
pub mod files;
pub mod formats;
pub mod history;
pub mod http;
pub mod ids;
pub mod job;
pub mod lifecycle;
pub mod metrics;
pub mod outbound;
pub mod procfs;
pub mod responses;
pub mod runs;
pub mod sessions;
pub mod state;
pub mod store;
pub mod turn;
