//! Watches the drain marker so a marker written by another process takes effect at once.
//!
//! An inotify watch on the marker's directory (the file itself comes and goes, so it cannot
//! be watched directly) wakes a reconcile within a millisecond or so. A slow timer also
//! reconciles, to catch anything a watch could miss and to expire old markers. If the
//! watch cannot be set up, the timer alone runs fast enough to keep the 50 ms promise.
//!
//! Only events that can change what the marker says are asked of the kernel: creation,
//! a close after writing, renames, removal and metadata changes (`MASK`). Opens, reads,
//! read-only closes and writes to an open file never arrive, so neither the gateway's own
//! read of the marker (it once spun a core that way) nor SQLite's writes to `state.db-wal`
//! beside it wake anything; an in-place write of the marker counts when its writer closes
//! it. The watch is read on the runtime (no thread of its own); reconciles run on a
//! blocking thread: they touch the file system.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask};
use tokio_util::sync::CancellationToken;

use super::drain::DrainControl;

/// Timer period when the file watch works: a safety net and the expiry clock.
pub const SAFETY_POLL: Duration = Duration::from_secs(1);
/// Timer period when it does not: well inside the 50 ms reaction promise.
pub const FALLBACK_POLL: Duration = Duration::from_millis(20);

/// The events that can change the marker (see the module's doc).
const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// Runs until `shutdown` is cancelled, reconciling the gate with the marker.
pub async fn watch_marker(control: Arc<DrainControl>, shutdown: CancellationToken) {
    let mut watch = match MarkerWatch::start(control.marker().path()) {
        Ok(w) => Some(w),
        Err(e) => {
            fallback(&e);
            None
        }
    };
    let mut ticker = tokio::time::interval(if watch.is_some() {
        SAFETY_POLL
    } else {
        FALLBACK_POLL
    });
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed = async {
            match watch.as_mut() {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = changed => if let Err(e) = r {
                fallback(&e);
                watch = None;
                ticker = tokio::time::interval(FALLBACK_POLL);
            },
            _ = ticker.tick() => {}
        }
        let c = control.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || c.reconcile()).await {
            tracing::warn!(error = %e, "a drain marker reconcile failed");
        }
    }
}

fn fallback(e: &io::Error) {
    tracing::warn!(error = %e, "cannot watch the drain marker's directory; polling every {} ms", FALLBACK_POLL.as_millis());
}

/// An inotify watch on the marker's directory, for the events of [`MASK`].
pub struct MarkerWatch {
    events: EventStream<Vec<u8>>,
    name: Option<OsString>,
}

impl std::fmt::Debug for MarkerWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarkerWatch")
            .field("name", &self.name)
            .finish()
    }
}

impl MarkerWatch {
    pub fn start(marker: &Path) -> io::Result<Self> {
        let dir = marker
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let inotify = Inotify::init()?;
        inotify.watches().add(dir, MASK)?;
        Ok(Self {
            events: inotify.into_event_stream(vec![0; 4096])?,
            name: marker.file_name().map(|n| n.to_os_string()),
        })
    }

    /// Waits for an event that may have changed the marker: one naming it, one about the
    /// directory itself, or an overflowed queue (which may have dropped one).
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let event = match self.events.next().await {
                Some(event) => event?,
                None => return Err(io::Error::other("the inotify stream ended")),
            };
            if event.mask.contains(EventMask::Q_OVERFLOW)
                || event
                    .name
                    .as_ref()
                    .is_none_or(|n| Some(n) == self.name.as_ref())
            {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `watch` reports a change within `wait`.
    async fn woke(watch: &mut MarkerWatch, wait: Duration) -> bool {
        tokio::time::timeout(wait, watch.changed()).await.is_ok()
    }

    #[tokio::test]
    async fn only_what_can_change_the_marker_wakes_the_watch() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join(".drain_request.json");
        std::fs::write(&marker, b"{}").unwrap();
        // Writes to an open file, opens, reads and read-only closes are never even
        // delivered: SQLite writes its WAL beside the marker thousands of times a second.
        let never =
            WatchMask::MODIFY | WatchMask::OPEN | WatchMask::ACCESS | WatchMask::CLOSE_NOWRITE;
        assert!(!MASK.intersects(never), "{MASK:?}");
        let mut watch = MarkerWatch::start(&marker).unwrap();
        let (quiet, soon) = (Duration::from_millis(200), Duration::from_secs(5));
        // Reading the marker, and writing another file held open (as SQLite writes its
        // WAL), wake nothing.
        let _ = std::fs::read(&marker).unwrap();
        let mut wal = std::fs::File::create(dir.path().join("state.db-wal")).unwrap();
        for _ in 0..100 {
            wal.write_all(b"page").unwrap();
        }
        assert!(
            !woke(&mut watch, quiet).await,
            "reads and WAL writes woke the watch"
        );
        // A marker renamed into place, written in place and closed, and removed: each wakes it.
        let tmp = dir.path().join(".drain_request.json.tmp");
        std::fs::write(&tmp, b"{}").unwrap();
        std::fs::rename(&tmp, &marker).unwrap();
        assert!(woke(&mut watch, soon).await, "a rename into place");
        while woke(&mut watch, quiet).await {}
        std::fs::write(&marker, br#"{"action":"drain"}"#).unwrap();
        assert!(
            woke(&mut watch, soon).await,
            "an in-place write, once closed"
        );
        while woke(&mut watch, quiet).await {}
        std::fs::remove_file(&marker).unwrap();
        assert!(woke(&mut watch, soon).await, "a removal");
    }
}
