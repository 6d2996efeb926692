//! What an administrator sees of the two tiers: `canopy cache list` and `canopy cache
//! stats`, `canopy stats`, `/metrics` and the dashboard agree with what was served, and a
//! faulted or closed disk store says so.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use hyper::{Response, StatusCode};
use serde_json::Value;

use canopy_config::control::{CacheListReply, Tier};
use canopy_config::stats::StoreState;
use common::console::Console;
use common::disk::ReadOnlyOver;
use common::*;

const KIB: usize = 1024;
const PASSWORD: &str = "watch the tiers";

/// An origin of fresh objects (an hour): `/large…` bodies are 2 MiB, kept on disk only
/// (over `max_object_size_in_memory`), the rest 100 KiB, kept in both tiers.
async fn origin() -> Origin {
    Origin::start(|seen| {
        let len = if seen.path.starts_with("/large") {
            2048 * KIB
        } else {
            100 * KIB
        };
        Response::builder()
            .header("cache-control", "max-age=3600")
            .body(full(vec![b'x'; len]))
            .unwrap()
    })
    .await
}

fn is_hit(fetched: &Fetched) -> bool {
    fetched.header("x-cache").starts_with("HIT")
}

async fn wait_for_writes(proxy: &Canopy, writes: u64) {
    wait_for(
        "objects written to disk",
        Duration::from_secs(10),
        || async { proxy.stats().await.disk.is_some_and(|d| d.writes >= writes) },
    )
    .await;
}

fn listed(proxy: &Canopy, args: &[&str]) -> CacheListReply {
    let mut all = vec!["cache", "list", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&cli_ok(proxy, &all)).expect("cache list --json")
}

/// `/metrics`, read with an account's Basic credentials.
async fn metrics(console: &Console) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"));
    let scraped = console
        .request(
            IpAddr::from([127, 0, 0, 1]),
            "GET",
            "/metrics",
            &[("authorization", &format!("Basic {basic}"))],
            "",
        )
        .await
        .expect("/metrics");
    assert_eq!(scraped.status, StatusCode::OK);
    scraped.text()
}

async fn dashboard(console: &Console) -> String {
    let cookie = console.session("admin", PASSWORD).await;
    let page = console
        .request(
            IpAddr::from([127, 0, 0, 1]),
            "GET",
            "/",
            &[("cookie", &cookie)],
            "",
        )
        .await
        .expect("the dashboard");
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    page.text()
}

#[tokio::test]
async fn the_listing_and_every_count_agree_with_what_each_tier_served() {
    let origin = origin().await;
    let proxy = Canopy::start(&[]).await;
    for path in ["/small", "/large"] {
        assert!(!is_hit(&proxy.get(&origin.url(path)).await), "{path}");
    }
    wait_for_writes(&proxy, 2).await;
    // The small one from memory, the large one streamed from disk.
    for path in ["/small", "/large"] {
        assert!(is_hit(&proxy.get(&origin.url(path)).await), "{path}");
    }

    let all = listed(&proxy, &[]);
    let rows: Vec<(&str, Tier)> = all.urls.iter().map(|u| (u.url.as_str(), u.tier)).collect();
    assert_eq!(
        rows,
        [
            (origin.url("/large").as_str(), Tier::Disk),
            (origin.url("/small").as_str(), Tier::Both),
        ]
    );
    assert!(!all.truncated);
    let large = &all.urls[0];
    assert_eq!((large.status, large.variants), (200, 1));
    assert_eq!(large.bytes, 2048 * KIB as u64);
    assert!(large.fresh_for_s > 3500 && large.age_s < 100, "{large:?}");
    let only_large = listed(&proxy, &[&origin.url("/l")]);
    assert_eq!(only_large.urls.len(), 1);
    assert_eq!(only_large.urls[0].url, origin.url("/large"));
    let first = listed(&proxy, &["--limit", "1"]);
    assert!(first.truncated && first.urls.len() == 1);
    let text = cli_ok(&proxy, &["cache", "list", "--limit", "1"]);
    assert!(text.starts_with("TIER"), "{text}");
    assert!(text.contains(&origin.url("/large")), "{text}");
    assert!(text.contains("more match"), "{text}");

    let stats: Value =
        serde_json::from_str(&cli_ok(&proxy, &["cache", "stats", "--json"])).unwrap();
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["hits"], 2);
    assert_eq!(stats["memory"]["hits"], 1);
    assert_eq!(stats["memory"]["hit_ratio"], 0.25);
    assert_eq!(stats["memory"]["objects"], 1);
    assert_eq!(stats["disk"]["hits_served"], 1);
    assert_eq!(stats["disk"]["hit_ratio"], 0.25);
    assert_eq!(stats["disk"]["objects"], 2);
    assert_eq!(stats["disk"]["writes"], 2);
    assert_eq!(stats["disk"]["state"], "ok");
    let text = cli_ok(&proxy, &["cache", "stats"]);
    assert!(
        text.contains("hits         1 (25.0 % of requests)"),
        "{text}"
    );
    assert!(text.contains("state        ok"), "{text}");
    let text = cli_ok(&proxy, &["stats"]);
    assert!(
        text.contains("memory hits       1 (25.0 % of requests)"),
        "{text}"
    );

    let console = Console::beside(&proxy, "admin", PASSWORD).await;
    let scraped = metrics(&console).await;
    for line in [
        "canopy_requests_total 4\n",
        "canopy_cache_hits_total{tier=\"memory\"} 1\n",
        "canopy_cache_hits_total{tier=\"disk\"} 1\n",
        "canopy_cache_hit_ratio{tier=\"memory\"} 0.25\n",
        "canopy_cache_hit_ratio{tier=\"disk\"} 0.25\n",
        "canopy_disk_cache_objects 2\n",
        "canopy_disk_cache_state{state=\"ok\"} 1\n",
    ] {
        assert!(scraped.contains(line), "{line} not in\n{scraped}");
    }
    let page = dashboard(&console).await;
    assert!(page.contains("id=\"disk-cache\""), "{page}");
    assert!(page.contains("25.0 % of requests · 1 hit"), "{page}");
}

#[tokio::test]
async fn a_faulted_store_says_so_on_the_dashboard_and_in_cache_stats() {
    let origin = origin().await;
    let proxy = Canopy::start(&[]).await;
    let tmp = proxy.data_dir().join("cache").join("tmp");
    let _read_only = ReadOnlyOver::mount(&tmp);
    assert!(!is_hit(&proxy.get(&origin.url("/large")).await));
    wait_for(
        "the write fault counted",
        Duration::from_secs(10),
        || async {
            proxy
                .stats()
                .await
                .disk
                .is_some_and(|d| d.state == StoreState::Faulted)
        },
    )
    .await;
    let disk = proxy.stats().await.disk.unwrap();
    let fault = disk.last_fault.expect("the last fault");
    assert!(fault.reason.contains("tmp"), "{fault:?}");

    let text = cli_ok(&proxy, &["cache", "stats"]);
    assert!(text.contains("state        faulted"), "{text}");
    assert!(text.contains("last fault"), "{text}");
    let console = Console::beside(&proxy, "admin", PASSWORD).await;
    let page = dashboard(&console).await;
    assert!(page.contains("big error\">Faulted"), "{page}");
    assert!(page.contains("faults: full 0 · I/O "), "{page}");
    assert!(page.contains("last fault "), "{page}");
    let scraped = metrics(&console).await;
    assert!(scraped.contains("canopy_disk_cache_state{state=\"faulted\"} 1\n"));
}

#[tokio::test]
async fn a_store_that_could_not_open_is_closed_with_its_reason_and_the_proxy_down_is_said() {
    // A directory under a file cannot be made.
    let proxy = Canopy::start(&[("cache_dir", "/dev/null/cache")]).await;
    let text = cli_ok(&proxy, &["cache", "stats"]);
    assert!(text.contains("state        closed: disk cache"), "{text}");
    let console = Console::beside(&proxy, "admin", PASSWORD).await;
    let page = dashboard(&console).await;
    assert!(page.contains("big error\">Closed"), "{page}");
    assert!(page.contains("not opened at start"), "{page}");

    let refused = proxy.cli(&["cache", "list", "--limit", "0"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("1..=10000"),
        "{}",
        stderr(&refused)
    );

    let dir = tempfile::tempdir().unwrap();
    for args in [&["cache", "list"][..], &["cache", "stats"]] {
        let refused = canopy_cli(dir.path(), args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&refused).contains("the proxy is not running"),
            "{}",
            stderr(&refused)
        );
    }
}
