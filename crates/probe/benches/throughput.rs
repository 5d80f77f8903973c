//! Probe throughput and accuracy beside its peers, all measured in the same run on the
//! same files: `exiftool -j -n` in batch mode (one process for the whole set),
//! `mediainfo --Output=JSON` (batches of files per process) and `ffprobe` (one process
//! per file, as it has no batch mode). Every tool runs on one core, one file at a time.
//! Prints a Markdown throughput table, then, for each set that carries a
//! `manifest.jsonl` of true values (the bulk set of `scripts/bench/make-bulk-set.sh`), a
//! Markdown accuracy table.
//!
//! Run: `scripts/bench-probe.sh` (generates the bulk set and passes it here), or
//! `cargo bench -p asset-probe --bench throughput -- [DIR...]` (default: fixtures/assets).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use asset_probe::isolate::{PoolConfig, ProbePool};
use asset_probe::{AssetMetadata, Limits, probe};
use serde_json::Value;

/// Each tool runs for at least this long (and at least once) per set.
const MIN_TIME: Duration = Duration::from_secs(3);
/// Files per `mediainfo` process.
const MEDIAINFO_BATCH: usize = 200;

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        // Skip the fixtures' provenance notes and the bulk set's stamp and manifest.
        if name.starts_with('.') || name == "manifest.jsonl" || name == "ORIGIN.md" {
            continue;
        }
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn tool_available(name: &str) -> bool {
    ["-ver", "-version", "--version"]
        .iter()
        .any(|flag| Command::new(name).arg(flag).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())
}

/// What one pass over a set cost: the fastest round's wall time (other processes share
/// this machine; the best round is the least disturbed) and the mean CPU time of a
/// round, the bench's own plus its waited-for children's, which contention barely moves.
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu_secs: f64,
}

/// CPU ticks used by this process and by its waited-for children, from /proc/self/stat
/// (utime + stime, cutime + cstime); Linux counts them at 100 a second.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |s| s.1);
    let f: Vec<u64> = after_name.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    f.get(11..15).map_or(0, |t| t.iter().sum()) as f64 / 100.0
}

/// Runs `f` at least `min_rounds` times and until `MIN_TIME` has passed; returns its
/// cost and what the last round returned.
fn measure<T>(min_rounds: u32, mut f: impl FnMut() -> T) -> (Cost, T) {
    let start = Instant::now();
    let cpu_start = cpu_secs();
    let mut best = Duration::MAX;
    let mut rounds = 0u32;
    loop {
        let round = Instant::now();
        let out = f();
        best = best.min(round.elapsed());
        rounds += 1;
        if rounds >= min_rounds && start.elapsed() >= MIN_TIME {
            let cpu_secs = (cpu_secs() - cpu_start) / f64::from(rounds);
            return (Cost { wall: best, cpu_secs }, out);
        }
    }
}

fn probe_all(files: &[PathBuf]) -> (Cost, Vec<Option<AssetMetadata>>) {
    let limits = Limits::default();
    measure(3, || files.iter().map(|f| std::hint::black_box(probe(f, &limits)).ok()).collect())
}

/// The probe as the worker runs it: in a probe process, a request and a reply over pipes
/// per file. One process, started (and reaped, so its CPU time is counted) each round.
fn probe_in_process_pool(files: &[PathBuf]) -> Cost {
    let limits = Limits::default();
    let config =
        PoolConfig { program: env!("CARGO_BIN_EXE_asset-probe-server").into(), args: vec![], processes: 1 };
    measure(3, || {
        let pool = ProbePool::new(config.clone());
        let n = files.iter().filter(|f| std::hint::black_box(pool.probe(f, &limits)).is_ok()).count();
        pool.shutdown();
        n
    })
    .0
}

/// The files that cost ours the most, on stderr, to say where the time goes.
fn report_slowest(files: &[PathBuf]) {
    let limits = Limits::default();
    let mut times: Vec<(Duration, &PathBuf)> = files
        .iter()
        .map(|f| {
            let start = Instant::now();
            let _ = std::hint::black_box(probe(f, &limits));
            (start.elapsed(), f)
        })
        .collect();
    let total: Duration = times.iter().map(|t| t.0).sum();
    times.sort_by_key(|t| std::cmp::Reverse(t.0));
    let top: Vec<String> = times
        .iter()
        .take(5)
        .map(|(d, f)| format!("{} {:.1} ms", f.display(), d.as_secs_f64() * 1e3))
        .collect();
    eprintln!("probe, slowest of {:.0} ms in all: {}", total.as_secs_f64() * 1e3, top.join(", "));
}

/// One `exiftool` process over the whole set (file list through `-@`, so no argument
/// limit forces a split). Returns the rate and the parsed records keyed by path.
fn exiftool_all(files: &[PathBuf]) -> Option<(Cost, HashMap<PathBuf, Value>)> {
    if !tool_available("exiftool") {
        return None;
    }
    let mut list = tempfile::NamedTempFile::new().expect("temp file");
    for f in files {
        writeln!(list, "{}", f.display()).expect("write arg file");
    }
    let (r, out) = measure(3, || {
        Command::new("exiftool")
            .args(["-j", "-n", "-q", "-q", "-@"])
            .arg(list.path())
            .stderr(Stdio::null())
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    });
    let records = serde_json::from_slice::<Vec<Value>>(&out).unwrap_or_default();
    let by_path = records
        .into_iter()
        .filter_map(|v| Some((PathBuf::from(v.get("SourceFile")?.as_str()?), v)))
        .collect();
    Some((r, by_path))
}

/// `mediainfo --Output=JSON` over batches of files. Returns the rate and each file's
/// `media` object keyed by path.
fn mediainfo_all(files: &[PathBuf]) -> Option<(Cost, HashMap<PathBuf, Value>)> {
    if !tool_available("mediainfo") {
        return None;
    }
    let (r, outs) = measure(3, || {
        files
            .chunks(MEDIAINFO_BATCH)
            .map(|chunk| {
                Command::new("mediainfo")
                    .arg("--Output=JSON")
                    .args(chunk)
                    .stderr(Stdio::null())
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
    });
    let mut by_path = HashMap::new();
    for out in outs {
        // One file gives an object, several an array of them.
        let docs = match serde_json::from_slice::<Value>(&out) {
            Ok(Value::Array(a)) => a,
            Ok(v) => vec![v],
            Err(_) => continue,
        };
        for d in docs {
            let Some(media) = d.get("media").filter(|m| m.is_object()) else { continue };
            if let Some(r) = media.get("@ref").and_then(Value::as_str) {
                by_path.insert(PathBuf::from(r), media.clone());
            }
        }
    }
    Some((r, by_path))
}

/// One round only: at ~10 files/s it is minutes on the bulk set.
fn ffprobe_all(files: &[PathBuf]) -> Option<Cost> {
    if !tool_available("ffprobe") {
        return None;
    }
    Some(
        measure(1, || {
            for f in files {
                let _ = Command::new("ffprobe")
                    .args(["-v", "error", "-of", "json", "-show_format", "-show_streams"])
                    .arg(f)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        })
        .0,
    )
}

fn bytes_of(files: &[PathBuf]) -> u64 {
    files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
}

/// One row of the throughput table; `ours` is the probe's cost on the same files.
fn row(set: &str, tool: &str, files: &[PathBuf], cost: Option<Cost>, ours: Cost) {
    let n = files.len() as f64;
    let mb = bytes_of(files) as f64 / 1e6;
    let Some(c) = cost else {
        println!("| {set} | {tool} | {n} | {mb:.1} | not installed | | | | |");
        return;
    };
    let wall = c.wall.as_secs_f64();
    println!(
        "| {set} | {tool} | {n} | {mb:.1} | {:.1} | {:.1} | {:.1} | {:.1}× | {:.1}× |",
        n / wall,
        mb / wall,
        n / c.cpu_secs.max(0.01),
        wall / ours.wall.as_secs_f64(),
        c.cpu_secs / ours.cpu_secs.max(0.01),
    );
}

// ------------------------------------------------------------------ accuracy

/// The fields compared with the truth, in table order.
const FIELDS: [&str; 7] =
    ["width", "height", "duration_seconds", "frame_count", "sample_rate", "page_count", "line_count"];

/// What one tool said about one file, in our field names and units.
#[derive(Default)]
struct Seen(BTreeMap<&'static str, f64>);

impl Seen {
    fn set(&mut self, field: &'static str, v: Option<f64>) {
        if let Some(v) = v {
            self.0.insert(field, v);
        }
    }
}

fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        // mediainfo writes every number as a string; exiftool writes Matroska
        // durations as "HH:MM:SS.fffffffff" even with -n.
        Value::String(s) => {
            let s = s.trim();
            if let Ok(x) = s.parse() {
                return Some(x);
            }
            let parts: Vec<f64> = s.split(':').map(str::parse).collect::<Result<_, _>>().ok()?;
            (parts.len() == 3).then(|| parts[0] * 3600.0 + parts[1] * 60.0 + parts[2])
        }
        _ => None,
    }
}

fn from_probe(m: &AssetMetadata) -> Seen {
    let mut s = Seen::default();
    s.set("width", m.width.map(f64::from));
    s.set("height", m.height.map(f64::from));
    s.set("duration_seconds", m.duration_seconds);
    s.set("frame_count", m.frame_count.map(|v| v as f64));
    s.set("sample_rate", m.sample_rate.map(f64::from));
    s.set("page_count", m.page_count.map(f64::from));
    s.set("line_count", m.line_count.map(|v| v as f64));
    s
}

/// exiftool's `-j -n` record mapped to our fields, comparing like with like:
/// - display size: ImageWidth/ImageHeight, swapped when its Orientation is 5–8 (images)
///   or its Rotation is 90/270 (video), which is what our contract reports; DICOM
///   Columns/Rows;
/// - DICOM frame count: NumberOfFrames, absent meaning 1 as the standard says;
/// - sample rate: SampleRate or AudioSampleRate; for MP3, `-n` prints the header's raw
///   sample-rate index, decoded here with the raw MPEGAudioVersion bits;
/// - line count: LineCount (plain text) or RowCount (CSV).
fn from_exiftool(v: &Value, data_type: &str) -> Seen {
    let mut s = Seen::default();
    let g = |k: &str| num(v.get(k));
    let (mut w, mut h) = (g("ImageWidth"), g("ImageHeight"));
    if data_type == "dicom" {
        (w, h) = (g("Columns"), g("Rows"));
    }
    let quarter_turn = matches!(g("Orientation"), Some(o) if (5.0..=8.0).contains(&o))
        || matches!(g("Rotation"), Some(r) if r == 90.0 || r == 270.0);
    if quarter_turn {
        (w, h) = (h, w);
    }
    s.set("width", w);
    s.set("height", h);
    s.set("duration_seconds", g("Duration"));
    let frames = if data_type == "dicom" && g("Rows").is_some() {
        g("NumberOfFrames").or(Some(1.0))
    } else {
        g("FrameCount")
    };
    s.set("frame_count", frames);
    let mut rate = g("SampleRate").or(g("AudioSampleRate"));
    if v.get("FileType").and_then(Value::as_str) == Some("MP3") {
        let table: &[f64] = match g("MPEGAudioVersion") {
            Some(3.0) => &[44100.0, 48000.0, 32000.0],
            Some(2.0) => &[22050.0, 24000.0, 16000.0],
            Some(0.0) => &[11025.0, 12000.0, 8000.0],
            _ => &[],
        };
        rate = rate.and_then(|i| table.get(i as usize).copied());
    }
    s.set("sample_rate", rate);
    s.set("page_count", g("PageCount"));
    s.set("line_count", g("LineCount").or(g("RowCount")));
    s
}

/// mediainfo's JSON mapped to our fields: Width/Height of the Image or Video track
/// (swapped for a video Rotation of 90/270; mediainfo reports no EXIF orientation, so
/// its image sizes are stored sizes), General Duration, Video FrameCount, Audio
/// SamplingRate. It reports nothing for DICOM, PDF pages or text lines.
fn from_mediainfo(media: &Value) -> Seen {
    let mut s = Seen::default();
    let tracks = media.get("track").and_then(Value::as_array).cloned().unwrap_or_default();
    let track = |t: &str| tracks.iter().find(|x| x.get("@type").and_then(Value::as_str) == Some(t));
    if let Some(t) = track("Video").or(track("Image")) {
        let (mut w, mut h) = (num(t.get("Width")), num(t.get("Height")));
        if matches!(num(t.get("Rotation")), Some(r) if r == 90.0 || r == 270.0) {
            (w, h) = (h, w);
        }
        s.set("width", w);
        s.set("height", h);
    }
    if let Some(t) = track("Video") {
        s.set("frame_count", num(t.get("FrameCount")));
    }
    if let Some(t) = track("General") {
        s.set("duration_seconds", num(t.get("Duration")));
    }
    if let Some(t) = track("Audio") {
        s.set("sample_rate", num(t.get("SamplingRate")));
    }
    s
}

/// Durations match within 1 % or 50 ms, whichever is larger, plus the manifest's
/// `duration_extra_tolerance` (MP3 encoder delay and padding); everything else exactly.
fn matches(field: &str, truth: f64, got: Option<f64>, extra: f64) -> bool {
    let Some(got) = got else { return false };
    if field == "duration_seconds" {
        (got - truth).abs() <= (truth * 0.01).max(0.05) + extra
    } else {
        got == truth
    }
}

/// Per (data type, field): files matched and files with that truth, per tool; plus how
/// many files of the type had every field right.
fn accuracy(root: &Path, manifest: &[Value], tools: &[(&str, HashMap<PathBuf, Seen>)]) {
    type Key = (String, &'static str);
    let mut totals: BTreeMap<Key, usize> = BTreeMap::new();
    let mut hits: BTreeMap<(Key, usize), usize> = BTreeMap::new();
    let mut reported: BTreeMap<(Key, usize), usize> = BTreeMap::new();
    for t in manifest {
        let (Some(rel), Some(dt)) = (t["path"].as_str(), t["data_type"].as_str()) else { continue };
        let path = root.join(rel);
        let extra = t.get("duration_extra_tolerance").and_then(Value::as_f64).unwrap_or(0.0);
        let all_key = (dt.to_string(), "all of these");
        *totals.entry(all_key.clone()).or_default() += 1;
        let mut all_ok = vec![true; tools.len()];
        for field in FIELDS {
            let Some(truth) = t.get(field).and_then(Value::as_f64) else { continue };
            let key = (dt.to_string(), field);
            *totals.entry(key.clone()).or_default() += 1;
            for (i, (_, seen)) in tools.iter().enumerate() {
                let got = seen.get(&path).and_then(|s| s.0.get(field).copied());
                if got.is_some() {
                    *reported.entry((key.clone(), i)).or_default() += 1;
                }
                if matches(field, truth, got, extra) {
                    *hits.entry((key.clone(), i)).or_default() += 1;
                } else {
                    all_ok[i] = false;
                }
            }
        }
        for (i, ok) in all_ok.into_iter().enumerate() {
            if ok {
                *hits.entry((all_key.clone(), i)).or_default() += 1;
            }
        }
    }
    print!("| data type | field | files |");
    for (name, _) in tools {
        print!(" {name} |");
    }
    print!("\n|---|---|---:|");
    for _ in tools {
        print!("---:|");
    }
    println!();
    for ((dt, field), n) in &totals {
        let key = (dt.clone(), *field);
        print!("| {dt} | {field} | {n} |");
        for i in 0..tools.len() {
            let k = hits.get(&(key.clone(), i)).copied().unwrap_or(0);
            let not_reported = *field != "all of these" && !reported.contains_key(&(key.clone(), i));
            let note = if not_reported { " (not reported)" } else { "" };
            print!(" {k}/{n} ({:.1} %){note} |", 100.0 * k as f64 / *n as f64);
        }
        println!();
    }
}

fn main() {
    let as_bench = std::env::args().any(|a| a == "--bench");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let dirs: Vec<PathBuf> = if args.is_empty() {
        vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets")]
    } else {
        args.iter().map(PathBuf::from).collect()
    };
    let mut accuracy_tables = Vec::new();
    println!(
        "| set | tool | files | MB | files/s (best round) | MB/s | files per CPU-s | probe ÷ tool, files/s | probe ÷ tool, per CPU-s |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for dir in dirs {
        let mut files = Vec::new();
        collect(&dir, &mut files);
        files.sort();
        if files.is_empty() {
            eprintln!("no files under {}", dir.display());
            continue;
        }
        let manifest: Option<Vec<Value>> = std::fs::read_to_string(dir.join("manifest.jsonl"))
            .ok()
            .map(|s| s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect());
        let set = match &manifest {
            Some(_) => format!("bulk `{}`", dir.file_name().unwrap_or_default().to_string_lossy()),
            None => format!(
                "`{}`",
                dir.iter().rev().take(2).collect::<Vec<_>>().into_iter().rev().collect::<PathBuf>().display()
            ),
        };
        // Warm the page cache so every tool reads from memory.
        for f in &files {
            let _ = std::fs::read(f);
        }
        let (p, ours) = probe_all(&files);
        report_slowest(&files);
        row(&set, "probe", &files, Some(p), p);
        row(
            &set,
            "probe in a probe process (as the worker runs it)",
            &files,
            Some(probe_in_process_pool(&files)),
            p,
        );
        if !as_bench {
            // `cargo test --all-targets` runs this binary too: the peers are for the
            // documented bench commands only (exiftool expands entities and inflates
            // streams, so the hostile fixtures cost it many GiB).
            println!("(peer tools skipped: run with `cargo bench` for the comparison)");
            continue;
        }
        // The peers get the files a customer would upload in good faith: the hostile ones
        // (a `bad/` directory) would measure how long exiftool takes to expand a billion
        // laughs, not metadata reading. Ours is timed again on the same files for the ratio.
        let benign: Vec<PathBuf> = files.iter().filter(|f| !f.iter().any(|c| c == "bad")).cloned().collect();
        let (files, p, ours) = if benign.len() < files.len() {
            let (pb, ob) = probe_all(&benign);
            row(&set, "probe (without `bad/`: what the peers get)", &benign, Some(pb), pb);
            (benign, pb, ob)
        } else {
            (files, p, ours)
        };
        let exif = exiftool_all(&files);
        row(&set, "exiftool -j -n (one process)", &files, exif.as_ref().map(|e| e.0), p);
        let mi = mediainfo_all(&files);
        let mi_tool = format!("mediainfo --Output=JSON ({MEDIAINFO_BATCH} files a process)");
        row(&set, &mi_tool, &files, mi.as_ref().map(|m| m.0), p);
        // ffprobe starts a process per file; on a manifest set it runs on the audio and
        // video files only (where it is the reference tool), and ours is timed again on
        // the same subset for the ratio.
        if let Some(manifest) = &manifest {
            let av: Vec<PathBuf> = manifest
                .iter()
                .filter(|t| matches!(t["data_type"].as_str(), Some("audio" | "video")))
                .filter_map(|t| Some(dir.join(t["path"].as_str()?)))
                .collect();
            let (pav, _) = probe_all(&av);
            row(&set, "probe (audio + video only)", &av, Some(pav), pav);
            row(&set, "ffprobe, a process per file (audio + video only)", &av, ffprobe_all(&av), pav);
        } else {
            row(&set, "ffprobe, a process per file", &files, ffprobe_all(&files), p);
        }
        if let Some(manifest) = manifest {
            let mut tools = vec![(
                "probe",
                files
                    .iter()
                    .zip(&ours)
                    .filter_map(|(f, m)| Some((f.clone(), from_probe(m.as_ref()?))))
                    .collect::<HashMap<_, _>>(),
            )];
            let data_type: HashMap<PathBuf, String> = manifest
                .iter()
                .filter_map(|t| Some((dir.join(t["path"].as_str()?), t["data_type"].as_str()?.to_string())))
                .collect();
            if let Some((_, recs)) = exif {
                let seen = recs
                    .iter()
                    .map(|(f, v)| (f.clone(), from_exiftool(v, data_type.get(f).map_or("", String::as_str))))
                    .collect();
                tools.push(("exiftool -j -n", seen));
            }
            if let Some((_, recs)) = mi {
                tools.push(("mediainfo", recs.iter().map(|(f, v)| (f.clone(), from_mediainfo(v))).collect()));
            }
            accuracy_tables.push((set, dir, manifest, tools));
        }
    }
    for (set, dir, manifest, tools) in accuracy_tables {
        println!();
        println!("Accuracy on {set} against manifest.jsonl (files whose value matches the truth):");
        println!();
        accuracy(&dir, &manifest, &tools);
    }
}
