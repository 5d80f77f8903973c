//! HEIF/AVIF (ISO BMFF still images): reads the `meta` box, bounded in size, and
//! derives the primary item's display size from its `ispe`, `clap` and `irot`
//! properties; the EXIF item's orientation is reported when it is there. Only what the
//! primary item needs is kept (its associations, its properties): a `meta` of millions
//! of boxes, entries or extents costs one pass over its bytes, never a loop per
//! declared element that takes no room.

use std::io::{BufRead, Seek, SeekFrom};

use asset_core::Limits;

use super::{Budget, MAX_EXIF_BYTES, exif_orientation, read_array, read_vec, skip};
use crate::{ProbeError, Result};

/// The largest `meta` box read into memory; real ones are a few KiB (grids of a few
/// hundred tiles stay well under a MiB).
const MAX_META_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Info {
    pub width: u32,
    pub height: u32,
    pub orientation: Option<u16>,
}

pub(super) fn walk<R: BufRead + Seek>(
    r: &mut R,
    file_size: u64,
    name: &'static str,
    limits: &Limits,
) -> Result<Info> {
    let mut budget = Budget::new(limits, name);
    let mut pos = 0u64;
    loop {
        budget.spend()?;
        if pos >= file_size {
            return Err(ProbeError::truncated(name, "the file ends before a meta box"));
        }
        let head: [u8; 8] = read_array(r, name, "a box header")?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let (size, header_len) = match size32 {
            0 => (file_size - pos, 8),
            1 => (u64::from_be_bytes(read_array(r, name, "a box size")?), 16),
            n => (u64::from(n), 8),
        };
        if size < header_len {
            return Err(ProbeError::corrupt(name, format!("a box declares {size} bytes")));
        }
        let payload = size - header_len;
        if &head[4..8] == b"meta" {
            let cap = MAX_META_BYTES.min(limits.max_memory_bytes);
            if payload > cap {
                return Err(ProbeError::TooLarge {
                    what: format!("{name} meta box of {payload} bytes"),
                    limit: cap,
                });
            }
            let meta = read_vec(r, payload, name, "the meta box")?;
            return parse_meta(&meta, r, name, limits);
        }
        skip(r, payload, name, "a box")?;
        pos = pos.saturating_add(size);
    }
}

fn parse_meta<R: BufRead + Seek>(
    meta: &[u8],
    r: &mut R,
    name: &'static str,
    limits: &Limits,
) -> Result<Info> {
    let mut budget = Budget::new(limits, name);
    let body = meta.get(4..).ok_or_else(|| ProbeError::corrupt(name, "meta box too short"))?;
    // The boxes we read, by reference (the last of each, as a reader that assigns them
    // in turn keeps): nothing is collected per child, so a million of them cost a pass.
    let (mut pitm, mut iinf, mut iloc, mut ipco) = (None, None, None, None);
    let mut idat: &[u8] = &[];
    for child in children(body, name) {
        let (kind, data) = child?;
        budget.spend()?;
        match &kind {
            b"pitm" => pitm = Some(data),
            b"iprp" => {
                for p in children(data, name) {
                    let (kind, data) = p?;
                    budget.spend()?;
                    if &kind == b"ipco" {
                        ipco = Some(data);
                    }
                }
            }
            b"iinf" => iinf = Some(data),
            b"iloc" => iloc = Some(data),
            b"idat" => idat = data,
            _ => {}
        }
    }
    let pitm = pitm.ok_or_else(|| ProbeError::corrupt(name, "no primary item (pitm)"))?;
    let mut b = Bytes::full_box(pitm, name)?;
    let primary = if b.version == 0 { u32::from(b.u16()?) } else { b.u32()? };
    // The primary item's associations: the first entry for it, in the ipma boxes in order.
    let mut assoc = None;
    'iprp: for child in children(body, name) {
        let (kind, data) = child?;
        if &kind != b"iprp" {
            continue;
        }
        for p in children(data, name) {
            let (kind, data) = p?;
            if &kind == b"ipma"
                && let Some(a) = associations_of(primary, data, name, &mut budget)?
            {
                assoc = Some(a);
                break 'iprp;
            }
        }
    }
    let assoc = assoc.unwrap_or_default();
    let props = properties(ipco.unwrap_or_default(), &assoc, name, &mut budget)?;
    let (mut width, mut height) = props
        .iter()
        .find(|(k, _)| k == b"ispe")
        .map(|(_, d)| {
            let mut b = Bytes::full_box(d, name)?;
            Ok::<_, ProbeError>((b.u32()?, b.u32()?))
        })
        .transpose()?
        .ok_or_else(|| ProbeError::corrupt(name, "the primary item has no ispe property"))?;
    // MIAF fixes the order of transforms: clean aperture first, then rotation.
    for (kind, data) in &props {
        match kind {
            b"clap" => {
                let mut b = Bytes::new(data, name);
                let (wn, wd, hn, hd) = (b.u32()?, b.u32()?, b.u32()?, b.u32()?);
                if wd != 0 && hd != 0 {
                    width = (f64::from(wn) / f64::from(wd)).round() as u32;
                    height = (f64::from(hn) / f64::from(hd)).round() as u32;
                }
            }
            b"irot" => {
                let angle = Bytes::new(data, name).u8()? & 3;
                if angle == 1 || angle == 3 {
                    (width, height) = (height, width);
                }
            }
            _ => {}
        }
    }
    let exif_item = match iinf {
        Some(iinf) => find_exif_item(iinf, name, &mut budget)?,
        None => None,
    };
    let orientation = match (exif_item, iloc) {
        (Some(item), Some(iloc)) => read_exif_item(item, iloc, idat, r, name)?,
        _ => None,
    };
    Ok(Info { width, height, orientation })
}

/// The boxes inside `data`, as (type, payload), one at a time.
fn children<'a>(data: &'a [u8], name: &'static str) -> impl Iterator<Item = Result<([u8; 4], &'a [u8])>> {
    let mut b = Bytes::new(data, name);
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || b.rest().is_empty() {
            return None;
        }
        let next = (|| {
            let size = b.u32()?;
            let kind = b.fourcc()?;
            let payload = match size {
                0 => b.rest().len(),
                1 => {
                    usize::try_from(b.u64()?).ok().and_then(|s| s.checked_sub(16)).ok_or_else(|| b.short())?
                }
                n => (n as usize).checked_sub(8).ok_or_else(|| b.short())?,
            };
            Ok((kind, b.take(payload)?))
        })();
        failed = next.is_err();
        Some(next)
    })
}

/// The 1-based property indices associated with `item` by the first `ipma` entry for
/// it, or `None` if this `ipma` has none. Entries before it are stepped over by their
/// sizes; each takes at least 3 bytes, so the declared count cannot outrun the box.
fn associations_of(
    item: u32,
    data: &[u8],
    name: &'static str,
    budget: &mut Budget,
) -> Result<Option<Vec<u16>>> {
    let mut b = Bytes::full_box(data, name)?;
    let count = b.u32()?;
    let wide = b.flags & 1 != 0;
    for _ in 0..count {
        budget.spend()?;
        let id = if b.version < 1 { u32::from(b.u16()?) } else { b.u32()? };
        let n = b.u8()?;
        if id != item {
            b.take(usize::from(n) * if wide { 2 } else { 1 })?;
            continue;
        }
        let mut indices = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            indices.push(if wide { b.u16()? & 0x7FFF } else { u16::from(b.u8()? & 0x7F) });
        }
        return Ok(Some(indices));
    }
    Ok(None)
}

/// The properties of `ipco` at the given 1-based indices, in the order given (at most
/// 255 of them): the walk stops past the largest index and keeps nothing else.
fn properties<'a>(
    ipco: &'a [u8],
    indices: &[u16],
    name: &'static str,
    budget: &mut Budget,
) -> Result<Vec<([u8; 4], &'a [u8])>> {
    let mut found: Vec<Option<([u8; 4], &'a [u8])>> = vec![None; indices.len()];
    let last = indices.iter().copied().max().unwrap_or(0);
    for (i, child) in (1u16..=last).zip(children(ipco, name)) {
        let child = child?;
        budget.spend()?;
        for (slot, _) in found.iter_mut().zip(indices).filter(|&(_, &want)| want == i) {
            *slot = Some(child);
        }
    }
    Ok(found.into_iter().flatten().collect())
}

/// The ID of the first item of type `Exif`, from `iinf`'s `infe` entries (version 2+).
fn find_exif_item(data: &[u8], name: &'static str, budget: &mut Budget) -> Result<Option<u32>> {
    let mut b = Bytes::full_box(data, name)?;
    let _count = if b.version == 0 { u32::from(b.u16()?) } else { b.u32()? };
    for child in children(b.rest(), name) {
        let (kind, infe) = child?;
        budget.spend()?;
        if &kind != b"infe" {
            continue;
        }
        let mut e = Bytes::full_box(infe, name)?;
        if e.version < 2 {
            continue;
        }
        let id = if e.version == 2 { u32::from(e.u16()?) } else { e.u32()? };
        let _protection = e.u16()?;
        if &e.fourcc()? == b"Exif" {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Reads the EXIF item's first extent (from the file or from `idat`) and returns its
/// orientation. The payload starts with a 4-byte offset to the TIFF header.
fn read_exif_item<R: BufRead + Seek>(
    item: u32,
    iloc: &[u8],
    idat: &[u8],
    r: &mut R,
    name: &'static str,
) -> Result<Option<u16>> {
    let Some((method, offset, length)) = locate(item, iloc, name)? else { return Ok(None) };
    if !(4..=MAX_EXIF_BYTES).contains(&length) {
        return Ok(None);
    }
    let data = match method {
        0 => {
            r.seek(SeekFrom::Start(offset))?;
            read_vec(r, length, name, "the EXIF item")?
        }
        1 => {
            let start = usize::try_from(offset).map_err(|_| ProbeError::corrupt(name, "EXIF item offset"))?;
            match idat.get(start..start.saturating_add(length as usize)) {
                Some(d) => d.to_vec(),
                None => return Err(ProbeError::corrupt(name, "the EXIF item lies outside idat")),
            }
        }
        _ => return Ok(None),
    };
    let skip = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    Ok(data.get(4 + skip..).and_then(|tiff| exif_orientation(tiff.to_vec())))
}

/// An item's construction method and first extent (absolute offset, length) from `iloc`.
/// Each item's extents are stepped over as one slice of `extents × extent size` bytes,
/// so fields of 0 bytes (an extent that takes no room) cost nothing per extent, and an
/// item count the box cannot hold is refused before the loop.
fn locate(item: u32, iloc: &[u8], name: &'static str) -> Result<Option<(u8, u64, u64)>> {
    let mut b = Bytes::full_box(iloc, name)?;
    let sizes = b.u8()?;
    let (offset_size, length_size) = (sizes >> 4, sizes & 0x0F);
    let sizes = b.u8()?;
    let base_size = sizes >> 4;
    let has_index = b.version == 1 || b.version == 2;
    let index_size = if has_index { sizes & 0x0F } else { 0 };
    for n in [offset_size, length_size, base_size, index_size] {
        if !matches!(n, 0 | 4 | 8) {
            return Err(ProbeError::corrupt(name, format!("an iloc field of {n} bytes")));
        }
    }
    let count = if b.version < 2 { u32::from(b.u16()?) } else { b.u32()? };
    // ID, construction method, data reference index, base offset, extent count.
    let id_len: u64 = if b.version < 2 { 2 } else { 4 };
    let least = id_len + if has_index { 2 } else { 0 } + 2 + u64::from(base_size) + 2;
    if u64::from(count) * least > b.rest().len() as u64 {
        return Err(ProbeError::corrupt(
            name,
            format!("iloc declares {count} items that its {} bytes cannot hold", iloc.len()),
        ));
    }
    let extent_len = usize::from(index_size) + usize::from(offset_size) + usize::from(length_size);
    for _ in 0..count {
        let id = if b.version < 2 { u32::from(b.u16()?) } else { b.u32()? };
        let method = if has_index { (b.u16()? & 0x0F) as u8 } else { 0 };
        let _data_ref = b.u16()?;
        let base = b.sized(base_size)?;
        let extents = b.u16()?;
        let all = b.take(usize::from(extents) * extent_len)?;
        if id == item {
            if extents == 0 {
                return Ok(None);
            }
            let mut e = Bytes::new(all, name);
            e.sized(index_size)?;
            let offset = e.sized(offset_size)?;
            let length = e.sized(length_size)?;
            return Ok(Some((method, base.saturating_add(offset), length)));
        }
    }
    Ok(None)
}

/// A bounds-checked big-endian cursor over a box payload.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
    name: &'static str,
    version: u8,
    flags: u32,
}

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8], name: &'static str) -> Self {
        Bytes { data, pos: 0, name, version: 0, flags: 0 }
    }

    /// A full box: version (1 byte) and flags (3 bytes) come first.
    fn full_box(data: &'a [u8], name: &'static str) -> Result<Self> {
        let mut b = Bytes::new(data, name);
        let vf = b.u32()?;
        b.version = (vf >> 24) as u8;
        b.flags = vf & 0x00FF_FFFF;
        Ok(b)
    }

    fn short(&self) -> ProbeError {
        ProbeError::corrupt(self.name, "a box is shorter than its contents")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| self.short())?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        self.sized(8)
    }

    fn fourcc(&mut self) -> Result<[u8; 4]> {
        let s = self.take(4)?;
        Ok([s[0], s[1], s[2], s[3]])
    }

    /// An unsigned integer of 0, 4 or 8 bytes (iloc's field sizes).
    fn sized(&mut self, n: u8) -> Result<u64> {
        match n {
            0 => Ok(0),
            4 => Ok(u64::from(self.u32()?)),
            8 => {
                let s = self.take(8)?;
                Ok(u64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
            }
            _ => Err(ProbeError::corrupt(self.name, format!("an iloc field of {n} bytes"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::test_support::bx;

    fn full(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
        p.extend_from_slice(payload);
        bx(kind, &p)
    }

    fn ispe(w: u32, h: u32) -> Vec<u8> {
        full(b"ispe", 0, 0, &[w.to_be_bytes(), h.to_be_bytes()].concat())
    }

    /// ftyp, then meta with pitm = 1 and item 1 associated with `props` (all of them,
    /// in order); item 2 gets a different ispe to show it is ignored.
    fn heif(props: &[Vec<u8>]) -> Vec<u8> {
        let mut ipco = props.concat();
        ipco.extend(ispe(999, 999));
        let mut ipma = vec![0, 0, 0, 2, 0, 1, props.len() as u8];
        ipma.extend((1..=props.len() as u8).map(|i| 0x80 | i));
        ipma.extend_from_slice(&[0, 2, 1, props.len() as u8 + 1]);
        let iprp = bx(b"iprp", &[bx(b"ipco", &ipco), full(b"ipma", 0, 0, &ipma)].concat());
        let meta = full(
            b"meta",
            0,
            0,
            &[full(b"hdlr", 0, 0, &[0; 21]), full(b"pitm", 0, 0, &[0, 1]), iprp].concat(),
        );
        let mut f = bx(b"ftyp", b"heic\0\0\0\0mif1heic");
        f.extend(meta);
        f
    }

    fn run(bytes: Vec<u8>) -> Result<Info> {
        let size = bytes.len() as u64;
        walk(&mut Cursor::new(bytes), size, "HEIF", &Limits::default())
    }

    #[test]
    fn primary_item_ispe() {
        let info = run(heif(&[ispe(65, 33)])).unwrap();
        assert_eq!((info.width, info.height, info.orientation), (65, 33, None));
    }

    #[test]
    fn irot_90_and_270_swap_180_does_not() {
        for (angle, want) in [(0u8, (65, 33)), (1, (33, 65)), (2, (65, 33)), (3, (33, 65))] {
            let info = run(heif(&[ispe(65, 33), bx(b"irot", &[angle])])).unwrap();
            assert_eq!((info.width, info.height), want, "irot {angle}");
        }
    }

    #[test]
    fn clean_aperture_then_rotation() {
        let clap: Vec<u8> = [64u32, 1, 32, 1, 0, 1, 0, 1].iter().flat_map(|v| v.to_be_bytes()).collect();
        let info = run(heif(&[ispe(66, 34), bx(b"clap", &clap), bx(b"irot", &[1])])).unwrap();
        assert_eq!((info.width, info.height), (32, 64));
    }

    #[test]
    fn no_ispe_is_corrupt() {
        assert_eq!(run(heif(&[bx(b"irot", &[1])])).unwrap_err().code().as_str(), "corrupt_file");
    }

    #[test]
    fn cut_meta_is_truncated() {
        let mut f = heif(&[ispe(65, 33)]);
        f.truncate(f.len() - 10);
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn no_meta_is_truncated() {
        assert_eq!(run(bx(b"ftyp", b"heic\0\0\0\0mif1heic")).unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn box_size_smaller_than_its_header_is_corrupt() {
        let mut f = heif(&[ispe(65, 33)]);
        f[3] = 4; // ftyp declares 4 bytes
        assert_eq!(run(f).unwrap_err().code().as_str(), "corrupt_file");
    }

    /// A HEIF with an EXIF item whose `iloc` (version 2, all fields 0 bytes wide)
    /// lists `items` other items of 65535 extents each first, then the EXIF item.
    fn heif_with_iloc(items: u32, iloc_count: u32) -> Vec<u8> {
        let infe = |id: u16, kind: &[u8; 4]| {
            full(b"infe", 2, 0, &[&id.to_be_bytes()[..], &[0, 0], kind, b"\0"].concat())
        };
        let iinf =
            full(b"iinf", 0, 0, &[&2u16.to_be_bytes()[..], &infe(1, b"hvc1"), &infe(2, b"Exif")].concat());
        let mut iloc = vec![0u8, 0];
        iloc.extend_from_slice(&iloc_count.to_be_bytes());
        for i in 0..items {
            iloc.extend_from_slice(&(1000 + i).to_be_bytes());
            iloc.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF]);
        }
        iloc.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0, 0xFF, 0xFF]);
        let ipma = [0, 0, 0, 1, 0, 1, 1, 0x81];
        let iprp = bx(b"iprp", &[bx(b"ipco", &ispe(64, 48)), full(b"ipma", 0, 0, &ipma)].concat());
        let meta = full(
            b"meta",
            0,
            0,
            &[full(b"pitm", 0, 0, &[0, 1]), iinf, full(b"iloc", 2, 0, &iloc), iprp].concat(),
        );
        [bx(b"ftyp", b"heic\0\0\0\0mif1heic"), meta].concat()
    }

    /// Issue 9: with 0-byte offset, length and index fields an extent takes no room,
    /// and the walk looped 65535 times per 10 bytes of `iloc` (1 MB took 80 s). The
    /// extents are now stepped over as one empty slice.
    #[test]
    fn iloc_zero_size_fields_cost_no_loop_per_extent() {
        let info = run(heif_with_iloc(20_000, 20_001)).unwrap();
        assert_eq!((info.width, info.height, info.orientation), (64, 48, None));
    }

    #[test]
    fn iloc_declaring_more_items_than_it_holds_is_corrupt() {
        let err = run(heif_with_iloc(10, u32::MAX)).unwrap_err();
        assert_eq!(err.code().as_str(), "corrupt_file");
        assert!(err.to_string().contains("iloc declares 4294967295 items"), "{err}");
    }

    #[test]
    fn the_primary_items_associations_are_found_among_many() {
        // ipma entries for 60,000 other items (no properties each), then item 1's.
        let mut ipma = 60_001u32.to_be_bytes().to_vec();
        for i in 0..60_000u16 {
            ipma.extend_from_slice(&(2 + i).to_be_bytes());
            ipma.push(0);
        }
        ipma.extend_from_slice(&[0, 1, 2, 0x81, 0x82]);
        let ipco = [ispe(65, 33), bx(b"irot", &[1])].concat();
        let iprp = bx(b"iprp", &[bx(b"ipco", &ipco), full(b"ipma", 0, 0, &ipma)].concat());
        let meta = full(b"meta", 0, 0, &[full(b"pitm", 0, 0, &[0, 1]), iprp].concat());
        let info = run([bx(b"ftyp", b"heic\0\0\0\0mif1heic"), meta].concat()).unwrap();
        assert_eq!((info.width, info.height), (33, 65));
    }
}
