//! The storage integration object, exactly as import jobs carry it. Pure data: the
//! storage crate validates it and turns it into credentials; secrets appear here only by
//! reference (`secret_ref`), never by value.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where an organisation's assets live and how the worker may reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum Integration {
    /// AWS S3.
    Aws(S3Integration),
    /// MinIO and other S3-speaking services, at `endpoint`.
    S3Compatible(S3Integration),
    /// A directory on the worker's machine: local replay and development only.
    Local(LocalIntegration),
    /// Google Cloud Storage (V4 signed URLs, or the S3-interoperable XML API with HMAC keys).
    Gcs(GcsIntegration),
    /// Azure Blob Storage: one storage account, read through short-lived SAS URLs.
    Azure(AzureIntegration),
}

impl Integration {
    /// The organisation the integration belongs to, when it names one.
    pub fn org_id(&self) -> Option<&str> {
        match self {
            Integration::Aws(s) | Integration::S3Compatible(s) => Some(&s.org_id),
            Integration::Local(l) => l.org_id.as_deref(),
            Integration::Gcs(g) => Some(&g.org_id),
            Integration::Azure(a) => Some(&a.org_id),
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Integration::Aws(s) | Integration::S3Compatible(s) => Some(&s.id),
            Integration::Local(l) => l.id.as_deref(),
            Integration::Gcs(g) => Some(&g.id),
            Integration::Azure(a) => Some(&a.id),
        }
    }

    pub fn provider(&self) -> &'static str {
        match self {
            Integration::Aws(_) => "aws",
            Integration::S3Compatible(_) => "s3_compatible",
            Integration::Local(_) => "local",
            Integration::Gcs(_) => "gcs",
            Integration::Azure(_) => "azure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Integration {
    pub id: String,
    pub org_id: String,
    /// Required for `aws`; S3-compatible services often ignore it (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Base URL of an S3-compatible service, e.g. `https://minio.example.com:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    pub buckets: Vec<String>,
    pub access: Access,
}

/// How the worker authenticates to the customer's storage.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Access {
    /// STS AssumeRole into the customer's role. `external_id` is mandatory; it defaults
    /// to empty here only so that its absence is refused by validation with a clear
    /// message rather than a parse error.
    IamDelegated {
        role_arn: String,
        #[serde(default)]
        external_id: String,
    },
    /// A customer IAM user's static keys; the secret is looked up at `secret_ref`
    /// (`env:NAME` or `file:PATH`).
    IamUser { access_key_id: String, secret_ref: String },
}

impl fmt::Debug for Access {
    // The ExternalId is not a secret in AWS's model, but it is what stops a confused
    // deputy, so it stays out of logs along with everything else that authenticates.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::IamDelegated { role_arn, .. } => f
                .debug_struct("IamDelegated")
                .field("role_arn", role_arn)
                .field("external_id", &"REDACTED")
                .finish(),
            Access::IamUser { access_key_id, secret_ref } => f
                .debug_struct("IamUser")
                .field("access_key_id", access_key_id)
                .field("secret_ref", secret_ref)
                .finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalIntegration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// Asset URLs `local://a/b.jpg` resolve below this directory, never outside it.
    pub root: PathBuf,
}

/// A Google Cloud Storage integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsIntegration {
    pub id: String,
    pub org_id: String,
    /// Base URL of the storage API; `None` is `https://storage.googleapis.com`. Another
    /// value (an emulator, a universe domain) passes the same egress policy as an
    /// `s3_compatible` endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub buckets: Vec<String>,
    pub access: GcsAccess,
}

/// How the worker signs URLs for a GCS integration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GcsAccess {
    /// Keyless: the worker's own platform identity calls IAM Credentials `signBlob` as
    /// `service_account`, which the customer lets it impersonate. The account's name must
    /// carry the organisation's token (the worker's `GCS_SERVICE_ACCOUNT_ORG_TOKEN` rule),
    /// as an ExternalId binds an AWS role to one organisation.
    IamDelegated { service_account: String },
    /// The customer's service-account JSON key, read at `secret_ref`; signed locally.
    ServiceAccountKey { client_email: String, secret_ref: String },
    /// An HMAC key of the XML API, used through the S3 path (SigV4, region `auto`).
    Hmac { access_id: String, secret_ref: String },
}

/// An Azure storage account and the containers of it the worker may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureIntegration {
    pub id: String,
    pub org_id: String,
    /// The storage account name: 3-24 lowercase letters and digits.
    pub account: String,
    pub containers: Vec<String>,
    /// Blob service URL; default `https://{account}.blob.core.windows.net`. Another
    /// endpoint (Azurite, a sovereign cloud) passes the egress policy like an
    /// `s3_compatible` one; path-style endpoints end in `/{account}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub access: AzureAccess,
}

/// How the worker gets read access to an Azure account. Every variant ends in a SAS
/// URL per blob; only where its signing key comes from differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AzureAccess {
    /// The platform's multi-tenant Entra application, consented to in the customer's
    /// tenant: its token fetches a user delegation key, which signs user delegation SAS.
    /// The worker holds no customer secret.
    IamDelegated { tenant_id: String },
    /// The account key (at `secret_ref`) signs service SAS.
    AccountKey { secret_ref: String },
    /// A SAS token the customer made (at `secret_ref`), appended as is.
    SasToken { secret_ref: String },
    /// The customer's own Entra application (client secret at `secret_ref`): its token
    /// fetches a user delegation key, as `iam_delegated` does.
    ServicePrincipal { tenant_id: String, client_id: String, secret_ref: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shapes() {
        let delegated: Integration = serde_json::from_value(serde_json::json!({
            "id": "int-1", "org_id": "org-1", "provider": "aws", "region": "eu-west-1",
            "buckets": ["b1"],
            "access": {"type": "iam_delegated", "role_arn": "arn:aws:iam::123456789012:role/r", "external_id": "x"}
        }))
        .unwrap();
        assert_eq!(delegated.org_id(), Some("org-1"));
        assert!(
            matches!(delegated, Integration::Aws(ref s) if matches!(s.access, Access::IamDelegated { .. }))
        );

        let user: Integration = serde_json::from_value(serde_json::json!({
            "id": "int-2", "org_id": "org-1", "provider": "s3_compatible",
            "endpoint": "http://127.0.0.1:9000", "path_style": true, "buckets": ["b"],
            "access": {"type": "iam_user", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_ref": "env:S"}
        }))
        .unwrap();
        assert_eq!(user.provider(), "s3_compatible");

        let local: Integration =
            serde_json::from_value(serde_json::json!({"provider": "local", "root": "fixtures/assets"}))
                .unwrap();
        assert_eq!(
            local,
            Integration::Local(LocalIntegration { id: None, org_id: None, root: "fixtures/assets".into() })
        );
    }

    #[test]
    fn a_secret_carried_by_value_is_refused() {
        let r: Result<Integration, _> = serde_json::from_value(serde_json::json!({
            "id": "i", "org_id": "o", "provider": "aws", "region": "us-east-1", "buckets": ["b"],
            "access": {"type": "iam_user", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_ref": "env:S",
                       "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
        }));
        assert!(r.is_err());
    }

    #[test]
    fn parses_the_gcs_shapes() {
        for access in [
            serde_json::json!({"type": "iam_delegated", "service_account": "mw-org-1@p.iam.gserviceaccount.com"}),
            serde_json::json!({"type": "service_account_key", "client_email": "r@p.iam.gserviceaccount.com",
                               "secret_ref": "file:sa.json"}),
            serde_json::json!({"type": "hmac", "access_id": "GOOG1EXAMPLE", "secret_ref": "env:GCS_HMAC"}),
        ] {
            let v = serde_json::json!({
                "id": "int-5", "org_id": "org-1", "provider": "gcs", "buckets": ["cust-bucket"], "access": access
            });
            let i: Integration = serde_json::from_value(v.clone()).unwrap();
            assert_eq!((i.provider(), i.org_id(), i.id()), ("gcs", Some("org-1"), Some("int-5")));
            assert_eq!(serde_json::to_value(&i).unwrap(), v);
        }
        // A key by value is not a field of any access type.
        let r: Result<Integration, _> = serde_json::from_value(serde_json::json!({
            "id": "i", "org_id": "o", "provider": "gcs", "buckets": ["b"],
            "access": {"type": "service_account_key", "client_email": "r@p.iam.gserviceaccount.com",
                       "secret_ref": "file:sa.json", "private_key": "-----BEGIN PRIVATE KEY-----"}
        }));
        assert!(r.is_err());
    }

    #[test]
    fn parses_the_azure_shapes() {
        for access in [
            serde_json::json!({"type": "iam_delegated", "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}),
            serde_json::json!({"type": "account_key", "secret_ref": "env:AZ_KEY"}),
            serde_json::json!({"type": "sas_token", "secret_ref": "file:az.sas"}),
            serde_json::json!({"type": "service_principal", "tenant_id": "t", "client_id": "c", "secret_ref": "env:S"}),
        ] {
            let v = serde_json::json!({
                "id": "int-6", "org_id": "org-1", "provider": "azure", "account": "custstorage",
                "containers": ["assets"], "access": access
            });
            let i: Integration = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(i.provider(), "azure");
            assert_eq!(i.org_id(), Some("org-1"));
            assert_eq!(serde_json::to_value(&i).unwrap(), v);
        }
        // A key carried by value is refused, like an AWS secret.
        let r: Result<Integration, _> = serde_json::from_value(serde_json::json!({
            "id": "i", "org_id": "o", "provider": "azure", "account": "acct", "containers": ["c"],
            "access": {"type": "account_key", "secret_ref": "env:K", "account_key": "Eby8vdM02xNO"}
        }));
        assert!(r.is_err());
    }

    #[test]
    fn debug_never_shows_the_external_id() {
        let a = Access::IamDelegated {
            role_arn: "arn:aws:iam::1:role/r".into(),
            external_id: "sekrit-ext".into(),
        };
        assert!(!format!("{a:?}").contains("sekrit-ext"));
    }
}
