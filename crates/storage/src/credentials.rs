//! Credentials per integration: static IAM-user keys looked up at their `secret_ref`, or
//! a delegated session from STS AssumeRole (ExternalId, short duration, a session policy
//! narrowed to reading the integration's buckets). Sessions are cached per integration
//! and refreshed shortly before expiry: one STS call per integration per lifetime.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use asset_core::{Access, S3Integration};
use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::StorageConfig;
use crate::download::error_fields;
use crate::error::StorageError;
use crate::retry::with_retry;
use crate::secret::{Secret, SessionCredentials};
use crate::validate::{SecretRef, parse_secret_ref};

/// The shortest session STS grants.
const SESSION_SECONDS: i32 = 900;

/// What a session may do: read objects (the pipeline), or also inspect bucket settings
/// (`validate-storage`). Each has its own session policy and cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Purpose {
    Read,
    Validate,
}

type Slot = Arc<tokio::sync::Mutex<Option<SessionCredentials>>>;

#[derive(Default)]
pub(crate) struct CredentialCache {
    slots: std::sync::Mutex<HashMap<u64, Slot>>,
    sts_calls: AtomicU64,
}

impl CredentialCache {
    pub(crate) fn sts_calls(&self) -> u64 {
        self.sts_calls.load(Ordering::Relaxed)
    }

    /// Credentials for `s`, from the cache while they have more than the refresh margin
    /// left. Concurrent callers for one integration wait for a single AssumeRole.
    pub(crate) async fn get(
        &self,
        base: &SdkConfig,
        config: &StorageConfig,
        s: &S3Integration,
        aws: bool,
        purpose: Purpose,
    ) -> Result<SessionCredentials, StorageError> {
        let (role_arn, external_id) = match &s.access {
            Access::IamUser { access_key_id, secret_ref } => {
                let secret = resolve_secret(secret_ref, config.secrets_dir.as_deref(), aws)?;
                return Ok(SessionCredentials {
                    access_key_id: Secret::new(access_key_id.clone()),
                    secret_access_key: secret,
                    session_token: None,
                    expires_at: None,
                });
            }
            Access::IamDelegated { role_arn, external_id } => (role_arn, external_id),
        };
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(cache_key(s, purpose)).or_default().clone()
        };
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c.expires_at.is_some_and(|exp| exp > SystemTime::now() + config.refresh_margin);
            if fresh {
                return Ok(c.clone());
            }
        }
        let creds = with_retry(&config.retry, "assume_role", |_| {
            self.assume_role(base, config, s, role_arn, external_id, purpose)
        })
        .await?;
        *cached = Some(creds.clone());
        Ok(creds)
    }

    async fn assume_role(
        &self,
        base: &SdkConfig,
        config: &StorageConfig,
        s: &S3Integration,
        role_arn: &str,
        external_id: &str,
        purpose: Purpose,
    ) -> Result<SessionCredentials, StorageError> {
        base_identity(base).await?;
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(base)
                .region(aws_sdk_sts::config::Region::new(
                    s.region.clone().unwrap_or_else(|| "us-east-1".into()),
                ))
                .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
                .timeout_config(timeouts(config))
                .build(),
        );
        let session_name = role_session_name(&s.org_id, &s.id);
        tracing::info!(integration_id = %s.id, role_arn, session_name, "assuming the integration's role");
        self.sts_calls.fetch_add(1, Ordering::Relaxed);
        let out = sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session_name)
            .external_id(external_id)
            .duration_seconds(SESSION_SECONDS)
            .policy(session_policy(role_arn, &s.buckets, purpose))
            .send()
            .await
            .map_err(|e| classify_sdk_error("sts", e))?;
        let c = out.credentials().ok_or_else(|| StorageError::Credentials {
            what: "AssumeRole answered without credentials".into(),
            source: None,
        })?;
        Ok(SessionCredentials {
            access_key_id: Secret::new(c.access_key_id()),
            secret_access_key: Secret::new(c.secret_access_key()),
            session_token: Some(Secret::new(c.session_token())),
            expires_at: SystemTime::try_from(*c.expiration()).ok(),
        })
    }
}

/// Checks that the worker's own identity (standard chain) yields credentials.
pub(crate) async fn base_identity(base: &SdkConfig) -> Result<(), StorageError> {
    let provider = base.credentials_provider().ok_or_else(|| StorageError::Credentials {
        what: "no base AWS credentials provider is configured".into(),
        source: None,
    })?;
    provider.provide_credentials().await.map(|_| ()).map_err(|e| StorageError::Credentials {
        what: format!("the worker's base AWS identity: {}", DisplayErrorContext(&e)),
        source: None,
    })
}

pub(crate) fn timeouts(config: &StorageConfig) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        .build()
}

fn cache_key(s: &S3Integration, purpose: Purpose) -> u64 {
    // Keyed by everything that shapes the session, so an edited integration that keeps
    // its id does not reuse the old session.
    let mut h = DefaultHasher::new();
    (&s.id, &s.org_id, &s.region, &s.buckets, purpose).hash(&mut h);
    if let Access::IamDelegated { role_arn, external_id } = &s.access {
        (role_arn, external_id).hash(&mut h);
    }
    h.finish()
}

/// `mw-<org>-<integration>`, in the characters STS allows, at most 64 long: what the
/// customer sees in CloudTrail.
pub(crate) fn role_session_name(org: &str, integration: &str) -> String {
    let raw = format!("mw-{org}-{integration}");
    raw.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) { c } else { '-' })
        .take(64)
        .collect()
}

/// Narrows the session to what the purpose needs on the integration's buckets, whatever
/// the role itself allows.
pub(crate) fn session_policy(role_arn: &str, buckets: &[String], purpose: Purpose) -> String {
    let partition = role_arn.split(':').nth(1).unwrap_or("aws");
    let objects: Vec<String> = buckets.iter().map(|b| format!("arn:{partition}:s3:::{b}/*")).collect();
    let buckets: Vec<String> = buckets.iter().map(|b| format!("arn:{partition}:s3:::{b}")).collect();
    let bucket_actions: &[&str] = match purpose {
        Purpose::Read => &["s3:ListBucket"],
        Purpose::Validate => &["s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketCORS"],
    };
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": objects},
            {"Effect": "Allow", "Action": bucket_actions, "Resource": buckets},
        ]
    })
    .to_string()
}

/// Reads the secret an IAM-user integration points at.
pub(crate) fn resolve_secret(r: &str, secrets_dir: Option<&Path>, aws: bool) -> Result<Secret, StorageError> {
    let value = match parse_secret_ref(r)? {
        SecretRef::Env(name) => std::env::var(name).map_err(|e| StorageError::Credentials {
            what: format!("secret_ref env:{name}: the variable is not set or not UTF-8"),
            source: Some(Box::new(e)),
        })?,
        SecretRef::File(path) => {
            let dir = secrets_dir.ok_or_else(|| StorageError::Credentials {
                what: "secret_ref file:… needs a configured secrets directory".into(),
                source: None,
            })?;
            let dir = dir.canonicalize().map_err(|e| StorageError::Credentials {
                what: format!("secrets directory {}", dir.display()),
                source: Some(Box::new(e)),
            })?;
            let full = dir.join(path).canonicalize().map_err(|e| StorageError::Credentials {
                what: format!("secret_ref file:{}", path.display()),
                source: Some(Box::new(e)),
            })?;
            if !full.starts_with(&dir) {
                return Err(StorageError::invalid(
                    "access.secret_ref",
                    "file:PATH must be inside the secrets directory",
                ));
            }
            let meta = std::fs::metadata(&full).map_err(|e| StorageError::io("reading a secret file", e))?;
            if meta.len() > 4096 {
                return Err(StorageError::invalid(
                    "access.secret_ref",
                    "the secret file is larger than 4 KiB",
                ));
            }
            std::fs::read_to_string(&full).map_err(|e| StorageError::io("reading a secret file", e))?
        }
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(StorageError::invalid("access.secret_ref", "the secret is empty"));
    }
    if aws && value.len() != 40 {
        return Err(StorageError::invalid(
            "access.secret_ref",
            format!("AWS secret access keys are 40 characters, this one has {}", value.len()),
        ));
    }
    Ok(Secret::new(value))
}

/// Turns an AWS SDK error into our classification. The SDK's messages carry the
/// service's code and message, never credentials.
pub(crate) fn classify_sdk_error<E>(service: &'static str, err: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    // Some servers (moto) wrap errors in an extra `<Errors>` element the SDK's parser
    // does not look into; read the code and message from the body then.
    let fallback = err
        .raw_response()
        .and_then(|r| r.body().bytes())
        .map(|b| error_fields(&String::from_utf8_lossy(b)))
        .unwrap_or_default();
    let code = err.code().map(str::to_owned).or(fallback.0).unwrap_or_default();
    let message = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) => {
            return StorageError::Timeout { during: service, source: Some(Box::new(err)) };
        }
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            return StorageError::Timeout { during: service, source: Some(Box::new(err)) };
        }
        SdkError::DispatchFailure(d) => {
            let retryable = d.is_io();
            return StorageError::Upstream { service, message, retryable, source: None };
        }
        SdkError::ConstructionFailure(_) => {
            return StorageError::Credentials { what: format!("{service} request: {message}"), source: None };
        }
        _ => {}
    }
    let service_message = err.message().map(str::to_owned).or(fallback.1).unwrap_or_default();
    match (code.as_str(), status) {
        ("InvalidClientTokenId" | "SignatureDoesNotMatch" | "IncompleteSignature" | "ExpiredToken", _)
            if service == "sts" =>
        {
            StorageError::Credentials {
                what: format!("the worker's base identity was refused by STS: {code}"),
                source: None,
            }
        }
        (
            "Throttling"
            | "ThrottlingException"
            | "SlowDown"
            | "RequestLimitExceeded"
            | "TooManyRequestsException",
            _,
        )
        | (_, Some(429 | 503)) => StorageError::Throttled { service, message },
        ("NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchEntity", _) | (_, Some(404)) => {
            StorageError::NotFound {
                what: format!("{service}: {}", if code.is_empty() { "404" } else { &code }),
            }
        }
        ("AccessDenied" | "AccessDeniedException" | "InvalidAccessKeyId" | "SignatureDoesNotMatch", _)
        | (_, Some(403)) => StorageError::AccessDenied {
            service,
            service_code: if code.is_empty() { "403".into() } else { code },
            message: service_message,
        },
        (_, Some(s)) if s >= 500 => {
            StorageError::Upstream { service, message, retryable: true, source: None }
        }
        _ => StorageError::Upstream { service, message, retryable: false, source: None },
    }
}

/// How long a presigned URL may live: the configured TTL, at most 15 minutes, and never
/// beyond the credentials' expiry.
pub(crate) fn presign_ttl(configured: Duration, expires_at: Option<SystemTime>, now: SystemTime) -> Duration {
    let mut ttl = configured.min(Duration::from_secs(15 * 60));
    if let Some(exp) = expires_at {
        ttl = ttl.min(exp.duration_since(now).unwrap_or(Duration::ZERO));
    }
    ttl.max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_sanitised_and_short() {
        assert_eq!(role_session_name("acme", "int-1"), "mw-acme-int-1");
        assert_eq!(role_session_name("ac me/é", "i:d"), "mw-ac-me---i-d");
        assert_eq!(role_session_name(&"o".repeat(100), "i").len(), 64);
    }

    #[test]
    fn session_policy_narrows_to_the_buckets() {
        let p: serde_json::Value = serde_json::from_str(&session_policy(
            "arn:aws-cn:iam::123456789012:role/r",
            &["a-b".into(), "c.d".into()],
            Purpose::Read,
        ))
        .unwrap();
        assert_eq!(p["Statement"][0]["Action"], serde_json::json!(["s3:GetObject"]));
        assert_eq!(
            p["Statement"][0]["Resource"],
            serde_json::json!(["arn:aws-cn:s3:::a-b/*", "arn:aws-cn:s3:::c.d/*"])
        );
        assert_eq!(p["Statement"][1]["Action"], serde_json::json!(["s3:ListBucket"]));
        assert_eq!(
            p["Statement"][1]["Resource"],
            serde_json::json!(["arn:aws-cn:s3:::a-b", "arn:aws-cn:s3:::c.d"])
        );
    }

    #[test]
    fn ttl_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(presign_ttl(Duration::from_secs(300), None, now), Duration::from_secs(300));
        assert_eq!(presign_ttl(Duration::from_secs(3600), None, now), Duration::from_secs(900));
        let exp = now + Duration::from_secs(200);
        assert_eq!(presign_ttl(Duration::from_secs(300), Some(exp), now), Duration::from_secs(200));
    }

    #[test]
    fn secrets_from_env_and_files_under_the_secrets_dir() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n").unwrap();
        std::fs::write(outside.path().join("k"), "x").unwrap();
        let s = resolve_secret("file:k", Some(dir.path()), true).unwrap();
        assert_eq!(s.expose(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        let abs = format!("file:{}", outside.path().join("k").display());
        assert_eq!(
            resolve_secret(&abs, Some(dir.path()), false).unwrap_err().code().as_str(),
            "invalid_integration"
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outside.path().join("k"), dir.path().join("link")).unwrap();
            let err = resolve_secret("file:link", Some(dir.path()), false).unwrap_err();
            assert_eq!(err.code().as_str(), "invalid_integration");
        }
        assert_eq!(resolve_secret("file:k", None, true).unwrap_err().code().as_str(), "credentials");
        let err = resolve_secret("env:ASSET_STORAGE_TEST_SURELY_UNSET", None, true).unwrap_err();
        assert_eq!(err.code().as_str(), "credentials");
        std::fs::write(dir.path().join("short"), "abc").unwrap();
        let err = resolve_secret("file:short", Some(dir.path()), true).unwrap_err();
        assert!(!err.to_string().contains("abc"), "{err}");
        assert!(err.to_string().contains("40"), "{err}");
    }
}
