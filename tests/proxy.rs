//! The caching proxy end to end: real canopy-proxy processes, a real origin, real sockets.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};

use common::*;

fn ok(cache_control: &str, body: &'static str) -> Response<OriginBody> {
    Response::builder()
        .header("cache-control", cache_control)
        .header("content-type", "text/plain")
        .body(full(body))
        .unwrap()
}

#[tokio::test]
async fn a_second_get_is_a_hit_and_the_origin_sees_one_request() {
    let origin = Origin::start(|_| ok("max-age=300", "hello")).await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/page");
    let first = proxy.get(&url).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-cache"), "MISS from canopy-under-test");
    assert!(first
        .header("via")
        .contains("1.1 canopy-under-test (canopy/"));
    let second = proxy.get(&url).await;
    assert_eq!(second.text(), "hello");
    assert_eq!(second.header("x-cache"), "HIT from canopy-under-test");
    assert!(second.headers.contains_key("age"));
    assert_eq!(origin.count("/page"), 1);
    let stats = proxy.stats().await;
    assert_eq!((stats.requests, stats.hits_fresh, stats.misses), (2, 1, 1));
    assert_eq!(stats.objects, 1);
    // The origin saw the proxy's Via, so loops can be detected upstream.
    let via = origin.seen()[0].headers["via"].to_str().unwrap().to_owned();
    assert!(via.contains("canopy-under-test"), "{via}");
}

#[tokio::test]
async fn head_and_conditional_requests_are_answered_from_the_cache() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=300")
            .header("etag", "\"v1\"")
            .body(full("body of v1"))
            .unwrap()
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/doc");
    proxy.get(&url).await;
    let head = proxy.request("HEAD", &url, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-cache"), "HIT from canopy-under-test");
    assert!(head.body.is_empty());
    let conditional = proxy
        .request("GET", &url, &[("if-none-match", "\"v1\"")])
        .await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
    assert_eq!(conditional.header("etag"), "\"v1\"");
    assert_eq!(origin.count("/doc"), 1);
}

#[tokio::test]
async fn an_expired_object_is_revalidated_with_its_etag() {
    let origin = Origin::start(|seen| {
        if seen
            .headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            == Some("\"abc\"")
        {
            Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header("etag", "\"abc\"")
                .header("cache-control", "max-age=0")
                .body(full(""))
                .unwrap()
        } else {
            Response::builder()
                .header("etag", "\"abc\"")
                .header("cache-control", "max-age=0")
                .body(full("stored body"))
                .unwrap()
        }
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/expiring");
    assert_eq!(proxy.get(&url).await.text(), "stored body");
    let second = proxy.get(&url).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.text(), "stored body");
    assert_eq!(second.header("x-cache"), "HIT from canopy-under-test");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["if-none-match"], "\"abc\"");
    assert_eq!(proxy.stats().await.hits_revalidated, 1);
}

#[tokio::test]
async fn a_failing_origin_lets_stale_if_error_serve_the_stored_copy() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let origin = Origin::start(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            ok("max-age=0, stale-if-error=600", "kept")
        } else {
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(full("down"))
                .unwrap()
        }
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/sie");
    proxy.get(&url).await;
    let second = proxy.get(&url).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.text(), "kept");
    assert_eq!(origin.count("/sie"), 2);
}

#[tokio::test]
async fn no_store_is_never_served_from_the_cache() {
    let origin = Origin::start(|_| ok("no-store", "secret")).await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/private");
    for _ in 0..3 {
        let r = proxy.get(&url).await;
        assert_eq!(r.header("x-cache"), "MISS from canopy-under-test");
    }
    assert_eq!(origin.count("/private"), 3);
    assert_eq!(proxy.stats().await.objects, 0);
}

#[tokio::test]
async fn vary_on_accept_encoding_keeps_two_variants() {
    let origin = Origin::start(|seen| {
        let gzip = seen
            .headers
            .get("accept-encoding")
            .is_some_and(|v| v.to_str().unwrap_or("").contains("gzip"));
        Response::builder()
            .header("cache-control", "max-age=300")
            .header("vary", "Accept-Encoding")
            .body(full(if gzip {
                "gzip variant"
            } else {
                "plain variant"
            }))
            .unwrap()
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/varied");
    let gzip = [("accept-encoding", "gzip")];
    assert_eq!(
        proxy.request("GET", &url, &gzip).await.text(),
        "gzip variant"
    );
    assert_eq!(proxy.get(&url).await.text(), "plain variant");
    let gzip_again = proxy.request("GET", &url, &gzip).await;
    assert_eq!(gzip_again.text(), "gzip variant");
    assert_eq!(gzip_again.header("x-cache"), "HIT from canopy-under-test");
    let plain_again = proxy.get(&url).await;
    assert_eq!(plain_again.text(), "plain variant");
    assert_eq!(plain_again.header("x-cache"), "HIT from canopy-under-test");
    assert_eq!(origin.count("/varied"), 2);
}

#[tokio::test]
async fn an_unsafe_method_invalidates_the_stored_url() {
    let origin = Origin::start(|seen| {
        if seen.method == "POST" {
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(full(""))
                .unwrap()
        } else {
            ok("max-age=300", "resource")
        }
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/thing");
    proxy.get(&url).await;
    assert_eq!(
        proxy.get(&url).await.header("x-cache"),
        "HIT from canopy-under-test"
    );
    assert_eq!(
        proxy.request("POST", &url, &[]).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        proxy.get(&url).await.header("x-cache"),
        "MISS from canopy-under-test"
    );
    assert_eq!(origin.count("/thing"), 3);
}

#[tokio::test]
async fn fifty_concurrent_misses_reach_the_origin_once() {
    let origin = Origin::start(|_| {
        // A slow body keeps the first fetch in flight while the others arrive.
        let chunks = futures_util::stream::unfold(0, |i| async move {
            if i == 5 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 1000]))),
                i + 1,
            ))
        });
        Response::builder()
            .header("cache-control", "max-age=300")
            .body(StreamBody::new(chunks).boxed())
            .unwrap()
    })
    .await;
    let proxy = Arc::new(Canopy::start(&[]).await);
    let url = origin.url("/popular");
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let (proxy, url) = (proxy.clone(), url.clone());
            tokio::spawn(async move { proxy.get(&url).await })
        })
        .collect();
    for client in clients {
        let r = client.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.len(), 5000);
    }
    assert_eq!(origin.count("/popular"), 1);
}

#[tokio::test]
async fn a_dead_parent_is_passed_over_for_a_working_one() {
    let origin = Origin::start(|_| ok("max-age=300", "via parent")).await;
    let parent = Canopy::start(&[("visible_name", "the-parent")]).await;
    let dead = free_port();
    let parents = format!("127.0.0.1:{dead}; {};", parent.addr);
    let child = Canopy::start(&[("parents", &parents)]).await;
    let r = child.get(&origin.url("/p")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "via parent");
    assert!(
        r.header("via").contains("the-parent"),
        "{}",
        r.header("via")
    );
    assert_eq!(parent.stats().await.requests, 1);
    let stats = child.stats().await;
    let dead_stats = stats
        .peers
        .iter()
        .find(|p| p.name == format!("127.0.0.1:{dead}"))
        .expect("dead parent counted");
    assert_eq!(dead_stats.failures, 1);
    assert!(dead_stats
        .last_failure
        .as_ref()
        .unwrap()
        .reason
        .contains("refused"));
    let live = stats
        .peers
        .iter()
        .find(|p| p.name == parent.addr.to_string())
        .unwrap();
    assert_eq!(live.fetches, 1);
}

#[tokio::test]
async fn never_direct_with_only_dead_parents_gives_504_naming_them() {
    let origin = Origin::start(|_| ok("max-age=300", "unreachable")).await;
    let dead = free_port();
    let parents = format!("127.0.0.1:{dead};");
    let proxy = Canopy::start(&[("parents", &parents), ("never_direct", "on")]).await;
    let r = proxy.get(&origin.url("/nd")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        r.text().contains(&format!("127.0.0.1:{dead}")),
        "{}",
        r.text()
    );
    assert_eq!(origin.count("/nd"), 0);
}

#[tokio::test]
async fn upstream_failures_are_named_pages() {
    let proxy = Canopy::start(&[]).await;
    let dead = free_port();
    let refused = proxy.get(&format!("http://127.0.0.1:{dead}/")).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    assert!(refused.text().contains(&format!("127.0.0.1:{dead}")));
    let origin_form = proxy.get("/index.html").await;
    assert_eq!(origin_form.status, StatusCode::BAD_REQUEST);
    assert!(origin_form.text().contains("whole URL"));
    // Asking the proxy for itself is refused before it connects anywhere.
    let own = proxy.get(&format!("http://{}/", proxy.addr)).await;
    assert_eq!(own.status, StatusCode::FORBIDDEN);
    let tunnel = proxy.request("CONNECT", "127.0.0.1:25", &[]).await;
    assert_eq!(tunnel.status, StatusCode::FORBIDDEN);
    assert!(tunnel.text().contains("port 25"));
}

#[tokio::test]
async fn a_client_outside_allowed_clients_gets_403() {
    let origin = Origin::start(|_| ok("max-age=300", "x")).await;
    let proxy = Canopy::start(&[("bind_address", ""), ("allowed_clients", "127.0.0.1/32")]).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.addr.port()));
    let from = Some("127.0.0.2".parse().unwrap());
    let denied = request_via(addr, from, "GET", &origin.url("/"), &[])
        .await
        .unwrap();
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.text().contains("127.0.0.2"));
    let allowed = request_via(addr, None, "GET", &origin.url("/"), &[])
        .await
        .unwrap();
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(origin.count("/"), 1);
    assert_eq!(proxy.stats().await.denied_clients, 1);
}

#[tokio::test]
async fn the_access_log_is_in_squids_native_format() {
    let origin = Origin::start(|_| ok("max-age=300", "logged")).await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/log");
    proxy.get(&url).await;
    proxy.get(&url).await;
    let log = proxy.data_dir().join("access.log");
    wait_for("two access log lines", Duration::from_secs(10), || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            == 2
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0][3], "TCP_MISS/200");
    assert_eq!(lines[1][3], "TCP_HIT/200");
    assert_eq!(lines[1][4], "6");
    assert_eq!(lines[0][5], "GET");
    assert_eq!(lines[0][6], url);
    assert_eq!(lines[0][8], "HIER_DIRECT/127.0.0.1");
    assert_eq!(lines[1][8], "HIER_NONE/-");
    assert_eq!(lines[0][9], "text/plain");
}

#[tokio::test]
async fn the_first_bytes_arrive_before_the_whole_object() {
    let (release, released) = tokio::sync::watch::channel(false);
    let origin = Origin::start(move |_| {
        let released = released.clone();
        let chunks = futures_util::stream::unfold(0, move |i| {
            let mut released = released.clone();
            async move {
                match i {
                    0 => Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first "))),
                        1,
                    )),
                    1 => {
                        // The rest only once the client has shown it got the first part.
                        let _ = released.wait_for(|r| *r).await;
                        Some((Ok(Frame::data(Bytes::from_static(b"rest"))), 2))
                    }
                    _ => None,
                }
            }
        });
        Response::builder()
            .header("cache-control", "max-age=300")
            .body(StreamBody::new(chunks).boxed())
            .unwrap()
    })
    .await;
    let proxy = Canopy::start(&[]).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(origin.url("/streamed"))
        .header("host", origin.addr.to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first ");
    release.send(true).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "rest");
    let again = proxy.get(&origin.url("/streamed")).await;
    assert_eq!(again.text(), "first rest");
    assert_eq!(again.header("x-cache"), "HIT from canopy-under-test");
}

#[tokio::test]
async fn an_origin_that_does_not_answer_in_time_gives_504() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    // Accepts and never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let proxy = Canopy::start(&[("read_timeout_ms", "300")]).await;
    let r = proxy.get(&format!("http://{silent_addr}/slow")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.text().contains(&silent_addr.to_string()), "{}", r.text());
    assert!(r.text().contains("300 ms"), "{}", r.text());
}

#[tokio::test]
async fn objects_over_max_object_size_pass_through_uncached() {
    let origin = Origin::start(|seen| {
        let size = if seen.path == "/big" { 64 * 1024 } else { 1024 };
        Response::builder()
            .header("cache-control", "max-age=300")
            .body(full(vec![b'z'; size]))
            .unwrap()
    })
    .await;
    let proxy = Canopy::start(&[("max_object_size", "16K")]).await;
    for _ in 0..2 {
        assert_eq!(proxy.get(&origin.url("/big")).await.body.len(), 64 * 1024);
        assert_eq!(proxy.get(&origin.url("/small")).await.body.len(), 1024);
    }
    assert_eq!(origin.count("/big"), 2);
    assert_eq!(origin.count("/small"), 1);
}
