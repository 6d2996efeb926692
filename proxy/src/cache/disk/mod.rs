//! The disk tier: responses kept on disk, bounded in bytes, surviving restarts and crashes.
//!
//! Layout of the cache directory (format [`FORMAT_VERSION`]):
//! - `index.redb`: the index (redb, crash-safe): per URL and Vary variant, the object's
//!   stored head (status, fields, times, Vary values), body length and checksum; per object
//!   its weight and last access, loaded at open to order eviction; the ids of removed
//!   objects whose files may remain (graves); the format version.
//! - `objects/XX/ID`: one file per object, as nginx keeps them: written whole into `tmp/`,
//!   synced, then committed to the index and moved here (see [`index`] for the order).
//! - `tmp/`: objects being written; at open, those the index knows are moved into place
//!   and the rest (torn by a crash) removed.
//!
//! Opening reads the index, never the objects: no scan of the data. Bodies stream in and
//! out in 64 KiB chunks, each checked against its own checksum before it is handed out.
//! All calls block on the file system: the request path runs them on blocking threads.

mod clock;
mod error;
mod format;
mod index;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use redb::{Database, ReadableTable, ReadableTableMetadata};

use crate::cache::policy::{self, StoredTimes};
use crate::cache::store::Stored;
use clock::Clock;
use error::{InIndex, IndexAt};
use format::{Record, Slot};
use index::{Change, Done, Inner, GRAVES, META, OBJECTS, SLOTS};

pub use error::{Corruption, DiskError, DiskOp, Fault};
pub use format::FORMAT_VERSION;
pub use reader::DiskReader;
pub use writer::DiskWriter;

/// What is stored of a response besides its body: what [`Stored::new`] takes.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub times: StoredTimes,
    /// The request's values of the fields named by Vary, when the response has Vary.
    pub vary: Option<Vec<(HeaderName, Option<String>)>>,
}

/// An object found on disk: its head, and what reading its body needs.
#[derive(Debug, Clone)]
pub struct DiskEntry {
    key: Vec<u8>,
    record: Record,
}

impl DiskEntry {
    pub fn head(&self) -> &ObjectHead {
        &self.record.head
    }

    pub fn body_len(&self) -> u64 {
        self.record.body_len
    }

    /// A response for the memory store (promotion), with the body read whole; `targets`
    /// is the cache's target list (RFC 9213).
    pub fn into_stored(self, body: Bytes, targets: &[HeaderName]) -> Stored {
        let head = self.record.head;
        Stored::new(
            head.status,
            head.headers,
            body,
            head.times,
            head.vary,
            targets,
        )
    }
}

/// One object (a Vary variant) as `canopy cache list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedObject {
    pub url: String,
    pub body_len: u64,
    pub head: ObjectHead,
}

/// Counters and state, for stats, `/metrics` and the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub objects: u64,
    pub bytes: u64,
    pub capacity: u64,
    pub hits: u64,
    pub misses: u64,
    /// Bodies opened for reading.
    pub reads: u64,
    /// Objects committed.
    pub writes: u64,
    pub evictions: u64,
    pub faults_full: u64,
    pub faults_io: u64,
    pub faults_corrupt: u64,
}

/// The disk store. Cheap to clone: the handles share one index.
#[derive(Clone)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

impl DiskStore {
    /// Opens the store in `dir` (created if missing), bounded to `capacity` bytes. A store
    /// of another format version, or an index redb cannot read, is discarded with a log
    /// line. Objects are not read, only the index.
    pub fn open(dir: &Path, capacity: u64) -> Result<DiskStore, DiskError> {
        let started = Instant::now();
        let db = open_index(dir)?;
        recover_temp_files(dir, &db)?;
        clear_graves(dir, &db)?;
        let (clock, objects, bytes, next_id) = load_slots(dir, &db)?;
        let inner = Inner::new(dir.to_path_buf(), capacity, db, clock, next_id);
        inner.counters.objects.store(objects, Relaxed);
        inner.counters.bytes.store(bytes, Relaxed);
        let store = DiskStore {
            inner: Arc::new(inner),
        };
        if bytes > capacity {
            store.inner.submit(Change::Evict)?;
        }
        tracing::info!(
            "disk cache {}: {objects} objects, {bytes} of {capacity} bytes, opened in {:?}",
            dir.display(),
            started.elapsed()
        );
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The object stored for `url` whose Vary values match `request`. An error is a fault
    /// (counted and logged): the caller takes it as a miss.
    pub fn lookup(&self, url: &str, request: &HeaderMap) -> Result<Option<DiskEntry>, DiskError> {
        let inner = &self.inner;
        let found = self.find(url, request).map_err(|e| inner.failed(e))?;
        let counter = match &found {
            Some(entry) => {
                inner.clock().touch(entry.record.id, format::seconds_now());
                &inner.counters.hits
            }
            None => &inner.counters.misses,
        };
        counter.fetch_add(1, Relaxed);
        Ok(found)
    }

    fn find(&self, url: &str, request: &HeaderMap) -> Result<Option<DiskEntry>, DiskError> {
        let mut found = None;
        self.scan(url, |key, record| {
            let matches = match &record.head.vary {
                None => true,
                Some(values) => policy::vary_matches(values, request),
            };
            if matches {
                let key = key.to_vec();
                found = Some(DiskEntry { key, record });
            }
            found.is_none()
        })?;
        Ok(found)
    }

    /// Every variant stored for `url`, for a request none of them answers: a miss asks
    /// upstream with all their ETags at once (RFC 9111 §4.1). The index is read, not the
    /// objects. An error is a fault (counted and logged).
    pub fn variants(&self, url: &str) -> Result<Vec<DiskEntry>, DiskError> {
        let mut variants = Vec::new();
        let scanned = self.scan(url, |key, record| {
            let key = key.to_vec();
            variants.push(DiskEntry { key, record });
            true
        });
        scanned.map_err(|e| self.inner.failed(e))?;
        Ok(variants)
    }

    /// The records of `url`'s variants, in index order, while `each` says go on. A record
    /// that cannot be read is dropped and ends the scan as corrupt.
    fn scan(
        &self,
        url: &str,
        mut each: impl FnMut(&[u8], Record) -> bool,
    ) -> Result<(), DiskError> {
        let path = self.inner.index_path();
        let ix = IndexAt {
            op: DiskOp::ReadIndex,
            path: &path,
        };
        let db = self.inner.db()?;
        let txn = db.begin_read().at(&ix)?;
        let objects = txn.open_table(OBJECTS).at(&ix)?;
        let (low, high) = format::url_range(url.as_bytes());
        for item in objects.range(low.as_slice()..high.as_slice()).at(&ix)? {
            let (key, value) = item.at(&ix)?;
            let record = match Record::decode(value.value()) {
                Ok(record) => record,
                Err(what) => {
                    let key = key.value().to_vec();
                    self.drop_faulty(key, u64::MAX);
                    return Err(DiskError::Corrupt {
                        path: path.clone(),
                        what,
                    });
                }
            };
            if !each(key.value(), record) {
                break;
            }
        }
        Ok(())
    }

    /// Opens `entry`'s body. A small body is read and checked whole here, so a fault shows
    /// before any byte is served; a larger one is checked chunk by chunk as it is read (see
    /// [`DiskReader`]). On a fault the entry is dropped and the error returned (counted).
    pub fn read(&self, entry: &DiskEntry) -> Result<DiskReader, DiskError> {
        DiskReader::open(self.inner.clone(), entry.key.clone(), &entry.record)
    }

    /// A writer for a new object; it becomes visible when [`DiskWriter::commit`] returns,
    /// replacing the variant it stands for (all of them, for a response without Vary).
    pub fn writer(&self, url: &str, head: ObjectHead) -> Result<DiskWriter, DiskError> {
        DiskWriter::create(self.inner.clone(), url, head).map_err(|e| self.inner.fault(e))
    }

    /// Removes every variant of `url` (PURGE, invalidation); gives how many there were.
    pub fn remove(&self, url: &str) -> Result<u64, DiskError> {
        let change = Change::Remove {
            url: url.to_owned(),
        };
        match self.inner.submit(change)? {
            Done::Removed(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Replaces `entry`'s stored head (a 304's merge), leaving its body as it is. `false`
    /// when the object is no longer there, or was replaced since it was looked up.
    pub fn update_head(&self, entry: &DiskEntry, head: ObjectHead) -> Result<bool, DiskError> {
        let change = Change::Head {
            key: entry.key.clone(),
            id: entry.record.id,
            head,
        };
        Ok(self.inner.submit(change)? == Done::Updated(true))
    }

    /// Replaces the stored head of the variant of `url` that `request` selects, as
    /// [`DiskStore::update_head`] does, without counting a hit or a miss.
    pub fn update_head_of(
        &self,
        url: &str,
        request: &HeaderMap,
        head: ObjectHead,
    ) -> Result<bool, DiskError> {
        match self.find(url, request).map_err(|e| self.inner.failed(e))? {
            Some(entry) => self.update_head(&entry, head),
            None => Ok(false),
        }
    }

    /// How long the object of `url` without Vary stays fresh, if one is held; from memory,
    /// without touching the disk (for ICP). Known for the objects written since the open,
    /// and for those found at open once [`DiskStore::learn_freshness`] has run.
    pub fn fresh_for(&self, url: &str) -> Option<std::time::Duration> {
        let until = self
            .inner
            .clock()
            .fresh_until(format::url_hash(url.as_bytes()))?;
        // Fresh for no time at all is not fresh.
        let left = until
            .checked_sub(format::seconds_now())
            .filter(|&left| left > 0)?;
        Some(std::time::Duration::from_secs(left.into()))
    }

    /// Reads the records of the objects found at open for [`DiskStore::fresh_for`]: the
    /// index, not the objects. Apart from [`DiskStore::open`] so that the start need not
    /// wait for it.
    pub fn learn_freshness(&self) -> Result<(), DiskError> {
        let inner = &self.inner;
        let path = inner.index_path();
        let ix = IndexAt {
            op: DiskOp::ReadIndex,
            path: &path,
        };
        let read = || -> Result<(), DiskError> {
            let db = inner.db()?;
            let txn = db.begin_read().at(&ix)?;
            let objects = txn.open_table(OBJECTS).at(&ix)?;
            for item in objects.iter().at(&ix)? {
                let (key, value) = item.at(&ix)?;
                let Ok(record) = Record::decode(value.value()) else {
                    continue;
                };
                if let Some((id, url, until)) = format::fresh_until(key.value(), &record) {
                    // Only if still held: one removed or replaced meanwhile is left out.
                    inner.clock().set_fresh(id, url, until);
                }
            }
            Ok(())
        };
        read().map_err(|e| inner.failed(e))
    }

    /// A new bound in bytes: a smaller one evicts down to it at once.
    pub fn resize(&self, capacity: u64) -> Result<(), DiskError> {
        self.inner.capacity.store(capacity, Relaxed);
        self.inner.submit(Change::Evict).map(drop)
    }

    /// The objects (each Vary variant) of the first `limit` URLs that start with `prefix`,
    /// in URL order.
    pub fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ListedObject>, DiskError> {
        self.list_in_index(prefix, limit)
            .map_err(|e| self.inner.failed(e))
    }

    fn list_in_index(&self, prefix: &str, limit: usize) -> Result<Vec<ListedObject>, DiskError> {
        let path = self.inner.index_path();
        let ix = IndexAt {
            op: DiskOp::ReadIndex,
            path: &path,
        };
        let db = self.inner.db()?;
        let txn = db.begin_read().at(&ix)?;
        let objects = txn.open_table(OBJECTS).at(&ix)?;
        let (mut listed, mut urls, mut last_url) = (Vec::new(), 0, Vec::new());
        for item in objects.range(prefix.as_bytes()..).at(&ix)? {
            let (key, value) = item.at(&ix)?;
            let url = format::key_url(key.value());
            if !url.starts_with(prefix.as_bytes()) {
                break;
            }
            if url != last_url.as_slice() {
                if urls == limit {
                    break;
                }
                urls += 1;
                last_url = url.to_vec();
            }
            if let Ok(record) = Record::decode(value.value()) {
                listed.push(ListedObject {
                    url: String::from_utf8_lossy(url).into_owned(),
                    body_len: record.body_len,
                    head: record.head,
                });
            }
        }
        Ok(listed)
    }

    /// The newest fault: when, and what failed.
    pub fn last_fault(&self) -> Option<(SystemTime, String)> {
        let last = self.inner.counters.last_fault.lock();
        last.unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Calls `each` with the URL and head of every object in the index, in URL order; a
    /// record that cannot be read is passed over. Read-only; blocks on the index.
    pub fn each_object(&self, mut each: impl FnMut(&[u8], &ObjectHead)) -> Result<(), DiskError> {
        let path = self.inner.index_path();
        let ix = IndexAt {
            op: DiskOp::ReadIndex,
            path: &path,
        };
        let db = self.inner.db().map_err(|e| self.inner.failed(e))?;
        let mut walk = || -> Result<(), DiskError> {
            let txn = db.begin_read().at(&ix)?;
            for item in txn.open_table(OBJECTS).at(&ix)?.iter().at(&ix)? {
                let (key, value) = item.at(&ix)?;
                if let Ok(record) = Record::decode(value.value()) {
                    each(format::key_url(key.value()), &record.head);
                }
            }
            Ok(())
        };
        walk().map_err(|e| self.inner.failed(e))
    }

    pub fn stats(&self) -> DiskStats {
        let c = &self.inner.counters;
        DiskStats {
            objects: c.objects.load(Relaxed),
            bytes: c.bytes.load(Relaxed),
            capacity: self.inner.capacity.load(Relaxed),
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            reads: c.reads.load(Relaxed),
            writes: c.writes.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            faults_full: c.full.load(Relaxed),
            faults_io: c.io.load(Relaxed),
            faults_corrupt: c.corrupt.load(Relaxed),
        }
    }

    fn drop_faulty(&self, key: Vec<u8>, id: u64) {
        if let Err(e) = self.inner.submit(Change::Drop { key, id }) {
            tracing::warn!("{e}");
        }
    }
}

/// Opens (or creates) the index and the directories, discarding a store this Canopy
/// cannot read.
fn open_index(dir: &Path) -> Result<Database, DiskError> {
    let create_dirs = || -> Result<(), DiskError> {
        for path in [format::temp_dir(dir), format::objects_dir(dir)] {
            std::fs::create_dir_all(&path)
                .map_err(|e| DiskError::io(DiskOp::CreateDir, path, e))?;
        }
        for sub in 0..=0xff_u64 {
            let path = format::object_path(dir, sub);
            let parent = path.parent().unwrap_or(dir);
            std::fs::create_dir_all(parent)
                .map_err(|e| DiskError::io(DiskOp::CreateDir, parent, e))?;
        }
        Ok(())
    };
    create_dirs()?;
    let path = format::index_path(dir);
    let (open, read, write) = (
        IndexAt {
            op: DiskOp::OpenIndex,
            path: &path,
        },
        IndexAt {
            op: DiskOp::ReadIndex,
            path: &path,
        },
        IndexAt {
            op: DiskOp::WriteIndex,
            path: &path,
        },
    );
    let db = match Database::create(&path) {
        Ok(db) => db,
        Err(e) if unreadable(&e) => {
            tracing::warn!(
                "disk cache {}: index unreadable ({e}): its objects are discarded",
                dir.display()
            );
            discard(dir)?;
            create_dirs()?;
            Database::create(&path).at(&open)?
        }
        Err(e) => return Err(DiskError::index(DiskOp::OpenIndex, &path, e)),
    };
    let found = read_format(&db, &read)?;
    let db = match found {
        Some(FORMAT_VERSION) => db,
        None if is_empty(&db, &read)? => db,
        found => {
            tracing::warn!(
                "disk cache {}: format {}, this Canopy reads {FORMAT_VERSION}: its objects are discarded",
                dir.display(),
                found.map_or("unknown".to_owned(), |v| v.to_string()),
            );
            drop(db);
            discard(dir)?;
            create_dirs()?;
            Database::create(&path).at(&open)?
        }
    };
    let mut txn = db.begin_write().at(&write)?;
    txn.set_quick_repair(true);
    {
        txn.open_table(OBJECTS).at(&write)?;
        txn.open_table(SLOTS).at(&write)?;
        txn.open_table(GRAVES).at(&write)?;
        let mut meta = txn.open_table(META).at(&write)?;
        meta.insert("format", FORMAT_VERSION).at(&write)?;
    }
    txn.commit().at(&write)?;
    Ok(db)
}

/// Whether redb cannot read the index (another format, or not an index at all), as
/// opposed to failing to reach it.
fn unreadable(error: &redb::DatabaseError) -> bool {
    use redb::{DatabaseError, StorageError};
    match error {
        DatabaseError::UpgradeRequired(_) | DatabaseError::Storage(StorageError::Corrupted(_)) => {
            true
        }
        DatabaseError::Storage(StorageError::Io(e)) => e.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

fn read_format(db: &Database, ix: &IndexAt<'_>) -> Result<Option<u64>, DiskError> {
    let txn = db.begin_read().at(ix)?;
    match txn.open_table(META) {
        Ok(meta) => Ok(meta.get("format").at(ix)?.map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e).at(ix),
    }
}

/// Whether the index holds no object (a new store, not yet stamped with its format).
fn is_empty(db: &Database, ix: &IndexAt<'_>) -> Result<bool, DiskError> {
    let txn = db.begin_read().at(ix)?;
    match txn.open_table(SLOTS) {
        Ok(slots) => slots.is_empty().at(ix),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(true),
        Err(e) => Err(e).at(ix),
    }
}

/// Removes the store's own files, and nothing else of the directory.
fn discard(dir: &Path) -> Result<(), DiskError> {
    let gone_ok = |r: std::io::Result<()>, path: PathBuf| match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(DiskError::io(DiskOp::Remove, path, e))
        }
        _ => Ok(()),
    };
    let index = format::index_path(dir);
    gone_ok(std::fs::remove_file(&index), index)?;
    for path in [format::objects_dir(dir), format::temp_dir(dir)] {
        gone_ok(std::fs::remove_dir_all(&path), path)?;
    }
    Ok(())
}

/// Finishes or removes what a crash left in `tmp/`: a file the index knows was complete
/// and synced before its record was committed, and only its move was lost; any other is a
/// torn write.
fn recover_temp_files(dir: &Path, db: &Database) -> Result<(), DiskError> {
    let temp = format::temp_dir(dir);
    let path = format::index_path(dir);
    let ix = IndexAt {
        op: DiskOp::ReadIndex,
        path: &path,
    };
    let listing = std::fs::read_dir(&temp).map_err(|e| DiskError::io(DiskOp::ListDir, &temp, e))?;
    let txn = db.begin_read().at(&ix)?;
    let slots = txn.open_table(SLOTS).at(&ix)?;
    for entry in listing {
        let entry = entry.map_err(|e| DiskError::io(DiskOp::ListDir, &temp, e))?;
        let path = entry.path();
        let id = entry.file_name().to_str().and_then(format::temp_id);
        let known = match id {
            Some(id) => slots.get(id).at(&ix)?.is_some(),
            None => false,
        };
        match id.filter(|_| known) {
            Some(id) => {
                let to = format::object_path(dir, id);
                std::fs::rename(&path, &to).map_err(|e| DiskError::io(DiskOp::Rename, &path, e))?;
            }
            None => {
                tracing::info!(
                    "disk cache: removing {}, a write a crash cut short",
                    path.display()
                );
                std::fs::remove_file(&path).map_err(|e| DiskError::io(DiskOp::Remove, &path, e))?;
            }
        }
    }
    Ok(())
}

/// Unlinks the files of objects removed just before a crash, and clears their graves.
fn clear_graves(dir: &Path, db: &Database) -> Result<(), DiskError> {
    let path = format::index_path(dir);
    let ix = IndexAt {
        op: DiskOp::WriteIndex,
        path: &path,
    };
    let mut txn = db.begin_write().at(&ix)?;
    txn.set_quick_repair(true);
    {
        let mut graves = txn.open_table(GRAVES).at(&ix)?;
        let mut ids = Vec::new();
        for item in graves.iter().at(&ix)? {
            ids.push(item.at(&ix)?.0.value());
        }
        for id in ids {
            index::unlink(dir, id)?;
            graves.remove(id).at(&ix)?;
        }
    }
    txn.commit().at(&ix)
}

/// The eviction order from the index, least recently used first; objects and bytes held;
/// the next object id.
fn load_slots(dir: &Path, db: &Database) -> Result<(Clock, u64, u64, u64), DiskError> {
    let path = format::index_path(dir);
    let ix = IndexAt {
        op: DiskOp::ReadIndex,
        path: &path,
    };
    let txn = db.begin_read().at(&ix)?;
    let slots = txn.open_table(SLOTS).at(&ix)?;
    let mut order = Vec::with_capacity(slots.len().at(&ix)? as usize);
    for item in slots.iter().at(&ix)? {
        let (id, slot) = item.at(&ix)?;
        let id = id.value();
        let slot = Slot::decode(slot.value()).map_err(|what| DiskError::Corrupt {
            path: path.clone(),
            what,
        })?;
        order.push((slot.last_access, id, slot.weight));
    }
    order.sort_unstable();
    let meta = txn.open_table(META).at(&ix)?;
    let stored_next = meta.get("next_id").at(&ix)?.map_or(0, |v| v.value());
    let mut clock = Clock::with_capacity(order.len());
    let (mut bytes, mut next_id) = (0, stored_next);
    for &(_, id, weight) in &order {
        clock.insert(id, weight, false);
        bytes += weight;
        next_id = next_id.max(id + 1);
    }
    Ok((clock, order.len() as u64, bytes, next_id))
}
