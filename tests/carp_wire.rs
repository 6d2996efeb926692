//! CARP against a real Squid (Debian's 5.7, DESIGN.md §11): three parents with weights 1, 2
//! and 1, sixty URLs through Squid's `carp`, and Canopy's CARP function must name the parent
//! Squid chose for every one of them; then Squid with `carp` and Canopy with `round_robin
//! carp`, side by side, must send sixty URLs to the same parents.

mod common;

use canopy_proxy::hierarchy::carp::CarpArray;
use hyper::{Response, StatusCode};

use common::squid::{squid_binary, Squid};
use std::time::Duration;

use common::{full, request_via, stderr, wait_for, Canopy, Origin};

const PARENTS: [(&str, u32); 3] = [("alpha", 1), ("beta", 2), ("gamma", 1)];

#[tokio::test(flavor = "multi_thread")]
async fn canopy_picks_the_parent_squid_picks_for_sixty_urls() {
    let Some(binary) = squid_binary() else { return };
    let mut parents = Vec::new();
    for _ in PARENTS {
        parents.push(Origin::start(|seen| Response::new(full(format!("via {}", seen.path)))).await);
    }
    let peer_lines: String = PARENTS
        .iter()
        .zip(&parents)
        .map(|((name, weight), parent)| {
            format!(
                "cache_peer 127.0.0.1 parent {} 0 carp weight={weight} no-query name={name}\n",
                parent.addr.port()
            )
        })
        .collect();
    let squid = Squid::start(
        &binary,
        &format!("{peer_lines}never_direct allow all\ncache deny all"),
    );

    let array = CarpArray::new(PARENTS);
    let mut disagreements = Vec::new();
    for i in 0..60 {
        let path = format!("/obj/{i}");
        let url = format!("http://carp.test{path}");
        let reply = request_via(squid.http, None, "GET", &url, &[])
            .await
            .expect("squid answers");
        assert_eq!(reply.status, StatusCode::OK, "{url}");
        squid.wait_logged("CARP/127.0.0.1", &url).await;
        let squids: Vec<&str> = PARENTS
            .iter()
            .zip(&parents)
            .filter(|(_, parent)| parent.count(&path) > 0)
            .map(|((name, _), _)| *name)
            .collect();
        let canopys = array.pick(&url).map(|index| PARENTS[index].0);
        if squids != [canopys.unwrap_or("none")] {
            disagreements.push(format!("{url}: squid {squids:?}, canopy {canopys:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// The CARP parents of the end-to-end test: loopback hosts (a parent's CARP name is its
/// host, in Squid and in Canopy) and weights.
const HOSTS: [([u8; 4], u32); 3] = [
    ([127, 0, 0, 11], 1),
    ([127, 0, 0, 12], 2),
    ([127, 0, 0, 13], 1),
];

/// Three recording parents, one on each of [`HOSTS`].
async fn carp_parents() -> Vec<Origin> {
    let mut parents = Vec::new();
    for (ip, _) in HOSTS {
        let answer = |seen: &common::Seen| Response::new(full(format!("via {}", seen.path)));
        parents.push(Origin::start_on(ip.into(), answer).await);
    }
    parents
}

/// Which of `parents` got `path`, by index; every request must reach exactly one.
fn served_by(parents: &[Origin], path: &str) -> usize {
    let got: Vec<usize> = (0..parents.len())
        .filter(|&i| parents[i].count(path) > 0)
        .collect();
    assert_eq!(got.len(), 1, "{path} reached parents {got:?}");
    got[0]
}

/// The URL of test request `i`: the host written in mixed case and with the default port
/// now and then, which both proxies hash as `http://carp.test/...`.
fn carp_url(i: usize) -> (String, String) {
    let path = format!("/e2e/{i}?n={}", i * 7);
    let url = match i % 3 {
        0 => format!("http://carp.test{path}"),
        1 => format!("http://Carp.Test{path}"),
        _ => format!("http://carp.test:80{path}"),
    };
    (path, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn squid_and_canopy_in_carp_mode_send_sixty_urls_to_the_same_parents() {
    let Some(binary) = squid_binary() else { return };
    let (for_squid, for_canopy) = (carp_parents().await, carp_parents().await);
    // No `name=`: a cache_peer's name defaults to its host, as a Canopy parent's does.
    let peer_lines: String = HOSTS
        .iter()
        .zip(&for_squid)
        .map(|((_, weight), parent)| {
            format!(
                "cache_peer {} parent {} 0 carp weight={weight} no-query\n",
                parent.addr.ip(),
                parent.addr.port()
            )
        })
        .collect();
    let squid = Squid::start(
        &binary,
        &format!("{peer_lines}never_direct allow all\ncache deny all"),
    );
    let list: String = HOSTS
        .iter()
        .zip(&for_canopy)
        .map(|((_, weight), parent)| format!("{}|{weight}; ", parent.addr))
        .collect();
    let canopy = Canopy::start(&[
        ("parents", &list),
        ("round_robin", "carp"),
        ("never_direct", "on"),
    ])
    .await;

    let mut disagreements = Vec::new();
    for i in 0..60 {
        let (path, url) = carp_url(i);
        let via_squid = request_via(squid.http, None, "GET", &url, &[])
            .await
            .expect("squid answers");
        assert_eq!(via_squid.status, StatusCode::OK, "squid: {url}");
        let via_canopy = canopy.get(&url).await;
        assert_eq!(via_canopy.status, StatusCode::OK, "canopy: {url}");
        let (squids, canopys) = (served_by(&for_squid, &path), served_by(&for_canopy, &path));
        if squids != canopys {
            disagreements.push(format!("{url}: squid {squids}, canopy {canopys}"));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert!(
        (0..3).all(|i| for_canopy[i].seen().len() >= 5),
        "every parent has a share"
    );
    let log = canopy.data_dir().join("access.log");
    wait_for(
        "CARP/ in the access log, as Squid logs it",
        Duration::from_secs(10),
        || async { std::fs::read_to_string(&log).is_ok_and(|l| l.contains("CARP/127.0.0.12")) },
    )
    .await;

    // A parent down by hand is passed over as Squid passes over a dead one: the URL goes to
    // the best score among the others, the hash itself unchanged.
    let beta = for_canopy[1].addr.to_string();
    let down = canopy.cli(&["parent", "down", &beta, "--reason", "test"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let names = HOSTS.map(|(ip, _)| std::net::Ipv4Addr::from(ip).to_string());
    let array = CarpArray::new(names.iter().zip(HOSTS).map(|(n, (_, w))| (n.as_str(), w)));
    for i in 60..90 {
        let (path, url) = carp_url(i);
        assert_eq!(canopy.get(&url).await.status, StatusCode::OK, "{url}");
        let hashed = format!("http://carp.test{path}");
        let expected = array.order(&hashed).into_iter().find(|&p| p != 1);
        assert_eq!(Some(served_by(&for_canopy, &path)), expected, "{url}");
    }
}
