//! The proxy listener: accepts connections, applies access control by source address, and
//! serves HTTP/1.1 with keep-alive and upgrades (for CONNECT) on each.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::http::errors::ProxyError;
use crate::http::forward;
use crate::server::Shared;

/// Binds the listener with SO_REUSEADDR, so a restart does not wait for TIME_WAIT.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts until `stop` fires; connections already accepted go on until they end.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    tokio::spawn(serve_connection(stream, client, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
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
            .header_read_timeout(Duration::from_secs(30));
        b
    };
    let result = if allowed {
        let service = service_fn(move |req| forward::handle(shared.clone(), client, req));
        builder.serve_connection(io, service).with_upgrades().await
    } else {
        shared.stats.denied_clients.fetch_add(1, Relaxed);
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
