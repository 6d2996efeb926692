//! This cache's own digest, built from what its stores hold (Squid's `src/store_digest.cc`):
//! every URL whose response will still be fresh one rebuild period from now, keyed as a GET,
//! in a digest sized as Squid sizes one.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use canopy_config::stats::OwnDigestSnapshot;
use http::HeaderName;

use super::cache_digest::{self, CacheDigest, DigestError};
use super::key::StoreKey;
use crate::cache::disk_tier::DiskTier;
use crate::cache::store::{Store, Stored};

/// A built digest, encoded once for every peer that asks.
#[derive(Debug)]
pub struct BuiltDigest {
    /// The reply body: header and mask.
    pub body: Bytes,
    pub built_at: SystemTime,
    /// The reply's `Last-Modified`: when the body last changed, kept by a rebuild that
    /// changed nothing so that a peer's If-Modified-Since gets a 304.
    pub modified_at: SystemTime,
    /// When the next one is built: the reply's `Expires`.
    pub expires: SystemTime,
    pub capacity: u32,
    pub entries: u32,
    pub bits_per_entry: u8,
    pub fill_percent: f64,
    pub build_time: Duration,
}

impl BuiltDigest {
    /// This digest, dated as modified when `previous` was if their bodies are the same.
    pub fn unchanged_since(mut self, previous: Option<&BuiltDigest>) -> BuiltDigest {
        if let Some(previous) = previous.filter(|p| p.body == self.body) {
            self.modified_at = previous.modified_at;
        }
        self
    }

    /// Whether a peer that holds the copy modified at `since` (an If-Modified-Since, to
    /// the second) holds this one.
    pub fn not_modified_since(&self, since: SystemTime) -> bool {
        let secs = |t: SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        };
        secs(self.modified_at) <= secs(since)
    }
}

/// How a request for the digest was answered, for the counts `stats` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Sent whole (200).
    Whole,
    /// The peer's copy is current (304).
    NotModified,
}

/// The digest this proxy serves; none while digest generation is off or before the first
/// build. Kept across reloads with its counts.
#[derive(Debug, Default)]
pub struct OwnDigest {
    current: ArcSwapOption<BuiltDigest>,
    served: AtomicU64,
    not_modified: AtomicU64,
}

impl OwnDigest {
    pub fn current(&self) -> Option<Arc<BuiltDigest>> {
        self.current.load_full()
    }

    pub fn set(&self, built: Option<BuiltDigest>) {
        self.current.store(built.map(Arc::new));
    }

    pub fn count(&self, answered: Answered) {
        let counter = match answered {
            Answered::Whole => &self.served,
            Answered::NotModified => &self.not_modified,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// The figures `stats` shows; `None` while there is no digest.
    pub fn snapshot(
        &self,
        now: SystemTime,
        format: impl Fn(SystemTime) -> String,
    ) -> Option<OwnDigestSnapshot> {
        let built = self.current.load_full()?;
        Some(OwnDigestSnapshot {
            entries: u64::from(built.entries),
            capacity: u64::from(built.capacity),
            bits_per_entry: built.bits_per_entry,
            size: built.body.len() as u64,
            fill_percent: built.fill_percent,
            built_at: format(built.built_at),
            age_s: now
                .duration_since(built.built_at)
                .unwrap_or_default()
                .as_secs(),
            build_ms: u64::try_from(built.build_time.as_millis()).unwrap_or(u64::MAX),
            modified_at: format(built.modified_at),
            expires_at: format(built.expires),
            served: self.served.load(Relaxed),
            not_modified: self.not_modified.load(Relaxed),
        })
    }
}

/// What a rebuild works from.
#[derive(Debug, Clone, Copy)]
pub struct BuildSettings {
    pub period: Duration,
    pub bits_per_entry: u8,
    /// The stores' capacity in bytes, memory and disk.
    pub max_bytes: u64,
    /// The capacity of the digest before, kept unless the store changed by a tenth.
    pub previous_capacity: Option<u32>,
}

/// Whether a stored response belongs in a digest built at `now`: fresh a period from now.
fn addable(stored: &Stored, now: SystemTime, period: Duration) -> bool {
    stored.fresh_age(now + period).is_some()
}

/// Builds the digest of `store` and `disk` at `now`, judging the disk's objects fresh by
/// Cache-Control or the targeted fields `targets`, as the request path does. Blocks (the
/// disk index is read).
pub fn build(
    store: &Store,
    disk: Option<&DiskTier>,
    (settings, targets): (BuildSettings, &[HeaderName]),
    now: SystemTime,
) -> Result<BuiltDigest, DigestError> {
    let started = Instant::now();
    let mut urls: Vec<Vec<u8>> = Vec::new();
    store.each_entry(|url, variants| {
        if variants.iter().any(|s| addable(s, now, settings.period)) {
            urls.push(url.to_vec());
        }
    });
    let (objects, bytes) = store.usage();
    let mut disk_objects = 0;
    let mut disk_bytes = 0;
    if let Some(disk) = disk {
        let stats = disk.stats().store;
        (disk_objects, disk_bytes) = (stats.objects, stats.bytes);
        let walked = disk.each_object(|url, head| {
            let stored = Stored::new(
                head.status,
                head.headers.clone(),
                Bytes::new(),
                head.times,
                None,
                targets,
            );
            if addable(&stored, now, settings.period) {
                urls.push(url.to_vec());
            }
        });
        if let Err(e) = walked {
            tracing::warn!("cache digest: the disk cache's objects left out: {e}");
        }
    }
    // An object in memory and on disk is one entry.
    urls.sort_unstable();
    urls.dedup();
    let wanted = cache_digest::capacity_for(
        objects + disk_objects,
        bytes + disk_bytes,
        settings.max_bytes,
        cache_digest::AVG_OBJECT_SIZE,
        settings.bits_per_entry,
    );
    let capacity = match settings.previous_capacity {
        Some(previous) if !cache_digest::worth_resizing(previous, wanted) => previous,
        _ => wanted,
    };
    let mut digest = CacheDigest::new(capacity, settings.bits_per_entry)?;
    for url in &urls {
        digest.add(&StoreKey::get(url));
    }
    Ok(BuiltDigest {
        body: Bytes::from(digest.encode()),
        built_at: now,
        modified_at: now,
        expires: now + settings.period,
        capacity,
        entries: digest.count(),
        bits_per_entry: settings.bits_per_entry,
        fill_percent: digest.percent_on(),
        build_time: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::StoredTimes;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn stored(max_age: u64, now: SystemTime) -> Stored {
        let mut headers = HeaderMap::new();
        let value = format!("max-age={max_age}");
        headers.insert("cache-control", HeaderValue::from_str(&value).unwrap());
        let times = StoredTimes {
            request_time: now,
            response_time: now,
        };
        Stored::new(StatusCode::OK, headers, Bytes::new(), times, None, &[])
    }

    fn settings(period: u64) -> BuildSettings {
        BuildSettings {
            period: Duration::from_secs(period),
            bits_per_entry: 5,
            max_bytes: 1 << 20,
            previous_capacity: None,
        }
    }

    #[test]
    fn what_stays_fresh_past_the_next_rebuild_goes_in() {
        let now = SystemTime::now();
        let store = Store::new(1 << 20);
        store.insert("http://a/long", stored(7200, now));
        store.insert("http://a/short", stored(60, now));
        let built = build(&store, None, (settings(3600), &[]), now).unwrap();
        let digest = CacheDigest::decode(&built.body).unwrap();
        assert!(digest.contains(&StoreKey::get("http://a/long")));
        assert!(!digest.contains(&StoreKey::get("http://a/short")));
        assert_eq!(built.entries, 1);
        assert_eq!(built.expires, now + Duration::from_secs(3600));
    }

    #[test]
    fn capacity_is_kept_unless_the_store_changed_by_a_tenth() {
        let now = SystemTime::now();
        let store = Store::new(1 << 20);
        for i in 0..20 {
            store.insert(&format!("http://a/{i}"), stored(7200, now));
        }
        let first = build(&store, None, (settings(1), &[]), now).unwrap();
        assert_eq!(first.capacity, 20);
        store.insert("http://a/one-more", stored(7200, now));
        let kept = BuildSettings {
            previous_capacity: Some(first.capacity),
            ..settings(1)
        };
        assert_eq!(build(&store, None, (kept, &[]), now).unwrap().capacity, 20);
        for i in 0..10 {
            store.insert(&format!("http://b/{i}"), stored(7200, now));
        }
        assert_eq!(build(&store, None, (kept, &[]), now).unwrap().capacity, 31);
    }

    #[test]
    fn an_empty_store_gets_a_digest_sized_for_what_it_could_hold() {
        let built = build(
            &Store::new(1 << 20),
            None,
            (settings(1), &[]),
            SystemTime::now(),
        )
        .unwrap();
        let expected = (1u64 << 20) / cache_digest::AVG_OBJECT_SIZE;
        assert_eq!(u64::from(built.capacity), expected);
    }

    #[test]
    fn a_rebuild_that_changed_nothing_keeps_the_last_modified() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = now + Duration::from_secs(60);
        let store = Store::new(1 << 20);
        store.insert("http://a/long", stored(7200, now));
        let first = build(&store, None, (settings(30), &[]), now).unwrap();
        assert_eq!(first.entries, 1);
        assert_eq!(first.bits_per_entry, 5);
        assert!(first.fill_percent > 0.0);
        let same = build(&store, None, (settings(30), &[]), later)
            .unwrap()
            .unchanged_since(Some(&first));
        assert_eq!((same.built_at, same.modified_at), (later, now));
        assert!(same.not_modified_since(now));
        store.insert("http://a/other", stored(7200, now));
        let changed = build(&store, None, (settings(30), &[]), later)
            .unwrap()
            .unchanged_since(Some(&same));
        assert_eq!(changed.modified_at, later);
        assert!(!changed.not_modified_since(now));
        assert!(changed.not_modified_since(later + Duration::from_millis(999)));
    }
}
