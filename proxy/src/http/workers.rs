//! The threads that serve HTTP: one per core, each with a single-threaded tokio runtime of
//! its own (its own epoll, timers and task queue), as nginx runs one worker per core. A
//! client connection, the requests on it and the upstream connections they use stay on one
//! thread, so no request waits for another thread to notice its socket or steal its task.

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::runtime::Handle;

thread_local! {
    /// This thread's worker number; other threads (the control socket's, ICP's) count as 0.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The workers' runtimes, one per core the process may use when they start (on first use);
/// kept for the life of the process.
pub fn handles() -> &'static [Handle] {
    static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();
    WORKERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..cores).map(start).collect()
    })
}

/// How many workers there are; fixed once they have started, even if the cores the
/// process may use change later.
pub fn count() -> usize {
    handles().len()
}

/// The worker this code runs on.
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

fn start(number: usize) -> Handle {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a worker's runtime (an epoll instance and a timer)");
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("http-worker-{number}"))
        .spawn(move || {
            WORKER.with(|w| w.set(number));
            runtime.block_on(std::future::pending::<()>());
        })
        .expect("a worker thread");
    handle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_knows_its_number() {
        let numbers: Vec<usize> = handles()
            .iter()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move { tx.send(current()).unwrap() });
                rx.recv().unwrap()
            })
            .collect();
        assert_eq!(numbers, (0..count()).collect::<Vec<_>>());
    }
}
