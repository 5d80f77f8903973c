//! One asset from its URL to its metadata, for as few bytes as its format allows.
//!
//! Ranged (the default): read a prefix into a sparse temp file of the object's size,
//! probe it, and while the probe answers `NeedBytes` read the range the fetch policy
//! makes of that need — a suffix for an MP4 whose `moov` is at the end, the rest of the
//! file for text — and probe again. The probe never reads a byte that is not there, so
//! the answer is the one a full download gives. A ranged read the storage cannot serve
//! (no size, another range than asked, an object replaced mid-read) falls back to the
//! full download. Full: one download of the whole object, then one probe.
//!
//! A library so that every command that reads assets (`run`, `replay`) only wires
//! storage, the probe processes and a sink together; the loop is the same for every
//! origin the storage crate serves.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use asset_core::{AssetMetadata, Integration, Limits};
use asset_probe::isolate::ProbePool;
use asset_probe::{ByteRange, FetchPolicy, Need, ProbeError, RangeSet};
use asset_storage::{Storage, StorageError};

/// How assets are downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchMode {
    /// The whole object, then the probe.
    Full,
    /// Only the ranges the probe needs (see the module docs).
    Ranged(FetchPolicy),
}

impl Default for FetchMode {
    fn default() -> Self {
        FetchMode::Ranged(FetchPolicy::default())
    }
}

/// A ranged fetch that made this many reads without an answer is abandoned for the
/// full download. The policy fetches everything missing after `max_rounds`, one gap at
/// a time, so a correct probe never comes near it; it bounds a probe that would keep
/// asking.
const MAX_RANGED_READS: u32 = 64;

/// How the bytes were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Full,
    Ranged,
    /// Ranged first, then the full download.
    Fallback,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Full => "full",
            Path::Ranged => "ranged",
            Path::Fallback => "fallback",
        }
    }
}

/// What fetching and probing one asset came to; the temp file is gone by now.
#[derive(Debug)]
pub struct Probed {
    pub result: Result<AssetMetadata, ProbeError>,
    /// The object's size.
    pub size: u64,
    pub bytes_downloaded: u64,
    /// Reads made (1 for a full download).
    pub requests: u32,
    pub path: Path,
    /// Every byte of an object larger than the first read was needed (text, MP3 without
    /// a Xing/VBRI header, PDF…): the ranged path saved nothing.
    pub whole_file: bool,
    pub download: Duration,
    pub probe: Duration,
    /// Removing the temp file failed (it may still be on disk).
    pub delete_failed: Option<std::io::Error>,
}

/// Downloads (part of) the object `url` names and probes it. Storage faults that leave
/// no file to probe are the `Err`; every outcome of the probe is in [`Probed::result`].
pub async fn fetch_and_probe(
    storage: &Storage,
    prober: &ProbePool,
    integration: &Integration,
    url: &str,
    limits: &Limits,
    mode: FetchMode,
) -> Result<Probed, StorageError> {
    let FetchMode::Ranged(policy) = mode else {
        return full(storage, prober, integration, url, limits, Duration::ZERO).await;
    };
    match ranged(storage, prober, integration, url, limits, policy).await {
        Ok(probed) => Ok(probed),
        Err(Abandoned { reason, bytes_downloaded, download, probe }) => {
            tracing::info!(reason = %reason, "ranged read abandoned; downloading the whole object");
            let mut probed = full(storage, prober, integration, url, limits, probe).await?;
            probed.path = Path::Fallback;
            probed.bytes_downloaded += bytes_downloaded;
            probed.download += download;
            Ok(probed)
        }
        Err(Failed(err)) => Err(err),
    }
}

/// Why the ranged path did not give an answer.
enum RangedError {
    /// Try the full download; what the ranged path already cost is kept.
    Abandoned { reason: String, bytes_downloaded: u64, download: Duration, probe: Duration },
    /// A storage fault the full download would meet too (access, not found, limits,
    /// transient faults after their retries).
    Failed(StorageError),
}
use RangedError::{Abandoned, Failed};

async fn ranged(
    storage: &Storage,
    prober: &ProbePool,
    integration: &Integration,
    url: &str,
    limits: &Limits,
    policy: FetchPolicy,
) -> Result<Probed, RangedError> {
    let abandon = |err: StorageError, bytes_downloaded: u64, download: Duration, probe: Duration| {
        if err.wants_full_download() {
            Abandoned { reason: err.to_string(), bytes_downloaded, download, probe }
        } else {
            Failed(err)
        }
    };
    let started = Instant::now();
    let (mut partial, first) = storage
        .open_partial(integration, url, policy.first)
        .await
        .map_err(|e| abandon(e, 0, started.elapsed(), Duration::ZERO))?;
    let mut download = started.elapsed();
    let total = partial.total();
    let mut present = RangeSet::new();
    present.insert(ByteRange::span(first.start, first.end));
    let first_len = first.end - first.start;
    let path = partial.path().to_path_buf();
    let mut probe = Duration::ZERO;
    let mut round = 0;
    let mut whole_file = false;
    let result = loop {
        let t = Instant::now();
        let result = probe_blocking(prober, path.clone(), total, &present, limits, probe).await;
        probe += t.elapsed();
        let need = match result {
            Err(ProbeError::NeedBytes { offset, len, whole_file }) => Need { offset, len, whole_file },
            other => break other,
        };
        whole_file |= need.whole_file;
        let next = policy.next_fetch(need, total, &present, round);
        if next.is_empty() || partial.requests() >= MAX_RANGED_READS {
            let reason = format!(
                "the probe still needs {} bytes at {} after {} reads",
                need.len,
                need.offset,
                partial.requests()
            );
            return Err(Abandoned { reason, bytes_downloaded: partial.bytes_downloaded(), download, probe });
        }
        let t = Instant::now();
        let got = partial
            .fetch(next.offset..next.end())
            .await
            .map_err(|e| abandon(e, partial.bytes_downloaded(), download + t.elapsed(), probe))?;
        download += t.elapsed();
        present.insert(ByteRange::span(got.start, got.end));
        round += 1;
    };
    let (requests, bytes_downloaded) = (partial.requests(), partial.bytes_downloaded());
    // The customer's bytes go as soon as the probe is done with them.
    let delete_failed = partial.into_temp_asset().delete().err();
    Ok(Probed {
        result,
        size: total,
        bytes_downloaded,
        requests,
        path: Path::Ranged,
        whole_file: whole_file || (total > first_len && present.covered() >= total),
        download,
        probe,
        delete_failed,
    })
}

/// `spent`: probe time an abandoned ranged attempt already used of the asset's budget.
async fn full(
    storage: &Storage,
    prober: &ProbePool,
    integration: &Integration,
    url: &str,
    limits: &Limits,
    spent: Duration,
) -> Result<Probed, StorageError> {
    let t = Instant::now();
    let temp = storage.fetch(integration, url).await?;
    let download = t.elapsed();
    let (size, bytes_downloaded) = (temp.size(), temp.bytes_downloaded());
    let mut all = RangeSet::new();
    all.insert(ByteRange::new(0, size));
    let t = Instant::now();
    let result = probe_blocking(prober, temp.path().to_path_buf(), size, &all, limits, spent).await;
    let probe = t.elapsed();
    let delete_failed = temp.delete().err();
    Ok(Probed {
        result,
        size,
        bytes_downloaded,
        requests: 1,
        path: Path::Full,
        whole_file: true,
        download,
        probe,
        delete_failed,
    })
}

/// The probe in a probe process (its own memory limit and deadline; see
/// [`asset_probe::isolate`]), waited for on the blocking pool. `spent` is what earlier
/// rounds of this asset already used of its time budget: one asset gets
/// `limits.max_millis` in all, however many reads it takes.
async fn probe_blocking(
    prober: &ProbePool,
    path: PathBuf,
    total: u64,
    present: &RangeSet,
    limits: &Limits,
    spent: Duration,
) -> Result<AssetMetadata, ProbeError> {
    let budget = Duration::from_millis(limits.max_millis);
    let Some(left) = budget.checked_sub(spent).filter(|d| !d.is_zero()) else {
        return Err(ProbeError::TimedOut { millis: limits.max_millis });
    };
    let limits =
        Limits { max_millis: u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1), ..limits.clone() };
    let complete = present.covered() >= total;
    let present = present.clone();
    let prober = prober.clone();
    let joined = tokio::task::spawn_blocking(move || {
        if complete {
            prober.probe(&path, &limits)
        } else {
            prober.probe_partial(&path, total, &present, &limits)
        }
    })
    .await;
    match joined {
        // A timeout on the last of several rounds is the asset's whole budget.
        Ok(Err(ProbeError::TimedOut { .. })) => {
            Err(ProbeError::TimedOut { millis: budget.as_millis() as u64 })
        }
        Ok(result) => result,
        Err(_) => Err(ProbeError::corrupt("unknown", "the probe task panicked")),
    }
}
