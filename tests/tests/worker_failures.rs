//! The worker against real RabbitMQ and PostgreSQL: a malformed message is
//! dead-lettered with its reason while consuming goes on; a bad customer file is an
//! error result and the job is acked; a transient sink failure (a real PostgreSQL
//! serialization failure raised by a trigger) is retried until it succeeds, or
//! dead-lettered once MAX_ATTEMPTS are used up.

use std::time::Duration;

use asset_queue_headers::*;
use pipeline_tests::*;

/// The header names, as the asset-queue crate writes them (kept literal here: they are
/// the message contract the AsyncAPI document names).
mod asset_queue_headers {
    pub const REASON: &str = "x-reason";
    pub const ERROR_CODE: &str = "x-error-code";
    pub const ATTEMPT: &str = "x-attempt";
}

fn header(props: &lapin::BasicProperties, key: &str) -> Option<String> {
    use lapin::types::AMQPValue;
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::LongUInt(n) => Some(n.to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn a_malformed_message_is_dead_lettered_with_its_reason_and_consuming_goes_on() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("malformed").await;
    let (mut worker, port) = scene.ready_worker(1, &[]).await;

    scene.publish(b"{ this is not json").await;
    scene.publish(br#"{"schema": "import-job/v9", "job_id": "from-the-future"}"#).await;
    let mut wrong_org = scene.job("wrong-org", &["image/png-rgb8.png"]);
    wrong_org["storage"]["org_id"] = "someone-else".into();
    scene.publish_job(&wrong_org).await;
    scene.publish_job(&scene.job("good", &["image/png-rgb8.png", "image/gif-still.gif"])).await;

    wait_until(LIMIT, "the good job to complete", || async { scene.jobs_completed().await == 1 }).await;
    wait_until(LIMIT, "three dead letters", || async { scene.ready(&scene.dead_letter_queue()).await == 3 })
        .await;
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(metric(&metrics, r#"metadata_worker_dead_letters_total{reason="rejected"}"#), Some(3.0));

    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success(), "exit 0; log:\n{}", worker.log_tail());
    assert_eq!(scene.rows().await, 2);

    let dead = scene.take_all(&scene.dead_letter_queue()).await;
    let reasons: Vec<String> = dead.iter().map(|(p, _)| header(p, REASON).unwrap()).collect();
    assert!(reasons[0].starts_with("not a valid import job"), "{reasons:?}");
    assert!(reasons[1].contains("unknown schema \"import-job/v9\""), "{reasons:?}");
    assert!(reasons[2].contains("belongs to org \"someone-else\""), "{reasons:?}");
    for (props, _) in &dead {
        assert_eq!(header(props, ERROR_CODE).as_deref(), Some("invalid_job"));
    }
    assert_eq!(dead[0].1, b"{ this is not json", "the body is kept as it came");
    assert_eq!(scene.ready(&scene.jobs_queue()).await, 0);
    assert!(worker.temp_files().is_empty(), "{:?}", worker.temp_files());
    scene.cleanup().await;
}

#[tokio::test]
async fn a_bad_customer_file_is_an_error_result_and_the_job_is_acked() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("permanent").await;
    let bad = workspace_root().join("fixtures/assets/bad/image-png-header-cut.png");
    std::fs::copy(&bad, scene.assets_root().join("cut.png")).unwrap();
    std::fs::write(scene.assets_root().join("notes.bin"), [0u8, 159, 146, 150, 0, 1, 2, 3]).unwrap();
    let (mut worker, _) = scene.ready_worker(1, &[]).await;

    let files = ["image/png-rgb8.png", "missing.png", "cut.png", "../../etc/passwd", "notes.bin"];
    scene.publish_job(&scene.job("mixed", &files)).await;
    wait_until(LIMIT, "the job to complete", || async { scene.jobs_completed().await == 1 }).await;
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());

    let mut rows = scene.all_rows().await;
    rows.sort_by(|a, b| a.asset_id.cmp(&b.asset_id));
    let summary: Vec<(&str, &str, Option<&str>)> =
        rows.iter().map(|r| (r.asset_id.as_str(), r.status.as_str(), r.error_code.as_deref())).collect();
    let cut_code =
        probe_cli(&scene.assets_root().join("cut.png"))["error"]["code"].as_str().unwrap().to_string();
    let bin_code =
        probe_cli(&scene.assets_root().join("notes.bin"))["error"]["code"].as_str().unwrap().to_string();
    assert_eq!(
        summary,
        vec![
            ("mixed-0", "ok", None),
            ("mixed-1", "error", Some("not_found")),
            ("mixed-2", "error", Some(cut_code.as_str())),
            ("mixed-3", "error", Some("url_not_in_storage")),
            ("mixed-4", "error", Some(bin_code.as_str())),
        ]
    );
    assert_matches(&rows[0].metadata, &expected("image/png-rgb8.png"), "mixed-0");
    assert_eq!(rows[1].bytes_downloaded, 0);
    assert_eq!(rows[2].bytes_downloaded as u64, std::fs::metadata(&bad).unwrap().len());
    // Acked, not retried, not dead-lettered.
    assert_eq!(scene.ready(&scene.jobs_queue()).await, 0);
    assert_eq!(scene.ready(&scene.retry_queue()).await, 0);
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0);
    let row = scene
        .pg
        .query_one(
            &format!(
                "SELECT assets_ok, assets_failed FROM {}.job_completed WHERE job_id = 'mixed'",
                scene.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 4));
    scene.cleanup().await;
}

#[tokio::test]
async fn a_transient_sink_failure_is_retried_and_dead_lettered_once_attempts_run_out() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("transient").await;
    let (mut worker, port) = scene.ready_worker(1, &[("MAX_ATTEMPTS", "3")]).await;
    // The worker has migrated; make PostgreSQL itself refuse some writes with a
    // serialization failure (SQLSTATE 40001), the textbook transient error.
    let s = &scene.schema;
    scene
        .pg
        .batch_execute(&format!(
            "CREATE SEQUENCE {s}.flaky_calls;
             CREATE FUNCTION {s}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.asset_id LIKE 'flaky-%' AND nextval('{s}.flaky_calls') <= 2 THEN
                 RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = '40001';
               END IF;
               IF NEW.asset_id LIKE 'doomed-%' THEN
                 RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = '40001';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON {s}.asset_metadata
               FOR EACH ROW EXECUTE FUNCTION {s}.refuse();"
        ))
        .await
        .unwrap();

    scene.publish_job(&scene.job("flaky", &["image/jpeg-baseline.jpg"])).await;
    scene.publish_job(&scene.job("doomed", &["image/gif-still.gif"])).await;
    wait_until(LIMIT, "the flaky job to complete", || async { scene.jobs_completed().await == 1 }).await;
    wait_until(LIMIT, "the doomed job to be dead-lettered", || async {
        scene.ready(&scene.dead_letter_queue()).await == 1
    })
    .await;
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());

    let rows = scene.all_rows().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].asset_id.as_str(), rows[0].status.as_str()), ("flaky-0", "ok"));
    assert_matches(&rows[0].metadata, &expected("image/jpeg-baseline.jpg"), "flaky-0");
    let calls: i64 =
        scene.pg.query_one(&format!("SELECT last_value FROM {s}.flaky_calls"), &[]).await.unwrap().get(0);
    assert_eq!(calls, 3, "two refused writes, then the one that went through");
    // flaky: attempts 1 and 2 retried; doomed: 1 and 2 retried, 3 dead-lettered.
    assert_eq!(metric(&metrics, "metadata_worker_retries_total"), Some(4.0), "{metrics}");
    assert_eq!(metric(&metrics, r#"metadata_worker_dead_letters_total{reason="exhausted"}"#), Some(1.0));

    let dead = scene.take_all(&scene.dead_letter_queue()).await;
    let props = &dead[0].0;
    let reason = header(props, REASON).unwrap();
    assert!(reason.starts_with("gave up after 3 attempts: writing asset doomed-0"), "{reason}");
    assert_eq!(header(props, ATTEMPT).as_deref(), Some("3"));
    assert_eq!(header(props, ERROR_CODE).as_deref(), Some("upstream"));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&dead[0].1).unwrap()["job_id"], "doomed");
    assert_eq!(scene.ready(&scene.retry_queue()).await, 0);
    assert_eq!(scene.ready(&scene.jobs_queue()).await, 0);
    scene.cleanup().await;
}

#[tokio::test]
async fn a_job_naming_local_storage_is_refused_unless_allowed() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("nolocal").await;
    let (mut worker, _) = scene.ready_worker(1, &[("ALLOW_LOCAL_STORAGE", "false")]).await;
    scene.publish_job(&scene.job("reads-my-disk", &["image/png-rgb8.png"])).await;
    wait_until(LIMIT, "the job to be dead-lettered", || async {
        scene.ready(&scene.dead_letter_queue()).await == 1
    })
    .await;
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    assert_eq!(scene.rows().await, 0);
    let dead = scene.take_all(&scene.dead_letter_queue()).await;
    let reason = header(&dead[0].0, REASON).unwrap();
    assert!(reason.contains("storage provider \"local\" is disabled"), "{reason}");
    assert_eq!(header(&dead[0].0, ERROR_CODE).as_deref(), Some("invalid_integration"));
    scene.cleanup().await;
}
