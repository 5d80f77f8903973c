//! Where a fixture's structures (boxes, chunks, elements, segments, pages, objects) start
//! and end, and which bytes declare their sizes: what the mutations of issue 9 need to
//! inflate a real length field, to repeat a whole box, or to splice at a boundary. The
//! walkers are deliberately shallow and forgiving: they describe valid fixtures, and a
//! structure they cannot read simply ends the walk.

/// How a size field is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    U16Be,
    U16Le,
    U24Be,
    U32Be,
    U32Le,
    U64Be,
    U64Le,
    /// An EBML variable-length integer of the given width in bytes.
    Vint(usize),
}

impl Enc {
    pub fn width(self) -> usize {
        match self {
            Enc::U16Be | Enc::U16Le => 2,
            Enc::U24Be => 3,
            Enc::U32Be | Enc::U32Le => 4,
            Enc::U64Be | Enc::U64Le => 8,
            Enc::Vint(w) => w,
        }
    }

    /// The largest value the field can hold (for a vint, one below "unknown size").
    pub fn max(self) -> u64 {
        match self {
            Enc::Vint(w) => (1u64 << (7 * w as u32)) - 2,
            e => u64::MAX >> (64 - 8 * e.width() as u32),
        }
    }

    pub fn read(self, b: &[u8], at: usize) -> Option<u64> {
        let s = b.get(at..at + self.width())?;
        Some(match self {
            Enc::U16Le | Enc::U32Le | Enc::U64Le => s.iter().rev().fold(0, |v, &x| v << 8 | u64::from(x)),
            Enc::Vint(w) => {
                let first = u64::from(s[0]) & (0xFF >> w);
                s[1..].iter().fold(first, |v, &x| v << 8 | u64::from(x))
            }
            _ => s.iter().fold(0, |v, &x| v << 8 | u64::from(x)),
        })
    }

    /// Writes `value` (which must fit) over the field.
    pub fn write(self, b: &mut [u8], at: usize, value: u64) {
        let w = self.width();
        let s = &mut b[at..at + w];
        for (i, byte) in s.iter_mut().enumerate() {
            let shift = match self {
                Enc::U16Le | Enc::U32Le | Enc::U64Le => 8 * i,
                _ => 8 * (w - 1 - i),
            };
            *byte = (value >> shift) as u8;
        }
        if let Enc::Vint(w) = self {
            s[0] |= 0x80 >> (w - 1);
        }
    }
}

/// A size field inside the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub at: usize,
    pub enc: Enc,
}

/// One structure: `start..end` in the file, the field that declares its size in bytes,
/// the indices (in the same list) of the structures that contain it, innermost last,
/// and the field, if any, that counts how many structures like it follow (a TIFF IFD's
/// entry count).
#[derive(Debug, Clone)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub size: Option<Field>,
    pub parents: Vec<usize>,
    pub counted_by: Option<Field>,
}

/// The structures of `bytes`, by content (the same signatures detection uses); empty
/// for formats without a walker here (GIF, BMP, MP3, ADTS, SVG, text).
pub fn spans(bytes: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    let b = bytes;
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        png(b, &mut out);
    } else if b.starts_with(b"\xFF\xD8") {
        jpeg(b, &mut out);
    } else if b.starts_with(b"RIFF") || b.starts_with(b"RF64") {
        riff(b, 0, b.len(), &[], Endian::Le, &mut out);
    } else if b.starts_with(b"FORM") {
        riff(b, 0, b.len(), &[], Endian::Be, &mut out);
    } else if b.starts_with(b"\x1A\x45\xDF\xA3") {
        ebml(b, 0, b.len(), &[], 0, &mut out);
    } else if b.starts_with(b"OggS") {
        ogg(b, &mut out);
    } else if b.starts_with(b"fLaC") {
        flac(b, &mut out);
    } else if b.starts_with(b"II*\0") || b.starts_with(b"MM\0*") {
        tiff(b, &mut out);
    } else if b.get(128..132) == Some(b"DICM") {
        dicom(b, 132, &mut out);
    } else if b
        .get(4..8)
        .is_some_and(|t| matches!(t, b"ftyp" | b"moov" | b"mdat" | b"free" | b"wide" | b"skip"))
    {
        isobmff(b, 0, b.len(), &[], 0, &mut out);
    } else if b[..b.len().min(1024)].windows(5).any(|w| w == b"%PDF-") {
        pdf(b, &mut out);
    }
    out
}

fn push(out: &mut Vec<Span>, start: usize, end: usize, size: Option<Field>, parents: &[usize]) -> usize {
    out.push(Span { start, end, size, parents: parents.to_vec(), counted_by: None });
    out.len() - 1
}

fn with(parents: &[usize], idx: usize) -> Vec<usize> {
    let mut p = parents.to_vec();
    p.push(idx);
    p
}

fn png(b: &[u8], out: &mut Vec<Span>) {
    let mut at = 8;
    while let Some(len) = Enc::U32Be.read(b, at) {
        let end = at + 12 + len as usize;
        if end > b.len() {
            break;
        }
        push(out, at, end, Some(Field { at, enc: Enc::U32Be }), &[]);
        at = end;
    }
}

fn jpeg(b: &[u8], out: &mut Vec<Span>) {
    let mut at = 2;
    while at + 4 <= b.len() && b[at] == 0xFF {
        let marker = b[at + 1];
        if marker == 0xD9 || (0xD0..=0xD7).contains(&marker) {
            break;
        }
        let Some(len) = Enc::U16Be.read(b, at + 2) else { break };
        let end = at + 2 + len as usize;
        if len < 2 || end > b.len() {
            break;
        }
        push(out, at, end, Some(Field { at: at + 2, enc: Enc::U16Be }), &[]);
        if marker == 0xDA {
            break; // entropy-coded data follows
        }
        at = end;
    }
}

#[derive(Clone, Copy)]
enum Endian {
    Le,
    Be,
}

/// RIFF (WAV, AVI, WebP; little-endian sizes) and IFF (AIFF; big-endian) chunks; the
/// outer `RIFF`/`FORM` and `LIST` chunks contain others after a 4-byte form type.
fn riff(b: &[u8], from: usize, to: usize, parents: &[usize], endian: Endian, out: &mut Vec<Span>) {
    let enc = match endian {
        Endian::Le => Enc::U32Le,
        Endian::Be => Enc::U32Be,
    };
    let mut at = from;
    while at + 8 <= to && parents.len() < 4 {
        let Some(len) = enc.read(b, at + 4) else { break };
        let id = &b[at..at + 4];
        // RF64 keeps its real sizes elsewhere (ds64); 0xFFFFFFFF is the marker.
        let end = if len == 0xFFFF_FFFF { to } else { (at + 8 + len as usize).min(to) };
        let idx = push(out, at, end, Some(Field { at: at + 4, enc }), parents);
        if matches!(id, b"RIFF" | b"RF64" | b"FORM" | b"LIST") && end >= at + 12 {
            riff(b, at + 12, end, &with(parents, idx), endian, out);
        }
        at = end + (end - at) % 2;
    }
}

const EBML_MASTERS: &[u32] = &[
    0x1A45_DFA3, // EBML header
    0x1853_8067, // Segment
    0x114D_9B74, // SeekHead
    0x4DBB,      // Seek
    0x1549_A966, // Info
    0x1654_AE6B, // Tracks
    0xAE,        // TrackEntry
    0xE0,        // Video
    0xE1,        // Audio
    0x1F43_B675, // Cluster
    0xA0,        // BlockGroup
    0x1C53_BB6B, // Cues
    0xBB,        // CuePoint
    0x1254_C367, // Tags
    0x7373,      // Tag
    0x63C0,      // Targets
    0x67C8,      // SimpleTag
];

fn vint_width(first: u8) -> Option<usize> {
    (first != 0).then(|| first.leading_zeros() as usize + 1)
}

fn ebml(b: &[u8], from: usize, to: usize, parents: &[usize], depth: usize, out: &mut Vec<Span>) {
    let mut at = from;
    while at < to && depth < 6 && out.len() < 4096 {
        let Some(idw) = vint_width(b[at]).filter(|&w| w <= 4 && at + w < to) else { break };
        let id = b[at..at + idw].iter().fold(0u32, |v, &x| v << 8 | u32::from(x));
        let Some(sw) = vint_width(b[at + idw]).filter(|&w| w <= 8) else { break };
        let enc = Enc::Vint(sw);
        let Some(len) = enc.read(b, at + idw) else { break };
        let body = at + idw + sw;
        let unknown = len == (1u64 << (7 * sw as u32)) - 1;
        let end = if unknown { to } else { body.saturating_add(len as usize).min(to) };
        let idx = push(out, at, end, Some(Field { at: at + idw, enc }), parents);
        if EBML_MASTERS.contains(&id) {
            ebml(b, body, end, &with(parents, idx), depth + 1, out);
        }
        if end <= at {
            break;
        }
        at = end;
    }
}

fn ogg(b: &[u8], out: &mut Vec<Span>) {
    let mut at = 0;
    while b.get(at..at + 4) == Some(b"OggS") && at + 27 <= b.len() {
        let segs = b[at + 26] as usize;
        let Some(table) = b.get(at + 27..at + 27 + segs) else { break };
        let end = at + 27 + segs + table.iter().map(|&x| x as usize).sum::<usize>();
        if end > b.len() {
            break;
        }
        // A page's length is its lacing values: no single size field.
        push(out, at, end, None, &[]);
        at = end;
    }
}

fn flac(b: &[u8], out: &mut Vec<Span>) {
    let mut at = 4;
    while at + 4 <= b.len() {
        let last = b[at] & 0x80 != 0;
        let Some(len) = Enc::U24Be.read(b, at + 1) else { break };
        let end = at + 4 + len as usize;
        if end > b.len() {
            break;
        }
        push(out, at, end, Some(Field { at: at + 1, enc: Enc::U24Be }), &[]);
        at = end;
        if last {
            break;
        }
    }
}

/// TIFF: the first IFD's entries, each 12 bytes (the count before them is the size
/// field of the whole directory).
fn tiff(b: &[u8], out: &mut Vec<Span>) {
    let le = b[0] == b'I';
    let (e16, e32) = if le { (Enc::U16Le, Enc::U32Le) } else { (Enc::U16Be, Enc::U32Be) };
    let Some(ifd) = e32.read(b, 4).map(|v| v as usize) else { return };
    let Some(count) = e16.read(b, ifd).map(|v| v as usize) else { return };
    let end = ifd + 2 + 12 * count;
    if end + 4 > b.len() {
        return;
    }
    // The count is a size field too, in entries: inflating it is a length mutation.
    push(out, ifd, end, Some(Field { at: ifd, enc: e16 }), &[]);
    for i in 0..count {
        let at = ifd + 2 + 12 * i;
        let entry = push(out, at, at + 12, None, &[]);
        out[entry].counted_by = Some(Field { at: ifd, enc: e16 });
    }
}

/// DICOM Part 10 after the preamble: elements with explicit VRs (the file meta group
/// always has them), stopping at the first one that does not look explicit or whose
/// length is undefined.
fn dicom(b: &[u8], from: usize, out: &mut Vec<Span>) {
    let mut at = from;
    while at + 8 <= b.len() && out.len() < 4096 {
        let vr = &b[at + 4..at + 6];
        if !vr.iter().all(u8::is_ascii_uppercase) {
            break;
        }
        let long = matches!(
            vr,
            b"OB" | b"OW" | b"OF" | b"OD" | b"OL" | b"OV" | b"SQ" | b"UT" | b"UN" | b"UC" | b"UR"
        );
        let (field, header) = if long {
            (Field { at: at + 8, enc: Enc::U32Le }, 12)
        } else {
            (Field { at: at + 6, enc: Enc::U16Le }, 8)
        };
        let Some(len) = field.enc.read(b, field.at) else { break };
        if len == 0xFFFF_FFFF {
            break;
        }
        let end = at + header + len as usize;
        if end > b.len() {
            break;
        }
        push(out, at, end, Some(field), &[]);
        at = end;
    }
}

const ISO_CONTAINERS: &[&[u8; 4]] = &[
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"udta", b"mvex", b"moof", b"traf",
    b"iprp", b"ipco", b"sinf", b"schi", b"meta",
];

fn isobmff(b: &[u8], from: usize, to: usize, parents: &[usize], depth: usize, out: &mut Vec<Span>) {
    let mut at = from;
    while at + 8 <= to && depth < 8 && out.len() < 4096 {
        let Some(size32) = Enc::U32Be.read(b, at) else { break };
        let (field, header, size) = match size32 {
            0 => (Field { at, enc: Enc::U32Be }, 8, (to - at) as u64),
            1 => {
                let Some(large) = Enc::U64Be.read(b, at + 8) else { break };
                (Field { at: at + 8, enc: Enc::U64Be }, 16, large)
            }
            s => (Field { at, enc: Enc::U32Be }, 8, s),
        };
        // A 64-bit size may wrap (bad/image-cr3-box-size-loop.cr3 does).
        if size < header as u64 || (at as u64).checked_add(size).is_none_or(|end| end > to as u64) {
            break;
        }
        let end = at + size as usize;
        let kind = &b[at + 4..at + 8];
        let idx = push(out, at, end, Some(field), parents);
        if kind == b"stsd" {
            // Full box, entry count, then sample entries whose children (avcC, esds,
            // sinf…) follow a fixed visual or audio header: where a declared size is
            // most likely to be trusted for an allocation.
            isobmff_sample_entries(b, at + header + 8, end, &with(parents, idx), depth + 1, out);
        } else if ISO_CONTAINERS.iter().any(|c| kind == *c) {
            // `meta` is a full box: version and flags before its children (in MP4's
            // udta as in HEIF).
            let body = at + header + if kind == b"meta" { 4 } else { 0 };
            isobmff(b, body, end, &with(parents, idx), depth + 1, out);
        }
        at = end;
    }
}

fn isobmff_sample_entries(
    b: &[u8],
    from: usize,
    to: usize,
    parents: &[usize],
    depth: usize,
    out: &mut Vec<Span>,
) {
    let mut at = from;
    while at + 8 <= to && out.len() < 4096 {
        let Some(size) = Enc::U32Be.read(b, at).map(|s| s as usize) else { break };
        if size < 8 || at + size > to {
            break;
        }
        let idx = push(out, at, at + size, Some(Field { at, enc: Enc::U32Be }), parents);
        let header = match &b[at + 4..at + 8] {
            b"avc1" | b"avc3" | b"hvc1" | b"hev1" | b"encv" | b"mp4v" | b"av01" | b"vp09" => Some(8 + 78),
            b"mp4a" | b"enca" | b"Opus" | b"fLaC" | b"ac-3" | b"ec-3" => Some(8 + 28),
            _ => None,
        };
        if let Some(header) = header {
            isobmff(b, at + header, at + size, &with(parents, idx), depth + 1, out);
        }
        at += size;
    }
}

/// PDF: each `N G obj … endobj`, with no size field (xref offsets point at them).
fn pdf(b: &[u8], out: &mut Vec<Span>) {
    let mut at = 0;
    while let Some(rel) = find(&b[at..], b" obj") {
        let obj = at + rel;
        // Back up over "N G".
        let mut start = obj;
        let mut fields = 0;
        while start > 0 && fields < 2 {
            let mut s = start;
            while s > 0 && b[s - 1].is_ascii_digit() {
                s -= 1;
            }
            if s == start {
                break;
            }
            fields += 1;
            start = s;
            if start > 0 && b[start - 1] == b' ' && fields < 2 {
                start -= 1;
            }
        }
        let Some(end_rel) = find(&b[obj..], b"endobj") else { break };
        let end = obj + end_rel + 6;
        if fields == 2 {
            push(out, start, end, None, &[]);
        }
        at = end;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vint_round_trips() {
        let mut b = [0u8; 4];
        Enc::Vint(4).write(&mut b, 0, 0x12345);
        assert_eq!(b, [0x10, 0x01, 0x23, 0x45]);
        assert_eq!(Enc::Vint(4).read(&b, 0), Some(0x12345));
    }
}
