//! Syntax checks on an Azure integration, before any network call. The account name is
//! checked strictly because it becomes a host name (`{account}.blob.core.windows.net`)
//! and part of every signature; tenant and client ids must be GUIDs because they become
//! a path of the token endpoint.

use asset_core::{AzureAccess, AzureIntegration};

use crate::error::StorageError;
use crate::validate::{parse_secret_ref, validate_endpoint};

pub(crate) fn validate_azure(a: &AzureIntegration) -> Result<(), StorageError> {
    if a.id.trim().is_empty() {
        return Err(StorageError::invalid("id", "must not be empty"));
    }
    if a.org_id.trim().is_empty() {
        return Err(StorageError::invalid("org_id", "must not be empty"));
    }
    let account_ok = (3..=24).contains(&a.account.len())
        && a.account.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !account_ok {
        return Err(StorageError::invalid(
            "account",
            format!("{:?} is not a storage account name (3-24 lowercase letters and digits)", a.account),
        ));
    }
    if let Some(e) = &a.endpoint {
        validate_endpoint(e)?;
    }
    if a.containers.is_empty() {
        return Err(StorageError::invalid("containers", "must name at least one container"));
    }
    for c in &a.containers {
        validate_container(c)?;
    }
    match &a.access {
        AzureAccess::IamDelegated { tenant_id } => validate_guid("access.tenant_id", tenant_id)?,
        AzureAccess::AccountKey { secret_ref } | AzureAccess::SasToken { secret_ref } => {
            parse_secret_ref(secret_ref, &a.org_id)?;
        }
        AzureAccess::ServicePrincipal { tenant_id, client_id, secret_ref } => {
            validate_guid("access.tenant_id", tenant_id)?;
            validate_guid("access.client_id", client_id)?;
            parse_secret_ref(secret_ref, &a.org_id)?;
        }
    }
    Ok(())
}

/// Azure's container rules: 3-63 lowercase letters, digits and single hyphens,
/// starting and ending with a letter or digit.
fn validate_container(c: &str) -> Result<(), StorageError> {
    let ok = (3..=63).contains(&c.len())
        && c.split('-')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if !ok {
        return Err(StorageError::invalid("containers", format!("{c:?} is not a valid container name")));
    }
    Ok(())
}

fn validate_guid(field: &'static str, v: &str) -> Result<(), StorageError> {
    let groups: Vec<&str> = v.split('-').collect();
    let ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(StorageError::invalid(field, format!("{v:?} is not a GUID")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integ(patch: serde_json::Value) -> AzureIntegration {
        let mut v = serde_json::json!({
            "id": "int-6", "org_id": "org-1", "account": "custstorage", "containers": ["assets"],
            "access": {"type": "iam_delegated", "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47"}
        });
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn field(patch: serde_json::Value) -> String {
        match validate_azure(&integ(patch)) {
            Err(StorageError::InvalidIntegration { field, .. }) => field.to_owned(),
            Err(e) => e.code().as_str().to_owned(),
            Ok(()) => "ok".into(),
        }
    }

    #[test]
    fn accounts_containers_and_ids_are_checked_strictly() {
        assert_eq!(field(serde_json::json!({})), "ok");
        for bad in ["ab", "Cust", "cust-storage", "cust.storage", "a".repeat(25).as_str(), "evil.com/x", ""] {
            assert_eq!(field(serde_json::json!({ "account": bad })), "account", "{bad}");
        }
        for bad in ["ab", "UP", "a--b", "-ab", "ab-", "a_b", "$root"] {
            assert_eq!(field(serde_json::json!({ "containers": [bad] })), "containers", "{bad}");
        }
        assert_eq!(field(serde_json::json!({ "containers": [] })), "containers");
        for bad in ["contoso.onmicrosoft.com", "72f988bf-86f1-41af-91ab-2d7cd011db4", "../../x", "common"] {
            let access = serde_json::json!({"type": "iam_delegated", "tenant_id": bad});
            assert_eq!(field(serde_json::json!({ "access": access })), "access.tenant_id", "{bad}");
        }
        let sp = serde_json::json!({"type": "service_principal", "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                                    "client_id": "x", "secret_ref": "env:S"});
        assert_eq!(field(serde_json::json!({ "access": sp })), "access.client_id");
        let key = serde_json::json!({"type": "account_key", "secret_ref": "env:../X"});
        assert_eq!(field(serde_json::json!({ "access": key })), "secret_ref_not_allowed");
        assert_eq!(field(serde_json::json!({ "endpoint": "http://u:p@127.0.0.1:10000" })), "endpoint");
        assert_eq!(field(serde_json::json!({ "endpoint": "http://127.0.0.1:10000/custstorage" })), "ok");
    }
}
