//! The proxy listener: accepts connections, applies access control by source address, and
//! serves HTTP/1.1 with keep-alive and upgrades (for CONNECT) on each.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::http::errors::ProxyError;
use crate::http::{forward, workers};
use crate::server::Shared;

/// The largest request head taken from a client, request line included (Squid's
/// `request_header_max_size` is 64 KB); a larger one is answered 431. The number of fields
/// stays at hyper's 100: more would cost an allocation on every request, hits included.
const REQUEST_HEAD_MAX: usize = 64 * 1024;

/// Binds the listener with SO_REUSEADDR, so a restart does not wait for TIME_WAIT.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
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
            _ = stop.changed() => return,
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

async fn serve_connection(stream: TcpStream, client: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let allowed = shared
        .runtime
        .load()
        .config
        .allowed_clients
        .contains(client.ip());
    let io = TokioIo::new(stream);
    let builder = {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(Duration::from_secs(30))
            .max_header_size(REQUEST_HEAD_MAX);
        b
    };
    let result = if allowed {
        let service = service_fn(move |req| forward::handle(shared.clone(), client, req));
        builder.serve_connection(io, service).with_upgrades().await
    } else {
        shared.stats.denied_clients.add(1);
        tracing::info!(%client, "client not in allowed_clients: 403");
        let service = service_fn(move |_req| {
            let name = shared.runtime.load().config.visible_name.clone();
            let error = ProxyError::forbidden(format!(
                "Access denied: {} is not allowed to use this proxy (allowed_clients).",
                client.ip()
            ));
            async move { Ok::<_, Infallible>(error.to_response(&name)) }
        });
        builder.serve_connection(io, service).await
    };
    if let Err(e) = result {
        tracing::debug!(%client, "connection ended: {e}");
    }
}
