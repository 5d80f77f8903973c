//! Flags with environment fallbacks, validated once at start into resolved configs:
//! a bad setting fails fast with a message naming the flag and the variable, and
//! nothing downstream re-checks or re-reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use asset_core::Limits;
use asset_probe::FetchPolicy;
use asset_probe::isolate::PoolConfig;
use asset_queue::{Backoff, BrokerUrls, JobLimits, QueueConfig, QueueType, Topology};
use asset_sink::{SinkKind, SinkSettings};
use asset_storage::{AllowedEndpoints, AppCredential, AzureSettings, OrgSecrets, Secret, StorageConfig};

use asset_fetch::FetchMode;

/// What every way of running the pipeline shares (`run` and `replay`).
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// Assets processed at once by this process, across all its jobs (1–1024).
    #[arg(long, env = "CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,

    /// Directory for downloads while they are probed. Private to this process: it is
    /// created 0700 and emptied at start and at shutdown, so give each replica its own.
    #[arg(long, env = "TEMP_DIR")]
    pub temp_dir: Option<PathBuf>,

    /// Largest asset downloaded and probed, in bytes; larger ones get `too_large`.
    #[arg(long, env = "MAX_ASSET_BYTES", default_value_t = 5 * 1024 * 1024 * 1024)]
    pub max_asset_bytes: u64,

    /// Time budget for probing one asset (every round of a ranged read together), e.g.
    /// `2s`, `500ms`; the probe process is killed when it runs out.
    #[arg(long, env = "PROBE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub probe_timeout: Duration,

    /// Probe processes this replica runs at most (parsers run there, each under its own
    /// memory limit and deadline); default: the number of CPUs, at least 2.
    #[arg(long, env = "PROBE_PROCESSES")]
    pub probe_processes: Option<usize>,

    /// Memory a probe process may use besides the bytes a parser holds of the file
    /// (at most 32 MiB more), in bytes; over it, the asset gets `too_large`.
    #[arg(long, env = "PROBE_MEMORY_LIMIT", default_value_t = asset_probe::isolate::DEFAULT_MEMORY_CEILING)]
    pub probe_memory_limit: u64,

    /// Directory of the organisations' secret files: `secret_ref = "file:NAME"` reads
    /// `SECRETS_DIR/<org_id>/NAME` and nothing else; unset refuses every `file:`
    /// reference. (`env:NAME` reads only the variable `ORG_SECRET_<ORG>__<NAME>`.)
    #[arg(long, env = "SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Private or loopback storage jobs may name, e.g. an on-premises MinIO: a comma
    /// list of CIDRs, addresses and host names (`*.name` for subdomains), each with an
    /// optional `:port` (`10.0.0.0/8,minio.corp:9000,[fd00::5]:9000`). Every other
    /// non-public address is refused with `endpoint_not_allowed`; the AWS_ENDPOINT_URL*
    /// hosts are admitted anyway.
    #[arg(long, env = "ALLOWED_ENDPOINTS")]
    pub allowed_endpoints: Option<String>,

    /// How assets are downloaded: `ranged` reads only the byte ranges the probe needs
    /// (a prefix, then what the format asks for; the whole object only for formats read
    /// to the end, or when the storage cannot serve ranges), `full` the whole object.
    #[arg(long, env = "FETCH_MODE", value_enum, default_value_t = FetchModeArg::Ranged)]
    pub fetch: FetchModeArg,

    /// Size of the first ranged read in bytes (at least 4096); later reads are never
    /// smaller than the lesser of this and 64 KiB.
    #[arg(long, env = "FIRST_FETCH_BYTES", default_value_t = asset_probe::FetchPolicy::default().first)]
    pub first_fetch_bytes: u64,

    #[command(flatten)]
    pub cloud: CloudArgs,
}

/// The worker's own cloud identities and trust, never taken from a job: the platform's
/// The clouds' platform settings: the GCS org binding and signBlob endpoint, the Entra
/// application (Azure `iam_delegated` access), extra CA certificates.
#[derive(Debug, Clone, clap::Args)]
pub struct CloudArgs {
    /// The platform's multi-tenant Entra application (client id) that customers consent
    /// to for Azure `iam_delegated` access.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,

    /// That application's client secret (or use AZURE_FEDERATED_TOKEN_FILE). Never logged.
    #[arg(long, env = "AZURE_CLIENT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub azure_client_secret: Option<Secret>,

    /// A federated token (workload identity) for that application, read at each token
    /// request, sent as its client assertion.
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE")]
    pub azure_federated_token_file: Option<PathBuf>,

    /// Where each organisation's list of consented Entra tenants is, as a secret
    /// reference resolved in that organisation's secrets (`file:azure-tenants` reads
    /// SECRETS_DIR/<org_id>/azure-tenants). Unset: Azure `iam_delegated` is refused.
    #[arg(long, env = "AZURE_TENANT_BINDING")]
    pub azure_tenant_binding: Option<String>,

    /// Base URL of the Microsoft Entra token endpoint (sovereign clouds, tests).
    #[arg(long, env = "AZURE_AUTHORITY_HOST", default_value = asset_storage::DEFAULT_AUTHORITY_HOST)]
    pub azure_authority_host: String,

    /// PEM file of CA certificates trusted for storage connections besides the public
    /// roots (on-premises storage with a private CA).
    #[arg(long, env = "STORAGE_CA_FILE")]
    pub storage_ca_file: Option<PathBuf>,

    /// What a GCS `iam_delegated` service account's name must contain (`{org}`: the org
    /// id, `{org_hash}`: the first 10 hex digits of its SHA-256). Unset: every keyless
    /// GCS integration is refused. The worker's own Google identity comes from the
    /// standard chain (GOOGLE_APPLICATION_CREDENTIALS, else the metadata server).
    #[arg(long, env = "GCS_SERVICE_ACCOUNT_ORG_TOKEN")]
    pub gcs_service_account_org_token: Option<String>,

    /// Base URL of Google's IAM Credentials API (`signBlob`; tests, private endpoints).
    #[arg(long, env = "GCS_IAM_ENDPOINT", default_value = "https://iamcredentials.googleapis.com")]
    pub gcs_iam_endpoint: String,
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

impl CloudArgs {
    /// Applies these settings to a storage configuration, failing on a bad one.
    pub fn apply(&self, storage: &mut StorageConfig) -> anyhow::Result<()> {
        let host = &self.azure_authority_host;
        let rest = host.strip_prefix("https://").or_else(|| host.strip_prefix("http://"));
        if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(['?', '#', '@', ' '])) {
            bail!(
                "AZURE_AUTHORITY_HOST (--azure-authority-host) must be an http(s) URL without query or user info"
            );
        }
        let credential = match (&self.azure_client_secret, &self.azure_federated_token_file) {
            (Some(_), Some(_)) => bail!(
                "AZURE_CLIENT_SECRET and AZURE_FEDERATED_TOKEN_FILE are exclusive: give the Azure application one \
                 credential"
            ),
            (Some(s), None) if s.expose().trim().is_empty() => {
                bail!("AZURE_CLIENT_SECRET (--azure-client-secret) is empty")
            }
            (Some(s), None) => Some(AppCredential::Secret(s.clone())),
            (None, Some(f)) => Some(AppCredential::FederatedTokenFile(f.clone())),
            (None, None) => None,
        };
        let client_id = self.azure_client_id.clone().filter(|c| !c.trim().is_empty());
        if credential.is_some() != client_id.is_some() {
            bail!(
                "AZURE_CLIENT_ID (--azure-client-id) goes with AZURE_CLIENT_SECRET or AZURE_FEDERATED_TOKEN_FILE"
            );
        }
        // GOOGLE_APPLICATION_CREDENTIALS and GCE_METADATA_HOST: Google's standard chain,
        // read as its libraries do; the rest are this worker's settings.
        storage.gcs = asset_storage::GcsSettings {
            iam_endpoint: self.gcs_iam_endpoint.clone(),
            service_account_org_token: self.gcs_service_account_org_token.clone().filter(|t| !t.is_empty()),
            ..asset_storage::GcsSettings::from_env()
        };
        storage.azure = AzureSettings {
            authority_host: self.azure_authority_host.trim_end_matches('/').to_owned(),
            client_id,
            credential,
            tenant_binding: self.azure_tenant_binding.clone().filter(|b| !b.trim().is_empty()),
        };
        if let Some(path) = &self.storage_ca_file {
            let pem = std::fs::read(path).with_context(|| {
                format!("STORAGE_CA_FILE (--storage-ca-file): reading {}", path.display())
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                bail!("STORAGE_CA_FILE (--storage-ca-file) {} holds no PEM certificate", path.display());
            }
            storage.ca_certificates = vec![pem];
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FetchModeArg {
    Ranged,
    Full,
}

/// The resolved pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub concurrency: usize,
    pub fetch: FetchMode,
    pub limits: Limits,
    pub storage: StorageConfig,
    /// How probe processes are started (this executable's hidden `probe-server`).
    pub prober: PoolConfig,
}

impl PipelineArgs {
    pub fn resolve(&self) -> anyhow::Result<PipelineConfig> {
        if !(1..=1024).contains(&self.concurrency) {
            bail!("CONCURRENCY (--concurrency) must be between 1 and 1024, got {}", self.concurrency);
        }
        if self.max_asset_bytes == 0 {
            bail!("MAX_ASSET_BYTES (--max-asset-bytes) must be positive");
        }
        if self.probe_timeout.is_zero() {
            bail!("PROBE_TIMEOUT (--probe-timeout) must be positive");
        }
        let processes = match self.probe_processes {
            Some(0) => bail!("PROBE_PROCESSES (--probe-processes) must be at least 1"),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(2, |n| n.get()).max(2),
        };
        if self.probe_memory_limit < 16 * 1024 * 1024 {
            bail!("PROBE_MEMORY_LIMIT (--probe-memory-limit) must be at least 16 MiB (16777216)");
        }
        let temp_dir = match &self.temp_dir {
            Some(dir) if dir.as_os_str().is_empty() => bail!("TEMP_DIR (--temp-dir) is empty"),
            Some(dir) => dir.clone(),
            None => StorageConfig::default().temp_dir,
        };
        if temp_dir.exists() && !temp_dir.is_dir() {
            bail!("TEMP_DIR (--temp-dir) {} exists and is not a directory", temp_dir.display());
        }
        let limits = Limits {
            max_file_bytes: self.max_asset_bytes,
            max_millis: u64::try_from(self.probe_timeout.as_millis()).unwrap_or(u64::MAX),
            ..Limits::default()
        };
        let mut storage = StorageConfig {
            temp_dir,
            max_asset_bytes: self.max_asset_bytes,
            secrets_dir: self.secrets_dir.clone(),
            org_secrets: OrgSecrets::from_env(),
            allowed_endpoints: parse_allowed_endpoints(self.allowed_endpoints.as_deref())?,
            ..StorageConfig::default()
        };
        self.cloud.apply(&mut storage)?;
        if self.first_fetch_bytes < 4096 {
            bail!(
                "FIRST_FETCH_BYTES (--first-fetch-bytes) must be at least 4096, got {}",
                self.first_fetch_bytes
            );
        }
        let fetch = match self.fetch {
            FetchModeArg::Full => FetchMode::Full,
            FetchModeArg::Ranged => {
                let first = self.first_fetch_bytes;
                let min = first.min(FetchPolicy::default().min);
                FetchMode::Ranged(FetchPolicy { first, min, ..FetchPolicy::default() })
            }
        };
        let memory = self.probe_memory_limit.saturating_add(limits.max_memory_bytes);
        let prober = prober_config(processes, memory)?;
        Ok(PipelineConfig { concurrency: self.concurrency, fetch, limits, storage, prober })
    }
}

/// Probe processes are this executable again, with the hidden `probe-server` command.
pub fn prober_config(processes: usize, memory_ceiling: u64) -> anyhow::Result<PoolConfig> {
    let program = std::env::current_exe().context("locating this executable for the probe processes")?;
    Ok(PoolConfig {
        program,
        args: vec!["probe-server".into(), "--memory-ceiling".into(), memory_ceiling.to_string().into()],
        processes,
    })
}

/// `ALLOWED_ENDPOINTS`, parsed at start so that a typo fails fast.
pub fn parse_allowed_endpoints(raw: Option<&str>) -> anyhow::Result<AllowedEndpoints> {
    match raw {
        None => Ok(AllowedEndpoints::default()),
        Some(list) => {
            list.parse().map_err(|why| anyhow::anyhow!("ALLOWED_ENDPOINTS (--allowed-endpoints): {why}"))
        }
    }
}

/// Where the broker objects are; shared by `run` and `publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// RabbitMQ URL, `amqp://user:password@host:5672/vhost`, or a comma list of them
    /// (the nodes of a cluster, tried in order). Never logged.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// The broker's addresses as a comma list, instead of AMQP_URL (set one of the two).
    #[arg(long, env = "AMQP_URLS", hide_env_values = true)]
    pub amqp_urls: Option<String>,

    /// Topic exchange import jobs are published to.
    #[arg(long, env = "JOBS_EXCHANGE", default_value = "asset-import")]
    pub jobs_exchange: String,

    /// Routing key of import jobs.
    #[arg(long, env = "JOBS_ROUTING_KEY", default_value = "job.v1")]
    pub jobs_routing_key: String,

    /// Durable quorum queue the workers consume.
    #[arg(long, env = "JOBS_QUEUE", default_value = "asset-import.jobs")]
    pub jobs_queue: String,

    /// Delay queue retried jobs wait in before returning to the jobs queue.
    #[arg(long, env = "RETRY_QUEUE", default_value = "asset-import.retry")]
    pub retry_queue: String,

    /// Queue of jobs that will never succeed, each with an `x-reason` header.
    #[arg(long, env = "DEAD_LETTER_QUEUE", default_value = "asset-import.dlq")]
    pub dead_letter_queue: String,

    /// Deliveries of one message (crashes and requeues included) after which the
    /// broker dead-letters it by itself; guards against a job that kills every worker.
    #[arg(long, env = "DELIVERY_LIMIT", default_value_t = 20)]
    pub delivery_limit: u32,

    /// Type of the retry queue: `classic` (what existing deployments have; RabbitMQ
    /// refuses to change a queue's type) or `quorum` (for a cluster).
    #[arg(long, env = "RETRY_QUEUE_TYPE", default_value = "classic")]
    pub retry_queue_type: String,
}

impl BrokerArgs {
    /// The broker's addresses as given (`AMQP_URL` or `AMQP_URLS`), with the setting's
    /// name for errors. A secret.
    pub fn url_list(&self) -> anyhow::Result<(&'static str, String)> {
        let given = |v: &Option<String>| v.clone().filter(|u| !u.trim().is_empty());
        match (given(&self.amqp_url), given(&self.amqp_urls)) {
            (Some(_), Some(_)) => {
                bail!("AMQP_URL (--amqp-url) and AMQP_URLS (--amqp-urls) are both set; set one")
            }
            (Some(list), None) => Ok(("AMQP_URL (--amqp-url)", list)),
            (None, Some(list)) => Ok(("AMQP_URLS (--amqp-urls)", list)),
            (None, None) => bail!("AMQP_URL (--amqp-url) or AMQP_URLS (--amqp-urls) is required"),
        }
    }

    /// The broker settings with everything checked but the connection itself.
    pub fn resolve(&self) -> anyhow::Result<QueueConfig> {
        let (setting, list) = self.url_list()?;
        let urls = BrokerUrls::parse(&list).map_err(|e| anyhow::anyhow!("{setting}: {e}"))?;
        let retry_queue_type: QueueType = self
            .retry_queue_type
            .parse()
            .map_err(|e| anyhow::anyhow!("RETRY_QUEUE_TYPE (--retry-queue-type): {e}"))?;
        for (name, flag, value) in [
            ("JOBS_EXCHANGE", "--jobs-exchange", &self.jobs_exchange),
            ("JOBS_ROUTING_KEY", "--jobs-routing-key", &self.jobs_routing_key),
            ("JOBS_QUEUE", "--jobs-queue", &self.jobs_queue),
            ("RETRY_QUEUE", "--retry-queue", &self.retry_queue),
            ("DEAD_LETTER_QUEUE", "--dead-letter-queue", &self.dead_letter_queue),
        ] {
            if value.trim().is_empty() || value.len() > 255 {
                bail!("{name} ({flag}) must be 1 to 255 characters");
            }
        }
        let queues = [&self.jobs_queue, &self.retry_queue, &self.dead_letter_queue];
        if queues[0] == queues[1] || queues[0] == queues[2] || queues[1] == queues[2] {
            bail!("JOBS_QUEUE, RETRY_QUEUE and DEAD_LETTER_QUEUE must be three different queues");
        }
        if self.delivery_limit == 0 {
            bail!("DELIVERY_LIMIT (--delivery-limit) must be positive");
        }
        let mut cfg = QueueConfig::new(urls);
        cfg.topology = Topology {
            exchange: self.jobs_exchange.clone(),
            routing_key: self.jobs_routing_key.clone(),
            jobs_queue: self.jobs_queue.clone(),
            retry_queue: self.retry_queue.clone(),
            dead_letter_queue: self.dead_letter_queue.clone(),
            delivery_limit: self.delivery_limit,
            retry_queue_type,
        };
        Ok(cfg)
    }
}

/// Flags of `metadata-worker run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunFlags {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    #[command(flatten)]
    pub broker: BrokerArgs,

    /// Where results go: a comma list of `postgres`, `amqp`, `jsonl`.
    #[arg(long, env = "SINKS", default_value = "postgres")]
    pub sinks: String,

    /// PostgreSQL URL for the `postgres` sink. Never logged.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Exchange the `amqp` sink publishes results and job completions to.
    #[arg(long, env = "RESULTS_EXCHANGE", default_value = asset_sink::DEFAULT_RESULTS_EXCHANGE)]
    pub results_exchange: String,

    /// File the `jsonl` sink appends to; stdout when unset.
    #[arg(long, env = "JSONL_PATH")]
    pub jsonl_path: Option<PathBuf>,

    /// Jobs the broker hands this replica before it acks (basic.qos); defaults to
    /// CONCURRENCY so no job waits in a replica while another one is idle, within the
    /// memory held for messages (PREFETCH × MAX_JOB_BYTES ≤ 16 MiB).
    #[arg(long, env = "PREFETCH")]
    pub prefetch: Option<u16>,

    /// Largest job message accepted, in bytes; a larger one is dead-lettered from its
    /// size alone, before any parsing.
    #[arg(long, env = "MAX_JOB_BYTES", default_value_t = JobLimits::default().max_bytes)]
    pub max_job_bytes: usize,

    /// Most assets one job may carry (at most 10000, the schema's limit).
    #[arg(long, env = "MAX_ASSETS_PER_JOB", default_value_t = asset_schemas::MAX_ASSETS_PER_JOB)]
    pub max_assets_per_job: usize,

    /// PostgreSQL statement timeout: a write blocked longer (on a lock, a stuck server)
    /// fails, and the sink reports not ready.
    #[arg(long, env = "STATEMENT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub statement_timeout: Duration,

    /// How often the downloads of dead replicas sharing TEMP_DIR's parent volume are
    /// removed (each replica locks its own TEMP_DIR while it runs).
    #[arg(long, env = "TEMP_SWEEP_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub temp_sweep_interval: Duration,

    /// Longest a result waits for an unavailable sink (the replica paused meanwhile)
    /// before its job goes back to the queue; keep it under the broker's consumer
    /// timeout (30 minutes by default).
    #[arg(long, env = "SINK_WAIT_MAX", default_value = "20m", value_parser = parse_duration)]
    pub sink_wait_max: Duration,

    /// Attempts a job gets for transient faults before it is dead-lettered.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,

    /// Delay before the first retry; doubles per attempt, with jitter.
    #[arg(long, env = "RETRY_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub retry_delay: Duration,

    /// Longest delay between retries.
    #[arg(long, env = "RETRY_MAX_DELAY", default_value = "5m", value_parser = parse_duration)]
    pub retry_max_delay: Duration,

    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`; `off` for none.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: String,

    /// How long in-flight assets may take to finish after SIGTERM or SIGINT before the
    /// rest of their jobs is handed back to the queue.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How long to keep trying to reach the broker and sinks at start.
    #[arg(long, env = "STARTUP_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub startup_timeout: Duration,

    /// Log format on stderr: `json` (one object per line) or `text`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    /// Accept jobs whose storage is `{"provider": "local", "root": DIR}`. Off by default:
    /// a job from the broker must not read the worker's own disk. For development and
    /// tests only.
    #[arg(long, env = "ALLOW_LOCAL_STORAGE", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_local_storage: bool,
}

/// The resolved configuration of `run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub pipeline: PipelineConfig,
    pub queue: QueueConfig,
    pub sinks: Vec<SinkKind>,
    pub sink_settings: SinkSettings,
    pub metrics_addr: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    pub startup_timeout: Duration,
    pub log_format: LogFormat,
    pub allow_local_storage: bool,
    pub sink_wait: Duration,
    pub temp_sweep_interval: Duration,
}

/// Memory a replica may hold in job messages at once: PREFETCH × MAX_JOB_BYTES. A job
/// costs about twice its size while in flight (its body until parsed, then the parsed
/// assets), so this keeps a replica under 100 MiB whatever the messages hold
/// (`scripts/bench-memory.sh`).
pub const MESSAGE_MEMORY_BUDGET: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    pub fn parse(s: &str) -> anyhow::Result<LogFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => bail!("LOG_FORMAT (--log-format) must be json or text, got {other:?}"),
        }
    }
}

impl RunFlags {
    pub fn resolve(&self) -> anyhow::Result<RunConfig> {
        let pipeline = self.pipeline.resolve()?;
        let mut queue = self.broker.resolve()?;
        let sinks = asset_sink::parse_sinks(&self.sinks).context("SINKS (--sinks)")?;
        let database_url = self.database_url.clone().filter(|u| !u.trim().is_empty());
        if sinks.contains(&SinkKind::Postgres) && database_url.is_none() {
            bail!("DATABASE_URL (--database-url) is required by the postgres sink named in SINKS");
        }
        if self.max_job_bytes < 1024 {
            bail!("MAX_JOB_BYTES (--max-job-bytes) must be at least 1024, got {}", self.max_job_bytes);
        }
        if !(1..=asset_schemas::MAX_ASSETS_PER_JOB).contains(&self.max_assets_per_job) {
            bail!(
                "MAX_ASSETS_PER_JOB (--max-assets-per-job) must be between 1 and {}, got {}",
                asset_schemas::MAX_ASSETS_PER_JOB,
                self.max_assets_per_job
            );
        }
        let most_in_memory = (MESSAGE_MEMORY_BUDGET / self.max_job_bytes).max(1);
        let prefetch = match self.prefetch {
            Some(0) => bail!("PREFETCH (--prefetch) must be at least 1"),
            Some(p) if usize::from(p) > most_in_memory => bail!(
                "PREFETCH (--prefetch) {p} × MAX_JOB_BYTES {} exceeds the {} MiB a replica holds in messages; \
                 lower one of them",
                self.max_job_bytes,
                MESSAGE_MEMORY_BUDGET >> 20
            ),
            Some(p) => p,
            None => u16::try_from(pipeline.concurrency.min(most_in_memory)).unwrap_or(u16::MAX),
        };
        if self.statement_timeout.is_zero() {
            bail!("STATEMENT_TIMEOUT (--statement-timeout) must be positive");
        }
        if self.temp_sweep_interval.is_zero() {
            bail!("TEMP_SWEEP_INTERVAL (--temp-sweep-interval) must be positive");
        }
        if self.sink_wait_max.is_zero() {
            bail!("SINK_WAIT_MAX (--sink-wait-max) must be positive");
        }
        if self.max_attempts == 0 {
            bail!("MAX_ATTEMPTS (--max-attempts) must be at least 1");
        }
        if self.retry_delay.is_zero() {
            bail!("RETRY_DELAY (--retry-delay) must be positive");
        }
        if self.retry_max_delay < self.retry_delay {
            bail!("RETRY_MAX_DELAY (--retry-max-delay) must not be shorter than RETRY_DELAY");
        }
        let metrics_addr = match self.metrics_addr.trim() {
            "off" | "" => None,
            addr => Some(addr.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "METRICS_ADDR (--metrics-addr) must be host:port like 0.0.0.0:9090 or off, got {addr:?}"
                )
            })?),
        };
        queue.prefetch = prefetch;
        queue.max_attempts = self.max_attempts;
        queue.job_limits = JobLimits { max_bytes: self.max_job_bytes, max_assets: self.max_assets_per_job };
        queue.retry_backoff = Backoff { base: self.retry_delay, max: self.retry_max_delay };
        let sink_settings = SinkSettings {
            database_url,
            // The same addresses as the consumer's (checked by `BrokerArgs::resolve`).
            amqp_url: Some(self.broker.url_list()?.1),
            results_exchange: Some(self.results_exchange.clone()),
            jsonl_path: self.jsonl_path.clone(),
            statement_timeout: Some(self.statement_timeout),
        };
        Ok(RunConfig {
            pipeline,
            queue,
            sinks,
            sink_settings,
            metrics_addr,
            shutdown_grace: self.shutdown_grace,
            startup_timeout: self.startup_timeout,
            log_format: LogFormat::parse(&self.log_format)?,
            allow_local_storage: self.allow_local_storage,
            sink_wait: self.sink_wait_max,
            temp_sweep_interval: self.temp_sweep_interval,
        })
    }
}

/// `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 250ms, 30s, 5m or 1h"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?} is not a duration like 250ms, 30s, 5m or 1h")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunFlags,
    }

    /// Parses flags only; variables that the test machine happens to have set would
    /// otherwise decide the outcome, so every setting a test relies on is a flag.
    fn resolve(args: &[&str]) -> anyhow::Result<RunConfig> {
        let mut argv = vec!["mw"];
        argv.extend_from_slice(args);
        if !args.contains(&"--amqp-url") {
            argv.extend(["--amqp-url", "amqp://guest:guest@127.0.0.1:5672/%2f"]);
        }
        if !args.contains(&"--database-url") {
            argv.extend(["--database-url", "postgres://postgres@127.0.0.1/test"]);
        }
        Cli::try_parse_from(argv)?.run.resolve()
    }

    fn err(args: &[&str]) -> String {
        format!("{:#}", resolve(args).expect_err("should be refused"))
    }

    #[test]
    fn defaults_resolve_and_prefetch_follows_concurrency() {
        let c = resolve(&["--concurrency", "7", "--sinks", "postgres,jsonl"]).unwrap();
        assert_eq!(c.pipeline.concurrency, 7);
        // 4 jobs of MAX_JOB_BYTES (4 MiB) fill the 16 MiB held in messages.
        assert_eq!(c.queue.prefetch, 4);
        let small = resolve(&["--concurrency", "7", "--max-job-bytes", "1048576"]).unwrap();
        assert_eq!(small.queue.prefetch, 7);
        assert_eq!(small.queue.job_limits.max_bytes, 1_048_576);
        let e = err(&["--prefetch", "8"]);
        assert!(e.contains("PREFETCH") && e.contains("MAX_JOB_BYTES"), "{e}");
        assert_eq!(c.sinks, vec![SinkKind::Postgres, SinkKind::Jsonl]);
        assert_eq!(c.queue.topology, Topology::default());
        assert!(!c.allow_local_storage, "a broker job may not read the worker's disk by default");
        let c =
            resolve(&["--prefetch", "2", "--metrics-addr", "off", "--allow-local-storage", "true"]).unwrap();
        assert_eq!(c.queue.prefetch, 2);
        assert_eq!(c.metrics_addr, None);
        assert!(c.allow_local_storage);
    }

    #[test]
    fn each_bad_setting_is_named_in_its_error() {
        assert!(err(&["--concurrency", "0"]).contains("CONCURRENCY"));
        assert!(err(&["--prefetch", "0"]).contains("PREFETCH"));
        assert!(err(&["--max-attempts", "0"]).contains("MAX_ATTEMPTS"));
        assert!(err(&["--sinks", "postgres,kafka"]).contains("SINKS"));
        assert!(err(&["--metrics-addr", "localhost"]).contains("METRICS_ADDR"));
        assert!(err(&["--amqp-url", "http://x"]).contains("AMQP_URL"));
        assert!(err(&["--jobs-queue", "q", "--retry-queue", "q"]).contains("RETRY_QUEUE"));
        assert!(err(&["--retry-delay", "10s", "--retry-max-delay", "1s"]).contains("RETRY_MAX_DELAY"));
        assert!(err(&["--log-format", "xml"]).contains("LOG_FORMAT"));
        assert!(err(&["--database-url", ""]).contains("DATABASE_URL"));
    }

    #[test]
    fn secrets_are_not_in_errors_or_debug_output() {
        let e = err(&["--amqp-url", "amqp://u:hunter2@", "--concurrency", "5000"]);
        assert!(!e.contains("hunter2"), "{e}");
        let c = resolve(&["--amqp-url", "amqp://u:hunter2@mq:5672/%2f"]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn several_broker_addresses_from_either_setting() {
        let list = "amqp://u:hunter2@mq-0:5672/%2f, amqp://u:hunter2@mq-1:5672/%2f";
        let a = resolve(&["--amqp-url", list]).unwrap();
        assert_eq!(a.queue.urls.len(), 2);
        assert_eq!(a.queue.urls.host(1), "mq-1:5672//");
        let b = resolve(&["--amqp-url", "", "--amqp-urls", list]).unwrap();
        assert_eq!(b.queue.urls, a.queue.urls);
        assert_eq!(b.sink_settings.amqp_url.as_deref(), Some(list), "the amqp sink fails over too");
        let e = err(&["--amqp-url", "amqp://u:hunter2@a/v", "--amqp-urls", list]);
        assert!(e.contains("AMQP_URL") && e.contains("AMQP_URLS") && !e.contains("hunter2"), "{e}");
        let e = err(&["--amqp-url", "", "--amqp-urls", "amqp://u:hunter2@a/v,https://u:hunter2@b/v"]);
        assert!(e.contains("AMQP_URLS") && e.contains("entry 2 of 2") && !e.contains("hunter2"), "{e}");
        assert!(err(&["--amqp-url", ""]).contains("AMQP_URL"));
        assert_eq!(a.queue.topology.retry_queue_type, QueueType::Classic);
        let q = resolve(&["--retry-queue-type", "quorum"]).unwrap();
        assert_eq!(q.queue.topology.retry_queue_type, QueueType::Quorum);
        assert!(err(&["--retry-queue-type", "lazy"]).contains("RETRY_QUEUE_TYPE"));
    }

    #[test]
    fn allowed_endpoints_parse_or_fail_naming_the_setting() {
        let c = resolve(&["--allowed-endpoints", "10.0.0.0/8, minio.corp:9000"]).unwrap();
        assert!(!c.pipeline.storage.allowed_endpoints.is_empty());
        let e = err(&["--allowed-endpoints", "http://minio.corp:9000"]);
        assert!(e.contains("ALLOWED_ENDPOINTS") && e.contains("minio.corp"), "{e}");
    }

    #[test]
    fn gcs_org_binding_and_sign_blob_endpoint_are_settings() {
        let c = resolve(&["--gcs-service-account-org-token", "mw-{org}-"]).unwrap();
        assert_eq!(c.pipeline.storage.gcs.service_account_org_token.as_deref(), Some("mw-{org}-"));
        assert_eq!(c.pipeline.storage.gcs.iam_endpoint, "https://iamcredentials.googleapis.com");
        let c = resolve(&["--gcs-service-account-org-token", "", "--gcs-iam-endpoint", "http://127.0.0.1:9"])
            .unwrap();
        assert_eq!(
            c.pipeline.storage.gcs.service_account_org_token, None,
            "empty is unset: keyless GCS refused"
        );
        assert_eq!(c.pipeline.storage.gcs.iam_endpoint, "http://127.0.0.1:9");
    }

    #[test]
    fn azure_application_settings_resolve_or_fail_naming_the_setting() {
        let c = resolve(&["--azure-client-id", "app", "--azure-client-secret", "hunter2-azure"]).unwrap();
        assert_eq!(c.pipeline.storage.azure.client_id.as_deref(), Some("app"));
        assert!(!format!("{c:?}").contains("hunter2-azure"));
        assert!(err(&["--azure-client-secret", "s"]).contains("AZURE_CLIENT_ID"));
        let e = err(&[
            "--azure-client-id",
            "a",
            "--azure-client-secret",
            "s",
            "--azure-federated-token-file",
            "/f",
        ]);
        assert!(e.contains("AZURE_FEDERATED_TOKEN_FILE"), "{e}");
        assert!(err(&["--azure-authority-host", "login.example"]).contains("AZURE_AUTHORITY_HOST"));
        assert!(err(&["--storage-ca-file", "/nonexistent/ca.pem"]).contains("STORAGE_CA_FILE"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
