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

/// Longest `job_id` the schema allows; a longer one found in a refused message is cut
/// to this before it is logged or put in a header.
pub const MAX_ID_LEN: usize = 256;

/// What a worker accepts before it looks inside a message: the body's size is checked
/// before any parsing, the asset count before any asset is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Largest message body, in bytes (`MAX_JOB_BYTES`).
    pub max_bytes: usize,
    /// Most assets in one job (`MAX_ASSETS_PER_JOB`), at most [`MAX_ASSETS_PER_JOB`].
    pub max_assets: usize,
}

impl Default for JobLimits {
    fn default() -> Self {
        // A job at the schema's 10,000 assets with URLs of ~250 bytes fits in 4 MiB.
        JobLimits { max_bytes: 4 * 1024 * 1024, max_assets: MAX_ASSETS_PER_JOB }
    }
}

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
    /// Refused from its byte count alone, before parsing.
    #[error("a message of {bytes} bytes is larger than the {limit} bytes a job may have (MAX_JOB_BYTES)")]
    TooLarge { bytes: usize, limit: usize },
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

/// A message body after the one parse it gets: the job, or why it is not one, and the
/// job id whenever the body names one (for logs and dead-letter headers), cut to
/// [`MAX_ID_LEN`] bytes.
#[derive(Debug)]
pub struct Decoded {
    pub job: Result<ImportJob, JobError>,
    pub job_id: Option<String>,
}

impl ImportJob {
    /// Decodes and checks a job under the default [`JobLimits`].
    pub fn from_slice(bytes: &[u8]) -> Result<ImportJob, JobError> {
        ImportJob::decode(bytes, &JobLimits::default()).job
    }

    /// Decodes a message body once: its size against `limits` before anything else,
    /// then the JSON, the schema version, the JSON Schema itself, and the rules the
    /// schema cannot say (asset count, unique asset ids, no NUL anywhere, a storage
    /// integration of the job's own organisation).
    pub fn decode(bytes: &[u8], limits: &JobLimits) -> Decoded {
        if bytes.len() > limits.max_bytes {
            let job = Err(JobError::TooLarge { bytes: bytes.len(), limit: limits.max_bytes });
            return Decoded { job, job_id: None };
        }
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => return Decoded { job: Err(e.into()), job_id: None },
        };
        let job_id = value.get("job_id").and_then(|v| v.as_str()).map(|id| cut(id, MAX_ID_LEN));
        Decoded { job: ImportJob::from_value(value, limits), job_id }
    }

    fn from_value(value: serde_json::Value, limits: &JobLimits) -> Result<ImportJob, JobError> {
        match value.get("schema").and_then(|s| s.as_str()) {
            Some(IMPORT_JOB_V1) => {}
            Some(other) => return Err(JobError::UnknownVersion(cut(other, 64))),
            None => return Err(JobError::Invalid("missing \"schema\"".into())),
        }
        let violations = Schema::ImportJob.violations(&value);
        if !violations.is_empty() {
            // Bounded: a job breaking the rules once per asset gives 10,000 lines.
            let shown: Vec<&str> = violations.iter().take(5).map(String::as_str).collect();
            let more = violations.len().saturating_sub(shown.len());
            let tail = if more > 0 { format!("; and {more} more") } else { String::new() };
            return Err(JobError::Schema(format!("{}{tail}", shown.join("; "))));
        }
        if let Some(at) = nul_at(&value, &mut String::new()) {
            return Err(JobError::Invalid(format!(
                "the string at {at} holds a NUL character, which no result store can keep"
            )));
        }
        let job: ImportJob = serde_json::from_value(value)?;
        job.check(limits)?;
        Ok(job)
    }

    fn check(&self, limits: &JobLimits) -> Result<(), JobError> {
        if self.job_id.is_empty() || self.org_id.is_empty() || self.project_id.is_empty() {
            return Err(JobError::Invalid("job_id, org_id and project_id must be non-empty".into()));
        }
        if self.assets.is_empty() {
            return Err(JobError::Invalid("a job carries at least one asset".into()));
        }
        let max_assets = limits.max_assets.min(MAX_ASSETS_PER_JOB);
        if self.assets.len() > max_assets {
            return Err(JobError::Invalid(format!(
                "{} assets in one job (at most {max_assets}, MAX_ASSETS_PER_JOB)",
                self.assets.len()
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for a in &self.assets {
            if a.asset_id.is_empty() {
                return Err(JobError::Invalid("an asset has an empty asset_id".into()));
            }
            if !seen.insert(a.asset_id.as_str()) {
                return Err(JobError::Invalid(format!(
                    "asset_id {:?} appears twice",
                    cut(&a.asset_id, MAX_ID_LEN)
                )));
            }
        }
        if let Some(org) = self.storage.org_id()
            && org != self.org_id
        {
            return Err(JobError::Invalid(format!(
                "storage integration belongs to org {:?}, not to the job's org {:?}",
                cut(org, MAX_ID_LEN),
                cut(&self.org_id, MAX_ID_LEN)
            )));
        }
        Ok(())
    }

    /// The job without the assets in `done`: what a retry still has to do.
    pub fn remainder(&self, done: &std::collections::BTreeSet<String>) -> ImportJob {
        ImportJob {
            assets: self.assets.iter().filter(|a| !done.contains(&a.asset_id)).cloned().collect(),
            ..self.clone()
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, with a marker when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &s[..end])
}

/// The JSON pointer of the first string (key or value) holding a NUL, if any.
/// PostgreSQL's `text` and `jsonb` cannot store one, so such a job could never be written.
fn nul_at(v: &serde_json::Value, path: &mut String) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('\0') => Some(if path.is_empty() { "/".into() } else { path.clone() }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("/{i}"));
            let found = nul_at(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            let len = path.len();
            path.push('/');
            path.push_str(&cut(k, 64).replace('\0', "\\0"));
            let found = if k.contains('\0') { Some(path.clone()) } else { nul_at(item, path) };
            path.truncate(len);
            found
        }),
        _ => None,
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
