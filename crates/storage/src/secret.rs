//! Values that authenticate: secret keys, session tokens, signed URLs. They print as
//! `REDACTED` whichever way they are formatted, so a `?field` in a log line or a `{:?}`
//! in an error cannot leak them; reading the value takes an explicit `expose()`.

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
}
