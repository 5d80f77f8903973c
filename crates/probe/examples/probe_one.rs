//! Probes files in this process, one JSON line each: the tool for measuring one
//! extractor's time and peak memory on a single file without the worker around it,
//! e.g. `/usr/bin/time -v target/release/examples/probe_one bomb.dcm`.
//! No thread, no panic boundary, no time budget: a crash here is the parser's.

use asset_probe::{Limits, probe_in_place};

fn main() {
    let limits = Limits::default();
    for path in std::env::args_os().skip(1) {
        let started = std::time::Instant::now();
        let line = match probe_in_place(std::path::Path::new(&path), &limits) {
            Ok(meta) => serde_json::json!({"path": path.to_string_lossy(), "metadata": meta}),
            Err(e) => serde_json::json!({
                "path": path.to_string_lossy(),
                "error": {"code": e.code(), "message": e.to_string()},
            }),
        };
        let mut line = line;
        line["millis"] = serde_json::json!(started.elapsed().as_millis() as u64);
        println!("{line}");
    }
}
