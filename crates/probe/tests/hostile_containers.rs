//! Issue 9, through the public API: walks over many tiny structures are buffered, and
//! a buffered walk on a partial download still asks for the bytes it needs and no
//! others. Each file is a honest fixture with a hostile run of structures in front of
//! a large (sparse) payload the probe must step over; the ranged answer must equal the
//! full one while fetching a small share of the file.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use asset_probe::{ByteRange, FetchPolicy, Limits, ProbeError, RangeSet, probe, probe_partial};

fn asset(rel: &str) -> Vec<u8> {
    fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets").join(rel)).unwrap()
}

/// Writes `head`, then `hole` bytes never written (a sparse run), then `tail`.
fn sparse_file(dir: &Path, name: &str, head: &[u8], hole: u64, tail: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap();
    f.write_all(head).unwrap();
    f.seek(SeekFrom::Current(i64::try_from(hole).unwrap())).unwrap();
    f.write_all(tail).unwrap();
    f.set_len(head.len() as u64 + hole + tail.len() as u64).unwrap();
    path
}

/// The worker's loop over a sparse copy: the default first fetch, then whatever the
/// policy makes of each `NeedBytes`. Returns the result and the bytes fetched; fails if
/// the probe asks for a byte it already has or keeps asking.
fn ranged(original: &Path) -> (Result<asset_probe::AssetMetadata, ProbeError>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(original.file_name().unwrap());
    let total = fs::metadata(original).unwrap().len();
    let mut to = File::create(&copy).unwrap();
    to.set_len(total).unwrap();
    let mut from = File::open(original).unwrap();
    let policy = FetchPolicy::default();
    let mut present = RangeSet::new();
    let mut fetch = |range: ByteRange, present: &mut RangeSet| {
        let mut buf = vec![0u8; usize::try_from(range.len).unwrap()];
        from.seek(SeekFrom::Start(range.offset)).unwrap();
        from.read_exact(&mut buf).unwrap();
        to.seek(SeekFrom::Start(range.offset)).unwrap();
        to.write_all(&buf).unwrap();
        present.insert(range);
        range.len
    };
    let mut fetched = fetch(policy.first_fetch(total), &mut present);
    for round in 0..32 {
        let result = probe_partial(&copy, total, &present, &Limits::default());
        let Some(need) = result.as_ref().err().and_then(ProbeError::need) else { return (result, fetched) };
        assert!(!present.contains_byte(need.offset), "asked again for byte {}", need.offset);
        fetched += fetch(policy.next_fetch(need, total, &present, round), &mut present);
    }
    panic!("{}: still asking after 32 fetches", original.display());
}

/// Probes `path` whole and ranged; the answers must be identical and the ranged path
/// must fetch under `share` of the file.
fn check(path: &Path, share: f64) -> asset_probe::AssetMetadata {
    let full = probe(path, &Limits::default()).unwrap();
    let (partial, fetched) = ranged(path);
    let partial = partial.unwrap();
    assert_eq!(partial, full, "{}: ranged and full answers differ", path.display());
    let size = fs::metadata(path).unwrap().len();
    assert!((fetched as f64) < share * size as f64, "{}: fetched {fetched} of {size} bytes", path.display());
    full
}

/// `moov-at-end.mp4` with 100,000 empty `free` boxes after its `ftyp` and its `mdat`
/// grown by 32 MiB (sparse): the walk reads every box header, steps over the `mdat`
/// and asks for the `moov` at the end.
#[test]
fn a_buffered_mp4_walk_over_many_boxes_fetches_the_boxes_and_moov_not_mdat() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = asset("video/moov-at-end.mp4");
    // ftyp (32) free (8) mdat (5551) moov.
    let mdat_len = u32::from_be_bytes(mp4[40..44].try_into().unwrap());
    let grown = mdat_len + (32 << 20);
    let head = [
        &mp4[..40],
        &b"\0\0\0\x08free".repeat(100_000),
        &grown.to_be_bytes(),
        &mp4[44..40 + mdat_len as usize],
    ]
    .concat();
    let path = sparse_file(dir.path(), "boxes.mp4", &head, 32 << 20, &mp4[40 + mdat_len as usize..]);
    let m = check(&path, 0.05);
    assert_eq!((m.width, m.height, m.frame_count), (Some(160), Some(90), Some(50)));
}

/// `wav-s16.wav` with 100,000 empty `JUNK` chunks before `fmt ` and a `data` chunk
/// grown by 32 MiB (sparse): only the chunk headers are fetched.
#[test]
fn a_buffered_wav_walk_over_many_chunks_fetches_the_headers_not_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let wav = asset("audio/wav-s16.wav");
    let data_at = wav.windows(4).position(|w| w == b"data").unwrap();
    let data_len = u32::from_le_bytes(wav[data_at + 4..data_at + 8].try_into().unwrap());
    let grown = data_len + (32 << 20);
    let head = [
        &wav[..12],
        &b"JUNK\0\0\0\0".repeat(100_000),
        &wav[12..data_at + 4],
        &grown.to_le_bytes(),
        &wav[data_at + 8..],
    ]
    .concat();
    let path = sparse_file(dir.path(), "chunks.wav", &head, 32 << 20, &[]);
    let m = check(&path, 0.05);
    assert_eq!((m.sample_rate, m.channels), (Some(8000), Some(1)));
    let seconds = f64::from(grown / 2) / 8000.0;
    assert!((m.duration_seconds.unwrap() - seconds).abs() < 1e-6);
}

/// A Matroska file (the generator's layout) with 100,000 Void elements before its
/// Info and a 32 MiB sparse Cluster after its Tracks.
#[test]
fn a_buffered_matroska_walk_over_many_voids_stops_at_the_first_cluster() {
    fn el(id: &[u8], body_len: u64, body: &[u8]) -> Vec<u8> {
        let mut v = id.to_vec();
        v.push(0x01);
        v.extend_from_slice(&body_len.to_be_bytes()[1..]);
        v.extend_from_slice(body);
        v
    }
    let leaf = |id: &[u8], body: &[u8]| el(id, body.len() as u64, body);
    let ebml = leaf(b"\x1A\x45\xDF\xA3", &leaf(b"\x42\x82", b"matroska"));
    let info = leaf(b"\x15\x49\xA9\x66", &[leaf(b"\x44\x89", &2000f64.to_be_bytes())].concat());
    let video = [leaf(b"\xB0", &[160]), leaf(b"\xBA", &[90])].concat();
    let entry = [
        leaf(b"\xD7", &[1]),
        leaf(b"\x83", &[1]),
        leaf(b"\x86", b"V_VP9"),
        leaf(b"\x23\xE3\x83", &40_000_000u32.to_be_bytes()),
        leaf(b"\xE0", &video),
    ]
    .concat();
    let tracks = leaf(b"\x16\x54\xAE\x6B", &leaf(b"\xAE", &entry));
    let voids = [0xEC, 0x86, 0, 0, 0, 0, 0, 0].repeat(100_000);
    let cluster_len = 32u64 << 20;
    let cluster_head = el(b"\x1F\x43\xB6\x75", cluster_len, &[]);
    let segment_body_len =
        (voids.len() + info.len() + tracks.len() + cluster_head.len()) as u64 + cluster_len;
    let segment = el(b"\x18\x53\x80\x67", segment_body_len, &[]);
    let head = [ebml, segment, voids, info, tracks, cluster_head].concat();
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_file(dir.path(), "voids.mkv", &head, cluster_len - 1, &[0]);
    let m = check(&path, 0.05);
    assert_eq!(
        (m.width, m.height, m.frame_count, m.codec.as_deref()),
        (Some(160), Some(90), Some(50), Some("vp9"))
    );
}

/// Issue 11: `cr3-basic.cr3` with its `mdat` (the last box) grown by 32 MiB, sparse, as
/// a real CR3's picture data is: the walk reads `ftyp` and `moov`, never the pictures.
#[test]
fn a_cr3_is_read_from_its_moov_not_its_picture_data() {
    let dir = tempfile::tempdir().unwrap();
    let cr3 = asset("image/cr3-basic.cr3");
    let mdat = cr3.windows(4).rposition(|w| w == b"mdat").unwrap() - 4;
    let len = u32::from_be_bytes(cr3[mdat..mdat + 4].try_into().unwrap());
    let head = [&cr3[..mdat], &(len + (32 << 20)).to_be_bytes(), &cr3[mdat + 4..]].concat();
    let path = sparse_file(dir.path(), "big.cr3", &head, 32 << 20, &[]);
    let m = check(&path, 0.01);
    assert_eq!((m.mime.as_str(), m.width, m.height), ("image/x-canon-cr3", Some(6000), Some(4000)));
}
