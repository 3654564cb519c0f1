//! Asynchronous runs (`POST /v1/runs`, SPEC §11; cron's runs are `runs`): the run rows and
//! their event log. Every write to a running run is conditional on its `owner` and on it
//! still running, so a run is ended once, by the process that runs it — or, once its lease
//! has run out, by whichever process finds it dead. Times are Unix milliseconds.

use sqlx::Row;

use super::{Store, StoreError, on_pool, on_read_pool, sql};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRunStatus {
    Running,
    Completed,
    Failed,
    /// Stopped by `POST /v1/runs/{id}/stop`.
    Cancelled,
    /// Cut by a shutdown, or its process died.
    Interrupted,
}

impl AgentRunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "interrupted" => Self::Interrupted,
            _ => return None,
        })
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRun {
    pub id: String,
    pub session_id: String,
    pub model: String,
    pub status: AgentRunStatus,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_event: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub lease_until_ms: i64,
    pub stop_requested: bool,
}

/// A run's progress since its last sync: the events `first_seq..` to add, and what its
/// row then says.
#[derive(Debug, Clone)]
pub struct RunProgress<'a> {
    pub id: &'a str,
    pub owner: &'a str,
    pub first_seq: i64,
    pub events: &'a [std::sync::Arc<str>],
    pub last_event: Option<&'a str>,
    /// When its latest event happened.
    pub updated_at_ms: i64,
    pub lease_until_ms: i64,
}

/// A run's end: its last events and outcome.
#[derive(Debug, Clone)]
pub struct RunEnd<'a> {
    pub progress: RunProgress<'a>,
    pub status: AgentRunStatus,
    pub output: &'a str,
    pub error: Option<&'a str>,
}

/// What a sync found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Still ours; whether another replica asked for a stop.
    Held { stop_requested: bool },
    /// No longer ours to write (found dead and ended elsewhere).
    Lost,
}

/// The run columns `agent_run` reads.
macro_rules! select_agent_runs {
    () => {
        "SELECT id, session_id, model, status, created_at_ms, updated_at_ms, last_event, output, error, lease_until_ms, stop_requested FROM agent_runs"
    };
}

/// Adds one event (a retried sync may add one again: kept once).
const ADD_EVENT: &str = "INSERT INTO agent_run_events (run_id, seq, body) VALUES ($1, $2, $3) ON CONFLICT (run_id, seq) DO NOTHING";

impl Store {
    /// Records a new running run held by `owner`, then forgets the ended runs older than
    /// the newest `keep` runs (with their events).
    pub async fn insert_agent_run(
        &self,
        run: &AgentRun,
        owner: &str,
        keep: usize,
    ) -> Result<(), StoreError> {
        let insert = sql(
            self,
            "INSERT INTO agent_runs (id, session_id, model, status, created_at_ms, updated_at_ms, owner, lease_until_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        );
        let prune = sql(
            self,
            "DELETE FROM agent_runs WHERE status <> 'running' AND created_at_ms <= \
             (SELECT created_at_ms FROM agent_runs ORDER BY created_at_ms DESC LIMIT 1 OFFSET $1)",
        );
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        on_pool!(self, pool => {
            sqlx::query(insert)
                .bind(&run.id)
                .bind(&run.session_id)
                .bind(&run.model)
                .bind(run.status.as_str())
                .bind(run.created_at_ms)
                .bind(run.updated_at_ms)
                .bind(owner)
                .bind(run.lease_until_ms)
                .execute(pool)
                .await?;
            sqlx::query(prune).bind(keep).execute(pool).await?;
        });
        Ok(())
    }

    pub async fn agent_run(&self, id: &str) -> Result<Option<AgentRun>, StoreError> {
        let q = sql(self, concat!(select_agent_runs!(), " WHERE id = $1"));
        on_read_pool!(self, pool => {
            let row = sqlx::query(q).bind(id).fetch_optional(pool).await?;
            row.map(|r| {
                let status: String = r.try_get("status")?;
                Ok(AgentRun {
                    id: r.try_get("id")?,
                    session_id: r.try_get("session_id")?,
                    model: r.try_get("model")?,
                    status: AgentRunStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    updated_at_ms: r.try_get("updated_at_ms")?,
                    last_event: r.try_get("last_event")?,
                    output: r.try_get("output")?,
                    error: r.try_get("error")?,
                    lease_until_ms: r.try_get("lease_until_ms")?,
                    stop_requested: r.try_get::<i64, _>("stop_requested")? != 0,
                })
            })
            .transpose()
        })
    }

    /// Up to `limit` events of run `id` from `from_seq` on, in order: `(seq, body)`.
    pub async fn agent_run_events(
        &self,
        id: &str,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let q = sql(
            self,
            "SELECT seq, body FROM agent_run_events WHERE run_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
        );
        on_read_pool!(self, pool => {
            let rows = sqlx::query(q).bind(id).bind(from_seq).bind(limit).fetch_all(pool).await?;
            rows.iter().map(|r| Ok((r.try_get("seq")?, r.try_get("body")?))).collect()
        })
    }

    /// Adds a running run's new events and renews its lease, if `owner` still holds it.
    pub async fn sync_agent_run(&self, p: &RunProgress<'_>) -> Result<Synced, StoreError> {
        let renew = sql(
            self,
            "UPDATE agent_runs SET lease_until_ms = $3, updated_at_ms = $4, last_event = COALESCE($5, last_event) \
             WHERE id = $1 AND owner = $2 AND status = 'running' RETURNING stop_requested",
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = sqlx::query(renew)
                .bind(p.id)
                .bind(p.owner)
                .bind(p.lease_until_ms)
                .bind(p.updated_at_ms)
                .bind(p.last_event)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                return Ok(Synced::Lost);
            };
            let stop_requested = row.try_get::<i64, _>("stop_requested")? != 0;
            for (seq, body) in (p.first_seq..).zip(p.events) {
                sqlx::query(sql(self, ADD_EVENT)).bind(p.id).bind(seq).bind(&**body).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Synced::Held { stop_requested })
        })
    }

    /// Records a run's end with its last events, if `owner` still holds it; false when it
    /// does not (it was found dead and ended elsewhere).
    pub async fn finish_agent_run(&self, end: &RunEnd<'_>) -> Result<bool, StoreError> {
        let p = &end.progress;
        let finish = sql(
            self,
            "UPDATE agent_runs SET status = $3, output = $4, error = $5, updated_at_ms = $6, \
             last_event = COALESCE($7, last_event) WHERE id = $1 AND owner = $2 AND status = 'running'",
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(finish)
                .bind(p.id)
                .bind(p.owner)
                .bind(end.status.as_str())
                .bind(end.output)
                .bind(end.error)
                .bind(p.updated_at_ms)
                .bind(p.last_event)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            for (seq, body) in (p.first_seq..).zip(p.events) {
                sqlx::query(sql(self, ADD_EVENT)).bind(p.id).bind(seq).bind(&**body).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Asks the owner of a running run to stop it (it sees the request at its next sync);
    /// false when the run is not running.
    pub async fn request_agent_run_stop(&self, id: &str) -> Result<bool, StoreError> {
        let q = sql(
            self,
            "UPDATE agent_runs SET stop_requested = 1 WHERE id = $1 AND status = 'running'",
        );
        Ok(on_pool!(self, pool => {
            sqlx::query(q).bind(id).execute(pool).await?.rows_affected()
        }) == 1)
    }

    /// Records a running run whose lease ran out before `now_ms` interrupted, `error`
    /// saying why and `event(seq)` (named `last_event`) as its last event; false when it is
    /// not such a run.
    pub async fn expire_agent_run(
        &self,
        id: &str,
        now_ms: i64,
        error: &str,
        last_event: &str,
        event: impl FnOnce(i64) -> String + Send,
    ) -> Result<bool, StoreError> {
        let end = sql(
            self,
            "UPDATE agent_runs SET status = 'interrupted', error = $3, updated_at_ms = $2, last_event = $4, \
             output = COALESCE(output, '') WHERE id = $1 AND status = 'running' AND lease_until_ms < $2",
        );
        let next = sql(
            self,
            "SELECT COALESCE(MAX(seq) + 1, 0) AS next FROM agent_run_events WHERE run_id = $1",
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(end).bind(id).bind(now_ms).bind(error).bind(last_event).execute(&mut *tx).await?.rows_affected();
            if n != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            let seq: i64 = sqlx::query(next).bind(id).fetch_one(&mut *tx).await?.try_get("next")?;
            sqlx::query(sql(self, ADD_EVENT)).bind(id).bind(seq).bind(event(seq)).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
