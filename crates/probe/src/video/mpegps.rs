//! MPEG program streams (`.mpg`, `.mpeg`, `.vob`): packs of PES packets with no table
//! of streams, so the first packets name them (0xE0… video, 0xC0… MPEG audio, private
//! stream 1 sub-streams 0x80… AC-3), their first PES give the parameters and first
//! timestamps, and a suffix window the last timestamps. The rest — parameters, frame
//! rate, ffprobe's duration (latest end minus earliest start) — is the transport
//! stream reader's ([`super::mpegts`]): the two differ only in how PES are framed.

use std::io::{Read, Seek, SeekFrom};

use asset_core::Limits;

use super::Streams;
use super::mpegts::{
    ES_BUFFER, Es, HEAD_BYTES, Kind, RATE_SAMPLES, TAIL_BYTES, TAIL_BYTES_MAX, delta, parse_parameters,
    pes_header, summarise,
};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FMT: &str = "MPEG-PS";
/// Bytes read at once from the head.
const WINDOW: usize = 256 * 1024;

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Streams> {
    probe_reader(&mut WalkReader::open(src)?, limits)
}

/// A PES packet found in a buffer: its stream key, PTS and payload.
struct Pes<'a> {
    /// The stream id, or `0xBD00 | sub-stream id` for private stream 1.
    key: u16,
    pts: Option<u64>,
    data: &'a [u8],
}

/// The stream key and kind a PES packet belongs to, for the streams we follow.
fn kind_of(key: u16, mpeg1: bool) -> Option<Kind> {
    match key {
        0xE0..=0xEF if mpeg1 => Some(Kind::Mpeg1Video),
        0xE0..=0xEF => Some(Kind::Mpeg2Video),
        0xC0..=0xDF => Some(Kind::MpegAudio),
        0xBD80..=0xBD87 => Some(Kind::Ac3),
        _ => None,
    }
}

/// Parses the PES packet at the start of `b` (start code included) whose declared
/// length fits in `b`; MPEG-2 and MPEG-1 packet headers both.
fn pes(b: &[u8]) -> Option<Pes<'_>> {
    if b.len() < 6 || b[..3] != [0, 0, 1] {
        return None;
    }
    let sid = b[3];
    let len = 6 + usize::from(u16::from_be_bytes([b[4], b[5]]));
    let packet = b.get(..len)?;
    let (pts, at) = if packet.len() > 8 && packet[6] & 0xC0 == 0x80 {
        pes_header(packet)?
    } else {
        mpeg1_header(packet)?
    };
    let mut data = packet.get(at..)?;
    let mut key = u16::from(sid);
    if sid == 0xBD {
        let sub = *data.first()?;
        key = 0xBD00 | u16::from(sub);
        // AC-3 sub-streams: id, frame count, first access unit pointer.
        data = if (0x80..=0x87).contains(&sub) { data.get(4..)? } else { data.get(1..)? };
    }
    Some(Pes { key, pts, data })
}

/// An MPEG-1 packet header: stuffing, an optional STD buffer size, then the timestamps.
fn mpeg1_header(p: &[u8]) -> Option<(Option<u64>, usize)> {
    let mut at = 6;
    while p.get(at) == Some(&0xFF) && at < 6 + 16 {
        at += 1;
    }
    if p.get(at)? & 0xC0 == 0x40 {
        at += 2;
    }
    let b = *p.get(at)?;
    match b >> 4 {
        2 | 3 => {
            let t = p.get(at..at + 5)?;
            let pts = (u64::from(t[0] >> 1 & 7) << 30)
                | (u64::from(t[1]) << 22)
                | (u64::from(t[2] >> 1) << 15)
                | (u64::from(t[3]) << 7)
                | u64::from(t[4] >> 1);
            Some((Some(pts), at + if b >> 4 == 3 { 10 } else { 5 }))
        }
        _ if b == 0x0F => Some((None, at + 1)),
        _ => None,
    }
}

/// The length of the pack-layer structure at the start of `b` (pack header, system
/// header, any other packet); `None` when `b` does not hold all of it.
fn unit_len(b: &[u8]) -> Option<usize> {
    if b.len() < 4 || b[..3] != [0, 0, 1] {
        return None;
    }
    match b[3] {
        0xBA if b.get(4)? >> 6 == 1 => Some(14 + usize::from(b.get(13)? & 7)),
        0xBA => Some(12),
        0xB9 => Some(4),
        _ => Some(6 + usize::from(u16::from_be_bytes([*b.get(4)?, *b.get(5)?]))),
    }
}

pub(super) fn probe_reader<R: Read + Seek>(r: &mut WalkReader<R>, limits: &Limits) -> Result<Streams> {
    let size = r.len();
    let mut head = [0u8; 14];
    r.seek(SeekFrom::Start(0))?;
    let n = crate::read_up_to(r, &mut head)?;
    if n < 12 || head[..4] != [0, 0, 1, 0xBA] {
        return Err(if n < 12 {
            ProbeError::truncated(FMT, "the file ends inside the first pack header")
        } else {
            ProbeError::corrupt(FMT, "no pack header at the start")
        });
    }
    let mpeg1 = head[4] >> 4 == 2;
    let mut streams: Vec<Es> = Vec::new();
    // What the system header announces: (video, audio) expected.
    let mut expect = (true, true);
    let mut window = vec![0u8; WINDOW.min(usize::try_from(size).unwrap_or(WINDOW))];
    let mut pos = 0u64;
    let mut units = 0u64;
    let finished = |streams: &[Es], expect: (bool, bool)| {
        let video = streams.iter().find(|e| e.kind.is_video());
        let audio = streams.iter().find(|e| !e.kind.is_video());
        let video_ok = !expect.0 || video.is_some_and(|v| v.done && v.rate_pts.len() >= RATE_SAMPLES);
        let audio_ok = !expect.1 || audio.is_some_and(|a| a.done);
        video_ok && audio_ok
    };
    'head: while pos < size.min(HEAD_BYTES) {
        r.seek(SeekFrom::Start(pos))?;
        let got = crate::read_up_to(r, &mut window)?;
        let buf = &window[..got];
        let mut i = 0;
        while i + 4 <= buf.len() {
            // A header cut by the window's end is read again from the next window.
            if buf.len() - i < 16 && got == window.len() {
                break;
            }
            units += 1;
            if units > limits.max_items {
                return Err(ProbeError::TooLarge {
                    what: "MPEG-PS packets read".into(),
                    limit: limits.max_items,
                });
            }
            let Some(len) = unit_len(&buf[i..]) else {
                // Not a start code here: resynchronise on the next one.
                match memchr::memmem::find(&buf[i + 1..], b"\0\0\x01") {
                    Some(j) => {
                        i += 1 + j;
                        continue;
                    }
                    None => {
                        i = buf.len().saturating_sub(3);
                        break;
                    }
                }
            };
            if i + len > buf.len() {
                break; // continued in the next window
            }
            let unit = &buf[i..i + len];
            if unit[3] == 0xBB && unit.len() >= 12 {
                let ids = unit[12..].chunks_exact(3).map(|c| c[0]);
                let (mut v, mut a) = (false, false);
                for id in ids {
                    v |= (0xE0..=0xEF).contains(&id);
                    a |= (0xC0..=0xDF).contains(&id) || id == 0xBD;
                }
                expect = (v, a);
            }
            if let Some(p) = pes(unit)
                && let Some(kind) = kind_of(p.key, mpeg1)
            {
                let known = streams.iter().position(|e| e.pid == p.key);
                let first_of_kind = !streams.iter().any(|e| e.kind.is_video() == kind.is_video());
                let idx = match known {
                    Some(k) => Some(k),
                    None if first_of_kind => {
                        streams.push(Es::new(p.key, kind));
                        Some(streams.len() - 1)
                    }
                    None => None,
                };
                if let Some(k) = idx {
                    let es = &mut streams[k];
                    if let Some(pts) = p.pts {
                        es.first_pts.get_or_insert(pts);
                        if es.kind.is_video() && es.rate_pts.len() < RATE_SAMPLES {
                            es.rate_pts.push(pts);
                        }
                    }
                    if !es.done && es.first_pts.is_some() {
                        if es.buf.len() + p.data.len() <= ES_BUFFER {
                            es.buf.extend_from_slice(p.data);
                            parse_parameters(es, false);
                        } else {
                            parse_parameters(es, true);
                            es.done = true;
                            es.buf = Vec::new();
                        }
                    }
                }
            }
            i += len;
            if finished(&streams, expect) {
                break 'head;
            }
        }
        if i == 0 || got < window.len() {
            break;
        }
        pos += i as u64;
    }
    for es in streams.iter_mut().filter(|e| !e.done && !e.buf.is_empty()) {
        parse_parameters(es, true);
    }
    if streams.is_empty() {
        return Err(if size <= HEAD_BYTES {
            ProbeError::truncated(FMT, "the file ends before a video or audio packet")
        } else {
            ProbeError::corrupt(FMT, format!("no video or audio packet in the first {HEAD_BYTES} bytes"))
        });
    }
    tail_timestamps(r, size, &mut streams)?;
    Ok(summarise(&streams))
}

/// The last PTS of each followed stream, from a suffix window doubled while a stream
/// has none there. Packets are found by their start codes and kept only when their
/// declared length fits and their header parses.
fn tail_timestamps<R: Read + Seek>(r: &mut WalkReader<R>, size: u64, streams: &mut [Es]) -> Result<()> {
    let mut window = TAIL_BYTES;
    loop {
        let from = size.saturating_sub(window);
        r.seek(SeekFrom::Start(from))?;
        let mut buf = vec![0u8; usize::try_from(size - from).unwrap_or(0)];
        let n = crate::read_up_to(r, &mut buf)?;
        buf.truncate(n);
        for at in memchr::memmem::find_iter(&buf, b"\0\0\x01") {
            let Some(&sid) = buf.get(at + 3) else { continue };
            if !matches!(sid, 0xBD | 0xC0..=0xEF) {
                continue;
            }
            let Some(p) = pes(&buf[at..]) else { continue };
            let (Some(pts), Some(es)) = (p.pts, streams.iter_mut().find(|e| e.pid == p.key)) else {
                continue;
            };
            let first = es.first_pts.unwrap_or(pts);
            if es.last_pts.is_none_or(|l| delta(first, pts) > delta(first, l)) {
                es.last_pts = Some(pts);
            }
        }
        let missing = streams.iter().any(|e| e.first_pts.is_some() && e.last_pts.is_none());
        if !missing || from == 0 || window >= TAIL_BYTES_MAX {
            return Ok(());
        }
        window *= 2;
    }
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
    fn cut_and_mutated_streams_never_panic() {
        for name in ["mpeg2-mp2.vob", "mpeg1-mp2.mpg", "mpeg2-ac3.vob"] {
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
}
