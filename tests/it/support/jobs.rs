//! Stored jobs for the store suites: fixed times from one epoch, so runs and slots read as
//! offsets in seconds.

use hermes_gateway::cron::{Job, JobState, Repeat};
use jiff::Timestamp;

/// `s` seconds after the suites' epoch (2027-01-15).
pub fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// An enabled, scheduled job `id` on `schedule`, due at `next`, created and last changed at
/// `created`, never run.
pub fn stored_job(id: &str, schedule: &str, next: Option<i64>, created: i64) -> Job {
    Job {
        id: id.into(),
        name: format!("job {id}"),
        prompt: "say hi".into(),
        schedule: schedule.into(),
        enabled: true,
        state: JobState::Scheduled,
        next_run_at: next.map(t),
        last_run_at: None,
        last_status: None,
        last_error: None,
        repeat: Repeat {
            times: None,
            completed: 0,
        },
        deliver: "local".into(),
        created_at: t(created),
        updated_at: t(created),
    }
}
