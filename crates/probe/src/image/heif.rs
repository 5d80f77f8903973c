//! HEIF/AVIF (ISO BMFF still images): reads the `meta` box, bounded in size, and
//! derives the primary item's display size from its `ispe`, `clap` and `irot`
//! properties; the EXIF item's orientation is reported when it is there.

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
    let mut primary = None;
    let mut properties: Vec<([u8; 4], &[u8])> = Vec::new();
    let mut associations: Vec<(u32, Vec<u16>)> = Vec::new();
    let mut exif_item = None;
    let mut iloc = None;
    let mut idat: &[u8] = &[];
    let body = meta.get(4..).ok_or_else(|| ProbeError::corrupt(name, "meta box too short"))?;
    for (kind, data) in children(body, name, &mut budget)? {
        match &kind {
            b"pitm" => {
                let mut b = Bytes::full_box(data, name)?;
                primary = Some(if b.version == 0 { u32::from(b.u16()?) } else { b.u32()? });
            }
            b"iprp" => {
                for (kind, data) in children(data, name, &mut budget)? {
                    match &kind {
                        b"ipco" => properties = children(data, name, &mut budget)?,
                        b"ipma" => associations.extend(parse_ipma(data, name, &mut budget)?),
                        _ => {}
                    }
                }
            }
            b"iinf" => exif_item = find_exif_item(data, name, &mut budget)?,
            b"iloc" => iloc = Some(data),
            b"idat" => idat = data,
            _ => {}
        }
    }
    let primary = primary.ok_or_else(|| ProbeError::corrupt(name, "no primary item (pitm)"))?;
    let assoc: &[u16] =
        associations.iter().find(|(id, _)| *id == primary).map(|(_, a)| a.as_slice()).unwrap_or(&[]);
    let props: Vec<([u8; 4], &[u8])> =
        assoc.iter().filter_map(|&i| properties.get(usize::from(i).checked_sub(1)?).copied()).collect();
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
    let orientation = match (exif_item, iloc) {
        (Some(item), Some(iloc)) => read_exif_item(item, iloc, idat, r, name)?,
        _ => None,
    };
    Ok(Info { width, height, orientation })
}

/// The boxes inside `data`, as (type, payload).
fn children<'a>(data: &'a [u8], name: &'static str, budget: &mut Budget) -> Result<Vec<([u8; 4], &'a [u8])>> {
    let mut out = Vec::new();
    let mut b = Bytes::new(data, name);
    while !b.rest().is_empty() {
        budget.spend()?;
        let size = b.u32()?;
        let kind = b.fourcc()?;
        let payload = match size {
            0 => b.rest().len(),
            1 => usize::try_from(b.u64()?).ok().and_then(|s| s.checked_sub(16)).ok_or_else(|| b.short())?,
            n => (n as usize).checked_sub(8).ok_or_else(|| b.short())?,
        };
        out.push((kind, b.take(payload)?));
    }
    Ok(out)
}

/// Item property associations: item ID → 1-based property indices, in order.
fn parse_ipma(data: &[u8], name: &'static str, budget: &mut Budget) -> Result<Vec<(u32, Vec<u16>)>> {
    let mut b = Bytes::full_box(data, name)?;
    let count = b.u32()?;
    let mut out = Vec::new();
    for _ in 0..count {
        budget.spend()?;
        let item = if b.version < 1 { u32::from(b.u16()?) } else { b.u32()? };
        let n = b.u8()?;
        let mut indices = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            indices.push(if b.flags & 1 != 0 { b.u16()? & 0x7FFF } else { u16::from(b.u8()? & 0x7F) });
        }
        out.push((item, indices));
    }
    Ok(out)
}

/// The ID of the first item of type `Exif`, from `iinf`'s `infe` entries (version 2+).
fn find_exif_item(data: &[u8], name: &'static str, budget: &mut Budget) -> Result<Option<u32>> {
    let mut b = Bytes::full_box(data, name)?;
    let _count = if b.version == 0 { u32::from(b.u16()?) } else { b.u32()? };
    for (kind, infe) in children(b.rest(), name, budget)? {
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
fn locate(item: u32, iloc: &[u8], name: &'static str) -> Result<Option<(u8, u64, u64)>> {
    let mut b = Bytes::full_box(iloc, name)?;
    let sizes = b.u8()?;
    let (offset_size, length_size) = (sizes >> 4, sizes & 0x0F);
    let sizes = b.u8()?;
    let base_size = sizes >> 4;
    let index_size = if b.version == 1 || b.version == 2 { sizes & 0x0F } else { 0 };
    let count = if b.version < 2 { u32::from(b.u16()?) } else { b.u32()? };
    for _ in 0..count {
        let id = if b.version < 2 { u32::from(b.u16()?) } else { b.u32()? };
        let method = if b.version == 1 || b.version == 2 { (b.u16()? & 0x0F) as u8 } else { 0 };
        let _data_ref = b.u16()?;
        let base = b.sized(base_size)?;
        let extents = b.u16()?;
        let mut first = None;
        for _ in 0..extents {
            b.sized(index_size)?;
            let offset = b.sized(offset_size)?;
            let length = b.sized(length_size)?;
            first.get_or_insert((offset, length));
        }
        if id == item {
            return Ok(first.map(|(offset, length)| (method, base.saturating_add(offset), length)));
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

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

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
}
