//! Request framing end to end: request smuggling through the proxy's pooled upstream
//! connections, against a real nginx and a scripted origin that parses as nginx does;
//! client framing errors; header limits; TRACE and OPTIONS that end at the proxy.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{Response, StatusCode};
use tokio::io::AsyncReadExt;

use common::nginx::{nginx_binary, Nginx};
use common::raw::{fields, RawConnection, RawMessage, ScriptedOrigin};
use common::*;

const REAL: &str = "real content\n";
const SMUGGLED: &str = "SMUGGLED\n";

/// What the scripted origin serves: the same as the nginx below.
fn scripted(request: &RawMessage) -> raw::Answer {
    let path = request.target().to_owned();
    let cacheable = fields(&[("cache-control", "max-age=600")]);
    match path.as_str() {
        "/cacheable" => (200, cacheable, REAL.to_owned()),
        "/smuggled" => (200, cacheable, SMUGGLED.to_owned()),
        "/post" => (200, Vec::new(), "posted\n".to_owned()),
        _ => (200, Vec::new(), format!("{path}\n")),
    }
}

const NGINX_LOCATIONS: &str = r#"
    location = /cacheable { add_header Cache-Control "max-age=600"; return 200 "real content\n"; }
    location = /smuggled { add_header Cache-Control "max-age=600"; return 200 "SMUGGLED\n"; }
    location = /post { return 200 "posted\n"; }
    location / { return 200 "$uri\n"; }
"#;

/// The attack of issue 12 on one client connection: (a) a GET whose Content-Length body an
/// origin reads from the pooled connection, swallowing the head of (b) a POST whose body is
/// two raw requests, the second unfinished so that (c) the GET for a cacheable URL that
/// follows completes it and is answered with the smuggled response. Gives what (b) and (c)
/// were answered.
async fn smuggle(proxy: SocketAddr, origin: SocketAddr) -> (String, String) {
    let base = format!("http://{origin}");
    let mut attacker = RawConnection::connect(proxy).await;
    let swallowed = 400;
    attacker
        .send(
            format!(
                "GET {base}/a HTTP/1.1\r\nHost: {origin}\r\nContent-Length: {swallowed}\r\n\r\n{}",
                "x".repeat(swallowed)
            )
            .as_bytes(),
        )
        .await;
    let a = attacker.response().await.expect("answer to (a)");
    assert_eq!(a.status(), 200, "{a:?}");
    let smuggled = format!(
        "{}GET /smuggled HTTP/1.1\r\nHost: {origin}\r\n\r\nGET /smuggled HTTP/1.1\r\nX-Ignore: ",
        "\r\n".repeat(300)
    );
    attacker
        .send(
            format!(
                "POST {base}/post HTTP/1.1\r\nHost: {origin}\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            )
            .as_bytes(),
        )
        .await;
    let b = attacker.response().await.expect("answer to (b)");
    attacker
        .send(format!("GET {base}/cacheable HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await;
    let c = attacker.response().await.expect("answer to (c)");
    (b.text(), c.text())
}

/// After the attack: later clients get the real object (a HIT), and other clients'
/// requests, on connections of their own, all get their own answers.
async fn later_clients_are_unharmed(proxy: &Canopy, origin: SocketAddr) {
    let url = format!("http://{origin}/cacheable");
    for _ in 0..3 {
        let r = proxy.get(&url).await;
        assert_eq!(
            r.text(),
            REAL,
            "a later client got {:?}: the cache is poisoned",
            r.header("x-cache")
        );
        assert_eq!(r.header("x-cache"), "HIT from canopy-under-test");
    }
    let others = (0..20).map(|i| async move {
        let path = format!("/other{i}");
        let r = proxy.get(&format!("http://{origin}{path}")).await;
        (path, r.status, r.text())
    });
    for (path, status, text) in futures_util::future::join_all(others).await {
        assert_eq!((status, text), (StatusCode::OK, format!("{path}\n")));
    }
}

#[tokio::test]
async fn a_get_with_a_body_cannot_smuggle_an_answer_into_the_cache_scripted_origin() {
    let origin = ScriptedOrigin::start(scripted).await;
    let proxy = Canopy::start(&[]).await;
    let (b, c) = smuggle(proxy.addr, origin.addr).await;
    later_clients_are_unharmed(&proxy, origin.addr).await;
    assert_eq!(
        b, "posted\n",
        "the POST was answered with another request's response"
    );
    assert_eq!(c, REAL, "(c) was answered with another request's response");
    assert_eq!(origin.count("/smuggled"), 0);
    // The GET's body reached the origin whole, as the GET's body.
    let a = origin
        .seen()
        .into_iter()
        .find(|m| m.target() == "/a")
        .unwrap();
    assert_eq!(a.body, vec![b'x'; 400]);
    assert_eq!(a.field("content-length"), Some("400"));
}

#[tokio::test]
async fn a_get_with_a_body_cannot_smuggle_an_answer_into_the_cache_nginx() {
    let Some(binary) = nginx_binary() else {
        return;
    };
    let nginx = Nginx::start(&binary, NGINX_LOCATIONS);
    let proxy = Canopy::start(&[]).await;
    let (b, c) = smuggle(proxy.addr, nginx.addr).await;
    later_clients_are_unharmed(&proxy, nginx.addr).await;
    assert_eq!(
        b, "posted\n",
        "the POST was answered with another request's response"
    );
    assert_eq!(c, REAL, "(c) was answered with another request's response");
    assert_eq!(nginx.requests_for("/smuggled"), 0, "{}", nginx.access_log());
}

#[tokio::test]
async fn a_get_with_a_body_is_forwarded_with_it_and_never_cached() {
    let origin = ScriptedOrigin::start(scripted).await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/cacheable");
    let mut client = RawConnection::connect(proxy.addr).await;
    for _ in 0..2 {
        client
            .send(
                format!(
                    "GET {url} HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\n\r\nhello",
                    origin.addr
                )
                .as_bytes(),
            )
            .await;
        let r = client.response().await.unwrap();
        assert_eq!(r.text(), REAL);
        assert!(r.field("x-cache").unwrap().starts_with("MISS"), "{r:?}");
    }
    // Content-Length: 0 is no body: an ordinary GET, stored, and the field not forwarded.
    for expected in ["MISS", "HIT"] {
        client
            .send(
                format!(
                    "GET {url} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
                    origin.addr
                )
                .as_bytes(),
            )
            .await;
        let r = client.response().await.unwrap();
        assert_eq!(r.text(), REAL);
        assert!(r.field("x-cache").unwrap().starts_with(expected), "{r:?}");
    }
    wait_for(
        "three requests at the origin",
        Duration::from_secs(5),
        || async { origin.seen().len() == 3 },
    )
    .await;
    let seen = origin.seen();
    for m in &seen[..2] {
        assert_eq!(m.body, b"hello");
    }
    assert_eq!(seen[2].field("content-length"), None, "{:?}", seen[2]);
    // A HEAD with a body, too, goes with its body and past the cache.
    client
        .send(
            format!(
                "HEAD {url} HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\n\r\nabc",
                origin.addr
            )
            .as_bytes(),
        )
        .await;
    let r = client.head_response().await.unwrap();
    assert!(r.field("x-cache").unwrap().starts_with("MISS"), "{r:?}");
    wait_for("the HEAD at the origin", Duration::from_secs(5), || async {
        origin.seen().len() == 4
    })
    .await;
    assert_eq!(origin.seen()[3].body, b"abc");
}

/// One way to frame a request ambiguously, and what the proxy must do with it.
struct Shape {
    name: &'static str,
    /// The request after its request line (fields, blank line, body).
    rest: &'static str,
    /// `None`: refused with 400; `Some(body)`: forwarded with exactly this body.
    forwarded: Option<&'static str>,
    /// Whether the proxy must close the client's connection after answering.
    closes: bool,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "Content-Length and Transfer-Encoding together",
        rest: "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        // As RFC 9112 §6.1 allows, chunked wins; the connection must then close.
        forwarded: Some(""),
        closes: true,
    },
    Shape {
        name: "two different Content-Lengths",
        rest: "Content-Length: 5\r\nContent-Length: 45\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        forwarded: None,
        closes: true,
    },
    Shape {
        name: "a Content-Length list that disagrees",
        rest: "Content-Length: 5, 45\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        forwarded: None,
        closes: true,
    },
    Shape {
        name: "Transfer-Encoding folded onto a second line",
        rest: "Transfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        forwarded: None,
        closes: true,
    },
    Shape {
        name: "Transfer-Encoding with a space before the colon",
        rest: "Transfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        forwarded: None,
        closes: true,
    },
    Shape {
        name: "Transfer-Encoding not ending in chunked",
        rest: "Transfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        forwarded: None,
        closes: true,
    },
    Shape {
        name: "a Content-Length with a sign",
        rest: "Content-Length: +5\r\n\r\nhello",
        forwarded: None,
        closes: true,
    },
    Shape {
        name: "Transfer-Encoding in odd case",
        rest: "Transfer-Encoding: ChUnKeD\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        forwarded: Some("hello"),
        closes: false,
    },
    Shape {
        name: "a chunk extension",
        rest: "Transfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\n",
        forwarded: Some("hello"),
        closes: false,
    },
];

#[tokio::test]
async fn ambiguous_framing_is_refused_or_forwarded_as_framed() {
    let origin = ScriptedOrigin::start(scripted).await;
    let proxy = Canopy::start(&[]).await;
    let mut failures = Vec::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        for method in ["GET", "POST"] {
            let path = format!("/shape{i}-{method}");
            let mut client = RawConnection::connect(proxy.addr).await;
            let head = format!(
                "{method} {} HTTP/1.1\r\nHost: {}\r\n{}",
                origin.url(&path),
                origin.addr,
                shape.rest
            );
            client.send(head.as_bytes()).await;
            let answer = client.response().await;
            let status = answer.as_ref().map(|r| r.status()).unwrap_or(0);
            let seen = arrived(&origin, &path, shape.forwarded.is_some()).await;
            let outcome = match shape.forwarded {
                None => status == 400 && seen.is_empty(),
                Some(body) => status == 200 && seen.len() == 1 && seen[0].body == body.as_bytes(),
            };
            if !outcome {
                failures.push(format!(
                    "{} ({method}): status {status}, origin saw {seen:?}",
                    shape.name
                ));
            }
            if shape.closes && !client.closed().await {
                failures.push(format!("{} ({method}): connection kept open", shape.name));
            }
        }
    }
    assert_eq!(origin.count("/smuggled"), 0);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn ambiguous_framing_reaches_nginx_only_as_framed() {
    let Some(binary) = nginx_binary() else {
        return;
    };
    let nginx = Nginx::start(&binary, NGINX_LOCATIONS);
    let proxy = Canopy::start(&[]).await;
    let mut failures = Vec::new();
    for (i, shape) in SHAPES.iter().enumerate() {
        for method in ["GET", "POST"] {
            let path = format!("/shape{i}-{method}");
            let mut client = RawConnection::connect(proxy.addr).await;
            let head = format!(
                "{method} {} HTTP/1.1\r\nHost: {}\r\n{}",
                nginx.url(&path),
                nginx.addr,
                shape.rest
            );
            client.send(head.as_bytes()).await;
            let answer = client.response().await;
            let (status, text) = answer
                .map(|r| (r.status(), r.text()))
                .unwrap_or((0, String::new()));
            let expected = match shape.forwarded {
                None => (400, nginx.requests_for(&path) == 0),
                Some(_) => (200, text == format!("{path}\n")),
            };
            if (status, true) != expected {
                failures.push(format!("{} ({method}): {status} {text:?}", shape.name));
            }
        }
    }
    // Every connection to nginx stayed in step: the same pooled connections carry these.
    for i in 0..4 {
        let path = format!("/after{i}");
        assert_eq!(
            proxy.get(&nginx.url(&path)).await.text(),
            format!("{path}\n")
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let log = nginx.access_log();
    assert_eq!(nginx.requests_for("/smuggled"), 0, "{log}");
    assert!(
        !log.contains("\" 400 "),
        "nginx read something out of step:\n{log}"
    );
}

/// The requests for `path` the origin has parsed, waiting a while for one when `expected`
/// (the origin records a request once it has read its body).
async fn arrived(origin: &ScriptedOrigin, path: &str, expected: bool) -> Vec<RawMessage> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen: Vec<_> = origin
            .seen()
            .into_iter()
            .filter(|m| m.target() == path)
            .collect();
        if !expected || !seen.is_empty() || std::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An origin that reads what it is sent and never answers; it hands over the bytes of
/// each connection when that connection closes.
async fn silent_origin() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut received = Vec::new();
                let _ = stream.read_to_end(&mut received).await;
                let _ = tx.send(received);
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_bad_chunk_size_from_the_client_is_answered_400_not_502() {
    let (origin, mut closed) = silent_origin().await;
    let proxy = Canopy::start(&[]).await;
    let mut client = RawConnection::connect(proxy.addr).await;
    client
        .send(
            format!(
                "POST http://{origin}/upload HTTP/1.1\r\nHost: {origin}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    let r = client.response().await.unwrap();
    assert_eq!(r.status(), 400, "{r:?}");
    assert!(r.text().contains("request body"), "{}", r.text());
    assert!(
        client.closed().await,
        "the connection is not closed after a framing error"
    );
    // The upstream connection that carried the broken body is closed, not pooled.
    let sent = tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the upstream connection was kept open")
        .unwrap();
    let sent = String::from_utf8_lossy(&sent);
    assert!(
        !sent.contains("\r\n0\r\n\r\n"),
        "a broken body was ended as if whole: {sent}"
    );
}

#[tokio::test]
async fn an_upstream_connection_is_pooled_only_after_whole_messages() {
    let origin = ScriptedOrigin::start(scripted).await;
    let proxy = Canopy::start(&[]).await;
    let upload = |framing: &'static str, part: &'static str| {
        let origin = origin.addr;
        async move {
            let mut client = RawConnection::connect(proxy.addr).await;
            client
                .send(
                    format!(
                        "POST http://{origin}/post HTTP/1.1\r\nHost: {origin}\r\n{framing}\r\n\r\n{part}"
                    )
                    .as_bytes(),
                )
                .await;
            // The scripted origin answers on the head; the client leaves mid-upload.
            let _ = client.response().await;
        }
    };
    upload(
        "Content-Length: 100",
        "only fifty bytes of a hundred ..................",
    )
    .await;
    upload("Transfer-Encoding: chunked", "64\r\nhalf a chunk").await;
    // Requests on new connections (both workers) must each reach the origin as themselves:
    // on a connection left mid-body the origin would take them for the rest of a body.
    for i in 0..6 {
        let path = format!("/after{i}");
        let r = proxy.get(&origin.url(&path)).await;
        assert_eq!(r.text(), format!("{path}\n"));
    }
    for i in 0..6 {
        assert_eq!(
            origin.count(&format!("/after{i}")),
            1,
            "{:?}",
            origin.seen()
        );
    }
}

#[tokio::test]
async fn an_upstream_connection_whose_client_left_before_the_answer_is_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let (asked, mut asked_rx) = tokio::sync::oneshot::channel();
    let (closed, closed_rx) = tokio::sync::oneshot::channel();
    // Reads the request, never answers, and says when the proxy closes the connection.
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut asked = Some(asked);
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
            if received.windows(4).any(|w| w == b"\r\n\r\n") {
                if let Some(asked) = asked.take() {
                    let _ = asked.send(());
                }
            }
        }
        let _ = closed.send(());
    });
    let proxy = Canopy::start(&[]).await;
    let mut client = RawConnection::connect(proxy.addr).await;
    client
        .send(
            format!(
                "POST http://{origin}/hold HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    tokio::time::timeout(Duration::from_secs(10), &mut asked_rx)
        .await
        .expect("the request reached the origin")
        .unwrap();
    drop(client);
    // A connection still owing an answer can never be used for another request.
    tokio::time::timeout(Duration::from_secs(10), closed_rx)
        .await
        .expect("the upstream connection stayed open after its client left")
        .unwrap();
}

fn many_fields(count: usize, value_len: usize) -> Response<OriginBody> {
    let mut response = Response::builder().header("cache-control", "no-store");
    for i in 0..count {
        response = response.header(format!("x-field-{i}"), "v".repeat(value_len));
    }
    response.body(full("many fields\n")).unwrap()
}

#[tokio::test]
async fn responses_with_many_fields_pass_and_absurd_heads_get_a_clear_502() {
    let origin = Origin::start(|seen| match seen.path.as_str() {
        "/two-hundred" => many_fields(200, 10),
        _ => many_fields(100, 1024),
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    // A raw client: hyper's own client takes no more than 100 fields.
    let mut client = RawConnection::connect(proxy.addr).await;
    let get = |path: &str| {
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            origin.url(path),
            origin.addr
        )
    };
    client.send(get("/two-hundred").as_bytes()).await;
    let r = client.response().await.unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.text(), "many fields\n");
    assert!(r.field("x-field-199").is_some(), "{r:?}");
    client.send(get("/huge").as_bytes()).await;
    let r = client.response().await.unwrap();
    assert_eq!(r.status(), 502, "{r:?}");
    assert!(r.text().contains("64 KiB"), "{}", r.text());
}

#[tokio::test]
async fn request_heads_up_to_64_kib_pass_and_larger_ones_or_more_than_100_fields_get_431() {
    let origin = Origin::start(|_| Response::new(full("ok"))).await;
    let proxy = Canopy::start(&[]).await;
    let big = "c".repeat(60 * 1024);
    let r = proxy
        .request("GET", &origin.url("/big"), &[("cookie", big.as_str())])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = origin.seen();
    assert_eq!(seen[0].headers["cookie"].len(), big.len());
    let huge = "c".repeat(70 * 1024);
    let mut client = RawConnection::connect(proxy.addr).await;
    client
        .send(
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nCookie: {huge}\r\n\r\n",
                origin.url("/huge"),
                origin.addr
            )
            .as_bytes(),
        )
        .await;
    let r = client.response().await.unwrap();
    assert_eq!(r.status(), 431, "{r:?}");
    // 100 fields at most: a higher limit would cost hyper an allocation on every request.
    let fields: String = (0..101).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let mut client = RawConnection::connect(proxy.addr).await;
    client
        .send(
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\n{fields}\r\n",
                origin.url("/many"),
                origin.addr
            )
            .as_bytes(),
        )
        .await;
    let r = client.response().await.unwrap();
    assert_eq!(r.status(), 431, "{r:?}");
    assert_eq!(origin.seen().len(), 1);
}

#[tokio::test]
async fn trace_and_options_with_max_forwards_0_are_answered_by_the_proxy() {
    let origin = Origin::start(|_| Response::new(full("from the origin"))).await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/resource");
    let r = proxy
        .request(
            "TRACE",
            &url,
            &[
                ("max-forwards", "0"),
                ("x-probe", "echo me"),
                ("cookie", "session=secret-cookie"),
                ("authorization", "Basic c2VjcmV0LXBhc3N3b3Jk"),
                ("proxy-authorization", "Basic cHJveHktc2VjcmV0"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "message/http");
    let echo = r.text();
    assert!(
        echo.starts_with(&format!("TRACE {url} HTTP/1.1\r\n")),
        "{echo}"
    );
    assert!(echo.contains("x-probe: echo me\r\n"), "{echo}");
    assert!(echo.contains("max-forwards: 0\r\n"), "{echo}");
    for secret in ["secret-cookie", "c2VjcmV0LXBhc3N3b3Jk", "cHJveHktc2VjcmV0"] {
        assert!(!echo.contains(secret), "credentials echoed: {echo}");
    }
    let r = proxy
        .request("OPTIONS", &url, &[("max-forwards", "0")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("allow").contains("GET"), "{:?}", r.headers);
    assert!(r.header("allow").contains("TRACE"), "{:?}", r.headers);
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    // Above 0 the request goes on, one hop fewer.
    let r = proxy.request("TRACE", &url, &[("max-forwards", "3")]).await;
    assert_eq!(r.text(), "from the origin");
    let r = proxy
        .request("OPTIONS", &url, &[("max-forwards", "1")])
        .await;
    assert_eq!(r.text(), "from the origin");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "TRACE");
    assert_eq!(seen[0].headers["max-forwards"], "2");
    assert_eq!(seen[1].method, "OPTIONS");
    assert_eq!(seen[1].headers["max-forwards"], "0");
    // Max-Forwards means nothing to other methods: passed on untouched.
    proxy
        .request("GET", &origin.url("/get"), &[("max-forwards", "0")])
        .await;
    assert_eq!(origin.seen()[2].headers["max-forwards"], "0");
}
