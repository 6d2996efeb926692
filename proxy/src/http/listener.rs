//! The proxy listener: accepts connections, applies access control by source address, and
//! serves HTTP/1.1 with keep-alive and upgrades (for CONNECT) on each.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::{Method, Request, Version};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::hierarchy::peers;
use crate::http::errors::ProxyError;
use crate::http::interim::{InterimRelay, Interims, Relaying};
use crate::http::timeouts::{Answering, ClientLimits, Phase, Watched};
use crate::http::{forward, workers};
use crate::runtime::{Runtime, Shared};
use crate::stats::clients::{ClientCounters, Kind};
use crate::stats::{Stats, Timeout};

/// The largest request head taken from a client, request line included (Squid's
/// `request_header_max_size` is 64 KB); a larger one is answered 431. The number of fields
/// stays at hyper's 100: more would cost an allocation on every request, hits included.
const REQUEST_HEAD_MAX: usize = 64 * 1024;

/// The listening socket's queue of connections not yet accepted.
const BACKLOG: i32 = 1024;

/// Who else may listen on the address a listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Nobody: the bind fails when any socket listens there (another Canopy included).
    Alone,
    /// This proxy's listener in force, on the same port: a reload that changes
    /// `bind_address` binds the new address while the old listener still accepts.
    BesideOurs,
}

/// Binds the listener with SO_REUSEADDR, so a restart does not wait for TIME_WAIT, and
/// SO_REUSEPORT, so that a reload can bind the same port on another address (0.0.0.0 and
/// 127.0.0.1 overlap) before the old listener closes. SO_REUSEPORT would also let a second
/// Canopy share the port without a word, so unless `sharing` says the port is ours, a
/// socket without it is bound first: it fails whenever anything listens there.
pub fn bind(addr: SocketAddr, sharing: Sharing) -> std::io::Result<std::net::TcpListener> {
    if sharing == Sharing::Alone {
        check_free(addr)?;
    }
    let socket = new_socket(addr, true)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Fails when anything listens on `addr` (the console's next address is checked this way
/// before a version that moves it is applied).
pub fn check_free(addr: SocketAddr) -> std::io::Result<()> {
    new_socket(addr, false).map(drop)
}

fn new_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A listener being served; dropping it stops the accepting, while connections already
/// accepted go on until their clients close them.
pub struct Accepting {
    _stop: watch::Sender<()>,
}

/// Serves `listener` on every HTTP worker: each accepts on its own copy of the socket, and
/// the connections go to the workers in turn.
pub fn serve(listener: std::net::TcpListener, shared: &Arc<Shared>) -> std::io::Result<Accepting> {
    let copies = workers::handles()
        .iter()
        .map(|_| listener.try_clone())
        .collect::<std::io::Result<Vec<_>>>()?;
    let (stop, stopped) = watch::channel(());
    for (worker, listener) in workers::handles().iter().zip(copies) {
        let (shared, stopped) = (shared.clone(), stopped.clone());
        worker.spawn(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => accept_loop(listener, shared, stopped).await,
                Err(e) => tracing::error!("a worker cannot take the listener: {e}"),
            }
        });
    }
    Ok(Accepting { _stop: stop })
}

/// Accepts until `stop` is dropped.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        tokio::select! {
            _ = stop.changed() => {
                // The kernel resets what is still queued on a socket when it closes: serve
                // the connections that arrived before the listener moved. At most a backlog's
                // worth, so a flood still arriving cannot keep this worker from yielding.
                for _ in 0..BACKLOG {
                    match listener.accept().now_or_never() {
                        Some(Ok((stream, client))) => hand_out(stream, client, &shared),
                        _ => break,
                    }
                }
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => hand_out(stream, client, &shared),
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Gives a connection to the next worker in turn: whichever worker wakes first for a burst
/// of connections would otherwise take most of them and leave the other cores idle.
fn hand_out(stream: TcpStream, client: SocketAddr, shared: &Arc<Shared>) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let worker = NEXT.fetch_add(1, Relaxed) % workers::count();
    let shared = shared.clone();
    if worker == workers::current() {
        tokio::spawn(serve_connection(stream, client, shared));
        return;
    }
    match stream.into_std() {
        Ok(stream) => {
            workers::handles()[worker].spawn(async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => serve_connection(stream, client, shared).await,
                    Err(e) => tracing::warn!(%client, "a worker cannot take a connection: {e}"),
                }
            });
        }
        Err(e) => tracing::warn!(%client, "a connection cannot be handed to a worker: {e}"),
    }
}

/// The counters of a client served as a peer or a child (a configured peer's address, or
/// one of `icp_allowed_clients`), taken once for the connection; other clients are not
/// counted one by one, so their requests take no lock.
fn counted_client(
    runtime: &Runtime,
    stats: &Stats,
    client: SocketAddr,
) -> Option<Arc<ClientCounters>> {
    let ip = peers::canonical(client.ip());
    let kind = if peers::by_address(&runtime.peers, ip).is_some() {
        Kind::Peer
    } else if runtime.config.icp_allowed_clients.contains(ip) {
        Kind::Other
    } else {
        return None;
    };
    Some(stats.clients.for_connection(ip, kind))
}

async fn serve_connection(stream: TcpStream, client: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (allowed, limits, counted) = {
        let runtime = shared.runtime.load();
        let config = &runtime.config;
        (
            config.allowed_clients.contains(client.ip()),
            ClientLimits::of(config),
            counted_client(&runtime, &shared.stats, client),
        )
    };
    let closes_at = Instant::now() + limits.lifetime;
    let phase = Arc::new(Phase::default());
    let interims = Arc::new(Interims::new());
    let io = TokioIo::new(Relaying::new(
        Watched::new(stream, phase.clone(), limits, shared.stats.clone()),
        interims.clone(),
    ));
    let builder = {
        let mut b = http1::Builder::new();
        // The socket keeps the header and idle timers itself (http/timeouts.rs). It writes
        // interim responses when hyper flushes, so `pipeline_flush`, which skips flushes
        // while requests are queued, stays off (http/interim.rs).
        b.keep_alive(true)
            .header_read_timeout(None)
            .max_header_size(REQUEST_HEAD_MAX);
        b
    };
    let stats = shared.stats.clone();
    let served = async {
        if allowed {
            let mut draining = shared.draining.subscribe();
            let service = service_fn(move |req: Request<Incoming>| {
                phase.serving();
                let connect = req.method() == Method::CONNECT;
                // RFC 9110 §15.2: "a server MUST NOT send a 1xx response to an HTTP/1.0 client".
                let relay =
                    (req.version() == Version::HTTP_11).then(|| InterimRelay::begin(&interims));
                let (shared, phase) = (shared.clone(), phase.clone());
                let counted = counted.clone();
                async move {
                    let response =
                        forward::handle(shared, client, counted, relay.as_ref(), req, closes_at)
                            .await?;
                    if let Some(relay) = &relay {
                        relay.finish().await;
                    }
                    if connect && response.status().is_success() {
                        phase.tunnel();
                    }
                    Ok::<_, Infallible>(response.map(|body| Answering::new(body, phase)))
                }
            });
            let connection = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => served,
                // (In a block of its own: the guard `wait_for` returns cannot cross threads.)
                _ = async { let _ = draining.wait_for(|on| *on).await; } => {
                    // The request being served is finished; an idle connection closes now.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        } else {
            shared.stats.denied_clients.add(1);
            tracing::info!(%client, "client not in allowed_clients: 403");
            let service = service_fn(move |_req| {
                phase.serving();
                let name = shared.runtime.load().config.visible_name.clone();
                let error = ProxyError::forbidden(format!(
                    "Access denied: {} is not allowed to use this proxy (allowed_clients).",
                    client.ip()
                ));
                let response = error.to_response(&name);
                let phase = phase.clone();
                async move { Ok::<_, Infallible>(response.map(|body| Answering::new(body, phase))) }
            });
            builder.serve_connection(io, service).await
        }
    };
    match tokio::time::timeout_at(closes_at, served).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%client, "connection ended: {e}"),
        Err(_) => {
            stats.timeouts.fired(Timeout::ClientLifetime);
            tracing::info!(%client, "connection closed: open for client_lifetime_s");
        }
    }
}
