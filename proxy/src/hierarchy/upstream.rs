//! Pooled HTTP clients towards origins and parents, leaving from this proxy's one address.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::http::{workers, BoxError, ProxyBody};

/// Pooled connections to one destination, a pool for each HTTP worker: a connection's task
/// runs on the worker that opened it, so each worker reuses only its own.
pub struct UpstreamClient {
    per_worker: Box<[Client<Connector, ProxyBody>]>,
}

impl UpstreamClient {
    pub fn request(&self, request: http::Request<ProxyBody>) -> ResponseFuture {
        self.per_worker[workers::current() % self.per_worker.len()].request(request)
    }
}

/// Where a client's connections go: to each request's own host, or always to one parent.
#[derive(Debug, Clone)]
enum Target {
    Origin,
    Parent(Uri),
}

/// Connects like `HttpConnector`, but to a fixed parent when it has one, marking those
/// connections as proxied so requests on them keep their absolute-form URL.
#[derive(Debug, Clone)]
pub struct Connector {
    http: HttpConnector,
    target: Target,
}

/// A connection to an origin or a parent.
#[derive(Debug)]
pub struct UpstreamStream {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let (uri, proxied) = match &self.target {
            Target::Origin => (destination, false),
            Target::Parent(parent) => (parent.clone(), true),
        };
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(UpstreamStream { io, proxied })
        })
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamStream {
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

/// How connections are made: from which address, and how long connecting may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings {
    pub local_address: Option<IpAddr>,
    pub connect_timeout: Duration,
}

fn http_connector(settings: ConnectSettings) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_local_address(settings.local_address);
    http.set_connect_timeout(Some(settings.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(true);
    http
}

fn client(connector: Connector) -> UpstreamClient {
    let per_worker = (0..workers::count())
        .map(|_| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(32)
                .build(connector.clone())
        })
        .collect();
    UpstreamClient { per_worker }
}

/// A client that connects to each request's origin server.
pub fn origin_client(settings: ConnectSettings) -> UpstreamClient {
    client(Connector {
        http: http_connector(settings),
        target: Target::Origin,
    })
}

/// A client whose every connection goes to the parent at `host:port`.
pub fn parent_client(
    host: &str,
    port: u16,
    settings: ConnectSettings,
) -> Result<UpstreamClient, String> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let uri: Uri = format!("http://{authority}/")
        .parse()
        .map_err(|e| format!("parent {authority}: {e}"))?;
    Ok(client(Connector {
        http: http_connector(settings),
        target: Target::Parent(uri),
    }))
}
