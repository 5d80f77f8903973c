//! `validate-storage`: one verdict per thing the worker needs from an integration —
//! credentials, the role, each bucket, a read, the region and CORS for the platform's
//! origin — with the same stable codes the pipeline uses, so an operator learns at
//! creation time what would otherwise fail on the first import.

use asset_core::{Access, Integration, S3Integration};
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD, HeaderMap,
    ORIGIN, RANGE,
};
use serde::Serialize;

use crate::Storage;
use crate::credentials::{Purpose, base_identity};
use crate::download::{status_error, xml_text};
use crate::error::StorageError;
use crate::location::{ByteRange, ObjectLocation, check_key_segments};
use crate::read::Want;
use crate::secret::SignedUrl;
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
}

/// One verdict. `code` is an `ErrorCode` string, or one of `region_mismatch`,
/// `cors_missing`, `cors_origin_not_allowed`, `cors_origin_unset`, `cors_not_checked`.
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
                    let source = LocalSource { integration: l };
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
                        let read = match source.origin(&loc).await {
                            Ok(origin) => self.read_once(&origin, Want::Range(ByteRange::Prefix(1))).await,
                            Err(e) => Err(e),
                        };
                        match read {
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
        let downloader = &self.inner.downloader;
        for (index, bucket) in s.buckets.iter().enumerate() {
            // ListObjectsV2 rather than HeadBucket: both need s3:ListBucket on AWS, and
            // the listing also yields an object to read (moto refuses HeadBucket to
            // roles that may list).
            let listing = [("list-type", "2"), ("max-keys", "1")];
            let listed = match source.validation_request(bucket, "", &listing, &[]).await {
                Ok((url, headers)) => downloader.get_answer(&url, headers).await,
                Err(e) => Err(e),
            };
            let first_key = match listed.and_then(|(status, _, body)| {
                let body = String::from_utf8_lossy(&body).into_owned();
                if status.is_success() { Ok(body) } else { Err(status_error(status, &body, false)) }
            }) {
                Ok(body) => {
                    checks.push(pass(CheckName::Bucket, format!("bucket {bucket} exists and can be listed")));
                    xml_text(&body, "Key")
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
            let mut signed = None;
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
                    let read =
                        match source.validation_request(bucket, &key, &[], &[("range", "bytes=0-0")]).await {
                            Ok((url, headers)) => match downloader.get_answer(&url, headers).await {
                                // An empty object answers 416 to any range: reading was allowed.
                                Ok((status, ..)) if status.is_success() || status.as_u16() == 416 => Ok(()),
                                Ok((status, _, body)) => {
                                    Err(status_error(status, &String::from_utf8_lossy(&body), false))
                                }
                                Err(e) => Err(e),
                            },
                            Err(e) => Err(e),
                        };
                    match read {
                        Ok(()) => checks
                            .push(pass(CheckName::Read, format!("read the first byte of {bucket}/{key}"))),
                        Err(e) => checks.push(fail(
                            CheckName::Read,
                            e.code().as_str(),
                            format!("{bucket}/{key}: {e}"),
                        )),
                    }
                    // The URL the platform would hand a browser, read or not: CORS is
                    // answered before (and apart from) the object's permissions.
                    let loc = ObjectLocation { bucket: bucket.clone(), key };
                    signed = source.presign(&loc, None).await.ok();
                }
            }

            checks.push(self.check_region(&source, s, aws, bucket).await);
            checks.push(
                self.cors_check(signed.as_ref(), &format!("bucket {bucket}"), opts.origin.as_deref()).await,
            );
        }
    }

    /// GetBucketLocation, compared with the integration's region. A bucket in another
    /// region than the one the request was signed for may answer with a redirect or an
    /// error instead of its location: its `x-amz-bucket-region` header still names it.
    async fn check_region(&self, source: &S3Source<'_>, s: &S3Integration, aws: bool, bucket: &str) -> Check {
        let answer = match source.validation_request(bucket, "", &[("location", "")], &[]).await {
            Ok((url, headers)) => self.inner.downloader.get_answer(&url, headers).await,
            Err(e) => Err(e),
        };
        let header = |h: &HeaderMap| {
            h.get("x-amz-bucket-region")
                .and_then(|v| v.to_str().ok())
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
        };
        let actual = match answer {
            // No constraint means us-east-1; `EU` is the legacy name of eu-west-1.
            Ok((status, _, body)) if status.is_success() => {
                match location_constraint(&String::from_utf8_lossy(&body)).as_deref() {
                    None | Some("") => "us-east-1".to_owned(),
                    Some("EU") => "eu-west-1".to_owned(),
                    Some(r) => r.to_owned(),
                }
            }
            Ok((_, headers, _)) if header(&headers).is_some() => header(&headers).unwrap_or_default(),
            Ok((status, _, body)) => {
                let e = status_error(status, &String::from_utf8_lossy(&body), false);
                return fail(CheckName::Region, e.code().as_str(), format!("bucket {bucket}: {e}"));
            }
            Err(e) => return fail(CheckName::Region, e.code().as_str(), format!("bucket {bucket}: {e}")),
        };
        if !actual.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || actual.len() > 64 {
            return fail(
                CheckName::Region,
                "region_mismatch",
                format!("bucket {bucket} reports no usable region"),
            );
        }
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

/// The text of a GetBucketLocation answer's root element,
/// `<LocationConstraint xmlns="…">eu-west-1</LocationConstraint>` (empty, or an empty
/// element, for us-east-1). `None` when the body is not such a document.
fn location_constraint(body: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let mut inside = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == "LocationConstraint" => inside = true,
            Event::Empty(e) if e.local_name().as_ref() == "LocationConstraint" => return Some(String::new()),
            Event::Text(t) if inside => return Some(t.into_inner().trim().to_owned()),
            Event::End(_) if inside => return Some(String::new()),
            Event::Eof => return None,
            _ => {}
        }
    }
}

impl Storage {
    /// CORS as a browser meets it, the same for every provider: an `OPTIONS` preflight
    /// on a signed object URL with `Origin` and `Access-Control-Request-Method: GET`,
    /// then a `GET` with `Origin`, each answer's `Access-Control-Allow-*` headers compared
    /// with the platform's origin. It holds whatever configures CORS on the server
    /// (bucket rules on S3 and GCS, account rules on Azure, server-wide on MinIO).
    /// `place` names what is checked ("bucket b", "container c"); `signed` is an object
    /// URL the read check signed, or none when there was nothing to read.
    pub(crate) async fn cors_check(
        &self,
        signed: Option<&SignedUrl>,
        place: &str,
        origin: Option<&str>,
    ) -> Check {
        let Some(origin) = origin else {
            return fail(
                CheckName::Cors,
                "cors_origin_unset",
                format!(
                    "No platform origin was given to check the CORS of {place} against (pass --origin or set \
                     PLATFORM_ORIGIN)."
                ),
            );
        };
        let Some(url) = signed else {
            return fail(
                CheckName::Cors,
                "cors_not_checked",
                format!(
                    "CORS of {place} was not checked: it needs an object to sign, and the read check had none."
                ),
            );
        };
        let downloader = &self.inner.downloader;
        let (status, headers) = match downloader
            .preflight(url, &[(ORIGIN, origin), (ACCESS_CONTROL_REQUEST_METHOD, "GET")])
            .await
        {
            Ok(answer) => answer,
            Err(e) => return failed(CheckName::Cors, &e),
        };
        if !status.is_success() {
            return fail(
                CheckName::Cors,
                "cors_origin_not_allowed",
                format!(
                    "The CORS rules of {place} refuse a browser at {origin}: the preflight OPTIONS request was \
                     answered HTTP {}.",
                    status.as_u16()
                ),
            );
        }
        if let Some(refused) = cors_verdict(&headers, place, origin, "the preflight OPTIONS request") {
            return refused;
        }
        let get_allowed = headers
            .get(ACCESS_CONTROL_ALLOW_METHODS)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|m| m.split(',').any(|m| m.trim().eq_ignore_ascii_case("GET") || m.trim() == "*"));
        if !get_allowed {
            return fail(
                CheckName::Cors,
                "cors_origin_not_allowed",
                format!("The CORS rules of {place} let a browser at {origin} send requests, but not GET."),
            );
        }
        match downloader.get_small(url, &[(ORIGIN, origin), (RANGE, "bytes=0-0")]).await {
            Err(e) => failed(CheckName::Cors, &e),
            Ok((headers, _)) => cors_verdict(&headers, place, origin, "a GET").unwrap_or_else(|| {
                pass(CheckName::Cors, format!("{place} lets a browser at {origin} GET its objects"))
            }),
        }
    }
}

/// `None` when an answer's `Access-Control-Allow-Origin` admits `origin`, else the failed
/// check saying how.
fn cors_verdict(headers: &HeaderMap, place: &str, origin: &str, request: &str) -> Option<Check> {
    match headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).map(|v| v.to_str().unwrap_or_default()) {
        Some(allowed) if allowed == "*" || allowed.eq_ignore_ascii_case(origin) => None,
        Some(_) => Some(fail(
            CheckName::Cors,
            "cors_origin_not_allowed",
            format!("The CORS rules of {place} answer {request} from {origin} for another origin."),
        )),
        None => Some(fail(
            CheckName::Cors,
            "cors_missing",
            format!(
                "No CORS rule of {place} applies to {request} from {origin}: the answer has no \
                 Access-Control-Allow-Origin."
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_locations_are_read_from_the_documents_servers_write() {
        let ns = r#"xmlns="http://s3.amazonaws.com/doc/2006-03-01/""#;
        assert_eq!(
            location_constraint(&format!(
                r#"<?xml version="1.0"?><LocationConstraint {ns}>eu-west-1</LocationConstraint>"#
            ))
            .as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(location_constraint(&format!("<LocationConstraint {ns}/>")).as_deref(), Some(""));
        assert_eq!(location_constraint("<LocationConstraint></LocationConstraint>").as_deref(), Some(""));
        assert_eq!(location_constraint("<LocationConstraint>EU</LocationConstraint>").as_deref(), Some("EU"));
        assert_eq!(location_constraint("<Error><Code>AccessDenied</Code></Error>"), None);
        assert_eq!(location_constraint("not xml <"), None);
    }

    #[test]
    fn sign_blob_is_named_as_documented() {
        assert_eq!(serde_json::to_value(CheckName::SignBlob).unwrap(), serde_json::json!("sign_blob"));
    }

    #[test]
    fn cors_answers_are_compared_with_the_origin() {
        let with = |v: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(v) = v {
                h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, v.parse().unwrap());
            }
            cors_verdict(&h, "bucket b", "https://app.example.com", "a GET")
                .map(|c| (c.code.unwrap(), c.message))
        };
        assert_eq!(with(Some("*")), None);
        assert_eq!(with(Some("https://APP.example.com")), None);
        let (code, message) = with(Some("https://app.example.com.evil")).unwrap();
        assert_eq!(code, "cors_origin_not_allowed");
        assert!(message.starts_with("The CORS rules of bucket b") && message.ends_with('.'), "{message}");
        let (code, message) = with(None).unwrap();
        assert_eq!(code, "cors_missing");
        assert!(message.starts_with("No CORS rule of bucket b applies to a GET from"), "{message}");
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
