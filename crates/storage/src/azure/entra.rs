//! Microsoft Entra tokens and user delegation keys, cached per integration: one token
//! and one Get User Delegation Key call per key lifetime, however many blobs are signed
//! meanwhile. Concurrent callers for one integration wait for the single exchange in
//! flight rather than starting their own.
//!
//! The token is the client-credentials grant of an Entra application: the platform's
//! own (`iam_delegated`; its credential is the operator's, configured on the worker,
//! never in a job) or the customer's (`service_principal`, secret at `secret_ref`). The
//! token endpoint is Entra's unless the operator points `AZURE_AUTHORITY_HOST` elsewhere;
//! a job can never choose it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use crate::download::{error_body, xml_element};
use crate::error::{StorageError, service_code};
use crate::secret::Secret;

use super::sas::{SAS_VERSION, UserDelegationKey, parse_sas_time, sas_time};

/// Entra's public cloud.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// The scope of a token for Azure Storage.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How long a user delegation key is asked for. Short enough that a key that leaked
/// from memory is soon useless, long enough for one exchange an hour or so.
const KEY_LIFETIME: Duration = Duration::from_secs(2 * 3600);

/// A key is replaced once less than this is left: a SAS (15 minutes at most) never
/// outlives the key that signed it, with room for clock skew.
const KEY_REFRESH_BEFORE: Duration = Duration::from_secs(30 * 60);

/// The platform's own Entra application, configured by the operator (`AZURE_CLIENT_ID`
/// with `AZURE_CLIENT_SECRET` or `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`).
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// Token endpoint base: `{authority_host}/{tenant}/oauth2/v2.0/token`.
    pub authority_host: String,
    /// The platform application's client id; `None` refuses `iam_delegated`.
    pub client_id: Option<String>,
    pub credential: Option<AppCredential>,
    /// `AZURE_TENANT_BINDING`: a secret reference (`file:NAME`, `env:NAME`) resolved in
    /// each organisation's own secrets, listing the Entra tenants that organisation's
    /// admins consented for (the platform writes it at consent). An `iam_delegated`
    /// integration naming another tenant is refused; `None` refuses them all: Azure has
    /// no ExternalId, and without the list nothing binds a tenant to one organisation.
    pub tenant_binding: Option<String>,
}

impl Default for AzureSettings {
    fn default() -> Self {
        AzureSettings {
            authority_host: DEFAULT_AUTHORITY_HOST.into(),
            client_id: None,
            credential: None,
            tenant_binding: None,
        }
    }
}

/// How the platform application proves itself to Entra.
#[derive(Debug, Clone)]
pub enum AppCredential {
    /// A client secret.
    Secret(Secret),
    /// A federated token (workload identity) read from this file at each exchange, as
    /// the platform rotates it; sent as a client assertion.
    FederatedTokenFile(PathBuf),
}

/// Who asks Entra for a token: the tenant and the application's credential.
pub(crate) struct TokenRequest {
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) credential: AppCredential,
    /// Whose token it is, besides tenant and client: 0 for the platform's application;
    /// for a customer's, its organisation, integration and secret, so that an
    /// integration naming another's client id with a wrong secret never gets the other's
    /// cached token.
    pub(crate) scope: u64,
}

#[derive(Clone)]
struct Token {
    value: Secret,
    expires_at: SystemTime,
}

type Slot<T> = Arc<tokio::sync::Mutex<Option<T>>>;

#[derive(Default)]
pub(crate) struct AzureCache {
    tokens: std::sync::Mutex<HashMap<u64, Slot<Token>>>,
    keys: std::sync::Mutex<HashMap<u64, Slot<UserDelegationKey>>>,
    token_calls: AtomicU64,
    key_calls: AtomicU64,
    /// Integrations whose long-lived SAS token was already warned about.
    pub(crate) warned: std::sync::Mutex<std::collections::HashSet<u64>>,
}

fn slot<T>(map: &std::sync::Mutex<HashMap<u64, Slot<T>>>, key: u64) -> Slot<T> {
    map.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().clone()
}

pub(crate) fn hash_of(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl AzureCache {
    pub(crate) fn token_calls(&self) -> u64 {
        self.token_calls.load(Ordering::Relaxed)
    }

    pub(crate) fn key_calls(&self) -> u64 {
        self.key_calls.load(Ordering::Relaxed)
    }

    /// The user delegation key for `cache_key` (everything that shapes it: integration,
    /// account, endpoint, tenant, client), from the cache while it has more than
    /// [`KEY_REFRESH_BEFORE`] left; else a token (cached too) and one Get User
    /// Delegation Key call.
    pub(crate) async fn user_delegation_key(
        &self,
        ctx: &super::Ctx<'_>,
        cache_key: u64,
        request: &TokenRequest,
        blob_base: &str,
    ) -> Result<UserDelegationKey, StorageError> {
        let key_slot = slot(&self.keys, cache_key);
        let mut cached = key_slot.lock().await;
        if let Some(k) = cached.as_ref()
            && k.expires_at > SystemTime::now() + KEY_REFRESH_BEFORE
        {
            return Ok(k.clone());
        }
        let token = self.token(ctx, request).await?;
        let key = crate::retry::with_retry(&ctx.config.retry, "get_user_delegation_key", |_| {
            self.fetch_key(ctx, &token, blob_base)
        })
        .await?;
        *cached = Some(key.clone());
        Ok(key)
    }

    /// A token for the request's tenant and application, cached until the refresh margin.
    pub(crate) async fn token(&self, ctx: &super::Ctx<'_>, r: &TokenRequest) -> Result<Secret, StorageError> {
        let authority = ctx.config.azure.authority_host.trim_end_matches('/');
        let token_slot = slot(&self.tokens, hash_of((authority, &r.tenant_id, &r.client_id, r.scope)));
        let mut cached = token_slot.lock().await;
        if let Some(t) = cached.as_ref()
            && t.expires_at > SystemTime::now() + ctx.config.refresh_margin
        {
            return Ok(t.value.clone());
        }
        let token = crate::retry::with_retry(&ctx.config.retry, "entra_token", |_| {
            self.fetch_token(ctx, authority, r)
        })
        .await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    async fn fetch_token(
        &self,
        ctx: &super::Ctx<'_>,
        authority: &str,
        r: &TokenRequest,
    ) -> Result<Token, StorageError> {
        let url = format!("{authority}/{}/oauth2/v2.0/token", r.tenant_id);
        let body = token_form(r)?;
        ctx.egress.check_str(&url)?;
        tracing::info!(tenant_id = %r.tenant_id, client_id = %r.client_id, "getting a Microsoft Entra token");
        self.token_calls.fetch_add(1, Ordering::Relaxed);
        let mut resp = ctx
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| from_reqwest(e, "getting a Microsoft Entra token"))?;
        let status = resp.status();
        let text = error_body(&mut resp).await;
        if status != StatusCode::OK {
            // Entra's `error` (invalid_client, unauthorized_client…) is a code; its
            // `error_description` is free text and stays out.
            let code = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).and_then(service_code))
                .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
            return Err(match status.as_u16() {
                429 | 503 => StorageError::Throttled { service: "entra", service_code: code },
                s if s >= 500 => StorageError::Upstream {
                    service: "entra",
                    message: format!("the token endpoint answered HTTP {s} ({code})"),
                    retryable: true,
                    source: None,
                },
                _ => StorageError::Credentials {
                    what: format!(
                        "Microsoft Entra refused a token for tenant {} to application {} ({code}): is the \
                         application consented to in that tenant, and its credential current?",
                        r.tenant_id, r.client_id
                    ),
                    source: None,
                },
            });
        }
        let parsed: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| StorageError::Credentials {
                what: "the token endpoint answered with something other than a token".into(),
                source: None,
            })?;
        let value = parsed.get("access_token").and_then(|t| t.as_str()).filter(|t| !t.is_empty());
        let Some(value) = value else {
            return Err(StorageError::Credentials {
                what: "the token endpoint answered without an access_token".into(),
                source: None,
            });
        };
        let expires_in = match parsed.get("expires_in") {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .unwrap_or(300);
        Ok(Token {
            value: Secret::new(value),
            expires_at: SystemTime::now() + Duration::from_secs(expires_in),
        })
    }

    async fn fetch_key(
        &self,
        ctx: &super::Ctx<'_>,
        token: &Secret,
        blob_base: &str,
    ) -> Result<UserDelegationKey, StorageError> {
        let now = SystemTime::now();
        let url = format!("{blob_base}/?restype=service&comp=userdelegationkey");
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
            sas_time(now),
            sas_time(now + KEY_LIFETIME)
        );
        ctx.egress.check_str(&url)?;
        tracing::info!("getting a user delegation key");
        self.key_calls.fetch_add(1, Ordering::Relaxed);
        let mut resp = ctx
            .client
            .post(&url)
            .bearer_auth(token.expose())
            .header("x-ms-version", SAS_VERSION)
            .header("x-ms-date", httpdate(now))
            .header(reqwest::header::CONTENT_TYPE, "application/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| from_reqwest(e, "getting a user delegation key"))?;
        let status = resp.status();
        let text = error_body(&mut resp).await;
        if status != StatusCode::OK {
            return Err(key_error(status, &text));
        }
        let field = |name| xml_element(&text, name).map(str::to_owned);
        let (Some(oid), Some(tid), Some(start), Some(expiry), Some(service), Some(version), Some(value)) = (
            field("SignedOid"),
            field("SignedTid"),
            field("SignedStart"),
            field("SignedExpiry"),
            field("SignedService"),
            field("SignedVersion"),
            field("Value"),
        ) else {
            return Err(StorageError::Upstream {
                service: "azure",
                message: "Get User Delegation Key answered without a complete key".into(),
                retryable: false,
                source: None,
            });
        };
        let expires_at = parse_sas_time(&expiry).ok_or_else(|| StorageError::Upstream {
            service: "azure",
            message: "Get User Delegation Key answered with an unreadable expiry".into(),
            retryable: false,
            source: None,
        })?;
        Ok(UserDelegationKey {
            oid,
            tid,
            start,
            expiry,
            service,
            version,
            value: Secret::new(value),
            expires_at,
        })
    }
}

/// The client-credentials form: a secret, or the federated token as a client assertion.
fn token_form(r: &TokenRequest) -> Result<String, StorageError> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials")
        .append_pair("client_id", &r.client_id)
        .append_pair("scope", STORAGE_SCOPE);
    match &r.credential {
        AppCredential::Secret(s) => {
            form.append_pair("client_secret", s.expose());
        }
        AppCredential::FederatedTokenFile(path) => {
            let assertion = std::fs::read_to_string(path).map_err(|e| StorageError::Credentials {
                what: format!(
                    "reading the federated token file {} (AZURE_FEDERATED_TOKEN_FILE)",
                    path.display()
                ),
                source: Some(Box::new(e)),
            })?;
            form.append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .append_pair("client_assertion", assertion.trim());
        }
    }
    Ok(form.finish())
}

/// What a refused Get User Delegation Key means.
fn key_error(status: StatusCode, body: &str) -> StorageError {
    let code = xml_element(body, "Code")
        .and_then(service_code)
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    match status.as_u16() {
        401 | 403 => StorageError::AccessDenied {
            service: "azure",
            service_code: code,
            reason: "the identity may not get a user delegation key (it needs Storage Blob Delegator on the account)",
        },
        404 => StorageError::NotFound { what: format!("azure storage account ({code})") },
        429 | 503 => StorageError::Throttled { service: "azure", service_code: code },
        s if s >= 500 => StorageError::Upstream {
            service: "azure",
            message: format!("Get User Delegation Key answered HTTP {s} ({code})"),
            retryable: true,
            source: None,
        },
        s => StorageError::Upstream {
            service: "azure",
            message: format!("Get User Delegation Key answered HTTP {s} ({code})"),
            retryable: false,
            source: None,
        },
    }
}

/// RFC 1123 date, as `x-ms-date` wants it.
fn httpdate(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// reqwest errors name their URL; it goes, and a refusal of the egress policy keeps its code.
pub(crate) fn from_reqwest(e: reqwest::Error, during: &'static str) -> StorageError {
    let e = e.without_url();
    if let Some(refused) = crate::egress::refusal_in(&e) {
        return refused.clone().into();
    }
    if e.is_timeout() {
        return StorageError::Timeout { during, source: Some(Box::new(e)) };
    }
    StorageError::Upstream {
        service: "azure",
        message: format!("{during}: the request could not be completed"),
        retryable: !e.is_builder(),
        source: Some(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_refusals_keep_only_the_code() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AuthorizationPermissionMismatch</Code><Message>This \
                    request is not authorized. RequestId:x sig=abc</Message></Error>";
        let e = key_error(StatusCode::FORBIDDEN, body);
        assert_eq!(e.code().as_str(), "access_denied");
        assert!(e.to_string().contains("AuthorizationPermissionMismatch"), "{e}");
        assert!(!e.to_string().contains("sig=abc"), "{e}");
        assert!(key_error(StatusCode::SERVICE_UNAVAILABLE, "").is_retryable());
        assert!(!key_error(StatusCode::BAD_REQUEST, "").is_retryable());
    }

    #[test]
    fn dates_are_rfc1123() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_604_800);
        assert_eq!(httpdate(t), "Mon, 01 Dec 2025 16:00:00 GMT");
    }
}
