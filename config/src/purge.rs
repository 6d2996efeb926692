//! PURGE sent to the running proxy's listener, as `squidclient -m PURGE` sends it: what
//! `canopy purge` and the console's "Purge a URL" share. The proxy answers 200 when it
//! removed something, 404 when nothing was stored, 403 to an address outside
//! `purge_allowed_clients`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::control::{call_typed, Command, ControlError, StatusReply};

/// What a PURGE did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purged {
    /// Every stored variant of the URL was removed.
    Removed,
    /// Nothing was stored under the URL.
    NotCached,
}

/// Why a URL was not purged.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("{0:?} is not an http:// URL")]
    NotHttp(String),
    /// The proxy did not say where it listens (it is not running, mostly).
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the proxy reported a listener address that cannot be read: {0:?}")]
    BadListener(String),
    #[error("could not send PURGE to the proxy at {listener}: {source}")]
    Send {
        listener: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "the proxy at {listener} refused PURGE from this host (403): add its address to \
         purge_allowed_clients"
    )]
    Refused { listener: SocketAddr },
    #[error("the proxy at {listener} answered PURGE with status {status}")]
    Unexpected { listener: SocketAddr, status: u16 },
}

/// Removes every stored variant of `url` from the cache of the proxy whose control socket is
/// `control`.
pub async fn purge(control: &Path, url: &str) -> Result<Purged, PurgeError> {
    let authority = url
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(""))
        .filter(|authority| !authority.is_empty())
        .ok_or_else(|| PurgeError::NotHttp(url.to_owned()))?;
    let running: StatusReply = call_typed(control, Command::Status).await?;
    let listener = listener_to_call(&running.http_listen)?;
    let status = send_purge(listener, url, authority)
        .await
        .map_err(|source| PurgeError::Send { listener, source })?;
    match status {
        200 => Ok(Purged::Removed),
        404 => Ok(Purged::NotCached),
        403 => Err(PurgeError::Refused { listener }),
        status => Err(PurgeError::Unexpected { listener, status }),
    }
}

/// The address to reach the listener at: loopback when it listens on every address.
fn listener_to_call(http_listen: &str) -> Result<SocketAddr, PurgeError> {
    let mut addr: SocketAddr = http_listen
        .parse()
        .map_err(|_| PurgeError::BadListener(http_listen.to_owned()))?;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    Ok(addr)
}

/// Sends the request and reads the status code of the answer.
async fn send_purge(listener: SocketAddr, url: &str, authority: &str) -> io::Result<u16> {
    let mut stream = TcpStream::connect(listener).await?;
    let request = format!(
        "PURGE {url} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let status_line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    std::str::from_utf8(status_line)
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the answer is not an HTTP response",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_every_address_is_called_on_loopback() {
        let called = |listen: &str| listener_to_call(listen).unwrap().to_string();
        assert_eq!(called("0.0.0.0:3128"), "127.0.0.1:3128");
        assert_eq!(called("[::]:3128"), "[::1]:3128");
        assert_eq!(called("10.0.0.5:8080"), "10.0.0.5:8080");
        assert!(listener_to_call("nowhere").is_err());
    }

    #[tokio::test]
    async fn only_http_urls_are_purged() {
        let refused = purge(
            Path::new("/nonexistent/canopy.sock"),
            "https://example.com/",
        )
        .await
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "\"https://example.com/\" is not an http:// URL"
        );
    }
}
