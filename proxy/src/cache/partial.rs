//! Partial content: the byte ranges of a representation received in 206 responses, kept per
//! URL so that later range requests within them are answered here, combined as more ranges
//! arrive (RFC 9111 §3.4), and handed to the store once they make the whole.
//!
//! Only range requests read or write it, never a plain hit. It is bounded in bytes (a
//! sixteenth of `cache_mem`), the oldest object first out, and kept in memory only.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName};

use crate::cache::policy::ranges::{partial_head, same_strong_validator, ByteRange};
use crate::cache::policy::{merge_not_modified, StoredTimes};

/// The ranges held of one representation.
#[derive(Debug, Clone)]
pub struct PartialObject {
    /// The representation's fields, without the part's Content-Range and Content-Length.
    pub headers: HeaderMap,
    pub times: StoredTimes,
    /// The complete length, from Content-Range.
    pub length: u64,
    /// Continuous pieces by first byte, neither overlapping nor adjacent.
    pieces: BTreeMap<u64, Bytes>,
}

impl PartialObject {
    fn held(&self) -> u64 {
        self.pieces.values().map(|piece| piece.len() as u64).sum()
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

/// What adding a 206's content made.
#[derive(Debug)]
pub enum Added {
    /// Kept as partial content.
    Partial,
    /// The ranges now make the whole representation: taken out of here, for the store.
    Complete {
        headers: HeaderMap,
        times: StoredTimes,
        body: Bytes,
    },
    /// Not kept: larger than this store may hold.
    TooLarge,
}

/// Partial content by cache key.
#[derive(Debug)]
pub struct PartialStore {
    capacity: u64,
    inner: Mutex<Partials>,
}

#[derive(Debug, Default)]
struct Partials {
    objects: HashMap<String, PartialObject>,
    /// Keys in the order they were first stored: the oldest is evicted first.
    order: VecDeque<String>,
    held: u64,
}

impl PartialStore {
    pub fn new(cache_mem: u64) -> PartialStore {
        PartialStore {
            capacity: cache_mem / 16,
            inner: Mutex::default(),
        }
    }

    /// A copy of what is held for `key`.
    pub fn lookup(&self, key: &str) -> Option<PartialObject> {
        let inner = self.inner.lock().expect("no panic holds this lock");
        inner.objects.get(key).cloned()
    }

    /// Adds a 206's content (`range` of a representation `length` bytes long). It is
    /// combined with what is held when both share a strong validator, the new response's
    /// fields then updating the stored ones (RFC 9111 §3.4, §3.2); otherwise it replaces
    /// what is held, being the newer representation. The merged fields lose those that
    /// `private="…"` or `no-cache="…"` name, in Cache-Control or the targeted fields `targets`.
    pub fn add(
        &self,
        (key, response): (&str, &HeaderMap),
        times: StoredTimes,
        range: ByteRange,
        length: u64,
        bytes: Bytes,
        targets: &[HeaderName],
    ) -> Added {
        if bytes.len() as u64 != range.size() || range.size() > self.capacity {
            return Added::TooLarge;
        }
        let mut inner = self.inner.lock().expect("no panic holds this lock");
        let inner = &mut *inner;
        let object = match inner.objects.remove(key) {
            Some(mut held)
                if held.length == length && same_strong_validator(&held.headers, response) =>
            {
                held.headers = partial_head(&merge_not_modified(&held.headers, response, targets));
                held.times = times;
                inner.held -= held.held();
                held
            }
            held => {
                if let Some(held) = held {
                    inner.held -= held.held();
                    inner.order.retain(|k| k != key);
                }
                inner.order.push_back(key.to_owned());
                PartialObject {
                    headers: partial_head(response),
                    times,
                    length,
                    pieces: BTreeMap::new(),
                }
            }
        };
        let mut object = object;
        object.add(range.first, bytes);
        if let Some(body) = object.whole() {
            inner.order.retain(|k| k != key);
            return Added::Complete {
                headers: object.headers,
                times: object.times,
                body,
            };
        }
        inner.held += object.held();
        inner.objects.insert(key.to_owned(), object);
        while inner.held > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.objects.remove(&oldest) {
                inner.held -= evicted.held();
            }
        }
        Added::Partial
    }

    /// Forgets `key`'s partial content (an unsafe method or a PURGE); whether there was any.
    pub fn remove(&self, key: &str) -> bool {
        let mut inner = self.inner.lock().expect("no panic holds this lock");
        let Some(removed) = inner.objects.remove(key) else {
            return false;
        };
        inner.held -= removed.held();
        inner.order.retain(|k| k != key);
        true
    }
}

#[cfg(test)]
mod tests;
