//! Hostile input: every fixture, cut at many lengths and with bytes flipped, must give
//! metadata or a typed error, never a panic and never a run past the time budget. The
//! mutations are deterministic (a fixed xorshift seed), so a failure reproduces.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use asset_probe::{Limits, ProbeError, probe, probe_in_place};

fn fixture_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_none_or(|e| e != "md") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
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

/// Probes `bytes` twice: on this thread under `catch_unwind` (so a parser panic is a
/// test failure, not the Corrupt error `probe` would turn it into), and through `probe`
/// with its time budget.
fn check(bytes: &[u8], name: &str, what: &str, dir: &Path, failures: &mut Vec<String>) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let limits = Limits { max_millis: 20_000, ..Limits::default() };
    if panic::catch_unwind(AssertUnwindSafe(|| probe_in_place(&path, &limits))).is_err() {
        failures.push(format!("{name} ({what}): the parser panicked"));
        return;
    }
    if let Err(ProbeError::TimedOut { .. }) = probe(&path, &limits) {
        failures.push(format!("{name} ({what}): ran past the time budget"));
    }
}

#[test]
fn truncated_and_mutated_fixtures_never_panic_or_hang() {
    // A panic inside catch_unwind still prints; keep the output readable.
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut failures = Vec::new();
    let mut runs = 0;
    for file in fixture_files() {
        let original = std::fs::read(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let len = original.len();
        // Cuts: inside the first header bytes, at fractions of the file, one byte short.
        let mut cuts: Vec<usize> =
            vec![1, 4, 12, 64, 200, 1024, len / 4, len / 2, len * 3 / 4, len.saturating_sub(1)];
        cuts.retain(|&c| c < len);
        cuts.dedup();
        for cut in cuts {
            check(&original[..cut], &name, &format!("cut at {cut}"), dir.path(), &mut failures);
            runs += 1;
        }
        // Byte flips concentrated in the header, where parsers trust declared sizes.
        for round in 0..8 {
            let mut bytes = original.clone();
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
            check(&bytes, &name, &format!("mutation round {round}"), dir.path(), &mut failures);
            runs += 1;
        }
    }
    panic::set_hook(hook);
    assert!(
        failures.is_empty(),
        "{} of {runs} hostile inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
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
