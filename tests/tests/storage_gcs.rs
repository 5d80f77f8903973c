//! Google Cloud Storage. No local server checks V4 signatures, so the signer is proved
//! against an independent reference instead: Google's own Python signer
//! (`google-cloud-storage`, tests/gcs/golden.py) makes golden URLs offline for a key
//! made by the test and a fixed timestamp, names full of characters that need escaping
//! included, and ours must be byte-identical — through a local key, and keyless through
//! an in-test IAM Credentials `signBlob` server (it checks the platform's bearer token
//! and the account, and signs with the test key). The download plumbing (ranges,
//! 404, awkward names) runs against gcp-storage-emulator, a GCS server from PyPI that
//! checks no signature; 403, 503 and retries against the in-test server, which also
//! plays the XML API for `validate-storage`. Tools: scripts/gcs-tools.sh.

mod storage_support;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use asset_core::Integration;
use asset_storage::{ByteRange, GcsSettings, Storage, StorageConfig, ValidateOptions};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use storage_support::gcs::{Emulator, TestKey, golden_py, python};
use storage_support::{Logs, authority, config_allowing};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// 2026-12-01T09:00:00Z.
const FIXED_EPOCH: u64 = 1_796_115_600;
const FIXED_STAMP: &str = "20261201T090000Z";
/// The customer's account, named after org-1 by the rule `mw-{org}-`.
const CUSTOMER_SA: &str = "mw-org-1-reader@cust-proj.iam.gserviceaccount.com";
const PLATFORM_SA: &str = "metadata-worker@platform-proj.iam.gserviceaccount.com";

/// Names that need escaping, each character GCS signers have got wrong at least once.
const AWKWARD: &[&str] = &[
    "plain.jpg",
    "my photos/été 猫+1.jpg",
    "under_score/amper&sand/file.ext",
    "a%20b%2Fc.png",
    "hash#and?query.txt",
    "eq=comma,paren(1)!dollar$quote'colon:semi;at@tilde~.bin",
    "spaces  double/ trailing ",
    "emoji 🙂/[brackets]\"quoted\"*star",
];

fn fixed_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED_EPOCH)
}

/// Google's reference URLs for `(endpoint, bucket, object)` signed by `key` at the fixed
/// time for `expires` seconds.
fn golden(py: &Path, key: &TestKey, cases: &[(&str, &str, &str)], expires: u64) -> Vec<String> {
    let input: Vec<serde_json::Value> = cases
        .iter()
        .map(|(endpoint, bucket, object)| {
            serde_json::json!({"endpoint": endpoint, "bucket": bucket, "object": object,
                               "expires": expires, "timestamp": FIXED_STAMP})
        })
        .collect();
    let mut child = Command::new(py)
        .arg(golden_py())
        .arg("sign")
        .arg(&key.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(serde_json::to_string(&input).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "golden.py sign failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Random names over an alphabet of everything awkward, minus dot segments (which the
/// guard refuses by design).
fn random_names(n: usize) -> Vec<String> {
    let alphabet: Vec<char> = "abcXYZ019 %#+&=,()!$':;@~/-_.?[]\"*<>{}|^`\\éü猫🙂ß".chars().collect();
    let mut names = Vec::new();
    while names.len() < n {
        let len = rand::random_range(1..24);
        let name: String = (0..len).map(|_| alphabet[rand::random_range(0..alphabet.len())]).collect();
        let lower = name.to_ascii_lowercase();
        let dotty = name.contains("..")
            || lower.contains("%2e")
            || name.split(['/', '\\']).any(|s| s == "." || s.is_empty());
        if !dotty {
            names.push(name);
        }
    }
    names
}

fn secrets_with(json: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("org-1")).unwrap();
    std::fs::write(dir.path().join("org-1/sa.json"), json).unwrap();
    dir
}

async fn storage(cfg: StorageConfig) -> Storage {
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    Storage::with_aws_config(cfg, base).unwrap()
}

fn integration(endpoint: Option<&str>, access: serde_json::Value) -> Integration {
    let mut v = serde_json::json!({
        "id": "int-gcs", "org_id": "org-1", "provider": "gcs", "buckets": ["cust-bucket"], "access": access
    });
    if let Some(e) = endpoint {
        v["endpoint"] = e.into();
    }
    serde_json::from_value(v).unwrap()
}

fn key_access(email: &str) -> serde_json::Value {
    serde_json::json!({"type": "service_account_key", "client_email": email, "secret_ref": "file:sa.json"})
}

#[tokio::test]
async fn v4_urls_are_byte_identical_to_googles_signer() {
    let Some(py) = python() else { return };
    let key = TestKey::new(&py, "reader@cust-proj.iam.gserviceaccount.com");
    let secrets = secrets_with(&key.json);
    let temp = tempfile::tempdir().unwrap();
    // One integration on Google's endpoint, one on an emulator's (its host:port is signed).
    let mut cfg = config_allowing(&temp.path().join("work"), "127.0.0.1:4443");
    cfg.secrets_dir = Some(secrets.path().to_path_buf());
    let storage = storage(cfg).await;

    let mut names: Vec<String> = AWKWARD.iter().map(|s| s.to_string()).collect();
    names.extend(random_names(40));
    for endpoint in ["https://storage.googleapis.com", "http://127.0.0.1:4443"] {
        let custom = endpoint.starts_with("http:");
        let integ =
            integration(custom.then_some(endpoint), key_access("reader@cust-proj.iam.gserviceaccount.com"));
        let cases: Vec<(&str, &str, &str)> =
            names.iter().map(|n| (endpoint, "cust-bucket", n.as_str())).collect();
        let expected = golden(&py, &key, &cases, 300);
        for (name, want) in names.iter().zip(&expected) {
            let got = storage
                .presign(&integ, &format!("gs://cust-bucket/{name}"), Some(fixed_time()))
                .await
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert_eq!(got.expose(), want, "name {name:?} on {endpoint}");
            assert_eq!(got.expires_at(), Some(fixed_time() + Duration::from_secs(300)));
        }
    }

    // The same object named by each URL form signs to the same URL.
    let integ = integration(None, key_access("reader@cust-proj.iam.gserviceaccount.com"));
    let name = "my photos/été 猫+1.jpg";
    let want = &golden(&py, &key, &[("https://storage.googleapis.com", "cust-bucket", name)], 300)[0];
    for url in [
        "gs://cust-bucket/my photos/été 猫+1.jpg".to_owned(),
        "https://storage.googleapis.com/cust-bucket/my%20photos/%C3%A9t%C3%A9%20%E7%8C%AB%2B1.jpg".to_owned(),
        "https://cust-bucket.storage.googleapis.com/my photos/été 猫+1.jpg".to_owned(),
    ] {
        assert_eq!(storage.presign(&integ, &url, Some(fixed_time())).await.unwrap().expose(), want, "{url}");
    }

    // A key that is not the named account's is refused, and nothing is signed.
    let other = integration(None, key_access("someone-else@cust-proj.iam.gserviceaccount.com"));
    let err = storage.presign(&other, "gs://cust-bucket/plain.jpg", None).await.unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_integration", "{err}");
}

/// The in-test Google: OAuth token endpoint (checks the platform's signed JWT), IAM
/// Credentials `signBlob` (checks the bearer token and the account, signs with the
/// customer's test key), and a scripted XML API for the bucket `cust-bucket`.
struct FakeGoogle {
    url: String,
    state: Arc<GoogleState>,
}

struct GoogleState {
    url: String,
    platform_public: Vec<u8>,
    customer: TestKey,
    token: String,
    exchanges: AtomicUsize,
    /// The lifetime of the tokens handed out, in seconds.
    token_seconds: std::sync::atomic::AtomicU64,
    sign_blobs: AtomicUsize,
    object_gets: AtomicUsize,
    /// Workload identity federation: the subject token the STS accepts, the federated
    /// token it hands out for it, and the generateAccessToken calls made with that.
    subject: String,
    federated: String,
    impersonations: AtomicUsize,
    /// Statuses the next object GETs answer (then 200 with `OBJECT`).
    script: Mutex<VecDeque<u16>>,
}

const OBJECT: &[u8] = b"0123456789 bytes of a gcs object";

impl FakeGoogle {
    async fn start(platform: &TestKey, customer: TestKey) -> FakeGoogle {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(GoogleState {
            url: url.clone(),
            platform_public: platform.pair.public_key().as_ref().to_vec(),
            customer,
            token: format!("ya29.test-token-{}", rand::random::<u64>()),
            exchanges: AtomicUsize::new(0),
            token_seconds: std::sync::atomic::AtomicU64::new(3599),
            sign_blobs: AtomicUsize::new(0),
            object_gets: AtomicUsize::new(0),
            subject: format!("eyJ.k8s-projected-token-{}", rand::random::<u64>()),
            federated: format!("ya29.federated-{}", rand::random::<u64>()),
            impersonations: AtomicUsize::new(0),
            script: Mutex::new(VecDeque::new()),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::post(token))
            .route("/v1/token", axum::routing::post(sts_token))
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                axum::routing::get(metadata_token),
            )
            .route("/v1/projects/-/serviceAccounts/{call}", axum::routing::post(sign_blob))
            .route("/cust-bucket", axum::routing::get(list))
            .route("/cust-bucket/{*key}", axum::routing::get(object).options(preflight))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeGoogle { url, state }
    }
}

fn google_error(status: StatusCode, code: &str) -> Response {
    let body = serde_json::json!({"error": {"code": status.as_u16(), "status": code,
                                  "message": "free text that must not reach a result"}});
    (status, body.to_string()).into_response()
}

async fn token(State(s): State<Arc<GoogleState>>, body: String) -> Response {
    s.exchanges.fetch_add(1, Ordering::SeqCst);
    // Slow enough that concurrent callers would each start their own exchange.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_GRANT");
    }
    let Some(jwt) = form.get("assertion") else {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_GRANT");
    };
    let Some((input, sig)) = jwt.rsplit_once('.') else {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_GRANT");
    };
    let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &s.platform_public);
    if key.verify(input.as_bytes(), &B64URL.decode(sig).unwrap_or_default()).is_err() {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_GRANT");
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(input.split('.').nth(1).unwrap()).unwrap()).unwrap();
    if claims["iss"] != PLATFORM_SA || claims["aud"] != format!("{}/token", s.url) {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_GRANT");
    }
    token_reply(&s)
}

fn token_reply(s: &GoogleState) -> Response {
    let seconds = s.token_seconds.load(Ordering::SeqCst);
    let reply = serde_json::json!({"access_token": s.token, "expires_in": seconds, "token_type": "Bearer"});
    (StatusCode::OK, reply.to_string()).into_response()
}

/// The metadata server's token of the instance's account: only for requests that say
/// `Metadata-Flavor: Google` (what stops a browser-borne SSRF on GCE).
async fn metadata_token(State(s): State<Arc<GoogleState>>, headers: HeaderMap) -> Response {
    s.exchanges.fetch_add(1, Ordering::SeqCst);
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return StatusCode::FORBIDDEN.into_response();
    }
    token_reply(&s)
}

/// Google's STS: a token exchange of the platform's federated subject token.
async fn sts_token(State(s): State<Arc<GoogleState>>, body: String) -> Response {
    s.exchanges.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
        || field("subject_token") != s.subject
        || field("audience") != WIF_AUDIENCE
        || field("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt"
        || field("scope") != "https://www.googleapis.com/auth/cloud-platform"
    {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_GRANT");
    }
    let reply = serde_json::json!({"access_token": s.federated, "expires_in": 3600,
                                   "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"});
    (StatusCode::OK, reply.to_string()).into_response()
}

const WIF_AUDIENCE: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/k8s/providers/cluster";

/// IAM Credentials `generateAccessToken` for the platform's account, with the federated
/// token: the platform account's token.
fn generate_access_token(s: &GoogleState, call: &str, headers: &HeaderMap) -> Response {
    s.impersonations.fetch_add(1, Ordering::SeqCst);
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if bearer != format!("Bearer {}", s.federated) {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    if call != format!("{PLATFORM_SA}:generateAccessToken") {
        return google_error(StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    }
    let expire = chrono::Utc::now() + chrono::Duration::seconds(3600);
    let reply = serde_json::json!({"accessToken": s.token, "expireTime": expire.to_rfc3339()});
    (StatusCode::OK, reply.to_string()).into_response()
}

async fn sign_blob(
    State(s): State<Arc<GoogleState>>,
    UrlPath(call): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if call.ends_with(":generateAccessToken") {
        return generate_access_token(&s, &call, &headers);
    }
    s.sign_blobs.fetch_add(1, Ordering::SeqCst);
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if bearer != format!("Bearer {}", s.token) {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    if call != format!("{CUSTOMER_SA}:signBlob") {
        return google_error(StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    }
    let req: serde_json::Value = serde_json::from_str(&body).unwrap();
    let payload = B64.decode(req["payload"].as_str().unwrap()).unwrap();
    let reply = serde_json::json!({"keyId": "test-key", "signedBlob": B64.encode(s.customer.sign(&payload))});
    (StatusCode::OK, reply.to_string()).into_response()
}

async fn object(State(s): State<Arc<GoogleState>>, headers: HeaderMap) -> Response {
    s.object_gets.fetch_add(1, Ordering::SeqCst);
    let next = s.script.lock().unwrap().pop_front().unwrap_or(200);
    let xml = |status: u16, code: &str| {
        let body = format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>free text \
             X-Goog-Signature=00ff</Message></Error>"
        );
        (StatusCode::from_u16(status).unwrap(), body).into_response()
    };
    match next {
        403 => xml(403, "SignatureDoesNotMatch"),
        404 => xml(404, "NoSuchKey"),
        503 => xml(503, "SlowDown"),
        _ => {
            let mut resp = (StatusCode::OK, OBJECT.to_vec()).into_response();
            if let Some(origin) = headers.get("origin") {
                resp.headers_mut().insert("access-control-allow-origin", origin.clone());
            }
            resp.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
            resp
        }
    }
}

async fn preflight(headers: HeaderMap) -> Response {
    let origin = headers.get("origin").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if origin != "https://app.example.com" {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut().insert("access-control-allow-origin", origin.parse().unwrap());
    resp.headers_mut().insert("access-control-allow-methods", "GET, HEAD".parse().unwrap());
    resp
}

async fn list() -> Response {
    let body = "<?xml version='1.0' encoding='UTF-8'?><ListBucketResult><Name>cust-bucket</Name>\
                <Contents><Key>img/cat &amp; dog.jpg</Key></Contents></ListBucketResult>";
    (StatusCode::OK, body).into_response()
}

struct Keyless {
    google: FakeGoogle,
    storage: Storage,
    integration: Integration,
    _temp: tempfile::TempDir,
    platform: TestKey,
}

async fn keyless(py: &Path) -> Keyless {
    let platform = TestKey::new(py, PLATFORM_SA);
    let customer = TestKey::new(py, CUSTOMER_SA);
    let google = FakeGoogle::start(&platform, customer).await;
    let temp = tempfile::tempdir().unwrap();
    // The XML API of the fake is a job-named endpoint on loopback: the operator allows it.
    let mut cfg = config_allowing(&temp.path().join("work"), authority(&google.url));
    cfg.gcs = GcsSettings {
        credentials_file: Some(platform.with_token_uri(&format!("{}/token", google.url))),
        iam_endpoint: google.url.clone(),
        service_account_org_token: Some("mw-{org}-".into()),
        ..GcsSettings::default()
    };
    let storage = storage(cfg).await;
    let integration = integration(
        Some(&google.url),
        serde_json::json!({"type": "iam_delegated", "service_account": CUSTOMER_SA}),
    );
    Keyless { google, storage, integration, _temp: temp, platform }
}

#[tokio::test]
async fn keyless_sign_blob_gives_googles_url_with_one_token_exchange() {
    let Some(py) = python() else { return };
    let logs = Logs::capture();
    let k = keyless(&py).await;

    // Byte-identical to Google's signer with the customer's key, which the worker never saw.
    let names =
        ["plain.jpg", "my photos/été 猫+1.jpg", "eq=comma,paren(1)!dollar$quote'colon:semi;at@tilde~"];
    let cases: Vec<_> = names.iter().map(|n| (k.google.url.as_str(), "cust-bucket", *n)).collect();
    let expected = golden(&py, &k.google.state.customer, &cases, 300);
    let mut signed = Vec::new();
    for (name, want) in names.iter().zip(&expected) {
        let got =
            k.storage.presign(&k.integration, &format!("gs://cust-bucket/{name}"), Some(fixed_time())).await;
        let got = got.unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(got.expose(), want, "{name:?}");
        signed.push(got);
    }
    assert_eq!(k.google.state.exchanges.load(Ordering::SeqCst), 1);

    // 24 concurrent downloads of one integration: still that one token, one signBlob each.
    let before = k.google.state.sign_blobs.load(Ordering::SeqCst);
    let fetches = (0..24).map(|i| {
        let (storage, integration) = (k.storage.clone(), k.integration.clone());
        async move { storage.fetch(&integration, &format!("gs://cust-bucket/obj-{i}.bin")).await }
    });
    for asset in futures::future::join_all(fetches).await {
        let asset = asset.unwrap();
        assert_eq!(std::fs::read(asset.path()).unwrap(), OBJECT);
        asset.delete().unwrap();
    }
    assert_eq!(k.google.state.exchanges.load(Ordering::SeqCst), 1, "one token exchange per lifetime");
    assert_eq!(k.storage.gcs_token_exchanges(), 1);
    assert_eq!(k.google.state.sign_blobs.load(Ordering::SeqCst) - before, 24);

    // A fresh worker exchanges once too, even when 24 signings start together.
    let fresh = keyless(&py).await;
    let signs = (0..24).map(|i| {
        let (storage, integration) = (fresh.storage.clone(), fresh.integration.clone());
        async move { storage.presign(&integration, &format!("gs://cust-bucket/x{i}"), None).await }
    });
    for url in futures::future::join_all(signs).await {
        let url = url.unwrap();
        // 5 minutes by default.
        let left = url.expires_at().unwrap().duration_since(SystemTime::now()).unwrap();
        assert!(left <= Duration::from_secs(300) && left > Duration::from_secs(250), "{left:?}");
    }
    assert_eq!(fresh.google.state.exchanges.load(Ordering::SeqCst), 1);

    // Nothing that authenticates reached a log line, TRACE included.
    let sig = storage_support::query_param(signed[0].expose(), "X-Goog-Signature").unwrap();
    logs.assert_free_of(&[
        ("bearer token", k.google.state.token.as_str()),
        ("platform private key", k.platform.pem_fragment.as_str()),
        ("customer private key", k.google.state.customer.pem_fragment.as_str()),
        ("URL signature", sig.as_str()),
        ("signed URL", signed[1].expose()),
        ("X-Goog-Signature", "X-Goog-Signature"),
    ]);
}

#[tokio::test]
async fn keyless_refusals_have_stable_codes_and_send_nothing_when_the_org_does_not_match() {
    let Some(py) = python() else { return };
    let k = keyless(&py).await;

    // Another organisation's account (or no rule) is refused before any request.
    let other_org = integration(
        Some(&k.google.url),
        serde_json::json!({"type": "iam_delegated", "service_account": "mw-org-2-reader@cust-proj.iam.gserviceaccount.com"}),
    );
    let err = k.storage.fetch(&other_org, "gs://cust-bucket/a.jpg").await.unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_integration", "{err}");
    assert!(err.to_string().contains("mw-org-1-"), "the refusal names the token: {err}");
    assert_eq!(k.google.state.exchanges.load(Ordering::SeqCst), 0);
    assert_eq!(k.google.state.sign_blobs.load(Ordering::SeqCst), 0);

    // An account of the org that did not grant us token-creator: signBlob says 403.
    let not_granted = integration(
        Some(&k.google.url),
        serde_json::json!({"type": "iam_delegated", "service_account": "mw-org-1-other@cust-proj.iam.gserviceaccount.com"}),
    );
    let err = k.storage.fetch(&not_granted, "gs://cust-bucket/a.jpg").await.unwrap_err();
    assert_eq!(err.code().as_str(), "access_denied", "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("PERMISSION_DENIED"), "{err}");
    assert!(!err.to_string().contains("free text"), "{err}");
    assert_eq!(k.google.state.sign_blobs.load(Ordering::SeqCst), 1, "a 403 is not retried");

    // The storage answers: 503 twice then 200 is retried; 403 and 404 are not.
    k.google.state.script.lock().unwrap().extend([503, 503]);
    let asset = k.storage.fetch(&k.integration, "gs://cust-bucket/a.jpg").await.unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), OBJECT);
    let gets = k.google.state.object_gets.load(Ordering::SeqCst);
    assert_eq!(gets, 3);
    for (status, code) in [(403, "access_denied"), (404, "not_found")] {
        k.google.state.script.lock().unwrap().push_back(status);
        let err = k.storage.fetch(&k.integration, "gs://cust-bucket/a.jpg").await.unwrap_err();
        assert_eq!(err.code().as_str(), code, "{err}");
        assert!(!err.to_string().contains("free text") && !err.to_string().contains("X-Goog"), "{err}");
    }
    assert_eq!(k.google.state.object_gets.load(Ordering::SeqCst), gets + 2);

    // The platform's identity refused: the operator's problem, named as such.
    k.google.state.script.lock().unwrap().clear();
    let mut broken = GcsSettings {
        credentials_file: Some(PathBuf::from("/nonexistent/key.json")),
        ..GcsSettings::default()
    };
    broken.service_account_org_token = Some("mw-{org}-".into());
    let temp = tempfile::tempdir().unwrap();
    let mut cfg = config_allowing(&temp.path().join("work"), authority(&k.google.url));
    cfg.gcs = broken;
    let err = storage(cfg).await.fetch(&k.integration, "gs://cust-bucket/a.jpg").await.unwrap_err();
    assert_eq!(err.code().as_str(), "credentials", "{err}");
}

#[tokio::test]
async fn validate_storage_reports_each_gcs_step_as_for_s3() {
    let Some(py) = python() else { return };
    let k = keyless(&py).await;
    let opts = ValidateOptions { key: None, origin: Some("https://app.example.com".into()) };
    let report = k.storage.validate_access(&k.integration, &opts).await;
    let json = serde_json::to_value(&report).unwrap();
    let names: Vec<&str> =
        json["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["credentials", "sign_blob", "bucket", "read", "cors"], "{json}");
    assert!(report.ok, "{json}");

    // A browser at another origin is refused by the preflight.
    let opts = ValidateOptions { key: Some("img/a.jpg".into()), origin: Some("https://evil.example".into()) };
    let report = k.storage.validate_access(&k.integration, &opts).await;
    let cors = report.checks.iter().find(|c| c.name == asset_storage::CheckName::Cors).unwrap();
    assert_eq!(cors.code.as_deref(), Some("cors_origin_not_allowed"), "{cors:?}");
    assert!(cors.message.ends_with('.') && !cors.message.contains('{'), "one sentence: {}", cors.message);

    // No token-creator grant: the sign_blob step says so, and nothing after it runs.
    let not_granted = integration(
        Some(&k.google.url),
        serde_json::json!({"type": "iam_delegated", "service_account": "mw-org-1-other@cust-proj.iam.gserviceaccount.com"}),
    );
    let report = k.storage.validate_access(&not_granted, &opts).await;
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["checks"][1]["name"], "sign_blob");
    assert_eq!(json["checks"][1]["code"], "access_denied");
    assert_eq!(json["checks"].as_array().unwrap().len(), 2, "{json}");
}

#[tokio::test]
async fn downloads_and_ranges_through_the_gcs_emulator() {
    let Some(py) = python() else { return };
    let emulator = Emulator::start(&py);
    let key = TestKey::new(&py, "reader@cust-proj.iam.gserviceaccount.com");
    let secrets = secrets_with(&key.json);
    let temp = tempfile::tempdir().unwrap();
    let mut cfg = config_allowing(&temp.path().join("work"), authority(&emulator.endpoint));
    cfg.secrets_dir = Some(secrets.path().to_path_buf());
    let storage = storage(cfg).await;
    let integ = integration(Some(&emulator.endpoint), key_access("reader@cust-proj.iam.gserviceaccount.com"));
    let logs = Logs::capture();

    let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    for name in AWKWARD {
        emulator.put(name, &body).await;
    }
    for name in AWKWARD {
        let asset = storage.fetch(&integ, &format!("gs://cust-bucket/{name}")).await;
        let asset = asset.unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(std::fs::read(asset.path()).unwrap(), body, "{name:?}");
        asset.delete().unwrap();
    }
    // The path-style URL of the emulator names the same object.
    let url = format!("{}/cust-bucket/my%20photos/%C3%A9t%C3%A9%20%E7%8C%AB%2B1.jpg", emulator.endpoint);
    assert_eq!(storage.fetch(&integ, &url).await.unwrap().size(), body.len() as u64);

    // A header-first read: 206 with the object's size.
    let ranged =
        storage.fetch_range(&integ, "gs://cust-bucket/hash#and?query.txt", Some(ByteRange::Prefix(16))).await;
    assert_eq!(std::fs::read(ranged.unwrap().path()).unwrap(), &body[..16]);
    let (partial, first) = storage.open_partial(&integ, "gs://cust-bucket/plain.jpg", 100).await.unwrap();
    assert_eq!((first, partial.total()), (0..100, 10_000));
    assert_eq!(std::fs::read(partial.path()).unwrap()[..100], body[..100]);

    // A missing object is not_found, not retried.
    let err = storage.fetch(&integ, "gs://cust-bucket/missing.jpg").await.unwrap_err();
    assert_eq!(err.code().as_str(), "not_found", "{err}");
    assert!(!err.is_retryable());

    let signed = storage.presign(&integ, "gs://cust-bucket/plain.jpg", None).await.unwrap();
    let sig = storage_support::query_param(signed.expose(), "X-Goog-Signature").unwrap();
    logs.assert_free_of(&[("private key", key.pem_fragment.as_str()), ("URL signature", sig.as_str())]);
}

/// HMAC keys go through the S3 path: SigV4 with region `auto` on Google's endpoint.
#[tokio::test]
async fn hmac_access_presigns_sigv4_for_the_xml_api() {
    let temp = tempfile::tempdir().unwrap();
    let mut cfg = config_allowing(&temp.path().join("work"), "127.0.0.1:1");
    cfg.org_secrets = asset_storage::OrgSecrets::from_pairs([(
        "ORG_SECRET_ORG_1__GCS_HMAC",
        "bGNjTyDzB6NmW/GM8cA5Hj1dkj1Ir8gLfI4xcAsj",
    )]);
    let storage = storage(cfg).await;
    let integ = integration(
        None,
        serde_json::json!({"type": "hmac", "access_id": "GOOG1EXAMPLEACCESSID0123", "secret_ref": "env:GCS_HMAC"}),
    );
    let url = storage
        .presign(&integ, "https://storage.googleapis.com/cust-bucket/a%20b+c.jpg", None)
        .await
        .unwrap();
    let parsed = url::Url::parse(url.expose()).unwrap();
    assert_eq!(parsed.host_str(), Some("storage.googleapis.com"));
    assert_eq!(parsed.path(), "/cust-bucket/a%20b%2Bc.jpg");
    let credential = storage_support::query_param(url.expose(), "X-Amz-Credential").unwrap();
    assert!(
        credential.starts_with("GOOG1EXAMPLEACCESSID0123/") && credential.ends_with("/auto/s3/aws4_request"),
        "{credential}"
    );
    // Checksums only when required: no checksum mode rides along in the signed URL.
    assert!(!url.expose().to_ascii_lowercase().contains("checksum"), "checksum parameter in a GCS URL");
    let creds = storage.credentials(&integ).await.unwrap();
    assert_eq!(creds.access_key_id.expose(), "GOOG1EXAMPLEACCESSID0123");
}

#[tokio::test]
async fn keyless_through_the_metadata_server_and_never_past_the_tokens_expiry() {
    let Some(py) = python() else { return };
    let k = keyless(&py).await;
    // No key file: the metadata server's token, which expires in 200 s.
    k.google.state.token_seconds.store(200, Ordering::SeqCst);
    let temp = tempfile::tempdir().unwrap();
    let mut cfg = config_allowing(&temp.path().join("work"), authority(&k.google.url));
    cfg.gcs = GcsSettings {
        credentials_file: None,
        metadata_endpoint: k.google.url.clone(),
        iam_endpoint: k.google.url.clone(),
        service_account_org_token: Some("mw-{org}-".into()),
    };
    let storage = storage(cfg).await;
    let name = "été & co/x+y.jpg";
    let want =
        &golden(&py, &k.google.state.customer, &[(k.google.url.as_str(), "cust-bucket", name)], 300)[0];
    let got = storage.presign(&k.integration, &format!("gs://cust-bucket/{name}"), Some(fixed_time())).await;
    // Signed at a past fixed time, so the token's expiry (now + 200 s) is no bound here.
    assert_eq!(got.unwrap().expose(), want);
    let now = SystemTime::now();
    for _ in 0..3 {
        let url = storage.presign(&k.integration, "gs://cust-bucket/a.jpg", None).await.unwrap();
        let left = url.expires_at().unwrap().duration_since(now).unwrap();
        assert!(left <= Duration::from_secs(201), "the URL outlives the token: {left:?}");
        let expires: u64 =
            storage_support::query_param(url.expose(), "X-Goog-Expires").unwrap().parse().unwrap();
        assert!(expires <= 200, "X-Goog-Expires={expires}");
    }
    assert_eq!(k.google.state.exchanges.load(Ordering::SeqCst), 1, "the token is cached");
}

/// The platform's identity through workload identity federation (a Kubernetes cluster
/// outside GKE): a projected token file exchanged at the STS, then for the platform
/// service account's token, once for 24 signings started together; nothing of it in a
/// log. An AWS-sourced configuration is refused with a sentence, before any request.
#[tokio::test]
async fn keyless_through_workload_identity_federation_exchanges_once() {
    let Some(py) = python() else { return };
    let logs = Logs::capture();
    let platform = TestKey::new(&py, PLATFORM_SA);
    let google = FakeGoogle::start(&platform, TestKey::new(&py, CUSTOMER_SA)).await;
    let temp = tempfile::tempdir().unwrap();
    let token_file = temp.path().join("token");
    std::fs::write(&token_file, format!("{}\n", google.state.subject)).unwrap();
    let wif = |source: serde_json::Value| {
        let path = temp.path().join(format!("wif-{}.json", rand::random::<u32>()));
        let json = serde_json::json!({
            "type": "external_account", "audience": WIF_AUDIENCE,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/v1/token", google.url),
            "service_account_impersonation_url":
                format!("{}/v1/projects/-/serviceAccounts/{PLATFORM_SA}:generateAccessToken", google.url),
            "credential_source": source
        });
        std::fs::write(&path, json.to_string()).unwrap();
        path
    };
    let worker = |credentials: std::path::PathBuf| {
        let mut cfg = config_allowing(&temp.path().join("work"), authority(&google.url));
        cfg.gcs = GcsSettings {
            credentials_file: Some(credentials),
            iam_endpoint: google.url.clone(),
            service_account_org_token: Some("mw-{org}-".into()),
            ..GcsSettings::default()
        };
        storage(cfg)
    };
    let integration = integration(
        Some(&google.url),
        serde_json::json!({"type": "iam_delegated", "service_account": CUSTOMER_SA}),
    );

    let s = worker(wif(serde_json::json!({"file": token_file}))).await;
    let signs = (0..24).map(|i| {
        let (storage, integration) = (s.clone(), integration.clone());
        async move { storage.presign(&integration, &format!("gs://cust-bucket/x{i}"), None).await }
    });
    let signed: Vec<_> = futures::future::join_all(signs).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(google.state.exchanges.load(Ordering::SeqCst), 1, "one STS exchange");
    assert_eq!(google.state.impersonations.load(Ordering::SeqCst), 1, "one impersonation");
    assert_eq!(google.state.sign_blobs.load(Ordering::SeqCst), 24);
    assert_eq!(s.gcs_token_exchanges(), 1);

    // A subject token in a JSON field; then one from a source the worker does not take.
    std::fs::write(&token_file, serde_json::json!({"id_token": google.state.subject}).to_string()).unwrap();
    let s = worker(wif(serde_json::json!({"file": token_file,
        "format": {"type": "json", "subject_token_field_name": "id_token"}})))
    .await;
    s.presign(&integration, "gs://cust-bucket/y", None).await.unwrap();
    assert_eq!(google.state.exchanges.load(Ordering::SeqCst), 2);
    let s = worker(wif(serde_json::json!({"environment_id": "aws1",
        "regional_cred_verification_url": "https://sts.{region}.amazonaws.com"})))
    .await;
    let err = s.presign(&integration, "gs://cust-bucket/y", None).await.unwrap_err();
    assert_eq!(err.code().as_str(), "credentials", "{err}");
    assert!(err.to_string().contains("AWS- and executable-sourced"), "{err}");
    assert_eq!(google.state.exchanges.load(Ordering::SeqCst), 2, "refused before any request");
    // A subject token the STS refuses is a credentials error, named by Google's code.
    std::fs::write(&token_file, "eyJ.someone-else").unwrap();
    let s = worker(wif(serde_json::json!({"file": token_file}))).await;
    let err = s.presign(&integration, "gs://cust-bucket/y", None).await.unwrap_err();
    assert_eq!(err.code().as_str(), "credentials", "{err}");
    assert!(err.to_string().contains("INVALID_GRANT"), "{err}");

    let sig = storage_support::query_param(signed[0].expose(), "X-Goog-Signature").unwrap();
    logs.assert_free_of(&[
        ("subject token", google.state.subject.as_str()),
        ("federated token", google.state.federated.as_str()),
        ("platform token", google.state.token.as_str()),
        ("URL signature", sig.as_str()),
    ]);
}
