//! Structured logs on stderr (stdout may carry JSON Lines results): JSON objects with
//! `job_id` / `asset_id` span fields for the service, compact text for local replay.
//! `RUST_LOG` filters, under [`asset_storage::logging::credential_guard`]: the trace
//! logs of the AWS SDK and the HTTP clients, which print signatures and session
//! tokens, stay off whatever it says. URLs with credentials are never a field anywhere.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter::FilterExt};

use crate::config::LogFormat;

/// `level` applies to our crates; libraries only speak up for errors unless `RUST_LOG`
/// says otherwise (their warnings — IMDS probing, a parser's complaint about a file we
/// already report as an error result — are noise to an operator).
pub fn init(format: LogFormat, level: &str) {
    let default = format!(
        "error,metadata_worker={level},asset_queue={level},asset_sink={level},asset_storage={level},asset_probe={level}"
    );
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let filter = env.and(asset_storage::logging::credential_guard());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let layer = match format {
        LogFormat::Json => {
            layer.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
        }
        LogFormat::Text => layer.compact().boxed(),
    };
    // A second init (tests calling twice) is harmless; ignore it.
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter)).try_init();
}
