//! Bounded memory on the miss path: large chunked responses stream through the proxy
//! without being buffered whole, slow readers hold the fetch back instead of the proxy
//! buffering for them, and a fetch every client has left is abandoned. The proxy's
//! resident memory is read from /proc while the bytes flow.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use common::*;

const MIB: u64 = 1 << 20;
/// The proxy's resident memory must stay under this while hundreds of MiB stream through
/// (it starts near 15 MiB and stays near 20 MiB in these tests).
const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// What the proxy is given: the issue's `cache_mem`, and objects of 1 MiB at most.
const SMALL_CACHE: [(&str, &str); 2] = [("cache_mem", "16M"), ("max_object_size", "1M")];

/// What an origin's large bodies went through: sent to the end, or dropped on the way
/// (the proxy closed the connection).
#[derive(Default)]
struct Streams {
    finished: AtomicUsize,
    dropped: AtomicUsize,
}

/// Counts a body as dropped unless it was sent to the end.
struct Sending {
    streams: Arc<Streams>,
    sent: u64,
    done: bool,
}

impl Drop for Sending {
    fn drop(&mut self) {
        let counter = if self.done {
            &self.streams.finished
        } else {
            &self.streams.dropped
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// An origin whose answers are cacheable chunked bodies of `size` bytes, made as they are
/// sent (after the first 64 KiB each waits for `gate` to open); `/small` is 5 bytes.
async fn large_origin(size: u64, gate: watch::Receiver<bool>) -> (Origin, Arc<Streams>) {
    let streams = Arc::new(Streams::default());
    let counted = streams.clone();
    let piece = Bytes::from(vec![b'x'; 64 * 1024]);
    let origin = Origin::start(move |seen| {
        if seen.path == "/small" {
            return Response::new(full("small"));
        }
        let sending = Sending {
            streams: counted.clone(),
            sent: 0,
            done: false,
        };
        let (piece, gate) = (piece.clone(), gate.clone());
        let chunks = futures_util::stream::unfold(sending, move |mut sending| {
            let (piece, mut gate) = (piece.clone(), gate.clone());
            async move {
                if sending.sent >= size {
                    sending.done = true;
                    drop(sending);
                    return None;
                }
                if sending.sent > 0 {
                    let _ = gate.wait_for(|open| *open).await;
                }
                let piece = piece.slice(..(size - sending.sent).min(piece.len() as u64) as usize);
                sending.sent += piece.len() as u64;
                Some((Ok::<_, Infallible>(Frame::data(piece)), sending))
            }
        });
        Response::builder()
            .header("cache-control", "max-age=300")
            .header("content-type", "application/octet-stream")
            .body(StreamBody::new(chunks).boxed())
            .unwrap()
    })
    .await;
    (origin, streams)
}

fn open_gate() -> watch::Receiver<bool> {
    watch::channel(true).1
}

/// A client reading a response through the proxy frame by frame, keeping only the count.
struct Download {
    body: hyper::body::Incoming,
    x_cache: String,
    received: u64,
}

impl Download {
    async fn start(proxy: &Canopy, url: &str) -> Download {
        let response = proxy.open(url).await;
        assert_eq!(response.status(), 200);
        let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
        Download {
            body: response.into_body(),
            x_cache,
            received: 0,
        }
    }

    /// Reads up to `at_least` bytes more (fewer if the body ends); false at the end.
    async fn read(&mut self, at_least: u64) -> bool {
        let until = self.received + at_least;
        while self.received < until {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.received += data.len() as u64;
                    }
                }
                Some(Err(e)) => panic!("body broke after {} bytes: {e}", self.received),
                None => return false,
            }
        }
        true
    }

    /// Reads to the end, pausing `pause` after each MiB.
    async fn read_to_end(&mut self, pause: Duration) -> u64 {
        while self.read(MIB).await {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        self.received
    }
}

#[tokio::test]
async fn a_large_chunked_response_streams_through_in_bounded_memory() {
    let size = 384 * MIB;
    let (origin, streams) = large_origin(size, open_gate()).await;
    let proxy = Canopy::start(&SMALL_CACHE).await;
    let rss = RssSampler::start(proxy.pid());
    let mut download = Download::start(&proxy, &origin.url("/large")).await;
    assert_eq!(download.read_to_end(Duration::ZERO).await, size);
    let peak = rss.peak_kib();
    assert!(
        peak < RSS_LIMIT_KIB,
        "proxy peaked at {peak} KiB streaming {} MiB",
        size / MIB
    );
    assert_eq!(streams.finished.load(Ordering::SeqCst), 1);
    assert_eq!(proxy.stats().await.objects, 0, "too large to store");
}

#[tokio::test]
async fn a_slow_reader_holds_a_large_fill_back_instead_of_the_proxy_buffering() {
    let size = 256 * MIB;
    let (gate, gated) = watch::channel(false);
    let (origin, streams) = large_origin(size, gated).await;
    let proxy = Canopy::start(&SMALL_CACHE).await;
    let rss = RssSampler::start(proxy.pid());
    let url = origin.url("/shared");
    // Both clients have their first bytes before the rest is sent, so they share one fill.
    let mut fast = Download::start(&proxy, &url).await;
    assert!(fast.read(1).await);
    let mut slow = Download::start(&proxy, &url).await;
    assert!(slow.read(1).await);
    gate.send_replace(true);
    let fast = tokio::spawn(async move { fast.read_to_end(Duration::ZERO).await });
    // About 40 MiB/s: far slower than the origin.
    let slow = tokio::spawn(async move { slow.read_to_end(Duration::from_millis(25)).await });
    assert_eq!(fast.await.unwrap(), size);
    assert_eq!(slow.await.unwrap(), size);
    assert_eq!(
        origin.count("/shared"),
        1,
        "the two clients shared one fetch"
    );
    let peak = rss.peak_kib();
    assert!(
        peak < RSS_LIMIT_KIB,
        "proxy peaked at {peak} KiB streaming {} MiB to a slow reader",
        size / MIB
    );
    assert_eq!(streams.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_after_the_limit_is_passed_fetches_on_its_own() {
    let (origin, _streams) = large_origin(64 * MIB, open_gate()).await;
    let proxy = Canopy::start(&SMALL_CACHE).await;
    let url = origin.url("/passing");
    let mut first = Download::start(&proxy, &url).await;
    // Past max_object_size: the fill keeps nothing more, and nobody new joins it.
    assert!(first.read(2 * MIB).await);
    let mut second = Download::start(&proxy, &url).await;
    assert_eq!(second.x_cache, "MISS from canopy-under-test");
    assert_eq!(
        origin.count("/passing"),
        2,
        "the second client fetched alone"
    );
    assert_eq!(second.read_to_end(Duration::ZERO).await, 64 * MIB);
    assert_eq!(first.read_to_end(Duration::ZERO).await, 64 * MIB);
}

#[tokio::test]
async fn large_downloads_every_client_left_are_abandoned() {
    let size = 256 * MIB;
    let (origin, streams) = large_origin(size, open_gate()).await;
    let proxy = Canopy::start(&SMALL_CACHE).await;
    let rss = RssSampler::start(proxy.pid());
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (proxy, url) = (proxy.addr, origin.url(&format!("/left/{i}")));
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
                let request = format!("GET {url} HTTP/1.1\r\nHost: {}\r\n\r\n", &url[7..]);
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut received = 0;
                let mut buf = vec![0; 64 * 1024];
                while received < 2 * MIB {
                    let n = stream.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the proxy closed after {received} bytes");
                    received += n as u64;
                }
                // Gone, with the rest unread.
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    wait_for(
        "the origin to see all four fetches dropped",
        Duration::from_secs(20),
        || async { streams.dropped.load(Ordering::SeqCst) == 4 },
    )
    .await;
    assert_eq!(streams.finished.load(Ordering::SeqCst), 0);
    let peak = rss.peak_kib();
    assert!(peak < RSS_LIMIT_KIB, "proxy peaked at {peak} KiB");
    // The abandoned connections were not reused mid-body: the next request is answered.
    assert_eq!(proxy.get(&origin.url("/small")).await.text(), "small");
}
