//! Storage integrations: credentials, URL checks, signed URLs and downloads into private
//! temp files. The worker hands this crate an integration and an asset URL and gets back
//! a [`TempAsset`] that disappears the moment it is no longer needed.

mod azure;
mod check;
mod config;
mod credentials;
mod download;
mod egress;
mod error;
mod gcs;
mod location;
pub mod logging;
mod partial;
mod read;
mod retry;
mod secret;
mod sigv4;
mod source;
mod temp;
mod validate;

use std::sync::Arc;
use std::time::SystemTime;

use asset_core::Integration;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

pub use azure::entra::{AppCredential, AzureSettings, DEFAULT_AUTHORITY_HOST};
pub use check::{Check, CheckName, ValidateOptions, ValidationReport};
pub use config::{RetryConfig, StorageConfig};
pub use egress::{AllowedEndpoints, operator_http_client};
pub use error::StorageError;
pub use gcs::{DEFAULT_ENDPOINT as GCS_DEFAULT_ENDPOINT, GcsSettings, org_token as gcs_org_token};
pub use location::{ByteRange, ObjectLocation};
pub use partial::PartialAsset;
pub use secret::{ORG_SECRET_PREFIX, OrgSecrets, Secret, SessionCredentials, SignedUrl};
pub use temp::TempAsset;
pub use validate::validate_integration;

use credentials::{CredentialCache, Purpose};
use download::Downloader;
use egress::EgressPolicy;
use gcs::GcsSource;
use partial::Origin;
use read::Want;
use source::{LocalSource, ObjectSource, S3Source};

/// The storage layer of one worker process: the base AWS identity, cached credentials,
/// an HTTP client and the private temp directory. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: StorageConfig,
    /// The worker's own identity and endpoints, from the standard chain.
    pub(crate) base: SdkConfig,
    /// The operator's S3 endpoint from that chain (`AWS_ENDPOINT_URL_S3` or
    /// `AWS_ENDPOINT_URL`), where `aws` integrations' requests go instead of AWS.
    pub(crate) operator_s3: Option<String>,
    pub(crate) credentials: CredentialCache,
    pub(crate) downloader: Downloader,
    /// Where requests made for jobs may go (see [`egress`]).
    pub(crate) egress: Arc<EgressPolicy>,
    /// The SDK's HTTP client under that policy, for STS (S3 requests are presigned URLs
    /// sent through the downloader).
    pub(crate) sdk_http: SharedHttpClient,
    /// The worker's own Google token and the `signBlob` calls made with it.
    pub(crate) gcs_auth: gcs::auth::PlatformAuth,
    /// Entra tokens and user delegation keys of Azure integrations.
    pub(crate) azure: azure::entra::AzureCache,
}

impl Storage {
    /// Loads the base AWS identity from the standard chain (env, profile, web identity,
    /// instance role; `AWS_ENDPOINT_URL[_STS|_S3]`), creates the private temp directory
    /// and removes what a crashed process left in it.
    pub async fn new(config: StorageConfig) -> Result<Storage, StorageError> {
        let base = aws_config::defaults(BehaviorVersion::latest())
            .http_client(egress::operator_http_client())
            .load()
            .await;
        Storage::with_aws_config(config, base)
    }

    /// As [`Storage::new`] with a base AWS configuration built by the caller (tools, and
    /// tests that point STS at a local server). The base configuration's endpoints are
    /// the operator's: the egress policy admits them.
    pub fn with_aws_config(config: StorageConfig, base: SdkConfig) -> Result<Storage, StorageError> {
        temp::prepare_dir(&config.temp_dir)
            .map_err(|e| StorageError::io("preparing the temp directory", e))?;
        let swept =
            temp::sweep(&config.temp_dir).map_err(|e| StorageError::io("sweeping the temp directory", e))?;
        if swept > 0 {
            tracing::info!(swept, temp_dir = %config.temp_dir.display(), "removed leftovers of a previous run");
        }
        let operator_s3 = egress::operator_endpoint(&base, "S3");
        let mut operator = egress::operator_endpoints(&base);
        // The Entra token endpoint is the operator's too (AZURE_AUTHORITY_HOST).
        operator.push(config.azure.authority_host.clone());
        let egress = Arc::new(EgressPolicy::new(&config.allowed_endpoints, &operator));
        let sdk_http = egress::sdk_http_client(egress.clone());
        let downloader = Downloader::new(
            config.connect_timeout,
            config.read_timeout,
            config.retry.clone(),
            egress.clone(),
            &config.ca_certificates,
        )?;
        let gcs_auth = gcs::auth::PlatformAuth::new(config.connect_timeout, config.read_timeout)?;
        Ok(Storage {
            inner: Arc::new(Inner {
                config,
                base,
                operator_s3,
                credentials: CredentialCache::default(),
                downloader,
                egress,
                sdk_http,
                gcs_auth,
                azure: azure::entra::AzureCache::default(),
            }),
        })
    }

    /// An integration this worker may act for: its syntax ([`validate_integration`]),
    /// and an `s3_compatible` or `azure` endpoint the egress policy does not refuse
    /// outright (an IP literal, a port the allow-list does not name). What a host name
    /// resolves to is checked when connecting.
    pub(crate) fn admit(&self, integration: &Integration) -> Result<(), StorageError> {
        validate_integration(integration)?;
        if let Integration::S3Compatible(s) = integration
            && let Some(endpoint) = &s.endpoint
        {
            self.inner.egress.check_str(endpoint)?;
        }
        if let Integration::Gcs(g) = integration {
            // A job-named endpoint (an emulator) is job input like an s3_compatible one.
            if let Some(endpoint) = gcs::job_endpoint(g) {
                self.inner.egress.check_str(endpoint)?;
            }
            if let asset_core::GcsAccess::IamDelegated { service_account } = &g.access {
                gcs::check_org_binding(service_account, &g.org_id, &self.inner.config.gcs)?;
            }
        }
        if let Integration::Azure(a) = integration {
            if let Some(endpoint) = &a.endpoint {
                self.inner.egress.check_str(endpoint)?;
            }
            if let asset_core::AzureAccess::IamDelegated { tenant_id } = &a.access {
                azure::check_tenant_binding(tenant_id, &a.org_id, &self.inner.config)?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    /// Validates, guards the URL, signs it and downloads the whole object.
    pub async fn fetch(&self, integration: &Integration, url: &str) -> Result<TempAsset, StorageError> {
        self.fetch_range(integration, url, None).await
    }

    /// As [`Storage::fetch`], for a byte range of the object only (`None`: all of it).
    pub async fn fetch_range(
        &self,
        integration: &Integration,
        url: &str,
        range: Option<ByteRange>,
    ) -> Result<TempAsset, StorageError> {
        self.admit(integration)?;
        let source = self.source(integration);
        let loc = source.locate(url)?;
        let integration_id = integration.id().unwrap_or_default();
        tracing::debug!(integration_id, provider = integration.provider(), bucket = %loc.bucket, key = %loc.key, "fetching");
        let want = range.map_or(Want::Whole, Want::Range);
        let result = match source.origin(&loc).await {
            Ok(origin) => self.read_once(&origin, want).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(asset) => tracing::debug!(
                integration_id, bucket = %loc.bucket, key = %loc.key, size = asset.size(), "fetched"
            ),
            Err(e) => tracing::info!(
                integration_id, bucket = %loc.bucket, key = %loc.key, code = %e.code(), error = %e, "fetch failed"
            ),
        }
        result
    }

    /// The object an asset URL names, after the SSRF guard; no network.
    pub fn locate(&self, integration: &Integration, url: &str) -> Result<ObjectLocation, StorageError> {
        self.admit(integration)?;
        self.source(integration).locate(url)
    }

    /// A presigned GET for the object an asset URL names. `start` back-dates the
    /// signature (tests of expiry); `None` signs now.
    pub async fn presign(
        &self,
        integration: &Integration,
        url: &str,
        start: Option<SystemTime>,
    ) -> Result<SignedUrl, StorageError> {
        self.admit(integration)?;
        match integration {
            Integration::Aws(s) | Integration::S3Compatible(s) => {
                let source = S3Source {
                    inner: &self.inner,
                    integration: s,
                    aws: matches!(integration, Integration::Aws(_)),
                };
                let loc = source.locate(url)?;
                source.presign(&loc, start).await
            }
            Integration::Local(_) => {
                Err(StorageError::invalid("provider", "local integrations are not signed"))
            }
            Integration::Gcs(g) => {
                let source = GcsSource { inner: &self.inner, integration: g };
                let loc = source.locate(url)?;
                source.presign(&loc, start).await
            }
            Integration::Azure(a) => {
                let source = azure::AzureSource { inner: &self.inner, integration: a };
                let loc = source.locate(url)?;
                source.presign(&loc, start).await
            }
        }
    }

    /// Downloads a signed URL into the temp directory under the configured limits.
    pub async fn download_signed(
        &self,
        url: &SignedUrl,
        range: Option<ByteRange>,
    ) -> Result<TempAsset, StorageError> {
        self.read_once(&Origin::Signed(url.clone()), range.map_or(Want::Whole, Want::Range)).await
    }

    /// The credentials [`Storage::fetch`] signs with (cached; AssumeRole when delegated).
    pub async fn credentials(&self, integration: &Integration) -> Result<SessionCredentials, StorageError> {
        self.admit(integration)?;
        match integration {
            Integration::Aws(s) | Integration::S3Compatible(s) => {
                let aws = matches!(integration, Integration::Aws(_));
                S3Source { inner: &self.inner, integration: s, aws }.credentials(Purpose::Read).await
            }
            Integration::Local(_) => {
                Err(StorageError::invalid("provider", "local integrations have no credentials"))
            }
            Integration::Gcs(g) => match (GcsSource { inner: &self.inner, integration: g }).hmac_as_s3() {
                Some(s3) => {
                    S3Source { inner: &self.inner, integration: &s3, aws: false }
                        .credentials(Purpose::Read)
                        .await
                }
                None => Err(StorageError::invalid(
                    "provider",
                    "GCS integrations other than hmac sign with a key or signBlob, not session credentials",
                )),
            },
            Integration::Azure(_) => {
                Err(StorageError::invalid("provider", "azure integrations sign with SAS, not AWS keys"))
            }
        }
    }

    /// AssumeRole calls made so far (metrics, benchmarks).
    pub fn sts_calls(&self) -> u64 {
        self.inner.credentials.sts_calls()
    }

    /// Google token exchanges made so far for `iam_delegated` GCS signing (metrics, tests).
    pub fn gcs_token_exchanges(&self) -> u64 {
        self.inner.gcs_auth.exchanges()
    }

    /// Microsoft Entra token requests made so far (Azure delegated access).
    pub fn azure_token_calls(&self) -> u64 {
        self.inner.azure.token_calls()
    }

    /// Get User Delegation Key calls made so far.
    pub fn azure_key_calls(&self) -> u64 {
        self.inner.azure.key_calls()
    }

    fn source<'a>(&'a self, integration: &'a Integration) -> Box<dyn ObjectSource + 'a> {
        match integration {
            Integration::Aws(s) => Box::new(S3Source { inner: &self.inner, integration: s, aws: true }),
            Integration::S3Compatible(s) => {
                Box::new(S3Source { inner: &self.inner, integration: s, aws: false })
            }
            Integration::Local(l) => Box::new(LocalSource { integration: l }),
            Integration::Gcs(g) => Box::new(GcsSource { inner: &self.inner, integration: g }),
            Integration::Azure(a) => Box::new(azure::AzureSource { inner: &self.inner, integration: a }),
        }
    }
}
