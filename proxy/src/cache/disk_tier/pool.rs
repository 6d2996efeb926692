//! The threads that run the disk tier's calls: a fixed number, fed by one bounded queue, as
//! Squid's aufs runs each cache_dir's calls on its own 16 threads. A call holds a thread
//! only while it touches the disk, never while it waits for a client or an upstream.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

/// Threads running disk calls: the disk tier never uses more, whatever the load.
pub const THREADS: usize = 16;

/// Calls waiting for a thread. A call that may be skipped (a lookup, a new body opened) is
/// skipped when the queue is full; one that must not be (the next chunk of a body already
/// begun, a removal) waits for room.
const QUEUED: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct Pool {
    queue: mpsc::Sender<Job>,
}

impl Pool {
    /// Starts the threads; they end once every handle of the pool is dropped.
    pub fn start() -> std::io::Result<Pool> {
        let (queue, jobs) = mpsc::channel::<Job>(QUEUED);
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..THREADS {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("disk-{n}"))
                .spawn(move || loop {
                    let job = jobs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .blocking_recv();
                    let Some(job) = job else { return };
                    // A call that panics loses its answer (a miss), never the thread.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                })?;
        }
        Ok(Pool { queue })
    }

    /// Runs `call` on a disk thread, waiting for room in the queue.
    pub async fn run<T, F>(&self, call: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (job, answer) = job(call);
        self.queue.send(job).await.ok()?;
        answer.await.ok()
    }

    /// Runs `call` on a disk thread; `Err(Full)` at once when the queue is full.
    pub async fn try_run<T, F>(&self, call: F) -> Result<T, Skipped>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (job, answer) = job(call);
        match self.queue.try_send(job) {
            Ok(()) => answer.await.map_err(|_| Skipped::Closed),
            Err(TrySendError::Full(_)) => Err(Skipped::Full),
            Err(TrySendError::Closed(_)) => Err(Skipped::Closed),
        }
    }

    /// Queues `call` without waiting for it; `false` when the queue is full.
    pub fn try_spawn(&self, call: impl FnOnce() + Send + 'static) -> bool {
        self.queue.try_send(Box::new(call)).is_ok()
    }
}

/// Why a call did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Every thread busy and the queue full.
    Full,
    /// The call failed without an answer, or the pool is gone.
    Closed,
}

fn job<T, F>(call: F) -> (Job, oneshot::Receiver<T>)
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(call());
    });
    (job, rx)
}
