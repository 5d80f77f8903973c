//! Camera raw built on TIFF: DNG (IFD0 holds `DNGVersion`), Canon CR2 (`CR\x02` after
//! the TIFF header), Nikon NEF and Sony ARW (IFD0's `Make` with sub-IFDs). Their IFD0
//! is often a thumbnail or preview; the sensor image is another IFD of the chain or a
//! SubIFD. We report the full-resolution image: the largest IFD whose NewSubfileType
//! is 0, over the chain and the SubIFDs (nested up to [`MAX_DEPTH`]), with IFD0's
//! orientation. The `tiff` crate reads IFD0 only and would give the thumbnail.
//! Every IFD is read once (a visited set: a pointer back into the walk is corrupt, one
//! past the end truncated), entry and sub-IFD counts are bounded, and only IFD entries
//! and a few inline values are read, never strips or tiles.

use std::collections::HashSet;
use std::io::{BufRead, Cursor, Seek, SeekFrom};

use asset_core::Limits;

use super::{Budget, Extra, read_array};
use crate::{ProbeError, Result};

const NAME: &str = "camera raw";
const NEW_SUBFILE_TYPE: u16 = 0x00FE;
const IMAGE_WIDTH: u16 = 0x0100;
const IMAGE_LENGTH: u16 = 0x0101;
const MAKE: u16 = 0x010F;
const ORIENTATION: u16 = 0x0112;
const SUB_IFDS: u16 = 0x014A;
const DNG_VERSION: u16 = 0xC612;
const STRIP_OFFSETS: u16 = 0x0111;
const STRIP_BYTE_COUNTS: u16 = 0x0117;
const TILE_OFFSETS: u16 = 0x0144;
const TILE_BYTE_COUNTS: u16 = 0x0145;
/// More entries than any real IFD has (a few hundred at most).
const MAX_ENTRIES: u16 = 4096;
/// More SubIFDs than any camera writes (NEF: two or three).
const MAX_SUB_IFDS: u32 = 64;
/// SubIFDs of SubIFDs: DNG allows nesting, cameras use one level.
const MAX_DEPTH: u32 = 4;
/// Most IFDs visited in all.
const MAX_IFDS: usize = 1024;

/// Which raw format a TIFF-structured file is, from its first bytes (the TIFF header
/// and IFD0 as far as they lie in `head`); `None` for a plain TIFF.
pub(crate) fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.len() >= 11 && &head[8..10] == b"CR" && head[10] == 2 {
        return Some("image/x-canon-cr2");
    }
    let mut r = Cursor::new(head);
    let layout = header(&mut r).ok()?;
    let first = layout.offset;
    let ifd = read_ifd(&mut r, layout, first, head.len() as u64).ok()?;
    if ifd.dng {
        return Some("image/x-adobe-dng");
    }
    if ifd.sub_ifds.is_empty() {
        return None;
    }
    match ifd.make.as_deref() {
        Some(m) if m.starts_with(b"NIKON") => Some("image/x-nikon-nef"),
        Some(m) if m.starts_with(b"SONY") => Some("image/x-sony-arw"),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Layout {
    big_endian: bool,
    /// IFD0's offset.
    offset: u64,
}

impl Layout {
    fn u16(self, b: [u8; 2]) -> u16 {
        if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }
    }

    fn u32(self, b: [u8; 4]) -> u32 {
        if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
    }
}

fn header<R: BufRead>(r: &mut R) -> Result<Layout> {
    let h: [u8; 8] = read_array(r, NAME, "the TIFF header")?;
    let big_endian = match &h[..4] {
        b"II*\0" => false,
        b"MM\0*" => true,
        _ => return Err(ProbeError::corrupt(NAME, "not a classic TIFF header")),
    };
    let mut layout = Layout { big_endian, offset: 0 };
    layout.offset = u64::from(layout.u32([h[4], h[5], h[6], h[7]]));
    Ok(layout)
}

#[derive(Debug, Default)]
struct Ifd {
    subfile_type: u32,
    width: Option<u32>,
    height: Option<u32>,
    orientation: Option<u16>,
    make: Option<Vec<u8>>,
    dng: bool,
    sub_ifds: Vec<u64>,
    /// The last strip or tile: (type, count, value field) of its offsets and byte counts.
    offsets: Option<(u16, u32, [u8; 4])>,
    counts: Option<(u16, u32, [u8; 4])>,
    next: u64,
}

impl Ifd {
    /// Where the image data of this IFD ends, by its last strip or tile (writers lay
    /// them out in order); `None` if it names none.
    fn data_end<R: BufRead + Seek>(&self, r: &mut R, layout: Layout) -> Result<Option<u64>> {
        let (Some(o), Some(c)) = (self.offsets, self.counts) else { return Ok(None) };
        let (Some(offset), Some(count)) = (last_value(r, layout, o)?, last_value(r, layout, c)?) else {
            return Ok(None);
        };
        Ok(Some(offset.saturating_add(count)))
    }
}

/// The last value of a SHORT or LONG array entry: inline when it fits in 4 bytes.
fn last_value<R: BufRead + Seek>(
    r: &mut R,
    layout: Layout,
    (kind, n, value): (u16, u32, [u8; 4]),
) -> Result<Option<u64>> {
    let size = match kind {
        3 => 2u64,
        4 => 4,
        _ => return Ok(None),
    };
    if n == 0 {
        return Ok(None);
    }
    let field = if u64::from(n) * size <= 4 {
        let at = ((u64::from(n) - 1) * size) as usize;
        [
            value[at],
            value[at + 1],
            value.get(at + 2).copied().unwrap_or(0),
            value.get(at + 3).copied().unwrap_or(0),
        ]
    } else {
        r.seek(SeekFrom::Start(u64::from(layout.u32(value)) + (u64::from(n) - 1) * size))?;
        let mut b = [0u8; 4];
        super::read_exact(r, &mut b[..size as usize], NAME, "a strip table")?;
        b
    };
    Ok(Some(if size == 2 {
        u64::from(layout.u16([field[0], field[1]]))
    } else {
        u64::from(layout.u32(field))
    }))
}

fn read_ifd<R: BufRead + Seek>(r: &mut R, layout: Layout, at: u64, file_size: u64) -> Result<Ifd> {
    if at.saturating_add(2) > file_size {
        return Err(ProbeError::truncated(NAME, format!("an IFD at offset {at}, past the end of the file")));
    }
    r.seek(SeekFrom::Start(at))?;
    let count = layout.u16(read_array(r, NAME, "an IFD entry count")?);
    if count == 0 || count > MAX_ENTRIES {
        return Err(ProbeError::corrupt(NAME, format!("an IFD of {count} entries")));
    }
    let mut ifd = Ifd::default();
    let mut sub_ifds = None;
    let mut make = None;
    for _ in 0..count {
        let e: [u8; 12] = read_array(r, NAME, "an IFD entry")?;
        let tag = layout.u16([e[0], e[1]]);
        let kind = layout.u16([e[2], e[3]]);
        let n = layout.u32([e[4], e[5], e[6], e[7]]);
        let value = [e[8], e[9], e[10], e[11]];
        let inline = match kind {
            3 => Some(u32::from(layout.u16([value[0], value[1]]))),
            4 | 13 => Some(layout.u32(value)),
            _ => None,
        };
        match tag {
            NEW_SUBFILE_TYPE => ifd.subfile_type = inline.unwrap_or(0),
            IMAGE_WIDTH => ifd.width = inline,
            IMAGE_LENGTH => ifd.height = inline,
            ORIENTATION => ifd.orientation = inline.filter(|o| (1..=8).contains(o)).map(|o| o as u16),
            DNG_VERSION => ifd.dng = true,
            STRIP_OFFSETS | TILE_OFFSETS => ifd.offsets = Some((kind, n, value)),
            STRIP_BYTE_COUNTS | TILE_BYTE_COUNTS => ifd.counts = Some((kind, n, value)),
            SUB_IFDS if matches!(kind, 4 | 13) => sub_ifds = Some((n, value)),
            MAKE if kind == 2 => make = Some((n, value)),
            _ => {}
        }
    }
    ifd.next = u64::from(layout.u32(read_array(r, NAME, "the next IFD offset")?));
    if let Some((n, value)) = sub_ifds {
        if n > MAX_SUB_IFDS {
            return Err(ProbeError::corrupt(NAME, format!("{n} SubIFDs")));
        }
        if n == 1 {
            ifd.sub_ifds.push(u64::from(layout.u32(value)));
        } else {
            r.seek(SeekFrom::Start(u64::from(layout.u32(value))))?;
            for _ in 0..n {
                ifd.sub_ifds.push(u64::from(layout.u32(read_array(r, NAME, "the SubIFD offsets")?)));
            }
        }
    }
    if let Some((n, value)) = make {
        // The maker's name: inline up to 4 bytes, else at an offset; 16 bytes tell.
        let len = n.min(16) as usize;
        let bytes = if n <= 4 {
            value[..len].to_vec()
        } else {
            r.seek(SeekFrom::Start(u64::from(layout.u32(value))))?;
            let mut b = vec![0u8; len];
            // A Make we cannot read leaves the file a plain TIFF, not a broken raw.
            if std::io::Read::read_exact(r, &mut b).is_ok() { b } else { Vec::new() }
        };
        ifd.make = Some(bytes);
    }
    Ok(ifd)
}

/// The full-resolution image of a raw file and IFD0's orientation.
/// IFD0 of a TIFF blob held in memory (CR3 keeps one in its `CMT1` box): its width,
/// height and orientation, with the bounds of [`read_ifd`].
pub(super) fn ifd0(blob: &[u8]) -> Result<(Option<u32>, Option<u32>, Option<u16>)> {
    let mut r = Cursor::new(blob);
    let layout = header(&mut r)?;
    let ifd = read_ifd(&mut r, layout, layout.offset, blob.len() as u64)?;
    Ok((ifd.width, ifd.height, ifd.orientation))
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let layout = header(r)?;
    let mut budget = Budget::new(limits, NAME);
    let mut visited = HashSet::new();
    // (offset, depth): the chain from IFD0 at depth 0, SubIFDs one deeper.
    let mut todo = vec![(layout.offset, 0u32)];
    let mut best: Option<(u32, u32, Option<u64>)> = None;
    let mut orientation = None;
    while let Some((mut at, depth)) = todo.pop() {
        while at != 0 {
            budget.spend()?;
            if !visited.insert(at) {
                return Err(ProbeError::corrupt(NAME, format!("the IFD at offset {at} is reached twice")));
            }
            if visited.len() > MAX_IFDS {
                return Err(ProbeError::TooLarge {
                    what: "the raw file's IFDs".into(),
                    limit: MAX_IFDS as u64,
                });
            }
            let ifd = read_ifd(r, layout, at, file_size)?;
            if at == layout.offset {
                orientation = ifd.orientation;
            }
            if ifd.subfile_type == 0
                && let (Some(w), Some(h)) = (ifd.width, ifd.height)
                && best.is_none_or(|(bw, bh, _)| u64::from(w) * u64::from(h) > u64::from(bw) * u64::from(bh))
            {
                best = Some((w, h, ifd.data_end(r, layout)?));
            }
            if depth < MAX_DEPTH {
                todo.extend(ifd.sub_ifds.iter().map(|&o| (o, depth + 1)));
            }
            at = ifd.next;
        }
    }
    let (w, h, end) = best.ok_or_else(|| ProbeError::corrupt(NAME, "no full-resolution IFD with a size"))?;
    // The sensor data is most of the file: a cut file loses its end.
    if let Some(end) = end.filter(|&e| e > file_size) {
        return Err(ProbeError::truncated(
            NAME,
            format!("the image data ends at {end}, past the end of the file ({file_size})"),
        ));
    }
    Ok(Extra { stored: Some((w, h)), orientation, ..Extra::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (tag, type, count, value).
    type Entry = (u16, u16, u32, u32);

    /// A little-endian TIFF of IFDs laid out in order; each is a list of (tag, type,
    /// count, value) entries and the index of the next IFD in the chain. A SubIFDs value
    /// names IFD indices, turned into offsets.
    fn tiff(ifds: &[(Vec<Entry>, Option<usize>)]) -> Vec<u8> {
        let mut offsets = Vec::new();
        let mut at = 8u32;
        for (entries, _) in ifds {
            offsets.push(at);
            at += 2 + 12 * entries.len() as u32 + 4;
        }
        let mut f = b"II*\0\x08\0\0\0".to_vec();
        for (entries, next) in ifds {
            f.extend_from_slice(&(entries.len() as u16).to_le_bytes());
            for &(tag, kind, count, value) in entries {
                let value = if tag == SUB_IFDS { offsets[value as usize] } else { value };
                f.extend_from_slice(&tag.to_le_bytes());
                f.extend_from_slice(&kind.to_le_bytes());
                f.extend_from_slice(&count.to_le_bytes());
                f.extend_from_slice(&value.to_le_bytes());
            }
            f.extend_from_slice(&next.map_or(0, |n| offsets[n]).to_le_bytes());
        }
        f
    }

    fn run(f: Vec<u8>) -> Result<Extra> {
        let n = f.len() as u64;
        walk(&mut Cursor::new(f), n, &Limits::default())
    }

    fn dng() -> Vec<u8> {
        tiff(&[
            (
                vec![
                    (NEW_SUBFILE_TYPE, 4, 1, 1),
                    (IMAGE_WIDTH, 3, 1, 256),
                    (IMAGE_LENGTH, 3, 1, 171),
                    (ORIENTATION, 3, 1, 6),
                    (SUB_IFDS, 4, 1, 1),
                    (DNG_VERSION, 1, 4, 0x0000_0401),
                ],
                None,
            ),
            (vec![(NEW_SUBFILE_TYPE, 4, 1, 0), (IMAGE_WIDTH, 4, 1, 6016), (IMAGE_LENGTH, 4, 1, 4016)], None),
        ])
    }

    #[test]
    fn dng_reports_the_raw_sub_ifd_not_the_thumbnail() {
        let f = dng();
        assert_eq!(sniff(&f), Some("image/x-adobe-dng"));
        let e = run(f).unwrap();
        assert_eq!((e.stored, e.orientation), (Some((6016, 4016)), Some(6)));
    }

    #[test]
    fn nef_with_a_preview_and_a_raw_sub_ifd() {
        let mut f = tiff(&[
            (
                vec![
                    (NEW_SUBFILE_TYPE, 4, 1, 1),
                    (IMAGE_WIDTH, 3, 1, 160),
                    (IMAGE_LENGTH, 3, 1, 120),
                    (MAKE, 2, 6, 200),
                    (SUB_IFDS, 4, 1, 1),
                ],
                None,
            ),
            (
                vec![(NEW_SUBFILE_TYPE, 4, 1, 0), (IMAGE_WIDTH, 4, 1, 6048), (IMAGE_LENGTH, 4, 1, 4024)],
                Some(2),
            ),
            (vec![(NEW_SUBFILE_TYPE, 4, 1, 1), (IMAGE_WIDTH, 4, 1, 8000), (IMAGE_LENGTH, 4, 1, 6000)], None),
        ]);
        f.resize(200, 0);
        f.extend_from_slice(b"NIKON\0");
        assert_eq!(sniff(&f), Some("image/x-nikon-nef"));
        assert_eq!(run(f).unwrap().stored, Some((6048, 4024)));
    }

    #[test]
    fn strips_past_the_end_are_truncated() {
        let mut f = tiff(&[(
            vec![
                (IMAGE_WIDTH, 3, 1, 8),
                (IMAGE_LENGTH, 3, 1, 8),
                (STRIP_OFFSETS, 4, 2, 200),
                (STRIP_BYTE_COUNTS, 3, 2, 32 << 16 | 32),
                (DNG_VERSION, 1, 4, 0x0000_0401),
            ],
            None,
        )]);
        f.resize(200, 0);
        f.extend_from_slice(&[100, 0, 0, 0, 132, 0, 0, 0]);
        assert_eq!(run(f.clone()).unwrap().stored, Some((8, 8)));
        let mut far = f;
        far[204..208].copy_from_slice(&300u32.to_le_bytes());
        assert_eq!(run(far).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn a_plain_tiff_is_not_raw() {
        let f = tiff(&[(vec![(IMAGE_WIDTH, 3, 1, 65), (IMAGE_LENGTH, 3, 1, 33)], None)]);
        assert_eq!(sniff(&f), None);
        let mut cr2 = f.clone();
        cr2.extend_from_slice(&[0; 4]);
        cr2[8..12].copy_from_slice(b"CR\x02\0");
        assert_eq!(sniff(&cr2), Some("image/x-canon-cr2"));
    }

    #[test]
    fn loops_and_bad_pointers() {
        // The SubIFD names IFD0 again.
        let looped =
            tiff(&[(vec![(IMAGE_WIDTH, 3, 1, 65), (IMAGE_LENGTH, 3, 1, 33), (SUB_IFDS, 4, 1, 0)], None)]);
        assert_eq!(run(looped).unwrap_err().code().as_str(), "corrupt_file");
        let mut past = dng();
        let n = past.len();
        // IFD0's SubIFDs value (the fifth entry) pointing past the end.
        let at = 8 + 2 + 12 * 4 + 8;
        past[at..at + 4].copy_from_slice(&(n as u32 + 100).to_le_bytes());
        assert_eq!(run(past).unwrap_err().code().as_str(), "truncated");
        let many = tiff(&[(vec![(IMAGE_WIDTH, 3, 1, 65), (SUB_IFDS, 4, 1000, 0)], None)]);
        assert_eq!(run(many).unwrap_err().code().as_str(), "corrupt_file");
    }
}
