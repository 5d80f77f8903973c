//! Netpbm: PBM, PGM, PPM (P1–P6, with `#` comments between header tokens) and PAM (P7,
//! `WIDTH`/`HEIGHT`/`DEPTH`/`MAXVAL` lines up to `ENDHDR`). Hand-written: the header
//! is a few ASCII tokens, and we bound it (the `image` crate's reader accepts comments
//! of any length). Only the header is read; for the binary variants the raster's size
//! follows from it, so a file shorter than header + raster is `truncated`. A file of
//! several images reports the first.

use std::io::{BufRead, Seek};

use asset_core::Limits;

use super::{Budget, Extra, read_vec};
use crate::{ProbeError, Result};

const NAME: &str = "PNM";
/// The most header bytes read: real headers are tens of bytes, comments included.
const MAX_HEADER: u64 = 16 * 1024;

/// `P1`–`P7`, whitespace, then a header that parses within `h`: two letters alone would
/// take a text file starting "P1 agenda" for an image.
pub(crate) fn sniff(h: &[u8]) -> bool {
    if !magic(h) {
        return false;
    }
    let mut budget = Budget::new(&Limits { max_items: 4096, ..Limits::default() }, NAME);
    if h[1] == b'7' { pam(h, &mut budget).is_ok() } else { classic(h, &mut budget).is_ok() }
}

fn magic(h: &[u8]) -> bool {
    h.len() >= 3 && h[0] == b'P' && (b'1'..=b'7').contains(&h[1]) && h[2].is_ascii_whitespace()
}

/// The MIME type of each variant, by the digit of its magic.
pub(crate) fn mime(h: &[u8]) -> &'static str {
    match h.get(1) {
        Some(b'1' | b'4') => "image/x-portable-bitmap",
        Some(b'2' | b'5') => "image/x-portable-graymap",
        Some(b'3' | b'6') => "image/x-portable-pixmap",
        Some(b'7') => "image/x-portable-arbitrarymap",
        _ => "image/x-portable-anymap",
    }
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let head = read_vec(r, file_size.min(MAX_HEADER), NAME, "the header")?;
    if !magic(&head) {
        return Err(ProbeError::corrupt(NAME, "no P1-P7 magic"));
    }
    let mut budget = Budget::new(limits, NAME);
    let (w, h, raster) =
        if head[1] == b'7' { pam(&head, &mut budget)? } else { classic(&head, &mut budget)? };
    if w == 0 || h == 0 {
        return Err(ProbeError::corrupt(NAME, format!("a {w}x{h} image")));
    }
    if let Some((start, per_row)) = raster {
        let needed = start.saturating_add(per_row.saturating_mul(u64::from(h)));
        if needed > file_size {
            return Err(ProbeError::truncated(
                NAME,
                format!("the raster needs {needed} bytes, the file has {file_size}"),
            ));
        }
    }
    Ok(Extra { stored: Some((w, h)), ..Extra::default() })
}

/// Header tokens of P1–P6: whitespace separated, `#` starting a comment to the end of
/// the line. Returns the token and the offset just after it.
fn token<'a>(h: &'a [u8], mut at: usize, budget: &mut Budget) -> Result<(&'a [u8], usize)> {
    loop {
        budget.spend()?;
        match h.get(at) {
            None => return Err(cut(h)),
            Some(b'#') => {
                at += h[at..].iter().position(|&c| c == b'\n' || c == b'\r').ok_or_else(|| cut(h))?;
            }
            Some(c) if c.is_ascii_whitespace() => at += 1,
            Some(_) => break,
        }
    }
    let len = h[at..].iter().position(|c| c.is_ascii_whitespace() || *c == b'#').ok_or_else(|| cut(h))?;
    Ok((&h[at..at + len], at + len))
}

/// A header that does not end within what was read: the file ends (truncated) or the
/// header is longer than any real one (corrupt).
fn cut(h: &[u8]) -> ProbeError {
    if (h.len() as u64) < MAX_HEADER {
        ProbeError::truncated(NAME, "the file ends inside the header")
    } else {
        ProbeError::corrupt(NAME, format!("no end of the header in its first {MAX_HEADER} bytes"))
    }
}

fn number(t: &[u8], what: &str) -> Result<u32> {
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| ProbeError::corrupt(NAME, format!("{what} is not a number")))
}

/// (width, height, (raster offset, bytes a row) for the binary variants).
type Header = (u32, u32, Option<(u64, u64)>);

fn classic(h: &[u8], budget: &mut Budget) -> Result<Header> {
    let kind = h[1];
    let (w, at) = token(h, 2, budget)?;
    let (hh, mut at) = token(h, at, budget)?;
    let (w, hh) = (number(w, "the width")?, number(hh, "the height")?);
    let mut maxval = 1;
    if !matches!(kind, b'1' | b'4') {
        let (m, next) = token(h, at, budget)?;
        maxval = number(m, "the maximum value")?;
        if maxval == 0 || maxval > 65_535 {
            return Err(ProbeError::corrupt(NAME, format!("maximum value {maxval}")));
        }
        at = next;
    }
    // One whitespace byte separates the header from a binary raster.
    let start = at as u64 + 1;
    let sample = if maxval < 256 { 1 } else { 2 };
    let per_row = match kind {
        b'4' => Some(u64::from(w).div_ceil(8)),
        b'5' => Some(u64::from(w) * sample),
        b'6' => Some(u64::from(w) * 3 * sample),
        _ => None,
    };
    Ok((w, hh, per_row.map(|p| (start, p))))
}

fn pam(h: &[u8], budget: &mut Budget) -> Result<Header> {
    let (mut w, mut hh, mut depth, mut maxval) = (None, None, None, None);
    let mut at = 3;
    loop {
        budget.spend()?;
        let len = h[at..].iter().position(|&c| c == b'\n').ok_or_else(|| cut(h))?;
        let line = &h[at..at + len];
        at += len + 1;
        let mut words = line.split(|c| c.is_ascii_whitespace()).filter(|w| !w.is_empty());
        match (words.next(), words.next()) {
            (Some(b"ENDHDR"), _) => break,
            (Some(b"WIDTH"), Some(v)) => w = Some(number(v, "WIDTH")?),
            (Some(b"HEIGHT"), Some(v)) => hh = Some(number(v, "HEIGHT")?),
            (Some(b"DEPTH"), Some(v)) => depth = Some(number(v, "DEPTH")?),
            (Some(b"MAXVAL"), Some(v)) => maxval = Some(number(v, "MAXVAL")?),
            _ => {} // comments, TUPLTYPE, blank lines
        }
    }
    let (Some(w), Some(hh), Some(depth), Some(maxval)) = (w, hh, depth, maxval) else {
        return Err(ProbeError::corrupt(NAME, "a PAM header without WIDTH, HEIGHT, DEPTH or MAXVAL"));
    };
    if maxval == 0 || maxval > 65_535 || depth == 0 {
        return Err(ProbeError::corrupt(NAME, format!("PAM depth {depth}, maximum value {maxval}")));
    }
    let sample = if maxval < 256 { 1 } else { 2 };
    Ok((w, hh, Some((at as u64, u64::from(w) * u64::from(depth) * sample))))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn run(f: &[u8]) -> Result<Extra> {
        walk(&mut Cursor::new(f.to_vec()), f.len() as u64, &Limits::default())
    }

    #[test]
    fn binary_and_ascii_with_comments() {
        let mut ppm = b"P6\n# made by hand\n65 # width\n33\n255\n".to_vec();
        ppm.resize(ppm.len() + 65 * 33 * 3, 7);
        assert_eq!(run(&ppm).unwrap().stored, Some((65, 33)));
        assert_eq!(run(&ppm[..ppm.len() - 1]).unwrap_err().code().as_str(), "truncated");
        assert_eq!(run(b"P1\n3 2\n0 1 0\n1 0 1\n").unwrap().stored, Some((3, 2)));
        let mut pbm = b"P4 9 2\n".to_vec();
        pbm.extend_from_slice(&[0; 4]);
        assert_eq!(run(&pbm).unwrap().stored, Some((9, 2)));
        let mut pgm16 = b"P5 2 2 65535\n".to_vec();
        pgm16.extend_from_slice(&[0; 8]);
        assert_eq!(run(&pgm16).unwrap().stored, Some((2, 2)));
        assert_eq!(run(&pgm16[..pgm16.len() - 1]).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn pam_header() {
        let mut pam = b"P7\nWIDTH 65\nHEIGHT 33\nDEPTH 4\nMAXVAL 255\nTUPLTYPE RGB_ALPHA\nENDHDR\n".to_vec();
        pam.resize(pam.len() + 65 * 33 * 4, 0);
        assert_eq!(run(&pam).unwrap().stored, Some((65, 33)));
        assert_eq!(run(&pam[..pam.len() - 1]).unwrap_err().code().as_str(), "truncated");
        assert_eq!(run(b"P7\nWIDTH 65\nENDHDR\n").unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn broken_headers() {
        assert_eq!(run(b"P6\n65 33").unwrap_err().code().as_str(), "truncated");
        assert_eq!(run(b"P6\n65 x3 255\n").unwrap_err().code().as_str(), "corrupt_file");
        assert_eq!(run(b"P6\n65 33 0\n").unwrap_err().code().as_str(), "corrupt_file");
        assert_eq!(run(b"P6\n0 33 255\n").unwrap_err().code().as_str(), "corrupt_file");
        let mut long = b"P6\n#".to_vec();
        long.resize(100_000, b'x');
        assert_eq!(run(&long).unwrap_err().code().as_str(), "corrupt_file");
        assert!(!sniff(b"P8 1 1") && !sniff(b"PK\x03\x04") && !sniff(b"P3\n"));
        assert!(sniff(b"P3\n# c\n65 33\n255\n0 0 0") && sniff(b"P4 9 2\n\0\0"));
        assert!(!sniff(b"P1 agenda for monday\n") && !sniff(b"P6 65 33 x\n"));
        assert!(sniff(b"P7\nWIDTH 1\nHEIGHT 1\nDEPTH 1\nMAXVAL 1\nENDHDR\n"));
    }
}
