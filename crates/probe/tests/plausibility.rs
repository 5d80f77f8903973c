//! Issue 9: absurd values (2^31-pixel frames, 1.8e19-second durations, 4.3e14 frames)
//! were reported as success. The crafted files under `fixtures/assets/bad` are checked
//! by the golden test; here, what a small fixture cannot hold (a sample table of 4.3e14
//! frames is 800 KB) and the promise that every probe path applies `Limits::plausibility`.

use std::path::{Path, PathBuf};

use asset_probe::{
    AssetMetadata, ByteRange, ErrorCode, Limits, Plausibility, ProbeError, RangeSet, probe, probe_in_place,
    probe_partial, probe_partial_in_place,
};

fn asset(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/assets").join(rel)
}

/// Bounds nothing fails, to see what an extractor reported before the check.
fn wide_open() -> Plausibility {
    Plausibility {
        max_dimension: u32::MAX,
        max_duration_seconds: u64::MAX,
        max_frame_rate: u32::MAX,
        max_frame_count: u64::MAX,
        frame_count_ratio: u32::MAX,
        frame_count_slack: u64::MAX,
        min_sample_rate: 0,
        max_sample_rate: u32::MAX,
        max_channels: u32::MAX,
        max_page_count: u32::MAX,
        max_string_bytes: usize::MAX,
        max_slices: u64::MAX,
    }
}

/// Every public way to probe a file, each under `limits`.
fn every_path(path: &Path, limits: &Limits) -> Vec<(&'static str, Result<AssetMetadata, ProbeError>)> {
    let size = std::fs::metadata(path).unwrap().len();
    let mut all = RangeSet::new();
    all.insert(ByteRange::new(0, size));
    vec![
        ("probe", probe(path, limits)),
        ("probe_in_place", probe_in_place(path, limits)),
        ("probe_partial", probe_partial(path, size, &all, limits)),
        ("probe_partial_in_place", probe_partial_in_place(path, size, &all, limits)),
    ]
}

/// `bytes` with the first `stts` box found under `moov` replaced by `stts`, and the
/// sizes of the boxes holding it grown to match (32-bit box sizes only, as in our
/// fixtures). Chunk offsets are left stale: the probe never reads samples.
fn with_stts(bytes: &[u8], stts: &[u8]) -> Vec<u8> {
    fn rebuild(mut data: &[u8], stts: &[u8], done: &mut bool) -> Vec<u8> {
        let mut out = Vec::new();
        while data.len() >= 8 {
            let size = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = data[4..8].try_into().unwrap();
            assert!(size >= 8 && size <= data.len(), "box {kind:?} of {size} bytes");
            let payload = &data[8..size];
            let new_payload = match &kind {
                b"moov" | b"trak" | b"mdia" | b"minf" | b"stbl" => rebuild(payload, stts, done),
                b"stts" if !*done => {
                    *done = true;
                    stts.to_vec()
                }
                _ => payload.to_vec(),
            };
            out.extend_from_slice(&u32::try_from(new_payload.len() + 8).unwrap().to_be_bytes());
            out.extend_from_slice(&kind);
            out.extend_from_slice(&new_payload);
            data = &data[size..];
        }
        out
    }
    let mut done = false;
    let out = rebuild(bytes, stts, &mut done);
    assert!(done, "no stts box");
    out
}

/// The issue's MP4 reported frame_count 4.3e14 from its `stts` runs. The MP4 walker now
/// counts frames from the sample sizes actually present (`stsz`, 60 entries): the lie
/// is not believed at all, and the answer is the original file's.
#[test]
fn issue_9_mp4_sample_table_of_4_3e14_frames_is_not_believed() {
    // 100,001 runs of 2^32-1 samples each over faststart.mp4's 2 s of video.
    let runs: u32 = 100_001;
    let mut stts = vec![0u8; 4];
    stts.extend_from_slice(&runs.to_be_bytes());
    for _ in 0..runs {
        stts.extend_from_slice(&u32::MAX.to_be_bytes());
        stts.extend_from_slice(&1u32.to_be_bytes());
    }
    let mp4 = with_stts(&std::fs::read(asset("video/faststart.mp4")).unwrap(), &stts);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absurd-stts.mp4");
    std::fs::write(&path, &mp4).unwrap();

    let meta = probe(&path, &Limits::default()).unwrap();
    assert_eq!((meta.frame_count, meta.frame_rate, meta.duration_seconds), (Some(60), Some(30.0), Some(2.0)));
}

#[test]
fn every_probe_path_applies_the_bounds_it_is_given() {
    let path = asset("video/faststart.mp4");
    for (how, result) in every_path(&path, &Limits::default()) {
        let m = result.unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(m.frame_rate, Some(30.0), "{how}");
    }
    let tight = Limits {
        plausibility: Plausibility { max_frame_rate: 29, ..Plausibility::default() },
        ..Limits::default()
    };
    for (how, result) in every_path(&path, &tight) {
        let err = result.expect_err(how);
        assert_eq!(err.code(), ErrorCode::CorruptFile, "{how}");
        assert!(err.to_string().contains("frame_rate 30 is outside the plausible range"), "{how}: {err}");
    }
}

#[test]
fn issue_9_avi_of_2_31_pixels_and_1_8e19_seconds_is_corrupt_on_every_path() {
    let path = asset("bad/video-avi-absurd-size-duration.avi");
    let unchecked = Limits { plausibility: wide_open(), ..Limits::default() };
    let m = probe(&path, &unchecked).unwrap();
    assert_eq!((m.width, m.height), (Some(1 << 31), Some(1 << 31)));
    assert!(m.duration_seconds.unwrap() > 1.8e19);
    for (how, result) in every_path(&path, &Limits::default()) {
        let err = result.expect_err(how);
        assert_eq!(err.code(), ErrorCode::CorruptFile, "{how}");
        assert!(
            err.to_string().contains("width 2147483648 is outside the plausible range 1..=1000000"),
            "{how}: {err}"
        );
    }
}

#[test]
fn nul_in_a_matroska_codec_id_is_dropped_not_stored() {
    let path = asset("bad/video-mkv-codec-nul.mkv");
    let m = probe(&path, &Limits::default()).unwrap();
    assert_eq!(m.codec, None);
    assert_eq!((m.width, m.frame_count), (Some(160), Some(50)));
    assert!(!serde_json::to_string(&m).unwrap().contains("\\u0000"));
}
