//! One conformance suite for every `MetadataSink`: each sink test builds its sink and a
//! way to read back what it stored or sent, and runs the same checks. A store
//! (PostgreSQL) keeps one record per asset; a stream (AMQP, JSON Lines) keeps every
//! write, and its latest record per asset is what a consumer keeps.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;

use asset_core::{AssetMetadata, DataType, ErrorBody, ErrorCode};
use asset_schemas::{AssetResult, ImportJob, JobCompleted, Status};
use asset_sink::MetadataSink;
use serde_json::{Value, json};

/// What a sink kept of one asset result, in the PostgreSQL table's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub asset_id: String,
    pub job_id: String,
    pub org_id: String,
    pub project_id: String,
    pub status: String,
    pub data_type: Option<String>,
    pub metadata: Option<Value>,
    pub error_code: Option<String>,
    pub bytes_downloaded: u64,
}

impl Record {
    /// The record an ideal sink keeps for `r`.
    pub fn of(r: &AssetResult) -> Record {
        Record {
            asset_id: r.asset_id.clone(),
            job_id: r.job_id.clone(),
            org_id: r.org_id.clone(),
            project_id: r.project_id.clone(),
            status: match r.status {
                Status::Ok => "ok".into(),
                Status::Error => "error".into(),
            },
            data_type: r.metadata.as_ref().map(|m| m.data_type.as_str().to_string()),
            metadata: r.metadata.as_ref().map(|m| serde_json::to_value(m).unwrap()),
            error_code: r.error.as_ref().map(|e| e.code.as_str().to_string()),
            bytes_downloaded: r.bytes_downloaded,
        }
    }

    /// From an `asset-metadata/v1` message (AMQP body, JSON line).
    pub fn from_message(v: &Value) -> Record {
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_string();
        Record {
            asset_id: s("asset_id"),
            job_id: s("job_id"),
            org_id: s("org_id"),
            project_id: s("project_id"),
            status: s("status"),
            data_type: v["metadata"]["data_type"].as_str().map(String::from),
            metadata: v.get("metadata").cloned(),
            error_code: v["error"]["code"].as_str().map(String::from),
            bytes_downloaded: v["bytes_downloaded"].as_u64().unwrap(),
        }
    }
}

/// Reads back what the sink under test kept.
#[async_trait::async_trait]
pub trait ReadBack: Send + Sync {
    /// Every record kept for `asset_id`, oldest first: at most one for a store.
    async fn records(&self, asset_id: &str) -> Vec<Record>;
    /// Every `job-completed/v1` kept for `job_id`, oldest first, as JSON.
    async fn completions(&self, job_id: &str) -> Vec<Value>;
    /// True for a store that keeps one record per asset.
    fn is_store(&self) -> bool;
}

/// A name unique to this test run: lowercase letters, digits and `_`.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("t_{tag}_{}_{nanos:09}", std::process::id())
}

/// `None` (test skipped) when the service is down, except under `CI=true`, where a
/// missing service fails the test.
pub fn require<T, E: std::fmt::Display>(service: &str, r: Result<T, E>) -> Option<T> {
    match r {
        Ok(t) => Some(t),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and {service} is not reachable: {e}"
            );
            eprintln!("skipped: {service} is not reachable ({e}); scripts/test.sh starts it");
            None
        }
    }
}

pub fn job(run: &str) -> ImportJob {
    let assets: Vec<Value> = (0..24)
        .map(|i| json!({"asset_id": format!("{run}-a{i}"), "external_id": format!("ext/{i}"), "url": format!("local://x/{i}")}))
        .collect();
    let v = json!({
        "schema": "import-job/v1", "job_id": format!("{run}-job"), "org_id": "org-conf", "project_id": "proj-conf",
        "created_at": "2026-11-23T09:00:00Z", "storage": {"provider": "local", "root": "/nonexistent"},
        "assets": assets
    });
    ImportJob::from_slice(v.to_string().as_bytes()).unwrap()
}

/// Metadata with every probe field set.
pub fn full_metadata() -> AssetMetadata {
    AssetMetadata {
        data_type: DataType::Video,
        mime: "video/mp4".into(),
        size_bytes: 5_000_000_000,
        width: Some(1920),
        height: Some(1080),
        orientation: Some(6),
        duration_seconds: Some(12.5),
        frame_count: Some(375),
        frame_rate: Some(29.97),
        sample_rate: Some(48_000),
        channels: Some(2),
        page_count: Some(3),
        codec: Some("h264".into()),
        char_count: Some(42),
        line_count: Some(7),
        encoding: Some("utf-8".into()),
        modality: Some("CT".into()),
        browser_playable: Some(true),
    }
}

fn timings() -> BTreeMap<String, u64> {
    BTreeMap::from([("download".into(), 5), ("probe".into(), 1), ("total".into(), 6)])
}

pub const PROBE_FIELDS: [&str; 18] = [
    "data_type",
    "mime",
    "size_bytes",
    "width",
    "height",
    "orientation",
    "duration_seconds",
    "frame_count",
    "frame_rate",
    "sample_rate",
    "channels",
    "page_count",
    "codec",
    "char_count",
    "line_count",
    "encoding",
    "modality",
    "browser_playable",
];

async fn latest(rb: &dyn ReadBack, asset_id: &str) -> Record {
    let all = rb.records(asset_id).await;
    if rb.is_store() {
        assert_eq!(all.len(), 1, "a store keeps exactly one record for {asset_id}: {all:?}");
    }
    all.last().unwrap_or_else(|| panic!("nothing kept for {asset_id}")).clone()
}

/// The suite. `run` must be unique to this test run (see [`unique`]).
pub async fn conformance(sink: &dyn MetadataSink, rb: &dyn ReadBack, run: &str) {
    assert!(sink.ready().await, "{} is ready", sink.name());
    let job = job(run);
    let a = &job.assets;

    // A probed asset, every field set: kept with the probe's own field names.
    let ok = AssetResult::ok(&job, &a[0], full_metadata(), 65_536, timings());
    sink.write(&ok).await.unwrap();
    let rec = latest(rb, &a[0].asset_id).await;
    assert_eq!(rec, Record::of(&ok));
    let fields: Vec<&str> =
        rec.metadata.as_ref().unwrap().as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = PROBE_FIELDS.to_vec();
    want.sort_unstable();
    let mut got = fields.clone();
    got.sort_unstable();
    assert_eq!(got, want, "metadata carries exactly the probe's field names");
    assert_eq!(rec.metadata.as_ref().unwrap()["size_bytes"], 5_000_000_000u64);
    assert_eq!(rec.data_type.as_deref(), Some("video"));

    // Redelivered (here by a later job, with other values): overwritten, never doubled.
    let mut again = AssetResult::ok(&job, &a[0], full_metadata(), 70_000, timings());
    again.job_id = format!("{run}-job-redelivered");
    if let Some(m) = again.metadata.as_mut() {
        m.width = Some(1080);
        m.height = Some(1920);
        m.codec = None;
    }
    sink.write(&again).await.unwrap();
    sink.write(&again).await.unwrap();
    let rec = latest(rb, &a[0].asset_id).await;
    assert_eq!(rec, Record::of(&again));
    assert_eq!(rec.bytes_downloaded, 70_000);
    assert!(rec.metadata.as_ref().unwrap().get("codec").is_none(), "an absent field is omitted, not null");

    // A failed asset carries its stable error code and no metadata.
    let missing = ErrorBody { code: ErrorCode::NotFound, message: "no such object".into() };
    let err = AssetResult::failed(&job, &a[1], missing, 0, 0, timings());
    sink.write(&err).await.unwrap();
    let rec = latest(rb, &a[1].asset_id).await;
    assert_eq!(rec, Record::of(&err));
    assert_eq!((rec.status.as_str(), rec.error_code.as_deref()), ("error", Some("not_found")));
    assert_eq!((rec.metadata.as_ref(), rec.data_type.as_ref()), (None, None));

    // A failure the probe got far enough to type.
    let encrypted = AssetResult {
        metadata: Some(AssetMetadata::new(DataType::Pdf, "application/pdf", 4096)),
        ..AssetResult::failed(
            &job,
            &a[2],
            ErrorBody { code: ErrorCode::Encrypted, message: "needs a password".into() },
            4096,
            4096,
            timings(),
        )
    };
    sink.write(&encrypted).await.unwrap();
    let rec = latest(rb, &a[2].asset_id).await;
    assert_eq!(rec, Record::of(&encrypted));
    assert_eq!((rec.data_type.as_deref(), rec.error_code.as_deref()), (Some("pdf"), Some("encrypted")));

    // An asset that succeeded and is re-run into an error keeps nothing stale.
    let now_gone = AssetResult::failed(
        &job,
        &a[0],
        ErrorBody { code: ErrorCode::AccessDenied, message: "role revoked".into() },
        0,
        0,
        timings(),
    );
    sink.write(&now_gone).await.unwrap();
    let rec = latest(rb, &a[0].asset_id).await;
    assert_eq!(rec, Record::of(&now_gone));
    assert_eq!(rec.metadata, None);

    // Concurrent writes from many assets all land.
    let many: Vec<AssetResult> = a[3..]
        .iter()
        .enumerate()
        .map(|(i, asset)| {
            let mut m = AssetMetadata::new(DataType::Image, "image/png", 100 + i as u64);
            m.width = Some(i as u32 + 1);
            m.height = Some(2);
            AssetResult::ok(&job, asset, m, 100 + i as u64, timings())
        })
        .collect();
    let writes = futures::future::join_all(many.iter().map(|r| sink.write(r))).await;
    assert!(writes.iter().all(Result::is_ok), "{writes:?}");
    for r in &many {
        assert_eq!(latest(rb, &r.asset_id).await, Record::of(r));
    }

    // Job completions: recorded, and a repeat overwrites in a store.
    let results: Vec<AssetResult> =
        [now_gone.clone(), err.clone(), encrypted.clone()].into_iter().chain(many.iter().cloned()).collect();
    let done = JobCompleted::for_job(&job, &results, "2026-11-23T09:05:00Z");
    assert_eq!((done.assets_total, done.assets_ok, done.assets_failed), (24, 21, 3));
    sink.job_completed(&done).await.unwrap();
    let again = JobCompleted { completed_at: "2026-11-23T09:06:00Z".into(), ..done.clone() };
    sink.job_completed(&again).await.unwrap();
    let kept = rb.completions(&done.job_id).await;
    if rb.is_store() {
        assert_eq!(kept.len(), 1, "a store keeps one completion per job: {kept:?}");
    }
    let last = kept.last().unwrap_or_else(|| panic!("{} kept no completion", sink.name()));
    assert_eq!(last["completed_at"], "2026-11-23T09:06:00Z", "the latest completion wins");
    assert_eq!((last["assets_total"].as_u64(), last["assets_ok"].as_u64()), (Some(24), Some(21)));
    assert_eq!(last["assets_failed"], 3);
    assert_eq!(last["error_codes"], json!({"access_denied": 1, "encrypted": 1, "not_found": 1}));
}
