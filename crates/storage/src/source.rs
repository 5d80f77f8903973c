//! One implementation per kind of storage behind a common trait: it maps an asset URL
//! to one of its objects (the SSRF guard) and fetches that object into a temp file.
//! S3 (AWS and S3-compatible) presigns with SigV4 ([`crate::sigv4`]) and hands the URL
//! to the shared downloader; GCS (V4 signed URLs) and Azure (SAS) do the same with their
//! own signers.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use asset_core::{LocalIntegration, S3Integration};
use async_trait::async_trait;
use percent_encoding::percent_decode_str;
use reqwest::header::HeaderMap;
use url::Url;

use crate::Inner;
use crate::credentials::{Purpose, presign_ttl};
use crate::error::StorageError;
use crate::location::{ObjectLocation, locate_s3};
use crate::partial::Origin;
use crate::secret::{SessionCredentials, SignedUrl};
use crate::sigv4::S3Target;

#[async_trait]
pub(crate) trait ObjectSource: Send + Sync {
    /// The object an asset URL names, or `url_not_in_storage`.
    fn locate(&self, url: &str) -> Result<ObjectLocation, StorageError>;

    /// Where the object's bytes are read from: a URL signed for GET now, or a local
    /// file. Every read of it, whole or ranged, goes through [`crate::read`].
    async fn origin(&self, loc: &ObjectLocation) -> Result<Origin, StorageError>;
}

pub(crate) struct S3Source<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) integration: &'a S3Integration,
    /// `aws` rather than `s3_compatible`: AWS host names are accepted in URLs.
    pub(crate) aws: bool,
}

impl S3Source<'_> {
    pub(crate) async fn credentials(&self, purpose: Purpose) -> Result<SessionCredentials, StorageError> {
        let i = &self.inner;
        i.credentials.get(&i.base, &i.sdk_http, &i.config, self.integration, self.aws, purpose).await
    }

    /// Where the integration's requests go: its endpoint, else the operator's, else AWS.
    pub(crate) fn target(&self) -> Result<S3Target, StorageError> {
        S3Target::new(self.integration, self.aws, self.inner.operator_s3.as_deref())
    }

    /// A presigned GET of the object, with the pipeline's read credentials; `start`
    /// back-dates it (tests of expiry).
    pub(crate) async fn presign(
        &self,
        loc: &ObjectLocation,
        start: Option<SystemTime>,
    ) -> Result<SignedUrl, StorageError> {
        let creds = self.credentials(Purpose::Read).await?;
        let now = SystemTime::now();
        let ttl = presign_ttl(self.inner.config.signed_url_ttl, creds.expires_at, now);
        let start = start.unwrap_or(now);
        let url = self.target()?.presign_get(&creds, &loc.bucket, &loc.key, &[], start, ttl)?;
        still_names(&url, loc)?;
        Ok(SignedUrl::new(url, Some(start + ttl)))
    }

    /// A GET of `bucket`/`key` (`key` empty: a bucket-level operation such as
    /// `list-type=2` or `location`) signed in its headers, `extra` ones included, with
    /// the validation credentials: `validate-storage`'s own requests.
    pub(crate) async fn validation_request(
        &self,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Result<(SignedUrl, HeaderMap), StorageError> {
        let creds = self.credentials(Purpose::Validate).await?;
        let now = SystemTime::now();
        let (url, headers) = self.target()?.header_signed_get(&creds, bucket, key, query, extra, now)?;
        Ok((SignedUrl::new(url, None), headers))
    }
}

/// Belt and braces behind the key check of [`crate::location`]: the signed URL, as the
/// HTTP client will normalise it, must have the path the signer wrote and still name the
/// approved bucket and key. Never prints the URL (it is signed).
pub(crate) fn still_names(signed: &str, loc: &ObjectLocation) -> Result<(), StorageError> {
    let refuse =
        || StorageError::not_in_storage("the signed URL does not name the approved object once normalised");
    let parsed = Url::parse(signed).map_err(|_| refuse())?;
    let raw_path = signed
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .map(|p| p.split(['?', '#']).next().unwrap_or(p))
        .ok_or_else(refuse)?;
    if parsed.path() != raw_path {
        return Err(refuse());
    }
    let path = percent_decode_str(parsed.path()).decode_utf8().map_err(|_| refuse())?;
    let path_style = path.ends_with(&format!("/{}/{}", loc.bucket, loc.key));
    let virtual_hosted = parsed.host_str().is_some_and(|h| h.starts_with(&format!("{}.", loc.bucket)))
        && path.ends_with(&format!("/{}", loc.key));
    if path_style || virtual_hosted { Ok(()) } else { Err(refuse()) }
}

#[async_trait]
impl ObjectSource for S3Source<'_> {
    fn locate(&self, url: &str) -> Result<ObjectLocation, StorageError> {
        locate_s3(self.integration, self.aws, url)
    }

    async fn origin(&self, loc: &ObjectLocation) -> Result<Origin, StorageError> {
        Ok(Origin::Signed(self.presign(loc, None).await?))
    }
}

/// A directory on the worker's machine (replay, development). Same pipeline as a
/// download: the file is copied into the private temp dir under the same limits.
pub(crate) struct LocalSource<'a> {
    pub(crate) integration: &'a LocalIntegration,
}

impl LocalSource<'_> {
    fn resolve(&self, loc: &ObjectLocation) -> Result<PathBuf, StorageError> {
        let root = self
            .integration
            .root
            .canonicalize()
            .map_err(|e| StorageError::io("opening the local root", e))?;
        let target = root.join(&loc.key).canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                StorageError::NotFound { what: format!("local file {:?}", loc.key) }
            }
            _ => StorageError::io("resolving a local file", e),
        })?;
        // Checked after resolving symlinks, so a link pointing outside is refused too.
        if !target.starts_with(&root) {
            return Err(StorageError::not_in_storage(format!(
                "{:?} resolves outside the local root",
                loc.key
            )));
        }
        Ok(target)
    }
}

#[async_trait]
impl ObjectSource for LocalSource<'_> {
    fn locate(&self, url: &str) -> Result<ObjectLocation, StorageError> {
        let rel = url
            .strip_prefix("local://")
            .ok_or_else(|| StorageError::not_in_storage("a local integration accepts local:// URLs only"))?;
        let path = Path::new(rel);
        if rel.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(StorageError::not_in_storage(format!(
                "{rel:?} is not a relative path below the root"
            )));
        }
        Ok(ObjectLocation { bucket: String::new(), key: rel.to_owned() })
    }

    async fn origin(&self, loc: &ObjectLocation) -> Result<Origin, StorageError> {
        let path = self.resolve(loc)?;
        if !path.is_file() {
            return Err(StorageError::NotFound { what: format!("local file {:?}", loc.key) });
        }
        Ok(Origin::Local(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(bucket: &str, key: &str) -> ObjectLocation {
        ObjectLocation { bucket: bucket.into(), key: key.into() }
    }

    #[test]
    fn a_signed_url_must_still_name_its_object_once_normalised() {
        let q = "?X-Amz-Signature=abc";
        still_names(&format!("http://127.0.0.1:9000/acme/img/cat.jpg{q}"), &loc("acme", "img/cat.jpg"))
            .unwrap();
        still_names(
            &format!("https://acme.s3.eu-west-1.amazonaws.com/my%20cat.jpg{q}"),
            &loc("acme", "my cat.jpg"),
        )
        .unwrap();
        still_names(&format!("https://h.example/base/acme/a%2Bb{q}"), &loc("acme", "a+b")).unwrap();
        for (url, l) in [
            (format!("http://127.0.0.1:9000/acme/../other/x{q}"), loc("acme", "../other/x")),
            (format!("http://127.0.0.1:9000/acme/%2e%2e/other/x{q}"), loc("acme", "../other/x")),
            (format!("http://127.0.0.1:9000/acme/./x{q}"), loc("acme", "./x")),
            (format!("http://127.0.0.1:9000/other/x{q}"), loc("acme", "x")),
            (format!("https://other.s3.amazonaws.com/x{q}"), loc("acme", "x")),
            ("not a url".to_owned(), loc("acme", "x")),
        ] {
            let err = still_names(&url, &l).unwrap_err();
            assert_eq!(err.code().as_str(), "url_not_in_storage", "{url}");
            assert!(!err.to_string().contains("abc"), "{err}");
        }
    }
}
