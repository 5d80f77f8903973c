//! BMP: an uncompressed bitmap's pixel array has a size the header fixes, so a file
//! shorter than offset + rows × stride is truncated (the `image` crate only reads the
//! header and would not notice).

use std::io::Read;

use super::read_array;
use crate::{ProbeError, Result};

const NAME: &str = "BMP";

pub(super) fn check_length<R: Read>(r: &mut R, file_size: u64) -> Result<()> {
    let head: [u8; 30] = read_array(r, NAME, "the headers")?;
    let le32 = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let le16 = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    let pixels_at = u64::from(le32(10));
    let (width, height, bpp, compression) = match le32(14) {
        // BITMAPCOREHEADER: 16-bit sizes, never compressed.
        12 => (u64::from(le16(18)), u64::from(le16(20)), u64::from(le16(24)), 0),
        _ => (
            u64::from(le32(18)),
            // Negative: rows stored top-down.
            u64::from((le32(22) as i32).unsigned_abs()),
            u64::from(le16(28)),
            // The compression field follows at 30; read it only for the longer headers.
            u32::from_le_bytes(read_array(r, NAME, "the info header")?),
        ),
    };
    // BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS: rows padded to 4 bytes, nothing else.
    if !matches!(compression, 0 | 3 | 6) {
        return Ok(());
    }
    let stride = (width.saturating_mul(bpp).saturating_add(31) / 32).saturating_mul(4);
    let needed = pixels_at.saturating_add(stride.saturating_mul(height));
    if file_size < needed {
        return Err(ProbeError::truncated(
            NAME,
            format!("the pixel array needs {needed} bytes, the file has {file_size}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A 3x2 24-bit BI_RGB bitmap (rows of 9 bytes padded to 12) with `height` rows
    /// declared and `data` bytes of pixels present.
    fn bmp(height: i32, data: usize) -> Vec<u8> {
        let mut f = b"BM".to_vec();
        f.extend_from_slice(&(54 + data as u32).to_le_bytes());
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(&54u32.to_le_bytes());
        f.extend_from_slice(&40u32.to_le_bytes());
        f.extend_from_slice(&3i32.to_le_bytes());
        f.extend_from_slice(&height.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&24u16.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.resize(54 + data, 0);
        f
    }

    fn run(f: Vec<u8>) -> Result<()> {
        let size = f.len() as u64;
        check_length(&mut Cursor::new(f), size)
    }

    #[test]
    fn whole_pixel_array_passes_bottom_up_and_top_down() {
        assert!(run(bmp(2, 24)).is_ok());
        assert!(run(bmp(-2, 24)).is_ok());
    }

    #[test]
    fn short_pixel_array_is_truncated() {
        assert_eq!(run(bmp(2, 23)).unwrap_err().code().as_str(), "truncated");
        assert_eq!(run(bmp(-2, 12)).unwrap_err().code().as_str(), "truncated");
    }
}
