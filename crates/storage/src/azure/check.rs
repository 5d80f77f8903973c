//! `validate-storage` for Azure integrations, with the same checks and JSON as S3's:
//! `credentials` (the secret, or an Entra token), `user_delegation_key` (delegated and
//! service-principal access), then per container `bucket` (list one blob with a
//! list SAS), `read` (the first byte through the SAS the pipeline would use) and `cors`.
//! CORS is the browser preflight every provider shares (`Storage::cors_check`).

use asset_core::{AzureAccess, AzureIntegration};
use reqwest::StatusCode;
use reqwest::header::RANGE;

use crate::Storage;
use crate::check::{Check, CheckName, ValidateOptions, fail, failed, pass};
use crate::download::{error_body, status_error, xml_text};
use crate::error::StorageError;
use crate::location::{ObjectLocation, check_key_segments};
use crate::retry::with_retry;
use crate::secret::SignedUrl;

use super::AzureSource;
use super::entra::from_reqwest;
use super::sas::{LONG_SAS_LIFETIME, check_sas_token, decode_key};

impl Storage {
    pub(crate) async fn validate_azure(
        &self,
        a: &AzureIntegration,
        opts: &ValidateOptions,
        checks: &mut Vec<Check>,
    ) {
        let source = AzureSource { inner: &self.inner, integration: a };
        let cfg = &self.inner.config;
        let credentials = match &a.access {
            AzureAccess::AccountKey { secret_ref } => {
                crate::credentials::resolve_secret(secret_ref, &a.org_id, cfg, false)
                    .and_then(|k| decode_key(&k, "account key"))
                    .map(|_| format!("the account key at {secret_ref} is readable"))
            }
            AzureAccess::SasToken { secret_ref } => crate::credentials::resolve_secret(
                secret_ref, &a.org_id, cfg, false,
            )
            .and_then(|t| check_sas_token(&t, std::time::SystemTime::now()))
            .map(|t| match t.long_lived {
                false => format!("the SAS token at {secret_ref} grants read and is current"),
                true => format!(
                    "the SAS token at {secret_ref} grants read and is current, but is valid for more than \
                             {} days: a shorter one limits what a leak exposes",
                    LONG_SAS_LIFETIME.as_secs() / 86400
                ),
            }),
            AzureAccess::IamDelegated { tenant_id } => source
                .token()
                .await
                .map(|()| format!("the platform's application got a token for tenant {tenant_id}")),
            AzureAccess::ServicePrincipal { tenant_id, client_id, .. } => source
                .token()
                .await
                .map(|()| format!("application {client_id} got a token for tenant {tenant_id}")),
        };
        match credentials {
            Ok(message) => checks.push(pass(CheckName::Credentials, message)),
            Err(e) => return checks.push(failed(CheckName::Credentials, &e)),
        }
        if matches!(a.access, AzureAccess::IamDelegated { .. } | AzureAccess::ServicePrincipal { .. }) {
            match source.user_delegation_key().await {
                Ok(_) => checks.push(pass(
                    CheckName::UserDelegationKey,
                    format!("got a user delegation key for account {}", a.account),
                )),
                Err(e) => return checks.push(failed(CheckName::UserDelegationKey, &e)),
            }
        }
        for (index, container) in a.containers.iter().enumerate() {
            let first = match self.list_one(&source, container).await {
                Ok(first) => {
                    checks.push(pass(
                        CheckName::Bucket,
                        format!("container {container} exists and can be listed"),
                    ));
                    first
                }
                Err(e) => {
                    checks.push(fail(
                        CheckName::Bucket,
                        e.code().as_str(),
                        format!("container {container}: {e}"),
                    ));
                    None
                }
            };
            let blob = if index == 0 { opts.key.clone().or(first) } else { first };
            let signed = match blob {
                None => {
                    checks.push(fail(
                        CheckName::Read,
                        "not_found",
                        format!("container {container}: no blob to read (empty container?); pass --key"),
                    ));
                    None
                }
                Some(blob) => match self.read_first_byte(&source, container, &blob).await {
                    Ok(signed) => {
                        checks.push(pass(
                            CheckName::Read,
                            format!("read the first byte of {container}/{blob}"),
                        ));
                        Some(signed)
                    }
                    Err(e) => {
                        checks.push(fail(
                            CheckName::Read,
                            e.code().as_str(),
                            format!("{container}/{blob}: {e}"),
                        ));
                        None
                    }
                },
            };
            let place = format!("container {container}");
            checks.push(self.cors_check(signed.as_ref(), &place, opts.origin.as_deref()).await);
        }
    }

    /// The first blob name of a container, listed with a list SAS.
    async fn list_one(
        &self,
        source: &AzureSource<'_>,
        container: &str,
    ) -> Result<Option<String>, StorageError> {
        let url = source.list_url(container).await?;
        let client = self.inner.downloader.client();
        let body = with_retry(&self.inner.config.retry, "list_blobs", |_| async {
            self.inner.egress.check_str(url.expose())?;
            let mut resp =
                client.get(url.expose()).send().await.map_err(|e| from_reqwest(e, "listing a container"))?;
            let status = resp.status();
            let body = error_body(&mut resp).await;
            if status != StatusCode::OK {
                return Err(status_error(status, &body, false));
            }
            Ok(body)
        })
        .await?;
        Ok(xml_text(&body, "Name"))
    }

    /// Reads one byte of a blob through the SAS the pipeline would sign; an empty blob
    /// (416) proves reading is allowed too. Returns that SAS for the CORS check.
    async fn read_first_byte(
        &self,
        source: &AzureSource<'_>,
        container: &str,
        blob: &str,
    ) -> Result<SignedUrl, StorageError> {
        // A name from the listing is the server's: it stays in the container too.
        check_key_segments(blob)?;
        let loc = ObjectLocation { bucket: container.to_owned(), key: blob.to_owned() };
        let signed = source.presign(&loc, None).await?;
        let client = self.inner.downloader.client();
        with_retry(&self.inner.config.retry, "get_blob", |_| async {
            self.inner.egress.check_str(signed.expose())?;
            let mut resp = client
                .get(signed.expose())
                .header(RANGE, "bytes=0-0")
                .send()
                .await
                .map_err(|e| from_reqwest(e, "reading a blob"))?;
            match resp.status() {
                StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => Ok(()),
                status => {
                    let body = error_body(&mut resp).await;
                    Err(status_error(status, &body, false))
                }
            }
        })
        .await?;
        Ok(signed)
    }
}
