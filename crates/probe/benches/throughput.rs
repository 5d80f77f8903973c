//! Probe throughput beside its peers, all measured in the same run on the same files:
//! `exiftool -j -n` in batch mode (one process for the whole set) and `ffprobe` (one
//! process per file, as it has no batch mode). Prints one Markdown table.
//!
//! Run: `scripts/bench-probe.sh` (builds in release, adds a generated bulk set), or
//! `cargo bench -p asset-probe --bench throughput -- [DIR...]` (default: fixtures/assets).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asset_probe::{Limits, probe};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_none_or(|e| e != "md") {
            out.push(p);
        }
    }
}

fn tool_available(name: &str) -> bool {
    Command::new(name).arg("-ver").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
        || Command::new(name).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Runs `f` repeatedly for at least `min` and returns files per second.
fn rate(files: usize, min: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut rounds = 0u32;
    while rounds == 0 || start.elapsed() < min {
        f();
        rounds += 1;
    }
    (files as f64 * f64::from(rounds)) / start.elapsed().as_secs_f64()
}

fn probe_rate(files: &[PathBuf]) -> f64 {
    let limits = Limits::default();
    rate(files.len(), Duration::from_secs(3), || {
        for f in files {
            let _ = std::hint::black_box(probe(f, &limits));
        }
    })
}

fn exiftool_rate(files: &[PathBuf]) -> Option<f64> {
    if !tool_available("exiftool") {
        return None;
    }
    Some(rate(files.len(), Duration::from_secs(3), || {
        // One batch call per round, as an importer using exiftool would make; argument
        // lists are chunked to stay under the OS limit.
        for chunk in files.chunks(2000) {
            let _ = Command::new("exiftool")
                .args(["-j", "-n", "-q", "-q"])
                .args(chunk)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }))
}

fn ffprobe_rate(files: &[PathBuf]) -> Option<f64> {
    if !tool_available("ffprobe") {
        return None;
    }
    Some(rate(files.len(), Duration::from_secs(3), || {
        for f in files {
            let _ = Command::new("ffprobe")
                .args(["-v", "error", "-of", "json", "-show_format", "-show_streams"])
                .arg(f)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }))
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.0}"))
}

fn ratio(a: f64, b: Option<f64>) -> String {
    b.map_or("n/a".into(), |b| format!("{:.1}×", a / b))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let dirs: Vec<PathBuf> = if args.is_empty() {
        vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets")]
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    println!(
        "| set | files | MB | probe files/s | exiftool -j -n (batch) files/s | ffprobe files/s | probe ÷ exiftool | probe ÷ ffprobe |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for dir in dirs {
        let mut files = Vec::new();
        collect(&dir, &mut files);
        files.sort();
        if files.is_empty() {
            eprintln!("no files under {}", dir.display());
            continue;
        }
        let bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
        // Warm the page cache so every tool reads from memory.
        for f in &files {
            let _ = std::fs::read(f);
        }
        let p = probe_rate(&files);
        let e = exiftool_rate(&files);
        let ff = ffprobe_rate(&files);
        println!(
            "| {} | {} | {:.1} | {:.0} | {} | {} | {} | {} |",
            dir.display(),
            files.len(),
            bytes as f64 / 1e6,
            p,
            fmt_rate(e),
            fmt_rate(ff),
            ratio(p, e),
            ratio(p, ff)
        );
    }
}
