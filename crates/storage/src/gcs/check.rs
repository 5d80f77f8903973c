//! `validate-storage` for GCS: the same verdicts and JSON as for S3. Everything goes
//! through URLs the worker signs itself, exactly as the pipeline's reads do: the
//! bucket check lists one object through a signed XML-API listing, the read fetches
//! one byte, and CORS is a browser's own preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method: GET`, then a `GET` with `Origin`) on a signed
//! object URL, so it holds for whatever configures CORS on the server.

use asset_core::{GcsAccess, GcsIntegration};

use super::GcsSource;
use crate::Storage;
use crate::check::{Check, CheckName, ValidateOptions, fail, failed, pass};
use crate::download::xml_text;
use crate::error::StorageError;
use crate::location::{ByteRange, ObjectLocation, check_key_segments};

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
            checks.push(
                self.cors_check(Some(&signed), &format!("bucket {bucket}"), opts.origin.as_deref()).await,
            );
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
        Ok(xml_text(&String::from_utf8_lossy(&body), "Key"))
    }
}
