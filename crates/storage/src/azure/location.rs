//! Azure asset URL → (container, blob name): the SSRF guard for Azure integrations.
//! Accepted: `https://{account}.blob.core.windows.net/{container}/{blob}` for the
//! integration's own account, and URLs on its own endpoint when it has one (Azurite's
//! path-style `http://127.0.0.1:10000/{account}/{container}/{blob}`, a custom domain).
//! Everything else is `url_not_in_storage`.
//!
//! The path is percent-decoded exactly once (`+` stays a plus: Azure paths have no
//! form encoding), and the signer re-encodes the decoded name itself
//! ([`super::sas::encode_path`]). Names with a `.` or `..` segment are refused, in the
//! URL as written too, since URL parsers resolve them before we see the path.

use asset_core::AzureIntegration;
use percent_encoding::percent_decode_str;
use url::{Host, Url};

use crate::error::StorageError;
use crate::location::{ObjectLocation, check_key_segments};

/// Azure's longest blob name.
const MAX_BLOB_NAME: usize = 1024;

/// The blob service URL of an integration, without a trailing slash.
pub(crate) fn base_url(a: &AzureIntegration) -> String {
    match &a.endpoint {
        Some(e) => e.trim_end_matches('/').to_owned(),
        None => format!("https://{}.blob.core.windows.net", a.account),
    }
}

/// Maps an asset URL to a blob of the integration, or refuses it.
pub(crate) fn locate_azure(a: &AzureIntegration, raw: &str) -> Result<ObjectLocation, StorageError> {
    let url = Url::parse(raw).map_err(|e| StorageError::not_in_storage(format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(StorageError::not_in_storage(format!("scheme {:?} is not accepted", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(StorageError::not_in_storage("URLs with user info are refused"));
    }
    // The path as written, before the parser resolved `.` and `..` in it.
    let written = raw
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .map(|p| p.split(['?', '#']).next().unwrap_or(p))
        .unwrap_or("");
    check_key_segments(written)?;

    let base = Url::parse(&base_url(a)).map_err(|e| StorageError::invalid("endpoint", e.to_string()))?;
    let host = url.host().ok_or_else(|| StorageError::not_in_storage("the URL has no host"))?;
    let same_host = match (&host, base.host()) {
        (Host::Domain(d), Some(Host::Domain(b))) => d.eq_ignore_ascii_case(b),
        (h, Some(b)) => *h == b,
        _ => false,
    };
    if !same_host
        || url.scheme() != base.scheme()
        || url.port_or_known_default() != base.port_or_known_default()
    {
        return Err(StorageError::not_in_storage(format!("host {host} is not this integration's storage")));
    }
    let prefix = base.path().trim_end_matches('/');
    let Some(path) = url.path().strip_prefix(prefix).and_then(|p| p.strip_prefix('/')) else {
        return Err(StorageError::not_in_storage("the URL is not below the integration's endpoint"));
    };
    let (container, blob) = path.split_once('/').unwrap_or((path, ""));
    let container = decode(container)?;
    let blob = decode(blob)?;
    if blob.is_empty() {
        return Err(StorageError::not_in_storage("the URL names no blob"));
    }
    if blob.chars().count() > MAX_BLOB_NAME {
        return Err(StorageError::not_in_storage("the blob name is longer than Azure's 1024 characters"));
    }
    check_key_segments(&blob)?;
    if !a.containers.contains(&container) {
        return Err(StorageError::not_in_storage(format!(
            "container {container:?} is not one of the integration's containers"
        )));
    }
    Ok(ObjectLocation { bucket: container, key: blob })
}

fn decode(raw: &str) -> Result<String, StorageError> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| StorageError::not_in_storage("the blob name is not valid UTF-8 once percent-decoded"))?;
    if decoded.chars().any(char::is_control) {
        return Err(StorageError::not_in_storage("the blob name has control characters"));
    }
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integ(endpoint: Option<&str>) -> AzureIntegration {
        let mut v = serde_json::json!({
            "id": "i", "org_id": "o", "account": "custstorage", "containers": ["assets", "raw-2"],
            "access": {"type": "account_key", "secret_ref": "env:K"}
        });
        if let Some(e) = endpoint {
            v["endpoint"] = e.into();
        }
        serde_json::from_value(v).unwrap()
    }

    fn ok(endpoint: Option<&str>, url: &str) -> (String, String) {
        let loc = locate_azure(&integ(endpoint), url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (loc.bucket, loc.key)
    }

    fn refused(endpoint: Option<&str>, url: &str) {
        match locate_azure(&integ(endpoint), url) {
            Err(e) => assert_eq!(e.code().as_str(), "url_not_in_storage", "{url}: {e}"),
            Ok(loc) => panic!("{url} was accepted as {loc:?}"),
        }
    }

    fn pair(c: &str, b: &str) -> (String, String) {
        (c.to_owned(), b.to_owned())
    }

    #[test]
    fn default_endpoint_urls() {
        let u = "https://custstorage.blob.core.windows.net";
        assert_eq!(ok(None, &format!("{u}/assets/img/cat.jpg")), pair("assets", "img/cat.jpg"));
        assert_eq!(ok(None, &format!("{u}/raw-2/x?sv=1&sig=y#f")), pair("raw-2", "x"));
        assert_eq!(ok(None, "https://CUSTSTORAGE.blob.core.windows.net/assets/a"), pair("assets", "a"));
        assert_eq!(ok(None, &format!("{u}:443/assets/a")), pair("assets", "a"));
    }

    #[test]
    fn names_are_decoded_once_and_plus_stays() {
        let u = "https://custstorage.blob.core.windows.net/assets";
        let name = |p: &str| ok(None, &format!("{u}/{p}")).1;
        assert_eq!(name("my%20cat.jpg"), "my cat.jpg");
        assert_eq!(name("my cat.jpg"), "my cat.jpg");
        assert_eq!(name("a+b.jpg"), "a+b.jpg");
        assert_eq!(name("a%2Bb.jpg"), "a+b.jpg");
        assert_eq!(name("100%25.jpg"), "100%.jpg");
        assert_eq!(name("%2525"), "%25");
        assert_eq!(name("a%23b%3Fc"), "a#b?c");
        assert_eq!(name("&=,()!$':;@~"), "&=,()!$':;@~");
        assert_eq!(name("%E7%8C%AB/%C3%A9t%C3%A9.jpg"), "猫/été.jpg");
        assert_eq!(name("猫 x.jpg"), "猫 x.jpg");
        assert_eq!(name("a%2Fb"), "a/b");
        refused(None, &format!("{u}/%FF"));
        refused(None, &format!("{u}/a%0Ab"));
        refused(None, &format!("{u}/{}", "x".repeat(1025)));
    }

    #[test]
    fn path_style_endpoint_urls() {
        let ep = Some("http://127.0.0.1:10000/custstorage");
        assert_eq!(ok(ep, "http://127.0.0.1:10000/custstorage/assets/a%20b"), pair("assets", "a b"));
        assert_eq!(
            ok(Some("http://127.0.0.1:10000/custstorage/"), "http://127.0.0.1:10000/custstorage/assets/k"),
            pair("assets", "k")
        );
        refused(ep, "http://127.0.0.1:10000/other/assets/k");
        refused(ep, "http://127.0.0.1:10001/custstorage/assets/k");
        refused(ep, "https://127.0.0.1:10000/custstorage/assets/k");
        refused(ep, "http://localhost:10000/custstorage/assets/k");
        // With an endpoint, the public host name is not this integration's storage.
        refused(ep, "https://custstorage.blob.core.windows.net/assets/k");
    }

    #[test]
    fn ssrf_guard() {
        for url in [
            "http://169.254.169.254/metadata/identity/oauth2/token",
            "https://other.blob.core.windows.net/assets/k",
            "https://custstorage.blob.core.windows.net.evil.com/assets/k",
            "https://custstorage.file.core.windows.net/assets/k",
            "http://custstorage.blob.core.windows.net/assets/k",
            "https://user:pw@custstorage.blob.core.windows.net/assets/k",
            "https://custstorage.blob.core.windows.net/other/k",
            "https://custstorage.blob.core.windows.net/assets",
            "https://custstorage.blob.core.windows.net/assets/",
            "https://custstorage.blob.core.windows.net/",
            "s3://assets/k",
            "azure-blob://assets/k",
            "file:///etc/passwd",
            "not a url",
        ] {
            refused(None, url);
        }
    }

    #[test]
    fn dot_segments_are_refused() {
        let u = "https://custstorage.blob.core.windows.net";
        for p in [
            "assets/../raw-2/k",
            "assets/./k",
            "assets/a/../../raw-2/k",
            "assets/..%2fraw-2/k",
            "assets/%2e%2e/raw-2/k",
            "assets/%2E%2E%2Fk",
            "assets/x/%252e%252e/y",
            "assets/..%5Cx",
            "assets/k/.",
            "other/../assets/k",
        ] {
            refused(None, &format!("{u}/{p}"));
        }
        assert_eq!(ok(None, &format!("{u}/assets/a..b/.x/..y/x.")).1, "a..b/.x/..y/x.");
    }
}
