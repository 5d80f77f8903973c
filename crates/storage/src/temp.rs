//! The private temp directory and the [`TempAsset`] guard. A download exists on disk
//! only while a `TempAsset` (or the partial file of a running download) exists: dropping
//! either removes the file, so a panic or a cancelled task cannot leave it behind, and
//! the start-up sweep removes what a crashed process left.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempPath};

/// Every file we create starts with `mw-<pid>-`, so that the sweep can tell ours from a
/// live sibling process's.
const PREFIX: &str = "mw-";

/// Creates `dir` if needed and makes it private (0700). Refuses a symlink.
pub(crate) fn prepare_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!("{} is not a directory", dir.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Removes leftovers of processes that no longer run. Returns how many files it removed.
pub(crate) fn sweep(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| pid != std::process::id() && process_is_alive(pid)) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

fn process_is_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") { Path::new("/proc").join(pid.to_string()).exists() } else { false }
}

/// A new private (0600) file in `dir`, removed when dropped. It ends in the object's
/// extension when it has a plain one ([`extension_hint`]), else `.part`: the probe reads
/// a name only as a hint where the bytes alone cannot tell (a TGA header without its
/// footer, Markdown without a heading or link), as it does for a named file.
pub(crate) fn new_file(dir: &Path, extension: Option<&str>) -> io::Result<NamedTempFile> {
    let suffix = format!(".{}", extension.unwrap_or("part"));
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .suffix(&suffix)
        .tempfile_in(dir)
}

/// The extension of the last segment of an object name or URL path (query and fragment
/// left out), lowercase, when it is 1 to 8 ASCII letters and digits; anything else is
/// no hint. It is the customer's text: nothing but those characters reaches a file name.
pub(crate) fn extension_hint(name: &str) -> Option<String> {
    let name = name.split(['?', '#']).next().unwrap_or_default();
    let last = name.rsplit('/').next().unwrap_or_default();
    let (stem, ext) = last.rsplit_once('.')?;
    let plain =
        !stem.is_empty() && (1..=8).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    plain.then(|| ext.to_ascii_lowercase())
}

/// A downloaded object in the private temp directory. [`TempAsset::delete`] removes it
/// and reports failure; dropping it removes it as a backstop (panic, cancellation).
#[derive(Debug)]
pub struct TempAsset {
    path: TempPath,
    size: u64,
    bytes_downloaded: u64,
}

impl TempAsset {
    pub(crate) fn new(path: TempPath, size: u64, bytes_downloaded: u64) -> Self {
        TempAsset { path, size, bytes_downloaded }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file on disk.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes received over the network (or copied, for the local provider), every
    /// attempt included.
    pub fn bytes_downloaded(&self) -> u64 {
        self.bytes_downloaded
    }

    /// Removes the file now and says whether that worked.
    pub fn delete(self) -> io::Result<()> {
        self.path.close()
    }

    /// Where the file is, for logs and tests that check it is gone.
    pub fn path_buf(&self) -> PathBuf {
        self.path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dir_is_private_and_files_too() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("w");
        prepare_dir(&dir).unwrap();
        let f = new_file(&dir, None).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
            assert_eq!(fs::metadata(f.path()).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let name = f.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with(&format!("mw-{}-", std::process::id())), "{name}");
    }

    #[test]
    fn dropping_or_deleting_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = TempAsset::new(new_file(dir.path(), None).unwrap().into_temp_path(), 0, 0);
        let p = a.path_buf();
        assert!(p.exists());
        drop(a);
        assert!(!p.exists());
        let b = TempAsset::new(new_file(dir.path(), None).unwrap().into_temp_path(), 0, 0);
        let p = b.path_buf();
        b.delete().unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn a_plain_extension_of_the_object_is_kept_and_nothing_else() {
        for (name, want) in [
            ("scans/head.TGA", Some("tga")),
            ("https://b.s3.amazonaws.com/a/notes.md?X-Amz-Signature=00#frag", Some("md")),
            ("/container/dir.v2/clip.mp4", Some("mp4")),
            ("archive.tar.gz", Some("gz")),
            ("dir.v2/no-extension", None),
            (".tga", None),
            ("name.", None),
            ("name.toolongext", None),
            ("name.t-a", None),
            ("name.%2e%2e", None),
            ("name.ümlaut", None),
            ("key.x?y=.tga", Some("x")),
            ("", None),
        ] {
            assert_eq!(extension_hint(name).as_deref(), want, "{name}");
        }
        // With a hint the file ends in it, and is still ours to sweep (the prefix).
        let dir = tempfile::tempdir().unwrap();
        let f = new_file(dir.path(), Some("tga")).unwrap().into_temp_path();
        let name = f.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with(&format!("mw-{}-", std::process::id())) && name.ends_with(".tga"), "{name}");
        let left = dir.path().join("mw-0-abc.tga");
        fs::write(&left, b"x").unwrap();
        // The sweep (at start, before any file of this process exists) takes both.
        assert_eq!(sweep(dir.path()).unwrap(), 2);
        assert!(!left.exists() && !f.exists());
    }

    #[test]
    fn sweep_removes_dead_processes_files_only() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0 is never a user process; the parent (cargo test) is alive.
        let dead = dir.path().join("mw-0-abc.part");
        let parent = dir.path().join(format!("mw-{}-abc.part", std::os::unix::process::parent_id()));
        let foreign = dir.path().join("notes.txt");
        for p in [&dead, &parent, &foreign] {
            fs::write(p, b"x").unwrap();
        }
        assert_eq!(sweep(dir.path()).unwrap(), 1);
        assert!(!dead.exists());
        assert!(parent.exists(), "a live process's file was swept");
        assert!(foreign.exists(), "a file that is not ours was swept");
    }
}
