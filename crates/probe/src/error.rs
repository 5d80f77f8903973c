//! The probe's one error type. Every failure names the format and what was wrong, and
//! maps to a stable [`ErrorCode`]; a bad customer file is never retried.

use asset_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error("unsupported format: {what}")]
    Unsupported { what: String },
    #[error("corrupt {format} file: {detail}")]
    Corrupt { format: &'static str, detail: String },
    #[error("truncated {format} file: {detail}")]
    Truncated { format: &'static str, detail: String },
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge { what: String, limit: u64 },
    #[error("encrypted {format} file")]
    Encrypted { format: &'static str },
    #[error("probe took longer than {millis} ms")]
    TimedOut { millis: u64 },
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    /// The probe process died on this file (a stack overflow, an abort, a signal):
    /// the file makes a parser crash. Not retried: it would crash again.
    #[error("the parser crashed on this file: {detail}")]
    Crashed { detail: String },
    /// An error a probe process reported, with its code and message as it gave them.
    #[error("{message}")]
    Reported { code: ErrorCode, message: String },
    /// Only from [`probe_partial`](crate::probe_partial): the answer depends on bytes not
    /// downloaded yet. Not a fault of the file: callers of the ranged API fetch the
    /// bytes and probe again, and never write this as a result (its code is `internal`).
    #[error("{len} bytes at offset {offset} are needed and not downloaded yet")]
    NeedBytes { offset: u64, len: u64, whole_file: bool },
}

impl ProbeError {
    pub fn corrupt(format: &'static str, detail: impl std::fmt::Display) -> Self {
        ProbeError::Corrupt { format, detail: detail.to_string() }
    }

    pub fn truncated(format: &'static str, detail: impl std::fmt::Display) -> Self {
        ProbeError::Truncated { format, detail: detail.to_string() }
    }

    pub fn unsupported(what: impl std::fmt::Display) -> Self {
        ProbeError::Unsupported { what: what.to_string() }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ProbeError::Unsupported { .. } => ErrorCode::UnsupportedFormat,
            ProbeError::Corrupt { .. } => ErrorCode::CorruptFile,
            ProbeError::Truncated { .. } => ErrorCode::Truncated,
            ProbeError::TooLarge { .. } => ErrorCode::TooLarge,
            ProbeError::Encrypted { .. } => ErrorCode::Encrypted,
            ProbeError::TimedOut { .. } => ErrorCode::Timeout,
            ProbeError::Io(_) => ErrorCode::Io,
            ProbeError::Crashed { .. } => ErrorCode::ParserCrashed,
            ProbeError::Reported { code, .. } => *code,
            ProbeError::NeedBytes { .. } => ErrorCode::Internal,
        }
    }

    /// A probe error is about the file's content, which will not change on retry. Only a
    /// local I/O fault (disk full, temp dir gone) may succeed on another attempt.
    /// [`ProbeError::NeedBytes`] is not retryable either: it asks for a fetch, not a retry.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProbeError::Io(_) | ProbeError::Reported { code: ErrorCode::Io, .. })
    }

    /// What a partial probe still needs, if that is why it stopped.
    pub fn need(&self) -> Option<crate::ranged::Need> {
        match *self {
            ProbeError::NeedBytes { offset, len, whole_file } => {
                Some(crate::ranged::Need { offset, len, whole_file })
            }
            _ => None,
        }
    }
}

pub type Result<T, E = ProbeError> = std::result::Result<T, E>;
