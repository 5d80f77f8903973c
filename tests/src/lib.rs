//! Shared helpers for the end-to-end tests in this crate's `tests/` folder: the real
//! services (RabbitMQ, PostgreSQL on loopback), the real `metadata-worker` binary, and a
//! private scene per test (its own exchange and queues, PostgreSQL schema, temp dirs) so
//! tests run in parallel without seeing each other.
//!
//! The worker binary: `METADATA_WORKER_BIN` when set, otherwise built once per test
//! process with `cargo build -p metadata-worker --message-format=json` (the path comes
//! from cargo's own artifact report, so target dirs and profiles need no guessing).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod rabbit_cluster;
pub use rabbit_cluster::{RabbitCluster, RabbitNode};

use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).is_ok()
}

/// True when both services answer. Under `CI=true` a missing one panics: CI never skips.
pub fn services_up() -> bool {
    let (mq, pg) = (port_open(5672), port_open(5432));
    if mq && pg {
        return true;
    }
    let missing = format!("RabbitMQ up: {mq}, PostgreSQL up: {pg}");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and a service is down ({missing})");
    eprintln!("skipped: a service is down ({missing}); run scripts/test.sh to start them");
    false
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// The `metadata-worker` executable, built at most once per test process.
pub fn worker_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("METADATA_WORKER_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["build", "-p", "metadata-worker", "--bin", "metadata-worker", "--message-format=json"])
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo build");
        assert!(out.status.success(), "cargo build -p metadata-worker failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "metadata-worker")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the metadata-worker executable")
    })
}

/// A name no other test (or test run) uses: lowercase, digits and `_`.
pub fn unique(tag: &str) -> String {
    format!("t_{tag}_{}_{:08x}", std::process::id(), rand::random::<u32>())
}

/// Fixture files the scenes copy, with their expected probe fields.
pub const FILES: [&str; 4] =
    ["image/png-rgb8.png", "image/jpeg-baseline.jpg", "image/gif-still.gif", "audio/wav-s16.wav"];

/// The `expect` object of `fixtures/expected/<type>.json` for `file`.
pub fn expected(file: &str) -> Value {
    let kind = file.split('/').next().unwrap();
    let path = workspace_root().join(format!("fixtures/expected/{kind}.json"));
    let all: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    all.into_iter().find(|e| e["file"] == file).unwrap_or_else(|| panic!("{file} in {path:?}"))["expect"]
        .clone()
}

/// Every field of `expect` is in `metadata` with the same value (floats within 1e-3).
pub fn assert_matches(metadata: &Value, expect: &Value, what: &str) {
    for (key, want) in expect.as_object().unwrap() {
        let got = &metadata[key];
        let same = match (got.as_f64(), want.as_f64()) {
            (Some(g), Some(w)) => (g - w).abs() <= 1e-3 * w.abs().max(1.0),
            _ => got == want,
        };
        assert!(same, "{what}: {key} is {got}, expected {want} (metadata {metadata})");
    }
}

/// One test's private world.
pub struct Scene {
    pub prefix: String,
    pub schema: String,
    pub dir: tempfile::TempDir,
    pub pg: tokio_postgres::Client,
    pub mq: Connection,
}

impl Scene {
    pub async fn new(tag: &str) -> Scene {
        let name = unique(tag);
        let dir = tempfile::Builder::new().prefix(&format!("{name}-")).tempdir().unwrap();
        let assets = dir.path().join("assets");
        for file in FILES {
            let dest = assets.join(file);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(workspace_root().join("fixtures/assets").join(file), &dest).unwrap();
        }
        let (pg, conn) =
            tokio_postgres::connect(DATABASE_URL, tokio_postgres::NoTls).await.expect("PostgreSQL");
        tokio::spawn(conn);
        pg.batch_execute(&format!("CREATE SCHEMA {name}")).await.unwrap();
        let mq = Connection::connect(AMQP_URL, ConnectionProperties::default()).await.expect("RabbitMQ");
        Scene { prefix: name.replace('_', "-"), schema: name, dir, pg, mq }
    }

    pub fn assets_root(&self) -> PathBuf {
        self.dir.path().join("assets")
    }

    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs", self.prefix)
    }
    pub fn retry_queue(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.prefix)
    }

    /// DATABASE_URL with this scene's schema as search_path.
    pub fn database_url(&self) -> String {
        format!("{DATABASE_URL}?options=-c%20search_path%3D{}", self.schema)
    }

    /// A job over `files` (paths below the assets root), asset ids `<job_id>-<i>`.
    pub fn job(&self, job_id: &str, files: &[&str]) -> Value {
        let assets: Vec<Value> = files
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"asset_id": format!("{job_id}-{i}"), "external_id": format!("ext-{i}"), "url": format!("local://{f}")}))
            .collect();
        json!({
            "schema": "import-job/v1", "job_id": job_id, "org_id": "org-test", "project_id": "proj-test",
            "created_at": "2026-01-01T00:00:00Z",
            "storage": {"provider": "local", "root": self.assets_root()},
            "assets": assets
        })
    }

    /// Publishes raw bytes the way the import service would, with publisher confirms.
    pub async fn publish(&self, body: &[u8]) {
        let ch = self.mq.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let confirm = ch
            .basic_publish(
                &self.prefix,
                "job.v1",
                lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack() && confirm.take_message().is_none(), "the broker took the job");
        let _ = ch.close(200, "").await;
    }

    pub async fn publish_job(&self, job: &Value) {
        self.publish(&serde_json::to_vec(job).unwrap()).await;
    }

    /// Messages ready in `queue` (not counting those a consumer holds unacked).
    pub async fn ready(&self, queue: &str) -> u32 {
        let ch = self.mq.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                queue,
                QueueDeclareOptions { passive: true, ..Default::default() },
                Default::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("queue {queue}: {e}"));
        let _ = ch.close(200, "").await;
        q.message_count()
    }

    /// Takes every message from `queue` (the consumer must be gone).
    pub async fn take_all(&self, queue: &str) -> Vec<(BasicProperties, Vec<u8>)> {
        let ch = self.mq.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch.basic_get(queue, BasicGetOptions { no_ack: true }).await.unwrap() {
            out.push((m.delivery.properties.clone(), m.delivery.data.clone()));
        }
        let _ = ch.close(200, "").await;
        out
    }

    pub async fn rows(&self) -> i64 {
        let sql = format!("SELECT count(*) FROM {}.asset_metadata", self.schema);
        self.pg.query_one(&sql, &[]).await.map(|r| r.get(0)).unwrap_or(0)
    }

    pub async fn jobs_completed(&self) -> i64 {
        let sql = format!("SELECT count(*) FROM {}.job_completed", self.schema);
        self.pg.query_one(&sql, &[]).await.map(|r| r.get(0)).unwrap_or(0)
    }

    /// Whether the worker has applied its migrations in this scene's schema.
    pub async fn migrated(&self) -> bool {
        let sql = format!("SELECT to_regclass('{}.asset_metadata') IS NOT NULL", self.schema);
        self.pg.query_one(&sql, &[]).await.map(|r| r.get(0)).unwrap_or(false)
    }

    /// `(asset_id, job_id, status, data_type, metadata, error_code, bytes_downloaded)`.
    pub async fn all_rows(&self) -> Vec<Row> {
        let sql = format!(
            "SELECT asset_id, job_id, status, data_type, metadata, error_code, bytes_downloaded FROM {}.asset_metadata",
            self.schema
        );
        self.pg
            .query(&sql, &[])
            .await
            .unwrap()
            .into_iter()
            .map(|r| Row {
                asset_id: r.get(0),
                job_id: r.get(1),
                status: r.get(2),
                data_type: r.get(3),
                metadata: r.get::<_, Option<Value>>(4).unwrap_or(Value::Null),
                error_code: r.get(5),
                bytes_downloaded: r.get(6),
            })
            .collect()
    }

    pub async fn cleanup(&self) {
        let _ = self.pg.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema)).await;
        if let Ok(ch) = self.mq.create_channel().await {
            for q in [self.jobs_queue(), self.retry_queue(), self.dead_letter_queue()] {
                let _ = ch.queue_delete(&q, QueueDeleteOptions::default()).await;
            }
            let _ = ch.exchange_delete(&self.prefix, ExchangeDeleteOptions::default()).await;
        }
        let _ = self.mq.close(200, "").await;
    }

    /// Starts a worker of this scene; `n` names its temp dir and log file, so a
    /// restarted worker `n` reuses the directory of the one it replaces.
    pub fn worker(&self, n: u32, extra_env: &[(&str, &str)]) -> Worker {
        self.worker_using(worker_bin(), n, extra_env)
    }

    /// [`Scene::worker`] with another executable (benchmarks compare builds).
    pub fn worker_using(&self, bin: &Path, n: u32, extra_env: &[(&str, &str)]) -> Worker {
        let temp_dir = self.dir.path().join(format!("worker-{n}-tmp"));
        let log = self.dir.path().join(format!("worker-{n}.log"));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AMQP_URL", AMQP_URL)
            .env("DATABASE_URL", self.database_url())
            .env("SINKS", "postgres")
            .env("ALLOW_LOCAL_STORAGE", "true")
            .env("CONCURRENCY", "4")
            .env("TEMP_DIR", &temp_dir)
            .env("METRICS_ADDR", "off")
            .env("JOBS_EXCHANGE", &self.prefix)
            .env("JOBS_QUEUE", self.jobs_queue())
            .env("RETRY_QUEUE", self.retry_queue())
            .env("DEAD_LETTER_QUEUE", self.dead_letter_queue())
            .env("RETRY_DELAY", "100ms")
            .env("RETRY_MAX_DELAY", "1s")
            .env("SHUTDOWN_GRACE", "20s")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning metadata-worker");
        Worker { child, temp_dir, log }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub asset_id: String,
    pub job_id: String,
    pub status: String,
    pub data_type: Option<String>,
    pub metadata: Value,
    pub error_code: Option<String>,
    pub bytes_downloaded: i64,
}

/// A running `metadata-worker run` process.
pub struct Worker {
    pub child: Child,
    pub temp_dir: PathBuf,
    pub log: PathBuf,
}

impl Worker {
    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{sig}");
    }

    /// Waits for the process to exit, at most `limit`; panics with its log otherwise.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("worker did not exit within {limit:?}; log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Files left in the worker's temp dir (none is the goal), its lock file aside.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        files_below(&self.temp_dir).into_iter().filter(|p| !p.ends_with(".metadata-worker.lock")).collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(files_below(&p)) } else { out.push(p) }
        }
    }
    out
}

/// Polls `cond` until it holds, failing after `limit` with `what`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free loopback port for a worker's METRICS_ADDR.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET http://127.0.0.1:<port><path>` → (status, body); `None` if nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The value of an unlabelled (or exactly labelled) sample in a Prometheus text body.
pub fn metric(body: &str, sample: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Scene {
    /// Starts worker `n` with a metrics port and waits until `/readyz` answers 200
    /// (broker connected, topology declared, migrations applied). Returns the port too.
    pub async fn ready_worker(&self, n: u32, extra_env: &[(&str, &str)]) -> (Worker, u16) {
        self.ready_worker_using(worker_bin(), n, extra_env).await
    }

    /// [`Scene::ready_worker`] with another executable.
    pub async fn ready_worker_using(&self, bin: &Path, n: u32, extra_env: &[(&str, &str)]) -> (Worker, u16) {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut env: Vec<(&str, &str)> = vec![("METRICS_ADDR", &addr)];
        env.extend_from_slice(extra_env);
        let mut worker = self.worker_using(bin, n, &env);
        let start = Instant::now();
        loop {
            if let Some(status) = worker.child.try_wait().unwrap() {
                panic!("worker exited early ({status}); log:\n{}", worker.log_tail());
            }
            if matches!(http_get(port, "/readyz"), Some((200, _))) {
                return (worker, port);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "worker not ready; log:\n{}",
                worker.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What `metadata-worker probe FILE` says about a file: the reference the pipeline's
/// results are compared with.
pub fn probe_cli(file: &Path) -> Value {
    let out = Command::new(worker_bin()).arg("probe").arg(file).output().expect("metadata-worker probe");
    assert!(out.status.success(), "probe {file:?} failed");
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

impl Scene {
    /// Publishes many jobs on one channel and then waits for every confirm: fast
    /// enough that the workers cannot finish them while they are being published.
    pub async fn publish_jobs(&self, jobs: &[Value]) {
        let ch = self.mq.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let mut confirms = Vec::with_capacity(jobs.len());
        for job in jobs {
            let confirm = ch
                .basic_publish(
                    &self.prefix,
                    "job.v1",
                    lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() },
                    &serde_json::to_vec(job).unwrap(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        for confirm in confirms {
            let c = confirm.await.unwrap();
            assert!(c.is_ack() && c.take_message().is_none(), "the broker took the job");
        }
        let _ = ch.close(200, "").await;
    }
}

/// A PostgreSQL server of the test's own (its own data directory and port), started and
/// stopped by the test, so an outage can be staged without touching the machine's
/// shared server. Runs as the `postgres` user, as initdb requires.
pub struct PgCluster {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl PgCluster {
    /// `None` when PostgreSQL's server binaries are not installed (a failure in CI).
    pub fn start() -> Option<PgCluster> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists());
        let Some(bin) = bin else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and initdb is not installed");
            eprintln!("skipped: PostgreSQL server binaries not found under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("pgcluster-").tempdir().unwrap();
        let data = dir.path().join("data");
        let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
        assert!(chown.success(), "chown the cluster directory to postgres");
        let out = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let cluster = PgCluster { port: free_port(), dir, bin };
        cluster.up();
        Some(cluster)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-l"])
            .arg(&log)
            .args(["-o", &opts, "start"])
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server at once (no checkpoint, connections cut), like a crash.
    pub fn down(&self) {
        let data = self.dir.path().join("data");
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-w", "-D"])
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output()
            .expect("pg_ctl stop");
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-w", "-D"])
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program).stdin(Stdio::null());
    cmd
}

/// A tmpfs of `size` (e.g. `128k`) mounted on a fresh directory, unmounted on drop:
/// a disk that fills up. `None` where mounting is not permitted (a failure in CI).
pub struct SmallDisk {
    pub dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::Builder::new().prefix("smalldisk-").tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and mounting a tmpfs failed");
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    /// Gives the disk a new size (it keeps its files).
    pub fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remounting the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
