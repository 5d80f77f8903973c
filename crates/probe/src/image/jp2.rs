//! JPEG 2000: the `.jp2`/`.jpx` box structure (size from the `ihdr` box inside `jp2h`)
//! and the raw `.j2k`/`.j2c` codestream (size from the SIZ marker segment that follows
//! SOC). Hand-written: no crate reads these headers without decoding (the `jpeg2k`
//! and `openjpeg` bindings decode the codestream). Only the boxes in front of the
//! codestream are read, and the codestream box's declared length is checked against the
//! file's so that a cut file is `truncated` without reading the pixels.

use std::io::{BufRead, Seek, SeekFrom};

use asset_core::Limits;

use super::{Budget, Extra, read_array};
use crate::{ProbeError, Result};

const NAME: &str = "JPEG 2000";

/// The 12-byte JP2 signature box (also the JPX and JPM one).
pub(crate) const JP2_SIGNATURE: &[u8] = b"\0\0\0\x0CjP  \r\n\x87\n";
/// SOC then the SIZ marker: every codestream starts so (ISO 15444-1 A.5.1).
pub(crate) const J2K_SIGNATURE: &[u8] = b"\xFF\x4F\xFF\x51";
/// Most components a SIZ may declare (Csiz ≤ 16384).
const MAX_COMPONENTS: u16 = 16_384;

/// An ISO-BMFF-style box header as JPEG 2000 and JPEG XL write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BoxHeader {
    pub kind: [u8; 4],
    /// Offset of the payload in the file.
    pub start: u64,
    /// Payload length; a box of length 0 runs to the end of the file.
    pub len: u64,
}

impl BoxHeader {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Reads the box header at `pos` (inside `[pos, limit)`). A box that claims more bytes
/// than the file has is `truncated`; one shorter than its own header is `corrupt`.
pub(super) fn read_box<R: BufRead + Seek>(
    r: &mut R,
    pos: u64,
    limit: u64,
    file_size: u64,
    name: &'static str,
) -> Result<BoxHeader> {
    r.seek(SeekFrom::Start(pos))?;
    let head: [u8; 8] = read_array(r, name, "a box header")?;
    let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let (size, header_len) = match size32 {
        0 => (limit.saturating_sub(pos), 8),
        1 => (u64::from_be_bytes(read_array(r, name, "a box length")?), 16),
        n => (u64::from(n), 8),
    };
    if size < header_len {
        return Err(ProbeError::corrupt(name, format!("a box at offset {pos} declares {size} bytes")));
    }
    let end = pos.saturating_add(size);
    if end > file_size {
        return Err(ProbeError::truncated(
            name,
            format!("a box at offset {pos} ends at {end}, past the end of the file ({file_size})"),
        ));
    }
    if end > limit {
        return Err(ProbeError::corrupt(name, format!("a box at offset {pos} overruns its parent")));
    }
    let kind = [head[4], head[5], head[6], head[7]];
    Ok(BoxHeader { kind, start: pos + header_len, len: size - header_len })
}

/// The `.jp2` box walk: signature, `ftyp`, then `jp2h` holding `ihdr`, before `jp2c`.
pub(super) fn walk_jp2<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let sig: [u8; 12] = read_array(r, NAME, "the signature box")?;
    if sig != JP2_SIGNATURE {
        return Err(ProbeError::corrupt(NAME, "no JP2 signature box"));
    }
    let mut budget = Budget::new(limits, NAME);
    let mut pos = 12u64;
    let mut size = None;
    while pos < file_size {
        budget.spend()?;
        let b = read_box(r, pos, file_size, file_size, NAME)?;
        match &b.kind {
            b"jp2h" => size = Some(find_ihdr(r, b, file_size, &mut budget)?),
            // The codestream: the header box must come before it (15444-1 I.4). Its
            // length was checked by `read_box`; a box of length 0 runs to the end, so a
            // cut file shows only in a missing EOC marker.
            b"jp2c" => {
                let (w, h) =
                    size.ok_or_else(|| ProbeError::corrupt(NAME, "codestream before the jp2h box"))?;
                check_codestream_ends(r, b.end(), NAME)?;
                return Ok(Extra { stored: Some((w, h)), ..Extra::default() });
            }
            _ => {}
        }
        pos = b.end();
    }
    Err(ProbeError::truncated(NAME, "the file ends before the codestream box"))
}

fn find_ihdr<R: BufRead + Seek>(
    r: &mut R,
    jp2h: BoxHeader,
    file_size: u64,
    budget: &mut Budget,
) -> Result<(u32, u32)> {
    let mut pos = jp2h.start;
    while pos < jp2h.end() {
        budget.spend()?;
        let b = read_box(r, pos, jp2h.end(), file_size, NAME)?;
        if &b.kind == b"ihdr" {
            if b.len < 14 {
                return Err(ProbeError::corrupt(NAME, format!("an ihdr box of {} bytes", b.len)));
            }
            let ihdr: [u8; 14] = read_array(r, NAME, "the ihdr box")?;
            let height = u32::from_be_bytes([ihdr[0], ihdr[1], ihdr[2], ihdr[3]]);
            let width = u32::from_be_bytes([ihdr[4], ihdr[5], ihdr[6], ihdr[7]]);
            let components = u16::from_be_bytes([ihdr[8], ihdr[9]]);
            if components == 0 || components > MAX_COMPONENTS {
                return Err(ProbeError::corrupt(NAME, format!("ihdr declares {components} components")));
            }
            return Ok((width, height));
        }
        pos = b.end();
    }
    Err(ProbeError::corrupt(NAME, "a jp2h box without ihdr"))
}

/// The raw codestream: SOC, then SIZ with the reference grid and the image offset.
pub(super) fn walk_j2k<R: BufRead + Seek>(r: &mut R, file_size: u64) -> Result<Extra> {
    let (w, h) = read_siz(r)?;
    check_codestream_ends(r, file_size, NAME)?;
    Ok(Extra { stored: Some((w, h)), ..Extra::default() })
}

fn read_siz<R: BufRead + Seek>(r: &mut R) -> Result<(u32, u32)> {
    let head: [u8; 4] = read_array(r, NAME, "the SOC and SIZ markers")?;
    if head != J2K_SIGNATURE {
        return Err(ProbeError::corrupt(NAME, "the codestream does not start with SOC and SIZ"));
    }
    // Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz, Csiz.
    let siz: [u8; 38] = read_array(r, NAME, "the SIZ marker segment")?;
    let be32 = |i: usize| u32::from_be_bytes([siz[i], siz[i + 1], siz[i + 2], siz[i + 3]]);
    let lsiz = u16::from_be_bytes([siz[0], siz[1]]);
    let (xsiz, ysiz, xosiz, yosiz) = (be32(4), be32(8), be32(12), be32(16));
    let components = u16::from_be_bytes([siz[36], siz[37]]);
    if components == 0 || components > MAX_COMPONENTS || u32::from(lsiz) != 38 + 3 * u32::from(components) {
        return Err(ProbeError::corrupt(NAME, format!("SIZ of length {lsiz} with {components} components")));
    }
    if xosiz >= xsiz || yosiz >= ysiz {
        return Err(ProbeError::corrupt(
            NAME,
            format!("image offset {xosiz},{yosiz} outside the grid {xsiz}x{ysiz}"),
        ));
    }
    Ok((xsiz - xosiz, ysiz - yosiz))
}

/// A codestream ends with EOC (FFD9): two bytes read at its end, so a cut file is
/// `truncated` without walking the tile parts.
fn check_codestream_ends<R: BufRead + Seek>(r: &mut R, end: u64, name: &'static str) -> Result<()> {
    if end < 2 {
        return Err(ProbeError::truncated(name, "no room for the EOC marker"));
    }
    r.seek(SeekFrom::Start(end - 2))?;
    let eoc: [u8; 2] = read_array(r, name, "the EOC marker")?;
    if eoc != [0xFF, 0xD9] {
        return Err(ProbeError::truncated(name, "the codestream does not end with EOC"));
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Cursor;

    use super::*;

    pub(in crate::image) fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(payload);
        b
    }

    fn codestream(w: u32, h: u32, xo: u32, yo: u32) -> Vec<u8> {
        let mut c = J2K_SIGNATURE.to_vec();
        c.extend_from_slice(&(38u16 + 3).to_be_bytes());
        c.extend_from_slice(&0u16.to_be_bytes());
        for v in [w, h, xo, yo, w, h, 0, 0] {
            c.extend_from_slice(&v.to_be_bytes());
        }
        c.extend_from_slice(&1u16.to_be_bytes());
        c.extend_from_slice(&[7, 1, 1]);
        c.extend_from_slice(&[0xFF, 0xD9]);
        c
    }

    fn jp2(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = h.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&[0, 3, 7, 7, 0, 0]);
        let mut f = JP2_SIGNATURE.to_vec();
        f.extend(boxed(b"ftyp", b"jp2 \0\0\0\0jp2 "));
        f.extend(boxed(b"jp2h", &[boxed(b"ihdr", &ihdr), boxed(b"colr", &[1, 0, 0, 0, 0, 0, 16])].concat()));
        f.extend(boxed(b"jp2c", &codestream(w, h, 0, 0)));
        f
    }

    fn run_jp2(f: Vec<u8>) -> Result<Extra> {
        let n = f.len() as u64;
        walk_jp2(&mut Cursor::new(f), n, &Limits::default())
    }

    fn run_j2k(f: Vec<u8>) -> Result<Extra> {
        let n = f.len() as u64;
        walk_j2k(&mut Cursor::new(f), n)
    }

    #[test]
    fn jp2_size_from_ihdr() {
        assert_eq!(run_jp2(jp2(65, 33)).unwrap().stored, Some((65, 33)));
    }

    #[test]
    fn j2k_size_is_the_grid_less_the_offset() {
        assert_eq!(run_j2k(codestream(65, 33, 0, 0)).unwrap().stored, Some((65, 33)));
        assert_eq!(run_j2k(codestream(100, 50, 35, 17)).unwrap().stored, Some((65, 33)));
        assert_eq!(run_j2k(codestream(100, 50, 100, 0)).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn cut_files_are_truncated() {
        let f = jp2(65, 33);
        for cut in [20, 60, f.len() - 1] {
            assert_eq!(run_jp2(f[..cut].to_vec()).unwrap_err().code().as_str(), "truncated", "cut {cut}");
        }
        let c = codestream(65, 33, 0, 0);
        assert_eq!(run_j2k(c[..c.len() - 1].to_vec()).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn codestream_before_header_and_bad_boxes_are_corrupt() {
        let mut f = JP2_SIGNATURE.to_vec();
        f.extend(boxed(b"jp2c", &codestream(1, 1, 0, 0)));
        assert_eq!(run_jp2(f).unwrap_err().code().as_str(), "corrupt_file");
        let mut f = JP2_SIGNATURE.to_vec();
        f.extend_from_slice(&4u32.to_be_bytes());
        f.extend_from_slice(b"ftyp");
        assert_eq!(run_jp2(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn a_walk_of_empty_boxes_is_bounded() {
        let mut f = JP2_SIGNATURE.to_vec();
        for _ in 0..100 {
            f.extend(boxed(b"free", &[]));
        }
        let n = f.len() as u64;
        let limits = Limits { max_items: 50, ..Limits::default() };
        let err = walk_jp2(&mut Cursor::new(f), n, &limits).unwrap_err();
        assert_eq!(err.code().as_str(), "too_large");
    }
}
