//! Interim (1xx) responses relayed end to end (RFC 9110 §15.2): an origin on a raw socket
//! sends 102 and 103 before its final response, and clients on raw sockets read what the
//! proxy passes on, HTTP/1.1 and HTTP/1.0, one request at a time, pipelined, and through a
//! parent.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use common::raw::{RawConnection, RawMessage};
use common::*;

const HINTS: &str = "HTTP/1.1 102 Processing\r\n\r\n\
                     HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n";

/// An origin that answers `/hinted...` with a 102 and a 103 first, then (once `release` is
/// notified, for `/held`) a cacheable 200; `/big` with a cacheable body of 192 KiB; anything
/// else with a small cacheable 200. It keeps the request lines it read.
struct HintingOrigin {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    release: Arc<Notify>,
}

impl HintingOrigin {
    async fn start() -> HintingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let release = Arc::new(Notify::new());
        let (recorded, released) = (asked.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, recorded.clone(), released.clone()));
            }
        });
        HintingOrigin {
            addr,
            asked,
            release,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn count(&self, path: &str) -> usize {
        let line = format!("GET {path} HTTP/1.1");
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|l| **l == line)
            .count()
    }
}

/// Answers the requests on one connection (heads only: the proxy sends no bodies here).
async fn answer(stream: TcpStream, asked: Arc<Mutex<Vec<String>>>, release: Arc<Notify>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut field = String::new();
        while stream.read_line(&mut field).await.is_ok_and(|n| n > 2) {
            field.clear();
        }
        let line = line.trim_end().to_owned();
        asked.lock().unwrap().push(line.clone());
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let body = if path == "/big" {
            "b".repeat(192 * 1024)
        } else {
            format!("final {path}")
        };
        if path.starts_with("/hinted") || path == "/held" {
            if stream.write_all(HINTS.as_bytes()).await.is_err() {
                return;
            }
            if path == "/held" {
                release.notified().await;
            }
        }
        let final_response = format!(
            "HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(final_response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn get(url: &str, version: &str) -> Vec<u8> {
    let host = url.split('/').nth(2).unwrap();
    format!("GET {url} {version}\r\nHost: {host}\r\n\r\n").into_bytes()
}

async fn read(client: &mut RawConnection) -> RawMessage {
    client.response().await.expect("a response")
}

fn assert_hints(processing: &RawMessage, early: &RawMessage) {
    assert_eq!(processing.status(), 102, "{processing:?}");
    assert_eq!(early.status(), 103, "{early:?}");
    assert_eq!(
        early.field("link"),
        Some("</style.css>; rel=preload"),
        "{early:?}"
    );
}

#[tokio::test]
async fn interim_responses_reach_an_http11_client_before_the_final_one_and_are_not_stored() {
    let origin = HintingOrigin::start().await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/held");
    let mut client = RawConnection::connect(proxy.addr).await;
    client.send(&get(&url, "HTTP/1.1")).await;
    // The origin holds its final response until the client has read the interim ones.
    let (processing, early) = (read(&mut client).await, read(&mut client).await);
    assert_hints(&processing, &early);
    origin.release.notify_one();
    let last = read(&mut client).await;
    assert_eq!(
        (last.status(), last.text()),
        (200, "final /held".to_owned())
    );
    assert_eq!(last.field("link"), None, "{last:?}");

    let mut later = RawConnection::connect(proxy.addr).await;
    later.send(&get(&url, "HTTP/1.1")).await;
    let hit = read(&mut later).await;
    assert_eq!(hit.status(), 200, "a hit has no interim response: {hit:?}");
    assert!(
        hit.field("x-cache").unwrap_or("").starts_with("HIT"),
        "{hit:?}"
    );
    assert_eq!(hit.field("link"), None, "{hit:?}");
    assert_eq!(origin.count("/held"), 1);
    let listed = cli_ok(&proxy, &["cache", "list"]);
    assert!(listed.contains(&url), "{listed}");
}

#[tokio::test]
async fn an_http10_client_gets_no_interim_response() {
    let origin = HintingOrigin::start().await;
    let proxy = Canopy::start(&[]).await;
    let mut client = RawConnection::connect(proxy.addr).await;
    client
        .send(&get(&origin.url("/hinted-old"), "HTTP/1.0"))
        .await;
    let only = read(&mut client).await;
    assert_eq!(only.status(), 200, "{only:?}");
    assert_eq!(only.text(), "final /hinted-old");
    assert!(client.closed().await, "nothing follows the final response");
}

#[tokio::test]
async fn pipelined_requests_get_their_interim_responses_in_their_places() {
    let origin = HintingOrigin::start().await;
    let proxy = Canopy::start(&[]).await;
    // `/big` stored first, so that its answer on the pipelined connection is a hit that
    // fills the socket while the next request's interim responses arrive.
    let big = origin.url("/big");
    assert_eq!(proxy.get(&big).await.text().len(), 192 * 1024);
    let mut client = RawConnection::connect(proxy.addr).await;
    let mut pipelined = get(&big, "HTTP/1.1");
    pipelined.extend(get(&origin.url("/hinted-1"), "HTTP/1.1"));
    pipelined.extend(get(&origin.url("/plain"), "HTTP/1.1"));
    pipelined.extend(get(&origin.url("/hinted-2"), "HTTP/1.1"));
    client.send(&pipelined).await;
    // Nothing is read until the origin has been asked for the first hinted URL, so its
    // interim responses come while the big one is still being written.
    wait_for(
        "the origin to be asked",
        Duration::from_secs(10),
        || async { origin.count("/hinted-1") == 1 },
    )
    .await;
    let first = read(&mut client).await;
    assert_eq!((first.status(), first.body.len()), (200, 192 * 1024));
    assert!(
        first.body.iter().all(|b| *b == b'b'),
        "the big body is whole"
    );
    for path in ["/hinted-1", "/plain", "/hinted-2"] {
        if path != "/plain" {
            let (processing, early) = (read(&mut client).await, read(&mut client).await);
            assert_hints(&processing, &early);
        }
        let last = read(&mut client).await;
        assert_eq!((last.status(), last.text()), (200, format!("final {path}")));
    }
}

#[tokio::test]
async fn interim_responses_come_through_a_parent() {
    let origin = HintingOrigin::start().await;
    let parent = Canopy::start(&[("visible_name", "parent")]).await;
    let child = Canopy::start(&[
        ("parents", &format!("{};", parent.addr)),
        ("never_direct", "on"),
    ])
    .await;
    let url = origin.url("/hinted-by-way-of-a-parent");
    let mut client = RawConnection::connect(child.addr).await;
    client.send(&get(&url, "HTTP/1.1")).await;
    let (processing, early) = (read(&mut client).await, read(&mut client).await);
    assert_hints(&processing, &early);
    let last = read(&mut client).await;
    assert_eq!(
        (last.status(), last.text()),
        (200, "final /hinted-by-way-of-a-parent".to_owned())
    );
    assert!(
        last.field("via").unwrap_or("").contains("parent"),
        "{last:?}"
    );
}
