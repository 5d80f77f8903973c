//! ISO BMFF and QuickTime (MP4, MOV, M4A). Top-level boxes are walked with seeks through
//! a buffered reader, so `mdat` is never read whatever its size or position and a
//! million empty boxes cost a read per 64 KiB; only `moov` (capped by the memory limit)
//! and, for fragmented files, each `moof` are read.
//!
//! `moov` is parsed by Mozilla's `mp4parse` 0.17 rather than the `mp4` crate 0.14. Both
//! were run on our fixtures: `mp4` refused the MP4 whose `mdat` is cut short (which
//! ffprobe reads), reported no codec for HEVC and a zero duration for fragmented files,
//! and its reader holds every `moof` in memory; `mp4parse` read every complete `moov`,
//! is fuzzed as part of Firefox and allocates fallibly. But it keeps every sample table
//! (8 bytes per chunk offset, whatever the file stored) and a `Track` per `trak`, so it
//! never sees the file's `moov`. Our own walk reads what the answer needs from the
//! tables (the sample count, the first chunk offset) without keeping them, and the
//! durations; `mp4parse` gets a copy holding `mvhd` and, of the first video and the
//! first audio `trak`, the headers and the first sample entry, whose decoder
//! configuration is what it is for. It knows fewer sample entries (no HEVC, ProRes or
//! MJPEG), so the sample-entry type and, when it gives up, the dimensions and audio
//! parameters come from our walk too, which also reads `moof`/`traf`/`trun`, that
//! `mp4parse` does not parse. A count we report is backed by bytes: the sample sizes it
//! counts, or for samples of one size, their bytes in the file.

use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Seek, SeekFrom};

use asset_core::Limits;
use mp4parse::{AudioCodecSpecific, CodecType, SampleEntry};

use super::{AudioStream, Streams, VideoStream, io_or_truncated, read_block};
use crate::audio::asc::{self, AudioConfig, Sbr};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FMT: &str = "MP4";

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Streams> {
    probe_reader(&mut WalkReader::open(src)?, limits)
}

pub(super) fn probe_reader<R: Read + Seek>(r: &mut WalkReader<R>, limits: &Limits) -> Result<Streams> {
    let file_size = r.len();
    let mut movie: Option<Movie> = None;
    let mut fragments = Fragments::default();
    let mut budget = Budget::new(limits);
    let mut offset = 0u64;
    while offset < file_size {
        budget.spend(1)?;
        let Some(h) = read_top_header(r, offset, file_size, movie.is_some())? else { break };
        let end =
            offset.checked_add(h.size).ok_or_else(|| ProbeError::corrupt(FMT, "a box size overflows"))?;
        if end > file_size {
            // A cut `mdat` after a complete `moov` still leaves the headers readable, as
            // ffprobe reads them; anything else cut short is a truncated file.
            match &h.kind {
                b"moov" => return Err(ProbeError::truncated(FMT, "the file ends inside the moov box")),
                _ if movie.is_some() => break,
                kind => {
                    return Err(ProbeError::truncated(
                        FMT,
                        format!("the file ends inside a top-level {} box, before any moov", fourcc(kind)),
                    ));
                }
            }
        }
        match &h.kind {
            b"moov" if movie.is_none() => {
                let payload =
                    read_block(r, offset + h.header_len, h.size - h.header_len, limits, FMT, "the moov box")?;
                let parsed = Movie::parse(&payload, file_size, limits)?;
                let fragmented = parsed.fragmented;
                movie = Some(parsed);
                if !fragmented {
                    break;
                }
            }
            b"moof" => {
                let Some(m) = &movie else {
                    return Err(ProbeError::unsupported("an MP4 movie fragment before the moov box"));
                };
                let bytes =
                    read_block(r, offset + h.header_len, h.size - h.header_len, limits, FMT, "a moof box")?;
                fragments.add(&bytes, m, file_size, &mut budget)?;
            }
            _ => {}
        }
        offset = end;
    }
    let movie = movie.ok_or_else(|| ProbeError::corrupt(FMT, "no moov box"))?;
    let mut streams = movie.streams(&fragments.totals)?;
    // MP3 in MP4 has no decoder configuration, and muxers write a placeholder channel
    // count in the sample entry; the first frame header (4 bytes) has the real one.
    if let Some(audio) = streams.audio.as_mut().filter(|a| a.codec == "mp3")
        && let Some(offset) = movie.first_audio_chunk()
        && offset.checked_add(4).is_some_and(|end| end <= file_size)
    {
        let mut head = [0u8; 4];
        r.seek(SeekFrom::Start(offset))?;
        r.read_exact(&mut head)?;
        if let Some(n) = mpeg_audio_channels(head) {
            audio.channels = Some(n);
        }
    }
    // AAC whose config says nothing of SBR may still carry it in its frames (implicit
    // signalling). ffprobe decodes a frame and reports what the decoder outputs, as for
    // ADTS (audio/adts.rs): so do we, from the same evidence, read from the first
    // access units (a few KiB where the first chunk lies, as for MP3 above).
    if let Some(audio) = streams.audio.as_mut().filter(|a| a.codec == "aac")
        && let Some((track, Some(config))) =
            movie.first_audio().map(|(t, p)| (t, audio_config(p).ok().flatten()))
        && config.is_aac()
        && config.sbr == Sbr::Unsignalled
        && config.ps.is_none()
        && let Some(units) = track.lead.units()
        && let Some(offset) = track.first_chunk
        && let Some(len) = units.iter().map(|&n| u64::from(n)).try_fold(0u64, u64::checked_add)
        && len <= LEAD_BYTES
        && offset.checked_add(len).is_some_and(|end| end <= file_size)
    {
        // At most LEAD_BYTES, checked above.
        let mut bytes = vec![0u8; len as usize];
        r.seek(SeekFrom::Start(offset))?;
        r.read_exact(&mut bytes)?;
        if implicit_sbr(&bytes, units) {
            audio.sample_rate = Some(config.core_rate.saturating_mul(2));
            if config.core_channels == Some(1) {
                audio.channels = Some(2);
            }
        }
    }
    Ok(streams)
}

/// The most the implicit-SBR check reads: four access units of up to 6144 bits per
/// channel (ISO/IEC 14496-3 §4.5.3.2) for 8 channels.
const LEAD_BYTES: u64 = 4 * 6144;

/// Whether every one of the leading access units carries an SBR extension element (see
/// [`crate::audio::aac_block_carries_sbr`]): one stray bit pattern must not decide.
fn implicit_sbr(bytes: &[u8], units: &[u32]) -> bool {
    let mut at = 0usize;
    for &n in units {
        let Some(unit) = bytes.get(at..at.saturating_add(n as usize)) else { return false };
        if crate::audio::aac_block_carries_sbr(unit) != Some(true) {
            return false;
        }
        at += n as usize;
    }
    !units.is_empty()
}

/// Channels from an MPEG audio frame header: channel mode 3 is mono.
fn mpeg_audio_channels(h: [u8; 4]) -> Option<u32> {
    (h[0] == 0xFF && h[1] & 0xE0 == 0xE0).then_some(if h[3] >> 6 == 3 { 1 } else { 2 })
}

/// Counts work against `limits.max_items`, so no declared count makes a loop unbounded.
struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    fn new(limits: &Limits) -> Self {
        Budget { left: limits.max_items, limit: limits.max_items }
    }

    fn spend(&mut self, n: u64) -> Result<()> {
        self.left = self.left.checked_sub(n).ok_or_else(|| ProbeError::TooLarge {
            what: "number of MP4 boxes and samples walked".into(),
            limit: self.limit,
        })?;
        Ok(())
    }
}

struct TopHeader {
    kind: [u8; 4],
    header_len: u64,
    /// Whole box, header included; a size of 0 ("to the end of the file") is resolved.
    size: u64,
}

/// Reads the header of the top-level box at `offset`. `None` when a few trailing bytes
/// after a complete `moov` cannot hold a header (ffprobe ignores them too).
fn read_top_header<R: Read + Seek>(
    r: &mut R,
    offset: u64,
    file_size: u64,
    have_moov: bool,
) -> Result<Option<TopHeader>> {
    if file_size - offset < 8 {
        return if have_moov {
            Ok(None)
        } else {
            Err(ProbeError::truncated(FMT, "the file ends inside a box header"))
        };
    }
    r.seek(SeekFrom::Start(offset))?;
    let mut head = [0u8; 16];
    r.read_exact(&mut head[..8]).map_err(|e| io_or_truncated(e, FMT, "a box header"))?;
    let kind = [head[4], head[5], head[6], head[7]];
    let (size, header_len) = match u32::from_be_bytes([head[0], head[1], head[2], head[3]]) {
        0 => (file_size - offset, 8),
        1 => {
            r.read_exact(&mut head[8..16]).map_err(|e| io_or_truncated(e, FMT, "a 64-bit box size"))?;
            let mut large = [0u8; 8];
            large.copy_from_slice(&head[8..16]);
            (u64::from_be_bytes(large), 16)
        }
        n => (u64::from(n), 8),
    };
    if size < header_len {
        return Err(ProbeError::corrupt(FMT, format!("{} box declares {size} bytes", fourcc(&kind))));
    }
    Ok(Some(TopHeader { kind, header_len, size }))
}

fn fourcc(kind: &[u8; 4]) -> String {
    kind.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' }).collect()
}

/// Child boxes of a complete, in-memory payload. A child that claims more bytes than
/// its parent holds is corruption (the parent itself was read in full).
pub(crate) struct Boxes<'a> {
    rest: &'a [u8],
    /// The format errors are reported for.
    format: &'static str,
}

fn boxes(data: &[u8]) -> Boxes<'_> {
    boxes_of(FMT, data)
}

/// [`Boxes`] of an ISO BMFF payload of another format (CR3, …), its errors named so.
pub(crate) fn boxes_of<'a>(format: &'static str, data: &'a [u8]) -> Boxes<'a> {
    Boxes { rest: data, format }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<([u8; 4], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = split_box(self.format, self.rest);
        match item {
            Ok((kind, payload, rest)) => {
                self.rest = rest;
                Some(Ok((kind, payload)))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

type Split<'a> = ([u8; 4], &'a [u8], &'a [u8]);

fn split_box<'a>(format: &'static str, data: &'a [u8]) -> Result<Split<'a>> {
    let bad = |what: &str| ProbeError::corrupt(format, what.to_string());
    let size = be_u32(data, 0).ok_or_else(|| bad("a box header is cut short"))?;
    let kind = data
        .get(4..8)
        .and_then(|k| <[u8; 4]>::try_from(k).ok())
        .ok_or_else(|| bad("a box header is cut short"))?;
    let (size, header_len) = match size {
        0 => (data.len() as u64, 8u64),
        1 => (be_u64(data, 8).ok_or_else(|| bad("a 64-bit box size is cut short"))?, 16),
        n => (u64::from(n), 8),
    };
    if size < header_len || size > data.len() as u64 {
        return Err(bad(&format!(
            "{} box declares {size} bytes in a parent of {}",
            fourcc(&kind),
            data.len()
        )));
    }
    // Both fit in usize: they are at most data.len().
    let (size, header_len) = (size as usize, header_len as usize);
    Ok((kind, &data[header_len..size], &data[size..]))
}

/// The first child of `data` of type `kind`.
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>> {
    child_of(FMT, data, kind)
}

/// [`child`] in an ISO BMFF payload of another format.
pub(crate) fn child_of<'a>(format: &'static str, data: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>> {
    for b in boxes_of(format, data) {
        let (k, payload) = b?;
        if &k == kind {
            return Ok(Some(payload));
        }
    }
    Ok(None)
}

fn be_u16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(d.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn be_u32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn be_u64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(d.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Defaults from `mvex/trex` that fragments may rely on.
#[derive(Debug, Clone, Copy, Default)]
struct Trex {
    default_sample_duration: u32,
    default_sample_size: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct FragmentTotals {
    samples: u64,
    duration: u64,
}

/// The first sample entry of a track's `stsd`, as our own walker reads it.
#[derive(Debug, Clone, Copy, Default)]
struct RawEntry {
    kind: [u8; 4],
    /// Read as a visual sample entry.
    width: u32,
    height: u32,
    /// Read as an audio sample entry.
    channels: u32,
    rate: u32,
}

impl RawEntry {
    /// A protected sample entry (Common Encryption, or Apple's FairPlay).
    fn is_encrypted(&self) -> bool {
        matches!(&self.kind, b"encv" | b"enca" | b"drmi" | b"drms")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

/// A video or audio `trak` as our walk reads it (`mp4parse`'s rules where it has any:
/// the last `tkhd`, `mdhd` and `hdlr` win, an all-ones duration is unknown).
#[derive(Debug, Clone)]
struct TrackInfo {
    kind: Kind,
    id: u32,
    /// `mdhd`: units per second (0 when there is none) and duration (`None`: unknown).
    timescale: u64,
    duration: Option<u64>,
    /// The first edit's duration and the empty edit before it, in movie units.
    edit: Option<(u64, u64)>,
    /// Samples in the sample tables, when sizes back the count (see [`SampleSizes`]).
    samples: Option<u64>,
    first_chunk: Option<u64>,
    /// The sizes of the first samples of the first chunk.
    lead: Lead,
    raw: RawEntry,
    /// Index of this track in `mp4parse`'s context, if it was handed to it.
    parsed: Option<usize>,
}

/// The leading samples of a track, up to [`crate::audio::AAC_SBR_FRAMES`]: their sizes
/// and how many of them the first chunk holds (they lie one after another there).
#[derive(Debug, Clone, Copy, Default)]
struct Lead {
    sizes: [u32; crate::audio::AAC_SBR_FRAMES],
    /// Sizes known (from `stsz`).
    known: usize,
    /// Samples in the first chunk (`stsc`'s first entry), if it describes chunk 1.
    per_chunk: Option<u32>,
}

impl Lead {
    /// The sizes of the leading samples that lie together in the first chunk.
    fn units(&self) -> Option<&[u32]> {
        let n = self.known.min(self.per_chunk? as usize);
        (n > 0 && self.sizes[..n].iter().all(|&s| s > 0)).then(|| &self.sizes[..n])
    }
}

/// What a sample size table says about the count of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SampleSizes {
    /// One size per sample (`stsz` with size 0, `stz2`): the count is backed by them.
    Each(u64),
    /// `count` samples of `size` bytes each.
    Fixed { size: u64, count: u64 },
}

/// The memory a video or audio track costs us: its `TrackInfo`, its ID in a set.
const TRACK_COST: u64 = (std::mem::size_of::<TrackInfo>() + 16) as u64;

/// What the `moov` box says: our walk's tracks and `mp4parse`'s reading of the two we
/// report on.
struct Movie {
    /// Every video and audio `trak`, in file order.
    tracks: Vec<TrackInfo>,
    ids: HashSet<u32>,
    ctx: mp4parse::MediaContext,
    trex: HashMap<u32, Trex>,
    fragmented: bool,
}

impl Movie {
    fn parse(moov: &[u8], file_size: u64, limits: &Limits) -> Result<Movie> {
        check_sample_tables(moov)?;
        let mut tracks = Vec::new();
        let mut mvhd = None;
        let mut fragmented = false;
        // (index in `tracks`, payload) of the first video and the first audio trak.
        let (mut video, mut audio) = (None, None);
        for b in boxes(moov) {
            let (kind, body) = b?;
            match &kind {
                b"mvhd" => mvhd = Some(body),
                b"trak" => {
                    if let Some(t) = read_trak(body, file_size)? {
                        let slot = if t.kind == Kind::Video { &mut video } else { &mut audio };
                        slot.get_or_insert((tracks.len(), body));
                        tracks.push(t);
                        // What we keep per track counts against the memory limit with the
                        // moov itself: a moov of a million 36-byte audio traks is refused,
                        // not turned into 128 bytes each.
                        let held = moov.len() as u64 + tracks.len() as u64 * TRACK_COST;
                        if held > limits.max_memory_bytes {
                            return Err(ProbeError::TooLarge {
                                what: format!(
                                    "MP4 moov of {} bytes with over {} tracks",
                                    moov.len(),
                                    tracks.len()
                                ),
                                limit: limits.max_memory_bytes,
                            });
                        }
                    }
                }
                b"mvex" => fragmented = true,
                _ => {}
            }
        }
        // Before mp4parse, which keeps every `sinf` of a protected sample entry (a
        // hundred bytes for each 8-byte one): the answer is `encrypted` either way.
        if tracks.iter().any(|t| t.raw.is_encrypted()) {
            return Err(ProbeError::Encrypted { format: FMT });
        }
        let mut chosen: Vec<(usize, &[u8])> = [video, audio].into_iter().flatten().collect();
        chosen.sort_by_key(|&(i, _)| i);
        let slim = slim_moov(mvhd, chosen.iter().map(|&(_, trak)| trak))?;
        let ctx = mp4parse::read_mp4(&mut Cursor::new(slim)).map_err(|e| classify(e, limits))?;
        if ctx.tracks.len() != chosen.len() {
            return Err(ProbeError::corrupt(FMT, "mp4parse did not read back the tracks it was given"));
        }
        for (n, &(i, _)) in chosen.iter().enumerate() {
            tracks[i].parsed = Some(n);
        }
        let ids: HashSet<u32> = tracks.iter().map(|t| t.id).collect();
        // Defaults only for the tracks there are: a million `trex` boxes keep nothing.
        let mut trex = HashMap::new();
        for b in boxes(moov) {
            let (kind, body) = b?;
            if &kind != b"mvex" {
                continue;
            }
            for t in boxes(body) {
                let (k, p) = t?;
                if &k == b"trex"
                    && let (Some(id), Some(dur), Some(size)) = (be_u32(p, 4), be_u32(p, 12), be_u32(p, 16))
                    && ids.contains(&id)
                {
                    trex.insert(id, Trex { default_sample_duration: dur, default_sample_size: size });
                }
            }
        }
        Ok(Movie { tracks, ids, ctx, trex, fragmented })
    }

    /// File offset of the first chunk of the first audio track.
    fn first_audio_chunk(&self) -> Option<u64> {
        self.tracks.iter().find(|t| t.kind == Kind::Audio)?.first_chunk
    }

    /// The first audio track, the one reported, and `mp4parse`'s reading of it.
    fn first_audio(&self) -> Option<(&TrackInfo, Option<&mp4parse::Track>)> {
        let t = self.tracks.iter().find(|t| t.kind == Kind::Audio)?;
        Some((t, t.parsed.and_then(|i| self.ctx.tracks.get(i))))
    }

    fn streams(&self, fragments: &HashMap<u32, FragmentTotals>) -> Result<Streams> {
        let movie_scale = self.ctx.timescale.map(|t| t.0).filter(|&t| t > 0);
        let mut out = Streams::default();
        let mut longest: Option<f64> = None;
        for t in &self.tracks {
            let frag = fragments.get(&t.id).copied().unwrap_or_default();
            let scale = Some(t.timescale).filter(|&s| s > 0);
            let media_units = t.duration.unwrap_or(0).saturating_add(frag.duration);
            let media_seconds = scale.map(|s| media_units as f64 / s as f64);
            // The edit list trims encoder delay (AAC priming); ffprobe reports the edited
            // length. A zero edit means "the whole media", as in fragmented files.
            let edited = match (t.edit, movie_scale) {
                (Some((e, empty)), Some(ms)) if e > 0 && frag.samples == 0 => {
                    Some(e.saturating_add(empty) as f64 / ms as f64)
                }
                _ => None,
            };
            if let Some(d) = edited.or(media_seconds) {
                longest = Some(longest.map_or(d, |l: f64| l.max(d)));
            }
            let parsed = t.parsed.and_then(|i| self.ctx.tracks.get(i));
            if t.kind == Kind::Video && out.video.is_none() {
                let samples = match t.samples {
                    Some(n) => Some(n.saturating_add(frag.samples)),
                    None => Some(frag.samples).filter(|&n| n > 0),
                };
                let entry = parsed.and_then(|p| p.stsd.as_ref()).and_then(|s| s.descriptions.first());
                let (mut width, mut height) = match entry {
                    Some(SampleEntry::Video(v)) => (u32::from(v.width), u32::from(v.height)),
                    _ => (t.raw.width, t.raw.height),
                };
                let tkhd = parsed.and_then(|p| p.tkhd.as_ref());
                if (width == 0 || height == 0)
                    && let Some(k) = tkhd
                {
                    (width, height) = (k.width >> 16, k.height >> 16);
                }
                if tkhd.is_some_and(|k| quarter_turn(&k.matrix)) {
                    (width, height) = (height, width);
                }
                let frame_rate = media_seconds
                    .filter(|&s| s > 0.0)
                    .zip(samples.filter(|&n| n > 0))
                    .map(|(s, n)| n as f64 / s);
                out.video = Some(VideoStream {
                    width,
                    height,
                    frame_count: samples,
                    frame_rate,
                    codec: video_codec(&t.raw.kind),
                });
            }
            if t.kind == Kind::Audio && out.audio.is_none() {
                out.audio = Some(audio_stream(parsed, &t.raw, audio_config(parsed)?.as_ref()));
            }
        }
        out.duration_seconds = longest;
        Ok(out)
    }
}

/// Reads a `trak`: `None` unless its handler is video or audio. The sample tables are
/// read where they lie and nothing of them is kept but a count and an offset.
fn read_trak(trak: &[u8], file_size: u64) -> Result<Option<TrackInfo>> {
    let mut kind = None;
    let mut t = TrackInfo {
        kind: Kind::Video,
        id: 0,
        timescale: 0,
        duration: None,
        edit: None,
        samples: None,
        first_chunk: None,
        lead: Lead::default(),
        raw: RawEntry::default(),
        parsed: None,
    };
    let mut sizes = None;
    let mut raw = None;
    for b in boxes(trak) {
        let (k, body) = b?;
        match &k {
            b"tkhd" => {
                let id_at = if body.first() == Some(&1) { 20 } else { 12 };
                if let Some(id) = be_u32(body, id_at) {
                    t.id = id;
                }
            }
            b"edts" => {
                for e in boxes(body) {
                    let (ek, elst) = e?;
                    if &ek == b"elst"
                        && let Some(edit) = first_edit(elst)
                    {
                        t.edit = Some(edit);
                    }
                }
            }
            b"mdia" => {
                for m in boxes(body) {
                    let (mk, mbody) = m?;
                    match &mk {
                        b"mdhd" => {
                            if let Some((scale, duration)) = mdhd(mbody) {
                                (t.timescale, t.duration) = (scale, duration);
                            }
                        }
                        // pre_defined, then the handler type.
                        b"hdlr" => match mbody.get(8..12) {
                            Some(b"vide") => kind = Some(Kind::Video),
                            Some(b"soun") => kind = Some(Kind::Audio),
                            Some(_) => kind = None,
                            None => {}
                        },
                        b"minf" => {
                            if let Some(stbl) = child(mbody, b"stbl")? {
                                read_stbl(stbl, &mut sizes, &mut t.first_chunk, &mut t.lead, &mut raw)?;
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let Some(kind) = kind else { return Ok(None) };
    t.kind = kind;
    t.raw = raw.unwrap_or_default();
    t.samples = match sizes {
        Some(SampleSizes::Each(n)) => Some(n),
        // Samples of one size are backed by their bytes only: the file must hold them.
        Some(SampleSizes::Fixed { size, count }) => {
            Some(count).filter(|_| count.checked_mul(size).is_some_and(|b| b <= file_size))
        }
        None => None,
    };
    Ok(Some(t))
}

/// The sample count (from the size table), the first chunk's offset, the leading
/// samples and the first sample entry of an `stbl`. The tables' counts were checked
/// against their boxes.
fn read_stbl(
    stbl: &[u8],
    sizes: &mut Option<SampleSizes>,
    first_chunk: &mut Option<u64>,
    lead: &mut Lead,
    raw: &mut Option<RawEntry>,
) -> Result<()> {
    for b in boxes(stbl) {
        let (kind, body) = b?;
        match &kind {
            b"stsd" if raw.is_none() => *raw = Some(raw_entry(body)),
            b"stsz" => {
                if let (Some(size), Some(count)) = (be_u32(body, 4), be_u32(body, 8)) {
                    let n = lead.sizes.len().min(count as usize);
                    for (i, slot) in lead.sizes[..n].iter_mut().enumerate() {
                        *slot = if size == 0 { be_u32(body, 12 + 4 * i).unwrap_or(0) } else { size };
                    }
                    lead.known = n;
                    let count = u64::from(count);
                    *sizes = Some(match size {
                        0 => SampleSizes::Each(count),
                        size => SampleSizes::Fixed { size: u64::from(size), count },
                    });
                }
            }
            // stsc: the first entry, if it starts at chunk 1, gives its samples per chunk.
            b"stsc" => {
                lead.per_chunk = be_u32(body, 4)
                    .filter(|&n| n > 0)
                    .and_then(|_| be_u32(body, 8).filter(|&c| c == 1))
                    .and_then(|_| be_u32(body, 12));
            }
            b"stz2" => {
                if let Some(count) = be_u32(body, 8) {
                    *sizes = Some(SampleSizes::Each(u64::from(count)));
                }
            }
            // The last of `stco` and `co64` wins, as in mp4parse; an empty one leaves none.
            b"stco" => *first_chunk = be_u32(body, 4).filter(|&n| n > 0).and(be_u32(body, 8)).map(u64::from),
            b"co64" => *first_chunk = be_u32(body, 4).filter(|&n| n > 0).and(be_u64(body, 8)),
            _ => {}
        }
    }
    Ok(())
}

/// `mdhd`'s timescale and duration (`None` when all ones: unknown), as `mp4parse` reads
/// them; `None` for a version it refuses.
fn mdhd(body: &[u8]) -> Option<(u64, Option<u64>)> {
    match body.first()? {
        0 => {
            let d = be_u32(body, 16)?;
            Some((u64::from(be_u32(body, 12)?), (d != u32::MAX).then_some(u64::from(d))))
        }
        1 => {
            let d = be_u64(body, 24)?;
            Some((u64::from(be_u32(body, 20)?), (d != u64::MAX).then_some(d)))
        }
        _ => None,
    }
}

/// The edit `mp4parse` takes from an edit list, `(segment duration, empty duration)`:
/// the first one, or the second when the first is an empty edit (media time -1).
fn first_edit(elst: &[u8]) -> Option<(u64, u64)> {
    let version = *elst.first()?;
    let count = be_u32(elst, 4)?;
    let entry = |i: usize| -> Option<(u64, i64)> {
        match version {
            1 => {
                let at = 8 + i * 20;
                Some((be_u64(elst, at)?, be_u64(elst, at + 8)? as i64))
            }
            0 => {
                let at = 8 + i * 12;
                Some((u64::from(be_u32(elst, at)?), i64::from(be_u32(elst, at + 4)? as i32)))
            }
            _ => None,
        }
    };
    if count == 0 {
        return None;
    }
    let (first, media_time) = entry(0)?;
    if media_time == -1 {
        if count < 2 {
            return None;
        }
        return Some((entry(1)?.0, first));
    }
    Some((first, 0))
}

/// The `moov` that `mp4parse` reads: the last `mvhd` (the one it would keep) and the
/// given `trak`s cut down to what it reads for us (`tkhd`, an `edts` of at most two
/// edits, `mdhd`, `hdlr` and an `stsd` of its first sample entry). No sample table goes
/// in, so nothing it allocates is sized by a count the file chose.
fn slim_moov<'a>(mvhd: Option<&[u8]>, traks: impl Iterator<Item = &'a [u8]>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    if let Some(m) = mvhd {
        put_box(&mut body, b"mvhd", m)?;
    }
    for trak in traks {
        let mut t = Vec::new();
        for b in boxes(trak) {
            let (kind, payload) = b?;
            match &kind {
                b"tkhd" => put_box(&mut t, &kind, payload)?,
                b"edts" => {
                    let mut e = Vec::new();
                    for c in boxes(payload) {
                        let (k, elst) = c?;
                        if &k == b"elst" {
                            put_box(&mut e, &k, &first_two_edits(elst))?;
                        }
                    }
                    put_box(&mut t, &kind, &e)?;
                }
                b"mdia" => put_box(&mut t, &kind, &slim_mdia(payload)?)?,
                _ => {}
            }
        }
        put_box(&mut body, b"trak", &t)?;
    }
    let mut moov = Vec::new();
    put_box(&mut moov, b"moov", &body)?;
    Ok(moov)
}

fn slim_mdia(mdia: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for b in boxes(mdia) {
        let (kind, payload) = b?;
        match &kind {
            b"mdhd" | b"hdlr" => put_box(&mut out, &kind, payload)?,
            b"minf" => {
                let mut stbl = Vec::new();
                if let Some(s) = child(payload, b"stbl")?
                    && let Some(stsd) = child(s, b"stsd")?
                {
                    // Version and flags, a count of at most one, the first entry.
                    let head = stsd.get(..4).ok_or_else(|| ProbeError::corrupt(FMT, "stsd is cut short"))?;
                    let entries = stsd.get(8..).unwrap_or_default();
                    let mut first = Vec::new();
                    if be_u32(stsd, 4).is_some_and(|n| n > 0) && !entries.is_empty() {
                        let (k, p, _) = split_box(FMT, entries)?;
                        put_box(&mut first, &k, p)?;
                    }
                    let count = u32::from(!first.is_empty());
                    put_box(&mut stbl, b"stsd", &[head, &count.to_be_bytes(), &first].concat())?;
                }
                let mut minf = Vec::new();
                put_box(&mut minf, b"stbl", &stbl)?;
                put_box(&mut out, &kind, &minf)?;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// An `elst` payload with at most its first two entries, all `mp4parse` uses.
fn first_two_edits(elst: &[u8]) -> Vec<u8> {
    let entry = if elst.first() == Some(&1) { 20 } else { 12 };
    let count = be_u32(elst, 4).unwrap_or(0).min(2);
    let end = (8 + count as usize * entry).min(elst.len());
    let mut out = elst.get(..4).unwrap_or_default().to_vec();
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(elst.get(8..end).unwrap_or_default());
    out
}

fn put_box(out: &mut Vec<u8>, kind: &[u8; 4], payload: &[u8]) -> Result<()> {
    let size = u32::try_from(payload.len() + 8).map_err(|_| ProbeError::TooLarge {
        what: format!("MP4 {} box of {} bytes", fourcc(kind), payload.len()),
        limit: u64::from(u32::MAX),
    })?;
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(payload);
    Ok(())
}

/// Refuses sample tables whose declared entry count exceeds what their box holds.
/// mp4parse reserves memory for the declared count before reading the entries, so a
/// 20-byte `stsz` claiming 2^32 samples must never reach it.
fn check_sample_tables(moov: &[u8]) -> Result<()> {
    for top in boxes(moov) {
        let (kind, body) = top?;
        if &kind == b"pssh" && body.first().is_some_and(|&v| v > 0) {
            check_count(&kind, body, (20, 24, 16))?;
        }
        if &kind != b"trak" {
            continue;
        }
        let trak = body;
        if let Some(edts) = child(trak, b"edts")?
            && let Some(elst) = child(edts, b"elst")?
        {
            let entry = if elst.first() == Some(&1) { 20 } else { 12 };
            check_count(b"elst", elst, (4, 8, entry))?;
        }
        let Some(mdia) = child(trak, b"mdia")? else { continue };
        let Some(minf) = child(mdia, b"minf")? else { continue };
        let Some(stbl) = child(minf, b"stbl")? else { continue };
        for table in boxes(stbl) {
            let (kind, body) = table?;
            // (offset of the entry count, offset of the first entry, least bytes per entry)
            let layout = match &kind {
                b"stts" | b"ctts" | b"co64" | b"stsd" => (4, 8, 8),
                b"stsc" => (4, 8, 12),
                b"stco" | b"stss" => (4, 8, 4),
                b"stsz" if be_u32(body, 4) == Some(0) => (8, 12, 4),
                b"stz2" => {
                    check_compact_sizes(body)?;
                    continue;
                }
                _ => continue,
            };
            check_count(&kind, body, layout)?;
        }
    }
    Ok(())
}

fn check_count(kind: &[u8; 4], body: &[u8], (count_at, first, entry): (usize, u64, u64)) -> Result<()> {
    let count =
        be_u32(body, count_at).ok_or_else(|| ProbeError::corrupt(FMT, "a sample table is cut short"))?;
    // At most 2^32 × 20 + 24: no overflow.
    if u64::from(count) * entry + first > body.len() as u64 {
        return Err(ProbeError::corrupt(
            FMT,
            format!("{} declares {count} entries that its {} bytes cannot hold", fourcc(kind), body.len()),
        ));
    }
    Ok(())
}

/// `stz2`: sample sizes of 4, 8 or 16 bits each, `count` of them after 12 bytes.
fn check_compact_sizes(body: &[u8]) -> Result<()> {
    let bad = || ProbeError::corrupt(FMT, "an stz2 box is cut short or has a bad field size");
    let bits = u64::from(*body.get(7).ok_or_else(bad)?);
    let count = u64::from(be_u32(body, 8).ok_or_else(bad)?);
    if !matches!(bits, 4 | 8 | 16) {
        return Err(bad());
    }
    if (count * bits).div_ceil(8) + 12 > body.len() as u64 {
        return Err(ProbeError::corrupt(
            FMT,
            format!("stz2 declares {count} entries that its {} bytes cannot hold", body.len()),
        ));
    }
    Ok(())
}

/// A rotation of 90° or 270° in the track matrix: the display size is the stored one
/// transposed.
fn quarter_turn(m: &mp4parse::Matrix) -> bool {
    let degrees = f64::from(m.b).atan2(f64::from(m.a)).to_degrees();
    let quarter = ((degrees / 90.0).round() as i64).rem_euclid(4);
    quarter == 1 || quarter == 3
}

/// The AudioSpecificConfig of an AAC sample entry that `mp4parse` read (it keeps the
/// bytes of the config it accepted), read again by us: `mp4parse` 0.17 takes SBR or PS
/// signalled hierarchically for plain AAC at the core rate, ignores a backward-compatible
/// sync extension and maps an explicit frequency of 0 to 8000 Hz. A config no decoder
/// accepts (ffprobe: "invalid sampling rate index 15") is corrupt, not a rate.
fn audio_config(track: Option<&mp4parse::Track>) -> Result<Option<AudioConfig>> {
    let Some(SampleEntry::Audio(e)) =
        track.and_then(|t| t.stsd.as_ref()).and_then(|s| s.descriptions.first())
    else {
        return Ok(None);
    };
    let AudioCodecSpecific::ES_Descriptor(es) = &e.codec_specific else { return Ok(None) };
    if es.audio_codec != CodecType::AAC || es.decoder_specific_data.is_empty() {
        return Ok(None);
    }
    asc::read(&es.decoder_specific_data).map(Some).map_err(|e| ProbeError::corrupt(FMT, e))
}

/// The audio stream as a decoder plays it. The codec stays `aac` for HE-AAC and
/// HE-AACv2, as ffprobe's `codec_name` (the profile is not part of our contract) and
/// as `adts.rs` reports it: the browser table has no separate row for them.
fn audio_stream(
    track: Option<&mp4parse::Track>,
    raw: &RawEntry,
    config: Option<&AudioConfig>,
) -> AudioStream {
    let mut a = AudioStream {
        sample_rate: (raw.rate > 0).then_some(raw.rate),
        channels: (raw.channels > 0).then_some(raw.channels),
        codec: audio_codec(&raw.kind, CodecType::Unknown),
    };
    if let Some(SampleEntry::Audio(e)) =
        track.and_then(|t| t.stsd.as_ref()).and_then(|s| s.descriptions.first())
    {
        a.codec = audio_codec(&raw.kind, e.codec_type);
        if e.samplerate >= 1.0 && e.samplerate < f64::from(u32::MAX) {
            a.sample_rate = Some(e.samplerate.round() as u32);
        }
        if e.channelcount > 0 {
            a.channels = Some(e.channelcount);
        }
        // The sample entry's channel count is often a placeholder 2; the decoder
        // configuration holds the real one, which ffprobe reports.
        if let AudioCodecSpecific::ES_Descriptor(es) = &e.codec_specific {
            if let Some(n) = es.audio_channel_count.filter(|&n| n > 0) {
                a.channels = Some(u32::from(n));
            }
            if let Some(rate) = es.audio_sample_rate.filter(|&r| r > 0) {
                a.sample_rate = Some(rate);
            }
        }
    }
    // SBR and PS change what is played: explicit signalling is decided here, implicit
    // (frames only) by `probe_reader`, which reads the first access units.
    if let Some(c) = config.filter(|c| c.is_aac()) {
        let (rate, channels) = c.output();
        a.sample_rate = Some(rate);
        if let Some(n) = channels {
            a.channels = Some(n);
        }
    }
    a
}

/// The first entry of an `stsd` payload, read as both a visual and an audio entry.
fn raw_entry(stsd: &[u8]) -> RawEntry {
    // stsd: version/flags, entry count, then sample entries.
    let Some(first) = stsd.get(8..) else { return RawEntry::default() };
    let Ok((kind, entry, _)) = split_box(FMT, first) else { return RawEntry::default() };
    // Visual entry: 6 reserved + 2 index + 16 predefined, then width and height (u16).
    // Audio entry: 6 + 2 + 8, then channel count (u16) at 16 and rate (16.16) at 24.
    let u16_at = |at| be_u16(entry, at).map(u32::from).unwrap_or(0);
    RawEntry {
        kind,
        width: u16_at(24),
        height: u16_at(26),
        channels: u16_at(16),
        rate: be_u32(entry, 24).map(|r| r >> 16).unwrap_or(0),
    }
}

/// ffprobe's codec name for a visual sample entry type.
fn video_codec(kind: &[u8; 4]) -> String {
    let name = match kind {
        b"avc1" | b"avc2" | b"avc3" | b"avc4" => "h264",
        b"hvc1" | b"hev1" | b"dvh1" | b"dvhe" => "hevc",
        b"vp08" => "vp8",
        b"vp09" => "vp9",
        b"av01" => "av1",
        b"mp4v" => "mpeg4",
        b"jpeg" | b"mjpa" | b"mjpb" | b"AVDJ" => "mjpeg",
        b"apch" | b"apcn" | b"apcs" | b"apco" | b"ap4h" | b"ap4x" => "prores",
        b"s263" | b"h263" => "h263",
        b"SVQ3" => "svq3",
        b"png " => "png",
        b"dvc " | b"dvcp" | b"dv5n" | b"dv5p" => "dvvideo",
        b"mp2v" | b"xdvc" | b"hdv2" | b"hdv3" => "mpeg2video",
        b"vc-1" => "vc1",
        _ => return fourcc(kind).trim_end().to_string(),
    };
    name.to_string()
}

/// ffprobe's codec name for an audio sample entry; `mp4a` needs its decoder
/// configuration, which `mp4parse` reads, to tell AAC from MP3.
fn audio_codec(kind: &[u8; 4], parsed: CodecType) -> String {
    let name = match (kind, parsed) {
        (_, CodecType::MP3) => "mp3",
        (b"mp4a", _) => "aac",
        (b"Opus", _) => "opus",
        (b"fLaC", _) => "flac",
        (b"alac", _) => "alac",
        (b".mp3", _) => "mp3",
        (b"ac-3", _) => "ac3",
        (b"ec-3", _) => "eac3",
        (b"sowt", _) => "pcm_s16le",
        (b"twos", _) => "pcm_s16be",
        (b"in24", _) => "pcm_s24be",
        (b"in32", _) => "pcm_s32be",
        (b"fl32", _) => "pcm_f32be",
        (b"fl64", _) => "pcm_f64be",
        (b"ulaw", _) => "pcm_mulaw",
        (b"alaw", _) => "pcm_alaw",
        (b"samr", _) => "amr_nb",
        (b"sawb", _) => "amr_wb",
        _ => return fourcc(kind).trim_end().to_string(),
    };
    name.to_string()
}

/// What the movie fragments add, per track of the `moov`, and the sample bytes that
/// runs without per-sample fields declare: such a run's count is backed by nothing in
/// its box, so its samples must fit the file.
#[derive(Debug, Default)]
struct Fragments {
    totals: HashMap<u32, FragmentTotals>,
    declared_bytes: u64,
}

impl Fragments {
    /// Adds one `moof`'s sample counts and durations. Fragments of a track the `moov`
    /// does not describe as video or audio are skipped: nothing is kept per unknown ID.
    fn add(&mut self, moof: &[u8], movie: &Movie, file_size: u64, budget: &mut Budget) -> Result<()> {
        let bad = |what: &str| ProbeError::corrupt(FMT, what.to_string());
        for b in boxes(moof) {
            let (kind, traf) = b?;
            if &kind != b"traf" {
                continue;
            }
            budget.spend(1)?;
            let tfhd = child(traf, b"tfhd")?.ok_or_else(|| bad("a traf without tfhd"))?;
            let flags = be_u32(tfhd, 0).ok_or_else(|| bad("tfhd is cut short"))? & 0x00FF_FFFF;
            let track_id = be_u32(tfhd, 4).ok_or_else(|| bad("tfhd is cut short"))?;
            if !movie.ids.contains(&track_id) {
                continue;
            }
            let trex = movie.trex.get(&track_id).copied().unwrap_or_default();
            // Optional fields follow in flag order: base data offset (8 bytes), sample
            // description index, default duration, default size (4 each).
            let mut at = 8usize;
            if flags & 0x01 != 0 {
                at += 8;
            }
            if flags & 0x02 != 0 {
                at += 4;
            }
            let mut default_duration = trex.default_sample_duration;
            if flags & 0x08 != 0 {
                default_duration = be_u32(tfhd, at).ok_or_else(|| bad("tfhd is cut short"))?;
                at += 4;
            }
            let mut default_size = trex.default_sample_size;
            if flags & 0x10 != 0 {
                default_size = be_u32(tfhd, at).ok_or_else(|| bad("tfhd is cut short"))?;
            }
            for t in boxes(traf) {
                let (k, trun) = t?;
                if &k != b"trun" {
                    continue;
                }
                let run = trun_totals(trun, default_duration, budget)?;
                if !run.backed {
                    // Samples of the default size, which must be a size and fit the file.
                    let bytes = run.samples.saturating_mul(u64::from(default_size));
                    self.declared_bytes = self.declared_bytes.saturating_add(bytes);
                    if run.samples > 0 && (default_size == 0 || self.declared_bytes > file_size) {
                        return Err(bad(&format!(
                            "trun declares {} samples of {default_size} bytes that the file cannot hold",
                            run.samples
                        )));
                    }
                }
                let total = self.totals.entry(track_id).or_default();
                total.samples = total.samples.saturating_add(run.samples);
                total.duration = total.duration.saturating_add(run.duration);
            }
        }
        Ok(())
    }
}

/// One `trun`: its samples, their summed duration, and whether per-sample fields in
/// the box back the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    samples: u64,
    duration: u64,
    backed: bool,
}

fn trun_totals(trun: &[u8], default_duration: u32, budget: &mut Budget) -> Result<Run> {
    let bad = |what: &str| ProbeError::corrupt(FMT, what.to_string());
    let flags = be_u32(trun, 0).ok_or_else(|| bad("trun is cut short"))? & 0x00FF_FFFF;
    let count = be_u32(trun, 4).ok_or_else(|| bad("trun is cut short"))?;
    let mut at = 8usize;
    if flags & 0x001 != 0 {
        at += 4;
    }
    if flags & 0x004 != 0 {
        at += 4;
    }
    let per_sample = [0x100u32, 0x200, 0x400, 0x800].iter().filter(|&&f| flags & f != 0).count() * 4;
    let needed = (count as usize).checked_mul(per_sample).and_then(|n| n.checked_add(at));
    if needed.is_none_or(|n| n > trun.len()) {
        return Err(bad(&format!("trun declares {count} samples that its box does not hold")));
    }
    let samples = u64::from(count);
    let backed = per_sample > 0;
    if flags & 0x100 == 0 {
        budget.spend(1)?;
        return Ok(Run { samples, duration: samples * u64::from(default_duration), backed });
    }
    budget.spend(samples)?;
    let mut sum = 0u64;
    for i in 0..count as usize {
        // In bounds: checked against the box length above.
        sum = sum.saturating_add(u64::from(be_u32(trun, at + i * per_sample).unwrap_or(0)));
    }
    Ok(Run { samples, duration: sum, backed })
}

/// Classifies an `mp4parse` error. The whole `moov` was in memory, so running out of
/// bytes inside it means a box inside claims more than `moov` holds: corruption.
fn classify(e: mp4parse::Error, limits: &Limits) -> ProbeError {
    match e {
        mp4parse::Error::UnexpectedEOF => ProbeError::corrupt(FMT, "a box inside moov runs past its end"),
        mp4parse::Error::InvalidData(status) => ProbeError::corrupt(FMT, format!("invalid moov: {status:?}")),
        mp4parse::Error::Unsupported(what) => ProbeError::unsupported(format!("MP4 {what}")),
        mp4parse::Error::MoovMissing => ProbeError::corrupt(FMT, "no moov box"),
        mp4parse::Error::OutOfMemory => {
            ProbeError::TooLarge { what: "MP4 sample tables".into(), limit: limits.max_memory_bytes }
        }
        // mp4parse reads our in-memory copy of `moov`, never the disk: its I/O errors
        // (an allocation a declared child size asked for, a read past a box's end) are
        // the data's fault, not a local one to retry.
        mp4parse::Error::Io(e) => {
            ProbeError::corrupt(FMT, format!("a box inside moov declares more than it holds ({e})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::bx;

    fn run(bytes: Vec<u8>) -> Result<Streams> {
        let size = bytes.len() as u64;
        probe_reader(&mut WalkReader::new(Cursor::new(bytes), size), &Limits::default())
    }

    #[test]
    fn empty_and_header_only_inputs_are_truncated() {
        assert_eq!(run(vec![]).unwrap_err().code().as_str(), "corrupt_file");
        assert_eq!(run(b"\0\0\0\x20ftyp".to_vec()).unwrap_err().code().as_str(), "truncated");
        assert_eq!(run(b"\0\0\0".to_vec()).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn a_box_smaller_than_its_header_is_corrupt() {
        let mut f = bx(b"ftyp", b"isom\0\0\0\0");
        f.extend_from_slice(b"\0\0\0\x04free");
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn a_huge_declared_mdat_is_skipped_by_seeking_not_read() {
        // ftyp, then an mdat claiming 2^62 bytes via a 64-bit size: the walk must not
        // allocate for it and must say the file ends inside it (no moov was seen).
        let mut f = bx(b"ftyp", b"isom\0\0\0\0");
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(b"mdat");
        f.extend_from_slice(&(1u64 << 62).to_be_bytes());
        f.extend_from_slice(&[0u8; 64]);
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn a_size_overflowing_u64_is_corrupt() {
        let mut f = bx(b"ftyp", b"isom\0\0\0\0");
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(b"free");
        f.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn a_moov_larger_than_the_memory_limit_is_refused_before_reading() {
        let mut f = bx(b"ftyp", b"isom\0\0\0\0");
        f.extend_from_slice(&1u32.to_be_bytes());
        f.extend_from_slice(b"moov");
        f.extend_from_slice(&(40u64 << 30).to_be_bytes());
        let size = 41u64 << 30; // as if the file were that large (sparse)
        let err = probe_reader(&mut WalkReader::new(Cursor::new(f), size), &Limits::default()).unwrap_err();
        assert_eq!(err.code().as_str(), "too_large");
    }

    #[test]
    fn a_size_zero_box_runs_to_the_end_of_the_file() {
        // An mdat of size 0 before any moov: it swallows the rest, so there is no moov.
        let mut f = bx(b"ftyp", b"isom\0\0\0\0");
        f.extend_from_slice(b"\0\0\0\0mdat");
        f.extend_from_slice(&bx(b"moov", b""));
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn in_memory_children_that_overrun_their_parent_are_corrupt() {
        let mut parent = bx(b"tfhd", &[0u8; 8]);
        parent[3] = 200;
        let err = boxes(&parent).next().unwrap().unwrap_err();
        assert_eq!(err.code().as_str(), "corrupt_file");
        let free = bx(b"free", b"abc");
        let ok: Vec<_> = boxes(&free).collect::<Result<_>>().unwrap();
        assert_eq!(ok, vec![(*b"free", &b"abc"[..])]);
    }

    #[test]
    fn trun_sums_per_sample_durations_or_uses_the_default() {
        let mut budget = Budget::new(&Limits::default());
        // flags 0x000100 (durations present), 3 samples.
        let mut trun = vec![0, 0, 1, 0, 0, 0, 0, 3];
        for d in [512u32, 512, 1024] {
            trun.extend_from_slice(&d.to_be_bytes());
        }
        assert_eq!(
            trun_totals(&trun, 0, &mut budget).unwrap(),
            Run { samples: 3, duration: 2048, backed: true }
        );
        let no_durations = [0u8, 0, 0, 0, 0, 0, 0, 5];
        assert_eq!(
            trun_totals(&no_durations, 1001, &mut budget).unwrap(),
            Run { samples: 5, duration: 5005, backed: false }
        );
        // A count the box cannot hold is refused without iterating it.
        let lying = [0u8, 0, 1, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(trun_totals(&lying, 0, &mut budget).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn a_sample_table_declaring_more_entries_than_it_holds_is_refused() {
        // stsz: version/flags, sample_size 0, sample_count 2^32 - 1, one entry.
        let stsz = bx(b"stsz", &[0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1]);
        let trak = bx(b"trak", &bx(b"mdia", &bx(b"minf", &bx(b"stbl", &stsz))));
        let mut f = bx(b"ftyp", b"isom\0\0\0\0");
        f.extend(bx(b"moov", &trak));
        let err = run(f).unwrap_err();
        assert_eq!(err.code().as_str(), "corrupt_file", "{err}");
        assert!(err.to_string().contains("stsz declares 4294967295 entries"), "{err}");
    }

    #[test]
    fn mpeg_audio_channel_mode() {
        assert_eq!(mpeg_audio_channels([0xFF, 0xFB, 0x90, 0xC4]), Some(1));
        assert_eq!(mpeg_audio_channels([0xFF, 0xFB, 0x90, 0x44]), Some(2));
        assert_eq!(mpeg_audio_channels([0x00, 0xFB, 0x90, 0xC4]), None);
    }

    #[test]
    fn rotation_of_a_quarter_turn_is_recognised() {
        let m = |a: i32, b: i32| mp4parse::Matrix { a, b, u: 0, c: -b, d: a, v: 0, x: 0, y: 0, w: 1 << 30 };
        assert!(!quarter_turn(&m(1 << 16, 0)));
        assert!(quarter_turn(&m(0, 1 << 16)));
        assert!(quarter_turn(&m(0, -(1 << 16))));
        assert!(!quarter_turn(&m(-(1 << 16), 0)));
    }

    /// `moov-at-end.mp4`'s moov payload (one H.264 track, 50 samples).
    fn fixture_moov() -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/assets/video/moov-at-end.mp4");
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[5595..5599], b"moov");
        bytes[5599..].to_vec()
    }

    /// Rewrites every box named `kind` on the path `moov/trak/mdia/minf/stbl`.
    fn replace_table(moov: &[u8], kind: &[u8; 4], with: &[u8]) -> Vec<u8> {
        fn walk(data: &[u8], kind: &[u8; 4], with: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for b in boxes(data) {
                let (k, payload) = b.unwrap();
                let payload = match &k {
                    b"trak" | b"mdia" | b"minf" | b"stbl" => walk(payload, kind, with),
                    _ if &k == kind => with.to_vec(),
                    _ => payload.to_vec(),
                };
                put_box(&mut out, &k, &payload).unwrap();
            }
            out
        }
        walk(moov, kind, with)
    }

    /// Issue 9: mp4parse kept every chunk offset, 8 bytes each (8M took 98 MB). Our
    /// walk takes the first offset where it lies and hands mp4parse no sample table.
    #[test]
    fn chunk_offsets_are_read_where_they_lie_and_never_handed_to_mp4parse() {
        let mut stco = vec![0, 0, 0, 0];
        stco.extend_from_slice(&200_000u32.to_be_bytes());
        for i in 0..200_000u32 {
            stco.extend_from_slice(&(48 + i).to_be_bytes());
        }
        let moov = replace_table(&fixture_moov(), b"stco", &stco);
        let movie = Movie::parse(&moov, 1 << 30, &Limits::default()).unwrap();
        assert_eq!(movie.tracks.len(), 1);
        assert_eq!(movie.tracks[0].first_chunk, Some(48));
        assert_eq!(movie.tracks[0].samples, Some(50));
        let parsed = &movie.ctx.tracks[0];
        assert!(parsed.stco.is_none() && parsed.stsz.is_none() && parsed.stts.is_none());
        assert!(parsed.stsd.is_some() && parsed.tkhd.is_some());
    }

    /// Issue 9: mp4parse kept a `Track` per `trak` (4M empty ones took 1.5 GB). Only
    /// the first video and audio trak reach it; empty ones are read and dropped.
    #[test]
    fn empty_traks_are_not_handed_to_mp4parse() {
        let mut moov = fixture_moov();
        moov.extend(b"\0\0\0\x08trak".repeat(200_000));
        let movie = Movie::parse(&moov, 1 << 30, &Limits::default()).unwrap();
        assert_eq!((movie.tracks.len(), movie.ctx.tracks.len()), (1, 1));
        let s = movie.streams(&HashMap::new()).unwrap();
        assert_eq!(s.video.map(|v| (v.width, v.frame_count)), Some((160, Some(50))));
    }

    /// A frame count is backed by bytes: one size per sample, or samples of one size
    /// that the file can hold.
    #[test]
    fn fixed_size_samples_must_fit_the_file() {
        let mut stsz = vec![0, 0, 0, 0];
        stsz.extend_from_slice(&1000u32.to_be_bytes());
        stsz.extend_from_slice(&4_000_000u32.to_be_bytes());
        let moov = replace_table(&fixture_moov(), b"stsz", &stsz);
        let small = Movie::parse(&moov, 1 << 20, &Limits::default()).unwrap();
        assert_eq!(small.tracks[0].samples, None);
        let video = small.streams(&HashMap::new()).unwrap().video.unwrap();
        assert_eq!((video.frame_count, video.frame_rate), (None, None));
        let large = Movie::parse(&moov, 4 << 30, &Limits::default()).unwrap();
        assert_eq!(large.tracks[0].samples, Some(4_000_000));
    }

    /// A movie with track 1 whose `trex` gives a default sample size of `size`.
    fn fragmented_movie(size: u32) -> Movie {
        Movie {
            tracks: Vec::new(),
            ids: HashSet::from([1]),
            ctx: mp4parse::MediaContext::default(),
            trex: HashMap::from([(1, Trex { default_sample_duration: 1000, default_sample_size: size })]),
            fragmented: true,
        }
    }

    fn moof(track: u32, samples: u32) -> Vec<u8> {
        let tfhd = bx(b"tfhd", &[[0u8, 0, 0, 0], track.to_be_bytes()].concat());
        let trun = bx(b"trun", &[[0u8, 0, 0, 0], samples.to_be_bytes()].concat());
        [bx(b"mfhd", &[0; 8]), bx(b"traf", &[tfhd, trun].concat())].concat()
    }

    /// A `trun` without per-sample fields declares its count in 4 bytes: its samples,
    /// of the default size, must fit the file, and a size of 0 backs nothing.
    #[test]
    fn a_trun_count_without_per_sample_fields_needs_sample_bytes_in_the_file() {
        let mut budget = Budget::new(&Limits::default());
        let mut f = Fragments::default();
        f.add(&moof(1, 1000), &fragmented_movie(100), 1 << 20, &mut budget).unwrap();
        assert_eq!(f.totals[&1], FragmentTotals { samples: 1000, duration: 1_000_000 });
        let err = f.add(&moof(1, u32::MAX), &fragmented_movie(100), 1 << 20, &mut budget).unwrap_err();
        assert_eq!(err.code().as_str(), "corrupt_file", "{err}");
        let mut f = Fragments::default();
        let err = f.add(&moof(1, 10), &fragmented_movie(0), 1 << 20, &mut budget).unwrap_err();
        assert_eq!(err.code().as_str(), "corrupt_file", "{err}");
        // Fragments of a track the moov does not describe keep nothing.
        let mut f = Fragments::default();
        f.add(&moof(7, u32::MAX), &fragmented_movie(0), 1 << 20, &mut budget).unwrap();
        assert!(f.totals.is_empty());
    }

    #[test]
    fn a_deeply_nested_box_in_moov_is_not_descended_into() {
        let mut nested = Vec::new();
        for _ in 0..10_000 {
            nested = bx(b"udta", &nested);
        }
        let mut moov = fixture_moov();
        moov.extend(bx(b"udta", &nested));
        let movie = Movie::parse(&moov, 1 << 30, &Limits::default()).unwrap();
        assert_eq!(movie.tracks[0].samples, Some(50));
    }

    /// What is kept per video or audio `trak` counts against the memory limit with the
    /// moov: a moov of a million minimal audio traks is too large, not 120 MB of them.
    #[test]
    fn the_tracks_kept_count_against_the_memory_limit() {
        let hdlr = bx(b"hdlr", &[[0u8; 8].as_slice(), b"soun", &[0; 13]].concat());
        let trak = bx(b"trak", &bx(b"mdia", &hdlr));
        let mut moov = fixture_moov();
        moov.extend(trak.repeat(1000));
        let limits = Limits { max_memory_bytes: moov.len() as u64 + 100 * TRACK_COST, ..Limits::default() };
        let err = Movie::parse(&moov, 1 << 30, &limits).err().unwrap();
        assert_eq!(err.code().as_str(), "too_large", "{err}");
        let limits = Limits { max_memory_bytes: moov.len() as u64 + 1001 * TRACK_COST, ..Limits::default() };
        assert_eq!(Movie::parse(&moov, 1 << 30, &limits).unwrap().tracks.len(), 1001);
    }

    /// mp4parse keeps every `sinf` of a protected sample entry (a hundred bytes for
    /// each 8-byte box: 32 MB of them took 308 MB). The answer is `encrypted` before it
    /// reads any.
    #[test]
    fn a_protected_sample_entry_is_encrypted_before_mp4parse_reads_it() {
        let moov = fixture_moov();
        let stbl = |kind: &[u8; 4]| {
            let mut out = None;
            for b in boxes(&moov) {
                let (k, trak) = b.unwrap();
                if &k == b"trak" {
                    let stbl = child(
                        child(child(trak, b"mdia").unwrap().unwrap(), b"minf").unwrap().unwrap(),
                        b"stbl",
                    );
                    out = child(stbl.unwrap().unwrap(), kind).unwrap().map(<[u8]>::to_vec);
                }
            }
            out.unwrap()
        };
        let stsd = stbl(b"stsd");
        let (_, entry, _) = split_box(FMT, &stsd[8..]).unwrap();
        let mut encv = Vec::new();
        put_box(&mut encv, b"encv", &[entry, &b"\0\0\0\x08sinf".repeat(100_000)].concat()).unwrap();
        let moov = replace_table(&moov, b"stsd", &[&stsd[..8], &encv].concat());
        let err = Movie::parse(&moov, 1 << 30, &Limits::default()).err().unwrap();
        assert_eq!(err.code().as_str(), "encrypted");
    }
}
