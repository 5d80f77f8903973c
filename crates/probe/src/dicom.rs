//! DICOM (Part 10) extraction: image size, frame count and modality from the data set
//! in front of Pixel Data, which is never read. A bounded walk of the element headers
//! runs first, so a declared length can neither exhaust memory nor hide a truncation.

use std::error::Error as _;
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek};

use asset_core::{AssetMetadata, DataType, Limits};
use dicom_object::{OpenFileOptions, Tag, file::ReadPreamble};

use crate::{Format, ProbeError, Result, Source};

const FORMAT: &str = "dicom";
const MAGIC: &[u8; 4] = b"DICM";
const PREAMBLE_LEN: u64 = 128;

const MODALITY: Tag = Tag(0x0008, 0x0060);
const NUMBER_OF_FRAMES: Tag = Tag(0x0028, 0x0008);
const ROWS: Tag = Tag(0x0028, 0x0010);
const COLUMNS: Tag = Tag(0x0028, 0x0011);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

const TS_IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const TS_EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const TS_DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
const TS_DEFLATED_IMAGE_FRAME: &str = "1.2.840.10008.1.2.8.1";

/// Where the file meta group starts, and whether the `DICM` magic precedes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The standard layout: 128-byte preamble, `DICM`, file meta group.
    Preamble,
    /// No preamble: the file starts with `DICM`.
    MagicFirst,
    /// Neither preamble nor magic: the file starts with the (0002,xxxx) group.
    MetaFirst,
}

pub(crate) fn probe(src: &Source, format: Format, limits: &Limits) -> Result<AssetMetadata> {
    let layout = layout(src.head(), src.size())?;
    let meta_start = match layout {
        Layout::Preamble => PREAMBLE_LEN + MAGIC.len() as u64,
        Layout::MagicFirst => MAGIC.len() as u64,
        Layout::MetaFirst => 0,
    };
    scan_headers(&mut src.reader()?, meta_start, src.size(), limits)?;

    let mut reader = src.reader()?;
    let options = OpenFileOptions::new().read_until(PIXEL_DATA).read_preamble(ReadPreamble::Never);
    let parsed = match layout {
        Layout::Preamble => {
            reader.seek_relative(PREAMBLE_LEN as i64)?;
            options.from_reader(reader)
        }
        Layout::MagicFirst => options.from_reader(reader),
        // dicom-object insists on the magic; the bytes after it are the same either way.
        Layout::MetaFirst => options.from_reader(Cursor::new(MAGIC).chain(reader)),
    };
    let obj = parsed.map_err(|e| classify(&e))?;

    let int = |tag: Tag, name: &str| -> Result<Option<u32>> {
        match obj.element_opt(tag) {
            Ok(Some(el)) if el.to_str().is_ok_and(|s| s.trim_matches([' ', '\0']).is_empty()) => Ok(None),
            Ok(Some(el)) => el
                .to_int::<u32>()
                .map(Some)
                .map_err(|e| ProbeError::corrupt(FORMAT, format!("{name} is not a number: {e}"))),
            Ok(None) | Err(_) => Ok(None),
        }
    };
    let rows = int(ROWS, "Rows")?.ok_or_else(|| ProbeError::corrupt(FORMAT, "no Rows (0028,0010)"))?;
    let columns =
        int(COLUMNS, "Columns")?.ok_or_else(|| ProbeError::corrupt(FORMAT, "no Columns (0028,0011)"))?;
    if rows == 0 || columns == 0 {
        return Err(ProbeError::corrupt(FORMAT, format!("image of {columns}x{rows} pixels")));
    }
    let frames = int(NUMBER_OF_FRAMES, "NumberOfFrames")?.unwrap_or(1);
    if frames == 0 {
        return Err(ProbeError::corrupt(FORMAT, "NumberOfFrames is 0"));
    }
    let modality = match obj.element_opt(MODALITY) {
        Ok(Some(el)) => el.to_str().ok().map(|s| s.trim_matches([' ', '\0']).to_string()),
        _ => None,
    }
    .filter(|m| !m.is_empty());

    let mut meta = AssetMetadata::new(DataType::Dicom, format.mime(), src.size());
    meta.width = Some(columns);
    meta.height = Some(rows);
    meta.frame_count = Some(u64::from(frames));
    meta.modality = modality;
    Ok(meta)
}

fn layout(head: &[u8], size: u64) -> Result<Layout> {
    if head.get(128..132) == Some(MAGIC) {
        Ok(Layout::Preamble)
    } else if head.starts_with(MAGIC) {
        Ok(Layout::MagicFirst)
    } else if head.starts_with(&[0x02, 0x00]) {
        Ok(Layout::MetaFirst)
    } else if size < PREAMBLE_LEN + MAGIC.len() as u64 && head.starts_with(&[0x08, 0x00]) {
        Err(ProbeError::truncated(FORMAT, format!("file of {size} bytes ends in the preamble")))
    } else {
        Err(ProbeError::unsupported("DICOM data set without file meta information"))
    }
}

/// Tells a file that ends early from one that is malformed: somewhere in the parser's
/// chain of causes an I/O error says the input ran out.
fn classify(err: &dicom_object::ReadError) -> ProbeError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::UnexpectedEof
        {
            return ProbeError::truncated(FORMAT, err);
        }
        cause = c.source();
    }
    ProbeError::corrupt(FORMAT, describe(err))
}

fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// How the data set after the file meta group is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Encoding {
    explicit_vr: bool,
    big_endian: bool,
}

/// Explicit VRs whose length takes 16 bits, and those with 2 reserved bytes and 32 bits.
const VRS_WITH_SHORT_LENGTH: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
    b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];
const VRS_WITH_LONG_LENGTH: [&[u8; 2]; 13] =
    [b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"];

const META_ENCODING: Encoding = Encoding { explicit_vr: true, big_endian: false };

/// Walks every element header from the file meta group up to Pixel Data without keeping
/// any value, checking that each declared length fits in the file (else `Truncated`),
/// in `limits.max_memory_bytes` (else `TooLarge`), and that undefined-length sequences
/// nest no deeper than `limits.max_nesting`. The parser that runs next allocates what
/// the headers declare, so this is what keeps its memory bounded.
fn scan_headers(
    reader: &mut BufReader<crate::SourceFile>,
    start: u64,
    size: u64,
    limits: &Limits,
) -> Result<()> {
    reader.seek(io::SeekFrom::Start(start))?;
    let mut pos = start;
    let mut encoding = META_ENCODING;
    let mut in_meta = true;
    // Where the file meta group ends, from its group length (0002,0000): dicom-object
    // reads that many bytes as meta elements, whatever groups they turn out to have.
    let mut meta_end: Option<u64> = None;
    let mut transfer_syntax = String::new();
    // Undefined-length sequences and items currently open.
    let mut depth: u32 = 0;
    let mut held: u64 = 0;
    // A header costs the parser about a hundred bytes in memory whatever its length.
    let max_elements = (limits.max_memory_bytes / 256).min(limits.max_items).max(1);
    let mut elements: u64 = 0;

    loop {
        if in_meta && let Some(end) = meta_end.filter(|&end| pos >= end) {
            if pos > end {
                return Err(ProbeError::corrupt(
                    FORMAT,
                    "an element runs past the end of the file meta group",
                ));
            }
            in_meta = false;
            encoding = dataset_encoding(transfer_syntax.trim_end_matches(['\0', ' ']))?;
        }
        let mut raw_tag = [0u8; 4];
        match read_or_end(reader, &mut raw_tag)? {
            0 if depth == 0 && !in_meta => return Ok(()),
            4 => {}
            _ => {
                return Err(ProbeError::truncated(
                    FORMAT,
                    format!("file ends inside the element header at {pos}"),
                ));
            }
        }
        pos += 4;
        let enc = encoding;
        let (group, element) = if enc.big_endian {
            (u16::from_be_bytes([raw_tag[0], raw_tag[1]]), u16::from_be_bytes([raw_tag[2], raw_tag[3]]))
        } else {
            (u16::from_le_bytes([raw_tag[0], raw_tag[1]]), u16::from_le_bytes([raw_tag[2], raw_tag[3]]))
        };
        elements += 1;
        if elements > max_elements {
            return Err(ProbeError::TooLarge {
                what: "DICOM header element count".into(),
                limit: max_elements,
            });
        }
        let tag = Tag(group, element);
        if in_meta && (group != 0x0002 || meta_end.is_none() && element != 0x0000) {
            return Err(ProbeError::corrupt(
                FORMAT,
                format!("{tag} where the file meta group expects (0002,0000) and its elements"),
            ));
        }
        if depth == 0 && !in_meta && tag >= PIXEL_DATA {
            return Ok(());
        }

        if group == 0xFFFE {
            // Items and delimiters: no VR, a 32-bit length, in every transfer syntax.
            let len = read_u32(reader, enc, &mut pos)?;
            match element {
                0xE000 if len == u32::MAX => depth = open(depth, limits)?,
                0xE000 => skip(reader, len, &mut pos, &mut held, size, limits)?,
                0xE00D | 0xE0DD => depth = depth.saturating_sub(1),
                _ => return Err(ProbeError::corrupt(FORMAT, format!("unknown delimiter {tag} at {pos}"))),
            }
            continue;
        }

        let len = if enc.explicit_vr {
            let mut vr = [0u8; 2];
            read_exact(reader, &mut vr, &mut pos)?;
            if !VRS_WITH_SHORT_LENGTH.contains(&&vr) && !VRS_WITH_LONG_LENGTH.contains(&&vr) {
                // The parser would guess a layout for it; a wrong guess reads a length
                // from value bytes.
                return Err(ProbeError::corrupt(
                    FORMAT,
                    format!("unknown VR {:?} at {pos}", vr.escape_ascii().to_string()),
                ));
            }
            if VRS_WITH_LONG_LENGTH.contains(&&vr) {
                let mut reserved = [0u8; 2];
                read_exact(reader, &mut reserved, &mut pos)?;
                read_u32(reader, enc, &mut pos)?
            } else {
                let mut two = [0u8; 2];
                read_exact(reader, &mut two, &mut pos)?;
                u32::from(if enc.big_endian { u16::from_be_bytes(two) } else { u16::from_le_bytes(two) })
            }
        } else {
            read_u32(reader, enc, &mut pos)?
        };

        if len == u32::MAX {
            depth = open(depth, limits)?;
        } else if in_meta && tag == Tag(0x0002, 0x0000) && len == 4 {
            let group_length = read_u32(reader, enc, &mut pos)?;
            meta_end = Some(pos + u64::from(group_length));
        } else if in_meta && tag == Tag(0x0002, 0x0010) && len <= 64 {
            let mut uid = vec![0u8; len as usize];
            read_exact(reader, &mut uid, &mut pos)?;
            transfer_syntax = String::from_utf8_lossy(&uid).into_owned();
        } else {
            skip(reader, len, &mut pos, &mut held, size, limits)?;
        }
    }
}

fn dataset_encoding(transfer_syntax: &str) -> Result<Encoding> {
    match transfer_syntax {
        TS_IMPLICIT_LE => Ok(Encoding { explicit_vr: false, big_endian: false }),
        TS_EXPLICIT_BE => Ok(Encoding { explicit_vr: true, big_endian: true }),
        // A deflated data set cannot be walked without inflating it, and inflating is
        // where a hostile file would blow up: refuse rather than trust it.
        TS_DEFLATED_LE | TS_DEFLATED_IMAGE_FRAME => Err(ProbeError::unsupported(format!(
            "DICOM transfer syntax {transfer_syntax} (deflated data set)"
        ))),
        "" => Err(ProbeError::corrupt(FORMAT, "no TransferSyntaxUID (0002,0010) in the file meta group")),
        // Every other transfer syntax encodes the data set in explicit VR little endian;
        // only Pixel Data differs.
        _ => Ok(META_ENCODING),
    }
}

fn open(depth: u32, limits: &Limits) -> Result<u32> {
    let depth = depth + 1;
    if depth > limits.max_nesting {
        return Err(ProbeError::TooLarge {
            what: "DICOM sequence nesting".into(),
            limit: limits.max_nesting.into(),
        });
    }
    Ok(depth)
}

/// Skips a value of `len` bytes after checking it against the file and the memory budget.
fn skip(
    reader: &mut BufReader<crate::SourceFile>,
    len: u32,
    pos: &mut u64,
    held: &mut u64,
    size: u64,
    limits: &Limits,
) -> Result<()> {
    let len = u64::from(len);
    let end = pos.saturating_add(len);
    if end > size {
        return Err(ProbeError::truncated(
            FORMAT,
            format!("a value of {len} bytes at {pos} runs past the end of the file ({size} bytes)"),
        ));
    }
    *held = held.saturating_add(len);
    if *held > limits.max_memory_bytes {
        return Err(ProbeError::TooLarge {
            what: "DICOM header before Pixel Data".into(),
            limit: limits.max_memory_bytes,
        });
    }
    // `held` bounds `len` well below i64::MAX.
    reader.seek_relative(len as i64)?;
    *pos = end;
    Ok(())
}

fn read_u32(reader: &mut impl Read, enc: Encoding, pos: &mut u64) -> Result<u32> {
    let mut b = [0u8; 4];
    read_exact(reader, &mut b, pos)?;
    Ok(if enc.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8], pos: &mut u64) -> Result<()> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            ProbeError::truncated(FORMAT, format!("file ends inside the element header at {pos}"))
        }
        _ => ProbeError::Io(e),
    })?;
    *pos += buf.len() as u64;
    Ok(())
}

/// Fills `buf` unless the input ends first; returns how many bytes were read.
fn read_or_end(reader: &mut impl BufRead, buf: &mut [u8]) -> Result<usize> {
    Ok(crate::read_up_to(reader, buf)?)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets/dicom").join(name)
    }

    fn probe_bytes(bytes: &[u8], limits: &Limits) -> Result<AssetMetadata> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.dcm");
        std::fs::write(&path, bytes).unwrap();
        probe(&Source::open(&path)?, Format::Dicom, limits)
    }

    #[test]
    fn huge_declared_length_is_truncated_not_allocated() {
        let mut bytes = std::fs::read(fixture("explicit-le.dcm")).unwrap();
        // (0002,0001) FileMetaInformationVersion, OB: tag, VR, 2 reserved, 32-bit length.
        let at = bytes.windows(6).position(|w| w == b"\x02\x00\x01\x00OB").unwrap();
        bytes[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let err = probe_bytes(&bytes, &Limits::default()).unwrap_err();
        assert!(matches!(err, ProbeError::Truncated { .. }), "{err}");
    }

    #[test]
    fn header_larger_than_max_memory_is_too_large() {
        let bytes = std::fs::read(fixture("explicit-le.dcm")).unwrap();
        let tight = Limits { max_memory_bytes: 100, ..Limits::default() };
        let err = probe_bytes(&bytes, &tight).unwrap_err();
        assert!(matches!(err, ProbeError::TooLarge { .. }), "{err}");
        assert_eq!(probe_bytes(&bytes, &Limits::default()).unwrap().width, Some(33));
    }

    #[test]
    fn pixel_data_is_not_read() {
        // Cutting the file inside Pixel Data changes nothing: the probe stops in front of it.
        let bytes = std::fs::read(fixture("multiframe.dcm")).unwrap();
        let m = probe_bytes(&bytes[..bytes.len() - 50], &Limits::default()).unwrap();
        assert_eq!((m.width, m.height, m.frame_count), (Some(7), Some(5), Some(4)));
    }

    #[test]
    fn deflated_data_set_is_unsupported() {
        assert!(matches!(dataset_encoding(TS_DEFLATED_LE), Err(ProbeError::Unsupported { .. })));
        assert_eq!(
            dataset_encoding(TS_EXPLICIT_BE).unwrap(),
            Encoding { explicit_vr: true, big_endian: true }
        );
    }
}
