//! The disk tier as the request path uses it: each call of the [`DiskStore`] on a blocking
//! thread, never on the async workers, and at most [`MAX_JOBS`] at once. A lookup, read or
//! write that finds every job taken is skipped (a miss, an object not written) rather than
//! queued behind a slow disk; a removal waits its turn, since it must not be lost.
//!
//! A fault of the store (full, unreadable, read-only, corrupt) is counted and logged by the
//! store; here it only turns into a miss, or an object not kept on disk.

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

use crate::cache::disk::{DiskEntry, DiskError, DiskStats, DiskStore, ListedObject, ObjectHead};
use crate::http::body::{BoxError, ProxyBody};

/// Disk calls under way at once: lookups, whole reads, and each object being written or
/// streamed to a client (which holds its job until the body is done).
const MAX_JOBS: usize = 64;

/// Chunks (64 KiB) a streamed body reads ahead of its client, and a write queues ahead of
/// the disk: the producer waits beyond that.
const QUEUED_CHUNKS: usize = 4;

/// The share of the file system's free space the disk cache takes at most, whatever
/// `cache_dir_size` says: a cache must not fill the disk other services share.
const FREE_SPACE_SHARE: u64 = 10;

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
    jobs: Arc<Semaphore>,
    writes: Arc<Writes>,
    /// Requests answered from disk (the rest of the hits came from memory).
    served: AtomicU64,
    /// Calls skipped because every job was taken.
    skipped: AtomicU64,
}

/// What `stats` shows of the disk tier.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskTierStats {
    pub store: DiskStats,
    pub served: u64,
    pub skipped: u64,
}

impl DiskTier {
    /// Opens the store in `dir`, bounded by `size` and by a share of the free space there.
    /// Blocks on the file system.
    pub fn open(dir: &Path, size: u64) -> Result<DiskTier, DiskError> {
        // For the free space; a directory that cannot be made is the store's error to say.
        let _ = std::fs::create_dir_all(dir);
        let capacity = match free_space(dir) {
            Some(free) if free / FREE_SPACE_SHARE < size => {
                let capped = free / FREE_SPACE_SHARE;
                tracing::warn!(
                    "disk cache {}: cache_dir_size is {size} bytes, but only {free} bytes are \
                     free there: using {capped}, a tenth of it",
                    dir.display()
                );
                capped
            }
            _ => size,
        };
        Ok(DiskTier {
            store: DiskStore::open(dir, capacity)?,
            jobs: Arc::new(Semaphore::new(MAX_JOBS)),
            writes: Arc::default(),
            served: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        })
    }

    fn job(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.jobs.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.skipped.fetch_add(1, Relaxed);
        }
        permit
    }

    /// Runs `call` on a blocking thread holding `permit`.
    async fn run<T, F>(&self, permit: OwnedSemaphorePermit, call: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&DiskStore) -> T + Send + 'static,
    {
        let store = self.store.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            call(&store)
        });
        task.await.ok()
    }

    /// The object on disk for `url` whose Vary values match `request`.
    pub async fn lookup(&self, url: &str, request: &HeaderMap) -> Option<DiskEntry> {
        let permit = self.job()?;
        let (url, request) = (url.to_owned(), request.clone());
        let found = self.run(permit, move |s| s.lookup(&url, &request)).await?;
        found.ok().flatten()
    }

    /// `entry`'s whole body, checked; `None` on a fault.
    pub async fn read_whole(&self, entry: DiskEntry) -> Option<Bytes> {
        let permit = self.job()?;
        let read = self
            .run(permit, move |s| s.read(&entry).and_then(|r| r.read_all()))
            .await?;
        read.ok()
    }

    /// `entry`'s body as a client's response body, read a chunk at a time as the client
    /// takes it; `None` when it cannot be opened (a fault, or removed meanwhile). A fault
    /// found part way ends the body with an error, cutting the response off.
    pub async fn stream(&self, entry: DiskEntry) -> Option<ProxyBody> {
        let permit = self.job()?;
        let store = self.store.clone();
        let (opened_tx, opened) = oneshot::channel();
        let (tx, rx) = mpsc::channel::<Result<Bytes, DiskError>>(QUEUED_CHUNKS);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut reader = match store.read(&entry) {
                Ok(reader) => reader,
                Err(_) => return,
            };
            if opened_tx.send(()).is_err() {
                return;
            }
            loop {
                let next = reader.next_chunk();
                let end = !matches!(next, Ok(Some(_)));
                let sent = match next {
                    Ok(Some(chunk)) => tx.blocking_send(Ok(chunk)),
                    Ok(None) => Ok(()),
                    Err(e) => tx.blocking_send(Err(e)),
                };
                if end || sent.is_err() {
                    return;
                }
            }
        });
        opened.await.ok()?;
        self.served.fetch_add(1, Relaxed);
        let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((chunk.map(Frame::data).map_err(BoxError::from), rx))
        });
        Some(StreamBody::new(chunks).boxed_unsync())
    }

    /// Counts a request answered from a body read whole from disk.
    pub fn served_whole(&self) {
        self.served.fetch_add(1, Relaxed);
    }

    /// A new object written as its body arrives: `None` when no job is free or the file
    /// cannot be created. Visible once [`DiskFill::commit`] returns; dropped before, it
    /// leaves nothing behind.
    pub fn fill(&self, url: &str, head: ObjectHead) -> Option<DiskFill> {
        let permit = self.job()?;
        let store = self.store.clone();
        let write = Writes::begin(&self.writes, url);
        let (tx, mut rx) = mpsc::channel::<Written>(QUEUED_CHUNKS);
        let (done_tx, done) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let Ok(mut writer) = store.writer(&write.url, head) else {
                return;
            };
            while let Some(written) = rx.blocking_recv() {
                match written {
                    Written::Chunk(chunk) => {
                        if writer.write(&chunk).is_err() {
                            return;
                        }
                    }
                    Written::End => {
                        // A removal since the write began: the object is out of date.
                        let committed = write.may_commit() && writer.commit().is_ok();
                        let _ = done_tx.send(committed);
                        return;
                    }
                }
            }
        });
        Some(DiskFill { tx, done })
    }

    /// Removes every variant of `url`; whether there was any. Waits for a job rather than
    /// skipping: a removal lost would let a purged object be served again.
    pub async fn remove(&self, url: &str) -> bool {
        let Ok(permit) = self.jobs.clone().acquire_owned().await else {
            return false;
        };
        let (url, writes) = (url.to_owned(), self.writes.clone());
        let removed = self
            .run(permit, move |s| {
                writes.stop(&url);
                s.remove(&url)
            })
            .await;
        matches!(removed, Some(Ok(n)) if n > 0)
    }

    /// Replaces the stored head of the variant of `url` that `request` selects (a 304's
    /// merge), in the background.
    pub fn update_head(&self, url: &str, request: &HeaderMap, head: ObjectHead) {
        let Some(permit) = self.job() else {
            return;
        };
        let store = self.store.clone();
        let (url, request) = (url.to_owned(), request.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _ = store.update_head_of(&url, &request, head);
        });
    }

    /// Replaces `entry`'s stored head, in the background.
    pub fn update_entry_head(&self, entry: DiskEntry, head: ObjectHead) {
        let Some(permit) = self.job() else {
            return;
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _ = store.update_head(&entry, head);
        });
    }

    /// The objects of the first `limit` URLs on disk that start with `prefix`, in URL
    /// order. Waits for a job, as a removal does: an administrator asked for it.
    pub async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ListedObject>, DiskError> {
        let Ok(permit) = self.jobs.clone().acquire_owned().await else {
            return Ok(Vec::new());
        };
        let prefix = prefix.to_owned();
        let listed = self.run(permit, move |s| s.list(&prefix, limit)).await;
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

    pub fn stats(&self) -> DiskTierStats {
        DiskTierStats {
            store: self.store.stats(),
            served: self.served.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
        }
    }
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
