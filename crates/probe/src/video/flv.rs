//! FLV (Flash Video): the first tags give the codecs — the picture size from the H.264
//! SPS in the AVC sequence header or from the Sorenson H.263 picture header, the audio
//! layout from the tag flags or the AAC AudioSpecificConfig (read whole by
//! `audio/asc.rs`, and implicit SBR checked in the first raw frames as MP4 and ADTS
//! do, so HE-AAC reports what a decoder plays, as ffprobe does) — and the `onMetaData`
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
use crate::audio::asc::{self, AudioConfig};
use crate::audio::{AAC_MAX_BLOCK_BYTES, AAC_SBR_FRAMES, aac_units_carry_sbr};
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
    /// An AAC config that leaves SBR to the frames (implicit signalling), and the
    /// leading raw AAC frames gathered to decide it.
    aac_implicit: Option<AudioConfig>,
    aac_units: Vec<Vec<u8>>,
    /// A raw AAC frame too large to be one (so the answer stays the core's).
    aac_units_refused: bool,
}

impl Found {
    /// Whether the implicit-SBR check still wants raw AAC frames.
    fn wants_aac_units(&self) -> bool {
        self.aac_implicit.is_some() && !self.aac_units_refused && self.aac_units.len() < AAC_SBR_FRAMES
    }
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
            8 if found.audio.is_some() && found.wants_aac_units() => {
                if len > 2 + AAC_MAX_BLOCK_BYTES as u64 {
                    found.aac_units_refused = true;
                }
                found.wants_aac_units()
            }
            8 => found.audio.is_none(),
            9 => found.video_codec.is_none(),
            18 => found.meta_duration.is_none() && found.meta_fps.is_none(),
            _ => false,
        };
        if wanted && len > 0 {
            let body = read_block(r, pos + 11, len.min(TAG_MAX), limits, FMT, "a tag")?;
            match kind {
                8 if found.audio.is_some() => aac_unit(&body, &mut found),
                8 => audio_tag(&body, &mut found)?,
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
        if video_done && audio_done && found.meta_duration.is_some() && !found.wants_aac_units() {
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
    // Implicit SBR, decided as for MP4 and ADTS (and as ffprobe, which decodes a frame,
    // reports it): every one of the first four raw AAC frames must carry an SBR
    // element, or every one the file has when it holds fewer.
    if let Some(config) = found.aac_implicit
        && let Some(audio) = found.audio.as_mut()
        && !found.aac_units_refused
        && (found.aac_units.len() >= AAC_SBR_FRAMES || pos >= size)
        && aac_units_carry_sbr(found.aac_units.iter().map(Vec::as_slice))
    {
        let (rate, channels) = config.output_with_implicit_sbr();
        audio.sample_rate = Some(rate);
        audio.channels = channels.or(audio.channels);
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

/// A raw AAC frame (AACPacketType 1) for the implicit-SBR check.
fn aac_unit(b: &[u8], found: &mut Found) {
    if b.first().map(|f| f >> 4) == Some(10) && b.get(1) == Some(&1) {
        found.aac_units.push(b[2..].to_vec());
    }
}

fn audio_tag(b: &[u8], found: &mut Found) -> Result<()> {
    let Some(&flags) = b.first() else { return Ok(()) };
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
        _ => return Ok(()),
    };
    let (mut rate, mut channels) = (rate, Some(channels));
    // The rate the samples per frame count in (the core's, for HE-AAC).
    let mut frame_rate = None;
    match format {
        // AAC: the AudioSpecificConfig (AACPacketType 0) is the truth; the flags say
        // 44.1 kHz stereo. Read whole (SBR and PS change what is played, see
        // `audio/asc.rs`); one no decoder accepts is corrupt, as in MP4. An empty one
        // is not yet the config: FFmpeg's muxer writes one before the real one when its
        // source (ADTS) has no config up front, and FFmpeg's reader skips it.
        10 => {
            if b.get(1) != Some(&0) || b.len() == 2 {
                return Ok(());
            }
            let config = asc::read(&b[2..]).map_err(|e| ProbeError::corrupt(FMT, e))?;
            (rate, channels) = config.output();
            frame_rate = Some(config.core_rate);
            if config.sbr_in_frames_only() {
                found.aac_implicit = Some(config);
            }
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
                channels = Some(if h[3] >> 6 == 3 { 1 } else { 2 });
            }
        }
        // Speex is always 16 kHz mono in FLV; Nellymoser 8/16 kHz have their own ids.
        11 => (rate, channels) = (16_000, Some(1)),
        5 => rate = 16_000,
        6 => rate = 8_000,
        _ => {}
    }
    if rate == 0 || channels == Some(0) {
        return Ok(());
    }
    let frame_rate = frame_rate.unwrap_or(rate);
    found.audio_frame = (samples > 0).then(|| f64::from(samples) / f64::from(frame_rate));
    found.audio = Some(AudioStream { sample_rate: Some(rate), channels, codec: codec.to_string() });
    Ok(())
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

    /// An audio-only FLV of the given tags (type, body), timestamps 0, 23, 46… ms.
    fn flv(tags: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut f = b"FLV\x01\x04\0\0\0\x09\0\0\0\0".to_vec();
        for (i, (kind, body)) in tags.iter().enumerate() {
            let len = body.len() as u32;
            let ms = 23 * i as u32;
            f.push(*kind);
            f.extend_from_slice(&len.to_be_bytes()[1..]);
            f.extend_from_slice(&ms.to_be_bytes()[1..]);
            f.extend_from_slice(&[0, 0, 0, 0]);
            f.extend_from_slice(body);
            f.extend_from_slice(&(len + 11).to_be_bytes());
        }
        f
    }

    /// An AAC audio tag: packet type 0 (config) or 1 (a raw frame).
    fn aac(packet_type: u8, payload: &[u8]) -> (u8, Vec<u8>) {
        (8, [&[0xAF, packet_type][..], payload].concat())
    }

    /// A raw AAC frame whose last elements are a fill element of SBR data and END (see
    /// `audio/adts.rs`), or without the fill element's SBR type.
    fn raw_frame(sbr: bool) -> Vec<u8> {
        let fill = if sbr { "110000111010000" } else { "110000100000000" };
        let mut bits = ["000101101011010011101011", fill, "111"].concat();
        bits += &"0".repeat((8 - bits.len() % 8) % 8);
        (0..bits.len()).step_by(8).map(|k| u8::from_str_radix(&bits[k..k + 8], 2).unwrap()).collect()
    }

    fn layout(s: &Streams) -> (Option<u32>, Option<u32>) {
        let a = s.audio.as_ref().unwrap();
        (a.sample_rate, a.channels)
    }

    #[test]
    fn explicit_he_aac_configs_report_what_a_decoder_plays() {
        // Hierarchical SBR (AOT 5, 22050 Hz mono core, 44100 Hz extension): ffprobe
        // 44100 Hz, 2 channels. The empty config FFmpeg writes first is skipped.
        let s = parse(&flv(&[aac(0, &[]), aac(0, &[0x2B, 0x8A, 0x08, 0x00])])).unwrap();
        assert_eq!(layout(&s), (Some(44_100), Some(2)));
        // Seconds per frame stay the core's: 1024 / 22050.
        assert!((s.duration_seconds.unwrap() - (0.023 + 1024.0 / 22_050.0)).abs() < 1e-9);
        // Backward-compatible 0x2b7 and 0x548 (psPresentFlag 1).
        let s = parse(&flv(&[aac(0, &[0x13, 0x88, 0x56, 0xE5, 0xA5, 0x48, 0x80])])).unwrap();
        assert_eq!(layout(&s), (Some(44_100), Some(2)));
        // Plain AAC-LC 44100 Hz stereo, with no frames to look into.
        assert_eq!(layout(&parse(&flv(&[aac(0, &[0x12, 0x10])])).unwrap()), (Some(44_100), Some(2)));
    }

    #[test]
    fn implicit_sbr_is_decided_by_the_first_four_raw_frames() {
        let config = aac(0, &[0x13, 0x88]); // AAC-LC, 22050 Hz, mono
        let with = |frames: &[bool]| {
            let mut tags = vec![config.clone()];
            tags.extend(frames.iter().map(|&sbr| aac(1, &raw_frame(sbr))));
            layout(&parse(&flv(&tags)).unwrap())
        };
        assert_eq!(with(&[true; 6]), (Some(44_100), Some(2)));
        // A file of fewer frames is decided on all it has.
        assert_eq!(with(&[true, true]), (Some(44_100), Some(2)));
        // One frame without SBR among the first four: the core.
        assert_eq!(with(&[true, true, false, true, true]), (Some(22_050), Some(1)));
        // After the first four, nothing is looked at.
        assert_eq!(with(&[true, true, true, true, false]), (Some(44_100), Some(2)));
        assert_eq!(with(&[]), (Some(22_050), Some(1)));
        // A "frame" larger than an AAC frame can be is not looked into.
        let mut tags = vec![config.clone(), aac(1, &raw_frame(true))];
        tags.push(aac(1, &[raw_frame(true), vec![0; 7000]].concat()));
        assert_eq!(layout(&parse(&flv(&tags)).unwrap()), (Some(22_050), Some(1)));
    }

    #[test]
    fn hostile_aac_configs_are_corrupt_never_a_guess() {
        for config in [
            &[0x12][..],                     // cut inside the channel configuration
            &[0x16, 0x88],                   // reserved sampling index 13
            &[0x17, 0x80, 0, 0, 0x08],       // index 15 with an explicit 0 Hz
            &[0x2B, 0x8A],                   // SBR config cut before the core object type
            &[0x13, 0x88, 0x56, 0xE5, 0xF0], // extension index 14 (reserved)
        ] {
            let err = parse(&flv(&[aac(0, config)])).unwrap_err();
            assert_eq!(err.code().as_str(), "corrupt_file", "{config:02x?}: {err}");
        }
        // A sequence header cut by the end of the file.
        let mut cut = flv(&[aac(0, &[0x2B, 0x8A, 0x08, 0x00])]);
        cut.truncate(cut.len() - 6);
        assert_eq!(parse(&cut).unwrap_err().code().as_str(), "truncated");
        // Every cut of a valid file: an answer or an error, never a panic.
        let full = flv(&[aac(0, &[0x13, 0x88]), aac(1, &raw_frame(true)), aac(1, &raw_frame(true))]);
        for n in 0..full.len() {
            let _ = parse(&full[..n]);
        }
    }

    #[test]
    fn a_header_alone_is_truncated() {
        let err = parse(b"FLV\x01\x05\0\0\0\x09\0\0\0\0").unwrap_err();
        assert_eq!(err.code().as_str(), "truncated", "{err}");
    }
}
