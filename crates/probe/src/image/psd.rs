//! Photoshop PSD and PSB: the 26-byte file header (`8BPS`, version 1 or 2, channels,
//! height, width, depth, colour mode), then the lengths of the colour mode data, image
//! resources and layer-and-mask sections, each skipped by seeking: a section that runs
//! past the end of the file, or a merged image (raw samples, or RLE's row-length table)
//! that does not fit in what is left, is `truncated`. Hand-written: no crate reads the header without loading the layers.

use std::io::{BufRead, Seek, SeekFrom};

use super::{Extra, read_array};
use crate::{ProbeError, Result};

const NAME: &str = "PSD";
pub(crate) const SIGNATURE: &[u8] = b"8BPS";

/// `8BPS` then version 1 (PSD) or 2 (PSB).
pub(crate) fn sniff(h: &[u8]) -> bool {
    h.len() >= 6 && h.starts_with(SIGNATURE) && matches!(h[4..6], [0, 1] | [0, 2])
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64) -> Result<Extra> {
    let h: [u8; 26] = read_array(r, NAME, "the header")?;
    if &h[..4] != SIGNATURE {
        return Err(ProbeError::corrupt(NAME, "no 8BPS magic"));
    }
    let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let version = be16(4);
    let (channels, height, width, depth, mode) = (be16(12), be32(14), be32(18), be16(22), be16(24));
    // PSD sides are at most 30,000; PSB (version 2) at most 300,000.
    let max_side = match version {
        1 => 30_000,
        2 => 300_000,
        v => return Err(ProbeError::corrupt(NAME, format!("version {v}"))),
    };
    if !(1..=56).contains(&channels)
        || !matches!(depth, 1 | 8 | 16 | 32)
        || !matches!(mode, 0..=4 | 7..=9)
        || width > max_side
        || height > max_side
    {
        return Err(ProbeError::corrupt(
            NAME,
            format!("{channels} channels, depth {depth}, mode {mode}, {width}x{height}"),
        ));
    }
    // Colour mode data and image resources have 4-byte lengths; layer and mask
    // information has 8 in a PSB.
    let mut pos = 26u64;
    for (what, wide) in [
        ("colour mode data", false),
        ("image resources", false),
        ("layer and mask information", version == 2),
    ] {
        r.seek(SeekFrom::Start(pos))?;
        let len = if wide {
            u64::from_be_bytes(read_array(r, NAME, what)?)
        } else {
            u64::from(u32::from_be_bytes(read_array(r, NAME, what)?))
        };
        pos = pos.saturating_add(if wide { 8 } else { 4 }).saturating_add(len);
        if pos > file_size {
            return Err(ProbeError::truncated(
                NAME,
                format!("the {what} end at {pos}, past the end of the file ({file_size})"),
            ));
        }
    }
    // The merged image: raw samples have a size the header fixes; RLE starts with a
    // table of one row length per channel and row. Either must fit in the file.
    r.seek(SeekFrom::Start(pos))?;
    let compression = u16::from_be_bytes(read_array(r, NAME, "the image data section")?);
    let rows = u64::from(channels) * u64::from(height);
    let needed = match compression {
        0 => rows * (u64::from(width) * u64::from(depth)).div_ceil(8),
        1 => rows * if version == 2 { 4 } else { 2 },
        _ => 0,
    };
    if pos + 2 + needed > file_size {
        return Err(ProbeError::truncated(
            NAME,
            format!("the image data needs {needed} bytes, the file has fewer"),
        ));
    }
    Ok(Extra { stored: Some((width, height)), ..Extra::default() })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn psd(version: u16, w: u32, h: u32, resources: u32) -> Vec<u8> {
        let mut f = SIGNATURE.to_vec();
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&3u16.to_be_bytes());
        f.extend_from_slice(&h.to_be_bytes());
        f.extend_from_slice(&w.to_be_bytes());
        f.extend_from_slice(&8u16.to_be_bytes());
        f.extend_from_slice(&3u16.to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes());
        f.extend_from_slice(&resources.to_be_bytes());
        f.resize(f.len() + resources as usize, 0);
        f.extend_from_slice(&[0; 4][..if version == 2 { 4 } else { 0 }]);
        f.extend_from_slice(&0u32.to_be_bytes());
        // RLE: one 2-byte (PSB: 4-byte) row length per channel and row.
        f.extend_from_slice(&[0, 1]);
        f.resize(f.len() + 3 * h as usize * if version == 2 { 4 } else { 2 }, 0);
        f
    }

    fn run(f: Vec<u8>) -> Result<Extra> {
        let n = f.len() as u64;
        walk(&mut Cursor::new(f), n)
    }

    #[test]
    fn psd_and_psb_headers() {
        assert_eq!(run(psd(1, 65, 33, 12)).unwrap().stored, Some((65, 33)));
        assert_eq!(run(psd(2, 65, 33, 0)).unwrap().stored, Some((65, 33)));
        assert_eq!(run(psd(1, 40_000, 33, 0)).unwrap_err().code().as_str(), "corrupt_file");
        assert_eq!(run(psd(2, 40_000, 33, 0)).unwrap().stored, Some((40_000, 33)));
    }

    #[test]
    fn sections_past_the_end_are_truncated() {
        let f = psd(1, 65, 33, 12);
        for cut in [20, 30, 40, f.len() - 1] {
            assert_eq!(run(f[..cut].to_vec()).unwrap_err().code().as_str(), "truncated", "cut {cut}");
        }
    }
}
