//! Stored chat sessions (table `chat_sessions`, apart from the dashboard's sign-in
//! `sessions`): a conversation's messages in order, appended one completed turn at a time
//! and bounded twice — the oldest messages of a session past its bound, the least recently
//! updated sessions past theirs. The rules of which session a request belongs to live in
//! `crate::sessions`; this only reads and writes.
//!
//! An append is one transaction that takes the session's row lock (`UPDATE ... RETURNING
//! next_seq`) before it writes, so two replicas appending to one session at once each get
//! their own positions.

use jiff::Timestamp;
use sqlx::Row;

use super::{Store, StoreError, on_pool, on_read_pool, sql};
use crate::agent::Message;

/// A stored session, without its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatSession {
    pub id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub message_count: u64,
}

/// A stored session with its messages, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChat {
    pub session: ChatSession,
    pub messages: Vec<Message>,
}

/// One turn to append: `seed` is written first only when the turn creates the session
/// (the earlier messages a client sent along), `messages` always (the turn's own).
#[derive(Debug, Clone, Copy)]
pub struct ChatAppend<'a> {
    pub id: &'a str,
    pub seed: &'a [Message],
    pub messages: &'a [Message],
    /// Most messages the session keeps; older ones are dropped.
    pub max_messages: u64,
}

fn millis(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms)
        .map_err(|e| StoreError::Corrupt(format!("chat session time {ms}: {e}")))
}

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("chat session count {n}")))
}

/// A [`ChatSession`] from a row of its four columns (a macro: one body reads an
/// SQLite row and a PostgreSQL row alike).
macro_rules! session_from_row {
    ($row:expr) => {{
        let row = $row;
        ChatSession {
            id: row.try_get("id")?,
            created_at: millis(row.try_get("created_at_ms")?)?,
            updated_at: millis(row.try_get("updated_at_ms")?)?,
            message_count: count(row.try_get("message_count")?)?,
        }
    }};
}

impl Store {
    /// The session and its messages, if it is stored.
    pub async fn chat_session(&self, id: &str) -> Result<Option<StoredChat>, StoreError> {
        let one = sql(
            self,
            "SELECT id, created_at_ms, updated_at_ms, message_count FROM chat_sessions WHERE id = $1",
        );
        let messages = sql(
            self,
            "SELECT role, content FROM chat_session_messages WHERE session_id = $1 ORDER BY seq",
        );
        on_read_pool!(self, pool => {
            let Some(row) = sqlx::query(one).bind(id).fetch_optional(pool).await? else {
                return Ok(None);
            };
            let session = session_from_row!(&row);
            let rows = sqlx::query(messages).bind(id).fetch_all(pool).await?;
            let messages = rows
                .iter()
                .map(|r| Ok(Message { role: r.try_get("role")?, content: r.try_get("content")? }))
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Some(StoredChat { session, messages }))
        })
    }

    /// Every stored session, the most recently updated first.
    pub async fn list_chat_sessions(&self) -> Result<Vec<ChatSession>, StoreError> {
        let q = sql(
            self,
            "SELECT id, created_at_ms, updated_at_ms, message_count FROM chat_sessions \
             ORDER BY updated_at_ms DESC, id DESC",
        );
        on_read_pool!(self, pool => {
            let rows = sqlx::query(q).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(session_from_row!(row));
            }
            Ok(out)
        })
    }

    /// Forgets a session and its messages; false if it was not stored.
    pub async fn delete_chat_session(&self, id: &str) -> Result<bool, StoreError> {
        let q = sql(self, "DELETE FROM chat_sessions WHERE id = $1");
        Ok(on_pool!(self, pool => {
            sqlx::query(q).bind(id).execute(pool).await?.rows_affected()
        }) == 1)
    }

    /// Appends one turn's messages at `now`, creating the session if it is not stored (then
    /// with `seed` first), and drops its oldest messages past `max_messages`. Returns
    /// whether the session was created.
    pub async fn append_chat_turn(
        &self,
        turn: ChatAppend<'_>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let create = sql(
            self,
            "INSERT INTO chat_sessions (id, created_at_ms, updated_at_ms, next_seq, message_count) \
             VALUES ($1, $2, $2, 0, 0) ON CONFLICT (id) DO NOTHING",
        );
        // The session's row lock, its positions and its count (messages are only appended
        // and the oldest trimmed, so the count is the bound at most).
        let advance = sql(
            self,
            "UPDATE chat_sessions SET next_seq = next_seq + $2, updated_at_ms = $3, \
             message_count = CASE WHEN message_count + $2 > $4 THEN $4 ELSE message_count + $2 END \
             WHERE id = $1 RETURNING next_seq",
        );
        const INSERT: &str = "INSERT INTO chat_session_messages (session_id, seq, role, content) VALUES ($1, $2, $3, $4)";
        let trim = sql(
            self,
            "DELETE FROM chat_session_messages WHERE session_id = $1 AND seq < $2",
        );
        let now = now.as_millisecond();
        let max = i64::try_from(turn.max_messages).unwrap_or(i64::MAX);
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let created = sqlx::query(create).bind(turn.id).bind(now).execute(&mut *tx).await?.rows_affected() == 1;
            let seed: &[Message] = if created { turn.seed } else { &[] };
            let written: Vec<&Message> = seed.iter().chain(turn.messages).collect();
            let n = i64::try_from(written.len()).unwrap_or(i64::MAX);
            let end: i64 = sqlx::query_scalar(advance)
                .bind(turn.id).bind(n).bind(now).bind(max)
                .fetch_one(&mut *tx).await?;
            for (seq, m) in (end - n..).zip(&written) {
                sqlx::query(sql(self, INSERT)).bind(turn.id).bind(seq).bind(&m.role).bind(&m.content).execute(&mut *tx).await?;
            }
            if end > max {
                sqlx::query(trim).bind(turn.id).bind(end - max).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(created)
        })
    }

    /// Drops the least recently updated sessions (with their messages) until at most
    /// `keep` are stored; returns how many were dropped.
    pub async fn evict_chat_sessions(&self, keep: u64) -> Result<u64, StoreError> {
        let total = sql(self, "SELECT COUNT(*) FROM chat_sessions");
        let evict = sql(
            self,
            "DELETE FROM chat_sessions WHERE id IN \
             (SELECT id FROM chat_sessions ORDER BY updated_at_ms, id LIMIT $1)",
        );
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        on_pool!(self, pool => {
            let stored: i64 = sqlx::query_scalar(total).fetch_one(pool).await?;
            if stored <= keep {
                return Ok(0);
            }
            let dropped = sqlx::query(evict).bind(stored - keep).execute(pool).await?.rows_affected();
            Ok(dropped)
        })
    }
}
