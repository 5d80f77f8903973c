//! Probing in a separate process, where a budget can be enforced. A thread cannot be
//! killed: a parser stuck in a loop kept burning CPU after its caller gave up, and one
//! that overflowed its stack or exhausted memory took the whole worker down with every
//! other file in flight. So the parsers run in a small pool of child processes (the same
//! binary, a hidden subcommand speaking JSON lines over pipes, see [`serve`]), each with
//! `RLIMIT_DATA` (its memory), `RLIMIT_CPU` (per request), no core dumps, no file
//! writes and an empty environment; the parent holds a wall-clock deadline per request.
//! A child that crashes, runs out of memory or misses its deadline is killed and
//! replaced, and the file gets a typed error: `parser_crashed`, `too_large` or `timeout`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use asset_core::{AssetMetadata, ErrorCode, Limits};
use serde::{Deserialize, Serialize};

use crate::ranged::{ByteRange, RangeSet};
use crate::{ProbeError, Result};

/// Memory a probe process may use besides the input a parser holds (which
/// `Limits::max_memory_bytes` bounds): code, stacks, parser state.
pub const DEFAULT_MEMORY_CEILING: u64 = 64 * 1024 * 1024;

/// Longest reply line the parent reads: a reply is metadata or a short error.
const MAX_REPLY_BYTES: u64 = 64 * 1024;

/// The last bytes of a child's stderr kept to tell why it died.
const STDERR_TAIL: usize = 4096;

/// What the parent asks a probe process.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    path: PathBuf,
    /// The asset's full size (a partial copy may be shorter on disk: sparse).
    total: u64,
    /// Present ranges of a partial copy as `(start, end)`; `None` for a whole file.
    present: Option<Vec<(u64, u64)>>,
    limits: Limits,
}

/// What a probe process answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok(Box<AssetMetadata>),
    Err { code: ErrorCode, message: String },
    NeedBytes { offset: u64, len: u64, whole_file: bool },
}

/// The child's side: limits itself, then answers one request per line until stdin
/// closes. Everything but the reply goes to stderr; a panic becomes an error reply.
/// Returns only when stdin ends (or on a broken pipe).
pub fn serve(memory_ceiling: u64) -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = |n: u64| Rlimit { current: Some(n), maximum: Some(n) };
    // No core dump may write a customer's bytes to disk, and a parser has no business
    // writing files at all.
    setrlimit(Resource::Core, limit(0))?;
    setrlimit(Resource::Fsize, limit(0))?;
    setrlimit(Resource::Data, limit(memory_ceiling))?;

    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                limit_cpu(req.limits.max_millis);
                answer(&req)
            }
            Err(e) => Reply::Err { code: ErrorCode::Internal, message: format!("bad probe request: {e}") },
        };
        let mut out = stdout.lock();
        serde_json::to_writer(&mut out, &reply)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
}

/// `RLIMIT_CPU` is cumulative: the soft limit is moved to what the process has used so
/// far plus this request's budget (rounded up, plus a second), so a reused process
/// answers SIGXCPU to a runaway parser even if its parent is gone.
fn limit_cpu(budget_ms: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let used = cpu_seconds_used().unwrap_or(0);
    let soft = used + budget_ms.div_ceil(1000) + 1;
    let hard = getrlimit(Resource::Cpu).maximum;
    let soft = hard.map_or(soft, |h| soft.min(h));
    let _ = setrlimit(Resource::Cpu, Rlimit { current: Some(soft), maximum: hard });
}

/// User + system CPU seconds this process has used, from `/proc/self/stat`.
fn cpu_seconds_used() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks / rustix::param::clock_ticks_per_second().max(1))
}

fn answer(req: &Request) -> Reply {
    let outcome = std::panic::catch_unwind(|| match &req.present {
        None => crate::probe_in_place(&req.path, &req.limits),
        Some(spans) => {
            let mut present = RangeSet::new();
            for &(start, end) in spans {
                present.insert(ByteRange::span(start, end));
            }
            crate::probe_partial_in_place(&req.path, req.total, &present, &req.limits)
        }
    });
    match outcome {
        Ok(Ok(meta)) => Reply::Ok(Box::new(meta)),
        Ok(Err(ProbeError::NeedBytes { offset, len, whole_file })) => {
            Reply::NeedBytes { offset, len, whole_file }
        }
        Ok(Err(e)) => Reply::Err { code: e.code(), message: e.to_string() },
        Err(panic) => {
            let e = ProbeError::corrupt("unknown", crate::panic_message(&panic));
            Reply::Err { code: e.code(), message: e.to_string() }
        }
    }
}

/// How the parent starts probe processes.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The executable and its arguments, e.g. the worker itself and `probe-server`.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Most processes alive at once; more requests wait for one to be free.
    pub processes: usize,
}

/// A pool of probe processes. Cheap to clone; requests from any thread.
#[derive(Clone)]
pub struct ProbePool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    config: PoolConfig,
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: VecDeque<Worker>,
    alive: usize,
}

/// One probe process and the threads draining its pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<io::Result<String>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for ProbePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbePool").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl ProbePool {
    pub fn new(config: PoolConfig) -> Self {
        let config = PoolConfig { processes: config.processes.max(1), ..config };
        ProbePool {
            inner: Arc::new(PoolInner {
                config,
                state: Mutex::new(PoolState::default()),
                freed: Condvar::new(),
            }),
        }
    }

    /// Probes a whole file in a probe process (see [`crate::probe`]).
    pub fn probe(&self, path: &Path, limits: &Limits) -> Result<AssetMetadata> {
        let total = std::fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
        self.request(Request { path: path.to_path_buf(), total, present: None, limits: limits.clone() })
    }

    /// Probes a partial copy in a probe process (see [`crate::probe_partial`]).
    pub fn probe_partial(
        &self,
        path: &Path,
        total: u64,
        present: &RangeSet,
        limits: &Limits,
    ) -> Result<AssetMetadata> {
        let spans = present.ranges().map(|r| (r.offset, r.end())).collect();
        self.request(Request {
            path: path.to_path_buf(),
            total,
            present: Some(spans),
            limits: limits.clone(),
        })
    }

    /// The process ids of the probe processes now idle (diagnostics, tests).
    pub fn idle_pids(&self) -> Vec<u32> {
        let state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.idle.iter().map(|w| w.child.id()).collect()
    }

    /// Ends every idle process (busy ones end when their request does).
    pub fn shutdown(&self) {
        let idle: Vec<Worker> = {
            let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            let idle: Vec<Worker> = state.idle.drain(..).collect();
            state.alive -= idle.len();
            idle
        };
        for w in idle {
            w.end();
        }
    }

    fn request(&self, mut req: Request) -> Result<AssetMetadata> {
        // The process runs in `/`: it gets the path as the caller meant it.
        req.path = std::path::absolute(&req.path)?;
        let line = serde_json::to_string(&req)
            .map_err(|e| ProbeError::Io(io::Error::other(format!("encoding a probe request: {e}"))))?;
        let mut worker = self.take()?;
        let deadline = Duration::from_millis(req.limits.max_millis.max(1));
        match worker.ask(&line, deadline) {
            Ok(reply) => {
                self.give_back(Some(worker));
                reply
            }
            Err(failure) => {
                let err = worker.fail(failure, &req.limits);
                self.give_back(None);
                Err(err)
            }
        }
    }

    /// An idle process, a new one if the pool has room, else waits for one.
    fn take(&self) -> Result<Worker> {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(w) = state.idle.pop_front() {
                return Ok(w);
            }
            if state.alive < self.inner.config.processes {
                state.alive += 1;
                drop(state);
                return Worker::spawn(&self.inner.config).inspect_err(|_| {
                    let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.alive -= 1;
                    self.inner.freed.notify_one();
                });
            }
            state = self.inner.freed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn give_back(&self, worker: Option<Worker>) {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        match worker {
            Some(w) => state.idle.push_back(w),
            None => state.alive -= 1,
        }
        self.inner.freed.notify_one();
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for w in state.idle.drain(..) {
            w.end();
        }
    }
}

/// Why a request got no reply.
enum Failure {
    Deadline,
    /// The process ended or its pipes broke.
    Gone(String),
}

impl Worker {
    fn spawn(config: &PoolConfig) -> Result<Worker> {
        let mut child = Command::new(&config.program)
            .args(&config.args)
            // A parser of customer files sees no credential of the worker's.
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(ProbeError::Io)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProbeError::Io(io::Error::other("the probe process has no pipes")));
        };
        let (tx, replies) = mpsc::channel();
        std::thread::Builder::new()
            .name("probe-reply".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                loop {
                    let mut line = String::new();
                    let read = (&mut reader).take(MAX_REPLY_BYTES).read_line(&mut line);
                    let done = !matches!(read, Ok(n) if n > 0 && line.ends_with('\n'));
                    let msg = match read {
                        Ok(0) => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                        Ok(_) if !line.ends_with('\n') => Err(io::Error::other("a reply longer than 64 KiB")),
                        Ok(_) => Ok(line),
                        Err(e) => Err(e),
                    };
                    if tx.send(msg).is_err() || done {
                        return;
                    }
                }
            })
            .map_err(ProbeError::Io)?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let sink = tail.clone();
        std::thread::Builder::new()
            .name("probe-stderr".into())
            .spawn(move || drain_stderr(stderr, &sink))
            .map_err(ProbeError::Io)?;
        Ok(Worker { child, stdin, replies, stderr: tail })
    }

    fn ask(&mut self, line: &str, deadline: Duration) -> std::result::Result<Result<AssetMetadata>, Failure> {
        let sent = self.stdin.write_all(line.as_bytes()).and_then(|()| self.stdin.write_all(b"\n"));
        if let Err(e) = sent.and_then(|()| self.stdin.flush()) {
            return Err(Failure::Gone(format!("sending the request: {e}")));
        }
        let reply = match self.replies.recv_timeout(deadline) {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(Failure::Gone(e.to_string())),
            Err(RecvTimeoutError::Timeout) => return Err(Failure::Deadline),
            Err(RecvTimeoutError::Disconnected) => return Err(Failure::Gone("no reply".into())),
        };
        match serde_json::from_str::<Reply>(&reply) {
            Ok(Reply::Ok(meta)) => Ok(Ok(*meta)),
            Ok(Reply::NeedBytes { offset, len, whole_file }) => {
                Ok(Err(ProbeError::NeedBytes { offset, len, whole_file }))
            }
            Ok(Reply::Err { code, message }) => Ok(Err(ProbeError::Reported { code, message })),
            Err(e) => Err(Failure::Gone(format!("an unreadable reply: {e}"))),
        }
    }

    /// Kills the process (if it still runs) and says why the request failed.
    fn fail(mut self, failure: Failure, limits: &Limits) -> ProbeError {
        let deadline = matches!(failure, Failure::Deadline);
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        // Give the stderr thread a moment to read the last words.
        let tail = {
            let wait_until = Instant::now() + Duration::from_millis(200);
            loop {
                let done =
                    self.stderr.lock().map(|t| t.ends_with(b"\n") || t.len() >= STDERR_TAIL).unwrap_or(true);
                if done || Instant::now() >= wait_until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            self.stderr.lock().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default()
        };
        classify_death(deadline, status, &tail, &failure, limits)
    }

    /// Closes stdin (the process exits at EOF) and reaps it.
    fn end(mut self) {
        drop(self.stdin);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps the last [`STDERR_TAIL`] bytes the process wrote to stderr.
fn drain_stderr(mut stderr: std::process::ChildStderr, tail: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            return;
        }
        let Ok(mut t) = tail.lock() else { return };
        t.extend_from_slice(&buf[..n]);
        if t.len() > STDERR_TAIL {
            let cut = t.len() - STDERR_TAIL;
            t.drain(..cut);
        }
    }
}

/// The typed error for a probe process that gave no reply.
fn classify_death(
    deadline: bool,
    status: Option<ExitStatus>,
    stderr: &str,
    failure: &Failure,
    limits: &Limits,
) -> ProbeError {
    const SIGKILL: i32 = 9;
    const SIGXCPU: i32 = 24;
    if deadline || status.and_then(|s| s.signal()) == Some(SIGXCPU) {
        return ProbeError::TimedOut { millis: limits.max_millis };
    }
    if stderr.contains("memory allocation of") || stderr.contains("capacity overflow") {
        return ProbeError::TooLarge {
            what: "the memory a parser asked for".into(),
            limit: limits.max_memory_bytes + DEFAULT_MEMORY_CEILING,
        };
    }
    if stderr.contains("has overflowed its stack") {
        return ProbeError::Crashed { detail: "the parser overflowed its stack".into() };
    }
    match status {
        // Not killed by us (we only kill after a deadline): the kernel's OOM killer, or
        // an operator. A fault of the machine, not of the file: retried elsewhere.
        Some(s) if s.signal() == Some(SIGKILL) => ProbeError::Io(io::Error::from_raw_os_error(12)),
        Some(s) => ProbeError::Crashed {
            detail: match (s.signal(), s.code()) {
                (Some(sig), _) => format!("the probe process died of signal {sig}"),
                (None, Some(code)) => format!("the probe process exited with status {code}"),
                _ => "the probe process ended".into(),
            },
        },
        None => ProbeError::Crashed {
            detail: match failure {
                Failure::Gone(why) => format!("the probe process stopped answering ({why})"),
                Failure::Deadline => "the probe process missed its deadline".into(),
            },
        },
    }
}
