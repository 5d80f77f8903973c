//! ICO and CUR: the size of the largest entry, as a viewer shows an icon. A directory
//! side of 0 means 256; an entry stored as PNG (Vista icons) gives its real size from
//! its IHDR, which may exceed 256. Hand-written: the `image` crate's ICO decoder opens
//! the best entry's PNG or BMP decoder, more than a size needs, and `ico` reads whole
//! entries into memory. The directory (16 bytes an entry, at most 65,535 entries) and
//! the chosen entry's first 24 bytes are read; every entry must lie inside the file.

use std::io::{BufRead, Seek, SeekFrom};

use asset_core::Limits;

use super::{Budget, Extra, read_array};
use crate::{ProbeError, Result};

const NAME: &str = "ICO";

/// Reserved 0, then type 1 (icon) or 2 (cursor).
pub(crate) const ICO_SIGNATURE: &[u8] = b"\0\0\x01\0";
pub(crate) const CUR_SIGNATURE: &[u8] = b"\0\0\x02\0";

/// Whether the first bytes look like an icon directory: the signature, at least one
/// entry, and a first entry whose reserved byte is 0 and whose data lies after the
/// directory. Four bytes alone occur in too many binary files.
pub(crate) fn sniff(h: &[u8]) -> bool {
    if h.len() < 22 || !(h.starts_with(ICO_SIGNATURE) || h.starts_with(CUR_SIGNATURE)) {
        return false;
    }
    let count = u16::from_le_bytes([h[4], h[5]]);
    let offset = u32::from_le_bytes([h[18], h[19], h[20], h[21]]);
    count > 0 && h[9] == 0 && u64::from(offset) >= 6 + 16 * u64::from(count)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    width: u32,
    height: u32,
    bpp: u16,
    offset: u64,
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let head: [u8; 6] = read_array(r, NAME, "the header")?;
    if head[..2] != [0, 0] || !matches!(head[2..4], [1, 0] | [2, 0]) {
        return Err(ProbeError::corrupt(NAME, "bad icon directory header"));
    }
    let count = u16::from_le_bytes([head[4], head[5]]);
    if count == 0 {
        return Err(ProbeError::corrupt(NAME, "an icon directory without entries"));
    }
    let dir_end = 6 + 16 * u64::from(count);
    let mut budget = Budget::new(limits, NAME);
    let mut best: Option<Entry> = None;
    for _ in 0..count {
        budget.spend()?;
        let e: [u8; 16] = read_array(r, NAME, "the icon directory")?;
        let side = |b: u8| if b == 0 { 256 } else { u32::from(b) };
        let size = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
        let offset = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
        if offset < dir_end || size == 0 {
            return Err(ProbeError::corrupt(NAME, format!("an entry of {size} bytes at offset {offset}")));
        }
        if offset + size > file_size {
            return Err(ProbeError::truncated(
                NAME,
                format!("an entry ends at {}, past the end of the file ({file_size})", offset + size),
            ));
        }
        // For a cursor these bytes are the hotspot, not a bit depth: they only break ties.
        let entry =
            Entry { width: side(e[0]), height: side(e[1]), bpp: u16::from_le_bytes([e[6], e[7]]), offset };
        let area = |e: &Entry| (u64::from(e.width) * u64::from(e.height), e.bpp);
        if best.is_none_or(|b| area(&entry) > area(&b)) {
            best = Some(entry);
        }
    }
    let best = best.expect("count > 0");
    let (w, h) = entry_size(r, best)?;
    Ok(Extra { stored: Some((w, h)), ..Extra::default() })
}

/// The size the chosen entry's own header gives: IHDR for PNG; for a BMP (a DIB
/// without file header, its height doubled for the AND mask) the directory's, which
/// readers use, once the DIB header is seen to be one.
fn entry_size<R: BufRead + Seek>(r: &mut R, e: Entry) -> Result<(u32, u32)> {
    r.seek(SeekFrom::Start(e.offset))?;
    let h: [u8; 24] = match read_array(r, NAME, "an entry's header") {
        Ok(h) => h,
        // An entry shorter than a PNG header: a BMP's 40-byte DIB header does not fit
        // either, so it is broken whatever it is.
        Err(_) => return Err(ProbeError::corrupt(NAME, "an entry too short for an image header")),
    };
    if h.starts_with(b"\x89PNG\r\n\x1a\n") {
        if &h[12..16] != b"IHDR" {
            return Err(ProbeError::corrupt(NAME, "a PNG entry without IHDR"));
        }
        let be = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        return Ok((be(16), be(20)));
    }
    let dib = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    if !matches!(dib, 12 | 40 | 52 | 56 | 108 | 124) {
        return Err(ProbeError::corrupt(
            NAME,
            format!("an entry is neither PNG nor a DIB (header size {dib})"),
        ));
    }
    Ok((e.width, e.height))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// An icon with one entry per (width byte, height byte, data); BMP data is a
    /// 40-byte DIB header padded to 48 bytes.
    fn ico(entries: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
        let mut f = ICO_SIGNATURE.to_vec();
        f.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        let mut at = 6 + 16 * entries.len();
        for (w, h, data) in entries {
            f.extend_from_slice(&[*w, *h, 0, 0, 1, 0, 32, 0]);
            f.extend_from_slice(&(data.len() as u32).to_le_bytes());
            f.extend_from_slice(&(at as u32).to_le_bytes());
            at += data.len();
        }
        for (_, _, data) in entries {
            f.extend_from_slice(data);
        }
        f
    }

    fn dib() -> Vec<u8> {
        let mut d = 40u32.to_le_bytes().to_vec();
        d.resize(48, 0);
        d
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut p = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        p.extend_from_slice(&w.to_be_bytes());
        p.extend_from_slice(&h.to_be_bytes());
        p.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        p
    }

    fn run(f: Vec<u8>) -> Result<Extra> {
        let n = f.len() as u64;
        walk(&mut Cursor::new(f), n, &Limits::default())
    }

    #[test]
    fn the_largest_entry_wins_and_zero_means_256() {
        let f = ico(&[(16, 16, dib()), (0, 0, dib()), (48, 48, dib())]);
        assert!(sniff(&f));
        assert_eq!(run(f).unwrap().stored, Some((256, 256)));
    }

    #[test]
    fn a_png_entry_gives_its_own_size() {
        let f = ico(&[(32, 32, dib()), (0, 0, png(512, 512))]);
        assert_eq!(run(f).unwrap().stored, Some((512, 512)));
    }

    #[test]
    fn entries_past_the_end_are_truncated_and_overlapping_the_directory_corrupt() {
        let f = ico(&[(16, 16, dib())]);
        assert_eq!(run(f[..f.len() - 1].to_vec()).unwrap_err().code().as_str(), "truncated");
        let mut f = ico(&[(16, 16, dib())]);
        f[18..22].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn sniff_wants_a_plausible_directory() {
        assert!(!sniff(b"\0\0\x01\0\0\0"));
        assert!(!sniff(&[0, 0, 1, 0, 0, 0, 16, 16, 0, 0, 1, 0, 32, 0, 1, 0, 0, 0, 22, 0, 0, 0]));
        assert!(sniff(&ico(&[(16, 16, dib())])));
    }
}
