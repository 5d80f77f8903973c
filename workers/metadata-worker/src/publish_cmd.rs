//! `metadata-worker publish JOB.json...`: puts job files on the broker's import
//! exchange, each one checked against import-job/v1 first and confirmed by the broker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use asset_queue::Publisher;
use asset_schemas::ImportJob;

use crate::config::BrokerArgs;

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Import job files (import-job/v1 JSON). Nothing is published unless all are valid.
    #[arg(required = true, value_name = "JOB.json")]
    jobs: Vec<PathBuf>,

    #[command(flatten)]
    broker: BrokerArgs,

    /// Publish each job this many times (load tests); job ids are unchanged.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
}

pub async fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.broker.resolve()?;
    let mut bodies = Vec::new();
    for path in &args.jobs {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let job = ImportJob::from_slice(&bytes).with_context(|| format!("{}", path.display()))?;
        bodies.push((job, bytes));
    }
    let publisher = Publisher::connect(&cfg).await.context("connecting to RabbitMQ (AMQP_URL)")?;
    for _ in 0..args.repeat {
        for (job, bytes) in &bodies {
            let props = lapin_props(&job.job_id);
            publisher
                .publish_raw(bytes, props)
                .await
                .with_context(|| format!("publishing job {}", job.job_id))?;
            eprintln!("published {} ({} assets) to {}", job.job_id, job.assets.len(), cfg.topology.exchange);
        }
    }
    publisher.close().await;
    Ok(ExitCode::SUCCESS)
}

fn lapin_props(job_id: &str) -> asset_queue::MessageProperties {
    asset_queue::MessageProperties::default().with_message_id(job_id.into())
}
