//! Values that authenticate: secret keys, session tokens, signed URLs. They print as
//! `REDACTED` whichever way they are formatted, so a `?field` in a log line or a `{:?}`
//! in an error cannot leak them; reading the value takes an explicit `expose()`.

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

/// A string that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it (a signer, an HTTP request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("REDACTED")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("REDACTED")
    }
}

/// A presigned URL: whoever holds it can read the object until it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedUrl {
    url: Secret,
    expires_at: Option<SystemTime>,
}

impl SignedUrl {
    /// Wraps a URL someone signed (a presigner, or a test that builds one by hand).
    pub fn new(url: impl Into<String>, expires_at: Option<SystemTime>) -> Self {
        SignedUrl { url: Secret::new(url), expires_at }
    }

    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignedUrl(REDACTED)")
    }
}

impl fmt::Display for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("REDACTED")
    }
}

/// The prefix of the variables `secret_ref: env:NAME` may resolve to.
pub const ORG_SECRET_PREFIX: &str = "ORG_SECRET_";

/// The organisations' secrets held in the environment: the `ORG_SECRET_*` variables, read
/// once at start. `secret_ref: env:…` resolves in this map and nowhere else, so the
/// worker's own variables (`AWS_SECRET_ACCESS_KEY`, `DATABASE_URL`…) are out of a job's
/// reach by construction, not only by the naming rule.
#[derive(Clone, Default)]
pub struct OrgSecrets(HashMap<String, Secret>);

impl OrgSecrets {
    /// The `ORG_SECRET_*` variables of this process (others are not even looked at;
    /// non-UTF-8 values are skipped).
    pub fn from_env() -> Self {
        OrgSecrets::from_pairs(
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// The `ORG_SECRET_*` pairs among `pairs` (tools, tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        OrgSecrets(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(k, _)| k.starts_with(ORG_SECRET_PREFIX))
                .map(|(k, v)| (k, Secret::new(v)))
                .collect(),
        )
    }

    pub(crate) fn get(&self, var: &str) -> Option<&Secret> {
        self.0.get(var)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for OrgSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgSecrets({} REDACTED)", self.0.len())
    }
}

/// A key pair, with a session token when it comes from STS.
#[derive(Clone)]
pub struct SessionCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token.as_ref().map(|_| "REDACTED"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_is_redacted() {
        let url = SignedUrl::new("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123", None);
        let creds = SessionCredentials {
            access_key_id: Secret::new("ASIAEXAMPLEEXAMPLE00"),
            secret_access_key: Secret::new("topsecretkey"),
            session_token: Some(Secret::new("tokentoken")),
            expires_at: None,
        };
        let printed =
            format!("{url} {url:?} {creds:?} {} {:?}", creds.secret_access_key, creds.session_token);
        for secret in ["abc123", "X-Amz", "ASIAEXAMPLE", "topsecretkey", "tokentoken"] {
            assert!(!printed.contains(secret), "{secret} leaked in {printed}");
        }
        assert!(printed.contains("REDACTED"));
        assert_eq!(url.expose(), "https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123");
    }

    #[test]
    fn org_secrets_keep_only_org_secret_variables_and_never_print_them() {
        let s = OrgSecrets::from_pairs([
            ("ORG_SECRET_ACME__KEY", "s3cr3t-value"),
            ("AWS_SECRET_ACCESS_KEY", "worker-own-key"),
            ("DATABASE_URL", "postgres://u:pw@db/x"),
        ]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.get("ORG_SECRET_ACME__KEY").map(Secret::expose), Some("s3cr3t-value"));
        assert!(s.get("AWS_SECRET_ACCESS_KEY").is_none() && s.get("DATABASE_URL").is_none());
        assert_eq!(format!("{s:?}"), "OrgSecrets(1 REDACTED)");
        // The process's own environment: only the prefix is taken.
        assert!(OrgSecrets::from_env().0.keys().all(|k| k.starts_with(ORG_SECRET_PREFIX)));
    }
}
