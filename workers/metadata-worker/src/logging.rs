//! Structured logs on stderr (stdout may carry JSON Lines results): JSON objects with
//! `job_id` / `asset_id` span fields for the service, compact text for local replay.
//! `RUST_LOG` filters; URLs with credentials are never a field anywhere.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// `level` applies to our crates; libraries only speak up for errors unless `RUST_LOG`
/// says otherwise (their warnings — IMDS probing, a parser's complaint about a file we
/// already report as an error result — are noise to an operator).
pub fn init(format: LogFormat, level: &str) {
    let default = format!(
        "error,metadata_worker={level},asset_queue={level},asset_sink={level},asset_storage={level},asset_probe={level}"
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests calling twice) is harmless; ignore it.
    let _ = match format {
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
        }
        LogFormat::Text => builder.compact().try_init(),
    };
}
