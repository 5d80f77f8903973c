//! QOI ("Quite OK Image"): a 14-byte header (`qoif`, width, height, channels,
//! colorspace) and an 8-byte end marker. Hand-written: two reads, the header and the
//! last 8 bytes, which must be the end marker or the file is `truncated`.

use std::io::{BufRead, Seek, SeekFrom};

use super::{Extra, read_array};
use crate::{ProbeError, Result};

const NAME: &str = "QOI";
pub(crate) const SIGNATURE: &[u8] = b"qoif";
const END_MARKER: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 1];

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64) -> Result<Extra> {
    let h: [u8; 14] = read_array(r, NAME, "the header")?;
    if &h[..4] != SIGNATURE {
        return Err(ProbeError::corrupt(NAME, "no qoif magic"));
    }
    let width = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let height = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    if !matches!(h[12], 3 | 4) || h[13] > 1 {
        return Err(ProbeError::corrupt(NAME, format!("{} channels, colorspace {}", h[12], h[13])));
    }
    if file_size < 14 + 8 {
        return Err(ProbeError::truncated(NAME, "no room for the end marker"));
    }
    r.seek(SeekFrom::Start(file_size - 8))?;
    let end: [u8; 8] = read_array(r, NAME, "the end marker")?;
    if end != END_MARKER {
        return Err(ProbeError::truncated(NAME, "the file does not end with the end marker"));
    }
    Ok(Extra { stored: Some((width, height)), ..Extra::default() })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn qoi(channels: u8) -> Vec<u8> {
        let mut f = SIGNATURE.to_vec();
        f.extend_from_slice(&65u32.to_be_bytes());
        f.extend_from_slice(&33u32.to_be_bytes());
        f.extend_from_slice(&[channels, 0, 0xC0 | 61]);
        f.extend_from_slice(&END_MARKER);
        f
    }

    fn run(f: Vec<u8>) -> Result<Extra> {
        let n = f.len() as u64;
        walk(&mut Cursor::new(f), n)
    }

    #[test]
    fn header_and_end_marker() {
        assert_eq!(run(qoi(4)).unwrap().stored, Some((65, 33)));
        let f = qoi(4);
        assert_eq!(run(f[..f.len() - 1].to_vec()).unwrap_err().code().as_str(), "truncated");
        assert_eq!(run(f[..10].to_vec()).unwrap_err().code().as_str(), "truncated");
        assert_eq!(run(qoi(5)).unwrap_err().code().as_str(), "corrupt_file");
    }
}
