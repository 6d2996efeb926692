//! CONNECT tunnels: a byte pipe to a port in `ssl_ports` of the named host, never cached.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hierarchy::reach::{self, ConnectError};
use crate::hierarchy::upstream::ConnectSettings;
use crate::http::errors::ProxyError;
use crate::http::{empty_body, ProxyBody};
use crate::server::{Runtime, Shared};

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
    if let Err(denied) = runtime.reach.check_tunnel_port(port) {
        shared.stats.denied_destinations.add(1);
        return Err(denied.into());
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
    let settings = ConnectSettings {
        local_address: runtime.config.bind_address.0,
        connect_timeout: timeout,
    };
    if !runtime.config.never_direct.0 {
        return match reach::connect(host, port, settings, Some(&runtime.reach)).await {
            Ok(stream) => Ok((stream, format!("HIER_DIRECT/{host}"))),
            Err(ConnectError::Denied(denied)) => {
                runtime.stats.denied_destinations.add(1);
                Err(denied.into())
            }
            Err(e) => Err(e.into()),
        };
    }
    let mut tried = Vec::new();
    for parent in runtime.parents.iter() {
        match parent_tunnel(settings, &parent.host, parent.port, host, port).await {
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

async fn parent_tunnel(
    settings: ConnectSettings,
    parent_host: &str,
    parent_port: u16,
    host: &str,
    port: u16,
) -> Result<TcpStream, ProxyError> {
    let timeout = settings.connect_timeout;
    let mut stream = reach::connect(parent_host, parent_port, settings, None).await?;
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
