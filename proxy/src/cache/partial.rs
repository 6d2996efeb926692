//! Partial content: the byte ranges of a representation received in 206 responses, kept per
//! URL and Vary variant so that later range requests within them are answered here (only
//! to a request that selects the variant, RFC 9111 §4.1), combined as more ranges arrive
//! (RFC 9111 §3.4), and handed to the store once they make the whole.
//!
//! Only range requests read or write it, never a plain hit. It is bounded in bytes (a
//! sixteenth of `cache_mem`), the oldest variant first out, and kept in memory only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};

use crate::cache::policy::ranges::{partial_head, same_strong_validator, ByteRange};
use crate::cache::policy::{merge_not_modified, vary_matches, StoredTimes};

/// A variant's secondary key (RFC 9111 §4.1): the request's normalised values of the fields
/// its Vary names, as the store keeps them; `None` without Vary.
pub type Variant = Option<Vec<(HeaderName, Option<String>)>>;

/// What a held variant costs beyond its bytes, as the store counts it: its fields and the
/// bookkeeping, so that many tiny pieces are bounded too.
const OVERHEAD: u64 = 256;

/// The ranges held of one representation.
#[derive(Debug, Clone)]
pub struct PartialObject {
    /// The representation's fields, without the part's Content-Range and Content-Length.
    pub headers: HeaderMap,
    pub times: StoredTimes,
    /// The complete length, from Content-Range.
    pub length: u64,
    /// Which requests this content answers.
    pub vary: Variant,
    /// Continuous pieces by first byte, neither overlapping nor adjacent.
    pieces: BTreeMap<u64, Bytes>,
    /// Tells it from the URL's other variants in the eviction order.
    id: u64,
}

impl PartialObject {
    fn weight(&self) -> u64 {
        let pieces: usize = self.pieces.values().map(Bytes::len).sum();
        let fields: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        (pieces + fields) as u64 + OVERHEAD
    }

    fn matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .as_ref()
            .is_none_or(|values| vary_matches(values, request))
    }

    /// Whether a 206 with these fields is of the representation held, so that its bytes
    /// combine with the held ones: the same strong validator (RFC 9111 §3.4) and the same
    /// content coding (a server that tags both codings alike must not have them mixed).
    fn same_representation(&self, length: u64, response: &HeaderMap) -> bool {
        self.length == length
            && same_strong_validator(&self.headers, response)
            && self.headers.get(header::CONTENT_ENCODING) == response.get(header::CONTENT_ENCODING)
    }

    /// The bytes of `range`, when one piece holds them all.
    pub fn bytes(&self, range: ByteRange) -> Option<Bytes> {
        let (&first, piece) = self.pieces.range(..=range.first).next_back()?;
        let end = first + piece.len() as u64;
        (range.last < end)
            .then(|| piece.slice((range.first - first) as usize..=(range.last - first) as usize))
    }

    /// Adds a piece, merging it with those it overlaps or touches.
    fn add(&mut self, first: u64, bytes: Bytes) {
        let mut start = first;
        let mut end = first + bytes.len() as u64;
        let touching: Vec<u64> = self
            .pieces
            .range(..=end)
            .filter(|(&at, piece)| at + piece.len() as u64 >= start)
            .map(|(&at, _)| at)
            .collect();
        if touching.is_empty() {
            self.pieces.insert(first, bytes);
            return;
        }
        for at in &touching {
            let piece = &self.pieces[at];
            start = start.min(*at);
            end = end.max(at + piece.len() as u64);
        }
        let mut merged = BytesMut::zeroed((end - start) as usize);
        for at in &touching {
            let piece = self.pieces.remove(at).expect("listed above");
            let from = (at - start) as usize;
            merged[from..from + piece.len()].copy_from_slice(&piece);
        }
        // The new bytes last: where they overlap old ones, they are the newer copy.
        let from = (first - start) as usize;
        merged[from..from + bytes.len()].copy_from_slice(&bytes);
        self.pieces.insert(start, merged.freeze());
    }

    /// The whole body, once the pieces make it.
    fn whole(&self) -> Option<Bytes> {
        match self.pieces.first_key_value() {
            Some((0, piece)) if piece.len() as u64 == self.length => Some(piece.clone()),
            _ => None,
        }
    }
}

/// One 206's content, and the representation it is part of.
#[derive(Debug)]
pub struct Piece<'a> {
    /// The URL's cache key.
    pub key: &'a str,
    pub vary: Variant,
    /// The 206's fields, Content-Range included.
    pub headers: &'a HeaderMap,
    pub times: StoredTimes,
    pub range: ByteRange,
    /// The representation's complete length.
    pub length: u64,
    pub bytes: Bytes,
}

/// What adding a 206's content made.
#[derive(Debug)]
pub enum Added {
    /// Kept as partial content.
    Partial,
    /// The ranges now make the whole representation: taken out of here, for the store as
    /// the variant `vary`.
    Complete {
        headers: HeaderMap,
        times: StoredTimes,
        vary: Variant,
        body: Bytes,
    },
    /// Not kept: larger than this store may hold.
    TooLarge,
}

/// Partial content by cache key and variant.
#[derive(Debug)]
pub struct PartialStore {
    capacity: u64,
    inner: Mutex<Partials>,
}

#[derive(Debug, Default)]
struct Partials {
    /// Each URL's variants, the newest last.
    objects: HashMap<String, Vec<PartialObject>>,
    /// Variants (key and id) in the order they were last added to: the oldest is evicted
    /// first.
    order: VecDeque<(String, u64)>,
    /// The weight of every variant held.
    held: u64,
    next_id: u64,
}

impl Partials {
    /// Takes out `key`'s variants that `pick` selects, no longer counted or ordered.
    fn take(&mut self, key: &str, pick: impl Fn(&PartialObject) -> bool) -> Vec<PartialObject> {
        let Some(variants) = self.objects.get_mut(key) else {
            return Vec::new();
        };
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(variants).into_iter().partition(pick);
        if kept.is_empty() {
            self.objects.remove(key);
        } else {
            *variants = kept;
        }
        for object in &taken {
            self.held -= object.weight();
            self.order.retain(|(k, id)| *id != object.id || k != key);
        }
        taken
    }
}

impl PartialStore {
    pub fn new(cache_mem: u64) -> PartialStore {
        PartialStore {
            capacity: cache_mem / 16,
            inner: Mutex::default(),
        }
    }

    /// A copy of what is held for `key` in the variant that `request` selects.
    pub fn lookup(&self, key: &str, request: &HeaderMap) -> Option<PartialObject> {
        let inner = self.inner.lock().expect("no panic holds this lock");
        let variants = inner.objects.get(key)?;
        variants
            .iter()
            .rev()
            .find(|held| held.matches(request))
            .cloned()
    }

    /// Adds a 206's content to its variant. It is combined with what that variant holds
    /// when both are of one representation, the new response's fields then updating the
    /// stored ones (RFC 9111 §3.4, §3.2); otherwise it replaces what is held, being the
    /// newer representation. As in the store, content without Vary replaces every variant
    /// of the URL, and content with Vary one held without. The merged fields lose those that
    /// `private="…"` or `no-cache="…"` name, in Cache-Control or the targeted fields `targets`.
    pub fn add(&self, piece: Piece<'_>, targets: &[HeaderName]) -> Added {
        let Piece {
            key,
            vary,
            headers: response,
            times,
            range,
            length,
            bytes,
        } = piece;
        if bytes.len() as u64 != range.size() || range.size() > self.capacity {
            return Added::TooLarge;
        }
        let mut inner = self.inner.lock().expect("no panic holds this lock");
        let inner = &mut *inner;
        let mut same = inner.take(key, |held| held.vary == vary);
        inner.take(key, |held| vary.is_none() || held.vary.is_none());
        let mut object = match same.pop() {
            Some(mut held) if held.same_representation(length, response) => {
                held.headers = partial_head(&merge_not_modified(&held.headers, response, targets));
                held.times = times;
                held
            }
            _ => PartialObject {
                headers: partial_head(response),
                times,
                length,
                vary,
                pieces: BTreeMap::new(),
                id: inner.next_id,
            },
        };
        inner.next_id += 1;
        object.add(range.first, bytes);
        if let Some(body) = object.whole() {
            return Added::Complete {
                headers: object.headers,
                times: object.times,
                vary: object.vary,
                body,
            };
        }
        inner.held += object.weight();
        inner.order.push_back((key.to_owned(), object.id));
        inner
            .objects
            .entry(key.to_owned())
            .or_default()
            .push(object);
        while inner.held > self.capacity {
            let Some((oldest, id)) = inner.order.pop_front() else {
                break;
            };
            inner.take(&oldest, |held| held.id == id);
        }
        Added::Partial
    }

    /// Forgets every variant of `key`'s partial content (an unsafe method or a PURGE);
    /// whether there was any.
    pub fn remove(&self, key: &str) -> bool {
        let mut inner = self.inner.lock().expect("no panic holds this lock");
        !inner.take(key, |_| true).is_empty()
    }
}

#[cfg(test)]
mod tests;
