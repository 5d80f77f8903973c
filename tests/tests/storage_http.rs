//! The download path against a tiny scripted HTTP server on loopback, for the fault
//! sequences real S3 servers do not produce on demand: 503 then 200, resets, a 403 that
//! must not be retried, a chunked body above the size limit, a stalled body (timeout and
//! task cancellation), redirects.

mod storage_support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asset_core::ErrorCode;
use asset_storage::{ByteRange, SignedUrl, Storage, StorageConfig, StorageError};
use storage_support::{config, files_in};
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
}

struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

/// Serves `script` in order, one reply per connection; the last reply repeats.
async fn serve(script: Vec<Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url =
        format!("http://{}/bucket/key?X-Amz-Signature=f00dfeedf00dfeed", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let (h, r) = (hits.clone(), ranges.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let reply = {
                let mut s = script.lock().unwrap();
                if s.len() > 1 { s.pop_front().unwrap() } else { s.front().unwrap().clone() }
            };
            let (h, r) = (h.clone(), r.clone());
            tokio::spawn(async move { answer(stream, reply, h, r).await });
        }
    });
    Server { url, hits, ranges }
}

async fn answer(
    mut stream: TcpStream,
    reply: Reply,
    hits: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
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
    let _ = match reply {
        Reply::Error(status, code) => {
            let body = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>scripted</Message></Error>");
            let head = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(format!("{head}{body}").as_bytes()).await
        }
        Reply::Body(body) => {
            let (status, body) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=0-")) {
                Some(end) => {
                    let end: usize = end.trim().parse().unwrap();
                    ("206 Partial Content", &body[..=end.min(body.len() - 1)])
                }
                None => ("200 OK", body),
            };
            let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            stream.write_all(head.as_bytes()).await.and(stream.write_all(body).await)
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
        Reply::Redirect => {
            stream
                .write_all(b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n")
                .await
        }
    };
}

struct Fixture {
    temp: tempfile::TempDir,
    storage: Storage,
}

async fn fixture(tune: impl FnOnce(&mut StorageConfig)) -> Fixture {
    let temp = tempfile::tempdir().unwrap();
    let mut cfg = config(temp.path());
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
