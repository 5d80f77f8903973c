//! AMR-NB and AMR-WB storage format (RFC 4867 section 5: `#!AMR\n`, `#!AMR-WB\n`): mono,
//! 8 or 16 kHz, 20 ms frames whose size the first byte's frame type gives. The duration
//! is the file's frames at the first frame's size, as ffprobe estimates it from the bit
//! rate: exact for the constant-mode files encoders write, an estimate when modes vary.
//! Header only: the first frame is the only read.

use super::{Stream, read_at};
use crate::{ProbeError, Result, Source};

const FORMAT: &str = "amr";
/// Payload bytes per frame type (speech modes, SID, then reserved and NO_DATA = 0).
const NB_SIZES: [u64; 16] = [12, 13, 15, 17, 19, 20, 26, 31, 5, 6, 5, 5, 0, 0, 0, 0];
const WB_SIZES: [u64; 16] = [17, 23, 32, 36, 40, 46, 50, 58, 60, 5, 0, 0, 0, 0, 0, 0];

pub(super) fn probe(src: &Source) -> Result<Stream> {
    let head = src.head();
    let (magic_len, rate, sizes, codec) = if head.starts_with(b"#!AMR-WB\n") {
        (9u64, 16_000, &WB_SIZES, "amr_wb")
    } else if head.starts_with(b"#!AMR\n") {
        (6u64, 8_000, &NB_SIZES, "amr_nb")
    } else {
        return Err(ProbeError::corrupt(FORMAT, "no AMR magic"));
    };
    let mut first = [0u8; 1];
    let duration = if read_at(&mut src.file()?, magic_len, &mut first)? == 1 {
        let frame_len = 1 + sizes[usize::from((first[0] >> 3) & 0x0F)];
        Some(((src.size() - magic_len) / frame_len) as f64 * 0.02)
    } else {
        Some(0.0)
    };
    Ok(Stream {
        mime: if codec == "amr_wb" { "audio/amr-wb" } else { "audio/amr" },
        codec,
        sample_rate: rate,
        channels: Some(1),
        duration,
    })
}
