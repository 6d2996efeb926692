//! A peer's cache digest as this proxy holds it, and Squid's rules for when to fetch it
//! (`src/peer_digest.cc`): lazily, the first time a miss needs it; again at its `Expires`
//! plus five minutes, and never sooner than five minutes after the last one; after a
//! failure, with the digest dropped, five minutes later and then twice as long each time.
//! Fetches from all peers together are a minute apart at least, so that peers needed at
//! once are not all fetched in the same instant. A refetch asks If-Modified-Since the held
//! digest's `Last-Modified`; a 304 keeps it.

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
/// Squid's `GlobDigestReqMinGap`: the least time between two fetches, from any peers.
pub const GLOBAL_MIN_GAP: Duration = Duration::from_secs(60);
/// The longest delay the doubling reaches; Squid has no bound, but a peer that recovers
/// should not wait days to be used again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 60 * 60);

/// A digest fetched from a peer, with when it came and when the peer said it expires.
#[derive(Debug)]
pub struct FetchedDigest {
    /// Shared so that a 304 renews the times without copying the mask.
    pub digest: Arc<CacheDigest>,
    pub received_at: SystemTime,
    pub expires: Option<SystemTime>,
    /// The reply's `Last-Modified`, else its `Date`: the If-Modified-Since of the refetch.
    pub modified_at: Option<SystemTime>,
    /// Octets of the body, header included.
    pub size: u64,
}

/// What a fetch brought.
#[derive(Debug)]
pub enum Fetched {
    /// 200: a new digest.
    Digest(FetchedDigest),
    /// 304: the digest held is current; when that was said, and the reply's `Expires` and
    /// `Last-Modified` if it gave them.
    NotModified {
        received_at: SystemTime,
        expires: Option<SystemTime>,
        modified_at: Option<SystemTime>,
    },
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
    /// As Squid's "304 without the old in-memory digest".
    #[error("answered 304 Not Modified, but no digest is held")]
    NotModifiedWithoutDigest,
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

/// When a fetch found due at `now` may be sent (Squid's `peerDigestCheck`): [`MIN_GAP`]
/// after the last fetch from this peer ended (`last_ended`), and [`GLOBAL_MIN_GAP`] after
/// the last fetch from any peer began (`last_begun`).
pub fn request_time(
    now: SystemTime,
    last_ended: Option<SystemTime>,
    last_begun: Option<SystemTime>,
) -> SystemTime {
    let mut at = now;
    if let Some(ended) = last_ended {
        at = at.max(ended + MIN_GAP);
    }
    if let Some(begun) = last_begun {
        at = at.max(begun + GLOBAL_MIN_GAP);
    }
    at
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

/// When the last digest fetch from any peer began, shared by all peers' [`PeerDigest`]s
/// and kept across reloads.
#[derive(Debug, Default)]
pub struct FetchGate {
    /// Milliseconds since the epoch; 0 before the first.
    last_begun_ms: AtomicU64,
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
    not_modified: u64,
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

fn from_millis(ms: u64) -> Option<SystemTime> {
    (ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
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

    /// The `Last-Modified` of the digest held, to ask If-Modified-Since; `None` when none
    /// is held.
    pub fn modified_since(&self) -> Option<SystemTime> {
        self.current.load().as_ref().and_then(|d| d.modified_at)
    }

    /// Notes that a miss needed the digest, and claims the fetch when one is due at `now`,
    /// none is under way, and the gaps since the last fetches (this peer's, and any peer's
    /// in `gate`) allow it: the caller must then fetch and [`Self::finish`]. A fetch due but
    /// held back by a gap is put off until the gap ends.
    pub fn claim_fetch(&self, now: SystemTime, gate: &FetchGate) -> bool {
        // Read first: after the first need, a miss only reads.
        let first = !self.needed.load(Relaxed) && !self.needed.swap(true, Relaxed);
        let due = first || millis(now) >= self.next_fetch_ms.load(Relaxed);
        if !due || self.fetching.swap(true, Relaxed) {
            return false;
        }
        let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let last_begun_ms = gate.last_begun_ms.load(Relaxed);
        let at = request_time(now, record.last_at, from_millis(last_begun_ms));
        // Two peers due in the same instant: the one that moves the gate first goes.
        let sent = at <= now
            && gate
                .last_begun_ms
                .compare_exchange(last_begun_ms, millis(now).max(1), Relaxed, Relaxed)
                .is_ok();
        if !sent {
            record.next_at = Some(at);
            self.next_fetch_ms.store(millis(at), Relaxed);
            self.fetching.store(false, Relaxed);
        }
        sent
    }

    /// Records a fetch's outcome at `now` and when the next one is due.
    pub fn finish(&self, now: SystemTime, outcome: Result<Fetched, DigestFetchError>) {
        let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        record.last_at = Some(now);
        record.fetches += 1;
        let renewed = match outcome {
            Ok(Fetched::Digest(fetched)) => Ok(fetched),
            Ok(Fetched::NotModified {
                received_at,
                expires,
                modified_at,
            }) => match self.current.load_full() {
                Some(held) => {
                    record.not_modified += 1;
                    Ok(FetchedDigest {
                        digest: held.digest.clone(),
                        received_at,
                        expires: expires.or(held.expires),
                        modified_at: modified_at.or(held.modified_at),
                        size: held.size,
                    })
                }
                None => Err(DigestFetchError::NotModifiedWithoutDigest),
            },
            Err(error) => Err(error),
        };
        let next = match renewed {
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
            not_modified: record.not_modified,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn fetched(received: u64, expires: Option<u64>, digest: CacheDigest) -> Fetched {
        Fetched::Digest(FetchedDigest {
            size: u64::from(digest.mask_size()) + 128,
            digest: Arc::new(digest),
            received_at: at(received),
            expires: expires.map(at),
            modified_at: Some(at(received)),
        })
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
        let gate = FetchGate::default();
        assert_eq!(peer.lookup(&StoreKey::get("http://a/")), Lookup::None);
        assert!(peer.claim_fetch(at(0), &gate));
        assert!(
            !peer.claim_fetch(at(0), &gate),
            "a second fetch while one runs"
        );
        let mut digest = CacheDigest::new(100, 5).unwrap();
        digest.add(&StoreKey::get("http://a/"));
        peer.finish(at(1), Ok(fetched(1, Some(60), digest)));
        assert_eq!(peer.lookup(&StoreKey::get("http://a/")), Lookup::Hit);
        assert_eq!(peer.lookup(&StoreKey::get("http://b/")), Lookup::Miss);
        assert!(
            !peer.claim_fetch(at(300), &gate),
            "not due before expiry + 5 min"
        );
        assert!(peer.claim_fetch(at(360), &gate));
    }

    #[test]
    fn a_failure_drops_the_digest_and_backs_off() {
        let peer = PeerDigest::default();
        let gate = FetchGate::default();
        assert!(peer.claim_fetch(at(0), &gate));
        peer.finish(
            at(0),
            Ok(fetched(0, None, CacheDigest::new(100, 5).unwrap())),
        );
        assert!(peer.claim_fetch(at(300), &gate));
        peer.finish(at(300), Err(DigestFetchError::Status { status: 404 }));
        assert_eq!(peer.lookup(&StoreKey::get("http://a/")), Lookup::None);
        assert!(!peer.claim_fetch(at(599), &gate));
        assert!(peer.claim_fetch(at(600), &gate));
        peer.finish(at(600), Err(DigestFetchError::Status { status: 404 }));
        assert!(!peer.claim_fetch(at(1199), &gate));
        assert!(
            peer.claim_fetch(at(1200), &gate),
            "ten minutes after the second"
        );
        let shown = peer.snapshot(at(1200), |t| format!("{t:?}")).unwrap();
        assert_eq!(shown.last_fetch_outcome, "answered 404, not 200");
        assert_eq!((shown.fetches, shown.fetch_failures), (3, 2));
    }

    #[test]
    fn a_304_keeps_the_digest_and_schedules_the_next_check_as_for_a_new_one() {
        let peer = PeerDigest::default();
        let gate = FetchGate::default();
        assert_eq!(
            peer.modified_since(),
            None,
            "nothing held: no If-Modified-Since"
        );
        assert!(peer.claim_fetch(at(0), &gate));
        let mut digest = CacheDigest::new(100, 5).unwrap();
        digest.add(&StoreKey::get("http://a/"));
        peer.finish(at(0), Ok(fetched(0, Some(60), digest)));
        assert_eq!(peer.modified_since(), Some(at(0)));
        assert!(peer.claim_fetch(at(360), &gate));
        let not_modified = Fetched::NotModified {
            received_at: at(360),
            expires: Some(at(1000)),
            modified_at: None,
        };
        peer.finish(at(360), Ok(not_modified));
        assert_eq!(peer.lookup(&StoreKey::get("http://a/")), Lookup::Hit);
        assert_eq!(peer.modified_since(), Some(at(0)), "the held digest's date");
        assert!(
            !peer.claim_fetch(at(1299), &gate),
            "the 304's Expires + 5 min"
        );
        assert!(peer.claim_fetch(at(1300), &gate));
        let shown = peer.snapshot(at(1300), |t| format!("{t:?}")).unwrap();
        assert_eq!(shown.last_fetch_outcome, "ok");
        assert_eq!(
            (shown.fetches, shown.not_modified, shown.fetch_failures),
            (2, 1, 0)
        );
        assert_eq!(shown.age_s, Some(940), "renewed by the 304");
    }

    #[test]
    fn a_304_with_no_digest_held_is_a_failure() {
        let peer = PeerDigest::default();
        assert!(peer.claim_fetch(at(0), &FetchGate::default()));
        let not_modified = Fetched::NotModified {
            received_at: at(0),
            expires: None,
            modified_at: None,
        };
        peer.finish(at(0), Ok(not_modified));
        let shown = peer.snapshot(at(0), |t| format!("{t:?}")).unwrap();
        assert_eq!(
            shown.last_fetch_outcome,
            DigestFetchError::NotModifiedWithoutDigest.to_string()
        );
        assert_eq!(shown.fetch_failures, 1);
    }

    #[test]
    fn a_fetch_waits_five_minutes_after_this_peers_last_and_one_after_any_peers() {
        assert_eq!(request_time(at(0), None, None), at(0));
        assert_eq!(request_time(at(100), Some(at(0)), None), at(300));
        assert_eq!(request_time(at(400), Some(at(0)), None), at(400));
        assert_eq!(request_time(at(10), None, Some(at(0))), at(60));
        assert_eq!(request_time(at(100), Some(at(0)), Some(at(290))), at(350));
        assert_eq!(request_time(at(500), Some(at(0)), Some(at(290))), at(500));
    }

    #[test]
    fn peers_needed_at_once_are_fetched_a_minute_apart() {
        let gate = FetchGate::default();
        let peers: Vec<PeerDigest> = (0..3).map(|_| PeerDigest::default()).collect();
        let mut began: Vec<Vec<u64>> = vec![Vec::new(); peers.len()];
        // Every peer is consulted each second, as misses would; a fetch takes no time.
        for second in 0..=200 {
            for (peer, began) in peers.iter().zip(&mut began) {
                if peer.claim_fetch(at(second), &gate) {
                    began.push(second);
                    let digest = CacheDigest::new(100, 5).unwrap();
                    peer.finish(at(second), Ok(fetched(second, Some(second + 3600), digest)));
                }
            }
        }
        assert_eq!(began, [vec![0], vec![60], vec![120]]);
    }
}
