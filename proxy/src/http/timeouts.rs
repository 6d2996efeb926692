//! A client connection's timers: how long it may wait for a request (`client_idle_timeout_s`),
//! how long a request's headers may take once begun (`request_timeout_s`), and how long the
//! connection may live at all (`client_lifetime_s`, applied by the listener and the tunnel).
//!
//! hyper 1's own `header_read_timeout` starts when a connection becomes ready for its next
//! request, so it is one timer for idle and slow headers alike, and it boxes a new timer for
//! every request. Here the socket itself keeps one timer for the connection's whole life and
//! moves it only when a deadline comes sooner; the request path tells it which phase the
//! connection is in.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::Config;
use crate::stats::{Stats, Timeout};

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
#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

/// Waiting for the first byte of a request (the connection's first, or its next).
const WAITING: u8 = 0;
/// Some of a request's headers have arrived, not all.
const READING: u8 = 1;
/// A request is being answered: the upstream and response timeouts apply, not these.
const SERVING: u8 = 2;
/// The connection is a CONNECT tunnel: the tunnel's own idle timeout applies.
const TUNNEL: u8 = 3;

impl Phase {
    /// A request's headers are in: the client is not idle while it is answered.
    pub fn serving(&self) {
        self.0.store(SERVING, Relaxed);
    }

    /// The connection has become a tunnel.
    pub fn tunnel(&self) {
        self.0.store(TUNNEL, Relaxed);
    }

    /// The response is sent: the connection waits for its next request.
    fn answered(&self) {
        let _ = self.0.compare_exchange(SERVING, WAITING, Relaxed, Relaxed);
    }
}

/// A client socket that fails its read with `TimedOut` when the client has been idle or
/// slow past its limit; hyper then closes the connection.
pub struct Watched<IO> {
    io: IO,
    phase: Arc<Phase>,
    limits: ClientLimits,
    stats: Arc<Stats>,
    /// The deadline of the phase the socket last saw, and the timeout it would be.
    deadline: Option<(Timeout, Instant)>,
    /// The connection's one timer, and when it is set to go off: never later than
    /// `deadline`, perhaps sooner (it is then set again when it goes off).
    alarm: Pin<Box<Sleep>>,
    alarm_at: Instant,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, phase: Arc<Phase>, limits: ClientLimits, stats: Arc<Stats>) -> Self {
        let at = Instant::now() + limits.idle;
        Watched {
            io,
            phase,
            limits,
            stats,
            deadline: Some((Timeout::ClientIdle, at)),
            alarm: Box::pin(tokio::time::sleep_until(at)),
            alarm_at: at,
        }
    }

    /// Whether the deadline has passed; registers for a wake-up at it otherwise.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<Timeout> {
        let Some((timeout, at)) = self.deadline else {
            return Poll::Pending;
        };
        if self.alarm_at > at {
            self.alarm.as_mut().reset(at);
            self.alarm_at = at;
        }
        while self.alarm.as_mut().poll(cx).is_ready() {
            if Instant::now() >= at {
                self.deadline = None;
                self.stats.timeouts.fired(timeout);
                return Poll::Ready(timeout);
            }
            // Set for an earlier deadline, since moved on.
            self.alarm.as_mut().reset(at);
            self.alarm_at = at;
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase.0.load(Relaxed);
        match phase {
            WAITING if !matches!(this.deadline, Some((Timeout::ClientIdle, _))) => {
                this.deadline = Some((Timeout::ClientIdle, Instant::now() + this.limits.idle));
            }
            SERVING | TUNNEL => {
                this.deadline = None;
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            _ => {}
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if phase == WAITING && buf.filled().len() > before {
                    this.phase.0.store(READING, Relaxed);
                    let at = Instant::now() + this.limits.request;
                    this.deadline = Some((Timeout::ClientRequest, at));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Ready(timeout) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    timeout.as_str(),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
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
        let mut watched = Watched::new(server, Arc::default(), limits(50, 1000), stats.clone());
        let error = watched.read_u8().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(stats.snapshot(0, 0).timeouts["client_idle"], 1);
    }

    #[tokio::test]
    async fn headers_begun_get_the_request_timeout_not_the_idle_one() {
        let (mut client, server) = tokio::io::duplex(64);
        let stats = Arc::new(Stats::default());
        let mut watched = Watched::new(server, Arc::default(), limits(50, 300), stats.clone());
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
        let phase = Arc::new(Phase::default());
        let stats = Arc::new(Stats::default());
        let mut watched = Watched::new(server, phase.clone(), limits(50, 50), stats.clone());
        client.write_all(b"G").await.unwrap();
        watched.read_u8().await.unwrap();
        phase.serving();
        let waited = tokio::time::timeout(Duration::from_millis(200), watched.read_u8()).await;
        assert!(waited.is_err(), "no timeout while serving");
        drop(Answering::new((), phase.clone()));
        let error = watched.read_u8().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let timeouts = stats.snapshot(0, 0).timeouts;
        assert_eq!(
            (timeouts["client_idle"], timeouts["client_request"]),
            (1, 0)
        );
    }
}
