//! Accepted fire-token ids (`jti`): the replay guard of `POST /api/cron/fire`, in the store
//! so every replica sees every token.

use jiff::Timestamp;

use super::{Store, StoreError, on_pool, sql};

impl Store {
    /// Records `jti` as used until `until`; false if it was already recorded (a replay).
    /// Ids whose time is over are swept on the way.
    pub async fn remember_jti(
        &self,
        jti: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let sweep = sql(self, "DELETE FROM fire_tokens WHERE expires_at < $1");
        let insert = sql(
            self,
            "INSERT INTO fire_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        );
        on_pool!(self, pool => {
            sqlx::query(sweep).bind(now.as_second()).execute(pool).await?;
            let n = sqlx::query(insert)
                .bind(jti)
                .bind(until.as_second())
                .execute(pool)
                .await?
                .rows_affected();
            Ok(n == 1)
        })
    }

    /// Forgets `jti` (its fire could not be carried out, so a retry must not be a replay).
    pub async fn forget_jti(&self, jti: &str) -> Result<(), StoreError> {
        let q = sql(self, "DELETE FROM fire_tokens WHERE jti = $1");
        on_pool!(self, pool => {
            sqlx::query(q).bind(jti).execute(pool).await?;
        });
        Ok(())
    }
}
