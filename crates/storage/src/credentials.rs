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
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::config::StorageConfig;
use crate::download::error_code;
use crate::egress::refusal_in;
use crate::error::{StorageError, service_code};
use crate::retry::with_retry;
use crate::secret::{Secret, SessionCredentials};
use crate::validate::{FILE_RULE, SecretRef, parse_secret_ref};

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
        http: &SharedHttpClient,
        config: &StorageConfig,
        s: &S3Integration,
        aws: bool,
        purpose: Purpose,
    ) -> Result<SessionCredentials, StorageError> {
        let (role_arn, external_id) = match &s.access {
            Access::IamUser { access_key_id, secret_ref } => {
                let secret = resolve_secret(secret_ref, &s.org_id, config, aws)?;
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
            self.assume_role(base, http, config, s, role_arn, external_id, purpose)
        })
        .await?;
        *cached = Some(creds.clone());
        Ok(creds)
    }

    #[allow(clippy::too_many_arguments)]
    async fn assume_role(
        &self,
        base: &SdkConfig,
        http: &SharedHttpClient,
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
                // STS is the operator's endpoint, but every request of ours passes the
                // egress policy all the same.
                .http_client(http.clone())
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
    provider.provide_credentials().await.map(|_| ()).map_err(|e| {
        // The chain's own text is for the operator's log, not for results.
        tracing::warn!(error = %DisplayErrorContext(&e), "the worker's base AWS identity yields no credentials");
        StorageError::Credentials {
            what: "the worker's base AWS identity yields no credentials (see the worker's log)".into(),
            source: None,
        }
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
        // CORS is checked with a browser's preflight, which needs no permission.
        Purpose::Validate => &["s3:ListBucket", "s3:GetBucketLocation"],
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

/// Reads the secret an IAM-user integration points at, inside its organisation's
/// namespace only (the rule is in [`crate::validate`]): `env:NAME` reads
/// `ORG_SECRET_<ORG>__<NAME>`, `file:NAME` reads `SECRETS_DIR/<org_id>/NAME` and nothing a
/// symlink there points at outside that directory. A reference that names no secret of
/// the organisation is `secret_ref_not_allowed`; a secrets directory the worker cannot
/// read is `credentials` (the operator's to fix).
pub(crate) fn resolve_secret(
    r: &str,
    org_id: &str,
    config: &StorageConfig,
    aws: bool,
) -> Result<Secret, StorageError> {
    let value = match parse_secret_ref(r, org_id)? {
        SecretRef::Env { var } => match config.org_secrets.get(&var) {
            Some(v) => v.expose().to_owned(),
            None => {
                return Err(StorageError::secret_ref(format!(
                    "{r} names no secret of organisation {org_id}: {var} is not set (env:NAME reads \
                     ORG_SECRET_<ORG>__<NAME> only, never another variable of the worker)"
                )));
            }
        },
        SecretRef::File { name } => read_org_file(r, org_id, name, config.secrets_dir.as_deref())?,
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

fn read_org_file(
    r: &str,
    org_id: &str,
    name: &Path,
    secrets_dir: Option<&Path>,
) -> Result<String, StorageError> {
    let unreadable =
        |what: String, e: std::io::Error| StorageError::Credentials { what, source: Some(Box::new(e)) };
    let dir = secrets_dir.ok_or_else(|| StorageError::Credentials {
        what: "secret_ref file:NAME needs a secrets directory (SECRETS_DIR)".into(),
        source: None,
    })?;
    let dir =
        dir.canonicalize().map_err(|e| unreadable(format!("secrets directory {}", dir.display()), e))?;
    let not_found = || {
        StorageError::secret_ref(format!(
            "{r} names no secret of organisation {org_id}: SECRETS_DIR/{org_id}/{} does not exist ({FILE_RULE})",
            name.display()
        ))
    };
    let org_dir = match dir.join(org_id).canonicalize() {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(unreadable(format!("SECRETS_DIR/{org_id}"), e)),
    };
    // Checked after symlinks are resolved: the organisation's directory, and the file
    // in it, must not lead elsewhere (another organisation's secrets, /proc/self/environ).
    // A symlinked organisation directory may lead elsewhere inside the secrets
    // directory (Kubernetes secret volumes do: `org -> ..data/org`), but not to a
    // directory of another name, another organisation's.
    if !org_dir.starts_with(&dir) || org_dir.file_name() != Some(std::ffi::OsStr::new(org_id)) {
        return Err(StorageError::secret_ref(format!(
            "SECRETS_DIR/{org_id} leads outside the secrets directory ({FILE_RULE})"
        )));
    }
    let full = match org_dir.join(name).canonicalize() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(unreadable(format!("SECRETS_DIR/{org_id}/{}", name.display()), e)),
    };
    if !full.starts_with(&org_dir) {
        return Err(StorageError::secret_ref(format!(
            "{r} leads outside SECRETS_DIR/{org_id} through a symlink ({FILE_RULE})"
        )));
    }
    let meta = std::fs::metadata(&full).map_err(|e| StorageError::io("reading a secret file", e))?;
    if !meta.is_file() {
        return Err(not_found());
    }
    if meta.len() > 4096 {
        return Err(StorageError::invalid("access.secret_ref", "the secret file is larger than 4 KiB"));
    }
    std::fs::read_to_string(&full).map_err(|e| StorageError::io("reading a secret file", e))
}

/// Turns an AWS SDK error into our classification. Only the service's error code
/// (sanitised) is kept: its message, the SDK's error text and its debug output carry a
/// server's free text and stay out of our messages.
pub(crate) fn classify_sdk_error<E>(service: &'static str, err: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    // The egress policy refused the connection, in our connector or our resolver.
    if let Some(refused) = refusal_in(&err) {
        return refused.clone().into();
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    // Some servers (moto) wrap errors in an extra `<Errors>` element the SDK's parser
    // does not look into; read the code from the body then.
    let code = err.code().and_then(service_code).or_else(|| {
        err.raw_response()
            .and_then(|r| r.body().bytes())
            .and_then(|b| error_code(&String::from_utf8_lossy(b)))
    });
    match &err {
        SdkError::TimeoutError(_) => return StorageError::Timeout { during: service, source: None },
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            return StorageError::Timeout { during: service, source: None };
        }
        SdkError::DispatchFailure(d) => {
            return StorageError::Upstream {
                service,
                message: "the request could not be sent (connection failed)".into(),
                retryable: d.is_io(),
                source: None,
            };
        }
        SdkError::ConstructionFailure(_) => {
            return StorageError::Credentials {
                what: format!("the {service} request could not be built (no usable credentials or endpoint)"),
                source: None,
            };
        }
        _ => {}
    }
    let shown =
        code.clone().unwrap_or_else(|| status.map_or_else(|| "no status".into(), |s| format!("HTTP {s}")));
    match (code.as_deref().unwrap_or_default(), status) {
        ("InvalidClientTokenId" | "SignatureDoesNotMatch" | "IncompleteSignature" | "ExpiredToken", _)
            if service == "sts" =>
        {
            StorageError::Credentials {
                what: format!("the worker's base identity was refused by STS ({shown})"),
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
        | (_, Some(429 | 503)) => StorageError::Throttled { service, service_code: shown },
        ("NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchEntity", _) | (_, Some(404)) => {
            StorageError::NotFound { what: format!("{service}: {shown}") }
        }
        ("AccessDenied" | "AccessDeniedException" | "InvalidAccessKeyId" | "SignatureDoesNotMatch", _)
        | (_, Some(403)) => StorageError::AccessDenied {
            service,
            service_code: shown,
            reason: "the provider refused the request",
        },
        (_, Some(s)) if s >= 500 => StorageError::Upstream {
            service,
            message: format!("the service answered HTTP {s} ({shown})"),
            retryable: true,
            source: None,
        },
        _ => StorageError::Upstream {
            service,
            message: format!("an unexpected reply ({shown})"),
            retryable: false,
            source: None,
        },
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

    const KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn cfg(dir: Option<&Path>) -> StorageConfig {
        StorageConfig {
            secrets_dir: dir.map(Path::to_path_buf),
            org_secrets: crate::OrgSecrets::from_pairs([
                ("ORG_SECRET_ORG_1__S3_KEY", KEY),
                ("ORG_SECRET_ORG_2__S3_KEY", "other-orgs-secret-value-000000000000000"),
                ("ORG_SECRET_3F2A9C1E_7B4D_4E8A_9F00_1234567890AB__K", KEY),
            ]),
            ..StorageConfig::default()
        }
    }

    fn code(r: Result<Secret, StorageError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.code().as_str())
    }

    #[test]
    fn env_secrets_resolve_in_the_orgs_namespace_only() {
        let c = cfg(None);
        assert_eq!(resolve_secret("env:S3_KEY", "org-1", &c, true).unwrap().expose(), KEY);
        let uuid = "3f2a9c1e-7b4d-4e8a-9f00-1234567890ab";
        assert_eq!(resolve_secret("env:K", uuid, &c, true).unwrap().expose(), KEY);
        // The worker's own variables, another organisation's secret, a missing one.
        for (r, org) in [
            ("env:AWS_SECRET_ACCESS_KEY", "org-1"),
            ("env:DATABASE_URL", "org-1"),
            ("env:PATH", "org-1"),
            ("env:S3_KEY", "org-3"),
            ("env:ORG_SECRET_ORG_2__S3_KEY", "org-1"),
            ("env:ORG_2__S3_KEY", "org"),
        ] {
            let err = resolve_secret(r, org, &c, true).unwrap_err();
            assert_eq!(err.code().as_str(), "secret_ref_not_allowed", "{r} for {org}: {err}");
            assert!(err.to_string().contains("ORG_SECRET_<ORG>__<NAME>"), "the rule is stated: {err}");
        }
        // Org ids and names outside the injective rule are refused before any lookup.
        for (r, org) in [
            ("env:S3_KEY", "Org-1"),
            ("env:S3_KEY", "org_1"),
            ("env:S3_KEY", "org--1"),
            ("env:S3_KEY", "-org"),
            ("env:s3_key", "org-1"),
            ("env:S3__KEY", "org-1"),
            ("env:_S3", "org-1"),
            ("env:", "org-1"),
        ] {
            assert_eq!(code(resolve_secret(r, org, &c, true)), "secret_ref_not_allowed", "{r} for {org}");
        }
    }

    #[test]
    fn file_secrets_resolve_below_the_orgs_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        for org in ["org-1", "org-2"] {
            std::fs::create_dir_all(dir.path().join(org).join("sub")).unwrap();
        }
        std::fs::write(dir.path().join("org-1/k"), format!("{KEY}\n")).unwrap();
        std::fs::write(dir.path().join("org-1/sub/k"), KEY).unwrap();
        std::fs::write(dir.path().join("org-2/theirs"), KEY).unwrap();
        std::fs::write(dir.path().join("top-level"), KEY).unwrap();
        std::fs::write(outside.path().join("k"), KEY).unwrap();
        std::os::unix::fs::symlink(outside.path().join("k"), dir.path().join("org-1/escape")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("org-2/theirs"), dir.path().join("org-1/sideways"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("org-1/k"), dir.path().join("org-1/inside")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("org-2"), dir.path().join("org-4")).unwrap();
        let c = cfg(Some(dir.path()));

        assert_eq!(resolve_secret("file:k", "org-1", &c, true).unwrap().expose(), KEY);
        assert_eq!(resolve_secret("file:sub/k", "org-1", &c, true).unwrap().expose(), KEY);
        assert_eq!(resolve_secret("file:inside", "org-1", &c, true).unwrap().expose(), KEY);
        let abs = format!("file:{}", outside.path().join("k").display());
        for (r, org) in [
            ("file:theirs", "org-1"),
            ("file:../org-2/theirs", "org-1"),
            ("file:sub/../../org-2/theirs", "org-1"),
            ("file:./k", "org-1"),
            ("file:../top-level", "org-1"),
            ("file:escape", "org-1"),
            ("file:sideways", "org-1"),
            ("file:theirs", "org-4"),
            ("file:k", "org-3"),
            ("file:k", ".."),
            ("file:k", "org-1/../org-2"),
            ("file:k", ""),
            ("file:", "org-1"),
            (abs.as_str(), "org-1"),
        ] {
            let err = resolve_secret(r, org, &c, false).unwrap_err();
            assert_eq!(err.code().as_str(), "secret_ref_not_allowed", "{r} for {org}: {err}");
        }
        // No secrets directory configured: the operator's to fix.
        assert_eq!(code(resolve_secret("file:k", "org-1", &cfg(None), true)), "credentials");
        std::fs::write(dir.path().join("org-1/short"), "abc").unwrap();
        let err = resolve_secret("file:short", "org-1", &c, true).unwrap_err();
        assert!(!err.to_string().contains("abc"), "{err}");
        assert!(err.to_string().contains("40"), "{err}");
    }
}
