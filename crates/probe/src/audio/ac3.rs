//! AC-3 and E-AC-3 (Dolby Digital / Plus) sync frame headers: sample rate, channels
//! (LFE included, as ffprobe counts them) and the frame's length and sample count.
//! Shared by the transport and program stream readers and the raw `.ac3`/`.eac3` files,
//! whose duration is the file size over the first frame's bit rate, as ffprobe
//! estimates it: the first frame is the only read.

use super::{Stream, read_at};
use crate::{ProbeError, Result, Source};

/// What one sync frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ac3Params {
    /// ffprobe's codec name: `ac3` or `eac3`.
    pub codec: &'static str,
    pub sample_rate: u32,
    pub channels: u32,
    /// Samples per channel in one frame (1536 for AC-3; 256 × blocks for E-AC-3).
    pub frame_samples: u32,
    /// The whole frame, header included.
    pub frame_len: u32,
    /// The nominal bit rate (AC-3 only: an E-AC-3 header does not state one).
    pub bit_rate: Option<u32>,
}

const AC3_KBPS: [u32; 19] =
    [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 576, 640];
const CHANNELS: [u32; 8] = [2, 1, 2, 3, 3, 4, 4, 5];

/// The parameters of the first sync frame in `buf` whose header parses.
pub(crate) fn ac3_params(buf: &[u8]) -> Option<Ac3Params> {
    memchr::memmem::find_iter(buf, &[0x0B, 0x77]).find_map(|i| header(&buf[i..]))
}

/// Parses a sync frame header at the start of `h` (sync word included).
pub(crate) fn header(h: &[u8]) -> Option<Ac3Params> {
    if h.len() < 8 || h[0] != 0x0B || h[1] != 0x77 {
        return None;
    }
    let bsid = h[5] >> 3;
    match bsid {
        0..=10 => {
            let fscod = h[4] >> 6;
            let code = usize::from(h[4] & 0x3F);
            let kbps = *AC3_KBPS.get(code / 2)?;
            let (sample_rate, frame_len) = match fscod {
                0 => (48_000, 4 * kbps),
                1 => (44_100, 2 * (kbps * 1000 * 1536 / 44_100 / 16 + (code as u32 & 1))),
                2 => (32_000, 6 * kbps),
                _ => return None,
            };
            let acmod = h[6] >> 5;
            // lfeon follows acmod and the mix levels that acmod implies.
            let mut bit = 3;
            if acmod & 1 != 0 && acmod != 1 {
                bit += 2;
            }
            if acmod & 4 != 0 {
                bit += 2;
            }
            if acmod == 2 {
                bit += 2;
            }
            let lfe = u32::from((u16::from_be_bytes([h[6], h[7]]) >> (15 - bit)) & 1);
            Some(Ac3Params {
                codec: "ac3",
                sample_rate,
                channels: CHANNELS[usize::from(acmod)] + lfe,
                frame_samples: 1536,
                frame_len,
                bit_rate: Some(kbps * 1000),
            })
        }
        11..=16 => {
            let frame_len = ((u32::from(h[2] & 0x07) << 8) | u32::from(h[3])) * 2 + 2;
            let fscod = h[4] >> 6;
            let code = (h[4] >> 4) & 3;
            let (sample_rate, blocks) = match fscod {
                0 => (48_000, [1, 2, 3, 6][usize::from(code)]),
                1 => (44_100, [1, 2, 3, 6][usize::from(code)]),
                2 => (32_000, [1, 2, 3, 6][usize::from(code)]),
                _ => ([24_000, 22_050, 16_000, 0][usize::from(code)], 6),
            };
            if sample_rate == 0 {
                return None;
            }
            let acmod = (h[4] >> 1) & 7;
            let lfe = u32::from(h[4] & 1);
            Some(Ac3Params {
                codec: "eac3",
                sample_rate,
                channels: CHANNELS[usize::from(acmod)] + lfe,
                frame_samples: 256 * blocks,
                frame_len,
                bit_rate: None,
            })
        }
        _ => None,
    }
}

/// Whether `head` starts with an AC-3/E-AC-3 sync frame followed by another one (or by
/// the end of the head): one sync word alone is too weak a signature.
pub(crate) fn starts_with_frames(head: &[u8]) -> bool {
    let Some(first) = header(head) else { return false };
    match head.get(first.frame_len as usize..) {
        Some(rest) if rest.len() >= 8 => header(rest).is_some(),
        _ => true,
    }
}

/// A raw AC-3 or E-AC-3 elementary stream.
pub(super) fn probe(src: &Source) -> Result<Stream> {
    let mut h = [0u8; 8];
    if read_at(&mut src.file()?, 0, &mut h)? < h.len() {
        return Err(ProbeError::truncated("ac3", "the file ends inside the first sync frame header"));
    }
    let p = header(&h).ok_or_else(|| ProbeError::corrupt("ac3", "no sync frame at the start"))?;
    if p.frame_len < 8 || p.sample_rate == 0 {
        return Err(ProbeError::corrupt("ac3", "a sync frame of an impossible length"));
    }
    // Frames of a constant length (AC-3 always; E-AC-3 as encoders write it): the
    // file's frames times the samples of each.
    let seconds_per_byte = f64::from(p.frame_samples) / f64::from(p.sample_rate) / f64::from(p.frame_len);
    Ok(Stream {
        mime: if p.codec == "eac3" { "audio/eac3" } else { "audio/ac3" },
        codec: p.codec,
        sample_rate: p.sample_rate,
        channels: Some(p.channels),
        duration: Some(src.size() as f64 * seconds_per_byte),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ac3_stereo_and_five_one() {
        // 48 kHz, 192 kb/s (code 20), bsid 8, acmod 2 (stereo), dsurmod, lfe off.
        let h = [0x0B, 0x77, 0, 0, 0x14, 0x40, 0x40, 0x00];
        let p = header(&h).unwrap();
        assert_eq!((p.codec, p.sample_rate, p.channels, p.frame_len), ("ac3", 48_000, 2, 768));
        // acmod 7 (3/2), cmixlev, surmixlev, then lfeon = 1.
        let h = [0x0B, 0x77, 0, 0, 0x1C, 0x40, 0xE1, 0x00];
        let p = header(&h).unwrap();
        assert_eq!(p.channels, 6);
        assert_eq!(header(&[0x0B, 0x77, 0, 0, 0xC0, 0x40, 0, 0]), None);
    }
}
