//! The index: which objects are on disk, in redb, and the one path by which it changes.
//!
//! Every change (a new object, a 304's headers, a removal, a faulty object dropped) goes
//! through [`Inner::submit`]: changes that arrive while one commit is under way wait and
//! are then committed together in one transaction (group commit), since each durable commit
//! costs the device a few syncs.
//!
//! Order of effects, so that a crash at any moment leaves only whole objects visible, no
//! record without its file and no file without its record: a new object's file is complete
//! and synced in `tmp/` before its record is committed, and moved into `objects/` after (a
//! crash between leaves it in `tmp/`, and the next open moves it); a removed object's id
//! goes into the `graves` table in the commit that removes its record, its file is unlinked
//! after that commit, and its grave cleared in the next one (a crash between leaves the
//! grave, and the next open unlinks the file).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::SystemTime;

use foldhash::HashMap;
use redb::{Database, ReadableTable, TableDefinition};

use super::clock::Clock;
use super::error::{DiskError, DiskOp, Fault, InIndex, IndexAt};
use super::format::{self, Record, Slot};
use super::ObjectHead;

/// Index key (URL, 0, variant hash) → [`Record`].
pub(super) const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
/// Object id → [`Slot`].
pub(super) const SLOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("slots");
/// Ids of removed objects whose files may not be unlinked yet.
pub(super) const GRAVES: TableDefinition<u64, ()> = TableDefinition::new("graves");
/// `format` and `next_id`.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The most variants kept for one URL, as in memory; a new one pushes out the oldest.
const MAX_VARIANTS: usize = 16;

/// A change to the index.
pub(super) enum Change {
    Insert {
        key: Vec<u8>,
        record: Record,
        weight: u64,
    },
    /// New stored headers for object `id` under `key` (unchanged if it is gone or replaced).
    Head {
        key: Vec<u8>,
        id: u64,
        head: ObjectHead,
    },
    /// Every variant of a URL.
    Remove { url: String },
    /// Object `id` under `key`, found faulty.
    Drop { key: Vec<u8>, id: u64 },
    /// Nothing but eviction down to the capacity.
    Evict,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Done {
    Inserted,
    Updated(bool),
    Removed(u64),
    Evicted,
}

#[derive(Default)]
struct Queue {
    next_ticket: u64,
    pending: Vec<(u64, Change)>,
    results: HashMap<u64, Result<Done, DiskError>>,
    committing: bool,
}

#[derive(Default)]
pub(super) struct Counters {
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub evictions: AtomicU64,
    pub full: AtomicU64,
    pub io: AtomicU64,
    pub corrupt: AtomicU64,
    /// The newest fault, for the console and `canopy cache stats`.
    pub last_fault: Mutex<Option<(SystemTime, String)>>,
}

/// What the store's handles share.
pub(super) struct Inner {
    pub dir: PathBuf,
    /// The bound in bytes; changed by [`DiskStore::resize`](super::DiskStore::resize).
    pub capacity: AtomicU64,
    /// `None` after a failed reopen: tried again at the next use.
    db: RwLock<Option<Database>>,
    pub clock: Mutex<Clock>,
    pub counters: Counters,
    pub next_id: AtomicU64,
    queue: Mutex<Queue>,
    turn: Condvar,
    /// Ids whose files were unlinked after the last commit: their graves go in the next.
    buried: Mutex<Vec<u64>>,
    /// Faults logged so far, to log only the first ones of a burst.
    logged: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every change under these locks is one step: a poisoned lock is used as it is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The index, open.
pub(super) struct Index<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for Index<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.0
            .as_ref()
            .expect("an Index is made only of an open database")
    }
}

/// Removes an object's file wherever it is; gone already is fine.
pub(super) fn unlink(dir: &Path, id: u64) -> Result<(), DiskError> {
    for path in [format::object_path(dir, id), format::temp_path(dir, id)] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DiskError::io(DiskOp::Remove, path, e)),
        }
    }
    Ok(())
}

/// What a batch did, to apply to the clock and the counters once committed.
#[derive(Default)]
struct Effects {
    added: Vec<(u64, u64)>,
    /// Objects without Vary: (id, URL hash, fresh until).
    fresh: Vec<(u64, u64, u32)>,
    removed: Vec<u64>,
    evicted: Vec<(u64, u64)>,
    reweighed: Vec<(u64, u64)>,
    /// Files to unlink once the commit is done.
    unlink: Vec<u64>,
    /// Graves cleared by this commit: kept again if it fails.
    buried: Vec<u64>,
}

impl Inner {
    pub fn new(dir: PathBuf, capacity: u64, db: Database, clock: Clock, next_id: u64) -> Inner {
        Inner {
            dir,
            capacity: AtomicU64::new(capacity),
            db: RwLock::new(Some(db)),
            clock: Mutex::new(clock),
            counters: Counters::default(),
            next_id: AtomicU64::new(next_id),
            queue: Mutex::default(),
            turn: Condvar::new(),
            buried: Mutex::default(),
            logged: AtomicUsize::new(0),
        }
    }

    pub fn index_path(&self) -> PathBuf {
        format::index_path(&self.dir)
    }

    pub fn clock(&self) -> MutexGuard<'_, Clock> {
        lock(&self.clock)
    }

    /// The index, opened again first if an I/O error closed it.
    pub fn db(&self) -> Result<Index<'_>, DiskError> {
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        if db.is_some() {
            return Ok(Index(db));
        }
        drop(db);
        self.reopen()?;
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        match db.is_some() {
            true => Ok(Index(db)),
            false => Err(DiskError::IndexClosed {
                path: self.index_path(),
            }),
        }
    }

    /// After an I/O error redb refuses every transaction until the database is opened
    /// again (a full disk must not stop the store for good): closes it and opens it anew.
    fn reopen(&self) -> Result<(), DiskError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        // Dropped first: the file is locked while it is open.
        *db = None;
        let path = self.index_path();
        let reopened =
            Database::create(&path).map_err(|e| DiskError::index(DiskOp::OpenIndex, &path, e));
        *db = Some(reopened.map_err(|e| self.fault(e))?);
        tracing::info!("disk cache index {} opened again", path.display());
        Ok(())
    }

    /// A fault of the index or the files, outside any transaction: counted, and the index
    /// opened again if the error closed it.
    pub fn failed(&self, error: DiskError) -> DiskError {
        if error.closes_index() {
            // A failure to reopen is counted, and tried again at the next use.
            let _ = self.reopen();
        }
        self.fault(error)
    }

    /// Counts a fault (and logs the first hundred), giving the error back.
    pub fn fault(&self, error: DiskError) -> DiskError {
        let counter = match error.fault() {
            None => return error,
            Some(Fault::Full) => &self.counters.full,
            Some(Fault::Io) => &self.counters.io,
            Some(Fault::Corrupt) => &self.counters.corrupt,
        };
        counter.fetch_add(1, Relaxed);
        *lock(&self.counters.last_fault) = Some((SystemTime::now(), error.to_string()));
        if self.logged.fetch_add(1, Relaxed) < 100 {
            tracing::warn!("{error}");
        }
        error
    }

    /// Commits `change`, with whatever others arrive meanwhile, and says what it did.
    pub fn submit(&self, change: Change) -> Result<Done, DiskError> {
        let mut queue = lock(&self.queue);
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.pending.push((ticket, change));
        loop {
            if let Some(result) = queue.results.remove(&ticket) {
                return result;
            }
            if queue.committing {
                queue = self.turn.wait(queue).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            queue.committing = true;
            let batch = std::mem::take(&mut queue.pending);
            drop(queue);
            let results = self.commit(batch);
            queue = lock(&self.queue);
            queue.results.extend(results);
            queue.committing = false;
            self.turn.notify_all();
        }
    }

    /// One transaction for a batch of changes.
    fn commit(&self, batch: Vec<(u64, Change)>) -> Vec<(u64, Result<Done, DiskError>)> {
        let mut effects = Effects::default();
        let outcome = self.write(&batch, &mut effects);
        let (outcomes, error) = match outcome {
            Ok(outcomes) => (outcomes, None),
            Err(e) => (Vec::new(), Some(self.failed(e))),
        };
        if let Some(error) = error {
            // Nothing changed: the clock gets its victims back.
            let mut clock = self.clock();
            for &(id, weight) in &effects.evicted {
                clock.insert(id, weight, false);
            }
            lock(&self.buried).extend(&effects.buried);
            return batch
                .into_iter()
                .map(|(t, _)| (t, Err(error.clone())))
                .collect();
        }
        let removed: HashSet<u64> = effects.removed.iter().copied().collect();
        for (_, change) in &batch {
            if let Change::Insert { record, .. } = change {
                if removed.contains(&record.id) {
                    continue;
                }
                let from = format::temp_path(&self.dir, record.id);
                let to = format::object_path(&self.dir, record.id);
                // Left in tmp/, the file is still found by readers and moved at next open.
                if let Err(e) = std::fs::rename(&from, &to) {
                    self.fault(DiskError::io(DiskOp::Rename, from, e));
                }
            }
        }
        let c = &self.counters;
        let mut clock = self.clock();
        for &id in &effects.removed {
            if let Some(weight) = clock.remove(id) {
                c.objects.fetch_sub(1, Relaxed);
                c.bytes.fetch_sub(weight, Relaxed);
            }
        }
        for &(id, weight) in &effects.evicted {
            c.objects.fetch_sub(1, Relaxed);
            c.bytes.fetch_sub(weight, Relaxed);
            c.evictions.fetch_add(1, Relaxed);
            clock.remove(id);
        }
        for &(id, weight) in &effects.reweighed {
            if let Some(old) = clock.reweigh(id, weight) {
                c.bytes.fetch_add(weight, Relaxed);
                c.bytes.fetch_sub(old, Relaxed);
            }
        }
        for &(id, weight) in effects.added.iter().filter(|(id, _)| !removed.contains(id)) {
            // Unreferenced: a new object stays only if it is used before the hand comes.
            clock.insert(id, weight, false);
            c.objects.fetch_add(1, Relaxed);
            c.bytes.fetch_add(weight, Relaxed);
            c.writes.fetch_add(1, Relaxed);
        }
        for &(id, url, until) in &effects.fresh {
            clock.set_fresh(id, url, until);
        }
        batch
            .into_iter()
            .zip(outcomes)
            .map(|((ticket, _), done)| (ticket, Ok(done)))
            .collect()
    }

    fn write(&self, batch: &[(u64, Change)], fx: &mut Effects) -> Result<Vec<Done>, DiskError> {
        let path = self.index_path();
        let ix = IndexAt {
            op: DiskOp::WriteIndex,
            path: &path,
        };
        let db = self.db()?;
        let mut txn = db.begin_write().at(&ix)?;
        txn.set_quick_repair(true);
        let outcomes = {
            let mut tables = Tables {
                objects: txn.open_table(OBJECTS).at(&ix)?,
                slots: txn.open_table(SLOTS).at(&ix)?,
                graves: txn.open_table(GRAVES).at(&ix)?,
                held: self.counters.bytes.load(Relaxed) as i128,
                fx,
                ix: &ix,
            };
            let buried = std::mem::take(&mut *lock(&self.buried));
            for &id in &buried {
                tables.graves.remove(id).at(&ix)?;
            }
            tables.fx.buried = buried;
            let mut outcomes = Vec::with_capacity(batch.len());
            for (_, change) in batch {
                outcomes.push(tables.apply(change)?);
            }
            let mut clock = self.clock();
            tables.evict(&mut clock, self.capacity.load(Relaxed))?;
            tables.note_access(clock.take_noted())?;
            drop(clock);
            for &id in &tables.fx.unlink {
                tables.graves.insert(id, ()).at(&ix)?;
            }
            let next_id = tables.fx.added.iter().map(|&(id, _)| id + 1).max();
            let mut meta = txn.open_table(META).at(&ix)?;
            let stored_next = meta.get("next_id").at(&ix)?.map_or(0, |v| v.value());
            if let Some(next_id) = next_id.filter(|&n| n > stored_next) {
                meta.insert("next_id", next_id).at(&ix)?;
            }
            outcomes
        };
        txn.commit().at(&ix)?;
        for &id in &fx.unlink {
            if let Err(e) = unlink(&self.dir, id) {
                self.fault(e);
            }
        }
        lock(&self.buried).extend(&fx.unlink);
        Ok(outcomes)
    }
}

/// The index's tables within one write transaction, and what the batch did so far.
struct Tables<'t, 'f> {
    objects: redb::Table<'t, &'static [u8], &'static [u8]>,
    slots: redb::Table<'t, u64, &'static [u8]>,
    graves: redb::Table<'t, u64, ()>,
    /// Bytes held once the batch is committed.
    held: i128,
    fx: &'f mut Effects,
    ix: &'f IndexAt<'f>,
}

impl Tables<'_, '_> {
    fn apply(&mut self, change: &Change) -> Result<Done, DiskError> {
        match change {
            Change::Insert {
                key,
                record,
                weight,
            } => self.insert(key, record, *weight),
            Change::Head { key, id, head } => self.update_head(key, *id, head),
            Change::Remove { url } => {
                let variants = self.variants(url.as_bytes())?;
                for (key, id) in &variants {
                    self.remove(key, *id)?;
                }
                Ok(Done::Removed(variants.len() as u64))
            }
            Change::Drop { key, id } => {
                let found = self.objects.get(key.as_slice()).at(self.ix)?;
                // An unreadable record is dropped whatever its id.
                let matches =
                    found.is_some_and(|v| Record::decode(v.value()).map_or(true, |r| r.id == *id));
                if matches {
                    self.remove(key, *id)?;
                }
                Ok(Done::Removed(u64::from(matches)))
            }
            Change::Evict => Ok(Done::Evicted),
        }
    }

    /// The keys and object ids of a URL's variants, oldest first.
    fn variants(&self, url: &[u8]) -> Result<Vec<(Vec<u8>, u64)>, DiskError> {
        let (low, high) = format::url_range(url);
        let mut found = Vec::new();
        for item in self
            .objects
            .range(low.as_slice()..high.as_slice())
            .at(self.ix)?
        {
            let (key, value) = item.at(self.ix)?;
            let id = Record::decode(value.value()).map_or(u64::MAX, |r| r.id);
            found.push((key.value().to_vec(), id));
        }
        found.sort_by_key(|&(_, id)| id);
        Ok(found)
    }

    /// A new object, replacing the variant it stands for (all, for one without Vary) and
    /// the oldest beyond [`MAX_VARIANTS`].
    fn insert(&mut self, key: &[u8], record: &Record, weight: u64) -> Result<Done, DiskError> {
        let variants = self.variants(format::key_url(key))?;
        let extra = (variants.len() + 1).saturating_sub(MAX_VARIANTS);
        for (at, (k, id)) in variants.iter().enumerate() {
            if record.head.vary.is_none() || k == key || at < extra {
                self.remove(k, *id)?;
            }
        }
        self.objects
            .insert(key, record.encode().as_slice())
            .at(self.ix)?;
        self.put_slot(record.id, weight, key)?;
        self.held += weight as i128;
        self.fx.added.push((record.id, weight));
        self.fx.fresh.extend(format::fresh_until(key, record));
        Ok(Done::Inserted)
    }

    fn update_head(&mut self, key: &[u8], id: u64, head: &ObjectHead) -> Result<Done, DiskError> {
        let found = self.objects.get(key).at(self.ix)?;
        let record = found.and_then(|v| Record::decode(v.value()).ok());
        let Some(mut record) = record.filter(|r| r.id == id) else {
            return Ok(Done::Updated(false));
        };
        record.head = head.clone();
        let encoded = record.encode();
        let weight = format::file_len(record.body_len) + encoded.len() as u64;
        self.objects.insert(key, encoded.as_slice()).at(self.ix)?;
        self.put_slot(id, weight, key)?;
        self.fx.reweighed.push((id, weight));
        self.fx.fresh.extend(format::fresh_until(key, &record));
        Ok(Done::Updated(true))
    }

    fn put_slot(&mut self, id: u64, weight: u64, key: &[u8]) -> Result<(), DiskError> {
        let slot = Slot {
            weight,
            last_access: format::seconds_now(),
            key,
        };
        self.slots
            .insert(id, slot.encode().as_slice())
            .at(self.ix)?;
        Ok(())
    }

    /// Takes an object out of both tables, its file to be unlinked after the commit.
    fn remove(&mut self, key: &[u8], id: u64) -> Result<(), DiskError> {
        self.objects.remove(key).at(self.ix)?;
        if let Some(slot) = self.slots.remove(id).at(self.ix)? {
            self.held -= Slot::decode(slot.value()).map_or(0, |s| s.weight) as i128;
        }
        self.fx.unlink.push(id);
        self.fx.removed.push(id);
        Ok(())
    }

    /// Evicts by the clock until the bytes held are within `capacity`; the objects this
    /// batch added or removed are passed over.
    fn evict(&mut self, clock: &mut Clock, capacity: u64) -> Result<(), DiskError> {
        let fx = &*self.fx;
        let spare: HashSet<u64> = fx
            .added
            .iter()
            .map(|&(id, _)| id)
            .chain(fx.removed.iter().copied())
            .collect();
        while self.held > capacity as i128 {
            let Some((id, weight)) = clock.victim(|id| spare.contains(&id)) else {
                break;
            };
            if let Some(slot) = self.slots.remove(id).at(self.ix)? {
                let key = Slot::decode(slot.value()).map(|s| s.key.to_vec());
                drop(slot);
                if let Ok(key) = key {
                    self.objects.remove(key.as_slice()).at(self.ix)?;
                }
            }
            self.held -= weight as i128;
            self.fx.unlink.push(id);
            self.fx.evicted.push((id, weight));
        }
        Ok(())
    }

    /// Writes the access times noted since the last commit into the objects' slots.
    fn note_access(&mut self, noted: HashMap<u64, u32>) -> Result<(), DiskError> {
        for (id, when) in noted {
            let Some(slot) = self.slots.get(id).at(self.ix)? else {
                continue;
            };
            let mut bytes = slot.value().to_vec();
            drop(slot);
            bytes[8..12].copy_from_slice(&when.to_le_bytes());
            self.slots.insert(id, bytes.as_slice()).at(self.ix)?;
        }
        Ok(())
    }
}

impl Drop for Inner {
    /// Writes the access times noted since the last commit, so that a clean restart keeps
    /// the order of eviction.
    fn drop(&mut self) {
        if self.clock().has_noted() {
            self.commit(vec![(0, Change::Evict)]);
        }
    }
}

impl Inner {
    /// Whether the index still holds object `id` under `key`.
    pub fn holds(&self, key: &[u8], id: u64) -> Result<bool, DiskError> {
        let path = self.index_path();
        let ix = IndexAt {
            op: DiskOp::ReadIndex,
            path: &path,
        };
        let found = (|| {
            let db = self.db()?;
            let txn = db.begin_read().at(&ix)?;
            let objects = txn.open_table(OBJECTS).at(&ix)?;
            let record = objects.get(key).at(&ix)?;
            Ok(record.is_some_and(|v| Record::decode(v.value()).is_ok_and(|r| r.id == id)))
        })();
        found.map_err(|e| self.failed(e))
    }
}
