//! Collapsed forwarding: concurrent misses for one URL make one upstream fetch, and every
//! waiting client streams the same response as it arrives. A URL whose response could not
//! be shared is not collapsed again for a while (Varnish's hit-for-miss), so its clients do
//! not queue behind one fetch each time only to fetch for themselves.
//!
//! A [`Fill`] holds the body for the store up to `max_object_size`; past it, it passes
//! through at the pace of its slowest reader, and a fetch every reader has left is dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use http::{HeaderMap, HeaderName, StatusCode};
use tokio::sync::{watch, Notify};

/// How far a fill past `max_object_size` may run ahead of its slowest reader, in bytes.
/// Squid's `read_ahead_gap` is 16 KiB; more lets a reader on a fast link take whole reads of
/// the upstream connection while the next one arrives.
const READ_AHEAD: u64 = 256 * 1024;

/// A fill every reader has left is still finished for the store when no more than this is
/// left of a body of known length (Squid's `quick_abort_min`): the bytes are already held,
/// and a few more make a stored object.
const FINISH_WHEN_LEFT: u64 = 16 * 1024;

/// A response being fetched once for many clients.
///
/// Up to `keep_up_to` bytes, the whole body is kept for the store and the fetch runs at
/// upstream's pace: holding the bytes is the price of storing them whoever reads, and a
/// slow reader then delays neither the store nor the readers beside it. Past the limit the
/// fill passes through: it keeps only what some reader has yet to read, the producer waits
/// for the slowest reader once that is more than [`READ_AHEAD`], and no reader joins.
#[derive(Debug)]
pub struct Fill {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub vary: Option<Vec<(HeaderName, Option<String>)>>,
    /// The most body bytes kept for the store (`max_object_size`).
    keep_up_to: u64,
    /// The body's length, when upstream announced it.
    length: Option<u64>,
    /// Whether bytes past `keep_up_to` are still stored (on disk): a fill passing through
    /// is then also finished without readers when little of it is left.
    stored_past_limit: bool,
    progress: Mutex<Progress>,
    /// Wakes readers: a chunk arrived, or the body ended.
    arrived: Notify,
    /// Wakes the producer: a reader moved on or left.
    read: Notify,
}

/// What a fill does with the bytes it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every byte kept for the store; readers may join.
    Keeping,
    /// Past `keep_up_to`: bytes are dropped once every reader has them; nobody joins.
    PassingThrough,
    /// Nobody reads it and it will not be stored: the producer drops the upstream body.
    Abandoned,
}

#[derive(Debug)]
struct Progress {
    mode: Mode,
    chunks: VecDeque<Bytes>,
    /// The body's chunk number of `chunks[0]`: those before it were dropped.
    first: usize,
    /// Bytes in `chunks`.
    held: u64,
    /// Bytes received in all.
    received: u64,
    /// Each attached reader's next chunk number.
    readers: Vec<ReaderAt>,
    next_reader: u64,
    /// `Some` once the body has ended: `Ok` when complete, `Err` with the reason it broke.
    end: Option<Result<(), String>>,
}

#[derive(Debug)]
struct ReaderAt {
    id: u64,
    next: usize,
}

impl Progress {
    /// Passing through, drops the chunks every reader has had; abandoned, drops them all.
    fn release(&mut self) {
        let upto = match self.mode {
            Mode::Keeping => return,
            Mode::PassingThrough => self.readers.iter().map(|r| r.next).min(),
            Mode::Abandoned => None,
        };
        let upto = upto.unwrap_or(self.first + self.chunks.len());
        while self.first < upto {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.held -= chunk.len() as u64;
            self.first += 1;
        }
    }
}

/// What the next read of a fill gives.
pub enum Next {
    Chunk(Bytes),
    End,
    Broken(String),
}

/// What a chunk handed to a fill did to it.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Kept,
    /// This chunk took the body past the limit: from now on the fill passes through.
    PassedLimit,
}

/// Whether the producer may read on.
#[derive(Debug, PartialEq, Eq)]
pub enum Room {
    Open,
    /// Every reader has left: drop the upstream body.
    Abandoned,
}

impl Fill {
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        vary: Option<Vec<(HeaderName, Option<String>)>>,
        keep_up_to: u64,
        length: Option<u64>,
        stored_past_limit: bool,
    ) -> Arc<Fill> {
        Arc::new(Fill {
            status,
            headers,
            vary,
            keep_up_to,
            length,
            stored_past_limit,
            progress: Mutex::new(Progress {
                mode: Mode::Keeping,
                chunks: VecDeque::new(),
                first: 0,
                held: 0,
                received: 0,
                readers: Vec::new(),
                next_reader: 0,
                end: None,
            }),
            arrived: Notify::new(),
            read: Notify::new(),
        })
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reader from the first byte, or `None` once the fill passes through or was
    /// abandoned: that client fetches for itself.
    pub fn attach(self: &Arc<Self>) -> Option<FillReader> {
        let mut progress = self.progress();
        if progress.mode != Mode::Keeping {
            return None;
        }
        let id = progress.next_reader;
        progress.next_reader += 1;
        progress.readers.push(ReaderAt { id, next: 0 });
        Some(FillReader {
            fill: self.clone(),
            id,
            next: 0,
        })
    }

    pub fn push(&self, chunk: Bytes) -> Pushed {
        let mut pushed = Pushed::Kept;
        {
            let mut progress = self.progress();
            progress.received += chunk.len() as u64;
            if progress.mode == Mode::Keeping && progress.received > self.keep_up_to {
                progress.mode = if progress.readers.is_empty() {
                    Mode::Abandoned
                } else {
                    Mode::PassingThrough
                };
                pushed = Pushed::PassedLimit;
            }
            progress.held += chunk.len() as u64;
            progress.chunks.push_back(chunk);
            progress.release();
        }
        self.arrived.notify_waiters();
        pushed
    }

    pub fn finish(&self, end: Result<(), String>) {
        self.progress().end = Some(end);
        self.arrived.notify_waiters();
    }

    /// The whole body, once complete and kept, in one new buffer: the chunks are slices of
    /// the upstream connection's read buffers, which the store must not keep alive.
    pub fn body(&self) -> Option<Bytes> {
        let progress = self.progress();
        match (&progress.end, progress.mode) {
            (Some(Ok(())), Mode::Keeping) => {
                let mut body = Vec::with_capacity(progress.held as usize);
                for chunk in &progress.chunks {
                    body.extend_from_slice(chunk);
                }
                Some(body.into())
            }
            _ => None,
        }
    }

    /// Waits until the producer may read another chunk from upstream.
    pub async fn room(&self) -> Room {
        self.when_read(|progress| match progress.mode {
            Mode::Abandoned => Some(Room::Abandoned),
            Mode::PassingThrough if progress.held > READ_AHEAD => None,
            Mode::Keeping | Mode::PassingThrough => Some(Room::Open),
        })
        .await
    }

    /// Waits until every reader has left and the fetch is not worth finishing.
    pub async fn abandoned(&self) {
        self.when_read(|progress| (progress.mode == Mode::Abandoned).then_some(()))
            .await
    }

    /// Waits, as readers move on and leave, for `ready` to say something.
    async fn when_read<T>(&self, ready: impl Fn(&Progress) -> Option<T>) -> T {
        loop {
            // Registered before looking, so a read between the look and the wait is not lost.
            let notified = self.read.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(answer) = ready(&self.progress()) {
                return answer;
            }
            notified.await;
        }
    }

    /// A fill kept for the store is finished without readers when its length is known and
    /// little of it is left; any other is abandoned.
    fn worth_finishing(&self, progress: &Progress) -> bool {
        let stored = match progress.mode {
            Mode::Keeping => true,
            Mode::PassingThrough => self.stored_past_limit,
            Mode::Abandoned => false,
        };
        stored
            && self
                .length
                .is_some_and(|length| length.saturating_sub(progress.received) <= FINISH_WHEN_LEFT)
    }
}

/// One client's place in a fill. Dropping it (the client went away) lets the fill drop
/// what only it had yet to read, and the last one out may abandon the fetch.
#[derive(Debug)]
pub struct FillReader {
    fill: Arc<Fill>,
    id: u64,
    next: usize,
}

impl FillReader {
    /// Waits for the next chunk, or the end.
    pub async fn next(&mut self) -> Next {
        let fill = &self.fill;
        loop {
            // Registered before looking, so a push between the look and the wait is not lost.
            let notified = fill.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut progress = fill.progress();
                let index = self.next - progress.first;
                if let Some(chunk) = progress.chunks.get(index).cloned() {
                    self.next += 1;
                    let id = self.id;
                    if let Some(at) = progress.readers.iter_mut().find(|r| r.id == id) {
                        at.next = self.next;
                    }
                    let passing = progress.mode == Mode::PassingThrough;
                    if passing {
                        progress.release();
                    }
                    drop(progress);
                    if passing {
                        fill.read.notify_waiters();
                    }
                    return Next::Chunk(chunk);
                }
                match &progress.end {
                    Some(Ok(())) => return Next::End,
                    Some(Err(reason)) => return Next::Broken(reason.clone()),
                    None => {}
                }
            }
            notified.await;
        }
    }
}

impl Drop for FillReader {
    fn drop(&mut self) {
        {
            let mut progress = self.fill.progress();
            progress.readers.retain(|r| r.id != self.id);
            if progress.readers.is_empty()
                && progress.end.is_none()
                && !self.fill.worth_finishing(&progress)
            {
                progress.mode = Mode::Abandoned;
            }
            progress.release();
        }
        self.fill.read.notify_waiters();
    }
}

/// How the first client's fetch turned out, as the waiting clients see it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Pending,
    /// A cacheable response: stream it.
    Shared(Arc<Fill>),
    /// Not shareable (uncacheable, an error): fetch for yourself.
    Alone,
}

/// How long a URL whose response could not be shared is fetched without collapsing
/// (Varnish's default for hit-for-miss objects).
const UNSHARED_FOR: Duration = Duration::from_secs(120);
/// The most such URLs remembered; past it the expired are dropped, or else all of them.
const MAX_UNSHARED: usize = 10_000;

/// The fetches under way, and the URLs recently not shareable, by cache key.
#[derive(Debug, Default)]
pub struct InFlight {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    fetches: HashMap<String, watch::Receiver<Outcome>>,
    /// When each stops being fetched alone.
    unshared: HashMap<String, Instant>,
}

/// The first client for a key: it fetches, and says how it went with [`Leader::share`].
pub struct Leader {
    key: String,
    tx: watch::Sender<Outcome>,
    in_flight: Arc<InFlight>,
    done: bool,
}

pub enum Join {
    Leader(Leader),
    Follower(watch::Receiver<Outcome>),
    /// Its last response could not be shared: fetch without collapsing.
    Alone,
}

impl InFlight {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut table = self.table();
        if let Some(&until) = table.unshared.get(key) {
            if Instant::now() < until {
                return Join::Alone;
            }
            table.unshared.remove(key);
        }
        if let Some(rx) = table.fetches.get(key) {
            return Join::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        table.fetches.insert(key.to_owned(), rx);
        Join::Leader(Leader {
            key: key.to_owned(),
            tx,
            in_flight: self.clone(),
            done: false,
        })
    }

    fn remove(&self, key: &str) {
        self.table().fetches.remove(key);
    }

    /// `key`'s response could not be shared: its next clients fetch alone for a while.
    pub fn unshared(&self, key: &str) {
        let now = Instant::now();
        let mut table = self.table();
        if let Some(until) = table.unshared.get_mut(key) {
            *until = now + UNSHARED_FOR;
            return;
        }
        if table.unshared.len() >= MAX_UNSHARED {
            table.unshared.retain(|_, until| now < *until);
            if table.unshared.len() >= MAX_UNSHARED {
                table.unshared.clear();
            }
        }
        table.unshared.insert(key.to_owned(), now + UNSHARED_FOR);
    }

    /// `key`'s response was stored after all: its misses collapse again.
    pub fn shared_again(&self, key: &str) {
        self.table().unshared.remove(key);
    }

    /// Waits until the leader says how its fetch went.
    pub async fn wait(mut rx: watch::Receiver<Outcome>) -> Outcome {
        match rx.wait_for(|o| !matches!(o, Outcome::Pending)).await {
            Ok(outcome) => outcome.clone(),
            // The leader went away before it had a response.
            Err(_) => Outcome::Alone,
        }
    }
}

impl Leader {
    /// Lets waiting clients stream `fill`; later clients join it until [`Leader::finish`].
    pub fn share(&self, fill: Arc<Fill>) {
        self.tx.send_replace(Outcome::Shared(fill));
    }

    /// The fetch is over (stored, or not shareable): later clients look in the store.
    pub fn finish(mut self) {
        self.done = true;
        if matches!(*self.tx.borrow(), Outcome::Pending) {
            self.tx.send_replace(Outcome::Alone);
        }
        self.in_flight.remove(&self.key);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.done {
            self.tx.send_replace(Outcome::Alone);
            self.in_flight.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_util::FutureExt;

    fn fill(keep_up_to: u64, length: Option<u64>) -> Arc<Fill> {
        Fill::new(
            StatusCode::OK,
            HeaderMap::new(),
            None,
            keep_up_to,
            length,
            false,
        )
    }

    /// Reads what has arrived, up to the end or the first chunk not there yet.
    fn read_ready(reader: &mut FillReader) -> Vec<u8> {
        let mut body = Vec::new();
        while let Some(Next::Chunk(chunk)) = reader.next().now_or_never() {
            body.extend_from_slice(&chunk);
        }
        body
    }

    fn held(fill: &Fill) -> u64 {
        fill.progress().held
    }

    #[tokio::test]
    async fn followers_stream_what_the_leader_fetches() {
        let in_flight = Arc::new(InFlight::default());
        let Join::Leader(leader) = in_flight.join("k") else {
            panic!("first is leader")
        };
        let Join::Follower(rx) = in_flight.join("k") else {
            panic!("second follows")
        };
        let fill = fill(1 << 20, None);
        leader.share(fill.clone());
        let Outcome::Shared(seen) = InFlight::wait(rx).await else {
            panic!("shared")
        };
        let mut reader = seen.attach().expect("a fill being kept takes readers");
        let reader = tokio::spawn(async move {
            let mut body = Vec::new();
            while let Next::Chunk(c) = reader.next().await {
                body.extend_from_slice(&c);
            }
            body
        });
        fill.push(Bytes::from_static(b"ab"));
        fill.push(Bytes::from_static(b"cd"));
        fill.finish(Ok(()));
        leader.finish();
        assert_eq!(reader.await.unwrap(), b"abcd");
        assert!(matches!(in_flight.join("k"), Join::Leader(_)));
    }

    #[test]
    fn under_its_limit_a_fill_keeps_everything_and_never_waits_for_readers() {
        let fill = fill(1000, None);
        let _idle = fill.attach().unwrap();
        for _ in 0..100 {
            assert_eq!(fill.push(Bytes::from(vec![b'x'; 10])), Pushed::Kept);
            assert_eq!(fill.room().now_or_never(), Some(Room::Open));
        }
        fill.finish(Ok(()));
        assert_eq!(fill.body().unwrap().len(), 1000);
        let mut late = fill.attach().expect("a kept fill takes readers to the end");
        assert_eq!(read_ready(&mut late).len(), 1000);
        assert!(matches!(late.next().now_or_never(), Some(Next::End)));
    }

    #[test]
    fn past_its_limit_a_fill_keeps_nothing_more_and_takes_no_readers() {
        let fill = fill(4, None);
        let mut reader = fill.attach().unwrap();
        assert_eq!(fill.push(Bytes::from_static(b"ab")), Pushed::Kept);
        assert_eq!(fill.push(Bytes::from_static(b"cde")), Pushed::PassedLimit);
        assert!(
            fill.attach().is_none(),
            "nobody joins a fill passing through"
        );
        assert_eq!(read_ready(&mut reader), b"abcde");
        assert_eq!(held(&fill), 0, "what every reader has is dropped");
        assert_eq!(fill.push(Bytes::from_static(b"fg")), Pushed::Kept);
        assert_eq!(read_ready(&mut reader), b"fg");
        fill.finish(Ok(()));
        assert!(matches!(reader.next().now_or_never(), Some(Next::End)));
        assert!(fill.body().is_none(), "a body past the limit is not stored");
    }

    #[tokio::test]
    async fn passing_through_the_producer_waits_for_the_slowest_reader() {
        let fill = fill(1, None);
        let (mut fast, mut slow) = (fill.attach().unwrap(), fill.attach().unwrap());
        let window = READ_AHEAD as usize;
        assert_eq!(
            fill.push(Bytes::from(vec![b'x'; window])),
            Pushed::PassedLimit
        );
        assert_eq!(fill.room().now_or_never(), Some(Room::Open));
        fill.push(Bytes::from_static(b"y"));
        assert_eq!(
            fill.room().now_or_never(),
            None,
            "a window ahead of a reader"
        );
        let producer = tokio::spawn({
            let fill = fill.clone();
            async move { fill.room().await }
        });
        assert_eq!(read_ready(&mut fast).len(), window + 1);
        assert_eq!(
            held(&fill),
            READ_AHEAD + 1,
            "the slow reader has it all to read"
        );
        assert_eq!(
            fill.room().now_or_never(),
            None,
            "the slowest reader decides"
        );
        assert!(matches!(slow.next().now_or_never(), Some(Next::Chunk(_))));
        assert_eq!(held(&fill), 1);
        let woken = tokio::time::timeout(Duration::from_secs(5), producer).await;
        assert_eq!(woken.expect("the producer woke").unwrap(), Room::Open);
    }

    #[test]
    fn a_slow_reader_leaving_lets_the_producer_go_on() {
        let fill = fill(1, None);
        let (mut fast, slow) = (fill.attach().unwrap(), fill.attach().unwrap());
        fill.push(Bytes::from(vec![b'x'; READ_AHEAD as usize + 1]));
        read_ready(&mut fast);
        assert_eq!(fill.room().now_or_never(), None);
        drop(slow);
        assert_eq!(held(&fill), 0);
        assert_eq!(fill.room().now_or_never(), Some(Room::Open));
    }

    #[tokio::test]
    async fn every_reader_leaving_a_fill_passing_through_abandons_it() {
        let fill = fill(1, None);
        let (a, b) = (fill.attach().unwrap(), fill.attach().unwrap());
        fill.push(Bytes::from_static(b"past"));
        let producer = tokio::spawn({
            let fill = fill.clone();
            async move { fill.abandoned().await }
        });
        drop(a);
        assert_eq!(
            fill.room().now_or_never(),
            Some(Room::Open),
            "one reader left"
        );
        drop(b);
        assert_eq!(fill.room().now_or_never(), Some(Room::Abandoned));
        let woken = tokio::time::timeout(Duration::from_secs(5), producer).await;
        woken.expect("the producer woke").unwrap();
        assert_eq!(held(&fill), 0);
    }

    #[test]
    fn a_kept_fill_of_unknown_length_is_abandoned_when_its_readers_leave() {
        let fill = fill(1000, None);
        let reader = fill.attach().unwrap();
        fill.push(Bytes::from_static(b"some"));
        drop(reader);
        assert_eq!(fill.room().now_or_never(), Some(Room::Abandoned));
        assert!(fill.attach().is_none(), "nobody joins an abandoned fill");
        fill.finish(Ok(()));
        assert!(fill.body().is_none());
    }

    #[test]
    fn a_kept_fill_is_finished_without_readers_only_when_little_is_left() {
        let nearly_done = fill(1 << 20, Some(FINISH_WHEN_LEFT + 10));
        drop(nearly_done.attach().unwrap());
        assert_eq!(nearly_done.room().now_or_never(), Some(Room::Abandoned));

        let nearly_done = fill(1 << 20, Some(FINISH_WHEN_LEFT + 10));
        let reader = nearly_done.attach().unwrap();
        nearly_done.push(Bytes::from_static(b"0123456789"));
        drop(reader);
        assert_eq!(nearly_done.room().now_or_never(), Some(Room::Open));
        let mut later = nearly_done.attach().expect("still kept, so still joinable");
        nearly_done.push(Bytes::from(vec![b'x'; FINISH_WHEN_LEFT as usize]));
        nearly_done.finish(Ok(()));
        let stored = nearly_done.body().expect("finished for the store");
        assert_eq!(stored.len() as u64, FINISH_WHEN_LEFT + 10);
        assert_eq!(read_ready(&mut later).len(), stored.len());
    }

    #[test]
    fn a_fill_past_its_limit_still_stored_on_disk_is_finished_when_little_is_left() {
        let passing = |stored_past_limit| {
            let fill = Fill::new(
                StatusCode::OK,
                HeaderMap::new(),
                None,
                4,
                Some(FINISH_WHEN_LEFT + 10),
                stored_past_limit,
            );
            let reader = fill.attach().unwrap();
            assert_eq!(
                fill.push(Bytes::from_static(b"0123456789")),
                Pushed::PassedLimit
            );
            drop(reader);
            fill.room().now_or_never()
        };
        assert_eq!(passing(true), Some(Room::Open));
        assert_eq!(passing(false), Some(Room::Abandoned));
    }

    #[test]
    fn a_fill_nobody_reads_is_kept_until_it_passes_its_limit() {
        // A HEAD, or a client answered 304, reads nothing: the object is still stored.
        let fill = fill(10, None);
        assert_eq!(fill.push(Bytes::from_static(b"12345")), Pushed::Kept);
        assert_eq!(fill.room().now_or_never(), Some(Room::Open));
        assert_eq!(
            fill.push(Bytes::from_static(b"678901")),
            Pushed::PassedLimit
        );
        assert_eq!(fill.room().now_or_never(), Some(Room::Abandoned));
        assert_eq!(held(&fill), 0);
    }

    #[test]
    fn a_url_not_shared_is_fetched_alone_until_it_is_stored_again() {
        let in_flight = Arc::new(InFlight::default());
        let Join::Leader(leader) = in_flight.join("k") else {
            panic!("first is leader")
        };
        in_flight.unshared("k");
        leader.finish();
        assert!(matches!(in_flight.join("k"), Join::Alone));
        assert!(matches!(in_flight.join("other"), Join::Leader(_)));
        in_flight.shared_again("k");
        assert!(matches!(in_flight.join("k"), Join::Leader(_)));
    }

    #[test]
    fn the_urls_not_shared_are_bounded() {
        let in_flight = Arc::new(InFlight::default());
        for i in 0..MAX_UNSHARED + 10 {
            in_flight.unshared(&i.to_string());
        }
        assert!(in_flight.table().unshared.len() <= MAX_UNSHARED);
        assert!(matches!(
            in_flight.join(&(MAX_UNSHARED + 9).to_string()),
            Join::Alone
        ));
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_lets_followers_fetch() {
        let in_flight = Arc::new(InFlight::default());
        let leader = in_flight.join("k");
        let Join::Follower(rx) = in_flight.join("k") else {
            panic!("second follows")
        };
        drop(leader);
        assert!(matches!(InFlight::wait(rx).await, Outcome::Alone));
    }
}
