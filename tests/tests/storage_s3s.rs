//! Storage against s3s-fs, a real S3 server that validates SigV4 signatures and
//! presigned URLs: an S3-compatible integration with IAM-user keys, path-style, keys
//! with spaces and unicode, ranges, tampered and expired URLs, the size limit, temp
//! files removed on every path, and logs free of secrets.

mod storage_support;

use std::time::{Duration, SystemTime};

use asset_core::{ErrorCode, Integration};
use asset_storage::{ByteRange, SignedUrl, Storage, StorageError};
use storage_support::{Logs, S3s, authority, config, config_allowing, files_in, query_param};

const ACCESS_KEY: &str = "AKIAS3SFSTESTKEY0001";
const SECRET_KEY: &str = "s3sFsTestSecretKey/abcdefghijklmnopqrstu";

struct World {
    s3s: S3s,
    secrets: tempfile::TempDir,
    temp: tempfile::TempDir,
    storage: Storage,
    integration: Integration,
}

const CAT: &[u8] = b"\xff\xd8\xff\xe0 not really a jpeg, 0123456789";

async fn world() -> Option<World> {
    world_with(|_| {}).await
}

async fn world_with(tune: impl FnOnce(&mut asset_storage::StorageConfig)) -> Option<World> {
    let s3s = S3s::start(ACCESS_KEY, SECRET_KEY)?;
    s3s.put("acme-assets", "img/cat.jpg", CAT);
    s3s.put("acme-assets", "my photos/été 猫+1.jpg", b"unicode key");
    s3s.put("other-bucket", "img/cat.jpg", b"foreign");
    let secrets = tempfile::tempdir().unwrap();
    // file:NAME reads SECRETS_DIR/<org_id>/NAME.
    std::fs::create_dir(secrets.path().join("org-1")).unwrap();
    std::fs::write(secrets.path().join("org-1/acme.key"), format!("{SECRET_KEY}\n")).unwrap();
    let temp = tempfile::tempdir().unwrap();
    // s3s-fs listens on loopback: the operator's allow-list names it, port included.
    let mut cfg = config_allowing(&temp.path().join("work"), authority(&s3s.endpoint));
    cfg.secrets_dir = Some(secrets.path().to_path_buf());
    tune(&mut cfg);
    // No AWS call goes to the base identity for IAM-user integrations.
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    let storage = Storage::with_aws_config(cfg, base).unwrap();
    let integration = serde_json::from_value(serde_json::json!({
        "id": "int-s3s", "org_id": "org-1", "provider": "s3_compatible",
        "endpoint": s3s.endpoint, "path_style": true, "buckets": ["acme-assets"],
        "access": {"type": "iam_user", "access_key_id": ACCESS_KEY, "secret_ref": "file:acme.key"}
    }))
    .unwrap();
    Some(World { s3s, secrets, temp, storage, integration })
}

impl World {
    fn work_dir(&self) -> std::path::PathBuf {
        self.temp.path().join("work")
    }
}

#[tokio::test]
async fn iam_user_keys_path_style_download_and_delete() {
    let Some(w) = world().await else { return };
    let asset = w.storage.fetch(&w.integration, "s3://acme-assets/img/cat.jpg").await.unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), CAT);
    assert_eq!(asset.size(), CAT.len() as u64);
    assert_eq!(asset.bytes_downloaded(), CAT.len() as u64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(asset.path()).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(w.work_dir()).unwrap().permissions().mode() & 0o777, 0o700);
    }
    let path = asset.path().to_path_buf();
    assert!(path.starts_with(w.work_dir()));
    asset.delete().unwrap();
    assert!(!path.exists());
    assert_eq!(w.storage.sts_calls(), 0);
}

#[tokio::test]
async fn keys_with_spaces_unicode_and_plus() {
    let Some(w) = world().await else { return };
    let endpoint = &w.s3s.endpoint;
    for url in [
        "s3://acme-assets/my photos/été 猫+1.jpg".to_owned(),
        format!("{endpoint}/acme-assets/my%20photos/%C3%A9t%C3%A9%20%E7%8C%AB+1.jpg"),
        format!("{endpoint}/acme-assets/my photos/été 猫%2B1.jpg"),
    ] {
        let asset = w.storage.fetch(&w.integration, &url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(std::fs::read(asset.path()).unwrap(), b"unicode key", "{url}");
    }
    let missing =
        w.storage.fetch(&w.integration, "s3://acme-assets/my photos/ete 猫 1.jpg").await.unwrap_err();
    assert_eq!(missing.code(), ErrorCode::NotFound, "{missing}");
    assert!(files_in(&w.work_dir()).is_empty());
}

#[tokio::test]
async fn byte_ranges_prefix_suffix_span() {
    let Some(w) = world().await else { return };
    let url = "s3://acme-assets/img/cat.jpg";
    let cases = [
        (ByteRange::Prefix(4), &CAT[..4]),
        (ByteRange::Suffix(10), &CAT[CAT.len() - 10..]),
        (ByteRange::Span { start: 5, end: 14 }, &CAT[5..=14]),
        (ByteRange::Prefix(10_000), CAT),
    ];
    for (range, want) in cases {
        let asset = w.storage.fetch_range(&w.integration, url, Some(range)).await.unwrap();
        assert_eq!(std::fs::read(asset.path()).unwrap(), want, "{range:?}");
        // A suffix is the first byte (the size), then a span: not every store serves
        // `bytes=-n` (Azure Blob does not).
        let extra = u64::from(matches!(range, ByteRange::Suffix(_)));
        assert_eq!(asset.bytes_downloaded(), want.len() as u64 + extra, "{range:?}");
    }
}

#[tokio::test]
async fn tampered_presigned_urls_are_refused_by_the_server() {
    let Some(w) = world().await else { return };
    let signed = w.storage.presign(&w.integration, "s3://acme-assets/img/cat.jpg", None).await.unwrap();
    // The untouched URL works, so the refusals below are the tampering's doing.
    w.storage.download_signed(&signed, None).await.unwrap().delete().unwrap();

    let url = signed.expose();
    let sig = query_param(url, "X-Amz-Signature").unwrap();
    let flipped: String = sig.chars().rev().collect();
    let tampered = [
        url.replace(&sig, &flipped),
        url.replace("img/cat.jpg", "img/dog.jpg"),
        url.replace("acme-assets", "other-bucket"),
        url.replace("X-Amz-Expires=", "X-Amz-Expires=9"),
    ];
    for t in tampered {
        let err = w.storage.download_signed(&SignedUrl::new(t, None), None).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
        assert!(!err.is_retryable());
        let StorageError::AccessDenied { service_code, .. } = &err else { panic!("{err:?}") };
        assert_eq!(service_code, "SignatureDoesNotMatch", "{err}");
        assert!(!err.to_string().contains(&sig), "the signature leaked into {err}");
    }
    assert!(files_in(&w.work_dir()).is_empty());
}

#[tokio::test]
async fn expired_presigned_urls_are_refused_by_the_server() {
    let Some(w) = world().await else { return };
    // Signed 20 minutes ago with the 5-minute TTL: expired 15 minutes ago.
    let start = SystemTime::now() - Duration::from_secs(20 * 60);
    let signed =
        w.storage.presign(&w.integration, "s3://acme-assets/img/cat.jpg", Some(start)).await.unwrap();
    assert_eq!(query_param(signed.expose(), "X-Amz-Expires").as_deref(), Some("300"));
    let err = w.storage.download_signed(&signed, None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().to_lowercase().contains("expire"), "the server's reason is reported: {err}");
}

#[tokio::test]
async fn a_wrong_secret_is_access_denied() {
    let Some(w) = world().await else { return };
    std::fs::write(w.secrets.path().join("org-1/acme.key"), "s3sFsTestSecretKey/abcdefghijklmnopqrstX")
        .unwrap();
    let err = w.storage.fetch(&w.integration, "s3://acme-assets/img/cat.jpg").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
}

#[tokio::test]
async fn a_file_above_the_limit_is_stopped_early() {
    let Some(w) = world_with(|c| c.max_asset_bytes = 64 * 1024).await else { return };
    w.s3s.put("acme-assets", "big.bin", &vec![7u8; 4 * 1024 * 1024]);
    let err = w.storage.fetch(&w.integration, "s3://acme-assets/big.bin").await.unwrap_err();
    let StorageError::TooLarge { limit, received } = err else { panic!("{err:?}") };
    assert_eq!(limit, 64 * 1024);
    // s3s-fs sends Content-Length: refused before a byte of the body is read.
    assert_eq!(received, 0);
    assert!(files_in(&w.work_dir()).is_empty());
    // A prefix of the same object is within the limit.
    let head =
        w.storage.fetch_range(&w.integration, "s3://acme-assets/big.bin", Some(ByteRange::Prefix(16))).await;
    assert_eq!(head.unwrap().size(), 16);
}

#[tokio::test]
async fn ssrf_guard_refuses_foreign_urls_before_any_request() {
    let Some(w) = world().await else { return };
    let port = w.s3s.endpoint.rsplit(':').next().unwrap();
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_owned(),
        format!("http://localhost:{port}/acme-assets/img/cat.jpg"),
        format!("http://127.0.0.2:{port}/acme-assets/img/cat.jpg"),
        format!("{}/other-bucket/img/cat.jpg", w.s3s.endpoint),
        "s3://other-bucket/img/cat.jpg".to_owned(),
        "https://acme-assets.s3.amazonaws.com/img/cat.jpg".to_owned(),
        "https://example.com/acme-assets/img/cat.jpg".to_owned(),
    ] {
        let err = w.storage.fetch(&w.integration, &url).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::UrlNotInStorage, "{url}: {err}");
    }
    assert!(files_in(&w.work_dir()).is_empty());
}

#[tokio::test]
async fn temp_files_are_removed_on_error_and_on_panic() {
    let Some(w) = world().await else { return };
    let err = w.storage.fetch(&w.integration, "s3://acme-assets/nope.jpg").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert!(files_in(&w.work_dir()).is_empty(), "error path left a file");

    let storage = w.storage.clone();
    let integration = w.integration.clone();
    let dir = w.work_dir();
    let task = tokio::spawn(async move {
        let asset = storage.fetch(&integration, "s3://acme-assets/img/cat.jpg").await.unwrap();
        assert_eq!(files_in(&dir), vec![asset.path().to_path_buf()]);
        panic!("the probe panicked while holding the asset");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert!(files_in(&w.work_dir()).is_empty(), "panic left a file");
}

#[tokio::test]
async fn startup_sweep_removes_leftovers_of_a_crashed_process() {
    let Some(w) = world().await else { return };
    // What a crashed process (pid 0 never runs user code) would have left.
    let leftover = w.work_dir().join("mw-0-crashed.part");
    std::fs::write(&leftover, b"half a download").unwrap();
    let keep = w.work_dir().join("operator-notes.txt");
    std::fs::write(&keep, b"not ours").unwrap();
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    let _again = Storage::with_aws_config(w.storage.config().clone(), base).unwrap();
    assert!(!leftover.exists());
    assert!(keep.exists());
}

#[tokio::test]
async fn logs_of_a_full_run_hold_no_secret() {
    let Some(w) = world().await else { return };
    let logs = Logs::capture();
    let signed = w.storage.presign(&w.integration, "s3://acme-assets/img/cat.jpg", None).await.unwrap();
    let asset = w.storage.fetch(&w.integration, "s3://acme-assets/img/cat.jpg").await.unwrap();
    asset.delete().unwrap();
    let bad = SignedUrl::new(signed.expose().replace("img/cat", "img/dog"), None);
    let err = w.storage.download_signed(&bad, None).await.unwrap_err();
    tracing::info!(error = %err, debug = ?err, url = ?signed, "what a caller might log");
    let sig = query_param(signed.expose(), "X-Amz-Signature").unwrap();
    assert!(logs.text().contains("fetching"), "the capture saw nothing:\n{}", logs.text());
    logs.assert_free_of(&[("secret key", SECRET_KEY), ("signed URL", signed.expose()), ("signature", &sig)]);
    assert!(!format!("{err} {err:?} {signed:?} {signed}").contains(&sig));
}

#[tokio::test]
async fn local_provider_copies_like_a_download_and_stays_in_its_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("images")).unwrap();
    std::fs::write(root.path().join("images/cat.jpg"), CAT).unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"outside").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.path().join("images/link.jpg"))
        .unwrap();
    let temp = tempfile::tempdir().unwrap();
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    let storage = Storage::with_aws_config(config(temp.path()), base).unwrap();
    let integration: Integration =
        serde_json::from_value(serde_json::json!({"provider": "local", "root": root.path()})).unwrap();

    let asset = storage.fetch(&integration, "local://images/cat.jpg").await.unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), CAT);
    assert!(asset.path().starts_with(temp.path()));
    drop(asset);
    let head = storage
        .fetch_range(&integration, "local://images/cat.jpg", Some(ByteRange::Suffix(3)))
        .await
        .unwrap();
    assert_eq!(std::fs::read(head.path()).unwrap(), &CAT[CAT.len() - 3..]);
    drop(head);
    for url in [
        "local://../secret.txt",
        "local://images/../../secret.txt",
        "local:///etc/passwd",
        "local://images/link.jpg",
    ] {
        let err = storage.fetch(&integration, url).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::UrlNotInStorage, "{url}: {err}");
    }
    assert_eq!(
        storage.fetch(&integration, "local://images/none.jpg").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert!(files_in(temp.path()).is_empty());
}
