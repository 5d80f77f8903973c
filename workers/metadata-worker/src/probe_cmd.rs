//! `metadata-worker probe FILE...`: the probe's output contract, one JSON line per file,
//! in input order. Files are probed in probe processes, as the worker does, so a file
//! that crashes a parser or runs past its budget costs its own line, never the others'.
//! Directories are walked without leaving them: a symbolic link pointing outside, or
//! back up into a cycle, is reported, not followed.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::Context;
use asset_core::{AssetMetadata, ErrorBody, ErrorCode, Limits};
use asset_probe::isolate::{DEFAULT_MEMORY_CEILING, ProbePool};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Files to probe; a directory is walked recursively, in name order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Largest file accepted, in bytes.
    #[arg(long, env = "MAX_ASSET_BYTES", default_value_t = Limits::default().max_file_bytes)]
    max_bytes: u64,

    /// Time budget per file, in milliseconds.
    #[arg(long, default_value_t = Limits::default().max_millis)]
    timeout_ms: u64,

    /// Probe processes run at once (default: the number of CPUs, at least 2).
    #[arg(long, env = "PROBE_PROCESSES")]
    processes: Option<usize>,

    /// Memory a probe process may use besides the bytes a parser holds, in bytes.
    #[arg(long, env = "PROBE_MEMORY_LIMIT", default_value_t = DEFAULT_MEMORY_CEILING)]
    memory_limit: u64,
}

/// One output line: the path, then either the metadata or an error.
#[derive(Debug, Serialize)]
pub struct ProbeLine<'a> {
    pub path: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<AssetMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// What the walk found: a file to probe, or a path refused with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Probe(PathBuf),
    Refused(PathBuf, String),
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits { max_file_bytes: args.max_bytes, max_millis: args.timeout_ms, ..Limits::default() };
    let mut entries = Vec::new();
    for path in &args.files {
        expand(path, &mut entries).with_context(|| format!("listing {}", path.display()))?;
    }
    let processes =
        args.processes.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()).max(2));
    let memory = args.memory_limit.saturating_add(limits.max_memory_bytes);
    let pool = ProbePool::new(crate::config::prober_config(processes.max(1), memory)?);

    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..processes.min(entries.len()).max(1) {
            let (tx, pool, entries, next, limits) = (tx.clone(), &pool, &entries, &next, &limits);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(entry) = entries.get(i) else { return };
                    if tx.send((i, line_for(entry, pool, limits))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        // Lines come back in any order; they go out in input order.
        let mut ready = BTreeMap::new();
        let mut printed = 0;
        for (i, line) in rx {
            ready.insert(i, line);
            while let Some(line) = ready.remove(&printed) {
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
                printed += 1;
            }
        }
        out.flush()?;
        Ok(())
    })?;
    pool.shutdown();
    Ok(ExitCode::SUCCESS)
}

fn line_for(entry: &Entry, pool: &ProbePool, limits: &Limits) -> String {
    let (path, result) = match entry {
        Entry::Probe(path) => (path, pool.probe(path, limits)),
        Entry::Refused(path, why) => (path, Err(asset_probe::ProbeError::unsupported(why))),
    };
    let display = path.to_string_lossy();
    let line = match result {
        Ok(metadata) => ProbeLine { path: &display, metadata: Some(metadata), size_bytes: None, error: None },
        Err(err) => ProbeLine {
            path: &display,
            metadata: None,
            size_bytes: Some(
                std::fs::symlink_metadata(path).map(|m| if m.is_file() { m.len() } else { 0 }).unwrap_or(0),
            ),
            error: Some(ErrorBody { code: err.code(), message: err.to_string() }),
        },
    };
    serde_json::to_string(&line).unwrap_or_else(|e| {
        let code = ErrorCode::Internal.as_str();
        format!(
            r#"{{"path":{:?},"error":{{"code":"{code}","message":"cannot encode the line: {e}"}}}}"#,
            display
        )
    })
}

/// A file named on the command line stands for itself (even if missing or a link: the
/// user named it); a directory stands for what lies below it, sorted so output order is
/// stable, without leaving it.
fn expand(path: &Path, out: &mut Vec<Entry>) -> io::Result<()> {
    if !path.is_dir() {
        out.push(Entry::Probe(path.to_path_buf()));
        return Ok(());
    }
    let root = path.canonicalize()?;
    let mut seen = HashSet::from([root.clone()]);
    walk(path, &root, &mut seen, out)
}

fn walk(dir: &Path, root: &Path, seen: &mut HashSet<PathBuf>, out: &mut Vec<Entry>) -> io::Result<()> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&entry)?;
        if meta.file_type().is_symlink() {
            match entry.canonicalize() {
                Ok(target) if !target.starts_with(root) => {
                    out.push(Entry::Refused(entry, "a symbolic link leading out of the directory".into()));
                    continue;
                }
                Ok(target) if target.is_dir() => {
                    if seen.insert(target.clone()) {
                        walk(&entry, root, seen, out)?;
                    } else {
                        out.push(Entry::Refused(
                            entry,
                            "a symbolic link back into a directory already walked".into(),
                        ));
                    }
                    continue;
                }
                Ok(_) => {}
                Err(_) => {
                    out.push(Entry::Refused(entry, "a symbolic link to nothing (or a loop of links)".into()));
                    continue;
                }
            }
        } else if meta.is_dir() {
            if seen.insert(entry.canonicalize()?) {
                walk(&entry, root, seen, out)?;
            }
            continue;
        }
        out.push(Entry::Probe(entry));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn walks_stay_inside_and_never_loop() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), b"not yours").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.txt"), b"a").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/b.txt"), b"b").unwrap();
        symlink(outside.path().join("secret.txt"), d.join("escape.txt")).unwrap();
        symlink(outside.path(), d.join("escape-dir")).unwrap();
        symlink(d, d.join("sub/loop")).unwrap();
        symlink(d.join("a.txt"), d.join("inside-link.txt")).unwrap();
        symlink(d.join("self-1"), d.join("self-2")).unwrap();
        symlink(d.join("self-2"), d.join("self-1")).unwrap();

        let mut out = Vec::new();
        expand(d, &mut out).unwrap();
        let kinds: Vec<(String, bool)> = out
            .iter()
            .map(|e| match e {
                Entry::Probe(p) => (p.strip_prefix(d).unwrap().display().to_string(), true),
                Entry::Refused(p, _) => (p.strip_prefix(d).unwrap().display().to_string(), false),
            })
            .collect();
        let want: Vec<(String, bool)> = [
            ("a.txt", true),
            ("escape-dir", false),
            ("escape.txt", false),
            ("inside-link.txt", true),
            ("self-1", false),
            ("self-2", false),
            ("sub/b.txt", true),
            ("sub/loop", false),
        ]
        .iter()
        .map(|(p, ok)| (p.to_string(), *ok))
        .collect();
        assert_eq!(kinds, want);
    }
}
