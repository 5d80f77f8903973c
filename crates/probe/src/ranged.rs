//! Probing a partial copy of an asset: the worker downloads byte ranges on demand and
//! the probe says which bytes it still needs, so an O(file) download becomes O(header).
//! A byte outside the downloaded ranges is never read as zero: the read fails and the
//! probe answers [`ProbeError::NeedBytes`](crate::ProbeError::NeedBytes).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use crate::{Format, Source};

/// A half-open range of bytes `[offset, offset + len)` of an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub offset: u64,
    pub len: u64,
}

impl ByteRange {
    pub fn new(offset: u64, len: u64) -> Self {
        ByteRange { offset, len }
    }

    /// From `start` to `end` (exclusive); empty when `end <= start`.
    pub fn span(start: u64, end: u64) -> Self {
        ByteRange { offset: start, len: end.saturating_sub(start) }
    }

    /// One past the last byte, saturating at `u64::MAX`.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of an HTTP `Range` header asking for these bytes, e.g. `bytes=0-65535`;
    /// `None` for an empty range, which HTTP cannot express.
    pub fn http_range(&self) -> Option<String> {
        (!self.is_empty()).then(|| format!("bytes={}-{}", self.offset, self.end() - 1))
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.offset, self.end())
    }
}

/// The bytes of an asset downloaded so far: sorted, disjoint, non-adjacent ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// `(start, end)` half-open, sorted by start, with a gap between neighbours.
    spans: Vec<(u64, u64)>,
}

impl RangeSet {
    pub fn new() -> Self {
        RangeSet::default()
    }

    /// Marks `range` present, merging it with overlapping or adjacent ranges.
    pub fn insert(&mut self, range: ByteRange) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.offset, range.end());
        // Every span that overlaps or touches [start, end) is absorbed.
        let first = self.spans.partition_point(|&(_, e)| e < start);
        let mut last = first;
        while last < self.spans.len() && self.spans[last].0 <= end {
            start = start.min(self.spans[last].0);
            end = end.max(self.spans[last].1);
            last += 1;
        }
        self.spans.splice(first..last, [(start, end)]);
    }

    /// Whether every byte of `range` is present (an empty range always is).
    pub fn contains(&self, range: ByteRange) -> bool {
        range.is_empty() || self.run_end(range.offset).is_some_and(|end| end >= range.end())
    }

    /// Whether the byte at `offset` is present.
    pub fn contains_byte(&self, offset: u64) -> bool {
        self.run_end(offset).is_some()
    }

    /// If the byte at `offset` is present, the end of the present run that holds it.
    pub fn run_end(&self, offset: u64) -> Option<u64> {
        let i = self.spans.partition_point(|&(_, e)| e <= offset);
        self.spans.get(i).filter(|&&(s, _)| s <= offset).map(|&(_, e)| e)
    }

    /// The parts of `range` that are not present, in order.
    pub fn missing_in(&self, range: ByteRange) -> Vec<ByteRange> {
        let mut out = Vec::new();
        let mut at = range.offset;
        let end = range.end();
        let first = self.spans.partition_point(|&(_, e)| e <= at);
        for &(s, e) in &self.spans[first..] {
            if s >= end {
                break;
            }
            if s > at {
                out.push(ByteRange::span(at, s));
            }
            at = at.max(e);
        }
        if at < end {
            out.push(ByteRange::span(at, end));
        }
        out
    }

    /// How many bytes are present in all.
    pub fn covered(&self) -> u64 {
        self.spans.iter().map(|&(s, e)| e - s).sum()
    }

    /// The present ranges, in order.
    pub fn ranges(&self) -> impl Iterator<Item = ByteRange> + '_ {
        self.spans.iter().map(|&(s, e)| ByteRange::span(s, e))
    }
}

/// The payload of the `io::Error` a partial read fails with; the probe turns it into
/// [`ProbeError::NeedBytes`](crate::ProbeError::NeedBytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingBytes {
    pub offset: u64,
    pub len: u64,
}

impl fmt::Display for MissingBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes at offset {} are not downloaded yet", self.len, self.offset)
    }
}

impl std::error::Error for MissingBytes {}

impl MissingBytes {
    /// The payload of `err`, when it is a partial read's miss.
    pub fn from_io(err: &io::Error) -> Option<MissingBytes> {
        err.get_ref().and_then(|e| e.downcast_ref::<MissingBytes>()).copied()
    }
}

/// What a partial source shares between its handles: the ranges present and the first
/// miss. The miss is kept here as well as in the error because parsers may swallow an
/// I/O error (treat it as the end, map it to "corrupt"): any miss at all means the
/// answer may differ from the full file's, so the probe asks for the bytes whatever
/// the parser made of the failure.
#[derive(Debug)]
pub(crate) struct Present {
    pub(crate) ranges: RangeSet,
    pub(crate) total: u64,
    first_miss: Mutex<Option<MissingBytes>>,
}

impl Present {
    pub(crate) fn new(ranges: RangeSet, total: u64) -> Self {
        Present { ranges, total, first_miss: Mutex::new(None) }
    }

    pub(crate) fn first_miss(&self) -> Option<MissingBytes> {
        *self.first_miss.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, miss: MissingBytes) {
        let mut slot = self.first_miss.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(miss);
    }
}

/// The handle extractors read an asset through. On a complete file it is the file;
/// on a partial copy a read stops at the end of the present run and a read that starts
/// on a missing byte fails with [`MissingBytes`].
#[derive(Debug)]
pub struct SourceFile {
    file: File,
    present: Option<Arc<Present>>,
    /// The position, tracked here so that a partial read needs no system call to find it.
    pos: u64,
}

impl SourceFile {
    pub(crate) fn new(file: File, present: Option<Arc<Present>>) -> Self {
        SourceFile { file, present, pos: 0 }
    }

    /// An independent handle on the same bytes, positioned at the start.
    pub fn reopen(&self) -> io::Result<SourceFile> {
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        Ok(SourceFile { file, present: self.present.clone(), pos: 0 })
    }

    /// The asset's full size, downloaded or not.
    pub fn len(&self) -> io::Result<u64> {
        match &self.present {
            Some(p) => Ok(p.total),
            None => Ok(self.file.metadata()?.len()),
        }
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl Read for SourceFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(present) = &self.present else {
            let n = self.file.read(buf)?;
            self.pos = self.pos.saturating_add(n as u64);
            return Ok(n);
        };
        if buf.is_empty() || self.pos >= present.total {
            return Ok(0);
        }
        let Some(run_end) = present.ranges.run_end(self.pos) else {
            let wanted = (buf.len() as u64).min(present.total - self.pos);
            let miss = MissingBytes { offset: self.pos, len: wanted };
            present.record(miss);
            return Err(io::Error::other(miss));
        };
        let room = run_end.min(present.total) - self.pos;
        let take = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
        let n = self.file.read(&mut buf[..take])?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

impl Seek for SourceFile {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

/// The buffer of a [`WalkReader`]: as large as the least a ranged fetch asks for, so
/// that the miss a fill reports on a partial source (its length is the buffer's) never
/// widens a fetch beyond what the policy would fetch anyway.
pub(crate) const WALK_BUFFER: usize = 64 * 1024;

/// The reader header walks go through: buffered, and aware of its position and of the
/// source's length, so that a seek landing inside the buffer costs no system call and
/// neither do `stream_position` nor a seek from the end. A walk over a million 8-byte
/// boxes then costs one read per 64 KiB instead of a seek and a read per box.
///
/// Each fill is one read of the inner source, which on a partial source stops at the end
/// of a downloaded run without failing: only a read that starts on a missing byte fails,
/// so the first miss is still the first byte the walk needs.
#[derive(Debug)]
pub(crate) struct WalkReader<R = SourceFile> {
    inner: BufReader<R>,
    pos: u64,
    len: u64,
}

/// The buffer of a [`WalkReader`] on a partial source: the least a ranged fetch may be
/// (`FIRST_FETCH_BYTES` ≥ 4 KiB). A fill reports a miss as long as the buffer, and the
/// fetch policy honours it, so a 64 KiB buffer would turn a 700-byte need into a 64 KiB
/// fetch under a small fetch policy. Reads of downloaded bytes come from the page cache,
/// so the smaller buffer costs little.
pub(crate) const PARTIAL_WALK_BUFFER: usize = 4 * 1024;

impl WalkReader<SourceFile> {
    /// A walk reader on an independent handle on `src`, positioned at the start.
    pub(crate) fn open(src: &Source) -> io::Result<Self> {
        let capacity = if src.is_partial() { PARTIAL_WALK_BUFFER } else { WALK_BUFFER };
        Ok(WalkReader { inner: BufReader::with_capacity(capacity, src.file()?), pos: 0, len: src.size() })
    }
}

impl<R: Read + Seek> WalkReader<R> {
    /// `inner` must be positioned at 0; `len` is the source's length (on a partial
    /// source, the asset's full length).
    #[cfg(test)]
    pub(crate) fn new(inner: R, len: u64) -> Self {
        WalkReader { inner: BufReader::with_capacity(WALK_BUFFER, inner), pos: 0, len }
    }

    /// The source's length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The bytes from the position to the end of the source.
    pub(crate) fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
}

impl<R: Read + Seek> Read for WalkReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    // BufReader's own, which copies straight from its buffer when the bytes are there:
    // the common case of a walk reading an 8-byte header.
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // After a failed read_exact the position is unspecified: put it back
                // where the read started, so that it stays ours to know.
                self.inner.seek(SeekFrom::Start(self.pos))?;
                Err(e)
            }
        }
    }
}

impl<R: Read + Seek> BufRead for WalkReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.pos += amt as u64;
    }
}

impl<R: Read + Seek> Seek for WalkReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start or past 2^64"))?;
        match i64::try_from(i128::from(target) - i128::from(self.pos)) {
            // Inside the buffer this moves a cursor; outside, it seeks the inner reader.
            Ok(delta) => self.inner.seek_relative(delta)?,
            Err(_) => {
                self.inner.seek(SeekFrom::Start(target))?;
            }
        }
        self.pos = target;
        Ok(target)
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

/// The formats whose extractor reads the whole file whatever it holds, as their
/// descriptor says (`whole_file`): text (every character is counted), PDF (lopdf parses
/// from memory) and raw ADTS (its duration is a walk over every frame). A ranged fetch
/// of these gets the rest at the first miss. MP3 is not one: with a Xing/VBRI header it
/// needs the first frame and the tail; without one the walk asks for successive ranges
/// and [`next_fetch`] widens them.
pub fn needs_whole_file(format: Format) -> bool {
    format.descriptor().whole_file
}

/// What a partial probe still needs: at least `len` bytes from `offset`. `whole_file`
/// says the format is read to the end (see [`needs_whole_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub offset: u64,
    pub len: u64,
    pub whole_file: bool,
}

/// How a ranged fetch widens what the probe needs into ranges worth a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPolicy {
    /// The size of the first fetch, a prefix of the asset.
    pub first: u64,
    /// The least fetched after the first; doubled each round.
    pub min: u64,
    /// After this many fetches after the first, the rest of the file is fetched at once.
    pub max_rounds: u32,
    /// How far before a need near the end a fetch starts: tails hold several trailers
    /// read one after the other (ID3v1, then the APEv2 footer in front of it).
    pub tail: u64,
}

/// The default first fetch: every signature and most headers (image, DICOM up to Pixel
/// Data, MP4 with `moov` first) fit in 64 KiB.
pub const FIRST_FETCH: u64 = 64 * 1024;
/// The default least worth a round trip: the request latency dwarfs 64 KiB.
pub const MIN_FETCH: u64 = 64 * 1024;
/// The default round limit.
pub const MAX_ROUNDS: u32 = 8;
/// The default reach back from a need near the end: small beside the 64 KiB prefix, so
/// a JPEG's EOI check costs 8 KiB more, not a full window.
pub const TAIL_FETCH: u64 = 8 * 1024;

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy { first: FIRST_FETCH, min: MIN_FETCH, max_rounds: MAX_ROUNDS, tail: TAIL_FETCH }
    }
}

impl FetchPolicy {
    /// The first range to download: a prefix of `first` bytes (all of a smaller asset),
    /// never less than the [`SNIFF_LEN`](crate::detect::SNIFF_LEN) bytes detection reads.
    /// Detection is not run on fewer: extractors rely on the head being complete (Ogg
    /// and text compare its length with the file's), so a shorter one would change
    /// their answers; the probe asks for the missing head bytes instead.
    pub fn first_fetch(&self, total: u64) -> ByteRange {
        ByteRange::new(0, total.min(self.first.max(crate::detect::SNIFF_LEN as u64)))
    }

    /// Widens what the probe needs into the next range to download. `round` counts the
    /// fetches made after the first (0 for the first widened fetch). A walk that keeps
    /// asking gets ranges that double each round; a need near the end is extended to
    /// the end; a whole-file format, or a probe still asking after `max_rounds`, gets
    /// everything still missing, one gap per call. The answer holds only missing bytes,
    /// holds `need.offset` when it is missing (and the policy is not fetching the rest),
    /// never goes past `total`, and is empty only if nothing is missing.
    pub fn next_fetch(&self, need: Need, total: u64, present: &RangeSet, round: u32) -> ByteRange {
        // The first gap only: a range never re-fetches bytes already present, and each
        // fetch leaves at most one more gap, so the gaps are few.
        let first_gap = |range: ByteRange| present.missing_in(range).first().copied();
        let everything = || first_gap(ByteRange::span(0, total)).unwrap_or(ByteRange::new(0, 0));
        if need.whole_file || round >= self.max_rounds || need.offset >= total {
            return everything();
        }
        let width = self.min.max(1).saturating_mul(1u64 << round.min(20)).max(need.len);
        let mut start = need.offset;
        let mut end = start.saturating_add(width).min(total);
        // Near the end: take the rest, so that a tail read (MP4 `moov`, ID3v1 and APE
        // tags, a JPEG's EOI) never leaves a sliver for another round trip, and reach
        // back a little for the trailers in front of the last one.
        if total - end < self.min {
            end = total;
            start = start.min(total.saturating_sub(self.tail));
        }
        first_gap(ByteRange::span(start, end)).unwrap_or_else(everything)
    }
}

/// [`FetchPolicy::first_fetch`] of the default policy.
pub fn first_fetch(total: u64) -> ByteRange {
    FetchPolicy::default().first_fetch(total)
}

/// [`FetchPolicy::next_fetch`] of the default policy.
pub fn next_fetch(need: Need, total: u64, present: &RangeSet, round: u32) -> ByteRange {
    FetchPolicy::default().next_fetch(need, total, present, round)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::new();
        for &(a, b) in ranges {
            s.insert(ByteRange::span(a, b));
        }
        s
    }

    fn spans(s: &RangeSet) -> Vec<(u64, u64)> {
        s.ranges().map(|r| (r.offset, r.end())).collect()
    }

    #[test]
    fn insert_merges_overlapping_and_adjacent() {
        let mut s = set(&[(10, 20), (30, 40), (50, 60)]);
        assert_eq!(spans(&s), [(10, 20), (30, 40), (50, 60)]);
        s.insert(ByteRange::span(20, 30)); // touches both neighbours
        assert_eq!(spans(&s), [(10, 40), (50, 60)]);
        s.insert(ByteRange::span(0, 5));
        s.insert(ByteRange::span(45, 70)); // swallows (50, 60)
        assert_eq!(spans(&s), [(0, 5), (10, 40), (45, 70)]);
        s.insert(ByteRange::span(3, 100));
        assert_eq!(spans(&s), [(0, 100)]);
        s.insert(ByteRange::new(500, 0));
        assert_eq!(spans(&s), [(0, 100)]);
        assert_eq!(s.covered(), 100);
    }

    #[test]
    fn contains_and_runs() {
        let s = set(&[(10, 20), (30, 40)]);
        assert!(s.contains(ByteRange::span(10, 20)));
        assert!(s.contains(ByteRange::span(12, 15)));
        assert!(!s.contains(ByteRange::span(15, 25)));
        assert!(!s.contains(ByteRange::span(5, 12)));
        assert!(s.contains(ByteRange::new(1000, 0)));
        assert!(s.contains_byte(10) && s.contains_byte(19));
        assert!(!s.contains_byte(20) && !s.contains_byte(9) && !s.contains_byte(40));
        assert_eq!(s.run_end(35), Some(40));
        assert_eq!(s.run_end(25), None);
    }

    #[test]
    fn missing_in_lists_the_gaps() {
        let s = set(&[(10, 20), (30, 40)]);
        let gaps: Vec<_> = s.missing_in(ByteRange::span(0, 50)).iter().map(|r| (r.offset, r.end())).collect();
        assert_eq!(gaps, [(0, 10), (20, 30), (40, 50)]);
        let gaps: Vec<_> =
            s.missing_in(ByteRange::span(15, 35)).iter().map(|r| (r.offset, r.end())).collect();
        assert_eq!(gaps, [(20, 30)]);
        assert!(s.missing_in(ByteRange::span(11, 19)).is_empty());
        assert!(RangeSet::new().missing_in(ByteRange::new(0, 0)).is_empty());
    }

    #[test]
    fn http_range_is_inclusive() {
        assert_eq!(ByteRange::new(0, 65536).http_range().as_deref(), Some("bytes=0-65535"));
        assert_eq!(ByteRange::new(7, 1).http_range().as_deref(), Some("bytes=7-7"));
        assert_eq!(ByteRange::new(7, 0).http_range(), None);
    }

    fn need(offset: u64, len: u64) -> Need {
        Need { offset, len, whole_file: false }
    }

    #[test]
    fn first_fetch_is_a_prefix() {
        assert_eq!(first_fetch(10), ByteRange::new(0, 10));
        assert_eq!(first_fetch(10 << 20), ByteRange::new(0, FIRST_FETCH));
        let tiny = FetchPolicy { first: 100, ..FetchPolicy::default() };
        assert_eq!(tiny.first_fetch(1 << 20), ByteRange::new(0, crate::detect::SNIFF_LEN as u64));
    }

    #[test]
    fn a_small_need_is_widened_and_doubles_each_round() {
        let total = 100 << 20;
        let present = set(&[(0, FIRST_FETCH)]);
        assert_eq!(next_fetch(need(1 << 20, 16), total, &present, 0), ByteRange::new(1 << 20, MIN_FETCH));
        assert_eq!(next_fetch(need(1 << 20, 16), total, &present, 2), ByteRange::new(1 << 20, 4 * MIN_FETCH));
        // A need larger than the widening is kept whole.
        assert_eq!(next_fetch(need(1 << 20, 1 << 20), total, &present, 0), ByteRange::new(1 << 20, 1 << 20));
    }

    #[test]
    fn a_need_near_the_end_becomes_a_suffix() {
        let total = 100 << 20;
        let present = set(&[(0, FIRST_FETCH)]);
        // A JPEG's EOI: the last 8 KiB, not a 64 KiB window reaching back.
        assert_eq!(
            next_fetch(need(total - 2, 2), total, &present, 0),
            ByteRange::span(total - TAIL_FETCH, total)
        );
        // Within one window of the end: the rest, not a sliver left for later.
        let at = total - MIN_FETCH - 1000;
        assert_eq!(next_fetch(need(at, 8), total, &present, 0), ByteRange::span(at, total));
        // Never extended back over the prefix.
        let small = set(&[(0, 100_000)]);
        assert_eq!(next_fetch(need(110_000, 8), 120_000, &small, 0), ByteRange::span(110_000, 120_000));
        assert_eq!(next_fetch(need(119_000, 8), 120_000, &small, 0), ByteRange::span(111_808, 120_000));
        let smaller = set(&[(0, 115_000)]);
        assert_eq!(next_fetch(need(119_000, 8), 120_000, &smaller, 0), ByteRange::span(115_000, 120_000));
    }

    #[test]
    fn present_bytes_are_never_fetched_again() {
        let total = 10 << 20;
        let present = set(&[(0, FIRST_FETCH), (1_000_000, 1_010_000)]);
        // The widened range [990_000, 1_055_536) stops where the present run starts.
        assert_eq!(next_fetch(need(990_000, 4), total, &present, 0), ByteRange::span(990_000, 1_000_000));
        // A need just before a present run gets the bytes up to it.
        let present = set(&[(0, FIRST_FETCH), (1_000_000, 1_100_000)]);
        assert_eq!(next_fetch(need(999_990, 4), total, &present, 0), ByteRange::span(999_990, 1_000_000));
    }

    #[test]
    fn whole_file_and_many_rounds_fetch_all_that_is_missing() {
        let total = 10 << 20;
        let present = set(&[(0, FIRST_FETCH), (total - 100, total)]);
        let whole = Need { offset: 70_000, len: 10, whole_file: true };
        assert_eq!(next_fetch(whole, total, &present, 0), ByteRange::span(FIRST_FETCH, total - 100));
        assert_eq!(
            next_fetch(need(70_000, 10), total, &present, MAX_ROUNDS),
            ByteRange::span(FIRST_FETCH, total - 100)
        );
        // One gap at a time, the first first.
        let holes = set(&[(0, FIRST_FETCH), (1 << 20, 2 << 20), (total - 100, total)]);
        assert_eq!(next_fetch(whole, total, &holes, 0), ByteRange::span(FIRST_FETCH, 1 << 20));
        let all = set(&[(0, total)]);
        assert!(next_fetch(need(5, 5), total, &all, MAX_ROUNDS).is_empty());
    }

    #[test]
    fn never_past_the_end() {
        let present = RangeSet::new();
        for (offset, len, round) in [(0, u64::MAX, 0), (u64::MAX - 1, 5, 3), (999, 1, 30)] {
            let got = next_fetch(need(offset, len), 1000, &present, round);
            assert!(got.end() <= 1000, "{got}");
        }
    }

    #[test]
    fn partial_reads_stop_at_gaps_and_report_the_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, (0..=255u8).collect::<Vec<_>>()).unwrap();
        let present = Arc::new(Present::new(set(&[(0, 10), (20, 30)]), 256));
        let mut f = SourceFile::new(File::open(&path).unwrap(), Some(present.clone()));
        let mut buf = [0u8; 64];
        assert_eq!(f.read(&mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], &(0..10).collect::<Vec<u8>>()[..]);
        let err = f.read(&mut buf).unwrap_err();
        assert_eq!(MissingBytes::from_io(&err), Some(MissingBytes { offset: 10, len: 64 }));
        f.seek(SeekFrom::Start(25)).unwrap();
        assert_eq!(f.read(&mut buf).unwrap(), 5);
        assert_eq!(buf[0], 25);
        assert_eq!(f.len().unwrap(), 256);
        let mut g = f.reopen().unwrap();
        assert_eq!(g.read(&mut buf).unwrap(), 10);
        // The first miss is kept even when a later read misses elsewhere.
        g.seek(SeekFrom::Start(250)).unwrap();
        assert!(g.read(&mut buf).is_err());
        assert_eq!(present.first_miss(), Some(MissingBytes { offset: 10, len: 64 }));
    }

    /// Counts the reads that reach the source.
    struct CountingReads<R> {
        inner: R,
        reads: Arc<Mutex<u32>>,
    }

    impl<R: Read> Read for CountingReads<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            *self.reads.lock().unwrap() += 1;
            self.inner.read(buf)
        }
    }

    impl<R: Seek> Seek for CountingReads<R> {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn a_walk_of_tiny_structures_reads_the_source_once_per_buffer() {
        // 8-byte "boxes" over 1 MiB, visited by absolute seeks as a box walk does.
        let bytes: Vec<u8> = (0..1u32 << 17).flat_map(|i| [i.to_be_bytes(), [0; 4]].concat()).collect();
        let reads = Arc::new(Mutex::new(0));
        let counting = CountingReads { inner: io::Cursor::new(&bytes[..]), reads: reads.clone() };
        let mut r = WalkReader::new(counting, bytes.len() as u64);
        for i in 0..1u32 << 17 {
            r.seek(SeekFrom::Start(u64::from(i) * 8)).unwrap();
            let mut head = [0u8; 4];
            r.read_exact(&mut head).unwrap();
            assert_eq!(u32::from_be_bytes(head), i);
            assert_eq!(r.stream_position().unwrap(), u64::from(i) * 8 + 4);
        }
        assert_eq!(*reads.lock().unwrap(), (bytes.len() / WALK_BUFFER) as u32);
        // From the end, and back: no read either until bytes are wanted.
        assert_eq!(r.seek(SeekFrom::End(-8)).unwrap(), bytes.len() as u64 - 8);
        assert_eq!(r.remaining(), 8);
        assert!(r.seek(SeekFrom::Current(-(bytes.len() as i64) - 1)).is_err());
    }

    #[test]
    fn a_buffered_walk_on_a_partial_source_misses_the_first_byte_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, (0..=255u8).collect::<Vec<_>>()).unwrap();
        let present = Arc::new(Present::new(set(&[(0, 10), (20, 30)]), 256));
        let file = SourceFile::new(File::open(&path).unwrap(), Some(present.clone()));
        let mut r = WalkReader::new(file, 256);
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0, 1, 2, 3]);
        // The fill stopped at the end of the run: the bytes after it are not asked for.
        r.seek(SeekFrom::Start(22)).unwrap();
        r.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [22, 23, 24, 25]);
        assert_eq!(present.first_miss(), None);
        // Four bytes from 8 need the missing byte 10: that is the miss.
        r.seek(SeekFrom::Start(8)).unwrap();
        let err = r.read_exact(&mut buf).unwrap_err();
        assert_eq!(MissingBytes::from_io(&err).map(|m| m.offset), Some(10));
        assert_eq!(present.first_miss().map(|m| m.offset), Some(10));
        // Its length is the buffer's, which the fetch policy never widens past.
        assert!(present.first_miss().unwrap().len <= WALK_BUFFER as u64);
    }

    #[test]
    fn a_failed_read_exact_leaves_the_walk_where_the_read_started() {
        let mut r = WalkReader::new(io::Cursor::new((0..10u8).collect::<Vec<_>>()), 10);
        r.seek(SeekFrom::Start(6)).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read_exact(&mut buf).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(r.stream_position().unwrap(), 6);
        let mut two = [0u8; 2];
        r.read_exact(&mut two).unwrap();
        assert_eq!(two, [6, 7]);
        r.seek(SeekFrom::Current(-8)).unwrap();
        r.read_exact(&mut two).unwrap();
        assert_eq!(two, [0, 1]);
    }
}
