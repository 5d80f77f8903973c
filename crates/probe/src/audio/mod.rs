//! Audio: duration, sample rate, channels and codec from container headers, plus a
//! bounded walk over frame headers for MP3 and ADTS, whose headers need not count their
//! frames. Samples are never decoded; every read is sized by us, not by the file.
//!
//! Symphonia's readers are not used: in 0.5 its WAV reader allocates a LIST/INFO
//! sub-chunk's declared size (up to 4 GiB) and does not read RF64, and its FLAC reader
//! keeps every PICTURE block in memory, ignoring `MetadataOptions` limits.

pub(crate) mod ac3;
mod adts;
mod aiff;
mod amr;
pub(crate) mod asc;
mod caf;
mod flac;
mod mpeg;
mod ogg;
mod wav;

use std::io::{self, Read, Seek, SeekFrom};

use asset_core::{AssetMetadata, DataType, Limits};

use crate::{Format, ProbeError, Result, Source};

pub(crate) use ac3::ac3_params;
pub(crate) use adts::{
    MAX_BLOCK_BYTES as AAC_MAX_BLOCK_BYTES, SBR_FRAMES as AAC_SBR_FRAMES,
    block_carries_sbr as aac_block_carries_sbr, decoded_layout as aac_decoded_layout,
    units_carry_sbr as aac_units_carry_sbr,
};

/// What one extractor found about the file's (first) audio stream.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stream {
    pub mime: &'static str,
    /// ffprobe's codec name.
    pub codec: &'static str,
    pub sample_rate: u32,
    pub channels: Option<u32>,
    pub duration: Option<f64>,
}

pub(crate) fn probe(src: &Source, format: Format, limits: &Limits) -> Result<AssetMetadata> {
    let stream = match format {
        Format::Wav => wav::probe(src, limits)?,
        Format::Aiff => aiff::probe(src, limits)?,
        Format::Flac => flac::probe(&mut src.file()?, 0, src.size())?,
        Format::Ogg => match ogg::probe_theora(src)? {
            Some(video) => return Ok(video),
            None => ogg::probe(src)?,
        },
        Format::Mp3 => mpeg::probe(src, limits)?,
        Format::Adts => adts::probe(src, 0, src.size(), limits)?,
        Format::Ac3 => ac3::probe(src)?,
        Format::Caf => caf::probe(src, limits)?,
        Format::Amr => amr::probe(src)?,
        other => return Err(ProbeError::unsupported(format!("{other:?} is not an audio container"))),
    };
    let mut meta = AssetMetadata::new(DataType::Audio, stream.mime, src.size());
    meta.codec = Some(stream.codec.to_string());
    meta.sample_rate = Some(stream.sample_rate);
    meta.channels = stream.channels;
    meta.duration_seconds = stream.duration.filter(|d| d.is_finite() && *d >= 0.0);
    Ok(meta)
}

/// Reads into `buf` from `offset` as many bytes as the file has there: fewer only when
/// the file ends first.
pub(super) fn read_at<R: Read + Seek>(file: &mut R, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    file.seek(SeekFrom::Start(offset))?;
    crate::read_up_to(file, buf)
}

/// [`read_at`] that must fill `buf`; a short file is [`ProbeError::Truncated`].
pub(super) fn read_exact_at<R: Read + Seek>(
    file: &mut R,
    offset: u64,
    buf: &mut [u8],
    format: &'static str,
    what: &str,
) -> Result<()> {
    if read_at(file, offset, buf)? < buf.len() {
        return Err(ProbeError::truncated(format, format!("the file ends inside the {what}")));
    }
    Ok(())
}

/// One frame header as a walker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frame {
    /// Whole frame, header included.
    pub len: u64,
    /// Samples per channel the frame decodes to.
    pub samples: u64,
}

/// The outcome of a frame walk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Walk {
    pub frames: u64,
    /// Samples per channel, extrapolated to the whole range when `limits.max_items`
    /// stopped the walk early.
    pub samples: f64,
}

/// How far to look for the next frame when sync is lost (junk or a damaged frame).
const RESYNC_WINDOW: u64 = 64 * 1024;
/// A stream that loses sync this often is junk with stray sync words: stop there, so a
/// hostile file cannot make us read a full window per frame.
const MAX_RESYNCS: u32 = 1024;

/// Finds the first frame in `buf`: a header that `parse` accepts, followed by another
/// one where it ends (or by the end of `buf` when the stream is that short). One sync
/// word alone is too weak: it occurs in tag padding and in audio data.
pub(super) fn first_frame(
    buf: &[u8],
    header_len: usize,
    parse: impl Fn(&[u8]) -> Option<Frame>,
) -> Option<usize> {
    (0..buf.len().saturating_sub(header_len - 1)).find(|&i| {
        let Some(frame) = parse(&buf[i..]) else { return false };
        let Ok(len) = usize::try_from(frame.len) else { return false };
        match i.checked_add(len) {
            Some(next) if next + header_len <= buf.len() => parse(&buf[next..]).is_some(),
            Some(next) => next >= buf.len(),
            None => false,
        }
    })
}

/// Walks frame headers from `start` to `end`, summing samples, seeking over each frame's
/// body through a buffered reader. When a header does not parse, scans forward up to
/// [`RESYNC_WINDOW`] bytes for the next one (at most [`MAX_RESYNCS`] times). A frame cut
/// by `end` is not counted. At most `limits.max_items` frames are read; the rest is
/// extrapolated from the bytes covered.
pub(super) fn walk_frames(
    src: &Source,
    start: u64,
    end: u64,
    header_len: usize,
    limits: &Limits,
    parse: impl Fn(&[u8]) -> Option<Frame>,
) -> Result<Walk> {
    src.reading_to_end();
    let mut reader = io::BufReader::with_capacity(64 * 1024, src.file()?);
    reader.seek(SeekFrom::Start(start))?;
    let mut at = start; // the reader's position
    let mut pos = start; // the next frame header
    let mut frames = 0u64;
    let mut samples = 0u64;
    let mut resyncs = 0u32;
    let mut header = [0u8; 16];
    let header = &mut header[..header_len];
    while pos.saturating_add(header_len as u64) <= end {
        if frames >= limits.max_items {
            let covered = (pos - start).max(1) as f64;
            let scale = (end - start) as f64 / covered;
            return Ok(Walk { frames, samples: samples as f64 * scale });
        }
        let delta = i64::try_from(i128::from(pos) - i128::from(at))
            .map_err(|_| ProbeError::corrupt("audio", "a frame offset beyond 2^63"))?;
        reader.seek_relative(delta)?;
        at = pos;
        if crate::read_up_to(&mut reader, header)? < header_len {
            break;
        }
        at += header_len as u64;
        match parse(header) {
            Some(frame) if pos.saturating_add(frame.len) <= end => {
                frames += 1;
                samples = samples.saturating_add(frame.samples);
                pos += frame.len;
            }
            Some(_) => break,
            None if resyncs >= MAX_RESYNCS => break,
            None => match resync(&mut reader, pos + 1, end, header_len, &parse)? {
                Some(next) => {
                    resyncs += 1;
                    pos = next;
                    at = reader.stream_position()?;
                }
                None => break,
            },
        }
    }
    Ok(Walk { frames, samples: samples as f64 })
}

fn resync<R: Read + Seek>(
    reader: &mut R,
    from: u64,
    end: u64,
    header_len: usize,
    parse: &impl Fn(&[u8]) -> Option<Frame>,
) -> Result<Option<u64>> {
    let window = end.saturating_sub(from).min(RESYNC_WINDOW) as usize;
    if window < header_len {
        return Ok(None);
    }
    // Bounded by RESYNC_WINDOW, not by anything the file declares.
    let mut buf = vec![0u8; window];
    let n = read_at(reader, from, &mut buf)?;
    buf.truncate(n);
    Ok(first_frame(&buf, header_len, parse).map(|i| from + i as u64))
}

fn u16_be(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_be(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u16_le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets/audio").join(name)
    }

    /// Samples per channel the extractor found, recovered from its duration.
    fn samples(name: &str, limits: &Limits) -> f64 {
        let src = Source::open(&fixture(name)).unwrap();
        let format = crate::detect::detect(src.head()).unwrap();
        let m = probe(&src, format, limits).unwrap();
        m.duration_seconds.unwrap() * f64::from(m.sample_rate.unwrap())
    }

    // The golden test allows 50 ms; these pin the exact frame counts (ffprobe
    // -count_packets / mediainfo, see ORIGIN.md) so an off-by-one frame shows.
    #[test]
    fn frame_walks_count_every_frame_exactly() {
        let limits = Limits::default();
        assert!((samples("mp3-vbr-noxing.mp3", &limits) - 79.0 * 576.0).abs() < 1e-6);
        assert!((samples("mp3-cbr-noxing.mp3", &limits) - 60.0 * 576.0).abs() < 1e-6);
        assert!((samples("adts.aac", &limits) - 25.0 * 1024.0).abs() < 1e-6);
        assert!((samples("mp3-vbr-vbri.mp3", &limits) - 79.0 * 576.0).abs() < 1e-6);
        assert!((samples("mp3-cbr-info.mp3", &limits) - 59.0 * 1152.0).abs() < 1e-6);
        // Opus: (last granule 72312 − pre-skip 312) at 48 kHz.
        assert!((samples("opus-16k.opus", &limits) - 72_000.0).abs() < 1e-6);
    }

    #[test]
    fn walk_past_max_items_extrapolates_from_the_bytes_covered() {
        let limits = Limits { max_items: 10, ..Limits::default() };
        let got = samples("mp3-cbr-noxing.mp3", &limits);
        let exact = 60.0 * 576.0;
        assert!((got - exact).abs() / exact < 0.05, "{got} vs {exact}");
    }

    fn write_temp(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn wav_declaring_a_4_gib_list_chunk_is_truncated_not_allocated() {
        let mut wav = b"RIFF\xF0\xFF\xFF\xFFWAVE".to_vec();
        wav.extend_from_slice(b"LIST\x00\xFF\xFF\xFFINFO");
        let (_dir, path) = write_temp(&wav);
        let err = crate::probe_in_place(&path, &Limits::default()).unwrap_err();
        assert_eq!(err.code(), asset_core::ErrorCode::Truncated, "{err}");
    }

    #[test]
    fn rf64_takes_the_data_size_from_ds64() {
        let mut wav = b"RF64\xFF\xFF\xFF\xFFWAVE".to_vec();
        wav.extend_from_slice(b"ds64\x1C\0\0\0");
        wav.extend_from_slice(&(36u64 + 8000).to_le_bytes()); // RIFF size
        wav.extend_from_slice(&8000u64.to_le_bytes()); // data size
        wav.extend_from_slice(&4000u64.to_le_bytes()); // sample count
        wav.extend_from_slice(&0u32.to_le_bytes()); // table length
        wav.extend_from_slice(b"fmt \x10\0\0\0\x01\0\x01\0\x40\x1F\0\0\x80\x3E\0\0\x02\0\x10\0");
        wav.extend_from_slice(b"data\xFF\xFF\xFF\xFF");
        wav.resize(wav.len() + 8000, 0);
        let (_dir, path) = write_temp(&wav);
        let m = crate::probe_in_place(&path, &Limits::default()).unwrap();
        assert_eq!((m.codec.as_deref(), m.sample_rate, m.channels), (Some("pcm_s16le"), Some(8000), Some(1)));
        assert_eq!(m.duration_seconds, Some(0.5));
    }

    #[test]
    fn mp3_of_junk_after_id3_is_corrupt() {
        let mut mp3 = b"ID3\x04\0\0\0\0\0\x0A".to_vec();
        mp3.extend_from_slice(&[0u8; 10]);
        mp3.extend_from_slice(&[0x55; 4000]);
        let (_dir, path) = write_temp(&mp3);
        let err = crate::probe_in_place(&path, &Limits::default()).unwrap_err();
        assert_eq!(err.code(), asset_core::ErrorCode::CorruptFile, "{err}");
    }

    /// A WAV whose RIFF size claims more than the file (as a streamed one does), with
    /// `junk` empty chunks before `fmt ` and `data`.
    fn wav_after_junk(junk: usize) -> Vec<u8> {
        let mut wav = b"RIFF\xF0\xFF\xFF\xFFWAVE".to_vec();
        for _ in 0..junk {
            wav.extend_from_slice(b"JUNK\0\0\0\0");
        }
        wav.extend_from_slice(b"fmt \x10\0\0\0\x01\0\x01\0\x40\x1F\0\0\x80\x3E\0\0\x02\0\x10\0");
        wav.extend_from_slice(b"data\x40\x1F\0\0");
        wav.resize(wav.len() + 8000, 0);
        wav
    }

    /// Issue 9: a walk stopped by `max_items` fell out of the loop as if the file had
    /// ended, and a RIFF size past the end made that `truncated`.
    #[test]
    fn wav_that_hits_the_item_limit_is_too_large_not_truncated() {
        let (_dir, path) = write_temp(&wav_after_junk(30));
        let m = crate::probe_in_place(&path, &Limits::default()).unwrap();
        assert_eq!((m.sample_rate, m.duration_seconds), (Some(8000), Some(0.5)));
        let limits = Limits { max_items: 10, ..Limits::default() };
        let err = crate::probe_in_place(&path, &limits).unwrap_err();
        assert_eq!(err.code(), asset_core::ErrorCode::TooLarge, "{err}");
        assert!(err.to_string().contains("exceeds the limit of 10"), "{err}");
    }

    #[test]
    fn aiff_that_hits_the_item_limit_is_too_large() {
        let mut aiff = b"FORM\0\0\x01\0AIFF".to_vec();
        for _ in 0..30 {
            aiff.extend_from_slice(b"APPL\0\0\0\0");
        }
        aiff.extend_from_slice(b"COMM\0\0\0\x12\0\x01\0\0\x1F\x40\0\x10");
        aiff.extend_from_slice(&[0x40, 0x0B, 0xFA, 0, 0, 0, 0, 0, 0, 0]);
        let (_dir, path) = write_temp(&aiff);
        let m = crate::probe_in_place(&path, &Limits::default()).unwrap();
        assert_eq!((m.sample_rate, m.duration_seconds), (Some(8000), Some(1.0)));
        let limits = Limits { max_items: 10, ..Limits::default() };
        let err = crate::probe_in_place(&path, &limits).unwrap_err();
        assert_eq!(err.code(), asset_core::ErrorCode::TooLarge, "{err}");
    }
}
