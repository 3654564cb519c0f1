//! Cron: jobs, their schedules, the built-in ticker and run execution.
//!
//! Owns the rules of SPEC §7 — what a valid job is, when it is due, exactly one run per
//! scheduled slot (the store's claim), overlap = skip, catch-up, repeat-N, delivery — and
//! nothing about HTTP: handlers call [`CronService`] and map its [`CronError`]. Runs are
//! turns: they pass the same gate as API turns and run on the same backend.

mod schedule;
mod service;

use jiff::Timestamp;
use serde::Serialize;

pub use schedule::{PAST_TOLERANCE, Schedule, ScheduleError};
pub use service::{
    CronError, CronService, FireOutcome, FireRequest, Fired, JobPatch, JobSpec, LEASE,
    MAX_NAME_CHARS, MAX_PROMPT_CHARS, REPEAT_RULE, TickReport,
};

/// True for a well-formed job id: 12 lowercase hex characters (compat). The job API
/// answers anything else with 400 before looking it up.
pub fn is_job_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A job's lifecycle state (compat names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Scheduled,
    Paused,
    Completed,
    Error,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Scheduled, Self::Paused, Self::Completed, Self::Error]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// How many times a job runs: `times` = None means forever (compat shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Repeat {
    pub times: Option<u32>,
    pub completed: u32,
}

/// A cron job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// 12 lowercase hex characters (compat).
    pub id: String,
    pub name: String,
    pub prompt: String,
    /// The schedule as the user wrote it.
    pub schedule: String,
    pub enabled: bool,
    pub state: JobState,
    pub next_run_at: Option<Timestamp>,
    pub last_run_at: Option<Timestamp>,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub repeat: Repeat,
    /// `local` or a webhook URL.
    pub deliver: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// How a run ended (or that it is still going).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
    Interrupted,
    /// The slot came while the previous run was still going (overlap = skip).
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Completed,
            Self::Failed,
            Self::Interrupted,
            Self::Skipped,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One execution of a job for one scheduled slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: String,
    pub job_id: String,
    pub scheduled_for: Timestamp,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub status: RunStatus,
    pub output: Option<String>,
    pub error: Option<String>,
}
