//! Content detection: a registry of container signatures (magic bytes), checked against
//! the first bytes of a file. The file name is never consulted, so a file whose
//! extension lies is still probed as what it is.

use asset_core::DataType;

/// How many leading bytes detection needs; the probe reads this much up front.
pub const SNIFF_LEN: usize = 8192;

/// Every container the probe recognises. One extractor module handles each family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    WebP,
    Bmp,
    Tiff,
    Avif,
    Heic,
    Svg,
    /// ISO base media (MP4, MOV, M4A, 3GP); audio-only files are told apart by the
    /// video module from their tracks, the `ftyp` brand is only a hint.
    IsoBmff,
    QuickTime,
    Matroska,
    Avi,
    Wav,
    Aiff,
    Flac,
    Ogg,
    Mp3,
    Adts,
    Dicom,
    Pdf,
    Text,
}

impl Format {
    /// The data type a format belongs to before its extractor looks inside (an MP4 with
    /// only an audio track is reported as audio by the video module).
    pub fn data_type(self) -> DataType {
        use Format::*;
        match self {
            Jpeg | Png | Gif | WebP | Bmp | Tiff | Avif | Heic | Svg => DataType::Image,
            IsoBmff | QuickTime | Matroska | Avi => DataType::Video,
            Wav | Aiff | Flac | Ogg | Mp3 | Adts => DataType::Audio,
            Dicom => DataType::Dicom,
            Pdf => DataType::Pdf,
            Text => DataType::Text,
        }
    }

    /// The MIME type reported for the format; extractors may refine it (WebM, M4A).
    pub fn mime(self) -> &'static str {
        use Format::*;
        match self {
            Jpeg => "image/jpeg",
            Png => "image/png",
            Gif => "image/gif",
            WebP => "image/webp",
            Bmp => "image/bmp",
            Tiff => "image/tiff",
            Avif => "image/avif",
            Heic => "image/heic",
            Svg => "image/svg+xml",
            IsoBmff => "video/mp4",
            QuickTime => "video/quicktime",
            Matroska => "video/x-matroska",
            Avi => "video/x-msvideo",
            Wav => "audio/wav",
            Aiff => "audio/aiff",
            Flac => "audio/flac",
            Ogg => "audio/ogg",
            Mp3 => "audio/mpeg",
            Adts => "audio/aac",
            Dicom => "application/dicom",
            Pdf => "application/pdf",
            Text => "text/plain",
        }
    }
}

/// Identifies the container from the leading bytes of a file (up to [`SNIFF_LEN`]).
/// `None` means no signature matched and the bytes do not look like text either.
pub fn detect(head: &[u8]) -> Option<Format> {
    binary_signature(head).or_else(|| looks_like_text(head).then(|| text_flavour(head)))
}

fn binary_signature(h: &[u8]) -> Option<Format> {
    let at = |off: usize, sig: &[u8]| h.len() >= off + sig.len() && &h[off..off + sig.len()] == sig;

    if at(0, b"\xFF\xD8\xFF") {
        return Some(Format::Jpeg);
    }
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return Some(Format::Png);
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Some(Format::Gif);
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return Some(Format::WebP);
    }
    if at(0, b"RIFF") && at(8, b"WAVE") || at(0, b"RF64") && at(8, b"WAVE") {
        return Some(Format::Wav);
    }
    if at(0, b"RIFF") && (at(8, b"AVI ") || at(8, b"AVIX")) {
        return Some(Format::Avi);
    }
    if at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        return Some(Format::Aiff);
    }
    if at(0, b"BM") && h.len() >= 26 && bmp_header_plausible(h) {
        return Some(Format::Bmp);
    }
    if at(0, b"II*\0") || at(0, b"MM\0*") || at(0, b"II+\0") || at(0, b"MM\0+") {
        return Some(Format::Tiff);
    }
    if at(0, b"\x1A\x45\xDF\xA3") {
        return Some(Format::Matroska);
    }
    if at(0, b"fLaC") {
        return Some(Format::Flac);
    }
    if at(0, b"OggS") {
        return Some(Format::Ogg);
    }
    // A preamble-less Part 10 file may keep the magic: "DICM" then group 0002.
    if at(128, b"DICM") || at(0, b"DICM\x02\0") || dicom_without_preamble(h) {
        return Some(Format::Dicom);
    }
    if let Some(f) = iso_bmff(h) {
        return Some(f);
    }
    // A PDF header may follow up to 1 KiB of junk, as readers accept.
    if h[..h.len().min(1024)].windows(5).any(|w| w == b"%PDF-") {
        return Some(Format::Pdf);
    }
    if at(0, b"ID3") {
        return Some(Format::Mp3);
    }
    if h.len() >= 4 && h[0] == 0xFF && h[1] & 0xF6 == 0xF0 {
        return Some(Format::Adts);
    }
    if mpeg_audio_frame(h) {
        return Some(Format::Mp3);
    }
    if is_svg(h) {
        return Some(Format::Svg);
    }
    None
}

fn bmp_header_plausible(h: &[u8]) -> bool {
    // DIB header size is one of the known BITMAPINFOHEADER variants.
    let dib = u32::from_le_bytes([h[14], h[15], h[16], h[17]]);
    matches!(dib, 12 | 40 | 52 | 56 | 64 | 108 | 124)
}

/// ISO BMFF: an `ftyp` box first, or a QuickTime file that starts straight with
/// `moov`/`mdat`/`wide`/`free`/`skip` (old MOVs have no `ftyp`).
fn iso_bmff(h: &[u8]) -> Option<Format> {
    if h.len() < 12 {
        return None;
    }
    let box_type = &h[4..8];
    if box_type == b"ftyp" {
        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let end = size.clamp(8, h.len());
        let major = &h[8..12];
        let compat: Vec<&[u8]> = if end > 16 { h[16..end].chunks_exact(4).collect() } else { vec![] };
        let has = |b: &[u8]| major == b || compat.contains(&b);
        if has(b"avif") || has(b"avis") {
            return Some(Format::Avif);
        }
        if ["heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1"]
            .iter()
            .any(|b| major == b.as_bytes())
        {
            return Some(Format::Heic);
        }
        if major == b"qt  " {
            return Some(Format::QuickTime);
        }
        return Some(Format::IsoBmff);
    }
    if [&b"moov"[..], b"mdat", b"wide", b"free", b"skip", b"pnot"].contains(&box_type) {
        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        // A real box has a size of 0 (to end), 1 (64-bit size follows) or at least 8.
        if size == 0 || size == 1 || size >= 8 {
            return Some(Format::QuickTime);
        }
    }
    None
}

/// Part 10 files without the 128-byte preamble start with a group 0002 (or, for bare
/// datasets, 0008) element, in little endian, with an explicit VR or a plausible length.
fn dicom_without_preamble(h: &[u8]) -> bool {
    if h.len() < 8 {
        return false;
    }
    let group = u16::from_le_bytes([h[0], h[1]]);
    let element = u16::from_le_bytes([h[2], h[3]]);
    if group != 0x0002 && group != 0x0008 {
        return false;
    }
    let explicit_vr = h[4].is_ascii_uppercase() && h[5].is_ascii_uppercase();
    if explicit_vr {
        return element <= 0x0100 || group == 0x0008;
    }
    // Implicit VR: a 32-bit length that fits in the sniffed bytes.
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    group == 0x0008 && element <= 0x0020 && (len as usize) < 256
}

/// An MPEG audio frame header at offset 0 and a second one where the first frame ends:
/// one sync word alone is too weak a signature (it occurs in text and images).
fn mpeg_audio_frame(h: &[u8]) -> bool {
    fn frame_len(b: &[u8]) -> Option<usize> {
        if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
            return None;
        }
        let version = (b[1] >> 3) & 3; // 0: 2.5, 2: 2, 3: 1
        let layer = (b[1] >> 1) & 3; // 1: III, 2: II, 3: I
        let bitrate_idx = (b[2] >> 4) as usize;
        let rate_idx = ((b[2] >> 2) & 3) as usize;
        let padding = ((b[2] >> 1) & 1) as usize;
        if version == 1 || layer == 0 || bitrate_idx == 0 || bitrate_idx == 15 || rate_idx == 3 {
            return None;
        }
        const V1_L3: [usize; 15] = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
        const V1_L2: [usize; 15] = [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384];
        const V1_L1: [usize; 15] = [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448];
        const V2_L1: [usize; 15] = [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256];
        const V2_L23: [usize; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
        let kbps = match (version == 3, layer) {
            (true, 1) => V1_L3[bitrate_idx],
            (true, 2) => V1_L2[bitrate_idx],
            (true, _) => V1_L1[bitrate_idx],
            (false, 3) => V2_L1[bitrate_idx],
            (false, _) => V2_L23[bitrate_idx],
        };
        let base_rate = [44_100, 48_000, 32_000][rate_idx];
        let rate = match version {
            3 => base_rate,
            2 => base_rate / 2,
            _ => base_rate / 4,
        };
        let len = match layer {
            3 => (12 * kbps * 1000 / rate + padding) * 4,
            1 if version != 3 => 72 * kbps * 1000 / rate + padding,
            _ => 144 * kbps * 1000 / rate + padding,
        };
        (len >= 4).then_some(len)
    }
    match frame_len(h) {
        Some(len) if h.len() >= len + 4 => frame_len(&h[len..]).is_some(),
        // The file is a single frame, or the sniff window ends first: accept one frame.
        Some(len) => h.len() < len + 4,
        None => false,
    }
}

fn is_svg(h: &[u8]) -> bool {
    let text = match std::str::from_utf8(strip_utf8_bom(h)) {
        Ok(t) => t,
        // The window may cut a multi-byte character in two.
        Err(e) => std::str::from_utf8(&strip_utf8_bom(h)[..e.valid_up_to()]).unwrap_or(""),
    };
    let trimmed = text.trim_start();
    if !trimmed.starts_with('<') {
        return false;
    }
    // Skip the prolog (XML declaration, comments, doctype) and look for the root element.
    let mut rest = trimmed;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("<?") {
            match r.find("?>") {
                Some(i) => rest = &r[i + 2..],
                None => return false,
            }
        } else if let Some(r) = rest.strip_prefix("<!--") {
            match r.find("-->") {
                Some(i) => rest = &r[i + 3..],
                None => return false,
            }
        } else if let Some(r) = rest.strip_prefix("<!") {
            match r.find('>') {
                Some(i) => rest = &r[i + 1..],
                None => return false,
            }
        } else {
            return rest.starts_with("<svg") || rest.starts_with("<svg:svg");
        }
    }
}

fn strip_utf8_bom(h: &[u8]) -> &[u8] {
    h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h)
}

/// Text has a UTF BOM, or no NUL bytes and few control characters. A UTF-16 file
/// without a BOM is not recognised: its NULs make it indistinguishable from binary.
fn looks_like_text(h: &[u8]) -> bool {
    if h.is_empty()
        || h.starts_with(b"\xEF\xBB\xBF")
        || h.starts_with(b"\xFF\xFE")
        || h.starts_with(b"\xFE\xFF")
    {
        return true;
    }
    if h.contains(&0) {
        return false;
    }
    let control =
        h.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C | 0x1B)).count();
    control * 100 <= h.len()
}

fn text_flavour(_h: &[u8]) -> Format {
    Format::Text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(detect(b"\xFF\xD8\xFF\xE0\0\x10JFIF"), Some(Format::Jpeg));
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(Format::Png));
        assert_eq!(detect(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(detect(b"RIFF\0\0\0\0WAVEfmt "), Some(Format::Wav));
        assert_eq!(detect(b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41"), Some(Format::IsoBmff));
        assert_eq!(detect(b"\0\0\0\x1cftypM4A \0\0\x02\0M4A isommp42"), Some(Format::IsoBmff));
        assert_eq!(detect(b"\0\0\0\x14ftypqt  \0\0\x02\0qt  "), Some(Format::QuickTime));
        assert_eq!(detect(b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf"), Some(Format::Avif));
        assert_eq!(detect(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"), Some(Format::Heic));
        assert_eq!(detect(b"%PDF-1.7\n"), Some(Format::Pdf));
        assert_eq!(detect(b"<?xml version=\"1.0\"?>\n<!-- x -->\n<svg width=\"1\">"), Some(Format::Svg));
        assert_eq!(detect(b"<html><body>hi</body></html>"), Some(Format::Text));
        assert_eq!(detect(b""), Some(Format::Text));
        assert_eq!(detect(b"\0\x01\x02\x03\x04binary"), None);
    }

    #[test]
    fn dicom_with_and_without_preamble() {
        let mut with = vec![0u8; 128];
        with.extend_from_slice(b"DICM\x02\0\0\0UL\x04\0");
        assert_eq!(detect(&with), Some(Format::Dicom));
        assert_eq!(detect(b"\x02\0\0\0UL\x04\0\xc4\0\0\0"), Some(Format::Dicom));
        assert_eq!(detect(b"DICM\x02\0\0\0UL\x04\0\xc4\0\0\0"), Some(Format::Dicom));
    }

    #[test]
    fn mp3_needs_two_consecutive_frames() {
        // MPEG-1 layer III, 128 kbps, 44.1 kHz: 417-byte frames.
        let mut two = vec![0u8; 417 * 2 + 4];
        two[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
        two[417..421].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x00]);
        assert_eq!(detect(&two), Some(Format::Mp3));
        let mut one = two.clone();
        one[417] = b'x';
        assert_eq!(detect(&one), None);
    }
}
