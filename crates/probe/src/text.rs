//! Text: the encoding (a BOM, else UTF-8 if the whole file is valid UTF-8, else
//! chardetng's guess), characters and lines counted by streaming the whole file through
//! an encoding_rs decoder in fixed-size chunks, and a MIME type sniffed from content.

use std::io::{BufReader, Read};

use asset_core::{AssetMetadata, DataType, Limits};
use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{CoderResult, Decoder, Encoding, UTF_8};

use crate::{Format, ProbeError, Result, Source};

/// Bytes read per step; memory stays at a few of these whatever the file's size.
const CHUNK: usize = 64 * 1024;
/// How much chardetng sees: the start of the file (and, if that is all ASCII, the part
/// where the first non-UTF-8 byte was found).
const DETECT_BYTES: usize = 64 * 1024;
/// Lines of the leading bytes that the CSV and Markdown sniffers look at.
const SNIFF_LINES: usize = 20;

pub(crate) fn probe(src: &Source, format: Format, _limits: &Limits) -> Result<AssetMetadata> {
    if format != Format::Text {
        return Err(ProbeError::unsupported(format!("{format:?} is not text")));
    }
    let bom = Encoding::for_bom(src.head());
    let (encoding, counts) = match bom {
        Some((encoding, _)) => (encoding, count(src, encoding.new_decoder_with_bom_removal(), false)?),
        None => match count(src, UTF_8.new_decoder_without_bom_handling(), true)? {
            Counted::All(counts) => (UTF_8, Counted::All(counts)),
            Counted::InvalidAt(offset) => {
                let guess = guess_legacy(src, offset)?;
                (guess, count(src, guess.new_decoder_without_bom_handling(), false)?)
            }
        },
    };
    let Counted::All(counts) = counts else {
        return Err(ProbeError::corrupt("text", "decoding stopped early"));
    };
    let mime = sniff_mime(src, encoding, bom.map_or(0, |(_, len)| len))?;
    let mut meta = AssetMetadata::new(DataType::Text, mime, src.size());
    meta.char_count = Some(counts.chars);
    meta.line_count = Some(counts.lines());
    meta.encoding = Some(encoding.name().to_ascii_lowercase());
    Ok(meta)
}

/// Characters and line terminators seen so far. `\n`, `\r\n` and a lone `\r` each end
/// one line; a last line without a terminator counts too.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counts {
    chars: u64,
    terminators: u64,
    prev_cr: bool,
    /// The last character was not a line terminator.
    open_line: bool,
}

impl Counts {
    fn feed(&mut self, s: &str) {
        for c in s.chars() {
            self.chars += 1;
            match c {
                '\n' if self.prev_cr => {}
                '\n' | '\r' => self.terminators += 1,
                _ => {}
            }
            self.prev_cr = c == '\r';
            self.open_line = c != '\n' && c != '\r';
        }
    }

    fn lines(&self) -> u64 {
        self.terminators + u64::from(self.open_line)
    }
}

#[derive(Debug)]
enum Counted {
    All(Counts),
    /// Strict UTF-8 met a malformed sequence before the end of the file; the offset is
    /// that of the chunk it was in.
    InvalidAt(u64),
}

/// Streams the file through `decoder`. With `strict`, a malformed sequence stops the
/// count — except an incomplete sequence at the very end (a file cut inside a
/// character), which decodes to one U+FFFD as in any other encoding.
fn count(src: &Source, mut decoder: Decoder, strict: bool) -> Result<Counted> {
    let mut file = src.file()?;
    let mut input = vec![0u8; CHUNK];
    let mut output = vec![0u8; CHUNK];
    // Zeros are UTF-8, and the decoder writes only whole characters: checked once here,
    // not per decode call (that check was a sixth of the time spent on text).
    let out = std::str::from_utf8_mut(&mut output)
        .map_err(|_| ProbeError::corrupt("text", "decode buffer is not UTF-8"))?;
    let mut counts = Counts::default();
    let mut offset = 0u64;
    loop {
        let n = crate::read_up_to(&mut file, &mut input)?;
        let last = n == 0;
        let mut rest = &input[..n];
        loop {
            let (result, read, written, replaced) = decoder.decode_to_str(rest, out, last);
            if strict && replaced && !last {
                return Ok(Counted::InvalidAt(offset));
            }
            counts.feed(&out[..written]);
            rest = &rest[read..];
            if result == CoderResult::InputEmpty {
                break;
            }
        }
        if last {
            return Ok(Counted::All(counts));
        }
        offset += n as u64;
    }
}

/// chardetng's guess for a file that is not UTF-8. It sees the first [`DETECT_BYTES`];
/// when the first invalid byte lies beyond them (a long ASCII prefix), it also sees the
/// chunk holding that byte, since ASCII alone tells it nothing.
fn guess_legacy(src: &Source, invalid_chunk: u64) -> Result<&'static Encoding> {
    let mut file = src.file()?;
    let mut buf = vec![0u8; DETECT_BYTES];
    let n = crate::read_up_to(&mut file, &mut buf)?;
    // Invalid UTF-8 means 8-bit bytes, which ISO-2022-JP (7-bit) never has.
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    detector.feed(&buf[..n], false);
    if invalid_chunk >= DETECT_BYTES as u64 {
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(invalid_chunk))?;
        let n = crate::read_up_to(&mut file, &mut buf)?;
        detector.feed(&buf[..n], false);
    }
    detector.feed(&[], true);
    Ok(detector.guess(None, Utf8Detection::Deny))
}

/// text/html, application/json, text/markdown, text/csv or text/plain, from the content;
/// the `.md` extension is a hint used only when the content is plain text.
fn sniff_mime(src: &Source, encoding: &'static Encoding, bom_len: usize) -> Result<&'static str> {
    let head = &src.head()[bom_len.min(src.head().len())..];
    let (text, _) = encoding.decode_without_bom_handling(head);
    let complete = src.head().len() as u64 == src.size();
    let trimmed = text.trim_start();

    if encoding == UTF_8 && (trimmed.starts_with('{') || trimmed.starts_with('[')) && is_json(src, bom_len)? {
        return Ok("application/json");
    }
    if is_html(trimmed) {
        return Ok("text/html");
    }
    // The last line of a cut head is partial: leave it out.
    let mut lines: Vec<&str> = text.lines().take(SNIFF_LINES + 1).collect();
    if !complete || lines.len() > SNIFF_LINES {
        lines.pop();
    }
    if has_markdown_cues(&lines) {
        return Ok("text/markdown");
    }
    if is_csv(&lines) {
        return Ok("text/csv");
    }
    let ext = src.path().extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if matches!(ext.as_deref(), Some("md" | "markdown")) {
        return Ok("text/markdown");
    }
    Ok("text/plain")
}

/// The whole file is one JSON object or array (a bare scalar is left as plain text).
/// serde_json streams it with bounded memory and its own nesting limit.
fn is_json(src: &Source, bom_len: usize) -> Result<bool> {
    let mut reader = BufReader::with_capacity(CHUNK, src.file()?);
    let mut bom = [0u8; 3];
    reader.read_exact(&mut bom[..bom_len.min(3)])?;
    Ok(serde_json::from_reader::<_, serde::de::IgnoredAny>(reader).is_ok())
}

fn is_html(trimmed: &str) -> bool {
    let start: String = trimmed.chars().take(1024).collect::<String>().to_ascii_lowercase();
    if start.starts_with("<!doctype html") || start.starts_with("<html") {
        return true;
    }
    // A comment or an XML declaration may come first.
    (start.starts_with("<!--") || start.starts_with("<?xml")) && start.contains("<html")
}

/// A heading or a code fence at the start of a line, or an inline link `[text](target)`.
fn has_markdown_cues(lines: &[&str]) -> bool {
    lines.iter().any(|line| {
        let hashes = line.bytes().take_while(|&b| b == b'#').count();
        let heading = (1..=6).contains(&hashes) && line[hashes..].starts_with(' ');
        heading || line.starts_with("```") || line.starts_with("~~~") || has_link(line)
    })
}

fn has_link(line: &str) -> bool {
    line.match_indices("](").any(|(i, _)| {
        let label = line[..i].rfind('[').is_some_and(|open| !line[open + 1..i].is_empty());
        let target = &line[i + 2..];
        label && target.find(')').is_some_and(|close| close > 0 && !target[..close].contains(' '))
    })
}

/// At least two lines, and one of `,` `;` tab occurs the same non-zero number of times
/// (outside double quotes) on every line.
fn is_csv(lines: &[&str]) -> bool {
    if lines.len() < 2 {
        return false;
    }
    [',', ';', '\t'].iter().any(|&delim| {
        let first = fields(lines[0], delim);
        first > 0 && lines.iter().all(|line| fields(line, delim) == first)
    })
}

fn fields(line: &str, delim: char) -> usize {
    let mut quoted = false;
    let mut n = 0;
    for c in line.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if c == delim && !quoted {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(parts: &[&str]) -> (u64, u64) {
        let mut c = Counts::default();
        for p in parts {
            c.feed(p);
        }
        (c.chars, c.lines())
    }

    #[test]
    fn line_terminators_count_once_even_across_chunks() {
        assert_eq!(counts(&[]), (0, 0));
        assert_eq!(counts(&["a\r\nb\r\n"]), (6, 2));
        assert_eq!(counts(&["a\r", "\nb"]), (4, 2));
        assert_eq!(counts(&["a\r\rb"]), (4, 3));
        assert_eq!(counts(&["\n\n"]), (2, 2));
        assert_eq!(counts(&["x"]), (1, 1));
        assert_eq!(counts(&["é😀\n"]), (3, 1));
    }

    #[test]
    fn sniffers() {
        assert!(is_csv(&["a,b", "1,\"x,y\""]));
        assert!(!is_csv(&["a,b", "1,2,3"]));
        assert!(!is_csv(&["only, one line"]));
        assert!(has_markdown_cues(&["## Title"]));
        assert!(has_markdown_cues(&["see [docs](https://x.org)"]));
        assert!(!has_markdown_cues(&["#hashtag", "a [b] (c)"]));
        assert!(is_html("<!DOCTYPE html><html>"));
        assert!(is_html("<!-- c -->\n<HTML>"));
        assert!(!is_html("<p>fragment</p>"));
    }
}

#[cfg(test)]
mod streaming_tests {
    use super::*;

    fn probe_bytes(name: &str, bytes: &[u8]) -> AssetMetadata {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        crate::probe_in_place(&path, &Limits::default()).unwrap()
    }

    #[test]
    fn crlf_and_multibyte_characters_split_across_chunks() {
        // "\r" ends the first 64 KiB chunk, "\n" starts the next; then "é" is split
        // across the second boundary.
        let mut text = vec![b'a'; CHUNK - 1];
        text.extend_from_slice(b"\r\n");
        text.resize(2 * CHUNK - 1, b'b');
        text.extend_from_slice("é\n".as_bytes());
        let m = probe_bytes("big.txt", &text);
        assert_eq!(m.encoding.as_deref(), Some("utf-8"));
        assert_eq!(m.char_count, Some(2 * CHUNK as u64 + 1));
        assert_eq!(m.line_count, Some(2));
    }

    #[test]
    fn legacy_bytes_after_a_long_ascii_prefix_are_still_detected() {
        let mut text = "plain ascii line\n".repeat(5000).into_bytes();
        let (french, _, _) = encoding_rs::WINDOWS_1252.encode(
            "« Où est la bibliothèque ? » demanda l’élève, déçu qu’elle fût fermée. Le prix : 12 €.\n",
        );
        for _ in 0..20 {
            text.extend_from_slice(&french);
        }
        let m = probe_bytes("late.txt", &text);
        assert_eq!(m.encoding.as_deref(), Some("windows-1252"));
        assert_eq!(m.line_count, Some(5020));
    }

    #[test]
    fn a_json_scalar_or_broken_json_is_plain_text() {
        assert_eq!(probe_bytes("a.json", b"{\"a\": [1, 2}").mime, "text/plain");
        assert_eq!(probe_bytes("b.json", b"[1, 2] trailing").mime, "text/plain");
        assert_eq!(probe_bytes("c.json", b"[1, {\"b\": null}]\n").mime, "application/json");
    }
}
