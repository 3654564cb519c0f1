//! Files under `HERMES_HOME`: created private, written atomically and durably, read
//! without blocking, without following links and within a size bound.
//!
//! Everything the gateway (and its CLI) creates there goes through here: directories 0700,
//! files 0600, whatever the process umask says (SPEC §6). Reads of files that other
//! processes may put there (the drain marker, the state file) only ever read a regular
//! file, so a FIFO, a device, a directory or a symbolic link at that path can neither block
//! nor feed the gateway without end. This module decides nothing about what a file means.

use std::fs::{DirBuilder, File, FileType, Metadata, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

/// Directories the gateway creates: owner only.
pub const DIR_MODE: u32 = 0o700;
/// Files the gateway creates: owner read and write only.
pub const FILE_MODE: u32 = 0o600;

/// Why a bounded read gave no content.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Something other than a regular file is at the path; it was not opened for reading.
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    /// The file holds more than the caller's limit; only the limit (plus a byte) was read.
    #[error("is larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot be read: {0}")]
    Io(io::Error),
}

/// Names a file type the way a log line says it: "a FIFO", "a directory", ...
pub fn describe(file_type: FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "an unknown kind of file"
    }
}

/// Reads the regular file at `path`, at most `limit` bytes; `Ok(None)` when nothing is there.
///
/// Never follows a symbolic link (`O_NOFOLLOW`), never blocks on open (`O_NONBLOCK`, so a
/// FIFO without a writer cannot hang it) and never reads anything but a regular file: the
/// path is checked with `lstat` before it is opened and the opened descriptor with `fstat`
/// after, so a file swapped in between is refused too.
pub fn read_regular(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, ReadError> {
    let Some((file, meta)) = open_regular(path)? else {
        return Ok(None);
    };
    let expected = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    let mut bytes = Vec::with_capacity(expected.min(limit) + 1);
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(Some(bytes))
}

/// The last `limit` bytes (at most) of the regular file at `path`, opened as
/// [`read_regular`] opens it; `Ok(None)` when nothing is there.
pub fn read_regular_tail(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, ReadError> {
    use std::io::{Seek, SeekFrom};
    let Some((mut file, meta)) = open_regular(path)? else {
        return Ok(None);
    };
    let skip = meta.len().saturating_sub(limit as u64);
    file.seek(SeekFrom::Start(skip)).map_err(ReadError::Io)?;
    let mut bytes = Vec::with_capacity(limit.min(meta.len() as usize));
    file.take(limit as u64)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    Ok(Some(bytes))
}

/// Opens the regular file at `path` for reading (see [`read_regular`]).
fn open_regular(path: &Path) -> Result<Option<(File, Metadata)>, ReadError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(ReadError::NotRegular(describe(meta.file_type())));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: a symbolic link appeared between the lstat and the open.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(ReadError::NotRegular("a symbolic link"));
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(describe(meta.file_type())));
    }
    Ok(Some((file, meta)))
}

/// Creates `dir` and any missing parents with mode 0700; existing ones keep their mode.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Writes `bytes` to `path` atomically and durably, as a 0600 file.
///
/// The bytes go to a temp file with an unpredictable name beside `path`, created
/// exclusively (`O_CREAT|O_EXCL`, so nothing already there is written through), synced,
/// renamed over `path` (which replaces whatever non-directory was there) and the directory
/// is synced so the rename survives a crash. A reader sees the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_private_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&tmp)?;
    let result = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // The file is in place: a directory that cannot be opened for its sync (one without
    // read permission) costs durability across a crash, not the write, so it is said once
    // and not reported as a failure.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the directory after a rename; the write may not survive a crash");
        }
    }
    Ok(())
}

/// Opens `path` for appending, creating it 0600 (and its directory 0700) when missing.
/// An existing file readable by others is tightened to 0600.
pub fn open_private_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    tighten_open(path, &file, &file.metadata()?)?;
    Ok(file)
}

/// Makes sure the regular file at `path` exists with mode 0600 before another library
/// opens it (SQLite creates its `-wal` and `-shm` files with the database file's mode).
/// An existing file readable by others is tightened; so are the `extra` files beside it
/// that exist (a WAL left by a crash). Symbolic links are neither followed nor changed.
pub fn ensure_private_file(path: &Path, extra: &[&Path]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    tighten_open(path, &file, &file.metadata()?)?;
    for other in extra {
        let flags = OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        match OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits())
            .open(other)
        {
            Ok(f) => tighten_open(other, &f, &f.metadata()?)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sets an opened regular file group- or world-accessible to 0600 and says so in the log.
fn tighten_open(path: &Path, file: &File, meta: &Metadata) -> io::Result<()> {
    let mode = meta.permissions().mode() & 0o777;
    if !meta.file_type().is_file() || mode & 0o077 == 0 {
        return Ok(());
    }
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    tracing::warn!(
        path = %path.display(),
        "file was readable by others (mode {mode:o}); set to 600"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo {}", path.display());
    }

    #[test]
    fn a_regular_file_is_read_and_an_absent_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert!(read_regular(&p, 10).unwrap().is_none());
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_regular(&p, 10).unwrap().unwrap(), b"0123456789");
    }

    #[test]
    fn a_file_over_the_limit_is_too_large_and_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'x'; 100 * 1024]).unwrap();
        assert!(matches!(
            read_regular(&p, 64 * 1024),
            Err(ReadError::TooLarge(65536))
        ));
        // A file without end is refused as quickly as a big one: only limit + 1 is read.
        assert!(matches!(
            read_regular(Path::new("/proc/self/status"), 8),
            Err(ReadError::TooLarge(8))
        ));
    }

    #[test]
    fn special_files_and_links_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"{}").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let started = Instant::now();
        for (path, kind) in [
            (fifo.as_path(), "a FIFO"),
            (sub.as_path(), "a directory"),
            (link.as_path(), "a symbolic link"),
            (zero.as_path(), "a symbolic link"),
            (Path::new("/dev/null"), "a character device"),
        ] {
            match read_regular(path, 64 * 1024) {
                Err(ReadError::NotRegular(k)) => assert_eq!(k, kind, "{}", path.display()),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn atomic_writes_are_private_and_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn an_atomic_write_replaces_a_fifo_and_refuses_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("marker");
        mkfifo(&p);
        write_atomic(&p, b"x").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        let d = dir.path().join("dir");
        std::fs::create_dir(&d).unwrap();
        assert!(write_atomic(&d, b"x").is_err());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temp left"
        );
    }

    #[test]
    fn existing_loose_files_are_tightened_and_links_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let wal = dir.path().join("state.db-wal");
        std::fs::write(&db, b"").unwrap();
        std::fs::write(&wal, b"").unwrap();
        for p in [&db, &wal] {
            std::fs::set_permissions(p, Permissions::from_mode(0o644)).unwrap();
        }
        let shm = dir.path().join("state.db-shm");
        ensure_private_file(&db, &[&wal, &shm]).unwrap();
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
        assert!(!shm.exists(), "absent extras are not created");

        let log = dir.path().join("logs/audit.log");
        open_private_append(&log).unwrap();
        assert_eq!((mode(&log), mode(&dir.path().join("logs"))), (0o600, 0o700));

        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"").unwrap();
        std::fs::set_permissions(&outside, Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(ensure_private_file(&link, &[]).is_err(), "not followed");
        assert!(open_private_append(&link).is_err(), "not followed");
        assert_eq!(mode(&outside), 0o644);
    }
}
