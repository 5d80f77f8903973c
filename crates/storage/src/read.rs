//! The one way an object's bytes reach a temp file: a ranged read of an origin (a signed
//! URL, or a local file), whose bytes go through one writer that enforces the size limit
//! and where they land. A whole download is the range `0-`; a header-first read is a
//! series of ranges into one sparse file ([`crate::partial`]).

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::StorageError;
use crate::location::ByteRange;

/// What one read asks for: the whole object, or a range of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Whole,
    Range(ByteRange),
}

impl Want {
    /// The bytes `[start, end)` of an object, `end` exclusive.
    pub(crate) fn span(range: &Range<u64>) -> Want {
        Want::Range(ByteRange::Span { start: range.start, end: range.end.saturating_sub(1) })
    }

    /// The `Range` header value; `None` for an empty range, which no server accepts.
    pub(crate) fn header_value(&self) -> Option<String> {
        match self {
            Want::Whole => Some("bytes=0-".into()),
            Want::Range(r) => r.header_value(),
        }
    }

    /// The first byte asked for, once the object's size is known.
    pub(crate) fn first(&self, total: u64) -> u64 {
        match *self {
            Want::Whole | Want::Range(ByteRange::Prefix(_)) => 0,
            Want::Range(ByteRange::Span { start, .. }) => start,
            Want::Range(ByteRange::Suffix(n)) => total.saturating_sub(n),
        }
    }

    /// One past the last byte asked for, within an object of `total` bytes (`None`:
    /// size unknown, the rest of the object).
    pub(crate) fn stop(&self, total: Option<u64>) -> Option<u64> {
        let end = match *self {
            Want::Whole | Want::Range(ByteRange::Suffix(_)) => None,
            Want::Range(ByteRange::Prefix(n)) => Some(n),
            Want::Range(ByteRange::Span { end, .. }) => Some(end.saturating_add(1)),
        };
        match (end, total) {
            (Some(e), Some(t)) => Some(e.min(t)),
            (e, t) => e.or(t),
        }
    }

    /// Whether the range reaches the end of the object.
    fn to_the_end(self) -> bool {
        matches!(self, Want::Whole | Want::Range(ByteRange::Suffix(_)))
    }
}

/// Where a read's bytes land in the temp file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// At the object's own offsets: a sparse file of the object's size (header-first
    /// reads). The object's size is what the limit applies to.
    ObjectOffsets,
    /// From the start of the file: the file is the range (one-shot fetches). The range's
    /// length is what the limit applies to.
    FromStart,
}

/// What one read did.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The object's size, when the server said it (a `Content-Range`, or the
    /// `Content-Length` of a whole body), or when the body ran to its end.
    pub(crate) total: Option<u64>,
    /// The object's bytes now in the file (may start before and end after what was
    /// asked, when the server ignored `Range`; always holds the part of it inside the
    /// object).
    pub(crate) written: Range<u64>,
    pub(crate) etag: Option<String>,
}

/// The one writer of a temp file: bytes of the object at their place, under the size
/// limit. The file never grows past `max_bytes`.
pub(crate) struct Writer<'a> {
    pub(crate) file: &'a File,
    pub(crate) placement: Placement,
    pub(crate) max_bytes: u64,
}

impl Writer<'_> {
    /// Before any byte of a reply is written: what the server says the object is and
    /// which of its bytes `[start, stop)` follow. Too large is refused here, when it can
    /// be known.
    pub(crate) fn admit(
        &self,
        total: Option<u64>,
        start: u64,
        stop: Option<u64>,
    ) -> Result<(), StorageError> {
        let extent = match self.placement {
            Placement::ObjectOffsets => total.or(stop),
            Placement::FromStart => stop.map(|s| s.saturating_sub(start)),
        };
        match extent {
            Some(n) if n > self.max_bytes => {
                tracing::debug!(extent = n, max_bytes = self.max_bytes, "refused before reading the body");
                Err(StorageError::TooLarge { limit: self.max_bytes, received: 0 })
            }
            _ => Ok(()),
        }
    }

    /// Writes `chunk`, the object's bytes from offset `at`, for a reply whose first
    /// byte is the object's `start`.
    pub(crate) fn write(&self, start: u64, at: u64, chunk: &[u8]) -> Result<(), StorageError> {
        let offset = match self.placement {
            Placement::ObjectOffsets => at,
            Placement::FromStart => at - start,
        };
        let end = offset.saturating_add(chunk.len() as u64);
        if end > self.max_bytes {
            // A body longer than announced, or never announced.
            return Err(StorageError::TooLarge { limit: self.max_bytes, received: end });
        }
        self.file.write_all_at(chunk, offset).map_err(|e| StorageError::io("writing the temp file", e))
    }

    /// After a whole reply: a one-shot file is exactly the range it holds (a failed
    /// attempt before it may have written further).
    pub(crate) fn finish(&self, written: &Range<u64>) -> Result<(), StorageError> {
        if self.placement == Placement::FromStart {
            self.file
                .set_len(written.end - written.start)
                .map_err(|e| StorageError::io("sizing the temp file", e))?;
        }
        Ok(())
    }
}

/// How a reply's status and headers fit what was asked: the body's first byte is the
/// object's `body_start`; its bytes `[start, stop)` are kept (`stop` `None`: until the
/// body ends); the object's size. Everything a ranged read cannot make sense of is
/// [`StorageError::RangedReadFailed`].
pub(crate) struct Plan {
    pub(crate) body_start: u64,
    pub(crate) start: u64,
    pub(crate) stop: Option<u64>,
    pub(crate) total: Option<u64>,
}

impl Plan {
    /// A 206 with `Content-Range: bytes first-last/total`.
    pub(crate) fn partial(
        want: Want,
        content_range: Option<(u64, u64, Option<u64>)>,
    ) -> Result<Plan, StorageError> {
        let (first, last, total) =
            content_range.ok_or_else(|| ranged_failed("a 206 reply without a usable Content-Range"))?;
        let total = total.ok_or_else(|| ranged_failed("the server does not say the object's size"))?;
        let short = want.to_the_end() && last.saturating_add(1) != total;
        if first != want.first(total) || last < first || last >= total || short {
            return Err(ranged_failed(format!(
                "asked for {}, got bytes {first}-{last} of {total}",
                want.header_value().unwrap_or_default()
            )));
        }
        Ok(Plan { body_start: first, start: first, stop: Some(last + 1), total: Some(total) })
    }

    /// A 200: the server ignored `Range` and the whole object follows, `Content-Length`
    /// long if it says. At the object's offsets, what was asked and all that comes
    /// before it is kept (it is on the way anyway); from the start of a one-shot file,
    /// what was asked only, the bytes before it read and dropped. A suffix cannot be
    /// found in a stream whose length is not said.
    pub(crate) fn whole_body(
        want: Want,
        placement: Placement,
        length: Option<u64>,
    ) -> Result<Plan, StorageError> {
        if matches!(want, Want::Range(ByteRange::Suffix(_))) && length.is_none() {
            return Err(ranged_failed(format!(
                "the server ignored Range ({}) and did not say the object's length",
                want.header_value().unwrap_or_default()
            )));
        }
        let start = match placement {
            Placement::ObjectOffsets => 0,
            Placement::FromStart => want.first(length.unwrap_or(0)),
        };
        Ok(Plan { body_start: 0, start, stop: want.stop(length), total: length })
    }

    /// A 416: the range starts at or past the object's end (`size` from
    /// `Content-Range: bytes */size`). A range starting at 0 is unsatisfiable only for
    /// an empty object, whatever the headers say.
    pub(crate) fn unsatisfiable(want: Want, size: Option<u64>) -> Result<Plan, StorageError> {
        if want.first(0) == 0 && size.unwrap_or(0) == 0 {
            return Ok(Plan { body_start: 0, start: 0, stop: Some(0), total: Some(0) });
        }
        match size {
            Some(total) => Err(ranged_failed(format!(
                "bytes from {} asked of an object of {total} bytes",
                want.first(total)
            ))),
            None => Err(ranged_failed("416 without the object's size")),
        }
    }
}

pub(crate) fn ranged_failed(reason: impl Into<String>) -> StorageError {
    StorageError::RangedReadFailed { reason: reason.into() }
}

/// One read of the local provider: the same bytes a server would send, through the same
/// writer. Its version, as an ETag would be: a file replaced or rewritten between two
/// reads gets another one.
pub(crate) async fn read_local(
    source: &Path,
    want: Want,
    out: &Writer<'_>,
    downloaded: &mut u64,
) -> Result<Reply, StorageError> {
    let mut input =
        tokio::fs::File::open(source).await.map_err(|e| StorageError::io("opening a local file", e))?;
    let meta = input.metadata().await.map_err(|e| StorageError::io("reading local metadata", e))?;
    if !meta.is_file() {
        return Err(StorageError::NotFound { what: format!("local file {}", source.display()) });
    }
    let total = meta.len();
    let version = {
        use std::os::unix::fs::MetadataExt;
        format!("local-{}-{}-{}.{}-{}", meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.len())
    };
    let start = want.first(total).min(total);
    let stop = want.stop(Some(total)).unwrap_or(total).max(start);
    out.admit(Some(total), start, Some(stop))?;
    input
        .seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| StorageError::io("seeking a local file", e))?;
    let mut input = input.take(stop - start);
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = start;
    loop {
        let n = input.read(&mut buf).await.map_err(|e| StorageError::io("reading a local file", e))?;
        if n == 0 {
            break;
        }
        out.write(start, at, &buf[..n])?;
        at += n as u64;
        *downloaded += n as u64;
    }
    let written = start..at;
    out.finish(&written)?;
    Ok(Reply { total: Some(total), written, etag: Some(version) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_what_was_asked() {
        let span = |s, e| Want::Range(ByteRange::Span { start: s, end: e });
        // 206: the range asked for, within the object.
        let p = Plan::partial(span(10, 19), Some((10, 19, Some(100)))).unwrap();
        assert_eq!((p.start, p.stop, p.total), (10, Some(20), Some(100)));
        assert!(Plan::partial(span(10, 19), Some((0, 19, Some(100)))).is_err());
        assert!(Plan::partial(span(10, 19), Some((10, 19, None))).is_err());
        assert!(Plan::partial(Want::Whole, Some((0, 49, Some(100)))).is_err(), "a whole read cut short");
        let p = Plan::partial(Want::Range(ByteRange::Suffix(10)), Some((90, 99, Some(100)))).unwrap();
        assert_eq!((p.start, p.stop), (90, Some(100)));
        // 200: a prefix is cut from the stream, a one-shot span further in is not.
        let p = Plan::whole_body(Want::Range(ByteRange::Prefix(4)), Placement::FromStart, Some(16)).unwrap();
        assert_eq!((p.body_start, p.start, p.stop, p.total), (0, 0, Some(4), Some(16)));
        // 200 to a span or a suffix: a one-shot file drops what comes before it.
        let p = Plan::whole_body(span(5, 9), Placement::FromStart, Some(16)).unwrap();
        assert_eq!((p.body_start, p.start, p.stop), (0, 5, Some(10)));
        let p = Plan::whole_body(span(5, 9), Placement::ObjectOffsets, Some(16)).unwrap();
        assert_eq!((p.start, p.stop), (0, Some(10)));
        let p = Plan::whole_body(Want::Range(ByteRange::Suffix(3)), Placement::FromStart, Some(16)).unwrap();
        assert_eq!((p.start, p.stop), (13, Some(16)));
        assert!(Plan::whole_body(Want::Range(ByteRange::Suffix(3)), Placement::FromStart, None).is_err());
        let p = Plan::whole_body(Want::Whole, Placement::FromStart, None).unwrap();
        assert_eq!((p.stop, p.total), (None, None));
        // 416: empty for a read from 0, else a failed ranged read.
        assert_eq!(Plan::unsatisfiable(Want::Whole, None).unwrap().total, Some(0));
        assert!(Plan::unsatisfiable(span(5, 9), Some(3)).is_err());
    }

    #[test]
    fn the_writer_keeps_the_file_within_the_limit() {
        let file = tempfile::tempfile().unwrap();
        let one_shot = Writer { file: &file, placement: Placement::FromStart, max_bytes: 8 };
        one_shot.admit(Some(1000), 100, Some(108)).unwrap();
        assert_eq!(one_shot.admit(None, 100, Some(109)).unwrap_err().code().as_str(), "too_large");
        one_shot.write(100, 100, b"abcd").unwrap();
        one_shot.write(100, 104, b"efgh").unwrap();
        let StorageError::TooLarge { received, .. } = one_shot.write(100, 108, b"i").unwrap_err() else {
            panic!()
        };
        assert_eq!(received, 9);
        one_shot.finish(&(100..108)).unwrap();
        let mut got = vec![0; 8];
        file.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, b"abcdefgh");
        let sparse = Writer { file: &file, placement: Placement::ObjectOffsets, max_bytes: 8 };
        // The object's size is what counts, whatever part of it is read.
        assert!(sparse.admit(Some(9), 0, Some(1)).is_err());
        sparse.admit(Some(8), 0, Some(1)).unwrap();
    }
}
