//! The one error type of the storage crate. Every variant names what failed, carries its
//! source, and classifies itself (stable code, retryable or not) so that only the queue
//! layer decides between ack, retry and reject.

use std::error::Error as StdError;

use asset_core::ErrorCode;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a storage operation failed. Messages never contain a secret, a session token or a
/// signed URL: sources are scrubbed (e.g. reqwest errors lose their URL) before they are
/// stored here.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The integration object is malformed (refused before any network call).
    #[error("invalid integration: {field}: {reason}")]
    InvalidIntegration { field: &'static str, reason: String },

    /// The asset URL does not name an object of this integration (SSRF guard).
    #[error("url not in storage: {reason}")]
    UrlNotInStorage { reason: String },

    /// `secret_ref` could not be resolved, or the base identity has no credentials.
    #[error("credentials: {what}")]
    Credentials {
        what: String,
        #[source]
        source: Option<BoxError>,
    },

    /// The storage or STS refused the request (HTTP 403, AccessDenied, bad signature,
    /// expired URL, wrong ExternalId…). `service_code` is the provider's own code.
    #[error("access denied by {service}: {service_code}: {message}")]
    AccessDenied { service: &'static str, service_code: String, message: String },

    /// The bucket or object does not exist (HTTP 404).
    #[error("not found: {what}")]
    NotFound { what: String },

    /// The provider asked us to slow down (HTTP 503 SlowDown, 429, Throttling).
    #[error("throttled by {service}: {message}")]
    Throttled { service: &'static str, message: String },

    /// Connecting or reading took longer than configured.
    #[error("timeout while {during}")]
    Timeout {
        during: &'static str,
        #[source]
        source: Option<BoxError>,
    },

    /// Any other failure of the remote side: 5xx, connection reset, unexpected status.
    #[error("upstream {service} failed: {message}")]
    Upstream {
        service: &'static str,
        message: String,
        /// Whether trying again may succeed (5xx, resets) or not (other 4xx).
        retryable: bool,
        #[source]
        source: Option<BoxError>,
    },

    /// The object is larger than the configured limit; the download stopped early.
    #[error("object too large: more than {limit} bytes (stopped after {received})")]
    TooLarge { limit: u64, received: u64 },

    /// A ranged read got a reply it cannot use: no object size, another range than
    /// the one asked for, an object replaced between two reads. Not retried as such:
    /// the caller reads the whole object instead.
    #[error("ranged read failed: {reason}")]
    RangedReadFailed { reason: String },

    /// Local file-system failure (temp dir, temp file, local provider).
    #[error("i/o while {during}")]
    Io {
        during: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// The stable code users see for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::InvalidIntegration { .. } => ErrorCode::InvalidIntegration,
            StorageError::UrlNotInStorage { .. } => ErrorCode::UrlNotInStorage,
            StorageError::Credentials { .. } => ErrorCode::Credentials,
            StorageError::AccessDenied { .. } => ErrorCode::AccessDenied,
            StorageError::NotFound { .. } => ErrorCode::NotFound,
            StorageError::Throttled { .. } => ErrorCode::Throttled,
            StorageError::Timeout { .. } => ErrorCode::Timeout,
            StorageError::Upstream { .. } => ErrorCode::Upstream,
            StorageError::TooLarge { .. } => ErrorCode::TooLarge,
            StorageError::RangedReadFailed { .. } => ErrorCode::Upstream,
            StorageError::Io { .. } => ErrorCode::Io,
        }
    }

    /// Transient faults only: 5xx, throttling, connection resets, timeouts. Never 403,
    /// 404 or a validation failure.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Throttled { .. } | StorageError::Timeout { .. } => true,
            StorageError::Upstream { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// A ranged read failed in a way a full download of the object may not.
    pub fn wants_full_download(&self) -> bool {
        matches!(self, StorageError::RangedReadFailed { .. })
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StorageError::InvalidIntegration { field, reason: reason.into() }
    }

    pub(crate) fn not_in_storage(reason: impl Into<String>) -> Self {
        StorageError::UrlNotInStorage { reason: reason.into() }
    }

    pub(crate) fn io(during: &'static str, source: std::io::Error) -> Self {
        StorageError::Io { during, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_faults_are_retryable() {
        let denied = StorageError::AccessDenied {
            service: "s3",
            service_code: "AccessDenied".into(),
            message: "no".into(),
        };
        assert!(!denied.is_retryable());
        assert_eq!(denied.code().as_str(), "access_denied");
        assert!(!StorageError::NotFound { what: "key".into() }.is_retryable());
        assert!(!StorageError::invalid("region", "unknown").is_retryable());
        assert!(StorageError::Throttled { service: "s3", message: "SlowDown".into() }.is_retryable());
        let reset =
            StorageError::Upstream { service: "s3", message: "reset".into(), retryable: true, source: None };
        assert!(reset.is_retryable());
        assert_eq!(reset.code().as_str(), "upstream");
        assert_eq!(StorageError::TooLarge { limit: 1, received: 2 }.code().as_str(), "too_large");
    }
}
