//! `metadata-worker validate-storage INTEGRATION.json`: what an operator or the platform
//! runs when an integration is created. One verdict per check (credentials, assume_role,
//! bucket, read, region, cors) with a stable code when it fails; non-zero exit on any
//! failure, so a script can gate on it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use asset_core::Integration;
use asset_storage::{OrgSecrets, Storage, StorageConfig, ValidateOptions, ValidationReport};

use crate::config::{CloudArgs, parse_allowed_endpoints};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The integration object (JSON), exactly as import jobs carry it.
    integration: PathBuf,
    /// An object to read one byte of (in the first bucket); default: the first object listed.
    #[arg(long)]
    key: Option<String>,
    /// Print `{"ok", "checks": [{"name", "ok", "code"?, "message"}]}` instead of text.
    #[arg(long)]
    json: bool,
    /// The platform's web origin, which each bucket's CORS rules must allow for GET.
    #[arg(long, env = "PLATFORM_ORIGIN")]
    origin: Option<String>,
    /// Directory of the organisations' secret files (`file:NAME` reads
    /// `SECRETS_DIR/<org_id>/NAME`).
    #[arg(long, env = "SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// Private or loopback endpoints the integration may name (see `run --help`).
    #[arg(long, env = "ALLOWED_ENDPOINTS")]
    allowed_endpoints: Option<String>,
    #[command(flatten)]
    cloud: CloudArgs,
}

pub async fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.integration)
        .with_context(|| format!("reading {}", args.integration.display()))?;
    let integration: Integration = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an integration object", args.integration.display()))?;
    let mut config = StorageConfig {
        secrets_dir: args.secrets_dir,
        org_secrets: OrgSecrets::from_env(),
        allowed_endpoints: parse_allowed_endpoints(args.allowed_endpoints.as_deref())?,
        ..StorageConfig::default()
    };
    args.cloud.apply(&mut config)?;
    let storage = Storage::new(config).await.context("starting the storage layer")?;
    let opts = ValidateOptions { key: args.key, origin: args.origin };
    let report = storage.validate_access(&integration, &opts).await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_text(report: &ValidationReport) {
    for check in &report.checks {
        let name = serde_json::to_value(check.name).ok().and_then(|v| v.as_str().map(str::to_owned));
        let name = name.unwrap_or_default();
        match &check.code {
            None => println!("ok    {name:<12} {}", check.message),
            Some(code) => println!("FAIL  {name:<12} [{code}] {}", check.message),
        }
    }
    println!(
        "{}",
        if report.ok { "storage integration is usable" } else { "storage integration is NOT usable" }
    );
}
