//! CONNECT tunnels: a byte pipe to port 443 of the named host, never cached.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::errors::ProxyError;
use crate::http::{empty_body, ProxyBody};
use crate::server::{Runtime, Shared};

/// The one port CONNECT may reach, as Squid's default `SSL_ports`.
const TUNNEL_PORT: u16 = 443;

/// Answers a CONNECT: 200 and a pipe, or an error page. Returns the hop used, for the log.
pub async fn handle(
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    req: Request<Incoming>,
) -> Result<(Response<ProxyBody>, String), ProxyError> {
    let authority = req
        .uri()
        .authority()
        .cloned()
        .ok_or_else(|| ProxyError::bad_request("CONNECT needs host:port"))?;
    let port = authority.port_u16().unwrap_or(0);
    if port != TUNNEL_PORT {
        return Err(ProxyError::forbidden(format!(
            "CONNECT to port {port} is not allowed; only port {TUNNEL_PORT}"
        )));
    }
    let (upstream, hop) = connect(&runtime, authority.host(), port).await?;
    shared.stats.tunnels.add(1);
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!("tunnel ended: {e}");
                }
            }
            Err(e) => tracing::debug!("CONNECT upgrade failed: {e}"),
        }
    });
    Ok((Response::new(empty_body()), hop))
}

/// Opens the tunnel's far end: straight to the host, or through a parent when the
/// origin may not be reached directly.
async fn connect(
    runtime: &Runtime,
    host: &str,
    port: u16,
) -> Result<(TcpStream, String), ProxyError> {
    let timeout = Duration::from_millis(runtime.config.connect_timeout_ms);
    if !runtime.config.never_direct.0 {
        let stream = tcp_connect(runtime, host, port, timeout).await?;
        return Ok((stream, format!("HIER_DIRECT/{host}")));
    }
    let mut tried = Vec::new();
    for parent in runtime.parents.iter() {
        match parent_tunnel(runtime, &parent.host, parent.port, host, port, timeout).await {
            Ok(stream) => return Ok((stream, format!("FIRSTUP_PARENT/{}", parent.host))),
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

async fn tcp_connect(
    runtime: &Runtime,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ProxyError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ProxyError::bad_gateway(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = format!("{host} has no address");
    for addr in addrs {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| ProxyError::bad_gateway(e.to_string()))?;
        if let Some(local) = runtime.config.bind_address.0 {
            if local.is_ipv4() == addr.is_ipv4() {
                socket
                    .bind((local, 0).into())
                    .map_err(|e| ProxyError::bad_gateway(format!("cannot bind {local}: {e}")))?;
            }
        }
        match tokio::time::timeout(timeout, socket.connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = format!("cannot connect to {host}:{port}: {e}"),
            Err(_) => {
                return Err(ProxyError::gateway_timeout(format!(
                    "connecting to {host}:{port} took longer than {} ms",
                    timeout.as_millis()
                )))
            }
        }
    }
    Err(ProxyError::bad_gateway(last))
}

async fn parent_tunnel(
    runtime: &Runtime,
    parent_host: &str,
    parent_port: u16,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ProxyError> {
    let mut stream = tcp_connect(runtime, parent_host, parent_port, timeout).await?;
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
        .map_err(|_| ProxyError::gateway_timeout("parent did not answer CONNECT"))?
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
