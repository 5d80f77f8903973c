//! DICOM (Part 10) extraction: image size, frame count and modality from the data set
//! in front of Pixel Data, which is never read. Our own element walker reads the four
//! values it reports (and the transfer syntax) and seeks past every other value, so a
//! declared length never sizes an allocation: a sequence of defined length is skipped
//! whole, one of undefined length is walked with a counter (no recursion) under
//! `limits.max_nesting`. dicom-object read the whole data set instead, allocating what
//! each header declared and recursing into nested sequences (issue 9: a stack overflow
//! at 1,700 levels, 4 GB for a 620-byte file).
//!
//! Files as archives export them are read too: a preamble holding a TIFF header
//! (detection ranks `DICM` at 128 first), a bare data set with neither preamble nor file
//! meta group (recognised conservatively from its first two element headers), explicit
//! VR big endian, and the deflated transfer syntax, inflated as a stream under a hard
//! budget of output bytes ([`MAX_INFLATED_BYTES`]) so a deflate bomb costs nothing.

use std::io::{self, BufRead, BufReader, Read, Seek};

use flate2::bufread::DeflateDecoder;

use asset_core::{AssetMetadata, DataType, Limits};

use crate::{Format, ProbeError, Result, Source};

const FORMAT: &str = "dicom";
const MAGIC: &[u8; 4] = b"DICM";
const PREAMBLE_LEN: u64 = 128;

/// A data element tag, (group, element); ordered as in a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Tag(u16, u16);

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({:04X},{:04X})", self.0, self.1)
    }
}

const META_GROUP_LENGTH: Tag = Tag(0x0002, 0x0000);
const TRANSFER_SYNTAX: Tag = Tag(0x0002, 0x0010);
const MODALITY: Tag = Tag(0x0008, 0x0060);
const NUMBER_OF_FRAMES: Tag = Tag(0x0028, 0x0008);
const ROWS: Tag = Tag(0x0028, 0x0010);
const COLUMNS: Tag = Tag(0x0028, 0x0011);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

const ITEM: u16 = 0xE000;
const ITEM_DELIMITER: u16 = 0xE00D;
const SEQUENCE_DELIMITER: u16 = 0xE0DD;
const UNDEFINED_LENGTH: u32 = u32::MAX;

/// The longest value of a reported element we read: a transfer syntax UID is at most 64
/// bytes, Modality 16, Number of Frames 12, Rows and Columns 2. Anything longer is not
/// what the tag holds.
const MAX_VALUE_LEN: u32 = 64;

const TS_IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const TS_EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const TS_DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
const TS_DEFLATED_IMAGE_FRAME: &str = "1.2.840.10008.1.2.8.1";

/// The most bytes of a deflated data set inflated before Pixel Data: the elements in
/// front of it take kilobytes, so 16 MiB is far beyond any real file, and inflating it
/// takes tens of milliseconds. A deflate bomb stops here with `too_large`.
const MAX_INFLATED_BYTES: u64 = 16 << 20;

/// Where the file meta group starts, and whether the `DICM` magic precedes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The standard layout: 128-byte preamble, `DICM`, file meta group.
    Preamble,
    /// No preamble: the file starts with `DICM`.
    MagicFirst,
    /// Neither preamble nor magic: the file starts with the (0002,xxxx) group.
    MetaFirst,
    /// Neither preamble nor file meta group: the data set itself, in this encoding.
    Bare(Encoding),
}

pub(crate) fn probe(src: &Source, format: Format, limits: &Limits) -> Result<AssetMetadata> {
    let layout = layout(src.head(), src.size())?;
    let (start, bare) = match layout {
        Layout::Preamble => (PREAMBLE_LEN + MAGIC.len() as u64, None),
        Layout::MagicFirst => (MAGIC.len() as u64, None),
        Layout::MetaFirst => (0, None),
        Layout::Bare(encoding) => (0, Some(encoding)),
    };
    let found = walk(src.reader()?, start, src.size(), bare, limits)?;

    let rows = number(found.rows.as_ref(), "Rows", b"US")?
        .ok_or_else(|| ProbeError::corrupt(FORMAT, format!("no Rows {ROWS}")))?;
    let columns = number(found.columns.as_ref(), "Columns", b"US")?
        .ok_or_else(|| ProbeError::corrupt(FORMAT, format!("no Columns {COLUMNS}")))?;
    if rows == 0 || columns == 0 {
        return Err(ProbeError::corrupt(FORMAT, format!("image of {columns}x{rows} pixels")));
    }
    let frames = number(found.frames.as_ref(), "NumberOfFrames", b"IS")?.unwrap_or(1);
    if frames == 0 {
        return Err(ProbeError::corrupt(FORMAT, "NumberOfFrames is 0"));
    }
    let modality = found.modality.map(|v| text(&v.bytes).to_string()).filter(|m| !m.is_empty());

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
    } else if let Some(encoding) = bare_encoding(head) {
        Ok(Layout::Bare(encoding))
    } else if size < PREAMBLE_LEN + MAGIC.len() as u64 && head.starts_with(&[0x08, 0x00]) {
        Err(ProbeError::truncated(FORMAT, format!("file of {size} bytes ends in the preamble")))
    } else {
        Err(ProbeError::unsupported("DICOM data set without file meta information"))
    }
}

/// The encoding of a bare data set (no preamble, no file meta group), if `head` starts
/// like one: its first two element headers lie in the head, in group 0008 then any
/// later tag, in explicit VR little endian (known VRs, defined lengths) or in implicit
/// VR little endian (a first element up to (0008,0020) of under 256 bytes, a second of
/// under 1 KiB). Archives write such files in implicit VR little endian; a stray binary
/// file passes all of that only by chance.
pub(crate) fn bare_encoding(head: &[u8]) -> Option<Encoding> {
    let explicit = Encoding { explicit_vr: true, big_endian: false };
    [explicit, IMPLICIT_LE].into_iter().find(|&enc| {
        let mut at = 0usize;
        let mut previous: Option<Tag> = None;
        for n in 0..2 {
            let Some(h) = head.get(at..at + 8) else { return false };
            let tag = Tag(u16::from_le_bytes([h[0], h[1]]), u16::from_le_bytes([h[2], h[3]]));
            let (header, len) = if enc.explicit_vr {
                let vr = [h[4], h[5]];
                if VRS_WITH_SHORT_LENGTH.contains(&&vr) {
                    (8, u64::from(u16::from_le_bytes([h[6], h[7]])))
                } else if VRS_WITH_LONG_LENGTH.contains(&&vr) {
                    let Some(l) = head.get(at + 8..at + 12) else { return false };
                    (12, u64::from(u32::from_le_bytes([l[0], l[1], l[2], l[3]])))
                } else {
                    return false;
                }
            } else {
                let len = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
                let max = if n == 0 { 256 } else { 1024 };
                if len >= max {
                    return false;
                }
                (8, len)
            };
            let plausible = match previous {
                None => tag.0 == 0x0008 && (enc.explicit_vr || tag.1 <= 0x0020),
                Some(p) => tag > p && tag < PIXEL_DATA && len != u64::from(UNDEFINED_LENGTH),
            };
            if !plausible {
                return false;
            }
            previous = Some(tag);
            at += header + len as usize;
        }
        true
    })
}

/// How the data set after the file meta group is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoding {
    explicit_vr: bool,
    big_endian: bool,
}

const META_ENCODING: Encoding = Encoding { explicit_vr: true, big_endian: false };
/// What the value of a UN element of undefined length is encoded in (PS3.5 6.2.2).
const IMPLICIT_LE: Encoding = Encoding { explicit_vr: false, big_endian: false };

/// Explicit VRs whose length takes 16 bits, and those with 2 reserved bytes and 32 bits.
const VRS_WITH_SHORT_LENGTH: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
    b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];
const VRS_WITH_LONG_LENGTH: [&[u8; 2]; 13] =
    [b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"];

/// A value the walker kept: its bytes (at most [`MAX_VALUE_LEN`]), how they are
/// encoded, and their VR when the file states it.
#[derive(Debug, Clone)]
struct Value {
    bytes: Vec<u8>,
    vr: Option<[u8; 2]>,
    big_endian: bool,
}

/// The top-level values the probe reports.
#[derive(Debug, Default)]
struct Found {
    rows: Option<Value>,
    columns: Option<Value>,
    frames: Option<Value>,
    modality: Option<Value>,
}

/// Walks the element headers from the file meta group up to Pixel Data, reading only
/// the values in [`Found`] and the transfer syntax, and seeking past every other value
/// after checking it fits in the file (else `Truncated`).
///
/// Nesting is a counter, not a call stack: `open` counts the undefined-length
/// containers around the current element, which alternate sequence (odd counts) and
/// item (even counts), since a defined-length item is skipped whole and so never
/// opens. Sequences nest at most `limits.max_nesting` deep (else `TooLarge`); at most
/// `limits.max_items` headers are read in all. Memory is constant whatever the file
/// declares.
///
/// `bare` is the encoding of a data set without file meta group; otherwise the walk
/// starts in the file meta group, whose transfer syntax says how the rest is encoded.
/// A deflated data set is inflated as a stream from there on, at most
/// [`MAX_INFLATED_BYTES`], and values are skipped by reading them into nothing.
fn walk(
    mut reader: BufReader<crate::SourceFile>,
    start: u64,
    size: u64,
    bare: Option<Encoding>,
    limits: &Limits,
) -> Result<Found> {
    reader.seek(io::SeekFrom::Start(start))?;
    let mut reader = Input::Plain(reader);
    let reader = &mut reader;
    let mut at = Cursor { pos: start, end: End::File(size) };
    let mut encoding = bare.unwrap_or(META_ENCODING);
    let mut in_meta = bare.is_none();
    // Where the file meta group ends, from its group length (0002,0000): the meta
    // elements are read in explicit VR little endian up to there, whatever they hold.
    let mut meta_end: Option<u64> = None;
    let mut transfer_syntax = String::new();
    let mut found = Found::default();
    let mut open: u32 = 0;
    // While inside a UN value of undefined length: the `open` count that value made,
    // and the encoding to return to when it closes.
    let mut implicit_since: Option<(u32, Encoding)> = None;
    let mut headers: u64 = 0;

    loop {
        if in_meta && let Some(end) = meta_end.filter(|&end| at.pos >= end) {
            if at.pos > end {
                return Err(ProbeError::corrupt(
                    FORMAT,
                    "an element runs past the end of the file meta group",
                ));
            }
            in_meta = false;
            let transfer_syntax = transfer_syntax.trim_end_matches(['\0', ' ']);
            encoding = dataset_encoding(transfer_syntax)?;
            if transfer_syntax == TS_DEFLATED_LE {
                reader.inflate();
                at = Cursor { pos: 0, end: End::Inflated(MAX_INFLATED_BYTES) };
            }
        }
        if let Some((since, outer)) = implicit_since
            && open < since
        {
            encoding = outer;
            implicit_since = None;
        }
        let mut raw_tag = [0u8; 4];
        let got = crate::read_up_to(reader, &mut raw_tag).map_err(|e| {
            read_error(e, || ProbeError::truncated(FORMAT, format!("the data set ends at {}", at.pos)))
        })?;
        match got {
            0 if open == 0 && !in_meta => return Ok(found),
            4 => {}
            _ if open > 0 => {
                return Err(ProbeError::truncated(
                    FORMAT,
                    format!("file ends inside a sequence at {}", at.pos),
                ));
            }
            _ => {
                return Err(ProbeError::truncated(
                    FORMAT,
                    format!("file ends inside the element header at {}", at.pos),
                ));
            }
        }
        at.pos += 4;
        headers += 1;
        if headers > limits.max_items {
            return Err(ProbeError::TooLarge { what: "DICOM element count".into(), limit: limits.max_items });
        }
        let enc = encoding;
        let tag = Tag(enc.u16([raw_tag[0], raw_tag[1]]), enc.u16([raw_tag[2], raw_tag[3]]));
        if in_meta && (tag.0 != 0x0002 || meta_end.is_none() && tag != META_GROUP_LENGTH) {
            return Err(ProbeError::corrupt(
                FORMAT,
                format!("{tag} where the file meta group expects (0002,0000) and its elements"),
            ));
        }
        // The data set ends where Pixel Data (or anything sorting after it, padding or a
        // stray delimiter) starts.
        if open == 0 && !in_meta && tag >= PIXEL_DATA {
            return Ok(found);
        }

        if tag.0 == 0xFFFE {
            // Items and delimiters: no VR and a 32-bit length, in every transfer syntax.
            let len = at.u32(reader, enc)?;
            let in_sequence = open % 2 == 1;
            match (tag.1, in_sequence) {
                (ITEM, true) if len == UNDEFINED_LENGTH => open += 1,
                (ITEM, true) => at.skip(reader, len)?,
                // A delimiter's length is 0 by definition and its "value" is not skipped.
                (SEQUENCE_DELIMITER, true) => open -= 1,
                (ITEM_DELIMITER, false) => open -= 1,
                // A sequence delimiter where its last item's delimiter is missing.
                (SEQUENCE_DELIMITER, false) => open -= 2,
                _ => {
                    return Err(ProbeError::corrupt(
                        FORMAT,
                        format!("{tag} at {} where a {} is expected", at.pos - 8, expected(in_sequence)),
                    ));
                }
            }
            continue;
        }
        if open % 2 == 1 {
            return Err(ProbeError::corrupt(
                FORMAT,
                format!("data element {tag} at {} directly in a sequence, not in an item", at.pos - 4),
            ));
        }

        let (vr, len) = if enc.explicit_vr {
            let mut vr = [0u8; 2];
            at.read_exact(reader, &mut vr)?;
            let len = if VRS_WITH_LONG_LENGTH.contains(&&vr) {
                let mut reserved = [0u8; 2];
                at.read_exact(reader, &mut reserved)?;
                at.u32(reader, enc)?
            } else if VRS_WITH_SHORT_LENGTH.contains(&&vr) {
                let mut two = [0u8; 2];
                at.read_exact(reader, &mut two)?;
                u32::from(enc.u16(two))
            } else {
                // Guessing its layout would read a length from value bytes.
                return Err(ProbeError::corrupt(
                    FORMAT,
                    format!("unknown VR {:?} at {}", vr.escape_ascii().to_string(), at.pos - 2),
                ));
            };
            (Some(vr), len)
        } else {
            (None, at.u32(reader, enc)?)
        };

        if len == UNDEFINED_LENGTH {
            // A sequence, a UN value holding one (in implicit VR little endian), or
            // encapsulated pixel data (items of fragments); nothing else may be open-ended.
            match vr.as_ref().map(|v| &v[..]) {
                None | Some(b"SQ" | b"OB" | b"OW") => {}
                Some(b"UN") => {
                    if implicit_since.is_none() {
                        implicit_since = Some((open + 1, encoding));
                    }
                    encoding = IMPLICIT_LE;
                }
                Some(other) => {
                    return Err(ProbeError::corrupt(
                        FORMAT,
                        format!("{tag} of VR {} has an undefined length", other.escape_ascii()),
                    ));
                }
            }
            let depth = open / 2 + 1;
            if depth > limits.max_nesting {
                return Err(ProbeError::TooLarge {
                    what: "DICOM sequence nesting".into(),
                    limit: limits.max_nesting.into(),
                });
            }
            open += 1;
            continue;
        }

        let slot = if in_meta {
            None
        } else if open == 0 {
            match tag {
                ROWS => Some(&mut found.rows),
                COLUMNS => Some(&mut found.columns),
                NUMBER_OF_FRAMES => Some(&mut found.frames),
                MODALITY => Some(&mut found.modality),
                _ => None,
            }
        } else {
            None
        };
        if let Some(slot) = slot {
            let bytes = at.value(reader, len, tag)?;
            *slot = Some(Value { bytes, vr, big_endian: enc.big_endian });
        } else if in_meta && tag == META_GROUP_LENGTH && len == 4 {
            let group_length = at.u32(reader, enc)?;
            meta_end = Some(at.pos + u64::from(group_length));
        } else if in_meta && tag == TRANSFER_SYNTAX && len <= MAX_VALUE_LEN {
            transfer_syntax = String::from_utf8_lossy(&at.value(reader, len, tag)?).into_owned();
        } else {
            at.skip(reader, len)?;
        }
    }
}

fn expected(in_sequence: bool) -> &'static str {
    if in_sequence { "an item or the sequence delimiter" } else { "data element or item delimiter" }
}

impl Encoding {
    fn u16(self, b: [u8; 2]) -> u16 {
        if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }
    }
}

/// What the walker reads: the file, or from the end of the file meta group on, the
/// inflated stream of a deflated data set.
enum Input {
    Plain(BufReader<crate::SourceFile>),
    Inflating(DeflateDecoder<BufReader<crate::SourceFile>>),
    /// Only while switching from one to the other.
    Switching,
}

impl Input {
    /// Reads the rest of the file as raw deflate (PS3.5 A.5: no zlib header).
    fn inflate(&mut self) {
        if let Input::Plain(r) = std::mem::replace(self, Input::Switching) {
            *self = Input::Inflating(DeflateDecoder::new(r));
        }
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Plain(r) => r.read(buf),
            // A bad deflate stream is the file's fault (InvalidData, read as corrupt), a
            // missing byte of a partial copy is not (its error goes through as it is).
            Input::Inflating(r) => r.read(buf).map_err(|e| {
                if crate::MissingBytes::from_io(&e).is_some() {
                    return e;
                }
                // A stream the file ends inside is truncated; any other is corrupt.
                let kind = match r.get_mut().fill_buf() {
                    Ok([]) => io::ErrorKind::UnexpectedEof,
                    Ok(_) => io::ErrorKind::InvalidData,
                    Err(e) => return e,
                };
                io::Error::new(kind, format!("deflated data set: {e}"))
            }),
            Input::Switching => Ok(0),
        }
    }
}

/// Where the walker's input ends: the file's size, or for an inflated data set, the
/// budget of bytes inflated.
#[derive(Debug, Clone, Copy)]
enum End {
    File(u64),
    Inflated(u64),
}

/// The walker's position in its input, and where that input ends.
struct Cursor {
    pos: u64,
    end: End,
}

fn read_error(e: io::Error, what: impl FnOnce() -> ProbeError) -> ProbeError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => what(),
        io::ErrorKind::InvalidData => ProbeError::corrupt(FORMAT, e),
        _ => ProbeError::Io(e),
    }
}

impl Cursor {
    fn read_exact(&mut self, reader: &mut impl Read, buf: &mut [u8]) -> Result<()> {
        reader.read_exact(buf).map_err(|e| {
            read_error(e, || {
                ProbeError::truncated(FORMAT, format!("file ends inside the element header at {}", self.pos))
            })
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self, reader: &mut impl Read, enc: Encoding) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact(reader, &mut b)?;
        Ok(if enc.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// Checks that a value of `len` bytes ends inside the file (an inflated data set's
    /// end is known only when reached, but it must end inside the budget).
    fn fits(&self, len: u32) -> Result<u64> {
        let end = self.pos + u64::from(len);
        match self.end {
            End::File(size) if end > size => Err(ProbeError::truncated(
                FORMAT,
                format!(
                    "a value of {len} bytes at {} runs past the end of the file ({size} bytes)",
                    self.pos
                ),
            )),
            End::Inflated(budget) if end > budget => Err(ProbeError::TooLarge {
                what: format!("deflated DICOM data set inflating past {budget} bytes before Pixel Data"),
                limit: budget,
            }),
            _ => Ok(end),
        }
    }

    /// Moves past a value: a seek in the file, nothing read whatever its length; in an
    /// inflated data set, the value is inflated into nothing (within the budget).
    fn skip(&mut self, reader: &mut Input, len: u32) -> Result<()> {
        let end = self.fits(len)?;
        match &mut *reader {
            Input::Plain(r) => r.seek_relative(i64::from(len))?,
            _ => {
                let cut = || {
                    ProbeError::truncated(
                        FORMAT,
                        format!("the deflated data set ends inside a value of {len} bytes at {}", self.pos),
                    )
                };
                let copied = io::copy(&mut reader.take(u64::from(len)), &mut io::sink())
                    .map_err(|e| read_error(e, cut))?;
                if copied < u64::from(len) {
                    return Err(cut());
                }
            }
        }
        self.pos = end;
        Ok(())
    }

    /// Reads the value of a reported element, which is never longer than
    /// [`MAX_VALUE_LEN`]: the allocation is bounded by that, not by `len`.
    fn value(&mut self, reader: &mut impl Read, len: u32, tag: Tag) -> Result<Vec<u8>> {
        if len > MAX_VALUE_LEN {
            return Err(ProbeError::corrupt(
                FORMAT,
                format!("{tag} holds {len} bytes, more than its value can"),
            ));
        }
        self.fits(len)?;
        let mut bytes = vec![0u8; len as usize];
        self.read_exact(reader, &mut bytes)?;
        Ok(bytes)
    }
}

/// How the data set is encoded under a transfer syntax (for the deflated one: once
/// inflated).
fn dataset_encoding(transfer_syntax: &str) -> Result<Encoding> {
    match transfer_syntax {
        TS_IMPLICIT_LE => Ok(IMPLICIT_LE),
        TS_EXPLICIT_BE => Ok(Encoding { explicit_vr: true, big_endian: true }),
        // Inflated by the walker; Deflated Image Frame Compression deflates only the
        // frames, inside Pixel Data.
        TS_DEFLATED_LE | TS_DEFLATED_IMAGE_FRAME => Ok(META_ENCODING),
        "" => Err(ProbeError::corrupt(FORMAT, "no TransferSyntaxUID (0002,0010) in the file meta group")),
        // Every other transfer syntax encodes the data set in explicit VR little endian;
        // only Pixel Data differs.
        _ => Ok(META_ENCODING),
    }
}

/// A string value without its padding (spaces, NULs).
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("").trim_matches([' ', '\0'])
}

/// The first value of an integer element: binary (US, UL, SS, SL) or a decimal string
/// (IS), as its VR says, or as the dictionary says (`implicit_vr`) in an implicit VR
/// file. `None` when the element is absent or empty.
fn number(value: Option<&Value>, name: &str, implicit_vr: &[u8; 2]) -> Result<Option<u32>> {
    let Some(value) = value else { return Ok(None) };
    let bytes = &value.bytes;
    if bytes.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| ProbeError::corrupt(FORMAT, format!("{name} is not a number: {why}"));
    let binary = |width: usize| -> Result<u32> {
        if bytes.len() % width != 0 {
            return Err(bad(&format!("{} bytes for {width}-byte values", bytes.len())));
        }
        let mut raw = [0u8; 4];
        raw[..width].copy_from_slice(&bytes[..width]);
        Ok(match (width, value.big_endian) {
            (2, false) => u32::from(u16::from_le_bytes([raw[0], raw[1]])),
            (2, true) => u32::from(u16::from_be_bytes([raw[0], raw[1]])),
            (_, false) => u32::from_le_bytes(raw),
            (_, true) => u32::from_be_bytes(raw),
        })
    };
    let signed = |n: u32, width: usize| -> Result<u32> {
        let negative = if width == 2 { n & 0x8000 != 0 } else { n & 0x8000_0000 != 0 };
        if negative { Err(bad("negative")) } else { Ok(n) }
    };
    let decimal = || -> Result<Option<u32>> {
        let first = text(bytes).split('\\').next().unwrap_or("").trim_matches([' ', '\0']);
        if first.is_empty() {
            return Ok(None);
        }
        first.parse::<u32>().map(Some).map_err(|e| bad(&format!("{first:?}: {e}")))
    };
    match value.vr.as_ref().unwrap_or(implicit_vr) {
        b"US" => binary(2).map(Some),
        b"UL" => binary(4).map(Some),
        b"SS" => signed(binary(2)?, 2).map(Some),
        b"SL" => signed(binary(4)?, 4).map(Some),
        b"IS" => decimal(),
        other => Err(bad(&format!("VR {}", other.escape_ascii()))),
    }
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

    /// Writes a Part 10 file element by element in one of the three encodings.
    struct Writer {
        out: Vec<u8>,
        enc: Encoding,
    }

    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

    impl Writer {
        fn new(transfer_syntax: &str) -> Self {
            let mut ts = transfer_syntax.as_bytes().to_vec();
            if ts.len() % 2 == 1 {
                ts.push(0);
            }
            let mut meta = Writer { out: Vec::new(), enc: META_ENCODING };
            meta.element(0x0002, 0x0001, b"OB", &[0, 1]);
            meta.element(0x0002, 0x0010, b"UI", &ts);
            let mut w = Writer { out: vec![0u8; 128], enc: META_ENCODING };
            w.out.extend_from_slice(MAGIC);
            w.element(0x0002, 0x0000, b"UL", &(meta.out.len() as u32).to_le_bytes());
            w.out.extend_from_slice(&meta.out);
            w.enc = dataset_encoding(transfer_syntax).unwrap();
            w
        }

        fn u16(&mut self, v: u16) {
            let b = if self.enc.big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
            self.out.extend_from_slice(&b);
        }

        fn u32(&mut self, v: u32) {
            let b = if self.enc.big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
            self.out.extend_from_slice(&b);
        }

        /// An element header declaring `len` bytes (no value written).
        fn header(&mut self, group: u16, element: u16, vr: &[u8; 2], len: u32) {
            self.u16(group);
            self.u16(element);
            if !self.enc.explicit_vr {
                self.u32(len);
            } else if VRS_WITH_LONG_LENGTH.contains(&vr) {
                self.out.extend_from_slice(vr);
                self.out.extend_from_slice(&[0, 0]);
                self.u32(len);
            } else {
                self.out.extend_from_slice(vr);
                self.u16(u16::try_from(len).unwrap());
            }
        }

        fn element(&mut self, group: u16, element: u16, vr: &[u8; 2], value: &[u8]) {
            self.header(group, element, vr, value.len() as u32);
            self.out.extend_from_slice(value);
        }

        fn us(&mut self, tag: Tag, v: u16) {
            let b = if self.enc.big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
            self.element(tag.0, tag.1, b"US", &b);
        }

        fn delimiter(&mut self, element: u16, len: u32) {
            self.u16(0xFFFE);
            self.u16(element);
            self.u32(len);
        }

        /// Modality MR, then `body`, then 17 rows, 33 columns and a little Pixel Data.
        fn image(mut self, body: impl FnOnce(&mut Writer)) -> Vec<u8> {
            self.element(0x0008, 0x0060, b"CS", b"MR");
            body(&mut self);
            self.us(ROWS, 17);
            self.us(COLUMNS, 33);
            self.element(0x7FE0, 0x0010, b"OB", &[0x80; 8]);
            self.out
        }
    }

    const ALL_ENCODINGS: [&str; 3] = [EXPLICIT_LE, TS_IMPLICIT_LE, TS_EXPLICIT_BE];

    fn nested_undefined(ts: &str, depth: u32) -> Vec<u8> {
        Writer::new(ts).image(|w| {
            for _ in 0..depth {
                w.header(0x0008, 0x1140, b"SQ", UNDEFINED_LENGTH);
                w.delimiter(ITEM, UNDEFINED_LENGTH);
            }
            for _ in 0..depth {
                w.delimiter(ITEM_DELIMITER, 0);
                w.delimiter(SEQUENCE_DELIMITER, 0);
            }
        })
    }

    fn nested_defined(ts: &str, depth: u32) -> Vec<u8> {
        Writer::new(ts).image(|w| {
            for k in (1..=depth).rev() {
                // A level is an SQ header (12 bytes explicit, 8 implicit) and an item header (8).
                let level = if w.enc.explicit_vr { 20 } else { 16 };
                w.header(0x0008, 0x1140, b"SQ", 8 + level * (k - 1));
                w.delimiter(ITEM, level * (k - 1));
            }
        })
    }

    fn size_of(m: &AssetMetadata) -> (Option<u32>, Option<u32>, Option<u64>, Option<&str>) {
        (m.width, m.height, m.frame_count, m.modality.as_deref())
    }

    const EXPECTED: (Option<u32>, Option<u32>, Option<u64>, Option<&str>) =
        (Some(33), Some(17), Some(1), Some("MR"));

    /// Runs `f` on a thread with a 256 KiB stack: a walk that recursed per level would
    /// overflow it long before 100,000 levels.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new().stack_size(256 * 1024).spawn(f).unwrap().join().unwrap()
    }

    #[test]
    fn undefined_length_nesting_stops_at_max_nesting_in_every_encoding() {
        for ts in ALL_ENCODINGS {
            let limits = Limits { max_nesting: 10, ..Limits::default() };
            let at_limit = probe_bytes(&nested_undefined(ts, 10), &limits).unwrap();
            assert_eq!(size_of(&at_limit), EXPECTED, "{ts}");
            let err = probe_bytes(&nested_undefined(ts, 11), &limits).unwrap_err();
            assert!(matches!(err, ProbeError::TooLarge { limit: 10, .. }), "{ts}: {err}");
        }
    }

    #[test]
    fn nesting_of_100_000_levels_costs_no_stack() {
        let undefined = nested_undefined(EXPLICIT_LE, 100_000);
        let defined = nested_defined(TS_IMPLICIT_LE, 100_000);
        let (undefined, defined) = on_small_stack(move || {
            let deep = Limits { max_nesting: 100_000, ..Limits::default() };
            (probe_bytes(&undefined, &deep), probe_bytes(&defined, &Limits::default()))
        });
        assert_eq!(size_of(&undefined.unwrap()), EXPECTED);
        // Defined-length sequences are skipped whole, never entered.
        assert_eq!(size_of(&defined.unwrap()), EXPECTED);
    }

    #[test]
    fn nested_defined_seq_crash_regression() {
        // Issue 9: 1,700 levels of defined-length sequences overflowed the probe thread.
        for ts in ALL_ENCODINGS {
            let bytes = nested_defined(ts, 1_700);
            let m = on_small_stack(move || probe_bytes(&bytes, &Limits::default())).unwrap();
            assert_eq!(size_of(&m), EXPECTED, "{ts}");
        }
    }

    #[test]
    fn huge_length_in_defined_seq_is_skipped_not_allocated() {
        // Issue 9: an OB declaring 0xFFFFFFF0 bytes inside a sequence whose own length
        // covers only what is there. Nothing is allocated, even with 4 KiB of memory.
        let bytes = Writer::new(EXPLICIT_LE).image(|w| {
            let mut inner = Writer { out: Vec::new(), enc: w.enc };
            inner.header(0x0009, 0x1001, b"OB", 0xFFFF_FFF0);
            inner.out.extend_from_slice(&[0; 4]);
            w.header(0x0008, 0x1140, b"SQ", inner.out.len() as u32 + 8);
            w.delimiter(ITEM, inner.out.len() as u32);
            w.out.extend_from_slice(&inner.out);
        });
        let tight = Limits { max_memory_bytes: 4096, ..Limits::default() };
        assert_eq!(size_of(&probe_bytes(&bytes, &tight).unwrap()), EXPECTED);
    }

    #[test]
    fn odd_length_us_desync_regression() {
        // Issue 9: a 3-byte US made dicom-object read one byte late from there on.
        let bytes = Writer::new(EXPLICIT_LE).image(|w| {
            w.element(0x0028, 0x0002, b"US", &[1, 0, 0]);
            let mut lo = b"A".to_vec();
            lo.extend_from_slice(&0xE5FF_FFF0u32.to_le_bytes());
            lo.extend_from_slice(&[b'B'; 61]);
            w.element(0x0029, 0x0010, b"LO", &lo);
        });
        assert_eq!(size_of(&probe_bytes(&bytes, &Limits::default()).unwrap()), EXPECTED);
        // Rows itself of odd length is no number.
        let mut w = Writer::new(EXPLICIT_LE);
        w.element(0x0028, 0x0010, b"US", &[17, 0, 0]);
        w.us(COLUMNS, 33);
        let err = probe_bytes(&w.out, &Limits::default()).unwrap_err();
        assert!(matches!(err, ProbeError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn wide_seq_is_walked_in_constant_memory() {
        // Issue 9: 150,000 items cost dicom-object 205 MB.
        let bytes = Writer::new(EXPLICIT_LE).image(|w| {
            w.header(0x0008, 0x1140, b"SQ", UNDEFINED_LENGTH);
            for _ in 0..150_000 {
                w.delimiter(ITEM, 0);
            }
            w.delimiter(SEQUENCE_DELIMITER, 0);
        });
        let tight = Limits { max_memory_bytes: 4096, ..Limits::default() };
        assert_eq!(size_of(&probe_bytes(&bytes, &tight).unwrap()), EXPECTED);
        let few = Limits { max_items: 100_000, ..Limits::default() };
        let err = probe_bytes(&bytes, &few).unwrap_err();
        assert!(matches!(err, ProbeError::TooLarge { limit: 100_000, .. }), "{err}");
    }

    #[test]
    fn values_inside_sequences_do_not_count() {
        // A Rows of 99 inside an item (an icon, say) is not the image's.
        for ts in ALL_ENCODINGS {
            let bytes = Writer::new(ts).image(|w| {
                w.header(0x0088, 0x0200, b"SQ", UNDEFINED_LENGTH);
                w.delimiter(ITEM, UNDEFINED_LENGTH);
                w.us(ROWS, 99);
                w.us(COLUMNS, 98);
                // Encapsulated icon pixels: an undefined-length OB of fragment items.
                w.header(0x7FE0, 0x0010, b"OB", UNDEFINED_LENGTH);
                w.delimiter(ITEM, 4);
                w.out.extend_from_slice(&[1, 2, 3, 4]);
                w.delimiter(SEQUENCE_DELIMITER, 0);
                w.delimiter(ITEM_DELIMITER, 0);
                w.delimiter(SEQUENCE_DELIMITER, 0);
            });
            assert_eq!(size_of(&probe_bytes(&bytes, &Limits::default()).unwrap()), EXPECTED, "{ts}");
        }
    }

    #[test]
    fn un_of_undefined_length_is_read_as_implicit_little_endian() {
        // In explicit big endian, a UN sequence's items and elements are implicit VR
        // little endian; after it, the data set goes on in big endian.
        let bytes = Writer::new(TS_EXPLICIT_BE).image(|w| {
            w.header(0x0009, 0x1010, b"UN", UNDEFINED_LENGTH);
            let outer = w.enc;
            w.enc = IMPLICIT_LE;
            w.delimiter(ITEM, UNDEFINED_LENGTH);
            w.header(0x0009, 0x1011, b"UN", UNDEFINED_LENGTH);
            w.delimiter(ITEM, UNDEFINED_LENGTH);
            w.element(0x0009, 0x1012, b"LO", b"inner value 1234");
            w.delimiter(ITEM_DELIMITER, 0);
            w.delimiter(SEQUENCE_DELIMITER, 0);
            w.delimiter(ITEM_DELIMITER, 0);
            w.delimiter(SEQUENCE_DELIMITER, 0);
            w.enc = outer;
        });
        assert_eq!(size_of(&probe_bytes(&bytes, &Limits::default()).unwrap()), EXPECTED);
    }

    #[test]
    fn number_of_frames_and_integer_vrs() {
        let bytes = Writer::new(TS_IMPLICIT_LE).image(|w| w.element(0x0028, 0x0008, b"IS", b" 12\\3 "));
        assert_eq!(probe_bytes(&bytes, &Limits::default()).unwrap().frame_count, Some(12));
        let bytes = Writer::new(EXPLICIT_LE).image(|w| w.element(0x0028, 0x0008, b"IS", b"  "));
        assert_eq!(probe_bytes(&bytes, &Limits::default()).unwrap().frame_count, Some(1));
        let bytes = Writer::new(TS_EXPLICIT_BE).image(|w| w.element(0x0028, 0x0008, b"IS", b"-4"));
        assert!(matches!(probe_bytes(&bytes, &Limits::default()), Err(ProbeError::Corrupt { .. })));
        // Rows as a signed or 32-bit value, big endian.
        let mut w = Writer::new(TS_EXPLICIT_BE);
        w.element(0x0028, 0x0010, b"UL", &70_000u32.to_be_bytes());
        w.element(0x0028, 0x0011, b"SS", &5u16.to_be_bytes());
        let m = probe_bytes(&w.out, &Limits::default()).unwrap();
        assert_eq!((m.height, m.width), (Some(70_000), Some(5)));
        let mut w = Writer::new(EXPLICIT_LE);
        w.element(0x0028, 0x0010, b"SS", &(-5i16).to_le_bytes());
        w.us(COLUMNS, 5);
        assert!(matches!(probe_bytes(&w.out, &Limits::default()), Err(ProbeError::Corrupt { .. })));
    }

    #[test]
    fn a_reported_value_longer_than_it_can_be_is_corrupt() {
        let bytes = Writer::new(EXPLICIT_LE).image(|w| w.element(0x0008, 0x0060, b"CS", &[b'A'; 66]));
        let err = probe_bytes(&bytes, &Limits::default()).unwrap_err();
        assert!(matches!(err, ProbeError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn structure_errors_are_typed() {
        // A file that ends inside an open sequence, between elements.
        let mut bytes = nested_undefined(EXPLICIT_LE, 3);
        let cut = bytes.len() - 60;
        bytes.truncate(cut);
        assert!(matches!(probe_bytes(&bytes, &Limits::default()), Err(ProbeError::Truncated { .. })));
        // A data element straight inside a sequence.
        let bytes = Writer::new(EXPLICIT_LE).image(|w| {
            w.header(0x0008, 0x1140, b"SQ", UNDEFINED_LENGTH);
            w.element(0x0008, 0x0070, b"LO", b"NOT AN ITEM ");
        });
        assert!(matches!(probe_bytes(&bytes, &Limits::default()), Err(ProbeError::Corrupt { .. })));
        // An undefined length on a VR that cannot have one.
        let bytes = Writer::new(EXPLICIT_LE).image(|w| w.header(0x0008, 0x0070, b"UT", UNDEFINED_LENGTH));
        assert!(matches!(probe_bytes(&bytes, &Limits::default()), Err(ProbeError::Corrupt { .. })));
        // A defined-length sequence longer than the file.
        let mut w = Writer::new(EXPLICIT_LE);
        w.header(0x0008, 0x1140, b"SQ", 1000);
        w.delimiter(ITEM, 0);
        assert!(matches!(probe_bytes(&w.out, &Limits::default()), Err(ProbeError::Truncated { .. })));
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
    fn a_header_larger_than_max_memory_is_skipped_not_held() {
        // 40 MB of a private OB (sparse on disk) in front of Rows: seeked past, so a
        // 1 MiB memory limit does not matter.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.dcm");
        let mut w = Writer::new(EXPLICIT_LE);
        w.element(0x0008, 0x0060, b"CS", b"MR");
        w.header(0x0009, 0x1001, b"OB", 40 << 20);
        let mut tail = Writer { out: Vec::new(), enc: w.enc };
        tail.us(ROWS, 17);
        tail.us(COLUMNS, 33);
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(&w.out).unwrap();
            f.seek(SeekFrom::Current(40 << 20)).unwrap();
            f.write_all(&tail.out).unwrap();
        }
        let tight = Limits { max_memory_bytes: 1 << 20, ..Limits::default() };
        let m = probe(&Source::open(&path).unwrap(), Format::Dicom, &tight).unwrap();
        assert_eq!((m.width, m.height), (Some(33), Some(17)));
    }

    #[test]
    fn pixel_data_is_not_read() {
        // Cutting the file inside Pixel Data changes nothing: the probe stops in front of it.
        let bytes = std::fs::read(fixture("multiframe.dcm")).unwrap();
        let m = probe_bytes(&bytes[..bytes.len() - 50], &Limits::default()).unwrap();
        assert_eq!((m.width, m.height, m.frame_count), (Some(7), Some(5), Some(4)));
    }

    #[test]
    fn deflated_data_sets_are_explicit_little_endian_once_inflated() {
        assert_eq!(dataset_encoding(TS_DEFLATED_LE).unwrap(), META_ENCODING);
        assert_eq!(dataset_encoding(TS_DEFLATED_IMAGE_FRAME).unwrap(), META_ENCODING);
        assert_eq!(
            dataset_encoding(TS_EXPLICIT_BE).unwrap(),
            Encoding { explicit_vr: true, big_endian: true }
        );
    }

    /// The data set of a file [`Writer`] made, without preamble and file meta group.
    fn bare(ts: &str) -> Vec<u8> {
        let mut w = Writer::new(ts);
        let start = w.out.len();
        w.element(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0");
        w.element(0x0008, 0x0018, b"UI", b"1.2.3.4\0");
        w.image(|_| {})[start..].to_vec()
    }

    #[test]
    fn bare_data_sets_in_implicit_and_explicit_little_endian() {
        for ts in [TS_IMPLICIT_LE, EXPLICIT_LE] {
            let bytes = bare(ts);
            assert_eq!(crate::detect::detect(&bytes), Some(Format::Dicom), "{ts}");
            assert_eq!(size_of(&probe_bytes(&bytes, &Limits::default()).unwrap()), EXPECTED, "{ts}");
        }
    }

    #[test]
    fn bare_data_sets_are_recognised_conservatively() {
        let bytes = bare(TS_IMPLICIT_LE);
        // One element alone is not enough, nor a second one sorting before the first.
        assert_eq!(bare_encoding(&bytes[..8 + 26]), None);
        let mut swapped = bytes.clone();
        swapped[8 + 26 + 2] = 0x02; // (0008,0018) -> (0008,0002)
        assert_eq!(bare_encoding(&swapped), None);
        // A first length of 256 or more, or a first element past (0008,0020).
        let mut long = bytes.clone();
        long[5] = 1;
        assert_eq!(bare_encoding(&long), None);
        let mut late = bytes.clone();
        late[2] = 0x21;
        assert_eq!(bare_encoding(&late), None);
        assert_eq!(bare_encoding(&bytes), Some(IMPLICIT_LE));
    }

    #[test]
    fn inflating_stops_at_the_budget() {
        // Declared lengths are checked against the budget before any byte is inflated.
        let mut w = Writer { out: Vec::new(), enc: META_ENCODING };
        let mut meta = Writer { out: Vec::new(), enc: META_ENCODING };
        meta.element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1.99\0");
        w.out.extend_from_slice(&[0u8; 128]);
        w.out.extend_from_slice(MAGIC);
        w.element(0x0002, 0x0000, b"UL", &(meta.out.len() as u32).to_le_bytes());
        w.out.extend_from_slice(&meta.out);
        let mut data = Writer { out: Vec::new(), enc: META_ENCODING };
        data.header(0x0009, 0x1001, b"OB", u32::try_from(MAX_INFLATED_BYTES).unwrap() + 2);
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, &data.out).unwrap();
        w.out.extend_from_slice(&e.finish().unwrap());
        let err = probe_bytes(&w.out, &Limits::default()).unwrap_err();
        assert!(matches!(err, ProbeError::TooLarge { .. }), "{err}");
    }
}
