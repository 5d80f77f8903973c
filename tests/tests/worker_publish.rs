//! `metadata-worker publish JOB.json...`: every file is checked before anything is
//! published, and published jobs land in the jobs queue, confirmed, bodies unchanged.

use std::process::Command;

use pipeline_tests::*;

#[tokio::test]
async fn publish_checks_every_file_first_then_puts_the_jobs_on_the_queue() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("publish").await;
    let dir = scene.dir.path();
    let good = dir.join("good.json");
    let other = dir.join("other.json");
    let bad = dir.join("bad.json");
    std::fs::write(&good, serde_json::to_vec_pretty(&scene.job("pub-1", &FILES)).unwrap()).unwrap();
    std::fs::write(&other, serde_json::to_vec(&scene.job("pub-2", &FILES[..1])).unwrap()).unwrap();
    std::fs::write(&bad, br#"{"schema": "import-job/v1", "job_id": "x"}"#).unwrap();

    let publish = |files: &[&std::path::Path]| {
        Command::new(worker_bin())
            .arg("publish")
            .args(files)
            .env("AMQP_URL", AMQP_URL)
            .env("JOBS_EXCHANGE", &scene.prefix)
            .env("JOBS_QUEUE", scene.jobs_queue())
            .env("RETRY_QUEUE", scene.retry_queue())
            .env("DEAD_LETTER_QUEUE", scene.dead_letter_queue())
            .output()
            .unwrap()
    };

    let refused = publish(&[&good, &bad]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bad.json"), "the bad file is named");

    let out = publish(&[&good, &other]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let messages = scene.take_all(&scene.jobs_queue()).await;
    assert_eq!(messages.len(), 2, "only the second run published");
    assert_eq!(messages[0].1, std::fs::read(&good).unwrap(), "the body is the file as written");
    assert_eq!(messages[1].1, std::fs::read(&other).unwrap());
    assert_eq!(messages[0].0.message_id().as_ref().map(|m| m.as_str()), Some("pub-1"));
    scene.cleanup().await;
}
