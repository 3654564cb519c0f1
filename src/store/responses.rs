//! Stored Responses API responses and named conversations (SPEC §11): what a response
//! naming one as `previous_response_id`, or a conversation's next turn, continues from, on
//! any replica. The store keeps the text it is given (the response and its history as
//! JSON, which `responses` writes and reads) and bounds the table: each write drops the
//! least recently used responses beyond the bound, and a conversation goes with the
//! response it points at.

use sqlx::Row;

use super::{Store, StoreError, on_pool, sql};

/// A [`StoredResponse`] from a row of `RETURNING id, body, history, session_id` (a macro:
/// one body reads an SQLite row and a PostgreSQL row alike).
macro_rules! stored {
    ($row:expr) => {{
        let r = $row;
        Ok::<_, StoreError>(StoredResponse {
            id: r.try_get("id")?,
            body: r.try_get("body")?,
            history: r.try_get("history")?,
            session_id: r.try_get("session_id")?,
        })
    }};
}

/// A response to keep.
#[derive(Debug, Clone, Copy)]
pub struct NewResponse<'a> {
    pub id: &'a str,
    /// The response as answered (JSON).
    pub body: &'a str,
    /// The conversation through this response (JSON).
    pub history: &'a str,
    pub session_id: &'a str,
    /// Unix seconds.
    pub created_at: i64,
    /// The conversation that now points at this response.
    pub conversation: Option<&'a str>,
}

/// A stored response, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub id: String,
    pub body: String,
    pub history: String,
    pub session_id: String,
}

impl Store {
    /// Keeps `response` (used at `now_ms`), points its conversation at it, and drops the
    /// least recently used responses beyond `max` (at least the new one stays), in one
    /// transaction. The count comes from `response_counts`; past the bound the eviction
    /// takes [`EVICTION_SLACK`] more, so a store at its bound evicts once per that many
    /// writes rather than on every one.
    pub async fn put_response(
        &self,
        response: &NewResponse<'_>,
        max: u64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let insert = sql(
            self,
            "INSERT INTO responses (id, body, history, session_id, created_at, accessed_at) \
             VALUES ($1, $2, $3, $4, $5, (SELECT CASE WHEN COALESCE(MAX(accessed_at), 0) >= $6 \
             THEN MAX(accessed_at) + 1 ELSE $6 END FROM responses))",
        );
        let point = sql(
            self,
            "INSERT INTO response_conversations (name, response_id, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET response_id = excluded.response_id, updated_at = excluded.updated_at",
        );
        let counted = || {
            sql(
                self,
                "UPDATE response_counts SET stored = stored + $2 WHERE shard = $1",
            )
        };
        let count = sql(
            self,
            "SELECT CAST(SUM(stored) AS BIGINT) FROM response_counts",
        );
        let evict = sql(
            self,
            "DELETE FROM responses WHERE id IN \
             (SELECT id FROM responses ORDER BY accessed_at ASC, id ASC LIMIT $1)",
        );
        let max = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        let shard = shard(response.id);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(insert)
                .bind(response.id)
                .bind(response.body)
                .bind(response.history)
                .bind(response.session_id)
                .bind(response.created_at)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            if let Some(name) = response.conversation {
                sqlx::query(point)
                    .bind(name)
                    .bind(response.id)
                    .bind(now_ms / 1000)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(counted()).bind(shard).bind(1_i64).execute(&mut *tx).await?;
            let stored: i64 = sqlx::query_scalar(count).fetch_one(&mut *tx).await?;
            if stored > max {
                let excess = (stored - max + max / EVICTION_SLACK).min(stored - 1);
                let gone = sqlx::query(evict).bind(excess).execute(&mut *tx).await?.rows_affected();
                let gone = i64::try_from(gone).unwrap_or(i64::MAX);
                sqlx::query(counted()).bind(shard).bind(-gone).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The response `id`, marked used at `now_ms`; `None` if it is not stored.
    pub async fn use_response(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let q = sql(
            self,
            "UPDATE responses SET accessed_at = (SELECT CASE WHEN COALESCE(MAX(accessed_at), 0) >= $2 \
             THEN MAX(accessed_at) + 1 ELSE $2 END FROM responses) \
             WHERE id = $1 RETURNING id, body, history, session_id",
        );
        on_pool!(self, pool => {
            let row = sqlx::query(q).bind(id).bind(now_ms).fetch_optional(pool).await?;
            row.map(|r| stored!(r)).transpose()
        })
    }

    /// The latest response of the conversation `name`, marked used at `now_ms`; `None` for
    /// a conversation not (or no longer) stored.
    pub async fn use_conversation(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let q = sql(
            self,
            "UPDATE responses SET accessed_at = (SELECT CASE WHEN COALESCE(MAX(accessed_at), 0) >= $2 \
             THEN MAX(accessed_at) + 1 ELSE $2 END FROM responses) \
             WHERE id = (SELECT response_id FROM response_conversations WHERE name = $1) \
             RETURNING id, body, history, session_id",
        );
        on_pool!(self, pool => {
            let row = sqlx::query(q).bind(name).bind(now_ms).fetch_optional(pool).await?;
            row.map(|r| stored!(r)).transpose()
        })
    }

    /// Forgets the response `id` (and a conversation pointing at it); false if it was not
    /// stored.
    pub async fn delete_response(&self, id: &str) -> Result<bool, StoreError> {
        let q = sql(self, "DELETE FROM responses WHERE id = $1");
        let uncount = sql(
            self,
            "UPDATE response_counts SET stored = stored - 1 WHERE shard = $1",
        );
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let gone = sqlx::query(q).bind(id).execute(&mut *tx).await?.rows_affected() == 1;
            if gone {
                sqlx::query(uncount).bind(shard(id)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            gone
        }))
    }
}

/// Past the bound, an eviction also drops `max / EVICTION_SLACK` more (1 %), so a store at
/// its bound evicts about once per that many writes. Below 100 the bound is exact.
const EVICTION_SLACK: i64 = 100;

/// The `response_counts` row a response is counted in: from its id's bytes, so writers on
/// several replicas spread over the sixteen rows.
fn shard(id: &str) -> i64 {
    i64::from(id.bytes().fold(0u8, u8::wrapping_add) % 16)
}
