//! Watches the drain marker so a marker written by another process takes effect at once.
//!
//! An inotify watch on the marker's directory (the file itself comes and goes, so it cannot
//! be watched directly) wakes a reconcile within a millisecond or so. A slow timer also
//! reconciles, to catch anything a watch could miss and to expire old markers. If the
//! watch cannot be set up, the timer alone runs fast enough to keep the 50 ms promise.
//!
//! Only events that can change what the marker says wake a reconcile: creation, writes,
//! renames, removal and metadata changes. Opens, reads and read-only closes never do, so the
//! gateway's own read of the marker cannot wake it again (it once spun a core that way).
//! Reconciles run on a blocking thread: they touch the file system.

use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::drain::DrainControl;

/// Timer period when the file watch works: a safety net and the expiry clock.
pub const SAFETY_POLL: Duration = Duration::from_secs(1);
/// Timer period when it does not: well inside the 50 ms reaction promise.
pub const FALLBACK_POLL: Duration = Duration::from_millis(20);

/// Runs until `shutdown` is cancelled, reconciling the gate with the marker.
pub async fn watch_marker(control: Arc<DrainControl>, shutdown: CancellationToken) {
    let wake = Arc::new(Notify::new());
    let (_watcher, period) = match start_watcher(&control, wake.clone()) {
        Ok(w) => (Some(w), SAFETY_POLL),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the drain marker's directory; polling every {} ms", FALLBACK_POLL.as_millis());
            (None, FALLBACK_POLL)
        }
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            _ = ticker.tick() => {}
        }
        let c = control.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || c.reconcile()).await {
            tracing::warn!(error = %e, "a drain marker reconcile failed");
        }
    }
}

/// True for the kinds of event that can change the marker: everything but opening,
/// reading and closing without a write. (On Linux notify 8 reports `IN_OPEN` as
/// `Access(Open)` and `IN_CLOSE_NOWRITE` as `Access(Close(Read))`; `IN_CLOSE_WRITE` as
/// `Access(Close(Write))`, which ends an in-place write and is kept.)
pub fn may_change_marker(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

fn start_watcher(
    control: &DrainControl,
    wake: Arc<Notify>,
) -> notify::Result<notify::RecommendedWatcher> {
    let path = control.marker().path().to_path_buf();
    let dir = path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| ".".into());
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(event) => {
                if may_change_marker(&event.kind)
                    && event
                        .paths
                        .iter()
                        .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
                {
                    wake.notify_one();
                }
            }
            // An overflowed or failed watch: reconcile anyway rather than miss a change.
            Err(_) => wake.notify_one(),
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn only_events_that_can_change_the_marker_wake_a_reconcile() {
        let check = |kind: EventKind, expected: bool| {
            assert_eq!(may_change_marker(&kind), expected, "{kind:?}");
        };
        check(EventKind::Access(AccessKind::Open(AccessMode::Any)), false);
        check(EventKind::Access(AccessKind::Read), false);
        check(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            false,
        );
        check(EventKind::Access(AccessKind::Any), false);
        check(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            true,
        );
        check(EventKind::Create(CreateKind::File), true);
        check(EventKind::Modify(ModifyKind::Data(DataChange::Any)), true);
        check(EventKind::Modify(ModifyKind::Name(RenameMode::To)), true);
        check(EventKind::Modify(ModifyKind::Name(RenameMode::From)), true);
        check(
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            true,
        );
        check(EventKind::Remove(RemoveKind::File), true);
        check(EventKind::Other, true);
    }
}
