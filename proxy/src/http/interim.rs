//! Interim (1xx) responses from the next hop, relayed to the client before the final one
//! (RFC 9110 §15.2: "A proxy MUST forward 1xx responses unless the proxy itself requested
//! the generation of the 1xx response"), never stored: the final response is parsed apart.
//!
//! hyper's HTTP/1 server cannot send an interim response, so [`Relaying`], the client
//! socket, writes them itself, only where they cannot land inside another message:
//! - one is begun only when hyper flushes the socket, which it does only with all it has
//!   produced handed to the socket (`pipeline_flush`, which skips flushes, stays off). The
//!   request it belongs to is then being served, its service future pending: hyper reads a
//!   pipelined request only once the response before it is produced whole, so that one is
//!   all on the socket, and produces nothing of this one's final response before the service
//!   returns it;
//! - the service returns a final response only once the interim responses queued for its
//!   request are written ([`InterimRelay::finish`]);
//! - one begun is finished before any byte hyper writes next (its own 100 Continue).
//!
//! HTTP/1.0 clients get none (§15.2: "a server MUST NOT send a 1xx response to an HTTP/1.0
//! client"). 100 Continue is hyper's to send, when the request body is read; 101 only comes
//! with an upgrade.
//!
//! What an HTTP/1.1 request that gets none costs: a number stored when it begins and swapped
//! when it ends, two references to its connection's queue taken, and a flag or two looked at
//! on each write and flush of the socket; no lock, nothing allocated.

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use http::{header, HeaderMap, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::headers::{remove_hop_by_hop, write_head};

/// The most bytes of interim responses waiting for one client; more are dropped, so an origin
/// that sends them without end cannot fill memory while the client reads slowly.
const QUEUED_MAX: usize = 64 * 1024;

/// In [`Interims::open`]: a request is being served and may take interim responses.
const OPEN: u64 = 1;
/// In [`Interims::open`]: it was sent to a next hop that may answer with interim responses.
const ARMED: u64 = 2;
/// The request's number sits above the two flags.
const NUMBER_SHIFT: u32 = 2;

/// One client connection's interim responses on their way to it: shared by its socket, its
/// requests, and the upstream connections that receive them.
pub struct Interims {
    /// The number of the request being served, with `OPEN` while its final response is not
    /// ready and `ARMED` once it went upstream. Its end is a swap and an arrival is checked
    /// against it under the lock, so the two are ordered one way or the other.
    open: AtomicU64,
    /// Whether `queue` holds bytes: looked at by the socket without taking the lock.
    waiting: AtomicBool,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// Interim response heads in the order they arrived, all for the request that is open.
    heads: VecDeque<Vec<u8>>,
    /// How much of the first head the socket has taken.
    written: usize,
    /// The bytes in `heads`.
    queued: usize,
    /// The connection's task: woken when a head arrives, or when the heads a final response
    /// waits for are written.
    waker: Option<Waker>,
}

impl Interims {
    pub fn new() -> Interims {
        Interims {
            open: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the request numbered `request` as sent to a next hop; false when its final
    /// response is already on its way, and interim responses would come too late.
    fn arm(&self, request: u64) -> bool {
        let open = request << NUMBER_SHIFT | OPEN;
        match self
            .open
            .compare_exchange(open, open | ARMED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(now) => now == open | ARMED,
        }
    }

    /// Queues an interim response of request `request`, unless its final response is ready.
    fn push(&self, request: u64, head: Vec<u8>) {
        let mut queue = self.queue();
        if self.open.load(Ordering::SeqCst) != request << NUMBER_SHIFT | OPEN | ARMED {
            return;
        }
        if queue.queued + head.len() > QUEUED_MAX {
            tracing::debug!(
                "an interim response of {} bytes dropped: {} bytes wait for the client",
                head.len(),
                queue.queued
            );
            return;
        }
        queue.queued += head.len();
        queue.heads.push_back(head);
        self.waiting.store(true, Ordering::Release);
        if let Some(waker) = &queue.waker {
            waker.wake_by_ref();
        }
    }

    /// Writes queued heads to `io`: all of them, or with `begun_only` just the rest of one
    /// already begun. Ready when nothing (of what was asked) is left.
    fn poll_write_queued<IO: AsyncWrite + Unpin>(
        &self,
        io: &mut IO,
        cx: &mut Context<'_>,
        begun_only: bool,
    ) -> Poll<io::Result<()>> {
        let mut queue = self.queue();
        if self.open.load(Ordering::Relaxed) & ARMED != 0 && !begun_only {
            // Only the connection's task flushes: this is the waker an arrival must wake.
            match &mut queue.waker {
                Some(waker) => waker.clone_from(cx.waker()),
                None => queue.waker = Some(cx.waker().clone()),
            }
        }
        if queue.heads.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while let Some(head) = queue.heads.front() {
            if begun_only && queue.written == 0 {
                return Poll::Ready(Ok(()));
            }
            let len = head.len();
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &head[queue.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            queue.written += n;
            if queue.written == len {
                queue.queued -= len;
                queue.heads.pop_front();
                queue.written = 0;
            }
        }
        self.waiting.store(false, Ordering::Release);
        // A final response may be waiting for these: it goes on now. (Only after heads were
        // written: a wake on every flush would never let the connection rest.)
        if let Some(waker) = &queue.waker {
            waker.wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }
}

impl Default for Interims {
    fn default() -> Interims {
        Interims::new()
    }
}

/// Where the interim responses to one client request go: its connection, and which of its
/// requests it is. Kept with the request while it is served, handed to each upstream request.
#[derive(Clone)]
pub struct InterimRelay {
    interims: Arc<Interims>,
    request: u64,
}

impl fmt::Debug for InterimRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InterimRelay({})", self.request)
    }
}

impl InterimRelay {
    /// A request's head is in: interim responses for it may be relayed until [`finish`].
    ///
    /// [`finish`]: InterimRelay::finish
    pub fn begin(interims: &Arc<Interims>) -> InterimRelay {
        let request = (interims.open.load(Ordering::Relaxed) >> NUMBER_SHIFT) + 1;
        interims
            .open
            .store(request << NUMBER_SHIFT | OPEN, Ordering::SeqCst);
        InterimRelay {
            interims: interims.clone(),
            request,
        }
    }

    /// Has the interim responses to `upstream` relayed to the client, if its final response
    /// is not already on its way.
    pub fn attach<B>(&self, upstream: &mut Request<B>) {
        if !self.interims.arm(self.request) {
            return;
        }
        let relay = self.clone();
        hyper::ext::on_informational(upstream, move |response| {
            if is_relayed(response.status()) {
                let head = encode(response.status(), response.headers());
                relay.interims.push(relay.request, head);
            }
        });
    }

    /// The request's final response is ready: no interim response is taken for it from now,
    /// and the future this returns ends once those already queued are written, so that the
    /// final response comes after them.
    pub fn finish(&self) -> impl Future<Output = ()> + '_ {
        let interims = &*self.interims;
        let was = interims
            .open
            .swap(self.request << NUMBER_SHIFT, Ordering::SeqCst);
        let armed = was & ARMED != 0;
        poll_fn(move |cx| {
            if !armed {
                return Poll::Ready(());
            }
            let mut queue = interims.queue();
            if queue.heads.is_empty() {
                queue.waker = None;
                Poll::Ready(())
            } else {
                queue.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// Which interim responses go on to the client: not 100 Continue, which hyper sends the
/// client itself when its body is read, nor 101, which only an upgrade brings.
fn is_relayed(status: StatusCode) -> bool {
    status.is_informational()
        && status != StatusCode::CONTINUE
        && status != StatusCode::SWITCHING_PROTOCOLS
}

/// An interim response's head as the client gets it: its status and its fields, less those
/// that belong to the connection it came on, and less a Content-Length, which a 1xx never
/// has content for and which would put a client's parser out of step.
fn encode(status: StatusCode, headers: &HeaderMap) -> Vec<u8> {
    let mut fields = headers.clone();
    remove_hop_by_hop(&mut fields);
    fields.remove(header::CONTENT_LENGTH);
    let mut head = Vec::new();
    write_head(&mut head, status, &fields);
    head
}

/// A client socket that writes its connection's interim responses between hyper's messages.
pub struct Relaying<IO> {
    io: IO,
    interims: Arc<Interims>,
}

impl<IO> Relaying<IO> {
    pub fn new(io: IO, interims: Arc<Interims>) -> Relaying<IO> {
        Relaying { io, interims }
    }

    /// Whether interim responses may need writing or their waker keeping: one load when none.
    fn busy(&self) -> bool {
        self.interims.waiting.load(Ordering::Relaxed)
            || self.interims.open.load(Ordering::Relaxed) & ARMED != 0
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Relaying<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Relaying<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.interims.waiting.load(Ordering::Relaxed) {
            ready!(this.interims.poll_write_queued(&mut this.io, cx, true))?;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.interims.waiting.load(Ordering::Relaxed) {
            ready!(this.interims.poll_write_queued(&mut this.io, cx, true))?;
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    /// hyper calls this only once it has handed the socket all it has written: the place
    /// where interim responses go.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.busy() {
            ready!(this.interims.poll_write_queued(&mut this.io, cx, false))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
