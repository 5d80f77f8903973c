//! Deliveries in, outcomes out. A delivery becomes an [`Envelope`] holding the decoded
//! job (or why it is not one) and its attempt number; the pipeline answers with an
//! [`Outcome`] and [`Envelope::settle`] turns it into ack, retry or dead-letter. The
//! message is acked only after whatever replaces it (retry, dead letter) is confirmed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use asset_core::ErrorCode;
use asset_schemas::{ImportJob, JobError, JobLimits};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use crate::connect::{self, Backoff, BrokerHealth, QueueConfig};
use crate::settle::{self, CopyHeaders, Progress};
use crate::{QueueError, Topology};

/// What became of a job; decided by the pipeline, carried out by [`Envelope::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every asset has its result written.
    Ack,
    /// A transient fault: try the job again later, or dead-letter it once the attempts
    /// are used up. With `resume`, the copy carries only the assets not yet done.
    Retry { reason: String, code: ErrorCode, resume: Option<Resume> },
    /// The message can never succeed: dead-letter it with the reason.
    Reject { reason: String, code: ErrorCode },
    /// Not attempted to the end (shutdown, a local fault of this replica): hand it
    /// straight back to the queue for any replica to take.
    Requeue,
}

/// The assets an attempt finished (their results are written) and their tally.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    pub done: BTreeSet<String>,
    pub progress: Progress,
}

impl Outcome {
    /// The outcome for a message that is not a job we can run.
    pub fn for_job_error(err: &JobError) -> Outcome {
        Outcome::Reject { reason: err.to_string(), code: err.code() }
    }

    /// A retry of the whole job.
    pub fn retry(reason: impl Into<String>, code: ErrorCode) -> Outcome {
        Outcome::Retry { reason: reason.into(), code, resume: None }
    }
}

/// What the broker was told, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Acked,
    /// Published to the retry queue as attempt `next_attempt`, redelivered after `delay`.
    Retried {
        next_attempt: u32,
        delay: Duration,
    },
    /// In the dead-letter queue; `exhausted` when it got there by using up its retries.
    DeadLettered {
        exhausted: bool,
    },
    Requeued,
}

struct Settings {
    topology: Topology,
    max_attempts: u32,
    retry_backoff: Backoff,
    job_limits: JobLimits,
}

/// One delivered message, decoded once, waiting to be settled.
pub struct Envelope {
    /// The job, or why the message is not one (it will be dead-lettered).
    pub job: Result<Arc<ImportJob>, JobError>,
    /// The job id the body names, even when it is not a valid job (cut to 256 bytes).
    pub job_id: Option<String>,
    /// 1 on first delivery, +1 on each pass through the retry queue, as the broker
    /// recorded it (`x-death`); never a publisher's header.
    pub attempt: u32,
    /// What earlier attempts finished: the job's completion adds it to its own tally.
    pub progress: Progress,
    /// The broker delivered this message before (a replica died or requeued it).
    pub redelivered: bool,
    /// The body as it came, kept only when it is not a job (the dead-letter copy is the
    /// body itself); a valid job's body is dropped once parsed.
    raw: Option<Vec<u8>>,
    delivery: Delivery,
    channel: Channel,
    settings: Arc<Settings>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

impl Envelope {
    fn new(mut delivery: Delivery, channel: Channel, settings: Arc<Settings>) -> Self {
        let trusted = settle::trusted(delivery.properties.headers().as_ref(), &settings.topology.retry_queue);
        let body = std::mem::take(&mut delivery.data);
        let decoded = ImportJob::decode(&body, &settings.job_limits);
        let raw = match &decoded.job {
            Ok(_) => None,
            // Over the size limit: the broker dead-letters it itself (no copy through us).
            Err(JobError::TooLarge { .. }) => None,
            Err(_) => Some(body),
        };
        Envelope {
            job: decoded.job.map(Arc::new),
            job_id: decoded.job_id,
            attempt: trusted.attempt,
            progress: trusted.progress,
            redelivered: delivery.redelivered,
            raw,
            delivery,
            channel,
            settings,
        }
    }

    /// The job id when the message decoded, or when it at least names one.
    pub fn job_id(&self) -> Option<String> {
        self.job_id.clone()
    }

    /// Carries out `outcome`. On error the message is left unacked (or nacked back to
    /// the queue when the channel still works), so it is redelivered: never lost.
    pub async fn settle(self, outcome: Outcome) -> Result<Settled, QueueError> {
        let result = self.try_settle(&outcome).await;
        if result.is_err() {
            // Best effort: if the channel is gone the broker requeues it anyway.
            let _ = self.delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
        }
        result
    }

    async fn try_settle(&self, outcome: &Outcome) -> Result<Settled, QueueError> {
        let settled = match outcome {
            Outcome::Ack => Settled::Acked,
            Outcome::Requeue => {
                self.delivery
                    .acker
                    .nack(BasicNackOptions { requeue: true, ..Default::default() })
                    .await
                    .map_err(|source| QueueError::Channel { op: "basic.nack", source })?;
                return Ok(Settled::Requeued);
            }
            Outcome::Retry { reason, code, resume } if self.attempt < self.settings.max_attempts => {
                let next_attempt = self.attempt + 1;
                let delay = self.settings.retry_backoff.delay(self.attempt);
                let (body, progress) = self.remainder(resume.as_ref())?;
                let props = self
                    .copy_properties(reason, *code, next_attempt, Some(&progress))
                    .with_expiration(delay.as_millis().max(1).to_string().into());
                let retry_queue = self.settings.topology.retry_queue.clone();
                self.publish(&retry_queue, &body, props).await?;
                Settled::Retried { next_attempt, delay }
            }
            Outcome::Retry { reason, code, resume } => {
                let reason = format!("gave up after {} attempts: {reason}", self.attempt);
                let (body, progress) = self.remainder(resume.as_ref())?;
                let props = self.copy_properties(&reason, *code, self.attempt, Some(&progress));
                let dlq = self.settings.topology.dead_letter_queue.clone();
                self.publish(&dlq, &body, props).await?;
                Settled::DeadLettered { exhausted: true }
            }
            Outcome::Reject { .. } if matches!(self.job, Err(JobError::TooLarge { .. })) => {
                // The queue's dead-letter exchange routes it to the dead-letter queue:
                // the oversized body is not sent through us a second time.
                self.delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .map_err(|source| QueueError::Channel { op: "basic.reject", source })?;
                return Ok(Settled::DeadLettered { exhausted: false });
            }
            Outcome::Reject { reason, code } => {
                let body = match (&self.raw, &self.job) {
                    (Some(raw), _) => raw.clone(),
                    (None, Ok(job)) => serde_json::to_vec(job.as_ref())?,
                    (None, Err(_)) => Vec::new(),
                };
                let props = self.copy_properties(reason, *code, self.attempt, None);
                let dlq = self.settings.topology.dead_letter_queue.clone();
                self.publish(&dlq, &body, props).await?;
                Settled::DeadLettered { exhausted: false }
            }
        };
        self.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|source| QueueError::Channel { op: "basic.ack", source })?;
        Ok(settled)
    }

    /// The body of a retry or exhausted copy: the job without the assets already done,
    /// and the tally of every attempt so far.
    fn remainder(&self, resume: Option<&Resume>) -> Result<(Vec<u8>, Progress), QueueError> {
        let mut progress = self.progress.clone();
        let body = match (&self.job, resume) {
            (Ok(job), Some(resume)) => {
                progress.merge(&resume.progress);
                serde_json::to_vec(&job.remainder(&resume.done))?
            }
            (Ok(job), None) => serde_json::to_vec(job.as_ref())?,
            (Err(_), _) => self.raw.clone().unwrap_or_default(),
        };
        Ok((body, progress))
    }

    /// The original's content type, message id and type, and bounded headers
    /// ([`settle::copy_headers`]).
    fn copy_properties(
        &self,
        reason: &str,
        code: ErrorCode,
        attempt: u32,
        progress: Option<&Progress>,
    ) -> BasicProperties {
        let old = &self.delivery.properties;
        let table: FieldTable = settle::copy_headers(
            old.headers().as_ref(),
            &CopyHeaders {
                reason,
                code,
                attempt,
                job_id: self.job_id.as_deref(),
                progress,
                exchange: self.delivery.exchange.as_str(),
                routing_key: self.delivery.routing_key.as_str(),
                retry_queue: &self.settings.topology.retry_queue,
            },
        );
        let mut props = BasicProperties::default().with_headers(table).with_delivery_mode(2);
        if let Some(ct) = old.content_type() {
            props = props.with_content_type(ct.clone());
        }
        if let Some(id) = old.message_id() {
            props = props.with_message_id(id.clone());
        }
        if let Some(kind) = old.kind() {
            props = props.with_type(kind.clone());
        }
        props
    }

    async fn publish(&self, queue: &str, body: &[u8], props: BasicProperties) -> Result<(), QueueError> {
        publish_confirmed(&self.channel, "", queue, body, props).await
    }
}

/// Publishes with `mandatory` on a confirm-mode channel and waits for the broker's ack;
/// an unroutable or nacked message is an error, so the caller never acks its source.
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), QueueError> {
    let confirm = channel
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions { mandatory: true, ..Default::default() },
            body,
            props,
        )
        .await
        .map_err(|source| QueueError::Channel { op: "basic.publish", source })?
        .await
        .map_err(|source| QueueError::Channel { op: "publisher confirm", source })?;
    let routing_key = routing_key.to_string();
    if confirm.is_nack() {
        return Err(QueueError::NotConfirmed { routing_key, why: "nacked by the broker" });
    }
    if confirm.take_message().is_some() {
        return Err(QueueError::NotConfirmed { routing_key, why: "no queue is bound to it" });
    }
    Ok(())
}

struct Session {
    conn: Connection,
    channel: Channel,
    stream: lapin::Consumer,
    /// Which of the broker's addresses it is connected to.
    index: usize,
}

/// Consumes the jobs queue; reconnects with backoff whenever the connection drops,
/// trying the broker's other addresses first (a cluster node that died stays down for a
/// while). Deliveries that were in flight on a dropped connection return to the queue
/// at the broker, and settling their envelopes fails harmlessly.
pub struct Consumer {
    cfg: QueueConfig,
    settings: Arc<Settings>,
    session: Option<Session>,
    health: BrokerHealth,
    /// The address a round of connection attempts begins with: the first one at start,
    /// then the one after the address whose connection was lost.
    next_address: usize,
    /// Sessions opened so far; every one after the first is a reconnection.
    sessions: u64,
}

impl Consumer {
    /// Connects, declares the topology and starts consuming. The first connection is
    /// retried with backoff for `patience` (brokers start slower than workers), after
    /// which the error is returned; a wrong URL fails at once.
    pub async fn connect(cfg: QueueConfig, patience: Duration) -> Result<Consumer, QueueError> {
        if cfg.urls.is_empty() {
            return Err(QueueError::InvalidUrl("no broker address".to_string()));
        }
        let settings = Arc::new(Settings {
            topology: cfg.topology.clone(),
            max_attempts: cfg.max_attempts.max(1),
            retry_backoff: cfg.retry_backoff,
            job_limits: cfg.job_limits,
        });
        let mut consumer = Consumer {
            cfg,
            settings,
            session: None,
            health: BrokerHealth::default(),
            next_address: 0,
            sessions: 0,
        };
        let deadline = tokio::time::Instant::now() + patience;
        let mut failures = 0;
        loop {
            match consumer.open().await {
                Ok(()) => return Ok(consumer),
                Err(err) if err.is_retryable() && tokio::time::Instant::now() < deadline => {
                    failures += 1;
                    let delay = consumer.cfg.reconnect_backoff.delay(failures);
                    tracing::warn!(broker = %consumer.cfg.redacted_url(), error = %err, retry_in_ms = delay.as_millis() as u64, "broker not reachable yet");
                    tokio::time::sleep(delay).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Shared flag for readiness probes.
    pub fn health(&self) -> BrokerHealth {
        self.health.clone()
    }

    /// One round over the addresses; on success the session is consuming.
    async fn open(&mut self) -> Result<(), QueueError> {
        let (conn, channel, index) = connect::open(&self.cfg, self.next_address).await?;
        let session = async {
            channel
                .basic_qos(self.cfg.prefetch.max(1), BasicQosOptions::default())
                .await
                .map_err(|source| QueueError::Channel { op: "basic.qos", source })?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|source| QueueError::Channel { op: "confirm.select", source })?;
            let stream = channel
                .basic_consume(
                    &self.cfg.topology.jobs_queue,
                    &format!("{}-{}", self.cfg.connection_name, rand::random::<u32>()),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|source| QueueError::Channel { op: "basic.consume", source })?;
            Ok::<_, QueueError>(stream)
        }
        .await;
        match session {
            Ok(stream) => {
                self.session = Some(Session { conn, channel, stream, index });
                self.next_address = index;
                self.sessions += 1;
                self.health.set(true);
                let broker = self.cfg.urls.host(index);
                let queue = &self.cfg.topology.jobs_queue;
                if self.sessions == 1 {
                    tracing::info!(broker = %broker, queue = %queue, prefetch = self.cfg.prefetch, "consuming");
                } else {
                    let reconnects = self.health.count_reconnect();
                    tracing::info!(broker = %broker, queue = %queue, reconnects, "reconnected to the broker; consuming again");
                }
                Ok(())
            }
            Err(err) => {
                let _ = conn.close(320, "setup failed").await;
                // The node took the connection but not the subscription (a queue
                // without a leader yet): the next round starts elsewhere.
                self.next_address = index + 1;
                Err(err)
            }
        }
    }

    /// The next delivery. Never fails: a lost connection is re-established with
    /// backoff for as long as it takes (readiness reports it meanwhile). Cancel-safe.
    pub async fn next(&mut self) -> Envelope {
        let mut failures = 0;
        loop {
            let Some(session) = self.session.as_mut() else {
                match self.open().await {
                    Ok(()) => {
                        failures = 0;
                        continue;
                    }
                    Err(err) => {
                        failures += 1;
                        let delay = self.cfg.reconnect_backoff.delay(failures);
                        tracing::warn!(broker = %self.cfg.redacted_url(), error = %err, retry_in_ms = delay.as_millis() as u64, "reconnecting to the broker");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            };
            match session.stream.next().await {
                Some(Ok(delivery)) => {
                    return Envelope::new(delivery, session.channel.clone(), self.settings.clone());
                }
                Some(Err(err)) => {
                    tracing::warn!(broker = %self.cfg.urls.host(session.index), error = %err, "broker connection lost; unacked jobs return to the queue");
                    self.drop_session();
                }
                None => {
                    tracing::warn!(broker = %self.cfg.urls.host(session.index), "the broker cancelled our consumer; resubscribing");
                    self.drop_session();
                }
            }
        }
    }

    fn drop_session(&mut self) {
        self.health.set(false);
        if let Some(old) = self.session.take() {
            // The node that dropped us is the last one to try again.
            self.next_address = old.index + 1;
            // Closing is a courtesy; the connection is usually dead already.
            tokio::spawn(async move {
                let _ = old.conn.close(320, "reconnecting").await;
            });
        }
    }

    /// Stops receiving: cancels the subscription and hands every delivery already
    /// prefetched but not yet taken back to the queue. Returns how many it requeued.
    /// Envelopes already taken are still settled normally afterwards.
    pub async fn stop(&mut self) -> usize {
        let Some(session) = self.session.as_mut() else { return 0 };
        let tag = session.stream.tag();
        if let Err(err) = session.channel.basic_cancel(tag.as_str(), BasicCancelOptions::default()).await {
            tracing::warn!(error = %err, "cancelling the consumer failed; closing the channel requeues its jobs");
            return 0;
        }
        let mut requeued = 0;
        // After cancel-ok the stream yields what was buffered, then ends.
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(5), session.stream.next()).await
        {
            if delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.is_ok() {
                requeued += 1;
            }
        }
        requeued
    }

    /// Closes the connection; anything still unacked returns to the queue.
    pub async fn close(mut self) {
        self.health.set(false);
        if let Some(s) = self.session.take() {
            let _ = s.channel.close(200, "shutting down").await;
            let _ = s.conn.close(200, "shutting down").await;
        }
    }
}
