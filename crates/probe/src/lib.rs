//! Turns a local file into the metadata a labeling tool needs to display it, reading
//! headers only. Detection is by content ([`detect`]); each data type has one module;
//! every call runs under explicit [`Limits`] and a panic in a parser becomes an error.
//! [`probe_partial`] gives the same answers from a partial download ([`ranged`]).

mod audio;
pub mod detect;
mod dicom;
mod error;
mod image;
pub mod isolate;
mod pdf;
mod plausible;
mod pool;
pub mod ranged;
mod text;
mod video;
mod volume;

/// Helpers the unit tests of several extractors share.
#[cfg(test)]
pub(crate) mod test_support {
    /// An ISO BMFF box: 32-bit size, type, payload.
    pub(crate) fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }
}

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

pub use asset_core::{AssetMetadata, DataType, ErrorCode, Limits, Plausibility};
pub use detect::Format;
pub use error::{ProbeError, Result};
pub use ranged::{
    ByteRange, FetchPolicy, MissingBytes, Need, RangeSet, SourceFile, first_fetch, needs_whole_file,
    next_fetch,
};

/// An opened asset: the file, its size and the leading bytes detection looked at.
/// Extractors get a fresh reader positioned at 0 from [`Source::reader`]. A partial
/// source ([`Source::open_partial`]) reads only the downloaded ranges.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    file: SourceFile,
    size: u64,
    head: Vec<u8>,
    partial: Option<Arc<Partial>>,
}

/// What a partial probe shares with its parser thread: the ranges, the first miss and
/// the detected format (which says whether the rest will be needed anyway).
#[derive(Debug)]
struct Partial {
    present: Arc<ranged::Present>,
    format: OnceLock<Format>,
    /// Set by an extractor that is about to walk the file to its end.
    reads_to_end: AtomicBool,
}

impl Source {
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_regular(path)?;
        let size = file.metadata()?.len();
        Ok(Self::with_file(path, SourceFile::new(file, None), size, None)?)
    }

    /// Opens a partial copy: a file of the asset's full length `total` of which only the
    /// `present` ranges hold downloaded bytes. Reading elsewhere fails with
    /// [`MissingBytes`], the head included.
    pub fn open_partial(path: &Path, total: u64, present: &RangeSet) -> Result<Self> {
        Self::open_shared(path, Arc::new(Partial::new(present.clone(), total)))
    }

    fn open_shared(path: &Path, partial: Arc<Partial>) -> Result<Self> {
        let file = open_regular(path)?;
        let on_disk = file.metadata()?.len();
        let total = partial.present.total;
        let last = partial.present.ranges.ranges().last().map_or(0, |r| r.end());
        if on_disk < last || last > total {
            return Err(ProbeError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("partial copy of {on_disk} bytes, asset of {total}, downloaded up to {last}"),
            )));
        }
        let file = SourceFile::new(file, Some(partial.present.clone()));
        Ok(Self::with_file(path, file, total, Some(partial))?)
    }

    fn with_file(
        path: &Path,
        mut file: SourceFile,
        size: u64,
        partial: Option<Arc<Partial>>,
    ) -> io::Result<Self> {
        let mut head = Vec::with_capacity(detect::SNIFF_LEN);
        (&mut file).take(detect::SNIFF_LEN as u64).read_to_end(&mut head)?;
        Ok(Source { path: path.to_path_buf(), file, size, head, partial })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether only some ranges of the asset are downloaded.
    pub(crate) fn is_partial(&self) -> bool {
        self.partial.is_some()
    }

    /// The asset's size (on a partial copy, the full size, downloaded or not).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Up to [`detect::SNIFF_LEN`] leading bytes (fewer only if the file is shorter).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// An independent handle on the file, positioned at the start.
    pub fn file(&self) -> io::Result<SourceFile> {
        self.file.reopen()
    }

    /// A buffered reader on an independent handle, positioned at the start.
    pub fn reader(&self) -> io::Result<BufReader<SourceFile>> {
        Ok(BufReader::new(self.file()?))
    }

    /// Called by an extractor about to walk the file to its end (an MP3 without a
    /// Xing/VBRI header, raw ADTS): a partial probe's `NeedBytes` then says
    /// `whole_file`, so the fetcher gets the rest in one request. No effect otherwise.
    pub(crate) fn reading_to_end(&self) {
        if let Some(partial) = &self.partial {
            partial.reads_to_end.store(true, Ordering::Relaxed);
        }
    }
}

impl Partial {
    fn new(present: RangeSet, total: u64) -> Self {
        Partial {
            present: Arc::new(ranged::Present::new(present, total)),
            format: OnceLock::new(),
            reads_to_end: AtomicBool::new(false),
        }
    }

    /// The bytes to fetch if the parser missed any: whatever it made of the failed read,
    /// its answer could differ from the full file's.
    fn need(&self) -> Option<ProbeError> {
        let miss = self.present.first_miss()?;
        let whole_file = self.reads_to_end.load(Ordering::Relaxed)
            || self.format.get().is_some_and(|f| needs_whole_file(*f));
        Some(ProbeError::NeedBytes { offset: miss.offset, len: miss.len, whole_file })
    }
}

/// Probes one file under `limits`: detects its format from content and extracts its
/// metadata. A parser that panics yields [`ProbeError::Corrupt`]; one that overruns
/// `limits.max_millis` yields [`ProbeError::TimedOut`] (its thread is abandoned).
pub fn probe(path: &Path, limits: &Limits) -> Result<AssetMetadata> {
    let path = path.to_path_buf();
    let limits_for_thread = limits.clone();
    guarded(limits, None, move || probe_in_place(&path, &limits_for_thread))
}

/// Probes a partial copy of an asset: `path` is a file of the asset's full length
/// `total_size` (sparse is fine) of which only the `present` ranges were downloaded.
/// Gives exactly what [`probe`] gives on the whole file, or
/// [`ProbeError::NeedBytes`] naming the first byte it lacks: fetch a range holding it
/// (see [`next_fetch`]), add it to `present` and call again. No other answer depends
/// on a missing byte. `NeedBytes` is for the caller's loop, never a result to write.
pub fn probe_partial(
    path: &Path,
    total_size: u64,
    present: &RangeSet,
    limits: &Limits,
) -> Result<AssetMetadata> {
    let partial = Arc::new(Partial::new(present.clone(), total_size));
    let path = path.to_path_buf();
    let limits_for_thread = limits.clone();
    let for_thread = partial.clone();
    guarded(limits, Some(partial), move || probe_partial_with(&path, for_thread, &limits_for_thread))
}

/// [`probe_partial`] on the calling thread, without the panic boundary or the time
/// budget (see [`probe_in_place`]). A caller that catches a panic here cannot tell
/// whether it came from a missing byte: prefer [`probe_partial`].
pub fn probe_partial_in_place(
    path: &Path,
    total_size: u64,
    present: &RangeSet,
    limits: &Limits,
) -> Result<AssetMetadata> {
    let partial = Arc::new(Partial::new(present.clone(), total_size));
    let result = probe_partial_with(path, partial.clone(), limits);
    partial.need().map_or(result, Err)
}

fn probe_partial_with(path: &Path, partial: Arc<Partial>, limits: &Limits) -> Result<AssetMetadata> {
    let src = Source::open_shared(path, partial)?;
    probe_source(&src, limits)
}

/// Runs `job` on its own thread behind a panic boundary and `limits.max_millis`. For a
/// partial probe a recorded miss wins over any other outcome, a panic or a timeout
/// included: they may come from the missing bytes.
fn guarded(
    limits: &Limits,
    partial: Option<Arc<Partial>>,
    job: impl FnOnce() -> Result<AssetMetadata> + Send + 'static,
) -> Result<AssetMetadata> {
    let (tx, rx) = mpsc::sync_channel(1);
    pool::execute(Box::new(move || {
        let outcome = panic::catch_unwind(AssertUnwindSafe(job));
        let _ = tx.send(outcome);
    }))?;
    let result = match rx.recv_timeout(Duration::from_millis(limits.max_millis)) {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(ProbeError::corrupt("unknown", panic_message(&panic))),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ProbeError::TimedOut { millis: limits.max_millis }),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(ProbeError::corrupt("unknown", "the parser thread ended without an answer"))
        }
    };
    match partial.and_then(|p| p.need()) {
        Some(need) => Err(need),
        None => result,
    }
}

/// Probes on the calling thread, without the panic boundary or the time budget of
/// [`probe`]. For callers that already run it on a blocking pool behind their own
/// `catch_unwind` and timeout.
pub fn probe_in_place(path: &Path, limits: &Limits) -> Result<AssetMetadata> {
    probe_source(&Source::open(path)?, limits)
}

fn probe_source(src: &Source, limits: &Limits) -> Result<AssetMetadata> {
    if src.size > limits.max_file_bytes {
        return Err(ProbeError::TooLarge {
            what: format!("file of {} bytes", src.size),
            limit: limits.max_file_bytes,
        });
    }
    let format = detect::detect(&src.head)
        .ok_or_else(|| ProbeError::unsupported("no known signature and not text"))?;
    if let Some(partial) = &src.partial {
        let _ = partial.format.set(format);
    }
    probe_format(src, format, limits)
}

/// Runs the extractor for an already detected format. Every probe path ends here, so
/// every answer passes the one plausibility check ([`Limits::plausibility`]): a value
/// no real asset has is [`ProbeError::Corrupt`], whichever extractor read it.
pub fn probe_format(src: &Source, format: Format, limits: &Limits) -> Result<AssetMetadata> {
    let mut meta = (format.descriptor().extract)(src, format, limits)?;
    if matches!(meta.data_type, DataType::Video | DataType::Audio) {
        let playable = meta.codec.as_deref().is_some_and(|c| asset_core::browser_playable(&meta.mime, c));
        meta.browser_playable = Some(playable);
    }
    plausible::check(meta, &limits.plausibility)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("the parser panicked: {what}")
}

/// Opens a regular file for reading, and nothing else: a FIFO would block the reader
/// forever and a device has no end, so both are `unsupported_format` — decided on the
/// opened handle (non-blocking, so opening a FIFO returns at once), never by a second
/// look at the path.
fn open_regular(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(ProbeError::unsupported(format!("{what}, not a file")));
    }
    Ok(file)
}

/// Fills `buf` unless the input ends first; returns how many bytes were read. The
/// extractors' one "read what is there" primitive (std's `read_exact` fails on a short
/// file, where a probe wants to know how short).
pub(crate) fn read_up_to<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
