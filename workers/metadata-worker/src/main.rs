//! The `metadata-worker` binary: one subcommand per way of running the pipeline.
//! Flags are parsed here, validated into resolved configs, and handed to the crates.

mod config;
mod logging;
mod metrics;
mod pause;
mod pipeline;
mod probe_cmd;
mod publish_cmd;
mod replay_cmd;
mod run_cmd;
mod server;
mod shutdown;
mod tempdirs;
mod validate_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "metadata-worker", version, about = "Extracts display metadata from labeling assets.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe local files and print one JSON object per file, in input order.
    Probe(probe_cmd::ProbeArgs),
    /// Consume import jobs from RabbitMQ and write their metadata (the service).
    Run(run_cmd::RunArgs),
    /// Run job files through the pipeline without a broker; results to stdout.
    Replay(replay_cmd::ReplayArgs),
    /// Publish job files to the broker's import exchange.
    Publish(publish_cmd::PublishArgs),
    /// Check that a storage integration grants what the worker needs.
    ValidateStorage(validate_cmd::ValidateArgs),
    /// A probe process: answers probe requests (JSON lines) on stdin under its own
    /// resource limits. Started by the worker itself, never by hand.
    #[command(hide = true)]
    ProbeServer(ProbeServerArgs),
}

#[derive(Debug, clap::Args)]
struct ProbeServerArgs {
    /// RLIMIT_DATA of this process, in bytes.
    #[arg(long)]
    memory_ceiling: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe(args) => probe_cmd::run(args),
        Command::Run(args) => block_on(run_cmd::run(args)),
        Command::Replay(args) => block_on(replay_cmd::run(args)),
        Command::Publish(args) => block_on(publish_cmd::run(args)),
        Command::ValidateStorage(args) => block_on(validate_cmd::run(args)),
        Command::ProbeServer(args) => asset_probe::isolate::serve(args.memory_ceiling)
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("metadata-worker: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(fut: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(fut)
}
