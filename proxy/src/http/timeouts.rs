//! A client connection's timers: how long it may wait for a request (`client_idle_timeout_s`),
//! how long a request's headers may take once begun (`request_timeout_s`), and how long the
//! connection may live at all (`client_lifetime_s`, applied by the listener and the tunnel).
//!
//! hyper 1's own `header_read_timeout` starts when a connection becomes ready for its next
//! request, so it is one timer for idle and slow headers alike, and it boxes a new timer for
//! every request. Here the socket itself keeps one timer for the connection's whole life and
//! moves it only when it goes off or a deadline comes sooner; the request path tells it which
//! phase the connection is in.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::stats::{Stats, Timeout};
use canopy_config::config::Config;

/// The client-side limits in force when a connection was accepted.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    pub idle: Duration,
    pub request: Duration,
    pub lifetime: Duration,
}

impl ClientLimits {
    pub fn of(config: &Config) -> ClientLimits {
        ClientLimits {
            idle: Duration::from_secs(config.client_idle_timeout_s),
            request: Duration::from_secs(config.request_timeout_s),
            lifetime: Duration::from_secs(config.client_lifetime_s),
        }
    }
}

/// What a client connection is doing, shared by its socket and its requests.
#[derive(Debug)]
pub struct Phase {
    state: AtomicU8,
    opened: Instant,
    /// When the connection last began to wait for a request, in nanoseconds after `opened`.
    waiting_since: AtomicU64,
}

/// Waiting for the first byte of a request (the connection's first, or its next).
const WAITING: u8 = 0;
/// Some of a request's headers have arrived, not all.
const READING: u8 = 1;
/// A request is being answered: the upstream and response timeouts apply, not these.
const SERVING: u8 = 2;
/// The connection is a CONNECT tunnel: the tunnel's own idle timeout applies.
const TUNNEL: u8 = 3;

impl Phase {
    pub fn new() -> Phase {
        Phase {
            state: AtomicU8::new(WAITING),
            opened: Instant::now(),
            waiting_since: AtomicU64::new(0),
        }
    }

    /// A request's headers are in: the client is not idle while it is answered.
    pub fn serving(&self) {
        self.state.store(SERVING, Relaxed);
    }

    /// The connection has become a tunnel.
    pub fn tunnel(&self) {
        self.state.store(TUNNEL, Relaxed);
    }

    /// The response is sent: the connection waits for its next request.
    fn answered(&self) {
        if self.state.load(Relaxed) == SERVING {
            let since = self.opened.elapsed().as_nanos();
            self.waiting_since
                .store(u64::try_from(since).unwrap_or(u64::MAX), Relaxed);
            self.state.store(WAITING, Relaxed);
        }
    }

    fn waiting_since(&self) -> Instant {
        self.opened + Duration::from_nanos(self.waiting_since.load(Relaxed))
    }
}

impl Default for Phase {
    fn default() -> Phase {
        Phase::new()
    }
}

/// A client socket that fails its read with `TimedOut` when the client has been idle or
/// slow past its limit; hyper then closes the connection.
pub struct Watched<IO> {
    io: IO,
    phase: Arc<Phase>,
    limits: ClientLimits,
    stats: Arc<Stats>,
    /// When the request whose headers are arriving must have them all.
    headers_due: Instant,
    /// The connection's one timer, moved only when it goes off or a deadline comes sooner.
    /// It never goes off more than `limits.idle` after it was set, even while a request is
    /// served: hyper, once it has sent a response, may not read again before the client
    /// sends something, and this wake-up is what lets the idle timeout fire then.
    alarm: Pin<Box<Sleep>>,
    alarm_at: Instant,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, phase: Arc<Phase>, limits: ClientLimits, stats: Arc<Stats>) -> Self {
        let at = phase.waiting_since() + limits.idle;
        Watched {
            io,
            phase,
            limits,
            stats,
            headers_due: at,
            alarm: Box::pin(tokio::time::sleep_until(at)),
            alarm_at: at,
        }
    }

    fn set_alarm(&mut self, at: Instant) {
        self.alarm.as_mut().reset(at);
        self.alarm_at = at;
    }

    /// Whether `deadline` has passed; otherwise registers for a wake-up no later than it.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> bool {
        if let Some(at) = deadline.filter(|at| *at < self.alarm_at) {
            self.set_alarm(at);
        }
        while self.alarm.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match deadline {
                Some(at) if now >= at => return true,
                Some(at) => self.set_alarm(at.min(now + self.limits.idle)),
                None => self.set_alarm(now + self.limits.idle),
            }
        }
        false
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase.state.load(Relaxed);
        if phase == TUNNEL {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let (timeout, deadline) = match (phase, &polled) {
            (WAITING, Poll::Ready(Ok(()))) if buf.filled().len() > before => {
                this.phase.state.store(READING, Relaxed);
                this.headers_due = Instant::now() + this.limits.request;
                return polled;
            }
            (_, Poll::Ready(_)) => return polled,
            (WAITING, Poll::Pending) => (
                Timeout::ClientIdle,
                Some(this.phase.waiting_since() + this.limits.idle),
            ),
            (READING, Poll::Pending) => (Timeout::ClientRequest, Some(this.headers_due)),
            (_, Poll::Pending) => (Timeout::ClientIdle, None),
        };
        if this.poll_deadline(cx, deadline) {
            this.stats.timeouts.fired(timeout);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                timeout.as_str(),
            )));
        }
        Poll::Pending
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that tells the connection, once hyper has taken all of it (or dropped
/// it), that the connection now waits for its next request.
pub struct Answering<B> {
    inner: B,
    phase: Arc<Phase>,
}

impl<B> Answering<B> {
    pub fn new(inner: B, phase: Arc<Phase>) -> Self {
        Answering { inner, phase }
    }
}

impl<B> Drop for Answering<B> {
    fn drop(&mut self) {
        self.phase.answered();
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Answering<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(idle_ms: u64, request_ms: u64) -> ClientLimits {
        ClientLimits {
            idle: Duration::from_millis(idle_ms),
            request: Duration::from_millis(request_ms),
            lifetime: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn a_silent_client_times_out_idle() {
        let (_client, server) = tokio::io::duplex(64);
        let stats = Arc::new(Stats::default());
        let mut watched = Watched::new(
            server,
            Arc::new(Phase::new()),
            limits(50, 1000),
            stats.clone(),
        );
        let error = watched.read_u8().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(stats.snapshot(0, 0).timeouts["client_idle"], 1);
    }

    #[tokio::test]
    async fn headers_begun_get_the_request_timeout_not_the_idle_one() {
        let (mut client, server) = tokio::io::duplex(64);
        let stats = Arc::new(Stats::default());
        let mut watched = Watched::new(
            server,
            Arc::new(Phase::new()),
            limits(50, 300),
            stats.clone(),
        );
        client.write_all(b"G").await.unwrap();
        assert_eq!(watched.read_u8().await.unwrap(), b'G');
        let started = Instant::now();
        let error = watched.read_u8().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(stats.snapshot(0, 0).timeouts["client_request"], 1);
    }

    #[tokio::test]
    async fn a_request_being_answered_is_not_timed_and_the_next_wait_is() {
        let (mut client, server) = tokio::io::duplex(64);
        let phase = Arc::new(Phase::new());
        let stats = Arc::new(Stats::default());
        let mut watched = Watched::new(server, phase.clone(), limits(50, 50), stats.clone());
        client.write_all(b"G").await.unwrap();
        watched.read_u8().await.unwrap();
        phase.serving();
        let waited = tokio::time::timeout(Duration::from_millis(200), watched.read_u8()).await;
        assert!(waited.is_err(), "no timeout while serving");
        // hyper may have read last while the request was served, and not read again
        // after the response: the idle timeout must fire all the same.
        let reading = tokio::spawn(async move { watched.read_u8().await });
        tokio::task::yield_now().await;
        drop(Answering::new((), phase.clone()));
        let error = tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("woken for the idle timeout")
            .unwrap()
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let timeouts = stats.snapshot(0, 0).timeouts;
        assert_eq!(
            (timeouts["client_idle"], timeouts["client_request"]),
            (1, 0)
        );
    }
}
