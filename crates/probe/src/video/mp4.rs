//! ISO BMFF and QuickTime (MP4, MOV, M4A). Top-level boxes are walked with seeks, so
//! `mdat` is never read whatever its size or position; only `moov` (capped by the memory
//! limit) and, for fragmented files, each `moof` are read.
//!
//! `moov` is parsed by Mozilla's `mp4parse` 0.17 rather than the `mp4` crate 0.14. Both
//! were run on our fixtures: `mp4` refused the MP4 whose `mdat` is cut short (which
//! ffprobe reads), reported no codec for HEVC and a zero duration for fragmented files,
//! and its reader holds every `moof` in memory; `mp4parse` read every complete `moov`,
//! is fuzzed as part of Firefox and allocates fallibly. It reserves memory for declared
//! table counts up front, so those are checked against their box sizes first. It knows
//! fewer sample entries (no HEVC, ProRes or MJPEG), so the sample-entry type and, when
//! it gives up, the dimensions and audio parameters come from a small walker over the
//! same bytes, which also reads `moof`/`traf`/`trun`, that `mp4parse` does not parse.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek, SeekFrom};

use asset_core::Limits;
use mp4parse::{AudioCodecSpecific, CodecType, SampleEntry, TrackType};

use super::{AudioStream, Streams, VideoStream, io_or_truncated, read_block};
use crate::{ProbeError, Result, Source};

const FMT: &str = "MP4";

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Streams> {
    probe_reader(&mut src.reader()?, src.size(), limits)
}

pub(super) fn probe_reader<R: Read + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Streams> {
    let mut movie: Option<Movie> = None;
    let mut fragments: HashMap<u32, FragmentTotals> = HashMap::new();
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
                // The whole box, header included, is what mp4parse expects.
                let bytes = read_block(r, offset, h.size, limits, FMT, "the moov box")?;
                let payload = bytes.get(h.header_len as usize..).unwrap_or_default();
                let parsed = Movie::parse(&bytes, payload, limits)?;
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
                add_fragment(&bytes, &m.trex, &mut fragments, &mut budget)?;
            }
            _ => {}
        }
        offset = end;
    }
    let movie = movie.ok_or_else(|| ProbeError::corrupt(FMT, "no moov box"))?;
    let mut streams = movie.streams(&fragments)?;
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
    Ok(streams)
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
struct Boxes<'a> {
    rest: &'a [u8],
}

fn boxes(data: &[u8]) -> Boxes<'_> {
    Boxes { rest: data }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<([u8; 4], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = split_box(self.rest);
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

fn split_box(data: &[u8]) -> Result<Split<'_>> {
    let bad = |what: &str| ProbeError::corrupt(FMT, what.to_string());
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
    for b in boxes(data) {
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

/// What the `moov` box says, combining `mp4parse` with our own walk of the same bytes.
struct Movie {
    ctx: mp4parse::MediaContext,
    entries: HashMap<u32, RawEntry>,
    trex: HashMap<u32, Trex>,
    fragmented: bool,
}

impl Movie {
    fn parse(moov_box: &[u8], moov_payload: &[u8], limits: &Limits) -> Result<Movie> {
        check_sample_tables(moov_payload)?;
        let ctx = mp4parse::read_mp4(&mut Cursor::new(moov_box)).map_err(|e| classify(e, limits))?;

        let mut entries = HashMap::new();
        let mut trex = HashMap::new();
        let mut fragmented = false;
        for b in boxes(moov_payload) {
            let (kind, payload) = b?;
            match &kind {
                b"trak" => {
                    if let Some((id, entry)) = raw_entry(payload)? {
                        entries.entry(id).or_insert(entry);
                    }
                }
                b"mvex" => {
                    fragmented = true;
                    for t in boxes(payload) {
                        let (k, p) = t?;
                        if &k == b"trex"
                            && let (Some(id), Some(dur)) = (be_u32(p, 4), be_u32(p, 12))
                        {
                            trex.insert(id, Trex { default_sample_duration: dur });
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Movie { ctx, entries, trex, fragmented })
    }

    /// File offset of the first chunk of the first audio track.
    fn first_audio_chunk(&self) -> Option<u64> {
        let track = self.ctx.tracks.iter().find(|t| t.track_type == TrackType::Audio)?;
        track.stco.as_ref()?.offsets.first().copied()
    }

    fn streams(&self, fragments: &HashMap<u32, FragmentTotals>) -> Result<Streams> {
        let movie_scale = self.ctx.timescale.map(|t| t.0).filter(|&t| t > 0);
        let mut out = Streams::default();
        let mut longest: Option<f64> = None;
        for track in self.ctx.tracks.iter() {
            let is_video = track.track_type == TrackType::Video;
            let is_audio = track.track_type == TrackType::Audio;
            if !is_video && !is_audio {
                continue;
            }
            let id = track.track_id.unwrap_or(0);
            let raw = self.entries.get(&id).copied().unwrap_or_default();
            if matches!(&raw.kind, b"encv" | b"enca" | b"drmi" | b"drms") {
                return Err(ProbeError::Encrypted { format: FMT });
            }
            let frag = fragments.get(&id).copied().unwrap_or_default();
            let scale = track.timescale.map(|t| t.0).filter(|&t| t > 0);
            let media_units = track.duration.map(|d| d.0).unwrap_or(0).saturating_add(frag.duration);
            let media_seconds = scale.map(|s| media_units as f64 / s as f64);
            // The edit list trims encoder delay (AAC priming); ffprobe reports the edited
            // length. A zero edit means "the whole media", as in fragmented files.
            let edited = match (track.edited_duration, movie_scale) {
                (Some(e), Some(ms)) if e.0 > 0 && frag.samples == 0 => {
                    let empty = track.empty_duration.map(|d| d.0).unwrap_or(0);
                    Some(e.0.saturating_add(empty) as f64 / ms as f64)
                }
                _ => None,
            };
            if let Some(d) = edited.or(media_seconds) {
                longest = Some(longest.map_or(d, |l: f64| l.max(d)));
            }
            if is_video && out.video.is_none() {
                let samples = sample_count(track).saturating_add(frag.samples);
                let (mut width, mut height) = match track.stsd.as_ref().and_then(|s| s.descriptions.first()) {
                    Some(SampleEntry::Video(v)) => (u32::from(v.width), u32::from(v.height)),
                    _ => (raw.width, raw.height),
                };
                if (width == 0 || height == 0)
                    && let Some(k) = &track.tkhd
                {
                    (width, height) = (k.width >> 16, k.height >> 16);
                }
                if track.tkhd.as_ref().is_some_and(|k| quarter_turn(&k.matrix)) {
                    (width, height) = (height, width);
                }
                let frame_rate =
                    media_seconds.filter(|&s| s > 0.0 && samples > 0).map(|s| samples as f64 / s);
                out.video = Some(VideoStream {
                    width,
                    height,
                    frame_count: Some(samples),
                    frame_rate,
                    codec: video_codec(&raw.kind),
                });
            }
            if is_audio && out.audio.is_none() {
                out.audio = Some(audio_stream(track, &raw));
            }
        }
        out.duration_seconds = longest;
        Ok(out)
    }
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

/// Samples in the sample table: `stts` run lengths, else the `stsz` entry count.
fn sample_count(track: &mp4parse::Track) -> u64 {
    let from_stts = track
        .stts
        .as_ref()
        .map(|s| s.samples.iter().fold(0u64, |n, e| n.saturating_add(u64::from(e.sample_count))))
        .unwrap_or(0);
    if from_stts > 0 {
        return from_stts;
    }
    track.stsz.as_ref().map(|s| s.sample_sizes.len() as u64).unwrap_or(0)
}

/// A rotation of 90° or 270° in the track matrix: the display size is the stored one
/// transposed.
fn quarter_turn(m: &mp4parse::Matrix) -> bool {
    let degrees = f64::from(m.b).atan2(f64::from(m.a)).to_degrees();
    let quarter = ((degrees / 90.0).round() as i64).rem_euclid(4);
    quarter == 1 || quarter == 3
}

fn audio_stream(track: &mp4parse::Track, raw: &RawEntry) -> AudioStream {
    let mut a = AudioStream {
        sample_rate: (raw.rate > 0).then_some(raw.rate),
        channels: (raw.channels > 0).then_some(raw.channels),
        codec: audio_codec(&raw.kind, CodecType::Unknown),
    };
    if let Some(SampleEntry::Audio(e)) = track.stsd.as_ref().and_then(|s| s.descriptions.first()) {
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
    a
}

/// Reads a `trak`'s id (from `tkhd`) and the first entry of its `stsd`.
fn raw_entry(trak: &[u8]) -> Result<Option<(u32, RawEntry)>> {
    let Some(tkhd) = child(trak, b"tkhd")? else { return Ok(None) };
    let id_at = if tkhd.first() == Some(&1) { 20 } else { 12 };
    let Some(id) = be_u32(tkhd, id_at) else { return Ok(None) };
    let mut stsd = None;
    if let Some(mdia) = child(trak, b"mdia")?
        && let Some(minf) = child(mdia, b"minf")?
        && let Some(stbl) = child(minf, b"stbl")?
    {
        stsd = child(stbl, b"stsd")?;
    }
    // stsd: version/flags, entry count, then sample entries.
    let Some(first) = stsd.and_then(|s| s.get(8..)) else { return Ok(Some((id, RawEntry::default()))) };
    let Some((kind, entry, _)) = split_box(first).ok() else { return Ok(Some((id, RawEntry::default()))) };
    // Visual entry: 6 reserved + 2 index + 16 predefined, then width and height (u16).
    // Audio entry: 6 + 2 + 8, then channel count (u16) at 16 and rate (16.16) at 24.
    let u16_at = |at| be_u16(entry, at).map(u32::from).unwrap_or(0);
    let e = RawEntry {
        kind,
        width: u16_at(24),
        height: u16_at(26),
        channels: u16_at(16),
        rate: be_u32(entry, 24).map(|r| r >> 16).unwrap_or(0),
    };
    Ok(Some((id, e)))
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

/// Adds one `moof`'s sample counts and durations, per track, to `totals`.
fn add_fragment(
    moof: &[u8],
    trex: &HashMap<u32, Trex>,
    totals: &mut HashMap<u32, FragmentTotals>,
    budget: &mut Budget,
) -> Result<()> {
    let bad = |what: &str| ProbeError::corrupt(FMT, what.to_string());
    for b in boxes(moof) {
        let (kind, traf) = b?;
        if &kind != b"traf" {
            continue;
        }
        let tfhd = child(traf, b"tfhd")?.ok_or_else(|| bad("a traf without tfhd"))?;
        let flags = be_u32(tfhd, 0).ok_or_else(|| bad("tfhd is cut short"))? & 0x00FF_FFFF;
        let track_id = be_u32(tfhd, 4).ok_or_else(|| bad("tfhd is cut short"))?;
        // Optional fields follow in flag order; skip to default_sample_duration.
        let mut at = 8usize;
        if flags & 0x01 != 0 {
            at += 8;
        }
        if flags & 0x02 != 0 {
            at += 4;
        }
        let default_duration = if flags & 0x08 != 0 {
            be_u32(tfhd, at).ok_or_else(|| bad("tfhd is cut short"))?
        } else {
            trex.get(&track_id).map(|t| t.default_sample_duration).unwrap_or(0)
        };
        let total = totals.entry(track_id).or_default();
        for t in boxes(traf) {
            let (k, trun) = t?;
            if &k != b"trun" {
                continue;
            }
            let (samples, duration) = trun_totals(trun, default_duration, budget)?;
            total.samples = total.samples.saturating_add(samples);
            total.duration = total.duration.saturating_add(duration);
        }
    }
    Ok(())
}

/// Sample count and summed duration of one `trun`.
fn trun_totals(trun: &[u8], default_duration: u32, budget: &mut Budget) -> Result<(u64, u64)> {
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
    if flags & 0x100 == 0 {
        budget.spend(1)?;
        return Ok((u64::from(count), u64::from(count) * u64::from(default_duration)));
    }
    budget.spend(u64::from(count))?;
    let mut sum = 0u64;
    for i in 0..count as usize {
        // In bounds: checked against the box length above.
        sum = sum.saturating_add(u64::from(be_u32(trun, at + i * per_sample).unwrap_or(0)));
    }
    Ok((u64::from(count), sum))
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
        mp4parse::Error::Io(e) => ProbeError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    fn run(bytes: Vec<u8>) -> Result<Streams> {
        let size = bytes.len() as u64;
        probe_reader(&mut Cursor::new(bytes), size, &Limits::default())
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
        let err = probe_reader(&mut Cursor::new(f), size, &Limits::default()).unwrap_err();
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
        assert_eq!(trun_totals(&trun, 0, &mut budget).unwrap(), (3, 2048));
        let no_durations = [0u8, 0, 0, 0, 0, 0, 0, 5];
        assert_eq!(trun_totals(&no_durations, 1001, &mut budget).unwrap(), (5, 5005));
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
}
