//! PNG chunk walk, signature to IEND: the APNG frame count (acTL), the EXIF orientation
//! (eXIf), and a file cut short anywhere (no IEND) reported as truncated.

use std::io::{BufRead, Seek};

use asset_core::Limits;

use super::{Budget, Extra, MAX_EXIF_BYTES, exif_orientation, read_array, read_vec, skip};
use crate::{ProbeError, Result};

const NAME: &str = "PNG";

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, limits: &Limits) -> Result<Extra> {
    if &read_array::<8, _>(r, NAME, "the signature")? != b"\x89PNG\r\n\x1a\n" {
        return Err(ProbeError::corrupt(NAME, "bad signature"));
    }
    let mut extra = Extra::default();
    let mut budget = Budget::new(limits, NAME);
    let mut first = true;
    loop {
        budget.spend()?;
        let head: [u8; 8] = read_array(r, NAME, "a chunk header")?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = [head[4], head[5], head[6], head[7]];
        if len > i32::MAX as u32 {
            return Err(ProbeError::corrupt(NAME, format!("chunk length {len} over 2^31-1")));
        }
        if first && &kind != b"IHDR" {
            return Err(ProbeError::corrupt(NAME, "the first chunk is not IHDR"));
        }
        first = false;
        match &kind {
            b"IEND" => {
                skip(r, u64::from(len) + 4, NAME, "the IEND chunk")?;
                return Ok(extra);
            }
            b"acTL" if len >= 8 => {
                let data: [u8; 8] = read_array(r, NAME, "the acTL chunk")?;
                let frames = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                // num_frames 0 is invalid; such a file shows as a still image.
                extra.frame_count = (frames > 0).then_some(u64::from(frames));
                skip(r, u64::from(len) - 8 + 4, NAME, "the acTL chunk")?;
            }
            b"eXIf" if u64::from(len) <= MAX_EXIF_BYTES && extra.orientation.is_none() => {
                let data = read_vec(r, u64::from(len), NAME, "the eXIf chunk")?;
                extra.orientation = exif_orientation(data);
                skip(r, 4, NAME, "a chunk CRC")?;
            }
            _ => skip(r, u64::from(len) + 4, NAME, "a chunk")?,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(data);
        v.extend_from_slice(&[0, 0, 0, 0]); // the CRC is not checked by the walk
        v
    }

    fn png(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
        f.extend(chunk(b"IHDR", &[0, 0, 0, 4, 0, 0, 0, 3, 8, 2, 0, 0, 0]));
        for c in chunks {
            f.extend_from_slice(c);
        }
        f
    }

    fn run(bytes: Vec<u8>) -> Result<Extra> {
        walk(&mut Cursor::new(bytes), &Limits::default())
    }

    #[test]
    fn actl_gives_the_frame_count() {
        let f = png(&[chunk(b"acTL", &[0, 0, 0, 7, 0, 0, 0, 0]), chunk(b"IDAT", b"xx"), chunk(b"IEND", b"")]);
        assert_eq!(run(f).unwrap().frame_count, Some(7));
    }

    #[test]
    fn still_png_has_no_frame_count() {
        let f = png(&[chunk(b"IDAT", b"xx"), chunk(b"IEND", b"")]);
        assert_eq!(run(f).unwrap(), Extra::default());
    }

    #[test]
    fn missing_iend_is_truncated() {
        let mut f = png(&[chunk(b"IDAT", &[0; 100]), chunk(b"IEND", b"")]);
        f.truncate(60);
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn absurd_chunk_length_is_corrupt() {
        let mut f = png(&[]);
        f.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        f.extend_from_slice(b"IDAT");
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }
}
