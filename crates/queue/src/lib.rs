//! RabbitMQ topology and consumer: envelopes in, outcomes (ack, retry, dead-letter) out.
//! This is the only layer that turns a job's outcome into broker operations; the
//! pipeline above it decides *what* happened, never *how* it is acknowledged.

mod connect;
mod consumer;
mod error;
mod publisher;
pub mod settle;
mod topology;

pub use connect::{Backoff, BrokerHealth, BrokerUrls, QueueConfig};
pub use consumer::{Consumer, Envelope, Outcome, Resume, Settled};
pub use error::QueueError;
pub use publisher::Publisher;
pub use settle::Progress;
pub use topology::{QueueType, Topology, header_str, header_u32, headers};

/// Re-exported so callers can build job payloads and read envelopes without naming
/// the schema crate twice.
pub use asset_schemas::{ImportJob, JobError, JobLimits};
/// Properties of a published message (message id, headers…).
pub use lapin::BasicProperties as MessageProperties;
