//! The broker drops the worker's connection mid-run (`rabbitmqctl close_connection`):
//! the worker reconnects with backoff and every job still completes, including jobs
//! published after the drop, which only a reconnected consumer can receive.

use std::process::Command;
use std::time::Duration;

use pipeline_tests::*;

const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn the_worker_reconnects_after_the_broker_closes_its_connections() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("reconnect").await;
    let (mut worker, port) = scene.ready_worker(1, &[("CONCURRENCY", "2")]).await;
    let jobs: Vec<_> = (0..100).map(|j| scene.job(&format!("before{j:03}"), &FILES)).collect();
    scene.publish_jobs(&jobs).await;
    wait_until(LIMIT, "some assets written", || async { scene.rows().await >= 40 }).await;

    // The broker closes the worker's connection, exactly as `close_all_connections`
    // would, but only ours: tests of other crates may be using the broker meanwhile.
    let name = format!("\"metadata-worker@{}\"", worker.child.id());
    let listed = Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl (installed with the broker) runs");
    let pids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.contains(&name))
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect();
    assert_eq!(pids.len(), 1, "one broker connection named {name}");
    let out = Command::new("rabbitmqctl")
        .args(["close_connection", &pids[0], "test: worker_reconnect"])
        .output()
        .unwrap();
    assert!(out.status.success(), "rabbitmqctl: {}", String::from_utf8_lossy(&out.stderr));
    let jobs: Vec<_> = (0..50).map(|j| scene.job(&format!("after{j:03}"), &FILES)).collect();
    scene.publish_jobs(&jobs).await;

    wait_until(LIMIT, "all 150 jobs completed", || async { scene.jobs_completed().await == 150 }).await;
    wait_until(LIMIT, "ready again", || async { matches!(http_get(port, "/readyz"), Some((200, _))) }).await;
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(log.contains("broker connection lost"), "the drop was noticed; log:\n{}", worker.log_tail());
    assert!(!log.contains("hunter") && !log.contains("guest:guest"), "no credentials in logs");
    worker.signal("TERM");
    assert!(worker.wait(LIMIT).await.success());
    assert_eq!(scene.rows().await, 150 * FILES.len() as i64);
    assert_eq!(scene.ready(&scene.jobs_queue()).await, 0);
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0);
    assert!(worker.temp_files().is_empty());
    scene.cleanup().await;
}
