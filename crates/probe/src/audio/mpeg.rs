//! MPEG audio (MP3, and MP2/MP1): past any ID3v2 tags, the first frame gives the layout;
//! a Xing/Info or VBRI header in it gives the frame count. Without one (CBR from some
//! encoders, VBR from `lame -t`) the frame headers are walked to the end of the audio,
//! which stops before an APEv2 or ID3v1 tag.

use asset_core::Limits;

use super::{Frame, Stream, adts, first_frame, flac, read_at, read_exact_at, u32_be, u32_le, walk_frames};
use crate::{ProbeError, Result, Source};

const FORMAT: &str = "mp3";
/// How far past the tags the first frame may start (encoders pad with zeros).
const SYNC_WINDOW: usize = 64 * 1024;
/// ID3v2 tags are sometimes stacked; more than this is not a real file.
const MAX_ID3_TAGS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    /// 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5.
    version: u8,
    /// 3: layer I, 2: layer II, 1: layer III.
    layer: u8,
    sample_rate: u32,
    mono: bool,
    frame: Frame,
}

const V1_L1: [u32; 15] = [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448];
const V1_L2: [u32; 15] = [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384];
const V1_L3: [u32; 15] = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
const V2_L1: [u32; 15] = [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256];
const V2_L23: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];

fn header(b: &[u8]) -> Option<Header> {
    if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (b[1] >> 3) & 3;
    let layer = (b[1] >> 1) & 3;
    let bitrate_index = usize::from(b[2] >> 4);
    let rate_index = usize::from((b[2] >> 2) & 3);
    // Free-format (index 0) frames have no length in their header: not walkable.
    if version == 1 || layer == 0 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    let padding = u32::from((b[2] >> 1) & 1);
    let mpeg1 = version == 3;
    let kbps = match (mpeg1, layer) {
        (true, 3) => V1_L1[bitrate_index],
        (true, 2) => V1_L2[bitrate_index],
        (true, _) => V1_L3[bitrate_index],
        (false, 3) => V2_L1[bitrate_index],
        (false, _) => V2_L23[bitrate_index],
    };
    let base_rate = [44_100, 48_000, 32_000][rate_index];
    let sample_rate = match version {
        3 => base_rate,
        2 => base_rate / 2,
        _ => base_rate / 4,
    };
    let bitrate = kbps * 1000;
    let (len, samples) = match layer {
        3 => ((12 * bitrate / sample_rate + padding) * 4, 384),
        2 => (144 * bitrate / sample_rate + padding, 1152),
        _ if mpeg1 => (144 * bitrate / sample_rate + padding, 1152),
        _ => (72 * bitrate / sample_rate + padding, 576),
    };
    Some(Header {
        version,
        layer,
        sample_rate,
        mono: b[3] >> 6 == 3,
        frame: Frame { len: u64::from(len), samples },
    })
}

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Stream> {
    let mut file = src.file()?;
    let size = src.size();
    let start = skip_id3v2(&mut file, size)?;
    let end = audio_end(&mut file, start, size)?;

    let mut buf = vec![0u8; SYNC_WINDOW.min(usize::try_from(end - start).unwrap_or(SYNC_WINDOW))];
    let n = read_at(&mut file, start, &mut buf)?;
    buf.truncate(n);
    // An ID3v2 tag also precedes FLAC and ADTS streams now and then.
    if buf.starts_with(b"fLaC") {
        return flac::probe(&mut file, start, size);
    }
    if buf.len() >= 2 && buf[0] == 0xFF && buf[1] & 0xF6 == 0xF0 {
        return adts::probe(src, start, end, limits);
    }
    let at = first_frame(&buf, 4, |b| header(b).map(|h| h.frame)).ok_or_else(|| {
        if buf.is_empty() {
            ProbeError::corrupt(FORMAT, "no audio after the tags")
        } else {
            ProbeError::corrupt(FORMAT, "no MPEG audio frame where the audio should start")
        }
    })?;
    let first = header(&buf[at..]).ok_or_else(|| ProbeError::corrupt(FORMAT, "first frame vanished"))?;
    let codec = match first.layer {
        1 => "mp3",
        2 => "mp2",
        _ => "mp1",
    };
    let mut stream = Stream {
        mime: "audio/mpeg",
        codec,
        sample_rate: first.sample_rate,
        channels: Some(if first.mono { 1 } else { 2 }),
        duration: None,
    };
    let frame_at = start + at as u64;
    let rate = f64::from(first.sample_rate);
    match vbr_header(&buf[at..], &first) {
        VbrHeader::Frames(frames) => {
            stream.duration = Some(frames as f64 * first.frame.samples as f64 / rate);
        }
        other => {
            // A Xing/VBRI frame without a count holds no audio: start after it.
            let from = if other == VbrHeader::NoCount { frame_at + first.frame.len } else { frame_at };
            let same_stream = |b: &[u8]| {
                header(b)
                    .filter(|h| {
                        h.version == first.version
                            && h.layer == first.layer
                            && h.sample_rate == first.sample_rate
                    })
                    .map(|h| h.frame)
            };
            let walk = walk_frames(src, from, end, 4, limits, same_stream)?;
            stream.duration = Some(walk.samples / rate);
        }
    }
    Ok(stream)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VbrHeader {
    /// A Xing/Info or VBRI header with the number of audio frames (itself excluded).
    Frames(u64),
    /// A Xing/Info header without a frame count.
    NoCount,
    None,
}

/// Looks inside the first frame for a Xing/Info header (after the side information, as
/// LAME and ffmpeg place it) or a VBRI header (32 bytes after the frame header).
fn vbr_header(frame: &[u8], h: &Header) -> VbrHeader {
    let side_info = match (h.version == 3, h.mono) {
        (true, true) => 17,
        (true, false) => 32,
        (false, true) => 9,
        (false, false) => 17,
    };
    let xing = 4 + side_info;
    if let Some(tag) = frame.get(xing..xing + 12)
        && (&tag[..4] == b"Xing" || &tag[..4] == b"Info")
    {
        let flags = u32_be(tag, 4);
        return if flags & 1 != 0 {
            VbrHeader::Frames(u64::from(u32_be(tag, 8)))
        } else {
            VbrHeader::NoCount
        };
    }
    if let Some(tag) = frame.get(36..36 + 18)
        && &tag[..4] == b"VBRI"
    {
        return VbrHeader::Frames(u64::from(u32_be(tag, 14)));
    }
    VbrHeader::None
}

/// The offset just past the ID3v2 tags at the start of the file.
fn skip_id3v2(file: &mut crate::SourceFile, size: u64) -> Result<u64> {
    let mut at = 0u64;
    for _ in 0..MAX_ID3_TAGS {
        let mut h = [0u8; 10];
        let got = read_at(file, at, &mut h)?;
        if &h[..3] != b"ID3" {
            break;
        }
        if got < 10 {
            return Err(ProbeError::truncated(FORMAT, "the file ends inside the ID3v2 header"));
        }
        if h[6..10].iter().any(|&b| b & 0x80 != 0) {
            return Err(ProbeError::corrupt(FORMAT, "ID3v2 size is not synchsafe"));
        }
        let body =
            (u64::from(h[6]) << 21) | (u64::from(h[7]) << 14) | (u64::from(h[8]) << 7) | u64::from(h[9]);
        let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
        at += 10 + body + footer;
        if at > size {
            return Err(ProbeError::truncated(FORMAT, "the file ends inside the ID3v2 tag"));
        }
    }
    Ok(at)
}

/// The offset where the audio ends: before a trailing ID3v1 tag and an APEv2 tag.
fn audio_end(file: &mut crate::SourceFile, start: u64, size: u64) -> Result<u64> {
    let mut end = size;
    if end >= start + 128 {
        let mut tag = [0u8; 3];
        read_exact_at(file, end - 128, &mut tag, FORMAT, "ID3v1 tag")?;
        if &tag == b"TAG" {
            end -= 128;
        }
    }
    if end >= start + 32 {
        let mut footer = [0u8; 32];
        read_exact_at(file, end - 32, &mut footer, FORMAT, "APE tag footer")?;
        if &footer[..8] == b"APETAGEX" {
            // The size counts the items and the footer; a header, if flagged, adds 32.
            let flags = u32_le(&footer, 20);
            let header = if flags & 0x8000_0000 != 0 { 32 } else { 0 };
            let tag = u64::from(u32_le(&footer, 12)) + header;
            end = end.saturating_sub(tag).max(start);
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_and_rates() {
        // MPEG-1 layer III, 128 kb/s, 44.1 kHz, stereo: 417 bytes, 1152 samples.
        let h = header(&[0xFF, 0xFB, 0x90, 0x00]).unwrap();
        assert_eq!((h.sample_rate, h.frame.len, h.frame.samples, h.mono), (44_100, 417, 1152, false));
        // MPEG-2 layer III, 32 kb/s, 22.05 kHz, mono, padded: 105 bytes, 576 samples.
        let h = header(&[0xFF, 0xF3, 0x42, 0xC0]).unwrap();
        assert_eq!((h.sample_rate, h.frame.len, h.frame.samples, h.mono), (22_050, 105, 576, true));
        // MPEG-2.5 layer III, 8 kb/s, 8 kHz: 72 bytes.
        let h = header(&[0xFF, 0xE3, 0x18, 0xC0]).unwrap();
        assert_eq!((h.sample_rate, h.frame.len), (8_000, 72));
        // Free format and the reserved version are refused.
        assert!(header(&[0xFF, 0xFB, 0x00, 0x00]).is_none());
        assert!(header(&[0xFF, 0xEB, 0x90, 0x00]).is_none());
    }
}
