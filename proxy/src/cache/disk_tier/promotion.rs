//! Which disk hits are promoted to memory: an object's second disk hit within
//! [`WINDOW_SECONDS`], not its first, as Traffic Server's RAM cache admits an object only
//! once its "seen filter" has seen it before. An object read once after a restart, or by a
//! crawl, stays on disk and leaves the memory tier to objects in use.
//!
//! The first hits are remembered in a fixed table of [`SLOTS`] words (512 KiB): one word
//! per slot, the URL's hash in the high bits and the time of the hit in the low ones. A
//! hit of another URL on the same slot forgets the first; it is then promoted a hit later.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use xxhash_rust::xxh3::xxh3_64;

/// Two disk hits further apart than this are each a first hit.
pub const WINDOW_SECONDS: u64 = 600;

const SLOTS: usize = 1 << 16;
/// Low bits of a slot's word: seconds since the filter began, wrapping (194 days).
const TIME_BITS: u32 = 24;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

pub struct Promotion {
    seen: Box<[AtomicU64]>,
    began: Instant,
}

impl Default for Promotion {
    fn default() -> Self {
        Promotion {
            seen: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            began: Instant::now(),
        }
    }
}

impl Promotion {
    /// A disk hit of `url`: whether to promote it to memory now.
    pub fn hit(&self, url: &str) -> bool {
        self.hit_at(url, self.began.elapsed().as_secs())
    }

    fn hit_at(&self, url: &str, seconds: u64) -> bool {
        let hash = xxh3_64(url.as_bytes());
        let slot = &self.seen[(hash as usize) % SLOTS];
        // 0 marks an empty slot: a URL whose tag is 0 is taken as 1.
        let tag = (hash & !TIME_MASK).max(1 << TIME_BITS);
        let now = seconds & TIME_MASK;
        let before = slot.swap(tag | now, Relaxed);
        let elapsed = now.wrapping_sub(before & TIME_MASK) & TIME_MASK;
        let second = before & !TIME_MASK == tag && elapsed <= WINDOW_SECONDS;
        if second {
            // Promoted: a later disk hit (after memory evicts it) starts anew.
            slot.store(0, Relaxed);
        }
        second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_hit_within_the_window_promotes_not_the_first() {
        let p = Promotion::default();
        assert!(!p.hit_at("http://a/", 100));
        assert!(p.hit_at("http://a/", 100 + WINDOW_SECONDS));
        assert!(
            !p.hit_at("http://a/", 100 + WINDOW_SECONDS),
            "promoted: begins anew"
        );
    }

    #[test]
    fn hits_further_apart_than_the_window_do_not_promote() {
        let p = Promotion::default();
        assert!(!p.hit_at("http://a/", 10));
        assert!(!p.hit_at("http://a/", 11 + WINDOW_SECONDS));
        assert!(
            p.hit_at("http://a/", 12 + WINDOW_SECONDS),
            "but that one was a first hit"
        );
    }

    #[test]
    fn another_url_does_not_count_as_a_first_hit() {
        let p = Promotion::default();
        let urls: Vec<String> = (0..1000).map(|i| format!("http://a/{i}")).collect();
        for url in &urls {
            assert!(!p.hit_at(url, 5), "{url}");
        }
        // Most are still remembered (a few share a slot); none was promoted by another's hit.
        let promoted = urls.iter().filter(|u| p.hit_at(u, 6)).count();
        assert!(promoted > 950, "{promoted} of 1000");
    }

    #[test]
    fn the_window_holds_across_the_clock_wrapping() {
        let p = Promotion::default();
        assert!(!p.hit_at("http://a/", TIME_MASK - 5));
        assert!(p.hit_at("http://a/", TIME_MASK + 10));
    }
}
