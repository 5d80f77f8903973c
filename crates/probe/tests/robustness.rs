//! Hostile input: every fixture, cut, flipped, with its length fields inflated, its
//! structures repeated and spliced with other fixtures, must give metadata or a typed
//! error, never a panic, never a run past the time budget and never a memory blow-up.
//! The last three families are the mutations that found most of issue 9's bugs; each is
//! its own `#[test]` so a failing class shows by name. Everything is deterministic (a
//! fixed xorshift seed): a failure names the fixture and the mutation, saves the input
//! and says how to run it again. Coverage-guided fuzzing lives in `crates/probe/fuzz`.
//!
//! A stack overflow or a failed allocation aborts the test process instead of failing
//! one case. The overflow message names the thread, which is named after the case; and
//! each family keeps the case it is running in `target/tmp/robustness/FAMILY/`
//! (`current.txt` names it, `case-N` is the input), so after any abort the cases in
//! flight are there.

mod robustness {
    pub mod structures;
}

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::Duration;

use asset_probe::{ErrorCode, Format, Limits, ProbeError, detect, probe, probe_in_place};
use robustness::structures::{self, Enc, Field, Span};

/// Wall-clock budget of one hostile input in this debug build (release is 10–30×
/// faster; production allows 30 s): generous, so a loaded CI machine does not fail it,
/// and still far below what a CPU trap takes.
const BUDGET: Duration = Duration::from_secs(10);
/// Growth of the process's peak resident memory that one input may cause: 8× the
/// probe's own `max_memory_bytes` default. A declared 4 GB length that is touched
/// shows here.
const MAX_RSS_GROWTH_KB: u64 = 256 * 1024;
/// Address space the whole test process may reserve beyond what it had at start: room
/// for two families each filling a 32-bit declared length (4 GiB would not be: both
/// parallel families would then die on any small allocation instead of reporting).
const MAX_RESERVE: u64 = 10 << 30;
/// A family stops after this many abandoned (timed-out) parser threads, which keep
/// spinning and would slow every later case into a false timeout.
const MAX_TIMEOUTS: usize = 3;
/// Marks the threads whose panics this test reports itself (the hook stays quiet).
const HOSTILE: &str = "hostile: ";

struct Fixture {
    /// Path under fixtures/assets, e.g. `video/h264.mkv`.
    name: String,
    bytes: Vec<u8>,
    format: Option<Format>,
}

fn fixtures() -> Vec<Fixture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets");
    let mut paths = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_none_or(|e| e != "md") {
                paths.push(p);
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let format = detect::detect(&bytes[..bytes.len().min(detect::SNIFF_LEN)]);
            let name = p.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            Fixture { name, bytes, format }
        })
        .collect()
}

/// The fixtures less near-copies (same format, same length: the eight JPEG
/// orientations, the TIFF variants), which would only repeat the structural families'
/// cases at the cost of CI time.
fn distinct(all: Vec<Fixture>) -> impl Iterator<Item = Fixture> {
    let mut seen = std::collections::HashSet::new();
    all.into_iter().filter(move |f| seen.insert((f.format.map(|fm| format!("{fm:?}")), f.bytes.len())))
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One hostile input and how it was made.
struct Case {
    fixture: String,
    mutation: String,
    bytes: Vec<u8>,
}

/// Runs a family's cases, collecting every failure, and fails the test with all of them.
struct Family {
    name: &'static str,
    /// `target/tmp/robustness/NAME`: the input being probed and `current.txt`.
    dir: PathBuf,
    runs: usize,
    timeouts: usize,
    failures: Vec<String>,
    /// How many cases got metadata, and each error code: printed at the end (see it
    /// with `--nocapture`), so a family that stops reaching the parsers shows.
    answers: std::collections::BTreeMap<String, usize>,
}

impl Family {
    fn new(name: &'static str) -> Self {
        static QUIET: Once = Once::new();
        // A panic inside catch_unwind still prints; keep the output readable, but only
        // for the parser threads this test names, so assertion messages still show.
        QUIET.call_once(|| {
            limit_address_space();
            let previous = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                if !std::thread::current().name().is_some_and(|n| n.starts_with(HOSTILE)) {
                    previous(info);
                }
            }));
        });
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("robustness").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Family { name, dir, runs: 0, timeouts: 0, failures: Vec::new(), answers: Default::default() }
    }

    /// Probes one case on its own thread (std's default stack, as the probe's pool
    /// threads have) under `catch_unwind`, so that a parser panic is a failure here
    /// rather than the `corrupt_file` that `probe` would turn it into. Returns false
    /// once the family must stop.
    fn check(&mut self, case: Case) -> bool {
        if self.timeouts >= MAX_TIMEOUTS {
            return false;
        }
        self.runs += 1;
        // What runs now, for whoever reads this after an abort.
        let current = format!("{} [{}] -> case-{}\n", case.fixture, case.mutation, self.runs);
        std::fs::write(self.dir.join("current.txt"), current).unwrap();
        let path = self.dir.join(format!("case-{}", self.runs));
        std::fs::write(&path, &case.bytes).unwrap();
        let limits = Limits { max_millis: BUDGET.as_millis() as u64, ..Limits::default() };
        let rss_before = peak_rss::reset();
        let (tx, rx) = sync_channel(1);
        let for_thread = path.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{HOSTILE}{} [{}]", case.fixture, case.mutation))
            .spawn(move || {
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| probe_in_place(&for_thread, &limits)));
                let _ = tx.send(outcome.map_err(|p| panic_message(p.as_ref())));
            })
            .unwrap();
        let problem = match rx.recv_timeout(BUDGET) {
            Ok(outcome) => {
                let _ = thread.join();
                let rss_growth = peak_rss::growth_since(rss_before);
                let answer = match &outcome {
                    Ok(Ok(_)) => "metadata".to_string(),
                    Ok(Err(e)) => e.code().to_string(),
                    Err(_) => "panic".to_string(),
                };
                *self.answers.entry(answer).or_default() += 1;
                match outcome {
                    Err(panic) => Some(format!("the parser panicked: {panic}")),
                    Ok(Err(e)) if untyped(&e) => {
                        Some(format!("untyped answer {} for a complete file: {e}", e.code()))
                    }
                    _ if rss_growth.is_some_and(|kb| kb > MAX_RSS_GROWTH_KB) => Some(format!(
                        "peak resident memory grew by {} MiB (bound {} MiB)",
                        rss_growth.unwrap_or(0) / 1024,
                        MAX_RSS_GROWTH_KB / 1024
                    )),
                    _ => None,
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                self.timeouts += 1;
                Some(format!("ran past the time budget of {} s (thread abandoned)", BUDGET.as_secs()))
            }
            Err(RecvTimeoutError::Disconnected) => Some("the parser thread ended without an answer".into()),
        };
        match problem {
            Some(problem) => {
                let saved = self.save(&case);
                self.failures.push(format!(
                    "{} [{}]: {problem}\n    input saved as {}; run again with `cargo test -p asset-probe --test robustness {} -- --exact` or `target/release/examples/probe_one {}`",
                    case.fixture,
                    case.mutation,
                    saved.display(),
                    self.name,
                    saved.display()
                ));
                let _ = std::fs::remove_file(&path);
            }
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        self.timeouts < MAX_TIMEOUTS
    }

    fn save(&self, case: &Case) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("robustness-failures").join(self.name);
        let _ = std::fs::create_dir_all(&dir);
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
                .collect()
        };
        let path = dir.join(format!("{}--{}", clean(&case.fixture), clean(&case.mutation)));
        let _ = std::fs::write(&path, &case.bytes);
        path
    }

    fn finish(self) {
        let _ = std::fs::remove_file(self.dir.join("current.txt"));
        println!("{}: {} inputs, answers {:?}", self.name, self.runs, self.answers);
        let mut failures = self.failures;
        if self.timeouts >= MAX_TIMEOUTS {
            failures
                .push(format!("stopped after {MAX_TIMEOUTS} time-budget overruns; later cases did not run"));
        }
        assert!(
            failures.is_empty(),
            "{}: {} of {} hostile inputs failed:\n{}",
            self.name,
            failures.len(),
            self.runs,
            failures.join("\n")
        );
    }
}

/// Caps the process's address space at what it has now plus [`MAX_RESERVE`], so that
/// an extractor which reserves what a header declares cannot take the CI machine down:
/// a fallible reservation past the cap surfaces as an `io` answer (a failure below), an
/// infallible one aborts the process with "memory allocation of N bytes failed" (see
/// the module doc for where the case is then). Touched memory below the cap is what
/// [`MAX_RSS_GROWTH_KB`] bounds; untouched reservations below it are the fuzz harness's
/// to catch (it caps at 512 MiB).
fn limit_address_space() {
    let Some(now_kb) = peak_rss::status_kb("VmSize:") else { return };
    let cap = now_kb * 1024 + MAX_RESERVE;
    let hard = rlimit::getrlimit(rlimit::Resource::AS).map_or(rlimit::INFINITY, |(_, hard)| hard);
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, cap.min(hard), hard) {
        println!("robustness: cannot limit the address space ({e}); reservations go unchecked");
    }
}

/// An error that says nothing about the file: a complete local file never lacks bytes,
/// and `io` (retryable!) on one we just wrote means a parse failure passed off as I/O.
fn untyped(e: &ProbeError) -> bool {
    matches!(e.code(), ErrorCode::Io | ErrorCode::Internal | ErrorCode::Timeout)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into())
}

/// The process's peak resident set, reset before each case through
/// `/proc/self/clear_refs` (Linux). Families run in parallel, so a growth is charged to
/// whichever case reads it: the bound is far above what a sound parser of these small
/// files needs, and a blow-up is a bug wherever it is charged. Elsewhere: no check.
mod peak_rss {
    pub fn status_kb(key: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    }

    /// Resets the peak to the current resident set and returns it, in KiB.
    pub fn reset() -> Option<u64> {
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
        status_kb("VmRSS:")
    }

    pub fn growth_since(before: Option<u64>) -> Option<u64> {
        Some(status_kb("VmHWM:")?.saturating_sub(before?))
    }
}

/// Cuts at many lengths and random byte flips concentrated in the header, where parsers
/// trust declared sizes.
#[test]
fn truncated_and_mutated_fixtures_never_panic_or_hang() {
    let mut family = Family::new("truncated_and_mutated_fixtures_never_panic_or_hang");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    'fixtures: for f in fixtures() {
        let len = f.bytes.len();
        // Cuts: inside the first header bytes, at fractions of the file, one byte short.
        let mut cuts: Vec<usize> =
            vec![1, 4, 12, 64, 200, 1024, len / 4, len / 2, len * 3 / 4, len.saturating_sub(1)];
        cuts.retain(|&c| c < len);
        cuts.dedup();
        for cut in cuts {
            let case = Case {
                fixture: f.name.clone(),
                mutation: format!("cut at {cut}"),
                bytes: f.bytes[..cut].to_vec(),
            };
            if !family.check(case) {
                break 'fixtures;
            }
        }
        for round in 0..8 {
            let mut bytes = f.bytes.clone();
            if bytes.is_empty() {
                break;
            }
            let window = bytes.len().min(if round % 2 == 0 { 512 } else { usize::MAX });
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(window);
                bytes[at] = match rng.below(4) {
                    0 => 0xFF,
                    1 => 0x00,
                    2 => bytes[at] ^ (1 << rng.below(8)),
                    _ => rng.next() as u8,
                };
            }
            let case = Case { fixture: f.name.clone(), mutation: format!("mutation round {round}"), bytes };
            if !family.check(case) {
                break 'fixtures;
            }
        }
    }
    family.finish();
}

/// Most length fields tried per fixture: those the structure walkers know first, then
/// integers of the first KiB whose value could be a length (8 ≤ v ≤ file size).
const MAX_LENGTH_FIELDS: usize = 30;
/// Guessed fields added to the known ones: at least this many, and enough to reach
/// [`MIN_LENGTH_FIELDS`] for formats without a walker (GIF, BMP, MP3).
const MIN_GUESSED_FIELDS: usize = 6;
const MIN_LENGTH_FIELDS: usize = 18;

fn length_fields(bytes: &[u8], spans: &[Span], rng: &mut XorShift) -> Vec<Field> {
    let mut known: Vec<Field> = spans.iter().filter_map(|s| s.size).collect();
    known.sort_by_key(|f| f.at);
    known.dedup();
    let n = bytes.len() as u64;
    let mut guessed = Vec::new();
    for at in 0..bytes.len().min(1024) {
        for enc in [Enc::U16Be, Enc::U16Le, Enc::U32Be, Enc::U32Le, Enc::U64Be, Enc::U64Le] {
            if enc.read(bytes, at).is_some_and(|v| (8..=n).contains(&v)) && !known.iter().any(|k| k.at == at)
            {
                guessed.push(Field { at, enc });
            }
        }
    }
    // Known fields spread over the file, then guesses at random, up to the cap.
    let mut chosen = spread(&known, MAX_LENGTH_FIELDS - MIN_GUESSED_FIELDS);
    let wanted = (chosen.len() + MIN_GUESSED_FIELDS).max(MIN_LENGTH_FIELDS);
    while chosen.len() < wanted && !guessed.is_empty() {
        chosen.push(guessed.swap_remove(rng.below(guessed.len())));
    }
    chosen
}

/// Up to `n` items evenly spread over `items`, first and last included.
fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * (items.len() - 1) / (n - 1).max(1)].clone()).collect()
}

fn enc_name(enc: Enc) -> String {
    match enc {
        Enc::Vint(w) => format!("vint{w}"),
        e => format!("{e:?}").to_lowercase(),
    }
}

/// Length-field inflation: each size field set to its maximum, to the file's size, and
/// in turn to one over, one under, 0 and its sign bit.
#[test]
fn inflated_length_fields() {
    let mut family = Family::new("inflated_length_fields");
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    'fixtures: for f in distinct(fixtures()) {
        // Text has no length fields; SVG's are decimal and not worth a binary scan.
        if matches!(f.format, None | Some(Format::Text | Format::Svg)) {
            continue;
        }
        let spans = structures::spans(&f.bytes);
        let n = f.bytes.len() as u64;
        for (k, field) in length_fields(&f.bytes, &spans, &mut rng).into_iter().enumerate() {
            let old = field.enc.read(&f.bytes, field.at).unwrap_or(0);
            let max = field.enc.max();
            // Every field gets the maximum and the file's size; the other values take
            // turns, which keeps the family fast enough for a debug CI run.
            let mut values = vec![max, n, [n + 1, n - 1, 0, max / 2 + 1][k % 4]];
            values.retain(|&v| v <= max && v != old);
            values.dedup();
            for value in values {
                let mut bytes = f.bytes.clone();
                field.enc.write(&mut bytes, field.at, value);
                let mutation = format!("{}@{:#x}: {old} -> {value}", enc_name(field.enc), field.at);
                if !family.check(Case { fixture: f.name.clone(), mutation, bytes }) {
                    break 'fixtures;
                }
            }
        }
    }
    family.finish();
}

/// `bytes` with `spans[i]` repeated `extra` more times right after itself, the size
/// fields of the structures around it grown to match (where they can hold it), and a
/// field counting such structures raised by `extra`.
fn duplicate(bytes: &[u8], spans: &[Span], i: usize, extra: usize) -> Vec<u8> {
    let s = &spans[i];
    let piece = &bytes[s.start..s.end];
    let mut out = Vec::with_capacity(bytes.len() + piece.len() * extra);
    out.extend_from_slice(&bytes[..s.end]);
    for _ in 0..extra {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(&bytes[s.end..]);
    let delta = (piece.len() * extra) as u64;
    // Parents' size fields sit before the insertion point, so their offsets still hold.
    let grown = s.parents.iter().filter_map(|&p| spans[p].size.map(|f| (f, delta)));
    let counted = s.counted_by.map(|f| (f, extra as u64));
    for (field, add) in grown.chain(counted) {
        if let Some(v) = field.enc.read(&out, field.at)
            && v.checked_add(add).is_some_and(|v| v <= field.enc.max())
        {
            field.enc.write(&mut out, field.at, v + add);
        }
    }
    out
}

/// Structures tried per fixture, each repeated once and 63 times.
const MAX_DUPLICATED: usize = 6;
/// Bytes a "million boxes" case may add: the smallest structure of the first fixture of
/// each format, repeated until this much (at most 100 000 times).
const MANY_BYTES: usize = 1 << 20;

/// Chunk, box and element duplication: a structure repeated right after itself, with the
/// enclosing sizes fixed up so parsers walk every copy.
#[test]
fn duplicated_structures() {
    let mut family = Family::new("duplicated_structures");
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    let mut many_done: Vec<Format> = Vec::new();
    'fixtures: for f in distinct(fixtures()) {
        let spans = structures::spans(&f.bytes);
        if spans.is_empty() {
            continue;
        }
        let mut picks = spread(&(0..spans.len()).collect::<Vec<_>>(), MAX_DUPLICATED - 1);
        picks.push(rng.below(spans.len()));
        picks.sort_unstable();
        picks.dedup();
        for i in picks {
            for extra in [1, 63] {
                let bytes = duplicate(&f.bytes, &spans, i, extra);
                let s = &spans[i];
                let mutation = format!("bytes {:#x}..{:#x} repeated {extra} more times", s.start, s.end);
                if !family.check(Case { fixture: f.name.clone(), mutation, bytes }) {
                    break 'fixtures;
                }
            }
        }
        if let Some(format) = f.format.filter(|fm| !many_done.contains(fm)) {
            many_done.push(format);
            let smallest = (0..spans.len())
                .filter(|&i| spans[i].end - spans[i].start >= 8)
                .min_by_key(|&i| spans[i].end - spans[i].start);
            if let Some(i) = smallest {
                let extra = (MANY_BYTES / (spans[i].end - spans[i].start)).min(100_000);
                let bytes = duplicate(&f.bytes, &spans, i, extra);
                let s = &spans[i];
                let mutation = format!("bytes {:#x}..{:#x} repeated {extra} more times", s.start, s.end);
                if !family.check(Case { fixture: f.name.clone(), mutation, bytes }) {
                    break 'fixtures;
                }
            }
        }
    }
    family.finish();
}

/// Where to cut a fixture for splicing: the start of its middle top-level structure
/// (so the pieces join at a boundary), else its middle.
fn boundary(f: &Fixture) -> usize {
    let spans = structures::spans(&f.bytes);
    let top: Vec<&Span> = spans.iter().filter(|s| s.parents.is_empty()).collect();
    top.get(top.len() / 2).map_or(f.bytes.len() / 2, |s| s.start)
}

/// Splicing: the head of a fixture with the tail of another of the same format (at a
/// structure boundary and at the middle), and with the tail or the whole of a fixture of
/// another format.
#[test]
fn spliced_fixtures() {
    let mut family = Family::new("spliced_fixtures");
    let mut rng = XorShift(0xA076_1D64_78BD_642F);
    let all = fixtures();
    'fixtures: for (i, a) in all.iter().enumerate() {
        let Some(format) = a.format else { continue };
        if a.bytes.is_empty() {
            continue;
        }
        let same: Vec<&Fixture> =
            all.iter().filter(|b| b.format == Some(format) && !b.bytes.is_empty()).collect();
        let other: Vec<&Fixture> =
            all.iter().filter(|b| b.format.is_some_and(|fb| fb != format) && !b.bytes.is_empty()).collect();
        let mut cases = Vec::new();
        if same.len() > 1 {
            // The next fixture of the same format, in name order, wrapping around.
            let at = same.iter().position(|b| b.name == a.name).unwrap_or(0);
            let b = same[(at + 1) % same.len()];
            let (ca, cb) = (boundary(a), boundary(b));
            cases.push((
                format!("head {ca} + {} from {cb}", b.name),
                [&a.bytes[..ca], &b.bytes[cb..]].concat(),
            ));
            let (ha, hb) = (a.bytes.len() / 2, b.bytes.len() / 2);
            cases.push((
                format!("head {ha} + {} from {hb}", b.name),
                [&a.bytes[..ha], &b.bytes[hb..]].concat(),
            ));
        }
        if !other.is_empty() {
            let c = other[(rng.below(other.len()) + i) % other.len()];
            let (ha, hc) = (a.bytes.len() / 2, c.bytes.len() / 2);
            cases.push((
                format!("head {ha} + {} from {hc}", c.name),
                [&a.bytes[..ha], &c.bytes[hc..]].concat(),
            ));
            let head = boundary(a).min(64).max(1.min(a.bytes.len()));
            cases.push((
                format!("head {head} + all of {}", c.name),
                [&a.bytes[..head], &c.bytes[..]].concat(),
            ));
        }
        for (mutation, bytes) in cases {
            if !family.check(Case { fixture: a.name.clone(), mutation, bytes }) {
                break 'fixtures;
            }
        }
    }
    family.finish();
}

#[test]
fn zero_byte_file_is_empty_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.png");
    std::fs::write(&path, b"").unwrap();
    let m = probe(&path, &Limits::default()).unwrap();
    assert_eq!(m.data_type, asset_probe::DataType::Text);
    assert_eq!(m.size_bytes, 0);
}

#[test]
fn unknown_binary_is_unsupported_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    std::fs::write(&path, [0u8, 1, 2, 3, 0xde, 0xad, 0xbe, 0xef, 0, 0, 7, 9]).unwrap();
    let err = probe(&path, &Limits::default()).unwrap_err();
    assert_eq!(err.code(), asset_probe::ErrorCode::UnsupportedFormat);
}

#[test]
fn missing_file_is_an_io_error() {
    let err = probe(Path::new("/nonexistent/definitely/not/here.jpg"), &Limits::default()).unwrap_err();
    assert_eq!(err.code(), asset_probe::ErrorCode::Io);
}

#[test]
fn file_over_the_size_limit_is_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    std::fs::write(&path, vec![b'a'; 2048]).unwrap();
    let limits = Limits { max_file_bytes: 1024, ..Limits::default() };
    let err = probe(&path, &limits).unwrap_err();
    assert_eq!(err.code(), asset_probe::ErrorCode::TooLarge);
}

/// The walkers behind the structure-aware families must see real structures, or those
/// families test nothing: one fixture per walker, checked against its known layout.
#[test]
fn structure_walkers_find_the_fixtures_boxes_and_chunks() {
    let all = fixtures();
    let get =
        |name: &str| &all.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("{name} missing")).bytes;
    // PNG: IHDR right after the signature, 13 bytes of data.
    let png = structures::spans(get("image/png-rgb8.png"));
    assert_eq!((png[0].start, png[0].end), (8, 8 + 12 + 13));
    // MP4: moov is a top-level box holding trak children.
    let mp4 = get("video/faststart.mp4");
    let spans = structures::spans(mp4);
    let moov = spans.iter().position(|s| &mp4[s.start + 4..s.start + 8] == b"moov").expect("moov found");
    assert!(spans.iter().any(|s| s.parents.contains(&moov) && &mp4[s.start + 4..s.start + 8] == b"trak"));
    // Matroska: the Segment holds Tracks.
    let mkv = get("video/h264.mkv");
    let spans = structures::spans(mkv);
    assert!(
        spans.iter().any(|s| s.parents.len() == 1 && mkv[s.start..].starts_with(&[0x16, 0x54, 0xAE, 0x6B]))
    );
    // WAV: RIFF holds fmt and data.
    let wav = get("audio/wav-s16.wav");
    let spans = structures::spans(wav);
    assert!(spans.iter().any(|s| s.parents == [0] && wav[s.start..].starts_with(b"fmt ")));
    // DICOM: the first element is the meta group's length (0002,0000).
    let dcm = get("dicom/explicit-le.dcm");
    assert_eq!(&dcm[structures::spans(dcm)[0].start..][..4], &[2, 0, 0, 0]);
    // Duplicating a box grows its parents: moov's size follows.
    let trak = spans_of(mp4, b"trak");
    let spans = structures::spans(mp4);
    let doubled = duplicate(mp4, &spans, trak, 1);
    let moov_size = Enc::U32Be.read(&doubled, spans[moov].start).unwrap() as usize;
    assert_eq!(moov_size, spans[moov].end - spans[moov].start + spans[trak].end - spans[trak].start);
}

fn spans_of(bytes: &[u8], kind: &[u8; 4]) -> usize {
    structures::spans(bytes).iter().position(|s| &bytes[s.start + 4..s.start + 8] == kind).unwrap()
}
