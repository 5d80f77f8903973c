//! The ranged fetch gives what the full download gives, through the whole pipeline:
//! every fixture (the bad ones included) in one job, replayed with `FETCH_MODE=full` and
//! with `FETCH_MODE=ranged`, from the local provider and from s3s-fs (a real S3 server
//! answering HTTP range requests through presigned URLs). The results must be equal
//! field for field but for timings and bytes downloaded, and the ranged path must never
//! download more than the object nor, over the set, as much as the full path. The first
//! read is cut to 4 KiB so that the small fixtures take the ranged loop too.

mod storage_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pipeline_tests::{worker_bin, workspace_root};
use serde_json::{Value, json};
use storage_support::S3s;

const ACCESS_KEY: &str = "AKIARANGEDTESTKEY001";
const SECRET_KEY: &str = "rangedTestSecretKey/abcdefghijklmnopqrst";

fn fixture_files() -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_none_or(|e| e != "md") {
                out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    let root = workspace_root().join("fixtures/assets");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

fn job(storage: Value, urls: &[(String, String)]) -> Value {
    let assets: Vec<Value> = urls
        .iter()
        .enumerate()
        .map(|(i, (file, url))| json!({"asset_id": format!("a-{i:04}"), "external_id": file, "url": url}))
        .collect();
    json!({
        "schema": "import-job/v1", "job_id": "job-ranged", "org_id": "org-1", "project_id": "p-1",
        "created_at": "2026-11-23T00:00:00Z", "storage": storage, "assets": assets
    })
}

/// Replays `job` in one fetch mode; results by external id (the fixture's path).
fn replay(job: &Value, mode: &str, env: &[(&str, &str)]) -> BTreeMap<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.json");
    std::fs::write(&job_file, serde_json::to_vec(job).unwrap()).unwrap();
    let out = Command::new(worker_bin())
        .arg("replay")
        .arg(&job_file)
        .env("FETCH_MODE", mode)
        .env("FIRST_FETCH_BYTES", "4096")
        .env("TEMP_DIR", dir.path().join("work"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "replay ({mode}) failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        std::fs::read_dir(dir.path().join("work")).unwrap().next().is_none(),
        "the {mode} replay left a temp file"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            (r["external_id"].as_str().unwrap().to_owned(), r)
        })
        .collect()
}

/// Fixtures of at least 16 KiB whose metadata sits in a header: the ranged path must
/// leave most of each of them on the server.
const HEADER_ONLY: &[&str] = &[
    "audio/wav-s24-extensible.wav",
    "audio/aiff-s16be.aiff",
    "audio/flac-16k.flac",
    "video/faststart.mp4",
    "video/mjpeg.avi",
];

/// Compares the two replays.
fn assert_same(full: &BTreeMap<String, Value>, ranged: &BTreeMap<String, Value>, files: usize) {
    assert_eq!(full.len(), files, "one result per fixture");
    assert_eq!(full.keys().collect::<Vec<_>>(), ranged.keys().collect::<Vec<_>>());
    let (mut bytes_ranged, mut bytes_full) = (0, 0);
    for (file, f) in full {
        let r = &ranged[file];
        let size = f["size_bytes"].as_u64().unwrap();
        let (br, bf) = (r["bytes_downloaded"].as_u64().unwrap(), f["bytes_downloaded"].as_u64().unwrap());
        assert_eq!(bf, size, "{file}: the full path downloads the object once");
        assert!(br <= size, "{file}: ranged downloaded {br} bytes of {size}");
        bytes_ranged += br;
        bytes_full += bf;
        let strip = |v: &Value| {
            let mut v = v.clone();
            let o = v.as_object_mut().unwrap();
            o.remove("timings_ms");
            o.remove("bytes_downloaded");
            v
        };
        assert_eq!(strip(r), strip(f), "{file}: the ranged result differs from the full one");
        if HEADER_ONLY.contains(&file.as_str()) {
            assert!(br * 2 < size, "{file}: ranged downloaded {br} bytes of {size}");
        }
    }
    assert!(HEADER_ONLY.iter().all(|f| full.contains_key(*f)), "a header-only fixture is missing");
    assert!(bytes_ranged < bytes_full, "ranged {bytes_ranged} bytes, full {bytes_full}");
}

#[test]
fn ranged_and_full_fetches_agree_on_every_fixture_from_the_local_provider() {
    let files = fixture_files();
    let root = workspace_root().join("fixtures/assets");
    let urls: Vec<_> = files.iter().map(|f| (f.clone(), format!("local://{f}"))).collect();
    let job = job(json!({"provider": "local", "root": root}), &urls);
    let full = replay(&job, "full", &[]);
    let ranged = replay(&job, "ranged", &[]);
    assert_same(&full, &ranged, files.len());
    let ok = full.values().filter(|r| r["status"] == "ok").count();
    assert!(ok * 2 > files.len(), "only {ok} of {} fixtures probed ok", files.len());
}

#[test]
fn ranged_and_full_fetches_agree_on_every_fixture_through_s3_range_requests() {
    let Some(s3s) = S3s::start(ACCESS_KEY, SECRET_KEY) else { return };
    let files = fixture_files();
    let root: PathBuf = workspace_root().join("fixtures/assets");
    for f in &files {
        s3s.put("fixtures", f, &std::fs::read(root.join(f)).unwrap());
    }
    let storage = json!({
        "id": "int-ranged", "org_id": "org-1", "provider": "s3_compatible", "region": "us-east-1",
        "endpoint": s3s.endpoint, "path_style": true, "buckets": ["fixtures"],
        "access": {"type": "iam_user", "access_key_id": ACCESS_KEY, "secret_ref": "env:RANGED_TEST_SECRET"}
    });
    let urls: Vec<_> = files.iter().map(|f| (f.clone(), format!("s3://fixtures/{f}"))).collect();
    let job = job(storage, &urls);
    // The secret is the org's (ORG_SECRET_<ORG>__<NAME>); the loopback server is admitted
    // by the operator's allow-list, as an on-premises MinIO would be.
    let env = [("ORG_SECRET_ORG_1__RANGED_TEST_SECRET", SECRET_KEY), ("ALLOWED_ENDPOINTS", "127.0.0.1")];
    let full = replay(&job, "full", &env);
    let ranged = replay(&job, "ranged", &env);
    assert_same(&full, &ranged, files.len());
}
