//! Accepted fire-token ids (`jti`): the replay guard of `POST /api/cron/fire`, in the store
//! so every replica sees every token. Ids are recorded by [`Store::claim_slot`], in the
//! claim's own transaction: a fire refused before its claim (draining, not due, a store
//! outage) uses up nothing.

use jiff::Timestamp;

use super::{Store, StoreError, on_pool, sql};

impl Store {
    /// Forgets the ids whose tokens expired (plus leeway) before `now`.
    pub async fn sweep_fire_tokens(&self, now: Timestamp) -> Result<u64, StoreError> {
        let q = sql(self, "DELETE FROM fire_tokens WHERE expires_at < $1");
        Ok(on_pool!(self, pool => {
            sqlx::query(q).bind(now.as_second()).execute(pool).await?.rows_affected()
        }))
    }
}
