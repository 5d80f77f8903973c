//! Azure Blob against Azurite, Microsoft's emulator, which recomputes and compares both
//! kinds of SAS signature: a plain-HTTP instance for account-key (service) SAS and
//! customer SAS tokens, an HTTPS instance with `--oauth basic` for user delegation keys
//! (Get User Delegation Key needs a bearer token over HTTPS). The Entra token endpoint
//! is a small server in this file that counts its calls and hands out the unsigned JWT
//! Azurite's basic OAuth mode accepts. Blob names that need escaping throughout.

mod storage_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use asset_core::{ErrorCode, Integration};
use asset_storage::{AppCredential, ByteRange, SignedUrl, Storage, StorageConfig, StorageError};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use storage_support::azurite::{ACCOUNT, Azurite, DEV_KEY, Tls, account_sas, hmac_b64, sas_time};
use storage_support::{Logs, config_allowing, files_in, free_port, query_param};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const PLATFORM_APP: &str = "0b6a1d6e-1b4f-4a53-9e36-0c1e2c5d7f10";
const PLATFORM_SECRET: &str = "platform-app-client-secret-0000001";
const CUSTOMER_APP: &str = "5a1c9e0d-3f7b-4c2a-8d6e-9b0a1f2e3d4c";
const CUSTOMER_SECRET: &str = "customer-app-client-secret-0000002";

/// Names that need escaping: a space, unicode, and each of `% # + & = , ( ) ! $ ' : ; @ ~`.
const AWKWARD: &[&str] = &[
    "img/cat.jpg",
    "my photos/été 猫+1.jpg",
    "100% #1 & a=b, (c)!$'.txt",
    "colon:semi;at@tilde~plus+.bin",
    "a%2Fb%20c.txt",
];

const CAT: &[u8] = b"\xff\xd8\xff\xe0 not really a jpeg, 0123456789";

fn body_of(name: &str) -> Vec<u8> {
    format!("contents of {name}").into_bytes()
}

// ---------------------------------------------------------------------------------
// Azurite

/// The blobs every test reads.
async fn seed(a: &Azurite) {
    a.put("assets", "img/cat.jpg", CAT).await;
    for name in AWKWARD.iter().skip(1) {
        a.put("assets", name, &body_of(name)).await;
    }
    a.put("assets", "big.bin", &(0..=255u8).cycle().take(1 << 20).collect::<Vec<_>>()).await;
    a.put("other", "img/cat.jpg", b"foreign").await;
}

// ---------------------------------------------------------------------------------
// The Entra token endpoint

/// Answers `POST /{tenant}/oauth2/v2.0/token` with an unsigned JWT for that tenant,
/// counting the calls and keeping the form bodies it got.
struct TokenServer {
    port: u16,
    calls: Arc<AtomicUsize>,
    bodies: Arc<std::sync::Mutex<Vec<String>>>,
}

fn jwt(tenant: &str, oid: &str) -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let header = B64URL.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "aud": "https://storage.azure.com", "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now - 60, "nbf": now - 60, "exp": now + 3600, "oid": oid, "tid": tenant,
    });
    let payload = B64URL.encode(claims.to_string());
    format!("{header}.{payload}.c2lnbmF0dXJlLW5vdC1jaGVja2VkLWJ5LWF6dXJpdGU")
}

impl TokenServer {
    fn start() -> TokenServer {
        let listener = TcpListener::bind(("127.0.0.1", free_port())).unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, b) = (calls.clone(), bodies.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut stream) = conn else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                c.fetch_add(1, Ordering::SeqCst);
                b.lock().unwrap().push(body.clone());
                let tenant = request_line.split('/').nth(1).unwrap_or_default().to_owned();
                let secret_ok = body.contains(&format!("client_secret={PLATFORM_SECRET}"))
                    || body.contains(&format!("client_secret={CUSTOMER_SECRET}"));
                let (status, reply) = if request_line.contains("/oauth2/v2.0/token") && secret_ok {
                    let token = jwt(&tenant, "9d1f1a52-6ab4-4bd4-8f2c-3a6b4a6e0c11");
                    (
                        "200 OK",
                        serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token}),
                    )
                } else {
                    (
                        "401 Unauthorized",
                        serde_json::json!({"error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided. Trace ID: x"}),
                    )
                };
                let reply = reply.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        TokenServer { port, calls, bodies }
    }

    fn authority(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------
// Worlds

struct World {
    azurite: Azurite,
    secrets: tempfile::TempDir,
    temp: tempfile::TempDir,
    storage: Storage,
    _tls: Option<Tls>,
    token: Option<TokenServer>,
}

impl World {
    fn work_dir(&self) -> PathBuf {
        self.temp.path().join("work")
    }

    fn integration(&self, access: serde_json::Value) -> Integration {
        serde_json::from_value(serde_json::json!({
            "id": "int-az", "org_id": "org-1", "provider": "azure", "account": ACCOUNT,
            "endpoint": self.azurite.endpoint, "containers": ["assets"], "access": access
        }))
        .unwrap()
    }

    fn write_secret(&self, name: &str, value: &str) {
        std::fs::write(self.secrets.path().join("org-1").join(name), value).unwrap();
    }
}

async fn world(https: bool, tune: impl FnOnce(&mut StorageConfig)) -> Option<World> {
    let tls = https.then(Tls::make);
    let azurite = Azurite::start_ready(tls.as_ref()).await?;
    seed(&azurite).await;
    let secrets = tempfile::tempdir().unwrap();
    std::fs::create_dir(secrets.path().join("org-1")).unwrap();
    std::fs::write(secrets.path().join("org-1/azure.key"), format!("{DEV_KEY}\n")).unwrap();
    std::fs::write(secrets.path().join("org-1/app.secret"), CUSTOMER_SECRET).unwrap();
    // The tenants organisation org-1 consented for, as the platform records them.
    std::fs::write(secrets.path().join("org-1/azure-tenants"), format!("# consented\n{TENANT}\n")).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let token = https.then(TokenServer::start);
    // Azurite listens on loopback: the operator's allow-list names it, port included.
    let mut cfg = config_allowing(&temp.path().join("work"), &format!("127.0.0.1:{}", azurite.port()));
    cfg.secrets_dir = Some(secrets.path().to_path_buf());
    if let (Some(tls), Some(token)) = (&tls, &token) {
        cfg.ca_certificates = vec![tls.ca_pem()];
        cfg.azure.authority_host = token.authority();
        cfg.azure.client_id = Some(PLATFORM_APP.into());
        cfg.azure.credential = Some(AppCredential::Secret(asset_storage::Secret::new(PLATFORM_SECRET)));
        cfg.azure.tenant_binding = Some("file:azure-tenants".into());
    }
    tune(&mut cfg);
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    let storage = Storage::with_aws_config(cfg, base).unwrap();
    Some(World { azurite, secrets, temp, storage, _tls: tls, token })
}

fn account_key() -> serde_json::Value {
    serde_json::json!({"type": "account_key", "secret_ref": "file:azure.key"})
}

fn delegated() -> serde_json::Value {
    serde_json::json!({"type": "iam_delegated", "tenant_id": TENANT})
}

fn denied_code(err: &StorageError) -> &str {
    match err {
        StorageError::AccessDenied { service_code, .. } => service_code,
        other => panic!("expected access_denied, got {other:?}"),
    }
}

/// Good URLs of every awkward name, whole and ranged; nothing left in the temp dir.
async fn downloads_every_name(w: &World, integration: &Integration) {
    for name in AWKWARD {
        let url = w.azurite.url("assets", name);
        let want = if *name == "img/cat.jpg" { CAT.to_vec() } else { body_of(name) };
        let asset = w.storage.fetch(integration, &url).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(std::fs::read(asset.path()).unwrap(), want, "{name}");
        drop(asset);
        let head = w.storage.fetch_range(integration, &url, Some(ByteRange::Prefix(4))).await.unwrap();
        assert_eq!(std::fs::read(head.path()).unwrap(), &want[..4], "{name}");
        assert_eq!(head.bytes_downloaded(), 4, "{name}: a 206 of 4 bytes");
    }
    assert!(files_in(&w.work_dir()).is_empty());
}

// ---------------------------------------------------------------------------------
// Account key (service SAS) and SAS tokens, on the plain-HTTP instance

#[tokio::test]
async fn account_key_sas_reads_every_awkward_name_whole_and_ranged() {
    let Some(w) = world(false, |_| {}).await else { return };
    let i = w.integration(account_key());
    downloads_every_name(&w, &i).await;

    // The ranged path: a prefix learns size and ETag, a later span is sent with If-Match.
    let url = w.azurite.url("assets", "big.bin");
    let (mut partial, first) = w.storage.open_partial(&i, &url, 4096).await.unwrap();
    assert_eq!((first, partial.total()), (0..4096, 1 << 20));
    let span = partial.fetch(500_000..500_100).await.unwrap();
    assert_eq!(span, 500_000..500_100);
    let bytes = std::fs::read(partial.path()).unwrap();
    assert_eq!(bytes[500_000], (500_000 % 256) as u8);
    assert_eq!(partial.bytes_downloaded(), 4096 + 100);

    let signed = w.storage.presign(&i, &url, None).await.unwrap();
    assert_eq!(query_param(signed.expose(), "sp").as_deref(), Some("r"));
    assert_eq!(query_param(signed.expose(), "sr").as_deref(), Some("b"));
    // Plain HTTP only because the operator admitted this endpoint; https otherwise.
    assert_eq!(query_param(signed.expose(), "spr").as_deref(), Some("https,http"));
    let se = query_param(signed.expose(), "se").unwrap();
    let ttl = chrono_free_parse(&se).duration_since(SystemTime::now()).unwrap();
    assert!(ttl <= Duration::from_secs(300) && ttl > Duration::from_secs(250), "{ttl:?}");
}

/// The signature with another first character, whatever it starts with (a fixed `A` left a
/// signature that starts with `A` untouched: one CI run in 64 saw the "tampered" URL work).
fn other_first_char(sig: &str) -> String {
    let first = if sig.starts_with('A') { 'B' } else { 'A' };
    format!("{first}{}", &sig[1..])
}

/// `YYYY-MM-DDTHH:MM:SSZ` back to a time (the inverse of [`sas_time`], by search).
fn chrono_free_parse(s: &str) -> SystemTime {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    (now - 86400..now + 86400)
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t))
        .find(|t| sas_time(*t) == s)
        .expect("a time within a day")
}

#[tokio::test]
async fn tampered_other_blob_expired_and_wrong_key_are_refused_by_azurite() {
    let Some(w) = world(false, |_| {}).await else { return };
    let i = w.integration(account_key());
    let url = w.azurite.url("assets", "my photos/été 猫+1.jpg");
    let signed = w.storage.presign(&i, &url, None).await.unwrap();
    // The untouched URL works, so the refusals below are the tampering's doing.
    w.storage.download_signed(&signed, None).await.unwrap();

    let sig = query_param(signed.expose(), "sig").unwrap();
    let encoded_sig = signed.expose().rsplit("sig=").next().unwrap().to_owned();
    let tampered = [
        signed.expose().replace(&encoded_sig, &other_first_char(&encoded_sig)),
        signed.expose().replace("%E7%8C%AB", "%E7%8C%AC"),
        signed.expose().replace("/assets/", "/other/"),
        signed.expose().replace("sp=r", "sp=rw"),
    ];
    for t in tampered {
        assert_ne!(t, signed.expose(), "the tampering changed nothing");
        let err = w.storage.download_signed(&SignedUrl::new(t, None), None).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
        assert!(!err.is_retryable());
        assert_eq!(denied_code(&err), "AuthorizationFailure", "{err}");
        assert!(!err.to_string().contains(&sig) && !err.to_string().contains(&encoded_sig), "{err}");
    }

    // Signed 20 minutes ago with the 5-minute TTL: expired 15 minutes ago.
    let old =
        w.storage.presign(&i, &url, Some(SystemTime::now() - Duration::from_secs(20 * 60))).await.unwrap();
    let err = w.storage.download_signed(&old, None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");

    // A key of the right shape that is not the account's.
    w.write_secret("azure.key", &B64.encode([7u8; 64]));
    let err = w.storage.fetch(&i, &url).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
    assert_eq!(denied_code(&err), "AuthorizationFailure");
    w.write_secret("azure.key", "not base64 at all!");
    let err = w.storage.fetch(&i, &url).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidIntegration, "{err}");
    assert!(!err.to_string().contains("not base64 at all"), "{err}");
    assert!(files_in(&w.work_dir()).is_empty());
}

#[tokio::test]
async fn validate_storage_reports_each_check_with_the_names_every_provider_uses() {
    use asset_storage::{CheckName, ValidateOptions};
    const ORIGIN: &str = "https://app.example.com";
    let Some(w) = world(false, |_| {}).await else { return };
    let mut i = serde_json::to_value(w.integration(account_key())).unwrap();
    i["containers"] = serde_json::json!(["assets", "missing"]);
    let i: Integration = serde_json::from_value(i).unwrap();
    let opts = |origin: &str| ValidateOptions {
        key: Some("my photos/été 猫+1.jpg".into()),
        origin: Some(origin.into()),
    };
    let cors_of = |r: &asset_storage::ValidationReport| {
        let c = r.checks.iter().find(|c| c.name == CheckName::Cors && c.message.contains("assets")).unwrap();
        (c.code.clone(), c.message.clone())
    };

    // No CORS rule on the account: Azurite refuses the preflight.
    let report = w.storage.validate_access(&i, &opts(ORIGIN)).await;
    let json = serde_json::to_value(&report).unwrap();
    let names: Vec<String> =
        json["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["credentials", "bucket", "read", "cors", "bucket", "read", "cors"], "{report:#?}");
    let by = |name: CheckName, container: &str| {
        report.checks.iter().find(|c| c.name == name && c.message.contains(container)).unwrap().clone()
    };
    assert!(by(CheckName::Bucket, "assets").ok && by(CheckName::Read, "assets").ok, "{report:#?}");
    assert_eq!(by(CheckName::Bucket, "missing").code.as_deref(), Some("not_found"), "{report:#?}");
    assert_eq!(by(CheckName::Cors, "missing").code.as_deref(), Some("cors_not_checked"), "{report:#?}");
    let (code, message) = cors_of(&report);
    assert_eq!(code.as_deref(), Some("cors_origin_not_allowed"), "{message}");
    assert!(message.contains("HTTP 403") && message.ends_with('.'), "{message}");
    assert!(!report.ok);

    // A rule for the platform's origin: preflight and GET answer for it; another origin
    // and a rule without GET are refused.
    w.azurite.set_cors(&[(ORIGIN, "GET,HEAD")]).await;
    let report = w.storage.validate_access(&i, &opts(ORIGIN)).await;
    assert_eq!(cors_of(&report).0, None, "{report:#?}");
    let (code, message) = cors_of(&w.storage.validate_access(&i, &opts("https://evil.example")).await);
    assert_eq!(code.as_deref(), Some("cors_origin_not_allowed"), "{message}");
    w.azurite.set_cors(&[(ORIGIN, "PUT")]).await;
    let (code, message) = cors_of(&w.storage.validate_access(&i, &opts(ORIGIN)).await);
    assert_eq!(code.as_deref(), Some("cors_origin_not_allowed"), "{message}");
    w.azurite.set_cors(&[("*", "GET")]).await;
    assert_eq!(cors_of(&w.storage.validate_access(&i, &opts("https://any.example")).await).0, None);

    // A wrong key stops at the container listing with Azure's refusal, and no secret is
    // in any message.
    w.write_secret("azure.key", &B64.encode([7u8; 64]));
    let report = w.storage.validate_access(&i, &opts(ORIGIN)).await;
    let bucket = report.checks.iter().find(|c| c.name == CheckName::Bucket).unwrap();
    assert_eq!(bucket.code.as_deref(), Some("access_denied"), "{report:#?}");
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains(DEV_KEY) && !json.contains("sig="), "{json}");
    assert!(files_in(&w.work_dir()).is_empty());
}

#[tokio::test]
async fn validate_storage_of_delegated_access_gets_a_user_delegation_key() {
    use asset_storage::{CheckName, ValidateOptions};
    let Some(w) = world(true, |_| {}).await else { return };
    let i = w.integration(delegated());
    let opts = ValidateOptions { key: None, origin: Some("https://app.example.com".into()) };
    let report = w.storage.validate_access(&i, &opts).await;
    let names: Vec<CheckName> = report.checks.iter().map(|c| c.name).collect();
    use CheckName::*;
    assert_eq!(names, [Credentials, UserDelegationKey, Bucket, Read, Cors], "{report:#?}");
    for c in &report.checks[..4] {
        assert!(c.ok, "{report:#?}");
    }
    assert!(report.checks[0].message.contains(TENANT), "{report:#?}");
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains(PLATFORM_SECRET) && !json.contains("sig=") && !json.contains("eyJ"), "{json}");
}

#[tokio::test]
async fn a_customer_sas_token_is_used_as_is_once_it_can_read_and_is_current() {
    let Some(w) = world(false, |_| {}).await else { return };
    let i = w.integration(serde_json::json!({"type": "sas_token", "secret_ref": "file:customer.sas"}));
    w.write_secret(
        "customer.sas",
        &format!("?{}", account_sas("rl", SystemTime::now() + Duration::from_secs(3600))),
    );
    downloads_every_name(&w, &i).await;

    let url = w.azurite.url("assets", "img/cat.jpg");
    // Write and list only: refused before any request, naming the permission.
    w.write_secret("customer.sas", &account_sas("wl", SystemTime::now() + Duration::from_secs(3600)));
    let err = w.storage.fetch(&i, &url).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidIntegration, "{err}");
    assert!(err.to_string().contains("read permission"), "{err}");
    // Expired an hour ago.
    let expired = account_sas("rl", SystemTime::now() - Duration::from_secs(3600));
    w.write_secret("customer.sas", &expired);
    let err = w.storage.fetch(&i, &url).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Credentials, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    // A token for another account's key passes our checks and is refused by Azure.
    let forged = account_sas("rl", SystemTime::now() + Duration::from_secs(3600)).replace("sig=", "sig=x");
    w.write_secret("customer.sas", &forged);
    let err = w.storage.fetch(&i, &url).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
    assert!(files_in(&w.work_dir()).is_empty());
}

#[tokio::test]
async fn ssrf_guard_and_egress_policy_hold_for_azure() {
    let Some(w) = world(false, |_| {}).await else { return };
    let i = w.integration(account_key());
    let port = w.azurite.port();
    for url in [
        "http://169.254.169.254/metadata/identity/oauth2/token".to_owned(),
        format!("http://localhost:{port}/{ACCOUNT}/assets/img/cat.jpg"),
        format!("http://127.0.0.2:{port}/{ACCOUNT}/assets/img/cat.jpg"),
        w.azurite.url("other", "img/cat.jpg"),
        format!("{}/assets/img/../../other/img/cat.jpg", w.azurite.endpoint),
        format!("{}/assets/..%2Fother%2Fimg/cat.jpg", w.azurite.endpoint),
        format!("https://{ACCOUNT}.blob.core.windows.net/assets/img/cat.jpg"),
        "s3://assets/img/cat.jpg".to_owned(),
    ] {
        let err = w.storage.fetch(&i, &url).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::UrlNotInStorage, "{url}: {err}");
    }
    // The same endpoint without the operator's allow-list: refused before connecting.
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    let strict =
        Storage::with_aws_config(storage_support::config(&w.temp.path().join("strict")), base).unwrap();
    let err = strict.fetch(&i, &w.azurite.url("assets", "img/cat.jpg")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::EndpointNotAllowed, "{err}");
}

// ---------------------------------------------------------------------------------
// User delegation keys, on the HTTPS instance with --oauth basic

#[tokio::test]
async fn delegated_access_takes_one_token_and_one_key_for_24_concurrent_fetches() {
    let Some(w) = world(true, |_| {}).await else { return };
    let i = w.integration(delegated());
    let url = w.azurite.url("assets", "my photos/été 猫+1.jpg");
    let fetches = (0..24).map(|_| {
        let (storage, i, url) = (w.storage.clone(), i.clone(), url.clone());
        tokio::spawn(async move { storage.fetch(&i, &url).await.map(|a| std::fs::read(a.path()).unwrap()) })
    });
    for r in futures::future::join_all(fetches).await {
        assert_eq!(r.unwrap().unwrap(), body_of("my photos/été 猫+1.jpg"));
    }
    let token = w.token.as_ref().unwrap();
    assert_eq!(token.calls(), 1, "token requests");
    assert_eq!(w.storage.azure_token_calls(), 1);
    assert_eq!(w.storage.azure_key_calls(), 1);
    // The platform's application, for the integration's tenant, with its own secret.
    let body = token.bodies.lock().unwrap()[0].clone();
    assert!(body.contains(&format!("client_id={PLATFORM_APP}")), "{body}");
    assert!(body.contains("grant_type=client_credentials"), "{body}");
    assert!(body.contains("scope=https%3A%2F%2Fstorage.azure.com%2F.default"), "{body}");

    downloads_every_name(&w, &i).await;
    assert_eq!((token.calls(), w.storage.azure_key_calls()), (1, 1), "still cached");

    let signed = w.storage.presign(&i, &url, None).await.unwrap();
    for p in ["skoid", "sktid", "skt", "ske", "sks", "skv"] {
        assert!(query_param(signed.expose(), p).is_some(), "{p}");
    }
    assert_eq!(query_param(signed.expose(), "sktid").as_deref(), Some(TENANT));
    // The SAS never outlives the key that signed it.
    let ske = chrono_free_parse(&query_param(signed.expose(), "ske").unwrap());
    let se = chrono_free_parse(&query_param(signed.expose(), "se").unwrap());
    assert!(se < ske);

    // Tampered signature, another oid, another blob: Azurite recomputes and refuses.
    let encoded_sig = signed.expose().rsplit("sig=").next().unwrap().to_owned();
    let oid = query_param(signed.expose(), "skoid").unwrap();
    for t in [
        signed.expose().replace(&encoded_sig, &other_first_char(&encoded_sig)),
        signed.expose().replace(&oid, "00000000-0000-0000-0000-000000000000"),
        signed.expose().replace("/assets/", "/other/"),
    ] {
        let err = w.storage.download_signed(&SignedUrl::new(t, None), None).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
        assert_eq!(denied_code(&err), "AuthorizationFailure", "{err}");
    }
    let old =
        w.storage.presign(&i, &url, Some(SystemTime::now() - Duration::from_secs(20 * 60))).await.unwrap();
    let err = w.storage.download_signed(&old, None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn a_customer_service_principal_gets_its_own_token_and_a_bad_secret_is_credentials() {
    let Some(w) = world(true, |_| {}).await else { return };
    let i = w.integration(serde_json::json!({
        "type": "service_principal", "tenant_id": TENANT, "client_id": CUSTOMER_APP, "secret_ref": "file:app.secret"
    }));
    downloads_every_name(&w, &i).await;
    let token = w.token.as_ref().unwrap();
    assert_eq!(token.calls(), 1);
    let body = token.bodies.lock().unwrap()[0].clone();
    assert!(body.contains(&format!("client_id={CUSTOMER_APP}")), "{body}");

    // Another integration whose secret Entra refuses: `credentials`, without Entra's text.
    let mut bad = i.clone();
    if let Integration::Azure(a) = &mut bad {
        a.id = "int-az-2".into();
        a.access = asset_core::AzureAccess::ServicePrincipal {
            tenant_id: TENANT.into(),
            client_id: CUSTOMER_APP.into(),
            secret_ref: "file:wrong.secret".into(),
        };
    }
    w.write_secret("wrong.secret", "not-the-secret-of-this-app");
    let err = w.storage.fetch(&bad, &w.azurite.url("assets", "img/cat.jpg")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Credentials, "{err}");
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(!err.to_string().contains("AADSTS") && !err.to_string().contains("not-the-secret"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn delegated_access_without_a_platform_application_is_credentials() {
    let Some(w) = world(true, |c| c.azure.client_id = None).await else { return };
    let err = w
        .storage
        .fetch(&w.integration(delegated()), &w.azurite.url("assets", "img/cat.jpg"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Credentials, "{err}");
    assert!(err.to_string().contains("AZURE_CLIENT_ID"), "{err}");
    assert_eq!(w.token.as_ref().unwrap().calls(), 0);
}

/// Azure has no ExternalId: a job naming a tenant its organisation did not consent for
/// (another customer's, which consented to the same platform application) is refused
/// before any request, as is every delegated job when no binding is configured.
#[tokio::test]
async fn delegated_access_is_bound_to_the_tenants_the_organisation_consented_for() {
    let Some(w) = world(true, |_| {}).await else { return };
    let url = w.azurite.url("assets", "img/cat.jpg");
    w.storage.fetch(&w.integration(delegated()), &url).await.unwrap();
    let calls = w.token.as_ref().unwrap().calls();
    let other =
        serde_json::json!({"type": "iam_delegated", "tenant_id": "0d3c7a2b-5e61-4f8a-b1c2-d3e4f5a6b7c8"});
    let err = w.storage.fetch(&w.integration(other), &url).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidIntegration, "{err}");
    assert!(err.to_string().contains("not one organisation org-1 consented for"), "{err}");
    // Another organisation with no binding of its own, naming org-1's tenant.
    let mut foreign = serde_json::to_value(w.integration(delegated())).unwrap();
    foreign["org_id"] = "org-2".into();
    let foreign: Integration = serde_json::from_value(foreign).unwrap();
    let err = w.storage.fetch(&foreign, &url).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidIntegration, "{err}");
    assert!(err.to_string().contains("organisation org-2 has no Azure tenant binding"), "{err}");
    assert_eq!(w.token.as_ref().unwrap().calls(), calls, "no token was asked for a refused job");

    let Some(unbound) = world(true, |c| c.azure.tenant_binding = None).await else { return };
    let url = unbound.azurite.url("assets", "img/cat.jpg");
    let err = unbound.storage.fetch(&unbound.integration(delegated()), &url).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidIntegration, "{err}");
    assert!(err.to_string().contains("AZURE_TENANT_BINDING"), "{err}");
}

#[tokio::test]
async fn trace_logs_of_every_azure_access_hold_no_secret() {
    let Some(w) = world(true, |_| {}).await else { return };
    let logs = Logs::capture();
    let url = w.azurite.url("assets", "img/cat.jpg");
    let delegated = w.integration(delegated());
    let keyed = w.integration(account_key());
    let mut seen = Vec::new();
    for i in [&delegated, &keyed] {
        let signed = w.storage.presign(i, &url, None).await.unwrap();
        w.storage.fetch(i, &url).await.unwrap().delete().unwrap();
        let (mut partial, _) = w.storage.open_partial(i, &url, 4096).await.unwrap();
        partial.fetch(0..10).await.unwrap();
        let bad = SignedUrl::new(signed.expose().replace("img/cat", "img/dog"), None);
        let err = w.storage.download_signed(&bad, None).await.unwrap_err();
        tracing::info!(error = %err, debug = ?err, url = ?signed, "what a caller might log");
        seen.push(signed);
    }
    let ud = &seen[0];
    // Azurite derives the user delegation key from the fields the SAS carries.
    let p = |n| query_param(ud.expose(), n).unwrap();
    let udk_sts = [p("skoid"), p("sktid"), p("skt"), p("ske"), "b".into(), p("skv")].join("\n");
    let udk = hmac_b64(b"azurite-user-delegation-signing-seed-v1", &udk_sts);
    // Every token the server hands out ends in this segment.
    let bearer_tail = jwt(TENANT, "x").rsplit('.').next().unwrap().to_owned();
    let text = logs.text();
    assert!(text.contains("getting a user delegation key"), "the capture saw nothing:\n{text}");
    let (ud_sig, key_sig) = (p("sig"), query_param(seen[1].expose(), "sig").unwrap());
    let encoded = |u: &SignedUrl| u.expose().rsplit("sig=").next().unwrap().to_owned();
    let (ud_sig_q, key_sig_q) = (encoded(&seen[0]), encoded(&seen[1]));
    logs.assert_free_of(&[
        ("account key", DEV_KEY),
        ("platform client secret", PLATFORM_SECRET),
        ("user delegation key", &udk),
        ("bearer token", &bearer_tail),
        ("user delegation SAS signature", &ud_sig),
        ("service SAS signature", &key_sig),
        ("user delegation SAS signature, encoded", &ud_sig_q),
        ("service SAS signature, encoded", &key_sig_q),
        ("signed URL", seen[0].expose()),
        ("signed URL", seen[1].expose()),
    ]);
}
