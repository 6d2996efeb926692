//! CONNECT tunnels: a byte pipe to a port in `ssl_ports` of the named host, never cached,
//! closed when it carries nothing either way for `tunnel_idle_timeout_s` or its client
//! connection reaches `client_lifetime_s`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::access_log::{HierCode, Hierarchy};
use crate::hierarchy::reach::{self, ConnectError, ConnectSettings};
use crate::http::body::{empty_body, ProxyBody};
use crate::http::errors::ProxyError;
use crate::runtime::{Runtime, Shared};
use crate::stats::{Stats, Timeout};

/// Answers a CONNECT: 200 and a pipe, or an error page. Returns the hop used, for the log.
/// The pipe is closed at `closes_at` at the latest, the end of the client connection's life.
pub async fn handle(
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    req: Request<Incoming>,
    closes_at: Instant,
) -> Result<(Response<ProxyBody>, Hierarchy), ProxyError> {
    let authority = req
        .uri()
        .authority()
        .cloned()
        .ok_or_else(|| ProxyError::bad_request("CONNECT needs host:port"))?;
    let port = authority.port_u16().unwrap_or(0);
    if let Err(denied) = runtime.reach.check_tunnel_port(port) {
        shared.stats.denied_destinations.add(1);
        return Err(denied.into());
    }
    let (upstream, hop) = connect(&runtime, authority.host(), port).await?;
    shared.stats.tunnels.add(1);
    let idle = Duration::from_secs(runtime.config.tunnel_idle_timeout_s);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => match pipe(TokioIo::new(upgraded), upstream, idle, closes_at).await {
                TunnelEnd::Closed => {}
                TunnelEnd::Broken(e) => tracing::debug!("tunnel ended: {e}"),
                TunnelEnd::Timeout(timeout) => {
                    shared.stats.timeouts.fired(timeout);
                    tracing::debug!("tunnel closed: {}", timeout.as_str());
                }
            },
            Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
        }
    });
    Ok((Response::new(empty_body()), hop))
}

/// How a tunnel ended.
enum TunnelEnd {
    /// Both sides closed.
    Closed,
    Broken(io::Error),
    /// Idle too long, or its connection's lifetime was over.
    Timeout(Timeout),
}

/// Copies bytes both ways until both sides close, nothing has moved either way for `idle`,
/// or `closes_at` comes; then both sides are closed (dropped).
async fn pipe(
    client: impl AsyncRead + AsyncWrite + Unpin,
    upstream: TcpStream,
    idle: Duration,
    closes_at: Instant,
) -> TunnelEnd {
    let opened = Instant::now();
    let last_byte = AtomicU64::new(0);
    let mut client = Noted::new(client, opened, &last_byte);
    let mut upstream = Noted::new(upstream, opened, &last_byte);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let quiet = tokio::time::sleep(idle);
    let lifetime = tokio::time::sleep_until(closes_at);
    tokio::pin!(copy, quiet, lifetime);
    loop {
        tokio::select! {
            copied = &mut copy => return match copied {
                Ok(_) => TunnelEnd::Closed,
                Err(e) => TunnelEnd::Broken(e),
            },
            () = &mut lifetime => return TunnelEnd::Timeout(Timeout::ClientLifetime),
            () = &mut quiet => {
                let idle_at = opened + Duration::from_nanos(last_byte.load(Relaxed)) + idle;
                if Instant::now() >= idle_at {
                    return TunnelEnd::Timeout(Timeout::TunnelIdle);
                }
                quiet.as_mut().reset(idle_at);
            }
        }
    }
}

/// One side of a tunnel, noting when it last gave bytes to read: every byte the tunnel
/// carries is read from one side, so the two sides' reads are all its activity.
struct Noted<'a, IO> {
    io: IO,
    opened: Instant,
    /// Nanoseconds from `opened` to the last read of either side.
    last_byte: &'a AtomicU64,
}

impl<'a, IO> Noted<'a, IO> {
    fn new(io: IO, opened: Instant, last_byte: &'a AtomicU64) -> Self {
        Noted {
            io,
            opened,
            last_byte,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Noted<'_, IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let since = this.opened.elapsed().as_nanos();
            this.last_byte
                .store(u64::try_from(since).unwrap_or(u64::MAX), Relaxed);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Noted<'_, IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Opens the tunnel's far end: straight to the host, or through a parent when the
/// origin may not be reached directly.
async fn connect(
    runtime: &Runtime,
    host: &str,
    port: u16,
) -> Result<(TcpStream, Hierarchy), ProxyError> {
    let timeout = Duration::from_millis(runtime.config.connect_timeout_ms);
    let settings = ConnectSettings {
        local_address: runtime.config.bind_address.0,
        connect_timeout: timeout,
    };
    if !runtime.config.never_direct.0 {
        return match reach::connect(host, port, settings, Some(&runtime.reach)).await {
            Ok(stream) => Ok((stream, Hierarchy::new(HierCode::Direct, host))),
            Err(ConnectError::Denied(denied)) => {
                runtime.stats.denied_destinations.add(1);
                Err(denied.into())
            }
            Err(e) => Err(counted(e, &runtime.stats)),
        };
    }
    let mut tried = Vec::new();
    for parent in runtime.parents.iter() {
        match parent_tunnel(
            &runtime.stats,
            settings,
            (&parent.host, parent.port),
            host,
            port,
        )
        .await
        {
            Ok(stream) => {
                return Ok((
                    stream,
                    Hierarchy::new(HierCode::FirstUpParent, &parent.host),
                ))
            }
            Err(e) => {
                parent.stats.record_failure(e.reason.clone());
                tried.push(format!("{}: {}", parent.name, e.reason));
            }
        }
    }
    Err(ProxyError::gateway_timeout(if tried.is_empty() {
        "never_direct is on and no parent is configured".to_owned()
    } else {
        format!(
            "never_direct is on and no parent could open the tunnel: {}",
            tried.join("; ")
        )
    }))
}

/// A connect that failed, as the client's error page; a timeout is counted.
fn counted(error: ConnectError, stats: &Stats) -> ProxyError {
    if matches!(error, ConnectError::TimedOut { .. }) {
        stats.timeouts.fired(Timeout::UpstreamConnect);
    }
    error.into()
}

async fn parent_tunnel(
    stats: &Stats,
    settings: ConnectSettings,
    (parent_host, parent_port): (&str, u16),
    host: &str,
    port: u16,
) -> Result<TcpStream, ProxyError> {
    let timeout = settings.connect_timeout;
    let mut stream = reach::connect(parent_host, parent_port, settings, None)
        .await
        .map_err(|e| counted(e, stats))?;
    let request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| ProxyError::bad_gateway(e.to_string()))?;
    // Read the parent's answer byte by byte up to the blank line, so no tunnel byte is eaten.
    let mut head = Vec::new();
    let read = async {
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            let byte = stream.read_u8().await?;
            head.push(byte);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| {
            stats.timeouts.fired(Timeout::UpstreamConnect);
            ProxyError::gateway_timeout("parent did not answer CONNECT")
        })?
        .map_err(|e| ProxyError::bad_gateway(format!("parent closed the CONNECT: {e}")))?;
    let status_line = String::from_utf8_lossy(&head);
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status == StatusCode::OK.as_str() {
        Ok(stream)
    } else {
        Err(ProxyError::bad_gateway(format!(
            "parent answered CONNECT with {}",
            status_line.lines().next().unwrap_or("nothing")
        )))
    }
}
