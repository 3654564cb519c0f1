//! Jobs and runs: CRUD, the due-job scan, and the run claim — a compare-and-swap on the
//! job's scheduled slot plus a unique (job id, slot) run row, in one transaction, so each
//! slot runs exactly once whatever the number of replicas, retries or crashes.

use jiff::Timestamp;
use sqlx::Row;

use super::sqlite_writer::{ClaimArgs, FinishArgs};
use super::{Store, StoreError, on_pool, on_read_pool, sql};
use crate::cron::{Job, JobState, Repeat, Run, RunStatus};

/// What [`Store::claim_slot`] needs to open a run.
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

/// The job columns, in the order `job_from_row!` reads them.
macro_rules! select_jobs {
    () => {
        "SELECT id, name, prompt, schedule, enabled, state, next_run_at, last_run_at, last_status, last_error, repeat_times, repeat_completed, deliver, created_at, updated_at FROM jobs"
    };
}

/// The run columns `run_from_row!` reads.
macro_rules! select_runs {
    () => {
        "SELECT id, job_id, scheduled_for, started_at, finished_at, status, output, error FROM runs"
    };
}

fn ts(secs: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_second(secs).map_err(|e| StoreError::Corrupt(format!("timestamp {secs}: {e}")))
}

fn opt_ts(secs: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    secs.map(ts).transpose()
}

macro_rules! job_from_row {
    ($row:expr) => {{
        let row = $row;
        let state: String = row.try_get("state")?;
        Job {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            prompt: row.try_get("prompt")?,
            schedule: row.try_get("schedule")?,
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            state: JobState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?,
            next_run_at: opt_ts(row.try_get("next_run_at")?)?,
            last_run_at: opt_ts(row.try_get("last_run_at")?)?,
            last_status: row.try_get("last_status")?,
            last_error: row.try_get("last_error")?,
            repeat: Repeat {
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

macro_rules! run_from_row {
    ($row:expr) => {{
        let row = $row;
        let status: String = row.try_get("status")?;
        Run {
            id: row.try_get("id")?,
            job_id: row.try_get("job_id")?,
            scheduled_for: ts(row.try_get("scheduled_for")?)?,
            started_at: ts(row.try_get("started_at")?)?,
            finished_at: opt_ts(row.try_get("finished_at")?)?,
            status: RunStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?,
            output: row.try_get("output")?,
            error: row.try_get("error")?,
        }
    }};
}

impl Store {
    pub async fn insert_job(&self, job: &Job) -> Result<(), StoreError> {
        self.insert_jobs(std::slice::from_ref(job)).await
    }

    /// Inserts many jobs in one transaction (imports, benchmarks).
    pub async fn insert_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        const INSERT: &str = "INSERT INTO jobs (id, name, prompt, schedule, enabled, state, next_run_at, last_run_at, last_status, last_error, repeat_times, repeat_completed, deliver, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for job in jobs {
                sqlx::query(sql(self, INSERT))
                    .bind(&job.id)
                    .bind(&job.name)
                    .bind(&job.prompt)
                    .bind(&job.schedule)
                    .bind(i64::from(job.enabled))
                    .bind(job.state.as_str())
                    .bind(job.next_run_at.map(|t| t.as_second()))
                    .bind(job.last_run_at.map(|t| t.as_second()))
                    .bind(&job.last_status)
                    .bind(&job.last_error)
                    .bind(job.repeat.times.map(i64::from))
                    .bind(i64::from(job.repeat.completed))
                    .bind(&job.deliver)
                    .bind(job.created_at.as_second())
                    .bind(job.updated_at.as_second())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Replaces a job's definition and schedule state; `NotFound` if it is gone.
    pub async fn update_job(&self, job: &Job) -> Result<(), StoreError> {
        let q = sql(
            self,
            "UPDATE jobs SET name = $2, prompt = $3, schedule = $4, enabled = $5, state = $6, next_run_at = $7, \
             repeat_times = $8, repeat_completed = $9, deliver = $10, updated_at = $11, last_error = $12 WHERE id = $1",
        );
        let affected = on_pool!(self, pool => {
            sqlx::query(q)
                .bind(&job.id)
                .bind(&job.name)
                .bind(&job.prompt)
                .bind(&job.schedule)
                .bind(i64::from(job.enabled))
                .bind(job.state.as_str())
                .bind(job.next_run_at.map(|t| t.as_second()))
                .bind(job.repeat.times.map(i64::from))
                .bind(i64::from(job.repeat.completed))
                .bind(&job.deliver)
                .bind(job.updated_at.as_second())
                .bind(&job.last_error)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if affected == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub async fn get_job(&self, id: &str) -> Result<Job, StoreError> {
        let q = sql(self, concat!(select_jobs!(), " WHERE id = $1"));
        on_read_pool!(self, pool => {
            let row = sqlx::query(q).bind(id).fetch_optional(pool).await?.ok_or(StoreError::NotFound)?;
            Ok(job_from_row!(&row))
        })
    }

    /// All jobs, oldest first.
    pub async fn list_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let q = sql(self, concat!(select_jobs!(), " ORDER BY created_at, id"));
        on_read_pool!(self, pool => {
            let rows = sqlx::query(q).fetch_all(pool).await?;
            rows.iter().map(|row| Ok(job_from_row!(row))).collect()
        })
    }

    /// Deletes a job and its run history; false if there was no such job.
    pub async fn delete_job(&self, id: &str) -> Result<bool, StoreError> {
        let del_runs = sql(self, "DELETE FROM runs WHERE job_id = $1");
        let del_job = sql(self, "DELETE FROM jobs WHERE id = $1");
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(del_runs).bind(id).execute(&mut *tx).await?;
            let n = sqlx::query(del_job).bind(id).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    /// Enabled, scheduled jobs whose slot is due at `now`, oldest slot first (index scan).
    pub async fn due_jobs(&self, now: Timestamp, limit: i64) -> Result<Vec<Job>, StoreError> {
        let q = sql(
            self,
            concat!(
                select_jobs!(),
                " WHERE enabled = 1 AND state = 'scheduled' AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2"
            ),
        );
        on_read_pool!(self, pool => {
            let rows = sqlx::query(q).bind(now.as_second()).bind(limit).fetch_all(pool).await?;
            rows.iter().map(|row| Ok(job_from_row!(row))).collect()
        })
    }

    /// Claims `run.scheduled_for` of the job: moves the job from that slot to `next` (and
    /// `state`) only if it is still at that slot, and opens the run row, whose (job, slot)
    /// is unique — both or neither. Exactly one caller per slot gets `Claimed`.
    /// `status` is `Running`, or `Skipped` to consume the slot without running it.
    /// With a fire token's `(jti, kept until)`, the id is recorded in the same transaction:
    /// an id seen before claims nothing (`Replayed`). A fresh id is recorded whether the
    /// claim wins or loses: a lost claim means the slot was taken (or the job moved), so
    /// the token is spent either way.
    pub async fn claim_slot(
        &self,
        run: &NewRun,
        next: Option<Timestamp>,
        state: JobState,
        status: RunStatus,
        jti: Option<(&str, Timestamp)>,
    ) -> Result<ClaimOutcome, StoreError> {
        let finished = (status != RunStatus::Running).then(|| run.started_at.as_second());
        if let Store::Sqlite(pools) = self {
            return pools
                .batch
                .claim(ClaimArgs {
                    job: run.job_id.clone(),
                    next: next.map(|t| t.as_second()),
                    state: state.as_str(),
                    now: run.started_at.as_second(),
                    slot: run.scheduled_for.as_second(),
                    run: run.id.clone(),
                    status: status.as_str(),
                    lease: run.lease_until.as_second(),
                    owner: run.owner.clone(),
                    jti: jti.map(|(id, _)| id.to_owned()),
                    keep_until: jti.map(|(_, until)| until.as_second()),
                    finished,
                })
                .await;
        }
        let remember = sql(
            self,
            "INSERT INTO fire_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        );
        let advance = sql(
            self,
            "UPDATE jobs SET next_run_at = $2, state = $3, updated_at = $4 \
             WHERE id = $1 AND next_run_at = $5 AND enabled = 1 AND state = 'scheduled'",
        );
        let open = sql(
            self,
            "INSERT INTO runs (id, job_id, scheduled_for, started_at, status, lease_until, owner, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job_id, scheduled_for) DO NOTHING",
        );

        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if let Some((jti, until)) = jti {
                let fresh = sqlx::query(remember)
                    .bind(jti)
                    .bind(until.as_second())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if fresh == 0 {
                    return Ok(ClaimOutcome::Replayed);
                }
            }
            let moved = sqlx::query(advance)
                .bind(&run.job_id)
                .bind(next.map(|t| t.as_second()))
                .bind(state.as_str())
                .bind(run.started_at.as_second())
                .bind(run.scheduled_for.as_second())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if moved == 0 {
                tx.commit().await?;
                return Ok(ClaimOutcome::Lost);
            }
            let opened = sqlx::query(open)
                .bind(&run.id)
                .bind(&run.job_id)
                .bind(run.scheduled_for.as_second())
                .bind(run.started_at.as_second())
                .bind(status.as_str())
                .bind(run.lease_until.as_second())
                .bind(&run.owner)
                .bind(finished)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if opened == 0 {
                tx.commit().await?;
                return Ok(ClaimOutcome::Lost);
            }
            tx.commit().await?;
            Ok(ClaimOutcome::Claimed)
        })
    }

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
        Ok(if n == 1 {
            ClaimOutcome::Claimed
        } else {
            ClaimOutcome::Lost
        })
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
        let end = sql(
            self,
            "UPDATE runs SET status = $2, finished_at = $3, output = $4, error = $5 WHERE id = $1 AND status = 'running' AND owner = $6",
        );
        let job = sql(
            self,
            "UPDATE jobs SET last_run_at = $2, last_status = $3, last_error = $4, \
             repeat_completed = repeat_completed + $5, state = COALESCE($6, state), updated_at = $7 WHERE id = $1",
        );
        let finished_at = run.finished_at.unwrap_or(run.started_at).as_second();
        let done = i64::from(matches!(
            run.status,
            RunStatus::Completed | RunStatus::Failed
        ));
        if let Store::Sqlite(pools) = self {
            return pools
                .batch
                .finish(FinishArgs {
                    run: run.id.clone(),
                    owner: owner.to_owned(),
                    status: run.status.as_str(),
                    finished_at,
                    output: run.output.clone(),
                    error: run.error.clone(),
                    job: run.job_id.clone(),
                    started_at: run.started_at.as_second(),
                    done,
                    job_state: finish_job.map(JobState::as_str),
                })
                .await;
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let ended = sqlx::query(end)
                .bind(&run.id)
                .bind(run.status.as_str())
                .bind(finished_at)
                .bind(&run.output)
                .bind(&run.error)
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if ended == 0 {
                // Already ended elsewhere (lease expired and swept): keep that record.
                return Ok(false);
            }
            sqlx::query(job)
                .bind(&run.job_id)
                .bind(run.started_at.as_second())
                .bind(run.status.as_str())
                .bind(&run.error)
                .bind(done)
                .bind(finish_job.map(JobState::as_str))
                .bind(finished_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
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

    /// When the earliest scheduled job is due (the ticker sleeps until then at most).
    pub async fn next_due_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let q = sql(
            self,
            "SELECT MIN(next_run_at) FROM jobs WHERE enabled = 1 AND state = 'scheduled'",
        );
        let secs: Option<i64> =
            on_read_pool!(self, pool => sqlx::query_scalar(q).fetch_one(pool).await?);
        opt_ts(secs)
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
