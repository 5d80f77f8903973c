//! JPEG marker walk: finds the EXIF APP1 segment, keeps the segments a decoder needs
//! for the frame header (so the `image` crate never reads the whole file), and checks
//! that an end-of-image marker follows the scans.

use std::io::{BufRead, Read, Seek, SeekFrom};

use asset_core::Limits;

use super::{Budget, exif_orientation, read_array, read_vec, skip};
use crate::{ProbeError, Result};

const NAME: &str = "JPEG";
const SOS: u8 = 0xDA;
const EOI: u8 = 0xD9;
/// Tables and frame header before the first scan are a few KiB in real files (four
/// DQT and four DHT segments at most 64 KiB each even when redefined).
const MAX_TABLE_BYTES: u64 = 1024 * 1024;

pub(super) struct Header {
    /// SOI, every table and frame segment up to and including SOS, then EOI: enough
    /// for a decoder's header parse, without APPn/COM payloads or entropy-coded data.
    pub minimal: Vec<u8>,
    pub orientation: Option<u16>,
    /// Width and height from the frame header (None when the height is left to a DNL).
    pub stored: Option<(u32, u32)>,
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Header> {
    if read_array::<2, _>(r, NAME, "the start-of-image marker")? != [0xFF, 0xD8] {
        return Err(ProbeError::corrupt(NAME, "no start-of-image marker"));
    }
    let mut minimal = vec![0xFF, 0xD8];
    let mut orientation = None;
    let mut seen_frame = false;
    let mut stored = None;
    let mut budget = Budget::new(limits, NAME);
    loop {
        budget.spend()?;
        let marker = next_marker(r)?;
        match marker {
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 => return Err(ProbeError::corrupt(NAME, "a second start-of-image marker")),
            EOI => return Err(ProbeError::corrupt(NAME, "end of image before any scan")),
            _ => {}
        }
        let len = u16::from_be_bytes(read_array(r, NAME, "a segment length")?);
        let payload = u64::from(len).checked_sub(2).ok_or_else(|| {
            ProbeError::corrupt(NAME, format!("segment FF{marker:02X} declares length {len}"))
        })?;
        let is_app_or_comment = (0xE0..=0xEF).contains(&marker) || marker == 0xFE;
        if marker == 0xE1 && orientation.is_none() {
            let data = read_vec(r, payload, NAME, "an APP1 segment")?;
            if let Some(tiff) = data.strip_prefix(b"Exif\0\0") {
                orientation = exif_orientation(tiff.to_vec());
            }
        } else if is_app_or_comment {
            skip(r, payload, NAME, "an application segment")?;
        } else {
            let data = read_vec(r, payload, NAME, "a header segment")?;
            let cap = MAX_TABLE_BYTES.min(limits.max_memory_bytes);
            if minimal.len() as u64 + u64::from(len) > cap {
                return Err(ProbeError::TooLarge {
                    what: "JPEG table and frame segments".into(),
                    limit: cap,
                });
            }
            minimal.extend_from_slice(&[0xFF, marker]);
            minimal.extend_from_slice(&len.to_be_bytes());
            minimal.extend_from_slice(&data);
            if is_frame_header(marker) && !seen_frame {
                seen_frame = true;
                // precision, height, width
                if let [_, h0, h1, w0, w1, ..] = data[..] {
                    let (h, w) = (u16::from_be_bytes([h0, h1]), u16::from_be_bytes([w0, w1]));
                    stored = (h > 0 && w > 0).then_some((u32::from(w), u32::from(h)));
                }
            }
            if marker == SOS {
                break;
            }
        }
    }
    if !seen_frame {
        return Err(ProbeError::corrupt(NAME, "a scan before any frame header"));
    }
    minimal.extend_from_slice(&[0xFF, EOI]);
    if !has_end_of_image(r, file_size)? {
        return Err(ProbeError::truncated(NAME, "the scan data has no end-of-image marker"));
    }
    Ok(Header { minimal, orientation, stored })
}

/// SOF0–SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range.
fn is_frame_header(marker: u8) -> bool {
    (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Reads `FF` (with any fill bytes) and returns the marker code after it.
fn next_marker<R: Read>(r: &mut R) -> Result<u8> {
    let [first] = read_array(r, NAME, "a marker")?;
    if first != 0xFF {
        return Err(ProbeError::corrupt(NAME, format!("expected a marker, found byte {first:#04X}")));
    }
    loop {
        let [b] = read_array(r, NAME, "a marker")?;
        if b != 0xFF {
            return Ok(b);
        }
    }
}

/// True when an EOI marker follows the start of the first scan. The common case, EOI
/// in the last two bytes, costs one read; otherwise (trailing data such as a motion
/// photo's video) the rest is scanned, in fixed-size blocks. Inside entropy-coded data
/// a real `FF` is always followed by `00` or RSTn, so `FF D9` there is the marker.
fn has_end_of_image<R: BufRead + Seek>(r: &mut R, file_size: u64) -> Result<bool> {
    let scan_start = r.stream_position()?;
    if file_size >= scan_start + 2 {
        r.seek(SeekFrom::Start(file_size - 2))?;
        let mut tail = [0u8; 2];
        r.read_exact(&mut tail)?;
        if tail == [0xFF, EOI] {
            return Ok(true);
        }
    }
    r.seek(SeekFrom::Start(scan_start))?;
    let mut block = vec![0u8; 64 * 1024];
    let mut prev_ff = false;
    loop {
        let n = r.read(&mut block)?;
        if n == 0 {
            return Ok(false);
        }
        for &b in &block[..n] {
            if prev_ff && b == EOI {
                return Ok(true);
            }
            prev_ff = b == 0xFF;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, marker];
        v.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn jpeg(tail: &[u8]) -> Vec<u8> {
        let mut f = vec![0xFF, 0xD8];
        f.extend(segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
        f.extend(segment(0xFE, b"a comment"));
        // SOF0: 8-bit, 33 high, 65 wide, one component.
        f.extend(segment(0xC0, &[8, 0, 33, 0, 65, 1, 1, 0x11, 0]));
        f.extend(segment(SOS, &[1, 1, 0, 0, 63, 0]));
        f.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34]);
        f.extend_from_slice(tail);
        f
    }

    fn run(bytes: Vec<u8>) -> Result<Header> {
        let size = bytes.len() as u64;
        walk(&mut Cursor::new(bytes), size, &Limits::default())
    }

    #[test]
    fn minimal_header_drops_app_and_comment_payloads() {
        let h = run(jpeg(&[0xFF, 0xD9])).unwrap();
        let mut want = vec![0xFF, 0xD8];
        want.extend(segment(0xC0, &[8, 0, 33, 0, 65, 1, 1, 0x11, 0]));
        want.extend(segment(SOS, &[1, 1, 0, 0, 63, 0]));
        want.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(h.minimal, want);
        assert_eq!(h.orientation, None);
        assert_eq!(h.stored, Some((65, 33)));
    }

    #[test]
    fn end_of_image_found_before_trailing_data() {
        let mut tail = vec![0xFF, 0xD9];
        tail.extend_from_slice(b"....ftypmp42 trailing video....");
        assert!(run(jpeg(&tail)).is_ok());
    }

    #[test]
    fn scan_without_end_of_image_is_truncated() {
        let err = run(jpeg(&[0x56, 0x78])).err().unwrap();
        assert_eq!(err.code().as_str(), "truncated");
    }

    #[test]
    fn segment_cut_short_is_truncated() {
        let mut f = jpeg(&[0xFF, 0xD9]);
        f.truncate(30);
        assert_eq!(run(f).err().unwrap().code().as_str(), "truncated");
    }

    #[test]
    fn exif_orientation_from_app1() {
        // Big-endian TIFF header, IFD0 with one entry: Orientation (0x0112) SHORT 1 = 6.
        let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
        tiff.extend_from_slice(&[0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let mut f = vec![0xFF, 0xD8];
        f.extend(segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0<x/>"));
        f.extend(segment(0xE1, &app1));
        f.extend_from_slice(&jpeg(&[0xFF, 0xD9])[2..]);
        assert_eq!(run(f).unwrap().orientation, Some(6));
    }
}
