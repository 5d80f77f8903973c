//! `metadata-worker run`: the service. Consumes import jobs, runs each through the
//! pipeline in its own task, settles it with the broker, serves metrics, takes no new
//! job while paused (a sink down, the temp dir full), and on SIGTERM drains within
//! `SHUTDOWN_GRACE` (a second signal: at once), hands the rest back and exits 0.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use asset_queue::{Consumer, Envelope, Outcome, Settled};
use asset_sink::MetadataSink;
use asset_storage::Storage;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::pause::Pause;
use crate::pipeline::{JobReport, Pipeline};
use crate::tempdirs::Lease;
use crate::{logging, server, shutdown};
use asset_probe::isolate::ProbePool;

/// Flags of `metadata-worker run` (boxed: they are many, and live in a small enum).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    flags: Box<crate::config::RunFlags>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.flags.resolve()?;
    logging::init(cfg.log_format, "info");
    let stop = CancellationToken::new();
    let now = CancellationToken::new();
    shutdown::on_signal(stop.clone(), now.clone()).context("installing signal handlers")?;
    let pause = Pause::default();

    let metrics = Arc::new(Metrics::new());
    let temp_dir = cfg.pipeline.storage.temp_dir.clone();
    let lease = Lease::acquire(&temp_dir).with_context(|| format!("TEMP_DIR {}", temp_dir.display()))?;
    let storage = Storage::new(cfg.pipeline.storage.clone()).await.context("TEMP_DIR / storage setup")?;
    let sweeper = tokio::spawn(sweep_dead_siblings(lease, cfg.temp_sweep_interval));
    let sinks = connect_sinks(&cfg, &stop).await?;
    let Some(sinks) = sinks else { return Ok(ExitCode::SUCCESS) };
    let mut consumer = tokio::select! {
        c = Consumer::connect(cfg.queue.clone(), cfg.startup_timeout) => c.context("connecting to RabbitMQ (AMQP_URL)")?,
        _ = stop.cancelled() => return Ok(ExitCode::SUCCESS),
    };
    tracing::info!(
        broker = %cfg.queue.redacted_url(),
        sinks = ?cfg.sinks,
        concurrency = cfg.pipeline.concurrency,
        prefetch = cfg.queue.prefetch,
        max_attempts = cfg.queue.max_attempts,
        "worker started"
    );

    let server_done = CancellationToken::new();
    let server = match cfg.metrics_addr {
        Some(addr) => Some(
            server::serve(
                addr,
                server::Ops {
                    metrics: metrics.clone(),
                    broker: consumer.health(),
                    sinks: sinks.clone(),
                    pause: pause.clone(),
                    stopping: stop.clone(),
                    temp_dir: temp_dir.clone(),
                },
                server_done.clone(),
            )
            .await?,
        ),
        None => None,
    };

    let sink: Arc<dyn MetadataSink> = Arc::new(sinks);
    let pipeline = Arc::new(
        Pipeline::new(
            storage,
            ProbePool::new(cfg.pipeline.prober.clone()),
            sink,
            cfg.pipeline.limits.clone(),
            cfg.pipeline.concurrency,
            metrics.clone(),
            stop.clone(),
        )
        .with_fetch(cfg.pipeline.fetch)
        .with_pause(pause.clone(), cfg.sink_wait),
    );

    // Prefetch bounds how many envelopes exist, hence how many job tasks.
    let mut jobs = JoinSet::new();
    loop {
        if pause.is_paused() {
            // Deliveries already prefetched stay with us, unacked, until it is lifted.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                _ = pause.resumed() => {}
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            _ = pause.paused() => {}
            envelope = consumer.next() => {
                jobs.spawn(handle(envelope, pipeline.clone(), metrics.clone(), cfg.allow_local_storage));
            }
        }
    }

    // Shutdown: receive nothing more, let started assets finish, hand back the rest.
    let requeued = consumer.stop().await;
    tracing::info!(
        jobs_in_flight = jobs.len(),
        prefetched_requeued = requeued,
        grace_ms = cfg.shutdown_grace.as_millis() as u64,
        "draining"
    );
    let drained = tokio::select! {
        drained = tokio::time::timeout(cfg.shutdown_grace, async { while jobs.join_next().await.is_some() {} }) => drained.is_ok(),
        _ = now.cancelled() => false,
    };
    if !drained {
        tracing::warn!(jobs_in_flight = jobs.len(), "unfinished jobs go back to the queue");
        jobs.abort_all();
        while jobs.join_next().await.is_some() {}
    }
    // Unacked deliveries (aborted jobs) return to the queue when the connection closes.
    consumer.close().await;
    match shutdown::empty_dir(&temp_dir) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(files = n, "removed temp files left by aborted assets"),
        Err(err) => tracing::error!(error = %err, "emptying TEMP_DIR failed"),
    }
    server_done.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    sweeper.abort();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Every `interval`, removes the downloads of dead replicas sharing the temp volume.
async fn sweep_dead_siblings(lease: Lease, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        match lease.sweep_dead_siblings() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(files = n, "removed downloads left by dead replicas"),
            Err(err) => tracing::warn!(error = %err, "sweeping the temp volume failed"),
        }
    }
}

/// Connects the sinks, retrying transient failures until `STARTUP_TIMEOUT` (databases
/// start slower than workers). `None` when a signal arrived meanwhile.
async fn connect_sinks(
    cfg: &crate::config::RunConfig,
    stop: &CancellationToken,
) -> anyhow::Result<Option<asset_sink::FanOut>> {
    let deadline = tokio::time::Instant::now() + cfg.startup_timeout;
    let mut attempt = 0;
    loop {
        match asset_sink::connect_all(&cfg.sinks, &cfg.sink_settings).await {
            Ok(sinks) => return Ok(Some(sinks)),
            Err(err) if err.is_retryable() && tokio::time::Instant::now() < deadline => {
                attempt += 1;
                let delay = cfg.queue.reconnect_backoff.delay(attempt);
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "sinks not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Ok(None),
                }
            }
            Err(err) => return Err(err).context("connecting the sinks (SINKS, DATABASE_URL, AMQP_URL)"),
        }
    }
}

/// One delivery, start to settlement. The job itself runs in a task of its own so
/// that a panic anywhere in it is an outcome here, never a dead worker.
async fn handle(envelope: Envelope, pipeline: Arc<Pipeline>, metrics: Arc<Metrics>, allow_local: bool) {
    let job_id = envelope.job_id.clone().unwrap_or_default();
    let span = tracing::info_span!("job", job_id = %job_id, attempt = envelope.attempt);
    async move {
        let started = Instant::now();
        metrics.jobs_in_flight.inc();
        let outcome = match &envelope.job {
            Err(err) => {
                tracing::warn!(error = %err, "not a job we can run; dead-lettering it");
                Outcome::for_job_error(err)
            }
            Ok(job) if !allow_local && matches!(job.storage, asset_core::Integration::Local(_)) => {
                tracing::warn!("job names local storage, which this worker refuses; dead-lettering it");
                Outcome::Reject {
                    reason: "storage provider \"local\" is disabled in this worker (ALLOW_LOCAL_STORAGE)".into(),
                    code: asset_core::ErrorCode::InvalidIntegration,
                }
            }
            Ok(job) => {
                tracing::info!(assets = job.assets.len(), redelivered = envelope.redelivered, "job received");
                let job = Arc::clone(job);
                let earlier = envelope.progress.clone();
                let task = AbortOnDrop(tokio::spawn({
                    let pipeline = pipeline.clone();
                    async move { pipeline.run_job(job, &earlier).await }.in_current_span()
                }));
                match task.join().await {
                    Ok(report) => {
                        match &report {
                            JobReport::Completed(done) => {
                                tracing::info!(assets_ok = done.assets_ok, assets_failed = done.assets_failed, "job completed");
                            }
                            JobReport::Requeue { reason, code } => {
                                tracing::warn!(%code, reason = %reason, "handing the job back to the queue");
                            }
                            _ => {}
                        }
                        report.outcome()
                    }
                    Err(join) => {
                        tracing::error!(panicked = join.is_panic(), "the job's task died; retrying the job");
                        Outcome::retry("the job's task died", asset_core::ErrorCode::Internal)
                    }
                }
            }
        };
        let label = match envelope.settle(outcome.clone()).await {
            Ok(Settled::Acked) => "completed",
            Ok(Settled::Retried { next_attempt, delay }) => {
                metrics.retries.inc();
                tracing::warn!(next_attempt, delay_ms = delay.as_millis() as u64, reason = ?outcome, "job will be retried");
                "retried"
            }
            Ok(Settled::DeadLettered { exhausted }) => {
                metrics.dead_letter(if exhausted { "exhausted" } else { "rejected" });
                tracing::warn!(exhausted, reason = ?outcome, "job dead-lettered");
                "dead_lettered"
            }
            Ok(Settled::Requeued) => "requeued",
            Err(err) => {
                // The message stays unacked or was nacked: the broker redelivers it.
                tracing::warn!(error = %err, "settling the job failed; the broker will redeliver it");
                "settle_failed"
            }
        };
        metrics.job(label);
        metrics.job_seconds.observe(started.elapsed().as_secs_f64());
        metrics.jobs_in_flight.dec();
    }
    .instrument(span)
    .await
}

/// A spawned task that is aborted when its handle is dropped, so aborting the outer
/// job task at the end of the grace period also stops the job it awaits.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
