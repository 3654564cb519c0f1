//! Outbound HTTP clients built on first use.
//!
//! Building a `reqwest` client reads the system's root certificates (about 150 files, a
//! few milliseconds), and a start-up — a scaled-to-zero agent woken by its fire — should not wait for
//! clients it may not need yet: the webhook client, the JWKS client and the account
//! service's. A [`LazyClient`] is built by the first request that needs it, once, and
//! shared by its clones; if it cannot be built (the TLS backend would not start) every use
//! gets the same error, which its caller reports as it reports an unreachable peer.

use std::sync::{Arc, OnceLock};

/// A client and how to build it; cheap to clone (the clones share one client).
#[derive(Debug, Clone)]
pub struct LazyClient {
    build: fn() -> reqwest::Result<reqwest::Client>,
    client: Arc<OnceLock<Result<reqwest::Client, String>>>,
}

impl LazyClient {
    /// A client `build` makes on first use.
    pub fn new(build: fn() -> reqwest::Result<reqwest::Client>) -> Self {
        Self {
            build,
            client: Arc::default(),
        }
    }

    /// The client, built now if this is its first use; why it cannot be built otherwise.
    pub fn get(&self) -> Result<&reqwest::Client, &str> {
        self.client
            .get_or_init(|| {
                (self.build)().map_err(|e| format!("cannot set up an HTTP client: {e}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_once_and_shared_by_clones() {
        let a = LazyClient::new(|| reqwest::Client::builder().build());
        let b = a.clone();
        assert!(
            a.client.get().is_none(),
            "nothing is built before the first use"
        );
        let first: *const reqwest::Client = b.get().unwrap();
        let again: *const reqwest::Client = a.get().unwrap();
        assert_eq!(first, again);
    }
}
