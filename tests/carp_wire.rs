//! CARP against a real Squid (Debian's 5.7, DESIGN.md §11): three parents with weights 1, 2
//! and 1, sixty URLs through Squid's `carp`, and Canopy's CARP function must name the parent
//! Squid chose for every one of them.

mod common;

use canopy_proxy::hierarchy::carp::CarpArray;
use hyper::{Response, StatusCode};

use common::squid::{squid_binary, Squid};
use common::{full, request_via, Origin};

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
