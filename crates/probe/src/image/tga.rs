//! Truevision TGA: an 18-byte header and, in TGA 2.0 files, a 26-byte footer ending
//! "TRUEVISION-XFILE.\0". TGA has no magic, so detection is conservative: a header
//! holding only legal values ([`sniff`], weakest of the binary signatures), confirmed by
//! the footer, by a `.tga` name, or, for an uncompressed TGA 1.0 file (no footer) under
//! any name, by a size exactly that of its header, id, colour map and pixels
//! ([`confirm`]).
//! Hand-written: the header is fixed-size. For uncompressed images the pixel data's
//! size follows from the header, so a file too short for it is `truncated`; a cut
//! RLE image is only noticed by a decoder.

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::Path;

use super::{Extra, read_array};
use crate::{ProbeError, Result};

const NAME: &str = "TGA";
pub(crate) const FOOTER_SIGNATURE: &[u8] = b"TRUEVISION-XFILE.\0";

/// Whether an 18-byte header holds only values the specification allows: a colour map
/// type of 0 or 1 that agrees with the image type, a known image type, a legal pixel
/// depth and colour map entry size, a non-zero size and the two reserved descriptor
/// bits clear. Used with the footer or the `.tga` extension, never alone.
pub(crate) fn sniff(h: &[u8]) -> bool {
    if h.len() < 18 {
        return false;
    }
    let (map_type, image_type, entry_bits, depth, descriptor) = (h[1], h[2], h[7], h[16], h[17]);
    let width = u16::from_le_bytes([h[12], h[13]]);
    let height = u16::from_le_bytes([h[14], h[15]]);
    let mapped = matches!(image_type, 1 | 9);
    let map_ok = match map_type {
        0 => !mapped,
        1 => matches!(entry_bits, 15 | 16 | 24 | 32),
        _ => false,
    };
    matches!(image_type, 1 | 2 | 3 | 9 | 10 | 11)
        && (!mapped || map_type == 1)
        && map_ok
        && matches!(depth, 8 | 15 | 16 | 24 | 32)
        && descriptor & 0xC0 == 0
        && width > 0
        && height > 0
}

/// Whether `tail` (the file's last bytes) is a TGA 2.0 footer.
pub(crate) fn has_footer(tail: &[u8]) -> bool {
    tail.ends_with(FOOTER_SIGNATURE)
}

/// The extensions TGA files carry: with one of them a legal header is enough.
const EXTENSIONS: [&str; 4] = ["tga", "icb", "vda", "vst"];

/// Whether a file whose header passed [`sniff`] is taken for a TGA: it has the TGA 2.0
/// footer (its last 26 bytes, one small read at the end), or its name says `.tga`. A
/// header alone is 18 bytes of small numbers that other binary files can hold, so
/// without either the file stays `unsupported_format`.
pub(super) fn confirm<R: Read + Seek>(r: &mut R, file_size: u64, path: &Path) -> Result<()> {
    let named = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)));
    if named {
        return Ok(());
    }
    if file_size >= 18 + 26 {
        r.seek(SeekFrom::Start(file_size - 26))?;
        let mut tail = [0u8; 26];
        r.read_exact(&mut tail)?;
        if has_footer(&tail) {
            return Ok(());
        }
    }
    // TGA 1.0 has no footer. An uncompressed image is exactly as long as its header
    // says: a length no other file shares with these 18 small numbers by chance.
    if file_size >= 18 {
        r.seek(SeekFrom::Start(0))?;
        let mut h = [0u8; 18];
        r.read_exact(&mut h)?;
        if sniff(&h) && uncompressed_size(&h) == Some(file_size) {
            return Ok(());
        }
    }
    Err(ProbeError::unsupported(
        "a TGA-like header without the TGA 2.0 footer, a .tga name or the exact size of an uncompressed TGA",
    ))
}

/// The length of an uncompressed TGA (image types 1-3) with this header: header, image
/// id, colour map and pixels. `None` for RLE images, whose length the header does not say.
fn uncompressed_size(h: &[u8; 18]) -> Option<u64> {
    if !matches!(h[2], 1..=3) {
        return None;
    }
    let le16 = |i: usize| u64::from(u16::from_le_bytes([h[i], h[i + 1]]));
    let map_bytes = if h[1] == 1 { le16(5) * u64::from(h[7]).div_ceil(8) } else { 0 };
    let pixels = (le16(12) * le16(14) * u64::from(h[16])).div_ceil(8);
    Some(18 + u64::from(h[0]) + map_bytes + pixels)
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64) -> Result<Extra> {
    let h: [u8; 18] = read_array(r, NAME, "the header")?;
    if !sniff(&h) {
        return Err(ProbeError::corrupt(NAME, "the header holds values no TGA has"));
    }
    let le16 = |i: usize| u64::from(u16::from_le_bytes([h[i], h[i + 1]]));
    let (width, height) = (le16(12), le16(14));
    if let Some(needed) = uncompressed_size(&h)
        && needed > file_size
    {
        return Err(ProbeError::truncated(
            NAME,
            format!("the image needs {needed} bytes, the file has {file_size}"),
        ));
    }
    Ok(Extra { stored: Some((width as u32, height as u32)), ..Extra::default() })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn tga(image_type: u8, w: u16, h: u16, depth: u8, data: usize, footer: bool) -> Vec<u8> {
        let mut f = vec![0, 0, image_type, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        f.extend_from_slice(&w.to_le_bytes());
        f.extend_from_slice(&h.to_le_bytes());
        f.extend_from_slice(&[depth, 0x20]);
        f.resize(18 + data, 9);
        if footer {
            f.extend_from_slice(&[0; 8]);
            f.extend_from_slice(FOOTER_SIGNATURE);
        }
        f
    }

    fn run(f: Vec<u8>) -> Result<Extra> {
        let n = f.len() as u64;
        walk(&mut Cursor::new(f), n)
    }

    #[test]
    fn uncompressed_and_rle() {
        let f = tga(2, 65, 33, 24, 65 * 33 * 3, true);
        assert!(sniff(&f) && has_footer(&f));
        assert_eq!(run(f).unwrap().stored, Some((65, 33)));
        assert_eq!(run(tga(10, 65, 33, 32, 100, false)).unwrap().stored, Some((65, 33)));
    }

    #[test]
    fn short_pixel_data_is_truncated() {
        let f = tga(2, 65, 33, 24, 65 * 33 * 3 - 1, false);
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn confirmed_by_footer_or_name_only() {
        let with = tga(2, 65, 33, 24, 65 * 33 * 3, true);
        let n = with.len() as u64;
        assert!(confirm(&mut Cursor::new(with), n, Path::new("/tmp/x")).is_ok());
        let without = tga(2, 65, 33, 24, 65 * 33 * 3, false);
        let n = without.len() as u64;
        assert!(confirm(&mut Cursor::new(without.clone()), n, Path::new("/tmp/x.TGA")).is_ok());
        // Uncompressed TGA 1.0 of exactly its size: taken under any name.
        assert!(confirm(&mut Cursor::new(without.clone()), n, Path::new("/tmp/x.bin")).is_ok());
        // One byte more or less, or RLE (whose size the header does not say): not.
        for f in [tga(2, 65, 33, 24, 65 * 33 * 3 + 1, false), tga(2, 65, 33, 24, 65 * 33 * 3 - 1, false)] {
            let n = f.len() as u64;
            let err = confirm(&mut Cursor::new(f), n, Path::new("/tmp/x.bin")).unwrap_err();
            assert_eq!(err.code().as_str(), "unsupported_format");
        }
        let rle = tga(10, 65, 33, 24, 100, false);
        let n = rle.len() as u64;
        assert!(confirm(&mut Cursor::new(rle), n, Path::new("/tmp/x.bin")).is_err());
    }

    #[test]
    fn illegal_headers_are_not_tga() {
        assert!(!sniff(&tga(4, 65, 33, 24, 0, false)));
        assert!(!sniff(&tga(2, 0, 33, 24, 0, false)));
        assert!(!sniff(&tga(2, 65, 33, 23, 0, false)));
        assert!(!sniff(&tga(1, 65, 33, 8, 0, false)), "colour-mapped without a colour map");
        assert_eq!(run(tga(2, 65, 33, 7, 10, false)).unwrap_err().code().as_str(), "corrupt_file");
    }
}
