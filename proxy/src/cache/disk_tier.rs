//! The disk tier as the request path uses it: each call of the [`DiskStore`] on one of the
//! tier's own threads ([`pool`]), never on the async workers, and only while it touches the
//! disk: a body streamed to a client takes a thread for each chunk it reads, an object
//! being written for each batch of chunks that has arrived, so a slow client or a slow
//! origin holds none. A lookup or a new body that finds the queue full is skipped (a miss);
//! a new object beyond [`MAX_WRITES`] under way is not written, and counted as dropped; a
//! removal waits its turn, since it must not be lost.
//!
//! A fault of the store (full, unreadable, read-only, corrupt) is counted and logged by the
//! store; here it only turns into a miss, or an object not kept on disk.

mod pool;
mod promotion;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use foldhash::HashMap;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::cache::disk::{
    DiskEntry, DiskError, DiskReader, DiskStats, DiskStore, DiskWriter, ListedObject, ObjectHead,
};
use crate::http::body::{BoxError, ProxyBody};
use pool::{Pool, Skipped};
use promotion::Promotion;

pub use pool::THREADS;
pub use promotion::WINDOW_SECONDS as PROMOTION_WINDOW_SECONDS;

/// Objects being written at once (their chunks waiting for a thread, or on one). Enough
/// for every fill of a busy proxy while the disk keeps up; when it does not, a new object
/// is dropped rather than its client kept waiting.
const MAX_WRITES: usize = 512;

/// Chunks (64 KiB) a write queues ahead of the disk: the fill waits beyond that.
const QUEUED_CHUNKS: usize = 4;

/// The share of the file system's free space the disk cache takes at most, whatever
/// `cache_dir_size` says: a cache must not fill the disk other services share.
const FREE_SPACE_SHARE: u64 = 10;

/// What the disk holds for a request.
pub enum DiskFound {
    /// The variant the request selects.
    Variant(DiskEntry),
    /// None selected: the URL's variants, if it has any (RFC 9111 §4.1), whose ETags a miss
    /// validates with.
    Others(Vec<DiskEntry>),
}

/// Whether the disk tier is in use.
pub enum DiskState {
    Open(DiskTier),
    /// On, but it could not be opened at start: why.
    Closed(String),
    Off,
}

impl DiskState {
    pub fn as_ref(&self) -> Option<&DiskTier> {
        match self {
            DiskState::Open(tier) => Some(tier),
            DiskState::Closed(_) | DiskState::Off => None,
        }
    }
}

pub struct DiskTier {
    store: DiskStore,
    pool: Pool,
    /// One permit per object being written.
    write_places: Arc<Semaphore>,
    writes: Arc<Writes>,
    promotion: Promotion,
    /// Requests answered from disk (the rest of the hits came from memory).
    served: AtomicU64,
    /// Calls skipped because the queue was full.
    skipped: AtomicU64,
    /// New objects not written because [`MAX_WRITES`] were under way.
    writes_dropped: Arc<AtomicU64>,
}

/// What `stats` shows of the disk tier.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskTierStats {
    pub store: DiskStats,
    pub served: u64,
    pub skipped: u64,
    pub writes_dropped: u64,
}

impl DiskTier {
    /// Opens the store in `dir`, bounded by `size` and by a share of the free space there,
    /// and starts its threads. Blocks on the file system.
    pub fn open(dir: &Path, size: u64) -> Result<DiskTier, DiskError> {
        // For the free space; a directory that cannot be made is the store's error to say.
        let _ = std::fs::create_dir_all(dir);
        let store = DiskStore::open(dir, bounded(dir, size, 0))?;
        let pool = Pool::start().map_err(|e| DiskError::Threads {
            threads: THREADS,
            source: Arc::new(e),
        })?;
        let learning = store.clone();
        // A fault is counted and logged by the store: ICP then answers from memory only.
        pool.try_spawn(move || {
            let _ = learning.learn_freshness();
        });
        Ok(DiskTier {
            store,
            pool,
            write_places: Arc::new(Semaphore::new(MAX_WRITES)),
            writes: Arc::default(),
            promotion: Promotion::default(),
            served: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            writes_dropped: Arc::default(),
        })
    }

    /// A new `cache_dir_size` (a reload): bounded as at the open, the bytes the cache holds
    /// counted as free; a smaller bound evicts down to it before this returns.
    pub async fn resize(&self, size: u64) -> Result<(), DiskError> {
        let store = self.store.clone();
        let resized = self.pool.run(move || {
            let held = store.stats().bytes;
            store.resize(bounded(store.dir(), size, held))
        });
        resized.await.unwrap_or(Ok(()))
    }

    /// Runs `call` on a disk thread unless the queue is full (counted as skipped).
    async fn try_run<T, F>(&self, call: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&DiskStore) -> T + Send + 'static,
    {
        let store = self.store.clone();
        match self.pool.try_run(move || call(&store)).await {
            Ok(answer) => Some(answer),
            Err(Skipped::Full) => {
                self.skipped.fetch_add(1, Relaxed);
                None
            }
            Err(Skipped::Closed) => None,
        }
    }

    /// The object on disk for `url` whose Vary values match `request`, or else the URL's
    /// other variants, read on the same disk thread: only a miss pays for them.
    pub async fn lookup(&self, url: &str, request: &HeaderMap) -> DiskFound {
        let (url, request) = (url.to_owned(), request.clone());
        let found = self.try_run(move |s| match s.lookup(&url, &request) {
            Ok(Some(entry)) => DiskFound::Variant(entry),
            Ok(None) => DiskFound::Others(s.variants(&url).unwrap_or_default()),
            Err(_) => DiskFound::Others(Vec::new()),
        });
        found.await.unwrap_or(DiskFound::Others(Vec::new()))
    }

    /// How long the object of `url` (without Vary) on disk stays fresh, if one is there;
    /// from memory, for ICP.
    pub fn fresh_for(&self, url: &str) -> Option<std::time::Duration> {
        self.store.fresh_for(url)
    }

    /// Whether this disk hit of `url` is the one that promotes it to memory (see
    /// [`promotion`]).
    pub fn promotes(&self, url: &str) -> bool {
        self.promotion.hit(url)
    }

    /// `entry`'s whole body, checked; `None` on a fault.
    pub async fn read_whole(&self, entry: DiskEntry) -> Option<Bytes> {
        let read = self
            .try_run(move |s| s.read(&entry).and_then(|r| r.read_all()))
            .await?;
        read.ok()
    }

    /// `entry`'s body as a client's response body, read a chunk at a time as the client
    /// takes it, each on a disk thread; `None` when it cannot be opened (a fault, removed
    /// meanwhile, or the queue full). A fault found part way ends the body with an error,
    /// cutting the response off.
    pub async fn stream(&self, entry: DiskEntry) -> Option<ProxyBody> {
        let reader = self.try_run(move |s| s.read(&entry)).await?.ok()?;
        self.served.fetch_add(1, Relaxed);
        let pool = self.pool.clone();
        let chunks = futures_util::stream::unfold(Some(reader), move |reader| {
            let pool = pool.clone();
            async move {
                let (reader, next) = next_chunk(&pool, reader?).await?;
                match next {
                    Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), Some(reader))),
                    Ok(None) => None,
                    Err(e) => Some((Err(BoxError::from(e)), None)),
                }
            }
        });
        Some(StreamBody::new(chunks).boxed_unsync())
    }

    /// Counts a request answered from a body read whole from disk.
    pub fn served_whole(&self) {
        self.served.fetch_add(1, Relaxed);
    }

    /// A new object written as its body arrives: `None` when [`MAX_WRITES`] are under way
    /// (counted as dropped). Visible once [`DiskFill::commit`] returns; dropped before, or
    /// failed, it leaves nothing behind.
    pub fn fill(&self, url: &str, head: ObjectHead) -> Option<DiskFill> {
        let Ok(place) = self.write_places.clone().try_acquire_owned() else {
            self.writes_dropped.fetch_add(1, Relaxed);
            return None;
        };
        let (tx, rx) = mpsc::channel::<Written>(QUEUED_CHUNKS);
        let (done_tx, done) = oneshot::channel();
        let writing = Writing {
            pool: self.pool.clone(),
            store: self.store.clone(),
            write: Writes::begin(&self.writes, url),
            _place: place,
        };
        tokio::spawn(writing.run(head, rx, done_tx));
        Some(DiskFill { tx, done })
    }

    /// Removes every variant of `url`; whether there was any. Waits for a thread rather
    /// than skipping: a removal lost would let a purged object be served again.
    pub async fn remove(&self, url: &str) -> bool {
        let (url, writes, store) = (url.to_owned(), self.writes.clone(), self.store.clone());
        let removed = self
            .pool
            .run(move || {
                writes.stop(&url);
                store.remove(&url)
            })
            .await;
        matches!(removed, Some(Ok(n)) if n > 0)
    }

    /// Replaces the stored head of the variant of `url` that `request` selects (a 304's
    /// merge), in the background.
    pub fn update_head(&self, url: &str, request: &HeaderMap, head: ObjectHead) {
        let store = self.store.clone();
        let (url, request) = (url.to_owned(), request.clone());
        self.spawn(move || {
            let _ = store.update_head_of(&url, &request, head);
        });
    }

    /// Replaces `entry`'s stored head, in the background.
    pub fn update_entry_head(&self, entry: DiskEntry, head: ObjectHead) {
        let store = self.store.clone();
        self.spawn(move || {
            let _ = store.update_head(&entry, head);
        });
    }

    /// The objects of the first `limit` URLs on disk that start with `prefix`, in URL
    /// order. Waits for a thread, as a removal does: an administrator asked for it.
    pub async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ListedObject>, DiskError> {
        let (store, prefix) = (self.store.clone(), prefix.to_owned());
        let listed = self.pool.run(move || store.list(&prefix, limit)).await;
        listed.unwrap_or_else(|| Ok(Vec::new()))
    }

    /// The newest fault of the store: when, and what failed.
    pub fn last_fault(&self) -> Option<(std::time::SystemTime, String)> {
        self.store.last_fault()
    }

    /// The store's [`DiskStore::each_object`]: every object's URL and head. Blocks.
    pub fn each_object(&self, each: impl FnMut(&[u8], &ObjectHead)) -> Result<(), DiskError> {
        self.store.each_object(each)
    }

    fn spawn(&self, call: impl FnOnce() + Send + 'static) {
        if !self.pool.try_spawn(call) {
            self.skipped.fetch_add(1, Relaxed);
        }
    }

    pub fn stats(&self) -> DiskTierStats {
        DiskTierStats {
            store: self.store.stats(),
            served: self.served.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            writes_dropped: self.writes_dropped.load(Relaxed),
        }
    }
}

/// The next chunk of a body being streamed: one already read costs no thread.
async fn next_chunk(
    pool: &Pool,
    mut reader: DiskReader,
) -> Option<(DiskReader, Result<Option<Bytes>, DiskError>)> {
    if let Some(chunk) = reader.take_ready() {
        return Some((reader, Ok(Some(chunk))));
    }
    pool.run(move || {
        let next = reader.next_chunk();
        (reader, next)
    })
    .await
}

/// One object on its way to disk: the chunks the fill hands over, written a batch at a
/// time on a disk thread.
struct Writing {
    pool: Pool,
    store: DiskStore,
    write: Write,
    _place: OwnedSemaphorePermit,
}

/// What a batch of chunks left to do.
enum Batch {
    More(Box<DiskWriter>, Write),
    Done(bool),
}

impl Writing {
    async fn run(
        self,
        head: ObjectHead,
        mut rx: mpsc::Receiver<Written>,
        done: oneshot::Sender<bool>,
    ) {
        let Writing {
            pool,
            store,
            write,
            _place,
        } = self;
        let url = write.url.clone();
        let created = pool.run(move || store.writer(&url, head)).await;
        let (mut writer, mut write) = match created {
            Some(Ok(writer)) => (Box::new(writer), write),
            _ => return,
        };
        loop {
            let Some(first) = rx.recv().await else {
                // The fill gave the object up: its file is removed on a disk thread.
                pool.run(move || drop(writer)).await;
                return;
            };
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let written = pool.run(move || write_batch(writer, write, batch)).await;
            match written {
                Some(Batch::More(w, state)) => (writer, write) = (w, state),
                Some(Batch::Done(committed)) => {
                    let _ = done.send(committed);
                    return;
                }
                None => return,
            }
        }
    }
}

fn write_batch(mut writer: Box<DiskWriter>, write: Write, batch: Vec<Written>) -> Batch {
    for written in batch {
        match written {
            Written::Chunk(chunk) => {
                if writer.write(&chunk).is_err() {
                    return Batch::Done(false);
                }
            }
            Written::End => {
                // A removal since the write began: the object is out of date.
                let committed = write.may_commit() && (*writer).commit().is_ok();
                return Batch::Done(committed);
            }
        }
    }
    Batch::More(writer, write)
}

/// Objects being written, by URL, so that a removal (PURGE, invalidation) can stop those
/// not yet committing and wait for those committing: an object fetched before the removal
/// must not appear on disk after it.
#[derive(Default)]
struct Writes {
    by_url: Mutex<HashMap<String, Vec<Arc<WriteState>>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Writing,
    Committing,
    /// Stopped by a removal, or done.
    Over,
}

struct WriteState {
    phase: Mutex<Phase>,
    changed: Condvar,
}

/// One write under way; ends it (waking a removal waiting for it) when dropped.
struct Write {
    writes: Arc<Writes>,
    url: String,
    state: Arc<WriteState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each change under these locks is one step: a poisoned lock is used as it is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writes {
    fn begin(writes: &Arc<Writes>, url: &str) -> Write {
        let state = Arc::new(WriteState {
            phase: Mutex::new(Phase::Writing),
            changed: Condvar::new(),
        });
        let mut by_url = lock(&writes.by_url);
        by_url
            .entry(url.to_owned())
            .or_default()
            .push(state.clone());
        Write {
            writes: writes.clone(),
            url: url.to_owned(),
            state,
        }
    }

    /// Stops the writes of `url` not yet committing, and waits for those committing.
    fn stop(&self, url: &str) {
        let states = lock(&self.by_url).get(url).cloned().unwrap_or_default();
        for state in states {
            let mut phase = lock(&state.phase);
            while *phase == Phase::Committing {
                phase = state.changed.wait(phase).unwrap_or_else(|e| e.into_inner());
            }
            *phase = Phase::Over;
        }
    }
}

impl Write {
    /// Whether the object may be committed (no removal stopped it); from now on a removal
    /// waits for the commit.
    fn may_commit(&self) -> bool {
        let mut phase = lock(&self.state.phase);
        let writing = *phase == Phase::Writing;
        if writing {
            *phase = Phase::Committing;
        }
        writing
    }
}

impl Drop for Write {
    fn drop(&mut self) {
        *lock(&self.state.phase) = Phase::Over;
        self.state.changed.notify_all();
        let mut by_url = lock(&self.writes.by_url);
        if let Some(states) = by_url.get_mut(&self.url) {
            states.retain(|s| !Arc::ptr_eq(s, &self.state));
            if states.is_empty() {
                by_url.remove(&self.url);
            }
        }
    }
}

/// `size`, or a tenth of the free space in `dir` (with the `held` bytes the cache could
/// free) when that is less.
fn bounded(dir: &Path, size: u64, held: u64) -> u64 {
    match free_space(dir) {
        Some(free) if free.saturating_add(held) / FREE_SPACE_SHARE < size => {
            let capped = free.saturating_add(held) / FREE_SPACE_SHARE;
            tracing::warn!(
                "disk cache {}: cache_dir_size is {size} bytes, but only {free} bytes are \
                 free there: using {capped}, a tenth of it",
                dir.display()
            );
            capped
        }
        _ => size,
    }
}

/// Free bytes of the file system holding `dir`, for an unprivileged user.
fn free_space(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
}

enum Written {
    Chunk(Bytes),
    End,
}

/// An object on its way to disk, fed by the fill that serves its clients.
pub struct DiskFill {
    tx: mpsc::Sender<Written>,
    done: oneshot::Receiver<bool>,
}

impl DiskFill {
    /// Queues a chunk, waiting while the disk is behind; `false` when the write has failed
    /// (drop this).
    pub async fn write(&self, chunk: Bytes) -> bool {
        self.tx.send(Written::Chunk(chunk)).await.is_ok()
    }

    /// Makes the object durable and visible; whether it is.
    pub async fn commit(self) -> bool {
        if self.tx.send(Written::End).await.is_err() {
            return false;
        }
        self.done.await.unwrap_or(false)
    }
}
