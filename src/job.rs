//! The job and run model that `cron` (which decides) and `store` (which keeps) share: jobs,
//! their runs, what opening a run needs, and the outcome of a claim.
//!
//! A leaf: it imports no other module of the crate, so `cron` and `store` both build on it
//! and neither imports the other's types. [`ClaimSeen::outcome`] is the one place a
//! claim's outcome is decided, from what the claim's transaction observed, whichever
//! backend ran it.

use jiff::Timestamp;
use serde::Serialize;

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

/// What the store needs to open a run (a claim, a manual run).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub job_id: String,
    pub scheduled_for: Timestamp,
    pub started_at: Timestamp,
    pub lease_until: Timestamp,
    /// Which process holds the lease (for operators reading the table).
    pub owner: String,
}

impl NewRun {
    /// The run as it stands once opened: running, nothing recorded yet.
    pub fn running(&self) -> Run {
        Run {
            id: self.id.clone(),
            job_id: self.job_id.clone(),
            scheduled_for: self.scheduled_for,
            started_at: self.started_at,
            finished_at: None,
            status: RunStatus::Running,
            output: None,
            error: None,
        }
    }
}

/// One slot of a batch of claims (`Store::claim_slots`): open `run` on its slot and move
/// the job to `next` (and `state`), as a single claim does; `status` is `Running`, or
/// `Skipped` to consume the slot without running it.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub run: NewRun,
    pub next: Option<Timestamp>,
    pub state: JobState,
    pub status: RunStatus,
}

/// The result of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This process owns the slot and must run it.
    Claimed,
    /// Someone else already claimed this slot (or the job changed): do nothing.
    Lost,
    /// The fire token's id was already used: nothing was claimed.
    Replayed,
}

/// What a claim's transaction observed, step by step: the fire token's id recorded (or
/// found already used), the job moved off its slot by the compare-and-swap, the run row
/// inserted. Each backend runs the steps its own way (PostgreSQL statement by statement,
/// SQLite as one script) and reports them here; a step that did not run observed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClaimSeen {
    /// `None` without a token; `Some(true)` when its id was recorded just now,
    /// `Some(false)` when it was there already (a replay).
    pub token_fresh: Option<bool>,
    /// The job was still at the slot and moved off it (or, for a run opened without
    /// moving the job, there was nothing to move).
    pub moved: bool,
    /// The run row for (job, slot) was inserted: no other run holds that slot.
    pub opened: bool,
}

impl ClaimSeen {
    /// Whether the claim goes on to move the job: not after a replayed token.
    pub fn may_move(&self) -> bool {
        self.token_fresh != Some(false)
    }

    /// The claim's outcome: a replayed token claims nothing; otherwise the slot is this
    /// claimer's only when the job moved and the run row went in.
    pub fn outcome(&self) -> ClaimOutcome {
        if !self.may_move() {
            ClaimOutcome::Replayed
        } else if self.moved && self.opened {
            ClaimOutcome::Claimed
        } else {
            ClaimOutcome::Lost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(token_fresh: Option<bool>, moved: bool, opened: bool, expected: ClaimOutcome) {
        let seen = ClaimSeen {
            token_fresh,
            moved,
            opened,
        };
        assert_eq!(seen.outcome(), expected, "{seen:?}");
    }

    #[test]
    fn claim_outcomes() {
        use ClaimOutcome::*;
        // No token: the compare-and-swap and the unique run row decide.
        check(None, true, true, Claimed);
        check(None, false, false, Lost);
        check(None, true, false, Lost);
        // A fresh token id changes nothing about the slot.
        check(Some(true), true, true, Claimed);
        check(Some(true), false, false, Lost);
        check(Some(true), true, false, Lost);
        // A replayed id claims nothing, whatever else was seen.
        check(Some(false), false, false, Replayed);
        check(Some(false), true, true, Replayed);
    }

    #[test]
    fn a_replayed_token_stops_the_claim_before_the_job_moves() {
        let replay = ClaimSeen {
            token_fresh: Some(false),
            ..ClaimSeen::default()
        };
        assert!(!replay.may_move());
        assert!(ClaimSeen::default().may_move());
        let fresh = ClaimSeen {
            token_fresh: Some(true),
            ..ClaimSeen::default()
        };
        assert!(fresh.may_move());
    }

    #[test]
    fn job_ids_are_twelve_lowercase_hex() {
        for (id, ok) in [
            ("0123456789ab", true),
            ("0123456789AB", false),
            ("0123456789a", false),
            ("0123456789abc", false),
            ("0123456789ag", false),
            ("", false),
        ] {
            assert_eq!(is_job_id(id), ok, "{id:?}");
        }
    }

    #[test]
    fn state_and_status_names_round_trip() {
        for s in [
            JobState::Scheduled,
            JobState::Paused,
            JobState::Completed,
            JobState::Error,
        ] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        for s in [
            RunStatus::Running,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Interrupted,
            RunStatus::Skipped,
        ] {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("done"), None);
        assert_eq!(RunStatus::parse("Running"), None);
    }
}
