//! Who owns a temp directory, and what happens to the files of an owner that died.
//! A replica holds an exclusive lock on `TEMP_DIR/.metadata-worker.lock` for its whole
//! life: a second process pointed at the same directory refuses to start (it would
//! sweep the first one's downloads), and a directory whose lock nobody holds belongs to
//! a dead replica. Replicas sharing a volume (`TEMP_DIR=/volume/$POD_NAME`) sweep such
//! siblings on a timer, so a customer's partial file left by a SIGKILL is deleted even
//! if no process ever starts on that directory again. Locks are the kernel's, so they
//! work across containers and pid namespaces, where a pid says nothing.

use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// The lock file's name; a directory holding it is a worker's temp directory.
pub const LOCK_FILE: &str = ".metadata-worker.lock";

/// Files the storage layer creates start with this (see `asset_storage`'s temp module).
const FILE_PREFIX: &str = "mw-";

/// Disk space the files below `dir` take, in allocated blocks (what counts against an
/// `emptyDir`'s `sizeLimit`): a sparse file of ranged reads counts the ranges it holds,
/// not its length. Symbolic links are not followed.
pub fn disk_usage(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = match entry.path().symlink_metadata() {
            Ok(meta) => meta,
            // Deleted between the listing and now: a finished download.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        if meta.is_dir() {
            total = total.saturating_add(
                disk_usage(&entry.path())
                    .or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(0) } else { Err(e) })?,
            );
        }
    }
    Ok(total)
}

/// This process's claim on its temp directory; released when dropped (or at exit).
#[derive(Debug)]
pub struct Lease {
    dir: PathBuf,
    _lock: File,
}

impl Lease {
    /// Creates `dir` if needed (0700) and locks it, or says who holds it.
    pub fn acquire(dir: &Path) -> io::Result<Lease> {
        fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        let lock = File::options().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => Ok(Lease { dir: dir.to_path_buf(), _lock: lock }),
            Err(TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another worker process; give each replica its own", dir.display()),
            )),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the downloads left in sibling temp directories (same parent, holding
    /// [`LOCK_FILE`]) whose owner is gone. Directories and lock files stay; anything
    /// not ours is not touched. Returns how many files it removed.
    pub fn sweep_dead_siblings(&self) -> io::Result<usize> {
        let Some(parent) = self.dir.parent() else { return Ok(0) };
        let mut removed = 0;
        for entry in fs::read_dir(parent)? {
            let path = entry?.path();
            if path == self.dir || !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let Ok(lock) = File::options().write(true).open(path.join(LOCK_FILE)) else { continue };
            if lock.try_lock().is_err() {
                continue; // alive (or not ours to judge)
            }
            removed += remove_downloads(&path)?;
            // Dropping `lock` releases it.
        }
        Ok(removed)
    }
}

/// Removes our download files directly in `dir`.
fn remove_downloads(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ours = entry.file_name().to_str().is_some_and(|n| n.starts_with(FILE_PREFIX));
        if ours && entry.file_type()?.is_file() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_allocated_blocks_not_lengths() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mw-1-whole"), vec![7u8; 256 * 1024]).unwrap();
        // A ranged download: a 1 GiB object of which 8 KiB at the end were fetched.
        let mut sparse = File::create(dir.path().join("mw-1-ranged")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        sparse.seek(SeekFrom::End(-8192)).unwrap();
        sparse.write_all(&[1u8; 8192]).unwrap();
        sparse.sync_all().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/mw-2"), vec![7u8; 64 * 1024]).unwrap();
        let used = disk_usage(dir.path()).unwrap();
        let data = (256 + 8 + 64) * 1024;
        assert!(used >= data, "{used} < {data}");
        assert!(used < 4 << 20, "the sparse file counted its length: {used}");
        assert!(disk_usage(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_directory_has_one_owner_and_a_dead_owners_downloads_are_swept() {
        let volume = tempfile::tempdir().unwrap();
        let mine = Lease::acquire(&volume.path().join("pod-a")).unwrap();
        assert_eq!(
            Lease::acquire(&volume.path().join("pod-a")).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );

        let alive = Lease::acquire(&volume.path().join("pod-b")).unwrap();
        fs::write(alive.dir().join("mw-1-live.part"), b"in use").unwrap();
        let dead_dir = volume.path().join("pod-c");
        drop(Lease::acquire(&dead_dir).unwrap());
        fs::write(dead_dir.join("mw-1-left.part"), b"customer bytes").unwrap();
        fs::write(dead_dir.join("notes.txt"), b"not ours").unwrap();
        let stranger = volume.path().join("other-app");
        fs::create_dir(&stranger).unwrap();
        fs::write(stranger.join("mw-9-x.part"), b"no lock file: not a worker's").unwrap();

        assert_eq!(mine.sweep_dead_siblings().unwrap(), 1);
        assert!(!dead_dir.join("mw-1-left.part").exists());
        assert!(dead_dir.join("notes.txt").exists());
        assert!(alive.dir().join("mw-1-live.part").exists(), "a live sibling's file was swept");
        assert!(stranger.join("mw-9-x.part").exists());
        // The dead directory can be taken over once swept.
        Lease::acquire(&dead_dir).unwrap();
    }
}
