//! `metadata-worker probe FILE...`: the probe's output contract, one JSON line per file.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use asset_core::{AssetMetadata, ErrorBody, Limits};
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

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits { max_file_bytes: args.max_bytes, max_millis: args.timeout_ms, ..Limits::default() };
    let mut files = Vec::new();
    for path in &args.files {
        expand(path, &mut files).with_context(|| format!("listing {}", path.display()))?;
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for path in &files {
        let display = path.to_string_lossy();
        let line = match asset_probe::probe(path, &limits) {
            Ok(metadata) => {
                ProbeLine { path: &display, metadata: Some(metadata), size_bytes: None, error: None }
            }
            Err(err) => ProbeLine {
                path: &display,
                metadata: None,
                size_bytes: Some(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)),
                error: Some(ErrorBody { code: err.code(), message: err.to_string() }),
            },
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A file stands for itself (even if missing: the probe reports `io` for it); a
/// directory stands for the files below it, sorted so output order is stable.
fn expand(path: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        expand(&entry, out)?;
    }
    Ok(())
}
