//! Accepted fire-token ids (`jti`): the replay guard of `POST /api/cron/fire`, in the store
//! so every replica sees every token. Ids are recorded with every final answer — by
//! [`Store::claim_slot`] in the claim's own transaction, or alone when nothing is claimed —
//! and never for a fire refused with a 503 (draining, a store outage), whose retry must work.

use jiff::Timestamp;

use super::{Store, StoreError, on_pool, sql};

impl Store {
    /// Records `jti` as used until `until`; false if it was already recorded (a replay).
    pub async fn remember_jti(&self, jti: &str, until: Timestamp) -> Result<bool, StoreError> {
        let q = sql(
            self,
            "INSERT INTO fire_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        );
        Ok(on_pool!(self, pool => {
            sqlx::query(q).bind(jti).bind(until.as_second()).execute(pool).await?.rows_affected()
        }) == 1)
    }

    /// Forgets the ids whose tokens expired (plus leeway) before `now`.
    pub async fn sweep_fire_tokens(&self, now: Timestamp) -> Result<u64, StoreError> {
        let q = sql(self, "DELETE FROM fire_tokens WHERE expires_at < $1");
        Ok(on_pool!(self, pool => {
            sqlx::query(q).bind(now.as_second()).execute(pool).await?.rows_affected()
        }))
    }
}
