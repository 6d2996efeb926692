//! What `canopy cache list` shows: the URLs of both tiers merged in URL order, each with
//! where it is held, its variants, size, age and freshness (as Squid's `mgr:objects`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, StatusCode};

use crate::cache::disk::ListedObject;
use crate::cache::disk_tier::DiskTier;
use crate::cache::policy::{self, Heuristics, StoredTimes};
use crate::cache::store::{Store, Stored};
use canopy_config::control::{CacheListReply, CachedUrl, Tier, MAX_CACHE_LIST};
use canopy_config::versions::rfc3339;

/// One stored variant, from either tier.
struct Variant {
    tier: Tier,
    vary: Option<Vec<(HeaderName, Option<String>)>>,
    status: StatusCode,
    headers: HeaderMap,
    times: StoredTimes,
    body_len: u64,
}

impl Variant {
    fn in_memory(stored: &Stored) -> Variant {
        Variant {
            tier: Tier::Memory,
            vary: stored.vary().map(<[_]>::to_vec),
            status: stored.status,
            headers: stored.headers(),
            times: stored.times(),
            body_len: stored.body.len() as u64,
        }
    }

    fn on_disk(listed: ListedObject) -> Variant {
        Variant {
            tier: Tier::Disk,
            vary: listed.head.vary,
            status: listed.head.status,
            headers: listed.head.headers,
            times: listed.head.times,
            body_len: listed.body_len,
        }
    }
}

/// The first `limit` URLs (at most [`MAX_CACHE_LIST`]) starting with `prefix` held in
/// memory or on disk; freshness as the request path would judge it with `heuristics` and
/// the targeted cache-control fields `targets`.
pub async fn list(
    memory: Arc<Store>,
    disk: Option<&DiskTier>,
    (heuristics, targets): (Heuristics, &[HeaderName]),
    prefix: &str,
    limit: usize,
) -> CacheListReply {
    let limit = limit.min(MAX_CACHE_LIST);
    // One more than shown from each tier tells whether the merged list goes on.
    let wanted = limit + 1;
    let owned = prefix.to_owned();
    let in_memory = tokio::task::spawn_blocking(move || memory.list(&owned, wanted))
        .await
        .unwrap_or_default();
    let mut urls: BTreeMap<String, Vec<Variant>> = in_memory
        .into_iter()
        .map(|(url, stored)| (url, stored.iter().map(|s| Variant::in_memory(s)).collect()))
        .collect();
    let mut disk_unlisted = None;
    if let Some(disk) = disk {
        match disk.list(prefix, wanted).await {
            Ok(objects) => {
                for object in objects {
                    let url = object.url.clone();
                    urls.entry(url).or_default().push(Variant::on_disk(object));
                }
            }
            Err(e) => disk_unlisted = Some(e.to_string()),
        }
    }
    let truncated = urls.len() > limit;
    let now = SystemTime::now();
    let urls = urls
        .into_iter()
        .take(limit)
        .map(|(url, variants)| cached_url(url, variants, now, (&heuristics, targets)))
        .collect();
    CacheListReply {
        urls,
        limit,
        truncated,
        disk_unlisted,
    }
}

/// A URL's row: its variants counted once whichever tiers hold them (the memory copy's
/// figures when both do), the newest one's age and freshness.
fn cached_url(
    url: String,
    variants: Vec<Variant>,
    now: SystemTime,
    (h, targets): (&Heuristics, &[HeaderName]),
) -> CachedUrl {
    let in_tier = |tier| variants.iter().any(|v| v.tier == tier);
    let tier = match (in_tier(Tier::Memory), in_tier(Tier::Disk)) {
        (true, true) => Tier::Both,
        (true, false) => Tier::Memory,
        _ => Tier::Disk,
    };
    // Memory's come first: a disk copy of the same variant is left out.
    let mut distinct: Vec<&Variant> = Vec::new();
    for variant in &variants {
        if !distinct.iter().any(|d| d.vary == variant.vary) {
            distinct.push(variant);
        }
    }
    let newest = distinct
        .iter()
        .max_by_key(|v| v.times.response_time)
        .expect("a URL is listed with at least one variant");
    let fresh_for = policy::remaining_freshness(
        newest.status,
        &newest.headers,
        &newest.times,
        now,
        h,
        targets,
    );
    CachedUrl {
        url,
        tier,
        variants: distinct.len() as u64,
        bytes: distinct.iter().map(|v| v.body_len).sum(),
        status: newest.status.as_u16(),
        stored_at: rfc3339(newest.times.response_time),
        age_s: policy::current_age(&newest.headers, &newest.times, now).as_secs(),
        fresh_for_s: fresh_for.as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{header, HeaderValue};

    use super::*;

    fn variant(tier: Tier, vary: &str, age_s: u64, max_age: &'static str) -> Variant {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(max_age));
        let at = SystemTime::now() - Duration::from_secs(age_s);
        Variant {
            tier,
            vary: Some(vec![(header::ACCEPT, Some(vary.to_owned()))]),
            status: StatusCode::OK,
            headers,
            times: StoredTimes {
                request_time: at,
                response_time: at,
            },
            body_len: 10,
        }
    }

    #[test]
    fn a_variant_in_both_tiers_is_counted_once_and_the_newest_says_how_fresh() {
        let row = cached_url(
            "http://a/".into(),
            vec![
                variant(Tier::Memory, "en", 100, "max-age=60"),
                variant(Tier::Disk, "en", 100, "max-age=60"),
                variant(Tier::Disk, "fr", 10, "max-age=60"),
            ],
            SystemTime::now(),
            (&Heuristics::default(), &[]),
        );
        assert_eq!(row.tier, Tier::Both);
        assert_eq!((row.variants, row.bytes), (2, 20));
        assert!((10..12).contains(&row.age_s), "{row:?}");
        assert!((48..=50).contains(&row.fresh_for_s), "{row:?}");
        let stale = cached_url(
            "http://a/".into(),
            vec![variant(Tier::Disk, "en", 100, "max-age=60")],
            SystemTime::now(),
            (&Heuristics::default(), &[]),
        );
        assert_eq!((stale.tier, stale.fresh_for_s), (Tier::Disk, 0));
    }

    #[tokio::test]
    async fn the_limit_applies_to_urls_and_says_when_more_match() {
        let store = Arc::new(Store::new(1 << 20));
        let times = StoredTimes {
            request_time: SystemTime::now(),
            response_time: SystemTime::now(),
        };
        for i in 0..5 {
            let stored = Stored::new(
                StatusCode::OK,
                HeaderMap::new(),
                Bytes::from_static(b"body"),
                times,
                None,
                &[],
            );
            store.insert(&format!("http://a/{i}"), stored);
        }
        let h = (Heuristics::default(), &[][..]);
        let some = list(store.clone(), None, h, "http://a/", 3).await;
        let urls: Vec<&str> = some.urls.iter().map(|u| u.url.as_str()).collect();
        assert_eq!(urls, ["http://a/0", "http://a/1", "http://a/2"]);
        assert!(some.truncated);
        assert_eq!(some.urls[0].tier, Tier::Memory);
        assert_eq!(some.urls[0].bytes, 4);
        let all = list(store, None, h, "http://a/", 5).await;
        assert!(!all.truncated);
        assert_eq!(all.urls.len(), 5);
    }
}
