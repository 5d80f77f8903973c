//! Canon CR3: ISO BMFF (major brand `crx `) whose `moov` holds Canon's `uuid` box, with
//! TIFF-structured metadata (`CMT1` is IFD0), and one `trak` per picture, each with a
//! `CRAW` sample entry: the full-size JPEG, a small raw, the full raw (the sensor,
//! masked borders included). We report what exiftool's `Composite:ImageSize` does,
//! IFD0's ImageWidth × ImageHeight in `CMT1` (6000 × 4000 on an EOS M50, whose full
//! raw track is 6288 × 4056), and its orientation; without a size there, the largest
//! `CRAW`. Only the box headers up to `moov` and `moov` itself (a few dozen KiB,
//! bounded by the memory limit) are read; `mdat` and the previews never are.

use std::io::{BufRead, Seek, SeekFrom};

use asset_core::Limits;

use super::{Budget, Extra, read_array, read_vec};
use crate::{ProbeError, Result};

const NAME: &str = "CR3";
const CANON_UUID: [u8; 16] =
    [0x85, 0xc0, 0xb6, 0x87, 0x82, 0x0f, 0x11, 0xe0, 0x81, 0x11, 0xf4, 0xce, 0x46, 0x2b, 0x6a, 0x48];
/// Larger than any `moov` a camera writes (tens of KiB: the THMB thumbnail is the bulk).
const MAX_MOOV: u64 = 4 << 20;
/// More `trak`s than a CR3 has (four; burst "roll" files a few more).
const MAX_TRACKS: usize = 64;

/// Whether a head that carries the `crx ` brand is a CR3 still image rather than a
/// Canon Cinema RAW Light movie (`.crm`), which shares the brand: Canon's compressor
/// version (`CNCV`, first in the `uuid` box at the start of `moov`) names which.
pub(crate) fn is_still(head: &[u8]) -> bool {
    !head.windows(12).any(|w| w == b"CNCVCanonCRM")
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let mut budget = Budget::new(limits, NAME);
    let mut offset = 0u64;
    let moov = loop {
        budget.spend()?;
        if file_size.saturating_sub(offset) < 8 {
            return Err(if offset < file_size {
                ProbeError::truncated(NAME, "the file ends inside a box header")
            } else {
                ProbeError::corrupt(NAME, "no moov box")
            });
        }
        r.seek(SeekFrom::Start(offset))?;
        let h: [u8; 8] = read_array(r, NAME, "a box header")?;
        let kind = [h[4], h[5], h[6], h[7]];
        let (size, header) = match u32::from_be_bytes([h[0], h[1], h[2], h[3]]) {
            0 => (file_size - offset, 8),
            1 => (u64::from_be_bytes(read_array(r, NAME, "a 64-bit box size")?), 16),
            n => (u64::from(n), 8),
        };
        if size < header {
            return Err(ProbeError::corrupt(NAME, format!("a box declares {size} bytes")));
        }
        // A size that wraps would lead the walk back to a box already read.
        let end =
            offset.checked_add(size).ok_or_else(|| ProbeError::corrupt(NAME, "a box size overflows"))?;
        if &kind == b"moov" {
            if end > file_size {
                return Err(ProbeError::truncated(NAME, "the file ends inside the moov box"));
            }
            let len = size - header;
            let cap = MAX_MOOV.min(limits.max_memory_bytes);
            if len > cap {
                return Err(ProbeError::TooLarge { what: format!("CR3 moov of {len} bytes"), limit: cap });
            }
            break read_vec(r, len, NAME, "the moov box")?;
        }
        if end > file_size {
            return Err(ProbeError::truncated(NAME, "the file ends inside a box before moov"));
        }
        offset = end;
    };
    let mut cmt1 = None;
    let mut craws = Vec::new();
    for b in boxes(&moov) {
        let (kind, body) = b?;
        match &kind {
            b"uuid" if body.starts_with(&CANON_UUID) => {
                for c in boxes(&body[16..]) {
                    let (k, blob) = c?;
                    if &k == b"CMT1" && cmt1.is_none() {
                        cmt1 = Some(blob);
                    }
                }
            }
            b"trak" => {
                if let Some(size) = craw_size(body)? {
                    if craws.len() == MAX_TRACKS {
                        return Err(ProbeError::corrupt(NAME, format!("over {MAX_TRACKS} CRAW tracks")));
                    }
                    craws.push(size);
                }
            }
            _ => {}
        }
    }
    if let Some(&(w, h)) = craws.iter().find(|&&(w, h)| w == 0 || h == 0) {
        return Err(ProbeError::corrupt(NAME, format!("a CRAW sample entry of {w}x{h}")));
    }
    // A damaged CMT1 does not hide the picture: the tracks still give its size.
    let (width, height, orientation) = cmt1.and_then(|blob| super::raw::ifd0(blob).ok()).unwrap_or_default();
    let stored = match (width, height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => craws
            .iter()
            .copied()
            .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
            .ok_or_else(|| ProbeError::corrupt(NAME, "no image size in CMT1 and no CRAW track"))?,
    };
    Ok(Extra { stored: Some(stored), orientation, ..Extra::default() })
}

/// The width and height of a `trak`'s first sample entry if it is a `CRAW`:
/// `mdia/minf/stbl/stsd`, then a VisualSampleEntry (width and height at 24 and 26).
fn craw_size(trak: &[u8]) -> Result<Option<(u32, u32)>> {
    let Some(mdia) = child(trak, b"mdia")? else { return Ok(None) };
    let Some(minf) = child(mdia, b"minf")? else { return Ok(None) };
    let Some(stbl) = child(minf, b"stbl")? else { return Ok(None) };
    let Some(stsd) = child(stbl, b"stsd")? else { return Ok(None) };
    // Version and flags, an entry count, then the entries.
    let Some(entries) = stsd.get(8..) else { return Ok(None) };
    let Some(first) = boxes(entries).next() else { return Ok(None) };
    let (kind, entry) = first?;
    if &kind != b"CRAW" {
        return Ok(None);
    }
    let at = |i: usize| entry.get(i..i + 2).map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])));
    match (at(24), at(26)) {
        (Some(w), Some(h)) => Ok(Some((w, h))),
        _ => Err(ProbeError::corrupt(NAME, "a CRAW sample entry is cut short")),
    }
}

/// The first child of `data` of type `kind`.
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>> {
    crate::video::mp4::child_of(NAME, data, kind)
}

/// Child boxes of an in-memory payload (MP4's walker, errors named CR3): a child claiming
/// more than its parent holds is `corrupt_file`.
fn boxes(data: &[u8]) -> crate::video::mp4::Boxes<'_> {
    crate::video::mp4::boxes_of(NAME, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::bx;
    use std::io::Cursor;

    fn craw_trak(w: u16, h: u16) -> Vec<u8> {
        let mut entry = vec![0u8; 24];
        entry.extend_from_slice(&w.to_be_bytes());
        entry.extend_from_slice(&h.to_be_bytes());
        entry.extend_from_slice(&[0; 50]);
        let stsd = [&[0u8, 0, 0, 0, 0, 0, 0, 1][..], &bx(b"CRAW", &entry)].concat();
        bx(b"trak", &bx(b"mdia", &bx(b"minf", &bx(b"stbl", &bx(b"stsd", &stsd)))))
    }

    fn file(moov: &[u8]) -> Vec<u8> {
        [bx(b"ftyp", b"crx \0\0\0\x01crx isom"), bx(b"moov", moov)].concat()
    }

    fn run(bytes: &[u8]) -> Result<Extra> {
        walk(&mut Cursor::new(bytes), bytes.len() as u64, &Limits::default())
    }

    #[test]
    fn without_cmt1_the_largest_craw_is_the_image() {
        let f = file(&[craw_trak(6000, 4000), craw_trak(1624, 1080), craw_trak(6288, 4056)].concat());
        assert_eq!(run(&f).unwrap().stored, Some((6288, 4056)));
    }

    #[test]
    fn hostile_moovs_are_typed_errors() {
        let code = |f: &[u8]| run(f).unwrap_err().code().as_str();
        assert_eq!(code(&file(&craw_trak(0, 4000))), "corrupt_file");
        assert_eq!(code(&file(b"")), "corrupt_file");
        // A child larger than moov, a child smaller than its header.
        assert_eq!(code(&file(b"\0\0\x01\0trak")), "corrupt_file");
        assert_eq!(code(&file(b"\0\0\0\x04trak")), "corrupt_file");
        // A CRAW entry too short to hold a size.
        let stsd = [&[0u8; 8][..], &bx(b"CRAW", &[0; 10])].concat();
        let short = bx(b"trak", &bx(b"mdia", &bx(b"minf", &bx(b"stbl", &bx(b"stsd", &stsd)))));
        assert_eq!(code(&file(&short)), "corrupt_file");
        // Cut anywhere: an error, never a panic.
        let whole = file(&[craw_trak(6000, 4000), craw_trak(160, 120)].concat());
        for n in 0..whole.len() {
            assert!(run(&whole[..n]).is_err(), "cut at {n}");
        }
        // Too many tracks.
        let many = file(&craw_trak(16, 16).repeat(MAX_TRACKS + 1));
        assert_eq!(code(&many), "corrupt_file");
    }

    #[test]
    fn a_crm_movie_is_not_a_still() {
        assert!(is_still(b"\0\0\0\x18ftypcrx \0\0\0\x01crx isom....CNCVCanonCR3_001/00.09"));
        assert!(!is_still(b"\0\0\0\x18ftypcrx \0\0\0\x01crx isom....CNCVCanonCRM0001/"));
    }
}
