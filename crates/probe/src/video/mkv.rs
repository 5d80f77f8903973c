//! Matroska and WebM, through a small bounded EBML walker rather than
//! `matroska-demuxer`: we need the SeekHead, Info, Tracks, Tags and Cues only, each
//! read whole under the memory limit and one at a time, and every Cluster skipped by
//! its size, which the walker guarantees whatever the file declares. Nothing is kept
//! per element: of the tracks, the first video and the first audio one; of the tags,
//! the two a frame count needs; of the SeekHead, one position per element we read. So
//! millions of empty TrackEntry or SimpleTag elements cost their bytes, read once.
//!
//! Matroska has no frame count in its headers. In order of preference: the video
//! track's `NUMBER_OF_FRAMES` statistics tag (mkvmerge); its `DURATION` tag (ffmpeg)
//! less the first video block time, over DefaultDuration; the first video block time
//! from the first Cluster and the last one from the Clusters after the last video Cue
//! point (block headers only, payloads skipped) as `round(span / DefaultDuration) + 1`;
//! else `round(duration × fps)`. All but the first assume a constant frame rate. The
//! tags sit in a small element reached through the SeekHead, so the usual file costs
//! its headers, its Tags and the start of its first Cluster; the Cluster walk, which
//! reads block headers spread over the last seconds of the file, is the fallback.
//!
//! AAC reports what a decoder plays (HE-AAC doubles the rate), as for MP4: from the
//! CodecPrivate's AudioSpecificConfig, the config FFmpeg builds for the legacy
//! `A_AAC/…/SBR` ids, and for implicit SBR the first four frames of the track.

use std::io::{BufRead, Read, Seek, SeekFrom};

use asset_core::Limits;

use super::{AudioStream, Streams, VideoStream, frames_from, io_or_truncated, read_block};
use crate::audio::asc::{self, AudioConfig, Sbr};
use crate::audio::{AAC_MAX_BLOCK_BYTES, AAC_SBR_FRAMES, aac_units_carry_sbr};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FMT: &str = "Matroska";

const EBML: u32 = 0x1A45_DFA3;
const DOC_TYPE: u32 = 0x4282;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const INFO: u32 = 0x1549_A966;
const TIMECODE_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_TYPE: u32 = 0x83;
const CODEC_ID: u32 = 0x86;
const DEFAULT_DURATION: u32 = 0x23_E383;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const PROJECTION: u32 = 0x7670;
const PROJECTION_POSE_ROLL: u32 = 0x7675;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const OUTPUT_SAMPLING_FREQUENCY: u32 = 0x78B5;
const CHANNELS: u32 = 0x9F;
const CODEC_PRIVATE: u32 = 0x63A2;
const BIT_DEPTH: u32 = 0x6264;
const CONTENT_ENCODINGS: u32 = 0x6D80;
const CONTENT_ENCODING: u32 = 0x6240;
const CONTENT_ENCRYPTION: u32 = 0x5035;
const CUES: u32 = 0x1C53_BB6B;
const CUE_POINT: u32 = 0xBB;
const CUE_TIME: u32 = 0xB3;
const CUE_TRACK_POSITIONS: u32 = 0xB7;
const CUE_TRACK: u32 = 0xF7;
const CUE_CLUSTER_POSITION: u32 = 0xF1;
const TAGS: u32 = 0x1254_C367;
const TAG: u32 = 0x7373;
const TARGETS: u32 = 0x63C0;
const TAG_TRACK_UID: u32 = 0x63C5;
const SIMPLE_TAG: u32 = 0x67C8;
const TAG_NAME: u32 = 0x45A3;
const TAG_STRING: u32 = 0x4487;
const TRACK_UID: u32 = 0x73C5;
const CLUSTER: u32 = 0x1F43_B675;
const TIMECODE: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const BLOCK_GROUP: u32 = 0xA0;
const BLOCK: u32 = 0xA1;
const LEVEL1: [u32; 8] = [SEEK_HEAD, INFO, TRACKS, CUES, CLUSTER, TAGS, 0x1043_A770, 0x1941_A469];

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Streams> {
    let mut r = Walker::new(WalkReader::open(src)?, limits);
    probe_walker(&mut r, limits)
}

#[cfg(test)]
pub(super) fn probe_bytes(bytes: &[u8], limits: &Limits) -> Result<Streams> {
    let mut w = Walker::new(WalkReader::new(std::io::Cursor::new(bytes), bytes.len() as u64), limits);
    probe_walker(&mut w, limits)
}

fn probe_walker<R: Read + Seek>(r: &mut Walker<R>, limits: &Limits) -> Result<Streams> {
    let head =
        r.header_at(0)?.ok_or_else(|| ProbeError::truncated(FMT, "the file ends in the EBML header"))?;
    if head.id != EBML {
        return Err(ProbeError::corrupt(FMT, "no EBML header"));
    }
    let ebml_len =
        head.size.ok_or_else(|| ProbeError::corrupt(FMT, "the EBML header has an unknown size"))?;
    let ebml =
        r.read_body(&head, ebml_len.min(limits.max_memory_bytes.saturating_add(1)), "the EBML header")?;
    let doc_type = children(&ebml)
        .filter_map(|e| e.ok())
        .find(|e| e.id == DOC_TYPE)
        .map(|e| String::from_utf8_lossy(e.body).trim_end_matches('\0').to_string())
        .unwrap_or_else(|| "matroska".into());
    if doc_type != "matroska" && doc_type != "webm" {
        return Err(ProbeError::unsupported(format!("EBML document type {doc_type:?}")));
    }

    // Find the Segment among the top-level elements.
    let mut pos = head.end().ok_or_else(|| ProbeError::corrupt(FMT, "the EBML header size overflows"))?;
    let segment = loop {
        r.spend()?;
        let h = r
            .header_at(pos)?
            .ok_or_else(|| ProbeError::truncated(FMT, "the file ends before the Segment"))?;
        if h.id == SEGMENT {
            break h;
        }
        pos = h.end().ok_or_else(|| ProbeError::corrupt(FMT, "a top-level element has an unknown size"))?;
    };
    let seg_start = segment.data_start;
    let seg_end = segment.end().map_or(r.file_size, |e| e.min(r.file_size));

    let mut info: Option<Info> = None;
    let mut tracks: Option<TrackSet> = None;
    // Cues and Tags are read only when the frame count needs them, once the Tracks say
    // which track to look for: until then their headers are enough.
    let mut cues: Option<Header> = None;
    let mut tags: Option<Header> = None;
    let mut seeks = Seeks::default();
    let mut first_cluster: Option<u64> = None;
    let mut pos = seg_start;
    while pos < seg_end && (info.is_none() || tracks.is_none() || first_cluster.is_none()) {
        r.spend()?;
        let Some(h) = r.header_at(pos)? else { break };
        match h.id {
            INFO if info.is_none() => info = Some(Info::parse(&r.read_known(&h, "Info")?)?),
            TRACKS if tracks.is_none() => tracks = Some(parse_tracks(&r.read_known(&h, "Tracks")?)?),
            SEEK_HEAD if seeks.is_empty() => {
                seeks = parse_seek_head(&r.read_known(&h, "SeekHead")?, seg_start)
            }
            CUES if cues.is_none() => cues = Some(h),
            TAGS if tags.is_none() => tags = Some(h),
            CLUSTER => {
                first_cluster.get_or_insert(pos);
                if info.is_some() && tracks.is_some() {
                    break;
                }
            }
            _ => {}
        }
        match h.end() {
            Some(end) => pos = end,
            // An unknown-size element (a live Cluster) cannot be stepped over.
            None => break,
        }
    }
    // Headers placed after the Clusters are reached through the SeekHead.
    for (id, at) in seeks.in_file_order() {
        let wanted = match id {
            INFO => info.is_none(),
            TRACKS => tracks.is_none(),
            CUES => cues.is_none(),
            TAGS => tags.is_none(),
            _ => false,
        };
        if !wanted || at >= r.file_size {
            continue;
        }
        let Some(h) = r.header_at(at)? else { continue };
        match h.id {
            INFO if info.is_none() => info = Some(Info::parse(&r.read_known(&h, "Info")?)?),
            TRACKS if tracks.is_none() => tracks = Some(parse_tracks(&r.read_known(&h, "Tracks")?)?),
            CUES if cues.is_none() => cues = Some(h),
            TAGS if tags.is_none() => tags = Some(h),
            _ => {}
        }
    }
    let tracks = match tracks {
        Some(t) => t,
        None if pos >= r.file_size || seg_end < segment.end().unwrap_or(seg_end) => {
            return Err(ProbeError::truncated(FMT, "the file ends before the Tracks element"));
        }
        None => return Err(ProbeError::corrupt(FMT, "no Tracks element")),
    };
    let info = info.unwrap_or_default();
    if tracks.encrypted {
        return Err(ProbeError::Encrypted { format: FMT });
    }

    let mut out = Streams { webm: doc_type == "webm", ..Streams::default() };
    out.duration_seconds = info.duration.map(|d| d * info.timecode_scale as f64 / 1e9);
    if let Some(t) = &tracks.video {
        let fps = t.default_duration.filter(|&d| d > 0).map(|d| 1e9 / d as f64);
        let tagged = match (t.uid, tags) {
            (Some(uid), Some(h)) => track_tags(&r.read_known(&h, "Tags")?, uid),
            _ => TrackTags::default(),
        };
        let dd = t.default_duration.filter(|&d| d > 0);
        let mut counted = tagged.frames.and_then(|v| v.trim().parse::<u64>().ok());
        if counted.is_none()
            && let (Some(end_ns), Some(dd), Some(first)) =
                (tagged.duration.and_then(|v| parse_tag_duration(&v)), dd, first_cluster)
            && let Some((lo, _)) = r.block_times(first, t.number, true)?
        {
            let lo_ns = lo as f64 * info.timecode_scale as f64;
            counted = frames_from((end_ns - lo_ns) / dd as f64, 1.0).filter(|&n| n > 0);
        }
        if counted.is_none() {
            let span = match (first_cluster, cues) {
                (Some(first), Some(h)) => {
                    let cues = r.read_known(&h, "Cues")?;
                    video_span(r, first, &cues, seg_start, t.number)?
                }
                _ => None,
            };
            counted = match (span, dd) {
                (Some((lo, hi)), Some(dd)) if hi >= lo => {
                    let span_ns = (i128::from(hi) - i128::from(lo)) as f64 * info.timecode_scale as f64;
                    frames_from(span_ns / dd as f64, 1.0).map(|n| n.saturating_add(1))
                }
                _ => None,
            };
        }
        let frame_count = counted.or_else(|| frames_from(out.duration_seconds?, fps?));
        let frame_rate =
            fps.or_else(|| Some(frame_count? as f64 / out.duration_seconds.filter(|&d| d > 0.0)?));
        let (width, height) = if t.quarter_turn { (t.height, t.width) } else { (t.width, t.height) };
        out.video =
            Some(VideoStream { width, height, frame_count, frame_rate, codec: video_codec(&t.codec_id) });
    }
    if let Some(t) = &tracks.audio {
        let mut audio = AudioStream {
            sample_rate: t
                .sample_rate
                .filter(|r| r.is_finite() && *r >= 1.0 && *r < 1e7)
                .map(|r| r.round() as u32),
            channels: Some(t.channels),
            codec: audio_codec(&t.codec_id, t.bit_depth),
        };
        // AAC: what a decoder plays, as ffprobe reports it (see `aac_config`); the
        // track's own numbers are the muxer's, often the core's.
        if let Some(config) = aac_config(t)? {
            let (mut rate, mut channels) = config.output();
            if config.sbr_in_frames_only()
                && let Some(first) = first_cluster
                && r.implicit_sbr(first, t.number)?
            {
                (rate, channels) = config.output_with_implicit_sbr();
            }
            audio.sample_rate = Some(rate);
            audio.channels = channels.or(audio.channels);
        }
        out.audio = Some(audio);
    }
    Ok(out)
}

/// Earliest video block time in the first Cluster and latest one in the Clusters from
/// the last video Cue point on, in Segment timecode units.
fn video_span<R: Read + Seek>(
    r: &mut Walker<R>,
    first_cluster: u64,
    cues: &[u8],
    seg_start: u64,
    track: u64,
) -> Result<Option<(i64, i64)>> {
    let Some(last) = last_cue_cluster(cues, track).and_then(|p| p.checked_add(seg_start)) else {
        return Ok(None);
    };
    let Some((lo, _)) = r.block_times(first_cluster, track, true)? else { return Ok(None) };
    let Some((_, hi)) = r.block_times(last, track, false)? else { return Ok(None) };
    Ok(Some((lo, hi)))
}

/// The Cluster position (relative to the Segment data) of the last Cue point that
/// names `track`.
fn last_cue_cluster(cues: &[u8], track: u64) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for point in children(cues).filter_map(|e| e.ok()).filter(|e| e.id == CUE_POINT) {
        let mut time = None;
        let mut hit = None;
        for c in children(point.body).filter_map(|e| e.ok()) {
            match c.id {
                CUE_TIME => time = Some(uint(c.body)),
                CUE_TRACK_POSITIONS => {
                    let (mut t, mut p) = (None, None);
                    for k in children(c.body).filter_map(|e| e.ok()) {
                        match k.id {
                            CUE_TRACK if t.is_none() => t = Some(uint(k.body)),
                            CUE_CLUSTER_POSITION if p.is_none() => p = Some(uint(k.body)),
                            _ => {}
                        }
                    }
                    if t == Some(track) && p.is_some() {
                        hit = p;
                    }
                }
                _ => {}
            }
        }
        if let (Some(t), Some(p)) = (time, hit)
            && best.is_none_or(|(bt, _)| t >= bt)
        {
            best = Some((t, p));
        }
    }
    best.map(|(_, p)| p)
}

#[derive(Debug, Clone, Copy)]
struct Info {
    timecode_scale: u64,
    duration: Option<f64>,
}

impl Default for Info {
    fn default() -> Self {
        Info { timecode_scale: 1_000_000, duration: None }
    }
}

impl Info {
    fn parse(body: &[u8]) -> Result<Info> {
        let mut info = Info::default();
        for e in children(body) {
            let e = e?;
            match e.id {
                TIMECODE_SCALE => info.timecode_scale = uint(e.body).max(1),
                DURATION => info.duration = float(e.body),
                _ => {}
            }
        }
        Ok(info)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Track {
    number: u64,
    uid: Option<u64>,
    kind: u64,
    codec_id: String,
    default_duration: Option<u64>,
    width: u32,
    height: u32,
    quarter_turn: bool,
    sample_rate: Option<f64>,
    output_sample_rate: Option<f64>,
    channels: u32,
    /// CodecPrivate, kept for AAC only (its AudioSpecificConfig).
    codec_private: Vec<u8>,
    bit_depth: u64,
    encrypted: bool,
}

/// What the probe reports on: the first video and the first audio track, and whether
/// any track at all is encrypted. Other tracks are parsed and dropped, so a Tracks
/// element of millions of entries costs no memory beyond its bytes.
#[derive(Debug, Default)]
struct TrackSet {
    video: Option<Track>,
    audio: Option<Track>,
    encrypted: bool,
}

fn parse_tracks(body: &[u8]) -> Result<TrackSet> {
    let mut set = TrackSet::default();
    for entry in children(body) {
        let entry = entry?;
        if entry.id != TRACK_ENTRY {
            continue;
        }
        let t = parse_track_entry(entry.body)?;
        set.encrypted |= t.encrypted;
        match t.kind {
            1 if set.video.is_none() => set.video = Some(t),
            2 if set.audio.is_none() => set.audio = Some(t),
            _ => {}
        }
    }
    Ok(set)
}

fn parse_track_entry(body: &[u8]) -> Result<Track> {
    let mut t = Track { channels: 1, ..Track::default() };
    let mut private = None;
    for e in children(body) {
        let e = e?;
        match e.id {
            TRACK_NUMBER => t.number = uint(e.body),
            TRACK_UID => t.uid = Some(uint(e.body)),
            TRACK_TYPE => t.kind = uint(e.body),
            CODEC_ID => t.codec_id = String::from_utf8_lossy(e.body).trim_end_matches('\0').to_string(),
            DEFAULT_DURATION => t.default_duration = Some(uint(e.body)),
            CODEC_PRIVATE => private = Some(e.body),
            VIDEO => {
                for v in children(e.body) {
                    let v = v?;
                    match v.id {
                        PIXEL_WIDTH => t.width = u32::try_from(uint(v.body)).unwrap_or(0),
                        PIXEL_HEIGHT => t.height = u32::try_from(uint(v.body)).unwrap_or(0),
                        PROJECTION => {
                            let roll = children(v.body)
                                .filter_map(|p| p.ok())
                                .find(|p| p.id == PROJECTION_POSE_ROLL)
                                .and_then(|p| float(p.body));
                            if let Some(roll) = roll {
                                let q = ((roll / 90.0).round() as i64).rem_euclid(4);
                                t.quarter_turn = q == 1 || q == 3;
                            }
                        }
                        _ => {}
                    }
                }
            }
            AUDIO => {
                for a in children(e.body) {
                    let a = a?;
                    match a.id {
                        SAMPLING_FREQUENCY => t.sample_rate = float(a.body),
                        OUTPUT_SAMPLING_FREQUENCY => t.output_sample_rate = float(a.body),
                        CHANNELS => t.channels = u32::try_from(uint(a.body)).unwrap_or(0),
                        BIT_DEPTH => t.bit_depth = uint(a.body),
                        _ => {}
                    }
                }
            }
            CONTENT_ENCODINGS => {
                t.encrypted = children(e.body)
                    .filter_map(|c| c.ok())
                    .filter(|c| c.id == CONTENT_ENCODING)
                    .any(|c| children(c.body).filter_map(|x| x.ok()).any(|x| x.id == CONTENT_ENCRYPTION));
            }
            _ => {}
        }
    }
    // Only an AAC config is read, and it is a few bytes: others are not copied.
    if t.kind == 2 && t.codec_id.starts_with("A_AAC") {
        t.codec_private = private.unwrap_or_default().to_vec();
    }
    Ok(t)
}

/// The AudioSpecificConfig of an AAC track, as FFmpeg's demuxer hands it to the
/// decoder (so that we report what ffprobe does): the CodecPrivate when there is one,
/// read whole (a config no decoder accepts is corrupt, as in MP4); else, for the
/// legacy ids that name SBR (`A_AAC/MPEG4/LC/SBR`, …), the config FFmpeg builds from
/// them: the core at SamplingFrequency and Channels, SBR present at
/// OutputSamplingFrequency (the core rate when absent, which plays at the core rate).
/// Rates outside the AAC table, which FFmpeg cannot index, keep the track's numbers.
/// Other ids without CodecPrivate say nothing beyond the track's numbers: `None`.
fn aac_config(t: &Track) -> Result<Option<AudioConfig>> {
    if !t.codec_id.starts_with("A_AAC") {
        return Ok(None);
    }
    if !t.codec_private.is_empty() {
        return asc::read(&t.codec_private).map(Some).map_err(|e| ProbeError::corrupt(FMT, e));
    }
    if !t.codec_id.contains("/SBR") {
        return Ok(None);
    }
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000, 7_350,
    ];
    let table_rate = |r: Option<f64>| r.and_then(|r| RATES.iter().copied().find(|&x| f64::from(x) == r));
    let Some(core_rate) = table_rate(t.sample_rate) else { return Ok(None) };
    let Some(out_rate) = table_rate(t.output_sample_rate.or(t.sample_rate)) else { return Ok(None) };
    let object_type =
        ["MAIN", "LC", "SSR"].iter().position(|p| t.codec_id.contains(p)).map_or(4, |i| i as u32 + 1);
    Ok(Some(AudioConfig {
        object_type,
        core_rate,
        core_channels: Some(t.channels).filter(|&c| c > 0),
        sbr: Sbr::Present { rate: out_rate },
        ps: None,
    }))
}

/// The values of the first `NUMBER_OF_FRAMES` and the first `DURATION` SimpleTag of
/// the Tags that target one track (nested SimpleTags are not read). Only these two are
/// ever turned into strings: a Tags element of millions of SimpleTags is one pass.
#[derive(Debug, Clone, Default, PartialEq)]
struct TrackTags {
    frames: Option<String>,
    duration: Option<String>,
}

fn track_tags(body: &[u8], uid: u64) -> TrackTags {
    let mut out = TrackTags::default();
    for tag in children(body).filter_map(|e| e.ok()).filter(|e| e.id == TAG) {
        // Targets come first in practice, not by rule: a Tag's candidates are noted and
        // kept once its track is known, at its end.
        let mut track_uid = None;
        let (mut frames, mut duration) = (None, None);
        for k in children(tag.body).filter_map(|e| e.ok()) {
            match k.id {
                TARGETS if track_uid.is_none() => {
                    track_uid = children(k.body)
                        .filter_map(|e| e.ok())
                        .find(|e| e.id == TAG_TRACK_UID)
                        .map(|e| uint(e.body));
                }
                SIMPLE_TAG => {
                    let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
                    for e in children(k.body).filter_map(|e| e.ok()) {
                        match e.id {
                            TAG_NAME => name = e.body,
                            TAG_STRING => value = e.body,
                            _ => {}
                        }
                    }
                    let slot = match trim_nuls(name) {
                        b"NUMBER_OF_FRAMES" => &mut frames,
                        b"DURATION" => &mut duration,
                        _ => continue,
                    };
                    if slot.is_none() {
                        *slot = Some(String::from_utf8_lossy(trim_nuls(value)).into_owned());
                    }
                }
                _ => {}
            }
        }
        if track_uid == Some(uid) {
            out.frames = out.frames.or(frames);
            out.duration = out.duration.or(duration);
            if out.frames.is_some() && out.duration.is_some() {
                break;
            }
        }
    }
    out
}

/// A string element's bytes without the NUL padding writers may leave at its end.
fn trim_nuls(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    &b[..end]
}

/// A `DURATION` tag, `HH:MM:SS.nnnnnnnnn`, in nanoseconds.
fn parse_tag_duration(v: &str) -> Option<f64> {
    let mut parts = v.trim().split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (h, m, s) = (h.parse::<u64>().ok()?, m.parse::<u64>().ok()?, s.parse::<f64>().ok()?);
    let total = (h * 3600 + m * 60) as f64 + s;
    (total.is_finite() && total >= 0.0).then_some(total * 1e9)
}

/// The first SeekHead position (absolute) of each element the probe reads. A SeekHead
/// of a million entries costs one pass and four numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Seeks {
    info: Option<u64>,
    tracks: Option<u64>,
    cues: Option<u64>,
    tags: Option<u64>,
}

impl Seeks {
    fn is_empty(&self) -> bool {
        *self == Seeks::default()
    }

    /// `(element id, position)` of each known entry, in file order.
    fn in_file_order(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> =
            [(INFO, self.info), (TRACKS, self.tracks), (CUES, self.cues), (TAGS, self.tags)]
                .into_iter()
                .filter_map(|(id, at)| Some((id, at?)))
                .collect();
        v.sort_by_key(|&(_, at)| at);
        v
    }
}

fn parse_seek_head(body: &[u8], seg_start: u64) -> Seeks {
    let mut out = Seeks::default();
    for seek in children(body).filter_map(|e| e.ok()).filter(|e| e.id == SEEK) {
        let mut id = None;
        let mut at = None;
        for e in children(seek.body).filter_map(|e| e.ok()) {
            match e.id {
                SEEK_ID => id = u32::try_from(uint(e.body)).ok(),
                SEEK_POSITION => at = uint(e.body).checked_add(seg_start),
                _ => {}
            }
        }
        let slot = match id {
            Some(INFO) => &mut out.info,
            Some(TRACKS) => &mut out.tracks,
            Some(CUES) => &mut out.cues,
            Some(TAGS) => &mut out.tags,
            _ => continue,
        };
        if slot.is_none() {
            *slot = at;
        }
    }
    out
}

/// ffprobe's codec name for a Matroska video CodecID.
fn video_codec(id: &str) -> String {
    let name = match id {
        "V_MPEG4/ISO/AVC" => "h264",
        "V_MPEGH/ISO/HEVC" => "hevc",
        "V_VP8" => "vp8",
        "V_VP9" => "vp9",
        "V_AV1" => "av1",
        "V_MJPEG" => "mjpeg",
        "V_PRORES" => "prores",
        "V_THEORA" => "theora",
        "V_MPEG1" => "mpeg1video",
        "V_MPEG2" => "mpeg2video",
        "V_FFV1" => "ffv1",
        id if id.starts_with("V_MPEG4/ISO/") => "mpeg4",
        id if id.starts_with("V_MPEG4/MS/") => "msmpeg4v3",
        other => return other.to_string(),
    };
    name.to_string()
}

/// ffprobe's codec name for a Matroska audio CodecID.
fn audio_codec(id: &str, bit_depth: u64) -> String {
    let name = match id {
        "A_OPUS" => "opus",
        "A_VORBIS" => "vorbis",
        "A_FLAC" => "flac",
        "A_MPEG/L3" => "mp3",
        "A_MPEG/L2" => "mp2",
        "A_AC3" => "ac3",
        "A_EAC3" => "eac3",
        "A_DTS" => "dts",
        "A_ALAC" => "alac",
        "A_TRUEHD" => "truehd",
        "A_PCM/INT/LIT" => match bit_depth {
            8 => "pcm_u8",
            24 => "pcm_s24le",
            32 => "pcm_s32le",
            _ => "pcm_s16le",
        },
        "A_PCM/INT/BIG" => match bit_depth {
            24 => "pcm_s24be",
            32 => "pcm_s32be",
            _ => "pcm_s16be",
        },
        "A_PCM/FLOAT/IEEE" => {
            if bit_depth == 64 {
                "pcm_f64le"
            } else {
                "pcm_f32le"
            }
        }
        id if id.starts_with("A_AAC") => "aac",
        other => return other.to_string(),
    };
    name.to_string()
}

/// An element header as found in the file.
#[derive(Debug, Clone, Copy)]
struct Header {
    id: u32,
    data_start: u64,
    /// `None` for the "unknown size" marker (all value bits set).
    size: Option<u64>,
}

impl Header {
    fn end(&self) -> Option<u64> {
        self.data_start.checked_add(self.size?)
    }
}

/// Reads element headers at given positions through a [`WalkReader`], so that moves
/// within its buffer cost no read, and counts elements against `max_items`.
struct Walker<R> {
    r: WalkReader<R>,
    file_size: u64,
    items_left: u64,
    max_items: u64,
    max_memory: u64,
}

impl<R: Read + Seek> Walker<R> {
    fn new(r: WalkReader<R>, limits: &Limits) -> Self {
        Walker {
            file_size: r.len(),
            r,
            items_left: limits.max_items,
            max_items: limits.max_items,
            max_memory: limits.max_memory_bytes,
        }
    }

    fn spend(&mut self) -> Result<()> {
        self.items_left = self.items_left.checked_sub(1).ok_or_else(|| ProbeError::TooLarge {
            what: "number of Matroska elements walked".into(),
            limit: self.max_items,
        })?;
        Ok(())
    }

    fn goto(&mut self, pos: u64) -> Result<()> {
        self.r.seek(SeekFrom::Start(pos))?;
        Ok(())
    }

    fn byte(&mut self) -> Result<Option<u8>> {
        let mut b = [0u8; 1];
        match self.r.read(&mut b)? {
            0 => Ok(None),
            _ => Ok(Some(b[0])),
        }
    }

    /// Reads the element header at `pos`; `None` at the end of the file.
    fn header_at(&mut self, pos: u64) -> Result<Option<Header>> {
        if pos >= self.file_size {
            return Ok(None);
        }
        self.goto(pos)?;
        // A header is at most 12 bytes: when the buffer holds them, parse it there.
        let buf = self.r.fill_buf()?;
        if buf.len() >= 12 {
            let id_len = buf[0].leading_zeros() as usize + 1;
            if id_len > 4 {
                return Err(ProbeError::corrupt(FMT, format!("invalid element ID byte {:#04x}", buf[0])));
            }
            let id = buf[..id_len].iter().fold(0u32, |a, &b| (a << 8) | u32::from(b));
            let (size, len) =
                vint_raw(&buf[id_len..]).ok_or_else(|| ProbeError::corrupt(FMT, "invalid element size"))?;
            self.r.consume(id_len + len);
            return Ok(Some(Header { id, data_start: pos + (id_len + len) as u64, size }));
        }
        let cut = || ProbeError::truncated(FMT, "the file ends inside an element header");
        let first = self.byte()?.ok_or_else(cut)?;
        let id_len = first.leading_zeros() as usize + 1;
        if id_len > 4 {
            return Err(ProbeError::corrupt(FMT, format!("invalid element ID byte {first:#04x}")));
        }
        let mut id = u32::from(first);
        for _ in 1..id_len {
            id = (id << 8) | u32::from(self.byte()?.ok_or_else(cut)?);
        }
        let first = self.byte()?.ok_or_else(cut)?;
        let len = first.leading_zeros() as usize + 1;
        if len > 8 {
            return Err(ProbeError::corrupt(FMT, "invalid element size"));
        }
        let mut value = u64::from(first) & (0xFF >> len);
        let mut all_ones = value == 0xFF >> len;
        for _ in 1..len {
            let b = self.byte()?.ok_or_else(cut)?;
            all_ones &= b == 0xFF;
            value = (value << 8) | u64::from(b);
        }
        let data_start = pos + (id_len + len) as u64;
        Ok(Some(Header { id, data_start, size: (!all_ones).then_some(value) }))
    }

    /// Reads a whole element body of known size under the memory limit.
    fn read_known(&mut self, h: &Header, what: &str) -> Result<Vec<u8>> {
        let size = h.size.ok_or_else(|| ProbeError::corrupt(FMT, format!("{what} has an unknown size")))?;
        self.read_body(h, size, what)
    }

    fn read_body(&mut self, h: &Header, size: u64, what: &str) -> Result<Vec<u8>> {
        let limits = Limits { max_memory_bytes: self.max_memory, ..Limits::default() };
        read_block(&mut self.r, h.data_start, size, &limits, FMT, what)
    }

    /// Earliest and latest presentation time of `track`'s blocks in the Clusters from
    /// `pos` on: to the end of the file, or with `first_only` its first block's (within at
    /// most 64 Clusters). Reads block headers only;
    /// stops quietly at the end of the file or at a cut element.
    fn block_times(&mut self, mut pos: u64, track: u64, first_only: bool) -> Result<Option<(i64, i64)>> {
        const FIRST_SEARCH_CLUSTERS: u32 = 64;
        // Blocks are stored in decode order, and a stream starts with a key frame that
        // no later frame precedes in presentation order (an H.264 IDR, an HEVC IRAP
        // without leading pictures; VP8, VP9 and AV1 do not reorder): the first block
        // holds the earliest time. Reading one block header, not a Cluster of frames,
        // keeps a ranged fetch at the file's head.
        const FIRST_SEARCH_BLOCKS: u32 = 1;
        let mut span: Option<(i64, i64)> = None;
        let mut clusters = 0u32;
        let mut blocks = 0u32;
        'clusters: loop {
            self.spend()?;
            let Some(h) = self.header_at_or_cut(pos)? else { break };
            if h.id != CLUSTER {
                match h.end() {
                    Some(end) => {
                        pos = end;
                        continue;
                    }
                    None => break,
                }
            }
            let end = h.end().map_or(self.file_size, |e| e.min(self.file_size));
            let mut cluster_time = 0i64;
            let mut at = h.data_start;
            let mut next_level1 = None;
            while at < end {
                self.spend()?;
                let Some(c) = self.header_at_or_cut(at)? else { break };
                if LEVEL1.contains(&c.id) {
                    // The end of an unknown-size Cluster.
                    next_level1 = Some(at);
                    break;
                }
                match c.id {
                    TIMECODE => match self.read_small(&c, 8) {
                        Ok(body) => cluster_time = i64::try_from(uint(&body)).unwrap_or(i64::MAX),
                        Err(ProbeError::Truncated { .. }) => break,
                        Err(e) => return Err(e),
                    },
                    SIMPLE_BLOCK => {
                        if let Some(t) = self.block_time(&c, track, cluster_time)? {
                            span = Some(span.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
                            blocks += 1;
                            if first_only && blocks >= FIRST_SEARCH_BLOCKS {
                                break 'clusters;
                            }
                        }
                    }
                    BLOCK_GROUP => {
                        let group_end = c.end().unwrap_or(end).min(end);
                        let mut g = c.data_start;
                        while g < group_end {
                            self.spend()?;
                            let Some(b) = self.header_at_or_cut(g)? else { break };
                            if b.id == BLOCK
                                && let Some(t) = self.block_time(&b, track, cluster_time)?
                            {
                                span = Some(span.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
                                blocks += 1;
                                if first_only && blocks >= FIRST_SEARCH_BLOCKS {
                                    break 'clusters;
                                }
                            }
                            let Some(next) = b.end() else { break };
                            g = next;
                        }
                    }
                    _ => {}
                }
                let Some(next) = c.end() else { break };
                at = next;
            }
            clusters = clusters.saturating_add(1);
            if first_only && (span.is_some() || clusters >= FIRST_SEARCH_CLUSTERS) {
                break;
            }
            pos = match (next_level1, h.end()) {
                (Some(p), _) => p,
                (None, Some(e)) => e,
                (None, None) => end,
            };
        }
        Ok(span)
    }

    /// Whether `track`'s first AAC frames all carry SBR (implicit signalling, decided as
    /// for MP4 and ADTS: the first four frames, or all the stream has when fewer). Reads
    /// the blocks of `track` in the first Clusters (at most 8 Clusters and four
    /// blocks; other tracks' blocks cost their headers); of a laced block, its first frame only. A frame larger than an AAC
    /// frame can be, or a walk that stops before four frames without reaching the end
    /// of the file, says no.
    fn implicit_sbr(&mut self, mut pos: u64, track: u64) -> Result<bool> {
        const CLUSTERS: u32 = 8;
        let mut units: Vec<Vec<u8>> = Vec::new();
        let mut ended = false;
        'clusters: for _ in 0..CLUSTERS {
            self.spend()?;
            let Some(h) = self.header_at_or_cut(pos)? else {
                ended = true;
                break;
            };
            // An unknown-size Cluster (a live stream) ends at the next level-1 element.
            let mut end = h.end().map_or(self.file_size, |e| e.min(self.file_size));
            if h.id == CLUSTER {
                let mut at = h.data_start;
                while at < end {
                    self.spend()?;
                    let Some(c) = self.header_at_or_cut(at)? else { break };
                    if h.size.is_none() && LEVEL1.contains(&c.id) {
                        end = at;
                        break;
                    }
                    let block = match c.id {
                        SIMPLE_BLOCK => Some(c),
                        BLOCK_GROUP => {
                            let group_end = c.end().unwrap_or(end).min(end);
                            let mut g = c.data_start;
                            let mut found = None;
                            while g < group_end && found.is_none() {
                                self.spend()?;
                                let Some(b) = self.header_at_or_cut(g)? else { break };
                                if b.id == BLOCK {
                                    found = Some(b);
                                }
                                let Some(next) = b.end() else { break };
                                g = next;
                            }
                            found
                        }
                        _ => None,
                    };
                    if let Some(b) = block {
                        match self.block_frame(&b, track)? {
                            BlockFrame::OtherTrack => {}
                            BlockFrame::Frame(unit) => {
                                units.push(unit);
                                if units.len() >= AAC_SBR_FRAMES {
                                    break 'clusters;
                                }
                            }
                            BlockFrame::Unreadable => return Ok(false),
                        }
                    }
                    let Some(next) = c.end() else { break };
                    at = next;
                }
            }
            if end >= self.file_size {
                ended = true;
                break;
            }
            if h.size.is_none() && h.id != CLUSTER {
                break;
            }
            pos = end;
        }
        Ok((units.len() >= AAC_SBR_FRAMES || ended) && aac_units_carry_sbr(units.iter().map(Vec::as_slice)))
    }

    /// The first frame of a (Simple)Block of `track`: the whole payload, or the first
    /// frame of a lace (Xiph, fixed-size or EBML).
    fn block_frame(&mut self, h: &Header, track: u64) -> Result<BlockFrame> {
        // The track number first (a vint of at most 8 bytes): another track's block is
        // not read further.
        let Some(size) = h.size else { return Ok(BlockFrame::Unreadable) };
        let head = match self.read_small(h, 8) {
            Ok(b) => b,
            Err(ProbeError::Truncated { .. }) => return Ok(BlockFrame::Unreadable),
            Err(e) => return Err(e),
        };
        match vint(&head) {
            Some((number, _)) if number != track => return Ok(BlockFrame::OtherTrack),
            Some(_) => {}
            None => return Ok(BlockFrame::Unreadable),
        }
        // Track number, timecode, flags and lace sizes around at most four AAC frames
        // (a lace of more is not looked into).
        if size > 8 + 2 + 1 + 1 + 64 + (AAC_SBR_FRAMES * AAC_MAX_BLOCK_BYTES) as u64 {
            return Ok(BlockFrame::Unreadable);
        }
        let body = match self.read_small(h, size) {
            Ok(b) => b,
            Err(ProbeError::Truncated { .. }) => return Ok(BlockFrame::Unreadable),
            Err(e) => return Err(e),
        };
        let Some((_, n)) = vint(&body) else { return Ok(BlockFrame::Unreadable) };
        let Some(&flags) = body.get(n + 2) else { return Ok(BlockFrame::Unreadable) };
        let data = &body[n + 3..];
        let frame = match (flags >> 1) & 3 {
            0 => Some(data),
            lacing => first_laced_frame(lacing, data),
        };
        Ok(match frame {
            Some(f) if !f.is_empty() && f.len() <= AAC_MAX_BLOCK_BYTES => BlockFrame::Frame(f.to_vec()),
            _ => BlockFrame::Unreadable,
        })
    }

    /// Like [`Walker::header_at`], but a header cut by the end of the file ends the
    /// walk instead of failing it.
    fn header_at_or_cut(&mut self, pos: u64) -> Result<Option<Header>> {
        match self.header_at(pos) {
            Err(ProbeError::Truncated { .. }) => Ok(None),
            other => other,
        }
    }

    fn read_small(&mut self, h: &Header, max: u64) -> Result<Vec<u8>> {
        let len = h.size.unwrap_or(0).min(max);
        self.goto(h.data_start)?;
        let mut buf = vec![0u8; len as usize];
        self.r.read_exact(&mut buf).map_err(|e| io_or_truncated(e, FMT, "an element"))?;
        Ok(buf)
    }

    /// The presentation time of a (Simple)Block if it belongs to `track`.
    fn block_time(&mut self, h: &Header, track: u64, cluster_time: i64) -> Result<Option<i64>> {
        let body = match self.read_small(h, 11) {
            Ok(b) => b,
            Err(ProbeError::Truncated { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some((number, n)) = vint(&body) else { return Ok(None) };
        if number != track {
            return Ok(None);
        }
        let Some(rel) = body.get(n..n + 2) else { return Ok(None) };
        Ok(Some(cluster_time.saturating_add(i64::from(i16::from_be_bytes([rel[0], rel[1]])))))
    }
}

/// What [`Walker::block_frame`] found in a block.
enum BlockFrame {
    OtherTrack,
    Frame(Vec<u8>),
    /// Cut, malformed or too large to look into.
    Unreadable,
}

/// The first frame of a laced block's `data` (after the flags byte): lacing 1 is Xiph
/// (sizes as runs of 255), 2 fixed-size, 3 EBML (the first size a vint).
fn first_laced_frame(lacing: u8, data: &[u8]) -> Option<&[u8]> {
    let (&count, rest) = data.split_first()?;
    let frames = usize::from(count) + 1;
    if frames == 1 {
        return Some(rest);
    }
    let (len, rest) = match lacing {
        1 => {
            let mut len = 0usize;
            let mut at = 0;
            loop {
                let b = *rest.get(at)?;
                len += usize::from(b);
                at += 1;
                if b != 255 {
                    break;
                }
            }
            // The other laced sizes follow; the first frame starts after all of them.
            let mut skip = at;
            for _ in 1..frames - 1 {
                loop {
                    let b = *rest.get(skip)?;
                    skip += 1;
                    if b != 255 {
                        break;
                    }
                }
            }
            (len, &rest[skip..])
        }
        2 => (rest.len() / frames, rest),
        _ => {
            let (first, n) = vint(rest)?;
            let mut skip = n;
            for _ in 1..frames - 1 {
                let (_, m) = vint_raw(rest.get(skip..)?)?;
                skip += m;
            }
            (usize::try_from(first).ok()?, &rest[skip..])
        }
    };
    rest.get(..len)
}

/// A child element of an in-memory master element.
#[derive(Debug, Clone, Copy)]
struct Element<'a> {
    id: u32,
    body: &'a [u8],
}

/// Children of an in-memory body. An unknown size, or one past the parent's end, runs
/// to the end of the parent (the parent was read whole, so nothing is beyond it).
fn children(data: &[u8]) -> impl Iterator<Item = Result<Element<'_>>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let first = *rest.first()?;
            let id_len = first.leading_zeros() as usize + 1;
            if id_len > 4 {
                return None;
            }
            let id = rest.get(..id_len)?.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b));
            let (size, size_len) = vint_raw(rest.get(id_len..)?)?;
            let start = id_len + size_len;
            let end = size.and_then(|s| usize::try_from(s).ok()).and_then(|s| start.checked_add(s));
            let end = end.filter(|&e| e <= rest.len()).unwrap_or(rest.len());
            Some((id, start.min(end), end))
        })();
        match parsed {
            Some((id, start, end)) => {
                let body = &rest[start..end];
                rest = &rest[end..];
                Some(Ok(Element { id, body }))
            }
            None => {
                rest = &[];
                Some(Err(ProbeError::corrupt(FMT, "an invalid element header")))
            }
        }
    })
}

/// A variable-length integer with its length marker removed: `(value, bytes)`.
fn vint(d: &[u8]) -> Option<(u64, usize)> {
    let (v, n) = vint_raw(d)?;
    Some((v.unwrap_or(u64::MAX), n))
}

/// Like [`vint`], `None` in the value for the reserved "unknown" (all ones) marker.
fn vint_raw(d: &[u8]) -> Option<(Option<u64>, usize)> {
    let first = *d.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let bytes = d.get(..len)?;
    // len is 1..=8, so the mask fits a u8 (0 for an 8-byte integer).
    let mask = (0xFFu16 >> len) as u8;
    let value = bytes[1..].iter().fold(u64::from(first & mask), |a, &b| (a << 8) | u64::from(b));
    let all_ones = first & mask == mask && bytes[1..].iter().all(|&b| b == 0xFF);
    Some(((!all_ones).then_some(value), len))
}

fn uint(d: &[u8]) -> u64 {
    d.iter().take(8).fold(0u64, |a, &b| (a << 8) | u64::from(b))
}

fn float(d: &[u8]) -> Option<f64> {
    match d.len() {
        4 => Some(f64::from(f32::from_be_bytes(d.try_into().ok()?))),
        8 => Some(f64::from_be_bytes(d.try_into().ok()?)),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// An element with a 1-byte-or-longer ID and an 8-byte size.
    fn el(id: u32, body: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = id.to_be_bytes().iter().copied().skip_while(|&b| b == 0).collect();
        v.push(0x01);
        v.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
        v.extend_from_slice(body);
        v
    }

    fn unknown(id: u32, body: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = id.to_be_bytes().iter().copied().skip_while(|&b| b == 0).collect();
        v.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        v.extend_from_slice(body);
        v
    }

    fn run(bytes: Vec<u8>) -> Result<Streams> {
        let size = bytes.len() as u64;
        let limits = Limits::default();
        probe_walker(&mut Walker::new(WalkReader::new(Cursor::new(bytes), size), &limits), &limits)
    }

    fn minimal(segment: impl Fn(&[u8]) -> Vec<u8>, cluster: Vec<u8>) -> Vec<u8> {
        let mut f = el(EBML, &el(DOC_TYPE, b"webm"));
        let mut info = el(TIMECODE_SCALE, &[0x0F, 0x42, 0x40]);
        info.extend(el(DURATION, &2000.0f64.to_be_bytes()));
        let mut video = el(PIXEL_WIDTH, &[160]);
        video.extend(el(PIXEL_HEIGHT, &[90]));
        let mut entry = el(TRACK_NUMBER, &[1]);
        entry.extend(el(TRACK_TYPE, &[1]));
        entry.extend(el(CODEC_ID, b"V_VP9"));
        entry.extend(el(DEFAULT_DURATION, &40_000_000u32.to_be_bytes()));
        entry.extend(el(VIDEO, &video));
        let mut body = el(INFO, &info);
        body.extend(el(TRACKS, &el(TRACK_ENTRY, &entry)));
        body.extend(cluster);
        f.extend(segment(&body));
        f
    }

    #[test]
    fn reads_headers_of_an_unknown_size_segment_and_cluster() {
        let cluster = unknown(CLUSTER, &el(SIMPLE_BLOCK, &[0x81, 0, 0, 0x80, 1, 2, 3]));
        let s = run(minimal(|b| unknown(SEGMENT, b), cluster)).unwrap();
        let v = s.video.unwrap();
        assert_eq!((v.width, v.height, v.codec.as_str()), (160, 90, "vp9"));
        assert_eq!(v.frame_rate, Some(25.0));
        // No Cues: the count comes from duration × fps.
        assert_eq!(v.frame_count, Some(50));
        assert_eq!(s.duration_seconds, Some(2.0));
        assert!(s.webm);
    }

    /// A 3 s Segment (its audio runs longer) whose video track (UID 7, 25 fps) has
    /// the given tags, and one Cluster whose first video block is at 200 ms.
    fn tagged(tags: &[(&str, &str)]) -> Vec<u8> {
        let mut f = el(EBML, &el(DOC_TYPE, b"matroska"));
        let mut info = el(TIMECODE_SCALE, &[0x0F, 0x42, 0x40]);
        info.extend(el(DURATION, &3000.0f64.to_be_bytes()));
        let mut entry = el(TRACK_NUMBER, &[1]);
        entry.extend(el(TRACK_UID, &[7]));
        entry.extend(el(TRACK_TYPE, &[1]));
        entry.extend(el(CODEC_ID, b"V_MPEG4/ISO/AVC"));
        entry.extend(el(DEFAULT_DURATION, &40_000_000u32.to_be_bytes()));
        entry.extend(el(VIDEO, &[el(PIXEL_WIDTH, &[160]), el(PIXEL_HEIGHT, &[90])].concat()));
        let mut tag = el(TARGETS, &el(TAG_TRACK_UID, &[7]));
        for (name, value) in tags {
            tag.extend(el(
                SIMPLE_TAG,
                &[el(TAG_NAME, name.as_bytes()), el(TAG_STRING, value.as_bytes())].concat(),
            ));
        }
        let mut body = el(INFO, &info);
        body.extend(el(TRACKS, &el(TRACK_ENTRY, &entry)));
        body.extend(el(TAGS, &el(TAG, &tag)));
        let mut cluster = el(TIMECODE, &[200]);
        cluster.extend(el(SIMPLE_BLOCK, &[0x81, 0, 0, 0x80, 1, 2, 3]));
        body.extend(el(CLUSTER, &cluster));
        f.extend(el(SEGMENT, &body));
        f
    }

    #[test]
    fn frame_counts_come_from_the_video_tracks_tags_first() {
        // mkvmerge's statistics tag is the count.
        let v = run(tagged(&[("NUMBER_OF_FRAMES", "61"), ("DURATION", "00:00:02.200000000")])).unwrap();
        assert_eq!(v.video.unwrap().frame_count, Some(61));
        // ffmpeg's DURATION tag: from the first block (200 ms) to 2.2 s at 40 ms a frame.
        let v = run(tagged(&[("DURATION", "00:00:02.200000000")])).unwrap();
        assert_eq!(v.video.unwrap().frame_count, Some(50));
        // Neither: the Segment's duration (the longer audio) × fps.
        let v = run(tagged(&[("ENCODER", "x")])).unwrap();
        assert_eq!(v.video.unwrap().frame_count, Some(75));
    }

    #[test]
    fn tag_durations_parse() {
        assert_eq!(parse_tag_duration("00:00:12.000000000"), Some(12e9));
        assert_eq!(parse_tag_duration("01:02:03.5"), Some(3723.5e9));
        assert_eq!(parse_tag_duration("12.0"), None);
        assert_eq!(parse_tag_duration("00:00:xx"), None);
    }

    #[test]
    fn every_cut_of_a_header_is_truncated_never_a_panic() {
        let full = minimal(|b| el(SEGMENT, b), el(CLUSTER, &el(TIMECODE, &[0])));
        let tracks_end = full.len() - el(CLUSTER, &el(TIMECODE, &[0])).len();
        for cut in 0..tracks_end {
            let err = run(full[..cut].to_vec()).unwrap_err();
            assert_eq!(err.code().as_str(), "truncated", "cut at {cut}: {err}");
        }
        assert!(run(full).is_ok());
    }

    #[test]
    fn a_huge_declared_element_is_refused_or_skipped_without_allocating() {
        // Tracks claims 2^50 bytes: more than the memory limit, so it is never read.
        let mut f = el(EBML, &el(DOC_TYPE, b"matroska"));
        let mut body = vec![0x16, 0x54, 0xAE, 0x6B, 0x01];
        body.extend_from_slice(&(1u64 << 50).to_be_bytes()[1..]);
        f.extend(el(SEGMENT, &body));
        let limits = Limits::default();
        let mut w = Walker::new(WalkReader::new(Cursor::new(f), 1 << 51), &limits);
        assert_eq!(probe_walker(&mut w, &limits).unwrap_err().code().as_str(), "too_large");
    }

    #[test]
    fn frame_count_comes_from_the_first_and_last_video_block_times() {
        // Video track 1 at 40 ms per frame, audio track 2. The first Cluster holds audio
        // only; the second, which the Cues point to, three video frames at 0, 40, 80 ms.
        // The Duration (1 s) says 25 frames; the block times say 3.
        let mut f = el(EBML, &el(DOC_TYPE, b"matroska"));
        let mut info = el(TIMECODE_SCALE, &[0x0F, 0x42, 0x40]);
        info.extend(el(DURATION, &1000.0f64.to_be_bytes()));
        let mut v = el(TRACK_NUMBER, &[1]);
        v.extend(el(TRACK_TYPE, &[1]));
        v.extend(el(CODEC_ID, b"V_MPEG4/ISO/AVC"));
        v.extend(el(DEFAULT_DURATION, &40_000_000u32.to_be_bytes()));
        v.extend(el(VIDEO, &[el(PIXEL_WIDTH, &[64]), el(PIXEL_HEIGHT, &[48])].concat()));
        let mut a = el(TRACK_NUMBER, &[2]);
        a.extend(el(TRACK_TYPE, &[2]));
        a.extend(el(CODEC_ID, b"A_AAC"));
        let tracks = el(TRACKS, &[el(TRACK_ENTRY, &v), el(TRACK_ENTRY, &a)].concat());
        let block = |track: u8, rel: i16| {
            let mut b = vec![0x80 | track];
            b.extend_from_slice(&rel.to_be_bytes());
            b.extend_from_slice(&[0x80, 0xAA, 0xBB]);
            el(SIMPLE_BLOCK, &b)
        };
        let cluster1 = el(CLUSTER, &[el(TIMECODE, &[0]), block(2, 0), block(2, 20)].concat());
        let cluster2 = el(
            CLUSTER,
            &[el(TIMECODE, &[0]), block(1, 0), block(2, 40), block(1, 40), block(1, 80)].concat(),
        );
        let cues_for = |pos: u32| {
            let tp = [el(CUE_TRACK, &[1]), el(CUE_CLUSTER_POSITION, &pos.to_be_bytes())].concat();
            el(CUES, &el(CUE_POINT, &[el(CUE_TIME, &[0]), el(CUE_TRACK_POSITIONS, &tp)].concat()))
        };
        let head = [el(INFO, &info), tracks].concat();
        let cluster2_at = (head.len() + cues_for(0).len() + cluster1.len()) as u32;
        f.extend(el(SEGMENT, &[head, cues_for(cluster2_at), cluster1, cluster2].concat()));
        let s = probe_bytes(&f, &Limits::default()).unwrap();
        let video = s.video.unwrap();
        assert_eq!((video.width, video.height, video.codec.as_str()), (64, 48, "h264"));
        assert_eq!(video.frame_count, Some(3));
        assert_eq!(video.frame_rate, Some(25.0));
        assert_eq!(s.audio.unwrap().codec, "aac");
    }

    /// An audio-only Matroska file: one AAC track (number 1) of the given codec id and
    /// extra TrackEntry children, SamplingFrequency 22050, Channels `channels`, and one
    /// Cluster of the given SimpleBlock bodies (after the track number, timecode and
    /// flags, which are written here: `(lacing flags, payload)`).
    fn aac_file(codec_id: &str, channels: u8, extra: &[u8], blocks: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut f = el(EBML, &el(DOC_TYPE, b"matroska"));
        let mut audio = el(SAMPLING_FREQUENCY, &22_050.0f64.to_be_bytes());
        audio.extend(el(CHANNELS, &[channels]));
        let mut a = el(CODEC_ID, codec_id.as_bytes());
        a.extend(el(AUDIO, &audio));
        a.extend_from_slice(extra);
        let mut cluster = el(TIMECODE, &[0]);
        for (i, (lacing, payload)) in blocks.iter().enumerate() {
            let mut b = vec![0x81];
            b.extend_from_slice(&(46 * i as i16).to_be_bytes());
            b.push(0x80 | lacing);
            b.extend_from_slice(payload);
            cluster.extend(el(SIMPLE_BLOCK, &b));
        }
        let body = [el(INFO, &el(TIMECODE_SCALE, &[0x0F, 0x42, 0x40])), el(TRACKS, &track(1, 2, &a))];
        f.extend(el(SEGMENT, &[&body[..], &[el(CLUSTER, &cluster)]].concat().concat()));
        f
    }

    fn layout(bytes: Vec<u8>) -> Result<(Option<u32>, Option<u32>)> {
        let a = run(bytes)?.audio.unwrap();
        Ok((a.sample_rate, a.channels))
    }

    /// A raw AAC frame ending in a fill element of SBR data (or a plain one) and END.
    fn raw_frame(sbr: bool) -> Vec<u8> {
        let fill = if sbr { "110000111010000" } else { "110000100000000" };
        let mut bits = ["000101101011010011101011", fill, "111"].concat();
        bits += &"0".repeat((8 - bits.len() % 8) % 8);
        (0..bits.len()).step_by(8).map(|k| u8::from_str_radix(&bits[k..k + 8], 2).unwrap()).collect()
    }

    #[test]
    fn aac_codec_private_gives_what_a_decoder_plays() {
        let private = |c: &[u8]| el(CODEC_PRIVATE, c);
        // Hierarchical SBR over a 22050 Hz mono core: ffprobe 44100 Hz, 2 channels,
        // whatever the track's Channels says.
        let f = aac_file("A_AAC", 1, &private(&[0x2B, 0x8A, 0x08, 0x00]), &[]);
        assert_eq!(layout(f).unwrap(), (Some(44_100), Some(2)));
        // 0x2b7 / 0x548, with psPresentFlag 0: mono stays mono.
        let f = aac_file("A_AAC", 2, &private(&[0x13, 0x88, 0x56, 0xE5, 0xA5, 0x48, 0x00]), &[]);
        assert_eq!(layout(f).unwrap(), (Some(44_100), Some(1)));
        // No CodecPrivate and no SBR in the id: the track's numbers.
        assert_eq!(layout(aac_file("A_AAC", 1, &[], &[])).unwrap(), (Some(22_050), Some(1)));
        // Hostile configs: corrupt, as in MP4; never a panic for any cut.
        for c in [&[0x12][..], &[0x16, 0x88], &[0x17, 0x80, 0, 0, 0x08], &[0x2B, 0x8A]] {
            let err = layout(aac_file("A_AAC", 1, &private(c), &[])).unwrap_err();
            assert_eq!(err.code().as_str(), "corrupt_file", "{c:02x?}: {err}");
        }
        let full = aac_file("A_AAC", 1, &private(&[0x13, 0x88]), &[(0, raw_frame(true))]);
        for n in 0..full.len() {
            let _ = run(full[..n].to_vec());
        }
    }

    #[test]
    fn legacy_sbr_codec_ids_are_read_as_ffmpeg_builds_their_config() {
        let out = el(AUDIO, &el(OUTPUT_SAMPLING_FREQUENCY, &44_100.0f64.to_be_bytes()));
        // The AUDIO element given twice: the second adds OutputSamplingFrequency.
        let f = aac_file("A_AAC/MPEG4/LC/SBR", 1, &out, &[]);
        assert_eq!(layout(f).unwrap(), (Some(44_100), Some(2)));
        // Without OutputSamplingFrequency FFmpeg signals SBR at the core rate, which
        // plays at the core rate (downsampled SBR), PS assumed for mono.
        assert_eq!(layout(aac_file("A_AAC/MPEG2/LC/SBR", 1, &[], &[])).unwrap(), (Some(22_050), Some(2)));
        // A rate outside the AAC table keeps the track's numbers.
        let odd = el(AUDIO, &el(OUTPUT_SAMPLING_FREQUENCY, &44_000.0f64.to_be_bytes()));
        assert_eq!(layout(aac_file("A_AAC/MPEG4/LC/SBR", 1, &odd, &[])).unwrap(), (Some(22_050), Some(1)));
    }

    #[test]
    fn implicit_sbr_is_decided_by_the_first_four_blocks() {
        let lc = el(CODEC_PRIVATE, &[0x13, 0x88]); // AAC-LC 22050 Hz mono
        let with = |frames: &[bool]| {
            let blocks: Vec<_> = frames.iter().map(|&sbr| (0, raw_frame(sbr))).collect();
            layout(aac_file("A_AAC", 1, &lc, &blocks)).unwrap()
        };
        assert_eq!(with(&[true; 5]), (Some(44_100), Some(2)));
        assert_eq!(with(&[true, true]), (Some(44_100), Some(2)));
        assert_eq!(with(&[true, false, true, true]), (Some(22_050), Some(1)));
        assert_eq!(with(&[]), (Some(22_050), Some(1)));
        // Laced blocks: the first frame of each. Xiph lacing of two frames (the first's
        // size, then both frames), fixed-size of two, EBML of three.
        let frame = raw_frame(true);
        let n = frame.len() as u8;
        let xiph = [&[1, n][..], &frame, &frame].concat();
        let fixed = [&[1][..], &frame, &frame].concat();
        let ebml = [&[2, 0x80 | n, 0x80 | 0x3F][..], &frame, &frame, &frame].concat();
        let blocks = [(2, xiph), (4, fixed), (6, ebml.clone()), (6, ebml)];
        assert_eq!(layout(aac_file("A_AAC", 1, &lc, &blocks)).unwrap(), (Some(44_100), Some(2)));
        // A lace whose sizes overrun the block says no, never a panic.
        let bad = [(2, vec![3, 255, 255, 255]), (6, vec![1, 0x40])];
        for b in bad {
            let f = aac_file("A_AAC", 1, &lc, &[b, (0, frame.clone())]);
            assert_eq!(layout(f).unwrap(), (Some(22_050), Some(1)));
        }
    }

    #[test]
    fn vints_and_unknown_sizes() {
        assert_eq!(vint(&[0x81]), Some((1, 1)));
        assert_eq!(vint(&[0x40, 0x02]), Some((2, 2)));
        assert_eq!(vint_raw(&[0xFF]), Some((None, 1)));
        assert_eq!(vint_raw(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), Some((None, 8)));
        assert_eq!(vint(&[0x00, 0x01]), None);
        assert_eq!(vint(&[0x40]), None);
        assert!(children(&[0x00, 0x81]).next().unwrap().is_err());
    }

    #[test]
    fn the_last_video_cue_point_wins() {
        let point = |time: u8, track: u8, pos: u8| {
            let mut tp = el(CUE_TRACK, &[track]);
            tp.extend(el(CUE_CLUSTER_POSITION, &[pos]));
            let mut p = el(CUE_TIME, &[time]);
            p.extend(el(CUE_TRACK_POSITIONS, &tp));
            el(CUE_POINT, &p)
        };
        let mut cues = point(0, 1, 10);
        cues.extend(point(50, 1, 90));
        cues.extend(point(60, 2, 120));
        assert_eq!(last_cue_cluster(&cues, 1), Some(90));
        assert_eq!(last_cue_cluster(&cues, 3), None);
    }

    fn track(number: u8, kind: u8, extra: &[u8]) -> Vec<u8> {
        let mut e = el(TRACK_NUMBER, &[number]);
        e.extend(el(TRACK_TYPE, &[kind]));
        e.extend_from_slice(extra);
        el(TRACK_ENTRY, &e)
    }

    /// Issue 9: a Track was kept per TrackEntry (4 MB of empty ones took 226 MB). Only
    /// the first video and the first audio track are kept; an encrypted one anywhere
    /// still makes the file encrypted.
    #[test]
    fn empty_track_entries_are_parsed_and_dropped_not_kept() {
        let mut body = [0xAE, 0x80].repeat(100_000);
        body.extend(track(1, 1, &el(CODEC_ID, b"V_VP9")));
        body.extend(track(2, 2, &el(CODEC_ID, b"A_OPUS")));
        body.extend(track(3, 1, &el(CODEC_ID, b"V_AV1")));
        let set = parse_tracks(&body).unwrap();
        assert_eq!(set.video.map(|t| (t.number, t.codec_id)), Some((1, "V_VP9".to_string())));
        assert_eq!(set.audio.map(|t| t.number), Some(2));
        assert!(!set.encrypted);
        let encryption = el(CONTENT_ENCODINGS, &el(CONTENT_ENCODING, &el(CONTENT_ENCRYPTION, &[])));
        body.extend(track(4, 17, &encryption));
        assert!(parse_tracks(&body).unwrap().encrypted);
    }

    /// Issue 9: a TagValue and a list of children were kept per SimpleTag (4 MB of
    /// empty ones took 122 MB). One pass finds the first NUMBER_OF_FRAMES and DURATION
    /// of the track's Tags, whether Targets comes first or last.
    #[test]
    fn simple_tags_are_searched_in_one_pass_for_the_two_values() {
        let simple = |name: &str, value: &str| {
            el(SIMPLE_TAG, &[el(TAG_NAME, name.as_bytes()), el(TAG_STRING, value.as_bytes())].concat())
        };
        let targets = |uid: u8| el(TARGETS, &el(TAG_TRACK_UID, &[uid]));
        let other = el(TAG, &[targets(9), simple("NUMBER_OF_FRAMES", "1")].concat());
        let mut many = targets(7);
        many.extend([0x67, 0xC8, 0x80].repeat(100_000));
        many.extend(simple("NUMBER_OF_FRAMES", "61\0\0"));
        many.extend(simple("NUMBER_OF_FRAMES", "99"));
        let targets_last = [simple("DURATION", "00:00:02.4"), targets(7)].concat();
        let body = [other, el(TAG, &many), el(TAG, &targets_last)].concat();
        let found = track_tags(&body, 7);
        assert_eq!(found.frames.as_deref(), Some("61"));
        assert_eq!(found.duration.as_deref(), Some("00:00:02.4"));
        assert_eq!(track_tags(&body, 5), TrackTags::default());
    }

    #[test]
    fn a_seek_head_of_many_entries_keeps_the_first_position_of_each_element() {
        let seek = |id: u32, at: u32| {
            el(SEEK, &[el(SEEK_ID, &id.to_be_bytes()), el(SEEK_POSITION, &at.to_be_bytes())].concat())
        };
        let mut body = seek(0x1043_A770, 5).repeat(50_000);
        body.extend(seek(TAGS, 300));
        body.extend(seek(INFO, 100));
        body.extend(seek(TAGS, 400));
        let seeks = parse_seek_head(&body, 1000);
        assert_eq!(seeks, Seeks { info: Some(1100), tags: Some(1300), ..Seeks::default() });
        assert_eq!(seeks.in_file_order(), vec![(INFO, 1100), (TAGS, 1300)]);
    }

    /// Issue 9: an 80 MB run of EBML Void elements. The walk reads the file a buffer at
    /// a time, not an element at a time.
    #[test]
    fn many_void_elements_cost_a_read_per_buffer() {
        let voids = [0xEC, 0x86, 0, 0, 0, 0, 0, 0].repeat(100_000);
        let f = minimal(|b| el(SEGMENT, &[voids.as_slice(), b].concat()), el(CLUSTER, &el(TIMECODE, &[0])));
        let reads = std::rc::Rc::new(std::cell::Cell::new(0));
        let counting =
            super::super::tests::CountingReads { inner: Cursor::new(&f[..]), reads: reads.clone() };
        let limits = Limits::default();
        let mut w = Walker::new(WalkReader::new(counting, f.len() as u64), &limits);
        let s = probe_walker(&mut w, &limits).unwrap();
        assert_eq!(s.video.map(|v| v.frame_count), Some(Some(50)));
        assert!(reads.get() <= f.len() / crate::ranged::WALK_BUFFER + 4, "{} reads", reads.get());
    }

    /// Nested elements are never descended into by recursion: an unknown master
    /// element 10,000 levels deep is stepped over by its size.
    #[test]
    fn a_deeply_nested_unknown_element_is_stepped_over() {
        let mut nested = Vec::new();
        for _ in 0..10_000 {
            nested = el(0x6F6F, &nested);
        }
        let f = minimal(|b| el(SEGMENT, &[nested.as_slice(), b].concat()), el(CLUSTER, &el(TIMECODE, &[0])));
        let v = run(f).unwrap().video.unwrap();
        assert_eq!((v.width, v.height, v.frame_count), (160, 90, Some(50)));
    }
}
