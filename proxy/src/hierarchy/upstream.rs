//! HTTP clients towards origins and parents, leaving from this proxy's one address, with
//! their connections kept open between requests.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Sleep;

use crate::hierarchy::reach::{self, ConnectError, ConnectSettings, Denied, Reach};
use crate::http::body::{BoxError, ProxyBody};
use crate::http::errors::ProxyError;
use crate::http::workers;
use crate::stats::{Stats, Timeout};

/// How long a connection may sit unused before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often, at most, a worker's pool is swept of closed and long-idle connections.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// The most connections a worker keeps to one destination; more are closed after use.
const MAX_PER_DESTINATION: usize = 64;

/// The largest response head taken from upstream, status line included (Squid's
/// `reply_header_max_size` is 64 KB); more gives the client a 502 that says so.
pub const RESPONSE_HEAD_MAX: usize = 64 * 1024;
/// The most fields a response head may have: more than any real one, few enough that
/// parsing a head stays cheap.
pub const RESPONSE_FIELDS_MAX: usize = 1000;

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The destination may not be reached: refused before any connection was tried.
    #[error("destination refused")]
    Denied(#[source] Denied),
    /// No connection could be made.
    #[error("connect error")]
    Connect(#[source] BoxError),
    /// The connection failed or closed before the response arrived.
    #[error("request failed")]
    Request(#[source] hyper::Error),
    /// The client's request body broke off or was malformed while it was being sent on:
    /// the client's fault, not the next hop's. The connection it was sent on is closed.
    #[error("the request body from the client")]
    ClientBody(#[source] hyper::Error),
    /// The response head is larger than this proxy takes.
    #[error(
        "the response head is larger than {} KiB or has more than {RESPONSE_FIELDS_MAX} fields",
        RESPONSE_HEAD_MAX / 1024
    )]
    HeadTooLarge,
    /// A peer's `max_conn` connections are all open and busy: nothing was sent.
    #[error("{max} connections open, its max_conn")]
    AtLimit { max: usize },
}

impl From<ConnectError> for UpstreamError {
    fn from(error: ConnectError) -> UpstreamError {
        match error {
            ConnectError::Denied(denied) => UpstreamError::Denied(denied),
            other => UpstreamError::Connect(other.into()),
        }
    }
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    /// Sorts out a failed exchange: the client's body, an oversized head, or the hop.
    fn from_exchange(error: hyper::Error) -> UpstreamError {
        if caused_by_client_body(&error) {
            UpstreamError::ClientBody(error)
        } else if error.is_parse_too_large() {
            UpstreamError::HeadTooLarge
        } else {
            UpstreamError::Request(error)
        }
    }

    /// Connecting took longer than `connect_timeout_ms` (or than the kernel waits).
    pub fn is_connect_timeout(&self) -> bool {
        let UpstreamError::Connect(error) = self else {
            return false;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
        while let Some(e) = cause {
            let timed_out = matches!(
                e.downcast_ref::<ConnectError>(),
                Some(ConnectError::TimedOut { .. })
            ) || e
                .downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut);
            if timed_out {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

impl UpstreamError {
    /// The most specific message in the error's chain ("Connection refused", not "client
    /// error").
    pub fn innermost(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            message = s.to_string();
            source = s.source();
        }
        message
    }

    /// Whether the system reported a timeout anywhere in the error's chain.
    fn timed_out(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
            {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

/// Why one hop gave no response; the client's error page says it, and the hop's counters
/// keep it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopFailure {
    /// Connecting took longer than `connect_timeout_ms`.
    #[error("connect: timed out after {ms} ms")]
    ConnectTimedOut { ms: u64 },
    /// No connection could be made.
    #[error("connect: {reason}")]
    Connect { reason: String },
    /// The exchange broke off before the response; `timed_out` when the system said so.
    #[error("{reason}")]
    Broken { reason: String, timed_out: bool },
    /// Nothing came within `read_timeout_ms`.
    #[error("no response within {ms} ms")]
    NoResponse { ms: u128 },
}

impl HopFailure {
    /// The failure of a request that ended in `error`; `connect_timeout_ms` is the limit
    /// that a connect timeout passed.
    pub fn of(error: &UpstreamError, connect_timeout_ms: u64) -> HopFailure {
        if error.is_connect_timeout() {
            HopFailure::ConnectTimedOut {
                ms: connect_timeout_ms,
            }
        } else if error.is_connect() {
            HopFailure::Connect {
                reason: error.innermost(),
            }
        } else {
            HopFailure::Broken {
                reason: error.innermost(),
                timed_out: error.timed_out(),
            }
        }
    }

    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            HopFailure::ConnectTimedOut { .. } | HopFailure::Connect { .. }
        )
    }

    /// The client's error when `name` was the last hop tried: 504 when it took too long,
    /// 502 otherwise.
    pub fn to_proxy_error(&self, name: &str, origin: bool) -> ProxyError {
        match self {
            HopFailure::NoResponse { .. }
            | HopFailure::ConnectTimedOut { .. }
            | HopFailure::Broken {
                timed_out: true, ..
            } => ProxyError::gateway_timeout(format!("{name}: {self}")),
            HopFailure::Connect { reason } if origin => {
                ProxyError::bad_gateway(format!("cannot connect to {name}: {reason}"))
            }
            HopFailure::Connect { .. } | HopFailure::Broken { .. } => {
                ProxyError::bad_gateway(format!("{name} failed: {self}"))
            }
        }
    }
}

/// Why an upstream response body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream body broke off: {0}")]
    Broken(#[source] hyper::Error),
    /// Nothing arrived for `read_timeout_ms`.
    #[error("the upstream server sent nothing for {} ms", .0.as_millis())]
    Stalled(Duration),
}

/// A response body from a parent or origin that ends in [`BodyError::Stalled`] when the
/// server sends nothing for `read_timeout` between two reads (Squid's `read_timeout`,
/// nginx's `proxy_read_timeout`): a slow body goes on as long as bytes keep coming.
pub struct UpstreamBody {
    inner: Source,
    read_timeout: Duration,
    stats: Arc<Stats>,
    /// When the server has been silent for `read_timeout` unless more arrives.
    stalled_at: tokio::time::Instant,
    /// Goes off at `stalled_at` or before it; moved on only when it goes off, so a frame
    /// costs a clock read and no timer update.
    alarm: Pin<Box<Sleep>>,
}

/// Where an upstream body comes from.
enum Source {
    Wire(Incoming),
    /// A whole body that arrived with its head (a peer's ICP HIT_OBJ); taken on first poll.
    Inline(Option<Bytes>),
}

impl UpstreamBody {
    pub fn new(inner: Incoming, read_timeout: Duration, stats: Arc<Stats>) -> UpstreamBody {
        UpstreamBody::from_source(Source::Wire(inner), read_timeout, stats)
    }

    /// A body already here in whole: it is never waited for, so its timer never runs.
    pub fn inline(body: Bytes, read_timeout: Duration, stats: Arc<Stats>) -> UpstreamBody {
        UpstreamBody::from_source(Source::Inline(Some(body)), read_timeout, stats)
    }

    fn from_source(inner: Source, read_timeout: Duration, stats: Arc<Stats>) -> UpstreamBody {
        let stalled_at = tokio::time::Instant::now() + read_timeout;
        UpstreamBody {
            inner,
            read_timeout,
            stats,
            stalled_at,
            alarm: Box::pin(tokio::time::sleep_until(stalled_at)),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let inner = match &mut this.inner {
            Source::Wire(inner) => inner,
            Source::Inline(body) => return Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stalled_at = tokio::time::Instant::now() + this.read_timeout;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Broken(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                while this.alarm.as_mut().poll(cx).is_ready() {
                    if tokio::time::Instant::now() >= this.stalled_at {
                        this.stats.timeouts.fired(Timeout::UpstreamRead);
                        return Poll::Ready(Some(Err(BodyError::Stalled(this.read_timeout))));
                    }
                    let stalled_at = this.stalled_at;
                    this.alarm.as_mut().reset(stalled_at);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Wire(inner) => inner.is_end_stream(),
            Source::Inline(body) => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Wire(inner) => inner.size_hint(),
            Source::Inline(body) => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// The error a client's request body gives on its way upstream, so that a failed
/// exchange can tell the client's fault from the next hop's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body broke off or is malformed")]
pub struct ClientBodyError(#[source] pub hyper::Error);

fn caused_by_client_body(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<ClientBodyError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Connections to origin servers, or always to one parent.
pub struct UpstreamClient {
    settings: ConnectSettings,
    /// Where an origin may be; none for a parent, which the administrator named.
    reach: Option<Arc<Reach>>,
    /// The parent every connection goes to; requests to it keep their absolute-form URL.
    parent: Option<Uri>,
    /// Each HTTP worker's connections: a connection's task runs on the worker that opened
    /// it, so each worker uses only its own.
    per_worker: Box<[Mutex<Pool>]>,
    /// A peer's `max_conn`: how many connections may be open to it at once.
    limit: Option<ConnectionLimit>,
}

/// The most connections a client may have open, idle ones included (as Squid counts
/// `max-conn`), and how many it has.
struct ConnectionLimit {
    max: usize,
    open: Arc<AtomicUsize>,
}

/// One open connection counted against a [`ConnectionLimit`]; dropped when it closes.
struct OpenSlot(Arc<AtomicUsize>);

impl ConnectionLimit {
    /// A slot for one more connection, if the limit allows it.
    fn reserve(&self) -> Option<OpenSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        Some(OpenSlot(self.open.clone()))
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One worker's connections by destination, those busy with a response included.
struct Pool {
    by_destination: HashMap<Destination, Vec<Pooled>>,
    swept: Instant,
}

/// A destination's `host:port` as written. `Authority` hashes byte by byte in lower case,
/// several times dearer; a name written in two cases just gets two sets of connections.
#[derive(PartialEq, Eq, Hash)]
struct Destination(Box<str>);

impl std::borrow::Borrow<str> for Destination {
    fn borrow(&self) -> &str {
        &self.0
    }
}

struct Pooled {
    sender: SendRequest<ProxyBody>,
    used: Instant,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            by_destination: HashMap::new(),
            swept: Instant::now(),
        }
    }

    /// A connection to `destination` that is free for a request, the last used first.
    fn free_connection(&mut self, destination: &str) -> Option<&mut SendRequest<ProxyBody>> {
        let now = Instant::now();
        if now.duration_since(self.swept) > SWEEP_INTERVAL {
            self.sweep(now);
        }
        let connection = self
            .by_destination
            .get_mut(destination)?
            .iter_mut()
            .rev()
            .find(|c| c.sender.is_ready())?;
        connection.used = now;
        Some(&mut connection.sender)
    }

    /// Drops connections the other side closed and those idle too long.
    fn sweep(&mut self, now: Instant) {
        self.swept = now;
        self.by_destination.retain(|_, connections| {
            connections.retain(|c| {
                let idle_too_long =
                    c.sender.is_ready() && now.duration_since(c.used) > IDLE_TIMEOUT;
                !(c.sender.is_closed() || idle_too_long)
            });
            !connections.is_empty()
        });
    }
}

impl UpstreamClient {
    fn new(
        settings: ConnectSettings,
        reach: Option<Arc<Reach>>,
        parent: Option<Uri>,
    ) -> UpstreamClient {
        UpstreamClient {
            settings,
            reach,
            parent,
            per_worker: (0..workers::count())
                .map(|_| Mutex::new(Pool::new()))
                .collect(),
            limit: None,
        }
    }

    /// This client with at most `max` connections open at once.
    pub fn with_max_conn(mut self, max: Option<u32>) -> UpstreamClient {
        self.limit = max.map(|max| ConnectionLimit {
            max: max as usize,
            open: Arc::new(AtomicUsize::new(0)),
        });
        self
    }

    /// Whether a request can go now: no limit, room for a connection, or one of this
    /// worker's connections free. Looks at the pool only for a client at its limit.
    pub fn may_take_request(&self) -> bool {
        let Some(limit) = &self.limit else {
            return true;
        };
        if limit.open.load(Ordering::Acquire) < limit.max {
            return true;
        }
        let Some(authority) = self.parent.as_ref().and_then(Uri::authority) else {
            return true;
        };
        let pool = &self.per_worker[workers::current() % self.per_worker.len()];
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.free_connection(authority.as_str()).is_some()
    }

    /// Sends `request` on a connection that is free, or on a new one.
    pub async fn request(
        &self,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let destination = match &self.parent {
            Some(parent) => parent.clone(),
            None => request.uri().clone(),
        };
        let Some(authority) = destination.authority().cloned() else {
            let error = io::Error::new(io::ErrorKind::InvalidInput, "the URL names no host");
            return Err(UpstreamError::Connect(error.into()));
        };
        if self.parent.is_none() {
            // An origin server is sent the path only.
            let path = request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *request.uri_mut() = Uri::from(path);
        }
        let pool = &self.per_worker[workers::current() % self.per_worker.len()];
        let pooled = {
            let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
            match pool.free_connection(authority.as_str()) {
                Some(sender) => Ok(sender.try_send_request(request)),
                None => Err(request),
            }
        };
        let request = match pooled {
            Ok(sent) => match sent.await {
                Ok(response) => return Ok(response),
                // The connection closed as the request was given to it: it was not sent,
                // so it goes on a new connection.
                Err(mut e) => match e.take_message() {
                    Some(request) => request,
                    None => return Err(UpstreamError::from_exchange(e.into_error())),
                },
            },
            Err(request) => request,
        };
        let slot = match &self.limit {
            Some(limit) => Some(
                limit
                    .reserve()
                    .ok_or(UpstreamError::AtLimit { max: limit.max })?,
            ),
            None => None,
        };
        let port = authority.port_u16().unwrap_or(80);
        let stream =
            reach::connect(authority.host(), port, self.settings, self.reach.as_deref()).await?;
        let (mut sender, connection) = http1::Builder::new()
            .max_header_size(RESPONSE_HEAD_MAX)
            .max_headers(RESPONSE_FIELDS_MAX)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Request)?;
        tokio::spawn(async move {
            let _counted_until_closed = slot;
            if let Err(e) = connection.await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        let sent = sender.send_request(request);
        {
            let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
            let connections = pool
                .by_destination
                .entry(Destination(authority.as_str().into()))
                .or_default();
            if connections.len() < MAX_PER_DESTINATION {
                connections.push(Pooled {
                    sender,
                    used: Instant::now(),
                });
            }
        }
        sent.await.map_err(UpstreamError::from_exchange)
    }
}

/// A client that connects to each request's origin server, where `reach` allows.
pub fn origin_client(settings: ConnectSettings, reach: Arc<Reach>) -> UpstreamClient {
    UpstreamClient::new(settings, Some(reach), None)
}

/// A parent's host and port that do not make a URL.
#[derive(Debug, thiserror::Error)]
#[error("parent {authority}: {source}")]
pub struct ParentAddressError {
    pub authority: String,
    #[source]
    pub source: http::uri::InvalidUri,
}

/// A client whose every connection goes to the parent at `host:port`.
pub fn parent_client(
    host: &str,
    port: u16,
    settings: ConnectSettings,
) -> Result<UpstreamClient, ParentAddressError> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let uri: Uri = format!("http://{authority}/")
        .parse()
        .map_err(|source| ParentAddressError { authority, source })?;
    Ok(UpstreamClient::new(settings, None, Some(uri)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers every request with `body`, closing the connection after each
    /// answer when `close` is set; it counts connections and keeps the request lines.
    async fn server(
        close: bool,
    ) -> (
        std::net::SocketAddr,
        Arc<AtomicUsize>,
        Arc<Mutex<Vec<String>>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, lines) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (counter, seen) = (accepted.clone(), lines.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            seen.lock()
                                .unwrap()
                                .push(head.lines().next().unwrap().to_owned());
                            buf.drain(..end + 4);
                            let connection = if close { "close" } else { "keep-alive" };
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: {connection}\r\n\r\nok"
                            );
                            stream.write_all(answer.as_bytes()).await.unwrap();
                            if close {
                                return;
                            }
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (addr, accepted, lines)
    }

    fn settings() -> ConnectSettings {
        ConnectSettings {
            local_address: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    async fn get(client: &UpstreamClient, url: &str) -> String {
        let mut request = Request::new(crate::http::body::empty_body());
        *request.uri_mut() = url.parse().unwrap();
        let response = client.request(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_used_again_once_its_response_is_read() {
        let (addr, accepted, lines) = server(false).await;
        let client = origin_client(settings(), Arc::new(Reach::of(&Default::default())));
        for _ in 0..3 {
            assert_eq!(get(&client, &format!("http://{addr}/a?b")).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // An origin server is sent the path, not the whole URL.
        assert_eq!(lines.lock().unwrap()[0], "GET /a?b HTTP/1.1");
    }

    #[tokio::test]
    async fn concurrent_requests_get_connections_of_their_own() {
        let (addr, accepted, _) = server(false).await;
        let client = origin_client(settings(), Arc::new(Reach::of(&Default::default())));
        let url = format!("http://{addr}/");
        let answers = futures_util::future::join_all((0..4).map(|_| get(&client, &url))).await;
        assert_eq!(answers, ["ok"; 4]);
        let opened = accepted.load(Ordering::SeqCst);
        assert!(
            opened > 1,
            "{opened} connection(s) for four requests at once"
        );
        get(&client, &url).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            opened,
            "a free one is reused"
        );
    }

    /// Waits, up to five seconds, until the client may take a request.
    async fn room(client: &UpstreamClient) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !client.may_take_request() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the client never had room again");
    }

    #[tokio::test]
    async fn max_conn_caps_open_connections_and_a_finished_or_closed_one_makes_room() {
        // A parent that sends the head at once and the rest of the body when told.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_on, held) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok")
                .await
                .unwrap();
            held.await.unwrap();
            stream.write_all(b"ok").await.unwrap();
            let _ = stream.read(&mut head).await;
        });
        let client = parent_client("127.0.0.1", addr.port(), settings())
            .unwrap()
            .with_max_conn(Some(1));
        let request = || {
            let mut request = Request::new(crate::http::body::empty_body());
            *request.uri_mut() = "http://example.com/".parse().unwrap();
            request
        };
        let busy = client.request(request()).await.unwrap();
        assert!(!client.may_take_request());
        match client.request(request()).await {
            Err(UpstreamError::AtLimit { max: 1 }) => {}
            other => panic!("expected the limit, got {other:?}"),
        }
        go_on.send(()).unwrap();
        busy.into_body().collect().await.unwrap();
        room(&client).await;

        let (addr, accepted, _) = server(true).await;
        let closing = parent_client("127.0.0.1", addr.port(), settings())
            .unwrap()
            .with_max_conn(Some(1));
        for _ in 0..3 {
            room(&closing).await;
            assert_eq!(get(&closing, "http://example.com/").await, "ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "each closed one gave its slot back"
        );
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_used_again() {
        let (addr, accepted, _) = server(true).await;
        let client = origin_client(settings(), Arc::new(Reach::of(&Default::default())));
        for _ in 0..3 {
            assert_eq!(get(&client, &format!("http://{addr}/")).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_parent_is_sent_the_whole_url_and_refusal_is_a_connect_error() {
        let (addr, _, lines) = server(false).await;
        let parent = parent_client("127.0.0.1", addr.port(), settings()).unwrap();
        assert_eq!(get(&parent, "http://example.com/x").await, "ok");
        assert_eq!(
            lines.lock().unwrap()[0],
            "GET http://example.com/x HTTP/1.1"
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let nobody = parent_client("127.0.0.1", port, settings()).unwrap();
        let mut request = Request::new(crate::http::body::empty_body());
        *request.uri_mut() = "http://example.com/".parse().unwrap();
        let error = nobody.request(request).await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");
    }
}
