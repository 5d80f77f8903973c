//! Image extraction: display dimensions, EXIF orientation, frame and page counts, read
//! from headers only. The `image` crate reads the dimensions; small walkers of our own
//! read what it does not (frame counts, EXIF blobs, TIFF pages, HEIF boxes, SVG root).

mod bmp;
pub(crate) mod cr3;
pub(crate) mod exr;
mod gif;
pub(crate) mod hdr;
mod heif;
pub(crate) mod ico;
pub(crate) mod jp2;
mod jpeg;
pub(crate) mod jxl;
mod png;
pub(crate) mod pnm;
pub(crate) mod psd;
pub(crate) mod qoi;
mod raw;
mod svg;
pub(crate) mod tga;
mod tiff;
mod webp;

use crate::SourceFile;
use crate::ranged::WalkReader;
use std::io::{self, BufRead, Cursor, Read, Seek, SeekFrom};

use asset_core::{AssetMetadata, DataType, Limits};

use crate::{Format, ProbeError, Result, Source};

/// Most bytes of an EXIF blob we read to find the orientation: a JPEG APP1 segment is at
/// most 64 KiB, and no other container needs more for IFD0.
const MAX_EXIF_BYTES: u64 = 256 * 1024;

/// What the format walkers found besides the stored dimensions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Extra {
    /// Stored width and height as the walker read them, for when the `image` crate
    /// rejects a valid file whose coding it does not support.
    stored: Option<(u32, u32)>,
    orientation: Option<u16>,
    frame_count: Option<u64>,
    page_count: Option<u32>,
}

pub(crate) fn probe(src: &Source, format: Format, limits: &Limits) -> Result<AssetMetadata> {
    let mut meta = AssetMetadata::new(DataType::Image, format.mime(), src.size());
    let (stored, extra) = match format {
        Format::Jpeg => {
            let header = jpeg::walk(&mut walk_reader(src)?, src.size(), limits)?;
            let dims = dimensions(Cursor::new(header.minimal), image::ImageFormat::Jpeg, "JPEG", limits);
            let extra = Extra { stored: header.stored, orientation: header.orientation, ..Extra::default() };
            (Some(or_walked(dims, &extra)?), extra)
        }
        Format::Png => {
            let (extra, header) = png::walk(&mut walk_reader(src)?, limits)?;
            (Some(dimensions(Cursor::new(header), image::ImageFormat::Png, "PNG", limits)?), extra)
        }
        Format::Gif => {
            let extra = gif::walk(&mut walk_reader(src)?, limits)?;
            (Some(dimensions(src.reader()?, image::ImageFormat::Gif, "GIF", limits)?), extra)
        }
        Format::WebP => {
            let extra = webp::walk(&mut walk_reader(src)?, src.size(), limits)?;
            let (w, h) =
                extra.stored.ok_or_else(|| ProbeError::corrupt("WebP", "no VP8X, VP8L or VP8 chunk"))?;
            if w > limits.max_dimension || h > limits.max_dimension {
                return Err(ProbeError::TooLarge {
                    what: format!("WebP image of {w}x{h}"),
                    limit: u64::from(limits.max_dimension),
                });
            }
            (Some((w, h)), extra)
        }
        Format::Bmp => {
            bmp::check_length(&mut src.reader()?, src.size())?;
            let dims = dimensions(src.reader()?, image::ImageFormat::Bmp, "BMP", limits)?;
            (Some(dims), Extra::default())
        }
        // Camera raw is TIFF-structured: its IFD0 is often a thumbnail, so the raw
        // walker picks the full-resolution IFD instead of the `tiff` crate's IFD0.
        Format::Tiff if raw::sniff(src.head()).is_some() => {
            meta.mime = raw::sniff(src.head()).unwrap_or("image/tiff").to_string();
            let extra = raw::walk(&mut walk_reader(src)?, src.size(), limits)?;
            (extra.stored, extra)
        }
        Format::CanonCr3 => {
            let extra = cr3::walk(&mut walk_reader(src)?, src.size(), limits)?;
            (extra.stored, extra)
        }
        Format::Tiff => {
            let extra = tiff::walk(&mut walk_reader(src)?, src.size(), limits)?;
            let dims = dimensions(src.reader()?, image::ImageFormat::Tiff, "TIFF", limits);
            (Some(or_walked(dims, &extra)?), extra)
        }
        Format::Avif | Format::Heic => {
            let name = if format == Format::Avif { "AVIF" } else { "HEIF" };
            let info = heif::walk(&mut walk_reader(src)?, src.size(), name, limits)?;
            check_limits(info.width, info.height, limits)?;
            // The HEIF transforms (clap, irot) are already applied: MIAF readers ignore the
            // EXIF orientation, so it is reported but swaps nothing.
            meta.width = Some(info.width);
            meta.height = Some(info.height);
            meta.orientation = info.orientation;
            (None, Extra::default())
        }
        Format::Svg => {
            if let Some((w, h)) = svg::dimensions(src.reader()?, limits)? {
                meta.width = Some(w);
                meta.height = Some(h);
            }
            (None, Extra::default())
        }
        Format::Jpeg2000 => {
            let mut r = walk_reader(src)?;
            let extra = if src.head().starts_with(jp2::J2K_SIGNATURE) {
                meta.mime = "image/x-j2c".into();
                jp2::walk_j2k(&mut r, src.size())?
            } else {
                jp2::walk_jp2(&mut r, src.size(), limits)?
            };
            (extra.stored, extra)
        }
        Format::JpegXl => {
            // Decoders apply the codestream's orientation: it swaps like EXIF's.
            let extra = jxl::walk(&mut walk_reader(src)?, src.size(), limits)?;
            (extra.stored, extra)
        }
        Format::Ico => {
            if src.head().starts_with(ico::CUR_SIGNATURE) {
                meta.mime = "image/x-cursor".into();
            }
            let extra = ico::walk(&mut walk_reader(src)?, src.size(), limits)?;
            (extra.stored, extra)
        }
        Format::Pnm => {
            meta.mime = pnm::mime(src.head()).into();
            let extra = pnm::walk(&mut walk_reader(src)?, src.size(), limits)?;
            (extra.stored, extra)
        }
        Format::Tga => {
            let mut r = walk_reader(src)?;
            tga::confirm(&mut r, src.size(), src.path())?;
            r.seek(SeekFrom::Start(0))?;
            let extra = tga::walk(&mut r, src.size())?;
            (extra.stored, extra)
        }
        Format::Qoi => {
            let extra = qoi::walk(&mut walk_reader(src)?, src.size())?;
            (extra.stored, extra)
        }
        Format::RadianceHdr => {
            let extra = hdr::walk(&mut walk_reader(src)?, src.size(), limits)?;
            (extra.stored, extra)
        }
        Format::OpenExr => {
            let extra = exr::walk(&mut walk_reader(src)?, src.size(), limits)?;
            (extra.stored, extra)
        }
        Format::Psd => {
            let extra = psd::walk(&mut walk_reader(src)?, src.size())?;
            (extra.stored, extra)
        }
        other => return Err(ProbeError::unsupported(format!("{other:?} is not an image format"))),
    };
    if let Some((w, h)) = stored {
        check_limits(w, h, limits)?;
        let (w, h) = display_dimensions(w, h, extra.orientation);
        meta.width = Some(w);
        meta.height = Some(h);
    }
    meta.orientation = meta.orientation.or(extra.orientation);
    meta.frame_count = extra.frame_count;
    meta.page_count = extra.page_count;
    Ok(meta)
}

/// The `image` crate's dimensions, or the walker's when the crate refuses a coding it
/// does not implement (arithmetic-coded JPEG, CIELab TIFF) though the header is sound.
fn or_walked(dims: Result<(u32, u32)>, extra: &Extra) -> Result<(u32, u32)> {
    match (dims, extra.stored) {
        (Err(ProbeError::Unsupported { .. } | ProbeError::Corrupt { .. }), Some(stored)) => Ok(stored),
        (dims, _) => dims,
    }
}

/// Orientations 5–8 transpose the image: the stored width is displayed as the height.
fn display_dimensions(w: u32, h: u32, orientation: Option<u16>) -> (u32, u32) {
    match orientation {
        Some(5..=8) => (h, w),
        _ => (w, h),
    }
}

fn check_limits(w: u32, h: u32, limits: &Limits) -> Result<()> {
    if w > limits.max_dimension || h > limits.max_dimension {
        return Err(ProbeError::TooLarge {
            what: format!("declared image side of {} pixels", w.max(h)),
            limit: u64::from(limits.max_dimension),
        });
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(ProbeError::TooLarge {
            what: format!("declared image of {w}x{h} pixels"),
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

/// Stored dimensions from the `image` crate's decoder, which parses the header only
/// (`into_dimensions` never allocates the pixel buffer).
fn dimensions<R: BufRead + Seek>(
    reader: R,
    format: image::ImageFormat,
    name: &'static str,
    limits: &Limits,
) -> Result<(u32, u32)> {
    let mut reader = image::ImageReader::with_format(reader, format);
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_dimension);
    image_limits.max_image_height = Some(limits.max_dimension);
    image_limits.max_alloc = Some(limits.max_memory_bytes);
    reader.limits(image_limits);
    reader.into_dimensions().map_err(|e| classify(name, e, limits))
}

/// Folds the `image` crate's error into ours, telling a cut file from a corrupt one by
/// the I/O error underneath where there is one.
fn classify(name: &'static str, err: image::ImageError, limits: &Limits) -> ProbeError {
    use image::ImageError;
    match err {
        ImageError::Limits(e) => ProbeError::TooLarge {
            what: format!("{name} image ({e})"),
            limit: u64::from(limits.max_dimension),
        },
        ImageError::Unsupported(e) => ProbeError::unsupported(format!("{name} variant: {e}")),
        ImageError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => ProbeError::truncated(name, e),
        ImageError::IoError(e) => ProbeError::Io(e),
        other => {
            if caused_by_eof(&other) {
                ProbeError::truncated(name, other)
            } else {
                ProbeError::corrupt(name, other)
            }
        }
    }
}

fn caused_by_eof(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::UnexpectedEof) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The orientation tag (1–8) of IFD0 in a TIFF-structured EXIF blob. A blob that does
/// not parse, or a value out of range, gives `None`: a broken EXIF block does not make
/// the image undisplayable. kamadak-exif reads the whole chain and refuses a blob whose
/// chain is damaged past IFD0 (a next-IFD pointer looping back, a sub-IFD pointer out
/// of the blob); exiftool still reads IFD0's orientation there, and so do we, from IFD0
/// alone ([`ifd0_orientation`]).
fn exif_orientation(tiff: Vec<u8>) -> Option<u16> {
    let from_ifd0 = ifd0_orientation(&tiff);
    let Ok(exif) = exif::Reader::new().read_raw(tiff) else { return from_ifd0 };
    let field = exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)?;
    let value = field.value.get_uint(0)?;
    (1..=8).contains(&value).then_some(value as u16)
}

/// The Orientation entry (a single SHORT, 1–8) of IFD0, following no pointer out of it:
/// at most the 65,535 entries of one IFD are looked at, inside the blob.
fn ifd0_orientation(tiff: &[u8]) -> Option<u16> {
    let big_endian = match tiff.get(..2)? {
        b"II" => false,
        b"MM" => true,
        _ => return None,
    };
    let u16_at = |at: usize| {
        let b: [u8; 2] = tiff.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = tiff.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let count = usize::from(u16_at(ifd)?);
    (0..count).find_map(|k| {
        let entry = ifd + 2 + 12 * k;
        (u16_at(entry)? == 0x0112 && u16_at(entry + 2)? == 3 && u32_at(entry + 4)? == 1)
            .then(|| u16_at(entry + 8))
            .flatten()
            .filter(|o| (1..=8).contains(o))
    })
}

/// `read_exact` that reports a short file as [`ProbeError::Truncated`].
fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], format: &'static str, what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| eof_is_truncation(e, format, what))
}

fn eof_is_truncation(e: io::Error, format: &'static str, what: &str) -> ProbeError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ProbeError::truncated(format, format!("the file ends inside {what}"))
    } else {
        ProbeError::Io(e)
    }
}

fn read_array<const N: usize, R: Read>(r: &mut R, format: &'static str, what: &str) -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    read_exact(r, &mut buf, format, what)?;
    Ok(buf)
}

/// Reads `len` bytes into a new buffer, growing it only as the bytes arrive, so a
/// declared length never allocates more than the file holds. Callers bound `len`.
fn read_vec<R: Read>(r: &mut R, len: u64, format: &'static str, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf).map_err(|e| eof_is_truncation(e, format, what))?;
    if (buf.len() as u64) < len {
        return Err(ProbeError::truncated(format, format!("the file ends inside {what}")));
    }
    Ok(buf)
}

/// Skips `n` bytes: from the buffer when they are there, else by seeking, so large
/// chunks are never read. A skip past the end of the file is a truncation.
fn skip<R: BufRead + Seek>(r: &mut R, n: u64, format: &'static str, what: &str) -> Result<()> {
    let buffered = r.fill_buf()?.len();
    if n <= buffered as u64 {
        r.consume(n as usize);
        return Ok(());
    }
    r.consume(buffered);
    let rest = n - buffered as u64;
    let pos = r.stream_position()?;
    let end = r.seek(SeekFrom::End(0))?;
    match pos.checked_add(rest) {
        Some(target) if target <= end => {
            r.seek(SeekFrom::Start(target))?;
            Ok(())
        }
        _ => Err(ProbeError::truncated(format, format!("the file ends inside {what}"))),
    }
}

/// The reader of the walkers: buffered, so a walk over thousands of small chunks costs a
/// read per 64 KiB, and aware of the file's length, so [`skip`] seeks without a
/// system call and a skip inside the buffer keeps it.
fn walk_reader(src: &Source) -> Result<WalkReader<SourceFile>> {
    Ok(WalkReader::open(src)?)
}

/// Counts walked items (chunks, blocks, IFDs) against `limits.max_items`.
struct Budget {
    left: u64,
    limit: u64,
    format: &'static str,
}

impl Budget {
    fn new(limits: &Limits, format: &'static str) -> Self {
        Budget { left: limits.max_items, limit: limits.max_items, format }
    }

    fn spend(&mut self) -> Result<()> {
        if self.left == 0 {
            return Err(ProbeError::TooLarge {
                what: format!("the number of {} structures walked", self.format),
                limit: self.limit,
            });
        }
        self.left -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TIFF blob with IFD0 at 8 holding `entries` (tag, type, count, value) and a
    /// next-IFD pointer, in either byte order.
    fn blob(big_endian: bool, entries: &[(u16, u16, u32, u32)], next: u32) -> Vec<u8> {
        let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut b = if big_endian { b"MM".to_vec() } else { b"II".to_vec() };
        b.extend(u16b(42));
        b.extend(u32b(8));
        b.extend(u16b(entries.len() as u16));
        for &(tag, kind, count, value) in entries {
            b.extend(u16b(tag));
            b.extend(u16b(kind));
            b.extend(u32b(count));
            if kind == 3 {
                b.extend(u16b(value as u16));
                b.extend([0, 0]);
            } else {
                b.extend(u32b(value));
            }
        }
        b.extend(u32b(next));
        b
    }

    #[test]
    fn orientation_survives_a_damaged_ifd_chain() {
        for be in [false, true] {
            // The next-IFD pointer loops back to IFD0; a sub-IFD pointer leaves the blob.
            assert_eq!(exif_orientation(blob(be, &[(0x0112, 3, 1, 6)], 8)), Some(6), "{be}");
            let bogus = blob(be, &[(0x0112, 3, 1, 8), (0x8769, 4, 1, 0xFFFF_FF00)], 0);
            assert_eq!(exif_orientation(bogus), Some(8), "{be}");
        }
        // Only a single SHORT of 1 to 8 is an orientation; IFD0 cut short gives none.
        assert_eq!(ifd0_orientation(&blob(false, &[(0x0112, 3, 1, 9)], 8)), None);
        assert_eq!(ifd0_orientation(&blob(false, &[(0x0112, 4, 1, 6)], 8)), None);
        assert_eq!(ifd0_orientation(&blob(false, &[(0x0112, 3, 2, 6)], 8)), None);
        let mut cut = blob(false, &[(0x0100, 3, 1, 1), (0x0112, 3, 1, 6)], 0);
        cut[8] = 0xFF; // 65,535 entries declared, two there
        assert_eq!(ifd0_orientation(&cut), Some(6));
        cut.truncate(20);
        assert_eq!(ifd0_orientation(&cut), None);
    }

    #[test]
    fn orientations_five_to_eight_swap() {
        for o in 1..=4 {
            assert_eq!(display_dimensions(65, 33, Some(o)), (65, 33));
        }
        for o in 5..=8 {
            assert_eq!(display_dimensions(65, 33, Some(o)), (33, 65));
        }
        assert_eq!(display_dimensions(65, 33, None), (65, 33));
    }

    #[test]
    fn limits_reject_huge_declarations() {
        let limits = Limits::default();
        assert!(check_limits(100, 100, &limits).is_ok());
        let err = check_limits(100_000, 100_000, &limits).unwrap_err();
        assert_eq!(err.code().as_str(), "too_large");
        let err = check_limits(limits.max_dimension + 1, 1, &limits).unwrap_err();
        assert_eq!(err.code().as_str(), "too_large");
    }

    fn image_fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets/image");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e != "md"))
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        assert!(files.len() >= 30, "image fixtures missing from {}", dir.display());
        files
    }

    fn probe_bytes(bytes: &[u8]) -> Result<AssetMetadata> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        // In place, without the panic boundary: a panic must fail this test.
        crate::probe_in_place(f.path(), &Limits::default())
    }

    /// Formats with an end marker or a length to check (EOI, IEND, trailer, RIFF size,
    /// EOC, QOI's end marker, ICO entries, a DNG's last strip) must call every cut file
    /// an error; the others must at least answer without panicking.
    #[test]
    fn every_prefix_of_every_fixture_answers_without_panic() {
        for (name, bytes) in image_fixtures() {
            let has_end_marker =
                [".jpg", ".png", ".gif", ".webp", ".bmp", ".jp2", ".j2k", ".qoi", ".ico", ".cur", ".dng"]
                    .iter()
                    .any(|e| name.ends_with(e));
            let step = (bytes.len() / 300).max(1);
            for cut in (0..bytes.len()).step_by(step) {
                let result = probe_bytes(&bytes[..cut]);
                let still_detected = crate::detect::detect(&bytes[..cut]) == crate::detect::detect(&bytes);
                if has_end_marker && still_detected {
                    assert!(result.is_err(), "{name} cut at {cut} gave {result:?}");
                }
            }
        }
    }

    #[test]
    fn mutated_fixtures_answer_without_panic() {
        for (name, bytes) in image_fixtures() {
            let step = (bytes.len() / 200).max(1);
            for at in (0..bytes.len()).step_by(step) {
                for value in [0x00, 0xFF, bytes[at] ^ 0x01] {
                    let mut m = bytes.clone();
                    m[at] = value;
                    let _ = probe_bytes(&m).map_err(|e| (name.clone(), at, e));
                }
            }
        }
    }

    #[test]
    fn skip_uses_the_buffer_then_seeks_and_notices_the_end() {
        let mut r = std::io::BufReader::with_capacity(4, Cursor::new((0u8..20).collect::<Vec<u8>>()));
        skip(&mut r, 2, "PNG", "x").unwrap();
        assert_eq!(read_array::<1, _>(&mut r, "PNG", "x").unwrap(), [2]);
        skip(&mut r, 10, "PNG", "x").unwrap();
        assert_eq!(read_array::<1, _>(&mut r, "PNG", "x").unwrap(), [13]);
        skip(&mut r, 6, "PNG", "x").unwrap();
        assert_eq!(skip(&mut r, 1, "PNG", "x").unwrap_err().code().as_str(), "truncated");
    }

    #[test]
    fn read_vec_stops_at_the_end_of_the_file() {
        let mut r = Cursor::new(vec![1u8, 2, 3]);
        let err = read_vec(&mut r, 10, "PNG", "a chunk").unwrap_err();
        assert_eq!(err.code().as_str(), "truncated");
    }
}

#[cfg(test)]
mod issue_11_detection {
    use crate::detect::{Format, detect};

    fn head(name: &str) -> Vec<u8> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets/image").join(name);
        let mut bytes = std::fs::read(path).unwrap();
        bytes.truncate(crate::detect::SNIFF_LEN);
        bytes
    }

    #[test]
    fn each_fixture_is_detected_as_its_format() {
        for (name, format) in [
            ("jp2-basic.jp2", Format::Jpeg2000),
            ("j2k-codestream.j2k", Format::Jpeg2000),
            ("jxl-codestream.jxl", Format::JpegXl),
            ("jxl-container.jxl", Format::JpegXl),
            ("ico-multi.ico", Format::Ico),
            ("cur-basic.cur", Format::Ico),
            ("pnm-p1.pbm", Format::Pnm),
            ("pnm-p3.ppm", Format::Pnm),
            ("pnm-p6-comment.ppm", Format::Pnm),
            ("pam-rgba.pam", Format::Pnm),
            ("tga-uncompressed.tga", Format::Tga),
            ("tga-footer-rle.tga", Format::Tga),
            ("qoi-rgb.qoi", Format::Qoi),
            ("hdr-basic.hdr", Format::RadianceHdr),
            ("exr-tiled.exr", Format::OpenExr),
            ("psb-basic.psb", Format::Psd),
            ("dng-basic.dng", Format::Tiff),
            ("cr3-basic.cr3", Format::CanonCr3),
        ] {
            assert_eq!(detect(&head(name)), Some(format), "{name}");
        }
    }

    #[test]
    fn weak_signatures_do_not_take_text_or_binary_they_do_not_own() {
        assert_eq!(detect(b"P1 agenda for monday\n"), Some(Format::Text));
        assert_eq!(detect(b"#?this is a note\n"), Some(Format::Text));
        // Not a legal TGA header (image type 4), and NULs: nothing.
        assert_eq!(detect(&[0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 65, 0, 33, 0, 24, 0, 1, 2]), None);
        // An icon directory whose first entry points into the directory.
        assert_eq!(detect(&[0, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0, 9, 0, 0, 0, 6, 0, 0, 0]), None);
    }
}
