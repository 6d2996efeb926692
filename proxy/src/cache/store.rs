//! The in-memory store: responses by URL, each URL with its Vary variants, bounded in bytes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cache::policy::{self, CacheControl, Heuristics, StoredTimes};

/// One stored response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub times: StoredTimes,
    /// The request's values of the fields named by Vary, when the response has Vary.
    pub vary: Option<Vec<(HeaderName, Option<String>)>>,
    precomputed: Option<Precomputed>,
}

/// Freshness worked out once, at store time, when the response states it explicitly and
/// does not demand revalidation: a hit then compares two durations instead of parsing
/// headers. Heuristic freshness is left to the full policy, since its settings can change.
#[derive(Debug, Clone, Copy)]
struct Precomputed {
    lifetime: Duration,
    /// The corrected initial age (RFC 9111 §4.2.3): current age minus resident time.
    initial_age: Duration,
}

impl Stored {
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        times: StoredTimes,
        vary: Option<Vec<(HeaderName, Option<String>)>>,
    ) -> Stored {
        let headers = owned(&headers);
        let cc = CacheControl::parse(&headers);
        let explicit =
            cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(header::EXPIRES);
        let precomputed = (explicit && !cc.no_cache).then(|| Precomputed {
            lifetime: policy::freshness_lifetime(status, &headers, &times, &Heuristics::default()),
            initial_age: policy::current_age(&headers, &times, times.response_time),
        });
        Stored {
            status,
            headers,
            body,
            times,
            vary,
            precomputed,
        }
    }

    /// For a request without cache directives of its own: `Some(age)` when this response
    /// is fresh, `None` when the full policy must decide.
    pub fn fresh_age(&self, now: SystemTime) -> Option<Duration> {
        let p = self.precomputed?;
        let resident = now
            .duration_since(self.times.response_time)
            .unwrap_or_default();
        let age = p.initial_age.saturating_add(resident);
        (p.lifetime > age).then_some(age)
    }

    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + headers + 256) as u64
    }

    fn matches(&self, request: &HeaderMap) -> bool {
        match &self.vary {
            None => true,
            Some(values) => policy::vary_matches(values, request),
        }
    }

    fn same_variant(&self, other: &Stored) -> bool {
        self.vary == other.vary
    }
}

/// A copy of `headers` that owns its values. hyper's parsed values are slices of the
/// connection's read buffer: storing them as they are would keep that whole buffer (kilobytes)
/// alive for each stored object.
fn owned(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut fresh = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        fresh.set_sensitive(value.is_sensitive());
        copy.append(name.clone(), fresh);
    }
    copy
}

/// The variants stored for one URL.
#[derive(Debug, Default)]
struct Variants(Vec<Arc<Stored>>);

/// The most variants kept for one URL; a new one pushes out the oldest.
const MAX_VARIANTS: usize = 16;

pub struct Store {
    entries: moka::sync::Cache<String, Arc<Variants>>,
}

impl Store {
    pub fn new(capacity: u64) -> Store {
        Store {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_key: &String, variants: &Arc<Variants>| {
                    let total: u64 = variants.0.iter().map(|s| s.weight()).sum();
                    u32::try_from(total).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// The stored response for `url` whose Vary values match `request`.
    pub fn lookup(&self, url: &str, request: &HeaderMap) -> Option<Arc<Stored>> {
        let variants = self.entries.get(url)?;
        variants.0.iter().find(|s| s.matches(request)).cloned()
    }

    /// Stores a response, replacing the variant it stands for.
    pub fn insert(&self, url: &str, stored: Stored) {
        let stored = Arc::new(stored);
        let mut variants: Vec<Arc<Stored>> = match self.entries.get(url) {
            Some(old) => old
                .0
                .iter()
                .filter(|s| !s.same_variant(&stored))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        if stored.vary.is_none() {
            variants.clear();
        }
        variants.push(stored);
        if variants.len() > MAX_VARIANTS {
            variants.remove(0);
        }
        self.entries
            .insert(url.to_owned(), Arc::new(Variants(variants)));
    }

    pub fn remove(&self, url: &str) {
        self.entries.invalidate(url);
    }

    /// Objects (variants) and bytes held now.
    pub fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        let objects = self.entries.iter().map(|(_, v)| v.0.len() as u64).sum();
        (objects, self.entries.weighted_size())
    }

    /// A store of another capacity holding what this one holds.
    pub fn resized(&self, capacity: u64) -> Store {
        let next = Store::new(capacity);
        for (url, variants) in self.entries.iter() {
            next.entries.insert(url.as_ref().clone(), variants);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn stored(body: &'static str, vary: Option<Vec<(HeaderName, Option<String>)>>) -> Stored {
        let times = StoredTimes {
            request_time: UNIX_EPOCH,
            response_time: UNIX_EPOCH,
        };
        Stored::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from_static(body.as_bytes()),
            times,
            vary,
        )
    }

    #[test]
    fn explicit_freshness_is_worked_out_once_and_agrees_with_the_policy() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        headers.insert(header::AGE, HeaderValue::from_static("10"));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let times = StoredTimes {
            request_time: t0,
            response_time: t0,
        };
        let s = Stored::new(StatusCode::OK, headers.clone(), Bytes::new(), times, None);
        assert_eq!(
            s.fresh_age(t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(s.fresh_age(t0 + Duration::from_secs(50)), None);
        let now = t0 + Duration::from_secs(20);
        assert_eq!(
            policy::current_age(&headers, &times, now),
            Duration::from_secs(30)
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, no-cache"),
        );
        let must_ask = Stored::new(StatusCode::OK, headers, Bytes::new(), times, None);
        assert_eq!(must_ask.fresh_age(t0), None);
        assert_eq!(stored("heuristic", None).fresh_age(UNIX_EPOCH), None);
    }

    #[test]
    fn variants_are_kept_apart() {
        let store = Store::new(1 << 20);
        let name = HeaderName::from_static("accept-encoding");
        store.insert(
            "http://a/",
            stored("gzip", Some(vec![(name.clone(), Some("gzip".into()))])),
        );
        store.insert(
            "http://a/",
            stored("plain", Some(vec![(name.clone(), None)])),
        );
        let mut gzip = HeaderMap::new();
        gzip.insert(&name, HeaderValue::from_static("gzip"));
        assert_eq!(store.lookup("http://a/", &gzip).unwrap().body, "gzip");
        assert_eq!(
            store.lookup("http://a/", &HeaderMap::new()).unwrap().body,
            "plain"
        );
        assert_eq!(store.usage().0, 2);
        store.remove("http://a/");
        assert!(store.lookup("http://a/", &gzip).is_none());
    }

    #[test]
    fn capacity_bounds_the_bytes_held() {
        let store = Store::new(64 * 1024);
        let body: &'static str = Box::leak("x".repeat(1000).into_boxed_str());
        for i in 0..500 {
            store.insert(&format!("http://a/{i}"), stored(body, None));
        }
        let (_, bytes) = store.usage();
        assert!(bytes <= 64 * 1024, "{bytes}");
    }
}
