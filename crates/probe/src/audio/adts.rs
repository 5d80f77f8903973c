//! ADTS (raw AAC): no header counts the frames, so the 7-byte frame headers are walked,
//! each frame holding 1024 samples per raw data block.

use asset_core::Limits;

use super::{Frame, Stream, first_frame, read_at, walk_frames};
use crate::{ProbeError, Result, Source};

const FORMAT: &str = "aac";
const HEADER_LEN: usize = 7;
const RATES: [u32; 13] =
    [96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000, 7_350];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    rate_index: u8,
    /// 0: defined in-band (a program config element), else 1–6 or 7 for 7.1.
    channel_config: u8,
    frame: Frame,
}

fn header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER_LEN || b[0] != 0xFF || b[1] & 0xF6 != 0xF0 {
        return None;
    }
    let rate_index = (b[2] >> 2) & 0xF;
    if usize::from(rate_index) >= RATES.len() {
        return None;
    }
    let channel_config = ((b[2] & 1) << 2) | (b[3] >> 6);
    let len = (u64::from(b[3] & 3) << 11) | (u64::from(b[4]) << 3) | u64::from(b[5] >> 5);
    let blocks = u64::from(b[6] & 3) + 1;
    if len < HEADER_LEN as u64 {
        return None;
    }
    Some(Header { rate_index, channel_config, frame: Frame { len, samples: 1024 * blocks } })
}

/// Probes the ADTS stream between `start` and `end` (after an ID3v2 tag when the file
/// has one).
pub(super) fn probe(src: &Source, start: u64, end: u64, limits: &Limits) -> Result<Stream> {
    let mut buf = vec![0u8; (end.saturating_sub(start)).min(64 * 1024) as usize];
    let n = read_at(&mut src.file()?, start, &mut buf)?;
    buf.truncate(n);
    let at = first_frame(&buf, HEADER_LEN, |b| header(b).map(|h| h.frame)).ok_or_else(|| {
        if buf.len() < HEADER_LEN {
            ProbeError::truncated(FORMAT, "the file ends inside the first ADTS header")
        } else {
            ProbeError::corrupt(FORMAT, "no ADTS frame where the audio should start")
        }
    })?;
    let first = header(&buf[at..]).ok_or_else(|| ProbeError::corrupt(FORMAT, "first frame vanished"))?;
    let sample_rate = RATES[usize::from(first.rate_index)];
    let same_stream = |b: &[u8]| header(b).filter(|h| h.rate_index == first.rate_index).map(|h| h.frame);
    let walk = walk_frames(src, start + at as u64, end, HEADER_LEN, limits, same_stream)?;
    Ok(Stream {
        mime: "audio/aac",
        codec: "aac",
        sample_rate,
        channels: match first.channel_config {
            0 => None,
            7 => Some(8),
            c => Some(u32::from(c)),
        },
        duration: Some(walk.samples / f64::from(sample_rate)),
    })
}
