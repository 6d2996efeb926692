use super::*;
use http::HeaderValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn early_hints() -> Vec<u8> {
    let mut headers = HeaderMap::new();
    headers.insert("link", HeaderValue::from_static("</a.css>; rel=preload"));
    encode(StatusCode::from_u16(103).unwrap(), &headers)
}

/// A connection's interims with request 1 begun and sent upstream.
fn armed() -> (Arc<Interims>, InterimRelay) {
    let interims = Arc::new(Interims::new());
    let relay = InterimRelay::begin(&interims);
    assert!(interims.arm(relay.request));
    (interims, relay)
}

/// Polls `future` once.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let waker = futures_util::task::noop_waker();
    Pin::new(future).poll(&mut Context::from_waker(&waker))
}

#[test]
fn an_interim_head_keeps_its_fields_but_not_those_of_the_connection() {
    let mut headers = HeaderMap::new();
    headers.insert("link", HeaderValue::from_static("</a.css>; rel=preload"));
    headers.insert("connection", HeaderValue::from_static("x-hop"));
    headers.insert("x-hop", HeaderValue::from_static("1"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    headers.insert("content-length", HeaderValue::from_static("12"));
    let head = encode(StatusCode::from_u16(103).unwrap(), &headers);
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
    );
    assert_eq!(
        encode(StatusCode::PROCESSING, &HeaderMap::new()),
        b"HTTP/1.1 102 Processing\r\n\r\n"
    );
}

/// RFC 9110 §15.2: "A proxy MUST forward 1xx responses unless the proxy itself requested
/// the generation of the 1xx response." 100 Continue answers the Expect this proxy's hop
/// sent (hyper sends the client its own); 101 comes only with an upgrade.
#[test]
fn every_interim_status_is_relayed_but_continue_and_switching_protocols() {
    for relayed in [102, 103, 104, 199] {
        assert!(
            is_relayed(StatusCode::from_u16(relayed).unwrap()),
            "{relayed}"
        );
    }
    for kept in [100, 101, 200, 304] {
        assert!(!is_relayed(StatusCode::from_u16(kept).unwrap()), "{kept}");
    }
}

#[tokio::test]
async fn an_interim_response_is_written_at_a_flush_never_inside_other_bytes() {
    let (interims, relay) = armed();
    let (mut client, server) = tokio::io::duplex(1024);
    let mut socket = Relaying::new(server, interims.clone());
    interims.push(relay.request, early_hints());
    // hyper may still be writing the previous response: its bytes go first.
    socket.write_all(b"previous tail").await.unwrap();
    socket.flush().await.unwrap();
    socket.write_all(b"final").await.unwrap();
    drop(socket);
    let mut seen = Vec::new();
    client.read_to_end(&mut seen).await.unwrap();
    let mut expected = b"previous tail".to_vec();
    expected.extend(early_hints());
    expected.extend(b"final");
    assert_eq!(
        String::from_utf8_lossy(&seen),
        String::from_utf8_lossy(&expected)
    );
}

#[tokio::test]
async fn a_head_begun_is_finished_before_the_next_bytes() {
    let (interims, relay) = armed();
    let (mut client, server) = tokio::io::duplex(8);
    let mut socket = Relaying::new(server, interims.clone());
    interims.push(relay.request, early_hints());
    let mut flush = Box::pin(poll_fn(|cx| Pin::new(&mut socket).poll_flush(cx)));
    assert!(
        poll_once(&mut flush).is_pending(),
        "8 bytes of the head written"
    );
    drop(flush);
    let reading = tokio::spawn(async move {
        let mut seen = Vec::new();
        client.read_to_end(&mut seen).await.unwrap();
        seen
    });
    socket.write_all(b"100 Continue").await.unwrap();
    drop(socket);
    let mut expected = early_hints();
    expected.extend(b"100 Continue");
    assert_eq!(reading.await.unwrap(), expected);
}

#[tokio::test]
async fn the_final_response_waits_for_queued_interim_responses() {
    let (interims, relay) = armed();
    let (mut client, server) = tokio::io::duplex(1024);
    let mut socket = Relaying::new(server, interims.clone());
    interims.push(relay.request, early_hints());
    let mut finished = Box::pin(relay.finish());
    assert!(poll_once(&mut finished).is_pending());
    // No interim response is taken once the final response is ready.
    interims.push(relay.request, b"HTTP/1.1 102 Processing\r\n\r\n".to_vec());
    socket.flush().await.unwrap();
    assert!(poll_once(&mut finished).is_ready());
    drop(socket);
    let mut seen = Vec::new();
    client.read_to_end(&mut seen).await.unwrap();
    assert_eq!(seen, early_hints());
}

#[tokio::test]
async fn a_request_not_sent_upstream_or_answered_takes_none_and_the_next_is_apart() {
    let interims = Arc::new(Interims::new());
    let first = InterimRelay::begin(&interims);
    interims.push(first.request, early_hints());
    assert!(
        !interims.waiting.load(Ordering::Relaxed),
        "not sent upstream"
    );
    assert!(poll_once(&mut Box::pin(first.finish())).is_ready());
    assert!(!interims.arm(first.request), "answered already");
    let second = InterimRelay::begin(&interims);
    assert!(interims.arm(second.request));
    interims.push(first.request, early_hints());
    assert!(
        !interims.waiting.load(Ordering::Relaxed),
        "the first one's is too late"
    );
    interims.push(second.request, early_hints());
    assert!(interims.waiting.load(Ordering::Relaxed));
}

#[derive(Default)]
struct Woken(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_connection_is_woken_when_an_interim_response_arrives() {
    let (interims, relay) = armed();
    let (_client, server) = tokio::io::duplex(1024);
    let socket = Relaying::new(server, interims.clone());
    let mut socket = Box::pin(socket);
    let woken = Arc::new(Woken::default());
    let waker = Waker::from(woken.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(socket.as_mut().poll_flush(&mut cx).is_ready());
    assert_eq!(
        woken.0.load(Ordering::SeqCst),
        0,
        "nothing queued, nobody woken"
    );
    interims.push(relay.request, early_hints());
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
}

#[test]
fn an_origin_cannot_queue_more_than_the_bound() {
    let (interims, relay) = armed();
    let head = vec![b'x'; QUEUED_MAX / 2];
    for _ in 0..3 {
        interims.push(relay.request, head.clone());
    }
    assert_eq!(interims.queue().queued, QUEUED_MAX);
}
