//! The download path against a tiny scripted HTTP server on loopback, for the fault
//! sequences real S3 servers do not produce on demand: 503 then 200, resets, a 403 that
//! must not be retried, a chunked body above the size limit, a stalled body (timeout and
//! task cancellation), redirects; error bodies full of text that must not reach results,
//! objects replaced between ranged reads behind a server that ignores `If-Match`, and a
//! temp dir that runs out of space.

mod storage_support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asset_core::ErrorCode;
use asset_storage::{ByteRange, SignedUrl, Storage, StorageConfig, StorageError};
use storage_support::{config_allowing, files_in};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
enum Reply {
    /// A status with an S3-style XML error body.
    Error(u16, &'static str),
    /// 200 (or 206 when the request had a Range) with this body.
    Body(&'static [u8]),
    /// 200, `Transfer-Encoding: chunked` (no length known up front), `total` bytes.
    Chunked { total: usize, chunk: usize },
    /// Announces 1000 bytes, sends 10, closes the connection.
    CutMidBody,
    /// Announces 1 MB, sends 1000 bytes, then nothing, ever.
    Stall,
    /// A redirect to another host.
    Redirect,
    /// A status with an S3-style XML error body: this code, this message, then `pad`
    /// bytes of more text (a huge body).
    ErrorWithText { status: u16, code: &'static str, message: &'static str, pad: usize },
    /// Honours `bytes=A-B` with 206, `Content-Range` and this `ETag`; 412 when the
    /// request's `If-Match` names another version.
    Ranged { body: &'static [u8], etag: &'static str },
    /// 200 with the whole body, its length and an ETag, whatever the `Range`.
    IgnoresRange(&'static [u8]),
    /// As `Ranged`, but `If-Match` is ignored (as some servers do); 200 with the whole
    /// body when the request has no `Range`.
    RangedIgnoringIfMatch { body: &'static [u8], etag: &'static str },
    /// As `Ranged`, without an `ETag` header.
    RangedWithoutEtag(&'static [u8]),
    /// 206 for the first 10 bytes, whatever was asked.
    WrongRange(&'static [u8]),
    /// 416 with `Content-Range: bytes */0`, as for a range of an empty object.
    Unsatisfiable,
}

struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
    /// The `Range` and the `If-Match` of each request, in order.
    ranges: Arc<Mutex<Vec<Option<String>>>>,
    if_matches: Arc<Mutex<Vec<Option<String>>>>,
}

/// Serves `script` in order, one reply per connection; the last reply repeats.
async fn serve(script: Vec<Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url =
        format!("http://{}/bucket/key?X-Amz-Signature=f00dfeedf00dfeed", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let if_matches = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let (h, r, m) = (hits.clone(), ranges.clone(), if_matches.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let reply = {
                let mut s = script.lock().unwrap();
                if s.len() > 1 { s.pop_front().unwrap() } else { s.front().unwrap().clone() }
            };
            let (h, r, m) = (h.clone(), r.clone(), m.clone());
            tokio::spawn(async move { answer(stream, reply, h, r, m).await });
        }
    });
    Server { url, hits, ranges, if_matches }
}

async fn answer(
    mut stream: TcpStream,
    reply: Reply,
    hits: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
    if_matches: Arc<Mutex<Vec<Option<String>>>>,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let request = String::from_utf8_lossy(&request).to_lowercase();
    let range = request.lines().find_map(|l| l.strip_prefix("range: ").map(str::to_owned));
    ranges.lock().unwrap().push(range.clone());
    let if_match = request.lines().find_map(|l| l.strip_prefix("if-match: ").map(|v| v.trim().to_owned()));
    if_matches.lock().unwrap().push(if_match);
    let _ = match reply {
        Reply::Error(status, code) => {
            let body = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>scripted</Message></Error>");
            let head = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(format!("{head}{body}").as_bytes()).await
        }
        // A range from the start (`bytes=0-N`, or `bytes=0-` for all of it) as a server
        // answers it: 206 with its Content-Range; anything else, the whole body.
        Reply::Body(body) => {
            let (status, range, part) = match range.as_deref() {
                Some(r) if r.trim().starts_with("bytes=0-") && !body.is_empty() => {
                    let (a, b) = parse_range(r, body.len());
                    ("206 Partial Content", format!("Content-Range: bytes {a}-{b}/{}\r\n", body.len()), &body[a..=b])
                }
                _ => ("200 OK", String::new(), body),
            };
            let head =
                format!("HTTP/1.1 {status}\r\n{range}Content-Length: {}\r\nConnection: close\r\n\r\n", part.len());
            stream.write_all(head.as_bytes()).await.and(stream.write_all(part).await)
        }
        Reply::Chunked { total, chunk } => {
            let mut result = stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").await;
            let data = vec![b'x'; chunk];
            let mut sent = 0;
            while result.is_ok() && sent < total {
                result = stream.write_all(format!("{chunk:x}\r\n").as_bytes()).await;
                result = result.and(stream.write_all(&data).await).and(stream.write_all(b"\r\n").await);
                sent += chunk;
            }
            result.and(stream.write_all(b"0\r\n\r\n").await)
        }
        Reply::CutMidBody => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n0123456789").await
        }
        Reply::Stall => {
            let r = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n").await;
            let r = r.and(stream.write_all(&[b's'; 1000]).await);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            r
        }
        Reply::Ranged { body, etag } => {
            let if_match = request.lines().find_map(|l| l.strip_prefix("if-match: ").map(str::to_owned));
            if if_match.is_some_and(|m| m.trim() != etag.to_lowercase()) {
                stream.write_all(b"HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\n\r\n").await
            } else {
                let (a, b) = parse_range(range.as_deref().unwrap(), body.len());
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    b - a + 1
                );
                stream.write_all(head.as_bytes()).await.and(stream.write_all(&body[a..=b]).await)
            }
        }
        Reply::IgnoresRange(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"whole\"\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.and(stream.write_all(body).await)
        }
        Reply::RangedIgnoringIfMatch { body, etag } => match range.as_deref() {
            None => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await.and(stream.write_all(body).await)
            }
            Some(r) => {
                let (a, b) = parse_range(r, body.len());
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    b - a + 1
                );
                stream.write_all(head.as_bytes()).await.and(stream.write_all(&body[a..=b]).await)
            }
        },
        Reply::RangedWithoutEtag(body) => {
            let (a, b) = parse_range(range.as_deref().unwrap(), body.len());
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len(),
                b - a + 1
            );
            stream.write_all(head.as_bytes()).await.and(stream.write_all(&body[a..=b]).await)
        }
        Reply::ErrorWithText { status, code, message, pad } => {
            let body = format!(
                "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>{message}</Message><Resource>{}</Resource></Error>",
                message.repeat(pad / message.len().max(1))
            );
            let head = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.and(stream.write_all(body.as_bytes()).await)
        }
        Reply::WrongRange(body) => {
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/{}\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.and(stream.write_all(&body[..10]).await)
        }
        Reply::Unsatisfiable => {
            stream
                .write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */0\r\nContent-Length: 0\r\n\r\n")
                .await
        }
        Reply::Redirect => {
            stream
                .write_all(b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n")
                .await
        }
    };
}

/// `bytes=A-B` (or `bytes=A-`, to the end) of a body of `len` bytes, clamped as servers
/// do: inclusive bounds.
fn parse_range(range: &str, len: usize) -> (usize, usize) {
    let (a, b) = range.trim().strip_prefix("bytes=").unwrap().split_once('-').unwrap();
    let a: usize = a.parse().unwrap();
    let b: usize =
        if b.trim().is_empty() { len - 1 } else { b.trim().parse::<usize>().unwrap().min(len - 1) };
    (a, b)
}

/// A deterministic body of `len` bytes that lives for the whole test run.
fn body(len: usize) -> &'static [u8] {
    Box::leak((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into_boxed_slice())
}

struct Fixture {
    temp: tempfile::TempDir,
    storage: Storage,
}

async fn fixture(tune: impl FnOnce(&mut StorageConfig)) -> Fixture {
    let temp = tempfile::tempdir().unwrap();
    // The scripted servers listen on loopback ports of their own.
    let mut cfg = config_allowing(temp.path(), "127.0.0.1");
    tune(&mut cfg);
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    Fixture { storage: Storage::with_aws_config(cfg, base).unwrap(), temp }
}

#[tokio::test]
async fn a_503_slowdown_then_200_is_retried() {
    let f = fixture(|_| {}).await;
    let server = serve(vec![Reply::Error(503, "SlowDown"), Reply::Body(b"hello world")]).await;
    let asset = f.storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), b"hello world");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    drop(asset);
    assert!(files_in(f.temp.path()).is_empty());
}

#[tokio::test]
async fn a_500_and_a_cut_connection_are_retried() {
    let f = fixture(|_| {}).await;
    let server =
        serve(vec![Reply::Error(500, "InternalError"), Reply::CutMidBody, Reply::Body(b"whole")]).await;
    let asset = f.storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), b"whole");
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    // The cut attempt's 10 bytes count as downloaded too.
    assert_eq!(asset.bytes_downloaded(), 15);
    drop(asset);
    assert!(files_in(f.temp.path()).is_empty(), "a failed attempt left its partial file");
}

#[tokio::test]
async fn a_403_and_a_404_are_not_retried() {
    let f = fixture(|_| {}).await;
    let server = serve(vec![Reply::Error(403, "AccessDenied")]).await;
    let err = f.storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessDenied);
    assert!(!err.is_retryable());
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    let server = serve(vec![Reply::Error(404, "NoSuchKey")]).await;
    let err = f.storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert!(!err.to_string().contains("f00dfeed"), "the signature leaked into {err}");
}

#[tokio::test]
async fn throttling_gives_up_after_the_configured_retries() {
    let f = fixture(|_| {}).await;
    let server = serve(vec![Reply::Error(503, "SlowDown")]).await;
    let err = f.storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Throttled);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1 + f.storage.config().retry.max_retries as usize);
}

#[tokio::test]
async fn a_body_above_the_limit_without_a_length_is_stopped_early() {
    let limit = 64 * 1024;
    let f = fixture(|c| c.max_asset_bytes = limit).await;
    let server = serve(vec![Reply::Chunked { total: 64 * 1024 * 1024, chunk: 8 * 1024 }]).await;
    let err = f.storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap_err();
    let StorageError::TooLarge { limit: l, received } = err else { panic!("{err:?}") };
    assert_eq!(l, limit);
    // Stopped at the first chunk past the limit, not after 64 MB.
    assert!(received > limit && received <= limit + 64 * 1024, "received {received}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "too_large is not retried");
    assert!(files_in(f.temp.path()).is_empty());
}

#[tokio::test]
async fn range_requests_send_the_range_header() {
    let f = fixture(|_| {}).await;
    let server = serve(vec![Reply::Body(b"0123456789abcdef")]).await;
    let asset = f
        .storage
        .download_signed(&SignedUrl::new(&server.url, None), Some(ByteRange::Prefix(4)))
        .await
        .unwrap();
    assert_eq!(std::fs::read(asset.path()).unwrap(), b"0123");
    assert_eq!(server.ranges.lock().unwrap().as_slice(), &[Some("bytes=0-3".to_owned())]);
}

#[tokio::test]
async fn a_full_download_is_the_range_from_zero_whatever_the_server_makes_of_it() {
    let f = fixture(|_| {}).await;
    let data = body(300_000);
    let server = serve(vec![
        Reply::Body(data),
        Reply::IgnoresRange(data),
        Reply::Chunked { total: 3 * 1024, chunk: 1024 },
        Reply::Unsatisfiable,
    ])
    .await;
    let url = SignedUrl::new(&server.url, None);
    // 206 with all of it; 200 with all of it; 200, chunked, no length: the body to its
    // end is the object; 416 to `bytes=0-`: an empty object.
    let want: [&[u8]; 4] = [data, data, &[b'x'; 3 * 1024], b""];
    for expected in want {
        let asset = f.storage.download_signed(&url, None).await.unwrap();
        assert_eq!(std::fs::read(asset.path()).unwrap(), expected);
        assert_eq!(asset.size(), expected.len() as u64);
    }
    assert!(server.ranges.lock().unwrap().iter().all(|r| r.as_deref() == Some("bytes=0-")));
    assert_eq!(server.hits.load(Ordering::SeqCst), 4);
    assert!(files_in(f.temp.path()).is_empty(), "every asset was dropped, and its file with it");
}

#[tokio::test]
async fn a_one_shot_span_or_suffix_from_a_server_that_ignores_range() {
    let f = fixture(|_| {}).await;
    let data = body(1000);
    let server = serve(vec![Reply::IgnoresRange(data)]).await;
    let url = SignedUrl::new(&server.url, None);
    // The bytes before the span are read and dropped; the file is the span.
    let span = f.storage.download_signed(&url, Some(ByteRange::Span { start: 100, end: 199 })).await.unwrap();
    assert_eq!(std::fs::read(span.path()).unwrap(), &data[100..200]);
    // A suffix: the first byte says the size, then the span (never `bytes=-n`).
    let suffix = f.storage.download_signed(&url, Some(ByteRange::Suffix(10))).await.unwrap();
    assert_eq!(std::fs::read(suffix.path()).unwrap(), &data[990..]);
    assert_eq!(
        server.ranges.lock().unwrap().as_slice(),
        &[Some("bytes=100-199".to_owned()), Some("bytes=0-0".to_owned()), Some("bytes=990-999".to_owned())]
    );
    // What must be streamed to reach the span is bounded by the size limit.
    let small = fixture(|c| c.max_asset_bytes = 500).await;
    let err = small.storage.download_signed(&url, Some(ByteRange::Span { start: 600, end: 609 })).await;
    let StorageError::TooLarge { received, .. } = err.unwrap_err() else { panic!("not too_large") };
    assert_eq!(received, 0, "refused before the body");
    assert!(files_in(small.temp.path()).is_empty());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let f = fixture(|_| {}).await;
    let server = serve(vec![Reply::Redirect]).await;
    let err = f.storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Upstream);
    assert!(!err.is_retryable());
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    let f = fixture(|c| {
        c.read_timeout = Duration::from_millis(300);
        c.retry.max_retries = 1;
    })
    .await;
    let server = serve(vec![Reply::Stall]).await;
    let err = f.storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2, "a timeout is retried");
    assert!(files_in(f.temp.path()).is_empty());
}

#[tokio::test]
async fn a_cancelled_download_leaves_no_file() {
    let f = fixture(|_| {}).await;
    let server = serve(vec![Reply::Stall]).await;
    let storage = f.storage.clone();
    let url = SignedUrl::new(&server.url, None);
    let task = tokio::spawn(async move { storage.download_signed(&url, None).await });
    // Wait until the partial file exists: the download is under way.
    while files_in(f.temp.path()).is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(files_in(f.temp.path()).is_empty(), "cancellation left {:?}", files_in(f.temp.path()));
}

#[tokio::test]
async fn ranged_reads_write_at_the_objects_offsets_and_cost_only_those_bytes() {
    let f = fixture(|_| {}).await;
    let data = body(1_000_000);
    let server = serve(vec![Reply::Ranged { body: data, etag: "\"v1\"" }]).await;
    let url = SignedUrl::new(&server.url, None);
    let (mut partial, first) = f.storage.open_partial_signed(url, 65_536).await.unwrap();
    assert_eq!(first, 0..65_536);
    assert_eq!(partial.total(), 1_000_000);
    assert_eq!(std::fs::metadata(partial.path()).unwrap().len(), 1_000_000, "a sparse file of the full size");
    assert_eq!(partial.fetch(500_000..500_100).await.unwrap(), 500_000..500_100);
    // Clamped to the object.
    assert_eq!(partial.fetch(999_000..2_000_000).await.unwrap(), 999_000..1_000_000);
    assert_eq!(partial.fetch(1_000_000..1_000_010).await.unwrap(), 1_000_000..1_000_000);
    assert_eq!(partial.bytes_downloaded(), 65_536 + 100 + 1_000);
    assert_eq!(partial.requests(), 3);
    let on_disk = std::fs::read(partial.path()).unwrap();
    for r in [0..65_536, 500_000..500_100, 999_000..1_000_000] {
        assert_eq!(&on_disk[r.clone()], &data[r.clone()], "{r:?}");
    }
    assert!(on_disk[65_536..500_000].iter().all(|&b| b == 0), "nothing was written outside the ranges");
    let ranges = server.ranges.lock().unwrap().clone();
    assert_eq!(
        ranges,
        [
            Some("bytes=0-65535".into()),
            Some("bytes=500000-500099".into()),
            Some("bytes=999000-999999".into())
        ]
    );
    drop(partial);
    assert!(files_in(f.temp.path()).is_empty());
}

#[tokio::test]
async fn a_server_that_ignores_range_is_read_only_up_to_the_range_end() {
    let f = fixture(|_| {}).await;
    let data = body(8_000_000);
    let server = serve(vec![Reply::IgnoresRange(data)]).await;
    let (mut partial, first) =
        f.storage.open_partial_signed(SignedUrl::new(&server.url, None), 65_536).await.unwrap();
    assert_eq!(first, 0..65_536);
    assert_eq!(partial.total(), 8_000_000, "the size comes from Content-Length");
    // The connection is dropped at the range end: at most a socket buffer more arrives.
    assert!(partial.bytes_downloaded() < 1_000_000, "read {} of 8 MB", partial.bytes_downloaded());
    // A later range costs the bytes up to its end, which are all kept.
    assert_eq!(partial.fetch(2_000_000..2_000_100).await.unwrap(), 0..2_000_100);
    assert!(partial.bytes_downloaded() < 4_000_000, "read {} of 8 MB", partial.bytes_downloaded());
    let on_disk = std::fs::read(partial.path()).unwrap();
    assert_eq!(&on_disk[..2_000_100], &data[..2_000_100]);
}

#[tokio::test]
async fn replies_a_ranged_read_cannot_use_ask_for_the_full_download() {
    let f = fixture(|_| {}).await;
    // Another range than the one asked for.
    let server = serve(vec![Reply::WrongRange(body(100_000))]).await;
    let (mut partial, first) =
        f.storage.open_partial_signed(SignedUrl::new(&server.url, None), 10).await.unwrap();
    assert_eq!(first, 0..10);
    let err = partial.fetch(50_000..50_010).await.unwrap_err();
    assert!(err.wants_full_download() && !err.is_retryable(), "{err:?}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2, "not retried");
    drop(partial);

    // The object was replaced between two reads: If-Match fails.
    let data = body(100_000);
    let server = serve(vec![
        Reply::Ranged { body: data, etag: "\"v1\"" },
        Reply::Ranged { body: data, etag: "\"v2\"" },
    ])
    .await;
    let (mut partial, _) =
        f.storage.open_partial_signed(SignedUrl::new(&server.url, None), 4096).await.unwrap();
    let err = partial.fetch(50_000..60_000).await.unwrap_err();
    assert!(err.wants_full_download(), "{err:?}");
    assert!(err.to_string().contains("changed"), "{err}");

    // Ordinary faults keep their own meaning.
    let server = serve(vec![Reply::Error(403, "AccessDenied")]).await;
    let err = f.storage.open_partial_signed(SignedUrl::new(&server.url, None), 4096).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AccessDenied);
    assert!(!err.wants_full_download());
    drop(partial);
    assert!(files_in(f.temp.path()).is_empty());
}

#[tokio::test]
async fn an_empty_object_and_a_transient_fault_in_ranged_reads() {
    let f = fixture(|_| {}).await;
    let server = serve(vec![Reply::Unsatisfiable]).await;
    let (partial, first) =
        f.storage.open_partial_signed(SignedUrl::new(&server.url, None), 65_536).await.unwrap();
    assert_eq!((first, partial.total()), (0..0, 0));

    let server =
        serve(vec![Reply::Error(503, "SlowDown"), Reply::Ranged { body: body(100), etag: "\"e\"" }]).await;
    let (partial, first) =
        f.storage.open_partial_signed(SignedUrl::new(&server.url, None), 65_536).await.unwrap();
    assert_eq!((first, partial.total()), (0..100, 100));
    assert_eq!(server.hits.load(Ordering::SeqCst), 2, "the 503 was retried");

    let small = fixture(|c| c.max_asset_bytes = 50).await;
    let server = serve(vec![Reply::Ranged { body: body(100), etag: "\"e\"" }]).await;
    let err = small.storage.open_partial_signed(SignedUrl::new(&server.url, None), 10).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge);
    assert!(files_in(small.temp.path()).is_empty());
}

/// Issue 8: a storage server's error text was copied into results (truncated); only our
/// own sentence and the server's error code may be there.
#[tokio::test]
async fn error_messages_keep_the_servers_code_never_its_text() {
    const MARKER: &str = "MARKER-please-visit-evil.example-and-paste-your-token ";
    let f = fixture(|_| {}).await;
    for (status, code, want) in [
        (403, "AccessDenied", ErrorCode::AccessDenied),
        (404, "NoSuchKey", ErrorCode::NotFound),
        (500, "InternalError", ErrorCode::Upstream),
        (503, "SlowDown", ErrorCode::Throttled),
        (400, "InvalidRequest", ErrorCode::Upstream),
        // A "code" that is free text itself is dropped for the status.
        (400, "Call 555-0100 now", ErrorCode::Upstream),
    ] {
        let server =
            serve(vec![Reply::ErrorWithText { status, code, message: MARKER, pad: 4 * 1024 * 1024 }]).await;
        let err = f.storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap_err();
        assert_eq!(err.code(), want, "{status} {code}: {err}");
        let text = format!("{err} | {err:?}");
        assert!(!text.contains("MARKER") && !text.contains("evil.example"), "{text}");
        assert!(text.len() < 300, "{} bytes: {text}", text.len());
        let shown = if code.contains(' ') { format!("HTTP {status}") } else { code.to_owned() };
        assert!(err.to_string().contains(&shown), "{err}");
    }
}

/// The same through the SDK (`validate-storage`'s calls): its error text and debug
/// output carry the server's message; the report keeps the code.
#[tokio::test]
async fn sdk_errors_keep_the_servers_code_never_its_text() {
    const MARKER: &str = "MARKER-sdk-free-text ";
    let f = fixture(|c| {
        c.org_secrets = asset_storage::OrgSecrets::from_pairs([("ORG_SECRET_ORG_1__KEY", "secret-key")]);
    })
    .await;
    let server = serve(vec![Reply::ErrorWithText {
        status: 403,
        code: "AccessDenied",
        message: MARKER,
        pad: 1024 * 1024,
    }])
    .await;
    let endpoint = server.url.split("/bucket").next().unwrap().to_owned();
    let integration: asset_core::Integration = serde_json::from_value(serde_json::json!({
        "id": "int-1", "org_id": "org-1", "provider": "s3_compatible", "endpoint": endpoint,
        "buckets": ["bucket"], "access": {"type": "iam_user", "access_key_id": "AKIAX", "secret_ref": "env:KEY"}
    }))
    .unwrap();
    let opts = asset_storage::ValidateOptions { key: Some("key".into()), origin: None };
    let report = f.storage.validate_access(&integration, &opts).await;
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("MARKER"), "{text}");
    let bucket = report.checks.iter().find(|c| c.name == asset_storage::CheckName::Bucket).unwrap();
    assert_eq!(bucket.code.as_deref(), Some("access_denied"), "{text}");
    assert!(bucket.message.contains("AccessDenied") && bucket.message.len() < 200, "{}", bucket.message);
    assert!(server.hits.load(Ordering::SeqCst) >= 1);
}

/// Issue 8: an object replaced between ranged reads with the same size was stitched from
/// two versions (`status ok`) because the server ignored `If-Match`.
#[tokio::test]
async fn an_object_replaced_between_ranged_reads_fails_over_to_one_full_read() {
    let f = fixture(|_| {}).await;
    let v1 = body(100_000);
    let v2: &'static [u8] = Box::leak(v1.iter().map(|b| b ^ 0x55).collect::<Vec<_>>().into_boxed_slice());
    let server = serve(vec![
        Reply::RangedIgnoringIfMatch { body: v1, etag: "\"v1\"" },
        Reply::RangedIgnoringIfMatch { body: v2, etag: "\"v2\"" },
    ])
    .await;
    let url = SignedUrl::new(&server.url, None);
    let (mut partial, first) = f.storage.open_partial_signed(url.clone(), 4096).await.unwrap();
    assert_eq!((first, partial.total()), (0..4096, 100_000));
    let err = partial.fetch(50_000..60_000).await.unwrap_err();
    assert!(err.wants_full_download() && !err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("ETag"), "{err}");
    // If-Match was sent; the server ignored it.
    assert_eq!(server.if_matches.lock().unwrap().clone(), [None, Some("\"v1\"".to_owned())]);
    drop(partial);
    // The fallback: one request, one version, whole.
    let full = f.storage.download_signed(&url, None).await.unwrap();
    assert_eq!(std::fs::read(full.path()).unwrap(), v2);
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    drop(full);
    assert!(files_in(f.temp.path()).is_empty());
}

#[tokio::test]
async fn ranged_replies_without_an_etag_cannot_be_stitched() {
    let f = fixture(|_| {}).await;
    let data = body(100_000);
    // None after the first reply had one.
    let server =
        serve(vec![Reply::Ranged { body: data, etag: "\"v1\"" }, Reply::RangedWithoutEtag(data)]).await;
    let (mut partial, _) =
        f.storage.open_partial_signed(SignedUrl::new(&server.url, None), 4096).await.unwrap();
    let err = partial.fetch(50_000..60_000).await.unwrap_err();
    assert!(err.wants_full_download(), "{err:?}");
    assert!(err.to_string().contains("without an ETag"), "{err}");
    drop(partial);
    // None at all: a first read alone is fine, a second cannot be proven consistent.
    let server = serve(vec![Reply::RangedWithoutEtag(data)]).await;
    let (mut partial, first) =
        f.storage.open_partial_signed(SignedUrl::new(&server.url, None), 4096).await.unwrap();
    assert_eq!(first, 0..4096);
    let err = partial.fetch(50_000..60_000).await.unwrap_err();
    assert!(err.wants_full_download(), "{err:?}");
    drop(partial);
    assert!(files_in(f.temp.path()).is_empty());
}

/// A tmpfs of `size`, unmounted on drop; `None` (skipped, with a note) where this
/// process may not mount (not root, or a sandbox that forbids it).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)");
            return None;
        }
        Some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Issue 8: a full TEMP_DIR produced permanent `io` error rows; running out of local
/// space is transient and must say so.
#[tokio::test]
async fn a_full_temp_dir_is_a_retryable_error_naming_enospc() {
    let Some(tmpfs) = Tmpfs::mount("256k") else { return };
    let work = tmpfs.dir.path().join("work");
    let base = storage_support::base_config("http://127.0.0.1:9", "AKIAUNUSEDUNUSED0000", "unused").await;
    let storage = Storage::with_aws_config(config_allowing(&work, "127.0.0.1"), base).unwrap();
    let check = |err: &StorageError| {
        assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
        assert!(err.is_local_exhaustion() && err.is_retryable(), "{err}");
        assert_eq!(err.code(), ErrorCode::Io);
        assert!(err.to_string().contains("no space left on device (os error 28)"), "{err}");
    };

    let server = serve(vec![Reply::Body(body(1024 * 1024))]).await;
    let err = storage.download_signed(&SignedUrl::new(&server.url, None), None).await.unwrap_err();
    check(&err);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "retried in place against the same full disk");
    assert!(files_in(&work).is_empty(), "the partial file was left on the full disk");

    // Ranged: the sparse file costs nothing, the first read fits, a large one does not.
    let server = serve(vec![Reply::Ranged { body: body(1024 * 1024), etag: "\"e\"" }]).await;
    let (mut partial, _) =
        storage.open_partial_signed(SignedUrl::new(&server.url, None), 65_536).await.unwrap();
    let err = partial.fetch(65_536..1024 * 1024).await.unwrap_err();
    check(&err);
    drop(partial);
    assert!(files_in(&work).is_empty());
}
