//! OpenEXR: the first part's header attributes, read one by one up to the empty name
//! that ends them. The size reported is the `dataWindow`'s (the pixels the file holds
//! and a decoder returns, as ImageMagick and exiftool's ImageWidth give it); a
//! `displayWindow` that differs is only a framing hint. Hand-written: the `exr` crate
//! reads every header into memory with its own allocation rules. Attribute names are
//! bounded (31 bytes, 255 with the long-names flag), values are skipped by seeking
//! unless they are one of the three we read, and for a single-part scan-line file the
//! last entry of the offset table must point inside the file, so a cut file is
//! `truncated` after one more 8-byte read.

use std::io::{BufRead, Read, Seek, SeekFrom};

use asset_core::Limits;

use super::{Budget, Extra, read_array, skip};
use crate::{ProbeError, Result};

const NAME: &str = "OpenEXR";
pub(crate) const SIGNATURE: &[u8] = b"\x76\x2f\x31\x01";
const TILED: u32 = 0x200;
const LONG_NAMES: u32 = 0x400;
const NON_IMAGE: u32 = 0x800;
const MULTI_PART: u32 = 0x1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Box2i {
    x_min: i32,
    y_min: i32,
    x_max: i32,
    y_max: i32,
}

impl Box2i {
    fn size(self) -> Option<(u32, u32)> {
        let w = i64::from(self.x_max) - i64::from(self.x_min) + 1;
        let h = i64::from(self.y_max) - i64::from(self.y_min) + 1;
        Some((u32::try_from(w).ok().filter(|&w| w > 0)?, u32::try_from(h).ok().filter(|&h| h > 0)?))
    }
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let head: [u8; 8] = read_array(r, NAME, "the header")?;
    if &head[..4] != SIGNATURE {
        return Err(ProbeError::corrupt(NAME, "no OpenEXR magic"));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if version & 0xFF != 2 {
        return Err(ProbeError::corrupt(NAME, format!("version {}", version & 0xFF)));
    }
    let max_name = if version & LONG_NAMES != 0 { 255 } else { 31 };
    let mut budget = Budget::new(limits, NAME);
    let (mut data_window, mut compression) = (None, None);
    loop {
        budget.spend()?;
        let name = read_name(r, max_name, "an attribute name")?;
        if name.is_empty() {
            break;
        }
        let kind = read_name(r, max_name, "an attribute type")?;
        let size = i32::from_le_bytes(read_array(r, NAME, "an attribute size")?);
        let size = u64::try_from(size)
            .map_err(|_| ProbeError::corrupt(NAME, format!("an attribute of size {size}")))?;
        match (name.as_slice(), kind.as_slice()) {
            (b"dataWindow", b"box2i") if size == 16 => {
                let v: [u8; 16] = read_array(r, NAME, "the dataWindow")?;
                let i = |k: usize| i32::from_le_bytes([v[k], v[k + 1], v[k + 2], v[k + 3]]);
                data_window = Some(Box2i { x_min: i(0), y_min: i(4), x_max: i(8), y_max: i(12) });
            }
            (b"compression", b"compression") if size == 1 => {
                let [c] = read_array(r, NAME, "the compression")?;
                compression = Some(c);
            }
            _ => skip(r, size, NAME, "an attribute value")?,
        }
    }
    let window = data_window.ok_or_else(|| ProbeError::corrupt(NAME, "no dataWindow attribute"))?;
    let (w, h) =
        window.size().ok_or_else(|| ProbeError::corrupt(NAME, format!("an empty dataWindow {window:?}")))?;
    if version & (TILED | NON_IMAGE | MULTI_PART) == 0 {
        let per_chunk =
            match compression.ok_or_else(|| ProbeError::corrupt(NAME, "no compression attribute"))? {
                0..=2 => 1,          // none, RLE, ZIPS
                3 | 5 => 16,         // ZIP, PXR24
                4 | 6 | 7 | 8 => 32, // PIZ, B44, B44A, DWAA
                9 => 256,            // DWAB
                c => return Err(ProbeError::corrupt(NAME, format!("compression {c}"))),
            };
        let chunks = u64::from(h).div_ceil(per_chunk);
        let last = r.stream_position()?.saturating_add((chunks - 1) * 8);
        if last.saturating_add(8) > file_size {
            return Err(ProbeError::truncated(NAME, "the file ends inside the offset table"));
        }
        r.seek(SeekFrom::Start(last))?;
        let offset = u64::from_le_bytes(read_array(r, NAME, "the offset table")?);
        if offset >= file_size {
            return Err(ProbeError::truncated(
                NAME,
                format!("the last chunk at offset {offset}, past the end of the file"),
            ));
        }
    }
    Ok(Extra { stored: Some((w, h)), ..Extra::default() })
}

/// A NUL-terminated name of at most `max` bytes.
fn read_name<R: BufRead>(r: &mut R, max: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.by_ref().take(max + 1).read_until(0, &mut buf)?;
    if buf.last() == Some(&0) {
        buf.pop();
        Ok(buf)
    } else if (buf.len() as u64) <= max {
        Err(ProbeError::truncated(NAME, format!("the file ends inside {what}")))
    } else {
        Err(ProbeError::corrupt(NAME, format!("{what} longer than {max} bytes")))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn attr(name: &str, kind: &str, value: &[u8]) -> Vec<u8> {
        let mut a = [name.as_bytes(), b"\0", kind.as_bytes(), b"\0"].concat();
        a.extend_from_slice(&(value.len() as i32).to_le_bytes());
        a.extend_from_slice(value);
        a
    }

    fn box2i(x0: i32, y0: i32, x1: i32, y1: i32) -> Vec<u8> {
        [x0, y0, x1, y1].iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A single-part scan-line file, ZIP compressed (16 lines a chunk), whose chunks
    /// are `chunk` bytes each.
    fn exr(window: Vec<u8>, chunk: u64) -> Vec<u8> {
        let mut f = SIGNATURE.to_vec();
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend(attr("channels", "chlist", b"R\0\x01\0\0\0\0\0\0\0\x01\0\0\0\x01\0\0\0\0"));
        f.extend(attr("compression", "compression", &[3]));
        f.extend(attr("dataWindow", "box2i", &window));
        f.extend(attr("displayWindow", "box2i", &box2i(0, 0, 99, 99)));
        f.push(0);
        let h = u64::try_from(
            i32::from_le_bytes(window[12..16].try_into().unwrap())
                - i32::from_le_bytes(window[4..8].try_into().unwrap())
                + 1,
        )
        .unwrap();
        let chunks = h.div_ceil(16);
        let table_end = f.len() as u64 + chunks * 8;
        for k in 0..chunks {
            f.extend_from_slice(&(table_end + k * chunk).to_le_bytes());
        }
        f.resize((table_end + chunks * chunk) as usize, 0);
        f
    }

    fn run(f: Vec<u8>) -> Result<Extra> {
        let n = f.len() as u64;
        walk(&mut Cursor::new(f), n, &Limits::default())
    }

    #[test]
    fn the_data_window_is_the_size() {
        assert_eq!(run(exr(box2i(0, 0, 64, 32), 20)).unwrap().stored, Some((65, 33)));
        assert_eq!(run(exr(box2i(-10, 5, 54, 37), 20)).unwrap().stored, Some((65, 33)));
        assert_eq!(run(exr(box2i(10, 0, 9, 32), 20)).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn a_cut_file_is_truncated() {
        let f = exr(box2i(0, 0, 64, 32), 20);
        for cut in [10, 40, 120, f.len() - 20] {
            assert_eq!(run(f[..cut].to_vec()).unwrap_err().code().as_str(), "truncated", "cut {cut}");
        }
    }

    #[test]
    fn long_names_and_negative_sizes_are_corrupt() {
        let mut f = SIGNATURE.to_vec();
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&[b'a'; 40]);
        f.push(0);
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
        let mut f = SIGNATURE.to_vec();
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(b"x\0y\0\xff\xff\xff\xff");
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }
}
