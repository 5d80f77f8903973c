//! `metadata-worker replay JOB.json...`: the service's pipeline without a broker.
//! Each job file runs through storage (the `local` provider or any S3 integration it
//! names), the probe and a JSON Lines sink on stdout; a progress bar goes to stderr when
//! it is a terminal. Jobs run one after another, their assets concurrently; each job's
//! results are printed when it is done, in the order its file lists the assets.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use asset_core::Integration;
use asset_schemas::{AssetResult, ImportJob, JobCompleted};
use asset_sink::{JsonlSink, MetadataSink, SinkError};
use asset_storage::Storage;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::config::{LogFormat, PipelineArgs};
use crate::metrics::Metrics;
use crate::pipeline::{JobReport, Pipeline};
use crate::{logging, shutdown};
use asset_probe::isolate::ProbePool;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Import job files (import-job/v1 JSON). A relative `root` of a `local` storage
    /// integration is taken relative to the job file's directory (falling back to the
    /// current directory when nothing exists there).
    #[arg(required = true, value_name = "JOB.json")]
    jobs: Vec<PathBuf>,

    #[command(flatten)]
    pipeline: PipelineArgs,

    /// Append results to this file instead of writing them to stdout.
    #[arg(long, env = "JSONL_PATH")]
    jsonl_path: Option<PathBuf>,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    logging::init(LogFormat::Text, "warn");
    let mut cfg = args.pipeline.resolve()?;
    // Unless told otherwise, a private directory of our own: the storage layer empties
    // its temp directory at start, which must not hit a running worker's.
    let own_temp = match &args.pipeline.temp_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("metadata-worker-replay-").tempdir()?),
    };
    if let Some(dir) = &own_temp {
        cfg.storage.temp_dir = dir.path().join("downloads");
    }

    // Read and check every file first: a typo in the last one should not cost a run.
    let mut jobs = Vec::new();
    for path in &args.jobs {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut job = ImportJob::from_slice(&bytes).with_context(|| format!("{}", path.display()))?;
        resolve_local_root(&mut job, path);
        jobs.push(job);
    }

    let jsonl: Arc<dyn MetadataSink> = match &args.jsonl_path {
        Some(path) => {
            Arc::new(JsonlSink::file(path).with_context(|| format!("JSONL_PATH {}", path.display()))?)
        }
        None => Arc::new(JsonlSink::stdout()),
    };
    let in_order = Arc::new(InOrder::new(jsonl, &jobs));
    let sink: Arc<dyn MetadataSink> = in_order.clone();
    let storage = Storage::new(cfg.storage.clone()).await.context("TEMP_DIR / storage setup")?;
    let stop = CancellationToken::new();
    shutdown::on_signal(stop.clone(), CancellationToken::new())?;

    let total: u64 = jobs.iter().map(|j| j.assets.len() as u64).sum();
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} assets  {elapsed}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let observer_bar = bar.clone();
    let pipeline = Arc::new(
        Pipeline::new(
            storage,
            ProbePool::new(cfg.prober.clone()),
            sink,
            cfg.limits.clone(),
            cfg.concurrency,
            Arc::new(Metrics::new()),
            stop.clone(),
        )
        .with_fetch(cfg.fetch)
        .with_observer(Arc::new(move |_| observer_bar.inc(1))),
    );

    let mut failed_jobs = 0;
    for (job, path) in jobs.into_iter().zip(&args.jobs) {
        bar.set_message(job.job_id.clone());
        let job_id = job.job_id.clone();
        match pipeline.run_job(Arc::new(job), &Default::default()).await {
            JobReport::Completed(_) => {}
            JobReport::Transient { reason, code, .. }
            | JobReport::Rejected { reason, code }
            | JobReport::Requeue { reason, code } => {
                failed_jobs += 1;
                in_order.flush(&job_id).await;
                bar.suspend(|| eprintln!("metadata-worker: {}: {code}: {reason}", path.display()));
            }
            JobReport::Cancelled => {
                failed_jobs += 1;
                break;
            }
        }
    }
    bar.finish_and_clear();
    if let Err(err) = shutdown::empty_dir(&cfg.storage.temp_dir) {
        eprintln!("metadata-worker: emptying {}: {err}", cfg.storage.temp_dir.display());
    }
    drop(own_temp);
    Ok(if failed_jobs == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Holds each job's results back until the job is done, then writes them in the
/// order the job file lists its assets: assets finish in any order, but replay output
/// should be the same on every run, so it can be read and diffed.
struct InOrder {
    inner: Arc<dyn MetadataSink>,
    position: HashMap<(String, String), usize>,
    pending: Mutex<HashMap<String, Vec<AssetResult>>>,
}

impl InOrder {
    fn new(inner: Arc<dyn MetadataSink>, jobs: &[ImportJob]) -> Self {
        let position = jobs
            .iter()
            .flat_map(|j| {
                j.assets.iter().enumerate().map(|(i, a)| ((j.job_id.clone(), a.asset_id.clone()), i))
            })
            .collect();
        InOrder { inner, position, pending: Mutex::new(HashMap::new()) }
    }

    fn take(&self, job_id: &str) -> Vec<AssetResult> {
        let mut results =
            self.pending.lock().map(|mut p| p.remove(job_id)).ok().flatten().unwrap_or_default();
        results.sort_by_key(|r| self.position.get(&(r.job_id.clone(), r.asset_id.clone())).copied());
        results
    }

    /// Writes what a job that did not complete has, so nothing computed is hidden.
    async fn flush(&self, job_id: &str) {
        for r in self.take(job_id) {
            if let Err(err) = self.inner.write(&r).await {
                eprintln!("metadata-worker: writing {}: {err}", r.asset_id);
            }
        }
    }
}

#[async_trait::async_trait]
impl MetadataSink for InOrder {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn write(&self, result: &AssetResult) -> Result<(), SinkError> {
        if let Ok(mut pending) = self.pending.lock() {
            pending.entry(result.job_id.clone()).or_default().push(result.clone());
        }
        Ok(())
    }

    async fn job_completed(&self, done: &JobCompleted) -> Result<(), SinkError> {
        for r in self.take(&done.job_id) {
            self.inner.write(&r).await?;
        }
        self.inner.job_completed(done).await
    }

    async fn ready(&self) -> bool {
        self.inner.ready().await
    }
}

/// A relative local root names a directory next to the job file, so fixture jobs work
/// from any current directory; the current directory is the fallback.
fn resolve_local_root(job: &mut ImportJob, job_file: &Path) {
    if let Integration::Local(local) = &mut job.storage
        && local.root.is_relative()
    {
        let beside = job_file.parent().unwrap_or(Path::new(".")).join(&local.root);
        if beside.exists() {
            local.root = beside;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_root_is_found_beside_the_job_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
        std::fs::create_dir_all(dir.path().join("assets")).unwrap();
        let job_file = dir.path().join("jobs/j.json");
        let job = |root: &str| {
            ImportJob::from_slice(
                serde_json::json!({
                    "schema": "import-job/v1", "job_id": "j", "org_id": "o", "project_id": "p",
                    "created_at": "2026-01-01T00:00:00Z",
                    "storage": {"provider": "local", "root": root},
                    "assets": [{"asset_id": "a", "external_id": "e", "url": "local://x.png"}]
                })
                .to_string()
                .as_bytes(),
            )
            .unwrap()
        };
        let mut beside = job("../assets");
        resolve_local_root(&mut beside, &job_file);
        let Integration::Local(l) = &beside.storage else { panic!() };
        assert_eq!(l.root, dir.path().join("jobs/../assets"));

        let mut elsewhere = job("fixtures/assets");
        resolve_local_root(&mut elsewhere, &job_file);
        let Integration::Local(l) = &elsewhere.storage else { panic!() };
        assert_eq!(l.root, PathBuf::from("fixtures/assets"));
    }
}
