//! Failover in a RabbitMQ cluster: three nodes of the test's own (never the machine's
//! broker), the jobs, retry and dead-letter queues declared as quorum queues, 300 jobs
//! of 4 assets through two worker replicas connected to the node holding the jobs
//! queue's leader, and that node SIGKILLed mid-run. Every asset ends with exactly one
//! right row, every job completes, the dead-letter queue stays empty, and both replicas
//! reconnect to a surviving node without a restart. The killed node then comes back and
//! rejoins the cluster. The replicas also publish their results through the `amqp` sink
//! to a quorum queue, which fails over the same way and receives every asset's result.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use asset_queue::{QueueType, Topology};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use pipeline_tests::*;
use serde_json::Value;

const JOBS: usize = 300;
const LIMIT: Duration = Duration::from_secs(120);

/// Ready messages in `queue`, asked of the node at `url`.
async fn ready(url: &str, queue: &str) -> u32 {
    let conn = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(queue, QueueDeclareOptions { passive: true, ..Default::default() }, Default::default())
        .await
        .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
    let _ = conn.close(200, "").await;
    q.message_count()
}

/// The worker's JSON log lines saying it reconnected, as the `broker` each names.
fn reconnections(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("reconnected to the broker")))
        .map(|v| v["broker"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Jobs the worker received a second time (a delivery in flight when its node died).
fn redelivered_jobs(log: &str) -> usize {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "job received" && v["redelivered"] == true)
        .count()
}

#[tokio::test]
async fn the_queue_leaders_node_dies_mid_run_and_both_replicas_fail_over() {
    if !services_up() {
        return;
    }
    let started = Instant::now();
    let Some(mut cluster) = RabbitCluster::start(3) else { return };
    let cluster_up = started.elapsed();
    let scene = Scene::new("cluster").await;

    // The queues, declared as the worker declares them, through the first node: a quorum
    // queue's leader starts on the node its declaring client is connected to.
    let topology = Topology { retry_queue_type: QueueType::Quorum, ..Topology::with_prefix(&scene.prefix) };
    let admin = Connection::connect(&cluster.url(0), ConnectionProperties::default()).await.expect("node 1");
    let ch = admin.create_channel().await.unwrap();
    topology.declare(&ch).await.expect("declaring the quorum queues");
    // Where the amqp sink's results land: the exchange as the sink declares it.
    let results = format!("{}.results", scene.prefix);
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    ch.exchange_declare(&results, ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(&results, durable, quorum).await.unwrap();
    ch.queue_bind(&results, &results, "#", QueueBindOptions::default(), FieldTable::default()).await.unwrap();
    let _ = admin.close(200, "").await;
    for queue in [scene.jobs_queue(), scene.retry_queue(), scene.dead_letter_queue()] {
        let listed = cluster.ctl(0, &["list_queues", "name", "type", "--formatter", "json"]);
        let queues: Value = serde_json::from_str(&listed).unwrap();
        let kind = queues
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == queue.as_str())
            .map(|q| q["type"].clone());
        assert_eq!(kind, Some(Value::from("quorum")), "{queue} is a quorum queue");
    }
    let leader = cluster.leader_of(0, &scene.jobs_queue()).expect("the jobs queue has a leader");
    let survivor = (leader + 1) % 3;

    // Both replicas list the leader's node first, so both lose their connection.
    let urls: Vec<String> = (0..3).map(|k| cluster.url((leader + k) % 3)).collect();
    let urls = urls.join(",");
    let env = [
        ("AMQP_URL", urls.as_str()),
        ("RETRY_QUEUE_TYPE", "quorum"),
        ("CONCURRENCY", "4"),
        ("SINKS", "postgres,amqp"),
        ("RESULTS_EXCHANGE", results.as_str()),
    ];
    let (mut a, port_a) = scene.ready_worker(1, &env).await;
    let (mut b, port_b) = scene.ready_worker(2, &env).await;

    // Published through a node that stays up, on one channel, confirms awaited at the end.
    let publisher =
        Connection::connect(&cluster.url(survivor), ConnectionProperties::default()).await.unwrap();
    let ch = publisher.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut confirms = Vec::new();
    for j in 0..JOBS {
        let job = scene.job(&format!("job{j:03}"), &FILES);
        let confirm = ch
            .basic_publish(
                &scene.prefix,
                "job.v1",
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &serde_json::to_vec(&job).unwrap(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for confirm in confirms {
        let c = confirm.await.unwrap();
        assert!(c.is_ack() && c.take_message().is_none(), "the cluster took the job");
    }
    let _ = publisher.close(200, "").await;

    let total = (JOBS * FILES.len()) as i64;
    wait_until(LIMIT, "a fifth of the assets", || async { scene.rows().await >= total / 5 }).await;
    let killed_at = Instant::now();
    cluster.kill(leader);
    let rows_at_kill = scene.rows().await;

    wait_until(LIMIT, "every job completed", || async { scene.jobs_completed().await == JOBS as i64 }).await;
    let failover_to_done = killed_at.elapsed();
    assert!(rows_at_kill < total, "the node died mid-run ({rows_at_kill} of {total} rows)");
    let new_leader = cluster.leader_of(survivor, &scene.jobs_queue()).expect("a new leader");
    assert_ne!(new_leader, leader, "the leader moved to a surviving node");

    // Neither replica was restarted: the same processes, still running and ready.
    let killed = format!("127.0.0.1:{}/", cluster.nodes[leader].amqp_port);
    let mut reconnects = Vec::new();
    for (w, port) in [(&mut a, port_a), (&mut b, port_b)] {
        assert!(w.child.try_wait().unwrap().is_none(), "the replica kept running; log:\n{}", w.log_tail());
        wait_until(LIMIT, "ready again", || async { matches!(http_get(port, "/readyz"), Some((200, _))) })
            .await;
        let log = std::fs::read_to_string(&w.log).unwrap();
        let to = reconnections(&log);
        assert!(!to.is_empty(), "the replica reconnected; log:\n{}", w.log_tail());
        assert!(to.iter().all(|b| !b.starts_with(&killed)), "to a surviving node, not {killed}: {to:?}");
        let (_, metrics) = http_get(port, "/metrics").unwrap();
        let counted = metric(&metrics, "metadata_worker_broker_reconnects_total").unwrap_or(0.0);
        assert_eq!(counted as usize, to.len(), "metrics and logs agree");
        assert!(!log.contains("guest:guest"), "no credentials in the log");
        reconnects.push((to.len(), redelivered_jobs(&log)));
    }

    // Every asset exactly once, with the right values.
    let rows = scene.all_rows().await;
    assert_eq!(rows.len() as i64, total);
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.asset_id.as_str()).collect();
    let want: BTreeSet<String> =
        (0..JOBS).flat_map(|j| (0..FILES.len()).map(move |i| format!("job{j:03}-{i}"))).collect();
    assert_eq!(ids, want.iter().map(String::as_str).collect());
    let expectations: Vec<_> = FILES.iter().map(|f| expected(f)).collect();
    for row in &rows {
        let index: usize = row.asset_id.rsplit_once('-').unwrap().1.parse().unwrap();
        assert_eq!((row.status.as_str(), row.error_code.as_deref()), ("ok", None), "{row:?}");
        assert_matches(&row.metadata, &expectations[index], &row.asset_id);
    }
    let survivor_url = cluster.url(survivor);
    assert_eq!(ready(&survivor_url, &scene.jobs_queue()).await, 0);
    assert_eq!(ready(&survivor_url, &scene.retry_queue()).await, 0);
    let dlq = ready(&survivor_url, &scene.dead_letter_queue()).await;
    assert_eq!(dlq, 0, "nothing dead-lettered");
    // The amqp sink delivered every asset's result (some twice: redelivered jobs).
    let conn = Connection::connect(&survivor_url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut published = BTreeSet::new();
    let mut messages = 0usize;
    while let Some(m) = ch.basic_get(&results, BasicGetOptions { no_ack: true }).await.unwrap() {
        messages += 1;
        if m.delivery.routing_key.as_str() == "asset.v1" {
            published.insert(
                m.delivery.properties.message_id().as_ref().map(|id| id.to_string()).unwrap_or_default(),
            );
        }
    }
    let _ = conn.close(200, "").await;
    assert_eq!(published, want, "one result message at least per asset");

    // The killed node comes back on its data directory and rejoins.
    cluster.restart(leader);
    let mut all: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    all.sort();
    wait_until(LIMIT, "three running nodes", || async { cluster.running_nodes(survivor) == all }).await;
    assert_eq!(cluster.running_nodes(leader), all, "the restarted node sees the whole cluster");

    for w in [&mut a, &mut b] {
        w.signal("TERM");
        assert!(w.wait(LIMIT).await.success(), "clean exit; log:\n{}", w.log_tail());
        assert!(w.temp_files().is_empty(), "left in {:?}: {:?}", w.temp_dir, w.temp_files());
    }
    // Rows written again by redelivered jobs (an idempotent upsert, still one row each).
    let rewritten: i64 = scene
        .pg
        .query_one(
            "SELECT COALESCE(sum(n_tup_upd), 0)::bigint FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'asset_metadata'",
            &[&scene.schema],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    eprintln!(
        "cluster failover: jobs={JOBS} assets={} rows={} rows_at_kill={rows_at_kill} reconnections={:?} \
         redelivered_jobs={:?} rows_rewritten={rewritten} result_messages={messages} dlq={dlq} leader=node{} new_leader=node{} \
         cluster_start={:.1}s kill_to_done={:.1}s total={:.1}s",
        total,
        rows.len(),
        reconnects.iter().map(|r| r.0).collect::<Vec<_>>(),
        reconnects.iter().map(|r| r.1).collect::<Vec<_>>(),
        leader + 1,
        new_leader + 1,
        cluster_up.as_secs_f64(),
        failover_to_done.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    scene.cleanup().await;
    drop(cluster);
}
