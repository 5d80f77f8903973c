//! Domain types every crate of the pipeline shares: what an asset is, the metadata we
//! extract, the stable error codes users see, and the limits every parser runs under.
//! Nothing here does I/O, so every crate can depend on it without pulling a runtime.

pub mod integration;
pub mod playable;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use integration::{
    Access, AzureAccess, AzureIntegration, GcsAccess, GcsIntegration, Integration, LocalIntegration,
    S3Integration,
};
pub use playable::{PLAYABLE, Playable, browser_playable};

/// The kinds of asset the labeling platform displays. Detected from content, never
/// from a file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Image,
    Video,
    Audio,
    Text,
    Dicom,
    Pdf,
    /// A volume in a medical format other than DICOM (NIfTI, NRRD): `width`, `height`
    /// and the slice count as `frame_count`.
    MedicalVolume,
}

impl DataType {
    pub const ALL: [DataType; 7] = [
        DataType::Image,
        DataType::Video,
        DataType::Audio,
        DataType::Text,
        DataType::Dicom,
        DataType::Pdf,
        DataType::MedicalVolume,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Image => "image",
            DataType::Video => "video",
            DataType::Audio => "audio",
            DataType::Text => "text",
            DataType::Dicom => "dicom",
            DataType::Pdf => "pdf",
            DataType::MedicalVolume => "medical_volume",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stable, machine-readable error codes. These strings are a public contract: they
/// appear in probe output, in result messages and in the database, so a variant may be
/// added but never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    // The customer's file.
    UnsupportedFormat,
    CorruptFile,
    Truncated,
    TooLarge,
    Encrypted,
    Io,
    /// A parser crashed on the file (stack overflow, abort): the file is hostile or
    /// hits a bug; the worker itself goes on.
    ParserCrashed,
    // Reaching the customer's storage.
    AccessDenied,
    NotFound,
    UrlNotInStorage,
    /// The storage endpoint resolves to an address the egress policy refuses (loopback,
    /// link-local, private…) and no operator allow-list admits it.
    EndpointNotAllowed,
    /// `secret_ref` breaks the rule binding secrets to the integration's organisation.
    SecretRefNotAllowed,
    InvalidIntegration,
    Credentials,
    Throttled,
    Timeout,
    Upstream,
    // Messages and the pipeline itself.
    InvalidJob,
    Cancelled,
    Internal,
}

impl ErrorCode {
    /// Every code, for schemas and docs that must list them all.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::UnsupportedFormat,
        ErrorCode::CorruptFile,
        ErrorCode::Truncated,
        ErrorCode::TooLarge,
        ErrorCode::Encrypted,
        ErrorCode::Io,
        ErrorCode::ParserCrashed,
        ErrorCode::AccessDenied,
        ErrorCode::NotFound,
        ErrorCode::UrlNotInStorage,
        ErrorCode::EndpointNotAllowed,
        ErrorCode::SecretRefNotAllowed,
        ErrorCode::InvalidIntegration,
        ErrorCode::Credentials,
        ErrorCode::Throttled,
        ErrorCode::Timeout,
        ErrorCode::Upstream,
        ErrorCode::InvalidJob,
        ErrorCode::Cancelled,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedFormat => "unsupported_format",
            ErrorCode::CorruptFile => "corrupt_file",
            ErrorCode::Truncated => "truncated",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Encrypted => "encrypted",
            ErrorCode::Io => "io",
            ErrorCode::ParserCrashed => "parser_crashed",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UrlNotInStorage => "url_not_in_storage",
            ErrorCode::EndpointNotAllowed => "endpoint_not_allowed",
            ErrorCode::SecretRefNotAllowed => "secret_ref_not_allowed",
            ErrorCode::InvalidIntegration => "invalid_integration",
            ErrorCode::Credentials => "credentials",
            ErrorCode::Throttled => "throttled",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Upstream => "upstream",
            ErrorCode::InvalidJob => "invalid_job",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `{"code", "message"}` object that output formats carry for a failed asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// What the probe extracts. Field names are the output contract of `probe` and of the
/// `asset-metadata/v1` message; absent values are omitted, never written as null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetMetadata {
    pub data_type: DataType,
    pub mime: String,
    pub size_bytes: u64,
    /// Display dimensions (EXIF orientation 5–8 and video rotation 90/270 applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Raw EXIF orientation tag, 1–8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orientation: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_count: Option<u64>,
    /// Average frames per second of the main video stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// Unicode scalar values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub char_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// DICOM Modality (0008,0060), e.g. `CT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    /// Video and audio: whether the container + codec pair plays in current Chrome,
    /// Firefox and Safari without transcoding ([`playable::PLAYABLE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_playable: Option<bool>,
}

impl AssetMetadata {
    /// Metadata with only the always-present fields set; extractors fill in the rest.
    pub fn new(data_type: DataType, mime: impl Into<String>, size_bytes: u64) -> Self {
        AssetMetadata {
            data_type,
            mime: mime.into(),
            size_bytes,
            width: None,
            height: None,
            orientation: None,
            duration_seconds: None,
            frame_count: None,
            frame_rate: None,
            sample_rate: None,
            channels: None,
            page_count: None,
            codec: None,
            char_count: None,
            line_count: None,
            encoding: None,
            modality: None,
            browser_playable: None,
        }
    }
}

/// Explicit bounds every parser runs under, so a hostile file costs a bounded amount of
/// memory and time whatever it declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest file the probe accepts at all.
    pub max_file_bytes: u64,
    /// Largest width × height an image may declare.
    pub max_pixels: u64,
    /// Largest width or height, each, an image may declare.
    pub max_dimension: u32,
    /// Most bytes a parser may hold in memory at once (e.g. a PDF's objects, a header).
    pub max_memory_bytes: u64,
    /// Deepest nesting a tree-shaped format may have (PDF page tree, EBML, atoms).
    pub max_nesting: u32,
    /// Most pages, frames or packets a parser may walk.
    pub max_items: u64,
    /// Wall-clock budget for one file, in milliseconds.
    pub max_millis: u64,
    /// What a reported value may be at all; see [`Plausibility`].
    #[serde(default)]
    pub plausibility: Plausibility,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 64 * 1024 * 1024 * 1024,
            max_pixels: 1 << 30,
            max_dimension: 65_535 * 4,
            max_memory_bytes: 32 * 1024 * 1024,
            max_nesting: 64,
            max_items: 10_000_000,
            max_millis: 2_000,
            plausibility: Plausibility::default(),
        }
    }
}

/// The range of values real assets have. A value an extractor read outside it is not
/// metadata but a lying or damaged header (2^31-pixel AVI frames, 1.8e19-second
/// durations, 0×0 HEIF images: issue 9), so the probe reports the asset as
/// `corrupt_file`, naming the field and the bound, instead of writing the value.
/// Unlike the rest of [`Limits`] these bounds are about truth, not cost: each sits well
/// outside anything a real encoder writes, and each field says why. Only the fields an
/// extractor reports are checked; an absent field is never an error. `orientation`
/// must be 1–8, the EXIF tag's only values. Tests may tighten the bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Plausibility {
    /// Width and height, each, run from 1 to this, in pixels (PDF: points). 0 is no
    /// image. 16K video is 15,360 px wide, the largest codec level (AV1) 65,536;
    /// gigapixel panoramas and whole-slide scans reach ~200,000 px a side; a PDF page
    /// is at most 14,400 pt before UserUnit. Not a resource bound: a raster image is
    /// refused earlier, as `too_large`, past [`Limits::max_dimension`].
    pub max_dimension: u32,
    /// Durations run from 0 to this, in seconds, and are finite. 10^7 s is 115 days,
    /// longer than any recording (a month of continuous CCTV is 2.6 × 10^6 s); 0 is
    /// an empty stream, which encoders do write.
    pub max_duration_seconds: u64,
    /// Frame rates run up to this, in frames per second, and are finite. Stored rates
    /// stop at a few hundred (phones store 240 fps slow motion as captured);
    /// high-speed cameras capture at thousands but export at a playback rate. The
    /// lowest is one frame in [`Plausibility::max_duration_seconds`]: below it there
    /// is no stream.
    pub max_frame_rate: u32,
    /// Frame counts run from 1 (0 frames is no video, and no extractor reports a
    /// count it does not have) to this: `max_duration_seconds × max_frame_rate`, the
    /// most frames any plausible duration and rate could hold.
    pub max_frame_count: u64,
    /// How far apart `frame_count` and `duration_seconds × frame_rate` may be, as a
    /// factor either way, when all three are reported. Headers disagree for good
    /// reasons: variable-frame-rate streams store a nominal rate (240 fps slow-motion
    /// segments in a 24 fps stream are 10× over it, a screen capture that stores
    /// frames only on change is far under it), the duration is the longest track's (a
    /// short video beside a long audio track), and AVI writers that count only the
    /// first RIFF in `strh` are off by the file's size in GiB. The absurd counts of
    /// issue 9 were 10^5–10^14 off: two orders of magnitude keeps both sides apart.
    pub frame_count_ratio: u32,
    /// Frames by which the two may always differ, whatever the ratio: rounding, a
    /// partial frame at either end, and very short clips, where any ratio is possible
    /// (a single frame with a 0 s duration is a real file).
    pub frame_count_slack: u64,
    /// Lowest sample rate, in Hz. Real audio starts at 8 kHz, but sensor and
    /// infrasound recordings are stored as WAV at a few Hz: only 0 is impossible.
    pub min_sample_rate: u32,
    /// Highest sample rate, in Hz. 768 kHz is the highest PCM rate any converter offers
    /// (DXD, the highest mastering rate, is 352.8 kHz). DSD reaches the containers we read as DoP: PCM at 176.4, 352.8 and
    /// 705.6 kHz for DSD64, 128 and 256. FLAC's 20-bit field could say 1,048,575 Hz;
    /// no real file does. A reader of raw DSD (DSF, DFF) would report up to 45 MHz and
    /// must raise this.
    pub max_sample_rate: u32,
    /// Channels run from 1 to this. Opus and Vorbis signal at most 255 (Opus's
    /// 14th-order ambisonics uses 227); multitrack recorders write a MADI link's 64
    /// channels, or several links', into one WAV. 1,024 leaves room above any real rig
    /// and still refuses WAV's 65,535.
    pub max_channels: u32,
    /// Page counts run from 1 to this. PDF readers cap a file's indirect objects at
    /// 8,388,607 (ISO 32000-1, Annex C) and every page is one; a multi-page TIFF (fax,
    /// scanned archive) runs to thousands.
    pub max_page_count: u32,
    /// Longest string a file may supply (`codec`, `encoding`, `modality`), in bytes;
    /// it must also be printable ASCII (0x20–0x7E). Every real value is: a FourCC, a
    /// Matroska CodecID, a DICOM CS value (16 bytes at most), an encoding label. Any
    /// other byte (a NUL, which PostgreSQL's jsonb cannot store; a terminal escape; a
    /// bidi override) is unsafe to store or display. An offending string is dropped
    /// and its field omitted rather than failing the asset: it is a label, and the
    /// asset displays without it. `mime` cannot be omitted, so a bad MIME type (never
    /// file-supplied today) makes the asset `corrupt_file`.
    pub max_string_bytes: usize,
    /// Slices of a medical volume (`frame_count` of `medical_volume`) run from 1 to this.
    /// The deepest real stacks (micro-CT, light-sheet microscopy) hold about 10^4
    /// slices; NIfTI-1 cannot store more than 32,767. 10^6 leaves room above any of
    /// them and still refuses NIfTI-2's and NRRD's 2^63.
    pub max_slices: u64,
}

impl Default for Plausibility {
    fn default() -> Self {
        Plausibility {
            max_dimension: 1_000_000,
            max_duration_seconds: 10_000_000,
            max_frame_rate: 1_000,
            max_frame_count: 10_000_000 * 1_000,
            frame_count_ratio: 100,
            frame_count_slack: 10,
            min_sample_rate: 1,
            max_sample_rate: 768_000,
            max_channels: 1_024,
            max_page_count: 8_388_607,
            max_string_bytes: 64,
            max_slices: 1_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_stable_strings() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn max_frame_count_is_the_longest_duration_at_the_highest_rate() {
        let p = Plausibility::default();
        assert_eq!(p.max_frame_count, p.max_duration_seconds * u64::from(p.max_frame_rate));
    }

    #[test]
    fn limits_written_before_plausibility_existed_still_read() {
        let mut json = serde_json::to_value(Limits::default()).unwrap();
        json.as_object_mut().unwrap().remove("plausibility");
        let limits: Limits = serde_json::from_value(json).unwrap();
        assert_eq!(limits.plausibility, Plausibility::default());
        let tightened: Plausibility = serde_json::from_str(r#"{"max_dimension": 100}"#).unwrap();
        assert_eq!(tightened, Plausibility { max_dimension: 100, ..Plausibility::default() });
    }

    #[test]
    fn metadata_omits_absent_fields() {
        let mut m = AssetMetadata::new(DataType::Image, "image/png", 10);
        m.width = Some(3);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"data_type": "image", "mime": "image/png", "size_bytes": 10, "width": 3})
        );
    }
}
