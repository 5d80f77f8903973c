//! One import job through storage, probe and sinks: every asset downloaded into a temp
//! file, probed on the blocking pool, its result written, the file deleted. A bad
//! customer file is a finished asset with an error result; only transient faults make
//! the job retry. Shared by `run` (broker) and `replay` (job files).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use asset_core::{ErrorBody, ErrorCode, Limits};
use asset_queue::Outcome;
use asset_schemas::{
    ASSET_METADATA_V1, AssetRef, AssetResult, Extractor, ImportJob, JOB_COMPLETED_V1, JobCompleted, Status,
};
use asset_sink::MetadataSink;
use asset_storage::Storage;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::fetch::{self, FetchMode};
use crate::metrics::Metrics;

/// How a job ended, from the pipeline's point of view.
#[derive(Debug, Clone, PartialEq)]
pub enum JobReport {
    /// Every asset has its result written (some may be `error` results).
    Completed(JobCompleted),
    /// A transient fault; the whole job should run again later.
    Transient { reason: String, code: ErrorCode },
    /// Shutdown stopped it before every asset was started.
    Cancelled,
}

impl JobReport {
    /// What the queue should do with the job's message.
    pub fn outcome(&self) -> Outcome {
        match self {
            JobReport::Completed(_) => Outcome::Ack,
            JobReport::Transient { reason, code } => Outcome::Retry { reason: reason.clone(), code: *code },
            JobReport::Cancelled => Outcome::Requeue,
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
}

/// Called once per written result; `replay` drives its progress bar with it.
pub type ResultObserver = Arc<dyn Fn(&AssetResult) + Send + Sync>;

pub struct Pipeline {
    storage: Storage,
    sink: Arc<dyn MetadataSink>,
    limits: Limits,
    fetch: FetchMode,
    /// Assets in progress across every job of this process (CONCURRENCY).
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Fired at shutdown: no new asset starts; started ones finish.
    stop: CancellationToken,
    observer: Option<ResultObserver>,
}

impl Pipeline {
    pub fn new(
        storage: Storage,
        sink: Arc<dyn MetadataSink>,
        limits: Limits,
        concurrency: usize,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        Pipeline {
            storage,
            sink,
            limits,
            fetch: FetchMode::default(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            metrics,
            stop,
            observer: None,
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

    /// Runs every asset of `job` (bounded by the shared permits), then records the job's
    /// completion. Stops starting assets at the first transient fault or at shutdown.
    pub async fn run_job(self: &Arc<Self>, job: Arc<ImportJob>) -> JobReport {
        let mut tasks = JoinSet::new();
        let mut pending = job.assets.iter().enumerate();
        let mut next = pending.next();
        let mut transient: Option<(String, ErrorCode)> = None;
        let mut cancelled = false;
        let mut ok = 0u32;
        let mut failed = 0u32;
        let mut error_codes: BTreeMap<String, u32> = BTreeMap::new();

        loop {
            let may_start = next.is_some() && transient.is_none() && !cancelled;
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
                                this.run_asset(&job, &job.assets[index]).await
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
            match joined {
                Ok(AssetReport::Written(Status::Ok, _)) => ok += 1,
                Ok(AssetReport::Written(_, code)) => {
                    failed += 1;
                    let code = code.unwrap_or(ErrorCode::Internal);
                    *error_codes.entry(code.as_str().to_string()).or_default() += 1;
                }
                Ok(AssetReport::Transient { reason, code }) => {
                    transient.get_or_insert((reason, code));
                }
                Err(join) => {
                    // Our own code panicked outside the probe's boundary: not the
                    // customer's file, so retry rather than record a result.
                    let what = if join.is_panic() { "panicked" } else { "was cancelled" };
                    transient.get_or_insert((format!("an asset task {what}"), ErrorCode::Internal));
                }
            }
        }

        if let Some((reason, code)) = transient {
            return JobReport::Transient { reason, code };
        }
        if cancelled {
            return JobReport::Cancelled;
        }
        let done = JobCompleted {
            schema: JOB_COMPLETED_V1.to_string(),
            job_id: job.job_id.clone(),
            org_id: job.org_id.clone(),
            project_id: job.project_id.clone(),
            assets_total: ok + failed,
            assets_ok: ok,
            assets_failed: failed,
            error_codes,
            completed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        if let Err(err) = self.sink.job_completed(&done).await {
            return JobReport::Transient {
                reason: format!("recording the job's completion in {}: {err}", self.sink.name()),
                code: err.code(),
            };
        }
        JobReport::Completed(done)
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

        let fetched =
            fetch::fetch_and_probe(&self.storage, &job.storage, &asset.url, &self.limits, self.fetch).await;
        let (metadata, error, size_bytes, bytes_downloaded) = match fetched {
            Err(err) if err.is_retryable() => {
                tracing::warn!(code = %err.code(), error = %err, "download failed; the job will be retried");
                return AssetReport::Transient {
                    reason: format!("asset {}: {err}", asset.asset_id),
                    code: err.code(),
                };
            }
            Err(err) => (None, Some(ErrorBody { code: err.code(), message: err.to_string() }), 0, 0),
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
                    Err(err) if err.is_retryable() => {
                        tracing::warn!(code = %err.code(), error = %err, "reading the downloaded file failed; the job will be retried");
                        return AssetReport::Transient {
                            reason: format!("asset {}: {err}", asset.asset_id),
                            code: err.code(),
                        };
                    }
                    Err(err) => (
                        None,
                        Some(ErrorBody { code: err.code(), message: err.to_string() }),
                        probed.size,
                        probed.bytes_downloaded,
                    ),
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
        if let Err(err) = self.sink.write(&result).await {
            tracing::warn!(sink = self.sink.name(), error = %err, "writing the result failed; the job will be retried");
            return AssetReport::Transient {
                reason: format!("writing asset {} to {}: {err}", asset.asset_id, self.sink.name()),
                code: err.code(),
            };
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

    fn time(&self, timings: &mut BTreeMap<String, u64>, stage: &str, took: Duration) {
        self.metrics.stage(stage, took.as_secs_f64());
        timings.insert(stage.to_string(), millis(took));
    }
}

fn millis(took: Duration) -> u64 {
    u64::try_from(took.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            JobReport::Transient { reason: "s3 503".into(), code: ErrorCode::Upstream }.outcome(),
            Outcome::Retry { reason: "s3 503".into(), code: ErrorCode::Upstream }
        );
        assert_eq!(JobReport::Cancelled.outcome(), Outcome::Requeue);
    }
}
