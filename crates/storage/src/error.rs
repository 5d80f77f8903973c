//! The one error type of the storage crate. Every variant names what failed, carries its
//! source, and classifies itself (stable code, retryable or not) so that only the queue
//! layer decides between ack, retry and reject.

use std::error::Error as StdError;

use asset_core::ErrorCode;

use crate::egress::EgressRefused;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a storage operation failed. Messages are our own sentences: they never contain a
/// secret, a session token or a signed URL (reqwest errors lose their URL before they are
/// stored here), and never the free text of a storage server or the SDK's debug text —
/// of what a server said only its error code is kept, sanitised by [`service_code`].
/// Messages become results' `error.message`, which the customer and the platform read.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The integration object is malformed (refused before any network call).
    #[error("invalid integration: {field}: {reason}")]
    InvalidIntegration { field: &'static str, reason: String },

    /// The asset URL does not name an object of this integration (SSRF guard).
    #[error("url not in storage: {reason}")]
    UrlNotInStorage { reason: String },

    /// The storage endpoint is, or resolves to, an address the egress policy refuses
    /// (loopback, link-local, private…); no connection was attempted.
    #[error("endpoint not allowed: {reason}")]
    EndpointNotAllowed { reason: String },

    /// `secret_ref` breaks the rule that binds secrets to the integration's organisation
    /// (refused before any request); `reason` states the rule.
    #[error("secret_ref not allowed: {reason}")]
    SecretRefNotAllowed { reason: String },

    /// The secret could not be read, or the base identity has no credentials.
    #[error("credentials: {what}")]
    Credentials {
        what: String,
        #[source]
        source: Option<BoxError>,
    },

    /// The storage or STS refused the request (HTTP 403, AccessDenied, bad signature,
    /// expired URL, wrong ExternalId…). `service_code` is the provider's own code.
    #[error("access denied by {service} ({service_code}): {reason}")]
    AccessDenied { service: &'static str, service_code: String, reason: &'static str },

    /// The bucket or object does not exist (HTTP 404).
    #[error("not found: {what}")]
    NotFound { what: String },

    /// The provider asked us to slow down (HTTP 503 SlowDown, 429, Throttling).
    #[error("throttled by {service} ({service_code})")]
    Throttled { service: &'static str, service_code: String },

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

    /// Local file-system failure (temp dir, temp file, local provider). Running out of
    /// a local resource (disk, quota, file descriptors, memory) is transient: see
    /// [`StorageError::is_local_exhaustion`].
    #[error("i/o while {during}: {}", io_cause(source))]
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
            StorageError::EndpointNotAllowed { .. } => ErrorCode::EndpointNotAllowed,
            StorageError::SecretRefNotAllowed { .. } => ErrorCode::SecretRefNotAllowed,
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

    /// Transient faults only: 5xx, throttling, connection resets, timeouts, and local
    /// exhaustion (a full temp dir frees up). Never 403, 404, a policy refusal or a
    /// validation failure.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Throttled { .. } | StorageError::Timeout { .. } => true,
            StorageError::Upstream { retryable, .. } => *retryable,
            StorageError::Io { .. } => self.is_local_exhaustion(),
            _ => false,
        }
    }

    /// This worker ran out of a local resource (ENOSPC, EDQUOT, EMFILE, ENFILE, ENOMEM):
    /// the asset is fine, the worker is not. Retryable, but not in place — another
    /// download would meet the same full disk — so the caller should requeue the job and
    /// say it is not ready rather than write an error result.
    pub fn is_local_exhaustion(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => exhaustion(source).is_some(),
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

    pub(crate) fn secret_ref(reason: impl Into<String>) -> Self {
        StorageError::SecretRefNotAllowed { reason: reason.into() }
    }

    pub(crate) fn io(during: &'static str, source: std::io::Error) -> Self {
        StorageError::Io { during, source }
    }
}

impl From<EgressRefused> for StorageError {
    fn from(refused: EgressRefused) -> Self {
        StorageError::EndpointNotAllowed { reason: refused.reason().to_owned() }
    }
}

/// What a storage server's error code may be in our messages: up to 64 characters of
/// `[A-Za-z0-9._-]`, else nothing (a code that is not one is free text in disguise).
pub(crate) fn service_code(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let ok = (1..=64).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| raw.to_owned())
}

/// The errno of local exhaustion, named.
fn exhaustion(e: &std::io::Error) -> Option<&'static str> {
    match e.raw_os_error()? {
        libc::ENOSPC => Some("no space left on device"),
        libc::EDQUOT => Some("disk quota exceeded"),
        libc::EMFILE => Some("too many open files"),
        libc::ENFILE => Some("too many open files in the system"),
        libc::ENOMEM => Some("out of memory"),
        _ => None,
    }
}

/// The cause of an I/O error for a message: exhaustion by name and errno, else the
/// error's own text (std's description of an errno, or our own sentence).
fn io_cause(e: &std::io::Error) -> String {
    match (exhaustion(e), e.raw_os_error()) {
        (Some(name), Some(errno)) => format!("{name} (os error {errno})"),
        _ => e.to_string(),
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
            reason: "the storage refused the request",
        };
        assert!(!denied.is_retryable());
        assert_eq!(denied.code().as_str(), "access_denied");
        assert!(!StorageError::NotFound { what: "key".into() }.is_retryable());
        assert!(!StorageError::invalid("region", "unknown").is_retryable());
        assert!(StorageError::Throttled { service: "s3", service_code: "SlowDown".into() }.is_retryable());
        assert!(!StorageError::EndpointNotAllowed { reason: "loopback".into() }.is_retryable());
        assert_eq!(
            StorageError::secret_ref("env:NAME reads ORG_SECRET_<ORG>__<NAME> only").code().as_str(),
            "secret_ref_not_allowed"
        );
        assert!(!StorageError::secret_ref("x").is_retryable());
        let reset =
            StorageError::Upstream { service: "s3", message: "reset".into(), retryable: true, source: None };
        assert!(reset.is_retryable());
        assert_eq!(reset.code().as_str(), "upstream");
        assert_eq!(StorageError::TooLarge { limit: 1, received: 2 }.code().as_str(), "too_large");
    }

    #[test]
    fn local_exhaustion_is_retryable_and_named_with_its_errno() {
        for (errno, name) in [
            (libc::ENOSPC, "no space left on device"),
            (libc::EDQUOT, "disk quota exceeded"),
            (libc::EMFILE, "too many open files"),
            (libc::ENFILE, "too many open files in the system"),
            (libc::ENOMEM, "out of memory"),
        ] {
            let e = StorageError::io("writing the temp file", std::io::Error::from_raw_os_error(errno));
            assert!(e.is_local_exhaustion() && e.is_retryable(), "{e}");
            assert_eq!(e.code().as_str(), "io");
            assert_eq!(e.to_string(), format!("i/o while writing the temp file: {name} (os error {errno})"));
        }
        assert!(
            StorageError::io("x", std::io::Error::from_raw_os_error(libc::ENOSPC))
                .to_string()
                .ends_with("no space left on device (os error 28)")
        );
        for errno in [libc::EACCES, libc::EIO, libc::EROFS, libc::ENOENT] {
            let e = StorageError::io("writing the temp file", std::io::Error::from_raw_os_error(errno));
            assert!(!e.is_local_exhaustion() && !e.is_retryable(), "{e}");
            assert!(e.to_string().contains(&format!("(os error {errno})")), "{e}");
        }
        let other =
            StorageError::io("preparing the temp directory", std::io::Error::other("not a directory"));
        assert!(!other.is_retryable());
        assert!(!StorageError::Timeout { during: "x", source: None }.is_local_exhaustion());
    }

    #[test]
    fn service_codes_are_kept_only_when_they_look_like_codes() {
        assert_eq!(service_code(" NoSuchKey ").as_deref(), Some("NoSuchKey"));
        assert_eq!(service_code("XMinioStorageFull").as_deref(), Some("XMinioStorageFull"));
        assert_eq!(service_code("Invalid.Argument_x-1").as_deref(), Some("Invalid.Argument_x-1"));
        assert_eq!(service_code(""), None);
        assert_eq!(service_code(&"A".repeat(65)), None);
        assert_eq!(service_code("Access Denied"), None);
        assert_eq!(service_code("<b>x</b>"), None);
        assert_eq!(service_code("Erreur\u{e9}"), None);
    }
}
