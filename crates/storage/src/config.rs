//! The resolved configuration of the storage layer and its one retry policy.

use std::path::PathBuf;
use std::time::Duration;

use crate::azure::entra::AzureSettings;
use crate::egress::AllowedEndpoints;
use crate::gcs::GcsSettings;
use crate::secret::OrgSecrets;

/// What the storage layer needs to know, resolved by the binary from flags and env.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Private directory (0700) the downloads land in; swept at start-up.
    pub temp_dir: PathBuf,
    /// Largest object downloaded; larger ones stop early with `too_large`.
    pub max_asset_bytes: u64,
    /// TTL of presigned URLs; capped at 15 minutes and at the credentials' expiry.
    pub signed_url_ttl: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response.
    pub read_timeout: Duration,
    pub retry: RetryConfig,
    /// `secret_ref = "file:NAME"` reads `<secrets_dir>/<org_id>/NAME`. `None` refuses
    /// every `file:` reference.
    pub secrets_dir: Option<PathBuf>,
    /// What `secret_ref = "env:NAME"` resolves in: `ORG_SECRET_<ORG>__<NAME>` only. The
    /// binary fills it with [`OrgSecrets::from_env`]; empty refuses every `env:` reference.
    pub org_secrets: OrgSecrets,
    /// The operator's `ALLOWED_ENDPOINTS`: private or loopback storage a job may name
    /// (everything else non-public is refused, see [`crate::egress`]).
    pub allowed_endpoints: AllowedEndpoints,
    /// Credentials are refreshed this long before they expire.
    pub refresh_margin: Duration,
    /// The worker's own Google identity and the GCS org-binding rule (operator settings).
    pub gcs: GcsSettings,
    /// The platform's Entra application (Azure `iam_delegated` access) and its token
    /// endpoint.
    pub azure: AzureSettings,
    /// PEM certificates trusted besides the public roots for storage connections
    /// (`STORAGE_CA_FILE`: on-premises storage, test servers).
    pub ca_certificates: Vec<Vec<u8>>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            temp_dir: std::env::temp_dir().join("metadata-worker"),
            max_asset_bytes: 5 * 1024 * 1024 * 1024,
            signed_url_ttl: Duration::from_secs(5 * 60),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            retry: RetryConfig::default(),
            secrets_dir: None,
            org_secrets: OrgSecrets::default(),
            allowed_endpoints: AllowedEndpoints::default(),
            refresh_margin: Duration::from_secs(120),
            gcs: GcsSettings::default(),
            azure: AzureSettings::default(),
            ca_certificates: Vec::new(),
        }
    }
}

/// Jittered exponential backoff with a total budget, shared by STS, presigning and
/// downloads so that one setting bounds how long a transient fault is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub budget: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            budget: Duration::from_secs(30),
        }
    }
}

impl RetryConfig {
    /// "Full jitter": a uniform wait in `[0, min(max, initial * 2^attempt)]`, so replicas
    /// that failed together do not retry together.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.initial_backoff.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        let cap = cap.min(self.max_backoff);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_cap() {
        let r = RetryConfig {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            budget: Duration::from_secs(10),
        };
        for attempt in 0..40 {
            let cap = Duration::from_millis(100 * (1u64 << attempt.min(3))).min(Duration::from_millis(700));
            assert!(r.backoff(attempt) <= cap, "attempt {attempt}");
        }
    }
}
