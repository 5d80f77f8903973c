//! MPEG transport streams (`.ts`, 188-byte packets; `.m2ts`/`.mts`, 192 with a 4-byte
//! timestamp prefix): no header holds a size or a duration, so the PAT and PMT name the
//! streams, the first PES of each gives its parameters (the SPS for H.264/HEVC, the
//! frame header for audio) and its first timestamps, and the last packets of the file,
//! read from the end (a suffix range on a partial copy), give the last timestamps.
//! Duration follows ffprobe: the latest end (last PTS plus one frame) minus the earliest
//! start over the streams we follow. Hand-written: no crate reads TS headers without
//! demuxing the payloads, and ours reads at most [`HEAD_BYTES`] and [`TAIL_BYTES`] per
//! window whatever the file declares.

use std::io::{Read, Seek, SeekFrom};

use asset_core::Limits;

use super::nal::{self, Sps};
use super::{AudioStream, Streams, VideoStream, frames_from};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FMT: &str = "MPEG-TS";
const SYNC: u8 = 0x47;
/// How much of the start is read at most for the tables, the parameter sets and the
/// first timestamps: a real muxer repeats PAT/PMT every 100 ms and the SPS with every
/// key frame, so a file that has none of them within this is not one we can read.
pub(super) const HEAD_BYTES: u64 = 4 << 20;
/// The first window read at the end for the last timestamps; doubled while a followed
/// stream has none there, up to [`TAIL_BYTES_MAX`].
pub(super) const TAIL_BYTES: u64 = 64 * 1024;
pub(super) const TAIL_BYTES_MAX: u64 = 4 << 20;
/// Video timestamps gathered for the frame rate: enough to see past B-frame reordering.
pub(super) const RATE_SAMPLES: usize = 16;
/// The most elementary-stream bytes kept while looking for a parameter set.
pub(super) const ES_BUFFER: usize = 256 * 1024;
/// ADTS frames gathered before the SBR check looks at them (it wants four).
const AAC_WAIT_FRAMES: usize = 4;
/// The most bytes of a PSI section (the standard caps sections at 1024, 4096 for some).
const SECTION_MAX: usize = 4096;
/// Timestamps are 33-bit counts of a 90 kHz clock.
const PTS_WRAP: u64 = 1 << 33;

/// The packet layout: the stride between sync bytes and where the first one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub stride: u64,
    /// Offset of the first sync byte (4 for M2TS, whose packets carry a prefix).
    pub first: u64,
}

/// The packet layout if `head` is a transport stream: a sync byte every 188 (TS), 192
/// (M2TS) or 204 (TS with Reed-Solomon parity) bytes, at every packet the head holds
/// and at least two. Used by detection as well as by the parser.
pub(crate) fn sniff(head: &[u8]) -> Option<Layout> {
    for (stride, first) in [(188usize, 0usize), (192, 4), (204, 0)] {
        let packets = head.len().saturating_sub(first).div_ceil(stride);
        if packets < 2 || head.len() < first + stride + 1 {
            continue;
        }
        if (0..packets).all(|i| head.get(first + i * stride).is_none_or(|&b| b == SYNC)) {
            return Some(Layout { stride: stride as u64, first: first as u64 });
        }
    }
    None
}

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Streams> {
    probe_reader(&mut WalkReader::open(src)?, limits)
}

/// A stream the PMT names that we follow.
#[derive(Debug, Clone)]
pub(super) struct Es {
    pub(super) pid: u16,
    pub(super) kind: Kind,
    pub(super) first_pts: Option<u64>,
    pub(super) last_pts: Option<u64>,
    /// The PTS of the first video PES packets, for the frame rate.
    pub(super) rate_pts: Vec<u64>,
    /// Payload bytes gathered until the parameters are found.
    pub(super) buf: Vec<u8>,
    pub(super) done: bool,
    pub(super) video: Option<Sps>,
    pub(super) audio: Option<AudioParams>,
}

impl Es {
    pub(super) fn new(pid: u16, kind: Kind) -> Self {
        Es {
            pid,
            kind,
            first_pts: None,
            last_pts: None,
            rate_pts: Vec::new(),
            buf: Vec::new(),
            done: matches!(kind, Kind::OtherVideo(_)),
            video: None,
            audio: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    H264,
    Hevc,
    Mpeg2Video,
    Mpeg1Video,
    /// A video codec whose parameters we do not read (VC-1, MPEG-4 part 2...).
    OtherVideo(&'static str),
    Aac,
    MpegAudio,
    Ac3,
    Eac3,
}

impl Kind {
    pub(super) fn is_video(self) -> bool {
        matches!(self, Kind::H264 | Kind::Hevc | Kind::Mpeg2Video | Kind::Mpeg1Video | Kind::OtherVideo(_))
    }

    fn video_codec(self) -> &'static str {
        match self {
            Kind::H264 => "h264",
            Kind::Hevc => "hevc",
            Kind::Mpeg2Video => "mpeg2video",
            Kind::Mpeg1Video => "mpeg1video",
            Kind::OtherVideo(c) => c,
            _ => "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct AudioParams {
    codec: &'static str,
    sample_rate: u32,
    channels: u32,
    /// Samples per channel in one frame: one frame's duration past the last PTS.
    frame_samples: u32,
}

/// Maps a PMT entry to a kind we follow; `None` for data, subtitles and the unknown.
fn kind_of(stream_type: u8, descriptors: &[u8]) -> Option<Kind> {
    let has_tag = |tag: u8| descriptor_tags(descriptors).any(|(t, _)| t == tag);
    let registration =
        descriptor_tags(descriptors).find(|&(t, d)| t == 5 && d.len() >= 4).map(|(_, d)| &d[..4]);
    Some(match stream_type {
        0x01 => Kind::Mpeg1Video,
        0x02 => Kind::Mpeg2Video,
        0x10 => Kind::OtherVideo("mpeg4"),
        0x1B => Kind::H264,
        0x24 => Kind::Hevc,
        0xEA => Kind::OtherVideo("vc1"),
        0x03 | 0x04 => Kind::MpegAudio,
        0x0F => Kind::Aac,
        0x81 => Kind::Ac3,
        0x87 => Kind::Eac3,
        0x06 if has_tag(0x6A) || registration == Some(b"AC-3") => Kind::Ac3,
        0x06 if has_tag(0x7A) || registration == Some(b"EAC3") => Kind::Eac3,
        0x06 if registration == Some(b"HEVC") => Kind::Hevc,
        _ => return None,
    })
}

fn descriptor_tags(mut d: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&tag, &len) = (d.first()?, d.get(1)?);
        let end = (2 + usize::from(len)).min(d.len());
        let body = &d[2..end];
        d = &d[end..];
        Some((tag, body))
    })
}

/// One transport packet, split into what we use.
struct Packet<'a> {
    pid: u16,
    unit_start: bool,
    scrambled: bool,
    payload: &'a [u8],
}

fn packet(p: &[u8]) -> Option<Packet<'_>> {
    if p.len() < 188 || p[0] != SYNC {
        return None;
    }
    let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
    let afc = (p[3] >> 4) & 3;
    let mut start = 4usize;
    if afc & 2 != 0 {
        start += 1 + usize::from(p[4]);
    }
    let payload = if afc & 1 != 0 && start < 188 { &p[start..188] } else { &[][..] };
    Some(Packet { pid, unit_start: p[1] & 0x40 != 0, scrambled: p[3] >> 6 != 0, payload })
}

/// The PTS of a PES packet that starts in `payload`, and where its data begins.
pub(super) fn pes_header(payload: &[u8]) -> Option<(Option<u64>, usize)> {
    if payload.len() < 9 || payload[..3] != [0, 0, 1] {
        return None;
    }
    // Stream ids without the optional header (padding, private 2, ...) carry no PTS.
    if matches!(payload[3], 0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xFF | 0xF2 | 0xF8) {
        return Some((None, 6));
    }
    let data = 9 + usize::from(payload[8]);
    let pts = (payload[7] & 0x80 != 0).then(|| payload.get(9..14)).flatten().map(|b| {
        (u64::from(b[0] >> 1 & 7) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1)
    });
    Some((pts, data.min(payload.len())))
}

/// Reads packets `[from, to)` of the layout, calling `each` on every well-formed one
/// until it returns `false`. Reads go through the walk reader in 64 KiB blocks; a block
/// whose sync bytes are off is realigned by a search for the next run of sync bytes.
fn scan<R: Read + Seek>(
    r: &mut WalkReader<R>,
    layout: Layout,
    from: u64,
    to: u64,
    mut each: impl FnMut(&Packet<'_>) -> Result<bool>,
) -> Result<()> {
    let stride = layout.stride as usize;
    let prefix = layout.first as usize % stride;
    let per_block = (64 * 1024 / stride).max(1);
    let mut block = vec![0u8; per_block * stride];
    let mut pos = from;
    while pos < to {
        let want = usize::try_from((to - pos).min(block.len() as u64)).unwrap_or(block.len());
        r.seek(SeekFrom::Start(pos))?;
        let n = crate::read_up_to(r, &mut block[..want])?;
        if n < stride {
            break;
        }
        let mut i = 0;
        while i + stride <= n {
            let p = &block[i + prefix..(i + prefix + 188).min(n)];
            match packet(p) {
                Some(pk) => {
                    if !each(&pk)? {
                        return Ok(());
                    }
                    i += stride;
                }
                None => {
                    // Lost sync: the next offset where three sync bytes line up.
                    let found = (i + 1..n).find(|&j| {
                        (0..3).all(|k| block.get(j + prefix + k * stride).is_none_or(|&b| b == SYNC))
                            && block.get(j + prefix) == Some(&SYNC)
                    });
                    match found {
                        Some(j) => i = j,
                        None => {
                            i = n;
                            break;
                        }
                    }
                }
            }
        }
        if i == 0 {
            break;
        }
        pos += i as u64;
    }
    Ok(())
}

pub(super) fn probe_reader<R: Read + Seek>(r: &mut WalkReader<R>, limits: &Limits) -> Result<Streams> {
    let size = r.len();
    let mut head = [0u8; 1024];
    r.seek(SeekFrom::Start(0))?;
    let n = crate::read_up_to(r, &mut head)?;
    let layout = sniff(&head[..n]).ok_or_else(|| {
        if n < 400 {
            ProbeError::truncated(FMT, "the file ends before two packets")
        } else {
            ProbeError::corrupt(FMT, "no transport packets at the start")
        }
    })?;
    // Packets are read from byte 0 (an M2TS packet's sync byte follows its prefix).
    let start = 0;

    let mut pmt_pid: Option<u16> = None;
    let mut section = Vec::new();
    let mut section_pid = None;
    let mut streams: Vec<Es> = Vec::new();
    let mut packets = 0u64;
    let mut encrypted = false;
    let head_end = size.min(HEAD_BYTES);
    scan(r, layout, start, head_end, |p| {
        packets += 1;
        if packets > limits.max_items {
            return Err(ProbeError::TooLarge {
                what: "MPEG-TS packets read".into(),
                limit: limits.max_items,
            });
        }
        // Program tables until the PMT is read.
        if streams.is_empty() {
            let table_pid = pmt_pid.unwrap_or(0);
            if p.pid == table_pid {
                if p.unit_start {
                    let pointer = usize::from(*p.payload.first().unwrap_or(&0));
                    section.clear();
                    section.extend_from_slice(p.payload.get(1 + pointer..).unwrap_or(&[]));
                    section_pid = Some(p.pid);
                } else if section_pid == Some(p.pid) && section.len() < SECTION_MAX {
                    section.extend_from_slice(p.payload);
                }
                if let Some(body) = complete_section(&section) {
                    match (table_pid, body.first()) {
                        (0, Some(0)) => {
                            pmt_pid = first_program_pmt(body);
                            section.clear();
                        }
                        (pid, Some(2)) if pid != 0 => {
                            streams = parse_pmt(body);
                            if streams.is_empty() {
                                return Err(ProbeError::unsupported(
                                    "an MPEG-TS program with no audio or video stream we know",
                                ));
                            }
                        }
                        _ => section.clear(),
                    }
                }
            }
            return Ok(true);
        }
        let Some(es) = streams.iter_mut().find(|e| e.pid == p.pid) else { return Ok(true) };
        if p.scrambled {
            encrypted = true;
            return Ok(false);
        }
        let mut data = p.payload;
        if p.unit_start
            && let Some((pts, at)) = pes_header(data)
        {
            if let Some(pts) = pts {
                es.first_pts.get_or_insert(pts);
                if es.kind.is_video() && es.rate_pts.len() < RATE_SAMPLES {
                    es.rate_pts.push(pts);
                }
            }
            data = &data[at..];
        }
        if !es.done && es.first_pts.is_some() {
            // Parsed a whole PES at a time: a parameter set is not cut, nor rescanned
            // with every packet.
            if p.unit_start && !es.buf.is_empty() {
                parse_parameters(es, false);
            }
            if !es.done {
                if es.buf.len() + data.len() <= ES_BUFFER {
                    es.buf.extend_from_slice(data);
                } else {
                    parse_parameters(es, true);
                    es.done = true;
                    es.buf = Vec::new();
                }
            }
        }
        let finished = |e: &Es| e.done && (!e.kind.is_video() || e.rate_pts.len() >= RATE_SAMPLES);
        Ok(!streams.iter().all(finished))
    })?;
    if encrypted {
        return Err(ProbeError::Encrypted { format: FMT });
    }
    for es in streams.iter_mut().filter(|e| !e.done && !e.buf.is_empty()) {
        parse_parameters(es, true);
    }
    if streams.is_empty() {
        let what = if pmt_pid.is_none() { "PAT" } else { "PMT" };
        return Err(if size <= HEAD_BYTES {
            ProbeError::truncated(FMT, format!("the file ends before a complete {what}"))
        } else {
            ProbeError::corrupt(FMT, format!("no {what} in the first {HEAD_BYTES} bytes"))
        });
    }

    tail_timestamps(r, layout, start, size, &mut streams, limits)?;
    Ok(summarise(&streams))
}

/// The section in `buf` once all of it (per its `section_length`) is there.
fn complete_section(buf: &[u8]) -> Option<&[u8]> {
    if buf.len() < 3 {
        return None;
    }
    let len = 3 + ((usize::from(buf[1] & 0x0F) << 8) | usize::from(buf[2]));
    buf.get(..len)
}

/// The PMT PID of the first program of a PAT section (program 0 is the network PID).
fn first_program_pmt(s: &[u8]) -> Option<u16> {
    let end = s.len().saturating_sub(4); // CRC
    s.get(8..end)?.chunks_exact(4).find_map(|e| {
        let program = u16::from_be_bytes([e[0], e[1]]);
        (program != 0).then(|| (u16::from(e[2] & 0x1F) << 8) | u16::from(e[3]))
    })
}

fn parse_pmt(s: &[u8]) -> Vec<Es> {
    let end = s.len().saturating_sub(4);
    let Some(info_len) = s.get(10..12).map(|b| (usize::from(b[0] & 0x0F) << 8) | usize::from(b[1])) else {
        return Vec::new();
    };
    let mut at = 12 + info_len;
    let mut out = Vec::new();
    while at + 5 <= end {
        let stream_type = s[at];
        let pid = (u16::from(s[at + 1] & 0x1F) << 8) | u16::from(s[at + 2]);
        let es_len = (usize::from(s[at + 3] & 0x0F) << 8) | usize::from(s[at + 4]);
        let desc = s.get(at + 5..(at + 5 + es_len).min(end)).unwrap_or(&[]);
        at += 5 + es_len;
        let Some(kind) = kind_of(stream_type, desc) else { continue };
        // The first video and the first audio stream, as the summary reports.
        if out.iter().any(|e: &Es| e.kind.is_video() == kind.is_video()) {
            continue;
        }
        out.push(Es::new(pid, kind));
    }
    out
}

/// Looks for the stream's parameters in the bytes gathered so far; `last` when no more
/// will come (the head read is over).
pub(super) fn parse_parameters(es: &mut Es, last: bool) {
    let found = match es.kind {
        Kind::H264 => {
            es.video = nal::annex_b_units(&es.buf).find_map(|u| {
                // A unit cut by the buffer's end may still be growing: wait for it.
                nal::h264_sps(u)
            });
            es.video.is_some()
        }
        Kind::Hevc => {
            es.video = nal::annex_b_units(&es.buf).find_map(nal::hevc_sps);
            es.video.is_some()
        }
        Kind::Mpeg1Video | Kind::Mpeg2Video => {
            es.video = memchr::memmem::find(&es.buf, &[0, 0, 1, 0xB3])
                .and_then(|i| nal::mpeg12_sequence_header(&es.buf[i..]));
            es.video.is_some()
        }
        Kind::OtherVideo(_) => true,
        Kind::Aac => {
            es.audio = adts_params(&es.buf, last);
            es.audio.is_some()
        }
        Kind::MpegAudio => {
            es.audio = mpeg_audio_params(&es.buf);
            es.audio.is_some()
        }
        Kind::Ac3 | Kind::Eac3 => {
            es.audio = crate::audio::ac3_params(&es.buf).map(|p| AudioParams {
                codec: p.codec,
                sample_rate: p.sample_rate,
                channels: p.channels,
                frame_samples: p.frame_samples,
            });
            es.audio.is_some()
        }
    };
    if found {
        es.done = true;
        es.buf = Vec::new();
    }
}

/// The first ADTS frame's layout as a decoder plays it (implicit SBR doubles the rate).
/// Waits for a few frames, the SBR check's evidence, unless `last` says no more come.
fn adts_params(b: &[u8], last: bool) -> Option<AudioParams> {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000, 7_350,
    ];
    let i = memchr::memchr_iter(0xFF, b).find(|&i| b.get(i + 1).is_some_and(|&x| x & 0xF6 == 0xF0))?;
    let h = b.get(i..i + 7)?;
    let sample_rate = *RATES.get(usize::from((h[2] >> 2) & 0xF))?;
    let channels = match ((h[2] & 1) << 2) | (h[3] >> 6) {
        0 => return None,
        7 => 8,
        c => u32::from(c),
    };
    if !last && complete_adts_frames(&b[i..]) < AAC_WAIT_FRAMES {
        return None;
    }
    let (rate, channels) = crate::audio::aac_decoded_layout(&b[i..], sample_rate, Some(channels));
    // With SBR a frame is 2048 output samples at the doubled rate: the same seconds.
    let frame_samples = if rate > sample_rate { 2048 } else { 1024 };
    Some(AudioParams { codec: "aac", sample_rate: rate, channels: channels?, frame_samples })
}

/// How many whole ADTS frames follow each other from the start of `b` (up to a few).
fn complete_adts_frames(b: &[u8]) -> usize {
    let mut at = 0usize;
    let mut n = 0;
    while n < AAC_WAIT_FRAMES {
        let Some(h) = b.get(at..at + 7).filter(|h| h[0] == 0xFF && h[1] & 0xF6 == 0xF0) else { break };
        let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        if len < 7 || at + len > b.len() {
            break;
        }
        at += len;
        n += 1;
    }
    n
}

fn mpeg_audio_params(b: &[u8]) -> Option<AudioParams> {
    let i = memchr::memchr_iter(0xFF, b).find(|&i| b.get(i + 1).is_some_and(|&x| x & 0xE0 == 0xE0))?;
    let h = b.get(i..i + 4)?;
    let version = (h[1] >> 3) & 3;
    let layer = (h[1] >> 1) & 3;
    let rate_index = usize::from((h[2] >> 2) & 3);
    if version == 1 || layer == 0 || rate_index == 3 {
        return None;
    }
    let base = [44_100, 48_000, 32_000][rate_index];
    let sample_rate = match version {
        3 => base,
        2 => base / 2,
        _ => base / 4,
    };
    let (codec, frame_samples) = match layer {
        3 => ("mp1", 384),
        2 => ("mp2", 1152),
        _ if version == 3 => ("mp3", 1152),
        _ => ("mp3", 576),
    };
    Some(AudioParams { codec, sample_rate, channels: if h[3] >> 6 == 3 { 1 } else { 2 }, frame_samples })
}

/// Fills `last_pts` from the end of the file: a window of [`TAIL_BYTES`], doubled while
/// a followed stream has no timestamp in it.
fn tail_timestamps<R: Read + Seek>(
    r: &mut WalkReader<R>,
    layout: Layout,
    start: u64,
    size: u64,
    streams: &mut [Es],
    limits: &Limits,
) -> Result<()> {
    let mut window = TAIL_BYTES;
    let mut packets = 0u64;
    loop {
        // Aligned on the packet grid that starts at `start`.
        let from = size.saturating_sub(window).max(start);
        let from = from - (from - start) % layout.stride;
        scan(r, layout, from, size, |p| {
            packets += 1;
            if packets > limits.max_items {
                return Err(ProbeError::TooLarge {
                    what: "MPEG-TS packets read".into(),
                    limit: limits.max_items,
                });
            }
            if !p.unit_start {
                return Ok(true);
            }
            if let Some(es) = streams.iter_mut().find(|e| e.pid == p.pid)
                && let Some((Some(pts), _)) = pes_header(p.payload)
            {
                let first = es.first_pts.unwrap_or(pts);
                if es.last_pts.is_none_or(|l| delta(first, pts) > delta(first, l)) {
                    es.last_pts = Some(pts);
                }
            }
            Ok(true)
        })?;
        let missing = streams.iter().any(|e| e.first_pts.is_some() && e.last_pts.is_none());
        if !missing || from <= start || window >= TAIL_BYTES_MAX {
            return Ok(());
        }
        window *= 2;
    }
}

/// `to − from` in 90 kHz ticks across a 33-bit wrap: the nearer of the two ways round.
pub(super) fn delta(from: u64, to: u64) -> i64 {
    let d = ((to % PTS_WRAP + PTS_WRAP - from % PTS_WRAP) % PTS_WRAP) as i64;
    if d > (PTS_WRAP / 2) as i64 { d - PTS_WRAP as i64 } else { d }
}

/// Turns what was read into the container's summary.
pub(super) fn summarise(streams: &[Es]) -> Streams {
    let video = streams.iter().find(|e| e.kind.is_video());
    let audio = streams.iter().find(|e| !e.kind.is_video());
    // MPEG-1/2 video states its rate exactly, and program streams put several frames
    // in one PES (so PTS steps are not frames); H.264 and HEVC often state none, and
    // their PTS steps are the rate ffprobe reports.
    let fps = video.and_then(|v| {
        let stated = v.video.and_then(|s| s.frame_rate);
        match v.kind {
            Kind::Mpeg1Video | Kind::Mpeg2Video => stated.or_else(|| rate_from_pts(&v.rate_pts)),
            _ => rate_from_pts(&v.rate_pts).or(stated),
        }
    });
    let anchor = streams.iter().find_map(|e| e.first_pts);
    // A stream's start and end in ticks from the anchor. Its start is its earliest
    // timestamp among the first ones (B-frames are sent after the frame they precede),
    // its end the last timestamp plus one frame, as ffprobe counts it.
    let span = |e: &Es, frame_ticks: Option<f64>| -> Option<(f64, f64)> {
        let (anchor, first, last) = (anchor?, e.first_pts?, e.last_pts?);
        let start = e.rate_pts.iter().chain([&first]).map(|&p| delta(anchor, p)).min()?;
        let end = delta(anchor, first) + delta(first, last);
        Some((start as f64, end as f64 + frame_ticks.unwrap_or(0.0)))
    };
    let video_span = video.and_then(|v| span(v, fps.map(|f| 90_000.0 / f)));
    let audio_span = audio.and_then(|a| {
        let p = a.audio?;
        span(a, Some(90_000.0 * f64::from(p.frame_samples) / f64::from(p.sample_rate)))
    });
    let spans = [video_span, audio_span];
    let begin = spans.iter().flatten().map(|s| s.0).reduce(f64::min);
    let end = spans.iter().flatten().map(|s| s.1).reduce(f64::max);
    let duration_seconds = begin.zip(end).map(|(b, e)| (e - b) / 90_000.0).filter(|d| *d >= 0.0);
    let video = video.and_then(|v| {
        let sps = v.video?;
        let frame_count =
            video_span.zip(fps).and_then(|((s, e), f)| frames_from((e - s) / 90_000.0, f)).filter(|&n| n > 0);
        Some(VideoStream {
            width: sps.width,
            height: sps.height,
            frame_count,
            frame_rate: fps,
            codec: v.kind.video_codec().to_string(),
        })
    });
    let audio = audio.and_then(|a| {
        let p = a.audio?;
        Some(AudioStream {
            sample_rate: Some(p.sample_rate),
            channels: Some(p.channels),
            codec: p.codec.into(),
        })
    });
    Streams { video, audio, duration_seconds, webm: false }
}

/// The frame rate the first video timestamps show: their median step, averaged over
/// the steps within a tick of it (23.976 fps alternates 3753 and 3754 ticks).
fn rate_from_pts(pts: &[u64]) -> Option<f64> {
    let mut sorted: Vec<u64> = pts.to_vec();
    let first = *sorted.first()?;
    for p in &mut sorted {
        *p = (*p + PTS_WRAP - first) % PTS_WRAP;
    }
    sorted.sort_unstable();
    let mut steps: Vec<u64> = sorted.windows(2).map(|w| w[1] - w[0]).filter(|&d| d > 0).collect();
    if steps.len() < 3 {
        return None;
    }
    steps.sort_unstable();
    let median = steps[steps.len() / 2];
    let near: Vec<u64> = steps.iter().copied().filter(|&d| d.abs_diff(median) <= 1).collect();
    let mean = near.iter().sum::<u64>() as f64 / near.len() as f64;
    (mean > 0.0).then(|| 90_000.0 / mean)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets/video");
        std::fs::read(dir.join(name)).unwrap()
    }

    fn parse(bytes: &[u8]) -> Result<Streams> {
        let mut r = WalkReader::new(Cursor::new(bytes), bytes.len() as u64);
        probe_reader(&mut r, &Limits::default())
    }

    #[test]
    fn sniffs_188_and_192_byte_packets() {
        let ts = fixture("h264-aac.ts");
        assert_eq!(sniff(&ts[..8192]), Some(Layout { stride: 188, first: 0 }));
        let m2ts = fixture("hevc.m2ts");
        assert_eq!(sniff(&m2ts[..8192]), Some(Layout { stride: 192, first: 4 }));
        assert_eq!(sniff(b"G\0\0\0 not a transport stream at all, only one sync byte"), None);
    }

    #[test]
    fn rate_from_reordered_timestamps() {
        // I P B B P B B ... at 3003 ticks (29.97 fps), in decode order.
        let pts = [0u64, 9009, 3003, 6006, 18018, 12012, 15015, 27027, 21021, 24024];
        let r = rate_from_pts(&pts).unwrap();
        assert!((r - 30000.0 / 1001.0).abs() < 1e-9, "{r}");
        // 23.976: steps alternate 3753 and 3754.
        let pts: Vec<u64> = (0..24).map(|i| (i as f64 * 3753.75).round() as u64).collect();
        let r = rate_from_pts(&pts).unwrap();
        assert!((r - 24000.0 / 1001.0).abs() < 1e-3, "{r}");
    }

    #[test]
    fn a_stream_past_the_wrap_keeps_its_duration() {
        let es = |first: u64, last: u64| Es {
            pid: 1,
            kind: Kind::H264,
            first_pts: Some(first),
            last_pts: Some(last),
            rate_pts: (0..10).map(|i| (first + i * 3000) % PTS_WRAP).collect(),
            buf: Vec::new(),
            done: true,
            video: Some(Sps { width: 16, height: 16, frame_rate: None }),
            audio: None,
        };
        let s = summarise(&[es(PTS_WRAP - 90_000, 87_000)]);
        assert!((s.duration_seconds.unwrap() - 2.0).abs() < 1e-9, "{:?}", s.duration_seconds);
        assert_eq!(s.video.unwrap().frame_count, Some(60));
    }

    #[test]
    fn scrambled_payloads_are_encrypted() {
        let mut ts = fixture("h264-aac.ts");
        // Mark every packet's scrambling bits, tables included: the PMT still reads
        // (tables are never scrambled in practice, and we do not look at the bits there).
        for p in ts.chunks_mut(188) {
            p[3] |= 0x80;
        }
        let err = parse(&ts).unwrap_err();
        assert_eq!(err.code().as_str(), "encrypted", "{err}");
    }

    /// Values from `ffprobe -count_frames` (format duration, nb_read_frames,
    /// avg_frame_rate), see fixtures/assets/video/ORIGIN.md.
    #[test]
    fn fixtures_match_ffprobe() {
        let cases = [
            ("h264-aac.ts", (160, 90, 60, 30.0, "h264"), 2.023222, Some((44_100, 1, "aac"))),
            ("hevc.m2ts", (160, 90, 48, 24000.0 / 1001.0, "hevc"), 2.001989, None),
            ("mpeg2-ac3.ts", (176, 144, 50, 25.0, "mpeg2video"), 2.005333, Some((48_000, 2, "ac3"))),
        ];
        for (name, (w, h, n, fps, codec), duration, audio) in cases {
            let s = parse(&fixture(name)).unwrap();
            let v = s.video.unwrap();
            assert_eq!(
                (v.width, v.height, v.frame_count, v.codec.as_str()),
                (w, h, Some(n), codec),
                "{name}"
            );
            assert!((v.frame_rate.unwrap() - fps).abs() / fps < 0.001, "{name}: {:?}", v.frame_rate);
            assert!(
                (s.duration_seconds.unwrap() - duration).abs() < 0.001,
                "{name}: {:?}",
                s.duration_seconds
            );
            let a = s.audio.map(|a| (a.sample_rate.unwrap(), a.channels.unwrap(), a.codec));
            assert_eq!(a, audio.map(|(r, c, k)| (r, c, k.to_string())), "{name}");
        }
    }

    /// Every cut and many byte flips give values or a typed error, never a panic; a cut
    /// before the PMT is `truncated`.
    #[test]
    fn cut_and_mutated_streams_never_panic() {
        for name in ["h264-aac.ts", "hevc.m2ts", "mpeg2-ac3.ts"] {
            let bytes = fixture(name);
            for cut in (0..bytes.len()).step_by(97).chain(0..600) {
                if let Err(e) = parse(&bytes[..cut]) {
                    let code = e.code().as_str();
                    assert!(
                        matches!(code, "truncated" | "corrupt_file" | "unsupported_format"),
                        "{name} cut at {cut}: {e}"
                    );
                }
            }
            assert_eq!(parse(&bytes[..300]).unwrap_err().code().as_str(), "truncated", "{name}");
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ bytes.len() as u64;
            for _ in 0..300 {
                let mut m = bytes.clone();
                for _ in 0..8 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let at = (x % m.len() as u64) as usize;
                    m[at] ^= (x >> 32) as u8 | 1;
                }
                let _ = parse(&m);
            }
        }
    }

    /// A transport stream of nothing but null packets is read up to the head limit and
    /// refused, never walked to its end: the head read is bounded.
    #[test]
    fn a_stream_without_tables_is_corrupt_after_the_head_limit() {
        let mut null = [0u8; 188];
        null[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
        let bytes = null.repeat((HEAD_BYTES as usize / 188) + 100);
        let err = parse(&bytes).unwrap_err();
        assert_eq!(err.code().as_str(), "corrupt_file", "{err}");
    }
}
