//! S3 requests as SigV4 presigned URLs: the object GETs the pipeline downloads through,
//! and the listing and bucket-location reads of `validate-storage`. The signature comes
//! from `aws-sigv4` (the SDK's own signer); what is ours is the URL it signs: the
//! endpoint, path-style or virtual-hosted addressing, and the key encoded once, byte by
//! byte, so that the path the server canonicalises is the path that was signed.

use std::time::{Duration, SystemTime};

use asset_core::S3Integration;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::error::StorageError;
use crate::secret::SessionCredentials;

/// Everything but RFC 3986's unreserved characters: AWS's `UriEncode`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Where an integration's S3 requests go.
#[derive(Debug, Clone)]
pub(crate) struct S3Target {
    /// Scheme, authority and base path (no trailing `/`) of the service.
    base: Url,
    region: String,
    /// Requests name the bucket in the path, not in the host name.
    path_style: bool,
}

impl S3Target {
    /// The integration's endpoint, else the operator's (`AWS_ENDPOINT_URL_S3` or
    /// `AWS_ENDPOINT_URL`), else AWS's regional one. Path-style unless the integration
    /// says otherwise for S3-compatible stores (virtual hosts need wildcard DNS), as the
    /// SDK's own rules do for AWS: virtual-hosted, except for bucket names a host name
    /// cannot carry and endpoints that are IP addresses.
    pub(crate) fn new(
        s: &S3Integration,
        aws: bool,
        operator: Option<&str>,
    ) -> Result<S3Target, StorageError> {
        let region = s.region.clone().unwrap_or_else(|| "us-east-1".into());
        let endpoint = match (&s.endpoint, operator) {
            (Some(e), _) => e.clone(),
            (None, Some(e)) => e.to_owned(),
            (None, None) => aws_endpoint(&region),
        };
        let base = Url::parse(&endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .filter(|u| u.query().is_none() && u.fragment().is_none())
            .ok_or_else(|| StorageError::invalid("endpoint", "not an http(s) URL with a host"))?;
        let ip_host = matches!(base.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)));
        Ok(S3Target { path_style: s.path_style.unwrap_or(!aws) || ip_host, base, region })
    }

    /// The unsigned URL of a bucket (`key` empty) or an object.
    fn url(&self, bucket: &str, key: &str) -> String {
        let path = self.base.path().trim_end_matches('/');
        let scheme = self.base.scheme();
        let host = self.base.host_str().unwrap_or_default();
        let port = self.base.port().map(|p| format!(":{p}")).unwrap_or_default();
        let key = encode_key(key);
        if self.path_style || !virtual_hostable(bucket, scheme == "http") {
            let bucket = utf8_percent_encode(bucket, UNRESERVED);
            if key.is_empty() {
                format!("{scheme}://{host}{port}{path}/{bucket}")
            } else {
                format!("{scheme}://{host}{port}{path}/{bucket}/{key}")
            }
        } else {
            format!("{scheme}://{bucket}.{host}{port}{path}/{key}")
        }
    }

    /// A presigned GET of `bucket`/`key` (`key` empty: the bucket) with the extra query
    /// parameters of the operation, valid from `time` for `ttl`. Only the `host` header
    /// is signed: a `Range` or `Origin` may be added.
    pub(crate) fn presign_get(
        &self,
        creds: &SessionCredentials,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        time: SystemTime,
        ttl: Duration,
    ) -> Result<String, StorageError> {
        self.sign_get(creds, bucket, key, query, &[], time, Some(ttl)).map(|(url, _)| url)
    }

    /// A GET of `bucket`/`key` signed in its headers (`Authorization`, `X-Amz-Date`,
    /// `X-Amz-Content-Sha256`, the session token, and `extra`, e.g. a `Range`, which the
    /// returned headers include), as the SDK signs its operations:
    /// `validate-storage`'s listing, read and location requests. Some servers (moto
    /// with IAM enforced) authorise bucket operations signed this way only.
    pub(crate) fn header_signed_get(
        &self,
        creds: &SessionCredentials,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        time: SystemTime,
    ) -> Result<(String, HeaderMap), StorageError> {
        self.sign_get(creds, bucket, key, query, extra, time, None)
    }

    /// `ttl`: presigned (query parameters) for that long; `None`: signed in headers.
    #[allow(clippy::too_many_arguments)]
    fn sign_get(
        &self,
        creds: &SessionCredentials,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        time: SystemTime,
        ttl: Option<Duration>,
    ) -> Result<(String, HeaderMap), StorageError> {
        let failed = |what: &str| StorageError::Upstream {
            service: "presign",
            message: format!("signing the request failed ({what})"),
            retryable: false,
            source: None,
        };
        let mut url = self.url(bucket, key);
        for (k, v) in query {
            push_param(&mut url, k, v);
        }
        let identity = aws_credential_types::Credentials::new(
            creds.access_key_id.expose(),
            creds.secret_access_key.expose(),
            creds.session_token.as_ref().map(|t| t.expose().to_owned()),
            creds.expires_at,
            "asset-storage",
        )
        .into();
        let mut settings = SigningSettings::default();
        match ttl {
            Some(ttl) => {
                settings.signature_location = SignatureLocation::QueryParams;
                settings.expires_in = Some(ttl);
            }
            None => {
                settings.signature_location = SignatureLocation::Headers;
                // S3 wants the payload's hash in a header of its own.
                settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            }
        }
        // S3 canonicalises the path as sent: already encoded once, never normalised.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.session_token_mode = SessionTokenMode::Include;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .map_err(|_| failed("parameters"))?
            .into();
        let request = SignableRequest::new("GET", &url, extra.iter().copied(), SignableBody::UnsignedPayload)
            .map_err(|_| failed("the URL"))?;
        let (instructions, _) = sign(request, &params).map_err(|_| failed("the signature"))?.into_parts();
        let (headers, params) = instructions.into_parts();
        for (k, v) in params {
            push_param(&mut url, k, &v);
        }
        let mut map = HeaderMap::new();
        for (k, v) in extra {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| failed("a header"))?;
            map.insert(name, HeaderValue::from_str(v).map_err(|_| failed("a header"))?);
        }
        for h in headers {
            let mut value = HeaderValue::from_str(h.value()).map_err(|_| failed("a header"))?;
            value.set_sensitive(h.sensitive() || h.name() == "authorization");
            map.insert(HeaderName::from_bytes(h.name().as_bytes()).map_err(|_| failed("a header"))?, value);
        }
        Ok((url, map))
    }
}

/// Appends `k=v` to `url`'s query, both encoded as AWS's `UriEncode` does.
fn push_param(url: &mut String, k: &str, v: &str) {
    url.push(if url.contains('?') { '&' } else { '?' });
    url.extend(utf8_percent_encode(k, UNRESERVED));
    url.push('=');
    url.extend(utf8_percent_encode(v, UNRESERVED));
}

/// An object key as a URL path: each byte but `/` and the unreserved ones encoded.
fn encode_key(key: &str) -> String {
    key.split('/').map(|s| utf8_percent_encode(s, UNRESERVED).to_string()).collect::<Vec<_>>().join("/")
}

/// Whether a bucket name can be a DNS label of a host name: lower case, 3-63
/// characters, letters, digits and `-` (and `.` over plain HTTP, where no certificate
/// has to match), not shaped like an IP address.
fn virtual_hostable(bucket: &str, dots: bool) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    (3..=63).contains(&bucket.len())
        && bucket.chars().all(ok_char)
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !bucket.contains("..")
        && bucket.parse::<std::net::Ipv4Addr>().is_err()
}

/// AWS's regional S3 endpoint (the China partition has its own domain).
fn aws_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    format!("https://s3.{region}.{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn integration(endpoint: Option<&str>, region: &str, path_style: Option<bool>) -> S3Integration {
        serde_json::from_value(serde_json::json!({
            "id": "i", "org_id": "o", "region": region, "endpoint": endpoint, "path_style": path_style,
            "buckets": ["b"], "access": {"type": "iam_user", "access_key_id": "AKID", "secret_ref": "env:X"}
        }))
        .unwrap()
    }

    fn creds(token: Option<&str>) -> SessionCredentials {
        SessionCredentials {
            access_key_id: Secret::new("AKIAIOSFODNN7EXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            session_token: token.map(Secret::new),
            expires_at: None,
        }
    }

    #[test]
    fn matches_the_presigned_url_of_the_aws_documentation() {
        // "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)",
        // Amazon S3 API reference: its example URL and signature.
        let t = S3Target::new(
            &integration(Some("https://s3.amazonaws.com"), "us-east-1", Some(false)),
            true,
            None,
        )
        .unwrap();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 2013-05-24T00:00:00Z
        let url = t
            .presign_get(&creds(None), "examplebucket", "test.txt", &[], time, Duration::from_secs(86400))
            .unwrap();
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn addresses_buckets_as_aws_and_s3_compatible_stores_expect() {
        let url =
            |endpoint: Option<&str>, region: &str, path_style: Option<bool>, aws: bool, bucket: &str| {
                let t = S3Target::new(&integration(endpoint, region, path_style), aws, None).unwrap();
                t.url(bucket, "k")
            };
        assert_eq!(url(None, "eu-west-1", None, true, "acme"), "https://acme.s3.eu-west-1.amazonaws.com/k");
        assert_eq!(
            url(None, "cn-north-1", None, true, "acme"),
            "https://acme.s3.cn-north-1.amazonaws.com.cn/k"
        );
        // A dotted name cannot match the wildcard certificate: path-style over HTTPS.
        assert_eq!(url(None, "us-east-1", None, true, "a.b.c"), "https://s3.us-east-1.amazonaws.com/a.b.c/k");
        assert_eq!(
            url(Some("http://127.0.0.1:9000/"), "us-east-1", Some(false), true, "acme"),
            "http://127.0.0.1:9000/acme/k"
        );
        assert_eq!(
            url(Some("https://minio.example/base"), "us-east-1", None, false, "acme"),
            "https://minio.example/base/acme/k"
        );
        assert_eq!(
            url(Some("https://r2.example"), "auto", Some(false), false, "acme"),
            "https://acme.r2.example/k"
        );
        let t = S3Target::new(&integration(None, "us-east-1", None), true, Some("http://localhost:4566"))
            .unwrap();
        assert_eq!(t.url("acme", ""), "http://acme.localhost:4566/");
        let t =
            S3Target::new(&integration(None, "us-east-1", Some(true)), true, Some("http://localhost:4566"))
                .unwrap();
        assert_eq!(t.url("acme", ""), "http://localhost:4566/acme");
        for bad in ["ftp://h", "not a url", "https://h/?x=1"] {
            let err = S3Target::new(&integration(Some(bad), "us-east-1", None), false, None).unwrap_err();
            assert_eq!(err.code().as_str(), "invalid_integration", "{bad}");
        }
    }

    #[test]
    fn header_signing_gives_the_headers_s3_checks() {
        let t = S3Target::new(&integration(Some("http://127.0.0.1:9000"), "eu-west-1", None), false, None)
            .unwrap();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let (url, headers) =
            t.header_signed_get(&creds(Some("tok")), "b", "k", &[], &[("range", "bytes=0-0")], time).unwrap();
        assert_eq!(url, "http://127.0.0.1:9000/b/k");
        assert_eq!(headers.get("range").unwrap(), "bytes=0-0");
        let auth = headers.get("authorization").unwrap();
        assert!(auth.is_sensitive());
        let auth = auth.to_str().unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/eu-west-1/s3/aws4_request"
        ));
        assert!(
            auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert_eq!(headers.get("x-amz-content-sha256").unwrap(), "UNSIGNED-PAYLOAD");
        assert_eq!(headers.get("x-amz-date").unwrap(), "20130524T000000Z");
        assert!(headers.get("x-amz-security-token").unwrap().is_sensitive());
    }

    #[test]
    fn keys_are_encoded_once_byte_by_byte() {
        assert_eq!(
            encode_key("dir/a b+c%d#e?f&g=h,(i)!$'j:k;l@m~n.o_p-q/é/"),
            "dir/a%20b%2Bc%25d%23e%3Ff%26g%3Dh%2C%28i%29%21%24%27j%3Ak%3Bl%40m~n.o_p-q/%C3%A9/"
        );
        assert_eq!(encode_key("a//b"), "a//b");
    }

    #[test]
    fn a_session_token_is_signed_and_every_value_encoded() {
        let t = S3Target::new(&integration(Some("http://127.0.0.1:9000"), "us-east-1", None), false, None)
            .unwrap();
        let url = t
            .presign_get(
                &creds(Some("tok/en+=")),
                "b",
                "",
                &[("list-type", "2"), ("max-keys", "1")],
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600),
                Duration::from_secs(300),
            )
            .unwrap();
        assert!(url.starts_with("http://127.0.0.1:9000/b?list-type=2&max-keys=1&X-Amz-Algorithm="), "{url}");
        assert!(url.contains("&X-Amz-Security-Token=tok%2Fen%2B%3D"), "{url}");
        assert!(url.contains("X-Amz-SignedHeaders=host&"), "{url}");
        let parsed = Url::parse(&url).unwrap();
        assert_eq!(parsed.query_pairs().filter(|(k, _)| k == "X-Amz-Signature").count(), 1);
        // The token is part of what is signed (S3 wants it in the canonical request).
        let without = t
            .presign_get(
                &creds(None),
                "b",
                "",
                &[("list-type", "2"), ("max-keys", "1")],
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600),
                Duration::from_secs(300),
            )
            .unwrap();
        let sig = |u: &str| {
            Url::parse(u).unwrap().query_pairs().find(|(k, _)| k == "X-Amz-Signature").unwrap().1.into_owned()
        };
        assert_ne!(sig(&url), sig(&without));
    }
}
