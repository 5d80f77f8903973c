//! WebP RIFF chunk walk: the stored size (VP8X canvas, else the first VP8L or VP8
//! bitstream header), the animation flag (VP8X), the ANMF frame count and the EXIF
//! chunk's orientation. A file shorter than its RIFF header declares is truncated. The
//! size is read here rather than by the `image` crate, whose lossless header read turned
//! a legal width of 16,384 (14 bits of width − 1, all set) into 0.

use std::io::{BufRead, Seek};

use asset_core::Limits;

use super::{Budget, Extra, MAX_EXIF_BYTES, exif_orientation, read_array, read_vec, skip};
use crate::{ProbeError, Result};

const NAME: &str = "WebP";
const ANIMATION_FLAG: u8 = 0x02;

pub(super) fn walk<R: BufRead + Seek>(r: &mut R, file_size: u64, limits: &Limits) -> Result<Extra> {
    let header: [u8; 12] = read_array(r, NAME, "the RIFF header")?;
    if &header[..4] != b"RIFF" || &header[8..12] != b"WEBP" {
        return Err(ProbeError::corrupt(NAME, "bad RIFF header"));
    }
    let riff_end = 8 + u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
    if riff_end > file_size {
        return Err(ProbeError::truncated(
            NAME,
            format!("RIFF declares {riff_end} bytes, the file has {file_size}"),
        ));
    }
    let mut extra = Extra::default();
    let mut animated = false;
    let mut canvas = false;
    let mut frames: u64 = 0;
    let mut pos: u64 = 12;
    let mut budget = Budget::new(limits, NAME);
    while pos + 8 <= riff_end {
        budget.spend()?;
        let head: [u8; 8] = read_array(r, NAME, "a chunk header")?;
        let len = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        let padded = len + (len & 1);
        if pos + 8 + len > riff_end {
            return Err(ProbeError::truncated(NAME, "a chunk runs past the end of the RIFF data"));
        }
        match &head[..4] {
            b"VP8X" if len >= 10 => {
                let x: [u8; 10] = read_array(r, NAME, "the VP8X chunk")?;
                animated = x[0] & ANIMATION_FLAG != 0;
                let w = u32::from_le_bytes([x[4], x[5], x[6], 0]) + 1;
                let h = u32::from_le_bytes([x[7], x[8], x[9], 0]) + 1;
                // The canvas is the image's size, whatever its frames say.
                extra.stored = Some((w, h));
                canvas = true;
                skip(r, padded - 10, NAME, "the VP8X chunk")?;
            }
            b"VP8L" if len >= 5 && !canvas && extra.stored.is_none() => {
                let l: [u8; 5] = read_array(r, NAME, "the VP8L header")?;
                if l[0] != 0x2f {
                    return Err(ProbeError::corrupt(NAME, "a VP8L chunk without its signature"));
                }
                let bits = u32::from_le_bytes([l[1], l[2], l[3], l[4]]);
                extra.stored = Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1));
                skip(r, padded - 5, NAME, "the VP8L chunk")?;
            }
            b"VP8 " if len >= 10 && !canvas && extra.stored.is_none() => {
                let k: [u8; 10] = read_array(r, NAME, "the VP8 frame header")?;
                if k[3..6] != [0x9d, 0x01, 0x2a] {
                    return Err(ProbeError::corrupt(NAME, "a VP8 chunk without its start code"));
                }
                let w = u32::from(u16::from_le_bytes([k[6], k[7]]) & 0x3FFF);
                let h = u32::from(u16::from_le_bytes([k[8], k[9]]) & 0x3FFF);
                extra.stored = Some((w, h));
                skip(r, padded - 10, NAME, "the VP8 chunk")?;
            }
            b"ANMF" => {
                frames += 1;
                skip(r, padded, NAME, "an ANMF chunk")?;
            }
            b"EXIF" if len <= MAX_EXIF_BYTES && extra.orientation.is_none() => {
                let data = read_vec(r, len, NAME, "the EXIF chunk")?;
                // Some writers keep the JPEG APP1 prefix.
                let tiff = data.strip_prefix(b"Exif\0\0").unwrap_or(&data);
                extra.orientation = exif_orientation(tiff.to_vec());
                skip(r, padded - len, NAME, "chunk padding")?;
            }
            _ => skip(r, padded, NAME, "a chunk")?,
        }
        pos += 8 + padded;
    }
    if animated {
        if frames == 0 {
            return Err(ProbeError::corrupt(NAME, "animated, but no ANMF frame"));
        }
        extra.frame_count = Some(frames);
    }
    Ok(extra)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut v = kind.to_vec();
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        if data.len() % 2 == 1 {
            v.push(0);
        }
        v
    }

    fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = chunks.concat();
        let mut f = b"RIFF".to_vec();
        f.extend_from_slice(&(body.len() as u32 + 4).to_le_bytes());
        f.extend_from_slice(b"WEBP");
        f.extend(body);
        f
    }

    fn run(bytes: Vec<u8>) -> Result<Extra> {
        let size = bytes.len() as u64;
        walk(&mut Cursor::new(bytes), size, &Limits::default())
    }

    #[test]
    fn counts_anmf_frames_when_animated() {
        let vp8x = chunk(b"VP8X", &[ANIMATION_FLAG, 0, 0, 0, 64, 0, 0, 32, 0, 0]);
        let f = riff(&[vp8x, chunk(b"ANIM", &[0; 6]), chunk(b"ANMF", &[1; 17]), chunk(b"ANMF", &[2; 16])]);
        assert_eq!(run(f).unwrap().frame_count, Some(2));
    }

    #[test]
    fn still_image_has_no_frame_count() {
        let extra = run(riff(&[chunk(b"VP8L", &[0x2f; 9])])).unwrap();
        assert_eq!(extra.frame_count, None);
        assert_eq!(extra.stored, Some((0x2f2f + 1, 0x3cbc + 1)));
    }

    /// 14 bits of width − 1, all set: 16,384 px, which the `image` crate read as 0.
    #[test]
    fn lossless_width_of_16384_is_not_wrapped_to_zero() {
        let bits: u32 = 0x3FFF | (33 << 14);
        let mut vp8l = vec![0x2f];
        vp8l.extend_from_slice(&bits.to_le_bytes());
        assert_eq!(run(riff(&[chunk(b"VP8L", &vp8l)])).unwrap().stored, Some((16_384, 34)));
        // A VP8X canvas wins over the bitstream's size.
        let vp8x = chunk(b"VP8X", &[0, 0, 0, 0, 0xFF, 0xFF, 0, 1, 0, 0]);
        assert_eq!(run(riff(&[vp8x, chunk(b"VP8L", &vp8l)])).unwrap().stored, Some((65_536, 2)));
    }

    #[test]
    fn exif_chunk_with_or_without_app1_prefix() {
        let mut tiff = b"II\x2a\0\x08\0\0\0\x01\0".to_vec();
        tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
        let vp8x = chunk(b"VP8X", &[0x08, 0, 0, 0, 64, 0, 0, 32, 0, 0]);
        let plain = riff(&[vp8x.clone(), chunk(b"VP8L", &[0; 4]), chunk(b"EXIF", &tiff)]);
        assert_eq!(run(plain).unwrap().orientation, Some(8));
        let prefixed = riff(&[vp8x, chunk(b"EXIF", &[b"Exif\0\0".as_slice(), &tiff].concat())]);
        assert_eq!(run(prefixed).unwrap().orientation, Some(8));
    }

    #[test]
    fn shorter_than_declared_is_truncated() {
        let mut f = riff(&[chunk(b"VP8L", &[0; 40])]);
        f.truncate(30);
        assert_eq!(run(f).unwrap_err().code().as_str(), "truncated");
    }
}
