//! Issue 8, faults that must retry, not lose data: a sink that answers no writes, a
//! database that goes away for longer than the retry budget, a temp dir that fills up,
//! a second signal during the drain, a probe that overruns its budget, and the
//! downloads a killed replica leaves on a shared volume.

use std::time::{Duration, Instant};

use pipeline_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

async fn readyz(port: u16) -> (u16, String) {
    http_get(port, "/readyz").unwrap_or((0, String::new()))
}

/// Every write hanging on a table lock used to leave /readyz green while jobs burned
/// their attempts. With a statement timeout the sink is "unavailable": the replica
/// pauses, says so, spends no attempt, and finishes everything once the lock goes.
#[tokio::test]
async fn a_locked_table_pauses_the_replica_and_nothing_is_dead_lettered() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("locked").await;
    let env = [("STATEMENT_TIMEOUT", "300ms"), ("MAX_ATTEMPTS", "1"), ("RETRY_DELAY", "50ms")];
    let (mut worker, port) = scene.ready_worker(1, &env).await;
    let (locker, conn) = tokio_postgres::connect(DATABASE_URL, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    locker
        .batch_execute(&format!("BEGIN; LOCK TABLE {}.asset_metadata IN SHARE MODE", scene.schema))
        .await
        .unwrap();
    let jobs: Vec<_> = (0..6)
        .map(|i| scene.job(&format!("locked-{i}"), &["image/png-rgb8.png", "image/gif-still.gif"]))
        .collect();
    scene.publish_jobs(&jobs).await;

    wait_until(LIMIT, "/readyz to say the sink is unavailable", || async {
        let (status, body) = readyz(port).await;
        status == 503 && body.contains("sink unavailable")
    })
    .await;
    // Held well past several statement timeouts and the attempt budget.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0);
    assert_eq!(scene.ready(&scene.retry_queue()).await, 0, "no attempt was spent");

    locker.batch_execute("COMMIT").await.unwrap();
    wait_until(LIMIT, "every job to complete", || async { scene.jobs_completed().await == 6 }).await;
    wait_until(LIMIT, "/readyz to be green again", || async { readyz(port).await.0 == 200 }).await;
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    assert_eq!(scene.rows().await, 12);
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0);
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(log.contains("pausing: no new jobs until it recovers"), "{log}");
    scene.cleanup().await;
}

/// A PostgreSQL outage longer than the retry budget (here: one attempt, and the server
/// gone for 15 s; `OUTAGE_SECONDS=600` stages the ten minutes) used to
/// dead-letter every queued job. Now nothing is lost, nothing is dead-lettered, and
/// every asset has exactly one row. The server is the test's own.
#[tokio::test]
async fn a_database_outage_longer_than_the_retry_budget_loses_nothing() {
    if !services_up() {
        return;
    }
    let Some(pg) = PgCluster::start() else { return };
    let scene = Scene::new("outage").await;
    let env = [
        ("DATABASE_URL", pg.url()),
        ("MAX_ATTEMPTS", "1".to_string()),
        ("STATEMENT_TIMEOUT", "1s".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut worker, port) = scene.ready_worker(1, &env).await;
    let files = ["image/png-rgb8.png", "image/gif-still.gif", "image/jpeg-baseline.jpg", "audio/wav-s16.wav"];
    let jobs: Vec<_> = (0..30).map(|i| scene.job(&format!("outage-{i}"), &files)).collect();
    pg.down();
    scene.publish_jobs(&jobs).await;
    wait_until(LIMIT, "/readyz to report the outage", || async { readyz(port).await.0 == 503 }).await;
    let outage = std::env::var("OUTAGE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    tokio::time::sleep(Duration::from_secs(outage)).await;
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0, "nothing dead-lettered during the outage");
    pg.up();

    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0)).unwrap_or(-1) }
    };
    wait_until(LIMIT, "every job to complete after the outage", || async {
        count("SELECT count(*) FROM job_completed").await == 30
    })
    .await;
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success(), "{}", worker.log_tail());
    assert_eq!(count("SELECT count(*) FROM asset_metadata").await, 120);
    assert_eq!(count("SELECT count(DISTINCT (org_id, project_id, asset_id)) FROM asset_metadata").await, 120);
    assert_eq!(count("SELECT count(*) FROM asset_metadata WHERE status <> 'ok'").await, 0);
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0);
    assert_eq!(scene.ready(&scene.jobs_queue()).await, 0);
    assert!(worker.temp_files().is_empty(), "{:?}", worker.temp_files());
    scene.cleanup().await;
}

/// A full TEMP_DIR (ENOSPC) used to write permanent `io` error rows and ack the jobs,
/// with no log line saying why. Now the job goes back to the queue, the replica is not
/// ready and says "no space left on device" with its errno, and once there is room
/// again the job completes with its real result.
#[tokio::test]
async fn a_full_temp_dir_hands_the_job_back_and_pauses_until_there_is_room() {
    if !services_up() {
        return;
    }
    let Some(disk) = SmallDisk::mount("128k") else { return };
    let scene = Scene::new("enospc").await;
    let big = scene.assets_root().join("big.wav");
    let mut wav = std::fs::read(workspace_root().join("fixtures/assets/audio/wav-s16.wav")).unwrap();
    while wav.len() < 1 << 20 {
        wav.extend_from_slice(&[0u8; 4096]);
    }
    std::fs::write(&big, &wav).unwrap();
    let temp = disk.dir.path().join("worker");
    let temp_s = temp.display().to_string();
    let env = [("TEMP_DIR", temp_s.as_str()), ("FETCH_MODE", "full")];
    let (mut worker, port) = scene.ready_worker(1, &env).await;
    scene.publish_job(&scene.job("full-disk", &["big.wav", "image/png-rgb8.png"])).await;

    wait_until(LIMIT, "/readyz to report the full temp dir", || async {
        let (status, body) = readyz(port).await;
        status == 503 && body.contains("temp dir exhausted")
    })
    .await;
    let log = std::fs::read_to_string(&worker.log).unwrap();
    let line = log.lines().find(|l| l.contains("local resources exhausted")).expect("a log line says why");
    assert!(line.contains("\"errno\":28") && line.contains("No space left on device"), "{line}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(scene.jobs_completed().await, 0);
    assert!(
        scene.all_rows().await.iter().all(|r| r.error_code.as_deref() != Some("io")),
        "no permanent io row was written"
    );
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0);

    disk.resize("64m");
    wait_until(LIMIT, "the job to complete once there is room", || async {
        scene.jobs_completed().await == 1
    })
    .await;
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    let rows = scene.all_rows().await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.status == "ok"), "{rows:?}");
    assert_eq!(files_below(&temp).iter().filter(|p| !p.ends_with(".metadata-worker.lock")).count(), 0);
    scene.cleanup().await;
}

/// A second SIGTERM (or SIGINT) during the drain stops at once: the held job goes back
/// to the queue, the temp dir is emptied, the process exits well before SHUTDOWN_GRACE.
#[tokio::test]
async fn a_second_signal_during_the_drain_stops_at_once() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("second_signal").await;
    let env = [("STATEMENT_TIMEOUT", "300ms"), ("SHUTDOWN_GRACE", "60s")];
    let (mut worker, _) = scene.ready_worker(1, &env).await;
    let (locker, conn) = tokio_postgres::connect(DATABASE_URL, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    locker
        .batch_execute(&format!("BEGIN; LOCK TABLE {}.asset_metadata IN SHARE MODE", scene.schema))
        .await
        .unwrap();
    scene.publish_job(&scene.job("held", &["image/png-rgb8.png"])).await;
    wait_until(LIMIT, "the job to be held", || async {
        std::fs::read_to_string(&worker.log).unwrap_or_default().contains("pausing")
    })
    .await;
    worker.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    worker.signal("INT");
    assert!(worker.wait(Duration::from_secs(20)).await.success(), "{}", worker.log_tail());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(scene.ready(&scene.jobs_queue()).await, 1, "the job is back in the queue");
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0);
    assert!(worker.temp_files().is_empty(), "{:?}", worker.temp_files());
    scene.cleanup().await;
}

/// The children of `pid` and their state letters (R running, S sleeping…).
fn children(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in list.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()).unwrap_or('?');
            out.push((child, state));
        }
    }
    out
}

/// A probe that overruns its budget is killed: the asset gets `timeout`, the job goes
/// on, and no probe process is left burning CPU (threads used to be abandoned running).
#[tokio::test]
async fn a_probe_past_its_budget_is_killed_and_the_asset_times_out() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("probe_budget").await;
    let env = [("PROBE_TIMEOUT", "1ms"), ("PROBE_PROCESSES", "2"), ("FETCH_MODE", "full")];
    let (mut worker, _) = scene.ready_worker(1, &env).await;
    let files = ["image/png-rgb8.png", "image/gif-still.gif", "image/jpeg-baseline.jpg", "audio/wav-s16.wav"];
    scene.publish_job(&scene.job("budget", &files)).await;
    wait_until(LIMIT, "the job to complete", || async { scene.jobs_completed().await == 1 }).await;
    let rows = scene.all_rows().await;
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().any(|r| r.error_code.as_deref() == Some("timeout")), "{rows:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kids = children(worker.child.id());
    assert!(kids.len() <= 2, "at most PROBE_PROCESSES probe processes: {kids:?}");
    assert!(kids.iter().all(|(_, state)| *state != 'R'), "a probe process is still running: {kids:?}");
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    scene.cleanup().await;
}

/// After a SIGKILL a replica's partial downloads stayed on disk until a process started
/// on the same TEMP_DIR. Replicas sharing a volume now sweep each other's: a directory
/// whose lock no process holds is a dead replica's.
#[tokio::test]
async fn a_dead_replicas_downloads_on_a_shared_volume_are_swept() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("sweep").await;
    let volume = scene.dir.path().join("volume");
    let dead = volume.join("pod-dead");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join(".metadata-worker.lock"), b"").unwrap();
    std::fs::write(dead.join("mw-1-abc.part"), b"a customer's partial file").unwrap();
    let mine = volume.join("pod-alive").display().to_string();
    let env = [("TEMP_DIR", mine.as_str()), ("TEMP_SWEEP_INTERVAL", "200ms")];
    let (mut worker, _) = scene.ready_worker(1, &env).await;
    wait_until(LIMIT, "the dead replica's file to be removed", || async {
        !dead.join("mw-1-abc.part").exists()
    })
    .await;
    // A second process on the same TEMP_DIR is refused at start.
    let mut twin = scene.worker(2, &[("TEMP_DIR", mine.as_str())]);
    let status = twin.wait(Duration::from_secs(30)).await;
    assert!(!status.success());
    let log = std::fs::read_to_string(&twin.log).unwrap();
    assert!(log.contains("in use by another worker process"), "{log}");
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    scene.cleanup().await;
}
