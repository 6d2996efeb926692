//! Cache digests between Canopy and a real Squid (Debian's 5.7), both ways: Canopy fetches
//! Squid's digest and sends a miss Squid holds straight to it, with no ICP query; Squid
//! fetches Canopy's digest and logs `CD_SIBLING_HIT` for an object Canopy holds. Then a peer
//! whose digest lies: the false hit falls through and is counted apart from ICP's.

mod common;

use std::time::Duration;

use canopy_proxy::digest::cache_digest::CacheDigest;
use canopy_proxy::digest::key::StoreKey;
use canopy_proxy::digest::{CONTENT_TYPE, STORE_DIGEST_PATH};
use hyper::{Response, StatusCode};

use common::squid::{fetch_digest, free_udp_port_on, squid_binary, ufs_cache_dir, Squid};
use common::{cli_ok, free_udp_port, full, peer_stats, request_via, wait_for, Canopy, Origin};

const LIMIT: Duration = Duration::from_secs(30);

/// Cacheable for an hour.
async fn origin() -> Origin {
    Origin::start(|seen| {
        let mut response = Response::new(full(format!("object {}", seen.path)));
        response
            .headers_mut()
            .insert("cache-control", "max-age=3600".parse().unwrap());
        response
    })
    .await
}

/// Waits until Canopy holds a usable digest of peer `name`.
async fn wait_peer_digest(canopy: &Canopy, name: &str) {
    wait_for(
        &format!("canopy to fetch {name}'s digest"),
        LIMIT,
        || async {
            peer_stats(canopy, name)
                .await
                .digest
                .is_some_and(|d| d.last_fetch_outcome == "ok")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn squids_digest_sends_a_miss_squid_holds_to_squid_with_no_icp_query() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let (_cache, cache_dir) = ufs_cache_dir(&binary);
    let squid = Squid::start(
        &binary,
        &format!(
            "{cache_dir}\ndigest_generation on\n\
             digest_rebuild_period 1 second\ndigest_rewrite_period 1 second"
        ),
    );
    let held = origin.url("/held-by-squid");
    let warm = request_via(squid.http, None, "GET", &held, &[])
        .await
        .unwrap();
    assert_eq!(warm.status, StatusCode::OK);
    wait_for("squid's digest to hold the object", LIMIT, || async {
        fetch_digest(squid.http)
            .await
            .contains(&StoreKey::get(&held))
    })
    .await;

    let icp_port = free_udp_port().to_string();
    let canopy = Canopy::start(&[
        ("icp_mode", "send-receive"),
        ("icp_port", &icp_port),
        ("icp_query_timeout_ms", "2000"),
    ])
    .await;
    let (http, icp) = (squid.http.port().to_string(), squid.icp_port.to_string());
    cli_ok(
        &canopy,
        &[
            "peer",
            "add",
            "squid",
            "127.0.0.2",
            "--type",
            "sibling",
            "--http-port",
            &http,
            "--icp-port",
            &icp,
            "--proxy-only",
        ],
    );
    cli_ok(&canopy, &["reload"]);

    // The first miss finds no digest yet (it is fetched then) and asks by ICP.
    let first = origin.url("/first-miss");
    assert_eq!(canopy.get(&first).await.status, StatusCode::OK);
    squid.wait_logged("UDP_MISS/", &first).await;
    wait_peer_digest(&canopy, "squid").await;
    assert!(
        squid
            .access_log()
            .lines()
            .any(|l| l.contains(STORE_DIGEST_PATH) && l.contains("/200 ")),
        "squid served its digest:\n{}",
        squid.access_log()
    );
    let queries = peer_stats(&canopy, "squid").await.icp_queries;

    let got = canopy.get(&held).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "object /held-by-squid");
    assert_eq!(
        origin.count("/held-by-squid"),
        1,
        "fetched again from the origin"
    );
    canopy.wait_logged("CD_SIBLING_HIT/127.0.0.2", &held).await;
    squid.wait_logged("_HIT/200", &held).await;
    assert_eq!(squid.logged("UDP_", &held), 0, "squid was asked by ICP");
    let peer = peer_stats(&canopy, "squid").await;
    assert_eq!(peer.icp_queries, queries, "an ICP query went out");
    assert_eq!((peer.hits_served, peer.false_hits_digest), (1, 0));
    let digest = peer.digest.expect("digest figures");
    assert!(digest.entries >= 1 && digest.size > 128, "{digest:?}");
    assert!(digest.fill_percent > 0.0 && digest.fill_percent <= 65.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn squid_fetches_canopys_digest_and_logs_cd_sibling_hit() {
    let Some(binary) = squid_binary() else { return };
    let origin = origin().await;
    let icp_port = free_udp_port();
    let icp = icp_port.to_string();
    let canopy = Canopy::start(&[
        ("icp_mode", "receive"),
        ("icp_port", &icp),
        ("digest_rebuild_period_s", "1"),
    ])
    .await;
    let held: Vec<String> = (0..10)
        .map(|i| origin.url(&format!("/canopy-holds/{i}")))
        .collect();
    for url in &held {
        assert_eq!(canopy.get(url).await.status, StatusCode::OK);
    }
    wait_for("canopy's digest to hold its objects", LIMIT, || async {
        let digest = fetch_digest(canopy.addr).await;
        held.iter().all(|url| digest.contains(&StoreKey::get(url)))
    })
    .await;

    let squid = Squid::start(
        &binary,
        &format!(
            "cache_peer 127.0.0.1 sibling {} {icp_port} name=canopy\nicp_query_timeout 2000\n",
            canopy.addr.port()
        ),
    );
    let (http, squid_icp) = (squid.http.port().to_string(), squid.icp_port.to_string());
    cli_ok(
        &canopy,
        &[
            "peer",
            "add",
            "squid",
            "127.0.0.2",
            "--type",
            "sibling",
            "--http-port",
            &http,
            "--icp-port",
            &squid_icp,
        ],
    );
    cli_ok(&canopy, &["reload"]);

    // Squid asks for the digest the first time its peer selection needs it.
    let mut round = 0;
    wait_for("squid to fetch canopy's digest", LIMIT, || {
        round += 1;
        let url = origin.url(&format!("/warm-up/{round}"));
        let (canopy, squid) = (&canopy, &squid);
        async move {
            request_via(squid.http, None, "GET", &url, &[])
                .await
                .unwrap();
            canopy.access_log().lines().any(|l| {
                l.contains("127.0.0.2") && l.contains(STORE_DIGEST_PATH) && l.contains("/200 ")
            })
        }
    })
    .await;

    // Squid reads the digest as it arrives; an object asked before it is ready goes by
    // ICP, so each object is asked once until one goes by the digest.
    let mut asked = held.iter();
    let mut predicted = None;
    while predicted.is_none() {
        let url = asked
            .next()
            .unwrap_or_else(|| panic!("no CD_SIBLING_HIT in squid's log:\n{}", squid.access_log()));
        let got = request_via(squid.http, None, "GET", url, &[])
            .await
            .unwrap();
        assert_eq!(got.status, StatusCode::OK);
        squid.wait_logged("/", url).await;
        if squid.logged("CD_SIBLING_HIT/127.0.0.1", url) > 0 {
            predicted = Some(url.clone());
        }
    }
    let url = predicted.unwrap();
    canopy.wait_logged("TCP_HIT/200", &url).await;
    let path = url.trim_start_matches(&origin.url(""));
    assert_eq!(origin.count(path), 1, "the origin was asked again");
}

/// A peer that serves `digest` and answers every other request 504, as a sibling that
/// does not hold what it is asked for with `only-if-cached`.
async fn lying_peer(digest: CacheDigest) -> Origin {
    let body = digest.encode();
    Origin::start(move |seen| {
        if seen.path == STORE_DIGEST_PATH {
            let mut response = Response::new(full(body.clone()));
            let headers = response.headers_mut();
            headers.insert("content-type", CONTENT_TYPE.parse().unwrap());
            headers.insert("expires", "Thu, 01 Jan 2099 00:00:00 GMT".parse().unwrap());
            response
        } else {
            let mut response = Response::new(full("not here"));
            *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            response
        }
    })
    .await
}

fn add_peer(canopy: &Canopy, name: &str, peer: &Origin, extra: &[&str]) {
    let (http, icp) = (
        peer.addr.port().to_string(),
        free_udp_port_on(peer.addr.ip()).to_string(),
    );
    let mut args = vec![
        "peer",
        "add",
        name,
        "127.0.0.1",
        "--type",
        "sibling",
        "--http-port",
        &http,
        "--icp-port",
        &icp,
        "--no-query",
    ];
    args.extend_from_slice(extra);
    cli_ok(canopy, &args);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_false_digest_hit_falls_through_and_is_counted_apart_and_no_digest_is_never_asked() {
    let origin = origin().await;
    let promised = origin.url("/promised");
    let mut digest = CacheDigest::new(100, 5).unwrap();
    digest.add(&StoreKey::get(&promised));
    let liar = lying_peer(digest.clone()).await;
    let ignored = lying_peer(digest).await;
    let canopy = Canopy::start(&[]).await;
    add_peer(&canopy, "liar", &liar, &[]);
    add_peer(&canopy, "ignored", &ignored, &["--no-digest"]);
    cli_ok(&canopy, &["reload"]);

    let first = origin.url("/first");
    assert_eq!(canopy.get(&first).await.status, StatusCode::OK);
    wait_peer_digest(&canopy, "liar").await;
    let asked = liar
        .seen()
        .into_iter()
        .find(|s| s.path == STORE_DIGEST_PATH)
        .expect("the digest was asked for");
    assert_eq!(asked.headers["accept"], CONTENT_TYPE);

    let got = canopy.get(&promised).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "object /promised");
    let tried = liar
        .seen()
        .into_iter()
        .find(|s| s.path.ends_with("/promised"))
        .expect("the liar was asked for the object");
    assert_eq!(tried.headers["cache-control"], "only-if-cached");
    canopy.wait_logged("HIER_DIRECT/", &promised).await;
    let stats = peer_stats(&canopy, "liar").await;
    // The total counts every method's false hits.
    assert_eq!((stats.false_hits_digest, stats.false_hits), (1, 1));
    assert!(ignored.seen().is_empty(), "a no-digest peer was asked");
    assert!(peer_stats(&canopy, "ignored").await.digest.is_none());
    let shown = cli_ok(&canopy, &["stats"]);
    assert!(
        shown.contains("digest: ") && shown.contains("false hits 1"),
        "{shown}"
    );
}
