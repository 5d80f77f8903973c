//! Azure shared access signatures, by hand: a service SAS signed with the account key
//! and a user delegation SAS signed with a user delegation key, both read-only for one
//! blob (`sp=r`, `sr=b`), plus the checks a customer-made SAS token must pass.
//!
//! Hand-written because the string-to-sign is small and fully specified, and the crates
//! around it get it wrong or pull a second HTTP stack (see the research notes in the
//! README): object_store signs the percent-encoded blob name where Azure signs the
//! decoded one, so names with a space, `%`, `#` or non-ASCII fail. Here the canonical
//! resource is always `/blob/{account}/{container}/{decoded name}` and the URL path is
//! encoded from the same decoded name, so the two cannot disagree.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

use crate::error::StorageError;
use crate::secret::Secret;

/// The service version the SAS is signed for (`sv`). 2022-11-02 is the newest layout
/// before user-bound delegation fields (2025-07-05) changed the user delegation
/// string-to-sign; every Azure region and Azurite accept it, and it fixes the version
/// the blob is served with, so no `x-ms-version` header is needed on a download.
pub(crate) const SAS_VERSION: &str = "2022-11-02";

/// Everything but RFC 3986's unreserved characters is escaped: what Azure decodes back
/// to the same name whatever it is (`+` stays a plus, `%` a percent).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A blob's path below the account: each `/`-separated segment of the container and
/// the (decoded) blob name percent-encoded on its own, the slashes kept.
pub(crate) fn encode_path(container: &str, blob: &str) -> String {
    let mut out = utf8_percent_encode(container, COMPONENT).to_string();
    for segment in blob.split('/') {
        out.push('/');
        out.extend(utf8_percent_encode(segment, COMPONENT));
    }
    out
}

/// A query value, escaped the same way.
pub(crate) fn encode_query(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// `2026-12-01T16:00:00Z`: the form SAS times take (no fractional seconds).
pub(crate) fn sas_time(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A SAS time as Azure writes it: RFC 3339, or a bare date (`2026-12-01`, midnight UTC).
pub(crate) fn parse_sas_time(s: &str) -> Option<SystemTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).into());
    }
    let date = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().into())
}

fn hmac_base64(key: &[u8], string_to_sign: &str) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// A base64 key (account key, user delegation key value) as bytes; never quoted.
pub(crate) fn decode_key(key: &Secret, what: &'static str) -> Result<Vec<u8>, StorageError> {
    match BASE64.decode(key.expose().trim()) {
        Ok(k) if !k.is_empty() => Ok(k),
        _ => Err(StorageError::invalid("access.secret_ref", format!("the {what} is not base64"))),
    }
}

/// What one SAS says, whichever key signs it: read one blob (`sr=b`, `sp=r`), which is
/// all the pipeline ever signs, or list one container (`sr=c`, `sp=l`) for
/// `validate-storage`.
pub(crate) struct BlobSas<'a> {
    pub(crate) account: &'a str,
    pub(crate) container: &'a str,
    /// Decoded, as the canonical resource wants it; empty for a container SAS.
    pub(crate) blob: &'a str,
    /// `r` or `l`.
    pub(crate) permissions: &'static str,
    /// `b` or `c`.
    pub(crate) resource: &'static str,
    pub(crate) expiry: SystemTime,
    /// `https`, or `https,http` for an endpoint the operator admitted over plain HTTP.
    pub(crate) protocol: &'static str,
}

impl<'a> BlobSas<'a> {
    fn canonical_resource(&self) -> String {
        if self.resource == "c" {
            format!("/blob/{}/{}", self.account, self.container)
        } else {
            format!("/blob/{}/{}/{}", self.account, self.container, self.blob)
        }
    }

    /// Read one blob, as the pipeline signs.
    pub(crate) fn read_blob(
        account: &'a str,
        container: &'a str,
        blob: &'a str,
        expiry: SystemTime,
        protocol: &'static str,
    ) -> Self {
        BlobSas { account, container, blob, permissions: "r", resource: "b", expiry, protocol }
    }

    /// List one container (`validate-storage` finds a blob to read with it).
    pub(crate) fn list_container(
        account: &'a str,
        container: &'a str,
        expiry: SystemTime,
        protocol: &'static str,
    ) -> Self {
        BlobSas { account, container, blob: "", permissions: "l", resource: "c", expiry, protocol }
    }

    /// The service SAS string-to-sign (sv ≥ 2020-12-06): sp, st, se, resource, si, sip,
    /// spr, sv, sr, snapshot time, ses, rscc, rscd, rsce, rscl, rsct.
    pub(crate) fn service_string_to_sign(&self) -> String {
        let se = sas_time(self.expiry);
        [
            self.permissions,
            "",
            se.as_str(),
            self.canonical_resource().as_str(),
            "",
            "",
            self.protocol,
            SAS_VERSION,
            self.resource,
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n")
    }

    /// A service SAS query signed with the account key. No `st`: a start time only
    /// adds clock-skew failures.
    pub(crate) fn service_query(&self, account_key: &[u8]) -> String {
        let sig = hmac_base64(account_key, &self.service_string_to_sign());
        format!(
            "sv={SAS_VERSION}&se={}&sr={}&sp={}&spr={}&sig={}",
            encode_query(&sas_time(self.expiry)),
            self.resource,
            self.permissions,
            encode_query(self.protocol),
            encode_query(&sig)
        )
    }

    /// The user delegation SAS string-to-sign (2020-12-06 ≤ sv < 2025-07-05): sp, st,
    /// se, resource, skoid, sktid, skt, ske, sks, skv, saoid, suoid, scid, sip, spr, sv,
    /// sr, snapshot time, ses, rscc, rscd, rsce, rscl, rsct.
    pub(crate) fn user_delegation_string_to_sign(&self, key: &UserDelegationKey) -> String {
        let se = sas_time(self.expiry);
        [
            self.permissions,
            "",
            se.as_str(),
            self.canonical_resource().as_str(),
            key.oid.as_str(),
            key.tid.as_str(),
            key.start.as_str(),
            key.expiry.as_str(),
            key.service.as_str(),
            key.version.as_str(),
            "",
            "",
            "",
            "",
            self.protocol,
            SAS_VERSION,
            self.resource,
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n")
    }

    pub(crate) fn user_delegation_query(&self, key: &UserDelegationKey) -> Result<String, StorageError> {
        let value = decode_key(&key.value, "user delegation key")?;
        let sig = hmac_base64(&value, &self.user_delegation_string_to_sign(key));
        Ok(format!(
            "sv={SAS_VERSION}&se={}&sr={}&sp={}&spr={}&skoid={}&sktid={}&skt={}&ske={}&sks={}&skv={}&sig={}",
            encode_query(&sas_time(self.expiry)),
            self.resource,
            self.permissions,
            encode_query(self.protocol),
            encode_query(&key.oid),
            encode_query(&key.tid),
            encode_query(&key.start),
            encode_query(&key.expiry),
            encode_query(&key.service),
            encode_query(&key.version),
            encode_query(&sig)
        ))
    }
}

/// A user delegation key as Get User Delegation Key returns it. The times and ids are
/// signed verbatim, so they are kept as the service wrote them.
#[derive(Clone)]
pub(crate) struct UserDelegationKey {
    pub(crate) oid: String,
    pub(crate) tid: String,
    pub(crate) start: String,
    pub(crate) expiry: String,
    pub(crate) service: String,
    pub(crate) version: String,
    pub(crate) value: Secret,
    /// `expiry`, parsed.
    pub(crate) expires_at: SystemTime,
}

impl std::fmt::Debug for UserDelegationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDelegationKey")
            .field("oid", &self.oid)
            .field("tid", &self.tid)
            .field("expiry", &self.expiry)
            .field("value", &self.value)
            .finish()
    }
}

/// A customer SAS token beyond this lifetime is used, with a warning: a leaked token
/// reads the customer's data until it expires.
pub(crate) const LONG_SAS_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// A customer-made SAS token that passed [`check_sas_token`].
pub(crate) struct SasToken {
    /// The query string, without a leading `?`.
    pub(crate) query: Secret,
    pub(crate) expires_at: Option<SystemTime>,
    /// Expires later than [`LONG_SAS_LIFETIME`] from now.
    pub(crate) long_lived: bool,
}

/// Checks a customer SAS token before it is used: a query string that carries a
/// signature, grants read (`sp` has `r`) and has not expired (`se`). A token that
/// expires through a stored access policy (`si`, no `se`) cannot be checked here; Azure
/// checks it. Messages name the fields, never the token.
pub(crate) fn check_sas_token(raw: &Secret, now: SystemTime) -> Result<SasToken, StorageError> {
    let text = raw.expose().trim();
    let text = text.strip_prefix('?').unwrap_or(text);
    let well_formed = !text.is_empty()
        && text.len() <= 4096
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"%&=._~:+/-,".contains(&b));
    if !well_formed {
        return Err(StorageError::invalid(
            "access.secret_ref",
            "the SAS token is not a query string (sv=…&sp=…&sig=…)",
        ));
    }
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(text.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if get("sig").is_none_or(str::is_empty) {
        return Err(StorageError::invalid("access.secret_ref", "the SAS token has no signature (sig)"));
    }
    match get("sp") {
        Some(sp) if sp.contains('r') => {}
        Some(_) => {
            return Err(StorageError::invalid(
                "access.secret_ref",
                "the SAS token does not grant read permission (its sp has no r)",
            ));
        }
        None if get("si").is_some() => {}
        None => {
            return Err(StorageError::invalid(
                "access.secret_ref",
                "the SAS token names no permissions (sp) and no stored access policy (si)",
            ));
        }
    }
    let expires_at = match get("se") {
        Some(se) => Some(parse_sas_time(se).ok_or_else(|| {
            StorageError::invalid("access.secret_ref", "the SAS token's expiry (se) is not a date")
        })?),
        None if get("si").is_some() => None,
        None => {
            return Err(StorageError::invalid("access.secret_ref", "the SAS token has no expiry (se)"));
        }
    };
    if let Some(at) = expires_at
        && at <= now
    {
        return Err(StorageError::Credentials {
            what: format!(
                "the SAS token expired at {} (se); the customer must issue a new one",
                sas_time(at)
            ),
            source: None,
        });
    }
    let long_lived = expires_at.is_some_and(|at| at > now + LONG_SAS_LIFETIME);
    Ok(SasToken { query: Secret::new(text), expires_at, long_lived })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Azurite's well-known development key (public, in Microsoft's docs).
    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn paths_are_encoded_segment_by_segment() {
        assert_eq!(encode_path("assets", "img/cat.jpg"), "assets/img/cat.jpg");
        assert_eq!(
            encode_path("c", "my photos/été 猫+1.jpg"),
            "c/my%20photos/%C3%A9t%C3%A9%20%E7%8C%AB%2B1.jpg"
        );
        assert_eq!(
            encode_path("c", "%#+&=,()!$':;@~ ?"),
            "c/%25%23%2B%26%3D%2C%28%29%21%24%27%3A%3B%40~%20%3F"
        );
        assert_eq!(encode_path("c", "a//b/"), "c/a//b/");
    }

    #[test]
    fn sas_times_round_trip() {
        assert_eq!(sas_time(at(1_764_604_800)), "2025-12-01T16:00:00Z");
        assert_eq!(parse_sas_time("2025-12-01T16:00:00Z"), Some(at(1_764_604_800)));
        assert_eq!(parse_sas_time("2025-12-01"), Some(at(1_764_547_200)));
        assert_eq!(parse_sas_time("tomorrow"), None);
    }

    /// The string-to-sign layouts against azure-storage-blob 12.x's, field by field
    /// (its `_shared_access_signature.py` writes the same lines), and a signature that
    /// must stay stable: a change in either is a change in what Azure sees.
    #[test]
    fn service_sas_layout_and_signature() {
        let sas = BlobSas::read_blob(
            "devstoreaccount1",
            "assets",
            "my photos/été 猫+1.jpg",
            at(1_764_604_800),
            "https",
        );
        assert_eq!(
            sas.service_string_to_sign(),
            "r\n\n2025-12-01T16:00:00Z\n/blob/devstoreaccount1/assets/my photos/été 猫+1.jpg\n\n\nhttps\n\
             2022-11-02\nb\n\n\n\n\n\n\n"
        );
        let key = decode_key(&Secret::new(DEV_KEY), "account key").unwrap();
        let q = sas.service_query(&key);
        assert!(q.starts_with("sv=2022-11-02&se=2025-12-01T16%3A00%3A00Z&sr=b&sp=r&spr=https&sig="), "{q}");
        let sig = q.rsplit("sig=").next().unwrap();
        // Deterministic for a fixed key, name and expiry.
        assert_eq!(sig, encode_query(&hmac_base64(&key, &sas.service_string_to_sign())));
        assert_eq!(sas.service_query(&key), q);

        let list = BlobSas::list_container("devstoreaccount1", "assets", at(1_764_604_800), "https");
        assert!(
            list.service_string_to_sign()
                .starts_with("l\n\n2025-12-01T16:00:00Z\n/blob/devstoreaccount1/assets\n")
        );
        assert!(list.service_query(&key).contains("&sr=c&sp=l&"));
    }

    #[test]
    fn user_delegation_sas_layout() {
        let key = UserDelegationKey {
            oid: "oid-1".into(),
            tid: "tid-1".into(),
            start: "2025-12-01T15:00:00Z".into(),
            expiry: "2025-12-01T17:00:00Z".into(),
            service: "b".into(),
            version: "2022-11-02".into(),
            value: Secret::new(DEV_KEY),
            expires_at: at(1_764_608_400),
        };
        let sas = BlobSas::read_blob("acct", "c", "a b", at(1_764_604_800), "https,http");
        assert_eq!(
            sas.user_delegation_string_to_sign(&key),
            "r\n\n2025-12-01T16:00:00Z\n/blob/acct/c/a b\noid-1\ntid-1\n2025-12-01T15:00:00Z\n\
             2025-12-01T17:00:00Z\nb\n2022-11-02\n\n\n\n\nhttps,http\n2022-11-02\nb\n\n\n\n\n\n\n"
        );
        let q = sas.user_delegation_query(&key).unwrap();
        assert!(q.contains("&spr=https%2Chttp&skoid=oid-1&sktid=tid-1&skt=2025-12-01T15%3A00%3A00Z&"), "{q}");
        assert!(!format!("{key:?}").contains(DEV_KEY));
    }

    #[test]
    fn customer_sas_tokens_must_read_and_be_current() {
        let now = at(1_764_604_800);
        let ok = check_sas_token(
            &Secret::new(
                "?sv=2022-11-02&ss=b&srt=o&sp=rl&se=2025-12-02T00:00:00Z&spr=https&sig=abc%2Bdef%3D",
            ),
            now,
        )
        .unwrap();
        assert!(!ok.long_lived);
        assert_eq!(ok.expires_at, Some(at(1_764_633_600)));
        assert!(!ok.query.expose().starts_with('?'));
        let long = check_sas_token(&Secret::new("sp=r&se=2027-01-01&sig=x"), now).unwrap();
        assert!(long.long_lived);

        let code =
            |t: &str| check_sas_token(&Secret::new(t), now).err().map(|e| (e.code().as_str(), e.to_string()));
        let (c, m) = code("sp=wl&se=2026-01-01&sig=sekrit").unwrap();
        assert_eq!(c, "invalid_integration");
        assert!(m.contains("read") && !m.contains("sekrit"), "{m}");
        let (c, m) = code("sp=r&se=2025-11-30T00:00:00Z&sig=sekrit").unwrap();
        assert_eq!(c, "credentials");
        assert!(m.contains("expired") && !m.contains("sekrit"), "{m}");
        for bad in
            ["", "sp=r&se=2026-01-01", "sp=r&sig=x", "sp=r&se=soon&sig=x", "sp=r&se=2026-01-01&sig=x#y"]
        {
            assert_eq!(code(bad).unwrap().0, "invalid_integration", "{bad}");
        }
        // A stored access policy carries the permissions and expiry: Azure checks those.
        check_sas_token(&Secret::new("si=readers&sr=c&sig=x"), now).unwrap();
    }
}
