//! NIfTI-1 and NIfTI-2 headers (348 and 540 bytes, either byte order): `dim[1..=3]` are
//! width, height and slices. A `.nii.gz` is inflated only up to the 540 bytes a header
//! can take, so a gzip bomb costs nothing.

use std::io::Read;

use flate2::read::GzDecoder;

use super::Extent;
use crate::{ProbeError, Result, Source};

const NAME: &str = "NIfTI";
const NIFTI1_LEN: usize = 348;
const NIFTI2_LEN: usize = 540;

/// A NIfTI-1 header: `sizeof_hdr` 348 (either byte order), magic `n+1` (one file) or
/// `ni1` (header of a .hdr/.img pair) at 344.
pub(crate) fn nifti1(h: &[u8]) -> bool {
    h.len() >= NIFTI1_LEN
        && matches!(&h[..4], [0x5C, 0x01, 0, 0] | [0, 0, 0x01, 0x5C])
        && matches!(&h[344..348], b"n+1\0" | b"ni1\0")
}

/// A NIfTI-2 header: `sizeof_hdr` 540 (either byte order), magic `n+2\0\r\n\x1a\n` at 4.
pub(crate) fn nifti2(h: &[u8]) -> bool {
    h.len() >= 12
        && matches!(&h[..4], [0x1C, 0x02, 0, 0] | [0, 0, 0x02, 0x1C])
        && matches!(&h[4..12], b"n+2\0\r\n\x1a\n" | b"ni2\0\r\n\x1a\n")
}

/// A gzip stream (magic 1F 8B, deflate) whose first bytes inflate to a NIfTI header.
/// Inflates at most [`NIFTI2_LEN`] bytes of the sniffed head.
pub(crate) fn gzipped_nifti(h: &[u8]) -> bool {
    if !h.starts_with(&[0x1F, 0x8B, 0x08]) {
        return false;
    }
    let mut header = Vec::with_capacity(NIFTI2_LEN);
    let _ = GzDecoder::new(h).take(NIFTI2_LEN as u64).read_to_end(&mut header);
    nifti1(&header) || nifti2(&header)
}

/// The header of a `.nii.gz`: at most [`NIFTI2_LEN`] inflated bytes.
pub(super) fn inflate_header(src: &Source) -> Result<Vec<u8>> {
    let mut header = vec![0u8; NIFTI2_LEN];
    let mut gz = GzDecoder::new(src.reader()?);
    let got = crate::read_up_to(&mut gz, &mut header).map_err(|e| {
        if crate::MissingBytes::from_io(&e).is_some() {
            ProbeError::Io(e)
        } else {
            ProbeError::corrupt(NAME, format!("gzip stream: {e}"))
        }
    })?;
    header.truncate(got);
    Ok(header)
}

/// Width, height and slices from `dim`: `dim[0]` (1 to 7) axes, `dim[1..]` their sizes;
/// axes past `dim[0]` count as 1.
pub(super) fn extent(h: &[u8]) -> Result<Extent> {
    let dims: [i64; 8] = if nifti1(h) {
        let be = h[0] == 0;
        let mut d = [0i64; 8];
        for (k, v) in d.iter_mut().enumerate() {
            let b = [h[40 + 2 * k], h[41 + 2 * k]];
            *v = i64::from(if be { i16::from_be_bytes(b) } else { i16::from_le_bytes(b) });
        }
        d
    } else if nifti2(h) && h.len() >= NIFTI2_LEN {
        let be = h[0] == 0;
        let mut d = [0i64; 8];
        for (k, v) in d.iter_mut().enumerate() {
            let b: [u8; 8] = h[16 + 8 * k..24 + 8 * k].try_into().expect("8 bytes");
            *v = if be { i64::from_be_bytes(b) } else { i64::from_le_bytes(b) };
        }
        d
    } else if nifti2(h) {
        return Err(ProbeError::truncated(NAME, format!("NIfTI-2 header of {} bytes, not 540", h.len())));
    } else {
        return Err(ProbeError::truncated(NAME, format!("header of {} bytes", h.len())));
    };
    let ndim = dims[0];
    if !(1..=7).contains(&ndim) {
        return Err(ProbeError::corrupt(NAME, format!("dim[0] of {ndim}, not 1 to 7 axes")));
    }
    let axis = |k: usize| -> Result<u64> {
        if k as i64 > ndim {
            return Ok(1);
        }
        u64::try_from(dims[k])
            .ok()
            .filter(|&v| v >= 1)
            .ok_or_else(|| ProbeError::corrupt(NAME, format!("dim[{k}] of {}", dims[k])))
    };
    Ok(Extent { width: axis(1)?, height: axis(2)?, slices: axis(3)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header1(dims: [i16; 8], big_endian: bool) -> Vec<u8> {
        let mut h = vec![0u8; 352];
        let e16 = |v: i16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let size = if big_endian { 348i32.to_be_bytes() } else { 348i32.to_le_bytes() };
        h[..4].copy_from_slice(&size);
        for (k, d) in dims.iter().enumerate() {
            h[40 + 2 * k..42 + 2 * k].copy_from_slice(&e16(*d));
        }
        h[344..348].copy_from_slice(b"n+1\0");
        h
    }

    #[test]
    fn dims_in_either_byte_order() {
        for be in [false, true] {
            let h = header1([3, 33, 17, 5, 1, 1, 1, 1], be);
            assert!(nifti1(&h));
            assert_eq!(extent(&h).unwrap(), Extent { width: 33, height: 17, slices: 5 });
        }
        // A 2-D image: one slice, whatever dim[3] holds.
        let h = header1([2, 33, 17, 0, 0, 0, 0, 0], false);
        assert_eq!(extent(&h).unwrap(), Extent { width: 33, height: 17, slices: 1 });
    }

    #[test]
    fn impossible_dims_are_corrupt() {
        for dims in [
            [0, 33, 17, 5, 1, 1, 1, 1],
            [8, 33, 17, 5, 1, 1, 1, 1],
            [3, 33, -17, 5, 1, 1, 1, 1],
            [3, 33, 17, 0, 1, 1, 1, 1],
        ] {
            let err = extent(&header1(dims, false)).unwrap_err();
            assert!(matches!(err, ProbeError::Corrupt { .. }), "{dims:?}: {err}");
        }
    }
}
