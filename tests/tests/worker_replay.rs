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
