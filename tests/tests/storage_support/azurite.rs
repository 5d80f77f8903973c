//! Azurite, Microsoft's Azure Blob emulator, for the storage tests: found in
//! `./.tools/azurite` (scripts/services.sh), started on a free port over HTTP or over
//! HTTPS with a certificate made for the run, seeded with an account SAS of our own
//! (not the worker's signer).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{free_port, require, wait_port};

/// Azurite's well-known development account and key (public, in Microsoft's docs).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// `AZURITE_BLOB`, then `./.tools/azurite` (scripts/azure-servers.sh), then `PATH`.
pub fn azurite_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AZURITE_BLOB") {
        return Some(PathBuf::from(p));
    }
    let local = super::workspace_root().join(".tools/azurite/node_modules/.bin/azurite-blob");
    if local.is_file() {
        return Some(local);
    }
    super::on_path("azurite-blob")
}

/// A certificate authority and a certificate for 127.0.0.1 it signed, made with the
/// openssl command line for the HTTPS instance.
pub struct Tls {
    pub dir: tempfile::TempDir,
}

impl Tls {
    pub fn make() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=azurite test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Tls { dir }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.pem")).unwrap()
    }
}

/// An Azurite blob service on a free port, serving a temp directory. Killed on drop.
pub struct Azurite {
    child: Child,
    /// `http(s)://127.0.0.1:PORT/devstoreaccount1`: path-style, as Azurite serves it.
    pub endpoint: String,
    _data: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Azurite {
    pub fn start(tls: Option<&Tls>) -> Option<Azurite> {
        let bin = azurite_bin();
        if !require("azurite (npm)", bin.is_some()) {
            return None;
        }
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(bin.unwrap());
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("-l")
            .arg(data.path())
            .args(["--skipApiVersionCheck", "--disableTelemetry", "--silent"]);
        let mut http = reqwest::Client::builder();
        if let Some(tls) = tls {
            cmd.arg("--cert").arg(tls.dir.path().join("cert.pem"));
            cmd.arg("--key").arg(tls.dir.path().join("key.pem"));
            cmd.args(["--oauth", "basic"]);
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&tls.ca_pem()).unwrap());
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawning azurite");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let a = Azurite {
            child,
            endpoint: format!("{scheme}://127.0.0.1:{port}/{ACCOUNT}"),
            _data: data,
            http: http.build().unwrap(),
        };
        assert!(wait_port(port), "azurite did not start listening on {port}");
        Some(a)
    }

    /// [`Azurite::start`], then waits until it answers HTTP. An instance that stops
    /// listening before it answers (a CI run saw one refuse the first request after
    /// its port had accepted a connection) is replaced by one on another port.
    pub async fn start_ready(tls: Option<&Tls>) -> Option<Azurite> {
        for _ in 0..3 {
            let mut a = Azurite::start(tls)?;
            let list = format!("{}?comp=list", a.endpoint);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if a.http.get(&list).send().await.is_ok() {
                    return Some(a);
                }
                if a.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("azurite did not answer HTTP on three ports in a row");
    }

    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap()
    }

    /// Creates containers and blobs with an account SAS of our own (not the worker's
    /// signer).
    pub async fn put(&self, container: &str, name: &str, body: &[u8]) {
        let sas = account_sas("racwdl", SystemTime::now() + Duration::from_secs(3600));
        let c = self
            .http
            .put(format!("{}/{container}?restype=container&{sas}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(matches!(c.status().as_u16(), 201 | 409), "creating {container}: {}", c.status());
        let r = self
            .http
            .put(format!("{}/{container}/{}?{sas}", self.endpoint, encode_name(name)))
            .header("x-ms-blob-type", "BlockBlob")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "uploading {name}");
    }

    /// Sets the account's CORS rules (Set Blob Service Properties), `rules` being
    /// `(allowed origin, allowed methods)` pairs; none removes them all.
    pub async fn set_cors(&self, rules: &[(&str, &str)]) {
        let sas = account_sas("racwdl", SystemTime::now() + Duration::from_secs(3600));
        let rules: String = rules
            .iter()
            .map(|(origin, methods)| {
                format!(
                    "<CorsRule><AllowedOrigins>{origin}</AllowedOrigins><AllowedMethods>{methods}</AllowedMethods>\
                     <AllowedHeaders>*</AllowedHeaders><ExposedHeaders>*</ExposedHeaders>\
                     <MaxAgeInSeconds>60</MaxAgeInSeconds></CorsRule>"
                )
            })
            .collect();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><StorageServiceProperties><Cors>{rules}</Cors>\
             </StorageServiceProperties>"
        );
        let r = self
            .http
            .put(format!("{}/?restype=service&comp=properties&{sas}", self.endpoint))
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "setting CORS: {}", r.text().await.unwrap_or_default());
    }

    /// The URL a customer would write for a blob.
    pub fn url(&self, container: &str, name: &str) -> String {
        format!("{}/{container}/{}", self.endpoint, encode_name(name))
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each path segment percent-encoded on its own (as a customer's tool would).
pub fn encode_name(name: &str) -> String {
    name.split('/')
        .map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20"))
        .collect::<Vec<_>>()
        .join("/")
}

pub fn hmac_b64(key: &[u8], s: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(s.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

pub fn sas_time(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// An account SAS (sv 2022-11-02) signed with the development key: what a customer's
/// portal would hand out as a `sas_token`.
pub fn account_sas(permissions: &str, expiry: SystemTime) -> String {
    let se = sas_time(expiry);
    let sts = format!("{ACCOUNT}\n{permissions}\nb\nsco\n\n{se}\n\nhttps,http\n2022-11-02\n\n");
    let key = B64.decode(DEV_KEY).unwrap();
    let q = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    format!(
        "sv=2022-11-02&ss=b&srt=sco&sp={permissions}&se={}&spr={}&sig={}",
        q(&se),
        q("https,http"),
        q(&hmac_b64(&key, &sts))
    )
}
