//! Ogg (Vorbis, Opus, FLAC, Speex, and Theora video in `.ogv`): the first page's packet
//! identifies the codec and its layout; the duration is the granule position of the
//! stream's last page, found by reading only the tail of the file. A Theora stream among
//! the beginning-of-stream pages makes the file a video ([`probe_theora`]).

use asset_core::{AssetMetadata, DataType};

use super::{Stream, flac, read_at, u16_le, u32_le};
use crate::{ProbeError, Result, Source};

const FORMAT: &str = "ogg";
const PAGE_HEADER: usize = 27;
/// The largest page: 27 + 255 lacing values + 255 × 255 bytes of body.
const MAX_PAGE: usize = PAGE_HEADER + 255 + 255 * 255;
/// Opus always decodes at 48 kHz; its granule positions count 48 kHz samples.
const OPUS_RATE: u32 = 48_000;

#[derive(Debug, Clone, Copy)]
struct Page<'a> {
    granule: u64,
    serial: u32,
    /// Header, lacing values and body.
    len: usize,
    body: &'a [u8],
    lacing: &'a [u8],
}

/// Parses the page at the start of `b`; `None` if it is not a whole page.
fn page(b: &[u8]) -> Option<Page<'_>> {
    if b.len() < PAGE_HEADER || &b[..4] != b"OggS" || b[4] != 0 {
        return None;
    }
    let nseg = usize::from(b[26]);
    let lacing = b.get(PAGE_HEADER..PAGE_HEADER + nseg)?;
    let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    let len = PAGE_HEADER + nseg + body_len;
    let body = b.get(PAGE_HEADER + nseg..len)?;
    let mut g = [0u8; 8];
    g.copy_from_slice(&b[6..14]);
    Some(Page { granule: u64::from_le_bytes(g), serial: u32_le(b, 14), len, body, lacing })
}

/// What a Theora identification header says (Theora spec, section 6.2).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Theora {
    /// The visible picture (PICW × PICH), which ffprobe reports, not the coded frame.
    width: u32,
    height: u32,
    fps: Option<f64>,
    /// KFGSHIFT: granule positions hold the last key frame's number above this many bits.
    shift: u32,
    /// Version 3.2.1 on numbers frames from 1, so a granule counts the frames shown.
    counts_from_one: bool,
}

fn theora_header(p: &[u8]) -> Option<Theora> {
    if p.len() < 42 || !p.starts_with(b"\x80theora") {
        return None;
    }
    let be24 = |at: usize| (u32::from(p[at]) << 16) | (u32::from(p[at + 1]) << 8) | u32::from(p[at + 2]);
    let be32 = |at: usize| u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    let (frn, frd) = (be32(22), be32(26));
    let version = (u32::from(p[7]) << 16) | (u32::from(p[8]) << 8) | u32::from(p[9]);
    Some(Theora {
        width: be24(14),
        height: be24(17),
        fps: (frn > 0 && frd > 0).then(|| f64::from(frn) / f64::from(frd)),
        shift: u32::from(((p[40] & 0x03) << 3) | (p[41] >> 5)),
        counts_from_one: version >= 0x03_02_01,
    })
}

/// The pages that open the file with the beginning-of-stream flag: one per logical
/// stream, all before any other page (RFC 3533), so all within the head for real files.
fn bos_pages(head: &[u8]) -> Vec<Page<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(p) = head.get(at..).and_then(page) {
        if head[at + 5] & 2 == 0 || out.len() >= 32 {
            break;
        }
        out.push(p);
        at += p.len;
    }
    out
}

fn first_packet<'a>(p: &Page<'a>) -> &'a [u8] {
    let len: usize = match p.lacing.iter().position(|&l| l < 255) {
        Some(i) => p.lacing[..=i].iter().map(|&l| usize::from(l)).sum(),
        None => p.body.len(),
    };
    &p.body[..len.min(p.body.len())]
}

/// An Ogg file with a Theora stream, as video metadata: the picture size and frame rate
/// from the identification header, the frame count from the last granule position,
/// the duration the longest of the Theora and audio streams'. `None` without Theora.
pub(super) fn probe_theora(src: &Source) -> Result<Option<AssetMetadata>> {
    let pages = bos_pages(src.head());
    let Some((serial, theora)) = pages.iter().find_map(|p| Some((p.serial, theora_header(first_packet(p))?)))
    else {
        return Ok(None);
    };
    if theora.width == 0 || theora.height == 0 {
        return Err(ProbeError::corrupt(FORMAT, "Theora header with a zero picture size"));
    }
    let frames = last_granule(src, serial)?.map(|g| {
        let key = g >> theora.shift.min(63);
        let delta = g & ((1u64 << theora.shift.min(63)) - 1);
        let n = key.saturating_add(delta);
        if theora.counts_from_one { n } else { n.saturating_add(1) }
    });
    let video_seconds = frames.zip(theora.fps).map(|(n, f)| n as f64 / f);
    // The audio stream beside it, if any, may run longer.
    let audio_seconds = match pages.iter().find_map(|p| identify(first_packet(p)).ok().map(|a| (p.serial, a)))
    {
        Some((serial, (stream, pre_skip))) => last_granule(src, serial)?.map(|g| {
            let rate = if stream.codec == "opus" { OPUS_RATE } else { stream.sample_rate };
            g.saturating_sub(pre_skip) as f64 / f64::from(rate)
        }),
        None => None,
    };
    let mut meta = AssetMetadata::new(DataType::Video, "video/ogg", src.size());
    meta.width = Some(theora.width);
    meta.height = Some(theora.height);
    meta.frame_rate = theora.fps;
    meta.frame_count = frames;
    meta.duration_seconds = [video_seconds, audio_seconds].into_iter().flatten().reduce(f64::max);
    meta.codec = Some("theora".into());
    Ok(Some(meta))
}

pub(super) fn probe(src: &Source) -> Result<Stream> {
    let head = src.head();
    let first = page(head).ok_or_else(|| {
        if (head.len() as u64) < src.size() || head.len() >= MAX_PAGE {
            ProbeError::corrupt(FORMAT, "the first page is malformed or larger than the sniffed bytes")
        } else {
            ProbeError::truncated(FORMAT, "the file ends inside the first page")
        }
    })?;
    // The identification packet is the first packet: it ends at the first lacing value
    // below 255 (it always fits in the first page).
    let packet_len: usize = match first.lacing.iter().position(|&l| l < 255) {
        Some(i) => first.lacing[..=i].iter().map(|&l| usize::from(l)).sum(),
        None => first.body.len(),
    };
    let packet = &first.body[..packet_len.min(first.body.len())];
    let (mut stream, pre_skip) = identify(packet)?;
    if let Some(granule) = last_granule(src, first.serial)? {
        let samples = granule.saturating_sub(pre_skip);
        let rate = if stream.codec == "opus" { OPUS_RATE } else { stream.sample_rate };
        stream.duration = Some(samples as f64 / f64::from(rate));
    }
    Ok(stream)
}

/// The codec of the identification packet, and the samples to skip at the start
/// (Opus pre-skip; 0 for the others).
fn identify(p: &[u8]) -> Result<(Stream, u64)> {
    let short = || ProbeError::corrupt(FORMAT, "identification packet too short");
    if p.starts_with(b"\x01vorbis") {
        if p.len() < 16 {
            return Err(short());
        }
        let sample_rate = u32_le(p, 12);
        if sample_rate == 0 || p[11] == 0 {
            return Err(ProbeError::corrupt(FORMAT, "Vorbis header with zero rate or channels"));
        }
        let stream = audio("vorbis", sample_rate, u32::from(p[11]));
        return Ok((stream, 0));
    }
    if p.starts_with(b"OpusHead") {
        if p.len() < 19 {
            return Err(short());
        }
        // ffprobe reports the decoding rate, 48000, whatever input rate OpusHead
        // records (bytes 12..16, informational only); so do we.
        let stream = audio("opus", OPUS_RATE, u32::from(p[9]));
        return Ok((stream, u64::from(u16_le(p, 10))));
    }
    if p.starts_with(b"\x7FFLAC") {
        // Mapping header (9 bytes), "fLaC", the STREAMINFO block header, STREAMINFO.
        let si: &[u8; 34] = p.get(17..51).and_then(|s| s.try_into().ok()).ok_or_else(short)?;
        let stream = flac::parse_streaminfo(si, "audio/ogg")?;
        return Ok((Stream { duration: None, ..stream }, 0));
    }
    if p.starts_with(b"Speex   ") {
        if p.len() < 52 {
            return Err(short());
        }
        let sample_rate = u32_le(p, 36);
        if sample_rate == 0 {
            return Err(ProbeError::corrupt(FORMAT, "Speex header with a zero rate"));
        }
        return Ok((audio("speex", sample_rate, u32_le(p, 48)), 0));
    }
    Err(ProbeError::unsupported("Ogg stream of an unknown or non-audio codec"))
}

fn audio(codec: &'static str, sample_rate: u32, channels: u32) -> Stream {
    Stream { mime: "audio/ogg", codec, sample_rate, channels: Some(channels), duration: None }
}

/// The granule position of the last whole page of stream `serial` whose CRC checks,
/// from the last two maximal pages' worth of bytes at the end of the file.
fn last_granule(src: &Source, serial: u32) -> Result<Option<u64>> {
    let window = src.size().min(2 * MAX_PAGE as u64);
    let start = src.size() - window;
    // Bounded by MAX_PAGE, not by anything the file declares.
    let mut tail = vec![0u8; window as usize];
    let n = read_at(&mut src.file()?, start, &mut tail)?;
    tail.truncate(n);
    let mut i = tail.len().saturating_sub(PAGE_HEADER);
    loop {
        if let Some(p) = page(&tail[i..])
            && p.serial == serial
            && p.granule != u64::MAX
            && crc_ok(&tail[i..i + p.len])
        {
            return Ok(Some(p.granule));
        }
        if i == 0 {
            return Ok(None);
        }
        i -= 1;
    }
}

fn crc_ok(page: &[u8]) -> bool {
    let stored = u32_le(page, 22);
    let mut crc = 0u32;
    for (i, &byte) in page.iter().enumerate() {
        let b = if (22..26).contains(&i) { 0 } else { byte };
        crc = (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize];
    }
    crc == stored
}

/// CRC-32 of Ogg: polynomial 0x04C11DB7, not reflected, initial value 0.
static CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 { (r << 1) ^ 0x04C1_1DB7 } else { r << 1 };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
}
