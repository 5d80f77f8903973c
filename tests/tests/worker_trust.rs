//! Issue 8, messages: what a publisher can put on the queue must not disable retries,
//! fake progress, exhaust memory, break the broker connection for its neighbours, or
//! make a job retry forever on a result no database can store.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};
use pipeline_tests::*;

const LIMIT: Duration = Duration::from_secs(90);

fn header(props: &lapin::BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::LongUInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Publishes with headers of the publisher's choosing.
async fn publish_with_headers(scene: &Scene, body: &[u8], headers: FieldTable) {
    let ch = scene.mq.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let confirm = ch
        .basic_publish(
            &scene.prefix,
            "job.v1",
            lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() },
            body,
            lapin::BasicProperties::default().with_delivery_mode(2).with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let _ = ch.close(200, "").await;
}

/// Installs a trigger on the scene's results table: SQLSTATE `code` for asset ids
/// matching `pattern`, on the first `times` writes (0: always; counted by a sequence,
/// which a refused write does not roll back), and a table counting the writes that went
/// through, per asset.
async fn refuse_writes(scene: &Scene, pattern: &str, code: &str, times: i64) {
    let s = &scene.schema;
    scene
        .pg
        .batch_execute(&format!(
            "CREATE TABLE {s}.write_attempts (asset_id text PRIMARY KEY, n bigint NOT NULL);
             CREATE SEQUENCE {s}.refusals;
             CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.asset_id LIKE '{pattern}' AND ({times} = 0 OR nextval('{s}.refusals') <= {times}) THEN
                 RAISE EXCEPTION 'injected failure' USING ERRCODE = '{code}';
               END IF;
               INSERT INTO {s}.write_attempts VALUES (NEW.asset_id, 1)
                 ON CONFLICT (asset_id) DO UPDATE SET n = {s}.write_attempts.n + 1;
               RETURN NEW;
             END $$;
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON {s}.asset_metadata
               FOR EACH ROW EXECUTE FUNCTION {s}.refuse();"
        ))
        .await
        .unwrap();
}

/// Writes that went through, per asset.
async fn attempts(scene: &Scene) -> Vec<(String, i64)> {
    let sql = format!("SELECT asset_id, n FROM {}.write_attempts ORDER BY asset_id", scene.schema);
    scene.pg.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn a_publishers_attempt_header_does_not_disable_retries() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("forged_attempt").await;
    let (mut worker, port) = scene.ready_worker(1, &[("MAX_ATTEMPTS", "3")]).await;
    // Serialization failures (40001) roll the trigger's own count back with the write, so
    // refuse by a sequence instead: the first two writes of flaky-* fail.
    let s = &scene.schema;
    scene
        .pg
        .batch_execute(&format!(
            "CREATE SEQUENCE {s}.calls;
             CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.asset_id LIKE 'flaky-%' AND nextval('{s}.calls') <= 2 THEN
                 RAISE EXCEPTION 'injected' USING ERRCODE = '40001';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON {s}.asset_metadata
               FOR EACH ROW EXECUTE FUNCTION {s}.refuse();"
        ))
        .await
        .unwrap();
    let mut forged = FieldTable::default();
    forged.insert("x-attempt".into(), AMQPValue::LongUInt(99));
    forged.insert("x-progress".into(), AMQPValue::LongString(LongString::from(b"ok=500;failed=0;".to_vec())));
    let body = serde_json::to_vec(&scene.job("flaky", &["image/png-rgb8.png"])).unwrap();
    publish_with_headers(&scene, &body, forged).await;

    wait_until(LIMIT, "the job to complete after its retries", || async {
        scene.jobs_completed().await == 1
    })
    .await;
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    assert_eq!(metric(&metrics, "metadata_worker_retries_total"), Some(2.0), "{metrics}");
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0);
    let sql = format!("SELECT assets_total, assets_ok FROM {s}.job_completed WHERE job_id = 'flaky'");
    let row = scene.pg.query_one(&sql, &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 1), "the forged x-progress counted nothing");
    scene.cleanup().await;
}

/// A retry used to download, probe and write every asset of the job again; it now
/// carries only the assets whose results are not written, and the job's completion
/// still counts them all.
#[tokio::test]
async fn a_retry_redoes_only_the_unfinished_assets() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("resume").await;
    let (mut worker, _) = scene.ready_worker(1, &[("MAX_ATTEMPTS", "3"), ("CONCURRENCY", "1")]).await;
    // 40P01 (deadlock detected): a transient fault of one statement, which retries the
    // job (unlike an unavailable sink, which pauses the replica).
    refuse_writes(&scene, "resume-1", "40P01", 1).await;
    let files = ["image/png-rgb8.png", "image/gif-still.gif", "image/jpeg-baseline.jpg", "audio/wav-s16.wav"];
    scene.publish_job(&scene.job("resume", &files)).await;
    wait_until(LIMIT, "the job to complete", || async { scene.jobs_completed().await == 1 }).await;
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());

    // Every asset was written once: the retry did not redo the three already done.
    let seen = attempts(&scene).await;
    assert_eq!(
        seen,
        vec![
            ("resume-0".to_string(), 1),
            ("resume-1".to_string(), 1),
            ("resume-2".to_string(), 1),
            ("resume-3".to_string(), 1)
        ]
    );
    let log = std::fs::read_to_string(&worker.log).unwrap();
    let started: Vec<&str> = log.lines().filter(|l| l.contains("job received")).collect();
    assert_eq!(started.len(), 2, "one retry");
    // The retry carries the refused asset and those the job had not started when it
    // stopped at the fault, never the one already written.
    let assets = |line: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["assets"].as_u64().unwrap()
    };
    assert_eq!(assets(started[0]), 4, "{}", started[0]);
    assert!((1..=3).contains(&assets(started[1])), "the retry carried {}", started[1]);
    let sql = format!(
        "SELECT assets_total, assets_ok, assets_failed FROM {}.job_completed WHERE job_id = 'resume'",
        scene.schema
    );
    let row = scene.pg.query_one(&sql, &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (4, 4, 0));
    assert_eq!(scene.rows().await, 4);
    scene.cleanup().await;
}

/// A result the database refuses for good (SQLSTATE class 22/23) used to be retried
/// five times; it is dead-lettered at once.
#[tokio::test]
async fn a_result_the_database_refuses_for_good_is_dead_lettered_without_retries() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("permanent_db").await;
    let (mut worker, port) = scene.ready_worker(1, &[("MAX_ATTEMPTS", "5")]).await;
    refuse_writes(&scene, "doomed-%", "22023", 0).await;
    scene.publish_job(&scene.job("doomed", &["image/png-rgb8.png"])).await;
    wait_until(LIMIT, "the dead letter", || async { scene.ready(&scene.dead_letter_queue()).await == 1 })
        .await;
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    assert_eq!(metric(&metrics, "metadata_worker_retries_total"), Some(0.0), "{metrics}");
    let dead = scene.take_all(&scene.dead_letter_queue()).await;
    let reason = header(&dead[0].0, "x-reason").unwrap();
    assert!(reason.contains("writing asset doomed-0"), "{reason}");
    assert_eq!(header(&dead[0].0, "x-attempt").as_deref(), Some("1"));
    scene.cleanup().await;
}

#[tokio::test]
async fn a_nul_in_any_field_is_refused_before_any_work() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("nul").await;
    let (mut worker, _) = scene.ready_worker(1, &[]).await;
    let mut job = scene.job("nul-job", &["image/png-rgb8.png"]);
    job["assets"][0]["asset_id"] = "a\u{0}b".into();
    scene.publish_job(&job).await;
    wait_until(LIMIT, "the dead letter", || async { scene.ready(&scene.dead_letter_queue()).await == 1 })
        .await;
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    let dead = scene.take_all(&scene.dead_letter_queue()).await;
    let reason = header(&dead[0].0, "x-reason").unwrap();
    assert!(reason.contains("/assets/0/asset_id holds a NUL"), "{reason}");
    assert_eq!(header(&dead[0].0, "x-error-code").as_deref(), Some("invalid_job"));
    assert_eq!(scene.rows().await, 0);
    scene.cleanup().await;
}

/// One 53 MB job once raised a replica's RSS to 1.18 GB. A message over MAX_JOB_BYTES
/// is refused from its size, dead-lettered by the broker, and the replica goes on.
#[tokio::test]
async fn an_oversized_job_is_dead_lettered_from_its_size_and_the_next_job_runs() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("oversized").await;
    let (mut worker, _) = scene.ready_worker(1, &[("MAX_JOB_BYTES", "65536")]).await;
    let files: Vec<&str> = std::iter::repeat_n("image/png-rgb8.png", 2000).collect();
    let big = scene.job("big", &files);
    assert!(serde_json::to_vec(&big).unwrap().len() > 65536);
    scene.publish_job(&big).await;
    scene.publish_job(&scene.job("small", &["image/png-rgb8.png"])).await;
    wait_until(LIMIT, "the small job", || async { scene.jobs_completed().await == 1 }).await;
    wait_until(LIMIT, "the dead letter", || async { scene.ready(&scene.dead_letter_queue()).await == 1 })
        .await;
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    assert_eq!(scene.rows().await, 1);
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(log.contains("larger than the 65536 bytes a job may have"), "{log}");
    scene.cleanup().await;
}
