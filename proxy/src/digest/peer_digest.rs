//! A peer's cache digest as this proxy holds it, and Squid's rules for when to fetch it
//! (`src/peer_digest.cc`): lazily, the first time a miss needs it; again at its `Expires`
//! plus five minutes, and never sooner than five minutes after the last one; after a
//! failure, with the digest dropped, five minutes later and then twice as long each time.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use canopy_config::stats::DigestSnapshot;
use thiserror::Error;

use super::cache_digest::{CacheDigest, DigestError};
use super::key::StoreKey;

/// Squid's `PeerDigestReqMinGap`: the least time between two fetches from one peer, the
/// time added to a digest's `Expires`, and the first delay after a failure.
pub const MIN_GAP: Duration = Duration::from_secs(5 * 60);
/// The longest delay the doubling reaches; Squid has no bound, but a peer that recovers
/// should not wait days to be used again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 60 * 60);

/// A digest fetched from a peer, with when it came and when the peer said it expires.
#[derive(Debug)]
pub struct FetchedDigest {
    pub digest: CacheDigest,
    pub received_at: SystemTime,
    pub expires: Option<SystemTime>,
    /// Octets of the body, header included.
    pub size: u64,
}

/// Why a peer's digest could not be fetched or used.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DigestFetchError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no complete reply within {secs} s")]
    TimedOut { secs: u64 },
    #[error("answered {status}, not 200")]
    Status { status: u16 },
    #[error("content type {found:?}, not application/cache-digest")]
    ContentType { found: String },
    #[error("digest of {len} octets is larger than the {limit} accepted")]
    TooLarge { len: u64, limit: u64 },
    #[error("{0}")]
    Digest(#[from] DigestError),
}

/// What a peer's digest says of a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No usable digest (not fetched yet, or the last fetch failed).
    None,
    Miss,
    Hit,
}

/// When a digest received at `received` that expires at `expires` is fetched again
/// (Squid's `peerDigestNewDelay` and the per-peer gap of `peerDigestCheck`).
pub fn next_after_success(received: SystemTime, expires: Option<SystemTime>) -> SystemTime {
    let earliest = received + MIN_GAP;
    expires.map_or(earliest, |expires| (expires + MIN_GAP).max(earliest))
}

/// The delay after a failure that followed `previous` (zero after a success): Squid's
/// `peerDigestIncDelay`, bounded by [`MAX_BACKOFF`].
pub fn next_backoff(previous: Duration) -> Duration {
    if previous.is_zero() {
        MIN_GAP
    } else {
        (previous * 2).min(MAX_BACKOFF)
    }
}

/// The last fetch and the back-off in force.
#[derive(Debug, Default)]
struct FetchRecord {
    last_at: Option<SystemTime>,
    last_outcome: Option<Result<(), DigestFetchError>>,
    retry_delay: Duration,
    next_at: Option<SystemTime>,
    fetches: u64,
    failures: u64,
}

/// One peer's digest and the state of its fetching; kept across reloads with the peer's
/// counters. A miss reads it without a lock.
#[derive(Debug, Default)]
pub struct PeerDigest {
    current: ArcSwapOption<FetchedDigest>,
    /// Set the first time a miss consulted it: from then on it is fetched and refreshed.
    needed: AtomicBool,
    fetching: AtomicBool,
    /// When the next fetch is due, in milliseconds since the epoch.
    next_fetch_ms: AtomicU64,
    record: Mutex<FetchRecord>,
}

fn millis(at: SystemTime) -> u64 {
    u64::try_from(
        at.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

impl PeerDigest {
    /// Whether the digest predicts `key` is held.
    pub fn lookup(&self, key: &StoreKey) -> Lookup {
        match &*self.current.load() {
            None => Lookup::None,
            Some(fetched) if fetched.digest.contains(key) => Lookup::Hit,
            Some(_) => Lookup::Miss,
        }
    }

    /// Notes that a miss needed the digest, and claims the fetch when one is due at `now`
    /// and none is under way: the caller must then fetch and [`Self::finish`].
    pub fn claim_fetch(&self, now: SystemTime) -> bool {
        // Read first: after the first need, a miss only reads.
        let first = !self.needed.load(Relaxed) && !self.needed.swap(true, Relaxed);
        let due = first || millis(now) >= self.next_fetch_ms.load(Relaxed);
        due && !self.fetching.swap(true, Relaxed)
    }

    /// Records a fetch's outcome at `now` and when the next one is due.
    pub fn finish(&self, now: SystemTime, outcome: Result<FetchedDigest, DigestFetchError>) {
        let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        record.last_at = Some(now);
        record.fetches += 1;
        let next = match outcome {
            Ok(fetched) => {
                record.retry_delay = Duration::ZERO;
                record.last_outcome = Some(Ok(()));
                let next = next_after_success(fetched.received_at, fetched.expires);
                self.current.store(Some(Arc::new(fetched)));
                next
            }
            Err(error) => {
                // As Squid does: a digest that could not be refreshed is not trusted.
                self.current.store(None);
                record.failures += 1;
                record.retry_delay = next_backoff(record.retry_delay);
                record.last_outcome = Some(Err(error));
                now + record.retry_delay
            }
        };
        record.next_at = Some(next);
        self.next_fetch_ms.store(millis(next), Relaxed);
        self.fetching.store(false, Relaxed);
    }

    /// The figures `stats` shows; `None` while it has never been fetched.
    pub fn snapshot(
        &self,
        now: SystemTime,
        format: impl Fn(SystemTime) -> String,
    ) -> Option<DigestSnapshot> {
        let record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let last_at = record.last_at?;
        let current = self.current.load();
        let digest = current.as_deref();
        Some(DigestSnapshot {
            size: digest.map_or(0, |d| d.size),
            entries: digest.map_or(0, |d| u64::from(d.digest.count())),
            capacity: digest.map_or(0, |d| u64::from(d.digest.capacity())),
            fill_percent: digest.map_or(0.0, |d| d.digest.percent_on()),
            age_s: digest.map(|d| {
                now.duration_since(d.received_at)
                    .unwrap_or_default()
                    .as_secs()
            }),
            expires_at: digest.and_then(|d| d.expires).map(&format),
            last_fetch_at: format(last_at),
            last_fetch_outcome: match &record.last_outcome {
                Some(Err(error)) => error.to_string(),
                _ => "ok".to_owned(),
            },
            next_fetch_at: record.next_at.map(&format),
            fetches: record.fetches,
            fetch_failures: record.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn fetched(received: u64, expires: Option<u64>, digest: CacheDigest) -> FetchedDigest {
        FetchedDigest {
            size: u64::from(digest.mask_size()) + 128,
            digest,
            received_at: at(received),
            expires: expires.map(at),
        }
    }

    #[test]
    fn a_digest_is_fetched_again_five_minutes_after_it_expires() {
        assert_eq!(next_after_success(at(0), Some(at(3600))), at(3900));
    }

    #[test]
    fn never_sooner_than_five_minutes_whatever_expires_says() {
        assert_eq!(next_after_success(at(0), Some(at(10))), at(310));
        assert_eq!(
            next_after_success(at(0), Some(at(0) - MIN_GAP * 3)),
            at(300)
        );
        assert_eq!(next_after_success(at(0), None), at(300));
    }

    #[test]
    fn failures_back_off_from_five_minutes_doubling() {
        let mut delay = Duration::ZERO;
        let delays: Vec<u64> = (0..4)
            .map(|_| {
                delay = next_backoff(delay);
                delay.as_secs() / 60
            })
            .collect();
        assert_eq!(delays, [5, 10, 20, 40]);
        assert_eq!(next_backoff(MAX_BACKOFF), MAX_BACKOFF);
    }

    #[test]
    fn the_first_need_claims_a_fetch_and_only_one_runs_at_once() {
        let peer = PeerDigest::default();
        assert_eq!(peer.lookup(&StoreKey::get("http://a/")), Lookup::None);
        assert!(peer.claim_fetch(at(0)));
        assert!(!peer.claim_fetch(at(0)), "a second fetch while one runs");
        let mut digest = CacheDigest::new(100, 5).unwrap();
        digest.add(&StoreKey::get("http://a/"));
        peer.finish(at(1), Ok(fetched(1, Some(60), digest)));
        assert_eq!(peer.lookup(&StoreKey::get("http://a/")), Lookup::Hit);
        assert_eq!(peer.lookup(&StoreKey::get("http://b/")), Lookup::Miss);
        assert!(!peer.claim_fetch(at(300)), "not due before expiry + 5 min");
        assert!(peer.claim_fetch(at(360)));
    }

    #[test]
    fn a_failure_drops_the_digest_and_backs_off() {
        let peer = PeerDigest::default();
        assert!(peer.claim_fetch(at(0)));
        peer.finish(
            at(0),
            Ok(fetched(0, None, CacheDigest::new(100, 5).unwrap())),
        );
        assert!(peer.claim_fetch(at(300)));
        peer.finish(at(300), Err(DigestFetchError::Status { status: 404 }));
        assert_eq!(peer.lookup(&StoreKey::get("http://a/")), Lookup::None);
        assert!(!peer.claim_fetch(at(599)));
        assert!(peer.claim_fetch(at(600)));
        peer.finish(at(600), Err(DigestFetchError::Status { status: 404 }));
        assert!(!peer.claim_fetch(at(1199)));
        assert!(peer.claim_fetch(at(1200)), "ten minutes after the second");
        let shown = peer.snapshot(at(1200), |t| format!("{t:?}")).unwrap();
        assert_eq!(shown.last_fetch_outcome, "answered 404, not 200");
        assert_eq!((shown.fetches, shown.fetch_failures), (3, 2));
    }
}
