//! Jobs: insert, update, read, delete, and the due scan the ticker runs (enabled,
//! scheduled jobs whose slot has come, oldest first, by index).

use std::collections::HashSet;

use jiff::Timestamp;

use super::rows::{job_from_row, opt_ts, select_jobs};
use super::{Store, StoreError, on_pool, on_read_pool, sql};
use crate::job::Job;

/// The jobs with a running run under a live lease at `$2`, among some (a condition follows).
macro_rules! live_runs {
    () => {
        "SELECT DISTINCT job_id FROM runs WHERE status = 'running' AND lease_until > $2 AND "
    };
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

    /// Which of `job_ids` have a run still running under a live lease at `now` (the
    /// overlap check of a batch of claims, in one query).
    pub async fn running_jobs(
        &self,
        job_ids: &[String],
        now: Timestamp,
    ) -> Result<HashSet<String>, StoreError> {
        let ids = match self {
            Store::Sqlite(pools) => {
                let q = sql(
                    self,
                    concat!(live_runs!(), "job_id IN (SELECT value FROM json_each($1))"),
                );
                let list =
                    serde_json::to_string(job_ids).map_err(|e| StoreError::Query(e.to_string()))?;
                sqlx::query_scalar(q)
                    .bind(list)
                    .bind(now.as_second())
                    .fetch_all(pools.reader())
                    .await?
            }
            Store::Postgres(pool) => {
                sqlx::query_scalar(concat!(live_runs!(), "job_id = ANY($1)"))
                    .bind(job_ids)
                    .bind(now.as_second())
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(ids.into_iter().collect())
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
}
