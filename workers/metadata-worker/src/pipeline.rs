//! One import job through storage, probe and sinks: every asset downloaded into a temp
//! file, probed, its result written, the file deleted. A bad customer file is a finished
//! asset with an error result; only transient faults make the job retry, and a retry
//! carries only the assets not yet written. A sink that answers no writes, or a temp dir
//! out of space, is not the job's fault: the replica pauses (see [`crate::pause`]) and the
//! job waits or goes back to the queue, its attempts untouched. Shared by `run` (broker)
//! and `replay` (job files).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asset_core::{ErrorBody, ErrorCode, Limits};
use asset_probe::isolate::ProbePool;
use asset_queue::{Outcome, Progress, Resume};
use asset_schemas::{
    ASSET_METADATA_V1, AssetRef, AssetResult, Extractor, ImportJob, JOB_COMPLETED_V1, JobCompleted, Status,
};
use asset_sink::{MetadataSink, SinkError};
use asset_storage::Storage;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::pause::{Cause, Pause};
use asset_fetch::{self as fetch, FetchMode};

/// How a job ended, from the pipeline's point of view.
#[derive(Debug, Clone, PartialEq)]
pub enum JobReport {
    /// Every asset has its result written (some may be `error` results).
    Completed(JobCompleted),
    /// A transient fault; the assets not in `resume.done` should run again later.
    Transient { reason: String, code: ErrorCode, resume: Resume },
    /// A result the sinks can never store (e.g. refused by a constraint): retrying
    /// would fail the same way.
    Rejected { reason: String, code: ErrorCode },
    /// This replica cannot work right now (temp dir exhausted, a sink unreachable for
    /// longer than the wait allows): another replica, or this one later, takes the job.
    Requeue { reason: String, code: ErrorCode },
    /// Shutdown stopped it before every asset was started.
    Cancelled,
}

impl JobReport {
    /// What the queue should do with the job's message.
    pub fn outcome(&self) -> Outcome {
        match self {
            JobReport::Completed(_) => Outcome::Ack,
            JobReport::Transient { reason, code, resume } => {
                Outcome::Retry { reason: reason.clone(), code: *code, resume: Some(resume.clone()) }
            }
            JobReport::Rejected { reason, code } => Outcome::Reject { reason: reason.clone(), code: *code },
            JobReport::Requeue { .. } | JobReport::Cancelled => Outcome::Requeue,
        }
    }
}

/// How one asset ended.
#[derive(Debug)]
enum AssetReport {
    /// Its result (ok or error) is written.
    Written(Status, Option<ErrorCode>),
    /// A transient fault: the job must retry.
    Transient { reason: String, code: ErrorCode },
    /// The result can never be written.
    Rejected { reason: String, code: ErrorCode },
    /// A fault of this replica, not of the asset or its storage.
    Local { reason: String, code: ErrorCode },
    /// Shutdown came while it waited.
    Cancelled,
}

impl AssetReport {
    /// Which of two unfinished outcomes decides the job's: the one least likely to
    /// succeed on a plain retry.
    fn severity(&self) -> u8 {
        match self {
            AssetReport::Written(..) => 0,
            AssetReport::Cancelled => 1,
            AssetReport::Transient { .. } => 2,
            AssetReport::Local { .. } => 3,
            AssetReport::Rejected { .. } => 4,
        }
    }
}

/// Called once per written result; `replay` drives its progress bar with it.
pub type ResultObserver = Arc<dyn Fn(&AssetResult) + Send + Sync>;

pub struct Pipeline {
    storage: Storage,
    prober: ProbePool,
    sink: Arc<dyn MetadataSink>,
    limits: Limits,
    fetch: FetchMode,
    /// Assets in progress across every job of this process (CONCURRENCY).
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Fired at shutdown: no new asset starts; started ones finish.
    stop: CancellationToken,
    observer: Option<ResultObserver>,
    pause: Pause,
    /// Longest a result waits for an unavailable sink before its job is requeued.
    sink_wait: Duration,
}

impl Pipeline {
    pub fn new(
        storage: Storage,
        prober: ProbePool,
        sink: Arc<dyn MetadataSink>,
        limits: Limits,
        concurrency: usize,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        Pipeline {
            storage,
            prober,
            sink,
            limits,
            fetch: FetchMode::default(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            metrics,
            stop,
            observer: None,
            pause: Pause::default(),
            sink_wait: Duration::from_secs(20 * 60),
        }
    }

    pub fn with_fetch(mut self, mode: FetchMode) -> Self {
        self.fetch = mode;
        self
    }

    pub fn with_observer(mut self, observer: ResultObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Shares `pause` with the consume loop and `/readyz`, and waits at most `sink_wait`
    /// for an unavailable sink.
    pub fn with_pause(mut self, pause: Pause, sink_wait: Duration) -> Self {
        self.pause = pause;
        self.sink_wait = sink_wait;
        self
    }

    /// Runs every asset of `job` (bounded by the shared permits), then records the job's
    /// completion, counting `earlier` (what earlier attempts finished) with its own.
    /// Stops starting assets at the first fault that is not the asset's own, or at
    /// shutdown.
    pub async fn run_job(self: &Arc<Self>, job: Arc<ImportJob>, earlier: &Progress) -> JobReport {
        let mut tasks = JoinSet::new();
        let mut pending = job.assets.iter().enumerate();
        let mut next = pending.next();
        let mut unfinished: Option<AssetReport> = None;
        let mut cancelled = false;
        let mut done = BTreeSet::new();
        let mut progress = Progress::default();

        loop {
            let may_start = next.is_some() && unfinished.is_none() && !cancelled;
            let joined = if may_start {
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => { cancelled = true; continue; }
                    Some(joined) = tasks.join_next(), if !tasks.is_empty() => joined,
                    permit = self.permits.clone().acquire_owned() => {
                        let Ok(permit) = permit else { cancelled = true; continue };
                        if let Some((index, _)) = next {
                            let this = Arc::clone(self);
                            let job = Arc::clone(&job);
                            let span = tracing::info_span!("asset", job_id = %job.job_id, asset_id = %job.assets[index].asset_id);
                            tasks.spawn(async move {
                                let _permit = permit;
                                let report = this.run_asset(&job, &job.assets[index]).await;
                                (index, report)
                            }.instrument(span));
                        }
                        next = pending.next();
                        continue;
                    }
                }
            } else {
                match tasks.join_next().await {
                    Some(joined) => joined,
                    None => break,
                }
            };
            let report = match joined {
                Ok((index, AssetReport::Written(status, code))) => {
                    done.insert(job.assets[index].asset_id.clone());
                    match (status, code) {
                        (Status::Ok, _) => progress.ok += 1,
                        (_, code) => {
                            progress.failed += 1;
                            let code = code.unwrap_or(ErrorCode::Internal);
                            *progress.error_codes.entry(code.as_str().to_string()).or_default() += 1;
                        }
                    }
                    continue;
                }
                Ok((_, report)) => report,
                // Our own code panicked outside the probe's boundary: not the
                // customer's file, so retry rather than record a result.
                Err(join) => {
                    let what = if join.is_panic() { "panicked" } else { "was cancelled" };
                    AssetReport::Transient {
                        reason: format!("an asset task {what}"),
                        code: ErrorCode::Internal,
                    }
                }
            };
            if unfinished.as_ref().is_none_or(|u| report.severity() > u.severity()) {
                unfinished = Some(report);
            }
        }

        match unfinished {
            Some(AssetReport::Rejected { reason, code }) => return JobReport::Rejected { reason, code },
            Some(AssetReport::Local { reason, code }) => return JobReport::Requeue { reason, code },
            Some(AssetReport::Transient { reason, code }) => {
                return JobReport::Transient { reason, code, resume: Resume { done, progress } };
            }
            Some(AssetReport::Cancelled) => return JobReport::Cancelled,
            Some(AssetReport::Written(..)) | None => {}
        }
        if cancelled {
            return JobReport::Cancelled;
        }
        progress.merge(earlier);
        let done = JobCompleted {
            schema: JOB_COMPLETED_V1.to_string(),
            job_id: job.job_id.clone(),
            org_id: job.org_id.clone(),
            project_id: job.project_id.clone(),
            assets_total: progress.ok.saturating_add(progress.failed),
            assets_ok: progress.ok,
            assets_failed: progress.failed,
            error_codes: progress.error_codes.clone(),
            completed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let sink = self.sink.clone();
        match self.write_with(|| sink.job_completed(&done), "the job's completion").await {
            AssetReport::Written(..) => JobReport::Completed(done),
            // Every asset is written, only the completion record is missing: a retry
            // of an empty remainder would not be a valid job, so the whole job runs
            // again (its writes are idempotent).
            AssetReport::Transient { reason, code } => {
                JobReport::Transient { reason, code, resume: Resume::default() }
            }
            AssetReport::Rejected { reason, code } => JobReport::Rejected { reason, code },
            AssetReport::Local { reason, code } => JobReport::Requeue { reason, code },
            AssetReport::Cancelled => JobReport::Cancelled,
        }
    }

    async fn run_asset(&self, job: &ImportJob, asset: &AssetRef) -> AssetReport {
        self.metrics.assets_in_flight.inc();
        let report = self.process(job, asset).await;
        self.metrics.assets_in_flight.dec();
        report
    }

    async fn process(&self, job: &ImportJob, asset: &AssetRef) -> AssetReport {
        let started = Instant::now();
        let mut timings = BTreeMap::new();

        let fetched = fetch::fetch_and_probe(
            &self.storage,
            &self.prober,
            &job.storage,
            &asset.url,
            &self.limits,
            self.fetch,
        )
        .await;
        let (metadata, error, size_bytes, bytes_downloaded) = match fetched {
            Err(err) => {
                self.metrics.credential_failure(integration_id(&job.storage), err.code().as_str());
                if let Some(report) = self.not_the_assets_fault(&err, &asset.asset_id) {
                    return report;
                }
                (None, Some(ErrorBody { code: err.code(), message: err.to_string() }), 0, 0)
            }
            Ok(probed) => {
                self.time(&mut timings, "download", probed.download);
                self.time(&mut timings, "probe", probed.probe);
                self.metrics.fetched(&probed);
                self.metrics.sts_calls.set(i64::try_from(self.storage.sts_calls()).unwrap_or(i64::MAX));
                if let Some(err) = &probed.delete_failed {
                    self.metrics.temp_delete_failures.inc();
                    tracing::error!(error = %err, "deleting the downloaded file failed");
                }
                tracing::debug!(
                    path = probed.path.as_str(),
                    requests = probed.requests,
                    size = probed.size,
                    bytes_downloaded = probed.bytes_downloaded,
                    whole_file = probed.whole_file,
                    "fetched and probed"
                );
                match probed.result {
                    Ok(meta) => (Some(meta), None, probed.size, probed.bytes_downloaded),
                    Err(err) => {
                        if let Some(report) = self.not_the_assets_fault(&err, &asset.asset_id) {
                            return report;
                        }
                        (
                            None,
                            Some(ErrorBody { code: err.code(), message: err.to_string() }),
                            probed.size,
                            probed.bytes_downloaded,
                        )
                    }
                }
            }
        };

        let status = if error.is_some() { Status::Error } else { Status::Ok };
        let data_type = metadata.as_ref().map(|m| m.data_type).or(asset.data_type);
        let code = error.as_ref().map(|e| e.code);
        let mut result = AssetResult {
            schema: ASSET_METADATA_V1.to_string(),
            job_id: job.job_id.clone(),
            org_id: job.org_id.clone(),
            project_id: job.project_id.clone(),
            asset_id: asset.asset_id.clone(),
            external_id: asset.external_id.clone(),
            status,
            size_bytes: metadata.as_ref().map_or(size_bytes, |m| m.size_bytes),
            metadata,
            error,
            bytes_downloaded,
            timings_ms: BTreeMap::new(),
            extractor: Extractor::current(),
        };
        timings.insert("total".to_string(), millis(started.elapsed()));
        result.timings_ms = timings;

        let t = Instant::now();
        let what = format!("asset {}", asset.asset_id);
        let sink = self.sink.clone();
        match self.write_with(|| sink.write(&result), &what).await {
            AssetReport::Written(..) => {}
            unfinished => return unfinished,
        }
        self.metrics.stage("write", t.elapsed().as_secs_f64());
        self.metrics.stage("total", started.elapsed().as_secs_f64());

        let type_label = data_type.map_or("unknown", |d| d.as_str());
        let outcome_label = code.map_or("ok", |c| c.as_str());
        self.metrics.asset(type_label, outcome_label);
        match code {
            None => tracing::info!(data_type = type_label, "asset done"),
            Some(code) => tracing::info!(data_type = type_label, %code, "asset done with an error result"),
        }
        if let Some(observer) = &self.observer {
            observer(&result);
        }
        AssetReport::Written(status, code)
    }

    /// A fetch or probe failure that is no verdict on the asset: this replica ran out of
    /// a local resource (pause, requeue), or a transient fault (retry). `None`: the
    /// error is the asset's result.
    fn not_the_assets_fault<E>(&self, err: &E, asset_id: &str) -> Option<AssetReport>
    where
        E: std::error::Error + Classified + 'static,
    {
        if let Some(io) = local_exhaustion(err) {
            tracing::error!(
                errno = io.raw_os_error().unwrap_or(0),
                error = %io,
                temp_dir = %self.storage.config().temp_dir.display(),
                "local resources exhausted; pausing and handing the job back"
            );
            self.pause_for(Cause::TempDir);
            return Some(AssetReport::Local {
                reason: format!("asset {asset_id}: this replica ran out of a local resource: {io}"),
                code: ErrorCode::Io,
            });
        }
        if err.retryable() {
            tracing::warn!(code = %err.code(), error = %err, "transient failure; the job will be retried");
            return Some(AssetReport::Transient {
                reason: format!("asset {asset_id}: {err}"),
                code: err.code(),
            });
        }
        None
    }

    /// Runs a sink write. An unavailable sink pauses the replica and the write waits
    /// (at most `sink_wait`) for it to come back, then tries again; other retryable
    /// faults retry the job, permanent ones reject it.
    async fn write_with<'a, F, Fut>(&self, write: F, what: &str) -> AssetReport
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), SinkError>> + 'a,
    {
        let deadline = Instant::now() + self.sink_wait;
        loop {
            let err = match write().await {
                Ok(()) => return AssetReport::Written(Status::Ok, None),
                Err(err) => err,
            };
            let reason = format!("writing {what} to {}: {err}", self.sink.name());
            if !err.is_retryable() {
                tracing::error!(sink = self.sink.name(), error = %err, "the sink refused a result for good; dead-lettering the job");
                return AssetReport::Rejected { reason, code: err.code() };
            }
            if !err.is_unavailable() {
                tracing::warn!(sink = self.sink.name(), error = %err, "writing the result failed; the job will be retried");
                return AssetReport::Transient { reason, code: err.code() };
            }
            self.pause_for(Cause::Sink);
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                lifted = self.pause.lifted(Cause::Sink, left) => {
                    if !lifted {
                        tracing::warn!(sink = self.sink.name(), "the sink stayed unavailable; handing the job back");
                        return AssetReport::Local { reason, code: err.code() };
                    }
                }
                _ = self.stop.cancelled() => return AssetReport::Cancelled,
            }
        }
    }

    /// Pauses the replica for `cause` and, if it was not paused for it yet, watches for
    /// the cause to go away.
    fn pause_for(&self, cause: Cause) {
        if !self.pause.set(cause, true) {
            return;
        }
        tracing::warn!(cause = cause.as_str(), "pausing: no new jobs until it recovers");
        let pause = self.pause.clone();
        let sink = self.sink.clone();
        let temp_dir = self.storage.config().temp_dir.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(500);
            loop {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                let recovered = match cause {
                    Cause::Sink => sink.ready().await,
                    Cause::TempDir => temp_dir_has_room(&temp_dir),
                };
                if recovered {
                    pause.set(cause, false);
                    tracing::info!(cause = cause.as_str(), "recovered; taking jobs again");
                    return;
                }
            }
        });
    }

    fn time(&self, timings: &mut BTreeMap<String, u64>, stage: &str, took: Duration) {
        self.metrics.stage(stage, took.as_secs_f64());
        timings.insert(stage.to_string(), millis(took));
    }
}

/// The id a job gives its storage integration (a local one may have none).
fn integration_id(integration: &asset_core::Integration) -> &str {
    integration.id().unwrap_or("")
}

/// The classification both storage and probe errors give.
pub trait Classified {
    fn retryable(&self) -> bool;
    fn code(&self) -> ErrorCode;
}

impl Classified for asset_storage::StorageError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
    fn code(&self) -> ErrorCode {
        asset_storage::StorageError::code(self)
    }
}

impl Classified for asset_probe::ProbeError {
    fn retryable(&self) -> bool {
        self.is_retryable()
    }
    fn code(&self) -> ErrorCode {
        asset_probe::ProbeError::code(self)
    }
}

/// The OS error behind `err`, when it says this machine is out of space, quota, file
/// handles or memory: a fault of the replica, not of the asset.
pub fn local_exhaustion<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    // ENOSPC, EDQUOT, EMFILE, ENFILE, ENOMEM, EAGAIN (cannot fork a probe process).
    const EXHAUSTED: [i32; 6] = [28, 122, 24, 23, 12, 11];
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error().is_some_and(|n| EXHAUSTED.contains(&n))
        {
            return Some(io);
        }
        next = e.source();
    }
    None
}

/// Whether the temp dir takes a 1 MiB file again (and lets it go).
fn temp_dir_has_room(dir: &std::path::Path) -> bool {
    use std::io::Write;
    let Ok(mut file) = tempfile::Builder::new().prefix(".room-").tempfile_in(dir) else { return false };
    file.write_all(&vec![0u8; 1 << 20]).and_then(|()| file.as_file().sync_all()).is_ok()
}

fn millis(took: Duration) -> u64 {
    u64::try_from(took.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_exhaustion_is_found_through_the_error_chain() {
        let full = asset_probe::ProbeError::Io(std::io::Error::from_raw_os_error(28));
        assert_eq!(local_exhaustion(&full).and_then(|e| e.raw_os_error()), Some(28));
        let missing = asset_probe::ProbeError::Io(std::io::Error::from_raw_os_error(2));
        assert!(local_exhaustion(&missing).is_none(), "ENOENT is not exhaustion");
        let corrupt = asset_probe::ProbeError::corrupt("png", "bad");
        assert!(local_exhaustion(&corrupt).is_none());
    }

    #[test]
    fn reports_map_to_queue_outcomes() {
        let done = JobCompleted {
            schema: JOB_COMPLETED_V1.into(),
            job_id: "j".into(),
            org_id: "o".into(),
            project_id: "p".into(),
            assets_total: 2,
            assets_ok: 1,
            assets_failed: 1,
            error_codes: BTreeMap::from([("not_found".into(), 1)]),
            completed_at: "2026-01-01T00:00:00Z".into(),
        };
        // Error results are finished assets: the job is acked, not retried.
        assert_eq!(JobReport::Completed(done).outcome(), Outcome::Ack);
        let resume = Resume { done: BTreeSet::from(["a-1".to_string()]), progress: Progress::default() };
        assert_eq!(
            JobReport::Transient {
                reason: "s3 503".into(),
                code: ErrorCode::Upstream,
                resume: resume.clone()
            }
            .outcome(),
            Outcome::Retry { reason: "s3 503".into(), code: ErrorCode::Upstream, resume: Some(resume) }
        );
        // A result no sink can store is final; a fault of this replica hands the job
        // back without spending an attempt.
        assert!(matches!(
            JobReport::Rejected { reason: "22P05".into(), code: ErrorCode::Upstream }.outcome(),
            Outcome::Reject { .. }
        ));
        assert_eq!(
            JobReport::Requeue { reason: "ENOSPC".into(), code: ErrorCode::Io }.outcome(),
            Outcome::Requeue
        );
        assert_eq!(JobReport::Cancelled.outcome(), Outcome::Requeue);
    }
}
