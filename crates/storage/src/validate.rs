//! Syntax checks on an integration, before any network call: a malformed integration is
//! refused here with a message naming the field, so that a missing ExternalId never
//! reaches STS (moto, for one, would not refuse it).

use std::path::{Component, Path};

use asset_core::{Access, Integration, S3Integration};

use crate::error::StorageError;

/// Regions S3 is offered in; an `aws` integration must name one of them.
const AWS_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-south-1",
    "eu-south-2",
    "eu-north-1",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "mx-central-1",
    "sa-east-1",
    "us-gov-east-1",
    "us-gov-west-1",
    "cn-north-1",
    "cn-northwest-1",
];

pub(crate) fn is_known_aws_region(region: &str) -> bool {
    AWS_REGIONS.contains(&region)
}

/// Checks an integration's syntax: no network, no secret lookup.
pub fn validate_integration(i: &Integration) -> Result<(), StorageError> {
    match i {
        Integration::Aws(s) => validate_s3(s, true),
        Integration::S3Compatible(s) => validate_s3(s, false),
        Integration::Gcs(g) => crate::gcs::validate_gcs(g),
        Integration::Local(l) => {
            if l.root.as_os_str().is_empty() {
                return Err(StorageError::invalid("root", "must name a directory"));
            }
            Ok(())
        }
        Integration::Azure(a) => crate::azure::validate::validate_azure(a),
    }
}

fn validate_s3(s: &S3Integration, aws: bool) -> Result<(), StorageError> {
    if s.id.trim().is_empty() {
        return Err(StorageError::invalid("id", "must not be empty"));
    }
    if s.org_id.trim().is_empty() {
        return Err(StorageError::invalid("org_id", "must not be empty"));
    }
    match (&s.region, aws) {
        (None, true) => return Err(StorageError::invalid("region", "required for provider aws")),
        (Some(r), true) if !is_known_aws_region(r) => {
            return Err(StorageError::invalid("region", format!("{r:?} is not a known AWS region")));
        }
        (Some(r), false) if r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            return Err(StorageError::invalid("region", format!("{r:?} is not a region name")));
        }
        _ => {}
    }
    match (&s.endpoint, aws) {
        (None, false) => {
            return Err(StorageError::invalid("endpoint", "required for provider s3_compatible"));
        }
        // AWS is reached at AWS's own host names, or wherever the operator's standard
        // AWS_ENDPOINT_URL* settings point; a job moves neither.
        (Some(_), true) => {
            return Err(StorageError::EndpointNotAllowed {
                reason: "provider aws takes no endpoint from a job (only the operator's AWS_ENDPOINT_URL* \
                         settings override AWS's)"
                    .into(),
            });
        }
        (Some(e), false) => validate_endpoint(e)?,
        (None, true) => {}
    }
    if s.buckets.is_empty() {
        return Err(StorageError::invalid("buckets", "must name at least one bucket"));
    }
    for b in &s.buckets {
        validate_bucket(b)?;
    }
    match &s.access {
        Access::IamDelegated { role_arn, external_id } => {
            validate_role_arn(role_arn)?;
            validate_external_id(external_id)?;
        }
        Access::IamUser { access_key_id, secret_ref } => {
            validate_access_key_id(access_key_id, aws)?;
            parse_secret_ref(secret_ref, &s.org_id)?;
        }
    }
    Ok(())
}

pub(crate) fn validate_endpoint(e: &str) -> Result<(), StorageError> {
    let url =
        url::Url::parse(e).map_err(|err| StorageError::invalid("endpoint", format!("not a URL ({err})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(StorageError::invalid("endpoint", "scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(StorageError::invalid("endpoint", "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(StorageError::invalid("endpoint", "must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(StorageError::invalid("endpoint", "must not have a query or fragment"));
    }
    Ok(())
}

/// S3's naming rules: 3–63 characters, lowercase letters, digits, dots and hyphens,
/// starting and ending with a letter or digit, not shaped like an IP address.
pub(crate) fn validate_bucket(b: &str) -> Result<(), StorageError> {
    let bytes = b.as_bytes();
    let ok_chars =
        bytes.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-');
    let ok_ends = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if !(3..=63).contains(&b.len()) || !ok_chars || !ok_ends || b.contains("..") {
        return Err(StorageError::invalid("buckets", format!("{b:?} is not a valid bucket name")));
    }
    if b.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(StorageError::invalid("buckets", format!("{b:?} is shaped like an IP address")));
    }
    Ok(())
}

/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
fn validate_role_arn(arn: &str) -> Result<(), StorageError> {
    let bad = |why: &str| StorageError::invalid("access.role_arn", format!("{arn:?}: {why}"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Err(bad("expected arn:aws:iam::ACCOUNT:role/NAME"));
    };
    if prefix != "arn" || service != "iam" || !region.is_empty() {
        return Err(bad("expected arn:aws:iam::ACCOUNT:role/NAME"));
    }
    if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
        return Err(bad("unknown partition"));
    }
    if account.len() != 12 || !account.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad("account must be 12 digits"));
    }
    let Some(path_and_name) = resource.strip_prefix("role/") else {
        return Err(bad("resource must be role/NAME"));
    };
    let name = path_and_name.rsplit('/').next().unwrap_or_default();
    let name_ok = (1..=64).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"+=,.@_-".contains(&c));
    let path_ok = path_and_name.bytes().all(|c| (0x21..=0x7e).contains(&c)) && path_and_name.len() <= 512;
    if !name_ok || !path_ok {
        return Err(bad("role name must be 1-64 characters of [A-Za-z0-9+=,.@_-]"));
    }
    Ok(())
}

/// Mandatory: without it the platform could be made a confused deputy.
fn validate_external_id(id: &str) -> Result<(), StorageError> {
    if id.is_empty() {
        return Err(StorageError::invalid(
            "access.external_id",
            "mandatory for iam_delegated access (it stops a confused deputy)",
        ));
    }
    let chars_ok = id.bytes().all(|c| c.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&c));
    if !(2..=1224).contains(&id.len()) || !chars_ok {
        return Err(StorageError::invalid(
            "access.external_id",
            "must be 2-1224 characters of [A-Za-z0-9+=,.@:/_-]",
        ));
    }
    Ok(())
}

fn validate_access_key_id(id: &str, aws: bool) -> Result<(), StorageError> {
    if aws {
        if id.len() != 20 || !id.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
            return Err(StorageError::invalid(
                "access.access_key_id",
                format!(
                    "AWS access key ids are 20 uppercase letters and digits, got {} characters",
                    id.len()
                ),
            ));
        }
    } else if id.is_empty() || id.len() > 128 || !id.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(StorageError::invalid("access.access_key_id", "must be 1-128 printable characters"));
    }
    Ok(())
}

/// The rule of `secret_ref: env:NAME`, quoted by refusals.
pub(crate) const ENV_RULE: &str = "env:NAME reads only the variable ORG_SECRET_<ORG>__<NAME>, ORG being the \
     integration's org_id upper-cased with '-' as '_'; org_id must match ^[a-z0-9]+(-[a-z0-9]+)*$ and NAME \
     ^[A-Z0-9]+(_[A-Z0-9]+)*$";

/// The rule of `secret_ref: file:NAME`, quoted by refusals.
pub(crate) const FILE_RULE: &str = "file:NAME reads only SECRETS_DIR/<org_id>/NAME: NAME relative, without '.' \
     or '..' segments, not leaving that directory through a symlink; org_id one path component of \
     [A-Za-z0-9._-] starting with a letter or digit";

/// Where a secret lives, once the reference passed the rule binding it to its
/// organisation. The mapping from (org, NAME) to a variable is injective — the org part
/// has no `_` of its own and no `__`, NAME has no `__` — so no two organisations' names
/// meet in one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretRef<'a> {
    Env { var: String },
    File { name: &'a Path },
}

/// Checks `secret_ref` against the rule for the integration's `org_id`; no lookup.
pub(crate) fn parse_secret_ref<'a>(r: &'a str, org_id: &str) -> Result<SecretRef<'a>, StorageError> {
    if let Some(name) = r.strip_prefix("env:") {
        if !is_words(org_id, |b| b.is_ascii_lowercase() || b.is_ascii_digit(), b'-') {
            return Err(StorageError::secret_ref(format!(
                "org_id {org_id:?} cannot hold env: secrets ({ENV_RULE})"
            )));
        }
        if !is_words(name, |b| b.is_ascii_uppercase() || b.is_ascii_digit(), b'_') {
            return Err(StorageError::secret_ref(format!("{name:?} is not a NAME ({ENV_RULE})")));
        }
        let org = org_id.to_ascii_uppercase().replace('-', "_");
        Ok(SecretRef::Env { var: format!("{}{org}__{name}", crate::secret::ORG_SECRET_PREFIX) })
    } else if let Some(name) = r.strip_prefix("file:") {
        let org_ok = (1..=255).contains(&org_id.len())
            && org_id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && org_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !org_ok {
            return Err(StorageError::secret_ref(format!(
                "org_id {org_id:?} is not a safe directory name ({FILE_RULE})"
            )));
        }
        let path = Path::new(name);
        let name_ok = !name.is_empty()
            && name.len() <= 1024
            && !name.chars().any(char::is_control)
            && path.components().all(|c| matches!(c, Component::Normal(_)))
            // `Path` drops a `.` segment silently; the rule refuses it.
            && !name.split('/').any(|seg| seg == "." || seg.is_empty());
        if !name_ok {
            return Err(StorageError::secret_ref(format!("{name:?} is not a NAME ({FILE_RULE})")));
        }
        Ok(SecretRef::File { name: path })
    } else {
        Err(StorageError::secret_ref("must be env:NAME or file:NAME"))
    }
}

/// `^W+(SEP W+)*$` where W is a byte `word` accepts.
fn is_words(s: &str, word: impl Fn(u8) -> bool, sep: u8) -> bool {
    !s.is_empty()
        && s.split(|c: char| c as u32 == u32::from(sep)).all(|w| !w.is_empty() && w.bytes().all(&word))
        && s.bytes().all(|b| b == sep || word(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delegated(external_id: &str) -> Integration {
        serde_json::from_value(serde_json::json!({
            "id": "int-1", "org_id": "org-1", "provider": "aws", "region": "eu-west-1",
            "buckets": ["acme-assets"],
            "access": {"type": "iam_delegated", "role_arn": "arn:aws:iam::123456789012:role/labeling-read",
                       "external_id": external_id}
        }))
        .unwrap()
    }

    fn field_of(r: Result<(), StorageError>) -> &'static str {
        match r {
            Err(StorageError::InvalidIntegration { field, .. }) => field,
            other => panic!("expected InvalidIntegration, got {other:?}"),
        }
    }

    #[test]
    fn a_good_delegated_integration_passes() {
        validate_integration(&delegated("ext-123")).unwrap();
    }

    #[test]
    fn external_id_is_mandatory() {
        let err = validate_integration(&delegated("")).unwrap_err();
        assert_eq!(err.code().as_str(), "invalid_integration");
        assert!(err.to_string().contains("external_id"), "{err}");
        let missing: Integration = serde_json::from_value(serde_json::json!({
            "id": "int-1", "org_id": "org-1", "provider": "aws", "region": "eu-west-1", "buckets": ["acme-assets"],
            "access": {"type": "iam_delegated", "role_arn": "arn:aws:iam::123456789012:role/r"}
        }))
        .unwrap();
        assert_eq!(field_of(validate_integration(&missing)), "access.external_id");
    }

    #[test]
    fn role_arns_are_checked() {
        for bad in [
            "arn:aws:iam::12345678901:role/r",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:user/bob",
            "arn:aws:iam::123456789012:role/",
            "role/r",
        ] {
            assert_eq!(field_of(validate_role_arn(bad)), "access.role_arn", "{bad}");
        }
        validate_role_arn("arn:aws:iam::123456789012:role/service-role/reader@x").unwrap();
        validate_role_arn("arn:aws-cn:iam::123456789012:role/r").unwrap();
    }

    #[test]
    fn aws_needs_a_known_region_and_20_character_key_ids() {
        let mut v = serde_json::json!({
            "id": "i", "org_id": "o", "provider": "aws", "region": "mars-north-1", "buckets": ["bkt"],
            "access": {"type": "iam_user", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_ref": "env:S"}
        });
        let i: Integration = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(field_of(validate_integration(&i)), "region");
        v["region"] = "us-east-1".into();
        v["access"]["access_key_id"] = "AKIASHORT".into();
        let i: Integration = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(field_of(validate_integration(&i)), "access.access_key_id");
        v["access"]["access_key_id"] = "AKIAIOSFODNN7EXAMPLE".into();
        v["access"]["secret_ref"] = "vault:x".into();
        let i: Integration = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(validate_integration(&i).unwrap_err().code().as_str(), "secret_ref_not_allowed");
        // AWS takes no endpoint from a job.
        v["access"]["secret_ref"] = "env:S".into();
        v["endpoint"] = "http://169.254.169.254".into();
        let i: Integration = serde_json::from_value(v).unwrap();
        assert_eq!(validate_integration(&i).unwrap_err().code().as_str(), "endpoint_not_allowed");
    }

    #[test]
    fn s3_compatible_needs_an_endpoint_without_credentials() {
        let mut v = serde_json::json!({
            "id": "i", "org_id": "o", "provider": "s3_compatible", "buckets": ["bkt"],
            "access": {"type": "iam_user", "access_key_id": "minio", "secret_ref": "file:minio.key"}
        });
        let i: Integration = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(field_of(validate_integration(&i)), "endpoint");
        v["endpoint"] = "http://user:pw@127.0.0.1:9000".into();
        let i: Integration = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(field_of(validate_integration(&i)), "endpoint");
        v["endpoint"] = "http://127.0.0.1:9000".into();
        let i: Integration = serde_json::from_value(v).unwrap();
        validate_integration(&i).unwrap();
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for bad in ["ab", "Upper", "-lead", "trail-", "a..b", "192.168.1.1", "under_score"] {
            assert!(validate_bucket(bad).is_err(), "{bad}");
        }
        for good in ["abc", "my.bucket-1", "0bucket"] {
            validate_bucket(good).unwrap();
        }
    }

    #[test]
    fn secret_refs_are_bound_to_their_org() {
        let env = |var: &str| SecretRef::Env { var: var.into() };
        assert_eq!(parse_secret_ref("env:MY_SECRET", "acme").unwrap(), env("ORG_SECRET_ACME__MY_SECRET"));
        assert_eq!(parse_secret_ref("env:K2", "acme-eu-1").unwrap(), env("ORG_SECRET_ACME_EU_1__K2"));
        assert_eq!(
            parse_secret_ref("env:KEY", "3f2a9c1e-7b4d-4e8a-9f00-1234567890ab").unwrap(),
            env("ORG_SECRET_3F2A9C1E_7B4D_4E8A_9F00_1234567890AB__KEY")
        );
        assert_eq!(
            parse_secret_ref("file:s3/key", "Org_1.x").unwrap(),
            SecretRef::File { name: Path::new("s3/key") }
        );
        for (r, org) in [
            ("env:MY_SECRET", "Acme"),
            ("env:MY_SECRET", "ac_me"),
            ("env:MY_SECRET", "acme-"),
            ("env:MY_SECRET", "a--b"),
            ("env:MY_SECRET", ""),
            ("env:my_secret", "acme"),
            ("env:MY__SECRET", "acme"),
            ("env:MY_SECRET_", "acme"),
            ("env:", "acme"),
            ("env:A-B", "acme"),
            ("file:../etc/shadow", "acme"),
            ("file:/etc/shadow", "acme"),
            ("file:a/./b", "acme"),
            ("file:a//b", "acme"),
            ("file:a/", "acme"),
            ("file:a\nb", "acme"),
            ("file:", "acme"),
            ("file:k", ".."),
            ("file:k", "."),
            ("file:k", "a/b"),
            ("file:k", ".hidden"),
            ("vault:x", "acme"),
            ("S", "acme"),
        ] {
            let err = parse_secret_ref(r, org).unwrap_err();
            assert_eq!(err.code().as_str(), "secret_ref_not_allowed", "{r} for {org}");
        }
        // Distinct (org, NAME) pairs never share a variable.
        let var = |r, org| match parse_secret_ref(r, org).unwrap() {
            SecretRef::Env { var } => var,
            SecretRef::File { .. } => unreachable!(),
        };
        assert_ne!(var("env:B_C", "a"), var("env:C", "a-b"));
    }
}
