//! GIF block walk: counts image descriptors up to the trailer, stepping over colour
//! tables and LZW sub-blocks without decoding them. A file that ends before the
//! trailer is truncated.

use std::io::{BufRead, Seek};

use asset_core::Limits;

use super::{Budget, Extra, read_array, skip};
use crate::{ProbeError, Result};

const NAME: &str = "GIF";

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, limits: &Limits) -> Result<Extra> {
    let header: [u8; 13] = read_array(r, NAME, "the header")?;
    if &header[..6] != b"GIF87a" && &header[..6] != b"GIF89a" {
        return Err(ProbeError::corrupt(NAME, "bad signature"));
    }
    skip_color_table(r, header[10])?;
    let mut budget = Budget::new(limits, NAME);
    let mut frames: u64 = 0;
    loop {
        budget.spend()?;
        let [introducer] = read_array(r, NAME, "a block introducer")?;
        match introducer {
            // Image descriptor: position, size, flags; then the LZW minimum code size.
            0x2C => {
                let desc: [u8; 9] = read_array(r, NAME, "an image descriptor")?;
                skip_color_table(r, desc[8])?;
                skip(r, 1, NAME, "image data")?;
                skip_sub_blocks(r, &mut budget)?;
                frames += 1;
            }
            0x21 => {
                skip(r, 1, NAME, "an extension label")?;
                skip_sub_blocks(r, &mut budget)?;
            }
            0x3B => break,
            other => return Err(ProbeError::corrupt(NAME, format!("unknown block introducer {other:#04X}"))),
        }
    }
    if frames == 0 {
        return Err(ProbeError::corrupt(NAME, "no image in the file"));
    }
    Ok(Extra { frame_count: (frames > 1).then_some(frames), ..Extra::default() })
}

/// Skips the colour table a packed-fields byte announces (bit 7 set; 3·2^(n+1) bytes).
fn skip_color_table<R: BufRead + Seek>(r: &mut R, packed: u8) -> Result<()> {
    if packed & 0x80 != 0 {
        skip(r, 3 << ((packed & 0x07) + 1), NAME, "a colour table")?;
    }
    Ok(())
}

/// Skips data sub-blocks (a length byte, then that many bytes) up to the empty one.
fn skip_sub_blocks<R: BufRead + Seek>(r: &mut R, budget: &mut Budget) -> Result<()> {
    loop {
        budget.spend()?;
        let [len] = read_array(r, NAME, "a data sub-block")?;
        if len == 0 {
            return Ok(());
        }
        skip(r, u64::from(len), NAME, "a data sub-block")?;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A GIF89a, 2x2, with a 2-colour global table and `frames` images of one
    /// sub-block each, each behind a graphic control extension.
    fn gif(frames: usize) -> Vec<u8> {
        let mut f = b"GIF89a\x02\0\x02\0\x80\0\0".to_vec();
        f.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
        f.extend_from_slice(b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\0\0\0");
        for _ in 0..frames {
            f.extend_from_slice(&[0x21, 0xF9, 4, 0, 10, 0, 0, 0]);
            f.extend_from_slice(&[0x2C, 0, 0, 0, 0, 2, 0, 2, 0, 0]);
            f.extend_from_slice(&[2, 3, 0x84, 0x1D, 0x05, 0]);
        }
        f.push(0x3B);
        f
    }

    fn run(bytes: Vec<u8>) -> Result<Extra> {
        walk(&mut Cursor::new(bytes), &Limits::default())
    }

    #[test]
    fn counts_frames_of_an_animation() {
        assert_eq!(run(gif(3)).unwrap().frame_count, Some(3));
    }

    #[test]
    fn a_single_frame_has_no_frame_count() {
        assert_eq!(run(gif(1)).unwrap().frame_count, None);
    }

    #[test]
    fn lzw_sub_block_cut_short_is_truncated() {
        let mut f = gif(2);
        // Cut inside the second image's LZW sub-block (after its length byte).
        let cut = f.len() - 4;
        f.truncate(cut);
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn missing_trailer_is_truncated() {
        let mut f = gif(2);
        f.pop();
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn unknown_block_is_corrupt() {
        let mut f = gif(1);
        let n = f.len();
        f[n - 1] = 0x99;
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn sub_block_walk_is_bounded_by_max_items() {
        let mut f = gif(1);
        f.pop();
        // An extension with many one-byte sub-blocks.
        f.extend_from_slice(&[0x21, 0xFE]);
        for _ in 0..50 {
            f.extend_from_slice(&[1, b'x']);
        }
        f.extend_from_slice(&[0, 0x3B]);
        let limits = Limits { max_items: 20, ..Limits::default() };
        let err = walk(&mut Cursor::new(f), &limits).unwrap_err();
        assert_eq!(err.code().as_str(), "too_large");
    }
}
