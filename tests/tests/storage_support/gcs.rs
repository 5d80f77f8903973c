//! The GCS test tools (scripts/gcs-tools.sh): the Python with `google-cloud-storage`
//! and `gcp-storage-emulator`, a service-account key made by Google's tooling, and the
//! emulator (which serves downloads and ranges but checks no signature).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

use super::{free_port, require, workspace_root};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn golden_py() -> PathBuf {
    workspace_root().join("tests/gcs/golden.py")
}

/// The Python with google-cloud-storage and gcp-storage-emulator (scripts/gcs-tools.sh):
/// `GCS_PYTHON`, then the project's venvs.
pub fn python() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let candidates = std::env::var_os("GCS_PYTHON").map(PathBuf::from).into_iter().chain([
        workspace_root().join(".venv/bin/python"),
        home.join(".cache/asset-metadata/venv/bin/python"),
    ]);
    let found = candidates.filter(|p| p.is_file()).find(|p| {
        Command::new(p)
            .args(["-c", "import google.cloud.storage, gcp_storage_emulator"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    require("google-cloud-storage and gcp-storage-emulator (scripts/gcs-tools.sh)", found.is_some())
        .then(|| found.unwrap())
}

/// A service-account JSON key made by Google's tooling for this test run.
pub struct TestKey {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub json: String,
    pub pair: RsaKeyPair,
    /// A piece of the private key, to look for in logs.
    pub pem_fragment: String,
}

impl TestKey {
    pub fn new(py: &Path, email: &str) -> TestKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        let st = Command::new(py).arg(golden_py()).args(["keygen", email]).arg(&path).status().unwrap();
        assert!(st.success(), "golden.py keygen failed");
        let json = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let pem = v["private_key"].as_str().unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let pair = RsaKeyPair::from_pkcs8(&B64.decode(&body).unwrap()).unwrap();
        let pem_fragment = body[100..140].to_owned();
        TestKey { _dir: dir, path, json, pair, pem_fragment }
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig).unwrap();
        sig
    }

    /// The same key with another `token_uri` (the platform's key points at our server).
    pub fn with_token_uri(&self, uri: &str) -> PathBuf {
        let mut v: serde_json::Value = serde_json::from_str(&self.json).unwrap();
        v["token_uri"] = uri.into();
        let path = self.path.with_file_name("platform.json");
        std::fs::write(&path, v.to_string()).unwrap();
        path
    }
}

/// gcp-storage-emulator on a free port, in memory, with the bucket `cust-bucket`.
pub struct Emulator {
    child: Child,
    pub endpoint: String,
}

impl Emulator {
    pub fn start(py: &Path) -> Emulator {
        let port = free_port();
        let child = Command::new(py)
            .args(["-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--in-memory", "-q"])
            .args(["--port", &port.to_string(), "--default-bucket", "cust-bucket"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let e = Emulator { child, endpoint: format!("http://127.0.0.1:{port}") };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return e;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gcp-storage-emulator did not start listening on {port}");
    }

    pub async fn put(&self, name: &str, body: &[u8]) {
        let url = format!("{}/upload/storage/v1/b/cust-bucket/o", self.endpoint);
        let resp = reqwest::Client::new()
            .post(url)
            .query(&[("uploadType", "media"), ("name", name)])
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "upload of {name:?}: {}", resp.status());
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
