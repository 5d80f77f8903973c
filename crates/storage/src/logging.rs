//! Log targets that print credentials when asked for everything. At `trace`, aws-sigv4
//! prints the canonical request (a presigned URL's query carries the session token and
//! the credential scope) and the smithy orchestrator prints every request with its
//! headers (`Authorization`, `X-Amz-Security-Token`); the HTTP clients below them print
//! request lines. None of them prints a secret at `debug` or above, so whatever
//! `RUST_LOG` asks for, [`credential_guard`] stops them there. Every subscriber of a
//! process that uses this crate should include it.

use tracing_subscriber::filter::{LevelFilter, Targets};

/// Target prefixes capped at `debug` (a target matches when it starts with one).
pub const CREDENTIAL_BEARING_TARGETS: &[&str] =
    &["aws_sigv4", "aws_smithy", "aws_runtime", "aws_config", "aws_sdk", "hyper", "h2", "reqwest"];

/// A filter passing everything except the `trace` events of
/// [`CREDENTIAL_BEARING_TARGETS`]; combine it with the operator's own filter.
pub fn credential_guard() -> Targets {
    CREDENTIAL_BEARING_TARGETS.iter().fold(Targets::new().with_default(LevelFilter::TRACE), |t, target| {
        t.with_target(*target, LevelFilter::DEBUG)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn caps_the_sdk_and_http_clients_at_debug_only() {
        let guard = credential_guard();
        for target in
            ["aws_sigv4::http_request::sign", "aws_smithy_runtime::client::orchestrator", "reqwest::connect"]
        {
            assert!(!guard.would_enable(target, &Level::TRACE), "{target}");
            assert!(guard.would_enable(target, &Level::DEBUG), "{target}");
        }
        assert!(guard.would_enable("asset_storage::download", &Level::TRACE));
        assert!(guard.would_enable("metadata_worker", &Level::TRACE));
    }
}
