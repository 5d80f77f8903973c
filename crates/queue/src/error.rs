//! The crate's one error enum: every broker failure names what was being done and
//! classifies itself as retryable or not.

use asset_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The AMQP URL does not parse; the URL itself is never echoed (it holds a password).
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
    #[error("cannot connect to the broker at {host}: {source}")]
    Connect { host: String, source: lapin::Error },
    #[error("declaring {what} failed: {source}")]
    Declare { what: String, source: lapin::Error },
    #[error("broker operation {op} failed: {source}")]
    Channel { op: &'static str, source: lapin::Error },
    #[error("the broker did not confirm the message published to {routing_key:?} ({why})")]
    NotConfirmed { routing_key: String, why: &'static str },
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The address took longer than `connect_timeout` to connect and declare.
    #[error("the broker at {host} did not answer within {after:?}")]
    ConnectTimeout { host: String, after: std::time::Duration },
}

impl QueueError {
    pub fn code(&self) -> ErrorCode {
        match self {
            QueueError::InvalidUrl(_) => ErrorCode::InvalidJob,
            QueueError::Encode(_) => ErrorCode::Internal,
            QueueError::ConnectTimeout { .. } => ErrorCode::Timeout,
            QueueError::Connect { .. }
            | QueueError::Declare { .. }
            | QueueError::Channel { .. }
            | QueueError::NotConfirmed { .. } => ErrorCode::Upstream,
        }
    }

    /// Broker hiccups pass; a bad URL or a topology that contradicts the broker's
    /// (PRECONDITION_FAILED on declare) does not.
    pub fn is_retryable(&self) -> bool {
        match self {
            QueueError::InvalidUrl(_) | QueueError::Encode(_) => false,
            QueueError::Declare { source, .. } => !matches!(source, lapin::Error::ProtocolError(_)),
            QueueError::Connect { .. }
            | QueueError::ConnectTimeout { .. }
            | QueueError::Channel { .. }
            | QueueError::NotConfirmed { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_faults_retry_and_configuration_faults_do_not() {
        let io = || lapin::Error::IOError(std::sync::Arc::new(std::io::Error::other("reset")));
        assert!(QueueError::Connect { host: "h:5672/".into(), source: io() }.is_retryable());
        assert!(QueueError::Channel { op: "basic.ack", source: io() }.is_retryable());
        assert!(
            QueueError::NotConfirmed { routing_key: "q".into(), why: "nacked by the broker" }.is_retryable()
        );
        assert!(QueueError::Declare { what: "queue q".into(), source: io() }.is_retryable());
        assert!(!QueueError::InvalidUrl("x".into()).is_retryable());
        assert_eq!(QueueError::Channel { op: "basic.ack", source: io() }.code(), ErrorCode::Upstream);
    }

    #[test]
    fn a_message_that_is_not_a_job_is_rejected_not_retried() {
        for body in [&b"not json"[..], br#"{"schema": "import-job/v2"}"#, br#"{"job_id": "j"}"#] {
            let err = asset_schemas::ImportJob::from_slice(body).unwrap_err();
            match crate::Outcome::for_job_error(&err) {
                crate::Outcome::Reject { code, reason } => {
                    assert_eq!(code, ErrorCode::InvalidJob);
                    assert!(!reason.is_empty());
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
