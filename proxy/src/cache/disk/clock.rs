//! Eviction order: CLOCK (second chance) over the objects on disk, in memory. A hit sets
//! the object's bit and notes when it happened; the note is written into the index with the
//! next commit, so that after a restart the hand starts at the objects least recently used.
//!
//! Beside it, until when each object without Vary stays fresh, by its URL's hash: what an
//! ICP query asks, answered without touching the disk. An object leaves both at once.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};

/// The most access times waiting for the next commit; past it hits are not noted (their
/// bits are still set).
const MAX_NOTED: usize = 65_536;

#[derive(Default)]
pub(super) struct Clock {
    /// Object ids in the order the hand meets them; removed ids are skipped when met.
    ring: VecDeque<u64>,
    slots: HashMap<u64, Slot>,
    /// Access times (seconds since the epoch) not yet written to the index.
    noted: HashMap<u64, u32>,
    /// By URL hash: the object id, and until when it is fresh (seconds since the epoch).
    fresh: HashMap<u64, (u64, u32)>,
}

struct Slot {
    weight: u64,
    referenced: bool,
    /// The hash of its URL when it is in `fresh`.
    url: Option<u64>,
}

impl Clock {
    pub fn with_capacity(n: usize) -> Clock {
        Clock {
            ring: VecDeque::with_capacity(n),
            slots: HashMap::with_capacity(n),
            noted: HashMap::new(),
            fresh: HashMap::new(),
        }
    }

    pub fn insert(&mut self, id: u64, weight: u64, referenced: bool) {
        let slot = Slot {
            weight,
            referenced,
            url: None,
        };
        if self.slots.insert(id, slot).is_none() {
            self.ring.push_back(id);
        }
    }

    /// The weight of the object removed, if it was here.
    pub fn remove(&mut self, id: u64) -> Option<u64> {
        self.noted.remove(&id);
        let slot = self.slots.remove(&id)?;
        if let Some(url) = slot.url {
            if self.fresh.get(&url).is_some_and(|&(held, _)| held == id) {
                self.fresh.remove(&url);
            }
        }
        Some(slot.weight)
    }

    /// Object `id`, of the URL hashed `url`, is fresh until `until`; ignored if it is gone.
    pub fn set_fresh(&mut self, id: u64, url: u64, until: u32) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.url = Some(url);
        self.fresh.insert(url, (id, until));
    }

    /// Until when the object of the URL hashed `url` is fresh, if one is held.
    pub fn fresh_until(&self, url: u64) -> Option<u32> {
        self.fresh.get(&url).map(|&(_, until)| until)
    }

    /// Gives the object another weight; the one it had, if it is here.
    pub fn reweigh(&mut self, id: u64, weight: u64) -> Option<u64> {
        let slot = self.slots.get_mut(&id)?;
        Some(std::mem::replace(&mut slot.weight, weight))
    }

    pub fn touch(&mut self, id: u64, now: u32) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.referenced = true;
            if self.noted.len() < MAX_NOTED || self.noted.contains_key(&id) {
                self.noted.insert(id, now);
            }
        }
    }

    pub fn has_noted(&self) -> bool {
        !self.noted.is_empty()
    }

    pub fn take_noted(&mut self) -> HashMap<u64, u32> {
        std::mem::take(&mut self.noted)
    }

    /// Takes out the first object the hand finds unreferenced, clearing the bits it passes
    /// and passing over those in `spare`; `None` when there is none to take.
    pub fn victim(&mut self, spare: impl Fn(u64) -> bool) -> Option<(u64, u64)> {
        let mut passes = 2 * self.ring.len();
        while passes > 0 {
            passes -= 1;
            let id = self.ring.pop_front()?;
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            if spare(id) || std::mem::take(&mut slot.referenced) {
                self.ring.push_back(id);
                continue;
            }
            return self.remove(id).map(|weight| (id, weight));
        }
        None
    }
}
