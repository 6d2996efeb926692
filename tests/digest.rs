//! Cache digests between Canopy and a real Squid (Debian's 5.7), both ways: Canopy fetches
//! Squid's digest and sends a miss Squid holds straight to it, with no ICP query; Squid
//! fetches Canopy's digest and logs `CD_SIBLING_HIT` for an object Canopy holds. Then a peer
//! whose digest lies: the false hit falls through and is counted apart from ICP's. And
//! Canopy's own digest: its figures in `canopy stats`, `/metrics` and the dashboard, and a
//! peer that holds it current answered 304.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use canopy_proxy::digest::cache_digest::CacheDigest;
use canopy_proxy::digest::key::StoreKey;
use canopy_proxy::digest::peer_digest::{DigestFetchError, Fetched};
use canopy_proxy::digest::peers;
use canopy_proxy::digest::{CONTENT_TYPE, STORE_DIGEST_PATH};
use canopy_proxy::hierarchy::reach::ConnectSettings;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use common::console::Console;
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

/// The digest of the cache at `addr` fetched by Canopy's own digest client, asking
/// If-Modified-Since `since`.
async fn fetch_digest_of(
    addr: SocketAddr,
    since: Option<SystemTime>,
) -> Result<Fetched, DigestFetchError> {
    let settings = ConnectSettings {
        local_address: None,
        connect_timeout: LIMIT,
    };
    let via = HeaderValue::from_static("1.1 peer-under-test");
    peers::fetch(
        &addr.ip().to_string(),
        addr.port(),
        settings,
        (via, since),
        1 << 20,
    )
    .await
}

/// `canopy stats --json`, as an administrator's script reads it.
fn stats_json(canopy: &Canopy) -> serde_json::Value {
    serde_json::from_str(&cli_ok(canopy, &["stats", "--json"])).expect("stats --json")
}

#[tokio::test(flavor = "multi_thread")]
async fn canopys_own_digest_figures_count_what_it_holds_and_a_current_copy_is_not_sent_again() {
    const PASSWORD: &str = "digest figures";
    let origin = origin().await;
    let canopy = Canopy::start(&[("digest_rebuild_period_s", "1")]).await;
    let held: Vec<String> = (0..5)
        .map(|i| origin.url(&format!("/figured/{i}")))
        .collect();
    for url in &held {
        assert_eq!(canopy.get(url).await.status, StatusCode::OK);
    }
    wait_for("a rebuild to count canopy's objects", LIMIT, || async {
        stats_json(&canopy)["own_digest"]["entries"] == 5
    })
    .await;
    let own = &stats_json(&canopy)["own_digest"];
    let capacity = own["capacity"].as_u64().unwrap();
    assert!(capacity >= 5, "{own}");
    assert_eq!(own["bits_per_entry"], 5);
    assert_eq!(own["size"], 128 + (capacity * 5).div_ceil(8));
    let fill = own["fill_percent"].as_f64().unwrap();
    assert!(fill > 0.0 && fill <= 65.0, "{own}");
    assert!(
        own["built_at"].as_str().is_some_and(|t| !t.is_empty()),
        "{own}"
    );
    let shown = cli_ok(&canopy, &["stats"]);
    assert!(shown.contains("cache digest      5 entries"), "{shown}");

    // A peer that holds the current digest is answered 304, rebuilds or not.
    let Fetched::Digest(first) = fetch_digest_of(canopy.addr, None).await.unwrap() else {
        panic!("an unconditional fetch answered 304");
    };
    assert!(held
        .iter()
        .all(|url| first.digest.contains(&StoreKey::get(url))));
    let since = first.modified_at.expect("the digest is dated");
    let built_at = stats_json(&canopy)["own_digest"]["built_at"].clone();
    wait_for("another rebuild", LIMIT, || async {
        stats_json(&canopy)["own_digest"]["built_at"] != built_at
    })
    .await;
    assert!(matches!(
        fetch_digest_of(canopy.addr, Some(since)).await.unwrap(),
        Fetched::NotModified { .. }
    ));
    let own = &stats_json(&canopy)["own_digest"];
    assert_eq!(
        (own["served"].as_u64(), own["not_modified"].as_u64()),
        (Some(1), Some(1))
    );

    // Once what it holds changed, the same question gets the new digest.
    let added = origin.url("/figured/added");
    assert_eq!(canopy.get(&added).await.status, StatusCode::OK);
    let added_key = StoreKey::get(&added);
    wait_for("the changed digest to be sent again", LIMIT, || async {
        matches!(
            fetch_digest_of(canopy.addr, Some(since)).await.unwrap(),
            Fetched::Digest(d) if d.digest.contains(&added_key)
        )
    })
    .await;

    let console = Console::beside(&canopy, "admin", PASSWORD).await;
    let cookie = console.session("admin", PASSWORD).await;
    let page = |path: &'static str| {
        let (console, cookie) = (&console, &cookie);
        async move {
            let got = console
                .request(
                    IpAddr::from([127, 0, 0, 1]),
                    "GET",
                    path,
                    &[("cookie", cookie)],
                    "",
                )
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(got.status, StatusCode::OK, "{path}");
            got.text()
        }
    };
    wait_for("a rebuild to count the added object", LIMIT, || async {
        stats_json(&canopy)["own_digest"]["entries"] == 6
    })
    .await;
    let own = stats_json(&canopy)["own_digest"].clone();
    let metrics = page("/metrics").await;
    for line in [
        "canopy_digest_entries 6\n".to_owned(),
        "canopy_digest_bits_per_entry 5\n".to_owned(),
        format!(
            "canopy_digest_served_total{{answer=\"whole\"}} {}\n",
            own["served"]
        ),
        format!(
            "canopy_digest_served_total{{answer=\"not_modified\"}} {}\n",
            own["not_modified"]
        ),
    ] {
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    let dashboard = page("/").await;
    assert!(
        dashboard.contains("Cache digest") && dashboard.contains("6 entries"),
        "{dashboard}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn squid_answers_canopys_refetch_of_its_unchanged_digest_304() {
    let Some(binary) = squid_binary() else { return };
    let (_cache, cache_dir) = ufs_cache_dir(&binary);
    // Rebuilt and rewritten hourly, as by default: unchanged during the test.
    let squid = Squid::start(&binary, &format!("{cache_dir}\ndigest_generation on"));
    wait_for("squid to build its digest", LIMIT, || async {
        fetch_digest_of(squid.http, None).await.is_ok()
    })
    .await;
    let Fetched::Digest(held) = fetch_digest_of(squid.http, None).await.unwrap() else {
        panic!("an unconditional fetch answered 304");
    };
    let since = held.modified_at.expect("squid dates its digest");
    match fetch_digest_of(squid.http, Some(since)).await.unwrap() {
        Fetched::NotModified { expires, .. } => assert!(expires.is_some()),
        Fetched::Digest(_) => panic!("squid sent its unchanged digest again"),
    }
    squid
        .wait_logged(
            "TCP_IMS_HIT/304",
            &format!(
                "http://squid-under-test:{}{STORE_DIGEST_PATH}",
                squid.http.port()
            ),
        )
        .await;
}
