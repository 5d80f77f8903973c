//! Where metadata is written: one [`MetadataSink`] trait, implemented for PostgreSQL,
//! an AMQP results exchange and JSON Lines, so the pipeline never knows which of them the
//! configuration picked. Every write is idempotent: a redelivered asset overwrites.

mod amqp;
mod error;
mod jsonl;
mod postgres;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use asset_schemas::{AssetResult, JobCompleted};

pub use amqp::{AmqpSink, ROUTING_KEY_ASSET, ROUTING_KEY_JOB_COMPLETED};
pub use error::SinkError;
pub use jsonl::JsonlSink;
pub use postgres::{DEFAULT_STATEMENT_TIMEOUT, MIGRATIONS, PostgresSink};

/// Something that stores or forwards per-asset results and job completions.
#[async_trait::async_trait]
pub trait MetadataSink: Send + Sync {
    /// Short stable name for logs and metrics (`postgres`, `amqp`, `jsonl`, `fanout`).
    fn name(&self) -> &'static str;

    /// Records one asset's result. Idempotent: writing the same `asset_id` again
    /// replaces the earlier result, it never adds a second one.
    async fn write(&self, result: &AssetResult) -> Result<(), SinkError>;

    /// Records that every asset of a job has its result written.
    async fn job_completed(&self, done: &JobCompleted) -> Result<(), SinkError>;

    /// Whether the sink can take writes now (for `/readyz`).
    async fn ready(&self) -> bool;
}

/// The sinks a configuration may name in `SINKS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    Postgres,
    Amqp,
    Jsonl,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Postgres => "postgres",
            SinkKind::Amqp => "amqp",
            SinkKind::Jsonl => "jsonl",
        }
    }
}

impl fmt::Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SinkKind {
    type Err = SinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(SinkKind::Postgres),
            "amqp" => Ok(SinkKind::Amqp),
            "jsonl" => Ok(SinkKind::Jsonl),
            other => {
                Err(SinkError::Config(format!("unknown sink {other:?} (expected postgres, amqp or jsonl)")))
            }
        }
    }
}

/// Parses a comma list such as `postgres,amqp,jsonl`. At least one sink, none twice.
pub fn parse_sinks(list: &str) -> Result<Vec<SinkKind>, SinkError> {
    let mut kinds = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let kind: SinkKind = part.parse()?;
        if kinds.contains(&kind) {
            return Err(SinkError::Config(format!("sink {kind} is listed twice")));
        }
        kinds.push(kind);
    }
    if kinds.is_empty() {
        return Err(SinkError::Config("no sink named (expected e.g. \"postgres,amqp\")".into()));
    }
    Ok(kinds)
}

/// Writes to every sink it holds, concurrently; fails if any of them fails. Because
/// every sink is idempotent, retrying the whole fan-out after a partial failure is safe.
#[derive(Clone)]
pub struct FanOut(pub Vec<Arc<dyn MetadataSink>>);

impl FanOut {
    pub fn new(sinks: Vec<Arc<dyn MetadataSink>>) -> Self {
        FanOut(sinks)
    }

    pub fn sinks(&self) -> &[Arc<dyn MetadataSink>] {
        &self.0
    }

    /// The names of the sinks that are not ready, for a `/readyz` body.
    pub async fn not_ready(&self) -> Vec<&'static str> {
        let states = futures::future::join_all(self.0.iter().map(|s| s.ready())).await;
        self.0.iter().zip(states).filter(|(_, ok)| !ok).map(|(s, _)| s.name()).collect()
    }
}

impl fmt::Debug for FanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|s| s.name())).finish()
    }
}

/// Of several failures, the one to report: a retryable one if any, so that a transient
/// fault in one sink makes the job retry rather than be recorded as failed.
fn first_failure(results: Vec<Result<(), SinkError>>) -> Result<(), SinkError> {
    let mut errors: Vec<SinkError> = results.into_iter().filter_map(Result::err).collect();
    match errors.iter().position(SinkError::is_retryable) {
        Some(i) => Err(errors.swap_remove(i)),
        None if errors.is_empty() => Ok(()),
        None => Err(errors.swap_remove(0)),
    }
}

#[async_trait::async_trait]
impl MetadataSink for FanOut {
    fn name(&self) -> &'static str {
        "fanout"
    }

    async fn write(&self, result: &AssetResult) -> Result<(), SinkError> {
        first_failure(futures::future::join_all(self.0.iter().map(|s| s.write(result))).await)
    }

    async fn job_completed(&self, done: &JobCompleted) -> Result<(), SinkError> {
        first_failure(futures::future::join_all(self.0.iter().map(|s| s.job_completed(done))).await)
    }

    async fn ready(&self) -> bool {
        self.not_ready().await.is_empty()
    }
}

/// Where each sink connects; only the settings of the sinks actually named are needed.
#[derive(Clone, Default)]
pub struct SinkSettings {
    pub database_url: Option<String>,
    /// One AMQP URL or a comma list of them (a cluster's nodes, tried in order).
    pub amqp_url: Option<String>,
    /// Results exchange, `asset-import.results` by default.
    pub results_exchange: Option<String>,
    /// JSON Lines file; `None` writes to stdout.
    pub jsonl_path: Option<std::path::PathBuf>,
    /// PostgreSQL `statement_timeout`; `None` is [`postgres::DEFAULT_STATEMENT_TIMEOUT`].
    pub statement_timeout: Option<std::time::Duration>,
}

impl fmt::Debug for SinkSettings {
    // URLs may carry passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkSettings")
            .field("database_url", &self.database_url.as_ref().map(|_| "REDACTED"))
            .field("amqp_url", &self.amqp_url.as_ref().map(|_| "REDACTED"))
            .field("results_exchange", &self.results_exchange)
            .field("jsonl_path", &self.jsonl_path)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// The default results exchange (AsyncAPI: `asset-import.results`).
pub const DEFAULT_RESULTS_EXCHANGE: &str = "asset-import.results";

/// Connects every named sink (PostgreSQL migrations included) and returns them as one.
pub async fn connect_all(kinds: &[SinkKind], settings: &SinkSettings) -> Result<FanOut, SinkError> {
    let mut sinks: Vec<Arc<dyn MetadataSink>> = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let sink: Arc<dyn MetadataSink> = match kind {
            SinkKind::Postgres => {
                let url = settings
                    .database_url
                    .as_deref()
                    .ok_or_else(|| SinkError::Config("sink postgres needs DATABASE_URL".into()))?;
                let timeout = settings.statement_timeout.unwrap_or(postgres::DEFAULT_STATEMENT_TIMEOUT);
                Arc::new(PostgresSink::connect_with(url, None, timeout).await?)
            }
            SinkKind::Amqp => {
                let url = settings
                    .amqp_url
                    .as_deref()
                    .ok_or_else(|| SinkError::Config("sink amqp needs AMQP_URL".into()))?;
                let exchange = settings.results_exchange.as_deref().unwrap_or(DEFAULT_RESULTS_EXCHANGE);
                Arc::new(AmqpSink::connect(url, exchange).await?)
            }
            SinkKind::Jsonl => match &settings.jsonl_path {
                Some(path) => Arc::new(JsonlSink::file(path)?),
                None => Arc::new(JsonlSink::stdout()),
            },
        };
        sinks.push(sink);
    }
    Ok(FanOut(sinks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sink_lists() {
        assert_eq!(
            parse_sinks("postgres, amqp,jsonl").unwrap(),
            vec![SinkKind::Postgres, SinkKind::Amqp, SinkKind::Jsonl]
        );
        assert_eq!(parse_sinks("JSONL").unwrap(), vec![SinkKind::Jsonl]);
        assert!(matches!(parse_sinks(""), Err(SinkError::Config(_))));
        assert!(matches!(parse_sinks(" , "), Err(SinkError::Config(_))));
        assert!(matches!(parse_sinks("postgres,kafka"), Err(SinkError::Config(_))));
        assert!(matches!(parse_sinks("jsonl,jsonl"), Err(SinkError::Config(_))));
    }

    #[test]
    fn a_retryable_failure_wins_over_a_permanent_one() {
        let permanent = || SinkError::Config("x".into());
        let transient = || SinkError::Nacked { routing_key: "asset.v1".into() };
        assert!(first_failure(vec![Ok(()), Ok(())]).is_ok());
        let e = first_failure(vec![Err(permanent()), Ok(()), Err(transient())]).unwrap_err();
        assert!(e.is_retryable());
        let e = first_failure(vec![Ok(()), Err(permanent())]).unwrap_err();
        assert!(!e.is_retryable());
    }

    #[test]
    fn settings_debug_hides_urls() {
        let s = SinkSettings {
            database_url: Some("postgres://u:hunter2@db/x".into()),
            amqp_url: Some("amqp://u:hunter2@mq/%2f".into()),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
