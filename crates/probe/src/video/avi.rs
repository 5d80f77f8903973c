//! AVI (RIFF `AVI `): every answer is in the `hdrl` list at the start, so we find it by
//! stepping over chunk headers (buffered: a million empty chunks cost a read per
//! 64 KiB), read it whole under the memory limit and parse `avih`, each stream's
//! `strh`/`strf` and the OpenDML `dmlh` by hand. Lists are read at fixed depths (the
//! top level, `hdrl`, `strl` and `odml`), never by recursion.

use std::io::{Read, Seek, SeekFrom};

use asset_core::Limits;

use super::{AudioStream, Streams, VideoStream, io_or_truncated, le_u16, le_u32, read_block};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FMT: &str = "AVI";

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Streams> {
    probe_reader(&mut WalkReader::open(src)?, limits)
}

pub(super) fn probe_reader<R: Read + Seek>(r: &mut WalkReader<R>, limits: &Limits) -> Result<Streams> {
    let hdrl = find_hdrl(r, limits)?;
    parse_hdrl(&hdrl)
}

/// Reads the payload of the first `LIST hdrl` of the first RIFF chunk.
fn find_hdrl<R: Read + Seek>(r: &mut WalkReader<R>, limits: &Limits) -> Result<Vec<u8>> {
    let file_size = r.len();
    let mut head = [0u8; 12];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut head).map_err(|e| io_or_truncated(e, FMT, "the RIFF header"))?;
    if &head[0..4] != b"RIFF" || &head[8..12] != b"AVI " {
        return Err(ProbeError::corrupt(FMT, "not a RIFF AVI file"));
    }
    let mut pos = 12u64;
    let mut chunks = 0u64;
    while pos < file_size {
        if chunks == limits.max_items {
            return Err(ProbeError::TooLarge {
                what: "the number of AVI chunks before the hdrl list".into(),
                limit: limits.max_items,
            });
        }
        chunks += 1;
        r.seek(SeekFrom::Start(pos))?;
        let mut h = [0u8; 12];
        r.read_exact(&mut h[..8]).map_err(|e| io_or_truncated(e, FMT, "a chunk header"))?;
        let size = u64::from(le_u32(&h, 4).unwrap_or(0));
        if &h[0..4] == b"LIST" {
            r.read_exact(&mut h[8..12]).map_err(|e| io_or_truncated(e, FMT, "a LIST header"))?;
            if &h[8..12] == b"hdrl" {
                let len =
                    size.checked_sub(4).ok_or_else(|| ProbeError::corrupt(FMT, "an empty hdrl list"))?;
                return read_block(r, pos + 12, len, limits, FMT, "the hdrl list");
            }
            if &h[8..12] == b"movi" {
                break;
            }
        }
        pos = pos.saturating_add(8).saturating_add(size).saturating_add(size & 1);
    }
    if pos >= file_size {
        Err(ProbeError::truncated(FMT, "the file ends before the hdrl list"))
    } else {
        Err(ProbeError::corrupt(FMT, "no hdrl list before the movie data"))
    }
}

/// RIFF chunks of an in-memory list payload: `(fourcc, data)`; a LIST's data starts
/// with its list type. A chunk that overruns the list is cut to what the list holds.
fn chunks(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let id: [u8; 4] = data.get(0..4)?.try_into().ok()?;
        let size = usize::try_from(le_u32(data, 4)?).ok()?;
        let end = 8usize.saturating_add(size).min(data.len());
        let body = &data[8..end];
        data = &data[end.saturating_add(size & 1).min(data.len())..];
        Some((id, body))
    })
}

#[derive(Debug, Default)]
struct StreamHeader {
    kind: [u8; 4],
    handler: [u8; 4],
    scale: u32,
    rate: u32,
    length: u32,
}

impl StreamHeader {
    fn seconds(&self) -> Option<f64> {
        (self.rate > 0).then(|| f64::from(self.length) * f64::from(self.scale) / f64::from(self.rate))
    }
}

fn parse_hdrl(hdrl: &[u8]) -> Result<Streams> {
    let mut avih_size = (0u32, 0u32);
    let mut odml_frames: Option<u32> = None;
    let mut out = Streams::default();
    let mut longest: Option<f64> = None;
    let mut found_avih = false;
    for (id, body) in chunks(hdrl) {
        match &id {
            b"avih" => {
                found_avih = true;
                avih_size = (le_u32(body, 32).unwrap_or(0), le_u32(body, 36).unwrap_or(0));
            }
            b"LIST" if body.starts_with(b"odml") => {
                odml_frames = chunks(&body[4..]).find(|(k, _)| k == b"dmlh").and_then(|(_, d)| le_u32(d, 0));
            }
            b"LIST" if body.starts_with(b"strl") => {
                let mut strh = None;
                let mut strf: &[u8] = &[];
                for (k, d) in chunks(&body[4..]) {
                    match &k {
                        b"strh" if d.len() >= 36 => {
                            strh = Some(StreamHeader {
                                kind: d[0..4].try_into().unwrap_or_default(),
                                handler: d[4..8].try_into().unwrap_or_default(),
                                scale: le_u32(d, 20).unwrap_or(0),
                                rate: le_u32(d, 24).unwrap_or(0),
                                length: le_u32(d, 32).unwrap_or(0),
                            });
                        }
                        b"strf" => strf = d,
                        _ => {}
                    }
                }
                let Some(h) = strh else { continue };
                if let Some(s) = h.seconds() {
                    longest = Some(longest.map_or(s, |l: f64| l.max(s)));
                }
                match &h.kind {
                    b"vids" if out.video.is_none() => out.video = Some(video_stream(&h, strf)),
                    b"auds" if out.audio.is_none() => out.audio = Some(audio_stream(strf)),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !found_avih {
        return Err(ProbeError::corrupt(FMT, "no avih header"));
    }
    if let Some(v) = &mut out.video {
        if v.width == 0 || v.height == 0 {
            (v.width, v.height) = avih_size;
        }
        // Past 1 GiB, OpenDML's dmlh holds the total; strh may count the first RIFF only.
        if let (Some(n), Some(total)) = (v.frame_count, odml_frames) {
            v.frame_count = Some(n.max(u64::from(total)));
        }
    }
    out.duration_seconds = longest;
    Ok(out)
}

fn video_stream(h: &StreamHeader, strf: &[u8]) -> VideoStream {
    let width = le_u32(strf, 4).map_or(0, |w| (w as i32).unsigned_abs());
    let height = le_u32(strf, 8).map_or(0, |h| (h as i32).unsigned_abs());
    let compression: [u8; 4] = strf.get(16..20).and_then(|c| c.try_into().ok()).unwrap_or(h.handler);
    let frame_rate = (h.scale > 0 && h.rate > 0).then(|| f64::from(h.rate) / f64::from(h.scale));
    VideoStream {
        width,
        height,
        frame_count: Some(u64::from(h.length)),
        frame_rate,
        codec: video_codec(&compression, &h.handler),
    }
}

fn audio_stream(strf: &[u8]) -> AudioStream {
    let mut tag = le_u16(strf, 0).unwrap_or(0);
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID.
        tag = le_u16(strf, 24).unwrap_or(0);
    }
    let bits = le_u16(strf, 14).unwrap_or(0);
    AudioStream {
        sample_rate: le_u32(strf, 4).filter(|&r| r > 0),
        channels: le_u16(strf, 2).filter(|&c| c > 0).map(u32::from),
        codec: audio_codec(tag, bits),
    }
}

/// ffprobe's codec name for an AVI video FourCC (the `strf` compression, else the
/// `strh` handler).
fn video_codec(compression: &[u8; 4], handler: &[u8; 4]) -> String {
    let tag = if compression == &[0; 4] { *handler } else { *compression };
    let upper: String = tag.iter().map(|&b| (b as char).to_ascii_uppercase()).collect();
    let name = match upper.as_str() {
        "FMP4" | "DIVX" | "DX50" | "XVID" | "MP4V" | "M4S2" | "3IV2" | "DIV5" | "DIV6" | "BLZ0" | "UMP4" => {
            "mpeg4"
        }
        "DIV3" | "MP43" | "DIV4" => "msmpeg4v3",
        "MJPG" | "AVRN" | "LJPG" | "JPGL" | "DMB1" => "mjpeg",
        "H264" | "X264" | "AVC1" | "DAVC" => "h264",
        "HEVC" | "H265" | "HVC1" | "X265" => "hevc",
        "VP80" => "vp8",
        "VP90" => "vp9",
        "AV01" => "av1",
        "MPG1" => "mpeg1video",
        "MPG2" | "MPEG" => "mpeg2video",
        "FFV1" => "ffv1",
        "HFYU" => "huffyuv",
        "DVSD" => "dvvideo",
        "\0\0\0\0" => "rawvideo",
        _ => return upper.trim_end_matches(['\0', ' ']).to_ascii_lowercase(),
    };
    name.to_string()
}

/// ffprobe's codec name for a WAVEFORMATEX format tag.
fn audio_codec(tag: u16, bits: u16) -> String {
    let name = match (tag, bits) {
        (0x0001, 8) => "pcm_u8",
        (0x0001, 24) => "pcm_s24le",
        (0x0001, 32) => "pcm_s32le",
        (0x0001, _) => "pcm_s16le",
        (0x0003, 64) => "pcm_f64le",
        (0x0003, _) => "pcm_f32le",
        (0x0006, _) => "pcm_alaw",
        (0x0007, _) => "pcm_mulaw",
        (0x0050, _) => "mp2",
        (0x0055, _) => "mp3",
        (0x00FF | 0x1600 | 0x706D, _) => "aac",
        (0x2000, _) => "ac3",
        (0x2001, _) => "dts",
        (0xF1AC, _) => "flac",
        (0x0161, _) => "wmav2",
        _ => return format!("0x{tag:04x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = id.to_vec();
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend_from_slice(body);
        if body.len() % 2 == 1 {
            v.push(0);
        }
        v
    }

    fn list(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = kind.to_vec();
        b.extend_from_slice(body);
        chunk(b"LIST", &b)
    }

    fn avi(frames: u32) -> Vec<u8> {
        let mut avih = vec![0u8; 56];
        avih[32..36].copy_from_slice(&320u32.to_le_bytes());
        avih[36..40].copy_from_slice(&240u32.to_le_bytes());
        let mut strh = vec![0u8; 56];
        strh[0..4].copy_from_slice(b"vids");
        strh[4..8].copy_from_slice(b"XVID");
        strh[20..24].copy_from_slice(&1001u32.to_le_bytes());
        strh[24..28].copy_from_slice(&30000u32.to_le_bytes());
        strh[32..36].copy_from_slice(&frames.to_le_bytes());
        let mut strf = vec![0u8; 40];
        strf[4..8].copy_from_slice(&160u32.to_le_bytes());
        strf[8..12].copy_from_slice(&(-90i32).to_le_bytes());
        strf[16..20].copy_from_slice(b"FMP4");
        let mut strl = chunk(b"strh", &strh);
        strl.extend(chunk(b"strf", &strf));
        let mut hdrl = chunk(b"avih", &avih);
        hdrl.extend(list(b"strl", &strl));
        let mut body = b"AVI ".to_vec();
        body.extend(list(b"hdrl", &hdrl));
        body.extend(list(b"movi", &[0u8; 16]));
        chunk(b"RIFF", &body)
    }

    fn run(bytes: Vec<u8>) -> Result<Streams> {
        let size = bytes.len() as u64;
        probe_reader(&mut WalkReader::new(Cursor::new(bytes), size), &Limits::default())
    }

    #[test]
    fn reads_a_bottom_up_or_top_down_stream_header() {
        let s = run(avi(60)).unwrap();
        let v = s.video.unwrap();
        assert_eq!((v.width, v.height, v.codec.as_str()), (160, 90, "mpeg4"));
        assert_eq!(v.frame_count, Some(60));
        assert!((v.frame_rate.unwrap() - 29.97).abs() < 0.001);
        assert!((s.duration_seconds.unwrap() - 2.002).abs() < 1e-9);
    }

    #[test]
    fn every_cut_inside_the_headers_is_truncated() {
        let full = avi(10);
        let movi_at = full.len() - 8 - 4 - 16;
        for cut in 0..movi_at {
            let err = run(full[..cut].to_vec()).unwrap_err();
            assert_eq!(err.code().as_str(), "truncated", "cut at {cut}: {err}");
        }
    }

    #[test]
    fn a_huge_declared_hdrl_is_refused_before_reading() {
        let mut f = b"RIFF\xff\xff\xff\xffAVI LIST".to_vec();
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        f.extend_from_slice(b"hdrl");
        let err =
            probe_reader(&mut WalkReader::new(Cursor::new(f), 1 << 33), &Limits::default()).unwrap_err();
        assert_eq!(err.code().as_str(), "too_large");
    }

    /// Lists are read at fixed depths: a LIST nested 10,000 deep inside `hdrl`, before
    /// the stream list, is stepped over by its size.
    #[test]
    fn a_deeply_nested_list_in_hdrl_is_not_descended_into() {
        let mut nested = Vec::new();
        for _ in 0..10_000 {
            nested = list(b"JUNK", &nested);
        }
        let f = avi(60);
        // hdrl's payload starts after RIFF (12), LIST header (8) and "hdrl" (4).
        let hdrl_len = u32::from_le_bytes(f[16..20].try_into().unwrap()) as usize;
        let mut hdrl = f[24..20 + hdrl_len].to_vec();
        hdrl.splice(0..0, nested);
        let mut body = b"AVI ".to_vec();
        body.extend(list(b"hdrl", &hdrl));
        body.extend_from_slice(&f[20 + hdrl_len..]);
        let v = run(chunk(b"RIFF", &body)).unwrap().video.unwrap();
        assert_eq!((v.width, v.height, v.frame_count), (160, 90, Some(60)));
    }

    #[test]
    fn a_walk_stopped_by_max_items_is_too_large() {
        let f = avi(10);
        let mut junk = f[..12].to_vec();
        junk.extend(b"JUNK\0\0\0\0".repeat(50));
        junk.extend_from_slice(&f[12..]);
        let limits = Limits { max_items: 20, ..Limits::default() };
        let size = junk.len() as u64;
        let err = probe_reader(&mut WalkReader::new(Cursor::new(junk), size), &limits).unwrap_err();
        assert_eq!(err.code().as_str(), "too_large", "{err}");
    }
}
