//! What the worker counts, for Prometheus: jobs and assets by outcome, bytes, stage
//! durations, in-flight work, retries and dead letters. One registry per process,
//! encoded on demand by the `/metrics` handler.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::fetch::{Path as FetchPath, Probed};

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
}
