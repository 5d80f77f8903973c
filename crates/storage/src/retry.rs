//! The one retry loop, driven by [`RetryConfig`]: STS, presigning and downloads all go
//! through it, so a transient fault costs at most the configured budget.

use std::future::Future;
use std::time::Instant;

use crate::config::RetryConfig;
use crate::error::StorageError;

/// Runs `op` until it succeeds, fails for good, or the retries or budget run out.
pub(crate) async fn with_retry<T, F, Fut>(
    policy: &RetryConfig,
    what: &'static str,
    mut op: F,
) -> Result<T, StorageError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            // Local exhaustion is retryable, but not here: the next attempt would meet the
            // same full disk. The caller requeues the job instead.
            Err(err) if err.is_retryable() && !err.is_local_exhaustion() && attempt < policy.max_retries => {
                let wait = policy.backoff(attempt);
                if started.elapsed() + wait > policy.budget {
                    return Err(err);
                }
                tracing::warn!(operation = what, attempt, code = %err.code(), error = %err, wait_ms = wait.as_millis() as u64, "transient failure, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> RetryConfig {
        RetryConfig {
            max_retries: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            budget: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn retries_transient_faults_then_succeeds() {
        let mut calls = 0;
        let r = with_retry(&policy(), "test", |_| {
            calls += 1;
            let c = calls;
            async move {
                if c < 3 {
                    Err(StorageError::Throttled { service: "s3", service_code: "SlowDown".into() })
                } else {
                    Ok(c)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
    }

    #[tokio::test]
    async fn never_retries_a_denial_and_stops_after_max_retries() {
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&policy(), "test", |_| {
            calls += 1;
            async {
                Err(StorageError::AccessDenied {
                    service: "s3",
                    service_code: "AccessDenied".into(),
                    reason: "the storage refused the request",
                })
            }
        })
        .await;
        assert_eq!(r.unwrap_err().code().as_str(), "access_denied");
        assert_eq!(calls, 1);

        let mut calls = 0;
        let r: Result<(), _> = with_retry(&policy(), "test", |_| {
            calls += 1;
            async {
                Err(StorageError::Upstream {
                    service: "s3",
                    message: "503".into(),
                    retryable: true,
                    source: None,
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 4);
    }

    #[tokio::test]
    async fn local_exhaustion_is_left_to_the_caller() {
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&policy(), "test", |_| {
            calls += 1;
            async {
                Err(StorageError::io(
                    "writing the temp file",
                    std::io::Error::from_raw_os_error(libc::ENOSPC),
                ))
            }
        })
        .await;
        let err = r.unwrap_err();
        assert!(err.is_retryable() && err.is_local_exhaustion(), "{err}");
        assert_eq!(calls, 1, "retried in place");
    }
}
