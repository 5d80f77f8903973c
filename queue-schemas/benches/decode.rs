//! What one job message costs to accept: `ImportJob::decode` (size check, JSON parse,
//! the import-job JSON Schema, NUL scan, typed parse, the rules the schema cannot say)
//! on jobs of 1, 100 and 10,000 assets built from the fixture job's first asset.
//! Run by `cargo bench -p asset-schemas --bench decode`; it prints µs per job and per
//! asset, best of five rounds. The crates it exercises (jsonschema, this one) are built
//! at a lower optimisation level for a faster first build (Cargo.toml); this is what that
//! costs at run time, beside the probe's ~100 µs and a cloud round's ~30 ms per asset.
use std::hint::black_box;
use std::time::Instant;

use asset_schemas::{ImportJob, JobLimits};
use serde_json::Value;

fn job_of(n: usize) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/jobs/image.json");
    let mut job: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture job")).unwrap();
    let first = job["assets"][0].clone();
    let assets: Vec<Value> = (0..n)
        .map(|i| {
            let mut a = first.clone();
            a["asset_id"] = Value::from(format!("asset-{i:06}"));
            a
        })
        .collect();
    job["assets"] = Value::from(assets);
    serde_json::to_vec(&job).unwrap()
}

fn main() {
    // `cargo test --all-targets` runs this binary too (unoptimised): there it only
    // checks that each generated job is accepted.
    let as_bench = std::env::args().any(|a| a == "--bench");
    let limits = JobLimits::default();
    println!("| assets in the job | message bytes | µs per job (best of 5) | µs per asset |");
    println!("|---:|---:|---:|---:|");
    for n in [1usize, 100, 10_000] {
        let body = job_of(n);
        let reps = (20_000 / n).max(3);
        // Warm up (the validator is compiled once per process).
        assert!(ImportJob::decode(&body, &limits).job.is_ok(), "the generated job is valid");
        if !as_bench {
            println!("| {n} | {} | (run with `cargo bench` to time it) | |", body.len());
            continue;
        }
        let best = (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..reps {
                    black_box(ImportJob::decode(black_box(&body), &limits).job.is_ok());
                }
                t.elapsed().as_secs_f64() / reps as f64
            })
            .fold(f64::INFINITY, f64::min);
        let us = best * 1e6;
        println!("| {n} | {} | {us:.1} | {:.2} |", body.len(), us / n as f64);
    }
}
