//! AIFF and AIFF-C: everything is in the `COMM` chunk (frame count, channels, sample
//! size, an 80-bit extended sample rate and, in AIFF-C, the compression type). The
//! chunks before it are stepped over through a buffered reader; a walk stopped by
//! `max_items` says so.

use std::io::{Read, Seek};

use asset_core::Limits;

use super::{Stream, read_at, read_exact_at, u16_be, u32_be};
use crate::ranged::WalkReader;
use crate::{ProbeError, Result, Source};

const FORMAT: &str = "aiff";

pub(super) fn probe(src: &Source, limits: &Limits) -> Result<Stream> {
    let mut file = WalkReader::open(src)?;
    let size = src.size();
    let mut form = [0u8; 12];
    read_exact_at(&mut file, 0, &mut form, FORMAT, "FORM header")?;
    let aifc = &form[8..12] == b"AIFC";
    let form_end = 8 + u64::from(u32_be(&form, 4));

    let mut pos = 12u64;
    let mut chunks = 0u64;
    while pos.saturating_add(8) <= size {
        if chunks == limits.max_items {
            return Err(ProbeError::TooLarge {
                what: "the number of AIFF chunks before the COMM chunk".into(),
                limit: limits.max_items,
            });
        }
        chunks += 1;
        let mut head = [0u8; 8];
        read_exact_at(&mut file, pos, &mut head, FORMAT, "chunk header")?;
        let len = u64::from(u32_be(&head, 4));
        if &head[..4] == b"COMM" {
            return parse_comm(&mut file, pos + 8, len, aifc);
        }
        match (pos + 8).checked_add(len + (len & 1)) {
            Some(next) => pos = next,
            None => break,
        }
    }
    if size < form_end {
        Err(ProbeError::truncated(FORMAT, "the file ends before the COMM chunk"))
    } else {
        Err(ProbeError::corrupt(FORMAT, "no COMM chunk"))
    }
}

fn parse_comm<R: Read + Seek>(file: &mut R, at: u64, len: u64, aifc: bool) -> Result<Stream> {
    let need = if aifc { 22 } else { 18 };
    if len < need {
        return Err(ProbeError::corrupt(FORMAT, format!("COMM chunk of {len} bytes, {need} needed")));
    }
    let mut b = [0u8; 22];
    if read_at(file, at, &mut b[..need as usize])? < need as usize {
        return Err(ProbeError::truncated(FORMAT, "the file ends inside the COMM chunk"));
    }
    let channels = u16_be(&b, 0);
    let frames = u32_be(&b, 2);
    let bits = u16_be(&b, 6);
    let mut rate_bytes = [0u8; 10];
    rate_bytes.copy_from_slice(&b[8..18]);
    let rate = extended_to_f64(rate_bytes).round();
    if !(1.0..=f64::from(u32::MAX)).contains(&rate) || channels == 0 {
        return Err(ProbeError::corrupt(FORMAT, "zero channels or an impossible sample rate"));
    }
    let sample_rate = rate as u32;
    let compression: [u8; 4] = if aifc { [b[18], b[19], b[20], b[21]] } else { *b"NONE" };
    let codec = codec_name(compression, bits)?;
    Ok(Stream {
        mime: "audio/aiff",
        codec,
        sample_rate,
        channels: Some(u32::from(channels)),
        duration: Some(f64::from(frames) / f64::from(sample_rate)),
    })
}

/// An IEEE 754 80-bit extended float (big-endian), as AIFF stores its sample rate.
fn extended_to_f64(b: [u8; 10]) -> f64 {
    let exponent = i32::from(u16::from_be_bytes([b[0] & 0x7F, b[1]]));
    let mut m = [0u8; 8];
    m.copy_from_slice(&b[2..10]);
    let mantissa = u64::from_be_bytes(m);
    if exponent == 0x7FFF {
        return f64::NAN;
    }
    let value = mantissa as f64 * 2f64.powi(exponent - 16383 - 63);
    if b[0] & 0x80 != 0 { -value } else { value }
}

fn codec_name(compression: [u8; 4], bits: u16) -> Result<&'static str> {
    let bytes = bits.div_ceil(8);
    let name = match (&compression, bytes) {
        (b"NONE" | b"twos", 1) => "pcm_s8",
        (b"NONE" | b"twos", 2) => "pcm_s16be",
        (b"NONE" | b"twos", 3) => "pcm_s24be",
        (b"NONE" | b"twos", 4) => "pcm_s32be",
        (b"sowt", 1) => "pcm_s8",
        (b"sowt", 2) => "pcm_s16le",
        (b"sowt", 3) => "pcm_s24le",
        (b"sowt", 4) => "pcm_s32le",
        (b"fl32" | b"FL32", _) => "pcm_f32be",
        (b"fl64" | b"FL64", _) => "pcm_f64be",
        (b"alaw" | b"ALAW", _) => "pcm_alaw",
        (b"ulaw" | b"ULAW", _) => "pcm_mulaw",
        _ => {
            return Err(ProbeError::unsupported(format!(
                "AIFF compression {:?} with {bits} bits",
                String::from_utf8_lossy(&compression)
            )));
        }
    };
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_sample_rates() {
        // 44100 and 11025 as written by ffmpeg and sox.
        assert_eq!(extended_to_f64([0x40, 0x0E, 0xAC, 0x44, 0, 0, 0, 0, 0, 0]), 44100.0);
        assert_eq!(extended_to_f64([0x40, 0x0C, 0xAC, 0x44, 0, 0, 0, 0, 0, 0]), 11025.0);
        assert_eq!(extended_to_f64([0; 10]), 0.0);
        assert!(extended_to_f64([0x7F, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0]).is_nan());
    }
}
