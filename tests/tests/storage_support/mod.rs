//! Helpers shared by the storage end-to-end tests: finding and starting the servers
//! (moto for STS/IAM/S3, s3s-fs for SigV4 and presigned URLs), a tiny scripted HTTP
//! server for fault sequences, and a tracing capture to search logs for secrets.
//! When `CI=true`, a missing server fails the test instead of skipping it.

#![allow(dead_code)]

pub mod azurite;
pub mod gcs;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asset_storage::{AllowedEndpoints, RetryConfig, StorageConfig};
use aws_config::{BehaviorVersion, SdkConfig};

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `false` (skip, with a note) when a server is missing locally; a panic in CI.
pub fn require(what: &str, available: bool) -> bool {
    if !available {
        if ci() {
            panic!(
                "{what} is not available and CI=true: start it with scripts/test.sh (scripts/s3-servers.sh)"
            );
        }
        eprintln!("SKIPPED: {what} is not available; run scripts/test.sh to install and start it");
    }
    available
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `S3S_FS`, then `./.tools/bin/s3s-fs` (scripts/s3-servers.sh), then `PATH`.
pub fn s3s_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let local = workspace_root().join(".tools/bin/s3s-fs");
    if local.is_file() {
        return Some(local);
    }
    on_path("s3s-fs")
}

/// A free port in 21000-21999, the range these tests' servers use. Each call hands out
/// another port, so tests running in parallel never pick the same one before binding it
/// (asking the kernel for port 0 and binding later races with the next test doing so).
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let offset = std::process::id() as usize % 500;
    (0..1000)
        .map(|_| 21000 + ((offset + NEXT.fetch_add(1, Ordering::SeqCst)) % 1000) as u16)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 21000-21999")
}

/// Whether something listens on `port` within 20 s.
pub fn wait_port(port: u16) -> bool {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// An s3s-fs instance on a free port, serving a temp directory (one subdirectory per
/// bucket), accepting exactly one key pair. Killed on drop.
pub struct S3s {
    child: Child,
    pub endpoint: String,
    pub root: tempfile::TempDir,
}

impl S3s {
    pub fn start(access_key: &str, secret_key: &str) -> Option<S3s> {
        let bin = s3s_bin();
        if !require("s3s-fs", bin.is_some()) {
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(bin.unwrap())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", access_key, "--secret-key", secret_key])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning s3s-fs");
        let s = S3s { child, endpoint: format!("http://127.0.0.1:{port}"), root };
        assert!(wait_port(port), "s3s-fs did not start listening on {port}");
        Some(s)
    }

    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let path = self.root.path().join(bucket).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    pub fn bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).unwrap();
    }
}

impl Drop for S3s {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `MOTO_SERVER`, then the venvs scripts/s3-servers.sh installs moto into, then `PATH`.
pub fn moto_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    [workspace_root().join(".venv"), home.join(".cache/asset-metadata/venv")]
        .into_iter()
        .map(|v| v.join("bin/moto_server"))
        .find(|p| p.is_file())
        .or_else(|| on_path("moto_server"))
}

/// A program of that name in a directory of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// A moto server of the test's own on a free port: S3 as AWS answers it, bucket CORS
/// rules and unauthenticated preflights included (the shared instance enforces IAM, and
/// moto then fails every request without an `Authorization` header, preflights and
/// presigned GETs alike, with a 500). Its own global CORS headers are off, so only a
/// bucket's rules answer. Killed on drop.
pub struct OwnMoto {
    child: Child,
    pub endpoint: String,
}

impl OwnMoto {
    pub fn start() -> Option<OwnMoto> {
        let bin = moto_bin();
        if !require("moto_server", bin.is_some()) {
            return None;
        }
        let port = free_port();
        let child = Command::new(bin.unwrap())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_DISABLE_GLOBAL_CORS", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning moto_server");
        let m = OwnMoto { child, endpoint: format!("http://127.0.0.1:{port}") };
        assert!(wait_port(port), "moto_server did not start listening on {port}");
        Some(m)
    }
}

impl Drop for OwnMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Short backoffs so that retry tests finish fast; the policy is the production one.
pub fn config(temp_dir: &Path) -> StorageConfig {
    StorageConfig {
        temp_dir: temp_dir.to_path_buf(),
        retry: RetryConfig {
            max_retries: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            budget: Duration::from_secs(20),
        },
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        ..StorageConfig::default()
    }
}

/// `config` with an `ALLOWED_ENDPOINTS` list: the tests' servers listen on loopback,
/// which the egress policy refuses unless the operator names it.
pub fn config_allowing(temp_dir: &Path, allowed: &str) -> StorageConfig {
    StorageConfig { allowed_endpoints: allowed.parse::<AllowedEndpoints>().unwrap(), ..config(temp_dir) }
}

/// `host:port` of an `http://host:port` endpoint, as `ALLOWED_ENDPOINTS` takes it.
pub fn authority(endpoint: &str) -> &str {
    endpoint.strip_prefix("http://").unwrap_or(endpoint).trim_end_matches('/')
}

/// A TCP listener on a free loopback port that counts the connections it accepts and
/// either closes them or relays them to `forward_to` (a counting proxy in front of a
/// server: requests that were refused before leaving the worker never show up).
/// Its threads live as long as the test process.
pub struct Listener {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Listener {
    pub fn counting() -> Listener {
        Listener::start(None)
    }

    pub fn forwarding_to(port: u16) -> Listener {
        Listener::start(Some(port))
    }

    fn start(forward_to: Option<u16>) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let Some(target) = forward_to else { continue };
                std::thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { return };
                    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let up = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c_in, &mut s_out);
                        let _ = s_out.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut s_in, mut c_out) = (server, client);
                    let _ = std::io::copy(&mut s_in, &mut c_out);
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        Listener { port, accepted }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// The port of an `http://127.0.0.1:PORT` endpoint.
pub fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

/// A base AWS configuration with static keys and one endpoint, as the standard chain
/// would build it from `AWS_ACCESS_KEY_ID`… and `AWS_ENDPOINT_URL`, with the worker's
/// own HTTP client for it (the SDKs are built without a default one, in the tests as in
/// the worker: the test build has the shipped feature set).
pub async fn base_config(endpoint: &str, access_key: &str, secret_key: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(asset_storage::operator_http_client())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            access_key, secret_key, None, None, "test",
        ))
        .load()
        .await
}

/// Files left in a temp directory.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Everything tracing writes on one test's thread, at every level and target, under
/// the worker's own credential guard (the SDK's trace logs print signing material; the
/// worker never lets them through).
///
/// One process-wide subscriber, installed by the first capture, writes every line with
/// its thread's name; a capture keeps the lines of its own thread (libtest names it
/// after the test, and `#[tokio::test]` runs the test's tasks on it). A per-test scoped
/// subscriber would be simpler but loses events: a callsite first hit on another test's
/// thread at the wrong moment caches "never" for everyone.
#[derive(Clone)]
pub struct Logs {
    thread: String,
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

fn buffer() -> &'static Buffer {
    static BUFFER: std::sync::OnceLock<Buffer> = std::sync::OnceLock::new();
    BUFFER.get_or_init(|| {
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        let buffer = Buffer::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .with_thread_names(true)
            .with_filter(asset_storage::logging::credential_guard());
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in the storage tests");
        buffer
    })
}

impl Logs {
    pub fn capture() -> Logs {
        buffer();
        let thread = std::thread::current().name().expect("a named test thread").to_owned();
        Logs { thread }
    }

    /// This thread's lines.
    pub fn text(&self) -> String {
        let all = buffer().0.lock().unwrap();
        let marker = format!(" {} ", self.thread);
        String::from_utf8_lossy(&all).lines().filter(|l| l.contains(&marker)).collect::<Vec<_>>().join("\n")
    }

    /// Panics naming the first secret found in the logs of any thread.
    pub fn assert_free_of(&self, secrets: &[(&str, &str)]) {
        let text = String::from_utf8_lossy(&buffer().0.lock().unwrap()).into_owned();
        for (what, secret) in secrets {
            assert!(secret.len() >= 6, "{what} is too short to search for");
            assert!(!text.contains(secret), "the {what} appears in the logs");
        }
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// The query parameter `name` of a URL, e.g. its `X-Amz-Signature`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}
