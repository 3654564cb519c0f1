//! Runs: opening one without moving its job (manual runs, fired deliveries), the overlap
//! check, lease renewal, ending a run (group-committed on SQLite), the sweeps that record
//! runs of dead processes interrupted, and reading runs back. Every write to a running run
//! is conditional on its `owner` and on it still running: a run is written by whoever
//! holds its lease, and recorded once.

use jiff::Timestamp;
use sqlx::Row;

use super::rows::{run_from_row, select_runs};
use super::sqlite_inline::execute_on;
use super::sqlite_writer::Write;
use super::{Store, StoreError, on_pool, on_read_pool, sql};
use crate::job::{ClaimOutcome, ClaimSeen, JobState, NewRun, Run, RunStatus};

impl Store {
    /// Opens a run for a slot without moving the job (manual runs, fired deliveries);
    /// `Lost` when that (job, slot) already has a run.
    pub async fn open_run(
        &self,
        run: &NewRun,
        status: RunStatus,
    ) -> Result<ClaimOutcome, StoreError> {
        let open = sql(
            self,
            "INSERT INTO runs (id, job_id, scheduled_for, started_at, status, lease_until, owner, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job_id, scheduled_for) DO NOTHING",
        );
        let finished = (status != RunStatus::Running).then(|| run.started_at.as_second());
        let n = on_pool!(self, pool => {
            sqlx::query(open)
                .bind(&run.id)
                .bind(&run.job_id)
                .bind(run.scheduled_for.as_second())
                .bind(run.started_at.as_second())
                .bind(status.as_str())
                .bind(run.lease_until.as_second())
                .bind(&run.owner)
                .bind(finished)
                .execute(pool)
                .await?
                .rows_affected()
        });
        // Nothing to move: the unique (job, slot) run row alone decides.
        let seen = ClaimSeen {
            token_fresh: None,
            moved: true,
            opened: n == 1,
        };
        Ok(seen.outcome())
    }

    /// The job's run still holding a live lease, if any (overlap detection).
    pub async fn running_run(
        &self,
        job_id: &str,
        now: Timestamp,
    ) -> Result<Option<Run>, StoreError> {
        let q = sql(
            self,
            concat!(
                select_runs!(),
                " WHERE job_id = $1 AND status = 'running' AND lease_until > $2 LIMIT 1"
            ),
        );
        on_read_pool!(self, pool => {
            let row = sqlx::query(q).bind(job_id).bind(now.as_second()).fetch_optional(pool).await?;
            row.map(|row| Ok(run_from_row!(&row))).transpose()
        })
    }

    /// Extends a running run's lease if `owner` still holds it; false when it does not
    /// (the lease was taken over, or the run was ended elsewhere): the run must stop.
    pub async fn renew_lease(
        &self,
        run_id: &str,
        owner: &str,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        let q = sql(
            self,
            "UPDATE runs SET lease_until = $3 WHERE id = $1 AND owner = $2 AND status = 'running'",
        );
        let n = on_pool!(self, pool => {
            sqlx::query(q).bind(run_id).bind(owner).bind(until.as_second()).execute(pool).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// The running runs and who holds each (the startup check for dead owners).
    pub async fn running_owners(&self) -> Result<Vec<(String, String)>, StoreError> {
        let q = "SELECT id, owner FROM runs WHERE status = 'running'";
        on_pool!(self, pool => {
            let rows = sqlx::query(q).fetch_all(pool).await?;
            rows.iter()
                .map(|row| Ok((row.try_get("id")?, row.try_get("owner")?)))
                .collect()
        })
    }

    /// Records a run of a process known to be dead as interrupted, if `owner` still holds
    /// it and it is still running (both or neither: the run and its job). False when
    /// something else ended or took it first.
    pub async fn interrupt_dead_run(
        &self,
        run_id: &str,
        owner: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        const WHY: &str =
            "the process running it stopped before it finished (found dead at restart)";
        let end = sql(
            self,
            "UPDATE runs SET status = 'interrupted', finished_at = $3, error = $4 \
             WHERE id = $1 AND owner = $2 AND status = 'running' RETURNING job_id, started_at",
        );
        let job = sql(
            self,
            "UPDATE jobs SET last_run_at = $2, last_status = 'interrupted', last_error = $3, updated_at = $4 WHERE id = $1",
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let Some(row) = sqlx::query(end)
                .bind(run_id)
                .bind(owner)
                .bind(now.as_second())
                .bind(WHY)
                .fetch_optional(&mut *tx)
                .await?
            else {
                // Ended now, in this turn: dropped, the rollback would only be queued and
                // the next writer would find SQLite's lock still held.
                tx.rollback().await?;
                return Ok(false);
            };
            let job_id: String = row.try_get("job_id")?;
            let started: i64 = row.try_get("started_at")?;
            sqlx::query(job)
                .bind(&job_id)
                .bind(started)
                .bind(WHY)
                .bind(now.as_second())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Ends a run and records its outcome on the job (`repeat.completed` counts
    /// completed runs; `state` moves to `completed` when `finish_job` says so) — only if
    /// the run is still running and `owner` still holds it: false otherwise, and nothing
    /// is written (a run is recorded once, by whoever holds it).
    pub async fn finish_run(
        &self,
        run: &Run,
        owner: &str,
        finish_job: Option<JobState>,
    ) -> Result<bool, StoreError> {
        let end = RunEnd {
            run: run.id.clone(),
            owner: owner.to_owned(),
            status: run.status.as_str(),
            finished_at: run.finished_at.unwrap_or(run.started_at).as_second(),
            output: run.output.clone(),
            error: run.error.clone(),
            job: run.job_id.clone(),
            started_at: run.started_at.as_second(),
            done: i64::from(matches!(
                run.status,
                RunStatus::Completed | RunStatus::Failed
            )),
            job_state: finish_job.map(JobState::as_str),
        };
        match self {
            Store::Sqlite(pools) => pools.batch.write(end).await,
            // Boxed: sqlx's transaction futures are most of 15 KiB, which every run's task
            // would otherwise carry (and copy when spawned) on SQLite too.
            Store::Postgres(pool) => Box::pin(end.commit_on(pool)).await,
        }
    }

    /// Marks runs whose lease ran out (their process died) as interrupted; returns them.
    pub async fn expire_leases(&self, now: Timestamp) -> Result<Vec<Run>, StoreError> {
        let q = sql(
            self,
            "UPDATE runs SET status = 'interrupted', finished_at = $1, \
             error = 'the process running it stopped before it finished (lease expired)' \
             WHERE status = 'running' AND lease_until <= $1 \
             RETURNING id, job_id, scheduled_for, started_at, finished_at, status, output, error",
        );
        const JOB: &str = "UPDATE jobs SET last_run_at = $2, last_status = 'interrupted', last_error = $3, updated_at = $4 WHERE id = $1";
        on_pool!(self, pool => {
            let rows = sqlx::query(q).bind(now.as_second()).fetch_all(pool).await?;
            let runs = rows.iter().map(|row| Ok(run_from_row!(row))).collect::<Result<Vec<Run>, StoreError>>()?;
            for r in &runs {
                sqlx::query(sql(self, JOB))
                    .bind(&r.job_id)
                    .bind(r.started_at.as_second())
                    .bind(&r.error)
                    .bind(now.as_second())
                    .execute(pool)
                    .await?;
            }
            Ok(runs)
        })
    }

    /// Notes a failed webhook delivery on the run and the job.
    pub async fn record_delivery_failure(
        &self,
        run_id: &str,
        job_id: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let run = sql(self, "UPDATE runs SET error = $2 WHERE id = $1");
        let job = sql(self, "UPDATE jobs SET last_error = $2 WHERE id = $1");
        on_pool!(self, pool => {
            sqlx::query(run).bind(run_id).bind(message).execute(pool).await?;
            sqlx::query(job).bind(job_id).bind(message).execute(pool).await?;
        });
        Ok(())
    }

    /// A job's runs, newest first.
    pub async fn list_runs(&self, job_id: &str, limit: i64) -> Result<Vec<Run>, StoreError> {
        let q = sql(
            self,
            concat!(
                select_runs!(),
                " WHERE job_id = $1 ORDER BY started_at DESC, scheduled_for DESC LIMIT $2"
            ),
        );
        on_read_pool!(self, pool => {
            let rows = sqlx::query(q).bind(job_id).bind(limit).fetch_all(pool).await?;
            rows.iter().map(|row| Ok(run_from_row!(row))).collect()
        })
    }

    /// The run of the job's `slot`, if that slot was claimed.
    pub async fn run_at_slot(
        &self,
        job_id: &str,
        slot: Timestamp,
    ) -> Result<Option<Run>, StoreError> {
        let q = sql(
            self,
            concat!(select_runs!(), " WHERE job_id = $1 AND scheduled_for = $2"),
        );
        on_read_pool!(self, pool => {
            let row = sqlx::query(q).bind(job_id).bind(slot.as_second()).fetch_optional(pool).await?;
            row.map(|row| Ok(run_from_row!(&row))).transpose()
        })
    }

    pub async fn get_run(&self, run_id: &str) -> Result<Run, StoreError> {
        let q = sql(self, concat!(select_runs!(), " WHERE id = $1"));
        on_read_pool!(self, pool => {
            let row = sqlx::query(q).bind(run_id).fetch_optional(pool).await?.ok_or(StoreError::NotFound)?;
            Ok(run_from_row!(&row))
        })
    }
}

/// A run's end: the run is ended only if it is still running and `owner` still holds it,
/// and only then is the outcome recorded on its job (both in one transaction).
#[derive(Debug)]
struct RunEnd {
    run: String,
    owner: String,
    status: &'static str,
    finished_at: i64,
    output: Option<String>,
    error: Option<String>,
    job: String,
    started_at: i64,
    /// 1 when the run counts towards `repeat.completed`.
    done: i64,
    /// The job's new state, if the run ends it (`completed` after its last slot).
    job_state: Option<&'static str>,
}

/// Ends the run `$1` with its outcome, if it is still running and still `$6`'s.
const END_RUN: &str = "UPDATE runs SET status = $2, finished_at = $3, output = $4, error = $5 \
     WHERE id = $1 AND status = 'running' AND owner = $6";
/// Records a run's outcome on its job `$1`.
const RECORD_ON_JOB: &str = "UPDATE jobs SET last_run_at = $2, last_status = $3, last_error = $4, \
     repeat_completed = repeat_completed + $5, state = COALESCE($6, state), updated_at = $7 WHERE id = $1";

impl RunEnd {
    /// Ends the run on PostgreSQL in a transaction of its own; whether it was still ours.
    async fn commit_on(&self, pool: &sqlx::PgPool) -> Result<bool, StoreError> {
        let mut tx = pool.begin().await?;
        if !self.postgres(&mut tx).await? {
            // Already ended elsewhere (lease expired and swept): keep that record.
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Runs the end on PostgreSQL inside `tx`; whether the run was still ours to end.
    async fn postgres(&self, tx: &mut sqlx::PgConnection) -> Result<bool, StoreError> {
        let ended = sqlx::query(END_RUN)
            .bind(&self.run)
            .bind(self.status)
            .bind(self.finished_at)
            .bind(&self.output)
            .bind(&self.error)
            .bind(&self.owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if ended == 0 {
            return Ok(false);
        }
        sqlx::query(RECORD_ON_JOB)
            .bind(&self.job)
            .bind(self.started_at)
            .bind(self.status)
            .bind(&self.error)
            .bind(self.done)
            .bind(self.job_state)
            .bind(self.finished_at)
            .execute(&mut *tx)
            .await?;
        Ok(true)
    }
}

impl Write for RunEnd {
    type Output = bool;

    /// The end on SQLite, inside the writer's transaction: as on PostgreSQL, the run first
    /// (still running, still ours?), then its job, only if the run was ours.
    fn apply(&self, conn: &rusqlite::Connection) -> Result<bool, StoreError> {
        let end = rusqlite::params![
            self.run,
            self.status,
            self.finished_at,
            self.output,
            self.error,
            self.owner
        ];
        if execute_on(conn, END_RUN, end)? == 0 {
            return Ok(false);
        }
        let job = rusqlite::params![
            self.job,
            self.started_at,
            self.status,
            self.error,
            self.done,
            self.job_state,
            self.finished_at
        ];
        execute_on(conn, RECORD_ON_JOB, job)?;
        Ok(true)
    }
}
