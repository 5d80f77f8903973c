//! Domain types every crate of the pipeline shares: what an asset is, the metadata we
//! extract, the stable error codes users see, and the limits every parser runs under.
//! Nothing here does I/O, so every crate can depend on it without pulling a runtime.

pub mod integration;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use integration::{Access, Integration, LocalIntegration, S3Integration};

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
}

impl DataType {
    pub const ALL: [DataType; 6] =
        [DataType::Image, DataType::Video, DataType::Audio, DataType::Text, DataType::Dicom, DataType::Pdf];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Image => "image",
            DataType::Video => "video",
            DataType::Audio => "audio",
            DataType::Text => "text",
            DataType::Dicom => "dicom",
            DataType::Pdf => "pdf",
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
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::UnsupportedFormat,
        ErrorCode::CorruptFile,
        ErrorCode::Truncated,
        ErrorCode::TooLarge,
        ErrorCode::Encrypted,
        ErrorCode::Io,
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
            max_millis: 30_000,
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
