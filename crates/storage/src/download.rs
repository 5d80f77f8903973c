//! Ranged reads through a signed URL, streamed to a private temp file chunk by chunk
//! (never the whole body in memory) through [`crate::read::Writer`], bounded by the size
//! limit, retried on transient faults; and `validate-storage`'s small requests.
//! Redirects are not followed: a signed URL that redirects elsewhere is refused. Every
//! request passes the egress policy first, and the client resolves names through it
//! (see [`crate::egress`]); no proxy is used.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MATCH, RANGE};

use crate::config::RetryConfig;
use crate::egress::{EgressPolicy, EgressResolver, refusal_in};
use crate::error::{StorageError, service_code};
use crate::read::{Plan, Reply, Want, Writer, ranged_failed};
use crate::retry::with_retry;
use crate::secret::SignedUrl;

const SERVICE: &str = "storage";

pub(crate) struct Downloader {
    client: reqwest::Client,
    retry: RetryConfig,
    egress: Arc<EgressPolicy>,
}

impl Downloader {
    pub(crate) fn new(
        connect: Duration,
        read: Duration,
        retry: RetryConfig,
        egress: Arc<EgressPolicy>,
        ca_certificates: &[Vec<u8>],
    ) -> Result<Self, StorageError> {
        let mut builder = reqwest::Client::builder();
        // The operator's own CAs (on-premises storage, a test server's certificate), on
        // top of the public roots.
        for pem in ca_certificates {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| StorageError::Upstream {
                service: SERVICE,
                message: "a configured CA certificate is not PEM".into(),
                retryable: false,
                source: Some(Box::new(e.without_url())),
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .connect_timeout(connect)
            .read_timeout(read)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve and connect where the policy cannot look.
            .no_proxy()
            .dns_resolver(Arc::new(EgressResolver { policy: egress.clone() }))
            .build()
            .map_err(|e| StorageError::Upstream {
                service: SERVICE,
                message: "building the HTTP client".into(),
                retryable: false,
                source: Some(Box::new(e.without_url())),
            })?;
        Ok(Downloader { client, retry, egress })
    }

    /// The client under the egress policy, for the other requests made for jobs
    /// (Entra tokens, user delegation keys).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// One ranged read through a signed URL into `out`, retried on transient faults.
    /// `etag` (from a first read) is sent as `If-Match`; the reply says the object's
    /// size and version. `received` counts every byte received, attempts included.
    pub(crate) async fn read(
        &self,
        url: &SignedUrl,
        want: Want,
        etag: Option<&str>,
        out: &Writer<'_>,
        received: &AtomicU64,
    ) -> Result<Reply, StorageError> {
        with_retry(&self.retry, "read", |attempt| self.read_attempt(url, want, etag, out, received, attempt))
            .await
    }

    async fn read_attempt(
        &self,
        url: &SignedUrl,
        want: Want,
        etag: Option<&str>,
        out: &Writer<'_>,
        received: &AtomicU64,
        attempt: u32,
    ) -> Result<Reply, StorageError> {
        self.egress.check_str(url.expose())?;
        let range = want.header_value().ok_or_else(|| StorageError::Upstream {
            service: SERVICE,
            message: format!("empty byte range {want:?}"),
            retryable: false,
            source: None,
        })?;
        let mut req = self.client.get(url.expose()).header(RANGE, &range);
        if let Some(etag) = etag {
            req = req.header(IF_MATCH, etag);
        }
        let mut resp = req.send().await.map_err(|e| from_reqwest(e, "sending the request"))?;
        let status = resp.status();
        tracing::debug!(status = status.as_u16(), attempt, range, "read response");
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let reply_etag = header(ETAG);
        let plan = match status {
            StatusCode::PARTIAL_CONTENT => {
                Plan::partial(want, header(CONTENT_RANGE).as_deref().and_then(parse_content_range))?
            }
            StatusCode::OK => {
                let length = header(CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
                Plan::whole_body(want, out.placement, length)?
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                Plan::unsatisfiable(want, header(CONTENT_RANGE).as_deref().and_then(parse_unsatisfied_range))?
            }
            StatusCode::PRECONDITION_FAILED => {
                return Err(ranged_failed("the object changed while it was read"));
            }
            _ => {
                let body = error_body(&mut resp).await;
                return Err(status_error(status, &body, expired(url)));
            }
        };
        out.admit(plan.total, plan.start, plan.stop)?;
        // Bytes streamed only to be dropped (a server that ignored Range) cost their
        // time too: no more of them than the limit.
        if plan.body_start < plan.start && plan.stop.is_none_or(|stop| stop > out.max_bytes) {
            return Err(StorageError::TooLarge { limit: out.max_bytes, received: 0 });
        }
        // `pos`: the object's offset of the next body byte; `at`: kept up to there.
        let (mut pos, mut at) = (plan.body_start, plan.start);
        let mut ended = false;
        while plan.stop.is_none_or(|stop| pos < stop) {
            let Some(chunk) = resp.chunk().await.map_err(|e| from_reqwest(e, "reading the body"))? else {
                ended = true;
                break;
            };
            received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let chunk_start = pos;
            pos += chunk.len() as u64;
            let lo = chunk_start.max(plan.start);
            let hi = plan.stop.map_or(pos, |stop| pos.min(stop));
            if lo < hi {
                out.write(plan.start, lo, &chunk[(lo - chunk_start) as usize..(hi - chunk_start) as usize])?;
                at = hi;
            }
        }
        let total = match plan.total {
            Some(total) => {
                if let Some(stop) = plan.stop.filter(|stop| at < *stop) {
                    return Err(StorageError::Upstream {
                        service: SERVICE,
                        message: format!(
                            "the body ended after {} of {} bytes",
                            at - plan.start,
                            stop - plan.start
                        ),
                        retryable: true,
                        source: None,
                    });
                }
                Some(total)
            }
            // No size was said: a body that ran to its end was the whole object.
            None => ended.then_some(pos),
        };
        let written = plan.start..at;
        out.finish(&written)?;
        // Dropping the response here closes a connection still sending the rest.
        Ok(Reply { total, written, etag: reply_etag })
    }
}

/// Small requests of `validate-storage` on a signed URL (a listing, a CORS check): the
/// same client, egress policy, retries and error mapping as downloads.
impl Downloader {
    /// A GET whose body is at most 1 MiB (more is cut off): its headers and body.
    pub(crate) async fn get_small(
        &self,
        url: &SignedUrl,
        headers: &[(reqwest::header::HeaderName, &str)],
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), StorageError> {
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            let v = reqwest::header::HeaderValue::from_str(v).map_err(|_| StorageError::Upstream {
                service: SERVICE,
                message: format!("a {k} header that is no header value"),
                retryable: false,
                source: None,
            })?;
            map.insert(k.clone(), v);
        }
        let (status, head, body) = self.get_answer(url, map).await?;
        if !status.is_success() {
            return Err(status_error(status, &String::from_utf8_lossy(&body), expired(url)));
        }
        Ok((head, body))
    }

    /// A GET answered below 500 and not throttled, whatever its status (a refusal is an
    /// answer the caller reads, e.g. a 416 on an empty object or the region header of a
    /// redirect): the status, the headers and at most 1 MiB of body. Throttling and
    /// server faults are retried, then errors.
    pub(crate) async fn get_answer(
        &self,
        url: &SignedUrl,
        headers: reqwest::header::HeaderMap,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), StorageError> {
        with_retry(&self.retry, "get", |_| async {
            self.egress.check_str(url.expose())?;
            let req = self.client.get(url.expose()).headers(headers.clone());
            let mut resp = req.send().await.map_err(|e| from_reqwest(e, "sending the request"))?;
            let status = resp.status();
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                let body = error_body(&mut resp).await;
                return Err(status_error(status, &body, expired(url)));
            }
            let head = resp.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| from_reqwest(e, "reading the body"))? {
                let room = (1 << 20) - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= 1 << 20 {
                    break;
                }
            }
            Ok((status, head, body))
        })
        .await
    }

    /// An `OPTIONS` request (a CORS preflight): the reply's headers, whatever its
    /// status below 500 (a refused preflight is an answer, not a fault).
    pub(crate) async fn preflight(
        &self,
        url: &SignedUrl,
        headers: &[(reqwest::header::HeaderName, &str)],
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap), StorageError> {
        with_retry(&self.retry, "preflight", |_| async {
            self.egress.check_str(url.expose())?;
            let mut req = self.client.request(reqwest::Method::OPTIONS, url.expose());
            for (k, v) in headers {
                req = req.header(k, *v);
            }
            let mut resp = req.send().await.map_err(|e| from_reqwest(e, "sending the request"))?;
            let status = resp.status();
            if status.is_server_error() {
                let body = error_body(&mut resp).await;
                return Err(status_error(status, &body, false));
            }
            Ok((status, resp.headers().clone()))
        })
        .await
    }
}

/// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`, unknown).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, total))
}

/// `bytes */TOTAL`, the `Content-Range` of a 416.
fn parse_unsatisfied_range(v: &str) -> Option<u64> {
    v.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

/// reqwest errors name the URL they failed on; a signed URL must not reach a message.
fn from_reqwest(e: reqwest::Error, during: &'static str) -> StorageError {
    let e = e.without_url();
    // The resolver refused every address the name resolves to.
    if let Some(refused) = refusal_in(&e) {
        return refused.clone().into();
    }
    if e.is_timeout() {
        return StorageError::Timeout { during, source: Some(Box::new(e)) };
    }
    let retryable = !(e.is_builder() || e.is_redirect() || e.is_status());
    StorageError::Upstream { service: SERVICE, message: during.into(), retryable, source: Some(Box::new(e)) }
}

/// The start of an error response, enough for S3's `<Code>`; the rest is not read.
pub(crate) async fn error_body(resp: &mut reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= 8192 {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

pub(crate) fn xml_element<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim())
}

/// The text of the first `<name>` element with its entities decoded (`&amp;`, `&#39;`…)
/// and nothing trimmed: an object name from a listing is the server's, and may hold `&`
/// or begin with a space. `None` when there is no such element or its text is not valid
/// XML text.
pub(crate) fn xml_text(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("<{name}>"))? + name.len() + 2;
    let end = body[start..].find(&format!("</{name}>"))? + start;
    quick_xml::escape::unescape(&body[start..end]).ok().map(|t| t.into_owned())
}

/// The `Code` of an S3/STS XML error body, when it looks like a code. The rest of such
/// a body (`Message`, and elements that may echo the canonical request with its
/// signature, credential and token) is the server's free text and is never kept.
pub(crate) fn error_code(body: &str) -> Option<String> {
    xml_element(body, "Code").and_then(service_code)
}

/// Whether a signed URL had expired when its reply came: our own reading of a 403, so
/// that the message can say so without quoting the server.
fn expired(url: &SignedUrl) -> bool {
    url.expires_at().is_some_and(|at| at <= SystemTime::now())
}

pub(crate) fn status_error(status: StatusCode, body: &str, expired: bool) -> StorageError {
    let code = error_code(body).unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    match status.as_u16() {
        403 | 401 => StorageError::AccessDenied {
            service: SERVICE,
            service_code: code,
            reason: if expired {
                "the signed URL had expired when it was used"
            } else {
                "the storage refused the signed request"
            },
        },
        404 => StorageError::NotFound { what: code },
        429 | 503 => StorageError::Throttled { service: SERVICE, service_code: code },
        s if s >= 500 => StorageError::Upstream {
            service: SERVICE,
            message: format!("the storage answered HTTP {s} ({code})"),
            retryable: true,
            source: None,
        },
        s => StorageError::Upstream {
            service: SERVICE,
            message: format!("the storage answered HTTP {s} ({code})"),
            retryable: false,
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_names_are_unescaped_and_kept_whole() {
        let gcs = "<ListBucketResult><Name>b</Name><Contents><Key>a &amp; b&lt;1&gt;.jpg</Key></Contents></ListBucketResult>";
        assert_eq!(xml_text(gcs, "Key").as_deref(), Some("a & b<1>.jpg"));
        // Azure's List Blobs: the first <Name> is the first blob's.
        let azure = "<EnumerationResults ContainerName=\"assets\"><Blobs><Blob><Name> 100% #1 &amp; a=b, \
                     (c)!$&apos;&#233;&#x732B;.txt</Name></Blob></Blobs></EnumerationResults>";
        assert_eq!(xml_text(azure, "Name").as_deref(), Some(" 100% #1 & a=b, (c)!$'é猫.txt"));
        assert_eq!(xml_text("<ListBucketResult></ListBucketResult>", "Key"), None);
        assert_eq!(xml_text("<Key>&bogus;</Key>", "Key"), None);
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-65535/1048576"), Some((0, 65535, Some(1_048_576))));
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, 19, None)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_unsatisfied_range("bytes */0"), Some(0));
        assert_eq!(parse_unsatisfied_range("bytes 0-1/2"), None);
    }

    #[test]
    fn status_errors_keep_only_the_code_and_a_clean_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request \
                    signature we calculated does not match</Message><CanonicalRequest>GET /b/k \
                    X-Amz-Credential=ASIAXXXX&amp;X-Amz-Security-Token=TOKEN</CanonicalRequest></Error>";
        let e = status_error(StatusCode::FORBIDDEN, body, false);
        assert_eq!(e.code().as_str(), "access_denied");
        assert!(!e.is_retryable());
        let text = format!("{e} {e:?}");
        assert!(text.contains("SignatureDoesNotMatch"), "{text}");
        assert!(!text.contains("TOKEN") && !text.contains("ASIAXXXX"), "{text}");
        assert!(!text.contains("calculated"), "the server's message was kept: {text}");

        let e = status_error(
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code><Message>x X-Amz-Signature=s</Message></Error>",
            true,
        );
        assert!(!e.to_string().contains("Signature=s"), "{e}");
        assert!(e.to_string().contains("expired"), "{e}");

        let e = status_error(StatusCode::SERVICE_UNAVAILABLE, "<Error><Code>SlowDown</Code></Error>", false);
        assert_eq!(e.code().as_str(), "throttled");
        assert!(e.is_retryable());
        assert_eq!(status_error(StatusCode::NOT_FOUND, "", false).code().as_str(), "not_found");
        assert!(status_error(StatusCode::BAD_GATEWAY, "", false).is_retryable());
        assert!(!status_error(StatusCode::RANGE_NOT_SATISFIABLE, "", false).is_retryable());
        // A code that is not one is dropped for the status.
        let e = status_error(
            StatusCode::BAD_GATEWAY,
            "<Error><Code>go to evil.example now</Code></Error>",
            false,
        );
        assert_eq!(e.to_string(), "upstream storage failed: the storage answered HTTP 502 (HTTP 502)");
    }
}
