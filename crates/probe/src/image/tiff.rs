//! TIFF IFD chain walk (classic and BigTIFF): the page count (IFDs that are not
//! reduced-resolution copies) and the orientation tag of IFD0. Offsets past the end of
//! the file are a truncation; an IFD that points back into the chain, or whose bytes
//! overlap those of an IFD already read, is corrupt. So every byte is read as part of
//! one IFD at most, and the entries read in all are bounded by the file's size: a chain
//! of 65,535-entry IFDs 4 bytes apart cannot make us read each byte thousands of times.

use std::collections::BTreeMap;
use std::io::{BufRead, Seek, SeekFrom};

use asset_core::Limits;

use super::{Budget, Extra, read_array};
use crate::{ProbeError, Result};

const NAME: &str = "TIFF";
const NEW_SUBFILE_TYPE: u16 = 0x00FE;
const ORIENTATION: u16 = 0x0112;
const IMAGE_WIDTH: u16 = 0x0100;
const IMAGE_LENGTH: u16 = 0x0101;
const SHORT: u16 = 3;
const LONG: u16 = 4;
const LONG8: u16 = 16;
/// Bit 0 of NewSubfileType: a reduced-resolution version of another image (thumbnail).
const REDUCED_RESOLUTION: u32 = 1;
const MAX_BIGTIFF_ENTRIES: u64 = 1 << 20;
/// The array tags of IFD0 that the `tiff` crate reads to open the image: bits per
/// sample, strip offsets and byte counts, tile offsets and byte counts, extra samples,
/// sample format.
const DECODER_ARRAYS: [u16; 7] = [258, 273, 279, 324, 325, 338, 339];
/// What the `tiff` crate holds per value of those tags while it reads them.
const DECODER_BYTES_PER_VALUE: u64 = 32;
/// Most IFDs followed: the set of visited offsets (loop detection) stays a few MiB.
const MAX_IFDS: usize = 100_000;

#[derive(Clone, Copy)]
struct Layout {
    big_endian: bool,
    big_tiff: bool,
}

impl Layout {
    fn u16(self, b: [u8; 2]) -> u16 {
        if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }
    }

    fn u32(self, b: [u8; 4]) -> u32 {
        if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
    }

    fn u64(self, b: [u8; 8]) -> u64 {
        if self.big_endian { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) }
    }

    /// The bytes of an IFD of `count` entries: count, entries, next offset.
    fn ifd_len(self, count: u64) -> u64 {
        // count is at most MAX_BIGTIFF_ENTRIES: no overflow.
        if self.big_tiff { 8 + count * 20 + 8 } else { 2 + count * 12 + 4 }
    }

    /// An offset: 4 bytes in classic TIFF, 8 in BigTIFF.
    fn offset<R: BufRead>(self, r: &mut R) -> Result<u64> {
        if self.big_tiff {
            Ok(self.u64(read_array(r, NAME, "an offset")?))
        } else {
            Ok(u64::from(self.u32(read_array(r, NAME, "an offset")?)))
        }
    }
}

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let head: [u8; 4] = read_array(r, NAME, "the header")?;
    let big_endian = match &head[..2] {
        b"II" => false,
        b"MM" => true,
        _ => return Err(ProbeError::corrupt(NAME, "bad byte-order mark")),
    };
    let mut layout = Layout { big_endian, big_tiff: false };
    match layout.u16([head[2], head[3]]) {
        42 => {}
        43 => {
            layout.big_tiff = true;
            let sizes: [u8; 4] = read_array(r, NAME, "the BigTIFF header")?;
            if layout.u16([sizes[0], sizes[1]]) != 8 {
                return Err(ProbeError::corrupt(NAME, "BigTIFF offset size is not 8"));
            }
        }
        v => return Err(ProbeError::corrupt(NAME, format!("bad version {v}"))),
    }
    let mut next = layout.offset(r)?;
    // Start → end of each IFD read; they never overlap.
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let mut budget = Budget::new(limits, NAME);
    let mut pages: u32 = 0;
    let mut extra = Extra::default();
    while next != 0 {
        budget.spend()?;
        if next >= file_size {
            return Err(ProbeError::truncated(
                NAME,
                format!("an IFD at offset {next}, past the end of the file"),
            ));
        }
        if seen.len() >= MAX_IFDS {
            return Err(ProbeError::TooLarge { what: "the TIFF IFD chain".into(), limit: MAX_IFDS as u64 });
        }
        if seen.contains_key(&next) {
            return Err(ProbeError::corrupt(NAME, format!("the IFD chain loops back to offset {next}")));
        }
        r.seek(SeekFrom::Start(next))?;
        let count = read_count(r, layout)?;
        let end = next.saturating_add(layout.ifd_len(count));
        if let Some((&start, _)) = seen.range(..end).next_back().filter(|&(_, &e)| e > next) {
            return Err(ProbeError::corrupt(
                NAME,
                format!("the IFD at offset {next} overlaps the one at offset {start}"),
            ));
        }
        seen.insert(next, end);
        let ifd = read_ifd(r, layout, count)?;
        if seen.len() == 1 {
            extra.orientation = ifd.orientation;
            extra.stored = ifd.width.zip(ifd.height);
            // The `tiff` crate that reads the dimensions next keeps these tables whole,
            // at 32 bytes a value while it converts them (4M strips took 191 MB).
            let held = ifd.decoder_values.saturating_mul(DECODER_BYTES_PER_VALUE);
            if held > limits.max_memory_bytes {
                return Err(ProbeError::TooLarge {
                    what: format!("TIFF strip and tile tables of {} values", ifd.decoder_values),
                    limit: limits.max_memory_bytes,
                });
            }
        }
        if ifd.subfile_type & REDUCED_RESOLUTION == 0 {
            pages = pages.saturating_add(1);
        }
        next = ifd.next;
    }
    if seen.is_empty() {
        return Err(ProbeError::corrupt(NAME, "no image file directory"));
    }
    extra.page_count = (pages > 1).then_some(pages);
    Ok(extra)
}

struct Ifd {
    /// Values of the array tags the `tiff` crate reads to open the image (strip and
    /// tile tables, bits and sample formats), which it holds as a list of 24-byte
    /// values, then as a `Vec<u64>`.
    decoder_values: u64,
    subfile_type: u32,
    orientation: Option<u16>,
    width: Option<u32>,
    height: Option<u32>,
    next: u64,
}

/// An IFD's entry count, read at its start.
fn read_count<R: BufRead>(r: &mut R, layout: Layout) -> Result<u64> {
    let count = if layout.big_tiff {
        layout.u64(read_array(r, NAME, "an IFD entry count")?)
    } else {
        u64::from(layout.u16(read_array(r, NAME, "an IFD entry count")?))
    };
    if count > MAX_BIGTIFF_ENTRIES {
        return Err(ProbeError::corrupt(NAME, format!("an IFD declares {count} entries")));
    }
    Ok(count)
}

/// The entries and next-IFD offset of the IFD whose count `read_count` just read.
fn read_ifd<R: BufRead>(r: &mut R, layout: Layout, count: u64) -> Result<Ifd> {
    let mut ifd =
        Ifd { decoder_values: 0, subfile_type: 0, orientation: None, width: None, height: None, next: 0 };
    for _ in 0..count {
        let (tag, kind, count, value) = if layout.big_tiff {
            let e: [u8; 20] = read_array(r, NAME, "an IFD entry")?;
            let mut value = [0u8; 8];
            value.copy_from_slice(&e[12..20]);
            let mut count = [0u8; 8];
            count.copy_from_slice(&e[4..12]);
            (layout.u16([e[0], e[1]]), layout.u16([e[2], e[3]]), layout.u64(count), value)
        } else {
            let e: [u8; 12] = read_array(r, NAME, "an IFD entry")?;
            let count = u64::from(layout.u32([e[4], e[5], e[6], e[7]]));
            (
                layout.u16([e[0], e[1]]),
                layout.u16([e[2], e[3]]),
                count,
                [e[8], e[9], e[10], e[11], 0, 0, 0, 0],
            )
        };
        if DECODER_ARRAYS.contains(&tag) {
            ifd.decoder_values = ifd.decoder_values.saturating_add(count);
        }
        // The values we read sit inline (left-justified) in the entry: one SHORT, LONG
        // or (BigTIFF) LONG8.
        let inline = |kind: u16| match kind {
            SHORT => Some(u32::from(layout.u16([value[0], value[1]]))),
            LONG => Some(layout.u32([value[0], value[1], value[2], value[3]])),
            LONG8 if layout.big_tiff => u32::try_from(layout.u64(value)).ok(),
            _ => None,
        };
        match tag {
            NEW_SUBFILE_TYPE => ifd.subfile_type = inline(kind).unwrap_or(0),
            IMAGE_WIDTH => ifd.width = inline(kind),
            IMAGE_LENGTH => ifd.height = inline(kind),
            ORIENTATION => {
                ifd.orientation = inline(kind).filter(|o| (1..=8).contains(o)).map(|o| o as u16);
            }
            _ => {}
        }
    }
    ifd.next = layout.offset(r)?;
    Ok(ifd)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// Little-endian classic TIFF whose IFDs each hold the given (tag, type, value)
    /// entries, chained in order.
    fn tiff(ifds: &[&[(u16, u16, u32)]]) -> Vec<u8> {
        let mut f = b"II\x2a\0\x08\0\0\0".to_vec();
        for (i, entries) in ifds.iter().enumerate() {
            f.extend_from_slice(&(entries.len() as u16).to_le_bytes());
            for &(tag, kind, value) in *entries {
                f.extend_from_slice(&tag.to_le_bytes());
                f.extend_from_slice(&kind.to_le_bytes());
                f.extend_from_slice(&1u32.to_le_bytes());
                if kind == SHORT {
                    f.extend_from_slice(&(value as u16).to_le_bytes());
                    f.extend_from_slice(&[0, 0]);
                } else {
                    f.extend_from_slice(&value.to_le_bytes());
                }
            }
            let next = if i + 1 < ifds.len() { f.len() as u32 + 4 } else { 0 };
            f.extend_from_slice(&next.to_le_bytes());
        }
        f
    }

    fn run(bytes: Vec<u8>) -> Result<Extra> {
        let size = bytes.len() as u64;
        walk(&mut Cursor::new(bytes), size, &Limits::default())
    }

    #[test]
    fn counts_pages_and_skips_thumbnails() {
        let page: &[(u16, u16, u32)] = &[(0x100, SHORT, 4)];
        let thumb: &[(u16, u16, u32)] = &[(NEW_SUBFILE_TYPE, LONG, 1)];
        let first: &[(u16, u16, u32)] =
            &[(IMAGE_WIDTH, LONG, 70000), (IMAGE_LENGTH, SHORT, 9), (ORIENTATION, SHORT, 3)];
        let e = run(tiff(&[first, page, thumb, page])).unwrap();
        assert_eq!(e.page_count, Some(3));
        assert_eq!(e.orientation, Some(3));
        assert_eq!(e.stored, Some((70000, 9)));
    }

    #[test]
    fn single_page_has_no_page_count() {
        assert_eq!(run(tiff(&[&[(0x100, SHORT, 4)]])).unwrap().page_count, None);
    }

    #[test]
    fn looping_chain_is_corrupt() {
        let mut f = tiff(&[&[(0x100, SHORT, 4)]]);
        let n = f.len();
        f[n - 4..].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn ifd_past_the_end_is_truncated() {
        let mut f = tiff(&[&[(0x100, SHORT, 4)]]);
        let n = f.len();
        f[n - 4..].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn big_tiff_orientation() {
        let mut f = b"MM\0\x2b\0\x08\0\0".to_vec();
        f.extend_from_slice(&16u64.to_be_bytes());
        f.extend_from_slice(&1u64.to_be_bytes());
        f.extend_from_slice(&ORIENTATION.to_be_bytes());
        f.extend_from_slice(&SHORT.to_be_bytes());
        f.extend_from_slice(&1u64.to_be_bytes());
        f.extend_from_slice(&[0, 6, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&0u64.to_be_bytes());
        let e = run(f).unwrap();
        assert_eq!((e.orientation, e.page_count), (Some(6), None));
    }

    /// Issue 9: IFDs of thousands of entries starting 4 bytes apart, each naming the
    /// next, made every byte part of thousands of IFDs (1.2 MB took a minute). The
    /// second IFD overlaps the first: corrupt, after reading one.
    #[test]
    fn overlapping_ifds_are_corrupt_after_reading_one() {
        let entries = 1000u16;
        let ifd_len = 2 + 12 * usize::from(entries) + 4;
        let mut f = b"II\x2a\0\x08\0\0\0".to_vec();
        f.resize(8 + ifd_len + 8, 0);
        for k in [8, 12] {
            f[k..k + 2].copy_from_slice(&entries.to_le_bytes());
        }
        let next_at = 8 + ifd_len - 4;
        f[next_at..next_at + 4].copy_from_slice(&12u32.to_le_bytes());
        let err = run(f).unwrap_err();
        assert_eq!(err.code().as_str(), "corrupt_file");
        assert!(err.to_string().contains("the IFD at offset 12 overlaps the one at offset 8"), "{err}");
    }

    #[test]
    fn an_ifd_overlapping_an_earlier_one_from_below_is_corrupt() {
        // IFD0 at 40, its next at 8: an IFD of 3 entries ending at 50, inside IFD0.
        let mut f = b"II\x2a\0\x28\0\0\0".to_vec();
        f.resize(40, 0);
        f[8..10].copy_from_slice(&3u16.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&[0x00, 0x01, 3, 0, 1, 0, 0, 0, 4, 0, 0, 0]);
        f.extend_from_slice(&8u32.to_le_bytes());
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    /// Issue 9 class: the `tiff` crate keeps IFD0's strip tables whole, at about 32
    /// bytes a value while it reads them (4M strips in 32 MB took 191 MB). Tables that
    /// would take more than the memory limit are refused before it reads them.
    #[test]
    fn strip_tables_larger_than_the_memory_budget_are_refused_before_the_decoder() {
        let strips = |n: u32| -> Vec<u8> {
            let entries: &[(u16, u16, u32)] = &[(IMAGE_WIDTH, SHORT, 64), (IMAGE_LENGTH, SHORT, 64)];
            let mut f = tiff(&[entries]);
            // Two more entries in IFD0: StripOffsets and StripByteCounts, n LONGs each.
            let ifd_end = f.len() - 4;
            f.truncate(ifd_end);
            f[8..10].copy_from_slice(&4u16.to_le_bytes());
            for tag in [273u16, 279] {
                f.extend_from_slice(&tag.to_le_bytes());
                f.extend_from_slice(&LONG.to_le_bytes());
                f.extend_from_slice(&n.to_le_bytes());
                f.extend_from_slice(&0u32.to_le_bytes());
            }
            f.extend_from_slice(&0u32.to_le_bytes());
            f
        };
        let limits = Limits { max_memory_bytes: 64 * 1000, ..Limits::default() };
        let walk_with = |f: Vec<u8>| {
            let size = f.len() as u64;
            walk(&mut Cursor::new(f), size, &limits)
        };
        assert_eq!(walk_with(strips(1000)).unwrap().stored, Some((64, 64)));
        let err = walk_with(strips(1001)).unwrap_err();
        assert_eq!(err.code().as_str(), "too_large", "{err}");
    }
}
