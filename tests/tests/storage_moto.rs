//! Delegated access end to end: STS and IAM (and S3, for header-signed calls) on moto
//! with IAM policy enforcement switched on; presigned downloads on s3s-fs started with
//! the very key pair moto's AssumeRole returned (moto answers 500 to presigned URLs).
//! Also `validate-storage`, through the library and through the binary.

mod storage_support;

use std::process::Command;

use asset_core::{ErrorCode, Integration};
use asset_storage::{CheckName, Storage, StorageError, ValidateOptions, ValidationReport};
use storage_support::{Logs, S3s, config, config_allowing, files_in, query_param, require};
use tokio::sync::OnceCell;

const ORIGIN: &str = "https://app.labeling.example";
const ACCOUNT: &str = "123456789012";

fn moto_endpoint() -> String {
    std::env::var("MOTO_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// What the one-time setup created on moto, names unique to this run.
#[derive(Debug, Clone)]
struct Moto {
    endpoint: String,
    base_key: String,
    base_secret: String,
    bucket: String,
    other_bucket: String,
    reader_role: String,
    no_get_role: String,
    external_id: String,
}

static MOTO: OnceCell<Option<Moto>> = OnceCell::const_new();

async fn moto() -> Option<Moto> {
    MOTO.get_or_init(|| async {
        let endpoint = moto_endpoint();
        let up = reqwest::get(format!("{endpoint}/moto-api/")).await.is_ok_and(|r| r.status().is_success());
        if !require("moto (STS/IAM) on 127.0.0.1:5000", up) {
            return None;
        }
        Some(setup(endpoint).await)
    })
    .await
    .clone()
}

/// An IAM Query API call. With enforcement off moto needs no valid signature, only a
/// credential scope naming the service.
async fn iam(http: &reqwest::Client, endpoint: &str, params: &[(&str, &str)]) -> String {
    let resp = http
        .post(endpoint)
        .header("Authorization", "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0")
        .form(&[&[("Version", "2010-05-08")], params].concat())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "IAM {params:?}: {status} {body}");
    body
}

fn xml<'a>(body: &'a str, name: &str) -> &'a str {
    let start = body.find(&format!("<{name}>")).unwrap() + name.len() + 2;
    &body[start..start + body[start..].find('<').unwrap()]
}

async fn reset_auth(http: &reqwest::Client, endpoint: &str, count: &str) {
    let r = http
        .post(format!("{endpoint}/moto-api/reset-auth"))
        .header("Content-Type", "text/plain")
        .body(count.to_owned())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

async fn setup(endpoint: String) -> Moto {
    let http = reqwest::Client::new();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let run = format!("{:x}{nanos:x}", std::process::id());
    // Enforcement off while setting up (a previous run may have left it on).
    reset_auth(&http, &endpoint, "inf").await;

    let base_user = format!("mw-worker-{run}");
    iam(&http, &endpoint, &[("Action", "CreateUser"), ("UserName", &base_user)]).await;
    let keys = iam(&http, &endpoint, &[("Action", "CreateAccessKey"), ("UserName", &base_user)]).await;
    let (base_key, base_secret) =
        (xml(&keys, "AccessKeyId").to_owned(), xml(&keys, "SecretAccessKey").to_owned());
    let may_assume = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#;
    iam(
        &http,
        &endpoint,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", &base_user),
            ("PolicyName", "assume"),
            ("PolicyDocument", may_assume),
        ],
    )
    .await;

    let bucket = format!("acme-assets-{run}");
    let other_bucket = format!("acme-private-{run}");
    let external_id = format!("ext-{run}-Zq8");
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:user/{base_user}")},
        "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": external_id}}
    }]})
    .to_string();
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    // No s3:GetBucketCORS: validate-storage checks CORS as a browser does, with a
    // preflight that needs no permission.
    let reader = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [format!("{bucket_arn}/*")]},
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": [&bucket_arn]}
    ]})
    .to_string();
    let no_get = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": [bucket_arn]}
    ]})
    .to_string();
    let mut roles = Vec::new();
    for (name, policy) in
        [(format!("labeling-reader-{run}"), reader), (format!("labeling-noget-{run}"), no_get)]
    {
        iam(
            &http,
            &endpoint,
            &[("Action", "CreateRole"), ("RoleName", &name), ("AssumeRolePolicyDocument", &trust)],
        )
        .await;
        iam(
            &http,
            &endpoint,
            &[
                ("Action", "PutRolePolicy"),
                ("RoleName", &name),
                ("PolicyName", "read"),
                ("PolicyDocument", &policy),
            ],
        )
        .await;
        roles.push(format!("arn:aws:iam::{ACCOUNT}:role/{name}"));
    }

    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(
            &storage_support::base_config(&endpoint, &base_key, &base_secret).await,
        )
        .force_path_style(true)
        .build(),
    );
    for b in [&bucket, &other_bucket] {
        s3.create_bucket().bucket(b).send().await.unwrap();
        // moto's SigV4 check fails on non-ASCII keys (even boto3's); unicode keys are
        // covered against s3s-fs.
        for key in ["img/cat.jpg", "docs/my file.txt"] {
            s3.put_object().bucket(b).key(key).body(b"moto object".to_vec().into()).send().await.unwrap();
        }
    }
    // From now on every call must be allowed by IAM.
    reset_auth(&http, &endpoint, "0").await;
    let [reader_role, no_get_role] = <[String; 2]>::try_from(roles).unwrap();
    Moto { endpoint, base_key, base_secret, bucket, other_bucket, reader_role, no_get_role, external_id }
}

async fn storage(m: &Moto, temp: &std::path::Path) -> Storage {
    let base = storage_support::base_config(&m.endpoint, &m.base_key, &m.base_secret).await;
    // moto is the operator's endpoint (admitted as such); the s3s-fs instances these
    // tests start on loopback ports need the operator's allow-list.
    Storage::with_aws_config(config_allowing(temp, "127.0.0.1"), base).unwrap()
}

fn delegated(
    provider: &str,
    endpoint: Option<&str>,
    role: &str,
    external_id: &str,
    buckets: &[&str],
) -> Integration {
    let mut v = serde_json::json!({
        "id": "int-delegated", "org_id": "org-acme", "provider": provider, "region": "us-east-1",
        "buckets": buckets,
        "access": {"type": "iam_delegated", "role_arn": role, "external_id": external_id}
    });
    if let Some(e) = endpoint {
        v["endpoint"] = e.into();
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn right_external_id_downloads_with_one_sts_call_per_integration() {
    let Some(m) = moto().await else { return };
    let logs = Logs::capture();
    let temp = tempfile::tempdir().unwrap();
    let storage = storage(&m, temp.path()).await;
    // A storage service that speaks S3 and trusts the customer's STS: s3s-fs with the
    // session's key pair.
    let probe = delegated("aws", None, &m.reader_role, &m.external_id, &[&m.bucket]);
    let creds = storage.credentials(&probe).await.unwrap();
    assert_eq!(storage.sts_calls(), 1);
    assert!(creds.session_token.is_some() && creds.expires_at.is_some());
    let Some(s3s) = S3s::start(creds.access_key_id.expose(), creds.secret_access_key.expose()) else {
        return;
    };
    s3s.put(&m.bucket, "img/cat.jpg", b"delegated download");
    s3s.put(&m.bucket, "docs/my file 猫.txt", b"unicode");
    let integration =
        delegated("s3_compatible", Some(&s3s.endpoint), &m.reader_role, &m.external_id, &[&m.bucket]);

    let asset = storage.fetch(&integration, &format!("s3://{}/img/cat.jpg", m.bucket)).await.unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), b"delegated download");
    asset.delete().unwrap();
    assert_eq!(storage.sts_calls(), 1, "the same role and buckets share one session");

    // Many assets, concurrently: still one AssumeRole for this integration.
    let fetches = (0..24).map(|i| {
        let (storage, integration) = (storage.clone(), integration.clone());
        let url = if i % 2 == 0 {
            format!("s3://{}/img/cat.jpg", m.bucket)
        } else {
            format!("{}/{}/docs/my%20file%20%E7%8C%AB.txt", s3s.endpoint, m.bucket)
        };
        tokio::spawn(async move { storage.fetch(&integration, &url).await.map(|a| a.size()) })
    });
    for f in futures::future::join_all(fetches).await {
        assert!(f.unwrap().unwrap() > 0);
    }
    assert_eq!(storage.sts_calls(), 1);
    assert!(files_in(temp.path()).is_empty());

    // Everything that authenticates stays out of the logs of this whole run.
    let signed =
        storage.presign(&integration, &format!("s3://{}/img/cat.jpg", m.bucket), None).await.unwrap();
    let sig = query_param(signed.expose(), "X-Amz-Signature").unwrap();
    let token = creds.session_token.as_ref().unwrap().expose().to_owned();
    assert!(query_param(signed.expose(), "X-Amz-Security-Token").is_some_and(|t| t == token));
    tracing::info!(?creds, ?signed, "what a careless caller might log");
    let text = logs.text();
    assert!(
        text.contains("assuming the integration's role") && text.contains("mw-org-acme-int-delegated"),
        "{text}"
    );
    logs.assert_free_of(&[
        ("base secret key", &m.base_secret),
        ("session secret key", creds.secret_access_key.expose()),
        ("session token", &token),
        ("external id", &m.external_id),
        ("signed URL", signed.expose()),
        ("signature", &sig),
    ]);
}

#[tokio::test]
async fn wrong_external_id_is_access_denied() {
    let Some(m) = moto().await else { return };
    let temp = tempfile::tempdir().unwrap();
    let storage = storage(&m, temp.path()).await;
    let integration = delegated("aws", None, &m.reader_role, "ext-not-the-customers-one", &[&m.bucket]);
    let err = storage.fetch(&integration, &format!("s3://{}/img/cat.jpg", m.bucket)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessDenied, "{err}");
    assert!(matches!(err, StorageError::AccessDenied { service: "sts", .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(storage.sts_calls(), 1, "a denial is not retried");
    assert!(!format!("{err} {err:?}").contains("ext-not-the-customers-one"));
}

#[tokio::test]
async fn missing_external_id_is_refused_before_any_call() {
    let Some(m) = moto().await else { return };
    let temp = tempfile::tempdir().unwrap();
    let storage = storage(&m, temp.path()).await;
    let integration = delegated("aws", None, &m.reader_role, "", &[&m.bucket]);
    let err = storage.fetch(&integration, &format!("s3://{}/img/cat.jpg", m.bucket)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidIntegration, "{err}");
    assert!(err.to_string().contains("external_id"), "{err}");
    assert_eq!(storage.sts_calls(), 0);
    let report = storage.validate_access(&integration, &ValidateOptions::default()).await;
    assert!(!report.ok);
    assert_eq!(report.checks[0].code.as_deref(), Some("invalid_integration"));
    assert_eq!(storage.sts_calls(), 0);
}

fn check<'a>(r: &'a ValidationReport, name: CheckName, bucket: &str) -> &'a asset_storage::Check {
    r.checks
        .iter()
        .find(|c| {
            c.name == name
                && (c.message.contains(bucket)
                    || matches!(name, CheckName::Credentials | CheckName::AssumeRole))
        })
        .unwrap_or_else(|| panic!("no {name:?} check for {bucket}: {r:#?}"))
}

#[tokio::test]
async fn validate_passes_every_check_for_a_good_integration() {
    let Some(m) = moto().await else { return };
    let temp = tempfile::tempdir().unwrap();
    let storage = storage(&m, temp.path()).await;
    let integration = delegated("aws", None, &m.reader_role, &m.external_id, &[&m.bucket]);
    // No origin: this moto enforces IAM and then cannot answer a browser's preflight
    // (it has no Authorization header); CORS is checked on a moto of its own below.
    let report = storage.validate_access(&integration, &ValidateOptions::default()).await;
    all_ok_but_cors_unset(&report);
    let names: Vec<CheckName> = report.checks.iter().map(|c| c.name).collect();
    use CheckName::*;
    assert_eq!(names, [Credentials, AssumeRole, Bucket, Read, Region, Cors]);

    // A named key with a space, read through header-signed GetObject.
    let opts = ValidateOptions { key: Some("docs/my file.txt".into()), origin: None };
    all_ok_but_cors_unset(&storage.validate_access(&integration, &opts).await);
    let opts = ValidateOptions { key: Some("docs/missing.txt".into()), origin: None };
    let report = storage.validate_access(&integration, &opts).await;
    assert_eq!(check(&report, Read, &m.bucket).code.as_deref(), Some("not_found"), "{report:#?}");
}

/// Every check passed but CORS, which had no origin to check against.
fn all_ok_but_cors_unset(report: &ValidationReport) {
    for c in &report.checks {
        match c.name {
            CheckName::Cors => assert_eq!(c.code.as_deref(), Some("cors_origin_unset"), "{report:#?}"),
            _ => assert!(c.ok, "{report:#?}"),
        }
    }
}

/// A moto of the test's own (no IAM enforcement, bucket CORS rules answered as S3 does)
/// with buckets holding one object each, and an IAM-user integration of org `org-1` for
/// it, its secret in a secrets dir of its own.
struct CorsMoto {
    moto: storage_support::OwnMoto,
    s3: aws_sdk_s3::Client,
    secrets: tempfile::TempDir,
}

impl CorsMoto {
    const KEY: &str = "AKIAOWNMOTOCORS00001";
    const SECRET: &str = "own-moto-cors-secret-key-0000000000000000";

    async fn start(buckets: &[&str]) -> Option<CorsMoto> {
        let moto = storage_support::OwnMoto::start()?;
        let base = storage_support::base_config(&moto.endpoint, Self::KEY, Self::SECRET).await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&base).force_path_style(true).build(),
        );
        for bucket in buckets {
            s3.create_bucket().bucket(*bucket).send().await.unwrap();
            let body = b"cat".to_vec().into();
            s3.put_object().bucket(*bucket).key("my photos/cat (1).jpg").body(body).send().await.unwrap();
        }
        let secrets = tempfile::tempdir().unwrap();
        std::fs::create_dir(secrets.path().join("org-1")).unwrap();
        std::fs::write(secrets.path().join("org-1/moto.key"), Self::SECRET).unwrap();
        Some(CorsMoto { moto, s3, secrets })
    }

    /// One rule: `ORIGIN` may use `methods`.
    async fn set_cors(&self, bucket: &str, methods: &[&str]) {
        let mut rule = aws_sdk_s3::types::CorsRule::builder().allowed_origins(ORIGIN);
        for m in methods {
            rule = rule.allowed_methods(*m);
        }
        let rules = aws_sdk_s3::types::CorsConfiguration::builder().cors_rules(rule.build().unwrap());
        let put = self.s3.put_bucket_cors().bucket(bucket).cors_configuration(rules.build().unwrap());
        put.send().await.unwrap();
    }

    fn integration(&self, buckets: &[&str]) -> Integration {
        serde_json::from_value(serde_json::json!({
            "id": "int-cors", "org_id": "org-1", "provider": "s3_compatible", "endpoint": self.moto.endpoint,
            "buckets": buckets,
            "access": {"type": "iam_user", "access_key_id": Self::KEY, "secret_ref": "file:moto.key"}
        }))
        .unwrap()
    }
}

/// CORS as a browser meets it, on a moto of the test's own (S3's bucket rules, preflights
/// unauthenticated as on AWS): a bucket whose rule allows the origin passes, one without
/// rules is `cors_missing`, another origin or a rule without GET is refused, each in one
/// sentence. No permission beyond reading is needed.
#[tokio::test]
async fn cors_is_checked_as_a_browser_meets_it() {
    let Some(own) = CorsMoto::start(&["with-rules", "without-rules"]).await else { return };
    own.set_cors("with-rules", &["GET", "HEAD"]).await;
    let temp = tempfile::tempdir().unwrap();
    let mut cfg = config_allowing(temp.path(), storage_support::authority(&own.moto.endpoint));
    cfg.secrets_dir = Some(own.secrets.path().to_path_buf());
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    let storage = Storage::with_aws_config(cfg, base).unwrap();
    let integration = own.integration(&["with-rules", "without-rules"]);
    let validate = |origin: Option<&str>| {
        let opts = ValidateOptions { key: None, origin: origin.map(str::to_owned) };
        let (storage, integration) = (&storage, &integration);
        async move { storage.validate_access(integration, &opts).await }
    };
    let cors = |report: &ValidationReport, bucket: &str| {
        let c = check(report, CheckName::Cors, &format!("bucket {bucket}"));
        (c.code.clone(), c.message.clone())
    };
    let one_sentence =
        |m: &str| m.ends_with('.') && !m.contains(['{', '<', '\n']) && !m.contains("Signature");

    let report = validate(Some(ORIGIN)).await;
    assert!(check(&report, CheckName::Read, "without-rules").ok, "{report:#?}");
    let (code, message) = cors(&report, "with-rules");
    assert_eq!(code, None, "{message}");
    assert!(message.contains(ORIGIN), "{message}");
    let (code, message) = cors(&report, "without-rules");
    assert_eq!(code.as_deref(), Some("cors_missing"), "{message}");
    assert!(one_sentence(&message), "{message}");

    // Another origin: the rule refuses the preflight (403).
    let (code, message) = cors(&validate(Some("https://evil.example")).await, "with-rules");
    assert_eq!(code.as_deref(), Some("cors_origin_not_allowed"), "{message}");
    assert!(message.contains("https://evil.example") && message.contains("HTTP 403"), "{message}");
    assert!(one_sentence(&message), "{message}");

    // The origin, but only PUT allowed.
    own.set_cors("with-rules", &["PUT"]).await;
    let (code, message) = cors(&validate(Some(ORIGIN)).await, "with-rules");
    assert_eq!(code.as_deref(), Some("cors_origin_not_allowed"), "{message}");
    assert!(one_sentence(&message), "{message}");

    // No origin: nothing to check against, said so.
    assert_eq!(cors(&validate(None).await, "with-rules").0.as_deref(), Some("cors_origin_unset"));
}

#[tokio::test]
async fn validate_reports_each_failure_with_its_code() {
    let Some(m) = moto().await else { return };
    let temp = tempfile::tempdir().unwrap();
    let storage = storage(&m, temp.path()).await;

    // The role may list but not read: the read check is denied.
    let no_get = delegated("aws", None, &m.no_get_role, &m.external_id, &[&m.bucket]);
    let report = storage.validate_access(&no_get, &ValidateOptions::default()).await;
    assert!(!report.ok);
    assert!(check(&report, CheckName::AssumeRole, "").ok, "{report:#?}");
    assert!(check(&report, CheckName::Bucket, &m.bucket).ok, "{report:#?}");
    assert_eq!(
        check(&report, CheckName::Read, &m.bucket).code.as_deref(),
        Some("access_denied"),
        "{report:#?}"
    );

    // A bucket outside the role's policy, a wrong region.
    let mut v = serde_json::to_value(delegated(
        "aws",
        None,
        &m.reader_role,
        &m.external_id,
        &[&m.bucket, &m.other_bucket],
    ))
    .unwrap();
    v["region"] = "eu-west-1".into();
    let integration: Integration = serde_json::from_value(v).unwrap();
    let report = storage.validate_access(&integration, &ValidateOptions::default()).await;
    assert!(!report.ok);
    assert!(check(&report, CheckName::Bucket, &m.bucket).ok, "{report:#?}");
    assert_eq!(
        check(&report, CheckName::Bucket, &m.other_bucket).code.as_deref(),
        Some("access_denied"),
        "{report:#?}"
    );
    assert_eq!(
        check(&report, CheckName::Region, &m.bucket).code.as_deref(),
        Some("region_mismatch"),
        "{report:#?}"
    );
    // Nothing listed in the bucket outside the policy: no object to check CORS on.
    assert_eq!(
        check(&report, CheckName::Cors, &m.other_bucket).code.as_deref(),
        Some("cors_origin_unset"),
        "{report:#?}"
    );

    // A wrong ExternalId stops at assume_role.
    let wrong = delegated("aws", None, &m.reader_role, "ext-wrong-one", &[&m.bucket]);
    let report = storage.validate_access(&wrong, &ValidateOptions::default()).await;
    let last = report.checks.last().unwrap();
    assert_eq!(
        (last.name, last.code.as_deref()),
        (CheckName::AssumeRole, Some("access_denied")),
        "{report:#?}"
    );
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

#[tokio::test]
async fn validate_storage_command_prints_json_and_sets_the_exit_status() {
    let Some(m) = moto().await else { return };
    let bin = worker_binary();
    let dir = tempfile::tempdir().unwrap();
    let run = |integration: &Integration, extra: &[&str], env: &[(&str, &str)]| {
        let path = dir.path().join("integration.json");
        std::fs::write(&path, serde_json::to_vec(integration).unwrap()).unwrap();
        Command::new(&bin)
            .arg("validate-storage")
            .arg(&path)
            .args(["--json"])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", &m.endpoint)
            .env("AWS_ACCESS_KEY_ID", &m.base_key)
            .env("AWS_SECRET_ACCESS_KEY", &m.base_secret)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("TMPDIR", dir.path())
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let codes = |stdout: &str| -> Vec<(String, String)> {
        let json: serde_json::Value = serde_json::from_str(stdout).unwrap();
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| Some((c["name"].as_str()?.to_owned(), c.get("code")?.as_str()?.to_owned())))
            .collect()
    };
    let unset = ("cors".to_owned(), "cors_origin_unset".to_owned());

    // The shared moto enforces IAM and cannot answer a preflight: no origin there.
    let good = delegated("aws", None, &m.reader_role, &m.external_id, &[&m.bucket]);
    let out = run(&good, &["--key", "img/cat.jpg"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> =
        json["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["credentials", "assume_role", "bucket", "read", "region", "cors"]);
    assert!(json["checks"][0].get("code").is_none());
    assert_eq!(codes(&stdout), std::slice::from_ref(&unset), "{stdout}");

    let bad = delegated("aws", None, &m.no_get_role, &m.external_id, &[&m.bucket]);
    let out = run(&bad, &[], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(codes(&stdout), [("read".to_owned(), "access_denied".to_owned()), unset], "{stdout}");
    for secret in [&m.base_secret, &m.external_id] {
        assert!(
            !stdout.contains(secret.as_str())
                && !String::from_utf8_lossy(&out.stderr).contains(secret.as_str())
        );
    }

    // Every check passing, CORS included (PLATFORM_ORIGIN), on a moto of the test's own:
    // exit status 0.
    let Some(own) = CorsMoto::start(&["cli-bucket"]).await else { return };
    own.set_cors("cli-bucket", &["GET"]).await;
    let own_integration = own.integration(&["cli-bucket"]);
    let out = run(
        &own_integration,
        &[],
        &[
            ("PLATFORM_ORIGIN", ORIGIN),
            ("SECRETS_DIR", own.secrets.path().to_str().unwrap()),
            ("ALLOWED_ENDPOINTS", storage_support::authority(&own.moto.endpoint)),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(codes(&stdout), [], "{stdout}");
    assert!(
        !stdout.contains(CorsMoto::SECRET)
            && !String::from_utf8_lossy(&out.stderr).contains(CorsMoto::SECRET)
    );
}

#[tokio::test]
async fn a_session_within_the_refresh_margin_is_renewed() {
    let Some(m) = moto().await else { return };
    let temp = tempfile::tempdir().unwrap();
    let base = storage_support::base_config(&m.endpoint, &m.base_key, &m.base_secret).await;
    // Sessions last 900 s; a 20-minute margin makes every cached one due for renewal.
    let mut cfg = config(temp.path());
    cfg.refresh_margin = std::time::Duration::from_secs(20 * 60);
    let storage = Storage::with_aws_config(cfg, base).unwrap();
    let integration = delegated("aws", None, &m.reader_role, &m.external_id, &[&m.bucket]);
    let first = storage.credentials(&integration).await.unwrap();
    let second = storage.credentials(&integration).await.unwrap();
    assert_eq!(storage.sts_calls(), 2);
    assert_ne!(first.access_key_id.expose(), second.access_key_id.expose());
}
