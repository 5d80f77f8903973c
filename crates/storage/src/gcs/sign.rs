//! GCS V4 signed URLs (`GOOG4-RSA-SHA256`), hand-written: the canonical request is a
//! few lines, and the crates that do it (object_store 0.14) encode `& + = , ( ) ! $ ' : ; @ ~`
//! in object names differently from Google's reference signer, which makes such URLs
//! fail. The rules here are Google's (the `v4_signatures.json` conformance vectors and
//! the Python `google-cloud-storage` signer, our test oracle): path-style
//! `/<bucket>/<name>` with the name's UTF-8 bytes percent-encoded except
//! `A-Z a-z 0-9 - . _ ~ /`, query parameters sorted and encoded except
//! `A-Z a-z 0-9 - . _ ~`, one signed header (`host`), `UNSIGNED-PAYLOAD`. The clock is
//! an argument, so fixed vectors can be checked byte for byte. The RSA signature itself
//! is done by the caller: a local key ([`RsaKey`]) or IAM Credentials `signBlob`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use crate::error::StorageError;

/// Longest life GCS accepts for a V4 URL; ours are far shorter (see `presign_ttl`).
pub(crate) const MAX_EXPIRES: Duration = Duration::from_secs(604_800);

/// One URL to sign: everything but the signature.
pub(crate) struct V4Request<'a> {
    /// `scheme://host[:port]` of the storage API, no path.
    pub(crate) endpoint: &'a str,
    pub(crate) bucket: &'a str,
    /// The object name, decoded; empty for the bucket itself (a listing).
    pub(crate) object: &'a str,
    /// Query parameters signed along (`max-keys` of a listing); usually none.
    pub(crate) query: &'a [(&'a str, &'a str)],
    /// The account that signs (`X-Goog-Credential`).
    pub(crate) signer_email: &'a str,
    pub(crate) now: SystemTime,
    pub(crate) expires: Duration,
}

/// What is signed, and the URL the signature completes.
pub(crate) struct V4Unsigned {
    pub(crate) string_to_sign: String,
    /// The URL up to `&X-Goog-Signature=`.
    url_prefix: String,
}

impl V4Unsigned {
    /// The signed URL, given the raw RSA signature of `string_to_sign`.
    pub(crate) fn finish(self, signature: &[u8]) -> String {
        let mut url = self.url_prefix;
        url.push_str("&X-Goog-Signature=");
        url.push_str(&hex(signature));
        url
    }
}

impl V4Request<'_> {
    pub(crate) fn prepare(&self) -> Result<V4Unsigned, StorageError> {
        let expires = self.expires.as_secs();
        if expires == 0 || self.expires > MAX_EXPIRES {
            return Err(StorageError::invalid("signed_url_ttl", "V4 URLs live 1 s to 7 days"));
        }
        let endpoint = url::Url::parse(self.endpoint)
            .map_err(|e| StorageError::invalid("endpoint", format!("not a URL ({e})")))?;
        let host = match (endpoint.host_str(), endpoint.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(StorageError::invalid("endpoint", "must name a host")),
        };
        let (timestamp, datestamp) = stamps(self.now);
        let scope = format!("{datestamp}/auto/storage/goog4_request");
        let resource = match self.object {
            "" => format!("/{}", self.bucket),
            o => format!("/{}/{}", self.bucket, encode(o, PATH_SAFE)),
        };
        let mut params: Vec<String> = [
            ("X-Goog-Algorithm", "GOOG4-RSA-SHA256".to_owned()),
            ("X-Goog-Credential", format!("{}/{scope}", self.signer_email)),
            ("X-Goog-Date", timestamp.clone()),
            ("X-Goog-Expires", expires.to_string()),
            ("X-Goog-SignedHeaders", "host".to_owned()),
        ]
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(self.query.iter().copied())
        .map(|(k, v)| format!("{}={}", encode(k, QUERY_SAFE), encode(v, QUERY_SAFE)))
        .collect();
        params.sort();
        let query = params.join("&");
        let canonical = format!("GET\n{resource}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
        let hash = hex(digest(&SHA256, canonical.as_bytes()).as_ref());
        let string_to_sign = format!("GOOG4-RSA-SHA256\n{timestamp}\n{scope}\n{hash}");
        let base = format!("{}://{host}", endpoint.scheme());
        Ok(V4Unsigned { string_to_sign, url_prefix: format!("{base}{resource}?{query}") })
    }
}

/// Bytes kept as they are in the object path: RFC 3986 unreserved, and `/`.
const PATH_SAFE: &[u8] = b"-._~/";
/// Bytes kept as they are in query names and values: RFC 3986 unreserved.
const QUERY_SAFE: &[u8] = b"-._~";

fn encode(s: &str, safe: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || safe.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` and `YYYYMMDD` in UTC.
pub(crate) fn stamps(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let date = format!("{y:04}{m:02}{d:02}");
    (format!("{date}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60), date)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A service account's RSA private key, from the `private_key` PEM of its JSON key.
/// The key never leaves this type; it prints as `REDACTED`.
pub(crate) struct RsaKey(RsaKeyPair);

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaKey(REDACTED)")
    }
}

impl RsaKey {
    /// Parses a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as Google's JSON keys hold.
    pub(crate) fn from_pem(pem: &str) -> Result<RsaKey, StorageError> {
        let bad = |why: &str| StorageError::Credentials {
            what: format!("the service account key's private_key {why}"),
            source: None,
        };
        let body = pem
            .trim()
            .strip_prefix("-----BEGIN PRIVATE KEY-----")
            .and_then(|r| r.strip_suffix("-----END PRIVATE KEY-----"))
            .ok_or_else(|| bad("is not a PKCS#8 PEM block"))?;
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad("is not base64"))?;
        RsaKeyPair::from_pkcs8(&der).map(RsaKey).map_err(|_| bad("is not an RSA key"))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256, as V4 URLs and RS256 JWTs want.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, StorageError> {
        let mut sig = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig)
            .map_err(|_| StorageError::Credentials { what: "RSA signing failed".into(), source: None })?;
        Ok(sig)
    }
}

#[cfg(test)]
pub(crate) fn encode_path_for_tests(s: &str) -> String {
    encode(s, PATH_SAFE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y_m_d_h_m_s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(y_m_d_h_m_s)
    }

    #[test]
    fn timestamps_are_utc_basic_format() {
        // 2019-02-01T09:00:00Z, the conformance vectors' timestamp.
        assert_eq!(stamps(at(1_549_011_600)), ("20190201T090000Z".into(), "20190201".into()));
        assert_eq!(stamps(at(951_782_400)).0, "20000229T000000Z");
        assert_eq!(stamps(at(0)).0, "19700101T000000Z");
        assert_eq!(stamps(at(4_102_444_799)).0, "20991231T235959Z");
    }

    #[test]
    fn names_are_encoded_as_googles_signer_does() {
        assert_eq!(encode("under_score/amper&sand/file.ext", PATH_SAFE), "under_score/amper%26sand/file.ext");
        assert_eq!(
            encode("a b%#+&=,()!$':;@~é猫", PATH_SAFE),
            "a%20b%25%23%2B%26%3D%2C%28%29%21%24%27%3A%3B%40~%C3%A9%E7%8C%AB"
        );
        assert_eq!(encode("a/b", QUERY_SAFE), "a%2Fb");
    }

    /// The conformance case "Simple GET": its canonical request hashes to the
    /// vector's string-to-sign (the signature needs Google's dummy key, which we do not
    /// ship; the golden test in tests/ signs with our own key against Python's signer).
    #[test]
    fn the_simple_get_vector_gives_its_string_to_sign() {
        let unsigned = V4Request {
            endpoint: "https://storage.googleapis.com",
            bucket: "test-bucket",
            object: "test-object",
            query: &[],
            signer_email: "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com",
            now: at(1_549_011_600),
            expires: Duration::from_secs(10),
        }
        .prepare()
        .unwrap();
        assert_eq!(
            unsigned.string_to_sign,
            "GOOG4-RSA-SHA256\n20190201T090000Z\n20190201/auto/storage/goog4_request\n\
             00e2fb794ea93d7adb703edaebdd509821fcc7d4f1a79ac5c8d2b394df109320"
        );
        let url = unsigned.finish(&[0xab, 0x01]);
        assert_eq!(
            url,
            "https://storage.googleapis.com/test-bucket/test-object?X-Goog-Algorithm=GOOG4-RSA-SHA256\
             &X-Goog-Credential=test-iam-credentials%40dummy-project-id.iam.gserviceaccount.com\
             %2F20190201%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20190201T090000Z&X-Goog-Expires=10\
             &X-Goog-SignedHeaders=host&X-Goog-Signature=ab01"
        );
    }

    #[test]
    fn expiry_is_bounded() {
        let req = |secs| V4Request {
            endpoint: "https://storage.googleapis.com",
            bucket: "b",
            object: "o",
            query: &[],
            signer_email: "a@b.iam.gserviceaccount.com",
            now: at(0),
            expires: Duration::from_secs(secs),
        };
        assert!(req(0).prepare().is_err());
        assert!(req(604_801).prepare().is_err());
        assert!(req(604_800).prepare().is_ok());
    }

    #[test]
    fn keys_that_are_not_pkcs8_rsa_are_refused_without_echoing_them() {
        for pem in [
            "",
            "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ] {
            let err = RsaKey::from_pem(pem).unwrap_err();
            assert_eq!(err.code().as_str(), "credentials");
            assert!(!err.to_string().contains("AAAA"));
        }
    }
}
