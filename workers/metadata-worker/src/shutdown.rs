//! Graceful stop: SIGTERM or SIGINT fires one token; the consumer stops receiving, the
//! pipeline stops starting assets, and what is left of the temp directory is removed. A
//! second signal during the drain fires another: stop now, hand every job back.

use std::io;
use std::path::Path;

use tokio_util::sync::CancellationToken;

/// Fires `token` on the first SIGTERM or SIGINT, and `now` on the next one.
pub fn on_signal(token: CancellationToken, now: CancellationToken) -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stopping: no new jobs; in-flight assets may finish (signal again to stop at once)"
        );
        token.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "stopping at once: unfinished jobs go back to the queue");
        now.cancel();
    });
    Ok(())
}

/// Removes every file below `dir` (the process's private temp directory), keeping the
/// directory and its lock file. Returns how many files it removed.
pub fn empty_dir(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name() == crate::tempdirs::LOCK_FILE {
            continue;
        }
        if entry.file_type()?.is_dir() {
            removed += empty_dir(&path)?;
            std::fs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empties_a_directory_but_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), b"y").unwrap();
        assert_eq!(empty_dir(dir.path()).unwrap(), 2);
        assert!(dir.path().is_dir());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(empty_dir(&dir.path().join("missing")).unwrap(), 0);
    }
}
