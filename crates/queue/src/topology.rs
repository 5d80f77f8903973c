//! The exchanges and queues one deployment uses, declared idempotently by every
//! replica at connect: jobs arrive on a quorum queue, retries wait in a delay queue that
//! dead-letters back to it, and what cannot be done lands in a dead-letter queue.
//!
//! The jobs and dead-letter queues have always been quorum queues. The retry queue was a
//! classic queue, and RabbitMQ refuses to redeclare a queue with another type
//! (PRECONDITION_FAILED), so its type is a setting ([`QueueType`]): classic by default,
//! for existing deployments; quorum for a cluster, where a classic queue lives on one
//! node and is unusable — undeclarable even — while that node is down.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::QueueError;

/// Header names this crate writes and reads; part of the message contract (AsyncAPI).
pub mod headers {
    /// 1-based attempt number, written on retry and dead-letter copies for people to
    /// read. Never trusted on its own: the attempt is counted from [`DEATH`].
    pub const ATTEMPT: &str = "x-attempt";
    /// The broker's dead-letter history; its entry for the retry queue counts retries.
    pub const DEATH: &str = "x-death";
    /// On a retry copy: what earlier attempts finished (`ok=N;failed=M;code=K,…`).
    pub const PROGRESS: &str = "x-progress";
    /// How many of the publisher's headers were too large to carry over to a copy.
    pub const HEADERS_DROPPED: &str = "x-headers-dropped";
    /// Why the previous attempt was retried, or why the message was dead-lettered.
    pub const REASON: &str = "x-reason";
    /// The stable error code behind [`REASON`].
    pub const ERROR_CODE: &str = "x-error-code";
    /// The job id, when the message was a readable job.
    pub const JOB_ID: &str = "x-job-id";
    /// Exchange and routing key the message first arrived with.
    pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
    pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
}

/// The type of a queue whose type is a deployment's choice (the retry queue).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueType {
    /// One node holds it; what existing single-node deployments declared.
    #[default]
    Classic,
    /// Replicated on a majority of the cluster's nodes (RabbitMQ 3.10 or later, for
    /// message TTL and at-least-once dead-lettering).
    Quorum,
}

impl std::str::FromStr for QueueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!("expected classic or quorum, got {other:?}")),
        }
    }
}

/// Names and limits of the broker objects; defaults match the AsyncAPI document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Topic exchange the import service publishes jobs to.
    pub exchange: String,
    pub routing_key: String,
    /// Durable quorum queue the workers consume.
    pub jobs_queue: String,
    /// Delay queue: a retried job waits here for its TTL, then returns to `jobs_queue`.
    pub retry_queue: String,
    /// Jobs that will never succeed, with the reason in their headers.
    pub dead_letter_queue: String,
    /// Deliveries of one message (crashes and requeues included) after which the broker
    /// itself dead-letters it: the guard against a message that kills every worker.
    pub delivery_limit: u32,
    /// Type of `retry_queue`; changing it for an existing queue needs the queue
    /// deleted (drained) first.
    pub retry_queue_type: QueueType,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::with_prefix("asset-import")
    }
}

impl Topology {
    /// `PREFIX` exchange, `PREFIX.jobs`, `PREFIX.retry`, `PREFIX.dlq`, routing key `job.v1`.
    pub fn with_prefix(prefix: &str) -> Self {
        Topology {
            exchange: prefix.to_string(),
            routing_key: "job.v1".to_string(),
            jobs_queue: format!("{prefix}.jobs"),
            retry_queue: format!("{prefix}.retry"),
            dead_letter_queue: format!("{prefix}.dlq"),
            delivery_limit: 20,
            retry_queue_type: QueueType::default(),
        }
    }

    /// Declares everything; declaring again with the same settings is a no-op, with
    /// different ones the broker refuses (PRECONDITION_FAILED), which is not retryable.
    pub async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(&self.exchange, ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(|source| declare_err("exchange", &self.exchange, source))?;

        let queue_opts = QueueDeclareOptions { durable: true, ..Default::default() };

        let mut dlq = FieldTable::default();
        dlq.insert("x-queue-type".into(), string("quorum"));
        channel
            .queue_declare(&self.dead_letter_queue, queue_opts, dlq)
            .await
            .map_err(|source| declare_err("queue", &self.dead_letter_queue, source))?;

        let mut jobs = FieldTable::default();
        jobs.insert("x-queue-type".into(), string("quorum"));
        jobs.insert("x-delivery-limit".into(), AMQPValue::LongInt(self.delivery_limit as i32));
        jobs.insert("x-dead-letter-exchange".into(), string(""));
        jobs.insert("x-dead-letter-routing-key".into(), string(&self.dead_letter_queue));
        channel
            .queue_declare(&self.jobs_queue, queue_opts, jobs)
            .await
            .map_err(|source| declare_err("queue", &self.jobs_queue, source))?;
        channel
            .queue_bind(
                &self.jobs_queue,
                &self.exchange,
                &self.routing_key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| declare_err("binding", &self.jobs_queue, source))?;

        // Per-message TTL (the backoff) then dead-letter straight to the jobs queue
        // through the default exchange, so other bindings never see retries. Expiry
        // happens at the head of the queue, so a short delay queued behind a long one
        // waits for it: delays are "at least", bounded by the backoff's maximum.
        let retry = self.retry_arguments();
        channel
            .queue_declare(&self.retry_queue, queue_opts, retry)
            .await
            .map_err(|source| declare_err("queue", &self.retry_queue, source))?;
        Ok(())
    }
}

impl Topology {
    /// Arguments of the retry queue. As a quorum queue it dead-letters at least once
    /// (RabbitMQ's default for quorum queues is at most once, which could drop a job
    /// whose delay expires while the jobs queue has no leader); that strategy needs
    /// `reject-publish` overflow.
    fn retry_arguments(&self) -> FieldTable {
        let mut retry = FieldTable::default();
        retry.insert("x-dead-letter-exchange".into(), string(""));
        retry.insert("x-dead-letter-routing-key".into(), string(&self.jobs_queue));
        if self.retry_queue_type == QueueType::Quorum {
            retry.insert("x-queue-type".into(), string("quorum"));
            retry.insert("x-dead-letter-strategy".into(), string("at-least-once"));
            retry.insert("x-overflow".into(), string("reject-publish"));
        }
        retry
    }
}

fn declare_err(kind: &str, name: &str, source: lapin::Error) -> QueueError {
    QueueError::Declare { what: format!("{kind} {name:?}"), source }
}

pub(crate) fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// A header as text, whatever string type the publisher chose.
pub fn header_str(table: Option<&FieldTable>, key: &str) -> Option<String> {
    match table?.inner().get(&ShortString::from(key))? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// A header as a non-negative integer, whatever integer type the publisher chose.
pub fn header_u32(table: Option<&FieldTable>, key: &str) -> Option<u32> {
    let v: i128 = match table?.inner().get(&ShortString::from(key))? {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::Timestamp(v) => (*v).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok()?,
        _ => return None,
    };
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_match_the_contract() {
        let t = Topology::default();
        assert_eq!(t.exchange, "asset-import");
        assert_eq!(t.routing_key, "job.v1");
        assert_eq!(t.jobs_queue, "asset-import.jobs");
        assert_eq!(t.retry_queue, "asset-import.retry");
        assert_eq!(t.dead_letter_queue, "asset-import.dlq");
    }

    #[test]
    fn the_retry_queue_stays_classic_unless_quorum_is_chosen() {
        let t = Topology::default();
        assert_eq!(t.retry_queue_type, QueueType::Classic);
        let classic = t.retry_arguments();
        assert_eq!(
            header_str(Some(&classic), "x-queue-type"),
            None,
            "existing deployments redeclare as before"
        );
        assert_eq!(
            header_str(Some(&classic), "x-dead-letter-routing-key").as_deref(),
            Some("asset-import.jobs")
        );
        let q = Topology { retry_queue_type: QueueType::Quorum, ..Topology::default() }.retry_arguments();
        assert_eq!(header_str(Some(&q), "x-queue-type").as_deref(), Some("quorum"));
        assert_eq!(header_str(Some(&q), "x-dead-letter-strategy").as_deref(), Some("at-least-once"));
        assert_eq!(header_str(Some(&q), "x-overflow").as_deref(), Some("reject-publish"));
        assert_eq!("quorum".parse::<QueueType>(), Ok(QueueType::Quorum));
        assert!("mirrored".parse::<QueueType>().is_err());
    }

    #[test]
    fn headers_read_any_integer_type() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::LongLongInt(3));
        t.insert("b".into(), AMQPValue::ShortShortUInt(2));
        t.insert("c".into(), string("7"));
        t.insert("d".into(), AMQPValue::LongInt(-1));
        assert_eq!(header_u32(Some(&t), "a"), Some(3));
        assert_eq!(header_u32(Some(&t), "b"), Some(2));
        assert_eq!(header_u32(Some(&t), "c"), Some(7));
        assert_eq!(header_u32(Some(&t), "d"), None);
        assert_eq!(header_u32(Some(&t), "missing"), None);
        assert_eq!(header_str(Some(&t), "c").as_deref(), Some("7"));
    }
}
