//! The `basic` session provider: one username and password hash from config or env.
//!
//! Every attempt costs one full hash verification, whether or not the username matches,
//! so response time does not reveal which usernames exist. Verification runs off the async
//! runtime.

use std::sync::Arc;

use super::constant_time_eq;
use super::password::PasswordHash;

/// Hash checks running at once (each takes ~19 MiB and a core for tens of ms); more wait.
const CONCURRENT_CHECKS: usize = 4;

#[derive(Debug)]
pub struct BasicProvider {
    username: String,
    hash: PasswordHash,
    checks: tokio::sync::Semaphore,
}

impl BasicProvider {
    pub fn new(username: String, hash: PasswordHash) -> Self {
        Self {
            username,
            hash,
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
        }
    }

    /// The principal on success.
    pub async fn authenticate(self: &Arc<Self>, username: &str, password: &str) -> Option<String> {
        let _permit = self.checks.acquire().await.ok()?;
        let this = self.clone();
        let (username, password) = (username.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || {
            let password_ok = this.hash.verify(&password);
            let user_ok = constant_time_eq(username.as_bytes(), this.username.as_bytes());
            (password_ok && user_ok).then(|| this.username.clone())
        })
        .await
        .ok()
        .flatten()
    }
}
