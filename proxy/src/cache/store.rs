//! The in-memory store: responses by URL, each URL with its Vary variants, bounded in bytes.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hashbrown::HashTable;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use xxhash_rust::xxh3::xxh3_64;

use crate::cache::policy::{self, CacheControl, Heuristics, StoredTimes};

/// The request's values of the fields named by a response's Vary.
pub type VaryValues = [(HeaderName, Option<String>)];

/// One stored response. Kept within 112 bytes, so that with the `Arc`'s counts it takes
/// the allocator's 128-byte size class: times are nanoseconds, the Vary values a boxed slice.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: StatusCode,
    headers: StoredHeaders,
    pub body: Bytes,
    /// [`StoredTimes`], as nanoseconds since the Unix epoch.
    request_time: u64,
    response_time: u64,
    vary: Option<Box<VaryValues>>,
    /// Freshness worked out once, at store time, when the response states it explicitly and
    /// does not demand revalidation: a hit then compares two durations instead of parsing
    /// headers. Heuristic freshness is left to the full policy, since its settings can change.
    /// The lifetime is in whole seconds, as headers give it, and 0 when not worked out: the
    /// full policy then decides, as for any response found stale here. (Plain fields rather
    /// than an `Option` keep a stored response within a smaller size class.)
    lifetime_secs: u32,
    /// The corrected initial age (RFC 9111 §4.2.3): current age minus resident time, in
    /// nanoseconds.
    initial_age: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn since_epoch(t: SystemTime) -> u64 {
    nanos(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

impl Stored {
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        times: StoredTimes,
        vary: Option<Vec<(HeaderName, Option<String>)>>,
        targets: &[HeaderName],
    ) -> Stored {
        let cc = CacheControl::parse_response(&headers, targets);
        let expires = !cc.targeted && headers.contains_key(header::EXPIRES);
        let explicit = cc.s_maxage.is_some() || cc.max_age.is_some() || expires;
        let (lifetime_secs, initial_age) = if explicit && !cc.no_cache {
            let lifetime = policy::freshness_lifetime(
                status,
                &headers,
                &times,
                &Heuristics::default(),
                targets,
            );
            (
                u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX),
                nanos(policy::current_age(&headers, &times, times.response_time)),
            )
        } else {
            (0, 0)
        };
        Stored {
            status,
            headers: StoredHeaders::new(&headers),
            body,
            request_time: since_epoch(times.request_time),
            response_time: since_epoch(times.response_time),
            vary: vary.map(Vec::into_boxed_slice),
            lifetime_secs,
            initial_age,
        }
    }

    /// When it was requested and received, by this cache's clock.
    pub fn times(&self) -> StoredTimes {
        StoredTimes {
            request_time: UNIX_EPOCH + Duration::from_nanos(self.request_time),
            response_time: UNIX_EPOCH + Duration::from_nanos(self.response_time),
        }
    }

    /// This response as the reuse rules read it, with its `headers()`.
    pub fn policy_view<'a>(&self, headers: &'a HeaderMap) -> policy::StoredResponse<'a> {
        policy::StoredResponse {
            status: self.status,
            headers,
            times: self.times(),
        }
    }

    /// The request's values of the fields named by Vary, when the response has Vary.
    pub fn vary(&self) -> Option<&VaryValues> {
        self.vary.as_deref()
    }

    /// The stored response's fields, as a map of its own to send or to reason about.
    pub fn headers(&self) -> HeaderMap {
        self.headers.to_map()
    }

    /// For a request without cache directives of its own: `Some(age)` when this response
    /// is fresh, `None` when the full policy must decide.
    pub fn fresh_age(&self, now: SystemTime) -> Option<Duration> {
        let resident = since_epoch(now).saturating_sub(self.response_time);
        let age = Duration::from_nanos(self.initial_age.saturating_add(resident));
        (Duration::from_secs(self.lifetime_secs.into()) > age).then_some(age)
    }

    fn weight(&self) -> u64 {
        (self.body.len() + self.headers.block.len() + 256) as u64
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

/// Response fields kept compactly, in one buffer of their own: a `HeaderMap` costs about
/// 2 KiB for a dozen fields, and hyper's values are slices of the connection's read buffer,
/// which storing them would keep alive. Each field is a line ending in `\n`: a common
/// name as a one-byte code from 0x10 to 0x1F, or the name and `:`; then the value. Neither
/// a name nor a value can hold those bytes, `\n` or (in a name) `:`. The first line is the
/// URL the response is stored under (empty until then): the store's index keeps no copy.
#[derive(Debug, Clone)]
struct StoredHeaders {
    block: Bytes,
}

/// The names given a code, by code − 0x10: those of nearly every response.
const COMMON_NAMES: [HeaderName; 16] = [
    header::DATE,
    header::SERVER,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::LAST_MODIFIED,
    header::ETAG,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::ACCEPT_RANGES,
    header::AGE,
    header::VARY,
    header::SET_COOKIE,
    header::LOCATION,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::STRICT_TRANSPORT_SECURITY,
];
const FIRST_CODE: u8 = 0x10;

impl StoredHeaders {
    fn new(headers: &HeaderMap) -> StoredHeaders {
        let code = |name: &HeaderName| {
            let i = COMMON_NAMES.iter().position(|common| common == name)?;
            Some(FIRST_CODE + i as u8)
        };
        // Sized exactly, since the buffer lives as long as the response.
        let size = headers
            .iter()
            .map(|(n, v)| code(n).map_or(n.as_str().len() + 1, |_| 1) + v.len() + 1)
            .sum::<usize>();
        let mut block = Vec::with_capacity(1 + size);
        block.push(b'\n');
        for (name, value) in headers {
            match code(name) {
                Some(code) => block.push(code),
                None => {
                    block.extend_from_slice(name.as_str().as_bytes());
                    block.push(b':');
                }
            }
            block.extend_from_slice(value.as_bytes());
            block.push(b'\n');
        }
        StoredHeaders {
            block: Bytes::from(block),
        }
    }

    fn url(&self) -> &[u8] {
        &self.block[..self.fields_start() - 1]
    }

    fn fields_start(&self) -> usize {
        self.block
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |end| end + 1)
    }

    /// The same fields, with `url` as the first line (a URI holds no `\n`).
    fn stored_under(&self, url: &str) -> StoredHeaders {
        let fields = &self.block[self.fields_start()..];
        let mut block = Vec::with_capacity(url.len() + 1 + fields.len());
        block.extend_from_slice(url.as_bytes());
        block.push(b'\n');
        block.extend_from_slice(fields);
        StoredHeaders {
            block: Bytes::from(block),
        }
    }

    fn to_map(&self) -> HeaderMap {
        let block = &self.block;
        let mut start = self.fields_start();
        let lines = block[start..].iter().filter(|&&b| b == b'\n').count();
        // Room for what a hit adds (Age, Via, X-Cache), so that serving never regrows it.
        let mut map = HeaderMap::with_capacity(lines + 3);
        while let Some(len) = block[start..].iter().position(|&b| b == b'\n') {
            let (line, end) = (&block[start..start + len], start + len);
            let (name, value_start) = match line.first() {
                Some(&code) if (FIRST_CODE..b' ').contains(&code) => (
                    Ok(COMMON_NAMES[(code - FIRST_CODE) as usize].clone()),
                    start + 1,
                ),
                _ => {
                    let colon = line.iter().position(|&b| b == b':').unwrap_or(len);
                    (HeaderName::from_bytes(&line[..colon]), start + colon + 1)
                }
            };
            let value = HeaderValue::from_maybe_shared(block.slice(value_start..end));
            // Both were valid when stored, so neither can fail here.
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
            start = end + 1;
        }
        map
    }
}

/// The variants stored for one URL, never none: nearly always one, so that case needs no
/// list of its own.
#[derive(Debug)]
enum Variants {
    One(Arc<Stored>),
    Many(Box<[Arc<Stored>]>),
}

impl Variants {
    fn from_vec(mut list: Vec<Arc<Stored>>) -> Variants {
        match list.len() {
            1 => Variants::One(list.remove(0)),
            _ => Variants::Many(list.into_boxed_slice()),
        }
    }

    /// The URL they are stored under, which each holds.
    fn url(&self) -> &[u8] {
        self.as_slice()[0].headers.url()
    }

    fn as_slice(&self) -> &[Arc<Stored>] {
        match self {
            Variants::One(one) => std::slice::from_ref(one),
            Variants::Many(list) => list,
        }
    }

    fn weight(&self) -> u64 {
        self.as_slice().iter().map(|s| s.weight()).sum()
    }
}

/// The most variants kept for one URL; a new one pushes out the oldest.
const MAX_VARIANTS: usize = 16;

/// Independent parts of the index, each behind its own lock, so that hits on different
/// URLs seldom meet on one lock. A power of two.
const SHARDS: usize = 32;

/// Responses by URL, bounded in bytes (the sum of [`Stored`] weights). Eviction is CLOCK
/// (second chance): a hit sets the entry's reference bit under a read lock, and the hand
/// passes over an entry once, clearing its bit, before evicting it.
pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    capacity: u64,
    /// Weight held, over all shards.
    bytes: AtomicU64,
    /// The shard to evict from next: shards take turns, so all shrink alike.
    next_victim: AtomicUsize,
    /// Objects (variants) evicted to keep within capacity.
    evictions: AtomicU64,
}

/// One part of the index: the entries in a vector the clock hand walks, and a table from
/// each URL's hash to its entry's position.
#[derive(Default)]
struct Shard {
    table: HashTable<u32>,
    entries: Vec<Entry>,
    hand: usize,
}

/// Neither the URL nor its hash is kept here: the URL is in each variant's block, and the
/// hash is worked out again on the rare occasions the table needs it.
struct Entry {
    variants: Variants,
    referenced: AtomicBool,
}

fn hash(url: &[u8]) -> u64 {
    xxh3_64(url)
}

impl Shard {
    fn find(&self, hash: u64, url: &str) -> Option<usize> {
        let entries = &self.entries;
        self.table
            .find(hash, |&i| {
                entries[i as usize].variants.url() == url.as_bytes()
            })
            .map(|&i| i as usize)
    }

    fn push(&mut self, variants: Variants, referenced: bool) {
        let Shard { table, entries, .. } = self;
        let at = u32::try_from(entries.len()).expect("fewer than 2^32 entries a shard");
        table.insert_unique(hash(variants.url()), at, |&i| {
            hash(entries[i as usize].variants.url())
        });
        entries.push(Entry {
            variants,
            referenced: AtomicBool::new(referenced),
        });
    }

    /// Takes out the entry at `at`; the last entry moves into its place.
    fn take(&mut self, at: usize) -> Entry {
        let Shard { table, entries, .. } = self;
        let last = entries.len() - 1;
        if let Ok(found) = table.find_entry(hash(entries[at].variants.url()), |&i| i as usize == at)
        {
            found.remove();
        }
        let entry = entries.swap_remove(at);
        if at != last {
            let moved = hash(entries[at].variants.url());
            if let Some(slot) = table.find_mut(moved, |&i| i as usize == last) {
                *slot = at as u32;
            }
        }
        entry
    }

    /// Evicts the first entry the hand finds unreferenced, clearing the bits it passes;
    /// `None` after one full turn with every entry referenced (or none at all), so the
    /// caller tries another shard before any of these loses its second chance.
    fn evict_one(&mut self) -> Option<Entry> {
        for _ in 0..self.entries.len() {
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            if self.entries[self.hand].referenced.swap(false, Relaxed) {
                self.hand += 1;
            } else {
                // The hand stays: the entry moved into this place is looked at next.
                return Some(self.take(self.hand));
            }
        }
        None
    }
}

impl Store {
    pub fn new(capacity: u64) -> Store {
        Store {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            capacity,
            bytes: AtomicU64::new(0),
            next_victim: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// The shard for a URL's hash. Middle bits: the table places entries by the low bits
    /// and tells them apart by the top seven.
    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// The stored response for `url` whose Vary values match `request`.
    pub fn lookup(&self, url: &str, request: &HeaderMap) -> Option<Arc<Stored>> {
        let hash = hash(url.as_bytes());
        let shard = read(self.shard(hash));
        let entry = &shard.entries[shard.find(hash, url)?];
        // Only written when clear, so hits on a hot entry leave its cache line shared.
        if !entry.referenced.load(Relaxed) {
            entry.referenced.store(true, Relaxed);
        }
        entry
            .variants
            .as_slice()
            .iter()
            .find(|s| s.matches(request))
            .cloned()
    }

    /// Every stored variant of `url`, for validating them all at once (RFC 9111 §4.1).
    pub fn variants(&self, url: &str) -> Vec<Arc<Stored>> {
        let hash = hash(url.as_bytes());
        let shard = read(self.shard(hash));
        shard.find(hash, url).map_or_else(Vec::new, |at| {
            shard.entries[at].variants.as_slice().to_vec()
        })
    }

    /// Stores a response, replacing the variant it stands for.
    pub fn insert(&self, url: &str, mut stored: Stored) {
        stored.headers = stored.headers.stored_under(url);
        let stored = Arc::new(stored);
        if stored.weight() > self.capacity {
            self.remove(url);
            return;
        }
        let hash = hash(url.as_bytes());
        let mut shard = write(self.shard(hash));
        let old = shard.find(hash, url).map(|at| shard.take(at));
        let mut variants: Vec<Arc<Stored>> = match &old {
            Some(old) => old
                .variants
                .as_slice()
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
        let variants = Variants::from_vec(variants);
        let added = variants.weight();
        let removed = old.map_or(0, |old| old.variants.weight());
        // A new entry starts referenced: it outlives at least one turn of the hand.
        shard.push(variants, true);
        self.bytes.fetch_add(added, Relaxed);
        self.bytes.fetch_sub(removed, Relaxed);
        drop(shard);
        self.evict();
    }

    /// Evicts until the weight held is within capacity, taking shards in turn.
    fn evict(&self) {
        // Every shard found all-referenced twice running means they are all empty, or
        // being refilled by hits as fast as the hand clears them: give up until next time.
        let mut idle = 0;
        while self.bytes.load(Relaxed) > self.capacity && idle < 2 * SHARDS {
            let victim = self.next_victim.fetch_add(1, Relaxed) % SHARDS;
            let evicted = write(&self.shards[victim]).evict_one();
            match evicted {
                Some(entry) => {
                    self.bytes.fetch_sub(entry.variants.weight(), Relaxed);
                    let variants = entry.variants.as_slice().len() as u64;
                    self.evictions.fetch_add(variants, Relaxed);
                    idle = 0;
                }
                None => idle += 1,
            }
        }
    }

    /// Removes every variant stored for `url`; whether there was any.
    pub fn remove(&self, url: &str) -> bool {
        let hash = hash(url.as_bytes());
        let mut shard = write(self.shard(hash));
        let Some(at) = shard.find(hash, url) else {
            return false;
        };
        let entry = shard.take(at);
        self.bytes.fetch_sub(entry.variants.weight(), Relaxed);
        true
    }

    /// Objects (variants) and bytes held now.
    pub fn usage(&self) -> (u64, u64) {
        let objects = self
            .shards
            .iter()
            .map(|shard| {
                read(shard)
                    .entries
                    .iter()
                    .map(|e| e.variants.as_slice().len() as u64)
                    .sum::<u64>()
            })
            .sum();
        (objects, self.bytes.load(Relaxed))
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Objects (variants) evicted so far, by this store and those it was resized from.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }

    /// The first `limit` URLs that start with `prefix`, in URL order, each with its
    /// variants. Walks every shard: for `canopy cache list`, never the request path.
    pub fn list(&self, prefix: &str, limit: usize) -> BTreeMap<String, Vec<Arc<Stored>>> {
        let mut found = BTreeMap::new();
        self.each_entry(|url, variants| {
            let past_the_last = found.len() == limit
                && found
                    .last_key_value()
                    .is_some_and(|(last, _): (&String, _)| last.as_bytes() <= url);
            if !url.starts_with(prefix.as_bytes()) || past_the_last {
                return;
            }
            let url = String::from_utf8_lossy(url).into_owned();
            found.insert(url, variants.to_vec());
            if found.len() > limit {
                found.pop_last();
            }
        });
        found
    }

    /// Calls `each` with the URL and variants of every entry, one shard at a time under its
    /// read lock.
    pub fn each_entry(&self, mut each: impl FnMut(&[u8], &[Arc<Stored>])) {
        for shard in self.shards.iter() {
            for entry in read(shard).entries.iter() {
                each(entry.variants.url(), entry.variants.as_slice());
            }
        }
    }

    /// A store of another capacity holding what this one holds (as much as fits).
    pub fn resized(&self, capacity: u64) -> Store {
        let next = Store::new(capacity);
        next.evictions.store(self.evictions(), Relaxed);
        for shard in self.shards.iter() {
            for entry in read(shard).entries.iter() {
                let variants = Variants::from_vec(entry.variants.as_slice().to_vec());
                next.bytes.fetch_add(variants.weight(), Relaxed);
                let referenced = entry.referenced.load(Relaxed);
                write(next.shard(hash(variants.url()))).push(variants, referenced);
            }
        }
        next.evict();
        next
    }
}

// A panic while holding a shard's lock leaves its index consistent (every change is one
// step), so a poisoned lock is used as it is.
fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            &[],
        )
    }

    #[test]
    fn a_stored_response_fits_a_small_allocation() {
        assert!(std::mem::size_of::<Stored>() <= 112);
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let times = StoredTimes {
            request_time: t,
            response_time: t + Duration::from_millis(5),
        };
        let s = Stored::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::new(),
            times,
            None,
            &[],
        );
        assert_eq!(s.times(), times);
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
        let s = Stored::new(
            StatusCode::OK,
            headers.clone(),
            Bytes::new(),
            times,
            None,
            &[],
        );
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
        let must_ask = Stored::new(StatusCode::OK, headers, Bytes::new(), times, None, &[]);
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
        // The URL kept with a stored response is not one of its fields.
        let found = store.lookup("http://a/", &gzip).unwrap();
        assert!(found.headers().is_empty());
        assert_eq!(store.usage().0, 2);
        store.remove("http://a/");
        assert!(store.lookup("http://a/", &gzip).is_none());
    }

    #[test]
    fn stored_fields_come_back_in_order_with_repeats() {
        let mut headers = HeaderMap::new();
        headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        headers.insert("x-custom", HeaderValue::from_static("value with spaces"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::LOCATION, HeaderValue::from_static("http://a:80/b"));
        headers.insert("x-link", HeaderValue::from_static("<http://c/>; rel=next"));
        headers.insert("x-empty", HeaderValue::from_static(""));
        headers.insert(header::ETAG, HeaderValue::from_static(""));
        headers.insert("x-tab", HeaderValue::from_bytes(b"a\tb \xff").unwrap());
        let times = StoredTimes {
            request_time: UNIX_EPOCH,
            response_time: UNIX_EPOCH,
        };
        let s = Stored::new(
            StatusCode::OK,
            headers.clone(),
            Bytes::new(),
            times,
            None,
            &[],
        );
        assert_eq!(s.headers(), headers);
        let cookies: Vec<_> = s
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }

    fn kilobyte() -> Stored {
        stored(Box::leak("x".repeat(1000).into_boxed_str()), None)
    }

    /// What lookups of `urls` find (one variant each) agrees with `usage`, within the bound.
    fn check(store: &Store, urls: impl Iterator<Item = String>) -> usize {
        let found: Vec<_> = urls
            .filter_map(|u| store.lookup(&u, &HeaderMap::new()))
            .collect();
        let (objects, bytes) = store.usage();
        assert_eq!(objects, found.len() as u64);
        assert_eq!(bytes, found.iter().map(|s| s.weight()).sum::<u64>());
        assert!(bytes <= store.capacity, "{bytes}");
        found.len()
    }

    fn weight_of(store: &Store, url: &str) -> u64 {
        store.lookup(url, &HeaderMap::new()).unwrap().weight()
    }

    #[test]
    fn capacity_bounds_the_bytes_held() {
        let store = Store::new(64 * 1024);
        for i in 0..500 {
            store.insert(&format!("http://a/{i}"), kilobyte());
        }
        let held = check(&store, (0..500).map(|i| format!("http://a/{i}")));
        // Eviction frees one entry at a time: the store is nearly full, not emptied.
        assert!(
            held as u64 > (64 * 1024) / kilobyte().weight() - 2,
            "{held}"
        );
        assert!(store.lookup("http://a/499", &HeaderMap::new()).is_some());
        assert_eq!(store.evictions(), 500 - held as u64);
    }

    #[test]
    fn a_listing_gives_the_first_urls_of_a_prefix_in_order() {
        let store = Store::new(1 << 20);
        for i in (0..40).rev() {
            store.insert(&format!("http://a/{i:02}"), kilobyte());
            store.insert(&format!("http://b/{i:02}"), kilobyte());
        }
        let vary = |v: &str| Some(vec![(header::ACCEPT, Some(v.to_owned()))]);
        store.insert("http://a/05", stored("x", vary("1")));
        store.insert("http://a/05", stored("y", vary("2")));
        let listed = store.list("http://a/", 10);
        let urls: Vec<&str> = listed.keys().map(String::as_str).collect();
        let expected: Vec<String> = (0..10).map(|i| format!("http://a/{i:02}")).collect();
        assert_eq!(urls, expected);
        assert_eq!(listed["http://a/05"].len(), 3, "every variant");
        assert_eq!(store.list("http://a/3", 100).len(), 10);
        assert!(store.list("http://c", 100).is_empty());
        assert_eq!(store.list("", 1000).len(), 80);
    }

    #[test]
    fn hits_keep_entries_through_eviction() {
        let store = Store::new(100 * kilobyte().weight());
        for i in 0..100 {
            store.insert(&format!("http://a/{i}"), kilobyte());
        }
        // Ten hot entries, read (and stored again when missing, as the proxy does) between
        // every two inserts of new ones: after the first turns of the hand they stay.
        let mut misses = 0;
        for i in 0..1000 {
            for hot in 0..10 {
                let url = format!("http://a/{hot}");
                if store.lookup(&url, &HeaderMap::new()).is_none() {
                    misses += 1;
                    store.insert(&url, kilobyte());
                }
            }
            store.insert(&format!("http://b/{i}"), kilobyte());
        }
        assert!(misses <= 10, "{misses}");
        let hot = (0..10).filter(|i| {
            let url = format!("http://a/{i}");
            store.lookup(&url, &HeaderMap::new()).is_some()
        });
        assert_eq!(hot.count(), 10);
        let all = (0..100).map(|i| format!("http://a/{i}"));
        check(
            &store,
            all.chain((0..1000).map(|i| format!("http://b/{i}"))),
        );
    }

    #[test]
    fn an_object_bigger_than_the_store_is_not_kept() {
        let store = Store::new(2000);
        store.insert("http://a/", stored("small", None));
        store.insert("http://a/", kilobyte());
        store.insert(
            "http://a/",
            stored(Box::leak("x".repeat(4000).into_boxed_str()), None),
        );
        assert!(store.lookup("http://a/", &HeaderMap::new()).is_none());
        assert_eq!(store.usage(), (0, 0));
    }

    #[test]
    fn replacing_and_removing_keep_the_count_of_bytes() {
        let store = Store::new(1 << 20);
        let name = HeaderName::from_static("accept-encoding");
        let gzip = || Some(vec![(name.clone(), Some("gzip".to_owned()))]);
        store.insert("http://a/", stored("first", gzip()));
        store.insert("http://a/", stored("second", gzip()));
        let mut gzipped = HeaderMap::new();
        gzipped.insert(&name, HeaderValue::from_static("gzip"));
        let second = store.lookup("http://a/", &gzipped).unwrap();
        assert_eq!(second.body, "second");
        assert_eq!(store.usage(), (1, second.weight()));
        for i in 0..MAX_VARIANTS + 3 {
            store.insert(
                "http://a/",
                stored("v", Some(vec![(name.clone(), Some(i.to_string()))])),
            );
        }
        assert_eq!(store.usage().0, MAX_VARIANTS as u64);
        // A response without Vary stands for every request: it replaces all variants.
        store.insert("http://a/", stored("plain", None));
        assert_eq!(store.usage(), (1, weight_of(&store, "http://a/")));
        for i in 0..50 {
            store.insert(&format!("http://b/{i}"), kilobyte());
        }
        for i in (0..50).step_by(3) {
            store.remove(&format!("http://b/{i}"));
        }
        assert!(store.remove("http://a/"), "a stored URL is removed");
        assert!(!store.remove("http://never/"), "nothing to remove");
        assert_eq!(check(&store, (0..50).map(|i| format!("http://b/{i}"))), 33);
    }

    #[test]
    fn resizing_keeps_what_fits() {
        let store = Store::new(1 << 20);
        // URLs of one length: every entry weighs the same.
        let urls = || (0..200).map(|i| format!("http://a/{i:03}"));
        for url in urls() {
            store.insert(&url, kilobyte());
        }
        let bigger = store.resized(2 << 20);
        assert_eq!(check(&bigger, urls()), 200);
        let smaller = store.resized(50 * weight_of(&store, "http://a/000"));
        assert_eq!(check(&smaller, urls()), 50);
        assert_eq!(check(&store, urls()), 200);
    }

    #[test]
    fn concurrent_use_keeps_the_bound_and_the_count() {
        let store = Arc::new(Store::new(300 * kilobyte().weight()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let url = format!("http://a/{}", (i * 7 + t) % 1000);
                        match i % 5 {
                            0 => {
                                store.remove(&url);
                            }
                            1 | 2 => store.insert(&url, kilobyte()),
                            _ => {
                                store.lookup(&url, &HeaderMap::new());
                            }
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        check(&store, (0..1000).map(|i| format!("http://a/{i}")));
    }
}
