//! Asynchronous runs (SPEC §11 "Runs"; not cron's runs, which are `cron`'s): a turn that
//! `POST /v1/runs` starts and that lives on its own, whatever becomes of the client.
//!
//! A run is admitted by the turn driver like every turn (so a drain refuses it and waits
//! for it, and a shutdown's deadline cuts it), at most [`MAX_IN_FLIGHT`] at once per
//! process. Its task holds the turn, merges the reply into `message.delta` events (at
//! most one per 50 ms), keeps every event in memory for the subscribers on this process
//! and writes them to the store twice a second with its lease, then pushes and records
//! its end (`run.completed`, `run.failed` or `run.stopped`). Any replica reads a run from
//! the store; a stop asked on one that does not run it is written there and seen by the
//! owner at its next sync; a run whose lease ran out (its process died) is recorded
//! interrupted by the first process that reads it. The store keeps the newest
//! [`MAX_STORED`] ended runs.
//!
//! # Layout
//! - `model`: the view, the event feed, the errors and the limits (a leaf).
//! - `input`: the request body checked (`input`, `instructions`, `session_id`, `model`).
//! - `log`: a live run's events, end and stop request in memory, and its feed.
//! - `service`: [`Runs`]: start, read, stop, feeds (memory or store), shutdown.
//! - `drive`: one run's task.

mod drive;
mod input;
mod log;
mod model;
mod service;

pub use input::{RunRequest, run_request};
pub use model::{EventFeed, MAX_IN_FLIGHT, MAX_STORED, RunError, RunView};
pub use service::Runs;
