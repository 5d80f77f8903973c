//! Downloads through a signed URL, streamed to a private temp file chunk by chunk (never
//! the whole body in memory), bounded by the size limit, retried on transient faults.
//! Redirects are not followed: a signed URL that redirects elsewhere is refused.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

use crate::config::RetryConfig;
use crate::error::StorageError;
use crate::location::ByteRange;
use crate::retry::with_retry;
use crate::secret::SignedUrl;
use crate::temp::{self, TempAsset};

const SERVICE: &str = "storage";

pub(crate) struct Downloader {
    client: reqwest::Client,
    retry: RetryConfig,
}

impl Downloader {
    pub(crate) fn new(connect: Duration, read: Duration, retry: RetryConfig) -> Result<Self, StorageError> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect)
            .read_timeout(read)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StorageError::Upstream {
                service: SERVICE,
                message: "building the HTTP client".into(),
                retryable: false,
                source: Some(Box::new(e.without_url())),
            })?;
        Ok(Downloader { client, retry })
    }

    pub(crate) async fn download(
        &self,
        url: &SignedUrl,
        range: Option<ByteRange>,
        dir: &Path,
        max_bytes: u64,
    ) -> Result<TempAsset, StorageError> {
        let received = AtomicU64::new(0);
        with_retry(&self.retry, "download", |attempt| {
            self.attempt(url, range, dir, max_bytes, &received, attempt)
        })
        .await
    }

    async fn attempt(
        &self,
        url: &SignedUrl,
        range: Option<ByteRange>,
        dir: &Path,
        max_bytes: u64,
        received: &AtomicU64,
        attempt: u32,
    ) -> Result<TempAsset, StorageError> {
        let mut req = self.client.get(url.expose());
        if let Some(r) = range {
            let value = r.header_value().ok_or_else(|| StorageError::Upstream {
                service: SERVICE,
                message: format!("empty byte range {r:?}"),
                retryable: false,
                source: None,
            })?;
            req = req.header(reqwest::header::RANGE, value);
        }
        let mut resp = req.send().await.map_err(|e| from_reqwest(e, "sending the request"))?;
        let status = resp.status();
        tracing::debug!(status = status.as_u16(), attempt, "download response");
        if !matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT) {
            let body = error_body(&mut resp).await;
            return Err(status_error(status, &body));
        }
        // A server that ignores Range answers 200 with the whole object: a prefix can
        // still be cut from it, anything else cannot.
        let truncate_at = match (range, status) {
            (Some(ByteRange::Prefix(n)), StatusCode::OK) => Some(n.min(max_bytes)),
            (Some(r), StatusCode::OK) => {
                return Err(StorageError::Upstream {
                    service: SERVICE,
                    message: format!("the server ignored the Range header ({r:?})"),
                    retryable: false,
                    source: None,
                });
            }
            _ => None,
        };
        if let (None, Some(len)) = (truncate_at, resp.content_length().filter(|len| *len > max_bytes)) {
            tracing::debug!(content_length = len, max_bytes, "refused before reading the body");
            return Err(StorageError::TooLarge { limit: max_bytes, received: 0 });
        }

        let file = temp::new_file(dir).map_err(|e| StorageError::io("creating a temp file", e))?;
        let (file, path) = file.into_parts();
        let mut out = tokio::fs::File::from_std(file);
        let mut written: u64 = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| from_reqwest(e, "reading the body"))? {
            received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let len = chunk.len() as u64;
            let take = match truncate_at {
                Some(n) => len.min(n - written),
                None if written + len > max_bytes => {
                    // `path` drops here and removes the partial file.
                    return Err(StorageError::TooLarge { limit: max_bytes, received: written + len });
                }
                None => len,
            };
            out.write_all(&chunk[..take as usize])
                .await
                .map_err(|e| StorageError::io("writing the temp file", e))?;
            written += take;
            if truncate_at == Some(written) {
                break;
            }
        }
        out.flush().await.map_err(|e| StorageError::io("writing the temp file", e))?;
        Ok(TempAsset::new(path, written, received.load(Ordering::Relaxed)))
    }
}

/// reqwest errors name the URL they failed on; a signed URL must not reach a message.
fn from_reqwest(e: reqwest::Error, during: &'static str) -> StorageError {
    let e = e.without_url();
    if e.is_timeout() {
        return StorageError::Timeout { during, source: Some(Box::new(e)) };
    }
    let retryable = !(e.is_builder() || e.is_redirect() || e.is_status());
    StorageError::Upstream { service: SERVICE, message: during.into(), retryable, source: Some(Box::new(e)) }
}

/// The start of an error response, enough for S3's `<Code>` and `<Message>`.
async fn error_body(resp: &mut reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= 8192 {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

fn xml_element<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim())
}

/// `Code` and a short, scrubbed `Message` of an S3/STS XML error body. Such bodies may
/// echo the canonical request (signature, credential, token) in other elements; those
/// are never kept.
pub(crate) fn error_fields(body: &str) -> (Option<String>, Option<String>) {
    let code =
        xml_element(body, "Code").filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric()));
    let message = xml_element(body, "Message")
        .filter(|m| !m.contains("X-Amz-") && !m.contains("Signature=") && !m.contains("Credential="))
        .map(|m| m.chars().take(200).collect::<String>());
    (code.map(str::to_owned), message)
}

pub(crate) fn status_error(status: StatusCode, body: &str) -> StorageError {
    let (code, message) = error_fields(body);
    let code = code.unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    let message = message.unwrap_or_default();
    match status.as_u16() {
        403 | 401 => StorageError::AccessDenied { service: SERVICE, service_code: code, message },
        404 => StorageError::NotFound { what: code },
        429 | 503 => StorageError::Throttled { service: SERVICE, message: format!("{code}: {message}") },
        s if s >= 500 => StorageError::Upstream {
            service: SERVICE,
            message: format!("{code}: {message}"),
            retryable: true,
            source: None,
        },
        _ => StorageError::Upstream {
            service: SERVICE,
            message: format!("{code}: {message}"),
            retryable: false,
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_keep_only_the_code_and_a_clean_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request \
                    signature we calculated does not match</Message><CanonicalRequest>GET /b/k \
                    X-Amz-Credential=ASIAXXXX&amp;X-Amz-Security-Token=TOKEN</CanonicalRequest></Error>";
        let e = status_error(StatusCode::FORBIDDEN, body);
        assert_eq!(e.code().as_str(), "access_denied");
        assert!(!e.is_retryable());
        let text = format!("{e} {e:?}");
        assert!(text.contains("SignatureDoesNotMatch"), "{text}");
        assert!(!text.contains("TOKEN") && !text.contains("ASIAXXXX"), "{text}");

        let e = status_error(
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code><Message>x X-Amz-Signature=s</Message></Error>",
        );
        assert!(!e.to_string().contains("Signature=s"), "{e}");

        let e = status_error(StatusCode::SERVICE_UNAVAILABLE, "<Error><Code>SlowDown</Code></Error>");
        assert_eq!(e.code().as_str(), "throttled");
        assert!(e.is_retryable());
        assert_eq!(status_error(StatusCode::NOT_FOUND, "").code().as_str(), "not_found");
        assert!(status_error(StatusCode::BAD_GATEWAY, "").is_retryable());
        assert!(!status_error(StatusCode::RANGE_NOT_SATISFIABLE, "").is_retryable());
    }
}
