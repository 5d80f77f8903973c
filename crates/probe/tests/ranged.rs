//! The ranged path gives what the full path gives: every fixture is probed whole, then
//! from a sparse copy that starts with a prefix and grows only by the ranges the policy
//! picks from the probe's `NeedBytes`, and the two answers must be identical. Run with
//! `cargo test -p asset-probe --test ranged -- --nocapture` to see the bytes fetched.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use asset_probe::{ByteRange, FetchPolicy, Limits, ProbeError, RangeSet, probe, probe_partial};
use serde_json::Value;

fn assets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets")
}

fn fixtures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_none_or(|e| e != "md") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&assets_dir(), &mut out);
    out.sort();
    out
}

/// A result reduced to what a caller sees: the metadata as JSON, or the error code.
fn outcome(result: &Result<asset_probe::AssetMetadata, ProbeError>) -> Result<Value, String> {
    match result {
        Ok(m) => Ok(serde_json::to_value(m).unwrap()),
        Err(e) => Err(e.code().as_str().to_string()),
    }
}

/// What the ranged path did for one file.
struct Ranged {
    result: Result<asset_probe::AssetMetadata, ProbeError>,
    fetched: u64,
    requests: u32,
    whole_file_hinted: bool,
}

fn copy_range(from: &mut File, to: &mut File, range: ByteRange) {
    let mut buf = vec![0u8; usize::try_from(range.len).unwrap()];
    from.seek(SeekFrom::Start(range.offset)).unwrap();
    from.read_exact(&mut buf).unwrap();
    to.seek(SeekFrom::Start(range.offset)).unwrap();
    to.write_all(&buf).unwrap();
}

/// Simulates the worker's loop: a sparse copy of `original` under the same file name
/// (the text module takes the extension as a hint), filled range by range.
/// `first` overrides the policy's first fetch (which never goes below the detection
/// window) to make the probe ask for the head too.
fn ranged(original: &Path, policy: FetchPolicy, first: Option<u64>, max_requests: u32) -> Ranged {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(original.file_name().unwrap());
    let total = fs::metadata(original).unwrap().len();
    let mut to = File::create(&copy).unwrap();
    to.set_len(total).unwrap();
    let mut from = File::open(original).unwrap();
    let mut present = RangeSet::new();
    let first = match first {
        Some(len) => ByteRange::new(0, len.min(total)),
        None => policy.first_fetch(total),
    };
    copy_range(&mut from, &mut to, first);
    present.insert(first);
    let mut fetched = first.len;
    let mut requests = 1;
    let mut whole_file_hinted = false;
    let mut round = 0;
    loop {
        let result = probe_partial(&copy, total, &present, &Limits::default());
        let Some(need) = result.as_ref().err().and_then(ProbeError::need) else {
            return Ranged { result, fetched, requests, whole_file_hinted };
        };
        whole_file_hinted |= need.whole_file;
        assert!(
            !present.contains_byte(need.offset),
            "{}: asked for present byte {}",
            original.display(),
            need.offset
        );
        let range = policy.next_fetch(need, total, &present, round);
        // Only missing bytes, and some: every request makes progress.
        assert!(
            !range.is_empty() && range.end() <= total && present.missing_in(range) == [range],
            "{}: fetch {range} for the need at {} is empty or holds present bytes",
            original.display(),
            need.offset
        );
        assert!(requests < max_requests, "{}: still asking after {requests} requests", original.display());
        copy_range(&mut from, &mut to, range);
        present.insert(range);
        fetched += range.len;
        requests += 1;
        round += 1;
    }
}

fn check_identical(path: &Path, policy: FetchPolicy, max_requests: u32) -> Ranged {
    check_identical_from(path, policy, None, max_requests)
}

fn check_identical_from(path: &Path, policy: FetchPolicy, first: Option<u64>, max_requests: u32) -> Ranged {
    let full = probe(path, &Limits::default());
    let r = ranged(path, policy, first, max_requests);
    assert_eq!(outcome(&r.result), outcome(&full), "{}: ranged and full paths differ", path.display());
    r
}

#[test]
fn every_fixture_gives_the_same_answer_ranged_as_whole() {
    let mut rows = Vec::new();
    for path in fixtures() {
        let size = fs::metadata(&path).unwrap().len();
        let r = check_identical(&path, FetchPolicy::default(), 32);
        rows.push((path, size, r.fetched, r.requests, r.whole_file_hinted));
    }
    assert!(rows.len() > 100, "only {} fixtures found", rows.len());
    for (path, size, fetched, requests, whole) in rows {
        let name = path.strip_prefix(assets_dir()).unwrap().display();
        println!(
            "{name:45} {size:>9} B  fetched {fetched:>9} B  in {requests:>2} requests  whole-file hint: {whole}"
        );
    }
}

/// The fixtures are smaller than the default prefix, so the default policy fetches them
/// in one go. A 256-byte start and 64-byte steps make the head and every module past
/// the 8 KiB head read across gaps and ask for bytes.
#[test]
fn every_fixture_gives_the_same_answer_through_tiny_ranges() {
    let tiny = FetchPolicy { first: 256, min: 64, max_rounds: 40, tail: 64 };
    let mut asked = 0;
    for path in fixtures() {
        let r = check_identical_from(&path, tiny, Some(256), 64);
        if r.requests > 1 {
            asked += 1;
        }
    }
    assert!(asked > 50, "only {asked} fixtures needed more than the first 256 bytes");
}

/// Builds `moov-at-end.mp4` with its `mdat` grown by `pad` bytes (sparse): chunk
/// offsets still point at the original samples, `moov` moves to the end.
fn padded_mp4(dir: &Path, pad: u64) -> PathBuf {
    let original = fs::read(assets_dir().join("video/moov-at-end.mp4")).unwrap();
    // ftyp (32) free (8) mdat (5551) moov (968), as ORIGIN.md's command makes it.
    let mdat_at = 40;
    assert_eq!(&original[mdat_at + 4..mdat_at + 8], b"mdat");
    let mdat_len = u32::from_be_bytes(original[mdat_at..mdat_at + 4].try_into().unwrap()) as usize;
    let moov_at = mdat_at + mdat_len;
    assert_eq!(&original[moov_at + 4..moov_at + 8], b"moov");
    let path = dir.join("large-moov-at-end.mp4");
    let mut f = File::create(&path).unwrap();
    f.write_all(&original[..mdat_at]).unwrap();
    let grown = u32::try_from(mdat_len as u64 + pad).unwrap();
    f.write_all(&grown.to_be_bytes()).unwrap();
    f.write_all(&original[mdat_at + 4..moov_at]).unwrap();
    f.seek(SeekFrom::Current(i64::try_from(pad).unwrap())).unwrap();
    f.write_all(&original[moov_at..]).unwrap();
    path
}

#[test]
fn a_1_mb_mp4_with_moov_at_the_end_is_read_from_its_prefix_and_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let path = padded_mp4(dir.path(), 1 << 20);
    let r = check_identical(&path, FetchPolicy::default(), 8);
    assert!(r.result.is_ok());
    assert_eq!(r.requests, 2, "prefix, then the suffix holding moov");
    // The prefix and the last 8 KiB holding moov (968 bytes), nothing more.
    assert_eq!(r.fetched, 64 * 1024 + 8 * 1024);
}

#[test]
fn a_20_mb_mp4_with_moov_at_the_end_costs_under_1_percent() {
    let dir = tempfile::tempdir().unwrap();
    let path = padded_mp4(dir.path(), 20 << 20);
    let size = fs::metadata(&path).unwrap().len();
    let r = check_identical(&path, FetchPolicy::default(), 8);
    let meta = r.result.expect("the padded MP4 probes");
    assert_eq!(meta.size_bytes, size);
    let original = probe(&assets_dir().join("video/moov-at-end.mp4"), &Limits::default()).unwrap();
    assert_eq!(
        (meta.width, meta.height, meta.frame_count, meta.codec.as_deref()),
        (original.width, original.height, original.frame_count, original.codec.as_deref())
    );
    assert!(r.fetched * 100 <= size, "fetched {} of {size} bytes", r.fetched);
}

/// Builds `explicit-le.dcm` with its Pixel Data grown by `pad` bytes (sparse).
fn padded_dicom(dir: &Path, pad: u32) -> PathBuf {
    let original = fs::read(assets_dir().join("dicom/explicit-le.dcm")).unwrap();
    let at = original.windows(6).position(|w| w == b"\xe0\x7f\x10\x00OW").expect("Pixel Data, OW");
    let len = u32::from_le_bytes(original[at + 8..at + 12].try_into().unwrap());
    assert_eq!(at + 12 + len as usize, original.len(), "Pixel Data ends the file");
    let path = dir.join("large.dcm");
    let mut f = File::create(&path).unwrap();
    f.write_all(&original[..at + 8]).unwrap();
    f.write_all(&(len + pad).to_le_bytes()).unwrap();
    f.write_all(&original[at + 12..]).unwrap();
    f.set_len(original.len() as u64 + u64::from(pad)).unwrap();
    path
}

#[test]
fn a_20_mb_dicom_costs_under_1_percent() {
    let dir = tempfile::tempdir().unwrap();
    let path = padded_dicom(dir.path(), 20 << 20);
    let size = fs::metadata(&path).unwrap().len();
    let r = check_identical(&path, FetchPolicy::default(), 8);
    let meta = r.result.expect("the padded DICOM probes");
    assert_eq!((meta.width, meta.height, meta.frame_count), (Some(33), Some(17), Some(1)));
    assert!(r.fetched * 100 <= size, "fetched {} of {size} bytes", r.fetched);
    assert_eq!(r.requests, 1, "the header is in the prefix");
}

#[test]
fn a_16_mb_png_costs_under_1_percent() {
    // png-rgb8.png with its image data spread over 2000 more 8 KiB IDAT chunks, as
    // encoders write large images: the walk must not visit them.
    let original = fs::read(assets_dir().join("image/png-rgb8.png")).unwrap();
    let iend = original.len() - 12;
    let mut bytes = original[..iend].to_vec();
    let mut idat = 8192u32.to_be_bytes().to_vec();
    idat.extend_from_slice(b"IDAT");
    idat.extend_from_slice(&[0x55; 8192]);
    idat.extend_from_slice(&[0; 4]);
    for _ in 0..2000 {
        bytes.extend_from_slice(&idat);
    }
    bytes.extend_from_slice(&original[iend..]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.png");
    fs::write(&path, &bytes).unwrap();
    let r = check_identical(&path, FetchPolicy::default(), 8);
    let meta = r.result.expect("the padded PNG probes");
    assert_eq!((meta.width, meta.height), (Some(64), Some(48)));
    assert!(r.fetched * 100 <= bytes.len() as u64, "fetched {} of {} bytes", r.fetched, bytes.len());
}

/// The same check over a directory of real-world-sized files that are not committed
/// (`RANGED_DIR=/tmp/big cargo test -p asset-probe --test ranged -- --ignored
/// --nocapture`); prints the share of each file fetched.
#[test]
#[ignore = "needs RANGED_DIR with generated files"]
fn a_directory_of_large_files_gives_the_same_answer_ranged_as_whole() {
    let dir = PathBuf::from(std::env::var_os("RANGED_DIR").expect("RANGED_DIR names a directory"));
    let mut paths: Vec<PathBuf> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    paths.sort();
    assert!(!paths.is_empty(), "{} holds no files", dir.display());
    for path in paths {
        let size = fs::metadata(&path).unwrap().len();
        let r = check_identical(&path, FetchPolicy::default(), 32);
        let pct = r.fetched as f64 * 100.0 / size.max(1) as f64;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let what = match &r.result {
            Ok(m) => m.mime.clone(),
            Err(e) => e.code().as_str().to_string(),
        };
        println!(
            "{name:20} {what:18} {size:>10} B  fetched {:>10} B ({pct:6.2}%) in {:>2} requests  whole-file hint: {}",
            r.fetched, r.requests, r.whole_file_hinted
        );
    }
}

/// `name` followed by `copies` more copies of its bytes from `from` on: a longer
/// stream of the same frames (an MP3 past its ID3v2 tag, raw ADTS).
fn repeated(dir: &Path, name: &str, from: usize, copies: usize) -> PathBuf {
    let original = fs::read(assets_dir().join(name)).unwrap();
    let mut bytes = original.clone();
    for _ in 0..copies {
        bytes.extend_from_slice(&original[from..]);
    }
    let path = dir.join(Path::new(name).file_name().unwrap());
    fs::write(&path, bytes).unwrap();
    path
}

/// Formats read to the end say so, so that the fetcher gets the rest in one request
/// (and metrics can count them); header-only formats do not.
#[test]
fn whole_file_reads_are_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let hinted = |path: &Path| check_identical(path, FetchPolicy::default(), 8);
    // mp3-cbr-noxing.mp3 opens with a 39-byte ID3v2 tag.
    let mp3 = hinted(&repeated(dir.path(), "audio/mp3-cbr-noxing.mp3", 39, 400));
    assert!(mp3.whole_file_hinted, "a frame walk");
    // The prefix, the tail tags, the rest of the 64 KiB sync window, then the rest at once.
    assert_eq!(mp3.requests, 4);
    let adts = hinted(&repeated(dir.path(), "audio/adts.aac", 0, 40));
    assert!(adts.whole_file_hinted, "a frame walk");
    assert_eq!(adts.requests, 2, "the prefix, then the rest at once");
    let mp4 = hinted(&padded_mp4(dir.path(), 1 << 20));
    assert!(!mp4.whole_file_hinted);
    let dicom = hinted(&padded_dicom(dir.path(), 1 << 20));
    assert!(!dicom.whole_file_hinted);
}

/// A 20 MB transport stream: `h264-aac.ts` with null packets (PID 0x1FFF) between its
/// 120th and 121st packets. The tables, the SPS and the first timestamps come from the
/// prefix, the last timestamps from a suffix range: a small part of the file is fetched.
#[test]
fn a_20_mb_transport_stream_costs_under_1_percent_from_its_prefix_and_suffix() {
    let original = fs::read(assets_dir().join("video/h264-aac.ts")).unwrap();
    let mut null = [0xFFu8; 188];
    null[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("padded.ts");
    let cut = 120 * 188;
    let padded = [&original[..cut], &null.repeat((20 << 20) / 188), &original[cut..]].concat();
    fs::write(&path, &padded).unwrap();
    let r = check_identical(&path, FetchPolicy::default(), 8);
    let meta = r.result.expect("the padded stream probes");
    let whole = probe(&assets_dir().join("video/h264-aac.ts"), &Limits::default()).unwrap();
    assert_eq!(
        (meta.width, meta.height, meta.frame_count, meta.duration_seconds, meta.codec.as_deref()),
        (whole.width, whole.height, whole.frame_count, whole.duration_seconds, whole.codec.as_deref())
    );
    assert!(!r.whole_file_hinted);
    // The 64 KiB prefix, then one 64 KiB window at the end.
    assert_eq!(r.requests, 2, "prefix, then the suffix");
    assert!(r.fetched * 100 <= padded.len() as u64, "fetched {} of {} bytes", r.fetched, padded.len());
}

/// Issue 11's image formats are read header-first: each fixture grown to 16 MiB (zeros
/// in front of the bytes a format checks at its end: EOC, the QOI end marker, the TGA
/// footer) gives the same answer ranged as whole, and the ranged probe fetches under
/// 1% of it: the 64 KiB prefix and, for the formats with an end check, a small tail.
#[test]
fn the_issue_11_image_formats_cost_under_1_percent_of_a_16_mb_file() {
    const PAD: u64 = 16 << 20;
    let cases: [(&str, usize); 12] = [
        ("image/jp2-basic.jp2", 0),
        ("image/j2k-codestream.j2k", 2),
        ("image/jxl-container.jxl", 0),
        ("image/ico-multi.ico", 0),
        ("image/pnm-p6-comment.ppm", 0),
        ("image/pam-rgba.pam", 0),
        ("image/tga-footer.tga", 26),
        ("image/qoi-rgb.qoi", 8),
        ("image/hdr-basic.hdr", 0),
        ("image/exr-scanline.exr", 0),
        ("image/psd-layers.psd", 0),
        ("image/dng-basic.dng", 0),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, tail) in cases {
        let original = fs::read(assets_dir().join(name)).unwrap();
        let (head, end) = original.split_at(original.len() - tail);
        // A sparse file: the head, a hole of zeros, the checked tail at the very end.
        let path = dir.path().join(Path::new(name).file_name().unwrap());
        let mut f = File::create(&path).unwrap();
        f.write_all(head).unwrap();
        f.set_len(head.len() as u64 + PAD).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(end).unwrap();
        drop(f);
        let size = fs::metadata(&path).unwrap().len();
        let r = check_identical(&path, FetchPolicy::default(), 8);
        let whole = probe(&assets_dir().join(name), &Limits::default()).unwrap();
        let meta = r.result.unwrap_or_else(|e| panic!("{name} grown: {e}"));
        assert_eq!((meta.width, meta.height), (whole.width, whole.height), "{name}");
        assert!(r.fetched * 100 <= size, "{name}: fetched {} of {size} bytes", r.fetched);
        println!("{name:32} {size:>9} B  fetched {:>6} B in {} requests", r.fetched, r.requests);
    }
}
