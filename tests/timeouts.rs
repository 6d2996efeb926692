//! Timeouts end to end: a slow or idle peer, on either side, holds nothing for long.
//! Each test performs what an attacker or a broken peer does, against a real proxy process
//! with its timeouts set small.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// A parent that opens every CONNECT at once and then echoes the tunnel's bytes back, so
/// tunnels can be opened to any name without a server on port 443.
async fn echoing_parent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
                if stream.write_all(established).await.is_err() {
                    return;
                }
                let (mut reader, mut writer) = stream.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    addr
}

/// Reads a message head up to its blank line, byte by byte so nothing after it is eaten.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read_u8().await {
            Ok(byte) => head.push(byte),
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A proxy that opens its tunnels through `parent`, with `settings` besides.
async fn tunnelling_proxy(parent: SocketAddr, settings: &[(&str, &str)]) -> Canopy {
    let parents = format!("{parent};");
    let mut all = vec![("never_direct", "on"), ("parents", parents.as_str())];
    all.extend_from_slice(settings);
    Canopy::start(&all).await
}

/// Opens a CONNECT tunnel through `proxy`; `None` unless the proxy answers 200 in time.
async fn open_tunnel(proxy: SocketAddr, within: Duration) -> Option<TcpStream> {
    let open = async {
        let mut stream = TcpStream::connect(proxy).await.ok()?;
        let connect = b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n";
        stream.write_all(connect).await.ok()?;
        let head = read_head(&mut stream).await?;
        head.starts_with("HTTP/1.1 200").then_some(stream)
    };
    tokio::time::timeout(within, open).await.ok().flatten()
}

/// Sends `byte` through a tunnel to the echoing parent and reads it back.
async fn echo(tunnel: &mut TcpStream, byte: u8) -> bool {
    let round_trip = async {
        tunnel.write_all(&[byte]).await.ok()?;
        tunnel.read_u8().await.ok()
    };
    tokio::time::timeout(Duration::from_secs(2), round_trip).await == Ok(Some(byte))
}

/// Waits until the proxy closes `stream` (end of file or reset), failing after `limit`;
/// gives how long that took. Bytes the proxy sends before closing are skipped.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the proxy kept the connection open for {limit:?}"),
        }
    }
}

async fn timeouts(proxy: &Canopy, kind: &str) -> u64 {
    proxy.stats().await.timeouts.get(kind).copied().unwrap_or(0)
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_a_busy_one_kept() {
    let parent = echoing_parent().await;
    let proxy = tunnelling_proxy(parent, &[("tunnel_idle_timeout_s", "2")]).await;
    let within = Duration::from_secs(5);
    let mut idle = open_tunnel(proxy.addr, within).await.expect("idle tunnel");
    let mut busy = open_tunnel(proxy.addr, within).await.expect("busy tunnel");
    assert!(
        echo(&mut idle, b'i').await,
        "the idle tunnel works at first"
    );
    let keep_busy = tokio::spawn(async move {
        // A byte every 250 ms for four seconds: never idle for the timeout.
        for i in 0..16u8 {
            assert!(echo(&mut busy, i).await, "busy tunnel broke at byte {i}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        busy
    });
    let took = closed_within(&mut idle, Duration::from_secs(8)).await;
    assert!(took >= Duration::from_millis(1900), "closed after {took:?}");
    let mut busy = keep_busy.await.unwrap();
    assert!(echo(&mut busy, b'b').await, "the busy tunnel is still open");
    assert_eq!(timeouts(&proxy, "tunnel_idle").await, 1);
}

#[tokio::test]
async fn a_slowloris_request_is_cut_off_after_the_request_timeout() {
    let origin = Origin::start(|_| Response::new(full("never reached"))).await;
    let proxy = Canopy::start(&[("request_timeout_s", "1")]).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let line = format!("GET {} HTTP/1.1\r\nX-Slow: ", origin.url("/slow"));
    writer.write_all(line.as_bytes()).await.unwrap();
    // One header byte a quarter second, for as long as the proxy listens.
    let drip = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if writer.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 1024];
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        end.is_ok(),
        "a header dripped byte by byte held the connection"
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
    drip.abort();
    assert_eq!(timeouts(&proxy, "client_request").await, 1);
    assert_eq!(origin.count("/slow"), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let origin = Origin::start(|_| Response::new(full("kept"))).await;
    let proxy = Canopy::start(&[("client_idle_timeout_s", "1")]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
        origin.url("/ka"),
        origin.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await.expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let took = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // A connection that never sends a request is idle as well.
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(5)).await;
    assert_eq!(timeouts(&proxy, "client_idle").await, 2);
}

/// An origin that sends the head and the first kilobyte of each body, then nothing more
/// (without closing) the first time each path is asked for; whole bodies after that.
async fn stalling_origin() -> (Origin, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let origin = Origin::start(move |seen| {
        let first = counter.fetch_add(1, Ordering::SeqCst) < 3;
        let chunks = futures_util::stream::unfold(0, move |i| async move {
            match i {
                0 => Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 1000]))),
                    1,
                )),
                1 if first => std::future::pending().await,
                1 => Some((Ok(Frame::data(Bytes::from(vec![b'y'; 1000]))), 2)),
                _ => None,
            }
        });
        let mut response = Response::builder();
        response = match seen.path.as_str() {
            "/sized" => response
                .header("cache-control", "max-age=300")
                .header("content-length", "2000"),
            "/chunked" => response.header("cache-control", "max-age=300"),
            _ => response.header("cache-control", "private"),
        };
        response.body(StreamBody::new(chunks).boxed()).unwrap()
    })
    .await;
    (origin, asked)
}

/// A GET through the proxy on a connection of its own; `Err` when the body broke off.
async fn fetch_body(proxy: SocketAddr, url: String) -> Result<Bytes, String> {
    let stream = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::get(&url)
        .header("host", "origin")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await;
    body.map(|b| b.to_bytes()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn an_origin_stalling_mid_body_ends_every_client_response_incomplete() {
    let (origin, _) = stalling_origin().await;
    let proxy = Canopy::start(&[("read_timeout_ms", "500")]).await;
    let started = Instant::now();
    // Three clients per cacheable URL: the first leads the fetch, two follow it.
    let mut clients = Vec::new();
    for path in ["/sized", "/chunked"] {
        for _ in 0..3 {
            clients.push(tokio::spawn(fetch_body(proxy.addr, origin.url(path))));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    clients.push(tokio::spawn(fetch_body(proxy.addr, origin.url("/private"))));
    for client in clients {
        let outcome = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .expect("the client was held by a stalled origin")
            .unwrap();
        assert!(outcome.is_err(), "a cut body looked complete: {outcome:?}");
    }
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(origin.count("/sized"), 1, "the followers shared one fetch");
    assert_eq!(
        origin.count("/chunked"),
        1,
        "the followers shared one fetch"
    );
    assert_eq!(timeouts(&proxy, "upstream_read").await, 3);
    // Nothing was stored: the next client fetches again, and gets it whole.
    let again = proxy.get(&origin.url("/sized")).await;
    assert_eq!(again.body.len(), 2000);
    assert_eq!(again.header("x-cache"), "MISS from canopy-under-test");
    assert_eq!(origin.count("/sized"), 2);
}

#[tokio::test]
async fn a_connection_past_its_lifetime_is_closed_however_busy() {
    let parent = echoing_parent().await;
    let proxy = tunnelling_proxy(parent, &[("client_lifetime_s", "2")]).await;
    let mut tunnel = open_tunnel(proxy.addr, Duration::from_secs(5))
        .await
        .expect("tunnel");
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(6) {
        if !echo(&mut tunnel, b'l').await {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "a busy tunnel outlived client_lifetime_s");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(timeouts(&proxy, "client_lifetime").await, 1);
}

/// The attack, bounded: with few descriptors, idle tunnels leave none for new
/// clients; the tunnel timeout gives them back.
#[tokio::test]
async fn idle_tunnels_that_exhaust_descriptors_are_closed_and_new_clients_served() {
    let parent = echoing_parent().await;
    let parents = format!("{parent};");
    let settings = [
        ("never_direct", "on"),
        ("parents", parents.as_str()),
        ("tunnel_idle_timeout_s", "5"),
    ];
    // About 30 descriptors at start on two cores, some more per core: room for a few
    // dozen tunnels (two descriptors each).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let limit = 40 + 8 * cores;
    let proxy = Canopy::start_with_open_files(&settings, limit).await;
    let mut held = Vec::new();
    let mut exhausted = false;
    for _ in 0..limit {
        match open_tunnel(proxy.addr, Duration::from_secs(1)).await {
            Some(tunnel) => held.push(tunnel),
            None => {
                exhausted = true;
                break;
            }
        }
    }
    assert!(
        exhausted,
        "{} tunnels left descriptors to spare",
        held.len()
    );
    assert!(
        held.len() >= 5,
        "only {} tunnels before the limit",
        held.len()
    );
    wait_for(
        "a new client to be served once the idle tunnels are closed",
        Duration::from_secs(15),
        || async {
            match open_tunnel(proxy.addr, Duration::from_secs(1)).await {
                Some(mut tunnel) => echo(&mut tunnel, b'n').await,
                None => false,
            }
        },
    )
    .await;
    for tunnel in &mut held {
        closed_within(tunnel, Duration::from_secs(10)).await;
    }
    let closed = timeouts(&proxy, "tunnel_idle").await;
    assert!(
        closed >= held.len() as u64,
        "{closed} of {} counted",
        held.len()
    );
}

#[tokio::test]
async fn an_origin_that_cannot_be_reached_in_time_is_a_counted_connect_timeout() {
    // A listener that never accepts, its backlog filled: further connections hang in SYN.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let addr = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
        assert!(fillers.len() < 16, "the backlog does not fill");
    }
    let proxy = Canopy::start(&[("connect_timeout_ms", "300")]).await;
    let r = proxy.get(&format!("http://{addr}/")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert!(r.text().contains("300 ms"), "{}", r.text());
    assert_eq!(timeouts(&proxy, "upstream_connect").await, 1);
}

/// An origin that reads what it is sent and never answers; it hands over the bytes of the
/// first connection when that connection closes.
async fn silent_origin() -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok((mut stream, _)) = listener.accept().await {
            let mut received = Vec::new();
            let _ = stream.read_to_end(&mut received).await;
            let _ = tx.send(received);
        }
    });
    (addr, rx)
}

/// A client cut off at `client_lifetime_s` in the middle of its upload: what reached the
/// origin must not end as a whole body (the terminal chunk), or the origin takes a truncated
/// upload for the client's request.
#[tokio::test]
async fn an_upload_cut_off_at_client_lifetime_is_never_forwarded_as_whole() {
    for (framing, part) in [
        ("Transfer-Encoding: chunked", "5\r\nhello\r\n"),
        ("Content-Length: 100", "only part of a hundred bytes"),
    ] {
        let (origin, received) = silent_origin().await;
        let proxy = Canopy::start(&[("client_lifetime_s", "1"), ("read_timeout_ms", "3000")]).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client
            .write_all(
                format!(
                    "POST http://{origin}/upload HTTP/1.1\r\nHost: {origin}\r\n{framing}\r\n\r\n{part}"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(20), received)
            .await
            .expect("the upstream connection was never closed")
            .unwrap();
        let sent = String::from_utf8_lossy(&sent);
        assert!(sent.contains("/upload"), "{sent}");
        assert!(
            !sent.ends_with("0\r\n\r\n"),
            "{framing}: a cut-off upload was ended as if whole: {sent:?}"
        );
        assert_eq!(timeouts(&proxy, "client_lifetime").await, 1);
    }
}
