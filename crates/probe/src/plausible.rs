//! The last check on every answer, whichever extractor gave it: a value outside what
//! real assets have ([`Plausibility`]) means the header lied or is damaged, so the asset
//! is `corrupt_file`; a string the file supplied that is unsafe to store or display is
//! dropped. One check after all extractors, so no extractor has to know every bound.

use asset_core::{AssetMetadata, Plausibility};

use crate::{ProbeError, Result};

/// EXIF orientation has eight values; a reader that passed on any other is wrong.
const ORIENTATIONS: std::ops::RangeInclusive<u16> = 1..=8;

/// `meta` if every reported value is plausible, with unsafe file-supplied strings
/// dropped; else [`ProbeError::Corrupt`] naming the first field out of bounds and the
/// bound.
pub(crate) fn check(mut meta: AssetMetadata, bounds: &Plausibility) -> Result<AssetMetadata> {
    if let Some(why) = implausible(&meta, bounds) {
        return Err(ProbeError::corrupt(meta.data_type.as_str(), format!("{} {why}", meta.mime)));
    }
    for field in [&mut meta.codec, &mut meta.encoding, &mut meta.modality] {
        if field.as_deref().is_some_and(|s| !safe_string(s, bounds)) {
            *field = None;
        }
    }
    Ok(meta)
}

/// Why `meta` cannot be true, if it cannot.
fn implausible(meta: &AssetMetadata, b: &Plausibility) -> Option<String> {
    let out_of = |field: &str, value: String, range: String, bound: &str| {
        Some(format!("{field} {value} is outside the plausible range {range} (Plausibility::{bound})"))
    };
    for (field, value) in [("width", meta.width), ("height", meta.height)] {
        if let Some(v) = value.filter(|&v| v == 0 || v > b.max_dimension) {
            return out_of(field, v.to_string(), format!("1..={}", b.max_dimension), "max_dimension");
        }
    }
    if let Some(d) = meta.duration_seconds
        && !(d.is_finite() && d >= 0.0 && d <= b.max_duration_seconds as f64)
    {
        return out_of(
            "duration_seconds",
            num(d),
            format!("0..={} s", b.max_duration_seconds),
            "max_duration_seconds",
        );
    }
    if let Some(n) = meta.frame_count.filter(|&n| n == 0 || n > b.max_frame_count) {
        return out_of("frame_count", n.to_string(), format!("1..={}", b.max_frame_count), "max_frame_count");
    }
    if meta.data_type == asset_core::DataType::MedicalVolume
        && let Some(n) = meta.frame_count.filter(|&n| n > b.max_slices)
    {
        return out_of("frame_count", n.to_string(), format!("1..={} slices", b.max_slices), "max_slices");
    }
    if let Some(r) = meta.frame_rate {
        let min = min_frame_rate(b);
        if !(r.is_finite() && r > 0.0 && r >= min && r <= f64::from(b.max_frame_rate)) {
            let range = format!("{}..={} fps", num(min), b.max_frame_rate);
            return out_of("frame_rate", num(r), range, "max_frame_rate");
        }
    }
    if let Some(r) = meta.sample_rate.filter(|r| !(b.min_sample_rate..=b.max_sample_rate).contains(r)) {
        let range = format!("{}..={} Hz", b.min_sample_rate, b.max_sample_rate);
        let bound = if r < b.min_sample_rate { "min_sample_rate" } else { "max_sample_rate" };
        return out_of("sample_rate", r.to_string(), range, bound);
    }
    if let Some(c) = meta.channels.filter(|&c| c == 0 || c > b.max_channels) {
        return out_of("channels", c.to_string(), format!("1..={}", b.max_channels), "max_channels");
    }
    if let Some(p) = meta.page_count.filter(|&p| p == 0 || p > b.max_page_count) {
        return out_of("page_count", p.to_string(), format!("1..={}", b.max_page_count), "max_page_count");
    }
    if let Some(o) = meta.orientation.filter(|o| !ORIENTATIONS.contains(o)) {
        return Some(format!("orientation {o} is outside 1..=8, the values of the EXIF tag"));
    }
    if let (Some(n), Some(d), Some(r)) = (meta.frame_count, meta.duration_seconds, meta.frame_rate)
        && let Some(why) = inconsistent_frames(n, d, r, b)
    {
        return Some(why);
    }
    if !safe_string(&meta.mime, b) {
        // Escaped and cut, so the message itself is safe to store.
        let shown: String = meta.mime.chars().take(b.max_string_bytes).collect();
        return Some(format!(
            "mime {shown:?} is not 1 to {} bytes of printable ASCII (Plausibility::max_string_bytes)",
            b.max_string_bytes
        ));
    }
    None
}

/// One frame in the longest plausible duration.
fn min_frame_rate(b: &Plausibility) -> f64 {
    if b.max_duration_seconds == 0 { 0.0 } else { 1.0 / b.max_duration_seconds as f64 }
}

/// Whether a frame count is orders of magnitude away from duration × rate: further than
/// `frame_count_ratio` either way and further than `frame_count_slack` frames.
fn inconsistent_frames(n: u64, d: f64, r: f64, b: &Plausibility) -> Option<String> {
    let expected = d * r;
    let count = n as f64;
    let ratio = f64::from(b.frame_count_ratio);
    let apart = count > expected * ratio || expected > count * ratio;
    if !apart || (count - expected).abs() <= b.frame_count_slack as f64 {
        return None;
    }
    Some(format!(
        "frame_count {n} is more than {}x and {} frames away from duration_seconds {} × frame_rate {} = {} \
         frames (Plausibility::frame_count_ratio)",
        b.frame_count_ratio,
        b.frame_count_slack,
        num(d),
        num(r),
        num(expected)
    ))
}

/// Printable ASCII, 1 to `max_string_bytes` long: what every real codec name, encoding
/// label and DICOM code string is, and what any database column and terminal can hold.
fn safe_string(s: &str, b: &Plausibility) -> bool {
    !s.is_empty() && s.len() <= b.max_string_bytes && s.bytes().all(|c| (0x20..=0x7E).contains(&c))
}

/// A float as a message shows it: plain when short, scientific when huge or tiny (the
/// plain form of 1e300 is 301 digits long).
fn num(v: f64) -> String {
    if v != 0.0 && v.is_finite() && (v.abs() >= 1e9 || v.abs() < 1e-3) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use asset_core::DataType;

    use super::*;

    /// A video whose every field is reported and sane: 2 s, 50 frames at 25 fps.
    fn video() -> AssetMetadata {
        let mut m = AssetMetadata::new(DataType::Video, "video/mp4", 1000);
        m.width = Some(160);
        m.height = Some(90);
        m.duration_seconds = Some(2.0);
        m.frame_count = Some(50);
        m.frame_rate = Some(25.0);
        m.codec = Some("h264".into());
        m
    }

    fn audio() -> AssetMetadata {
        let mut m = AssetMetadata::new(DataType::Audio, "audio/wav", 1000);
        m.duration_seconds = Some(1.0);
        m.sample_rate = Some(44_100);
        m.channels = Some(2);
        m.codec = Some("pcm_s16le".into());
        m
    }

    fn document() -> AssetMetadata {
        let mut m = AssetMetadata::new(DataType::Pdf, "application/pdf", 1000);
        m.page_count = Some(3);
        m.width = Some(612);
        m.height = Some(792);
        m
    }

    /// `None`: the value passes. `Some(field)`: it is corrupt, and the message names
    /// `field` and the bound `bound`.
    type Case = (&'static str, fn() -> AssetMetadata, Option<(&'static str, &'static str)>);

    /// Each bound, just inside and just outside, with the default bounds.
    const CASES: &[Case] = &[
        ("width 1", || AssetMetadata { width: Some(1), ..video() }, None),
        ("width 0", || AssetMetadata { width: Some(0), ..video() }, Some(("width 0", "1..=1000000"))),
        ("width 1e6", || AssetMetadata { width: Some(1_000_000), ..video() }, None),
        (
            "width 1e6+1",
            || AssetMetadata { width: Some(1_000_001), ..video() },
            Some(("width 1000001", "1..=1000000")),
        ),
        ("height 1", || AssetMetadata { height: Some(1), ..document() }, None),
        ("height 0", || AssetMetadata { height: Some(0), ..document() }, Some(("height 0", "1..=1000000"))),
        ("height 1e6", || AssetMetadata { height: Some(1_000_000), ..document() }, None),
        (
            "height u32::MAX",
            || AssetMetadata { height: Some(u32::MAX), ..document() },
            Some(("height 4294967295", "1..=1000000")),
        ),
        ("duration 0", || AssetMetadata { duration_seconds: Some(0.0), ..audio() }, None),
        (
            "duration -0.001",
            || AssetMetadata { duration_seconds: Some(-0.001), ..audio() },
            Some(("duration_seconds -0.001", "0..=10000000 s")),
        ),
        ("duration 1e7", || AssetMetadata { duration_seconds: Some(1e7), ..audio() }, None),
        (
            "duration 1e7+1",
            || AssetMetadata { duration_seconds: Some(1e7 + 1.0), ..audio() },
            Some(("duration_seconds 10000001", "0..=10000000 s")),
        ),
        (
            "duration NaN",
            || AssetMetadata { duration_seconds: Some(f64::NAN), ..audio() },
            Some(("duration_seconds NaN", "0..=10000000 s")),
        ),
        (
            "duration inf",
            || AssetMetadata { duration_seconds: Some(f64::INFINITY), ..audio() },
            Some(("duration_seconds inf", "0..=10000000 s")),
        ),
        (
            "duration 1.8e19",
            || AssetMetadata { duration_seconds: Some(1.8e19), ..audio() },
            Some(("duration_seconds 1.8e19", "0..=10000000 s")),
        ),
        (
            "frame rate 1000",
            || AssetMetadata { frame_rate: Some(1000.0), frame_count: Some(2000), ..video() },
            None,
        ),
        (
            "frame rate 1000.001",
            || AssetMetadata { frame_rate: Some(1000.001), frame_count: Some(2000), ..video() },
            Some(("frame_rate 1000.001", "1e-7..=1000 fps")),
        ),
        (
            "frame rate 0",
            || AssetMetadata { frame_rate: Some(0.0), ..video() },
            Some(("frame_rate 0", "1e-7..=1000 fps")),
        ),
        (
            "frame rate negative",
            || AssetMetadata { frame_rate: Some(-25.0), ..video() },
            Some(("frame_rate -25", "1e-7..=1000 fps")),
        ),
        (
            "frame rate NaN",
            || AssetMetadata { frame_rate: Some(f64::NAN), ..video() },
            Some(("frame_rate NaN", "1e-7..=1000 fps")),
        ),
        (
            // One frame in 115 days: the slowest plausible time-lapse.
            "frame rate 1e-7",
            || AssetMetadata {
                frame_rate: Some(1e-7),
                frame_count: Some(1),
                duration_seconds: Some(1e7),
                ..video()
            },
            None,
        ),
        (
            "frame rate 0.9e-7",
            || AssetMetadata { frame_rate: Some(0.9e-7), frame_count: Some(1), ..video() },
            Some(("frame_rate 9e-8", "1e-7..=1000 fps")),
        ),
        ("frame count 1", || AssetMetadata { frame_count: Some(1), duration_seconds: None, ..video() }, None),
        (
            "frame count 0",
            || AssetMetadata { frame_count: Some(0), duration_seconds: Some(0.0), ..video() },
            Some(("frame_count 0", "1..=10000000000")),
        ),
        (
            "frame count 1e10",
            || AssetMetadata { frame_count: Some(10_000_000_000), duration_seconds: None, ..video() },
            None,
        ),
        (
            "frame count 1e10+1",
            || AssetMetadata { frame_count: Some(10_000_000_001), duration_seconds: None, ..video() },
            Some(("frame_count 10000000001", "1..=10000000000")),
        ),
        ("sample rate 1", || AssetMetadata { sample_rate: Some(1), ..audio() }, None),
        (
            "sample rate 0",
            || AssetMetadata { sample_rate: Some(0), ..audio() },
            Some(("sample_rate 0", "1..=768000 Hz (Plausibility::min_sample_rate)")),
        ),
        ("sample rate 768k", || AssetMetadata { sample_rate: Some(768_000), ..audio() }, None),
        (
            "sample rate 768k+1",
            || AssetMetadata { sample_rate: Some(768_001), ..audio() },
            Some(("sample_rate 768001", "1..=768000 Hz (Plausibility::max_sample_rate)")),
        ),
        ("channels 1", || AssetMetadata { channels: Some(1), ..audio() }, None),
        ("channels 0", || AssetMetadata { channels: Some(0), ..audio() }, Some(("channels 0", "1..=1024"))),
        ("channels 1024", || AssetMetadata { channels: Some(1024), ..audio() }, None),
        (
            "channels 1025",
            || AssetMetadata { channels: Some(1025), ..audio() },
            Some(("channels 1025", "1..=1024")),
        ),
        ("pages 1", || AssetMetadata { page_count: Some(1), ..document() }, None),
        (
            "pages 0",
            || AssetMetadata { page_count: Some(0), ..document() },
            Some(("page_count 0", "1..=8388607")),
        ),
        ("pages 8388607", || AssetMetadata { page_count: Some(8_388_607), ..document() }, None),
        (
            "pages 8388608",
            || AssetMetadata { page_count: Some(8_388_608), ..document() },
            Some(("page_count 8388608", "1..=8388607")),
        ),
        ("orientation 1", || AssetMetadata { orientation: Some(1), ..document() }, None),
        ("orientation 8", || AssetMetadata { orientation: Some(8), ..document() }, None),
        (
            "orientation 0",
            || AssetMetadata { orientation: Some(0), ..document() },
            Some(("orientation 0", "outside 1..=8")),
        ),
        (
            "orientation 9",
            || AssetMetadata { orientation: Some(9), ..document() },
            Some(("orientation 9", "outside 1..=8")),
        ),
        // Frame count against duration × rate (2 s × 25 fps = 50): ×100 and 10 frames.
        ("frames 5000 of 50", || AssetMetadata { frame_count: Some(5000), ..video() }, None),
        (
            "frames 5001 of 50",
            || AssetMetadata { frame_count: Some(5001), ..video() },
            Some((
                "frame_count 5001",
                "more than 100x and 10 frames away from duration_seconds 2 × frame_rate 25 = 50",
            )),
        ),
        (
            // A sparse variable-frame-rate capture: an hour at a nominal 60 fps, 2160
            // frames stored (1/100 of nominal).
            "frames 2160 of 216000",
            || AssetMetadata {
                frame_count: Some(2160),
                duration_seconds: Some(3600.0),
                frame_rate: Some(60.0),
                ..video()
            },
            None,
        ),
        (
            "frames 2159 of 216000",
            || AssetMetadata {
                frame_count: Some(2159),
                duration_seconds: Some(3600.0),
                frame_rate: Some(60.0),
                ..video()
            },
            Some(("frame_count 2159", "= 216000 frames")),
        ),
        (
            // Ratios are meaningless for a clip this short: 10 frames apart passes.
            "frames 10 of 0",
            || AssetMetadata { frame_count: Some(10), duration_seconds: Some(0.0), ..video() },
            None,
        ),
        (
            "frames 11 of 0",
            || AssetMetadata { frame_count: Some(11), duration_seconds: Some(0.0), ..video() },
            Some(("frame_count 11", "= 0 frames")),
        ),
        (
            "frames 1 of 0.04",
            || AssetMetadata { frame_count: Some(1), duration_seconds: Some(0.0016), ..video() },
            None,
        ),
        (
            "rounded 29.97 fps",
            || AssetMetadata {
                frame_count: Some(60),
                duration_seconds: Some(2.002),
                frame_rate: Some(29.97),
                ..video()
            },
            None,
        ),
        (
            "issue 9: MP4 4.3e14 frames",
            || AssetMetadata { frame_count: Some(430_000_000_000_000), ..video() },
            Some(("frame_count 430000000000000", "1..=10000000000")),
        ),
        (
            "mime",
            || AssetMetadata { mime: "video/mp4\0".into(), ..video() },
            Some(("mime \"video/mp4\\0\"", "1 to 64 bytes")),
        ),
        (
            "empty mime",
            || AssetMetadata { mime: String::new(), ..video() },
            Some(("mime \"\"", "1 to 64 bytes")),
        ),
    ];

    #[test]
    fn every_bound_passes_just_inside_and_fails_just_outside() {
        let bounds = Plausibility::default();
        let mut wrong = Vec::new();
        for (name, make, expect) in CASES {
            let meta = make();
            match (check(meta.clone(), &bounds), expect) {
                (Ok(out), None) if out == meta => {}
                (Ok(out), None) => wrong.push(format!("{name}: changed to {out:?}")),
                (Ok(_), Some(_)) => wrong.push(format!("{name}: passed")),
                (Err(e), Some((field, bound))) => {
                    let msg = e.to_string();
                    if e.code() != asset_core::ErrorCode::CorruptFile
                        || !msg.contains(field)
                        || !msg.contains(bound)
                    {
                        wrong.push(format!(
                            "{name}: {:?} {msg:?} does not name {field:?} and {bound:?}",
                            e.code()
                        ));
                    }
                }
                (Err(e), None) => wrong.push(format!("{name}: {e}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn tightened_bounds_are_the_ones_applied() {
        let tight = Plausibility { max_dimension: 100, max_frame_rate: 24, ..Plausibility::default() };
        let err = check(video(), &tight).unwrap_err().to_string();
        assert!(err.contains("width 160 is outside the plausible range 1..=100"), "{err}");
        let err = check(AssetMetadata { width: Some(100), ..video() }, &tight).unwrap_err().to_string();
        assert!(err.contains("frame_rate 25 is outside the plausible range 1e-7..=24 fps"), "{err}");
    }

    #[test]
    fn a_volume_deeper_than_max_slices_is_corrupt() {
        let volume = |slices| AssetMetadata {
            width: Some(33),
            height: Some(17),
            frame_count: Some(slices),
            ..AssetMetadata::new(asset_core::DataType::MedicalVolume, "application/x-nifti", 3157)
        };
        let bounds = Plausibility::default();
        assert_eq!(check(volume(1_000_000), &bounds).unwrap().frame_count, Some(1_000_000));
        let err = check(volume(1_000_001), &bounds).unwrap_err().to_string();
        assert!(
            err.contains("frame_count 1000001 is outside the plausible range 1..=1000000 slices"),
            "{err}"
        );
        assert!(check(volume(0), &bounds).is_err());
    }

    #[test]
    fn unsafe_strings_are_dropped_and_the_asset_kept() {
        let bounds = Plausibility::default();
        let long = "x".repeat(64);
        let kept = ["h264", "V_MPEG4/ISO/AVC", "0x1234", "pcm_s16le", long.as_str(), "dvc ", "~!"];
        for s in kept {
            let out = check(AssetMetadata { codec: Some(s.into()), ..video() }, &bounds).unwrap();
            assert_eq!(out.codec.as_deref(), Some(s));
        }
        let too_long = "x".repeat(65);
        let dropped = [
            "V_X\0Y",
            "h264\0",
            "\u{7}beep",
            "\u{1b}[31mred",
            "del\u{7f}",
            "caf\u{e9}",
            "\u{202e}4pm",
            "\u{fffd}",
            "",
            too_long.as_str(),
        ];
        for s in dropped {
            let mut m = video();
            m.codec = Some(s.into());
            m.encoding = Some(s.into());
            m.modality = Some(s.into());
            let out = check(m, &bounds).unwrap();
            assert_eq!((out.codec, out.encoding, out.modality), (None, None, None), "{s:?}");
            // The rest of the answer stands.
            assert_eq!((out.width, out.frame_count), (Some(160), Some(50)));
        }
    }
}
