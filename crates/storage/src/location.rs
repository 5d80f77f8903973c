//! Asset URL → (bucket, key): the SSRF guard. The worker never fetches a job's URL as
//! given; it only extracts an object of the integration from it and signs its own URL.
//! Anything else — another host, a link-local or loopback address, a bucket the
//! integration does not list — is refused with `url_not_in_storage`.
//!
//! Key encoding: `s3://` and `local://` URIs carry the key verbatim (as the AWS CLI
//! does); `http(s)` URLs are percent-decoded, and on AWS hosts `+` means a space (as in
//! the S3 console's object URLs, `%2B` being a plus).
//!
//! Keys with a `.` or `..` segment are refused, in the key as given and once more
//! percent-decoded: HTTP clients and servers normalise such paths, so
//! `bucket/..%2fother/x` would leave the bucket the guard approved.

use std::fmt;

use asset_core::S3Integration;
use percent_encoding::percent_decode_str;
use url::{Host, Url};

use crate::error::StorageError;

/// An object of an integration, after the URL passed the SSRF guard.
#[derive(Clone, PartialEq, Eq)]
pub struct ObjectLocation {
    pub bucket: String,
    pub key: String,
}

impl fmt::Debug for ObjectLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.bucket, self.key)
    }
}

/// The bytes of an object to fetch, so the probe can ask for a header only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The first `n` bytes.
    Prefix(u64),
    /// The last `n` bytes.
    Suffix(u64),
    /// Bytes `start..=end`, inclusive as in HTTP.
    Span { start: u64, end: u64 },
}

impl ByteRange {
    /// The `Range` header value; `None` for an empty range, which no server accepts.
    pub fn header_value(&self) -> Option<String> {
        match *self {
            ByteRange::Prefix(0) | ByteRange::Suffix(0) => None,
            ByteRange::Prefix(n) => Some(format!("bytes=0-{}", n - 1)),
            ByteRange::Suffix(n) => Some(format!("bytes=-{n}")),
            ByteRange::Span { start, end } if start <= end => Some(format!("bytes={start}-{end}")),
            ByteRange::Span { .. } => None,
        }
    }

    /// Most bytes the range can return.
    pub fn max_len(&self) -> u64 {
        match *self {
            ByteRange::Prefix(n) | ByteRange::Suffix(n) => n,
            ByteRange::Span { start, end } => end.saturating_sub(start).saturating_add(1),
        }
    }
}

/// Maps an asset URL to an object of an S3 integration, or refuses it.
pub(crate) fn locate_s3(s: &S3Integration, aws: bool, raw: &str) -> Result<ObjectLocation, StorageError> {
    let loc = if let Some(rest) = raw.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        ObjectLocation { bucket: bucket.to_owned(), key: key.to_owned() }
    } else {
        locate_http(s, aws, raw)?
    };
    if loc.key.is_empty() {
        return Err(StorageError::not_in_storage("the URL names no object key"));
    }
    check_key_segments(&loc.key)?;
    if !s.buckets.contains(&loc.bucket) {
        return Err(StorageError::not_in_storage(format!(
            "bucket {:?} is not one of the integration's buckets",
            loc.bucket
        )));
    }
    Ok(loc)
}

/// Refuses a key with a `.` or `..` segment (`/` or `\\` separated), as given or after
/// one more round of percent-decoding.
pub(crate) fn check_key_segments(key: &str) -> Result<(), StorageError> {
    let decoded = percent_decode_str(key).decode_utf8_lossy();
    for k in [key, decoded.as_ref()] {
        if k.split(['/', '\\']).any(|seg| seg == "." || seg == "..") {
            return Err(StorageError::not_in_storage(
                "the key has a '.' or '..' segment, which could leave the bucket once normalised",
            ));
        }
    }
    Ok(())
}

fn locate_http(s: &S3Integration, aws: bool, raw: &str) -> Result<ObjectLocation, StorageError> {
    let url = Url::parse(raw).map_err(|e| StorageError::not_in_storage(format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(StorageError::not_in_storage(format!("scheme {:?} is not accepted", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(StorageError::not_in_storage("URLs with user info are refused"));
    }
    let host = url.host().ok_or_else(|| StorageError::not_in_storage("the URL has no host"))?;

    if let Some(endpoint) = &s.endpoint
        && let Some(loc) = on_endpoint(endpoint, &url, &host)?
    {
        return Ok(loc);
    }
    if aws
        && let Host::Domain(domain) = &host
        && let Some(loc) = on_aws(&domain.to_ascii_lowercase(), &url)?
    {
        return Ok(loc);
    }
    Err(StorageError::not_in_storage(format!("host {host} is not this integration's storage")))
}

/// Path-style (`endpoint/bucket/key`) or virtual-hosted (`bucket.endpoint/key`) on the
/// integration's own endpoint: same scheme, host and port.
pub(crate) fn on_endpoint(
    endpoint: &str,
    url: &Url,
    host: &Host<&str>,
) -> Result<Option<ObjectLocation>, StorageError> {
    let ep = Url::parse(endpoint).map_err(|e| StorageError::invalid("endpoint", e.to_string()))?;
    if ep.scheme() != url.scheme() || ep.port_or_known_default() != url.port_or_known_default() {
        return Ok(None);
    }
    let Some(ep_host) = ep.host() else { return Ok(None) };
    let base = ep.path().trim_end_matches('/');
    let Some(path) = url.path().strip_prefix(base) else { return Ok(None) };
    if ep_host == *host {
        return split_path_style(path, false).map(Some);
    }
    if let (Host::Domain(ep_domain), Host::Domain(domain)) = (&ep_host, host) {
        let (ep_domain, domain) = (ep_domain.to_ascii_lowercase(), domain.to_ascii_lowercase());
        if let Some(bucket) = domain.strip_suffix(&ep_domain).and_then(|b| b.strip_suffix('.')) {
            let key = decode_key(path.strip_prefix('/').unwrap_or(path), false)?;
            return Ok(Some(ObjectLocation { bucket: bucket.to_owned(), key }));
        }
    }
    Ok(None)
}

/// AWS's S3 host names: path-style `s3[.-]REGION.amazonaws.com/bucket/key` and
/// `s3.amazonaws.com/bucket/key`; virtual-hosted `bucket.s3.amazonaws.com` (legacy
/// global), `bucket.s3.REGION.amazonaws.com`, `bucket.s3-REGION.amazonaws.com` (dash
/// region) and the dualstack forms; `.amazonaws.com.cn` likewise.
fn on_aws(domain: &str, url: &Url) -> Result<Option<ObjectLocation>, StorageError> {
    let Some(rest) =
        domain.strip_suffix(".amazonaws.com").or_else(|| domain.strip_suffix(".amazonaws.com.cn"))
    else {
        return Ok(None);
    };
    let labels: Vec<&str> = rest.split('.').collect();
    // The rightmost label that starts the S3 service part; a bucket may itself contain
    // dots, or even a label named `s3`, so search from the right.
    for i in (0..labels.len()).rev() {
        let tail = &labels[i..];
        let service_ok = match tail {
            ["s3"] => true,
            ["s3", region] | ["s3", "dualstack", region] => is_region_like(region),
            [dash] => dash.strip_prefix("s3-").is_some_and(is_region_like),
            _ => false,
        };
        if !service_ok {
            continue;
        }
        let path = url.path();
        if i == 0 {
            return split_path_style(path, true).map(Some);
        }
        let bucket = labels[..i].join(".");
        let key = decode_key(path.strip_prefix('/').unwrap_or(path), true)?;
        return Ok(Some(ObjectLocation { bucket, key }));
    }
    Ok(None)
}

fn is_region_like(r: &str) -> bool {
    r.split('-').count() >= 3 && r.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

fn split_path_style(path: &str, aws: bool) -> Result<ObjectLocation, StorageError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    Ok(ObjectLocation { bucket: decode_key(bucket, aws)?, key: decode_key(key, aws)? })
}

fn decode_key(raw: &str, plus_is_space: bool) -> Result<String, StorageError> {
    let replaced;
    let raw = if plus_is_space {
        replaced = raw.replace('+', " ");
        replaced.as_str()
    } else {
        raw
    };
    percent_decode_str(raw)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| StorageError::not_in_storage("the key is not valid UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integ(aws: bool, endpoint: Option<&str>) -> S3Integration {
        let mut v = serde_json::json!({
            "id": "i", "org_id": "o", "region": "eu-west-1", "buckets": ["acme", "my.dotted"],
            "access": {"type": "iam_user", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_ref": "env:S"}
        });
        if let Some(e) = endpoint {
            v["endpoint"] = e.into();
        }
        let _ = aws;
        serde_json::from_value(v).unwrap()
    }

    fn ok(aws: bool, endpoint: Option<&str>, url: &str) -> (String, String) {
        let loc = locate_s3(&integ(aws, endpoint), aws, url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (loc.bucket, loc.key)
    }

    fn refused(aws: bool, endpoint: Option<&str>, url: &str) {
        match locate_s3(&integ(aws, endpoint), aws, url) {
            Err(e) => assert_eq!(e.code().as_str(), "url_not_in_storage", "{url}: {e}"),
            Ok(loc) => panic!("{url} was accepted as {loc:?}"),
        }
    }

    fn pair(b: &str, k: &str) -> (String, String) {
        (b.to_owned(), k.to_owned())
    }

    #[test]
    fn aws_url_forms() {
        let k = pair("acme", "img/cat.jpg");
        for url in [
            "s3://acme/img/cat.jpg",
            "https://acme.s3.amazonaws.com/img/cat.jpg",
            "https://acme.s3.eu-west-1.amazonaws.com/img/cat.jpg",
            "https://acme.s3-eu-west-1.amazonaws.com/img/cat.jpg",
            "https://acme.s3.dualstack.eu-west-1.amazonaws.com/img/cat.jpg",
            "https://s3.amazonaws.com/acme/img/cat.jpg",
            "https://s3.eu-west-1.amazonaws.com/acme/img/cat.jpg",
            "https://s3-eu-west-1.amazonaws.com/acme/img/cat.jpg",
            "https://ACME.S3.EU-WEST-1.AMAZONAWS.COM/img/cat.jpg",
            "https://acme.s3.eu-west-1.amazonaws.com/img/cat.jpg?versionId=3#x",
        ] {
            assert_eq!(ok(true, None, url), k, "{url}");
        }
        assert_eq!(ok(true, None, "https://my.dotted.s3.eu-west-1.amazonaws.com/a"), pair("my.dotted", "a"));
    }

    #[test]
    fn keys_are_decoded_right() {
        let aws = |u| ok(true, None, u).1;
        assert_eq!(aws("https://acme.s3.amazonaws.com/my%20cat.jpg"), "my cat.jpg");
        assert_eq!(aws("https://acme.s3.amazonaws.com/my+cat.jpg"), "my cat.jpg");
        assert_eq!(aws("https://acme.s3.amazonaws.com/a%2Bb.jpg"), "a+b.jpg");
        assert_eq!(aws("https://acme.s3.amazonaws.com/%E7%8C%AB/%C3%A9t%C3%A9.jpg"), "猫/été.jpg");
        assert_eq!(aws("https://acme.s3.amazonaws.com/猫 x.jpg"), "猫 x.jpg");
        assert_eq!(aws("https://acme.s3.amazonaws.com/a%2Fb"), "a/b");
        // s3:// keeps the key verbatim, as the AWS CLI does.
        assert_eq!(aws("s3://acme/a b+c%20d 猫"), "a b+c%20d 猫");
        // A custom endpoint decodes percent escapes but keeps `+`.
        let ep = Some("http://127.0.0.1:9000");
        assert_eq!(ok(false, ep, "http://127.0.0.1:9000/acme/a+b%20c").1, "a+b c");
        assert!(locate_s3(&integ(true, None), true, "https://acme.s3.amazonaws.com/%FF").is_err());
    }

    #[test]
    fn custom_endpoint_forms() {
        let ep = Some("http://127.0.0.1:9000");
        assert_eq!(ok(false, ep, "http://127.0.0.1:9000/acme/x/y.png"), pair("acme", "x/y.png"));
        assert_eq!(ok(false, ep, "s3://acme/x"), pair("acme", "x"));
        let ep = Some("https://storage.example.com/s3/");
        assert_eq!(ok(false, ep, "https://storage.example.com/s3/acme/k"), pair("acme", "k"));
        assert_eq!(ok(false, ep, "https://acme.storage.example.com/s3/k"), pair("acme", "k"));
        refused(false, ep, "https://storage.example.com/other/acme/k");
        refused(false, ep, "http://storage.example.com/s3/acme/k");
        refused(false, ep, "https://storage.example.com:8443/s3/acme/k");
    }

    #[test]
    fn ssrf_guard() {
        let ep = Some("http://127.0.0.1:9000");
        for url in [
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://169.254.169.254/acme/k",
            "http://[fd00:ec2::254]/acme/k",
            "http://127.0.0.1/acme/k",
            "http://localhost:9000/acme/k",
            "http://127.0.0.1:9001/acme/k",
            "https://evil.example.com/acme/k",
            "https://acme.s3.amazonaws.com.evil.com/k",
            "https://acme.s3.evil.com/k",
            "https://user:pw@acme.s3.amazonaws.com/k",
            "https://other.s3.amazonaws.com/k",
            "https://s3.amazonaws.com/other/k",
            "s3://other/k",
            "s3://acme",
            "s3://acme/",
            "file:///etc/passwd",
            "gopher://acme/k",
            "not a url",
        ] {
            refused(true, ep, url);
        }
        // Without an endpoint, loopback is refused even with the right bucket.
        refused(true, None, "http://127.0.0.1:9000/acme/k");
        // An s3_compatible integration does not accept AWS host names.
        refused(false, ep, "https://acme.s3.amazonaws.com/k");
    }

    #[test]
    fn keys_with_dot_segments_are_refused() {
        let ep = Some("http://127.0.0.1:9000");
        for url in [
            "s3://acme/..%2fother/x",
            "s3://acme/..%2Fother/x",
            "s3://acme/../other/x",
            "s3://acme/./x",
            "s3://acme/a/../../other/x",
            "s3://acme/%2e%2e/other/x",
            "s3://acme/%2E%2E%2fother%2fx",
            "s3://acme/..\\other\\x",
            "s3://acme/..",
            "s3://acme/x/.",
            "http://127.0.0.1:9000/acme/..%2fother/x",
            "http://127.0.0.1:9000/acme/..%2Fother%2Fx",
            "http://127.0.0.1:9000/acme/%2e%2e%2fother/x",
            "http://127.0.0.1:9000/acme/x/%252e%252e/y",
            "http://127.0.0.1:9000/acme/..%5cother",
            "https://acme.s3.amazonaws.com/..%2fother/x",
        ] {
            refused(true, ep, url);
        }
        // Dots inside a segment are an ordinary key.
        assert_eq!(ok(false, ep, "s3://acme/a..b/.x/..y/x.").1, "a..b/.x/..y/x.");
        assert_eq!(ok(false, ep, "s3://acme/...").1, "...");
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(ByteRange::Prefix(10).header_value().unwrap(), "bytes=0-9");
        assert_eq!(ByteRange::Suffix(4).header_value().unwrap(), "bytes=-4");
        assert_eq!(ByteRange::Span { start: 5, end: 9 }.header_value().unwrap(), "bytes=5-9");
        assert_eq!(ByteRange::Span { start: 5, end: 9 }.max_len(), 5);
        assert_eq!(ByteRange::Prefix(0).header_value(), None);
        assert_eq!(ByteRange::Span { start: 9, end: 5 }.header_value(), None);
    }
}
