//! At-least-once under a crash: 200 jobs of 4 assets through two worker processes, one
//! of them SIGKILLed mid-run and restarted on the same temp dir. Every asset ends with
//! exactly one row holding the right values, every job is completed, and neither
//! worker's temp dir keeps a file.

use std::collections::BTreeSet;
use std::time::Duration;

use pipeline_tests::*;

const JOBS: usize = 200;
const LIMIT: Duration = Duration::from_secs(300);

#[tokio::test]
async fn two_replicas_one_killed_mid_run_every_asset_has_exactly_one_right_row() {
    if !services_up() {
        return;
    }
    let scene = Scene::new("crash").await;
    let (mut a, _) = scene.ready_worker(1, &[]).await;
    let (mut b, _) = scene.ready_worker(2, &[]).await;

    let jobs: Vec<_> = (0..JOBS).map(|j| scene.job(&format!("job{j:03}"), &FILES)).collect();
    scene.publish_jobs(&jobs).await;
    let total = (JOBS * FILES.len()) as i64;
    wait_until(LIMIT, "an eighth of the assets", || async { scene.rows().await >= total / 8 }).await;
    a.signal("KILL");
    assert!(!a.wait(LIMIT).await.success(), "SIGKILL is not a clean exit");
    let rows_at_kill = scene.rows().await;
    let (mut a, _) = scene.ready_worker(1, &[]).await;

    wait_until(LIMIT, "every job completed", || async { scene.jobs_completed().await == JOBS as i64 }).await;
    assert!(rows_at_kill < total, "the kill happened mid-run ({rows_at_kill} of {total} rows)");
    for w in [&mut a, &mut b] {
        w.signal("TERM");
        assert!(w.wait(LIMIT).await.success(), "clean exit; log:\n{}", w.log_tail());
        assert!(w.temp_files().is_empty(), "left in {:?}: {:?}", w.temp_dir, w.temp_files());
    }

    let rows = scene.all_rows().await;
    assert_eq!(rows.len() as i64, total);
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.asset_id.as_str()).collect();
    let want: BTreeSet<String> =
        (0..JOBS).flat_map(|j| (0..FILES.len()).map(move |i| format!("job{j:03}-{i}"))).collect();
    assert_eq!(ids, want.iter().map(String::as_str).collect());
    let expectations: Vec<_> = FILES.iter().map(|f| expected(f)).collect();
    let sizes: Vec<i64> =
        FILES.iter().map(|f| std::fs::metadata(scene.assets_root().join(f)).unwrap().len() as i64).collect();
    for row in &rows {
        let (job, index) = row.asset_id.rsplit_once('-').unwrap();
        let index: usize = index.parse().unwrap();
        assert_eq!(row.job_id, job);
        assert_eq!((row.status.as_str(), row.error_code.as_deref()), ("ok", None), "{row:?}");
        assert_eq!(row.data_type.as_deref(), expectations[index]["data_type"].as_str());
        assert_eq!(row.bytes_downloaded, sizes[index]);
        assert_matches(&row.metadata, &expectations[index], &row.asset_id);
    }
    assert_eq!(scene.ready(&scene.jobs_queue()).await, 0);
    assert_eq!(scene.ready(&scene.dead_letter_queue()).await, 0);
    scene.cleanup().await;
}
