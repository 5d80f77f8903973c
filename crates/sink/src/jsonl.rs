//! JSON Lines sink: one `asset-metadata/v1` object per line, flushed per line, on
//! stdout (what `replay` prints) or appended to a file. Job completions are left out by
//! default so the output is pure asset-metadata v1; a file sink can opt in to them.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use asset_schemas::{AssetResult, JobCompleted};

use crate::{MetadataSink, SinkError};

const SINK: &str = "jsonl";

type Out = Arc<Mutex<Box<dyn Write + Send>>>;

/// Writes results as JSON Lines; one writer, writes serialized so lines never interleave.
pub struct JsonlSink {
    out: Out,
    job_completions: bool,
}

impl std::fmt::Debug for JsonlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlSink").field("job_completions", &self.job_completions).finish_non_exhaustive()
    }
}

impl JsonlSink {
    /// Asset results on stdout, nothing else: the output of `replay`.
    pub fn stdout() -> Self {
        Self::from_writer(std::io::stdout())
    }

    /// Appends to `path`, creating it if needed.
    pub fn file(path: impl AsRef<Path>) -> Result<Self, SinkError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.as_ref())
            .map_err(|source| SinkError::Io { sink: SINK, source })?;
        Ok(Self::from_writer(file))
    }

    /// Any writer, e.g. a pipe or an in-memory buffer.
    pub fn from_writer(w: impl Write + Send + 'static) -> Self {
        JsonlSink { out: Arc::new(Mutex::new(Box::new(w))), job_completions: false }
    }

    /// Also write a `job-completed/v1` line per job (tell them apart by `schema`).
    pub fn with_job_completions(mut self, yes: bool) -> Self {
        self.job_completions = yes;
        self
    }

    async fn write_line(&self, mut line: Vec<u8>) -> Result<(), SinkError> {
        line.push(b'\n');
        let out = Arc::clone(&self.out);
        // stdout may be a full pipe: block a pool thread, not the runtime.
        tokio::task::spawn_blocking(move || {
            // A writer poisoned by a panic elsewhere still takes whole lines.
            let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
            w.write_all(&line)?;
            w.flush()
        })
        .await
        .map_err(|join| SinkError::Io { sink: SINK, source: std::io::Error::other(join.to_string()) })?
        .map_err(|source| SinkError::Io { sink: SINK, source })
    }
}

#[async_trait::async_trait]
impl MetadataSink for JsonlSink {
    fn name(&self) -> &'static str {
        SINK
    }

    async fn write(&self, result: &AssetResult) -> Result<(), SinkError> {
        let line = serde_json::to_vec(result)
            .map_err(|source| SinkError::Serialize { what: "asset result", source })?;
        self.write_line(line).await
    }

    async fn job_completed(&self, done: &JobCompleted) -> Result<(), SinkError> {
        if !self.job_completions {
            return Ok(());
        }
        let line = serde_json::to_vec(done)
            .map_err(|source| SinkError::Serialize { what: "job completion", source })?;
        self.write_line(line).await
    }

    async fn ready(&self) -> bool {
        true
    }
}
