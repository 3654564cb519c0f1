//! Accepted fire-token ids (`jti`): the replay guard of `POST /api/cron/fire`, in the store
//! so every replica sees every token. Ids are recorded with every final answer — by
//! [`Store::claim_slot`] in the claim's own transaction, or alone when nothing is claimed —
//! and never for a fire refused with a 503 (draining, a store outage), whose retry must work.
//! [`Store::fire_view`] is what a fire reads before it writes anything: a replay is answered
//! from that read, without a write.

use jiff::Timestamp;
use rusqlite::params;

use super::rows::{job_from_row, select_jobs};
use super::sqlite_inline::{Attempt, execute_on};
use super::sqlite_writer::Write;
use super::{Store, StoreError, on_pool, on_read_pool, sql};
use crate::job::Job;

/// What a fire finds in the store before it claims anything, in one read.
#[derive(Debug, Clone, PartialEq)]
pub struct FireView {
    /// The fired job; `None` when there is no such job.
    pub job: Option<Job>,
    /// A run of the job still holds a live lease (overlap: its next slot is skipped).
    pub running: bool,
    /// The token's id is recorded already: the fire is a replay.
    pub token_seen: bool,
}

impl Store {
    /// Reads, in one query on the read side, the job `job_id`, whether a run of it still
    /// holds a lease at `now`, and whether `jti` was recorded (any replica's). Only a
    /// read: the claim still records the id and still detects a replay that races this.
    pub async fn fire_view(
        &self,
        job_id: &str,
        jti: Option<&str>,
        now: Timestamp,
    ) -> Result<FireView, StoreError> {
        if let Some(inline) = self.inline()
            && let Attempt::Done(view) =
                inline.query_row(FIRE_VIEW, params![job_id, jti, now.as_second()], |row| {
                    Ok(fire_view_from_row!(row))
                })
        {
            return view?.ok_or_else(|| StoreError::Query("the fire view read no row".into()));
        }
        on_read_pool!(self, pool => {
            let row = sqlx::query(sql(self, FIRE_VIEW))
                .bind(job_id)
                .bind(jti)
                .bind(now.as_second())
                .fetch_one(pool)
                .await?;
            Ok(fire_view_from_row!(&row))
        })
    }

    /// Records `jti` as used until `until`; false if it was already recorded (a replay).
    /// On SQLite group-committed with the claims.
    pub async fn remember_jti(&self, jti: &str, until: Timestamp) -> Result<bool, StoreError> {
        let pool = match self {
            Store::Sqlite(pools) => {
                let record = Remember {
                    jti: jti.to_owned(),
                    until: until.as_second(),
                };
                return pools.batch.write(record).await;
            }
            Store::Postgres(pool) => pool,
        };
        let n = sqlx::query(RECORD_TOKEN)
            .bind(jti)
            .bind(until.as_second())
            .execute(pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Forgets the ids whose tokens expired (plus leeway) before `now`.
    pub async fn sweep_fire_tokens(&self, now: Timestamp) -> Result<u64, StoreError> {
        let q = sql(self, "DELETE FROM fire_tokens WHERE expires_at < $1");
        Ok(on_pool!(self, pool => {
            sqlx::query(q).bind(now.as_second()).execute(pool).await?.rows_affected()
        }))
    }
}

/// The fired job (`$1`), whether one of its runs holds a lease at `$3`, and whether the
/// token id `$2` was recorded: always one row.
const FIRE_VIEW: &str = concat!(
    "SELECT o.busy, o.seen, j.* FROM (SELECT EXISTS (SELECT 1 FROM runs r \
     WHERE r.job_id = $1 AND r.status = 'running' AND r.lease_until > $3) AS busy, \
     EXISTS (SELECT 1 FROM fire_tokens t WHERE t.jti = $2) AS seen) AS o \
     LEFT JOIN (",
    select_jobs!(),
    " WHERE id = $1) AS j ON true"
);

/// A [`FireView`] from the row of [`FIRE_VIEW`] (an sqlx row or an inline one).
macro_rules! fire_view_from_row {
    ($row:expr) => {{
        #[allow(unused_imports)]
        use super::rows::InlineRow as _;
        #[allow(unused_imports)]
        use sqlx::Row as _;
        let row = $row;
        FireView {
            job: match row.try_get::<Option<String>, _>("id")? {
                Some(_) => Some(job_from_row!(row)),
                None => None,
            },
            running: row.try_get("busy")?,
            token_seen: row.try_get("seen")?,
        }
    }};
}
use fire_view_from_row;

/// Records a token's id (`$1`) as used until `$2`; changes no row for an id seen before.
pub(super) const RECORD_TOKEN: &str =
    "INSERT INTO fire_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING";

/// A token id recorded on its own (a fire that claims nothing), as an op of the SQLite
/// writer's group commit: whether it was new.
#[derive(Debug)]
struct Remember {
    jti: String,
    until: i64,
}

impl Write for Remember {
    type Output = bool;

    fn apply(&self, conn: &rusqlite::Connection) -> Result<bool, StoreError> {
        Ok(execute_on(conn, RECORD_TOKEN, params![self.jti, self.until])? == 1)
    }
}
