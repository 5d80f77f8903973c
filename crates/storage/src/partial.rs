//! Ranged reads of one object into one sparse temp file of the object's full size: the
//! probe asks for the bytes it needs and the worker fetches those and no more.
//!
//! The first read asks for a prefix and learns the object's size (from `Content-Range`)
//! and version (`ETag`); later reads send `If-Match` so that an object replaced half way
//! is noticed (412) rather than stitched together from two versions. Servers that ignore
//! `If-Match` exist, so every reply's ETag and size are compared with the first's as
//! well: another ETag, none after the first had one, or none at all (nothing proves two
//! ranges are of one version) fails the ranged read over to one full download. A server that
//! ignores `Range` answers 200 with the whole body: the read then streams from the start
//! and stops at the end of the range it wanted, so it costs the bytes up to there, never
//! the rest of the object. Anything a ranged read cannot make sense of (no size, a range
//! other than the one asked for, a changed object) is a
//! [`StorageError::RangedReadFailed`]: the caller falls back to a full download.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use asset_core::Integration;
use tempfile::TempPath;

use crate::Storage;
use crate::error::StorageError;
use crate::location::{ByteRange, ObjectLocation};
use crate::read::{Placement, Reply, Want, Writer, ranged_failed, read_local};
use crate::secret::SignedUrl;
use crate::temp::{self, TempAsset};

/// A signed URL is signed again when it has less than this left.
const RESIGN_MARGIN: Duration = Duration::from_secs(30);

/// Where an object's bytes are read from.
pub(crate) enum Origin {
    /// A URL signed for GET; `Range` and `If-Match` travel as unsigned headers.
    Signed(SignedUrl),
    /// A file of the local provider, already resolved inside its root.
    Local(PathBuf),
}

impl Origin {
    /// The object's extension, for the temp file's name ([`temp::extension_hint`]).
    pub(crate) fn extension_hint(&self) -> Option<String> {
        match self {
            Origin::Signed(url) => {
                url::Url::parse(url.expose()).ok().and_then(|u| temp::extension_hint(u.path()))
            }
            Origin::Local(path) => path.file_name().and_then(|n| n.to_str()).and_then(temp::extension_hint),
        }
    }
}

/// An object being read range by range. The temp file has the object's full size from
/// the first read on; only the ranges returned by [`PartialAsset::open`] and
/// [`PartialAsset::fetch`] hold its bytes. Dropping it removes the file.
pub struct PartialAsset {
    path: TempPath,
    file: File,
    origin: Origin,
    storage: Storage,
    /// The integration and object to sign again for, when the URL came from us.
    resign: Option<(Integration, ObjectLocation)>,
    total: u64,
    etag: Option<String>,
    bytes_downloaded: u64,
    requests: u32,
}

impl std::fmt::Debug for PartialAsset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialAsset")
            .field("path", &self.path)
            .field("total", &self.total)
            .field("bytes_downloaded", &self.bytes_downloaded)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens the object an asset URL names for ranged reading and reads its first
    /// `first` bytes (all of a smaller object). Same validation, SSRF guard, signing and
    /// limits as [`Storage::fetch`]; an object above the size limit is `too_large`
    /// before any byte of it is written.
    pub async fn open_partial(
        &self,
        integration: &Integration,
        url: &str,
        first: u64,
    ) -> Result<(PartialAsset, Range<u64>), StorageError> {
        self.admit(integration)?;
        let source = self.source(integration);
        let loc = source.locate(url)?;
        let origin = source.origin(&loc).await?;
        let resign = matches!(origin, Origin::Signed(_)).then(|| (integration.clone(), loc));
        self.open_origin(origin, resign, first).await
    }

    /// [`Storage::open_partial`] on a URL signed elsewhere (tools, tests); it is never
    /// signed again.
    pub async fn open_partial_signed(
        &self,
        url: SignedUrl,
        first: u64,
    ) -> Result<(PartialAsset, Range<u64>), StorageError> {
        self.open_origin(Origin::Signed(url), None, first).await
    }

    /// One read of an origin into a new temp file that holds just the bytes read (the
    /// whole object, or the range): [`Storage::fetch_range`] and
    /// [`Storage::download_signed`].
    pub(crate) async fn read_once(&self, origin: &Origin, want: Want) -> Result<TempAsset, StorageError> {
        let cfg = &self.inner.config;
        let (file, path) = temp::new_file(&cfg.temp_dir, origin.extension_hint().as_deref())
            .map_err(|e| StorageError::io("creating a temp file", e))?
            .into_parts();
        let out = Writer { file: &file, placement: Placement::FromStart, max_bytes: cfg.max_asset_bytes };
        let (mut want, mut etag, mut received) = (want, None, 0);
        // Not every store serves a suffix range (Azure Blob takes `bytes=a-` and
        // `bytes=a-b` only; some emulators fail on `bytes=-n`): the first byte says the
        // size, then the suffix is read as a span of that version.
        if let Want::Range(ByteRange::Suffix(n)) = want
            && n > 0
        {
            let (reply, first) =
                self.read_origin(origin, Want::Range(ByteRange::Prefix(1)), None, &out).await;
            received += first;
            let reply = reply?;
            let total =
                reply.total.ok_or_else(|| ranged_failed("the server does not say the object's size"))?;
            if total == 0 {
                return Ok(TempAsset::new(path, 0, received));
            }
            (want, etag) = (Want::span(&(total.saturating_sub(n)..total)), reply.etag);
        }
        let (reply, rest) = self.read_origin(origin, want, etag.as_deref(), &out).await;
        received += rest;
        // On an error `path` drops here and removes what was written.
        let written = reply?.written;
        Ok(TempAsset::new(path, written.end - written.start, received))
    }

    /// One ranged read of an origin into `out`, whatever the origin: the reply, and the
    /// bytes received (or copied) on the way, failed attempts included.
    pub(crate) async fn read_origin(
        &self,
        origin: &Origin,
        want: Want,
        etag: Option<&str>,
        out: &Writer<'_>,
    ) -> (Result<Reply, StorageError>, u64) {
        match origin {
            Origin::Local(source) => {
                let mut copied = 0;
                let reply = read_local(source, want, out, &mut copied).await;
                (reply, copied)
            }
            Origin::Signed(url) => {
                let received = AtomicU64::new(0);
                let reply = self.inner.downloader.read(url, want, etag, out, &received).await;
                (reply, received.load(Ordering::Relaxed))
            }
        }
    }

    async fn open_origin(
        &self,
        origin: Origin,
        resign: Option<(Integration, ObjectLocation)>,
        first: u64,
    ) -> Result<(PartialAsset, Range<u64>), StorageError> {
        let cfg = &self.inner.config;
        let (file, path) = temp::new_file(&cfg.temp_dir, origin.extension_hint().as_deref())
            .map_err(|e| StorageError::io("creating a temp file", e))?
            .into_parts();
        let mut asset = PartialAsset {
            path,
            file,
            origin,
            storage: self.clone(),
            resign,
            total: 0,
            etag: None,
            bytes_downloaded: 0,
            requests: 0,
        };
        let written = asset.read(0..first.max(1), true).await?;
        Ok((asset, written))
    }
}

impl PartialAsset {
    /// The object's full size.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes received over the network (or copied, for the local provider), every
    /// request and attempt included.
    pub fn bytes_downloaded(&self) -> u64 {
        self.bytes_downloaded
    }

    /// Ranged reads made, the first included (retries of one read are not counted).
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Reads `range` (clamped to the object) into the file and says which bytes the file
    /// now holds because of it; an empty range reads nothing.
    pub async fn fetch(&mut self, range: Range<u64>) -> Result<Range<u64>, StorageError> {
        let range = range.start.min(self.total)..range.end.min(self.total);
        if range.is_empty() {
            return Ok(range);
        }
        self.read(range, false).await
    }

    /// The file as a finished download (its bytes outside the fetched ranges are holes).
    pub fn into_temp_asset(self) -> TempAsset {
        TempAsset::new(self.path, self.total, self.bytes_downloaded)
    }

    async fn read(&mut self, range: Range<u64>, first: bool) -> Result<Range<u64>, StorageError> {
        self.resign_if_needed().await?;
        self.requests += 1;
        let out = Writer {
            file: &self.file,
            placement: Placement::ObjectOffsets,
            max_bytes: self.storage.inner.config.max_asset_bytes,
        };
        let etag = if first { None } else { self.etag.as_deref() };
        let (reply, received) = self.storage.read_origin(&self.origin, Want::span(&range), etag, &out).await;
        self.bytes_downloaded += received;
        self.accept(reply?, first)
    }

    fn accept(&mut self, reply: Reply, first: bool) -> Result<Range<u64>, StorageError> {
        let total = reply.total.ok_or_else(|| ranged_failed("the server does not say the object's size"))?;
        if first {
            self.total = total;
            self.etag = reply.etag;
            self.file.set_len(total).map_err(|e| StorageError::io("sizing the temp file", e))?;
            return Ok(reply.written);
        }
        let changed = |reason: &str| StorageError::RangedReadFailed { reason: reason.to_owned() };
        if total != self.total {
            return Err(StorageError::RangedReadFailed {
                reason: format!("the object's size changed from {} to {total} bytes", self.total),
            });
        }
        match (&self.etag, &reply.etag) {
            (Some(first), Some(now)) if first == now => Ok(reply.written),
            (Some(_), Some(_)) => Err(changed("the object changed between two reads (another ETag)")),
            (Some(_), None) => Err(changed("a reply without an ETag after the first had one")),
            (None, _) => {
                Err(changed("the object has no ETag, so two ranges cannot be proven to be of one version"))
            }
        }
    }

    async fn resign_if_needed(&mut self) -> Result<(), StorageError> {
        let (Origin::Signed(url), Some((integration, loc))) = (&self.origin, &self.resign) else {
            return Ok(());
        };
        let stale = url.expires_at().is_some_and(|at| at < SystemTime::now() + RESIGN_MARGIN);
        if stale {
            self.origin = self.storage.source(integration).origin(loc).await?;
        }
        Ok(())
    }
}
