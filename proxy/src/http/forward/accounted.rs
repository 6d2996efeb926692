//! The body every response is sent with: it counts the bytes the client took, and logs the
//! request when it is done.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::access_log;
use crate::http::body::{BoxError, ProxyBody};
use crate::runtime::{Runtime, Shared};
use crate::stats::clients::ClientCounters;

/// What is counted and logged once the client has its response (or has gone away).
pub(super) struct Accounting {
    pub(super) shared: Arc<Shared>,
    pub(super) runtime: Arc<Runtime>,
    pub(super) from_cache: bool,
    pub(super) started: Instant,
    pub(super) entry: Option<access_log::Entry>,
    /// The client's own counters, where it is a peer or child.
    pub(super) counted: Option<Arc<ClientCounters>>,
}

/// A response body that counts the bytes sent, and logs the request when it is done.
/// Handed to hyper as it is: boxing it again would cost an allocation a response.
pub struct Accounted {
    inner: ProxyBody,
    sent: u64,
    done: Option<Accounting>,
}

impl Accounted {
    pub(super) fn new(inner: ProxyBody, done: Accounting) -> Accounted {
        Accounted {
            inner,
            sent: 0,
            done: Some(done),
        }
    }
}

impl Body for Accounted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Accounted {
    fn drop(&mut self) {
        let Some(mut done) = self.done.take() else {
            return;
        };
        let counter = if done.from_cache {
            &done.shared.stats.bytes_from_cache
        } else {
            &done.shared.stats.bytes_from_upstream
        };
        counter.add(self.sent);
        if let Some(client) = &done.counted {
            client.served(done.from_cache, self.sent);
        }
        if let (Some(log), Some(mut entry)) = (&done.runtime.access_log, done.entry.take()) {
            entry.bytes = self.sent;
            entry.elapsed = done.started.elapsed();
            log.write(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::full_body;
    use crate::stats::clients::Kind;
    use canopy_config::config::Config;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_bytes_a_client_took_are_counted_by_where_they_came_from() {
        let shared = Shared::for_tests(Config::default());
        let child = std::net::IpAddr::from([10, 0, 0, 1]);
        let accounting = |from_cache| Accounting {
            shared: shared.clone(),
            runtime: shared.runtime.load_full(),
            from_cache,
            started: Instant::now(),
            entry: None,
            counted: Some(shared.stats.clients.for_connection(child, Kind::Other)),
        };
        let hit = Accounted::new(full_body(Bytes::from_static(b"hello")), accounting(true));
        let taken = hit.collect().await.expect("a whole body").to_bytes();
        assert_eq!(taken, "hello");
        let mut miss = Accounted::new(full_body(Bytes::from_static(b"abc")), accounting(false));
        let first = miss.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "abc");
        drop(miss);
        assert_eq!(shared.stats.bytes_from_cache.get(), 5);
        assert_eq!(shared.stats.bytes_from_upstream.get(), 3);
        let clients = shared.stats.snapshot(0, 0).clients;
        let counted = (clients[0].objects, clients[0].hits, clients[0].bytes);
        assert_eq!(counted, (2, 1, 8), "and by the client they went to");
    }
}
