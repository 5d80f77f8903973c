//! The harness every AFL++ target shares. AFL++ through cargo-afl because it is the one
//! coverage-guided fuzzer that instruments on stable rustc (the `sancov-module` pass;
//! cargo-fuzz and libFuzzer need nightly's `-Z sanitizer`), and its havoc and splice
//! stages are the length-inflation, duplication and splicing mutations that found most
//! of issue 9's bugs. Besides panics and aborts (stack overflow included), the harness
//! turns the two budget overruns the probe's own boundary would hide into crashes AFL
//! records: an input that takes longer than `FUZZ_BUDGET_MS`, and an allocation past
//! `FUZZ_MEM_MB` (512) of address space (RLIMIT_AS, so even an untouched 4 GB `Vec` counts).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use asset_probe::{
    AssetMetadata, DataType, Limits, ProbeError, Source, detect, probe_format, probe_in_place,
};

/// What one binary fuzzes: an extractor family, or the whole entry point. A family target
/// only probes inputs that detection assigns to it: forcing an extractor onto bytes
/// detection would never give it reports bugs no customer file can reach, and keeping
/// one queue per family stops the cheap formats from taking all of AFL's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Image,
    Video,
    Audio,
    Text,
    Dicom,
    Pdf,
    /// `probe_in_place`: detection, then whatever extractor it picks.
    Probe,
}

impl Target {
    fn accepts(self, data_type: DataType) -> bool {
        match self {
            Target::Image => data_type == DataType::Image,
            Target::Video => data_type == DataType::Video,
            Target::Audio => data_type == DataType::Audio,
            Target::Text => data_type == DataType::Text,
            Target::Dicom => data_type == DataType::Dicom,
            Target::Pdf => data_type == DataType::Pdf,
            Target::Probe => true,
        }
    }
}

/// The harness's settings, from the environment so `scripts/fuzz.sh` and a person
/// replaying a crash can change them without a rebuild.
#[derive(Debug, Clone)]
struct Config {
    /// Wall-clock budget of one input; past it the process aborts (a crash in AFL's eyes).
    budget: Duration,
    /// Address-space ceiling of the whole process, in MiB.
    mem_mb: u64,
    /// Where each input is written for the probe to open (it reads files, not slices).
    tmpdir: PathBuf,
    /// Also abort on implausible successes (0 px, NaN or 1e19 s): off by default, since
    /// a crashing input is not explored further and these are common on today's code.
    check_values: bool,
}

impl Config {
    fn from_env() -> Self {
        let num = |name: &str, default: u64| {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let tmpdir = std::env::var_os("FUZZ_TMPDIR").map(PathBuf::from).unwrap_or_else(|| {
            // tmpfs when there is one: every input is written once.
            let shm = Path::new("/dev/shm");
            if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
        });
        Config {
            budget: Duration::from_millis(num("FUZZ_BUDGET_MS", 2_000)),
            mem_mb: num("FUZZ_MEM_MB", 512),
            tmpdir,
            check_values: std::env::var_os("FUZZ_CHECK_VALUES").is_some_and(|v| v != "0"),
        }
    }
}

/// Limits far tighter than production's, so that an extractor which honours them
/// finishes in milliseconds and one that ignores them stands out against the budget.
pub fn tight_limits(budget: Duration) -> Limits {
    Limits {
        max_file_bytes: 16 * 1024 * 1024,
        max_memory_bytes: 8 * 1024 * 1024,
        max_nesting: 32,
        max_items: 100_000,
        max_millis: budget.as_millis() as u64,
        ..Limits::default()
    }
}

/// The probe runs on a thread of its own with std's default 2 MiB stack, as it does on
/// the probe's pool in production (the main thread's 8 MiB would hide deep recursion),
/// while the main thread keeps the time.
struct Worker {
    jobs: SyncSender<Vec<u8>>,
    answers: Receiver<Result<(), String>>,
}

static WORKER: OnceLock<Mutex<Worker>> = OnceLock::new();

/// Runs `target` under AFL++ (or once on stdin when started by hand: `target < file`).
pub fn run(target: Target) {
    let config = Config::from_env();
    let bytes = config.mem_mb.saturating_mul(1024 * 1024);
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes) {
        eprintln!("asset-probe-fuzz: could not limit the address space to {} MiB: {e}", config.mem_mb);
    }
    afl::fuzz!(|data: &[u8]| one_input(target, &config, data));
}

fn one_input(target: Target, config: &Config, data: &[u8]) {
    // Started inside the loop, not before: AFL forks after its set-up, and a thread
    // does not survive a fork.
    let worker = WORKER.get_or_init(|| Mutex::new(spawn_worker(target, config.clone())));
    let worker = worker.lock().unwrap_or_else(PoisonError::into_inner);
    if worker.jobs.send(data.to_vec()).is_err() {
        abort("the probe thread is gone");
    }
    match worker.answers.recv_timeout(config.budget) {
        Ok(Ok(())) => {}
        Ok(Err(why)) => abort(&why),
        Err(RecvTimeoutError::Timeout) => abort(&format!(
            "budget overrun: one input of {} bytes took more than {} ms",
            data.len(),
            config.budget.as_millis()
        )),
        Err(RecvTimeoutError::Disconnected) => abort("the probe thread ended without an answer"),
    }
}

fn spawn_worker(target: Target, config: Config) -> Worker {
    let (jobs, job_rx) = sync_channel::<Vec<u8>>(1);
    let (answer_tx, answers) = sync_channel(1);
    let path = config.tmpdir.join(format!("asset-probe-fuzz-{}.bin", std::process::id()));
    std::thread::Builder::new()
        .name(format!("probe-{target:?}"))
        .spawn(move || {
            let limits = tight_limits(config.budget);
            for data in job_rx {
                let answer = probe_one(target, &path, &data, &limits, config.check_values);
                // Removed at once: a run started by hand ends without closing the channel.
                let _ = std::fs::remove_file(&path);
                if answer_tx.send(answer).is_err() {
                    break;
                }
            }
        })
        .unwrap_or_else(|e| abort(&format!("cannot start the probe thread: {e}")));
    Worker { jobs, answers }
}

/// Probes one input; `Err` names a finding that is not a panic (those abort through the
/// panic hook `afl::fuzz!` installs, on any thread).
fn probe_one(
    target: Target,
    path: &Path,
    data: &[u8],
    limits: &Limits,
    check_values: bool,
) -> Result<(), String> {
    let written = std::fs::File::create(path).and_then(|mut f| f.write_all(data));
    if let Err(e) = written {
        // Not the input's fault: say so loudly rather than report a crash on every input.
        return Err(format!("harness: cannot write {}: {e}", path.display()));
    }
    let result = match target {
        Target::Probe => probe_in_place(path, limits),
        family => {
            let head = &data[..data.len().min(detect::SNIFF_LEN)];
            match detect::detect(head) {
                Some(format) if family.accepts(format.data_type()) => {
                    let src = Source::open(path).map_err(|e| format!("harness: cannot open: {e}"))?;
                    probe_format(&src, format, limits)
                }
                _ => return Ok(()),
            }
        }
    };
    match result {
        Ok(meta) if check_values => implausible(&meta, limits).map_or(Ok(()), Err),
        Ok(_) => Ok(()),
        // A full file never lacks bytes; `io` on a regular file we just wrote means an
        // extractor passed a parse failure off as a (retryable) I/O fault.
        Err(e @ (ProbeError::NeedBytes { .. } | ProbeError::Io(_))) => {
            Err(format!("untyped answer {} for a complete file: {e}", e.code()))
        }
        Err(_) => Ok(()),
    }
}

/// A success no labeling tool could display: what issue 9 calls absurd values.
pub fn implausible(m: &AssetMetadata, limits: &Limits) -> Option<String> {
    let bad_dim = |d: Option<u32>| d.is_some_and(|d| d == 0 || d > limits.max_dimension);
    if bad_dim(m.width) || bad_dim(m.height) {
        return Some(format!("implausible dimensions {:?} x {:?}", m.width, m.height));
    }
    if let (Some(w), Some(h)) = (m.width, m.height)
        && u64::from(w) * u64::from(h) > limits.max_pixels
    {
        return Some(format!("implausible pixel count {w} x {h}"));
    }
    // A week is longer than any asset a labeling tool shows, and far below 1e19 s.
    if m.duration_seconds.is_some_and(|d| !(0.0..=7.0 * 86_400.0).contains(&d)) {
        return Some(format!("implausible duration {:?}", m.duration_seconds));
    }
    if m.frame_rate.is_some_and(|r| !r.is_finite() || r <= 0.0 || r > 10_000.0) {
        return Some(format!("implausible frame rate {:?}", m.frame_rate));
    }
    if m.sample_rate.is_some_and(|r| r == 0 || r > 10_000_000)
        || m.channels.is_some_and(|c| c == 0 || c > 1024)
    {
        return Some(format!("implausible audio {:?} Hz, {:?} channels", m.sample_rate, m.channels));
    }
    if m.page_count == Some(0) {
        return Some("a PDF of 0 pages".into());
    }
    None
}

fn abort(why: &str) -> ! {
    eprintln!("asset-probe-fuzz: {why}");
    std::process::abort()
}
