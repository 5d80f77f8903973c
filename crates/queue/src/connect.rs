//! Connecting to the broker: one config, one jittered backoff for reconnects and retry
//! delays, and a health flag the worker's `/readyz` reads. The AMQP URL carries a
//! password, so only its host ever reaches a log line or an error.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use rand::Rng;

use crate::{QueueError, Topology};

/// Everything the consumer and the publisher need to reach the broker.
#[derive(Clone)]
pub struct QueueConfig {
    /// `amqp://user:password@host:port/vhost`; a secret, never printed.
    pub url: String,
    pub topology: Topology,
    /// Deliveries the broker may hand this consumer before it acks (basic_qos).
    pub prefetch: u16,
    /// Attempts a job gets (first delivery included) before it is dead-lettered.
    pub max_attempts: u32,
    /// Largest message and most assets a job may have; checked before parsing.
    pub job_limits: asset_schemas::JobLimits,
    /// Delay before a retried job is redelivered, by attempt.
    pub retry_backoff: Backoff,
    /// Pause between reconnection attempts after the connection drops.
    pub reconnect_backoff: Backoff,
    /// Shown in the broker's management UI, e.g. `metadata-worker@host`.
    pub connection_name: String,
}

impl QueueConfig {
    pub fn new(url: impl Into<String>) -> Self {
        QueueConfig {
            url: url.into(),
            topology: Topology::default(),
            prefetch: 4,
            max_attempts: 5,
            job_limits: asset_schemas::JobLimits::default(),
            retry_backoff: Backoff { base: Duration::from_secs(2), max: Duration::from_secs(300) },
            reconnect_backoff: Backoff { base: Duration::from_millis(200), max: Duration::from_secs(15) },
            connection_name: format!("metadata-worker@{}", std::process::id()),
        }
    }

    /// `host:port/vhost`, safe to log.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    pub(crate) fn uri(&self) -> Result<AMQPUri, QueueError> {
        AMQPUri::from_str(&self.url)
            .map_err(|_| QueueError::InvalidUrl("expected amqp://user:password@host:port/vhost".to_string()))
    }
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("url", &self.redacted_url())
            .field("topology", &self.topology)
            .field("prefetch", &self.prefetch)
            .field("max_attempts", &self.max_attempts)
            .field("job_limits", &self.job_limits)
            .field("retry_backoff", &self.retry_backoff)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .finish()
    }
}

/// Host, port and vhost of an AMQP URL; never the credentials.
pub fn redact(url: &str) -> String {
    match AMQPUri::from_str(url) {
        Ok(u) => format!("{}:{}/{}", u.authority.host, u.authority.port, u.vhost),
        Err(_) => "<unparsable AMQP URL>".to_string(),
    }
}

/// Jittered exponential backoff: attempt 1 waits about `base`, each further attempt
/// doubles, never beyond `max`. Equal jitter keeps at least half the delay so replicas
/// that failed together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let half = full / 2;
        let jitter_ms = half.as_millis() as u64;
        let extra = if jitter_ms == 0 { 0 } else { rand::rng().random_range(0..=jitter_ms) };
        half + Duration::from_millis(extra)
    }
}

/// Whether the consumer currently holds a live broker connection; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BrokerHealth(Arc<AtomicBool>);

impl BrokerHealth {
    pub fn is_connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }
}

/// One connection and one channel, topology declared.
pub(crate) async fn open(cfg: &QueueConfig) -> Result<(Connection, Channel), QueueError> {
    let uri = cfg.uri()?;
    let props = ConnectionProperties::default()
        .with_connection_name(cfg.connection_name.clone().into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect_uri(uri, props)
        .await
        .map_err(|source| QueueError::Connect { host: cfg.redacted_url(), source })?;
    let channel =
        conn.create_channel().await.map_err(|source| QueueError::Channel { op: "channel.open", source })?;
    cfg.topology.declare(&channel).await?;
    Ok((conn, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        for _ in 0..50 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100), "{d1:?}");
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400), "{d3:?}");
            let d40 = b.delay(40);
            assert!(d40 >= Duration::from_millis(500) && d40 <= Duration::from_secs(1), "{d40:?}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        let r = redact("amqp://guest:s3cret@rabbit.example:5673/prod");
        assert_eq!(r, "rabbit.example:5673/prod");
        assert!(!format!("{:?}", QueueConfig::new("amqp://u:s3cret@h:5672/%2f")).contains("s3cret"));
    }
}
