//! The queue layer against a real RabbitMQ on loopback (`AMQP_URL`, default guest on
//! 127.0.0.1:5672). Each test uses its own exchange and queues. With `CI=true` a
//! missing broker fails the test; elsewhere the test says so and returns.

use std::time::Duration;

use asset_core::ErrorCode;
use asset_queue::{
    Backoff, BrokerUrls, Consumer, Envelope, Outcome, Publisher, QueueConfig, Settled, Topology, header_str,
    header_u32, headers,
};
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};

fn broker_url() -> Option<String> {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    if std::net::TcpStream::connect_timeout(&"127.0.0.1:5672".parse().unwrap(), Duration::from_secs(2))
        .is_ok()
        || std::env::var("AMQP_URL").is_ok()
    {
        return Some(url);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "RabbitMQ is not reachable and CI=true");
    eprintln!("skipped: RabbitMQ is not reachable on 127.0.0.1:5672");
    None
}

fn config(url: &str, max_attempts: u32) -> QueueConfig {
    let prefix = format!("test-queue-{}-{}", std::process::id(), rand::random::<u32>());
    let mut cfg = QueueConfig::new(BrokerUrls::parse(url).expect("the test broker URL parses"));
    cfg.topology = Topology::with_prefix(&prefix);
    cfg.prefetch = 2;
    cfg.max_attempts = max_attempts;
    cfg.retry_backoff = Backoff { base: Duration::from_millis(50), max: Duration::from_millis(200) };
    cfg
}

fn job_json(job_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schema": "import-job/v1", "job_id": job_id, "org_id": "org-1", "project_id": "p-1",
        "created_at": "2026-01-01T00:00:00Z",
        "storage": {"provider": "local", "root": "/nonexistent"},
        "assets": [{"asset_id": "a-1", "external_id": "e-1", "url": "local://x.png"}]
    }))
    .unwrap()
}

async fn next(consumer: &mut Consumer) -> Envelope {
    tokio::time::timeout(Duration::from_secs(30), consumer.next()).await.expect("a delivery within 30 s")
}

/// Waits for one message on `queue` and returns its headers and body.
async fn get_one(url: &str, queue: &str) -> (BasicProperties, Vec<u8>) {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(msg) = ch.basic_get(queue, BasicGetOptions { no_ack: true }).await.unwrap() {
            let _ = conn.close(200, "").await;
            return (msg.delivery.properties.clone(), msg.delivery.data.clone());
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing arrived on {queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn message_count(url: &str, queue: &str) -> u32 {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue,
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            Default::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "").await;
    q.message_count()
}

async fn cleanup(url: &str, t: &Topology) {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in [&t.jobs_queue, &t.retry_queue, &t.dead_letter_queue] {
        let _ = ch.queue_delete(q, QueueDeleteOptions::default()).await;
    }
    let _ = ch.exchange_delete(&t.exchange, ExchangeDeleteOptions::default()).await;
    let _ = conn.close(200, "").await;
}

#[tokio::test]
async fn a_retried_job_comes_back_with_its_attempt_then_dead_letters_when_exhausted() {
    let Some(url) = broker_url() else { return };
    let cfg = config(&url, 2);
    let mut consumer = Consumer::connect(cfg.clone(), Duration::from_secs(10)).await.unwrap();
    // Declaring twice (a second replica) must be a no-op.
    let publisher = Publisher::connect(&cfg).await.unwrap();
    publisher.publish_raw(&job_json("job-retry"), BasicProperties::default()).await.unwrap();

    let first = next(&mut consumer).await;
    assert_eq!(first.attempt, 1);
    assert_eq!(first.job.as_ref().unwrap().job_id, "job-retry");
    let settled = first.settle(Outcome::retry("storage timed out", ErrorCode::Timeout)).await.unwrap();
    assert!(matches!(settled, Settled::Retried { next_attempt: 2, .. }), "{settled:?}");

    let second = next(&mut consumer).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.job_id().as_deref(), Some("job-retry"));
    let settled = second.settle(Outcome::retry("storage timed out", ErrorCode::Timeout)).await.unwrap();
    assert_eq!(settled, Settled::DeadLettered { exhausted: true });

    let (props, body) = get_one(&url, &cfg.topology.dead_letter_queue).await;
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    assert_eq!(json(&body), json(&job_json("job-retry")));
    let h = props.headers().as_ref();
    assert_eq!(
        header_str(h, headers::REASON).as_deref(),
        Some("gave up after 2 attempts: storage timed out")
    );
    assert_eq!(header_str(h, headers::ERROR_CODE).as_deref(), Some("timeout"));
    assert_eq!(header_str(h, headers::JOB_ID).as_deref(), Some("job-retry"));
    assert_eq!(header_u32(h, headers::ATTEMPT), Some(2));
    assert_eq!(header_str(h, headers::ORIGINAL_EXCHANGE).as_deref(), Some(cfg.topology.exchange.as_str()));
    assert_eq!(message_count(&url, &cfg.topology.jobs_queue).await, 0);
    assert_eq!(message_count(&url, &cfg.topology.retry_queue).await, 0);

    publisher.close().await;
    consumer.close().await;
    cleanup(&url, &cfg.topology).await;
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_with_their_reason_and_consuming_goes_on() {
    let Some(url) = broker_url() else { return };
    let cfg = config(&url, 5);
    let mut consumer = Consumer::connect(cfg.clone(), Duration::from_secs(10)).await.unwrap();
    let publisher = Publisher::connect(&cfg).await.unwrap();
    let unknown_version =
        serde_json::to_vec(&serde_json::json!({"schema": "import-job/v9", "job_id": "j-v9"})).unwrap();
    for body in [b"not json at all".to_vec(), unknown_version, job_json("job-ok")] {
        publisher.publish_raw(&body, BasicProperties::default()).await.unwrap();
    }

    let mut reasons = Vec::new();
    for _ in 0..2 {
        let env = next(&mut consumer).await;
        let err = env.job.as_ref().expect_err("malformed");
        let outcome = Outcome::for_job_error(err);
        assert_eq!(env.settle(outcome).await.unwrap(), Settled::DeadLettered { exhausted: false });
        let (props, _) = get_one(&url, &cfg.topology.dead_letter_queue).await;
        reasons.push(header_str(props.headers().as_ref(), headers::REASON).unwrap());
        assert_eq!(header_str(props.headers().as_ref(), headers::ERROR_CODE).as_deref(), Some("invalid_job"));
    }
    assert!(reasons[0].starts_with("not a valid import job"), "{reasons:?}");
    assert!(reasons[1].contains("unknown schema \"import-job/v9\""), "{reasons:?}");

    let ok = next(&mut consumer).await;
    assert_eq!(ok.job.as_ref().unwrap().job_id, "job-ok");
    assert_eq!(ok.settle(Outcome::Ack).await.unwrap(), Settled::Acked);
    assert_eq!(message_count(&url, &cfg.topology.dead_letter_queue).await, 0);

    publisher.close().await;
    consumer.close().await;
    cleanup(&url, &cfg.topology).await;
}

#[tokio::test]
async fn requeued_and_prefetched_jobs_go_back_to_the_queue_on_stop() {
    let Some(url) = broker_url() else { return };
    let cfg = config(&url, 5);
    let mut consumer = Consumer::connect(cfg.clone(), Duration::from_secs(10)).await.unwrap();
    let publisher = Publisher::connect(&cfg).await.unwrap();
    for i in 0..3 {
        publisher.publish_raw(&job_json(&format!("job-{i}")), BasicProperties::default()).await.unwrap();
    }
    let taken = next(&mut consumer).await;
    assert_eq!(taken.job_id().as_deref(), Some("job-0"));
    // Prefetch is 2: one more is buffered in the client; stop hands it back.
    let requeued = consumer.stop().await;
    assert!(requeued <= 1, "{requeued}");
    assert_eq!(taken.settle(Outcome::Requeue).await.unwrap(), Settled::Requeued);
    consumer.close().await;
    assert_eq!(message_count(&url, &cfg.topology.jobs_queue).await, 3);

    let mut again = Consumer::connect(cfg.clone(), Duration::from_secs(10)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let env = next(&mut again).await;
        seen.push(env.job_id().unwrap());
        env.settle(Outcome::Ack).await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, ["job-0", "job-1", "job-2"]);
    again.close().await;
    publisher.close().await;
    cleanup(&url, &cfg.topology).await;
}

fn two_asset_job(job_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schema": "import-job/v1", "job_id": job_id, "org_id": "org-1", "project_id": "p-1",
        "created_at": "2026-01-01T00:00:00Z",
        "storage": {"provider": "local", "root": "/nonexistent"},
        "assets": [
            {"asset_id": "a-1", "external_id": "e-1", "url": "local://x.png"},
            {"asset_id": "a-2", "external_id": "e-2", "url": "local://y.png"}
        ]
    }))
    .unwrap()
}

fn forged_headers() -> lapin::types::FieldTable {
    use lapin::types::{AMQPValue, LongString};
    let mut t = lapin::types::FieldTable::default();
    t.insert(headers::ATTEMPT.into(), AMQPValue::LongUInt(99));
    t.insert(
        headers::PROGRESS.into(),
        AMQPValue::LongString(LongString::from(b"ok=9000;failed=0;".to_vec())),
    );
    t
}

/// A publisher setting `x-attempt: 99` once disabled every retry. Attempts now come
/// from the broker's own record of the retry queue (`x-death`), and each retry carries
/// only the assets not yet done, with the tally of those done.
#[tokio::test]
async fn a_publishers_attempt_header_does_not_disable_retries_and_retries_resume() {
    let Some(url) = broker_url() else { return };
    let cfg = config(&url, 3);
    let mut consumer = Consumer::connect(cfg.clone(), Duration::from_secs(10)).await.unwrap();
    let publisher = Publisher::connect(&cfg).await.unwrap();
    publisher
        .publish_raw(&two_asset_job("job-forged"), BasicProperties::default().with_headers(forged_headers()))
        .await
        .unwrap();

    let first = next(&mut consumer).await;
    assert_eq!(first.attempt, 1, "the publisher's x-attempt is not believed");
    assert!(first.progress.is_empty(), "nor its x-progress");
    let resume = asset_queue::Resume {
        done: ["a-1".to_string()].into(),
        progress: asset_queue::Progress { ok: 1, ..Default::default() },
    };
    let outcome = Outcome::Retry { reason: "s3 503".into(), code: ErrorCode::Upstream, resume: Some(resume) };
    assert!(matches!(first.settle(outcome).await.unwrap(), Settled::Retried { next_attempt: 2, .. }));

    let second = next(&mut consumer).await;
    assert_eq!(second.attempt, 2, "counted by the broker's x-death");
    assert_eq!(second.progress.ok, 1);
    let job = second.job.as_ref().unwrap();
    assert_eq!(job.assets.iter().map(|a| a.asset_id.as_str()).collect::<Vec<_>>(), ["a-2"]);
    assert!(matches!(
        second.settle(Outcome::retry("s3 503", ErrorCode::Upstream)).await.unwrap(),
        Settled::Retried { next_attempt: 3, .. }
    ));

    let third = next(&mut consumer).await;
    assert_eq!(third.attempt, 3);
    assert_eq!(third.progress.ok, 1, "the tally survives a retry without progress of its own");
    assert_eq!(
        third.settle(Outcome::retry("s3 503", ErrorCode::Upstream)).await.unwrap(),
        Settled::DeadLettered { exhausted: true }
    );
    let (props, body) = get_one(&url, &cfg.topology.dead_letter_queue).await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["assets"].as_array().unwrap().len(), 1, "the dead letter holds what is left to do");
    let h = props.headers().as_ref();
    assert_eq!(header_u32(h, headers::ATTEMPT), Some(3));
    assert_eq!(header_str(h, headers::PROGRESS).as_deref(), Some("ok=1;failed=0;"));

    publisher.close().await;
    consumer.close().await;
    cleanup(&url, &cfg.topology).await;
}

/// A message over MAX_JOB_BYTES is refused from its size: never parsed, and dead-lettered
/// by the broker itself (the body is not sent through the worker a second time).
#[tokio::test]
async fn an_oversized_message_is_dead_lettered_without_being_parsed() {
    let Some(url) = broker_url() else { return };
    let mut cfg = config(&url, 3);
    cfg.job_limits.max_bytes = 4096;
    let mut consumer = Consumer::connect(cfg.clone(), Duration::from_secs(10)).await.unwrap();
    let publisher = Publisher::connect(&cfg).await.unwrap();
    let big = vec![b'{'; 64 * 1024];
    publisher.publish_raw(&big, BasicProperties::default()).await.unwrap();

    let env = next(&mut consumer).await;
    let err = env.job.as_ref().expect_err("too large");
    assert!(matches!(err, asset_queue::JobError::TooLarge { bytes: 65536, limit: 4096 }), "{err}");
    assert_eq!(env.job_id, None);
    let outcome = Outcome::for_job_error(err);
    assert_eq!(env.settle(outcome).await.unwrap(), Settled::DeadLettered { exhausted: false });
    let (props, body) = get_one(&url, &cfg.topology.dead_letter_queue).await;
    assert_eq!(body.len(), big.len(), "the broker moved the message as it came");
    assert!(props.headers().as_ref().unwrap().inner().contains_key("x-death"));

    publisher.close().await;
    consumer.close().await;
    cleanup(&url, &cfg.topology).await;
}

/// A dead-letter copy quoting a huge job id or reason, or carrying a publisher's huge
/// headers, once exceeded frame_max: the broker closed the connection and every job
/// prefetched beside it came back. Copies are now bounded; the neighbour is settled once.
#[tokio::test]
async fn a_header_bomb_is_dead_lettered_with_bounded_headers_and_neighbours_are_untouched() {
    use lapin::types::{AMQPValue, LongString};
    let Some(url) = broker_url() else { return };
    let cfg = config(&url, 3);
    let mut consumer = Consumer::connect(cfg.clone(), Duration::from_secs(10)).await.unwrap();
    let publisher = Publisher::connect(&cfg).await.unwrap();
    let mut fat = lapin::types::FieldTable::default();
    for i in 0..10 {
        fat.insert(format!("h{i}").into(), AMQPValue::LongString(LongString::from(vec![b'z'; 10_000])));
    }
    let huge_id = "j".repeat(200_000);
    let bomb =
        serde_json::to_vec(&serde_json::json!({"schema": "import-job/v1", "job_id": huge_id})).unwrap();
    publisher.publish_raw(&bomb, BasicProperties::default().with_headers(fat)).await.unwrap();
    publisher.publish_raw(&job_json("neighbour"), BasicProperties::default()).await.unwrap();

    let first = next(&mut consumer).await;
    let second = next(&mut consumer).await;
    assert_eq!(first.job_id.as_deref().map(str::len), Some(256), "the job id is cut");
    let outcome = Outcome::for_job_error(first.job.as_ref().unwrap_err());
    assert_eq!(first.settle(outcome).await.unwrap(), Settled::DeadLettered { exhausted: false });
    assert_eq!(second.job_id.as_deref(), Some("neighbour"));
    assert!(!second.redelivered);
    assert_eq!(second.settle(Outcome::Ack).await.unwrap(), Settled::Acked);

    let (props, body) = get_one(&url, &cfg.topology.dead_letter_queue).await;
    assert_eq!(body, bomb, "the body is kept as it came");
    let table = props.headers().as_ref().unwrap();
    assert!(asset_queue::settle::table_size(table) <= asset_queue::settle::MAX_HEADER_TABLE_BYTES);
    assert!(header_u32(Some(table), headers::HEADERS_DROPPED).unwrap() >= 2);
    assert!(header_str(Some(table), headers::JOB_ID).unwrap().len() <= 256);
    assert_eq!(message_count(&url, &cfg.topology.jobs_queue).await, 0, "nothing came back");

    publisher.close().await;
    consumer.close().await;
    cleanup(&url, &cfg.topology).await;
}
