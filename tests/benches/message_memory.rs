//! Peak memory of one worker replica under the largest messages it accepts (issue 8):
//! PREFETCH jobs of MAX_JOB_BYTES each in flight at once, then a 53 MB message (over the
//! limit), measured from /proc (VmHWM of the worker, and of its probe processes apart).
//! A second binary (`BASELINE_BIN`, e.g. an older build) is measured the same way in
//! the same run, so the figures compare as ratios. Run with `scripts/bench-memory.sh`;
//! under `cargo test` this does nothing.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use pipeline_tests::*;
use serde_json::json;

/// The most the worker allows for MAX_JOB_BYTES (PREFETCH × MAX_JOB_BYTES ≤ 16 MiB).
const PREFETCH: usize = 4;
const MAX_JOB_BYTES: usize = 4 * 1024 * 1024;

/// `VmHWM` and `VmRSS` of a process, in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Peak RSS of the worker's children (the probe processes), in KiB.
fn children_peak(pid: u32) -> u64 {
    let mut peak = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in list.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            peak = peak.max(rss(child).0);
        }
    }
    peak
}

/// A job of as many assets as fit in `bytes`, each a small local fixture.
fn max_size_job(scene: &Scene, job_id: &str, bytes: usize) -> Vec<u8> {
    let pad = "e".repeat(300);
    let mut assets = Vec::new();
    let mut size = 600;
    for i in 0..10_000 {
        let a = json!({"asset_id": format!("{job_id}-{i}"), "external_id": format!("{pad}{i}"),
                       "url": "local://image/png-rgb8.png"});
        size += a.to_string().len() + 1;
        if size > bytes {
            break;
        }
        assets.push(a);
    }
    let mut job = scene.job(job_id, &["image/png-rgb8.png"]);
    job["assets"] = json!(assets);
    serde_json::to_vec(&job).unwrap()
}

async fn publish_raw(scene: &Scene, body: &[u8]) {
    let ch = scene.mq.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let _ = ch
        .basic_publish(
            &scene.prefix,
            "job.v1",
            lapin::options::BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await;
    let _ = ch.close(200, "").await;
}

struct Figures {
    idle_kib: u64,
    in_flight_peak_kib: u64,
    after_53mb_peak_kib: u64,
    probe_peak_kib: u64,
    job_bytes: usize,
}

async fn measure(bin: &str) -> Figures {
    let scene = Scene::new("memory").await;
    let env = [
        ("SINKS", "jsonl"),
        ("JSONL_PATH", "/dev/null"),
        ("PREFETCH", "4"),
        ("CONCURRENCY", "4"),
        ("MAX_JOB_BYTES", "4194304"),
        ("FETCH_MODE", "full"),
    ];
    let (mut worker, _) = scene.ready_worker_using(std::path::Path::new(bin), 1, &env).await;
    let pid = worker.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss(pid).1;

    let bodies: Vec<Vec<u8>> =
        (0..PREFETCH).map(|i| max_size_job(&scene, &format!("big-{i}"), MAX_JOB_BYTES)).collect();
    let job_bytes = bodies[0].len();
    for body in &bodies {
        publish_raw(&scene, body).await;
    }
    let started = Instant::now();
    let mut probe_peak = 0;
    while started.elapsed() < Duration::from_secs(20) {
        probe_peak = probe_peak.max(children_peak(pid));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let in_flight_peak = rss(pid).0;

    let mut huge = serde_json::to_vec(&scene.job("huge", &["image/png-rgb8.png"])).unwrap();
    huge.truncate(huge.len() - 1);
    huge.extend_from_slice(format!(r#","pad":"{}"}}"#, "p".repeat(53_000_000)).as_bytes());
    publish_raw(&scene, &huge).await;
    wait_until(Duration::from_secs(120), "the 53 MB message to be dead-lettered", || async {
        scene.ready(&scene.dead_letter_queue()).await >= 1
    })
    .await;
    let after = rss(pid).0;
    worker.signal("TERM");
    worker.signal("TERM");
    let _ = worker.wait(Duration::from_secs(60)).await;
    scene.cleanup().await;
    Figures {
        idle_kib: idle,
        in_flight_peak_kib: in_flight_peak,
        after_53mb_peak_kib: after,
        probe_peak_kib: probe_peak,
        job_bytes,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("message_memory: a benchmark; run it with scripts/bench-memory.sh");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bin =
        std::env::var("METADATA_WORKER_BIN").expect("METADATA_WORKER_BIN (scripts/bench-memory.sh sets it)");
    let mut rows = vec![("this build", rt.block_on(measure(&bin)))];
    if let Ok(base) = std::env::var("BASELINE_BIN") {
        rows.push(("baseline", rt.block_on(measure(&base))));
    }
    println!(
        "| binary | RSS idle | peak RSS, {PREFETCH} jobs of {} bytes in flight | peak RSS after a 53 MB message | probe process peak |",
        rows[0].1.job_bytes
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, f) in &rows {
        println!(
            "| {name} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            f.idle_kib as f64 / 1024.0,
            f.in_flight_peak_kib as f64 / 1024.0,
            f.after_53mb_peak_kib as f64 / 1024.0,
            f.probe_peak_kib as f64 / 1024.0
        );
    }
}
