//! The worker's own Google identity, for the keyless (`iam_delegated`) path: an OAuth
//! access token from the standard chain — the file named by
//! `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key (a signed JWT exchanged at
//! its `token_uri`) or workload identity federation (`external_account`: a subject
//! token from a file or URL exchanged at Google's STS, then for the impersonated
//! service account's token), else the metadata server — cached until shortly before it expires, so that concurrent
//! signings share one exchange; and the IAM Credentials `signBlob` call that signs a V4
//! string-to-sign as the customer's service account with that token. Every endpoint
//! here is the operator's (settings, the operator's key file), never a job's; the only
//! job input that reaches a request is the service account's e-mail, checked by
//! [`super::validate_service_account`] and percent-encoded into the path.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::Deserialize;

use super::sign::RsaKey;
use crate::config::RetryConfig;
use crate::error::{StorageError, service_code};
use crate::retry::with_retry;
use crate::secret::Secret;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where the worker's platform identity and Google's APIs are, from the operator's
/// settings. Tests point them at loopback servers; a job never can.
#[derive(Debug, Clone)]
pub struct GcsSettings {
    /// `GOOGLE_APPLICATION_CREDENTIALS`: a service-account JSON key of the platform.
    /// `None`: the metadata server.
    pub credentials_file: Option<PathBuf>,
    /// `GCE_METADATA_HOST` style base URL of the metadata server.
    pub metadata_endpoint: String,
    /// Base URL of the IAM Credentials API (`signBlob`).
    pub iam_endpoint: String,
    /// `GCS_SERVICE_ACCOUNT_ORG_TOKEN`: what an `iam_delegated` service account's name
    /// must contain, `{org}` standing for the org id and `{org_hash}` for the first 10
    /// hex digits of its SHA-256 (see [`super::org_token`]). `None` refuses every
    /// `iam_delegated` GCS integration: without it nothing binds an account to one
    /// organisation.
    pub service_account_org_token: Option<String>,
}

impl Default for GcsSettings {
    fn default() -> Self {
        GcsSettings {
            credentials_file: None,
            metadata_endpoint: "http://metadata.google.internal".into(),
            iam_endpoint: "https://iamcredentials.googleapis.com".into(),
            service_account_org_token: None,
        }
    }
}

impl GcsSettings {
    /// Google's standard credential chain variables, as its client libraries read them:
    /// `GOOGLE_APPLICATION_CREDENTIALS`, `GCE_METADATA_HOST`. The worker's own settings
    /// (`GCS_IAM_ENDPOINT`, `GCS_SERVICE_ACCOUNT_ORG_TOKEN`) are flags of its config.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let d = GcsSettings::default();
        GcsSettings {
            credentials_file: var("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from),
            metadata_endpoint: var("GCE_METADATA_HOST")
                .map(|h| if h.contains("://") { h } else { format!("http://{h}") })
                .unwrap_or(d.metadata_endpoint),
            ..d
        }
    }
}

/// An OAuth access token and when it stops working.
#[derive(Clone)]
pub(crate) struct AccessToken {
    pub(crate) token: Secret,
    pub(crate) expires_at: SystemTime,
}

/// The platform token, fetched once and shared until `expires_at - margin`; the
/// `tokio` mutex makes concurrent callers wait for one exchange rather than start their own.
pub(crate) struct PlatformAuth {
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<AccessToken>>,
    exchanges: AtomicU64,
}

#[derive(Deserialize)]
struct ServiceAccountFile {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
    // Workload identity federation (`"type": "external_account"`).
    #[serde(default)]
    audience: String,
    #[serde(default)]
    subject_token_type: String,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    service_account_impersonation_url: Option<String>,
    #[serde(default)]
    credential_source: Option<CredentialSource>,
}

/// Where a federated identity's subject token is: a file (a Kubernetes projected
/// service-account token, an OIDC token another agent refreshes) or a URL (a local
/// token service), as plain text or a JSON field.
#[derive(Deserialize)]
struct CredentialSource {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    format: Option<SourceFormat>,
    /// AWS-sourced (`aws1`) and executable-sourced credentials are not taken.
    #[serde(default)]
    environment_id: Option<String>,
    #[serde(default)]
    executable: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SourceFormat {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    subject_token_field_name: Option<String>,
}

/// IAM Credentials `generateAccessToken`'s answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImpersonatedToken {
    access_token: String,
    expire_time: String,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignBlobReply {
    signed_blob: String,
}

impl PlatformAuth {
    pub(crate) fn new(connect: Duration, read: Duration) -> Result<Self, StorageError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .read_timeout(read)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| StorageError::Upstream {
                service: "gcs_auth",
                message: "building the HTTP client".into(),
                retryable: false,
                source: Some(Box::new(e.without_url())),
            })?;
        Ok(PlatformAuth { http, token: tokio::sync::Mutex::new(None), exchanges: AtomicU64::new(0) })
    }

    /// Token exchanges made so far (tests, metrics).
    pub(crate) fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    /// The platform's access token, from the cache while it has more than `margin` left.
    pub(crate) async fn token(
        &self,
        settings: &GcsSettings,
        retry: &RetryConfig,
        margin: Duration,
    ) -> Result<AccessToken, StorageError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && t.expires_at > SystemTime::now() + margin
        {
            return Ok(t.clone());
        }
        let fresh = with_retry(retry, "gcs token", |_| self.exchange(settings)).await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    async fn exchange(&self, settings: &GcsSettings) -> Result<AccessToken, StorageError> {
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        let req = match &settings.credentials_file {
            Some(path) => {
                let sa = read_platform_key(path)?;
                if sa.kind == "external_account" {
                    return self.federated(&sa, now).await;
                }
                let token_uri =
                    sa.token_uri.clone().unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
                let assertion = jwt_assertion(&sa, &token_uri, now)?;
                tracing::debug!(client_email = %sa.client_email, "exchanging the platform's signed JWT for a token");
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                    .append_pair("assertion", assertion.expose())
                    .finish();
                self.http
                    .post(&token_uri)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form)
            }
            None => {
                tracing::debug!("asking the metadata server for the platform's token");
                let base = settings.metadata_endpoint.trim_end_matches('/');
                self.http
                    .get(format!("{base}/computeMetadata/v1/instance/service-accounts/default/token"))
                    .header("Metadata-Flavor", "Google")
            }
        };
        self.token_request(req, "gcs_token", now).await
    }

    /// Workload identity federation: the subject token from its source, exchanged at
    /// Google's STS for a federated token, then (when the file names a service account
    /// to impersonate, as most setups do) exchanged again through IAM Credentials
    /// `generateAccessToken` for that account's token. One exchange, as counted.
    async fn federated(&self, sa: &ServiceAccountFile, now: SystemTime) -> Result<AccessToken, StorageError> {
        let unusable = |what: &str| StorageError::Credentials { what: what.to_owned(), source: None };
        let source = sa.credential_source.as_ref().ok_or_else(|| {
            unusable("GOOGLE_APPLICATION_CREDENTIALS (external_account) has no credential_source")
        })?;
        if source.environment_id.is_some() || source.executable.is_some() {
            return Err(unusable(
                "GOOGLE_APPLICATION_CREDENTIALS (external_account) takes its subject token from a file or a URL; \
                 AWS- and executable-sourced credentials are not supported",
            ));
        }
        let raw = match (&source.file, &source.url) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| StorageError::Credentials {
                what: "the federated identity's subject token file cannot be read".into(),
                source: Some(Box::new(e)),
            })?,
            (None, Some(url)) => {
                let mut req = self.http.get(url);
                for (k, v) in &source.headers {
                    req = req.header(k, v);
                }
                String::from_utf8_lossy(&send(req, "gcs_subject_token").await?).into_owned()
            }
            (None, None) => return Err(unusable("the credential_source names neither a file nor a URL")),
        };
        let subject = match source.format.as_ref().filter(|f| f.kind == "json") {
            Some(f) => {
                let field = f.subject_token_field_name.as_deref().unwrap_or_default();
                serde_json::from_str::<serde_json::Value>(&raw)
                    .ok()
                    .and_then(|v| v[field].as_str().map(str::to_owned))
                    .ok_or_else(|| unusable("the subject token source has no such JSON field"))?
            }
            None => raw.trim().to_owned(),
        };
        if subject.is_empty() {
            return Err(unusable("the federated identity's subject token is empty"));
        }
        let subject = Secret::new(subject);
        let token_url = sa.token_url.clone().unwrap_or_else(|| "https://sts.googleapis.com/v1/token".into());
        tracing::debug!("exchanging the platform's federated subject token at Google's STS");
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
            .append_pair("audience", &sa.audience)
            .append_pair("scope", SCOPE)
            .append_pair("requested_token_type", "urn:ietf:params:oauth:token-type:access_token")
            .append_pair("subject_token", subject.expose())
            .append_pair("subject_token_type", &sa.subject_token_type)
            .finish();
        let federated = self
            .token_request(
                self.http
                    .post(&token_url)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form),
                "gcs_sts",
                now,
            )
            .await?;
        let Some(impersonate) = &sa.service_account_impersonation_url else { return Ok(federated) };
        tracing::debug!("impersonating the platform's service account with the federated token");
        let req = self
            .http
            .post(impersonate)
            .bearer_auth(federated.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({"scope": [SCOPE], "lifetime": "3600s"}).to_string());
        let reply: ImpersonatedToken =
            send_json(req, "gcs_impersonation", "generateAccessToken answered without an access token")
                .await?;
        let expires_at = chrono::DateTime::parse_from_rfc3339(&reply.expire_time)
            .ok()
            .and_then(|t| u64::try_from(t.timestamp()).ok())
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .ok_or_else(|| StorageError::Upstream {
                service: "gcs_impersonation",
                message: "generateAccessToken answered without a usable expireTime".into(),
                retryable: false,
                source: None,
            })?;
        Ok(AccessToken { token: Secret::new(reply.access_token), expires_at })
    }

    /// A token endpoint's `{access_token, expires_in}` answer to `req`.
    async fn token_request(
        &self,
        req: reqwest::RequestBuilder,
        service: &'static str,
        now: SystemTime,
    ) -> Result<AccessToken, StorageError> {
        let reply: TokenReply =
            send_json(req, service, "the token endpoint answered without an access token").await?;
        Ok(AccessToken {
            token: Secret::new(reply.access_token),
            expires_at: now + Duration::from_secs(reply.expires_in),
        })
    }

    /// Signs `message` as `service_account` through IAM Credentials `signBlob`.
    pub(crate) async fn sign_blob(
        &self,
        settings: &GcsSettings,
        token: &AccessToken,
        service_account: &str,
        message: &[u8],
    ) -> Result<Vec<u8>, StorageError> {
        let base = settings.iam_endpoint.trim_end_matches('/');
        // The account was validated to [a-z0-9@.-]; encoding it anyway keeps it one
        // path segment whatever changes upstream.
        const SEGMENT: &percent_encoding::AsciiSet =
            &percent_encoding::NON_ALPHANUMERIC.remove(b'.').remove(b'-').remove(b'@').remove(b'_');
        let account = percent_encoding::utf8_percent_encode(service_account, SEGMENT);
        let url = format!("{base}/v1/projects/-/serviceAccounts/{account}:signBlob");
        let req = self
            .http
            .post(url)
            .bearer_auth(token.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::json!({"payload": B64.encode(message)}).to_string());
        let reply: SignBlobReply =
            send_json(req, "sign_blob", "signBlob answered without a signature").await?;
        B64.decode(reply.signed_blob).map_err(|_| StorageError::Upstream {
            service: "sign_blob",
            message: "signBlob answered with a signature that is not base64".into(),
            retryable: false,
            source: None,
        })
    }
}

fn read_platform_key(path: &std::path::Path) -> Result<ServiceAccountFile, StorageError> {
    let unusable = |what: String| StorageError::Credentials { what, source: None };
    let text = std::fs::read_to_string(path).map_err(|e| StorageError::Credentials {
        what: "GOOGLE_APPLICATION_CREDENTIALS cannot be read".into(),
        source: Some(Box::new(e)),
    })?;
    let sa: ServiceAccountFile = serde_json::from_str(&text)
        .map_err(|_| unusable("GOOGLE_APPLICATION_CREDENTIALS is not a JSON credentials file".into()))?;
    if sa.kind != "service_account" && sa.kind != "external_account" {
        return Err(unusable(format!(
            "GOOGLE_APPLICATION_CREDENTIALS holds {:?} credentials; the worker takes a service_account key, \
             external_account (workload identity federation) credentials or the metadata server",
            service_code(&sa.kind).unwrap_or_default()
        )));
    }
    Ok(sa)
}

/// The RS256 JWT of the OAuth 2.0 JWT-bearer grant, signed with the platform's key.
fn jwt_assertion(sa: &ServiceAccountFile, token_uri: &str, now: SystemTime) -> Result<Secret, StorageError> {
    let key = RsaKey::from_pem(&sa.private_key)?;
    let iat = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &sa.private_key_id {
        header["kid"] = kid.clone().into();
    }
    let claims = serde_json::json!({
        "iss": sa.client_email, "scope": SCOPE, "aud": token_uri, "iat": iat, "exp": iat + 3600
    });
    let signing_input =
        format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims.to_string()));
    let sig = key.sign(signing_input.as_bytes())?;
    Ok(Secret::new(format!("{signing_input}.{}", B64URL.encode(sig))))
}

/// A Google call's body when it succeeded; a refusal as [`reply_error`] reads it.
async fn send(req: reqwest::RequestBuilder, service: &'static str) -> Result<bytes::Bytes, StorageError> {
    let resp = req.send().await.map_err(|e| transport(e, service))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| transport(e, service))?;
    if !status.is_success() {
        return Err(reply_error(service, status.as_u16(), &body));
    }
    Ok(body)
}

/// [`send`], its body read as `T`; `unusable` says what an answer that is not one lacks.
async fn send_json<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
    service: &'static str,
    unusable: &str,
) -> Result<T, StorageError> {
    let body = send(req, service).await?;
    serde_json::from_slice(&body).map_err(|_| StorageError::Upstream {
        service,
        message: unusable.to_owned(),
        retryable: false,
        source: None,
    })
}

fn transport(e: reqwest::Error, service: &'static str) -> StorageError {
    let e = e.without_url();
    if e.is_timeout() {
        return StorageError::Timeout { during: service, source: Some(Box::new(e)) };
    }
    StorageError::Upstream {
        service,
        message: "the request could not be completed (connection failed)".into(),
        retryable: !e.is_builder(),
        source: Some(Box::new(e)),
    }
}

/// A Google API error reply, by status; of its body only a Google `error.status`
/// code (sanitised) is kept.
fn reply_error(service: &'static str, status: u16, body: &[u8]) -> StorageError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["status"].as_str().or(v["error"].as_str()).and_then(service_code))
        .unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        401 | 403 if service == "sign_blob" => StorageError::AccessDenied {
            service,
            service_code: code,
            reason: "the platform may not sign as this service account (is roles/iam.serviceAccountTokenCreator \
                     granted to it?)",
        },
        400 | 401 | 403 => StorageError::Credentials {
            what: format!("the worker's Google identity was refused ({code})"),
            source: None,
        },
        404 => StorageError::NotFound { what: format!("{service}: {code}") },
        429 => StorageError::Throttled { service, service_code: code },
        s if s >= 500 => StorageError::Upstream {
            service,
            message: format!("the service answered HTTP {s} ({code})"),
            retryable: true,
            source: None,
        },
        s => StorageError::Upstream {
            service,
            message: format!("an unexpected reply HTTP {s} ({code})"),
            retryable: false,
            source: None,
        },
    }
}
