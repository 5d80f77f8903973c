//! One conformance suite, every origin: the same cases, written once, against the local
//! provider, s3s-fs (S3 with IAM-user keys; it checks SigV4 and presigned URLs), Azurite
//! with an account key (service SAS) and with a customer's SAS token (it recomputes
//! every SAS signature), and the GCS emulator with a service-account key (downloads and
//! ranges only: no local server checks V4 signatures, so the signer itself is proven
//! against Google's in `storage_gcs.rs`). Every object has a name that needs escaping.
//! The table of origin × case → result is printed (`--nocapture`) and each cell is
//! asserted against what that origin must answer.

mod storage_support;

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use asset_core::Integration;
use asset_storage::{ByteRange, SignedUrl, Storage, StorageConfig, StorageError};
use storage_support::azurite::{ACCOUNT, Azurite, DEV_KEY, account_sas, encode_name};
use storage_support::gcs::{Emulator, TestKey, python};
use storage_support::{S3s, authority, config_allowing, files_in};

/// A space, unicode, and each of `% # + & = , ( ) ! $ ' : ; @ ~`.
const NAMES: &[&str] = &[
    "img/cat.jpg",
    "my photos/été 猫+1.jpg",
    "100% #1 & a=b, (c)!$'.txt",
    "colon:semi;at@tilde~plus+.bin",
    "a%2Fb%20c.txt",
];

const S3_KEY: &str = "AKIAS3SCONFORMANCE01";
const S3_SECRET: &str = "s3sConformanceSecret/abcdefghijklmnopqr";
const GCS_SA: &str = "reader@cust-proj.iam.gserviceaccount.com";

/// Each object's bytes: its name, then a counter, 300 bytes in all.
fn body(name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.extend((0..=255u8).cycle().take(300 - b.len()));
    b
}

/// One origin under test: its storage, integration and URLs, and the server it needs.
struct Origin {
    name: &'static str,
    storage: Storage,
    integration: Integration,
    url: Box<dyn Fn(&str) -> String>,
    /// A URL outside the integration's buckets (another bucket, container or root).
    foreign: String,
    /// The query parameter that carries the signature; `None`: nothing is signed.
    signature: Option<&'static str>,
    /// Whether the server checks signatures (the GCS emulator does not).
    checks_signatures: bool,
    /// Whether replies carry an ETag (the GCS emulator's do not): without one, two
    /// ranges cannot be proven to be of one version, and the fetch loop falls back to
    /// one full read.
    etags: bool,
    temp: tempfile::TempDir,
    _keep: Box<dyn std::any::Any>,
}

async fn storage(cfg: StorageConfig) -> Storage {
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    Storage::with_aws_config(cfg, base).unwrap()
}

fn secrets(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("org-1")).unwrap();
    for (name, value) in files {
        std::fs::write(dir.path().join("org-1").join(name), value).unwrap();
    }
    dir
}

async fn local() -> Origin {
    let root = tempfile::tempdir().unwrap();
    for name in NAMES {
        let path = root.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body(name)).unwrap();
    }
    let temp = tempfile::tempdir().unwrap();
    let storage = storage(storage_support::config(&temp.path().join("work"))).await;
    let integration =
        serde_json::from_value(serde_json::json!({"provider": "local", "root": root.path()})).unwrap();
    Origin {
        name: "local",
        storage,
        integration,
        url: Box::new(|n| format!("local://{n}")),
        foreign: "local://../outside.jpg".into(),
        signature: None,
        checks_signatures: false,
        etags: true,
        temp,
        _keep: Box::new(root),
    }
}

async fn s3s() -> Option<Origin> {
    let s3s = S3s::start(S3_KEY, S3_SECRET)?;
    for name in NAMES {
        s3s.put("acme-assets", name, &body(name));
    }
    s3s.put("other-bucket", "img/cat.jpg", b"foreign");
    let secrets = secrets(&[("s3.key", S3_SECRET)]);
    let temp = tempfile::tempdir().unwrap();
    let mut cfg = config_allowing(&temp.path().join("work"), authority(&s3s.endpoint));
    cfg.secrets_dir = Some(secrets.path().to_path_buf());
    let integration = serde_json::from_value(serde_json::json!({
        "id": "int-s3s", "org_id": "org-1", "provider": "s3_compatible",
        "endpoint": s3s.endpoint, "path_style": true, "buckets": ["acme-assets"],
        "access": {"type": "iam_user", "access_key_id": S3_KEY, "secret_ref": "file:s3.key"}
    }))
    .unwrap();
    Some(Origin {
        name: "s3s-fs, iam_user",
        storage: storage(cfg).await,
        integration,
        url: Box::new(|n| format!("s3://acme-assets/{n}")),
        foreign: "s3://other-bucket/img/cat.jpg".into(),
        signature: Some("X-Amz-Signature"),
        checks_signatures: true,
        etags: true,
        temp,
        _keep: Box::new((s3s, secrets)),
    })
}

/// Azurite with an account key (service SAS), or with a customer's SAS token.
async fn azurite(sas_token: bool) -> Option<Origin> {
    let azurite = Azurite::start_ready(None).await?;
    for name in NAMES {
        azurite.put("assets", name, &body(name)).await;
    }
    azurite.put("other", "img/cat.jpg", b"foreign").await;
    let token = account_sas("rl", SystemTime::now() + Duration::from_secs(3600));
    let secrets = secrets(&[("azure.key", DEV_KEY), ("customer.sas", &token)]);
    let temp = tempfile::tempdir().unwrap();
    let mut cfg = config_allowing(&temp.path().join("work"), &format!("127.0.0.1:{}", azurite.port()));
    cfg.secrets_dir = Some(secrets.path().to_path_buf());
    let access = if sas_token {
        serde_json::json!({"type": "sas_token", "secret_ref": "file:customer.sas"})
    } else {
        serde_json::json!({"type": "account_key", "secret_ref": "file:azure.key"})
    };
    let integration = serde_json::from_value(serde_json::json!({
        "id": "int-az", "org_id": "org-1", "provider": "azure", "account": ACCOUNT,
        "endpoint": azurite.endpoint, "containers": ["assets"], "access": access
    }))
    .unwrap();
    let (endpoint, foreign) = (azurite.endpoint.clone(), azurite.url("other", "img/cat.jpg"));
    Some(Origin {
        name: if sas_token { "Azurite, sas_token" } else { "Azurite, account_key" },
        storage: storage(cfg).await,
        integration,
        url: Box::new(move |n| format!("{endpoint}/assets/{}", encode_name(n))),
        foreign,
        signature: Some("sig"),
        checks_signatures: true,
        etags: true,
        temp,
        _keep: Box::new((azurite, secrets)),
    })
}

async fn gcs_emulator() -> Option<Origin> {
    let py = python()?;
    let emulator = Emulator::start(&py);
    for name in NAMES {
        emulator.put(name, &body(name)).await;
    }
    let key = TestKey::new(&py, GCS_SA);
    let secrets = secrets(&[("sa.json", &key.json)]);
    let temp = tempfile::tempdir().unwrap();
    let mut cfg = config_allowing(&temp.path().join("work"), authority(&emulator.endpoint));
    cfg.secrets_dir = Some(secrets.path().to_path_buf());
    let integration = serde_json::from_value(serde_json::json!({
        "id": "int-gcs", "org_id": "org-1", "provider": "gcs", "endpoint": emulator.endpoint,
        "buckets": ["cust-bucket"],
        "access": {"type": "service_account_key", "client_email": GCS_SA, "secret_ref": "file:sa.json"}
    }))
    .unwrap();
    Some(Origin {
        name: "GCS emulator, service_account_key",
        storage: storage(cfg).await,
        integration,
        url: Box::new(|n| format!("gs://cust-bucket/{n}")),
        foreign: "gs://other-bucket/img/cat.jpg".into(),
        signature: Some("X-Goog-Signature"),
        checks_signatures: false,
        etags: false,
        temp,
        _keep: Box::new((emulator, secrets, key)),
    })
}

fn code(e: &StorageError) -> String {
    if std::env::var_os("CONFORMANCE_DEBUG").is_some() {
        eprintln!("{e}");
    }
    e.code().as_str().to_owned()
}

/// The cases, in the table's column order, each answering one cell.
const CASES: &[&str] =
    &["whole", "prefix 16", "suffix 10", "header-first", "missing", "foreign bucket", "tampered signature"];

async fn run(o: &Origin) -> Vec<String> {
    let (s, i) = (&o.storage, &o.integration);
    let mut cells = Vec::new();

    // Every name, whole: its bytes, nothing more received.
    let mut cell = "ok".to_owned();
    for name in NAMES {
        let want = body(name);
        match s.fetch(i, &(o.url)(name)).await {
            Ok(a)
                if std::fs::read(a.path()).unwrap() == want && a.bytes_downloaded() == want.len() as u64 => {}
            Ok(a) => cell = format!("{name:?}: {} bytes, wrong", a.size()),
            Err(e) => cell = format!("{name:?}: {}", code(&e)),
        }
    }
    cells.push(cell);

    // A prefix and a suffix of every name: just those bytes (a suffix is the first byte,
    // for the size, then a span: not every store serves `bytes=-n`).
    for (range, pick, extra) in [
        (ByteRange::Prefix(16), (|b: &[u8]| b[..16].to_vec()) as fn(&[u8]) -> Vec<u8>, 0),
        (ByteRange::Suffix(10), |b: &[u8]| b[b.len() - 10..].to_vec(), 1),
    ] {
        let mut cell = "ok".to_owned();
        for name in NAMES {
            let want = pick(&body(name));
            match s.fetch_range(i, &(o.url)(name), Some(range)).await {
                Ok(a)
                    if std::fs::read(a.path()).unwrap() == want
                        && a.bytes_downloaded() == want.len() as u64 + extra => {}
                Ok(a) => {
                    cell = format!("{name:?}: {} bytes ({} received), wrong", a.size(), a.bytes_downloaded())
                }
                Err(e) => cell = format!("{name:?}: {}", code(&e)),
            }
        }
        cells.push(cell);
    }

    // Header-first: a prefix learns the size, a later span lands at its offsets.
    let mut cell = "ok".to_owned();
    for name in NAMES {
        let want = body(name);
        match s.open_partial(i, &(o.url)(name), 8).await {
            Ok((mut p, first)) => {
                let span = p.fetch(200..220).await;
                let disk = std::fs::read(p.path()).unwrap();
                let right = first == (0..8)
                    && p.total() == want.len() as u64
                    && span.as_ref().is_ok_and(|r| *r == (200..220))
                    && disk[..8] == want[..8]
                    && disk[200..220] == want[200..220]
                    && p.bytes_downloaded() == 28
                    && p.requests() == 2;
                cell = match span {
                    Err(e) => code(&e),
                    Ok(_) if right => cell,
                    Ok(span) => format!("{name:?}: {first:?} of {}, then {span:?}", p.total()),
                };
            }
            Err(e) => cell = code(&e),
        }
    }
    cells.push(cell);

    let missing = s.fetch(i, &(o.url)("no such object.jpg")).await;
    cells.push(missing.map_or_else(|e| code(&e), |_| "read".into()));
    let foreign = s.fetch(i, &o.foreign).await;
    cells.push(foreign.map_or_else(|e| code(&e), |_| "read".into()));

    // The signature with another first character, on the server.
    cells.push(match o.signature {
        None => "n/a".into(),
        Some(param) => {
            let signed = s.presign(i, &(o.url)(NAMES[1]), None).await.unwrap();
            let tampered = tamper(signed.expose(), param);
            match s.download_signed(&SignedUrl::new(tampered, signed.expires_at()), None).await {
                Err(e) => code(&e),
                Ok(_) => "read".into(),
            }
        }
    });
    assert!(files_in(&o.temp.path().join("work")).is_empty(), "{}: a temp file was left", o.name);
    cells
}

/// `url` with the first character of query parameter `param`'s value changed.
fn tamper(url: &str, param: &str) -> String {
    let at = url.find(&format!("{param}=")).unwrap() + param.len() + 1;
    let first = url[at..].chars().next().unwrap();
    let other = if first == '0' { '1' } else { '0' };
    format!("{}{other}{}", &url[..at], &url[at + first.len_utf8()..])
}

#[tokio::test]
async fn every_origin_answers_every_case_as_its_provider_must() {
    let mut origins = vec![local().await];
    let found = [s3s().await, azurite(false).await, azurite(true).await, gcs_emulator().await];
    let missing = found.iter().filter(|o| o.is_none()).count();
    origins.extend(found.into_iter().flatten());
    if missing > 0 && storage_support::ci() {
        panic!("{missing} origin(s) could not be started, and CI does not skip");
    }

    let mut table = format!("| origin | {} |\n|---|{}\n", CASES.join(" | "), "---|".repeat(CASES.len()));
    let mut wrong = Vec::new();
    for o in &origins {
        let cells = run(o).await;
        let _ = writeln!(table, "| {} | {} |", o.name, cells.join(" | "));
        let tampered = match (o.signature, o.checks_signatures) {
            (None, _) => "n/a",
            (Some(_), true) => "access_denied",
            // The GCS emulator checks no signature: the signer is proven against
            // Google's own in storage_gcs.rs instead.
            (Some(_), false) => "read",
        };
        // A failed ranged read is `upstream` to a caller; the fetch loop reads the
        // object whole instead.
        let versions = if o.etags { "ok" } else { "upstream" };
        let expected = ["ok", "ok", "ok", versions, "not_found", "url_not_in_storage", tampered];
        for ((case, got), want) in CASES.iter().zip(&cells).zip(expected) {
            if got != want {
                wrong.push(format!("{} / {case}: {got} (expected {want})", o.name));
            }
        }
    }
    println!("{table}");
    assert!(wrong.is_empty(), "{}\n{table}", wrong.join("\n"));
    assert_eq!(origins.len(), 5 - missing);
}
