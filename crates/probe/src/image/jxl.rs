//! JPEG XL: the image size from the codestream's SizeHeader and the orientation from
//! the ImageMetadata that follows it (ISO 18181-1 A.2, A.6), in a bare codestream or in
//! the ISOBMFF-style container (`jxlc`, or the first `jxlp` boxes). Hand-written: the
//! `jxl-oxide` and `zune-jpegxl` crates decode; the header is a dozen bytes of bit
//! fields. At most 32 codestream bytes are read for them, and the container's box
//! lengths are checked against the file's so a cut container is `truncated` (a bare
//! codestream has no end marker: a cut one is only noticed by a decoder). An animation
//! also gets its frame count, from a bounded walk over the frame headers ([`frames`]),
//! reported only when it is exact.

use std::io::{BufRead, Seek};

use asset_core::Limits;

use super::jp2::read_box;
use super::{Budget, Extra, read_array, read_vec};
use crate::{ProbeError, Result};

mod frames;

const NAME: &str = "JPEG XL";

pub(crate) const CODESTREAM_SIGNATURE: &[u8] = b"\xFF\x0A";
pub(crate) const CONTAINER_SIGNATURE: &[u8] = b"\0\0\0\x0CJXL \r\n\x87\n";
/// Enough for the SizeHeader (at most 73 bits) and the orientation after it.
const HEADER_BYTES: usize = 32;

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let head: [u8; 2] = read_array(r, NAME, "the signature")?;
    let bare = head == CODESTREAM_SIGNATURE;
    let header = if bare {
        let mut rest = read_vec(r, (file_size - 2).min(HEADER_BYTES as u64), NAME, "the size header")?;
        rest.splice(0..0, head);
        rest
    } else {
        codestream_from_container(r, file_size, limits)?
    };
    let mut extra = parse_codestream_header(&header)?;
    // Only an animation has a frame count to report (as GIF, APNG and WebP): the frame
    // headers are walked only then.
    if frames::is_animation(&header) {
        let segments = if bare {
            Some(Segments(vec![Segment { at: 0, file_at: 0, len: file_size }]))
        } else {
            container_segments(r, file_size, limits)?
        };
        if let Some(segments) = segments {
            extra.frame_count = frames::count(r, &segments, limits)?;
        }
    }
    Ok(extra)
}

/// Where the codestream lies in the file: one segment for a bare codestream, one per
/// `jxlc`/`jxlp` box in a container, in codestream order.
#[derive(Debug, Clone, Default)]
pub(super) struct Segments(Vec<Segment>);

#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Offset in the codestream.
    at: u64,
    file_at: u64,
    len: u64,
}

impl Segments {
    fn len(&self) -> u64 {
        self.0.last().map_or(0, |s| s.at + s.len)
    }

    /// Up to `n` codestream bytes from `at` (fewer at the codestream's end).
    fn read<R: BufRead + Seek>(&self, r: &mut R, at: u64, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for s in &self.0 {
            let end = s.at + s.len;
            let from = at + out.len() as u64;
            if out.len() >= n || from < s.at {
                break;
            }
            if from >= end {
                continue;
            }
            let take = (end - from).min((n - out.len()) as u64);
            r.seek(std::io::SeekFrom::Start(s.file_at + (from - s.at)))?;
            out.extend(read_vec(r, take, NAME, "the codestream")?);
        }
        Ok(out)
    }
}

/// The first bytes of the codestream, gathered from `jxlc` or from the `jxlp` boxes in
/// order (a partial codestream box starts with a 4-byte sequence number).
fn codestream_from_container<R: BufRead + Seek>(
    r: &mut R,
    file_size: u64,
    limits: &Limits,
) -> Result<Vec<u8>> {
    r.seek(std::io::SeekFrom::Start(0))?;
    let sig: [u8; 12] = read_array(r, NAME, "the signature box")?;
    if sig != CONTAINER_SIGNATURE {
        return Err(ProbeError::corrupt(NAME, "neither a codestream nor a container signature"));
    }
    let mut budget = Budget::new(limits, NAME);
    let mut pos = 12u64;
    let mut out = Vec::new();
    while pos < file_size && out.len() < HEADER_BYTES {
        budget.spend()?;
        let b = read_box(r, pos, file_size, file_size, NAME)?;
        let skip = match &b.kind {
            b"jxlc" => 0,
            b"jxlp" => 4,
            _ => {
                pos = b.end();
                continue;
            }
        };
        if b.len < skip {
            return Err(ProbeError::corrupt(NAME, "a jxlp box shorter than its sequence number"));
        }
        let take = (b.len - skip).min((HEADER_BYTES - out.len()) as u64);
        r.seek(std::io::SeekFrom::Start(b.start + skip))?;
        out.extend(read_vec(r, take, NAME, "the codestream")?);
        if &b.kind == b"jxlc" {
            break;
        }
        pos = b.end();
    }
    if out.is_empty() {
        return Err(ProbeError::truncated(NAME, "the container holds no codestream box"));
    }
    Ok(out)
}

/// Where the whole codestream of a container lies: its `jxlc` box, or its `jxlp` boxes
/// in file order up to the one flagged last. Walked only for an animation (the frame
/// count needs every frame header); `None` when a box cannot be read, which leaves the
/// count absent rather than failing a probe whose header was read.
fn container_segments<R: BufRead + Seek>(
    r: &mut R,
    file_size: u64,
    limits: &Limits,
) -> Result<Option<Segments>> {
    let mut budget = Budget::new(limits, NAME);
    let mut pos = 12u64;
    let mut segments = Segments::default();
    while pos < file_size {
        budget.spend()?;
        let b = match read_box(r, pos, file_size, file_size, NAME) {
            Ok(b) => b,
            Err(ProbeError::Truncated { .. } | ProbeError::Corrupt { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (skip, last) = match &b.kind {
            b"jxlc" => (0, true),
            b"jxlp" if b.len >= 4 => {
                r.seek(std::io::SeekFrom::Start(b.start))?;
                let index: [u8; 4] = read_array(r, NAME, "a jxlp sequence number")?;
                (4, index[0] & 0x80 != 0)
            }
            b"jxlp" => return Ok(None),
            _ => {
                pos = b.end();
                continue;
            }
        };
        segments.0.push(Segment { at: segments.len(), file_at: b.start + skip, len: b.len - skip });
        if last {
            return Ok(Some(segments));
        }
        pos = b.end();
    }
    Ok(Some(segments))
}

/// Reads bits least significant first, as JPEG XL packs them.
struct Bits<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn u(&mut self, n: usize) -> Result<u32> {
        let mut v = 0u32;
        for i in 0..n {
            let byte = self
                .bytes
                .get(self.at / 8)
                .ok_or_else(|| ProbeError::truncated(NAME, "the codestream ends inside its size header"))?;
            v |= u32::from((byte >> (self.at % 8)) & 1) << i;
            self.at += 1;
        }
        Ok(v)
    }

    fn bool(&mut self) -> Result<bool> {
        Ok(self.u(1)? == 1)
    }

    /// A dimension as SizeHeader codes it when not a multiple of 8: U32(1 + u(9),
    /// 1 + u(13), 1 + u(18), 1 + u(30)).
    fn dimension(&mut self) -> Result<u32> {
        let bits = [9, 13, 18, 30][self.u(2)? as usize];
        Ok(self.u(bits)? + 1)
    }
}

fn parse_codestream_header(h: &[u8]) -> Result<Extra> {
    if !h.starts_with(CODESTREAM_SIGNATURE) {
        return Err(ProbeError::corrupt(NAME, "the codestream does not start with FF0A"));
    }
    let mut b = Bits { bytes: &h[2..], at: 0 };
    let small = b.bool()?;
    let height = if small { (b.u(5)? + 1) * 8 } else { b.dimension()? };
    let ratio = b.u(3)?;
    let width = match ratio {
        0 if small => (b.u(5)? + 1) * 8,
        0 => b.dimension()?,
        r => {
            let (num, den) = [(1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1)][r as usize - 1];
            u32::try_from(u64::from(height) * num / den)
                .map_err(|_| ProbeError::corrupt(NAME, "a width past 2^32"))?
        }
    };
    // ImageMetadata: all_default, then extra_fields, then the orientation (1 + u(3)).
    let orientation = if !b.bool()? && b.bool()? { Some(b.u(3)? as u16 + 1) } else { None };
    Ok(Extra { stored: Some((width, height)), orientation, ..Extra::default() })
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::jp2::tests::boxed;
    use super::*;

    /// Packs (value, bit count) fields least significant bit first.
    fn pack(fields: &[(u32, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        for &(v, n) in fields {
            for i in 0..n {
                if at % 8 == 0 {
                    out.push(0);
                }
                *out.last_mut().unwrap() |= (((v >> i) & 1) as u8) << (at % 8);
                at += 1;
            }
        }
        out
    }

    fn run(f: Vec<u8>) -> Result<Extra> {
        let n = f.len() as u64;
        walk(&mut Cursor::new(f), n, &Limits::default())
    }

    /// 65x33: not small; height 33 = 1 + u(9) 32, selector 0; ratio 0; width 65 likewise;
    /// then metadata with extra fields and `orientation`.
    fn codestream(orientation: u32) -> Vec<u8> {
        let mut f = CODESTREAM_SIGNATURE.to_vec();
        f.extend(pack(&[
            (0, 1),
            (0, 2),
            (32, 9),
            (0, 3),
            (0, 2),
            (64, 9),
            (0, 1),
            (1, 1),
            (orientation - 1, 3),
        ]));
        f.extend_from_slice(&[0; 8]);
        f
    }

    #[test]
    fn size_and_orientation_from_a_bare_codestream() {
        let e = run(codestream(6)).unwrap();
        assert_eq!((e.stored, e.orientation), (Some((65, 33)), Some(6)));
    }

    #[test]
    fn small_sizes_and_ratios() {
        // small, height (3+1)*8 = 32, ratio 7 (2:1) → 64x32; all_default metadata.
        let mut f = CODESTREAM_SIGNATURE.to_vec();
        f.extend(pack(&[(1, 1), (3, 5), (7, 3), (1, 1)]));
        let e = run(f).unwrap();
        assert_eq!((e.stored, e.orientation), (Some((64, 32)), None));
        // Large: selector 3, 30 bits.
        let mut f = CODESTREAM_SIGNATURE.to_vec();
        f.extend(pack(&[(0, 1), (3, 2), (99_999, 30), (5, 3), (1, 1)]));
        assert_eq!(run(f).unwrap().stored, Some((177_777, 100_000)));
    }

    #[test]
    fn container_with_split_codestream() {
        let cs = codestream(1);
        let mut f = CONTAINER_SIGNATURE.to_vec();
        f.extend(boxed(b"ftyp", b"jxl \0\0\0\0jxl "));
        f.extend(boxed(b"jxll", &[5]));
        f.extend(boxed(b"jxlp", &[&[0, 0, 0, 0][..], &cs[..3]].concat()));
        f.extend(boxed(b"jxlp", &[&[0x80, 0, 0, 1][..], &cs[3..]].concat()));
        assert_eq!(run(f).unwrap().stored, Some((65, 33)));
        let mut f = CONTAINER_SIGNATURE.to_vec();
        f.extend(boxed(b"jxlc", &cs));
        assert_eq!(run(f.clone()).unwrap().stored, Some((65, 33)));
        f.truncate(f.len() - 1);
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }

    /// 3 frames of 32x24, the later two cropped (`fixtures/scripts/make-jxl-animated.sh`).
    const ANIMATED: &[u8] = include_bytes!("../../../../fixtures/assets/image/jxl-animated.jxl");

    fn frames_of(f: &[u8], limits: &Limits) -> Result<Option<u64>> {
        let n = f.len() as u64;
        Ok(walk(&mut Cursor::new(f.to_vec()), n, limits)?.frame_count)
    }

    #[test]
    fn an_animation_cut_anywhere_has_no_frame_count_and_never_panics() {
        let limits = Limits::default();
        assert_eq!(frames_of(ANIMATED, &limits).unwrap(), Some(3));
        for n in 2..ANIMATED.len() {
            if let Ok(count) = frames_of(&ANIMATED[..n], &limits) {
                assert_eq!(count, None, "cut at {n}");
            }
        }
        // Any byte flipped: an answer or an error, never a panic.
        for at in 2..ANIMATED.len() {
            let mut f = ANIMATED.to_vec();
            f[at] ^= 0xFF;
            let _ = frames_of(&f, &limits);
        }
    }

    #[test]
    fn the_frame_walk_stays_within_limits() {
        // Fewer frames allowed than the animation has: absent, not an error.
        let few = Limits { max_items: 2, ..Limits::default() };
        assert_eq!(frames_of(ANIMATED, &few).unwrap(), None);
    }

    #[test]
    fn frames_are_counted_across_jxlp_boxes() {
        let cs = ANIMATED;
        let container = |parts: &[(&[u8], u32)]| {
            let mut f = CONTAINER_SIGNATURE.to_vec();
            f.extend(boxed(b"ftyp", b"jxl \0\0\0\0jxl "));
            for (bytes, index) in parts {
                f.extend(boxed(b"jxlp", &[&index.to_be_bytes()[..], bytes].concat()));
                f.extend(boxed(b"Exif", &[0; 6]));
            }
            f
        };
        let (a, rest) = cs.split_at(20);
        let (b, c) = rest.split_at(300);
        let split = container(&[(a, 0), (b, 1), (c, 0x8000_0002)]);
        assert_eq!(frames_of(&split, &Limits::default()).unwrap(), Some(3));
        // A part missing: the frames no longer line up; never a guess.
        let gap = container(&[(a, 0), (c, 0x8000_0002)]);
        assert_ne!(frames_of(&gap, &Limits::default()).ok().flatten(), Some(3));
        // Parts after the one flagged last are not codestream.
        let early = container(&[(a, 0x8000_0000), (b, 1), (c, 2)]);
        assert_eq!(frames_of(&early, &Limits::default()).unwrap(), None);
    }

    #[test]
    fn a_still_image_has_no_frame_count() {
        assert_eq!(run(codestream(1)).unwrap().frame_count, None);
    }

    #[test]
    fn a_cut_header_is_truncated_and_a_container_without_codestream_too() {
        assert_eq!(run(codestream(1)[..3].to_vec()).unwrap_err().code().as_str(), "truncated");
        let mut f = CONTAINER_SIGNATURE.to_vec();
        f.extend(boxed(b"ftyp", b"jxl \0\0\0\0jxl "));
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }
}
