//! Squid's cache digest read off a real Squid (Debian's 5.7, DESIGN.md §5 and §11): Squid
//! with a disk cache fetches a few objects, builds its digest, serves it where its peers
//! ask for it, and Canopy's decoder finds every object Squid fetched.

mod common;

use std::time::Duration;

use canopy_proxy::digest::cache_digest;
use canopy_proxy::digest::key::StoreKey;
use hyper::{Response, StatusCode};

use common::squid::{fetch_digest, squid_binary, ufs_cache_dir, Squid};
use common::{full, request_via, wait_for, Origin};

#[tokio::test(flavor = "multi_thread")]
async fn squids_digest_decodes_and_holds_every_object_it_fetched() {
    let Some(binary) = squid_binary() else { return };
    let origin = Origin::start(|seen| {
        let mut response = Response::new(full(format!("object {}", seen.path)));
        response
            .headers_mut()
            .insert("cache-control", "max-age=3600".parse().unwrap());
        response
    })
    .await;
    let (_cache, cache_dir) = ufs_cache_dir(&binary);
    let squid = Squid::start(
        &binary,
        &format!(
            "{cache_dir}\ndigest_generation on\n\
             digest_rebuild_period 1 second\ndigest_rewrite_period 1 second"
        ),
    );

    let fetched: Vec<String> = (0..20)
        .map(|i| origin.url(&format!("/held/{i}?q={i}")))
        .collect();
    for url in &fetched {
        let reply = request_via(squid.http, None, "GET", url, &[])
            .await
            .expect("squid answers");
        assert_eq!(reply.status, StatusCode::OK, "{url}");
    }

    // Squid rebuilds and rewrites its digest every second; wait for one built after the
    // fetches.
    wait_for(
        "squid's digest to hold every fetched URL",
        Duration::from_secs(30),
        || async {
            let digest = fetch_digest(squid.http).await;
            fetched
                .iter()
                .all(|url| digest.contains(&StoreKey::get(url)))
        },
    )
    .await;

    let digest = fetch_digest(squid.http).await;
    assert_eq!(digest.bits_per_entry(), cache_digest::BITS_PER_ENTRY);
    assert!(
        digest.count() >= fetched.len() as u32,
        "count {}",
        digest.count()
    );
    assert_eq!(
        digest.mask_size(),
        cache_digest::mask_size(digest.capacity(), digest.bits_per_entry()).unwrap()
    );
    let strangers = (0..100)
        .filter(|i| digest.contains(&StoreKey::get(origin.url(&format!("/never/{i}")))))
        .count();
    assert!(
        strangers < 50,
        "{strangers} of 100 URLs never fetched look held ({:.1}% of bits on)",
        digest.percent_on()
    );
}
