//! PURGE as Squid does it: from `purge_allowed_clients` only, answered here (200 when
//! something was removed, 404 when nothing was stored), never forwarded upstream.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use hyper::{Response, StatusCode};

use common::*;

const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)));
const OTHER_LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)));

fn cacheable(seen: &Seen) -> Response<OriginBody> {
    let gzip = seen
        .headers
        .get("accept-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    Response::builder()
        .header("cache-control", "max-age=300")
        .header("vary", "Accept-Encoding")
        .body(full(if gzip {
            "gzip variant"
        } else {
            "plain variant"
        }))
        .unwrap()
}

async fn purge(proxy: &Canopy, from: Option<IpAddr>, url: &str) -> Fetched {
    request_via(proxy.addr, from, "PURGE", url, &[])
        .await
        .unwrap_or_else(|e| panic!("PURGE {url}: {e}"))
}

fn purges_seen(origin: &Origin) -> usize {
    origin.seen().iter().filter(|s| s.method == "PURGE").count()
}

#[tokio::test]
async fn purge_removes_every_variant_and_is_never_forwarded() {
    let origin = Origin::start(cacheable).await;
    let proxy = Canopy::start(&[]).await;
    let url = origin.url("/object");
    let gzip = [("accept-encoding", "gzip")];
    proxy.get(&url).await;
    proxy.request("GET", &url, &gzip).await;
    assert_eq!(
        proxy.get(&url).await.header("x-cache"),
        "HIT from canopy-under-test"
    );
    assert_eq!(origin.count("/object"), 2);

    let purged = purge(&proxy, LOOPBACK, &url).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    assert_eq!(purges_seen(&origin), 0, "PURGE reached the origin");

    let plain = proxy.get(&url).await;
    assert_eq!(plain.header("x-cache"), "MISS from canopy-under-test");
    let zipped = proxy.request("GET", &url, &gzip).await;
    assert_eq!(zipped.header("x-cache"), "MISS from canopy-under-test");
    assert_eq!(zipped.text(), "gzip variant");
    assert_eq!(origin.count("/object"), 4);

    purge(&proxy, LOOPBACK, &url).await;
    let again = purge(&proxy, LOOPBACK, &url).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text());
    assert_eq!(purges_seen(&origin), 0);
    assert_eq!(proxy.stats().await.purges, 3);

    let log = proxy.data_dir().join("access.log");
    wait_for(
        "the PURGE lines in the access log",
        Duration::from_secs(10),
        || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let line = |status: &str| {
                    text.lines().any(|l| {
                        l.contains(&format!("TCP_MISS/{status} ")) && l.contains(" PURGE ")
                    })
                };
                line("200") && line("404")
            }
        },
    )
    .await;
}

#[tokio::test]
async fn purge_from_outside_purge_allowed_clients_is_refused_and_the_object_stays() {
    let origin = Origin::start(cacheable).await;
    let proxy = Canopy::start(&[("purge_allowed_clients", "127.0.0.1/32")]).await;
    let url = origin.url("/kept");
    proxy.get(&url).await;
    let refused = purge(&proxy, OTHER_LOOPBACK, &url).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.text().contains("purge_allowed_clients"),
        "{}",
        refused.text()
    );
    assert_eq!(purges_seen(&origin), 0);
    let still = request_via(proxy.addr, OTHER_LOOPBACK, "GET", &url, &[])
        .await
        .unwrap();
    assert_eq!(still.header("x-cache"), "HIT from canopy-under-test");
    assert_eq!(origin.count("/kept"), 1);
}

#[tokio::test]
async fn canopy_purge_sends_purge_to_the_running_proxy() {
    let origin = Origin::start(cacheable).await;
    let mut proxy = Canopy::start(&[]).await;
    let url = origin.url("/by-cli");
    proxy.get(&url).await;

    let purged = proxy.cli(&["purge", &url]);
    assert!(purged.status.success(), "{}", stderr(&purged));
    assert_eq!(stdout(&purged).trim(), format!("purged {url}"));
    assert_eq!(
        proxy.get(&url).await.header("x-cache"),
        "MISS from canopy-under-test"
    );

    proxy.cli(&["purge", &url]);
    let absent = proxy.cli(&["purge", &url]);
    assert!(absent.status.success(), "{}", stderr(&absent));
    assert_eq!(
        stdout(&absent).trim(),
        format!("{url} was not in the cache")
    );

    proxy.kill();
    let down = proxy.cli(&["purge", &url]);
    assert!(!down.status.success());
    assert!(stderr(&down).contains("not running"), "{}", stderr(&down));
    assert_eq!(purges_seen(&origin), 0);
}
