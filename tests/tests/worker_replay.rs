//! The README's main command, `metadata-worker replay fixtures/jobs/*.json`, run as a
//! newcomer would: exit 0, one asset-metadata/v1 line per asset of every job, in the
//! order of the job files, nothing but JSON on stdout, and each successful result equal
//! to the fixture's expected values.

use std::collections::BTreeMap;
use std::process::Command;

use pipeline_tests::*;
use serde_json::Value;

#[test]
fn replaying_the_fixture_jobs_prints_one_result_per_asset() {
    let root = workspace_root();
    let mut jobs: Vec<_> = std::fs::read_dir(root.join("fixtures/jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    jobs.sort();
    assert!(!jobs.is_empty(), "fixtures/jobs holds local jobs");

    let out = Command::new(worker_bin()).current_dir(&root).arg("replay").args(&jobs).output().unwrap();
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));

    // What the job files ask for: asset id → (job id, file below the local root).
    let mut wanted = BTreeMap::new();
    let mut file_order = Vec::new();
    for path in &jobs {
        let job: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        for asset in job["assets"].as_array().unwrap() {
            let url = asset["url"].as_str().unwrap();
            let file = url.strip_prefix("local://").unwrap_or(url).to_string();
            let key = (
                job["job_id"].as_str().unwrap().to_string(),
                asset["asset_id"].as_str().unwrap().to_string(),
            );
            file_order.push(key.clone());
            assert!(wanted.insert(key, file).is_none());
        }
    }

    let mut seen = BTreeMap::new();
    let mut printed_order = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(r["schema"], "asset-metadata/v1");
        let key = (r["job_id"].as_str().unwrap().to_string(), r["asset_id"].as_str().unwrap().to_string());
        printed_order.push(key.clone());
        assert!(seen.insert(key, r).is_none(), "one line per asset");
    }
    assert_eq!(printed_order, file_order, "jobs in argument order, assets in file order");
    assert_eq!(seen.keys().collect::<Vec<_>>(), wanted.keys().collect::<Vec<_>>());

    // Every ok result of a file with expected values carries exactly those values.
    let mut checked = 0;
    for (key, r) in &seen {
        assert!(r["status"] == "ok" || r["error"]["code"].is_string(), "{r}");
        let file = &wanted[key];
        let kind = file.split('/').next().unwrap();
        let expected_file = root.join(format!("fixtures/expected/{kind}.json"));
        if r["status"] != "ok" || !expected_file.exists() {
            continue;
        }
        let all: Vec<Value> = serde_json::from_slice(&std::fs::read(&expected_file).unwrap()).unwrap();
        if let Some(e) = all.iter().find(|e| e["file"] == file.as_str()) {
            assert_matches(&r["metadata"], &e["expect"], file);
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} results had expected values to compare");
}

/// The worker's temp file carries the object's extension, so what the bytes alone cannot
/// tell is told in the pipeline as by `probe FILE`: a TGA 1.0 file (no magic, no footer,
/// RLE so its size says nothing) and Markdown without a heading or a link. The same
/// bytes under names without an extension stay what the bytes say.
#[test]
fn the_object_name_is_a_hint_in_the_pipeline_as_for_a_named_file() {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir(&assets).unwrap();
    let copies = [
        ("image/tga-rle.tga", "head.TGA"),
        ("image/tga-rle.tga", "head"),
        ("text/notes-plain.md", "notes.md"),
        ("text/notes-plain.md", "notes"),
    ];
    for (from, to) in copies {
        std::fs::copy(root.join("fixtures/assets").join(from), assets.join(to)).unwrap();
    }
    let job = serde_json::json!({
        "schema": "import-job/v1", "job_id": "job-hints", "org_id": "org-demo", "project_id": "proj-demo",
        "created_at": "2026-12-02T00:00:00Z",
        "storage": {"provider": "local", "root": "assets"},
        "assets": copies.iter().enumerate().map(|(i, (_, to))| serde_json::json!({
            "asset_id": format!("hint-{i}"), "external_id": to, "url": format!("local://{to}"),
        })).collect::<Vec<_>>(),
    });
    let job_file = dir.path().join("job.json");
    std::fs::write(&job_file, serde_json::to_vec(&job).unwrap()).unwrap();

    let out = Command::new(worker_bin()).current_dir(&root).arg("replay").arg(&job_file).output().unwrap();
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), copies.len());

    // Expected values recorded from independent tools (identify, and the text cases).
    let expected = |file: &str| -> Value {
        for name in ["image-formats", "text"] {
            let all: Vec<Value> = serde_json::from_slice(
                &std::fs::read(root.join(format!("fixtures/expected/{name}.json"))).unwrap(),
            )
            .unwrap();
            if let Some(e) = all.iter().find(|e| e["file"] == file) {
                return e["expect"].clone();
            }
        }
        panic!("no expected values for {file}")
    };
    let (tga, tga_bare, md, md_bare) = (&results[0], &results[1], &results[2], &results[3]);
    assert_eq!(tga["status"], "ok", "{tga}");
    assert_matches(&tga["metadata"], &expected("image/tga-rle.tga"), "head.TGA");
    assert_eq!(tga_bare["error"]["code"], "unsupported_format", "{tga_bare}");
    assert_eq!(md["status"], "ok", "{md}");
    assert_matches(&md["metadata"], &expected("text/notes-plain.md"), "notes.md");
    assert_eq!(md_bare["metadata"]["mime"], "text/plain", "{md_bare}");
}
