//! Collapsed forwarding: concurrent misses for one URL make one upstream fetch, and every
//! waiting client streams the same response as it arrives. A URL whose response could not
//! be shared is not collapsed again for a while (Varnish's hit-for-miss), so its clients do
//! not queue behind one fetch each time only to fetch for themselves.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::HashMap;
use http::{HeaderMap, HeaderName, StatusCode};
use tokio::sync::{watch, Notify};

/// A response being fetched once for many clients.
#[derive(Debug)]
pub struct Fill {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub vary: Option<Vec<(HeaderName, Option<String>)>>,
    progress: Mutex<Progress>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Progress {
    chunks: Vec<Bytes>,
    /// `Some` once the body has ended: `Ok` when complete, `Err` with the reason it broke.
    end: Option<Result<(), String>>,
}

/// What the next read of a fill gives.
pub enum Next {
    Chunk(Bytes),
    End,
    Broken(String),
}

impl Fill {
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        vary: Option<Vec<(HeaderName, Option<String>)>>,
    ) -> Arc<Fill> {
        Arc::new(Fill {
            status,
            headers,
            vary,
            progress: Mutex::default(),
            changed: Notify::new(),
        })
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, chunk: Bytes) {
        self.progress().chunks.push(chunk);
        self.changed.notify_waiters();
    }

    pub fn finish(&self, end: Result<(), String>) {
        self.progress().end = Some(end);
        self.changed.notify_waiters();
    }

    /// The whole body, once complete, in one new buffer: the chunks are slices of the
    /// upstream connection's read buffers, which the store must not keep alive.
    pub fn body(&self) -> Option<Bytes> {
        let progress = self.progress();
        match progress.end {
            Some(Ok(())) => Some(progress.chunks.concat().into()),
            _ => None,
        }
    }

    /// Waits for chunk `index`, or the end.
    pub async fn next(&self, index: usize) -> Next {
        loop {
            // Registered before looking, so a push between the look and the wait is not lost.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let progress = self.progress();
                if let Some(chunk) = progress.chunks.get(index) {
                    return Next::Chunk(chunk.clone());
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

    #[tokio::test]
    async fn followers_stream_what_the_leader_fetches() {
        let in_flight = Arc::new(InFlight::default());
        let Join::Leader(leader) = in_flight.join("k") else {
            panic!("first is leader")
        };
        let Join::Follower(rx) = in_flight.join("k") else {
            panic!("second follows")
        };
        let fill = Fill::new(StatusCode::OK, HeaderMap::new(), None);
        leader.share(fill.clone());
        let Outcome::Shared(seen) = InFlight::wait(rx).await else {
            panic!("shared")
        };
        let reader = tokio::spawn(async move {
            let mut body = Vec::new();
            let mut i = 0;
            while let Next::Chunk(c) = seen.next(i).await {
                body.extend_from_slice(&c);
                i += 1;
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
