//! PNG chunk walk: the APNG frame count (acTL), the EXIF orientation (eXIf), a file
//! cut short anywhere (no IEND) reported as truncated, and the header the `image`
//! crate reads the dimensions from. That header holds only the chunks before the image
//! data that its parse needs: handed the file, the decoder keeps every text chunk in
//! memory (2 million tEXt chunks took 220 MB), and it would walk them a second time.
//!
//! The walk stops at the first IDAT: image data comes in thousands of chunks (one per
//! 8 KiB is common), and walking their headers would read the whole file. acTL must
//! precede IDAT; what may follow the data is checked from the tail instead: the file
//! must end with the fixed IEND chunk, and an eXIf placed after the data is found in
//! the last [`TAIL`] bytes by its CRC. A file that does not end with IEND (trailing
//! bytes after it, or cut short) gets the chunk walk to the end, which tells the two
//! apart.

use std::io::{BufRead, Seek, SeekFrom};

use asset_core::Limits;

use super::{Budget, Extra, MAX_EXIF_BYTES, exif_orientation, read_array, read_vec, skip};
use crate::{ProbeError, Result};

const NAME: &str = "PNG";

/// The IEND chunk, the same in every PNG: length 0, type, CRC.
const IEND: [u8; 12] = *b"\0\0\0\0IEND\xAE\x42\x60\x82";

/// How far from the end an eXIf after the image data is looked for.
const TAIL: u64 = 8 * 1024;

/// The chunks before the image data that the `image` crate's header parse needs: the
/// header, the palette and transparency (which set the output colour type) and the
/// APNG control chunks.
const HEADER_CHUNKS: [&[u8; 4]; 5] = [b"IHDR", b"PLTE", b"tRNS", b"acTL", b"fcTL"];

/// The most bytes of those chunks kept: a palette is at most 780 bytes with its
/// framing, transparency 268.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// An empty IDAT chunk (length 0, type, CRC), which ends the header we hand on.
const EMPTY_IDAT: [u8; 12] = *b"\0\0\0\0IDAT\x35\xAF\x06\x1E";

/// Walks the chunks; returns what they say and a PNG of the chunks in
/// [`HEADER_CHUNKS`] before the first IDAT, then an empty IDAT and IEND (or the IEND
/// that came first).
pub(super) fn walk<R: BufRead + Seek>(r: &mut R, limits: &Limits) -> Result<(Extra, Vec<u8>)> {
    if &read_array::<8, _>(r, NAME, "the signature")? != b"\x89PNG\r\n\x1a\n" {
        return Err(ProbeError::corrupt(NAME, "bad signature"));
    }
    let mut header = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut extra = Extra::default();
    let mut budget = Budget::new(limits, NAME);
    let mut first = true;
    let mut jumped = false;
    loop {
        budget.spend()?;
        let head: [u8; 8] = read_array(r, NAME, "a chunk header")?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = [head[4], head[5], head[6], head[7]];
        if len > i32::MAX as u32 {
            return Err(ProbeError::corrupt(NAME, format!("chunk length {len} over 2^31-1")));
        }
        if first && &kind != b"IHDR" {
            return Err(ProbeError::corrupt(NAME, "the first chunk is not IHDR"));
        }
        first = false;
        if !jumped && HEADER_CHUNKS.contains(&&kind) {
            // Kept whole, CRC included, for the decoder to check.
            if header.len() as u64 + 12 + u64::from(len) > MAX_HEADER_BYTES {
                return Err(ProbeError::TooLarge {
                    what: "PNG header chunks before the image data".into(),
                    limit: MAX_HEADER_BYTES,
                });
            }
            let data = read_vec(r, u64::from(len) + 4, NAME, "a header chunk")?;
            if &kind == b"acTL" && len >= 8 {
                let frames = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                // num_frames 0 is invalid; such a file shows as a still image.
                extra.frame_count = (frames > 0).then_some(u64::from(frames));
            }
            header.extend_from_slice(&head);
            header.extend_from_slice(&data);
            continue;
        }
        match &kind {
            b"IDAT" if !jumped => {
                jumped = true;
                header.extend_from_slice(&EMPTY_IDAT);
                header.extend_from_slice(&IEND);
                let chunk_start = r.stream_position()? - 8;
                if let Some(from_tail) = from_the_tail(r, chunk_start, extra.orientation.is_none())? {
                    extra.orientation = extra.orientation.or(from_tail);
                    return Ok((extra, header));
                }
                r.seek(SeekFrom::Start(chunk_start + 8))?;
                skip(r, u64::from(len) + 4, NAME, "a chunk")?;
            }
            b"IEND" => {
                skip(r, u64::from(len) + 4, NAME, "the IEND chunk")?;
                if !jumped {
                    header.extend_from_slice(&IEND);
                }
                return Ok((extra, header));
            }
            b"eXIf" if u64::from(len) <= MAX_EXIF_BYTES && extra.orientation.is_none() => {
                let data = read_vec(r, u64::from(len), NAME, "the eXIf chunk")?;
                extra.orientation = exif_orientation(data);
                skip(r, 4, NAME, "a chunk CRC")?;
            }
            _ => skip(r, u64::from(len) + 4, NAME, "a chunk")?,
        }
    }
}

/// With the data starting at `data_start`: `None` when the file does not end with IEND
/// (walk on), else the orientation of an eXIf chunk in the tail (`Some(None)` without
/// one, or when `want_exif` is false).
fn from_the_tail<R: BufRead + Seek>(
    r: &mut R,
    data_start: u64,
    want_exif: bool,
) -> Result<Option<Option<u16>>> {
    let size = r.seek(SeekFrom::End(0))?;
    if size < data_start + 12 + IEND.len() as u64 {
        return Ok(None);
    }
    let tail_start = size.saturating_sub(TAIL).max(data_start);
    let tail = {
        r.seek(SeekFrom::Start(tail_start))?;
        read_vec(r, size - tail_start, NAME, "the end of the file")?
    };
    if !tail.ends_with(&IEND) {
        return Ok(None);
    }
    if !want_exif {
        return Ok(Some(None));
    }
    Ok(Some(exif_in(&tail[..tail.len() - IEND.len()])))
}

/// The orientation of the last complete eXIf chunk in `bytes` whose CRC is right (a
/// chance match of the type inside compressed data fails the CRC).
fn exif_in(bytes: &[u8]) -> Option<u16> {
    let mut found = None;
    let hits = bytes.windows(4).enumerate().filter(|(_, w)| w == b"eXIf").map(|(at, _)| at);
    for at in hits {
        let Some(len_at) = at.checked_sub(4) else { continue };
        let len = u32::from_be_bytes(bytes[len_at..at].try_into().ok()?) as usize;
        let Some(crc_at) = at.checked_add(4).and_then(|d| d.checked_add(len)) else { continue };
        let Some(crc) = bytes.get(crc_at..crc_at + 4) else { continue };
        if crc32fast::hash(&bytes[at..crc_at]).to_be_bytes() == crc {
            found = exif_orientation(bytes[at + 4..crc_at].to_vec()).or(found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A chunk with its CRC (the walk ignores it; the tail's eXIf search checks it).
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(data);
        let crc = crc32fast::hash(&v[4..]);
        v.extend_from_slice(&crc.to_be_bytes());
        v
    }

    /// Reads through a cursor that counts the bytes handed out.
    struct Counting<'a> {
        inner: Cursor<&'a [u8]>,
        read: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl std::io::Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n);
            Ok(n)
        }
    }

    impl Seek for Counting<'_> {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(to)
        }
    }

    /// An EXIF block (TIFF, big-endian) with one Orientation entry.
    fn exif(orientation: u16) -> Vec<u8> {
        let mut t = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        t.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]);
        t.extend_from_slice(&orientation.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        t
    }

    fn png(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
        f.extend(chunk(b"IHDR", &[0, 0, 0, 4, 0, 0, 0, 3, 8, 2, 0, 0, 0]));
        for c in chunks {
            f.extend_from_slice(c);
        }
        f
    }

    fn run(bytes: Vec<u8>) -> Result<Extra> {
        walk(&mut Cursor::new(bytes), &Limits::default()).map(|(extra, _)| extra)
    }

    #[test]
    fn actl_gives_the_frame_count() {
        let f = png(&[chunk(b"acTL", &[0, 0, 0, 7, 0, 0, 0, 0]), chunk(b"IDAT", b"xx"), chunk(b"IEND", b"")]);
        assert_eq!(run(f).unwrap().frame_count, Some(7));
    }

    #[test]
    fn still_png_has_no_frame_count() {
        let f = png(&[chunk(b"IDAT", b"xx"), chunk(b"IEND", b"")]);
        assert_eq!(run(f).unwrap(), Extra::default());
    }

    #[test]
    fn missing_iend_is_truncated() {
        let mut f = png(&[chunk(b"IDAT", &[0; 100]), chunk(b"IEND", b"")]);
        f.truncate(60);
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn the_image_data_is_not_walked_when_the_file_ends_with_iend() {
        let idat: Vec<Vec<u8>> = (0..1000).map(|_| chunk(b"IDAT", &[7; 8192])).collect();
        let mut chunks = idat.clone();
        chunks.push(chunk(b"IEND", b""));
        let f = png(&chunks);
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut r = std::io::BufReader::with_capacity(
            4096,
            Counting { inner: Cursor::new(&f[..]), read: read.clone() },
        );
        assert_eq!(walk(&mut r, &Limits::default()).unwrap().0, Extra::default());
        assert!(read.get() < 3 * 8192 + 2 * 4096, "read {} of {} bytes", read.get(), f.len());

        // Bytes after IEND: the walk to the end, which stops at IEND, as before.
        let mut trailing = f.clone();
        trailing.extend_from_slice(b"garbage after the end");
        assert_eq!(run(trailing).unwrap(), Extra::default());
    }

    #[test]
    fn exif_before_or_after_the_image_data() {
        let before = png(&[chunk(b"eXIf", &exif(6)), chunk(b"IDAT", b"xx"), chunk(b"IEND", b"")]);
        assert_eq!(run(before).unwrap().orientation, Some(6));
        let after = png(&[chunk(b"IDAT", b"xx"), chunk(b"eXIf", &exif(8)), chunk(b"IEND", b"")]);
        assert_eq!(run(after).unwrap().orientation, Some(8));
        // The type's bytes inside image data, with no valid CRC, are not an eXIf chunk.
        let mut data = b"\0\0\0\x20eXIf".to_vec();
        data.extend_from_slice(&exif(3));
        data.extend_from_slice(&[0; 16]);
        let fake = png(&[chunk(b"IDAT", &data), chunk(b"IEND", b"")]);
        assert_eq!(run(fake).unwrap().orientation, None);
    }

    #[test]
    fn absurd_chunk_length_is_corrupt() {
        let mut f = png(&[]);
        f.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        f.extend_from_slice(b"IDAT");
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    /// Issue 9: the decoder kept every text chunk before the image data (2 million
    /// took 220 MB). The header it gets holds IHDR, the chunks that set the colour
    /// type and the APNG control, and stays a few dozen bytes.
    #[test]
    fn png_text_chunks_are_skipped_never_handed_to_the_decoder() {
        let mut chunks: Vec<Vec<u8>> = (0..2000).map(|_| chunk(b"tEXt", b"k\0v")).collect();
        let plte = chunk(b"PLTE", &[0, 0, 0, 255, 255, 255]);
        chunks.insert(1000, plte.clone());
        chunks.push(chunk(b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0]));
        chunks.push(chunk(b"IDAT", b"xx"));
        chunks.push(chunk(b"tEXt", b"after\0the data"));
        chunks.push(chunk(b"IEND", b""));
        let f = png(&chunks);
        let (extra, header) = walk(&mut Cursor::new(f.clone()), &Limits::default()).unwrap();
        assert_eq!(extra.frame_count, Some(2));
        let ihdr = &f[8..33];
        let actl = chunk(b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0]);
        let want = [&f[..8], ihdr, &plte, &actl, &EMPTY_IDAT, &IEND].concat();
        assert_eq!(header, want);
        // The decoder reads the dimensions from it (IHDR: 4x3, RGB).
        let reader = image::ImageReader::with_format(Cursor::new(header), image::ImageFormat::Png);
        assert_eq!(reader.into_dimensions().unwrap(), (4, 3));
    }

    #[test]
    fn header_chunks_past_the_cap_are_too_large() {
        let f = png(&[chunk(b"PLTE", &vec![0; 70_000]), chunk(b"IDAT", b"xx"), chunk(b"IEND", b"")]);
        assert_eq!(run(f).unwrap_err().code().as_str(), "too_large");
    }
}
