//! The small sections: `drain` (how old a drain marker may be), `storage` (where the
//! database is; `HERMES_DATABASE_URL` may replace it, see `env`) and `logging` (the line
//! format and level; `HERMES_LOG_FORMAT` and `RUST_LOG` may replace them).

use super::tree::{Reader, Section};
use super::{DrainConfig, LogFormat, LoggingConfig};

impl Reader {
    pub(super) fn drain(&mut self, top: &Section) -> DrainConfig {
        let s = self.section(top, "drain", &["marker_max_age_seconds"]);
        DrainConfig {
            marker_max_age_seconds: self.uint(&s, "marker_max_age_seconds", 3600, 0, u64::MAX),
        }
    }

    /// `logging`: `format` is `text` or `json`, `level` a filter `tracing` accepts.
    pub(super) fn logging(&mut self, top: &Section) -> LoggingConfig {
        let s = self.section(top, "logging", &["format", "level"]);
        let written = self.string(&s, "format", "text");
        let format = LogFormat::parse(&written).unwrap_or_else(|| {
            self.issue(
                s.key_path("format"),
                format!("expected text or json, got {written:?}"),
            );
            LogFormat::Text
        });
        let level = self.string(&s, "level", "info");
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
            self.issue(
                s.key_path("level"),
                format!("not a log filter ({e}): {level:?}"),
            );
        }
        LoggingConfig { format, level }
    }

    /// `storage.url` as written in the file; checked once the environment had its say.
    pub(super) fn storage_url(&mut self, top: &Section) -> Option<String> {
        let s = self.section(top, "storage", &["url"]);
        self.optional_string(&s, "url")
    }
}
