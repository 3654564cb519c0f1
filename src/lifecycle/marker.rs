//! The drain marker `$HERMES_HOME/.drain_request.json` (compat): the durable, cross-process
//! record that a drain was requested.
//!
//! Presence means draining, whatever the content: an unreadable or corrupt marker still
//! means draining (fail safe toward quiescing), and so does anything else at that path (a
//! FIFO, a device, a directory, a symbolic link), which is never opened for reading: see
//! [`crate::files::read_regular`]. Writes are atomic and durable (temp file + rename +
//! directory sync, mode 0600) so a reader never sees half a marker. This module only does
//! file I/O; it decides nothing.

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;

/// What a present marker says; fields are best effort because the file may be corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerContent {
    /// From the file when it parses, else its modification time.
    pub requested_at: Timestamp,
    /// From the file when it names one, else a label saying where the drain came from.
    pub principal: String,
    /// Why the marker's content could not be used (`None` when it is the JSON we write):
    /// "is a FIFO, not a regular file", "is larger than 65536 bytes", ...
    pub problem: Option<String>,
    /// A regular file that does not parse and changed less than [`SETTLE`] ago: perhaps a
    /// writer that is not atomic (`echo … > marker`) is still writing it.
    pub settling: bool,
}

/// How long after its last change a marker that does not parse may still be mid-write.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

impl MarkerContent {
    /// True when the file is the JSON we write.
    pub fn well_formed(&self) -> bool {
        self.problem.is_none()
    }
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
    /// Dates a present marker whose own time cannot be known (it cannot be examined).
    clock: SharedClock,
}

/// Longest principal we carry from a marker into logs and audit lines.
const MAX_PRINCIPAL_CHARS: usize = 128;

/// The most of a marker that is read; a bigger one still means draining.
pub const MAX_MARKER_BYTES: usize = 64 * 1024;

impl Marker {
    /// The marker at `path`; `clock` dates a marker whose own time cannot be read.
    pub fn new(path: PathBuf, clock: SharedClock) -> Self {
        Self { path, clock }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Atomically and durably writes a drain marker (mode 0600); the compat JSON shape.
    /// Replaces whatever non-directory is at the path (a FIFO, a link: the link itself).
    pub fn write(&self, requested_at: Timestamp, principal: &str) -> std::io::Result<()> {
        let body = MarkerFile {
            action: "drain".into(),
            requested_at: crate::clock::iso(requested_at),
            principal: principal.into(),
        };
        let json = serde_json::to_vec(&body).map_err(std::io::Error::other)?;
        crate::files::write_atomic(&self.path, &json)
    }

    /// Removes the marker (a link itself, never its target); returns whether one existed.
    pub fn remove(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True when a directory sits at the marker path: the one thing a write (rename)
    /// cannot replace and a cancel (unlink) cannot remove.
    pub fn is_directory(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_dir())
    }

    /// Reads the marker: `None` when absent, otherwise what can be made of it. Never fails
    /// and never blocks: a marker that exists but cannot be read or parsed, or is not a
    /// regular file, is reported as present with its [`MarkerContent::problem`].
    pub fn read(&self) -> Option<MarkerContent> {
        let unusable = |requested_at, problem: String| MarkerContent {
            requested_at,
            principal: "marker".into(),
            problem: Some(problem),
            settling: false,
        };
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                return Some(unusable(
                    self.clock.now(),
                    format!("cannot be examined: {e}"),
                ));
            }
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| Timestamp::try_from(t).ok())
            .unwrap_or_else(|| self.clock.now());
        let bytes = match crate::files::read_regular(&self.path, MAX_MARKER_BYTES) {
            Ok(Some(bytes)) => bytes,
            // Removed between the look and the read.
            Ok(None) => return None,
            Err(e) => return Some(unusable(mtime, e.to_string())),
        };
        let parsed = serde_json::from_slice::<MarkerFile>(&bytes)
            .ok()
            .and_then(|m| {
                let at = m.requested_at.parse::<Timestamp>().ok()?;
                (m.action == "drain").then_some((at, m.principal))
            });
        Some(match parsed {
            Some((requested_at, principal)) => MarkerContent {
                requested_at,
                principal: clean_principal(&principal),
                problem: None,
                settling: false,
            },
            None => MarkerContent {
                // The age of an mtime the kernel stamped is measured on the kernel's clock,
                // not the injected one: it is a duration, not a timestamp that leaves us.
                // Within SETTLE either way: a file system clock a hair ahead still counts.
                settling: meta.modified().is_ok_and(|t| match t.elapsed() {
                    Ok(age) => age < SETTLE,
                    Err(ahead) => ahead.duration() < SETTLE,
                }),
                ..unusable(
                    mtime,
                    "is not a drain marker (JSON with action \"drain\", requested_at and principal)"
                        .into(),
                )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};

    fn at(path: PathBuf) -> Marker {
        Marker::new(path, std::sync::Arc::new(SystemClock))
    }

    #[test]
    fn write_read_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = at(dir.path().join(".drain_request.json"));
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
            (c.requested_at, c.principal.as_str(), c.well_formed()),
            (at, "nas", true)
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(m.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(m.remove().unwrap());
        assert!(!m.remove().unwrap(), "idempotent");
        assert_eq!(m.read(), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
    }

    #[test]
    fn corrupt_or_empty_markers_still_mean_draining() {
        let dir = tempfile::tempdir().unwrap();
        let m = at(dir.path().join(".drain_request.json"));
        for body in [
            "",
            "{not json",
            "[]",
            r#"{"action":"nope","requested_at":"x","principal":"p"}"#,
        ] {
            std::fs::write(m.path(), body).unwrap();
            let c = m.read().expect("present");
            assert!(!c.well_formed(), "{body:?}");
            assert_eq!(c.principal, "marker");
        }
    }

    #[test]
    fn a_100_kib_marker_means_draining_and_is_not_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let m = at(dir.path().join(".drain_request.json"));
        // Valid JSON with a huge principal: were it read whole, it would parse.
        let body = format!(
            r#"{{"action":"drain","requested_at":"2026-01-02T03:04:05Z","principal":"{}"}}"#,
            "p".repeat(100 * 1024)
        );
        std::fs::write(m.path(), body).unwrap();
        let c = m.read().expect("present");
        assert_eq!(c.problem.as_deref(), Some("is larger than 65536 bytes"));
        assert_eq!(c.principal, "marker");
    }

    #[test]
    fn special_files_at_the_marker_path_mean_draining() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".drain_request.json");
        let m = at(path.clone());
        let ok = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let c = m.read().expect("a FIFO is present");
        assert_eq!(c.problem.as_deref(), Some("is a FIFO, not a regular file"));
        assert!(!m.is_directory());
        assert!(m.remove().unwrap(), "a FIFO is removed by a cancel");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let c = m.read().expect("a link is present");
        assert_eq!(
            c.problem.as_deref(),
            Some("is a symbolic link, not a regular file")
        );
        assert!(m.remove().unwrap());
        std::fs::create_dir(&path).unwrap();
        let c = m.read().expect("a directory is present");
        assert_eq!(
            c.problem.as_deref(),
            Some("is a directory, not a regular file")
        );
        assert!(m.is_directory());
        assert!(m.remove().is_err());
        let dev = at("/dev/null".into());
        assert_eq!(
            dev.read().unwrap().problem.as_deref(),
            Some("is a character device, not a regular file")
        );
    }

    #[test]
    fn principals_are_cleaned() {
        assert_eq!(clean_principal("a\nb\u{7}c"), "abc");
        assert_eq!(clean_principal("   "), "marker");
        assert_eq!(clean_principal(&"x".repeat(500)).len(), MAX_PRINCIPAL_CHARS);
    }

    #[test]
    fn a_marker_that_cannot_be_examined_is_dated_by_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where a directory of the path should be: stat fails (ENOTDIR).
        std::fs::write(dir.path().join("home"), "").unwrap();
        let pinned: Timestamp = "2001-02-03T04:05:06Z".parse().unwrap();
        let m = Marker::new(
            dir.path().join("home/.drain_request.json"),
            ManualClock::new(pinned),
        );
        let c = m
            .read()
            .expect("a marker that cannot be examined is present");
        assert!(
            c.problem
                .as_deref()
                .unwrap()
                .starts_with("cannot be examined: "),
            "{:?}",
            c.problem
        );
        assert_eq!(c.requested_at, pinned, "dated by the clock, not the system");
    }
}
