//! Radiance HDR (RGBE): `#?RADIANCE` or `#?RGBE`, header lines up to an empty line,
//! then the resolution string (`-Y 33 +X 65`: the number after Y is the height, after
//! X the width, whichever comes first). Hand-written: the `image` crate's reader grows
//! a header line without bound. The header is read up to 64 KiB; the run-length coded
//! scanlines are not, so a cut file is only noticed by a decoder.

use std::io::{BufRead, Seek};

use asset_core::Limits;

use super::{Budget, Extra, read_vec};
use crate::{ProbeError, Result};

const NAME: &str = "Radiance HDR";
const MAX_HEADER: u64 = 64 * 1024;

/// The two program names that start a Radiance picture's first line.
pub(crate) fn sniff(h: &[u8]) -> bool {
    h.starts_with(b"#?RADIANCE\n") || h.starts_with(b"#?RGBE\n")
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let head = read_vec(r, file_size.min(MAX_HEADER), NAME, "the header")?;
    if !sniff(&head) {
        return Err(ProbeError::corrupt(NAME, "no #?RADIANCE or #?RGBE line"));
    }
    let cut = || {
        if (head.len() as u64) < MAX_HEADER {
            ProbeError::truncated(NAME, "the file ends inside the header")
        } else {
            ProbeError::corrupt(NAME, format!("no resolution string in the first {MAX_HEADER} bytes"))
        }
    };
    let mut budget = Budget::new(limits, NAME);
    let mut lines = head.split(|&c| c == b'\n');
    let mut complete = 0usize; // bytes of whole lines seen
    let mut format_ok = true;
    for line in lines.by_ref() {
        budget.spend()?;
        complete += line.len() + 1;
        if complete > head.len() {
            return Err(cut());
        }
        if line.is_empty() {
            break;
        }
        if let Some(f) = line.strip_prefix(b"FORMAT=") {
            format_ok = matches!(f, b"32-bit_rle_rgbe" | b"32-bit_rle_xyze");
        }
    }
    if !format_ok {
        return Err(ProbeError::corrupt(NAME, "a FORMAT other than 32-bit_rle_rgbe or _xyze"));
    }
    let resolution = lines.next().filter(|_| complete < head.len()).ok_or_else(cut)?;
    if complete + resolution.len() >= head.len() {
        return Err(cut());
    }
    let words: Vec<&[u8]> = resolution.split(|&c| c == b' ').filter(|w| !w.is_empty()).take(5).collect();
    let bad = || ProbeError::corrupt(NAME, "a resolution string other than [+-]Y N [+-]X M or its transpose");
    if words.len() != 4 {
        return Err(bad());
    }
    let axis = |w: &[u8]| match w {
        b"-Y" | b"+Y" => Some('Y'),
        b"-X" | b"+X" => Some('X'),
        _ => None,
    };
    let value = |w: &[u8]| std::str::from_utf8(w).ok().and_then(|s| s.parse::<u32>().ok());
    let (a, b) = (axis(words[0]).ok_or_else(bad)?, axis(words[2]).ok_or_else(bad)?);
    let (n, m) = (value(words[1]).ok_or_else(bad)?, value(words[3]).ok_or_else(bad)?);
    let (w, h) = match (a, b) {
        ('Y', 'X') => (m, n),
        ('X', 'Y') => (n, m),
        _ => return Err(bad()),
    };
    Ok(Extra { stored: Some((w, h)), ..Extra::default() })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn run(f: &[u8]) -> Result<Extra> {
        walk(&mut Cursor::new(f.to_vec()), f.len() as u64, &Limits::default())
    }

    #[test]
    fn resolution_strings() {
        let f = b"#?RADIANCE\n# made by hand\nFORMAT=32-bit_rle_rgbe\nEXPOSURE=1.0\n\n-Y 33 +X 65\n\x02\x02";
        assert_eq!(run(f).unwrap().stored, Some((65, 33)));
        assert_eq!(run(b"#?RGBE\n\n+X 65 -Y 33\nxx").unwrap().stored, Some((65, 33)));
    }

    #[test]
    fn cut_and_broken_headers() {
        assert_eq!(run(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n").unwrap_err().code().as_str(), "truncated");
        assert_eq!(run(b"#?RADIANCE\n\n-Y 33 +X").unwrap_err().code().as_str(), "truncated");
        assert_eq!(run(b"#?RADIANCE\n\n-Y 33 +Y 65\n").unwrap_err().code().as_str(), "corrupt_file");
        assert_eq!(
            run(b"#?RADIANCE\nFORMAT=jpeg\n\n-Y 3 +X 6\n").unwrap_err().code().as_str(),
            "corrupt_file"
        );
        let mut long = b"#?RADIANCE\n#".to_vec();
        long.resize(200_000, b'x');
        assert_eq!(run(&long).unwrap_err().code().as_str(), "corrupt_file");
    }
}
