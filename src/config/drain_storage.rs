//! The two one-key sections: `drain` (how old a drain marker may be) and `storage`
//! (where the database is; `HERMES_DATABASE_URL` may replace it, see `env`).

use super::DrainConfig;
use super::tree::{Reader, Section};

impl Reader {
    pub(super) fn drain(&mut self, top: &Section) -> DrainConfig {
        let s = self.section(top, "drain", &["marker_max_age_seconds"]);
        DrainConfig {
            marker_max_age_seconds: self.uint(&s, "marker_max_age_seconds", 3600, 0, u64::MAX),
        }
    }

    /// `storage.url` as written in the file; checked once the environment had its say.
    pub(super) fn storage_url(&mut self, top: &Section) -> Option<String> {
        let s = self.section(top, "storage", &["url"]);
        self.optional_string(&s, "url")
    }
}
