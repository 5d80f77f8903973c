//! ASF (`.wmv`, `.wma`, `.asf`): every answer is in the Header Object at the start —
//! the File Properties Object's play duration less the preroll (what mediainfo and
//! FFmpeg's demuxer report as the streams' duration), each Stream Properties Object's
//! codec and size, and, when the Header Extension has one, the Extended Stream
//! Properties' time per frame. Hand-written: the header is a flat list of GUID-tagged
//! objects, read once under the memory limit; no crate reads it without demuxing.

use std::io::{Read, Seek, SeekFrom};

use asset_core::Limits;

use super::{
    AudioStream, Streams, VideoStream, frames_from, io_or_truncated, le_u16, le_u32, le_u64, read_block,
};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FMT: &str = "ASF";

/// GUIDs as they are stored (the first three fields little endian).
pub(crate) const HEADER: [u8; 16] =
    guid(0x75B2_2630, 0x668E, 0x11CF, [0xA6, 0xD9, 0x00, 0xAA, 0x00, 0x62, 0xCE, 0x6C]);
const FILE_PROPERTIES: [u8; 16] =
    guid(0x8CAB_DCA1, 0xA947, 0x11CF, [0x8E, 0xE4, 0x00, 0xC0, 0x0C, 0x20, 0x53, 0x65]);
const STREAM_PROPERTIES: [u8; 16] =
    guid(0xB7DC_0791, 0xA9B7, 0x11CF, [0x8E, 0xE6, 0x00, 0xC0, 0x0C, 0x20, 0x53, 0x65]);
const HEADER_EXTENSION: [u8; 16] =
    guid(0x5FBF_03B5, 0xA92E, 0x11CF, [0x8E, 0xE3, 0x00, 0xC0, 0x0C, 0x20, 0x53, 0x65]);
const EXTENDED_STREAM_PROPERTIES: [u8; 16] =
    guid(0x14E6_A5CB, 0xC672, 0x4332, [0x83, 0x99, 0xA9, 0x69, 0x52, 0x06, 0x5B, 0x5A]);
const VIDEO_MEDIA: [u8; 16] =
    guid(0xBC19_EFC0, 0x5B4D, 0x11CF, [0xA8, 0xFD, 0x00, 0x80, 0x5F, 0x5C, 0x44, 0x2B]);
const AUDIO_MEDIA: [u8; 16] =
    guid(0xF869_9E40, 0x5B4D, 0x11CF, [0xA8, 0xFD, 0x00, 0x80, 0x5F, 0x5C, 0x44, 0x2B]);
/// Content encryption (DRM v1) and its extended form (DRM v7+).
const CONTENT_ENCRYPTION: [u8; 16] =
    guid(0x2211_B3FB, 0xBD23, 0x11D2, [0xB4, 0xB7, 0x00, 0xA0, 0xC9, 0x55, 0xFC, 0x6E]);
const EXTENDED_CONTENT_ENCRYPTION: [u8; 16] =
    guid(0x298A_E614, 0x2622, 0x4C17, [0xB9, 0x35, 0xDA, 0xE0, 0x7E, 0xE9, 0x28, 0x9C]);

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

/// The most a Header Object may be: real ones are a few KiB (a large embedded cover
/// picture reaches a few MiB); the memory limit caps it further.
const HEADER_MAX: u64 = 16 << 20;

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Streams> {
    probe_reader(&mut WalkReader::open(src)?, limits)
}

pub(super) fn probe_reader<R: Read + Seek>(r: &mut WalkReader<R>, limits: &Limits) -> Result<Streams> {
    let mut head = [0u8; 30];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut head).map_err(|e| io_or_truncated(e, FMT, "the Header Object"))?;
    if head[..16] != HEADER {
        return Err(ProbeError::corrupt(FMT, "no ASF Header Object"));
    }
    let size = le_u64(&head, 16).unwrap_or(0);
    if size < 30 {
        return Err(ProbeError::corrupt(FMT, format!("a Header Object of {size} bytes")));
    }
    if size > HEADER_MAX {
        return Err(ProbeError::TooLarge {
            what: format!("ASF Header Object of {size} bytes"),
            limit: HEADER_MAX,
        });
    }
    let body = read_block(r, 30, size - 30, limits, FMT, "the Header Object")?;
    parse_header(&body, limits)
}

/// One stream as its Stream Properties Object describes it.
#[derive(Debug, Default)]
struct StreamInfo {
    number: u16,
    video: Option<(u32, u32, String)>,
    audio: Option<AudioStream>,
}

fn parse_header(body: &[u8], limits: &Limits) -> Result<Streams> {
    let mut duration = None;
    let mut streams: Vec<StreamInfo> = Vec::new();
    let mut frame_times: Vec<(u16, u64)> = Vec::new();
    let mut count = 0u64;
    for (id, data) in objects(body) {
        count += 1;
        if count > limits.max_items {
            return Err(ProbeError::TooLarge { what: "ASF header objects".into(), limit: limits.max_items });
        }
        match id {
            FILE_PROPERTIES => {
                // play duration (100 ns) at 40, preroll (ms) at 56, flags at 64.
                let play = le_u64(data, 40).ok_or_else(|| cut("the File Properties Object"))?;
                let preroll = le_u64(data, 56).ok_or_else(|| cut("the File Properties Object"))?;
                let broadcast = le_u32(data, 64).is_some_and(|f| f & 1 != 0);
                // A broadcast (live) file's durations are not filled in.
                if !broadcast && play > 0 {
                    duration = Some((play as f64 / 1e7 - preroll as f64 / 1e3).max(0.0));
                }
            }
            STREAM_PROPERTIES => streams.push(stream_properties(data)?),
            HEADER_EXTENSION => {
                // reserved GUID (16), reserved u16, data size u32, then objects.
                for (id, ext) in objects(data.get(22..).unwrap_or(&[])) {
                    count += 1;
                    if count > limits.max_items {
                        return Err(ProbeError::TooLarge {
                            what: "ASF header objects".into(),
                            limit: limits.max_items,
                        });
                    }
                    if id == EXTENDED_STREAM_PROPERTIES
                        && let (Some(number), Some(per_frame)) = (le_u16(ext, 48), le_u64(ext, 52))
                    {
                        frame_times.push((number, per_frame));
                    }
                }
            }
            CONTENT_ENCRYPTION | EXTENDED_CONTENT_ENCRYPTION => {
                return Err(ProbeError::Encrypted { format: FMT });
            }
            _ => {}
        }
    }
    let mut out = Streams { duration_seconds: duration, ..Streams::default() };
    if let Some(s) = streams.iter().find(|s| s.video.is_some()) {
        let (width, height, codec) = s.video.clone().unwrap_or_default();
        // 100 ns units per frame.
        let frame_rate = frame_times
            .iter()
            .find(|(n, _)| *n == s.number)
            .and_then(|&(_, t)| (t > 0).then(|| 1e7 / t as f64));
        let frame_count = duration.zip(frame_rate).and_then(|(d, f)| frames_from(d, f));
        out.video = Some(VideoStream { width, height, frame_count, frame_rate, codec });
    }
    out.audio = streams.into_iter().find_map(|s| s.audio);
    if out.video.is_none() && out.audio.is_none() {
        return Err(ProbeError::unsupported("an ASF file with neither a video nor an audio stream"));
    }
    Ok(out)
}

fn cut(what: &str) -> ProbeError {
    ProbeError::truncated(FMT, format!("the header ends inside {what}"))
}

/// `(GUID, data)` of the objects in `d`; an object that overruns `d` is cut to it, and
/// one smaller than its own header ends the list.
fn objects(mut d: &[u8]) -> impl Iterator<Item = ([u8; 16], &[u8])> {
    std::iter::from_fn(move || {
        let id: [u8; 16] = d.get(..16)?.try_into().ok()?;
        let size = le_u64(d, 16)?;
        if size < 24 {
            return None;
        }
        let end = usize::try_from(size).unwrap_or(usize::MAX).min(d.len());
        let data = &d[24..end];
        d = &d[end..];
        Some((id, data))
    })
}

fn stream_properties(d: &[u8]) -> Result<StreamInfo> {
    // stream type (16), error correction type (16), time offset (8), type-specific length
    // (4), error correction length (4), flags (2), reserved (4), then the type-specific data.
    let kind: [u8; 16] =
        d.get(..16).and_then(|g| g.try_into().ok()).ok_or_else(|| cut("a Stream Properties Object"))?;
    let specific_len = le_u32(d, 40).ok_or_else(|| cut("a Stream Properties Object"))? as usize;
    let number = le_u16(d, 48).ok_or_else(|| cut("a Stream Properties Object"))? & 0x7F;
    let specific = d.get(54..54usize.saturating_add(specific_len).min(d.len())).unwrap_or(&[]);
    let mut info = StreamInfo { number, ..StreamInfo::default() };
    if kind == VIDEO_MEDIA {
        // encoded width, height (u32 each), flags (u8), format data size (u16), then a
        // BITMAPINFOHEADER whose compression FourCC is at its offset 16.
        let width = le_u32(specific, 0).ok_or_else(|| cut("a video stream's format"))?;
        let height = le_u32(specific, 4).ok_or_else(|| cut("a video stream's format"))?;
        let fourcc: [u8; 4] = specific
            .get(11 + 16..11 + 20)
            .and_then(|f| f.try_into().ok())
            .ok_or_else(|| cut("a video stream's BITMAPINFOHEADER"))?;
        info.video = Some((width, height, video_codec(fourcc)));
    } else if kind == AUDIO_MEDIA {
        // WAVEFORMATEX: format tag, channels, samples per second.
        let tag = le_u16(specific, 0).ok_or_else(|| cut("an audio stream's format"))?;
        let channels = le_u16(specific, 2).ok_or_else(|| cut("an audio stream's format"))?;
        let rate = le_u32(specific, 4).ok_or_else(|| cut("an audio stream's format"))?;
        info.audio = Some(AudioStream {
            sample_rate: (rate > 0).then_some(rate),
            channels: (channels > 0).then_some(u32::from(channels)),
            codec: audio_codec(tag).to_string(),
        });
    }
    Ok(info)
}

/// ffprobe's name for a Windows Media video FourCC.
fn video_codec(fourcc: [u8; 4]) -> String {
    let mut upper = fourcc;
    upper.make_ascii_uppercase();
    match &upper {
        b"WMV1" => "wmv1".into(),
        b"WMV2" => "wmv2".into(),
        b"WMV3" => "wmv3".into(),
        b"WMVA" | b"WVC1" => "vc1".into(),
        b"MP43" => "msmpeg4v3".into(),
        b"MP42" => "msmpeg4v2".into(),
        b"MP4S" | b"M4S2" => "mpeg4".into(),
        b"H264" | b"AVC1" | b"X264" => "h264".into(),
        b"MJPG" => "mjpeg".into(),
        _ => String::from_utf8_lossy(&fourcc).trim_end_matches(['\0', ' ']).to_ascii_lowercase(),
    }
}

/// ffprobe's name for a WAVEFORMATEX format tag.
fn audio_codec(tag: u16) -> &'static str {
    match tag {
        0x0001 => "pcm_s16le",
        0x0003 => "pcm_f32le",
        0x0002 => "adpcm_ms",
        0x0011 => "adpcm_ima_wav",
        0x0055 => "mp3",
        0x0050 => "mp2",
        0x0160 => "wmav1",
        0x0161 => "wmav2",
        0x0162 => "wmapro",
        0x0163 => "wmalossless",
        0x000A => "wmavoice",
        0x2000 => "ac3",
        0x00FF | 0x1610 => "aac",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn parse(bytes: &[u8]) -> Result<Streams> {
        let mut r = WalkReader::new(Cursor::new(bytes), bytes.len() as u64);
        probe_reader(&mut r, &Limits::default())
    }

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(HEADER[..4], [0x30, 0x26, 0xB2, 0x75]);
        assert_eq!(HEADER[8..], [0xA6, 0xD9, 0x00, 0xAA, 0x00, 0x62, 0xCE, 0x6C]);
    }

    #[test]
    fn a_header_object_claiming_a_huge_size_is_refused_before_allocation() {
        let mut h = HEADER.to_vec();
        h.extend_from_slice(&u64::MAX.to_le_bytes());
        h.extend_from_slice(&[0; 6]);
        assert_eq!(parse(&h).unwrap_err().code().as_str(), "too_large");
        let mut h = HEADER.to_vec();
        h.extend_from_slice(&(1u64 << 20).to_le_bytes());
        h.extend_from_slice(&[0; 6]);
        assert_eq!(parse(&h).unwrap_err().code().as_str(), "truncated");
    }

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets/video");
        std::fs::read(dir.join(name)).unwrap()
    }

    /// Values from ffprobe (codecs, sizes, rates) and the header's play duration less
    /// preroll (mediainfo; ffprobe's format duration is within 50 ms of it).
    #[test]
    fn fixtures_match_the_reference_tools() {
        let s = parse(&fixture("wmv2.wmv")).unwrap();
        let v = s.video.unwrap();
        assert_eq!((v.width, v.height, v.codec.as_str(), v.frame_rate), (160, 90, "wmv2", None));
        let a = s.audio.unwrap();
        assert_eq!((a.sample_rate, a.channels, a.codec.as_str()), (Some(22_050), Some(1), "wmav2"));
        assert!((s.duration_seconds.unwrap() - 2.046).abs() < 1e-9);
        let s = parse(&fixture("wmav2.wma")).unwrap();
        assert!(s.video.is_none());
        assert_eq!(s.audio.unwrap().channels, Some(2));
        assert!((s.duration_seconds.unwrap() - 2.042).abs() < 1e-9);
    }

    #[test]
    fn cut_and_mutated_headers_never_panic() {
        for name in ["wmv2.wmv", "wmav2.wma"] {
            let bytes = fixture(name);
            for cut in 0..bytes.len().min(1200) {
                if let Err(e) = parse(&bytes[..cut]) {
                    let code = e.code().as_str();
                    assert!(
                        matches!(code, "truncated" | "corrupt_file" | "unsupported_format"),
                        "{name} cut at {cut}: {e}"
                    );
                }
            }
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ bytes.len() as u64;
            for _ in 0..500 {
                let mut m = bytes.clone();
                for _ in 0..4 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let at = (x % 700) as usize;
                    m[at] ^= (x >> 32) as u8 | 1;
                }
                let _ = parse(&m);
            }
        }
    }
}
