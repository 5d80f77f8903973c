//! Google Cloud Storage. Like S3, the worker signs its own short-lived URL for the one
//! object an asset URL names and hands it to the shared downloader, so full and ranged
//! reads, limits, retries and temp files are the S3 ones unchanged. Three ways to sign:
//! `iam_delegated` (keyless: IAM Credentials `signBlob` as the customer's service
//! account, with the worker's own platform token, see [`auth`]), `service_account_key`
//! (the customer's JSON key at `secret_ref`, RSA-signed here, see [`sign`]) and `hmac`
//! (GCS's S3-interoperable XML API, through the S3 path with region `auto`).

pub(crate) mod auth;
mod check;
pub(crate) mod sign;

use std::time::SystemTime;

use asset_core::{Access, GcsAccess, GcsIntegration, S3Integration};
use async_trait::async_trait;
use ring::digest::{SHA256, digest};
use serde::Deserialize;
use url::{Host, Url};

use crate::Inner;
use crate::credentials::{presign_ttl, resolve_secret};
use crate::error::StorageError;
use crate::location::{ObjectLocation, check_key_segments, on_endpoint};
use crate::partial::Origin;
use crate::secret::SignedUrl;
use crate::source::{ObjectSource, S3Source, still_names};
use crate::validate::{parse_secret_ref, validate_endpoint};

pub use auth::GcsSettings;

/// Where GCS's JSON and XML APIs, and V4 signed URLs, live.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

pub(crate) struct GcsSource<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) integration: &'a GcsIntegration,
}

impl GcsSource<'_> {
    pub(crate) fn endpoint(&self) -> &str {
        endpoint_of(self.integration)
    }

    /// The S3 view of an `hmac` integration: GCS's XML API speaks SigV4 with the HMAC
    /// key as an AWS key pair and `auto` as the region. Only presigned GETs are sent, so
    /// no checksum header or parameter (GCS refuses the SDK's default ones) ever is.
    pub(crate) fn hmac_as_s3(&self) -> Option<S3Integration> {
        let g = self.integration;
        let GcsAccess::Hmac { access_id, secret_ref } = &g.access else { return None };
        Some(S3Integration {
            id: g.id.clone(),
            org_id: g.org_id.clone(),
            region: Some("auto".into()),
            endpoint: Some(self.endpoint().to_owned()),
            path_style: Some(true),
            buckets: g.buckets.clone(),
            access: Access::IamUser { access_key_id: access_id.clone(), secret_ref: secret_ref.clone() },
        })
    }

    /// A V4 signed GET for the object; `start` back-dates it (tests of expiry).
    pub(crate) async fn presign(
        &self,
        loc: &ObjectLocation,
        start: Option<SystemTime>,
    ) -> Result<SignedUrl, StorageError> {
        if let Some(s3) = self.hmac_as_s3() {
            return S3Source { inner: self.inner, integration: &s3, aws: false }.presign(loc, start).await;
        }
        let url = self.sign_v4(&loc.bucket, &loc.key, &[], start).await?;
        still_names(url.expose(), loc)?;
        Ok(url)
    }

    /// A V4 signed GET of `object` (empty: the bucket) with `query` signed along, by
    /// the integration's key or through `signBlob`. Not for `hmac` integrations.
    pub(crate) async fn sign_v4(
        &self,
        bucket: &str,
        object: &str,
        query: &[(&str, &str)],
        start: Option<SystemTime>,
    ) -> Result<SignedUrl, StorageError> {
        let cfg = &self.inner.config;
        let g = self.integration;
        let now = start.unwrap_or_else(SystemTime::now);
        let request = |email, expires| sign::V4Request {
            endpoint: self.endpoint(),
            bucket,
            object,
            query,
            signer_email: email,
            now,
            expires,
        };
        match &g.access {
            GcsAccess::ServiceAccountKey { client_email, secret_ref } => {
                let key = service_account_key(secret_ref, client_email, &g.org_id, cfg)?;
                let ttl = presign_ttl(cfg.signed_url_ttl, None, now);
                let unsigned = request(client_email, ttl).prepare()?;
                let sig = key.sign(unsigned.string_to_sign.as_bytes())?;
                Ok(SignedUrl::new(unsigned.finish(&sig), Some(now + ttl)))
            }
            GcsAccess::IamDelegated { service_account } => {
                let auth = &self.inner.gcs_auth;
                let token = auth.token(&cfg.gcs, &cfg.retry, cfg.refresh_margin).await?;
                let ttl = presign_ttl(cfg.signed_url_ttl, Some(token.expires_at), now);
                let unsigned = request(service_account, ttl).prepare()?;
                tracing::debug!(integration_id = %g.id, service_account, "signing through signBlob");
                let sig = crate::retry::with_retry(&cfg.retry, "sign_blob", |_| {
                    auth.sign_blob(&cfg.gcs, &token, service_account, unsigned.string_to_sign.as_bytes())
                })
                .await?;
                Ok(SignedUrl::new(unsigned.finish(&sig), Some(now + ttl)))
            }
            GcsAccess::Hmac { .. } => {
                Err(StorageError::invalid("access", "hmac integrations are signed by the S3 path"))
            }
        }
    }
}

#[async_trait]
impl ObjectSource for GcsSource<'_> {
    fn locate(&self, url: &str) -> Result<ObjectLocation, StorageError> {
        locate_gcs(self.integration, url)
    }

    async fn origin(&self, loc: &ObjectLocation) -> Result<Origin, StorageError> {
        Ok(Origin::Signed(self.presign(loc, None).await?))
    }
}

pub(crate) fn endpoint_of(g: &GcsIntegration) -> &str {
    g.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT)
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key: String,
}

/// The customer's JSON key at `secret_ref` (bound to the organisation like every
/// secret), which must be the key of `client_email`.
fn service_account_key(
    secret_ref: &str,
    client_email: &str,
    org_id: &str,
    cfg: &crate::StorageConfig,
) -> Result<sign::RsaKey, StorageError> {
    let json = resolve_secret(secret_ref, org_id, cfg, false)?;
    let key: KeyFile = serde_json::from_str(json.expose()).map_err(|_| {
        StorageError::invalid("access.secret_ref", "the secret is not a service-account JSON key")
    })?;
    if key.kind != "service_account" {
        return Err(StorageError::invalid(
            "access.secret_ref",
            "the JSON key is not of type service_account",
        ));
    }
    if key.client_email != client_email {
        return Err(StorageError::invalid(
            "access.client_email",
            "differs from the client_email of the JSON key at secret_ref",
        ));
    }
    sign::RsaKey::from_pem(&key.private_key)
}

/// Maps an asset URL to an object of a GCS integration, or refuses it:
/// `gs://bucket/name` (the name verbatim, as gsutil and gcloud take it), and on the
/// integration's endpoint path-style `https://storage.googleapis.com/bucket/name` or
/// virtual-hosted `https://bucket.storage.googleapis.com/name` (percent-decoded once;
/// `+` is a plus, as GCS reads it).
pub(crate) fn locate_gcs(g: &GcsIntegration, raw: &str) -> Result<ObjectLocation, StorageError> {
    let loc = if let Some(rest) = raw.strip_prefix("gs://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        ObjectLocation { bucket: bucket.to_owned(), key: key.to_owned() }
    } else {
        let url = Url::parse(raw).map_err(|e| StorageError::not_in_storage(format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(StorageError::not_in_storage(format!("scheme {:?} is not accepted", url.scheme())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(StorageError::not_in_storage("URLs with user info are refused"));
        }
        let host = url.host().ok_or_else(|| StorageError::not_in_storage("the URL has no host"))?;
        match on_endpoint(endpoint_of(g), &url, &host)? {
            Some(loc) => loc,
            None => {
                return Err(StorageError::not_in_storage(format!(
                    "host {host} is not this integration's storage"
                )));
            }
        }
    };
    if loc.key.is_empty() {
        return Err(StorageError::not_in_storage("the URL names no object"));
    }
    check_key_segments(&loc.key)?;
    if !g.buckets.contains(&loc.bucket) {
        return Err(StorageError::not_in_storage(format!(
            "bucket {:?} is not one of the integration's buckets",
            loc.bucket
        )));
    }
    Ok(loc)
}

/// Syntax of a GCS integration: no network, no secret lookup.
pub(crate) fn validate_gcs(g: &GcsIntegration) -> Result<(), StorageError> {
    if let Some(e) = &g.endpoint {
        validate_endpoint(e)?;
        let path = Url::parse(e).map(|u| u.path().to_owned()).unwrap_or_default();
        if !matches!(path.as_str(), "" | "/") {
            return Err(StorageError::invalid("endpoint", "must be scheme://host[:port], without a path"));
        }
    }
    if g.buckets.is_empty() {
        return Err(StorageError::invalid("buckets", "must name at least one bucket"));
    }
    for b in &g.buckets {
        validate_gcs_bucket(b)?;
    }
    match &g.access {
        GcsAccess::IamDelegated { service_account } => validate_service_account(service_account),
        GcsAccess::ServiceAccountKey { client_email, secret_ref } => {
            let ok = client_email.split_once('@').is_some_and(|(local, domain)| {
                (1..=64).contains(&local.len())
                    && local.bytes().all(|c| c.is_ascii_graphic() && c != b'@')
                    && (1..=253).contains(&domain.len())
                    && domain
                        .bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            });
            if !ok {
                return Err(StorageError::invalid("access.client_email", "is not a service account e-mail"));
            }
            parse_secret_ref(secret_ref, &g.org_id).map(|_| ())
        }
        GcsAccess::Hmac { access_id, secret_ref } => {
            if !(16..=128).contains(&access_id.len()) || !access_id.bytes().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(StorageError::invalid("access.access_id", "must be 16-128 letters and digits"));
            }
            parse_secret_ref(secret_ref, &g.org_id).map(|_| ())
        }
    }
}

/// GCS bucket names: 3-63 characters (222 with dots, 63 per dot-separated part) of
/// lowercase letters, digits, `-`, `_` and `.`, starting and ending with a letter or
/// digit, not an IP address, not starting with `goog`.
pub(crate) fn validate_gcs_bucket(b: &str) -> Result<(), StorageError> {
    let bytes = b.as_bytes();
    let chars_ok = bytes.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c));
    let ends_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    let len_ok = if b.contains('.') {
        b.len() <= 222 && b.split('.').all(|p| (1..=63).contains(&p.len()))
    } else {
        (3..=63).contains(&b.len())
    };
    if !chars_ok || !ends_ok || !len_ok || b.len() < 3 || b.starts_with("goog") {
        return Err(StorageError::invalid("buckets", format!("{b:?} is not a valid GCS bucket name")));
    }
    if b.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(StorageError::invalid("buckets", format!("{b:?} is shaped like an IP address")));
    }
    Ok(())
}

/// `NAME@PROJECT.iam.gserviceaccount.com`: a user-managed service account (6-30
/// characters of `[a-z0-9-]`, starting with a letter), the only kind a customer can
/// grant us token-creator on and name after our rule.
pub(crate) fn validate_service_account(email: &str) -> Result<(), StorageError> {
    let bad = || {
        StorageError::invalid(
            "access.service_account",
            format!("{email:?} is not NAME@PROJECT.iam.gserviceaccount.com"),
        )
    };
    let (name, domain) = email.split_once('@').ok_or_else(bad)?;
    let project = domain.strip_suffix(".iam.gserviceaccount.com").ok_or_else(bad)?;
    let name_ok = (6..=30).contains(&name.len())
        && name.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.bytes().last().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    let project_ok = (4..=100).contains(&project.len())
        && project.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
        && project.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    if name_ok && project_ok { Ok(()) } else { Err(bad()) }
}

/// The token an `iam_delegated` account's name must contain for `org_id`, by the
/// operator's rule: `{org}` is the org id (lower-cased, other characters than letters
/// and digits as `-`), `{org_hash}` the first 10 hex digits of its SHA-256 (fits the
/// 30-character account names when org ids are UUIDs). `None` when the rule names
/// neither, which binds nothing.
pub fn org_token(rule: &str, org_id: &str) -> Option<String> {
    if !rule.contains("{org}") && !rule.contains("{org_hash}") {
        return None;
    }
    let org: String = org_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    let hash = sign::hex(digest(&SHA256, org_id.as_bytes()).as_ref());
    Some(rule.replace("{org_hash}", &hash[..10]).replace("{org}", &org))
}

/// The confused-deputy guard of `iam_delegated`: our platform account can sign as every
/// account that granted it token-creator, so a job of one organisation must not name
/// another's. Accounts are named after their organisation (the operator's rule,
/// [`GcsSettings::service_account_org_token`]); one that does not carry this
/// organisation's token is refused, and so is every account when no rule is set.
pub(crate) fn check_org_binding(
    service_account: &str,
    org_id: &str,
    settings: &GcsSettings,
) -> Result<(), StorageError> {
    let rule = settings.service_account_org_token.as_deref().ok_or_else(|| {
        StorageError::invalid(
            "access.service_account",
            "iam_delegated GCS access needs the operator's GCS_SERVICE_ACCOUNT_ORG_TOKEN rule, which binds \
             service accounts to organisations; none is set",
        )
    })?;
    let token = org_token(rule, org_id).ok_or_else(|| {
        StorageError::invalid(
            "access.service_account",
            "the operator's GCS_SERVICE_ACCOUNT_ORG_TOKEN names neither {org} nor {org_hash}, so it binds nothing",
        )
    })?;
    let name = service_account.split('@').next().unwrap_or_default();
    if token.is_empty() || !name.contains(&token) {
        return Err(StorageError::invalid(
            "access.service_account",
            format!(
                "the service account's name must contain {token:?}, the token of organisation {org_id:?} \
                 (rule {rule:?}): it binds the account to one organisation"
            ),
        ));
    }
    Ok(())
}

/// The endpoint host a job named, for the egress check (`None`: Google's own).
pub(crate) fn job_endpoint(g: &GcsIntegration) -> Option<&str> {
    g.endpoint.as_deref().filter(|e| !is_google(e))
}

fn is_google(endpoint: &str) -> bool {
    Url::parse(endpoint).is_ok_and(|u| {
        u.scheme() == "https"
            && u.port().is_none()
            && u.host() == Some(Host::Domain("storage.googleapis.com"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integ(endpoint: Option<&str>) -> GcsIntegration {
        GcsIntegration {
            id: "int-5".into(),
            org_id: "org-1".into(),
            endpoint: endpoint.map(str::to_owned),
            buckets: vec!["cust-bucket".into(), "my.dotted_b".into()],
            access: GcsAccess::IamDelegated {
                service_account: "mw-org-1-read@cust-proj.iam.gserviceaccount.com".into(),
            },
        }
    }

    fn ok(url: &str) -> (String, String) {
        let loc = locate_gcs(&integ(None), url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (loc.bucket, loc.key)
    }

    fn refused(endpoint: Option<&str>, url: &str) {
        match locate_gcs(&integ(endpoint), url) {
            Err(e) => assert_eq!(e.code().as_str(), "url_not_in_storage", "{url}: {e}"),
            Ok(loc) => panic!("{url} was accepted as {loc:?}"),
        }
    }

    fn pair(b: &str, k: &str) -> (String, String) {
        (b.into(), k.into())
    }

    #[test]
    fn the_three_url_forms() {
        let k = pair("cust-bucket", "img/cat.jpg");
        for url in [
            "gs://cust-bucket/img/cat.jpg",
            "https://storage.googleapis.com/cust-bucket/img/cat.jpg",
            "https://cust-bucket.storage.googleapis.com/img/cat.jpg",
            "https://STORAGE.googleapis.com/cust-bucket/img/cat.jpg",
            "https://storage.googleapis.com/cust-bucket/img/cat.jpg?generation=3#x",
        ] {
            assert_eq!(ok(url), k, "{url}");
        }
        assert_eq!(ok("https://my.dotted_b.storage.googleapis.com/a"), pair("my.dotted_b", "a"));
    }

    #[test]
    fn awkward_names_are_decoded_once() {
        let name = "a b%#+&=,()!$':;@~é猫/x";
        let encoded = sign::encode_path_for_tests(name);
        assert_eq!(ok(&format!("https://storage.googleapis.com/cust-bucket/{encoded}")).1, name);
        assert_eq!(ok(&format!("https://cust-bucket.storage.googleapis.com/{encoded}")).1, name);
        // `+` is a plus on GCS, `%2B` too; `%252B` is a literal `%2B`.
        assert_eq!(ok("https://storage.googleapis.com/cust-bucket/a+b%2Bc%252B").1, "a+b+c%2B");
        assert_eq!(ok("https://storage.googleapis.com/cust-bucket/猫 x").1, "猫 x");
        // gs:// names are verbatim, as gsutil takes them.
        assert_eq!(ok("gs://cust-bucket/a b+c%20d 猫#?").1, "a b+c%20d 猫#?");
        refused(None, "https://storage.googleapis.com/cust-bucket/%FF");
    }

    #[test]
    fn other_hosts_buckets_and_dot_segments_are_refused() {
        for url in [
            "gs://other/k",
            "gs://cust-bucket",
            "gs://cust-bucket/",
            "s3://cust-bucket/k",
            "http://storage.googleapis.com/cust-bucket/k",
            "https://storage.googleapis.com:8443/cust-bucket/k",
            "https://storage.googleapis.com/other/k",
            "https://other.storage.googleapis.com/k",
            "https://storage.googleapis.com.evil.com/cust-bucket/k",
            "https://cust-bucket.storage.googleapis.com.evil.com/k",
            "https://storage.cloud.google.com/cust-bucket/k",
            "https://user:pw@storage.googleapis.com/cust-bucket/k",
            "https://cust-bucket.s3.amazonaws.com/k",
            "http://169.254.169.254/computeMetadata/v1/",
            "http://metadata.google.internal/cust-bucket/k",
            "gs://cust-bucket/../other/k",
            "gs://cust-bucket/..%2fother/k",
            "gs://cust-bucket/a/./k",
            "https://storage.googleapis.com/cust-bucket/..%2fother/k",
            "https://storage.googleapis.com/cust-bucket/%2e%2e%2fother",
            "https://storage.googleapis.com/cust-bucket/x/%252e%252e/y",
            "not a url",
        ] {
            refused(None, url);
        }
        // An emulator endpoint takes its own host, and no longer Google's.
        let ep = Some("http://127.0.0.1:9023");
        assert_eq!(locate_gcs(&integ(ep), "http://127.0.0.1:9023/cust-bucket/k").unwrap().key, "k");
        refused(ep, "https://storage.googleapis.com/cust-bucket/k");
        refused(ep, "http://127.0.0.1:9024/cust-bucket/k");
    }

    #[test]
    fn integrations_are_checked() {
        validate_gcs(&integ(None)).unwrap();
        let field = |g: GcsIntegration| match validate_gcs(&g) {
            Err(StorageError::InvalidIntegration { field, .. }) => field,
            Err(e) => panic!("{e}"),
            Ok(()) => "ok",
        };
        let with = |f: &dyn Fn(&mut GcsIntegration)| {
            let mut g = integ(None);
            f(&mut g);
            g
        };
        assert_eq!(field(with(&|g| g.endpoint = Some("http://127.0.0.1:9023/base".into()))), "endpoint");
        assert_eq!(field(with(&|g| g.endpoint = Some("http://u:p@127.0.0.1:9023".into()))), "endpoint");
        assert_eq!(field(with(&|g| g.buckets = vec![])), "buckets");
        for b in ["ab", "Upper", "-x-", "goog-x", "192.168.1.1", "a..b"] {
            assert_eq!(field(with(&|g| g.buckets = vec![b.into()])), "buckets", "{b}");
        }
        for sa in [
            "someone@gmail.com",
            "mw-org-1@cust-proj.iam.gserviceaccount.com.evil.com",
            "MW-ORG-1@cust-proj.iam.gserviceaccount.com",
            "short@cust-proj.iam.gserviceaccount.com",
            "mw-org-1/../x@cust-proj.iam.gserviceaccount.com",
            "mw-org-1@cust-proj.iam.gserviceaccount.com/x",
        ] {
            let g = with(&|g| g.access = GcsAccess::IamDelegated { service_account: sa.into() });
            assert_eq!(field(g), "access.service_account", "{sa}");
        }
        let key = |email: &str, r: &str| GcsAccess::ServiceAccountKey {
            client_email: email.into(),
            secret_ref: r.into(),
        };
        assert_eq!(field(with(&|g| g.access = key("r@p.iam.gserviceaccount.com", "file:sa.json"))), "ok");
        assert_eq!(field(with(&|g| g.access = key("not-an-email", "file:sa.json"))), "access.client_email");
        let err =
            validate_gcs(&with(&|g| g.access = key("r@p.iam.gserviceaccount.com", "file:../x"))).unwrap_err();
        assert_eq!(err.code().as_str(), "secret_ref_not_allowed");
        let hmac = |id: &str| GcsAccess::Hmac { access_id: id.into(), secret_ref: "env:GCS_HMAC".into() };
        assert_eq!(field(with(&|g| g.access = hmac("GOOG1EXAMPLEACCESSID0123"))), "ok");
        assert_eq!(field(with(&|g| g.access = hmac("GOOG1 x"))), "access.access_id");
    }

    #[tokio::test]
    async fn hmac_is_sigv4_for_region_auto_on_the_xml_api_path_style() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::StorageConfig { temp_dir: dir.path().join("work"), ..Default::default() };
        let base =
            aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let storage = crate::Storage::with_aws_config(cfg, base).unwrap();
        let mut g = integ(None);
        g.access =
            GcsAccess::Hmac { access_id: "GOOG1EXAMPLEACCESSID0123".into(), secret_ref: "env:K".into() };
        let s3 = GcsSource { inner: &storage.inner, integration: &g }.hmac_as_s3().unwrap();
        assert_eq!(s3.endpoint.as_deref(), Some(DEFAULT_ENDPOINT));
        assert_eq!((s3.region.as_deref(), s3.path_style), (Some("auto"), Some(true)));
        assert!(
            matches!(&s3.access, Access::IamUser { access_key_id, .. } if access_key_id == "GOOG1EXAMPLEACCESSID0123")
        );
        let creds = crate::SessionCredentials {
            access_key_id: crate::Secret::new("GOOG1EXAMPLEACCESSID0123"),
            secret_access_key: crate::Secret::new("x"),
            session_token: None,
            expires_at: None,
        };
        let target = S3Source { inner: &storage.inner, integration: &s3, aws: false }.target().unwrap();
        let url = target
            .presign_get(&creds, "b", "a b.jpg", &[], SystemTime::now(), std::time::Duration::from_secs(60))
            .unwrap();
        assert!(
            url.starts_with("https://storage.googleapis.com/b/a%20b.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256")
        );
        assert!(url.contains("%2Fauto%2Fs3%2Faws4_request&"), "signed for region auto: {url}");
        // No checksum parameter or header is part of a presigned GET: GCS refuses them.
        assert!(!url.to_ascii_lowercase().contains("checksum"), "{url}");
    }

    #[test]
    fn delegated_accounts_must_carry_their_orgs_token() {
        let rule =
            |r: &str| GcsSettings { service_account_org_token: Some(r.into()), ..GcsSettings::default() };
        let sa = "mw-org-1-read@cust-proj.iam.gserviceaccount.com";
        check_org_binding(sa, "org-1", &rule("mw-{org}-")).unwrap();
        let code = |r: Result<(), StorageError>| r.unwrap_err().code().as_str();
        // Another organisation's account, no rule, a rule that names no org.
        assert_eq!(code(check_org_binding(sa, "org-2", &rule("mw-{org}-"))), "invalid_integration");
        assert_eq!(code(check_org_binding(sa, "org-1", &GcsSettings::default())), "invalid_integration");
        assert_eq!(code(check_org_binding(sa, "org-1", &rule("mw-"))), "invalid_integration");
        // The token must be in the name, not the project.
        let in_project = "reader-acct@mw-org-1-proj.iam.gserviceaccount.com";
        assert_eq!(code(check_org_binding(in_project, "org-1", &rule("mw-{org}-"))), "invalid_integration");
        // UUID org ids do not fit a 30-character name; their hash does.
        let uuid = "3f2a9c1e-7b4d-4e8a-9f00-1234567890ab";
        let token = org_token("mw-{org_hash}", uuid).unwrap();
        assert_eq!(token.len(), "mw-".len() + 10);
        let named = format!("{token}-rd@cust-proj.iam.gserviceaccount.com");
        validate_service_account(&named).unwrap();
        check_org_binding(&named, uuid, &rule("mw-{org_hash}")).unwrap();
        assert_eq!(code(check_org_binding(&named, "org-1", &rule("mw-{org_hash}"))), "invalid_integration");
        let msg = check_org_binding(sa, "org-2", &rule("mw-{org}-")).unwrap_err().to_string();
        assert!(msg.contains("\"mw-org-2-\""), "the refusal names the token to use: {msg}");
    }
}
