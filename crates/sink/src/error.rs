//! The one error type of the sinks. It classifies itself: the queue layer retries a job
//! whose sink fault is transient (a dropped connection, a broker nack) and never one
//! whose fault would repeat (a result that cannot be serialized or stored).

use asset_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A sink list or a sink setting that cannot work; fix the configuration.
    #[error("invalid sink configuration: {0}")]
    Config(String),

    /// The service did not accept a connection (it is down, or unreachable).
    #[error("{sink}: cannot connect: {source}")]
    Connect {
        sink: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// No connection came from the PostgreSQL pool.
    #[error("postgres: no connection from the pool: {0}")]
    Pool(#[source] deadpool_postgres::PoolError),

    /// A PostgreSQL statement failed.
    #[error("postgres: {op} failed: {source}")]
    Postgres {
        op: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A schema migration failed at start.
    #[error("postgres: migration {version} ({name}) failed: {source}")]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    /// An AMQP operation failed (connection or channel lost, exchange refused…).
    #[error("amqp: {op} failed: {source}")]
    Amqp {
        op: &'static str,
        #[source]
        source: lapin::Error,
    },

    /// The broker confirmed the publish negatively.
    #[error("amqp: broker nacked the message with routing key {routing_key}")]
    Nacked { routing_key: String },

    /// A message that cannot be serialized: a bug, it would fail again.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A value the sink cannot store (e.g. a byte count beyond PostgreSQL's bigint).
    #[error("cannot store {0}")]
    Unrepresentable(String),

    /// Writing or flushing a JSON Lines output failed.
    #[error("{sink}: write failed: {source}")]
    Io {
        sink: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SinkError {
    /// The stable code recorded when a job fails because of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            SinkError::Pool(deadpool_postgres::PoolError::Timeout(_)) => ErrorCode::Timeout,
            SinkError::Connect { .. }
            | SinkError::Pool(_)
            | SinkError::Postgres { .. }
            | SinkError::Amqp { .. }
            | SinkError::Nacked { .. } => ErrorCode::Upstream,
            SinkError::Io { .. } => ErrorCode::Io,
            SinkError::Config(_)
            | SinkError::Migration { .. }
            | SinkError::Serialize { .. }
            | SinkError::Unrepresentable(_) => ErrorCode::Internal,
        }
    }

    /// Whether the same write may succeed later: connection and broker faults yes; a
    /// configuration, a migration or a serialization bug no.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Connect { .. }
            | SinkError::Pool(_)
            | SinkError::Amqp { .. }
            | SinkError::Nacked { .. } => true,
            SinkError::Postgres { source, .. } => postgres_is_transient(source),
            SinkError::Migration { source, .. } => postgres_is_transient(source),
            SinkError::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidData
            ),
            SinkError::Config(_) | SinkError::Serialize { .. } | SinkError::Unrepresentable(_) => false,
        }
    }
}

impl SinkError {
    /// The sink answers no writes at all (it is down, restarting, out of resources, or
    /// every statement times out): not this result's fault. The worker pauses and waits
    /// for it instead of spending the job's attempts. A retryable fault of one statement
    /// (a serialization failure, a deadlock) is not this: it retries the job.
    pub fn is_unavailable(&self) -> bool {
        match self {
            SinkError::Connect { .. } | SinkError::Pool(_) => true,
            SinkError::Postgres { source, .. } => match source.as_db_error() {
                // 08 connection exception, 53 insufficient resources, 57 operator
                // intervention (shutdown, statement timeout: 57014), 58 system error.
                Some(db) => ["08", "53", "57", "58"].iter().any(|c| db.code().code().starts_with(c)),
                None => true,
            },
            SinkError::Amqp { .. } => true,
            _ => false,
        }
    }
}

/// A server error is transient when its SQLSTATE class says so (connection exception,
/// insufficient resources, operator intervention such as a restart, serialization
/// failure or deadlock); an error without a SQLSTATE is the connection itself failing.
fn postgres_is_transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class))
        }
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let ser = serde_json::from_str::<u8>("x").unwrap_err();
        let e = SinkError::Serialize { what: "asset result", source: ser };
        assert!(!e.is_retryable());
        assert_eq!(e.code(), ErrorCode::Internal);

        let e = SinkError::Nacked { routing_key: "asset.v1".into() };
        assert!(e.is_retryable());
        assert_eq!(e.code(), ErrorCode::Upstream);

        let e = SinkError::Io { sink: "jsonl", source: std::io::ErrorKind::BrokenPipe.into() };
        assert!(!e.is_retryable());
        assert_eq!(e.code(), ErrorCode::Io);
        let e = SinkError::Io { sink: "jsonl", source: std::io::ErrorKind::Interrupted.into() };
        assert!(e.is_retryable());

        assert!(!SinkError::Config("x".into()).is_retryable());
        assert!(!SinkError::Unrepresentable("x".into()).is_retryable());
    }
}
