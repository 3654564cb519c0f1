//! Cron: jobs, their schedules, the built-in ticker and run execution.
//!
//! Owns the rules of SPEC §7 — what a valid job is, when it is due, exactly one run per
//! scheduled slot (the store's claim), overlap = skip, catch-up, repeat-N, delivery — and
//! nothing about HTTP: handlers call [`CronService`] and map its [`CronError`]. Runs are
//! turns: they pass the same gate as API turns and run on the same backend. The job and
//! run model lives in [`crate::job`], which the store shares; cron asks the store, the
//! store never asks cron.
//!
//! # Layout
//! - `service`: [`CronService`] (built complete by [`CronService::new`]) and [`CronError`].
//! - `jobs`: the checks of a job and its CRUD.
//! - `fire`: fires from an external scheduler (SPEC §8); `seen`: the token ids known
//!   recorded, so a replay is answered from memory.
//! - `tick`: upkeep, the due scan, the claim of a slot, the ticker loop.
//! - `run`: a claimed run as a gated turn with its lease renewed, and its end.
//! - `deliver`: webhook delivery.
//! - `schedule`: schedule texts as pure next-slot functions; `owner`: lease owners.

mod deliver;
mod fire;
mod jobs;
mod owner;
mod run;
mod schedule;
mod seen;
mod service;
mod tick;

pub use fire::{FireOutcome, FireRequest, Fired};
pub use jobs::{JobPatch, JobSpec, MAX_NAME_CHARS, MAX_PROMPT_CHARS, REPEAT_RULE};
pub use schedule::{PAST_TOLERANCE, Schedule, ScheduleError};
pub use service::{CronError, CronService, LEASE};
pub use tick::{CLAIM_BATCH, TickReport};

/// The model, named where cron's callers (the job API, the provider) look for it.
pub use crate::job::{Job, JobState, Repeat, Run, RunStatus, is_job_id};
