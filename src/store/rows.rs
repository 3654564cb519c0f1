//! Reading job and run rows: the column lists and the row-to-model conversions that
//! `jobs`, `runs` and `claim` share. Macros, because one body must read an SQLite row and
//! a PostgreSQL row alike; times are Unix seconds.

use jiff::Timestamp;

use super::StoreError;

/// The job columns, in the order `job_from_row!` reads them.
macro_rules! select_jobs {
    () => {
        "SELECT id, name, prompt, schedule, enabled, state, next_run_at, last_run_at, last_status, last_error, repeat_times, repeat_completed, deliver, created_at, updated_at FROM jobs"
    };
}
pub(super) use select_jobs;

/// The run columns `run_from_row!` reads.
macro_rules! select_runs {
    () => {
        "SELECT id, job_id, scheduled_for, started_at, finished_at, status, output, error FROM runs"
    };
}
pub(super) use select_runs;

/// A stored Unix second as a timestamp; out of range is corrupt data.
pub(super) fn ts(secs: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_second(secs).map_err(|e| StoreError::Corrupt(format!("timestamp {secs}: {e}")))
}

pub(super) fn opt_ts(secs: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    secs.map(ts).transpose()
}

/// `try_get` on a row read inline (`sqlite_inline`), so the macros below read it as they
/// read an sqlx row.
pub(super) trait InlineRow {
    fn try_get<T: rusqlite::types::FromSql, I: rusqlite::RowIndex>(
        &self,
        index: I,
    ) -> rusqlite::Result<T>;
}

impl InlineRow for rusqlite::Row<'_> {
    fn try_get<T: rusqlite::types::FromSql, I: rusqlite::RowIndex>(
        &self,
        index: I,
    ) -> rusqlite::Result<T> {
        self.get(index)
    }
}

/// A [`crate::job::Job`] from a row of `select_jobs!`, sqlx's or an inline one (`?` on a
/// missing or unreadable column).
macro_rules! job_from_row {
    ($row:expr) => {{
        // The row is an sqlx row or an inline one: one of the two is unused each time.
        #[allow(unused_imports)]
        use sqlx::Row as _;
        use $crate::store::StoreError;
        #[allow(unused_imports)]
        use $crate::store::rows::InlineRow as _;
        use $crate::store::rows::{opt_ts, ts};
        let row = $row;
        let state: String = row.try_get("state")?;
        $crate::job::Job {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            prompt: row.try_get("prompt")?,
            schedule: row.try_get("schedule")?,
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            state: $crate::job::JobState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?,
            next_run_at: opt_ts(row.try_get("next_run_at")?)?,
            last_run_at: opt_ts(row.try_get("last_run_at")?)?,
            last_status: row.try_get("last_status")?,
            last_error: row.try_get("last_error")?,
            repeat: $crate::job::Repeat {
                times: row
                    .try_get::<Option<i64>, _>("repeat_times")?
                    .map(|t| u32::try_from(t).unwrap_or(u32::MAX)),
                completed: u32::try_from(row.try_get::<i64, _>("repeat_completed")?)
                    .unwrap_or(u32::MAX),
            },
            deliver: row.try_get("deliver")?,
            created_at: ts(row.try_get("created_at")?)?,
            updated_at: ts(row.try_get("updated_at")?)?,
        }
    }};
}
pub(super) use job_from_row;

/// A [`crate::job::Run`] from a row of `select_runs!`.
macro_rules! run_from_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        use $crate::store::StoreError;
        use $crate::store::rows::{opt_ts, ts};
        let row = $row;
        let status: String = row.try_get("status")?;
        $crate::job::Run {
            id: row.try_get("id")?,
            job_id: row.try_get("job_id")?,
            scheduled_for: ts(row.try_get("scheduled_for")?)?,
            started_at: ts(row.try_get("started_at")?)?,
            finished_at: opt_ts(row.try_get("finished_at")?)?,
            status: $crate::job::RunStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?,
            output: row.try_get("output")?,
            error: row.try_get("error")?,
        }
    }};
}
pub(super) use run_from_row;
