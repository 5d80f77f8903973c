//! The JSON Lines sink and the fan-out: the conformance suite over a file, the stdout
//! contract of `replay` (only asset-metadata v1 lines), whole lines under concurrency,
//! and a fan-out that fails when any of its sinks fails.

mod sink_conformance;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use asset_schemas::{AssetResult, JobCompleted, Schema};
use asset_sink::{FanOut, JsonlSink, MetadataSink, SinkError, SinkKind, SinkSettings, connect_all};
use serde_json::Value;
use sink_conformance::{ReadBack, Record, conformance, full_metadata, job, unique};

/// Reads the sink's file back, checking every line against its schema as it goes.
struct File(PathBuf);

impl File {
    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.0).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "every line is complete");
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                let schema = match v["schema"].as_str() {
                    Some("asset-metadata/v1") => Schema::AssetMetadata,
                    Some("job-completed/v1") => Schema::JobCompleted,
                    other => panic!("unexpected schema {other:?}"),
                };
                assert!(schema.is_valid(&v), "{:?} in {l}", schema.violations(&v));
                v
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl ReadBack for File {
    async fn records(&self, asset_id: &str) -> Vec<Record> {
        self.lines()
            .iter()
            .filter(|v| v["schema"] == "asset-metadata/v1" && v["asset_id"] == asset_id)
            .map(Record::from_message)
            .collect()
    }

    async fn completions(&self, job_id: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v["schema"] == "job-completed/v1" && v["job_id"] == job_id)
            .collect()
    }

    fn is_store(&self) -> bool {
        false
    }
}

/// An in-memory writer the test can look into.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A writer whose every write fails with `kind` (a closed pipe, a full disk…).
struct Failing(std::io::ErrorKind);

impl Write for Failing {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(self.0.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Err(self.0.into())
    }
}

fn sample(run: &str, i: usize) -> AssetResult {
    let job = job(run);
    AssetResult::ok(&job, &job.assets[i], full_metadata(), 10, Default::default())
}

#[tokio::test]
async fn jsonl_file_sink_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let sink = JsonlSink::file(&path).unwrap().with_job_completions(true);
    conformance(&sink, &File(path.clone()), &unique("sink_jsonl")).await;
    assert_eq!(File(path).lines().len(), 27 + 2);
}

#[tokio::test]
async fn the_default_output_is_pure_asset_metadata_lines() {
    let buf = Buffer::default();
    let sink = JsonlSink::from_writer(buf.clone());
    let run = unique("sink_jsonl_pure");
    let r = sample(&run, 0);
    sink.write(&r).await.unwrap();
    sink.job_completed(&JobCompleted::for_job(&job(&run), std::slice::from_ref(&r), "2026-11-23T10:00:00Z"))
        .await
        .unwrap();
    let text = buf.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(text.ends_with('\n'));
    let back: AssetResult = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(back, r);
    assert!(Schema::AssetMetadata.is_valid(&serde_json::from_str(lines[0]).unwrap()));
}

#[tokio::test]
async fn concurrent_writes_never_interleave() {
    let buf = Buffer::default();
    let sink = Arc::new(JsonlSink::from_writer(buf.clone()));
    let run = unique("sink_jsonl_many");
    let job = job(&run);
    let mut tasks = Vec::new();
    for round in 0..10 {
        for (i, asset) in job.assets.iter().enumerate() {
            let sink = Arc::clone(&sink);
            let r =
                AssetResult::ok(&job, asset, full_metadata(), (round * 100 + i) as u64, Default::default());
            tasks.push(tokio::spawn(async move { sink.write(&r).await }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let text = buf.text();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        let r: AssetResult = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        seen.insert(r.bytes_downloaded);
    }
    assert_eq!(seen.len(), 10 * job.assets.len());
}

#[tokio::test]
async fn a_file_sink_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let run = unique("sink_jsonl_append");
    JsonlSink::file(&path).unwrap().write(&sample(&run, 0)).await.unwrap();
    JsonlSink::file(&path).unwrap().write(&sample(&run, 1)).await.unwrap();
    let ids: Vec<String> =
        File(path).lines().iter().map(|v| v["asset_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, vec![format!("{run}-a0"), format!("{run}-a1")]);

    let err = JsonlSink::file(dir.path().join("no/such/dir/out.jsonl")).err().unwrap();
    assert!(matches!(err, SinkError::Io { sink: "jsonl", .. }), "{err:?}");
}

#[tokio::test]
async fn fan_out_writes_everywhere_and_fails_if_any_fails() {
    let run = unique("sink_fanout");
    let (a, b) = (Buffer::default(), Buffer::default());
    let both = FanOut::new(vec![
        Arc::new(JsonlSink::from_writer(a.clone())) as Arc<dyn MetadataSink>,
        Arc::new(JsonlSink::from_writer(b.clone())),
    ]);
    assert!(both.ready().await);
    both.write(&sample(&run, 0)).await.unwrap();
    assert_eq!((a.text().lines().count(), b.text().lines().count()), (1, 1));
    assert_eq!(a.text(), b.text());

    // A closed pipe: the healthy sink still gets its line, the fan-out reports the failure.
    let c = Buffer::default();
    let broken = FanOut::new(vec![
        Arc::new(JsonlSink::from_writer(c.clone())) as Arc<dyn MetadataSink>,
        Arc::new(JsonlSink::from_writer(Failing(std::io::ErrorKind::BrokenPipe))),
    ]);
    let err = broken.write(&sample(&run, 1)).await.unwrap_err();
    assert!(matches!(err, SinkError::Io { .. }) && !err.is_retryable(), "{err:?}");
    assert_eq!(err.code(), asset_core::ErrorCode::Io);
    assert_eq!(c.text().lines().count(), 1);

    // Of a permanent and a transient failure, the transient one is reported: retry the job.
    let mixed = FanOut::new(vec![
        Arc::new(JsonlSink::from_writer(Failing(std::io::ErrorKind::BrokenPipe))) as Arc<dyn MetadataSink>,
        Arc::new(JsonlSink::from_writer(Failing(std::io::ErrorKind::TimedOut))),
    ]);
    let err = mixed.write(&sample(&run, 2)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn connect_all_builds_the_named_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.jsonl");
    let settings = SinkSettings { jsonl_path: Some(path.clone()), ..Default::default() };
    let kinds = asset_sink::parse_sinks("jsonl").unwrap();
    let fan = connect_all(&kinds, &settings).await.unwrap();
    assert_eq!(fan.sinks().iter().map(|s| s.name()).collect::<Vec<_>>(), vec!["jsonl"]);
    fan.write(&sample(&unique("sink_all"), 3)).await.unwrap();
    assert_eq!(File(path).lines().len(), 1);

    // A sink named without its setting is refused up front, naming the setting.
    let err = connect_all(&[SinkKind::Postgres], &SinkSettings::default()).await.unwrap_err();
    assert!(matches!(&err, SinkError::Config(m) if m.contains("DATABASE_URL")), "{err:?}");
    let err = connect_all(&[SinkKind::Amqp], &SinkSettings::default()).await.unwrap_err();
    assert!(matches!(&err, SinkError::Config(m) if m.contains("AMQP_URL")), "{err:?}");
}
