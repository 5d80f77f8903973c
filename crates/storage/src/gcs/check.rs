//! `validate-storage` for GCS: the same verdicts and JSON as for S3. Everything goes
//! through URLs the worker signs itself, exactly as the pipeline's reads do: the
//! bucket check lists one object through a signed XML-API listing, the read fetches
//! one byte, and CORS is a browser's own preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method: GET`, then a `GET` with `Origin`) on a signed
//! object URL, so it holds for whatever configures CORS on the server.

use asset_core::{GcsAccess, GcsIntegration};
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};

use super::GcsSource;
use crate::Storage;
use crate::check::{Check, CheckName, ValidateOptions, fail, failed, pass};
use crate::error::StorageError;
use crate::location::{ByteRange, ObjectLocation, check_key_segments};
use crate::secret::SignedUrl;

impl Storage {
    pub(crate) async fn validate_gcs(
        &self,
        g: &GcsIntegration,
        opts: &ValidateOptions,
        checks: &mut Vec<Check>,
    ) {
        let source = GcsSource { inner: &self.inner, integration: g };
        if let Some(s3) = source.hmac_as_s3() {
            return self.validate_s3(&s3, false, opts, checks).await;
        }
        let cfg = &self.inner.config;
        match &g.access {
            GcsAccess::ServiceAccountKey { client_email, secret_ref } => {
                match super::service_account_key(secret_ref, client_email, &g.org_id, cfg) {
                    Ok(_) => checks.push(pass(
                        CheckName::Credentials,
                        format!("the JSON key at {secret_ref} is readable and is {client_email}'s"),
                    )),
                    Err(e) => return checks.push(failed(CheckName::Credentials, &e)),
                }
            }
            GcsAccess::IamDelegated { service_account } => {
                let auth = &self.inner.gcs_auth;
                let token = match auth.token(&cfg.gcs, &cfg.retry, cfg.refresh_margin).await {
                    Ok(t) => {
                        checks.push(pass(CheckName::Credentials, "the worker's Google identity has a token"));
                        t
                    }
                    Err(e) => return checks.push(failed(CheckName::Credentials, &e)),
                };
                match auth.sign_blob(&cfg.gcs, &token, service_account, b"validate-storage").await {
                    Ok(_) => checks.push(pass(
                        CheckName::SignBlob,
                        format!("the worker may sign as {service_account} (signBlob)"),
                    )),
                    Err(e) => return checks.push(failed(CheckName::SignBlob, &e)),
                }
            }
            GcsAccess::Hmac { .. } => unreachable!("validated through the S3 path above"),
        }
        for (index, bucket) in g.buckets.iter().enumerate() {
            let first_key = match self.gcs_list_one(&source, bucket).await {
                Ok(key) => {
                    checks.push(pass(CheckName::Bucket, format!("bucket {bucket} exists and can be listed")));
                    key
                }
                Err(e) => {
                    checks.push(fail(
                        CheckName::Bucket,
                        e.code().as_str(),
                        format!("bucket {bucket}: listing: {e}"),
                    ));
                    None
                }
            };
            let key = if index == 0 { opts.key.clone().or(first_key) } else { first_key };
            let Some(key) = key else {
                checks.push(fail(
                    CheckName::Read,
                    "not_found",
                    format!("bucket {bucket}: no object to read (empty bucket?); pass --key"),
                ));
                continue;
            };
            if let Err(e) = check_key_segments(&key) {
                checks.push(fail(CheckName::Read, e.code().as_str(), format!("bucket {bucket}: {e}")));
                continue;
            }
            let loc = ObjectLocation { bucket: bucket.clone(), key: key.clone() };
            let signed = match source.presign(&loc, None).await {
                Ok(u) => u,
                Err(e) => {
                    checks.push(fail(CheckName::Read, e.code().as_str(), format!("{bucket}/{key}: {e}")));
                    continue;
                }
            };
            match self.download_signed(&signed, Some(ByteRange::Prefix(1))).await {
                Ok(asset) => {
                    let _ = asset.delete();
                    checks.push(pass(CheckName::Read, format!("read the first byte of {bucket}/{key}")));
                }
                Err(e) => {
                    checks.push(fail(CheckName::Read, e.code().as_str(), format!("{bucket}/{key}: {e}")))
                }
            }
            checks.push(self.cors_preflight(&signed, bucket, opts.origin.as_deref()).await);
        }
    }

    /// The first object name of a bucket, through a signed XML-API listing.
    async fn gcs_list_one(
        &self,
        source: &GcsSource<'_>,
        bucket: &str,
    ) -> Result<Option<String>, StorageError> {
        let url = source.sign_v4(bucket, "", &[("max-keys", "1")], None).await?;
        let body = self.inner.downloader.get_small(&url, &[]).await?.1;
        Ok(first_xml_key(&String::from_utf8_lossy(&body)))
    }

    /// A browser's CORS check on a signed object URL.
    pub(crate) async fn cors_preflight(&self, url: &SignedUrl, bucket: &str, origin: Option<&str>) -> Check {
        let Some(origin) = origin else {
            return fail(
                CheckName::Cors,
                "cors_origin_unset",
                "No platform origin was given to check CORS against (pass --origin or set PLATFORM_ORIGIN).",
            );
        };
        let refused = |step: &str| {
            fail(
                CheckName::Cors,
                "cors_origin_not_allowed",
                format!("Bucket {bucket} does not let a browser at {origin} read its objects ({step})."),
            )
        };
        let allows = |headers: &reqwest::header::HeaderMap| {
            headers
                .get(ACCESS_CONTROL_ALLOW_ORIGIN)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == "*" || v.eq_ignore_ascii_case(origin))
        };
        let preflight = self
            .inner
            .downloader
            .preflight(url, &[(ORIGIN, origin), (ACCESS_CONTROL_REQUEST_METHOD, "GET")])
            .await;
        match preflight {
            Err(e) => return failed(CheckName::Cors, &e),
            Ok(headers) => {
                let methods_ok =
                    headers.get(ACCESS_CONTROL_ALLOW_METHODS).and_then(|v| v.to_str().ok()).is_none_or(|m| {
                        m.split(',').any(|m| m.trim().eq_ignore_ascii_case("GET") || m.trim() == "*")
                    });
                if !allows(&headers) || !methods_ok {
                    return refused("the preflight OPTIONS request was not allowed");
                }
            }
        }
        match self.inner.downloader.get_small(url, &[(ORIGIN, origin)]).await {
            Err(e) => failed(CheckName::Cors, &e),
            Ok((headers, _)) if allows(&headers) => {
                pass(CheckName::Cors, format!("bucket {bucket} lets a browser at {origin} GET its objects"))
            }
            Ok(_) => refused("the GET answered without Access-Control-Allow-Origin for it"),
        }
    }
}

/// The first `<Key>` of a ListBucketResult, XML entities decoded.
fn first_xml_key(xml: &str) -> Option<String> {
    let start = xml.find("<Key>")? + "<Key>".len();
    let end = start + xml[start..].find("</Key>")?;
    let raw = &xml[start..end];
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keys_are_unescaped() {
        let xml = "<ListBucketResult><Name>b</Name><Contents><Key>a &amp; b&lt;1&gt;.jpg</Key></Contents></ListBucketResult>";
        assert_eq!(first_xml_key(xml).as_deref(), Some("a & b<1>.jpg"));
        assert_eq!(first_xml_key("<ListBucketResult></ListBucketResult>"), None);
    }
}
