//! FLAC: the mandatory first metadata block, STREAMINFO, holds the sample rate, the
//! channels and the total number of samples; nothing else is read. The declared total
//! must fit in the file: every frame takes some bytes (at least [`MIN_FRAME_BYTES`]) and
//! holds at most STREAMINFO's maximum block size, so 2^36 samples in 17 KB is a cut or
//! lying file, never 50 days of audio.

use std::io::{Read, Seek};

use super::{Stream, read_exact_at, u32_be};
use crate::{ProbeError, Result};

const FORMAT: &str = "flac";

/// The fewest bytes a FLAC frame can take: a 6-byte header (sync, block size and rate
/// codes, a 1-byte frame number, CRC-8) and a 2-byte CRC-16, even with every subframe
/// constant (which takes at least one more byte per channel).
const MIN_FRAME_BYTES: u64 = 8;

/// Reads the native FLAC stream that starts at `at` (after an ID3v2 tag, for MP3-like
/// files that carry one) in a file of `file_size` bytes.
pub(super) fn probe<R: Read + Seek>(file: &mut R, at: u64, file_size: u64) -> Result<Stream> {
    let mut b = [0u8; 42];
    read_exact_at(file, at, &mut b, FORMAT, "STREAMINFO block")?;
    if &b[..4] != b"fLaC" {
        return Err(ProbeError::corrupt(FORMAT, "no fLaC marker"));
    }
    let block_type = b[4] & 0x7F;
    let block_len = u32_be(&b, 4) & 0x00FF_FFFF;
    if block_type != 0 || block_len < 34 {
        return Err(ProbeError::corrupt(FORMAT, "the first metadata block is not a STREAMINFO"));
    }
    let mut streaminfo = [0u8; 34];
    streaminfo.copy_from_slice(&b[8..42]);
    let stream = parse_streaminfo(&streaminfo, "audio/flac")?;
    let max_block = u64::from(u16::from_be_bytes([streaminfo[2], streaminfo[3]]));
    let total_samples = u64::from_be_bytes([
        0,
        0,
        0,
        streaminfo[13] & 0x0F,
        streaminfo[14],
        streaminfo[15],
        streaminfo[16],
        streaminfo[17],
    ]);
    if max_block > 0 && total_samples > 0 {
        let least = (at + 8 + u64::from(block_len))
            .saturating_add(total_samples.div_ceil(max_block) * MIN_FRAME_BYTES);
        if least > file_size {
            return Err(ProbeError::truncated(
                FORMAT,
                format!(
                    "STREAMINFO declares {total_samples} samples in blocks of at most {max_block}, \
                     which take at least {least} bytes; the file has {file_size}"
                ),
            ));
        }
    }
    Ok(stream)
}

/// STREAMINFO's 34 bytes, shared with FLAC in Ogg.
pub(super) fn parse_streaminfo(si: &[u8; 34], mime: &'static str) -> Result<Stream> {
    let mut packed = [0u8; 8];
    packed.copy_from_slice(&si[10..18]);
    let x = u64::from_be_bytes(packed);
    let sample_rate = (x >> 44) as u32;
    let channels = ((x >> 41) & 0x7) as u32 + 1;
    let total_samples = x & 0xF_FFFF_FFFF;
    if sample_rate == 0 {
        return Err(ProbeError::corrupt(FORMAT, "STREAMINFO sample rate is 0"));
    }
    Ok(Stream {
        mime,
        codec: "flac",
        sample_rate,
        channels: Some(channels),
        // 0 means "unknown" (a live encoder that never rewrote the header).
        duration: (total_samples > 0).then(|| total_samples as f64 / f64::from(sample_rate)),
    })
}
