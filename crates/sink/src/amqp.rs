//! AMQP sink: publishes one `asset-metadata/v1` message per asset and one
//! `job-completed/v1` per job to the results exchange, persistent, and waits for the
//! broker's publisher confirm, so a write that returns `Ok` is on the broker.
//! A lost connection is reopened on the next write, at the broker's next address when
//! it has several (a cluster): the pipeline pauses and retries while no node answers.

use std::time::Duration;

use asset_queue::BrokerUrls;
use asset_schemas::{AssetResult, JobCompleted};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use crate::{MetadataSink, SinkError};

const SINK: &str = "amqp";

/// Routing key of `asset-metadata/v1` messages.
pub const ROUTING_KEY_ASSET: &str = "asset.v1";
/// Routing key of `job-completed/v1` messages.
pub const ROUTING_KEY_JOB_COMPLETED: &str = "job-completed.v1";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

struct Link {
    conn: Connection,
    channel: Channel,
    /// Which of the broker's addresses it is connected to.
    index: usize,
}

impl Link {
    fn is_up(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }
}

/// Publishes results to a durable topic exchange with publisher confirms.
pub struct AmqpSink {
    urls: BrokerUrls,
    exchange: String,
    /// The link, and the address the next connection tries first.
    link: Mutex<(Option<Link>, usize)>,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("AmqpSink").field("exchange", &self.exchange).finish_non_exhaustive()
    }
}

impl AmqpSink {
    /// Connects to the first of the broker's addresses that answers (`amqp_url` is one
    /// URL or a comma list), enables publisher confirms and declares `exchange`
    /// (durable topic).
    pub async fn connect(amqp_url: &str, exchange: &str) -> Result<Self, SinkError> {
        if exchange.is_empty() {
            return Err(SinkError::Config("the results exchange name is empty".into()));
        }
        let urls = BrokerUrls::parse(amqp_url).map_err(|e| SinkError::Config(format!("AMQP_URL: {e}")))?;
        let link = open(&urls, 0, exchange).await?;
        Ok(AmqpSink { urls, exchange: exchange.to_string(), link: Mutex::new((Some(link), 0)) })
    }

    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    async fn publish(
        &self,
        routing_key: &str,
        message_id: &str,
        kind: &str,
        payload: &[u8],
    ) -> Result<(), SinkError> {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_message_id(message_id.into())
            .with_type(kind.into())
            .with_app_id("metadata-worker".into());
        // The lock covers the publish only; confirms are awaited outside it so writes
        // from concurrent assets share the round trip to the broker.
        let confirm = {
            let mut guard = self.link.lock().await;
            let (old, next) = &mut *guard;
            let link = reopen(&self.urls, next, &self.exchange, old.take()).await?;
            let published = link
                .channel
                .basic_publish(
                    &self.exchange,
                    routing_key,
                    BasicPublishOptions::default(),
                    payload,
                    properties,
                )
                .await;
            match published {
                Ok(confirm) => {
                    *old = Some(link);
                    confirm
                }
                Err(source) => {
                    // The next write sees the closed channel and replaces it.
                    *old = Some(link);
                    return Err(SinkError::Amqp { op: "basic.publish", source });
                }
            }
        };
        match confirm.await {
            Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => Ok(()),
            Ok(Confirmation::Nack(_)) => Err(SinkError::Nacked { routing_key: routing_key.to_string() }),
            // The channel or connection is gone; the next write reopens what is down.
            Err(source) => Err(SinkError::Amqp { op: "publisher confirm", source }),
        }
    }
}

/// One round over the broker's addresses from `start`; the first that connects wins.
async fn open(urls: &BrokerUrls, start: usize, exchange: &str) -> Result<Link, SinkError> {
    let mut last = None;
    for index in urls.rotation(start) {
        match open_at(urls.secret(index), exchange).await {
            Ok((conn, channel)) => {
                tracing::info!(broker = %urls.host(index), exchange, "results sink connected");
                return Ok(Link { conn, channel, index });
            }
            Err(err) => {
                if urls.len() > 1 {
                    tracing::warn!(broker = %urls.host(index), error = %err, "results sink: broker address not usable; trying the next");
                }
                last = Some(err);
            }
        }
    }
    Err(last.unwrap_or_else(|| SinkError::Config("no broker address".into())))
}

async fn open_at(url: &str, exchange: &str) -> Result<(Connection, Channel), SinkError> {
    let props = ConnectionProperties::default()
        .with_connection_name("metadata-worker results".into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, props)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(source)) => return Err(SinkError::Connect { sink: SINK, source: Box::new(source) }),
        Err(elapsed) => return Err(SinkError::Connect { sink: SINK, source: Box::new(elapsed) }),
    };
    match open_channel(&conn, exchange).await {
        Ok(channel) => Ok((conn, channel)),
        Err(e) => {
            let _ = conn.close(200, "setup failed").await;
            Err(e)
        }
    }
}

/// The link as it is when it is up; a new channel when only the channel was closed (the
/// broker closes a channel on e.g. a missing exchange); otherwise a new connection,
/// tried first at the address after the lost one's.
async fn reopen(
    urls: &BrokerUrls,
    next: &mut usize,
    exchange: &str,
    old: Option<Link>,
) -> Result<Link, SinkError> {
    match old {
        Some(link) if link.is_up() => Ok(link),
        Some(link) if link.conn.status().connected() => match open_channel(&link.conn, exchange).await {
            Ok(channel) => Ok(Link { conn: link.conn, channel, index: link.index }),
            Err(e) => {
                // Start clean next time rather than keep a connection that refuses channels.
                let _ = link.conn.close(200, "reopening").await;
                *next = link.index + 1;
                Err(e)
            }
        },
        Some(link) => {
            *next = link.index + 1;
            let new = open(urls, *next, exchange).await?;
            *next = new.index;
            Ok(new)
        }
        None => {
            let new = open(urls, *next, exchange).await?;
            *next = new.index;
            Ok(new)
        }
    }
}

async fn open_channel(conn: &Connection, exchange: &str) -> Result<Channel, SinkError> {
    let amqp = |op| move |source| SinkError::Amqp { op, source };
    let channel = conn.create_channel().await.map_err(amqp("channel.open"))?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(amqp("confirm.select"))?;
    channel
        .exchange_declare(
            exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(amqp("exchange.declare"))?;
    Ok(channel)
}

#[async_trait::async_trait]
impl MetadataSink for AmqpSink {
    fn name(&self) -> &'static str {
        SINK
    }

    async fn write(&self, result: &AssetResult) -> Result<(), SinkError> {
        let payload = serde_json::to_vec(result)
            .map_err(|source| SinkError::Serialize { what: "asset result", source })?;
        self.publish(ROUTING_KEY_ASSET, &result.asset_id, asset_schemas::ASSET_METADATA_V1, &payload).await
    }

    async fn job_completed(&self, done: &JobCompleted) -> Result<(), SinkError> {
        let payload = serde_json::to_vec(done)
            .map_err(|source| SinkError::Serialize { what: "job completion", source })?;
        self.publish(ROUTING_KEY_JOB_COMPLETED, &done.job_id, asset_schemas::JOB_COMPLETED_V1, &payload).await
    }

    /// Reports the link, reopening it first if it dropped while idle.
    async fn ready(&self) -> bool {
        let mut guard = self.link.lock().await;
        let (old, next) = &mut *guard;
        if old.as_ref().is_some_and(Link::is_up) {
            return true;
        }
        match reopen(&self.urls, next, &self.exchange, old.take()).await {
            Ok(link) => {
                *old = Some(link);
                true
            }
            Err(_) => false,
        }
    }
}
