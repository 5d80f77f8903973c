//! Probe processes: answers equal the in-process probe's, and a process that crashes,
//! exhausts its memory or misses its deadline is killed and replaced while the pool goes
//! on. The misbehaving processes are stand-ins (small shell programs speaking the same
//! pipe protocol badly) so each failure is certain whatever the parsers become; the
//! answers come from the real server binary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use asset_probe::isolate::{PoolConfig, ProbePool};
use asset_probe::{ErrorCode, Limits, ProbeError, RangeSet, probe_in_place};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets")
}

fn real_pool(processes: usize) -> ProbePool {
    ProbePool::new(PoolConfig {
        program: env!("CARGO_BIN_EXE_asset-probe-server").into(),
        args: vec![],
        processes,
    })
}

fn stand_in(script: &str) -> ProbePool {
    ProbePool::new(PoolConfig {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        processes: 1,
    })
}

fn limits(millis: u64) -> Limits {
    Limits { max_millis: millis, ..Limits::default() }
}

#[test]
fn answers_match_the_in_process_probe_for_every_fixture() {
    let pool = real_pool(2);
    let mut files: Vec<PathBuf> = Vec::new();
    for kind in ["image", "video", "audio", "text", "dicom", "pdf", "volume", "bad"] {
        for e in std::fs::read_dir(fixtures().join(kind)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    let generous = limits(20_000);
    for f in &files {
        let here = probe_in_place(f, &generous);
        let there = pool.probe(f, &generous);
        match (&here, &there) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", f.display()),
            (Err(a), Err(b)) => {
                assert_eq!(a.code(), b.code(), "{}", f.display());
                assert_eq!(a.to_string(), b.to_string(), "{}", f.display());
            }
            _ => panic!("{}: in process {here:?}, in a probe process {there:?}", f.display()),
        }
    }
    pool.shutdown();
}

#[test]
fn partial_copies_ask_for_the_same_bytes() {
    let pool = real_pool(1);
    let file = fixtures().join("video/moov-at-end.mp4");
    let total = std::fs::metadata(&file).unwrap().len();
    let mut present = RangeSet::new();
    present.insert(asset_probe::ByteRange::new(0, 4096));
    let here = asset_probe::probe_partial_in_place(&file, total, &present, &limits(20_000));
    let there = pool.probe_partial(&file, total, &present, &limits(20_000));
    match (here, there) {
        (Err(ProbeError::NeedBytes { offset: a, .. }), Err(ProbeError::NeedBytes { offset: b, .. })) => {
            assert_eq!(a, b)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fifos_and_devices_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let pool = real_pool(1);
    for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
        let started = Instant::now();
        let err = pool.probe(path, &limits(10_000)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UnsupportedFormat, "{}: {err}", path.display());
        assert!(started.elapsed() < Duration::from_secs(5), "{} blocked", path.display());
    }
}

/// Reads the pid a stand-in wrote, once it exists.
fn pid_in(file: &Path) -> u32 {
    let started = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(file)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no pid in {}", file.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_process_past_its_deadline_is_killed_not_left_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let pool = stand_in(&format!("echo $$ > {}; read line; while :; do :; done", pidfile.display()));
    let started = Instant::now();
    let err = pool.probe(&fixtures().join("image/png-rgb8.png"), &limits(300)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid = pid_in(&pidfile);
    assert!(!alive(pid), "the spinning process {pid} is still there");
}

#[test]
fn a_crash_is_parser_crashed_and_the_next_request_gets_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    // The first process dies of SIGSEGV on its first request; the second answers.
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; read line; \
         if [ \"$n\" = 0 ]; then echo 'thread main has overflowed its stack' >&2; kill -SEGV $$; fi; \
         echo '{{\"err\":{{\"code\":\"corrupt_file\",\"message\":\"from the second\"}}}}'; sleep 5",
        c = count.display()
    );
    let pool = stand_in(&script);
    let file = fixtures().join("image/png-rgb8.png");
    let first = pool.probe(&file, &limits(5_000)).unwrap_err();
    assert_eq!(first.code(), ErrorCode::ParserCrashed, "{first}");
    let second = pool.probe(&file, &limits(5_000)).unwrap_err();
    assert_eq!((second.code(), second.to_string()), (ErrorCode::CorruptFile, "from the second".to_string()));
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "2");
}

#[test]
fn an_allocation_failure_is_too_large() {
    let pool = stand_in("read line; echo 'memory allocation of 4294967296 bytes failed' >&2; kill -ABRT $$");
    let err = pool.probe(&fixtures().join("image/png-rgb8.png"), &limits(5_000)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge, "{err}");
}

#[test]
fn probe_processes_run_limited_and_without_the_parents_environment() {
    let ceiling: u64 = 96 * 1024 * 1024;
    let pool = ProbePool::new(PoolConfig {
        program: env!("CARGO_BIN_EXE_asset-probe-server").into(),
        args: vec![ceiling.to_string().into()],
        processes: 1,
    });
    pool.probe(&fixtures().join("image/png-rgb8.png"), &limits(5_000)).unwrap();
    let pids = pool.idle_pids();
    assert_eq!(pids.len(), 1);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pids[0])).unwrap();
    let row = |name: &str| -> Vec<String> {
        let line = limits.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {limits}"));
        line[name.len()..].split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(row("Max data size")[..2], [ceiling.to_string(), ceiling.to_string()]);
    assert_eq!(row("Max core file size")[0], "0");
    assert_eq!(row("Max file size")[0], "0");
    assert_ne!(row("Max cpu time")[0], "unlimited", "a CPU limit is set per request");
    let environ = std::fs::read(format!("/proc/{}/environ", pids[0])).unwrap();
    assert!(environ.is_empty(), "the probe process sees no environment variable");
    pool.shutdown();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(pids[0]), "shutdown ends idle processes");
}
