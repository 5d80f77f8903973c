//! FLV (Flash Video): the first tags give the codecs — the picture size from the H.264
//! SPS in the AVC sequence header or from the Sorenson H.263 picture header, the audio
//! layout from the tag flags or the AAC AudioSpecificConfig — and the `onMetaData`
//! script tag the frame rate (and the size for codecs we do not parse). The duration is
//! last video tag's timestamp plus one frame (the last audio tag's without video), as
//! ffprobe reports it, found by walking back from the end through the PreviousTagSize
//! fields (a suffix read); the declared `duration` is used only when the tail does not
//! resolve. Hand-written: tags are a flat list; AMF0 is read with bounded
//! depth and lengths checked against the tag.

use std::io::{Read, Seek, SeekFrom};

use asset_core::Limits;

use super::nal;
use super::{AudioStream, Streams, VideoStream, frames_from, io_or_truncated, read_block};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FMT: &str = "FLV";
/// Tags read from the start looking for the first video and audio tags and metadata.
const HEAD_TAGS: u64 = 256;
/// The most bytes of one tag kept in memory (a script tag or a sequence header).
const TAG_MAX: u64 = 1 << 20;
/// Nesting allowed in AMF0 values before the metadata is given up.
const AMF_DEPTH: u32 = 16;

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Streams> {
    probe_reader(&mut WalkReader::open(src)?, limits)
}

#[derive(Debug, Default)]
struct Found {
    video: Option<(u32, u32, &'static str)>,
    video_codec: Option<&'static str>,
    audio: Option<AudioStream>,
    audio_frame: Option<f64>,
    meta_duration: Option<f64>,
    meta_fps: Option<f64>,
    meta_size: (Option<u32>, Option<u32>),
    /// The timestamp of the first video tag holding a frame (not a sequence header).
    first_video_ms: Option<u64>,
}

pub(super) fn probe_reader<R: Read + Seek>(r: &mut WalkReader<R>, limits: &Limits) -> Result<Streams> {
    let size = r.len();
    let mut head = [0u8; 9];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut head).map_err(|e| io_or_truncated(e, FMT, "the FLV header"))?;
    if &head[..3] != b"FLV" {
        return Err(ProbeError::corrupt(FMT, "no FLV signature"));
    }
    let (has_audio, has_video) = (head[4] & 4 != 0, head[4] & 1 != 0);
    let offset = u64::from(u32::from_be_bytes([head[5], head[6], head[7], head[8]])).max(9);
    let mut found = Found::default();
    let mut pos = offset + 4; // PreviousTagSize0
    let mut tags = 0u64;
    while pos + 11 <= size && tags < HEAD_TAGS.min(limits.max_items) {
        tags += 1;
        let mut h = [0u8; 11];
        r.seek(SeekFrom::Start(pos))?;
        r.read_exact(&mut h).map_err(|e| io_or_truncated(e, FMT, "a tag header"))?;
        let kind = h[0] & 0x1F;
        let len = u64::from(u32::from_be_bytes([0, h[1], h[2], h[3]]));
        let ms = u64::from(u32::from_be_bytes([h[7], h[4], h[5], h[6]]));
        if kind == 9 && found.video_codec.is_some() && found.first_video_ms.is_none() && len >= 2 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|e| io_or_truncated(e, FMT, "a video tag"))?;
            // An AVC/HEVC sequence header (packet type 0) carries no frame.
            if !(matches!(b[0] & 0x0F, 7 | 12) && b[1] == 0) {
                found.first_video_ms = Some(ms);
            }
        }
        let wanted = match kind {
            8 => found.audio.is_none(),
            9 => found.video_codec.is_none(),
            18 => found.meta_duration.is_none() && found.meta_fps.is_none(),
            _ => false,
        };
        if wanted && len > 0 {
            let body = read_block(r, pos + 11, len.min(TAG_MAX), limits, FMT, "a tag")?;
            match kind {
                8 => audio_tag(&body, &mut found),
                9 => {
                    video_tag(&body, &mut found);
                    let header_only = matches!(body[0] & 0x0F, 7 | 12) && body.get(1) == Some(&0);
                    if found.video_codec.is_some() && !header_only {
                        found.first_video_ms.get_or_insert(ms);
                    }
                }
                _ => script_tag(&body, &mut found),
            }
        }
        pos = pos.saturating_add(11 + len + 4);
        let video_done = !has_video || found.first_video_ms.is_some();
        let audio_done = !has_audio || found.audio.is_some();
        if video_done && audio_done && found.meta_duration.is_some() {
            break;
        }
    }
    if found.video_codec.is_none() && found.audio.is_none() {
        return Err(if pos >= size {
            ProbeError::truncated(FMT, "the file ends before a video or audio tag")
        } else {
            ProbeError::unsupported("an FLV file with neither a video nor an audio tag we know")
        });
    }
    let fps = found.meta_fps.filter(|f| f.is_finite() && *f > 0.0 && *f < 1000.0);
    let (last_video, last_audio) = last_tags(r, size, offset)?;
    // A stream ends one frame after its last tag. Like ffprobe, the duration is the
    // video's end when there is video (FFmpeg's muxer writes that as onMetaData's
    // duration), else the audio's; from the timestamps, the declared value only when
    // the tail does not resolve.
    let video_end = last_video.zip(fps).map(|(ms, f)| ms as f64 / 1000.0 + 1.0 / f);
    let audio_end = last_audio.zip(found.audio_frame).map(|(ms, d)| ms as f64 / 1000.0 + d);
    let duration = if found.video_codec.is_some() { video_end } else { audio_end }.or(found.meta_duration);
    let video_seconds = video_end.map(|e| e - found.first_video_ms.unwrap_or(0) as f64 / 1000.0);
    let video = found.video_codec.and_then(|codec| {
        let (w, h) = match found.video {
            Some((w, h, _)) => (Some(w), Some(h)),
            None => found.meta_size,
        };
        Some(VideoStream {
            width: w?,
            height: h?,
            frame_count: video_seconds.zip(fps).and_then(|(d, f)| frames_from(d, f)).filter(|&n| n > 0),
            frame_rate: fps,
            codec: codec.to_string(),
        })
    });
    Ok(Streams { video, audio: found.audio, duration_seconds: duration, webm: false })
}

/// Tags walked back from the end through their PreviousTagSize fields.
const TAIL_TAGS: u32 = 256;

/// The timestamps (ms) of the last video and the last audio tag: walked back from the
/// end through each tag's PreviousTagSize, at most [`TAIL_TAGS`] tags, each checked
/// against the size its own header declares.
fn last_tags<R: Read + Seek>(
    r: &mut WalkReader<R>,
    size: u64,
    offset: u64,
) -> Result<(Option<u64>, Option<u64>)> {
    let (mut video, mut audio) = (None, None);
    let mut end = size;
    for _ in 0..TAIL_TAGS {
        if video.is_some() && audio.is_some() || end < offset + 4 + 11 + 4 {
            break;
        }
        let mut b = [0u8; 4];
        r.seek(SeekFrom::Start(end - 4))?;
        r.read_exact(&mut b)?;
        let prev = u64::from(u32::from_be_bytes(b));
        let Some(start) = (end - 4).checked_sub(prev).filter(|&s| s >= offset + 4 && prev >= 11) else {
            break;
        };
        let mut h = [0u8; 11];
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(&mut h)?;
        let len = u64::from(u32::from_be_bytes([0, h[1], h[2], h[3]]));
        if len + 11 != prev {
            break;
        }
        let ms = u64::from(u32::from_be_bytes([h[7], h[4], h[5], h[6]]));
        match h[0] & 0x1F {
            9 => {
                video.get_or_insert(ms);
            }
            8 => {
                audio.get_or_insert(ms);
            }
            _ => {}
        }
        end = start;
    }
    Ok((video, audio))
}

fn video_tag(b: &[u8], found: &mut Found) {
    let Some(&first) = b.first() else { return };
    let codec = match first & 0x0F {
        2 => "flv1",
        3 => "flashsv",
        4 => "vp6f",
        5 => "vp6a",
        6 => "flashsv2",
        7 => "h264",
        12 => "hevc",
        _ => return,
    };
    match codec {
        // AVCPacketType 0: the AVCDecoderConfigurationRecord. Other packets first (rare)
        // leave the codec unset so that the sequence header is still looked for.
        "h264" => {
            if b.get(1) != Some(&0) {
                return;
            }
            found.video_codec = Some(codec);
            found.video =
                b.get(5..).and_then(avcc_sps).and_then(nal::h264_sps).map(|s| (s.width, s.height, codec));
        }
        "flv1" => {
            found.video_codec = Some(codec);
            found.video = sorenson_size(&b[1..]).map(|(w, h)| (w, h, codec));
        }
        _ => found.video_codec = Some(codec),
    }
}

/// The first SPS of an AVCDecoderConfigurationRecord.
fn avcc_sps(c: &[u8]) -> Option<&[u8]> {
    if c.len() < 8 || c[5] & 0x1F == 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([c[6], c[7]]));
    c.get(8..8 + len)
}

/// The picture size of a Sorenson Spark (H.263 variant) picture header.
fn sorenson_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < 9 {
        return None;
    }
    let mut window = [0u8; 16];
    let n = b.len().min(16);
    window[..n].copy_from_slice(&b[..n]);
    let bits = u128::from_be_bytes(window);
    let get = |at: u32, n: u32| ((bits >> (128 - at - n)) & ((1 << n) - 1)) as u32;
    // 17-bit start code, 5-bit version, 8-bit temporal reference, 3-bit size code.
    if get(0, 17) != 1 {
        return None;
    }
    Some(match get(30, 3) {
        0 => (get(33, 8), get(41, 8)),
        1 => (get(33, 16), get(49, 16)),
        2 => (352, 288),
        3 => (176, 144),
        4 => (128, 96),
        5 => (320, 240),
        6 => (160, 120),
        _ => return None,
    })
    .filter(|&(w, h)| w > 0 && h > 0)
}

fn audio_tag(b: &[u8], found: &mut Found) {
    let Some(&flags) = b.first() else { return };
    let format = flags >> 4;
    let rate = [5_512, 11_025, 22_050, 44_100][usize::from((flags >> 2) & 3)];
    let channels = if flags & 1 == 1 { 2 } else { 1 };
    let (codec, samples): (&str, u32) = match format {
        0 | 3 => ("pcm_s16le", 0),
        1 => ("adpcm_swf", 4096),
        2 | 14 => ("mp3", if rate < 32_000 { 576 } else { 1152 }),
        4..=6 => ("nellymoser", 256),
        7 => ("pcm_alaw", 0),
        8 => ("pcm_mulaw", 0),
        10 => ("aac", 1024),
        11 => ("speex", 320),
        _ => return,
    };
    let (mut rate, mut channels) = (rate, channels);
    match format {
        // AAC: the AudioSpecificConfig (AACPacketType 0) is the truth; the flags say 44.1 kHz stereo.
        10 => {
            if b.get(1) != Some(&0) || b.len() < 4 {
                return;
            }
            const RATES: [u32; 13] = [
                96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
                8_000, 7_350,
            ];
            let asc = u16::from_be_bytes([b[2], b[3]]);
            let Some(&r) = RATES.get(usize::from((asc >> 7) & 0xF)) else { return };
            rate = r;
            channels = u32::from((asc >> 3) & 0xF);
        }
        // MP3 frames carry their own rate (MPEG-2 and 2.5 rates are below the flags').
        2 | 14 => {
            if let Some(h) = b.get(1..5).filter(|h| h[0] == 0xFF && h[1] & 0xE0 == 0xE0) {
                let base = [44_100, 48_000, 32_000, 0][usize::from((h[2] >> 2) & 3)];
                rate = match (h[1] >> 3) & 3 {
                    3 => base,
                    2 => base / 2,
                    0 => base / 4,
                    _ => rate,
                };
                channels = if h[3] >> 6 == 3 { 1 } else { 2 };
            }
        }
        // Speex is always 16 kHz mono in FLV; Nellymoser 8/16 kHz have their own ids.
        11 => (rate, channels) = (16_000, 1),
        5 => rate = 16_000,
        6 => rate = 8_000,
        _ => {}
    }
    if rate == 0 || channels == 0 {
        return;
    }
    found.audio_frame = (samples > 0).then(|| f64::from(samples) / f64::from(rate));
    found.audio =
        Some(AudioStream { sample_rate: Some(rate), channels: Some(channels), codec: codec.to_string() });
}

/// `onMetaData`: the numbers we use, from an ECMA array or object of AMF0 values.
fn script_tag(b: &[u8], found: &mut Found) {
    let mut at = 0;
    // The name: a string value "onMetaData".
    if b.first() != Some(&2) {
        return;
    }
    let Some(name) = amf_string(b, 1) else { return };
    if name.0 != b"onMetaData" {
        return;
    }
    at += 1 + name.1;
    let entries_from = match b.get(at) {
        Some(8) => at + 5, // ECMA array: a u32 count, then object properties
        Some(3) => at + 1,
        _ => return,
    };
    let mut p = entries_from;
    for _ in 0..4096 {
        let Some((key, n)) = amf_string(b, p) else { return };
        p += n;
        if key.is_empty() && b.get(p) == Some(&9) {
            return;
        }
        if b.get(p) == Some(&0)
            && let Some(v) = b.get(p + 1..p + 9).and_then(|x| x.try_into().ok()).map(f64::from_be_bytes)
        {
            let size = |v: f64| (1.0..1e6).contains(&v).then_some(v as u32);
            match key {
                b"duration" if v.is_finite() && v > 0.0 => found.meta_duration = Some(v),
                b"framerate" if v.is_finite() && v > 0.0 => found.meta_fps = Some(v),
                b"width" => found.meta_size.0 = size(v),
                b"height" => found.meta_size.1 = size(v),
                _ => {}
            }
        }
        match skip_amf(b, p, 0) {
            Some(next) => p = next,
            None => return,
        }
    }
}

/// A UTF-8 AMF0 short string at `at` (u16 length, bytes): the bytes and the length read.
fn amf_string(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]));
    Some((b.get(at + 2..at + 2 + len)?, 2 + len))
}

/// The offset after the AMF0 value at `at`; `None` when it overruns the tag or nests
/// deeper than [`AMF_DEPTH`].
fn skip_amf(b: &[u8], at: usize, depth: u32) -> Option<usize> {
    if depth > AMF_DEPTH {
        return None;
    }
    let u32_at = |p: usize| -> Option<usize> {
        usize::try_from(u32::from_be_bytes(b.get(p..p + 4)?.try_into().ok()?)).ok()
    };
    let end = match *b.get(at)? {
        0 => at + 9,
        1 => at + 2,
        2 => at + 1 + amf_string(b, at + 1)?.1,
        3 | 8 => {
            let mut p = if b[at] == 8 { at + 5 } else { at + 1 };
            loop {
                let (key, n) = amf_string(b, p)?;
                p += n;
                if key.is_empty() && *b.get(p)? == 9 {
                    break p + 1;
                }
                p = skip_amf(b, p, depth + 1)?;
            }
        }
        5 | 6 => at + 1,
        7 => at + 3,
        10 => {
            let count = u32_at(at + 1)?;
            let mut p = at + 5;
            for _ in 0..count.min(b.len()) {
                p = skip_amf(b, p, depth + 1)?;
            }
            p
        }
        11 => at + 11,
        12 => at + 5 + u32_at(at + 1)?,
        _ => return None,
    };
    (end <= b.len()).then_some(end)
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
    fn deeply_nested_metadata_is_given_up_not_recursed() {
        let mut tag = vec![2u8, 0, 10];
        tag.extend_from_slice(b"onMetaData");
        tag.push(3);
        for _ in 0..10_000 {
            tag.extend_from_slice(&[0, 1, b'a', 3]);
        }
        let mut found = Found::default();
        script_tag(&tag, &mut found);
        assert_eq!(found.meta_duration, None);
    }

    #[test]
    fn a_header_alone_is_truncated() {
        let err = parse(b"FLV\x01\x05\0\0\0\x09\0\0\0\0").unwrap_err();
        assert_eq!(err.code().as_str(), "truncated", "{err}");
    }
}
