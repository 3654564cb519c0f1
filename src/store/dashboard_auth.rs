//! Dashboard sessions and WebSocket tickets: rows keyed by SHA-256 digests of the secrets
//! (the store never holds a usable cookie or ticket). A ticket is redeemed with a
//! compare-and-swap, so it works once on any replica and never twice anywhere.

use jiff::Timestamp;
use rusqlite::params;
use sqlx::Row;

use super::sqlite_inline::Attempt;
use super::{Store, StoreError, on_pool, on_read_pool, sql};

/// A live session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub principal: String,
    pub provider: String,
    pub expires_at: Timestamp,
}

/// What redeeming a ticket found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// Redeemed now: the session it was minted for, and that session as stored if it is
    /// still live (`None` when it ended, or was never a stored session: loopback mode).
    Redeemed {
        session_hash: String,
        live: Option<StoredSession>,
    },
    Unknown,
    AlreadyUsed,
    Expired,
}

impl Store {
    pub async fn insert_session(
        &self,
        id_hash: &str,
        session: &StoredSession,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let q = sql(
            self,
            "INSERT INTO sessions (id_hash, principal, provider, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        );
        let sweep = sql(self, "DELETE FROM sessions WHERE expires_at < $1");
        on_pool!(self, pool => {
            sqlx::query(sweep).bind(now.as_second()).execute(pool).await?;
            sqlx::query(q)
                .bind(id_hash)
                .bind(&session.principal)
                .bind(&session.provider)
                .bind(now.as_second())
                .bind(session.expires_at.as_second())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The session if it exists, is not revoked and has not expired at `now`.
    pub async fn live_session(
        &self,
        id_hash: &str,
        now: Timestamp,
    ) -> Result<Option<StoredSession>, StoreError> {
        if let Some(inline) = self.inline()
            && let Attempt::Done(found) =
                inline.query_row(LIVE_SESSION, params![id_hash, now.as_second()], |r| {
                    Ok(stored_session(r.get(0)?, r.get(1)?, r.get(2)?)?)
                })
        {
            return found;
        }
        let q = sql(self, LIVE_SESSION);
        on_read_pool!(self, pool => {
            let row = sqlx::query(q).bind(id_hash).bind(now.as_second()).fetch_optional(pool).await?;
            row.map(|r| stored_session(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)).transpose()
        })
    }

    /// Ends a session (logout); false if it was not live.
    pub async fn revoke_session(&self, id_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
        let q = sql(
            self,
            "UPDATE sessions SET revoked_at = $2 WHERE id_hash = $1 AND revoked_at IS NULL",
        );
        Ok(on_pool!(self, pool => {
            sqlx::query(q).bind(id_hash).bind(now.as_second()).execute(pool).await?.rows_affected()
        }) == 1)
    }

    /// Stores a ticket bound to `session_hash` as it is (loopback mode: no stored session).
    pub async fn insert_ticket(
        &self,
        ticket_hash: &str,
        session_hash: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        const INSERT: &str = "INSERT INTO ws_tickets (ticket_hash, session_hash, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)";
        if let Some(inline) = self.inline()
            && let Attempt::Done(done) = inline.execute(
                INSERT,
                params![ticket_hash, session_hash, now_ms, expires_at_ms],
            )
        {
            return done.map(drop);
        }
        on_pool!(self, pool => {
            sqlx::query(sql(self, INSERT))
                .bind(ticket_hash)
                .bind(session_hash)
                .bind(now_ms)
                .bind(expires_at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Stores a ticket bound to the stored session `session_hash` only if that session is
    /// live at `now_ms` (one statement: a session revoked on any replica, even a moment
    /// ago, mints nothing); false if it is not.
    pub async fn insert_session_ticket(
        &self,
        ticket_hash: &str,
        session_hash: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, StoreError> {
        const INSERT: &str = "INSERT INTO ws_tickets (ticket_hash, session_hash, created_at_ms, expires_at_ms) \
             SELECT $1, id_hash, $3, $4 FROM sessions \
             WHERE id_hash = $2 AND revoked_at IS NULL AND expires_at > $5";
        let now = now_ms.div_euclid(1000);
        if let Some(inline) = self.inline()
            && let Attempt::Done(done) = inline.execute(
                INSERT,
                params![ticket_hash, session_hash, now_ms, expires_at_ms, now],
            )
        {
            return done.map(|inserted| inserted == 1);
        }
        let inserted = on_pool!(self, pool => {
            sqlx::query(sql(self, INSERT))
                .bind(ticket_hash)
                .bind(session_hash)
                .bind(now_ms)
                .bind(expires_at_ms)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Forgets tickets that expired before `before_ms` (of no use, not even to say why a
    /// redemption failed).
    pub async fn sweep_tickets(&self, before_ms: i64) -> Result<u64, StoreError> {
        let q = sql(self, "DELETE FROM ws_tickets WHERE expires_at_ms < $1");
        Ok(on_pool!(self, pool => {
            sqlx::query(q).bind(before_ms).execute(pool).await?.rows_affected()
        }))
    }

    /// Redeems a ticket once: marks it used only if unused and not expired at `now_ms`
    /// (valid up to and including its expiry), and reads the session it is bound to in the
    /// same statement (one round trip; a ticket of an ended session is used up all the same).
    pub async fn redeem_ticket(
        &self,
        ticket_hash: &str,
        now_ms: i64,
    ) -> Result<Redemption, StoreError> {
        let now = now_ms.div_euclid(1000);
        if let Some(inline) = self.inline()
            && let Attempt::Done(done) =
                inline.write_row(REDEEM, params![ticket_hash, now_ms, now], |r| {
                    Ok(redeemed(r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))?)
                })
        {
            if let Some(redemption) = done? {
                return Ok(redemption);
            }
            if let Attempt::Done(why) =
                inline.query_row(WHY_NOT, params![ticket_hash], |r| Ok(r.get(0)?))
            {
                return why.map(why_not);
            }
        }
        on_pool!(self, pool => {
            let row = sqlx::query(sql(self, REDEEM))
                .bind(ticket_hash)
                .bind(now_ms)
                .bind(now)
                .fetch_optional(pool)
                .await?;
            if let Some(r) = row {
                return redeemed(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
            }
            let row = sqlx::query(sql(self, WHY_NOT)).bind(ticket_hash).fetch_optional(pool).await?;
            Ok(why_not(row.map(|r| r.try_get(0)).transpose()?))
        })
    }
}

/// A live session's row: principal, provider, expiry.
const LIVE_SESSION: &str = "SELECT principal, provider, expires_at FROM sessions \
     WHERE id_hash = $1 AND revoked_at IS NULL AND expires_at > $2";

/// Why a ticket was not redeemed: whether it was used (its row, if there is one).
const WHY_NOT: &str = "SELECT used_at_ms FROM ws_tickets WHERE ticket_hash = $1";

/// What [`WHY_NOT`] found: no row (never minted, or swept), or the ticket's `used_at_ms`.
fn why_not(row: Option<Option<i64>>) -> Redemption {
    match row {
        None => Redemption::Unknown,
        Some(Some(_)) => Redemption::AlreadyUsed,
        Some(None) => Redemption::Expired,
    }
}

fn stored_session(
    principal: String,
    provider: String,
    expires: i64,
) -> Result<StoredSession, StoreError> {
    Ok(StoredSession {
        principal,
        provider,
        expires_at: Timestamp::from_second(expires)
            .map_err(|e| StoreError::Corrupt(format!("session expiry {expires}: {e}")))?,
    })
}

/// The compare-and-swap that redeems a ticket, returning the bound session's fields when
/// it is live at `$3` (Unix seconds). Scalar subqueries, since both SQLite and PostgreSQL
/// let `RETURNING` read other tables only that way.
const REDEEM: &str = "UPDATE ws_tickets SET used_at_ms = $2 \
     WHERE ticket_hash = $1 AND used_at_ms IS NULL AND expires_at_ms >= $2 \
     RETURNING session_hash, \
       (SELECT principal FROM sessions s WHERE s.id_hash = ws_tickets.session_hash \
          AND s.revoked_at IS NULL AND s.expires_at > $3) AS principal, \
       (SELECT provider FROM sessions s WHERE s.id_hash = ws_tickets.session_hash \
          AND s.revoked_at IS NULL AND s.expires_at > $3) AS provider, \
       (SELECT expires_at FROM sessions s WHERE s.id_hash = ws_tickets.session_hash \
          AND s.revoked_at IS NULL AND s.expires_at > $3) AS session_expires_at";

/// What the compare-and-swap returned: the session hash, and the session's principal,
/// provider and expiry (all `NULL` unless it is live).
fn redeemed(
    session_hash: String,
    (principal, provider, expires): (Option<String>, Option<String>, Option<i64>),
) -> Result<Redemption, StoreError> {
    let live = match (principal, provider, expires) {
        (Some(principal), Some(provider), Some(expires)) => {
            Some(stored_session(principal, provider, expires)?)
        }
        _ => None,
    };
    Ok(Redemption::Redeemed { session_hash, live })
}
