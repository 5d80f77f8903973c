//! ADTS (raw AAC): no header counts the frames, so the 7-byte frame headers are walked,
//! each frame holding 1024 samples per raw data block. HE-AAC in ADTS is signalled only
//! implicitly, by an SBR extension element inside each frame: we look for it (see
//! [`carries_sbr`]) and report what a decoder plays, as ffprobe does.

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
    let core_rate = RATES[usize::from(first.rate_index)];
    let same_stream = |b: &[u8]| header(b).filter(|h| h.rate_index == first.rate_index).map(|h| h.frame);
    let walk = walk_frames(src, start + at as u64, end, HEADER_LEN, limits, same_stream)?;
    let core_channels = match first.channel_config {
        0 => None,
        7 => Some(8),
        c => Some(u32::from(c)),
    };
    let (sample_rate, channels) = decoded_layout(&buf[at..], core_rate, core_channels);
    Ok(Stream {
        mime: "audio/aac",
        codec: "aac",
        sample_rate,
        channels,
        // Seconds are the core's: SBR doubles the samples and the rate alike.
        duration: Some(walk.samples / f64::from(core_rate)),
    })
}

/// How many leading frames must all carry SBR for the stream to count as HE-AAC.
pub(crate) const SBR_FRAMES: usize = 4;

/// The sample rate and channel count a decoder outputs for an ADTS stream whose first
/// frames are in `frames`: with implicit SBR the rate doubles, and a mono core is
/// played as stereo (FFmpeg's decoder assumes parametric stereo there, and ffprobe
/// reports what it decodes: HE-AACv2, 2 channels). One frame examined is enough when
/// the stream has only one; otherwise every one of the first [`SBR_FRAMES`] must carry
/// SBR, so that a stray bit pattern in one frame does not change the answer.
pub(crate) fn decoded_layout(
    frames: &[u8],
    core_rate: u32,
    core_channels: Option<u32>,
) -> (u32, Option<u32>) {
    let mut at = 0usize;
    let mut seen = 0;
    while seen < SBR_FRAMES {
        let Some(h) = header(&frames[at.min(frames.len())..]) else { break };
        let Ok(len) = usize::try_from(h.frame.len) else { break };
        let Some(frame) = frames.get(at..at.saturating_add(len)) else { break };
        if carries_sbr(frame) != Some(true) {
            return (core_rate, core_channels);
        }
        seen += 1;
        at += len;
    }
    if seen == 0 {
        return (core_rate, core_channels);
    }
    let channels = match core_channels {
        Some(1) => Some(2),
        other => other,
    };
    (core_rate.saturating_mul(2), channels)
}

/// Whether the raw data block of one ADTS frame (header included) ends with a fill
/// element carrying SBR data (`EXT_SBR_DATA`/`_CRC`): `None` when the frame cannot tell
/// (several raw data blocks, no END element). The channel elements before it cannot be
/// skipped without Huffman-decoding the spectrum, so the element chain is found from
/// the end: END is the last three bits before the zero padding, and a fill element
/// counts when its declared length ends exactly where END, or another such fill
/// element, starts. Linear in the frame's bits (at most 8191 bytes).
pub(crate) fn carries_sbr(frame: &[u8]) -> Option<bool> {
    if frame.len() < HEADER_LEN || frame[6] & 3 != 0 {
        return None;
    }
    block_carries_sbr(frame.get(if frame[1] & 1 == 1 { 7 } else { 9 }..)?)
}

/// The largest raw data block a decoder accepts: 6144 bits per channel (ISO/IEC
/// 14496-3 §4.5.3.2) for 8 channels. A bigger access unit is not looked into.
pub(crate) const MAX_BLOCK_BYTES: usize = 6144;

/// Whether every one of the leading access units (at most [`SBR_FRAMES`], at least one)
/// carries an SBR extension element: the implicit-signalling test of containers that
/// hold bare access units (FLV, Matroska), as [`decoded_layout`] is for ADTS.
pub(crate) fn units_carry_sbr<'a>(units: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut seen = 0;
    for unit in units.into_iter().take(SBR_FRAMES) {
        if unit.len() > MAX_BLOCK_BYTES || block_carries_sbr(unit) != Some(true) {
            return false;
        }
        seen += 1;
    }
    seen > 0
}

/// [`carries_sbr`] for one raw data block without a header: an access unit of an AAC
/// track in MP4, for one.
pub(crate) fn block_carries_sbr(body: &[u8]) -> Option<bool> {
    let bit = |p: usize| (body[p / 8] >> (7 - p % 8)) & 1;
    let bits = |p: usize, n: usize| -> Option<usize> {
        if p + n > body.len() * 8 {
            return None;
        }
        Some((p..p + n).fold(0usize, |v, q| (v << 1) | usize::from(bit(q))))
    };
    let last_byte = body.len().checked_sub(1)?;
    // A block ends with END and zero padding within its last byte: a zero last byte
    // is not a block (and has no last one bit to count back from).
    if body[last_byte] == 0 {
        return None;
    }
    let last_one = last_byte * 8 + 7 - body[last_byte].trailing_zeros() as usize;
    if last_one < 2 {
        return None;
    }
    let end_at = last_one - 2;
    if bits(end_at, 3)? != 0b111 {
        return None;
    }
    // chains[p]: a chain of fill elements from bit p reaches END exactly.
    let mut chains = vec![false; end_at + 1];
    chains[end_at] = true;
    let mut sbr = false;
    for p in (0..end_at).rev() {
        if bits(p, 3) != Some(0b110) {
            continue;
        }
        let Some(mut count) = bits(p + 3, 4) else { continue };
        let mut q = p + 7;
        if count == 15 {
            let Some(esc) = bits(q, 8) else { continue };
            count += esc;
            count -= 1;
            q += 8;
        }
        let next = q + 8 * count;
        if next <= end_at && chains[next] {
            chains[p] = true;
            if count > 0 && matches!(bits(q, 4), Some(0b1101 | 0b1110)) {
                sbr = true;
            }
        }
    }
    Some(sbr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_ending_in_a_zero_byte_is_no_block() {
        // Found by the video fuzz target in an MP4's first AAC access unit: the bit
        // arithmetic ran before the zero check and underflowed.
        assert_eq!(block_carries_sbr(&[0x00]), None);
        assert_eq!(block_carries_sbr(&[0xDE, 0xAD, 0x00]), None);
        assert_eq!(block_carries_sbr(&[]), None);
        assert!(!units_carry_sbr([&[0x21u8, 0x00][..]]));
    }

    /// An AAC-LC frame (7-byte header, protection absent) around `body` bits.
    fn frame(bits: &str) -> Vec<u8> {
        let mut bits = bits.to_string();
        bits += &"0".repeat((8 - bits.len() % 8) % 8);
        let body: Vec<u8> =
            (0..bits.len()).step_by(8).map(|k| u8::from_str_radix(&bits[k..k + 8], 2).unwrap()).collect();
        let len = 7 + body.len();
        // 22.05 kHz (index 7), mono.
        let mut f = vec![0xFF, 0xF1, 0x5C, 0x40, 0, 0, 0xFC];
        f[3] |= (len >> 11) as u8;
        f[4] = (len >> 3) as u8;
        f[5] = ((len & 7) << 5) as u8 | 0x1F;
        f.extend_from_slice(&body);
        f
    }

    /// A made-up channel element, a fill element carrying SBR (count 1, type 1101, four
    /// bits of SBR), an ordinary fill element (count 1, type 0000) and END.
    const CORE: &str = "000101101011010011101011";
    fn sbr_fill() -> String {
        ["110", "0001", "1101", "0000"].concat()
    }
    fn plain_fill() -> String {
        ["110", "0001", "0000", "0000"].concat()
    }
    const END: &str = "111";

    #[test]
    fn an_sbr_fill_element_before_end_is_found() {
        assert_eq!(carries_sbr(&frame(&[CORE, &sbr_fill(), END].concat())), Some(true));
        assert_eq!(carries_sbr(&frame(&[CORE, &plain_fill(), END].concat())), Some(false));
        // SBR followed by another fill element still counts.
        assert_eq!(carries_sbr(&frame(&[CORE, &sbr_fill(), &plain_fill(), END].concat())), Some(true));
        // No END element: cannot tell.
        assert_eq!(carries_sbr(&frame("0001011010110000")), None);
    }

    #[test]
    fn implicit_sbr_doubles_the_rate_and_makes_mono_stereo() {
        let sbr = frame(&[CORE, &sbr_fill(), END].concat());
        let stream = [sbr.clone(), sbr.clone(), sbr.clone(), sbr.clone(), sbr.clone()].concat();
        assert_eq!(decoded_layout(&stream, 22_050, Some(1)), (44_100, Some(2)));
        assert_eq!(decoded_layout(&stream, 22_050, Some(2)), (44_100, Some(2)));
        let plain = frame(&[CORE, &plain_fill(), END].concat());
        let mixed = [sbr.clone(), plain, sbr.clone(), sbr].concat();
        assert_eq!(decoded_layout(&mixed, 22_050, Some(1)), (22_050, Some(1)));
    }
}
