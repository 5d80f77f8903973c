//! What the worker counts, for Prometheus: jobs and assets by outcome, bytes, stage
//! durations, in-flight work, retries and dead letters. One registry per process,
//! encoded on demand by the `/metrics` handler.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use asset_fetch::{Path as FetchPath, Probed};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AssetLabels {
    /// `image`, `video`, … or `unknown` when the asset failed before detection.
    pub data_type: String,
    /// `ok`, or the stable error code of the asset.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `completed`, `retried`, `dead_lettered`, `requeued`, `settle_failed`.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `download`, `probe`, `write`, `total`.
    pub stage: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `rejected` (not a job, or one this worker refuses), `exhausted` (out of attempts).
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// `ranged`, `full`, or `fallback` (ranged abandoned for the full download).
    pub path: String,
    /// The detected MIME type, or `unknown`.
    pub mime: String,
    /// `true` when every byte of the object was downloaded: the format needs it (text,
    /// MP3 without a Xing/VBRI header, PDF, raw ADTS) or the object fit in the first read.
    pub whole_file: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    /// The integration's id, as the job names it (see [`integration_label`]).
    pub integration: String,
    /// `credentials` or `secret_ref_not_allowed`.
    pub code: String,
}

/// Distinct integrations the credential-failure counter keeps apart; later ones share
/// [`OTHER_INTEGRATIONS`]. A job's fields are hostile: without a cap, jobs naming ever
/// new integration ids would grow the registry (and every scrape) without bound.
pub const MAX_INTEGRATION_LABELS: usize = 256;
pub const OTHER_INTEGRATIONS: &str = "_other";

/// An integration id as a label value: at most 64 characters of `[A-Za-z0-9._-]`, or
/// `_invalid`, so no job can put arbitrary text into the metrics.
pub fn integration_label(id: &str) -> String {
    let printable = id.len() <= 64
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if printable { id.to_string() } else { "_invalid".to_string() }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 ms … ~9 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

pub struct Metrics {
    pub registry: Registry,
    pub jobs: Family<OutcomeLabels, Counter>,
    pub assets: Family<AssetLabels, Counter>,
    pub bytes_downloaded: Counter,
    pub object_bytes: Counter,
    pub fetches: Family<FetchLabels, Counter>,
    pub ranged_reads: Counter,
    pub sts_calls: Gauge,
    pub asset_stage_seconds: HistogramFamily<StageLabels>,
    pub job_seconds: Histogram,
    pub jobs_in_flight: Gauge,
    pub assets_in_flight: Gauge,
    pub retries: Counter,
    pub dead_letters: Family<ReasonLabels, Counter>,
    pub temp_delete_failures: Counter,
    pub broker_connected: Gauge,
    pub credential_failures: Family<CredentialLabels, Counter>,
    pub temp_dir_bytes: Gauge,
    /// The integrations `credential_failures` has a label for (the family has no length).
    credential_integrations: Mutex<HashSet<String>>,
    /// Connections to the broker after the first (a node lost, a connection closed).
    pub broker_reconnects: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("metadata_worker");
        let jobs = Family::<OutcomeLabels, Counter>::default();
        registry.register("jobs", "Import jobs settled, by outcome", jobs.clone());
        let assets = Family::<AssetLabels, Counter>::default();
        registry.register("assets", "Assets with a result written, by data type and outcome", assets.clone());
        let bytes_downloaded = Counter::default();
        registry.register(
            "downloaded_bytes",
            "Bytes downloaded from customer storage",
            bytes_downloaded.clone(),
        );
        let object_bytes = Counter::default();
        registry.register(
            "object_bytes",
            "Total size of the objects fetched (downloaded_bytes / object_bytes is the share fetched)",
            object_bytes.clone(),
        );
        let fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "fetches",
            "Assets fetched, by path (ranged, full, fallback), MIME type and whether the whole object was needed",
            fetches.clone(),
        );
        let ranged_reads = Counter::default();
        registry.register("ranged_reads", "HTTP range requests (or local reads) made", ranged_reads.clone());
        let sts_calls = Gauge::default();
        registry.register(
            "sts_assume_role_calls",
            "STS AssumeRole calls made by this process (one per integration per credential lifetime)",
            sts_calls.clone(),
        );
        let asset_stage_seconds: HistogramFamily<StageLabels> =
            Family::new_with_constructor(seconds_histogram);
        registry.register("asset_stage_seconds", "Time per asset and stage", asset_stage_seconds.clone());
        let job_seconds = seconds_histogram();
        registry.register("job_seconds", "Time from delivery to settlement of a job", job_seconds.clone());
        let jobs_in_flight = Gauge::default();
        registry.register("jobs_in_flight", "Jobs received and not yet settled", jobs_in_flight.clone());
        let assets_in_flight = Gauge::default();
        registry.register(
            "assets_in_flight",
            "Assets being downloaded, probed or written",
            assets_in_flight.clone(),
        );
        let retries = Counter::default();
        registry.register("retries", "Jobs sent to the retry queue", retries.clone());
        let dead_letters = Family::<ReasonLabels, Counter>::default();
        registry.register("dead_letters", "Messages sent to the dead-letter queue", dead_letters.clone());
        let temp_delete_failures = Counter::default();
        registry.register(
            "temp_delete_failures",
            "Temp files whose deletion failed (a customer file may remain on disk)",
            temp_delete_failures.clone(),
        );
        let broker_connected = Gauge::default();
        registry.register("broker_connected", "1 while connected to RabbitMQ", broker_connected.clone());
        let credential_failures = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "credential_failures",
            "Assets whose storage credentials could not be had (bad keys, a refused AssumeRole, a secret_ref \
             refused), by integration and code",
            credential_failures.clone(),
        );
        let temp_dir_bytes = Gauge::default();
        registry.register(
            "temp_dir_bytes",
            "Disk space the downloads in TEMP_DIR take now (allocated blocks: a sparse ranged file counts \
             the ranges it holds), measured at each scrape",
            temp_dir_bytes.clone(),
        );
        let broker_reconnects = Counter::default();
        registry.register(
            "broker_reconnects",
            "Connections to RabbitMQ opened after the first (failovers included)",
            broker_reconnects.clone(),
        );
        Metrics {
            registry,
            jobs,
            assets,
            bytes_downloaded,
            object_bytes,
            fetches,
            ranged_reads,
            sts_calls,
            asset_stage_seconds,
            job_seconds,
            jobs_in_flight,
            assets_in_flight,
            retries,
            dead_letters,
            temp_delete_failures,
            broker_connected,
            credential_failures,
            temp_dir_bytes,
            credential_integrations: Mutex::default(),
            broker_reconnects,
        }
    }

    pub fn job(&self, outcome: &str) {
        self.jobs.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    pub fn asset(&self, data_type: &str, outcome: &str) {
        self.assets
            .get_or_create(&AssetLabels { data_type: data_type.into(), outcome: outcome.into() })
            .inc();
    }

    pub fn stage(&self, stage: &str, seconds: f64) {
        self.asset_stage_seconds.get_or_create(&StageLabels { stage: stage.to_string() }).observe(seconds);
    }

    /// What fetching one asset cost.
    pub fn fetched(&self, probed: &Probed) {
        self.bytes_downloaded.inc_by(probed.bytes_downloaded);
        self.object_bytes.inc_by(probed.size);
        if probed.path != FetchPath::Full {
            self.ranged_reads.inc_by(u64::from(probed.requests));
        }
        let mime = probed.result.as_ref().map_or("unknown", |m| m.mime.as_str());
        let labels = FetchLabels {
            path: probed.path.as_str().into(),
            mime: mime.into(),
            whole_file: probed.whole_file.to_string(),
        };
        self.fetches.get_or_create(&labels).inc();
    }

    /// An asset failed for its integration's credentials; other codes are not counted.
    pub fn credential_failure(&self, integration_id: &str, code: &str) {
        if !matches!(code, "credentials" | "secret_ref_not_allowed") {
            return;
        }
        let mut integration = integration_label(integration_id);
        {
            let mut seen = self.credential_integrations.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.contains(&integration) {
                if seen.len() < MAX_INTEGRATION_LABELS {
                    seen.insert(integration.clone());
                } else {
                    integration = OTHER_INTEGRATIONS.to_string();
                }
            }
        }
        self.credential_failures
            .get_or_create(&CredentialLabels { integration, code: code.to_string() })
            .inc();
    }

    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_was_counted() {
        let m = Metrics::new();
        m.asset("image", "ok");
        m.asset("unknown", "not_found");
        m.bytes_downloaded.inc_by(42);
        m.stage("probe", 0.01);
        m.dead_letter("rejected");
        let text = m.encode();
        assert!(text.contains(r#"metadata_worker_assets_total{data_type="image",outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"metadata_worker_assets_total{data_type="unknown",outcome="not_found"} 1"#));
        assert!(text.contains("metadata_worker_downloaded_bytes_total 42"));
        assert!(text.contains(r#"metadata_worker_asset_stage_seconds_count{stage="probe"} 1"#));
        assert!(text.contains(r#"metadata_worker_dead_letters_total{reason="rejected"} 1"#));
    }

    #[test]
    fn credential_failures_are_labelled_by_a_bounded_set_of_integrations() {
        let m = Metrics::new();
        m.credential_failure("int-1", "credentials");
        m.credential_failure("int-1", "credentials");
        m.credential_failure("int-1", "not_found");
        m.credential_failure("bad id\n{}", "secret_ref_not_allowed");
        for i in 0..MAX_INTEGRATION_LABELS + 10 {
            m.credential_failure(&format!("many-{i}"), "credentials");
        }
        let text = m.encode();
        let sample = |labels: &str| {
            let line = format!("metadata_worker_credential_failures_total{{{labels}}} ");
            text.lines().find_map(|l| l.strip_prefix(line.as_str())).map(|v| v.trim().to_string())
        };
        assert_eq!(sample(r#"integration="int-1",code="credentials""#).as_deref(), Some("2"), "{text}");
        assert_eq!(sample(r#"integration="int-1",code="not_found""#), None);
        assert_eq!(sample(r#"integration="_invalid",code="secret_ref_not_allowed""#).as_deref(), Some("1"));
        // int-1 and _invalid took two of the labels; the rest of the 266 share one.
        assert_eq!(sample(r#"integration="_other",code="credentials""#).as_deref(), Some("12"));
        let series =
            text.lines().filter(|l| l.starts_with("metadata_worker_credential_failures_total{")).count();
        assert_eq!(series, MAX_INTEGRATION_LABELS + 1);
    }
}
