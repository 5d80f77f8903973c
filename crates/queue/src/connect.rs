//! Connecting to the broker: the list of broker addresses and the order they are tried
//! in, one jittered backoff for reconnects and retry delays, and a health flag the
//! worker's `/readyz` reads. AMQP URLs carry a password, so only their host ever reaches
//! a log line or an error.
//!
//! Several addresses are for a RabbitMQ cluster: the queues are quorum queues that
//! survive a node, so a client that loses its node only has to find another one. Each
//! round tries every address once, starting after the one that just failed; a round
//! that finds none waits [`Backoff::delay`] before the next.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use rand::Rng;

use crate::{QueueError, Topology};

/// The broker's addresses in preference order (`AMQP_URL` as a comma list, or
/// `AMQP_URLS`). Each is a secret: `Debug` shows hosts only.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrls(Vec<String>);

impl BrokerUrls {
    /// A comma-separated list of `amqp://` or `amqps://` URLs (spaces around entries are
    /// ignored; a comma inside a password must be written `%2C`). Errors name the entry
    /// by position, never by content.
    pub fn parse(list: &str) -> Result<BrokerUrls, QueueError> {
        let entries: Vec<&str> = list.split(',').map(str::trim).collect();
        let n = entries.len();
        let mut urls: Vec<String> = Vec::with_capacity(n);
        let mut hosts: Vec<String> = Vec::with_capacity(n);
        for (i, entry) in entries.into_iter().enumerate() {
            let at = if n == 1 { String::new() } else { format!("entry {} of {n}: ", i + 1) };
            if entry.is_empty() {
                return Err(QueueError::InvalidUrl(format!("{at}empty")));
            }
            if !(entry.starts_with("amqp://") || entry.starts_with("amqps://")) {
                return Err(QueueError::InvalidUrl(format!("{at}must start with amqp:// or amqps://")));
            }
            let host = match AMQPUri::from_str(entry) {
                Ok(u) => host_of(&u),
                Err(_) => {
                    return Err(QueueError::InvalidUrl(format!(
                        "{at}expected amqp://user:password@host:port/vhost"
                    )));
                }
            };
            if let Some(j) = hosts.iter().position(|h| *h == host) {
                return Err(QueueError::InvalidUrl(format!(
                    "entries {} and {} both name {host}",
                    j + 1,
                    i + 1
                )));
            }
            hosts.push(host);
            urls.push(entry.to_string());
        }
        Ok(BrokerUrls(urls))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a parsed list; here because `len` is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The URL at `index`, password included: for connecting, never for printing.
    pub fn secret(&self, index: usize) -> &str {
        &self.0[index % self.0.len()]
    }

    /// `host:port/vhost` of the address at `index`, safe to log.
    pub fn host(&self, index: usize) -> String {
        redact(self.secret(index))
    }

    /// Every address as `host:port/vhost`, comma-separated, safe to log.
    pub fn redacted(&self) -> String {
        (0..self.len()).map(|i| self.host(i)).collect::<Vec<_>>().join(",")
    }

    /// The indices one round of connection attempts visits: every address once,
    /// beginning at `start` (wrapped) and going round in list order.
    pub fn rotation(&self, start: usize) -> impl Iterator<Item = usize> + use<> {
        let n = self.len().max(1);
        let start = start % n;
        (0..self.len()).map(move |k| (start + k) % n)
    }
}

impl fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries((0..self.len()).map(|i| self.host(i))).finish()
    }
}

/// Everything the consumer and the publisher need to reach the broker.
#[derive(Clone)]
pub struct QueueConfig {
    /// Where the broker is; secrets, never printed.
    pub urls: BrokerUrls,
    pub topology: Topology,
    /// Deliveries the broker may hand this consumer before it acks (basic_qos).
    pub prefetch: u16,
    /// Attempts a job gets (first delivery included) before it is dead-lettered.
    pub max_attempts: u32,
    /// Largest message and most assets a job may have; checked before parsing.
    pub job_limits: asset_schemas::JobLimits,
    /// Delay before a retried job is redelivered, by attempt.
    pub retry_backoff: Backoff,
    /// Pause between rounds of reconnection attempts after the connection drops.
    pub reconnect_backoff: Backoff,
    /// How long one address may take to connect and declare the topology before the
    /// next one is tried (a node that is partitioned away answers nothing at all).
    pub connect_timeout: Duration,
    /// Shown in the broker's management UI, e.g. `metadata-worker@host`.
    pub connection_name: String,
}

impl QueueConfig {
    pub fn new(urls: BrokerUrls) -> Self {
        QueueConfig {
            urls,
            topology: Topology::default(),
            prefetch: 4,
            max_attempts: 5,
            job_limits: asset_schemas::JobLimits::default(),
            retry_backoff: Backoff { base: Duration::from_secs(2), max: Duration::from_secs(300) },
            reconnect_backoff: Backoff { base: Duration::from_millis(200), max: Duration::from_secs(15) },
            connect_timeout: Duration::from_secs(10),
            connection_name: format!("metadata-worker@{}", std::process::id()),
        }
    }

    /// `host:port/vhost` of every address, safe to log.
    pub fn redacted_url(&self) -> String {
        self.urls.redacted()
    }
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("urls", &self.urls)
            .field("topology", &self.topology)
            .field("prefetch", &self.prefetch)
            .field("max_attempts", &self.max_attempts)
            .field("job_limits", &self.job_limits)
            .field("retry_backoff", &self.retry_backoff)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Host, port and vhost of an AMQP URL; never the credentials.
pub fn redact(url: &str) -> String {
    match AMQPUri::from_str(url) {
        Ok(u) => host_of(&u),
        Err(_) => "<unparsable AMQP URL>".to_string(),
    }
}

fn host_of(u: &AMQPUri) -> String {
    format!("{}:{}/{}", u.authority.host, u.authority.port, u.vhost)
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

/// Whether the consumer currently holds a live broker connection, and how often it has
/// had to connect again; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct BrokerHealth(Arc<HealthState>);

#[derive(Debug, Default)]
struct HealthState {
    up: AtomicBool,
    reconnects: AtomicU64,
}

impl BrokerHealth {
    pub fn is_connected(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    /// Connections opened after the first one (to the same node or another).
    pub fn reconnects(&self) -> u64 {
        self.0.reconnects.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, up: bool) {
        self.0.up.store(up, Ordering::Relaxed);
    }

    pub(crate) fn count_reconnect(&self) -> u64 {
        self.0.reconnects.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// One connection and one channel to the address at `index`, topology declared.
async fn open_one(cfg: &QueueConfig, index: usize) -> Result<(Connection, Channel), QueueError> {
    let host = cfg.urls.host(index);
    let uri = AMQPUri::from_str(cfg.urls.secret(index))
        .map_err(|_| QueueError::InvalidUrl("expected amqp://user:password@host:port/vhost".to_string()))?;
    let props = ConnectionProperties::default()
        .with_connection_name(cfg.connection_name.clone().into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect_uri(uri, props)
        .await
        .map_err(|source| QueueError::Connect { host: host.clone(), source })?;
    let setup = async {
        let channel = conn
            .create_channel()
            .await
            .map_err(|source| QueueError::Channel { op: "channel.open", source })?;
        cfg.topology.declare(&channel).await?;
        Ok(channel)
    };
    match setup.await {
        Ok(channel) => Ok((conn, channel)),
        Err(err) => {
            let _ = conn.close(320, "setup failed").await;
            Err(err)
        }
    }
}

/// One round over the addresses, beginning at `start`: the first that connects within
/// `connect_timeout` and accepts the topology wins, and its index is returned. A refusal
/// that no other node would answer differently (a topology the broker contradicts, a
/// bad URL) ends the round at once.
pub(crate) async fn open(
    cfg: &QueueConfig,
    start: usize,
) -> Result<(Connection, Channel, usize), QueueError> {
    let mut last = None;
    for index in cfg.urls.rotation(start) {
        let host = cfg.urls.host(index);
        let err = match tokio::time::timeout(cfg.connect_timeout, open_one(cfg, index)).await {
            Ok(Ok((conn, channel))) => return Ok((conn, channel, index)),
            Ok(Err(err)) if !err.is_retryable() => return Err(err),
            Ok(Err(err)) => err,
            Err(_) => QueueError::ConnectTimeout { host: host.clone(), after: cfg.connect_timeout },
        };
        if cfg.urls.len() > 1 {
            tracing::warn!(broker = %host, error = %err, "broker address not usable; trying the next");
        }
        last = Some(err);
    }
    Err(last.unwrap_or_else(|| QueueError::InvalidUrl("no broker address".to_string())))
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
        let urls = BrokerUrls::parse("amqp://u:s3cret@h:5672/%2f,amqp://u:s3cret@h2:5673/%2f").unwrap();
        let cfg = QueueConfig::new(urls);
        assert!(!format!("{cfg:?}").contains("s3cret"));
        assert_eq!(cfg.redacted_url(), "h:5672//,h2:5673//");
    }

    #[test]
    fn a_list_parses_in_order_with_spaces_ignored() {
        let urls = BrokerUrls::parse(" amqp://u:p@a:5672/v , amqps://u:p@b:5671/v,amqp://u:p@c/v ").unwrap();
        assert_eq!(urls.len(), 3);
        assert_eq!(urls.secret(0), "amqp://u:p@a:5672/v");
        assert_eq!(urls.host(1), "b:5671/v");
        // Without a port, the scheme's default.
        assert_eq!(urls.host(2), "c:5672/v");
        let one = BrokerUrls::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one.rotation(7).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn a_round_visits_every_address_once_from_the_one_after_the_failure() {
        let urls = BrokerUrls::parse("amqp://a/v,amqp://b/v,amqp://c/v").unwrap();
        assert_eq!(urls.rotation(0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(urls.rotation(1).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(urls.rotation(2).collect::<Vec<_>>(), vec![2, 0, 1]);
        // `current + 1` past the end wraps to the first address.
        assert_eq!(urls.rotation(3).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn bad_entries_are_named_by_position_never_by_content() {
        let cases = [
            ("amqp://u:hunter2@a/v,", "entry 2 of 2: empty"),
            ("amqp://u:hunter2@a/v,,amqp://b/v", "entry 2 of 3: empty"),
            ("amqp://u:hunter2@a/v,http://u:hunter2@b/v", "entry 2 of 2: must start with amqp://"),
            ("amqp://u:hunter2@a:notaport/v", "expected amqp://user:password@host:port/vhost"),
            ("amqp://u:hunter2@a:5672/v,amqp://x:hunter2@a/v", "entries 1 and 2 both name a:5672/v"),
            ("", "empty"),
        ];
        for (list, want) in cases {
            let msg = BrokerUrls::parse(list).unwrap_err().to_string();
            assert!(msg.contains(want), "{list:?}: {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn health_counts_reconnects() {
        let h = BrokerHealth::default();
        assert!(!h.is_connected());
        h.set(true);
        assert_eq!(h.clone().count_reconnect(), 1);
        assert_eq!(h.reconnects(), 1);
        assert!(h.is_connected());
    }
}
