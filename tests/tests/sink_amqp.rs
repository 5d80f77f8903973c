//! The AMQP sink against a real RabbitMQ (`AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`): the conformance suite read back through a
//! queue bound to a uniquely named results exchange, the message properties and routing
//! keys, every body checked against its schema, and recovery from a lost channel.

mod sink_conformance;

use std::sync::Mutex;

use asset_schemas::Schema;
use asset_sink::{AmqpSink, MetadataSink, ROUTING_KEY_ASSET, ROUTING_KEY_JOB_COMPLETED, SinkError};
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use sink_conformance::{ReadBack, Record, conformance, job, require, unique};

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

struct Message {
    routing_key: String,
    properties: BasicProperties,
    body: Value,
}

/// A server-named, exclusive queue bound to everything the exchange routes.
struct Tap {
    _conn: Connection,
    channel: Channel,
    exchange: String,
    queue: String,
    seen: Mutex<Vec<Message>>,
}

impl Tap {
    async fn new(exchange: &str) -> Option<Tap> {
        let conn =
            require("RabbitMQ", Connection::connect(&amqp_url(), ConnectionProperties::default()).await)?;
        let channel = conn.create_channel().await.unwrap();
        let q = channel
            .queue_declare(
                "",
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let tap = Tap {
            _conn: conn,
            channel,
            exchange: exchange.to_string(),
            queue: q.name().to_string(),
            seen: Mutex::new(Vec::new()),
        };
        Some(tap)
    }

    /// Binds after the sink has declared the exchange.
    async fn bind(&self) {
        self.channel
            .queue_bind(&self.queue, &self.exchange, "#", QueueBindOptions::default(), FieldTable::default())
            .await
            .unwrap();
    }

    /// Moves what is waiting in the queue into `seen`. Publisher confirms mean every
    /// message a write returned for is already queued: no waiting needed.
    async fn drain(&self) {
        while let Some(m) =
            self.channel.basic_get(&self.queue, BasicGetOptions { no_ack: true }).await.unwrap()
        {
            let body: Value = serde_json::from_slice(&m.delivery.data).unwrap();
            let msg = Message {
                routing_key: m.delivery.routing_key.to_string(),
                properties: m.delivery.properties.clone(),
                body,
            };
            self.seen.lock().unwrap().push(msg);
        }
    }

    fn bodies(&self, routing_key: &str, field: &str, id: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.routing_key == routing_key && m.body[field] == id)
            .map(|m| m.body.clone())
            .collect()
    }

    async fn delete_exchange(&self) {
        self.channel.exchange_delete(&self.exchange, ExchangeDeleteOptions::default()).await.unwrap();
    }
}

#[async_trait::async_trait]
impl ReadBack for Tap {
    async fn records(&self, asset_id: &str) -> Vec<Record> {
        self.drain().await;
        self.bodies(ROUTING_KEY_ASSET, "asset_id", asset_id).iter().map(Record::from_message).collect()
    }

    async fn completions(&self, job_id: &str) -> Vec<Value> {
        self.drain().await;
        self.bodies(ROUTING_KEY_JOB_COMPLETED, "job_id", job_id)
    }

    fn is_store(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn amqp_sink_conforms_and_every_message_is_well_formed() {
    let run = unique("sink_amqp");
    let exchange = format!("{}.results", run.replace('_', "-"));
    let Some(tap) = Tap::new(&exchange).await else { return };
    let sink = AmqpSink::connect(&amqp_url(), &exchange).await.unwrap();
    tap.bind().await;

    conformance(&sink, &tap, &run).await;

    tap.drain().await;
    let seen = std::mem::take(&mut *tap.seen.lock().unwrap());
    // 1 + 2 redeliveries + 3 single writes + 21 concurrent, then 2 completions.
    let assets = seen.iter().filter(|m| m.routing_key == ROUTING_KEY_ASSET).count();
    let jobs = seen.iter().filter(|m| m.routing_key == ROUTING_KEY_JOB_COMPLETED).count();
    assert_eq!((assets, jobs, seen.len()), (27, 2, 29));
    for m in seen.iter() {
        let (schema, id_field, kind) = match m.routing_key.as_str() {
            ROUTING_KEY_ASSET => (Schema::AssetMetadata, "asset_id", "asset-metadata/v1"),
            ROUTING_KEY_JOB_COMPLETED => (Schema::JobCompleted, "job_id", "job-completed/v1"),
            other => panic!("unexpected routing key {other}"),
        };
        let violations = schema.violations(&m.body);
        assert!(violations.is_empty(), "{}: {violations:?} in {}", schema.file_name(), m.body);
        assert_eq!(m.body["schema"], kind);
        let p = &m.properties;
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some(kind));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), m.body[id_field].as_str());
    }
    tap.delete_exchange().await;
}

#[tokio::test]
async fn a_lost_channel_fails_one_write_retryably_and_the_next_reconnects() {
    let run = unique("sink_amqp_lost");
    let exchange = format!("{}.results", run.replace('_', "-"));
    let Some(tap) = Tap::new(&exchange).await else { return };
    let sink = AmqpSink::connect(&amqp_url(), &exchange).await.unwrap();
    let job = job(&run);
    let result = |i: usize| {
        let m = asset_core::AssetMetadata::new(asset_core::DataType::Text, "text/plain", i as u64);
        asset_schemas::AssetResult::ok(&job, &job.assets[i], m, i as u64, Default::default())
    };

    // Publishing to an exchange that no longer exists makes the broker close the channel.
    tap.delete_exchange().await;
    let err = sink.write(&result(0)).await.unwrap_err();
    assert!(matches!(err, SinkError::Amqp { .. }), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");

    // The next write opens a new channel and declares the exchange again.
    sink.write(&result(1)).await.unwrap();
    assert!(sink.ready().await);
    tap.bind().await;
    sink.write(&result(2)).await.unwrap();
    let got = tap.records(&job.assets[2].asset_id).await;
    assert_eq!(got, vec![Record::of(&result(2))]);
    tap.delete_exchange().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_retryable_connect_error() {
    let err = AmqpSink::connect("amqp://guest:hunter2-secret@127.0.0.1:1/%2f", "x").await.unwrap_err();
    assert!(matches!(err, SinkError::Connect { sink: "amqp", .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("hunter2"));
    let err = AmqpSink::connect(&amqp_url(), "").await.unwrap_err();
    assert!(matches!(err, SinkError::Config(_)));
}
