//! Storage integrations: credentials, URL checks, signed URLs and downloads into private
//! temp files. The worker hands this crate an integration and an asset URL and gets back
//! a [`TempAsset`] that disappears the moment it is no longer needed.

mod check;
mod config;
mod credentials;
mod download;
mod error;
mod location;
pub mod logging;
mod partial;
mod retry;
mod secret;
mod source;
mod temp;
mod validate;

use std::sync::Arc;
use std::time::SystemTime;

use asset_core::Integration;
use aws_config::{BehaviorVersion, SdkConfig};

pub use check::{Check, CheckName, ValidateOptions, ValidationReport};
pub use config::{RetryConfig, StorageConfig};
pub use error::StorageError;
pub use location::{ByteRange, ObjectLocation};
pub use partial::PartialAsset;
pub use secret::{Secret, SessionCredentials, SignedUrl};
pub use temp::TempAsset;
pub use validate::validate_integration;

use credentials::{CredentialCache, Purpose};
use download::Downloader;
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
    pub(crate) credentials: CredentialCache,
    pub(crate) downloader: Downloader,
}

impl Storage {
    /// Loads the base AWS identity from the standard chain (env, profile, web identity,
    /// instance role; `AWS_ENDPOINT_URL[_STS|_S3]`), creates the private temp directory
    /// and removes what a crashed process left in it.
    pub async fn new(config: StorageConfig) -> Result<Storage, StorageError> {
        let base = aws_config::defaults(BehaviorVersion::latest()).load().await;
        Storage::with_aws_config(config, base)
    }

    /// As [`Storage::new`] with a base AWS configuration built by the caller (tools, and
    /// tests that point STS at a local server).
    pub fn with_aws_config(config: StorageConfig, base: SdkConfig) -> Result<Storage, StorageError> {
        temp::prepare_dir(&config.temp_dir)
            .map_err(|e| StorageError::io("preparing the temp directory", e))?;
        let swept =
            temp::sweep(&config.temp_dir).map_err(|e| StorageError::io("sweeping the temp directory", e))?;
        if swept > 0 {
            tracing::info!(swept, temp_dir = %config.temp_dir.display(), "removed leftovers of a previous run");
        }
        let downloader = Downloader::new(config.connect_timeout, config.read_timeout, config.retry.clone())?;
        Ok(Storage {
            inner: Arc::new(Inner { config, base, credentials: CredentialCache::default(), downloader }),
        })
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
        validate_integration(integration)?;
        let source = self.source(integration);
        let loc = source.locate(url)?;
        let integration_id = integration.id().unwrap_or_default();
        tracing::debug!(integration_id, provider = integration.provider(), bucket = %loc.bucket, key = %loc.key, "fetching");
        let result = source.fetch(&loc, range).await;
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
        validate_integration(integration)?;
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
        validate_integration(integration)?;
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
        }
    }

    /// Downloads a signed URL into the temp directory under the configured limits.
    pub async fn download_signed(
        &self,
        url: &SignedUrl,
        range: Option<ByteRange>,
    ) -> Result<TempAsset, StorageError> {
        let cfg = &self.inner.config;
        self.inner.downloader.download(url, range, &cfg.temp_dir, cfg.max_asset_bytes).await
    }

    /// The credentials [`Storage::fetch`] signs with (cached; AssumeRole when delegated).
    pub async fn credentials(&self, integration: &Integration) -> Result<SessionCredentials, StorageError> {
        validate_integration(integration)?;
        match integration {
            Integration::Aws(s) | Integration::S3Compatible(s) => {
                let aws = matches!(integration, Integration::Aws(_));
                S3Source { inner: &self.inner, integration: s, aws }.credentials(Purpose::Read).await
            }
            Integration::Local(_) => {
                Err(StorageError::invalid("provider", "local integrations have no credentials"))
            }
        }
    }

    /// AssumeRole calls made so far (metrics, benchmarks).
    pub fn sts_calls(&self) -> u64 {
        self.inner.credentials.sts_calls()
    }

    fn source<'a>(&'a self, integration: &'a Integration) -> Box<dyn ObjectSource + 'a> {
        match integration {
            Integration::Aws(s) => Box::new(S3Source { inner: &self.inner, integration: s, aws: true }),
            Integration::S3Compatible(s) => {
                Box::new(S3Source { inner: &self.inner, integration: s, aws: false })
            }
            Integration::Local(l) => Box::new(LocalSource { inner: &self.inner, integration: l }),
        }
    }
}
