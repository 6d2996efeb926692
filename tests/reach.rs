//! Where the proxy may send requests, end to end: safe ports, never itself or its console
//! however the address is written, loopback only when allowed; cookies never handed from
//! one client to another; credentials in a URL never forwarded; a sound `visible_name`.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

/// A fake mail server: greets, then records every byte it is sent.
struct FakeSmtp {
    port: u16,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
}

impl FakeSmtp {
    /// On port 25 when it can be bound (the tests run as root), else on a free port.
    async fn start() -> FakeSmtp {
        let listener = match TcpListener::bind("127.0.0.1:25").await {
            Ok(listener) => listener,
            Err(_) => TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let received: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (count, log) = (connections.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = stream.write_all(b"220 mail.test ESMTP\r\n").await;
                    let mut chunk = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                        log.lock().unwrap().extend_from_slice(&chunk[..n]);
                    }
                });
            }
        });
        FakeSmtp {
            port,
            connections,
            received,
        }
    }

    /// safe_ports for this test: the default unless port 25 could not be had.
    fn safe_ports(&self) -> &'static str {
        if self.port == 25 {
            "80, 443, 21, 70, 210, 280, 488, 591, 777, 1025-65535"
        } else {
            "80, 443, 21, 70, 210, 280, 488, 591, 777"
        }
    }
}

/// Sends `head` (and whatever follows it) on a new connection to the proxy; returns the
/// status and the whole answer as text, the connection closed by the request's end.
async fn raw(proxy: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn a_post_to_a_mail_server_is_refused_before_any_connection() {
    let smtp = FakeSmtp::start().await;
    let proxy = Canopy::start(&[("safe_ports", smtp.safe_ports())]).await;
    let body = "HELO attacker\r\nMAIL FROM:<a@evil.test>\r\nRCPT TO:<victim@mail.test>\r\n";
    let request = format!(
        "POST http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        port = smtp.port
    );
    let (status, answer) = raw(proxy.addr, &request).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("safe_ports"), "{answer}");
    assert!(answer.contains(&format!("port {}", smtp.port)), "{answer}");
    // Refused before connecting: the mail server never saw a connection, let alone a byte.
    assert_eq!(smtp.connections.load(Ordering::SeqCst), 0);
    assert!(smtp.received.lock().unwrap().is_empty());
    assert_eq!(proxy.stats().await.denied_destinations, 1);
    let shown = proxy.cli(&["stats"]);
    assert!(
        stdout(&shown).contains("denied destinations 1"),
        "{}",
        stdout(&shown)
    );
}

#[tokio::test]
async fn the_console_and_the_proxy_itself_are_refused_however_the_address_is_written() {
    let console = Origin::start(|_| {
        Response::builder()
            .body(full("console login page"))
            .unwrap()
    })
    .await;
    let elsewhere = Origin::start(|_| Response::builder().body(full("a service")).unwrap()).await;
    let manager_listen = format!("127.0.0.1:{}", console.addr.port());
    let proxy = Canopy::start(&[("manager_listen", &manager_listen)]).await;
    let spellings = [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
    ];
    let mut denied = 0;
    for host in spellings {
        for port in [console.addr.port(), proxy.addr.port()] {
            let url = format!("http://{host}:{port}/login");
            let r = proxy.get(&url).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{url}: {}", r.text());
            assert!(!r.text().contains("console login page"), "{url}");
            denied += 1;
        }
    }
    assert_eq!(console.count("/login"), 0);
    // Another service on the same host, at another port, is fine.
    let other = proxy.get(&elsewhere.url("/x")).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.text(), "a service");
    assert_eq!(proxy.stats().await.denied_destinations, denied);
}

#[tokio::test]
async fn with_no_bind_address_every_local_address_at_the_proxy_port_is_the_proxy() {
    let proxy = Canopy::start(&[("bind_address", "")]).await;
    let port = proxy.addr.port();
    for host in ["127.0.0.1", "127.0.0.2", "localhost", "[::1]"] {
        let url = format!("http://{host}:{port}/");
        let r = proxy.get(&url).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{url}: {}", r.text());
    }
}

#[tokio::test]
async fn connect_goes_only_to_ssl_ports_and_never_to_the_console() {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let console = Origin::start(|_| Response::builder().body(full("console")).unwrap()).await;
    let manager_listen = format!("127.0.0.1:{}", console.addr.port());
    let ssl_ports = format!("443, {echo_port}, {}", console.addr.port());
    let proxy = Canopy::start(&[
        ("ssl_ports", &ssl_ports),
        ("manager_listen", &manager_listen),
    ])
    .await;
    let not_listed = proxy.request("CONNECT", "127.0.0.1:8443", &[]).await;
    assert_eq!(not_listed.status, StatusCode::FORBIDDEN);
    assert!(
        not_listed.text().contains("ssl_ports"),
        "{}",
        not_listed.text()
    );
    assert!(
        not_listed.text().contains("port 8443"),
        "{}",
        not_listed.text()
    );
    let to_console = proxy
        .request("CONNECT", &format!("127.1:{}", console.addr.port()), &[])
        .await;
    assert_eq!(to_console.status, StatusCode::FORBIDDEN);
    // A listed port gets its tunnel.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let connect =
        format!("CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\nHost: 127.0.0.1:{echo_port}\r\n\r\n");
    stream.write_all(connect.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    assert_eq!(proxy.stats().await.denied_destinations, 2);
}

#[tokio::test]
async fn deny_to_localhost_refuses_loopback_and_tells_open_from_closed_by_nothing() {
    let origin = Origin::start(|_| Response::builder().body(full("local")).unwrap()).await;
    let closed = free_port();
    let proxy = Canopy::start(&[("deny_to_localhost", "on")]).await;
    let open = proxy.get(&origin.url("/")).await;
    let shut = proxy.get(&format!("http://127.0.0.1:{closed}/")).await;
    assert_eq!(open.status, StatusCode::FORBIDDEN, "{}", open.text());
    assert_eq!(shut.status, StatusCode::FORBIDDEN, "{}", shut.text());
    assert!(open.text().contains("deny_to_localhost"), "{}", open.text());
    // The same page but for the port the client itself chose: no port-scanner oracle.
    let port = origin.addr.port().to_string();
    assert_eq!(
        open.text().replace(&port, "PORT"),
        shut.text().replace(&closed.to_string(), "PORT")
    );
    let named = proxy
        .get(&format!("http://localhost:{}/", origin.addr.port()))
        .await;
    assert_eq!(named.status, StatusCode::FORBIDDEN);
    assert_eq!(origin.count("/"), 0);
}

fn with_cookie(n: usize) -> Response<OriginBody> {
    Response::builder()
        .header("cache-control", "max-age=300")
        .header("set-cookie", format!("session=user-{n}; HttpOnly"))
        .body(full("the same page for everyone"))
        .unwrap()
}

#[tokio::test]
async fn a_cookie_goes_only_to_the_client_whose_request_it_answered() {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let origin =
        Origin::start(move |_| with_cookie(counter.fetch_add(1, Ordering::SeqCst) + 1)).await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/home");
    let first = proxy.get(&url).await;
    assert_eq!(first.header("x-cache"), "MISS from canopy-under-test");
    assert_eq!(first.header("set-cookie"), "session=user-1; HttpOnly");
    let second = proxy.get(&url).await;
    assert_eq!(second.header("x-cache"), "HIT from canopy-under-test");
    assert_eq!(second.text(), "the same page for everyone");
    assert!(
        !second.headers.contains_key("set-cookie"),
        "the second client got {:?}",
        second.headers.get("set-cookie")
    );
    assert_eq!(origin.count("/home"), 1);
}

#[tokio::test]
async fn a_client_waiting_on_the_same_fetch_does_not_get_the_first_clients_cookie() {
    let (release, released) = tokio::sync::watch::channel(false);
    let origin = Origin::start(move |_| {
        let released = released.clone();
        let chunks = futures_util::stream::unfold(0, move |i| {
            let mut released = released.clone();
            async move {
                match i {
                    0 => {
                        // The body only once the second client is waiting on this fetch.
                        let _ = released.wait_for(|r| *r).await;
                        Some((
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"shared"))),
                            1,
                        ))
                    }
                    _ => None,
                }
            }
        });
        Response::builder()
            .header("cache-control", "max-age=300")
            .header("set-cookie", "session=leader")
            .body(StreamBody::new(chunks).boxed())
            .unwrap()
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/collapsed");
    let leader = proxy.open(&url).await;
    assert_eq!(leader.headers()["set-cookie"], "session=leader");
    // The body is held back, so a response head now can only come from the fetch in flight.
    let follower = proxy.open(&url).await;
    assert_eq!(follower.headers()["x-cache"], "MISS from canopy-under-test");
    assert!(
        !follower.headers().contains_key("set-cookie"),
        "the waiting client got {:?}",
        follower.headers().get("set-cookie")
    );
    release.send(true).unwrap();
    let body = follower.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "shared");
    leader.into_body().collect().await.unwrap();
    let later = proxy.get(&url).await;
    assert_eq!(later.header("x-cache"), "HIT from canopy-under-test");
    assert!(!later.headers.contains_key("set-cookie"));
    assert_eq!(origin.count("/collapsed"), 1);
}

#[tokio::test]
async fn credentials_in_the_url_are_never_forwarded_nor_kept() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=300")
            .body(full("page"))
            .unwrap()
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let port = origin.addr.port();
    let request = format!(
        "GET http://alice:s3cret@127.0.0.1:{port}/account HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    let (status, answer) = raw(proxy.addr, &request).await;
    assert_eq!(status, 200, "{answer}");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["host"], format!("127.0.0.1:{port}"));
    assert_eq!(seen[0].path, "/account");
    for (name, value) in &seen[0].headers {
        assert!(
            !value.as_bytes().windows(6).any(|w| w == b"s3cret"),
            "{name}: {value:?}"
        );
    }
    // The same object as the URL without credentials.
    let plain = proxy.get(&origin.url("/account")).await;
    assert_eq!(plain.header("x-cache"), "HIT from canopy-under-test");
    let log = proxy.data_dir().join("access.log");
    wait_for("two access log lines", Duration::from_secs(10), || {
        let log = log.clone();
        async move { std::fs::read_to_string(&log).is_ok_and(|text| text.lines().count() == 2) }
    })
    .await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("s3cret"), "{logged}");
}

#[tokio::test]
async fn visible_name_must_be_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "edge;evil",
        "edge(x)",
        "<b>edge</b>",
        "edge=1",
        ".edge",
        "edge:1",
    ] {
        let set = canopy_cli(dir.path(), &["config", "set", "visible_name", bad]);
        assert_eq!(set.status.code(), Some(2), "{bad} was taken");
        let message = stderr(&set);
        assert!(message.contains("visible_name"), "{message}");
        assert!(message.contains(bad), "{message}");
        assert!(message.contains("letters, digits"), "{message}");
    }
    let good = canopy_cli(
        dir.path(),
        &["config", "set", "visible_name", "cache-1.example.net"],
    );
    assert!(good.status.success(), "{}", stderr(&good));
}
