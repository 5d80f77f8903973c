//! Serde types of every queue message. The JSON Schemas in this folder
//! (`import-job.v1.json`, `asset-metadata.v1.json`, `job-completed.v1.json`) are the
//! source of truth; tests validate fixtures and produced messages against them so the
//! two cannot drift apart.

mod schema;

use std::collections::BTreeMap;

use asset_core::{AssetMetadata, DataType, ErrorBody, Integration};
use serde::{Deserialize, Serialize};

pub use schema::Schema;

pub const IMPORT_JOB_V1: &str = "import-job/v1";
pub const ASSET_METADATA_V1: &str = "asset-metadata/v1";
pub const JOB_COMPLETED_V1: &str = "job-completed/v1";

/// Most assets one job may carry (the schema's `maxItems`): bigger imports are split by
/// the import service, so one message stays small and one redelivery stays cheap.
pub const MAX_ASSETS_PER_JOB: usize = 10_000;

/// A request to extract metadata for one or more assets of one project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportJob {
    /// Always [`IMPORT_JOB_V1`]; checked by [`ImportJob::from_slice`].
    pub schema: String,
    pub job_id: String,
    pub org_id: String,
    pub project_id: String,
    /// RFC 3339 timestamp set by the import service.
    pub created_at: String,
    pub storage: Integration,
    pub assets: Vec<AssetRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetRef {
    pub asset_id: String,
    /// The customer's own identifier for the asset, echoed back in results.
    pub external_id: String,
    pub url: String,
    /// What the import service expects; the probe detects from content regardless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<DataType>,
}

/// Why a message is not a job we can run. The consumer dead-letters these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    #[error("not a valid import job: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unknown schema {0:?} (this worker reads {IMPORT_JOB_V1})")]
    UnknownVersion(String),
    /// The message breaks `import-job.v1.json`; the text lists where (paths and
    /// keywords only, never values, which may be secrets sent by mistake).
    #[error("import job violates import-job.v1.json: {0}")]
    Schema(String),
    #[error("invalid import job: {0}")]
    Invalid(String),
}

impl JobError {
    pub fn code(&self) -> asset_core::ErrorCode {
        asset_core::ErrorCode::InvalidJob
    }

    /// A malformed message stays malformed.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

impl ImportJob {
    /// Decodes and checks a job: the schema version, the JSON Schema itself, at least
    /// one asset, unique asset ids, and a storage integration that belongs to the job's
    /// organisation.
    pub fn from_slice(bytes: &[u8]) -> Result<ImportJob, JobError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)?;
        match value.get("schema").and_then(|s| s.as_str()) {
            Some(IMPORT_JOB_V1) => {}
            Some(other) => return Err(JobError::UnknownVersion(other.to_string())),
            None => return Err(JobError::Invalid("missing \"schema\"".into())),
        }
        let violations = Schema::ImportJob.violations(&value);
        if !violations.is_empty() {
            return Err(JobError::Schema(violations.join("; ")));
        }
        let job: ImportJob = serde_json::from_value(value)?;
        job.check()?;
        Ok(job)
    }

    fn check(&self) -> Result<(), JobError> {
        if self.job_id.is_empty() || self.org_id.is_empty() || self.project_id.is_empty() {
            return Err(JobError::Invalid("job_id, org_id and project_id must be non-empty".into()));
        }
        if self.assets.is_empty() {
            return Err(JobError::Invalid("a job carries at least one asset".into()));
        }
        if self.assets.len() > MAX_ASSETS_PER_JOB {
            return Err(JobError::Invalid(format!(
                "{} assets in one job (at most {MAX_ASSETS_PER_JOB})",
                self.assets.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.assets {
            if a.asset_id.is_empty() {
                return Err(JobError::Invalid("an asset has an empty asset_id".into()));
            }
            if !seen.insert(a.asset_id.as_str()) {
                return Err(JobError::Invalid(format!("asset_id {:?} appears twice", a.asset_id)));
            }
        }
        if let Some(org) = self.storage.org_id()
            && org != self.org_id
        {
            return Err(JobError::Invalid(format!(
                "storage integration belongs to org {org:?}, not to the job's org {:?}",
                self.org_id
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Error,
}

/// One result per asset (`asset-metadata/v1`): the probe's fields on success, a stable
/// error code otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetResult {
    pub schema: String,
    pub job_id: String,
    pub org_id: String,
    pub project_id: String,
    pub asset_id: String,
    pub external_id: String,
    pub status: Status,
    /// The probe's fields; `None` when the asset failed before the probe answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<AssetMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    pub size_bytes: u64,
    pub bytes_downloaded: u64,
    /// Milliseconds per stage: `credentials`, `download`, `probe`, `total`, …
    pub timings_ms: BTreeMap<String, u64>,
    pub extractor: Extractor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extractor {
    pub name: String,
    pub version: String,
}

impl Extractor {
    /// This build of the worker.
    pub fn current() -> Self {
        Extractor { name: "metadata-worker".into(), version: env!("CARGO_PKG_VERSION").into() }
    }
}

impl AssetResult {
    /// A probed asset. `size_bytes` is the probe's.
    pub fn ok(
        job: &ImportJob,
        asset: &AssetRef,
        metadata: AssetMetadata,
        bytes_downloaded: u64,
        timings_ms: BTreeMap<String, u64>,
    ) -> Self {
        let size_bytes = metadata.size_bytes;
        AssetResult {
            metadata: Some(metadata),
            error: None,
            size_bytes,
            ..AssetResult::base(job, asset, Status::Ok, bytes_downloaded, timings_ms)
        }
    }

    /// A finished asset that failed: a bad file or a permanent storage error.
    /// `size_bytes` is the object's size when known, else 0.
    pub fn failed(
        job: &ImportJob,
        asset: &AssetRef,
        error: ErrorBody,
        size_bytes: u64,
        bytes_downloaded: u64,
        timings_ms: BTreeMap<String, u64>,
    ) -> Self {
        AssetResult {
            error: Some(error),
            size_bytes,
            ..AssetResult::base(job, asset, Status::Error, bytes_downloaded, timings_ms)
        }
    }

    fn base(
        job: &ImportJob,
        asset: &AssetRef,
        status: Status,
        bytes_downloaded: u64,
        timings_ms: BTreeMap<String, u64>,
    ) -> Self {
        AssetResult {
            schema: ASSET_METADATA_V1.into(),
            job_id: job.job_id.clone(),
            org_id: job.org_id.clone(),
            project_id: job.project_id.clone(),
            asset_id: asset.asset_id.clone(),
            external_id: asset.external_id.clone(),
            status,
            metadata: None,
            error: None,
            size_bytes: 0,
            bytes_downloaded,
            timings_ms,
            extractor: Extractor::current(),
        }
    }
}

/// Published once per job, after every asset has its result written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobCompleted {
    pub schema: String,
    pub job_id: String,
    pub org_id: String,
    pub project_id: String,
    pub assets_total: u32,
    pub assets_ok: u32,
    pub assets_failed: u32,
    /// Error code → how many assets failed with it.
    pub error_codes: BTreeMap<String, u32>,
    /// RFC 3339.
    pub completed_at: String,
}

impl JobCompleted {
    /// Tallies a job's results. `completed_at` is RFC 3339.
    pub fn for_job(job: &ImportJob, results: &[AssetResult], completed_at: impl Into<String>) -> Self {
        let mut error_codes = BTreeMap::new();
        let mut ok = 0u32;
        let mut failed = 0u32;
        for r in results {
            match (r.status, &r.error) {
                (Status::Ok, _) => ok = ok.saturating_add(1),
                (Status::Error, e) => {
                    failed = failed.saturating_add(1);
                    let code = e.as_ref().map_or(asset_core::ErrorCode::Internal, |e| e.code);
                    *error_codes.entry(code.as_str().to_string()).or_insert(0u32) += 1;
                }
            }
        }
        JobCompleted {
            schema: JOB_COMPLETED_V1.into(),
            job_id: job.job_id.clone(),
            org_id: job.org_id.clone(),
            project_id: job.project_id.clone(),
            assets_total: ok.saturating_add(failed),
            assets_ok: ok,
            assets_failed: failed,
            error_codes,
            completed_at: completed_at.into(),
        }
    }
}
