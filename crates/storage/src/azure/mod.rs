//! Azure Blob Storage as an object source. Every access type ends in a read-only SAS
//! URL for one blob, which the shared downloader fetches like a presigned S3 URL: the
//! ranged path (`Range`, `ETag`, `If-Match`) works unchanged, the SAS's `sv` fixes the
//! service version so no `x-ms-version` header is needed, and a 403's `<Code>` is kept
//! as S3's is.
//!
//! - `account_key`: a service SAS signed here with the account key.
//! - `iam_delegated` / `service_principal`: an Entra token (the platform's application,
//!   or the customer's) fetches a user delegation key, cached ([`entra`]), which signs a
//!   user delegation SAS.
//! - `sas_token`: the customer's SAS appended as is, once it proved it can read and has
//!   not expired.

pub(crate) mod check;
pub(crate) mod entra;
pub(crate) mod location;
pub(crate) mod sas;
pub(crate) mod validate;

use std::time::SystemTime;

use asset_core::{AzureAccess, AzureIntegration};
use async_trait::async_trait;

use crate::Inner;
use crate::config::StorageConfig;
use crate::credentials::{presign_ttl, resolve_secret};
use crate::egress::EgressPolicy;
use crate::error::StorageError;
use crate::location::ObjectLocation;
use crate::partial::Origin;
use crate::secret::SignedUrl;
use crate::source::{ObjectSource, still_names};

use entra::{AppCredential, TokenRequest, hash_of};
use location::{base_url, locate_azure};
use sas::{BlobSas, UserDelegationKey, check_sas_token, decode_key, encode_path};

/// What the token and key exchanges need of the storage layer.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a StorageConfig,
    pub(crate) egress: &'a EgressPolicy,
    pub(crate) client: &'a reqwest::Client,
}

pub(crate) struct AzureSource<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) integration: &'a AzureIntegration,
}

impl AzureSource<'_> {
    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx { config: &self.inner.config, egress: &self.inner.egress, client: self.inner.downloader.client() }
    }

    /// `https` only, unless the endpoint itself is plain HTTP (which a job can name only
    /// when the operator's ALLOWED_ENDPOINTS admits it: on-premises, Azurite).
    fn protocol(&self) -> &'static str {
        if base_url(self.integration).starts_with("https://") { "https" } else { "https,http" }
    }

    /// Who asks Entra for a token: the platform's application (`iam_delegated`) or the
    /// customer's (`service_principal`).
    fn token_request(&self) -> Result<TokenRequest, StorageError> {
        let a = self.integration;
        let cfg = &self.inner.config;
        match &a.access {
            AzureAccess::IamDelegated { tenant_id } => {
                let settings = &cfg.azure;
                let (Some(client_id), Some(credential)) = (&settings.client_id, &settings.credential) else {
                    return Err(StorageError::Credentials {
                        what: "the worker has no Azure application configured (AZURE_CLIENT_ID with \
                               AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE)"
                            .into(),
                        source: None,
                    });
                };
                Ok(TokenRequest {
                    tenant_id: tenant_id.clone(),
                    client_id: client_id.clone(),
                    credential: credential.clone(),
                    scope: 0,
                })
            }
            AzureAccess::ServicePrincipal { tenant_id, client_id, secret_ref } => {
                let secret = resolve_secret(secret_ref, &a.org_id, cfg, false)?;
                Ok(TokenRequest {
                    tenant_id: tenant_id.clone(),
                    client_id: client_id.clone(),
                    scope: hash_of((&a.org_id, &a.id, secret.expose())),
                    credential: AppCredential::Secret(secret),
                })
            }
            AzureAccess::AccountKey { .. } | AzureAccess::SasToken { .. } => {
                Err(StorageError::invalid("access.type", "this access type uses no Entra token"))
            }
        }
    }

    /// An Entra token for the integration (`validate-storage` checks this step alone).
    pub(crate) async fn token(&self) -> Result<(), StorageError> {
        let request = self.token_request()?;
        self.inner.azure.token(&self.ctx(), &request).await.map(|_| ())
    }

    /// The user delegation key of a delegated or service-principal integration.
    pub(crate) async fn user_delegation_key(&self) -> Result<UserDelegationKey, StorageError> {
        let a = self.integration;
        let request = self.token_request()?;
        let base = base_url(a);
        let cache_key = hash_of((
            &a.id,
            &a.org_id,
            &a.account,
            &base,
            &request.tenant_id,
            &request.client_id,
            request.scope,
        ));
        self.inner.azure.user_delegation_key(&self.ctx(), cache_key, &request, &base).await
    }

    /// A SAS URL listing one container (`validate-storage`); a customer SAS token is
    /// used as it is.
    pub(crate) async fn list_url(&self, container: &str) -> Result<SignedUrl, StorageError> {
        let a = self.integration;
        let cfg = &self.inner.config;
        let now = SystemTime::now();
        let list = format!(
            "{}/{}?restype=container&comp=list&maxresults=1",
            base_url(a),
            sas::encode_query(container)
        );
        let sas = |expiry| BlobSas::list_container(&a.account, container, expiry, self.protocol());
        Ok(match &a.access {
            AzureAccess::AccountKey { secret_ref } => {
                let key = decode_key(&resolve_secret(secret_ref, &a.org_id, cfg, false)?, "account key")?;
                let expiry = now + presign_ttl(cfg.signed_url_ttl, None, now);
                SignedUrl::new(format!("{list}&{}", sas(expiry).service_query(&key)), Some(expiry))
            }
            AzureAccess::SasToken { secret_ref } => {
                let token = check_sas_token(&resolve_secret(secret_ref, &a.org_id, cfg, false)?, now)?;
                SignedUrl::new(format!("{list}&{}", token.query.expose()), token.expires_at)
            }
            AzureAccess::IamDelegated { .. } | AzureAccess::ServicePrincipal { .. } => {
                let key = self.user_delegation_key().await?;
                let expiry = now + presign_ttl(cfg.signed_url_ttl, Some(key.expires_at), now);
                SignedUrl::new(format!("{list}&{}", sas(expiry).user_delegation_query(&key)?), Some(expiry))
            }
        })
    }

    /// A read-only SAS URL for one blob. `start` back-dates the signature (tests of
    /// expiry); `None` signs now. A customer's SAS token is used as it is.
    pub(crate) async fn presign(
        &self,
        loc: &ObjectLocation,
        start: Option<SystemTime>,
    ) -> Result<SignedUrl, StorageError> {
        let a = self.integration;
        let cfg = &self.inner.config;
        let now = start.unwrap_or_else(SystemTime::now);
        let blob_url = format!("{}/{}", base_url(a), encode_path(&loc.bucket, &loc.key));
        let sas = |expiry| BlobSas::read_blob(&a.account, &loc.bucket, &loc.key, expiry, self.protocol());
        let signed = match &a.access {
            AzureAccess::AccountKey { secret_ref } => {
                let key = resolve_secret(secret_ref, &a.org_id, cfg, false)?;
                let key = decode_key(&key, "account key")?;
                let expiry = now + presign_ttl(cfg.signed_url_ttl, None, now);
                SignedUrl::new(format!("{blob_url}?{}", sas(expiry).service_query(&key)), Some(expiry))
            }
            AzureAccess::SasToken { secret_ref } => {
                let raw = resolve_secret(secret_ref, &a.org_id, cfg, false)?;
                let token = check_sas_token(&raw, SystemTime::now())?;
                if token.long_lived
                    && self
                        .inner
                        .azure
                        .warned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(hash_of((&a.id, &a.org_id)))
                {
                    tracing::warn!(
                        integration_id = %a.id,
                        "the customer's SAS token is valid for more than 7 days; a shorter one limits what a leak exposes"
                    );
                }
                SignedUrl::new(format!("{blob_url}?{}", token.query.expose()), token.expires_at)
            }
            AzureAccess::IamDelegated { .. } | AzureAccess::ServicePrincipal { .. } => {
                let key = self.user_delegation_key().await?;
                let expiry = now + presign_ttl(cfg.signed_url_ttl, Some(key.expires_at), now);
                SignedUrl::new(
                    format!("{blob_url}?{}", sas(expiry).user_delegation_query(&key)?),
                    Some(expiry),
                )
            }
        };
        still_names(signed.expose(), loc)?;
        Ok(signed)
    }
}

#[async_trait]
impl ObjectSource for AzureSource<'_> {
    fn locate(&self, url: &str) -> Result<ObjectLocation, StorageError> {
        locate_azure(self.integration, url)
    }

    async fn origin(&self, loc: &ObjectLocation) -> Result<Origin, StorageError> {
        Ok(Origin::Signed(self.presign(loc, None).await?))
    }
}

/// The confused-deputy guard of `iam_delegated`: the tenant must be one the integration's
/// organisation consented for, as listed in its own binding secret
/// ([`AzureSettings::tenant_binding`](entra::AzureSettings)); checked before any request.
pub(crate) fn check_tenant_binding(
    tenant_id: &str,
    org_id: &str,
    config: &crate::StorageConfig,
) -> Result<(), StorageError> {
    let refuse = |why: String| StorageError::invalid("access.tenant_id", why);
    let Some(binding) = &config.azure.tenant_binding else {
        return Err(refuse(
            "iam_delegated Azure access needs AZURE_TENANT_BINDING, the list of tenants each organisation \
             consented for; without it nothing binds a tenant to one organisation"
                .into(),
        ));
    };
    let listed = crate::credentials::resolve_secret(binding, org_id, config, false).map_err(|_| {
        refuse(format!("organisation {org_id} has no Azure tenant binding ({binding} is missing or empty)"))
    })?;
    if tenants_in(listed.expose()).any(|t| t.eq_ignore_ascii_case(tenant_id)) {
        Ok(())
    } else {
        Err(refuse(format!("tenant {tenant_id} is not one organisation {org_id} consented for")))
    }
}

/// The tenant ids of a binding: separated by white space or commas, `#` comments.
fn tenants_in(list: &str) -> impl Iterator<Item = &str> {
    list.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod binding_tests {
    use super::*;

    #[test]
    fn a_binding_lists_tenants_one_per_line_or_comma_separated_with_comments() {
        let list = "# org-1, consented 2026-11-02\nAAAA-1 , bbbb-2\n\n  cccc-3 # by the EU admin\n";
        assert_eq!(tenants_in(list).collect::<Vec<_>>(), ["AAAA-1", "bbbb-2", "cccc-3"]);
        assert_eq!(tenants_in("# nothing\n").count(), 0);
    }
}
