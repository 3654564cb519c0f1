//! The drain marker `$HERMES_HOME/.drain_request.json` (compat): the durable, cross-process
//! record that a drain was requested.
//!
//! Presence means draining, whatever the content: an unreadable or corrupt marker still
//! means draining (fail safe toward quiescing). Writes are atomic (temp file + rename) so a
//! reader never sees half a marker. This module only does file I/O; it decides nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What a present marker says; fields are best effort because the file may be corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerContent {
    /// From the file when it parses, else its modification time.
    pub requested_at: Timestamp,
    /// From the file when it names one, else a label saying where the drain came from.
    pub principal: String,
    /// False when the file was empty, unreadable or not the JSON we write.
    pub well_formed: bool,
}

#[derive(Serialize, Deserialize)]
struct MarkerFile {
    action: String,
    requested_at: String,
    principal: String,
}

/// Writes, reads and removes the marker at one path.
#[derive(Debug, Clone)]
pub struct Marker {
    path: PathBuf,
}

/// Longest principal we carry from a marker into logs and audit lines.
const MAX_PRINCIPAL_CHARS: usize = 128;

impl Marker {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Atomically writes a drain marker; the compat JSON shape.
    pub fn write(&self, requested_at: Timestamp, principal: &str) -> std::io::Result<()> {
        let body = MarkerFile {
            action: "drain".into(),
            requested_at: crate::clock::iso(requested_at),
            principal: principal.into(),
        };
        let json = serde_json::to_vec(&body).map_err(std::io::Error::other)?;
        write_atomic(&self.path, &json)
    }

    /// Removes the marker; returns whether one existed.
    pub fn remove(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads the marker: `None` when absent, otherwise what can be made of it. Never fails:
    /// a marker that exists but cannot be read or parsed is reported as present.
    pub fn read(&self) -> Option<MarkerContent> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "drain marker unreadable; treating it as present");
                return Some(MarkerContent {
                    requested_at: Timestamp::now(),
                    principal: "marker".into(),
                    well_formed: false,
                });
            }
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| Timestamp::try_from(t).ok())
            .unwrap_or_else(Timestamp::now);
        let parsed = std::fs::read(&self.path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<MarkerFile>(&bytes).ok())
            .and_then(|m| {
                let at = m.requested_at.parse::<Timestamp>().ok()?;
                (m.action == "drain").then_some((at, m.principal))
            });
        Some(match parsed {
            Some((requested_at, principal)) => MarkerContent {
                requested_at,
                principal: clean_principal(&principal),
                well_formed: true,
            },
            None => MarkerContent {
                requested_at: mtime,
                principal: "marker".into(),
                well_formed: false,
            },
        })
    }
}

/// Keeps a principal printable and short before it reaches logs and the audit file.
fn clean_principal(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_PRINCIPAL_CHARS)
        .collect();
    if cleaned.trim().is_empty() {
        "marker".into()
    } else {
        cleaned
    }
}

/// Writes `bytes` to `path` via a temp file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = Marker::new(dir.path().join(".drain_request.json"));
        assert_eq!(m.read(), None);
        let at: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        m.write(at, "nas").unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(m.path()).unwrap()).unwrap();
        assert_eq!(raw["action"], "drain");
        assert_eq!(raw["principal"], "nas");
        assert_eq!(raw["requested_at"], "2026-01-02T03:04:05.000000Z");
        let c = m.read().unwrap();
        assert_eq!(
            (c.requested_at, c.principal.as_str(), c.well_formed),
            (at, "nas", true)
        );
        assert!(m.remove().unwrap());
        assert!(!m.remove().unwrap(), "idempotent");
        assert_eq!(m.read(), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
    }

    #[test]
    fn corrupt_or_empty_markers_still_mean_draining() {
        let dir = tempfile::tempdir().unwrap();
        let m = Marker::new(dir.path().join(".drain_request.json"));
        for body in [
            "",
            "{not json",
            "[]",
            r#"{"action":"nope","requested_at":"x","principal":"p"}"#,
        ] {
            std::fs::write(m.path(), body).unwrap();
            let c = m.read().expect("present");
            assert!(!c.well_formed, "{body:?}");
            assert_eq!(c.principal, "marker");
        }
    }

    #[test]
    fn principals_are_cleaned() {
        assert_eq!(clean_principal("a\nb\u{7}c"), "abc");
        assert_eq!(clean_principal("   "), "marker");
        assert_eq!(clean_principal(&"x".repeat(500)).len(), MAX_PRINCIPAL_CHARS);
    }
}
