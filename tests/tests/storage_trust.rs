//! The storage layer's trust boundaries against real servers (issue 8: a hostile job
//! must not reach the worker's network, secrets or other tenants): the egress policy
//! (loopback, metadata, private addresses), keys that stay in their bucket, secrets
//! bound to the integration's organisation. Every refusal is checked to happen before
//! any connection: a counting listener stands where the request would have gone, or in
//! front of s3s-fs as a relay.

mod storage_support;

use std::process::Command;

use asset_core::{ErrorCode, Integration};
use asset_storage::{OrgSecrets, Storage, StorageConfig, StorageError, ValidateOptions};
use storage_support::{Listener, S3s, authority, config_allowing, files_in, port_of};

const ACCESS_KEY: &str = "AKIAS3SFSTRUSTKEY001";
const SECRET_KEY: &str = "s3sFsTrustSecretKey/abcdefghijklmnopqrst";
const CAT: &[u8] = b"\xff\xd8\xff\xe0 not really a jpeg";

struct World {
    s3s: S3s,
    /// Relays to s3s-fs and counts connections: the integration's endpoint.
    relay: Listener,
    secrets: tempfile::TempDir,
    temp: tempfile::TempDir,
}

async fn world() -> Option<World> {
    let s3s = S3s::start(ACCESS_KEY, SECRET_KEY)?;
    s3s.put("acme-assets", "img/cat.jpg", CAT);
    s3s.put("other-bucket", "img/cat.jpg", b"another tenant's object");
    let relay = Listener::forwarding_to(port_of(&s3s.endpoint));
    let secrets = tempfile::tempdir().unwrap();
    let outside = secrets.path().join("outside");
    for dir in ["org-1", "org-2", "outside"] {
        std::fs::create_dir(secrets.path().join(dir)).unwrap();
    }
    // The right key everywhere: a refusal is the rule's doing, not a wrong secret's.
    for file in ["org-1/acme.key", "org-2/acme.key", "outside/acme.key"] {
        std::fs::write(secrets.path().join(file), SECRET_KEY).unwrap();
    }
    std::os::unix::fs::symlink(outside.join("acme.key"), secrets.path().join("org-1/escape.key")).unwrap();
    std::os::unix::fs::symlink(
        secrets.path().join("org-2/acme.key"),
        secrets.path().join("org-1/theirs.key"),
    )
    .unwrap();
    Some(World { s3s, relay, secrets, temp: tempfile::tempdir().unwrap() })
}

impl World {
    fn config(&self, allowed: &str) -> StorageConfig {
        let mut cfg = config_allowing(&self.temp.path().join("work"), allowed);
        cfg.secrets_dir = Some(self.secrets.path().to_path_buf());
        // What the binary reads from its environment: another organisation's secret
        // among them. The worker's own variables never enter this map.
        cfg.org_secrets = OrgSecrets::from_pairs([
            ("ORG_SECRET_ORG_1__ACME_KEY", SECRET_KEY),
            ("ORG_SECRET_ORG_2__THEIR_KEY", SECRET_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("DATABASE_URL", SECRET_KEY),
        ]);
        cfg
    }

    async fn storage(&self, allowed: &str) -> Storage {
        let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
        Storage::with_aws_config(self.config(allowed), base).unwrap()
    }

    /// Allows the relay only.
    async fn relay_storage(&self) -> Storage {
        self.storage(authority(&self.relay.endpoint())).await
    }
}

fn integration(endpoint: &str, org: &str, secret_ref: &str) -> Integration {
    serde_json::from_value(serde_json::json!({
        "id": "int-trust", "org_id": org, "provider": "s3_compatible", "endpoint": endpoint,
        "path_style": true, "buckets": ["acme-assets"],
        "access": {"type": "iam_user", "access_key_id": ACCESS_KEY, "secret_ref": secret_ref}
    }))
    .unwrap()
}

fn assert_code(err: &StorageError, code: ErrorCode, what: &str) {
    assert_eq!(err.code(), code, "{what}: {err}");
    assert!(!err.is_retryable(), "{what}: {err}");
}

/// Issue 8: the worker sent signed GETs to 169.254.169.254 and connected to the loopback
/// ports of PostgreSQL and RabbitMQ for jobs naming them as their endpoint.
#[tokio::test]
async fn endpoints_on_loopback_metadata_or_private_addresses_are_refused_without_connecting() {
    let Some(w) = world().await else { return };
    // Where PostgreSQL would be: nothing may connect to it.
    let victim = Listener::counting();
    let p = victim.port;
    let storage = w.storage(authority(&w.s3s.endpoint)).await;
    let mut endpoints = vec![
        // s3s-fs's address, allowed on its own port only.
        format!("http://127.0.0.1:{p}"),
        format!("http://localhost:{p}"),
        format!("http://[::ffff:127.0.0.1]:{p}"),
        format!("http://[::1]:{p}"),
        format!("http://2130706433:{p}"),
        format!("http://0x7f.0.0.1:{p}"),
        format!("http://0.0.0.0:{p}"),
        format!("http://127.0.0.2:{p}"),
        "http://169.254.169.254".to_owned(),
        "http://[fd00:ec2::254]".to_owned(),
        "http://10.0.0.1:9000".to_owned(),
        "http://192.168.1.10:9000".to_owned(),
        "http://100.64.0.1:9000".to_owned(),
    ];
    // This machine's own name, when it resolves to loopback (a name only the resolver
    // can judge, as `localhost`).
    if let Ok(host) = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned())
        && !host.is_empty()
        && std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), p))
            .is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()))
    {
        endpoints.push(format!("http://{host}:{p}"));
    }
    for endpoint in &endpoints {
        let i = integration(endpoint, "org-1", "file:acme.key");
        let err = storage.fetch(&i, "s3://acme-assets/img/cat.jpg").await.unwrap_err();
        assert_code(&err, ErrorCode::EndpointNotAllowed, endpoint);
        let err = storage.open_partial(&i, "s3://acme-assets/img/cat.jpg", 65_536).await.unwrap_err();
        assert_code(&err, ErrorCode::EndpointNotAllowed, endpoint);
        assert!(!err.wants_full_download(), "{endpoint}: no fallback to a full download");
        // validate-storage's SDK calls go through the same policy.
        let report = storage.validate_access(&i, &ValidateOptions::default()).await;
        assert!(!report.ok);
        assert!(
            report.checks.iter().any(|c| c.code.as_deref() == Some("endpoint_not_allowed")),
            "{endpoint}: {report:#?}"
        );
    }
    // A signed URL made elsewhere is checked as well.
    let signed =
        asset_storage::SignedUrl::new(format!("http://127.0.0.1:{p}/acme-assets/k?X-Amz-Signature=0"), None);
    let err = storage.download_signed(&signed, None).await.unwrap_err();
    assert_code(&err, ErrorCode::EndpointNotAllowed, "a signed URL");
    assert_eq!(victim.accepted(), 0, "a refused endpoint was connected to");

    // The one the operator allowed works, through the same policy.
    let allowed = integration(&w.s3s.endpoint, "org-1", "file:acme.key");
    let asset = storage.fetch(&allowed, "s3://acme-assets/img/cat.jpg").await.unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), CAT);
    drop(asset);
    assert!(files_in(&w.temp.path().join("work")).is_empty());
}

/// A port-less CIDR of the allow-list admits what a host name resolves to.
#[tokio::test]
async fn an_allow_listed_cidr_admits_a_name_resolving_into_it() {
    let Some(w) = world().await else { return };
    let port = port_of(&w.s3s.endpoint);
    let endpoint = format!("http://localhost:{port}");
    let url = "s3://acme-assets/img/cat.jpg";
    let refused = w.storage(authority(&w.s3s.endpoint)).await;
    let err = refused.fetch(&integration(&endpoint, "org-1", "file:acme.key"), url).await.unwrap_err();
    assert_code(&err, ErrorCode::EndpointNotAllowed, "localhost with 127.0.0.1:PORT allowed");
    let storage = w.storage("127.0.0.0/8").await;
    let asset = storage.fetch(&integration(&endpoint, "org-1", "file:acme.key"), url).await.unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), CAT);
}

/// Issue 8: `bucket/..%2fother/…` was normalised by the HTTP client into another bucket;
/// only the server's signature check stopped it.
#[tokio::test]
async fn keys_with_dot_segments_are_refused_before_any_request() {
    let Some(w) = world().await else { return };
    let storage = w.relay_storage().await;
    let ep = w.relay.endpoint();
    let i = integration(&ep, "org-1", "file:acme.key");
    for url in [
        "s3://acme-assets/..%2fother-bucket/img/cat.jpg".to_owned(),
        "s3://acme-assets/..%2Fother-bucket%2Fimg%2Fcat.jpg".to_owned(),
        "s3://acme-assets/../other-bucket/img/cat.jpg".to_owned(),
        "s3://acme-assets/img/../../other-bucket/img/cat.jpg".to_owned(),
        "s3://acme-assets/img/./cat.jpg".to_owned(),
        "s3://acme-assets/%2e%2e/other-bucket/img/cat.jpg".to_owned(),
        "s3://acme-assets/..\\other-bucket\\img\\cat.jpg".to_owned(),
        format!("{ep}/acme-assets/..%2fother-bucket/img/cat.jpg"),
        format!("{ep}/acme-assets/%2e%2e%2fother-bucket%2fimg%2fcat.jpg"),
        format!("{ep}/acme-assets/img/%252e%252e/%252e%252e/other-bucket/img/cat.jpg"),
    ] {
        let err = storage.fetch(&i, &url).await.unwrap_err();
        assert_code(&err, ErrorCode::UrlNotInStorage, &url);
        let err = storage.open_partial(&i, &url, 4096).await.unwrap_err();
        assert_code(&err, ErrorCode::UrlNotInStorage, &url);
        let err = storage.presign(&i, &url, None).await.unwrap_err();
        assert_code(&err, ErrorCode::UrlNotInStorage, &url);
    }
    assert_eq!(w.relay.accepted(), 0, "a request left the worker");
    // The relay itself works: the refusals above are the guard's.
    let asset = storage.fetch(&i, "s3://acme-assets/img/cat.jpg").await.unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), CAT);
    assert!(w.relay.accepted() >= 1);
}

/// Issue 8: `secret_ref: env:NAME` resolved any variable of the worker (its own AWS
/// key, DATABASE_URL) and another organisation's secrets.
#[tokio::test]
async fn secret_refs_outside_the_orgs_namespace_are_refused_before_any_request() {
    let Some(w) = world().await else { return };
    let storage = w.relay_storage().await;
    let ep = w.relay.endpoint();
    let url = "s3://acme-assets/img/cat.jpg";
    for (org, secret_ref) in [
        ("org-1", "env:AWS_SECRET_ACCESS_KEY"),
        ("org-1", "env:DATABASE_URL"),
        ("org-1", "env:THEIR_KEY"),
        ("org-1", "env:ORG_SECRET_ORG_2__THEIR_KEY"),
        ("org-1", "file:../org-2/acme.key"),
        ("org-1", "file:../outside/acme.key"),
        ("org-1", "file:escape.key"),
        ("org-1", "file:theirs.key"),
        ("org-1", "file:/etc/hostname"),
        ("org-3", "file:acme.key"),
        ("org-3", "env:ACME_KEY"),
        ("Org_1", "env:ACME_KEY"),
    ] {
        let i = integration(&ep, org, secret_ref);
        let what = format!("{secret_ref} for {org}");
        let err = storage.fetch(&i, url).await.unwrap_err();
        assert_code(&err, ErrorCode::SecretRefNotAllowed, &what);
        let text = err.to_string();
        assert!(
            text.contains("ORG_SECRET_<ORG>__<NAME>") || text.contains("SECRETS_DIR/"),
            "the rule: {text}"
        );
        let report = storage.validate_access(&i, &ValidateOptions::default()).await;
        assert_eq!(report.checks[0].code.as_deref(), Some("secret_ref_not_allowed"), "{what}: {report:#?}");
    }
    assert_eq!(w.relay.accepted(), 0, "a request left the worker");

    // The organisation's own secrets work, by file and by variable.
    for secret_ref in ["file:acme.key", "env:ACME_KEY"] {
        let asset = storage.fetch(&integration(&ep, "org-1", secret_ref), url).await.unwrap();
        assert_eq!(std::fs::read(asset.path()).unwrap(), CAT, "{secret_ref}");
    }
    assert!(w.relay.accepted() >= 1);
}

/// The binary reads its real environment: a job naming the worker's own variables gets
/// nothing from it, its organisation's variable works.
#[tokio::test]
async fn validate_storage_binary_resolves_env_refs_in_the_orgs_namespace_only() {
    let Some(w) = world().await else { return };
    let bin = worker_binary();
    let run = |secret_ref: &str| -> serde_json::Value {
        let path = w.temp.path().join("integration.json");
        std::fs::write(
            &path,
            serde_json::to_vec(&integration(&w.relay.endpoint(), "org-1", secret_ref)).unwrap(),
        )
        .unwrap();
        let out = Command::new(&bin)
            .args(["validate-storage", "--json", "--key", "img/cat.jpg"])
            .arg(&path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TMPDIR", w.temp.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_REGION", "us-east-1")
            // The worker's own identity and settings: each is the key s3s-fs accepts,
            // so reading any of them would pass.
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("DATABASE_URL", SECRET_KEY)
            .env("ORG_SECRET_ORG_2__THEIR_KEY", SECRET_KEY)
            .env("ORG_SECRET_ORG_1__ACME_KEY", SECRET_KEY)
            .env("ALLOWED_ENDPOINTS", authority(&w.relay.endpoint()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        })
    };
    for secret_ref in ["env:AWS_SECRET_ACCESS_KEY", "env:DATABASE_URL", "env:THEIR_KEY"] {
        let report = run(secret_ref);
        let checks = report["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 1, "{secret_ref}: {report:#}");
        assert_eq!(checks[0]["code"], "secret_ref_not_allowed", "{secret_ref}: {report:#}");
    }
    assert_eq!(w.relay.accepted(), 0, "a request left the worker");
    let report = run("env:ACME_KEY");
    let read = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "read").cloned();
    assert_eq!(read.map(|c| c["ok"].clone()), Some(serde_json::json!(true)), "{report:#}");
    assert!(w.relay.accepted() >= 1);
}

/// The binary, built by the same cargo that runs this test.
fn worker_binary() -> std::path::PathBuf {
    let root = storage_support::workspace_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-q", "-p", "metadata-worker"])
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(status.success(), "building metadata-worker failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(Into::into).unwrap_or_else(|| root.join("target"));
    target.join("debug/metadata-worker")
}
