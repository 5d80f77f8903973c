//! Video containers (ISO BMFF/QuickTime, Matroska/WebM, AVI): display size, duration,
//! frame count, frame rate and codec of the main video stream, read from headers only.
//! A container with no video track but an audio track is reported as audio.

mod asf;
mod avi;
mod flv;
mod mkv;
pub(crate) mod mp4;
mod mpegps;
mod mpegts;
mod nal;

use std::io::{self, Read, Seek, SeekFrom};

use asset_core::{AssetMetadata, DataType, Limits};

use crate::ranged::WalkReader;
use crate::{Format, ProbeError, Result, Source};

/// The ASF Header Object's GUID, the magic detection looks for.
pub(crate) const ASF_HEADER_GUID: [u8; 16] = asf::HEADER;

/// Whether the head holds transport stream packets; for detection.
pub(crate) fn is_transport_stream(head: &[u8]) -> bool {
    mpegts::sniff(head).is_some()
}

pub(crate) fn probe(src: &Source, format: Format, limits: &Limits) -> Result<AssetMetadata> {
    let streams = match format {
        Format::IsoBmff | Format::QuickTime => mp4::probe(src, limits)?,
        Format::Matroska => mkv::probe(src, limits)?,
        Format::Avi => avi::probe(src, limits)?,
        Format::MpegTs => mpegts::probe(src, limits)?,
        Format::Asf => asf::probe(src, limits)?,
        Format::Flv => flv::probe(src, limits)?,
        Format::MpegPs => mpegps::probe(src, limits)?,
        other => return Err(ProbeError::unsupported(format!("{other:?} is not a video container"))),
    };
    let mut meta = streams.into_metadata(format, src.size())?;
    if format == Format::IsoBmff
        && let Some(mime) = three_gpp_mime(src.head(), meta.data_type)
    {
        meta.mime = mime.into();
    }
    Ok(meta)
}

/// 3GPP and 3GPP2 files are ISO BMFF that their major brand names (3GPP TS 26.244,
/// 3GPP2 C.S0050): `3gp4`…`3gp9`, `3ge*`, `3gg*`, `3gr*`, `3gs*` and `3g2a`…`3g2c`. The
/// container is read as MP4 either way; only the MIME type differs.
fn three_gpp_mime(head: &[u8], data_type: DataType) -> Option<&'static str> {
    if head.get(4..8) != Some(b"ftyp") {
        return None;
    }
    let video = data_type == DataType::Video;
    match head.get(8..11)? {
        b"3gp" | b"3ge" | b"3gg" | b"3gr" | b"3gs" => Some(if video { "video/3gpp" } else { "audio/3gpp" }),
        b"3g2" => Some(if video { "video/3gpp2" } else { "audio/3gpp2" }),
        _ => None,
    }
}

/// The main video stream of a container, as the container's headers describe it.
#[derive(Debug, Clone, Default, PartialEq)]
struct VideoStream {
    /// Display size: already swapped for a 90/270° rotation.
    width: u32,
    height: u32,
    frame_count: Option<u64>,
    frame_rate: Option<f64>,
    codec: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct AudioStream {
    sample_rate: Option<u32>,
    channels: Option<u32>,
    codec: String,
}

/// What a container module found: its first video and first audio stream, the overall
/// duration (ffprobe's "format duration": the longest stream) and, for Matroska, the
/// DocType that picks the WebM MIME types.
#[derive(Debug, Clone, Default, PartialEq)]
struct Streams {
    video: Option<VideoStream>,
    audio: Option<AudioStream>,
    duration_seconds: Option<f64>,
    webm: bool,
}

impl Streams {
    fn into_metadata(self, format: Format, size: u64) -> Result<AssetMetadata> {
        let duration = self.duration_seconds.filter(|d| d.is_finite() && *d >= 0.0);
        if let Some(v) = self.video {
            let mime = match format {
                Format::Matroska if self.webm => "video/webm",
                other => other.mime(),
            };
            let mut m = AssetMetadata::new(DataType::Video, mime, size);
            m.width = Some(v.width);
            m.height = Some(v.height);
            m.duration_seconds = duration;
            m.frame_count = v.frame_count;
            m.frame_rate = v.frame_rate.filter(|r| r.is_finite() && *r > 0.0);
            m.codec = Some(v.codec);
            return Ok(m);
        }
        if let Some(a) = self.audio {
            let mime = match format {
                Format::IsoBmff | Format::QuickTime => "audio/mp4",
                Format::Asf => "audio/x-ms-wma",
                Format::Flv => "video/x-flv",
                Format::MpegPs => "video/mpeg",
                // MPEG-TS has one MIME type, whatever the streams.
                Format::MpegTs => "video/mp2t",
                Format::Matroska if self.webm => "audio/webm",
                Format::Matroska => "audio/x-matroska",
                _ => "audio/x-msvideo",
            };
            let mut m = AssetMetadata::new(DataType::Audio, mime, size);
            m.duration_seconds = duration;
            m.sample_rate = a.sample_rate;
            m.channels = a.channels;
            m.codec = Some(a.codec);
            return Ok(m);
        }
        Err(ProbeError::unsupported(format!("{format:?} file with neither a video nor an audio track")))
    }
}

/// Rounds a duration × rate product to a whole number of frames, refusing nonsense.
fn frames_from(duration_seconds: f64, fps: f64) -> Option<u64> {
    let n = (duration_seconds * fps).round();
    (n.is_finite() && n >= 0.0 && n < u64::MAX as f64).then_some(n as u64)
}

fn io_or_truncated(e: io::Error, format: &'static str, what: &str) -> ProbeError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ProbeError::truncated(format, format!("the file ends inside {what}"))
    } else {
        ProbeError::Io(e)
    }
}

/// Reads `len` bytes at `offset` into a fresh buffer, after checking `len` against the
/// memory limit. The buffer is sized once, for the bytes the source holds from
/// `offset` at most, so a size that the file declares but does not hold never becomes
/// an allocation, and one that it holds is not allocated twice over by growth.
fn read_block<R: Read + Seek>(
    r: &mut WalkReader<R>,
    offset: u64,
    len: u64,
    limits: &Limits,
    format: &'static str,
    what: &str,
) -> Result<Vec<u8>> {
    if len > limits.max_memory_bytes {
        return Err(ProbeError::TooLarge {
            what: format!("{format} {what} of {len} bytes"),
            limit: limits.max_memory_bytes,
        });
    }
    r.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(usize::try_from(len.min(r.remaining())).unwrap_or(0));
    r.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(ProbeError::truncated(format, format!("the file ends inside {what}")));
    }
    Ok(buf)
}

/// Little-endian integers at `at` in a header the walkers read (AVI, ASF); `None` past its end.
pub(super) fn le_u16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

pub(super) fn le_u32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

pub(super) fn le_u64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_only_streams_become_audio_metadata() {
        let s = Streams {
            audio: Some(AudioStream { sample_rate: Some(48_000), channels: Some(1), codec: "opus".into() }),
            duration_seconds: Some(1.5),
            webm: true,
            ..Streams::default()
        };
        let m = s.into_metadata(Format::Matroska, 10).unwrap();
        assert_eq!(m.data_type, DataType::Audio);
        assert_eq!(m.mime, "audio/webm");
        assert_eq!(m.sample_rate, Some(48_000));
        assert_eq!(m.frame_count, None);
    }

    /// Runs a container parser straight on bytes, without the panic boundary of
    /// `crate::probe`, so that a panic fails the test.
    fn parse_bytes(format: Format, bytes: &[u8]) -> Result<Streams> {
        let limits = Limits::default();
        let size = bytes.len() as u64;
        let mut r = WalkReader::new(io::Cursor::new(bytes), size);
        match format {
            Format::Matroska => mkv::probe_bytes(bytes, &limits),
            Format::Avi => avi::probe_reader(&mut r, &limits),
            Format::MpegTs => mpegts::probe_reader(&mut r, &limits),
            Format::Asf => asf::probe_reader(&mut r, &limits),
            Format::Flv => flv::probe_reader(&mut r, &limits),
            Format::MpegPs => mpegps::probe_reader(&mut r, &limits),
            _ => mp4::probe_reader(&mut r, &limits),
        }
    }

    /// Every video fixture, cut at many lengths and with bytes flipped, gives values or
    /// a typed error: never a panic. Cuts inside the headers must say `truncated`.
    #[test]
    fn truncated_and_mutated_fixtures_never_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets/video");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let Some(format) = crate::detect::detect(&bytes).filter(|f| f.data_type() == DataType::Video)
            else {
                continue;
            };
            seen += 1;
            assert!(parse_bytes(format, &bytes).is_ok(), "{} does not parse whole", path.display());
            let step = (bytes.len() / 97).max(1);
            for cut in (0..bytes.len()).step_by(step).chain(0..bytes.len().min(300)) {
                if let Err(e) = parse_bytes(format, &bytes[..cut]) {
                    let code = e.code().as_str();
                    assert!(
                        matches!(code, "truncated" | "corrupt_file" | "unsupported_format"),
                        "{} cut at {cut}: {e}",
                        path.display()
                    );
                }
            }
            // Deterministic xorshift: flip bytes anywhere, headers included.
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ bytes.len() as u64;
            for _ in 0..300 {
                let mut m = bytes.clone();
                for _ in 0..4 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let at = (x % m.len() as u64) as usize;
                    m[at] ^= (x >> 32) as u8 | 1;
                }
                let _ = parse_bytes(format, &m);
            }
        }
        assert!(seen >= 10, "only {seen} video fixtures found");
    }

    /// A 5 GiB MP4 (sparse on disk) whose moov follows the mdat: the mdat is stepped
    /// over by seeking, so the probe reads a few KiB and answers at once.
    #[test]
    fn a_multi_gigabyte_sparse_mp4_is_probed_from_its_headers() {
        use std::io::Write;
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/assets/video/moov-at-end.mp4");
        let bytes = std::fs::read(fixture).unwrap();
        let (ftyp, moov) = (&bytes[..32], &bytes[5591..]);
        assert_eq!(&moov[4..8], b"moov");
        let mdat_len = 5u64 << 30;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(ftyp).unwrap();
        f.write_all(&1u32.to_be_bytes()).unwrap();
        f.write_all(b"mdat").unwrap();
        f.write_all(&(mdat_len + 16).to_be_bytes()).unwrap();
        f.as_file().set_len(32 + 16 + mdat_len).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(moov).unwrap();
        f.flush().unwrap();
        let started = std::time::Instant::now();
        let m = crate::probe(f.path(), &Limits::default()).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(m.size_bytes, 32 + 16 + mdat_len + moov.len() as u64);
        assert_eq!((m.width, m.height, m.frame_count), (Some(160), Some(90), Some(50)));
    }

    /// Counts the reads that reach the source, to show a walk is buffered.
    pub(super) struct CountingReads<R> {
        pub(super) inner: R,
        pub(super) reads: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl<R: Read> Read for CountingReads<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads.set(self.reads.get() + 1);
            self.inner.read(buf)
        }
    }

    impl<R: Seek> Seek for CountingReads<R> {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    /// Issue 9: a seek and a read per structure made 80 MB of empty `free` boxes or
    /// `JUNK` chunks cost 7 s. The walks read a buffer at a time.
    #[test]
    fn many_empty_boxes_and_chunks_cost_a_read_per_buffer() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets/video");
        let mp4 = std::fs::read(dir.join("moov-at-end.mp4")).unwrap();
        let avi = std::fs::read(dir.join("mpeg4.avi")).unwrap();
        let cases = [
            (Format::IsoBmff, [&mp4[..32], &b"\0\0\0\x08free".repeat(100_000), &mp4[32..]].concat()),
            (Format::Avi, [&avi[..12], &b"JUNK\0\0\0\0".repeat(100_000), &avi[12..]].concat()),
        ];
        for (format, bytes) in cases {
            let reads = std::rc::Rc::new(std::cell::Cell::new(0));
            let counting = CountingReads { inner: io::Cursor::new(&bytes[..]), reads: reads.clone() };
            let mut r = WalkReader::new(counting, bytes.len() as u64);
            let s = match format {
                Format::Avi => avi::probe_reader(&mut r, &Limits::default()),
                _ => mp4::probe_reader(&mut r, &Limits::default()),
            }
            .unwrap();
            let v = s.video.unwrap();
            assert_eq!((v.width, v.height, v.frame_count), (160, 90, Some(50)), "{format:?}");
            let most = bytes.len() / crate::ranged::WALK_BUFFER + 4;
            assert!(reads.get() <= most, "{format:?}: {} reads for {} bytes", reads.get(), bytes.len());
        }
    }

    #[test]
    fn no_stream_at_all_is_unsupported() {
        let err = Streams::default().into_metadata(Format::IsoBmff, 0).unwrap_err();
        assert_eq!(err.code().as_str(), "unsupported_format");
    }

    #[test]
    fn read_block_refuses_more_than_the_memory_limit_and_reports_short_files() {
        let limits = Limits { max_memory_bytes: 16, ..Limits::default() };
        let mut r = WalkReader::new(io::Cursor::new(vec![0u8; 10]), 10);
        let err = read_block(&mut r, 0, 1 << 40, &limits, "MP4", "moov").unwrap_err();
        assert_eq!(err.code().as_str(), "too_large");
        let err = read_block(&mut r, 4, 8, &limits, "MP4", "moov").unwrap_err();
        assert_eq!(err.code().as_str(), "truncated");
        assert_eq!(read_block(&mut r, 2, 8, &limits, "MP4", "moov").unwrap().len(), 8);
    }
}
