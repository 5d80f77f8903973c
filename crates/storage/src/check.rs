//! `validate-storage`: one verdict per thing the worker needs from an integration —
//! credentials, the role, each bucket, a read, the region and CORS for the platform's
//! origin — with the same stable codes the pipeline uses, so an operator learns at
//! creation time what would otherwise fail on the first import.

use asset_core::{Access, Integration, S3Integration};
use aws_sdk_s3::error::ProvideErrorMetadata;
use serde::Serialize;

use crate::Storage;
use crate::credentials::{Purpose, base_identity, classify_sdk_error};
use crate::error::StorageError;
use crate::location::{ByteRange, ObjectLocation, check_key_segments};
use crate::retry::with_retry;
use crate::source::{LocalSource, ObjectSource, S3Source};
use crate::validate::is_known_aws_region;

/// What `validate-storage` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    Credentials,
    AssumeRole,
    Bucket,
    Read,
    Region,
    Cors,
    /// GCS `iam_delegated`: the worker may sign as the customer's service account.
    SignBlob,
    /// Azure: Get User Delegation Key with the integration's Entra token.
    UserDelegationKey,
    /// Azure: the container exists and can be listed.
    Container,
}

/// One verdict. `code` is an `ErrorCode` string, or one of `region_mismatch`,
/// `cors_missing`, `cors_origin_not_allowed`, `cors_origin_unset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: CheckName,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationReport {
    pub ok: bool,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// An object to read (in the first bucket); else the first object listed is read.
    pub key: Option<String>,
    /// The platform's web origin, which the buckets' CORS rules must allow.
    pub origin: Option<String>,
}

pub(crate) fn pass(name: CheckName, message: impl Into<String>) -> Check {
    Check { name, ok: true, code: None, message: message.into() }
}

pub(crate) fn fail(name: CheckName, code: impl Into<String>, message: impl Into<String>) -> Check {
    Check { name, ok: false, code: Some(code.into()), message: message.into() }
}

pub(crate) fn failed(name: CheckName, err: &StorageError) -> Check {
    fail(name, err.code().as_str(), err.to_string())
}

impl Storage {
    /// Runs every check that applies and reports each; never fails as a whole.
    pub async fn validate_access(
        &self,
        integration: &Integration,
        opts: &ValidateOptions,
    ) -> ValidationReport {
        let mut checks = Vec::new();
        match self.admit(integration) {
            Err(e) => checks.push(failed(CheckName::Credentials, &e)),
            Ok(()) => match integration {
                Integration::Aws(s) => self.validate_s3(s, true, opts, &mut checks).await,
                Integration::S3Compatible(s) => self.validate_s3(s, false, opts, &mut checks).await,
                Integration::Gcs(g) => self.validate_gcs(g, opts, &mut checks).await,
                Integration::Azure(a) => self.validate_azure(a, opts, &mut checks).await,
                Integration::Local(l) => {
                    let source = LocalSource { inner: &self.inner, integration: l };
                    match std::fs::read_dir(&l.root) {
                        Ok(_) => checks.push(pass(
                            CheckName::Bucket,
                            format!("{} is a readable directory", l.root.display()),
                        )),
                        Err(e) => checks
                            .push(failed(CheckName::Bucket, &StorageError::io("listing the local root", e))),
                    }
                    if let Some(key) = &opts.key {
                        let loc = ObjectLocation { bucket: String::new(), key: key.clone() };
                        match source.fetch(&loc, Some(ByteRange::Prefix(1))).await {
                            Ok(asset) => {
                                let _ = asset.delete();
                                checks.push(pass(CheckName::Read, format!("read the first byte of {key:?}")));
                            }
                            Err(e) => checks.push(failed(CheckName::Read, &e)),
                        }
                    }
                }
            },
        }
        ValidationReport { ok: !checks.is_empty() && checks.iter().all(|c| c.ok), checks }
    }

    pub(crate) async fn validate_s3(
        &self,
        s: &S3Integration,
        aws: bool,
        opts: &ValidateOptions,
        checks: &mut Vec<Check>,
    ) {
        let source = S3Source { inner: &self.inner, integration: s, aws };
        let retry = &self.inner.config.retry;
        match &s.access {
            Access::IamUser { secret_ref, .. } => match source.credentials(Purpose::Validate).await {
                Ok(_) => checks
                    .push(pass(CheckName::Credentials, format!("the secret at {secret_ref} is readable"))),
                Err(e) => return checks.push(failed(CheckName::Credentials, &e)),
            },
            Access::IamDelegated { role_arn, .. } => {
                match base_identity(&self.inner.base).await {
                    Ok(()) => checks
                        .push(pass(CheckName::Credentials, "the worker's base identity has credentials")),
                    Err(e) => return checks.push(failed(CheckName::Credentials, &e)),
                }
                match source.credentials(Purpose::Validate).await {
                    Ok(_) => checks.push(pass(
                        CheckName::AssumeRole,
                        format!(
                            "assumed {role_arn} with the ExternalId, narrowed to the integration's buckets"
                        ),
                    )),
                    Err(e) => return checks.push(failed(CheckName::AssumeRole, &e)),
                }
            }
        }
        let creds = match source.credentials(Purpose::Validate).await {
            Ok(c) => c,
            Err(e) => return checks.push(failed(CheckName::Credentials, &e)),
        };
        let client = source.client(&creds);

        for (index, bucket) in s.buckets.iter().enumerate() {
            // ListObjectsV2 rather than HeadBucket: both need s3:ListBucket on AWS, and
            // the listing also yields an object to read (moto refuses HeadBucket to
            // roles that may list).
            let listed = with_retry(retry, "list_objects", |_| async {
                client
                    .list_objects_v2()
                    .bucket(bucket)
                    .max_keys(1)
                    .send()
                    .await
                    .map_err(|e| classify_sdk_error("s3", e))
            })
            .await;
            let first_key = match listed {
                Ok(l) => {
                    checks.push(pass(CheckName::Bucket, format!("bucket {bucket} exists and can be listed")));
                    l.contents().first().and_then(|o| o.key()).map(str::to_owned)
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
            match key {
                None => checks.push(fail(
                    CheckName::Read,
                    "not_found",
                    format!("bucket {bucket}: no object to read (empty bucket?); pass --key"),
                )),
                // A key from the listing is the server's: it stays in the bucket too.
                Some(key) if check_key_segments(&key).is_err() => {
                    let e = check_key_segments(&key).unwrap_err();
                    checks.push(fail(CheckName::Read, e.code().as_str(), format!("bucket {bucket}: {e}")));
                }
                Some(key) => {
                    let read = with_retry(retry, "get_object", |_| async {
                        match client.get_object().bucket(bucket).key(&key).range("bytes=0-0").send().await {
                            Ok(_) => Ok(()),
                            // An empty object answers 416 to any range: reading was allowed.
                            Err(e) if e.code() == Some("InvalidRange") => Ok(()),
                            Err(e) => Err(classify_sdk_error("s3", e)),
                        }
                    })
                    .await;
                    match read {
                        Ok(()) => checks
                            .push(pass(CheckName::Read, format!("read the first byte of {bucket}/{key}"))),
                        Err(e) => checks.push(fail(
                            CheckName::Read,
                            e.code().as_str(),
                            format!("{bucket}/{key}: {e}"),
                        )),
                    }
                }
            }

            checks.push(self.check_region(&client, s, aws, bucket).await);
            checks.push(check_cors(&client, retry, bucket, opts.origin.as_deref()).await);
        }
    }

    async fn check_region(
        &self,
        client: &aws_sdk_s3::Client,
        s: &S3Integration,
        aws: bool,
        bucket: &str,
    ) -> Check {
        let loc = with_retry(&self.inner.config.retry, "get_bucket_location", |_| async {
            client.get_bucket_location().bucket(bucket).send().await.map_err(|e| classify_sdk_error("s3", e))
        })
        .await;
        let actual = match loc {
            // No constraint means us-east-1; `EU` is the legacy name of eu-west-1.
            Ok(l) => match l.location_constraint().map(|c| c.as_str()) {
                None | Some("") => "us-east-1".to_owned(),
                Some("EU") => "eu-west-1".to_owned(),
                Some(r) => r.to_owned(),
            },
            Err(e) => return fail(CheckName::Region, e.code().as_str(), format!("bucket {bucket}: {e}")),
        };
        let expected = s.region.as_deref().unwrap_or("us-east-1");
        if actual == expected {
            pass(CheckName::Region, format!("bucket {bucket} is in {actual}"))
        } else if aws || is_known_aws_region(expected) && s.region.is_some() {
            fail(
                CheckName::Region,
                "region_mismatch",
                format!("bucket {bucket} is in {actual}, the integration says {expected}"),
            )
        } else {
            pass(CheckName::Region, format!("bucket {bucket} reports region {actual}"))
        }
    }
}

async fn check_cors(
    client: &aws_sdk_s3::Client,
    retry: &crate::config::RetryConfig,
    bucket: &str,
    origin: Option<&str>,
) -> Check {
    let Some(origin) = origin else {
        return fail(
            CheckName::Cors,
            "cors_origin_unset",
            "no platform origin to check against (--origin or PLATFORM_ORIGIN)",
        );
    };
    let cors = with_retry(retry, "get_bucket_cors", |_| async {
        match client.get_bucket_cors().bucket(bucket).send().await {
            Ok(o) => Ok(Some(o.cors_rules().to_vec())),
            Err(e) if e.code() == Some("NoSuchCORSConfiguration") => Ok(None),
            Err(e) => Err(classify_sdk_error("s3", e)),
        }
    })
    .await;
    match cors {
        Err(e) => fail(CheckName::Cors, e.code().as_str(), format!("bucket {bucket}: {e}")),
        Ok(None) => {
            fail(CheckName::Cors, "cors_missing", format!("bucket {bucket} has no CORS configuration"))
        }
        Ok(Some(rules)) => {
            let allowed = rules.iter().any(|r| {
                r.allowed_methods().iter().any(|m| m.eq_ignore_ascii_case("GET"))
                    && r.allowed_origins().iter().any(|o| origin_matches(o, origin))
            });
            if allowed {
                pass(CheckName::Cors, format!("bucket {bucket} allows GET from {origin}"))
            } else {
                fail(
                    CheckName::Cors,
                    "cors_origin_not_allowed",
                    format!("no CORS rule of bucket {bucket} allows GET from {origin}"),
                )
            }
        }
    }
}

/// S3 CORS origins: exact (case-insensitive), `*`, or one `*` wildcard.
pub(crate) fn origin_matches(pattern: &str, origin: &str) -> bool {
    let (p, o) = (pattern.to_ascii_lowercase(), origin.to_ascii_lowercase());
    match p.split_once('*') {
        None => p == o,
        Some((head, tail)) => o.len() >= head.len() + tail.len() && o.starts_with(head) && o.ends_with(tail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_blob_is_named_as_documented() {
        assert_eq!(serde_json::to_value(CheckName::SignBlob).unwrap(), serde_json::json!("sign_blob"));
    }

    #[test]
    fn cors_origins() {
        assert!(origin_matches("*", "https://app.example.com"));
        assert!(origin_matches("https://app.example.com", "https://APP.example.com"));
        assert!(origin_matches("https://*.example.com", "https://app.example.com"));
        assert!(!origin_matches("https://*.example.com", "https://example.org"));
        assert!(!origin_matches("https://app.example.com", "https://app.example.com.evil"));
    }

    #[test]
    fn report_serialises_as_documented() {
        let r = ValidationReport {
            ok: false,
            checks: vec![pass(CheckName::AssumeRole, "fine"), fail(CheckName::Cors, "cors_missing", "none")],
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"ok": false, "checks": [
                {"name": "assume_role", "ok": true, "message": "fine"},
                {"name": "cors", "ok": false, "code": "cors_missing", "message": "none"}
            ]})
        );
    }
}
